"""The op vocabulary: one Enum of every op the IR knows, plus named category sets.

Fusion rules, cost formulas and devices ask these sets; they never look at substrings of op
names. An ONNX op outside this Enum is refused at load time (UnsupportedOpError) instead of
being guessed at.
"""

from __future__ import annotations

from enum import Enum

HWLAT_DOMAIN = "hwlat"


class Op(Enum):
    # value: (domain, op_type); the standard domain is ""
    # convolution and matrix products
    Conv = ("", "Conv")
    ConvTranspose = ("", "ConvTranspose")
    MatMul = ("", "MatMul")
    Gemm = ("", "Gemm")
    Attention = ("", "Attention")
    SparseConv3d = (HWLAT_DOMAIN, "SparseConv3d")
    # normalization
    BatchNormalization = ("", "BatchNormalization")
    LayerNormalization = ("", "LayerNormalization")
    InstanceNormalization = ("", "InstanceNormalization")
    GroupNormalization = ("", "GroupNormalization")
    RMSNormalization = ("", "RMSNormalization")
    # activations
    Relu = ("", "Relu")
    Clip = ("", "Clip")
    HardSigmoid = ("", "HardSigmoid")
    HardSwish = ("", "HardSwish")
    Sigmoid = ("", "Sigmoid")
    Tanh = ("", "Tanh")
    Gelu = ("", "Gelu")
    Erf = ("", "Erf")
    LeakyRelu = ("", "LeakyRelu")
    Elu = ("", "Elu")
    Selu = ("", "Selu")
    PRelu = ("", "PRelu")
    Softplus = ("", "Softplus")
    Softsign = ("", "Softsign")
    Mish = ("", "Mish")
    Softmax = ("", "Softmax")
    LogSoftmax = ("", "LogSoftmax")
    # elementwise arithmetic and logic
    Add = ("", "Add")
    Sub = ("", "Sub")
    Mul = ("", "Mul")
    Div = ("", "Div")
    Pow = ("", "Pow")
    Max = ("", "Max")
    Min = ("", "Min")
    Mod = ("", "Mod")
    Sqrt = ("", "Sqrt")
    Reciprocal = ("", "Reciprocal")
    Exp = ("", "Exp")
    Log = ("", "Log")
    Neg = ("", "Neg")
    Abs = ("", "Abs")
    Floor = ("", "Floor")
    Ceil = ("", "Ceil")
    Round = ("", "Round")
    Sign = ("", "Sign")
    Sin = ("", "Sin")
    Cos = ("", "Cos")
    Cast = ("", "Cast")
    CastLike = ("", "CastLike")
    Equal = ("", "Equal")
    Greater = ("", "Greater")
    GreaterOrEqual = ("", "GreaterOrEqual")
    Less = ("", "Less")
    LessOrEqual = ("", "LessOrEqual")
    And = ("", "And")
    Or = ("", "Or")
    Xor = ("", "Xor")
    Not = ("", "Not")
    Where = ("", "Where")
    IsNaN = ("", "IsNaN")
    # reductions and pooling
    ReduceMean = ("", "ReduceMean")
    ReduceSum = ("", "ReduceSum")
    ReduceMax = ("", "ReduceMax")
    ReduceMin = ("", "ReduceMin")
    ReduceProd = ("", "ReduceProd")
    ReduceL2 = ("", "ReduceL2")
    ReduceSumSquare = ("", "ReduceSumSquare")
    ArgMax = ("", "ArgMax")
    ArgMin = ("", "ArgMin")
    TopK = ("", "TopK")
    CumSum = ("", "CumSum")
    AveragePool = ("", "AveragePool")
    MaxPool = ("", "MaxPool")
    GlobalAveragePool = ("", "GlobalAveragePool")
    GlobalMaxPool = ("", "GlobalMaxPool")
    # data movement and views
    Reshape = ("", "Reshape")
    Flatten = ("", "Flatten")
    Squeeze = ("", "Squeeze")
    Unsqueeze = ("", "Unsqueeze")
    Identity = ("", "Identity")
    Dropout = ("", "Dropout")
    Transpose = ("", "Transpose")
    Concat = ("", "Concat")
    Split = ("", "Split")
    Slice = ("", "Slice")
    Gather = ("", "Gather")
    GatherElements = ("", "GatherElements")
    GatherND = ("", "GatherND")
    ScatterND = ("", "ScatterND")
    ScatterElements = ("", "ScatterElements")
    Expand = ("", "Expand")
    Tile = ("", "Tile")
    Pad = ("", "Pad")
    Resize = ("", "Resize")
    DepthToSpace = ("", "DepthToSpace")
    SpaceToDepth = ("", "SpaceToDepth")
    Trilu = ("", "Trilu")
    # shape computation and constants
    Shape = ("", "Shape")
    Size = ("", "Size")
    Constant = ("", "Constant")
    ConstantOfShape = ("", "ConstantOfShape")
    Range = ("", "Range")
    NonZero = ("", "NonZero")

    # members are singletons, equal only to themselves: hashed by identity in C (Enum's own
    # __hash__, of the name, is Python code run at every set or dict lookup of an op)
    __hash__ = object.__hash__

    @property
    def domain(self) -> str:
        return self._value_[0]  # not `.value`: Enum's descriptor is Python code too

    @property
    def op_type(self) -> str:
        return self._value_[1]

    @property
    def qualname(self) -> str:
        """`op_type` for the standard domain, `domain.op_type` otherwise."""
        domain, op_type = self._value_
        return op_type if not domain else f"{domain}.{op_type}"

    @classmethod
    def lookup(cls, domain: str, op_type: str) -> Op | None:
        return _BY_KEY.get((_canonical_domain(domain), op_type))


def _canonical_domain(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain


_BY_KEY = {op.value: op for op in Op}

CONV = frozenset({Op.Conv, Op.ConvTranspose})
MATMUL = frozenset({Op.MatMul, Op.Gemm})
NORMALIZATION = frozenset(
    {Op.BatchNormalization, Op.LayerNormalization, Op.InstanceNormalization,
     Op.GroupNormalization, Op.RMSNormalization}
)
# activations a conv or matmul kernel absorbs as its epilogue (ORT's FusedConv / MLAS)
ACTIVATION = frozenset(
    {Op.Relu, Op.Clip, Op.HardSigmoid, Op.HardSwish, Op.Sigmoid, Op.Tanh, Op.Gelu,
     Op.LeakyRelu, Op.Elu, Op.Selu, Op.Softplus, Op.Softsign, Op.Mish}
)
ELEMENTWISE_BINARY = frozenset(
    {Op.Add, Op.Sub, Op.Mul, Op.Div, Op.Pow, Op.Max, Op.Min, Op.Mod, Op.PRelu, Op.Equal,
     Op.Greater, Op.GreaterOrEqual, Op.Less, Op.LessOrEqual, Op.And, Op.Or, Op.Xor, Op.Where}
)
ELEMENTWISE_UNARY = frozenset(
    {Op.Sqrt, Op.Reciprocal, Op.Exp, Op.Log, Op.Neg, Op.Abs, Op.Floor, Op.Ceil, Op.Round,
     Op.Sign, Op.Sin, Op.Cos, Op.Cast, Op.CastLike, Op.Not, Op.Erf, Op.IsNaN}
)
ELEMENTWISE = ELEMENTWISE_BINARY | ELEMENTWISE_UNARY | ACTIVATION
# the arithmetic an unrolled LIF/IF neuron step is written in (charge, fire, reset)
SPIKING_ARITH = frozenset(
    {Op.Add, Op.Sub, Op.Mul, Op.Div, Op.Cast, Op.Greater, Op.GreaterOrEqual, Op.Where}
)
SPIKE_THRESHOLD = frozenset({Op.Greater, Op.GreaterOrEqual})
REDUCTION = frozenset(
    {Op.ReduceMean, Op.ReduceSum, Op.ReduceMax, Op.ReduceMin, Op.ReduceProd, Op.ReduceL2,
     Op.ReduceSumSquare, Op.ArgMax, Op.ArgMin, Op.TopK, Op.CumSum}
)
POOL = frozenset({Op.AveragePool, Op.MaxPool, Op.GlobalAveragePool, Op.GlobalMaxPool})
SOFTMAX = frozenset({Op.Softmax, Op.LogSoftmax})
# ops that only relabel a buffer: runtimes alias instead of copying
VIEW = frozenset({Op.Reshape, Op.Flatten, Op.Squeeze, Op.Unsqueeze, Op.Identity, Op.Dropout})
DATA_MOVEMENT = frozenset(
    {Op.Transpose, Op.Concat, Op.Split, Op.Slice, Op.Gather, Op.GatherElements, Op.GatherND,
     Op.ScatterND, Op.ScatterElements, Op.Expand, Op.Tile, Op.Pad, Op.Resize, Op.DepthToSpace,
     Op.SpaceToDepth, Op.Trilu}
)
# ops that compute shapes or constants: folded before anything runs, never a kernel
SHAPE_COMPUTE = frozenset({Op.Shape, Op.Size, Op.Constant, Op.ConstantOfShape, Op.Range})
# ops whose output is not a function of their inputs alone; never constant-folded
NON_DETERMINISTIC = frozenset({Op.Dropout})
