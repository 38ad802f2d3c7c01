"""The Relax pass that puts hwlat's dense kernels in place of convs and matmuls with constant
weights, with the ops after them fused into the kernel's store.

Rewritten, before legalization, into one `call_tir` of a kernel of this package:

    [act](conv2d(x, W) + b [+ r])      conv.py (groups 1; winograd.py for the 3x3 stride-1
                                       convs where it is faster), depthwise.py (groups = channels)
                                       or grouped.py (other groups, and the depthwise convs
                                       depthwise.py does not take: dilated ones)
    [act](matmul(x, W) + b [+ r])      matmul.py (leading axes of x flattened into rows)

Then, among those kernel calls, a MobileNet block's convs become one call of mbconv.py:

    [conv1x1 ->] depthwise conv [-> conv1x1 (+ r)]

(the expand and the project conv each optional, not both absent; every conv biased; only the
project with a residual) where each tensor between them is read by the next conv alone and
`mbconv.preferred` says the fusion pays for the shape; the longest such chain is taken.

where W and b are constants, r has the output's shape (a residual; either operand order of
either add), and act is `relax.nn.relu`, `relax.clip`, `relax.nn.gelu`, `relax.nn.gelu_tanh`,
`relax.sigmoid`, SiLU as exporters write it (`v * sigmoid(v)`, either order), or hardswish as
ONNX's HardSwish imports (`v * (clip(v + 3, 0, 6) / 6)`); the bias, the residual and the
activation are each optional, in that order. GELU written out as torch's exporter writes it (x / sqrt 2 -> Erf -> + 1 -> * x ->
* 0.5, any operand order; `_ErfGelu`) is first made one `relax.nn.gelu`, and its tanh
approximation written out (`_TanhGelu`) one `relax.nn.gelu_tanh` (also an act), so that they
fuse too. Every value inside a chain must be used by the chain only (a
value used elsewhere too ends the chain before it). W is packed into the kernel's layout here, once,
at compile time. A conv or matmul the kernels do not take (`supports` says why: other layouts,
dtypes, symbolic shapes, channels not a multiple of the groups) is left to TVM's lowering.

Before the chains are matched, a conv2d with a constant weight followed by per-channel (or
scalar) constant multiplies, adds, subtracts, divides or an inference `relax.nn.batch_norm`,
before any activation and each value read by the next alone, becomes conv2d(x, W') + b' (the
affine map folded into W and b at compile time; `_fold_block_affine`). After them, each
elementwise op whose input is a conv or matmul kernel's output read by that op alone is taken
into the kernel's epilogue as one more step (`_absorb_epilogues`; spec.py's `pre` / `post`): a
unary activation (relu, clip with finite bounds, sigmoid, gelu, gelu_tanh; SiLU and hardswish
written out), a multiply, add, subtract or divide by a constant scalar, or the residual add
(where the epilogue has none yet: the steps before it become `pre`). So an activation before
the residual, a second activation, HardSigmoid (clip(v * alpha + beta, 0, 1) as TVM imports it)
and scale-and-shift chains fuse, up to spec.MAX_STEPS steps; a per-channel constant after an
activation stays a separate op.

ONNX `Clip` with constant bounds is imported as `relax.clip` (TVM's converter emits two opaque
`call_tir`s, which nothing can fuse); the pass runs after constant folding, so that ONNX's
reshaped conv biases are constants.

Also rewritten (reduce.py): permute NCHW -> NHWC, `relax.nn.layer_norm` over the last axis,
permute back (ConvNeXt's LayerNorm2d) as one channel norm over NCHW, no transposes;
`relax.nn.layer_norm` over the last axis with constant scale and shift, and `relax.mean` over
the two spatial axes of an NCHW tensor (a global average pool).

First, a BatchNorm after a matmul with a constant weight is folded into the weight
(linear_bn.py: LeViT's Linear -> BatchNorm1d), so that the matmul kernel takes its shift as bias.

Last, a squeeze-excite scale in front of a 1x1 conv kernel (one image, groups 1):

    conv1x1(x * s, W)  ->  conv1x1(x, W * s)      s: (1, C, 1, 1), x * s read by the conv alone

where the conv has fewer output channels than output pixels (so its weight is the smaller
tensor): scale.py multiplies the packed constant weight by s at run time, and the multiply over
x goes (a small in-model gain on OFA's note10 net, docs/notebook/compile.md; its 7x7 blocks,
with more output channels than pixels, keep the multiply).

Then, for DenseNet's layers and transitions:

- an inference `relax.nn.batch_norm` (constant parameters) + relu read only by a 1x1 stride-1
  conv kernel goes into the kernel's input read, `relu(x * scale + shift)` per input channel
  (`Conv2dSpec.prologue`; conv.py applies it once per pixel tile): the pass over the whole
  concat before every layer goes (`_fuse_prologues`);
- a 2x2 average pool of such a conv with no activation runs first, with the prologue, and the
  conv after it on a quarter of the pixels (pool.py);
- every NCHW max and average pool (any window, stride, padding, ceil mode; not dilated) runs as
  pool.py's separable kernel, rows reduced in vectors, then the window's columns;
- a channel concat and the concats of prefixes of its inputs (a dense block; not a lone concat)
  share one buffer that the producers write into and the 1x1 convs read the first channels of
  (concat.py).

Each distinct spec gets one PrimFunc, shared by all its calls, marked opaque (`op_pattern` 8)
and scheduled, so FuseOps leaves it alone and MetaSchedule does not tune it. The kernels are
scheduled, and their weights packed, for the CPU of the target being built for
(`hwlat.kernels.cpu.current()`: vector width, registers, caches); AVX2 without a target.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from functools import lru_cache
from types import ModuleType

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

from hwlat.kernels import cpu as cpu_info
from hwlat.kernels.cpu import CpuInfo
from hwlat.kernels.dense.spec import ACTIVATIONS, Conv2dSpec, Epilogue, MatmulSpec
from hwlat.kernels.relax_rewrite import KernelRewriter, as_kernel, module_pass, static_f32_shape

_Constant = tvm.ir.expr.Constant  # relax.const(...)
_CALL_TIR = tvm.ir.Op.get("relax.call_tir")
_MULTIPLY = tvm.ir.Op.get("relax.multiply")
_UNARY_STEPS = {"relax.nn.relu": ("relu",), "relax.sigmoid": ("sigmoid",), "relax.nn.gelu": ("gelu",),
                "relax.nn.gelu_tanh": ("gelu_tanh",), "relax.nn.silu": ("silu",)}
KERNEL_NAMES = {"conv": "hwlat_conv2d", "depthwise": "hwlat_depthwise_conv2d",
                "grouped": "hwlat_grouped_conv2d",
                "winograd": "hwlat_conv2d_winograd", "mbconv": "hwlat_mbconv",
                "matmul": "hwlat_matmul", "layer_norm": "hwlat_layer_norm",
                "channel_norm": "hwlat_channel_norm",
                "mean_pool": "hwlat_mean_pool", "channel_scale": "hwlat_channel_scale"}


def kernel_module(spec, cpu: CpuInfo | None = None) -> tuple[str, ModuleType]:
    """Which kernel computes the spec on the CPU (default AVX2): (name, module)."""
    from hwlat.kernels.dense import mbconv, scale

    if isinstance(spec, mbconv.MBConvSpec):
        return "mbconv", mbconv
    if isinstance(spec, scale.ChannelScaleSpec):
        return "channel_scale", scale
    if not isinstance(spec, Conv2dSpec | MatmulSpec):  # reduce.py's norm and mean-pool specs
        from hwlat.kernels.dense import reduce

        if isinstance(spec, reduce.ChannelNormSpec):
            return "channel_norm", reduce
        return ("layer_norm" if isinstance(spec, reduce.LayerNormSpec) else "mean_pool"), reduce
    if isinstance(spec, MatmulSpec):
        from hwlat.kernels.dense import matmul

        return "matmul", matmul
    if spec.groups > 1:
        from hwlat.kernels.dense import depthwise, grouped

        if spec.depthwise and depthwise.supports(spec) is None:
            return "depthwise", depthwise
        return "grouped", grouped
    from hwlat.kernels.dense import conv, winograd

    if winograd.preferred(spec, cpu):  # 3x3 stride-1 convs where F(2x2, 3x3) measured faster
        return "winograd", winograd

    return "conv", conv


def why_not(spec) -> str | None:
    """None when a dense kernel takes the spec, else the reason."""
    return kernel_module(spec)[1].supports(spec)


def _cpu_kwargs(func, cpu: CpuInfo | None) -> dict:
    """{"cpu": cpu} where the kernel function sizes its schedule by the CPU, else {}."""
    return {"cpu": cpu} if cpu is not None and "cpu" in inspect.signature(func).parameters else {}


@lru_cache(maxsize=256)
def kernel_for(spec: Conv2dSpec | MatmulSpec, cpu: CpuInfo | None = None) -> tvm.tirx.PrimFunc:
    """The kernel of the spec, scheduled for the CPU (default: AVX2); its weight is packed by
    `pack_weight(spec, w, cpu)`."""
    _, module = kernel_module(spec, cpu)
    return as_kernel(module.primfunc(spec, **_cpu_kwargs(module.primfunc, cpu)))


def pack_weight(spec: Conv2dSpec | MatmulSpec, w: np.ndarray,
                cpu: CpuInfo | None = None) -> np.ndarray:
    """The weight in the layout `kernel_for(spec, cpu)` reads."""
    _, module = kernel_module(spec, cpu)
    return module.pack_weight(spec, w, **_cpu_kwargs(module.pack_weight, cpu))


def fuse_dense_pass() -> tvm.transform.Pass:
    """Module pass: rewrite every conv and matmul the kernels take (see the module doc)."""
    return module_pass("hwlat.FuseDense", fuse_dense)


def fuse_dense(mod: tvm.IRModule) -> tvm.IRModule:
    """The module with every conv and matmul the kernels take rewritten (the same module object
    when there is none)."""
    from hwlat.kernels.dense.linear_bn import fold_linear_bn

    return _Rewriter(fold_linear_bn(mod), cpu_info.current()).run()


# ---- ONNX Clip -> relax.clip ------------------------------------------------------------------

def _bound(x, default: float) -> float | None:
    """A Clip bound as a float (NaN and absent: unbounded, as onnxruntime), None if not constant."""
    if x is None:
        return default
    if not isinstance(x, _Constant):
        return None
    value = x.value.numpy()
    if value.size != 1:
        return None
    v = float(value.reshape(()))
    return default if math.isnan(v) else v


def convert_clip(bb: relax.BlockBuilder, inputs: list, attrs: dict):
    from tvm.relax.frontend.onnx import onnx_frontend

    x = inputs[0]
    if len(inputs) == 1:  # opset < 11: bounds are attributes
        lo, hi = float(attrs.get("min", -math.inf)), float(attrs.get("max", math.inf))
    else:
        inputs = [*inputs, None, None][:3]
        lo, hi = _bound(inputs[1], -math.inf), _bound(inputs[2], math.inf)
        if lo is None or hi is None or not str(x.ty.dtype).startswith("float"):
            return onnx_frontend.Clip._impl_v13(bb, inputs, attrs, None)
    return relax.op.clip(x, lo, hi)


# ---- the rewrite ------------------------------------------------------------------------------

def _const_array(c: relax.Expr) -> np.ndarray | None:
    """The float32 array of a relax constant (not of a scalar PrimValue), else None."""
    if not isinstance(c, _Constant) or not hasattr(c.value, "numpy"):
        return None
    value = c.value.numpy()
    return value if value.dtype == np.float32 else None


def _float(v) -> float:
    """A clip bound: a PrimValue (or its FloatImm) of a float."""
    v = getattr(v, "value", v)
    return float(getattr(v, "value", v))


class _Chain:
    """The pattern `[act]((op + b) [+ r])`, its parts optional, matched at the chain's end;
    `residual` is "left" (r + x), "right" (x + r) or None; act one of ACTS."""

    ACTS = ("relu", "clip", "hardswish", "gelu", "gelu_tanh", "sigmoid", "silu", None)

    def __init__(self, op_pattern, bias: bool, residual: str | None, act: str | None):
        self.core = op_pattern
        self.bias_c = is_const()
        self.res = wildcard()
        self.consts: list[tuple[object, float]] = []  # (constant pattern, the value it must hold)
        p = op_pattern
        self.inner = [p]  # the chain's values before its end: only the chain may use them
        if bias:
            p = is_op("relax.add")(p, self.bias_c) | is_op("relax.add")(self.bias_c, p)
            self.inner.append(p)
        if residual:
            p = is_op("relax.add")(*((self.res, p) if residual == "left" else (p, self.res)))
            self.inner.append(p)
        if act == "relu":
            p = is_op("relax.nn.relu")(p)
        elif act == "clip":
            p = is_op("relax.clip")(p, wildcard(), wildcard())
        elif act == "gelu":
            p = is_op("relax.nn.gelu")(p)
        elif act == "gelu_tanh":
            p = is_op("relax.nn.gelu_tanh")(p)
        elif act == "sigmoid":
            p = is_op("relax.sigmoid")(p)
        elif act == "silu":  # SiLU / swish as exporters write it: p * sigmoid(p), either order
            gate = is_op("relax.sigmoid")(p)
            self.inner.append(gate)
            p = is_op("relax.multiply")(p, gate) | is_op("relax.multiply")(gate, p)
        elif act == "hardswish":  # ONNX HardSwish as TVM imports it: p * (clip(p + 3, 0, 6) / 6)
            three, six = is_const(), is_const()
            self.lo, self.hi = wildcard(), wildcard()
            shifted = is_op("relax.add")(p, three)
            clipped = is_op("relax.clip")(shifted, self.lo, self.hi)
            scaled = is_op("relax.divide")(clipped, six)
            self.inner += [shifted, clipped, scaled]
            self.consts = [(three, 3.0), (six, 6.0), (self.lo, 0.0), (self.hi, 6.0)]
            p = is_op("relax.multiply")(p, scaled)
        else:
            self.inner.pop()  # the last part is the end
        self.pattern = p
        self.bias, self.residual, self.act = bias, residual is not None, act

    def epilogue(self, m: dict) -> Epilogue | None:
        """The fused epilogue, or None when the match's constants are not the activation's."""
        for pat, want in self.consts:
            got = m[pat]
            value = _const_array(got)
            if value is None:
                try:
                    value = np.array(_float(got))
                except (TypeError, ValueError):
                    return None
            if value.size != 1 or float(value.reshape(())) != want:
                return None
        if self.act == "clip":
            clip = m[self.pattern]
            return Epilogue(self.bias, self.residual, "clip", _float(clip.args[1]),
                            _float(clip.args[2]))
        return Epilogue(self.bias, self.residual, self.act or "none")

    def private(self, m: dict, bound: dict, users: dict) -> bool:
        """Whether every value inside the chain is bound to a dataflow variable that only the
        chain uses (else fusing would compute it twice, or hide an output)."""
        inner = [bound.get(m[part]) for part in self.inner]
        chain = {*inner, bound.get(m[self.pattern])}
        for var in inner:
            if not isinstance(var, relax.DataflowVar):
                return False
            used_by = set(users.get(var, ()))
            if not used_by or not used_by <= chain:
                return False
        return True


def _either(op: str, a, b):
    """`op(a, b)` in either operand order."""
    return is_op(op)(a, b) | is_op(op)(b, a)


class _ErfGelu:
    """GELU written out, as torch's exporter writes `nn.GELU()` (Div, Erf, Add, Mul, Mul):

        (x * (erf(x / sqrt 2) + 1)) * 0.5     or     (x * 0.5) * (erf(x / sqrt 2) + 1)

    every multiply and add in either operand order, and x / sqrt 2 also as x * (1 / sqrt 2);
    matched, it is `relax.nn.gelu(x)` (which the chains then fuse into a kernel's store)."""

    def __init__(self):
        self.x = wildcard()
        self.scale, self.one, self.half = is_const(), is_const(), is_const()
        self.div = is_op("relax.divide")(self.x, self.scale)
        arg = self.div | _either("relax.multiply", self.x, self.scale)
        one_plus = _either("relax.add", is_op("relax.erf")(arg), self.one)
        self.pattern = (_either("relax.multiply", _either("relax.multiply", self.x, one_plus), self.half)
                        | _either("relax.multiply", _either("relax.multiply", self.x, self.half), one_plus))

    def rewrite(self, call: relax.Call, m: dict) -> relax.Expr:
        values = [_scalar(m[c]) for c in (self.scale, self.one, self.half)]
        if any(v is None for v in values):
            return call
        scale, one, half = values
        want = math.sqrt(2.0) if self.div in m else 1.0 / math.sqrt(2.0)
        if not (math.isclose(scale, want, rel_tol=1e-6) and one == 1.0 and half == 0.5):
            return call
        if static_f32_shape(m[self.x]) is None:
            return call
        return relax.op.nn.gelu(m[self.x])


class _TanhGelu:
    """GELU's tanh approximation written out, as torch's exporter writes
    `nn.GELU(approximate="tanh")`:

        0.5 * (x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3))))

    x^3 as x * (x * x) (either order) or x ** 3, and the rest as `_ErfGelu` takes it (any operand
    order, 0.5 applied first or last); matched, it is `relax.nn.gelu_tanh(x)`."""

    def __init__(self):
        self.x = wildcard()
        self.three, self.kappa, self.beta, self.one, self.half = (is_const() for _ in range(5))
        square = is_op("relax.multiply")(self.x, self.x)
        self.power = is_op("relax.power")(self.x, self.three)
        cube = _either("relax.multiply", self.x, square) | self.power
        inner = _either("relax.add", self.x, _either("relax.multiply", cube, self.kappa))
        t = is_op("relax.tanh")(_either("relax.multiply", inner, self.beta))
        one_plus = _either("relax.add", t, self.one)
        self.pattern = (_either("relax.multiply", _either("relax.multiply", self.x, one_plus), self.half)
                        | _either("relax.multiply", _either("relax.multiply", self.x, self.half), one_plus))

    def rewrite(self, call: relax.Call, m: dict) -> relax.Expr:
        consts = [self.kappa, self.beta, self.one, self.half] + ([self.three] if self.power in m else [])
        values = [_scalar(m[c]) for c in consts]
        if any(v is None for v in values) or static_f32_shape(m[self.x]) is None:
            return call
        kappa, beta, one, half = values[:4]
        if not (math.isclose(kappa, 0.044715, rel_tol=1e-6)
                and math.isclose(beta, math.sqrt(2.0 / math.pi), rel_tol=1e-6)
                and one == 1.0 and half == 0.5 and values[4:] in ([], [3.0])):
            return call
        return relax.op.nn.gelu_tanh(m[self.x])


def _scalar(c) -> float | None:
    """The value of a one-element float32 constant, else None."""
    value = _const_array(c)
    return None if value is None or value.size != 1 else float(value.reshape(()))


def canonical_gelu(func: relax.Function) -> relax.Function:
    """func with every GELU written out as one op: the erf form (`_ErfGelu`) as
    `relax.nn.gelu`, the tanh form (`_TanhGelu`) as `relax.nn.gelu_tanh`."""
    for gelu in (_ErfGelu(), _TanhGelu()):
        func = rewrite_call(gelu.pattern, gelu.rewrite, func)
    return func


def _chains(op_pattern) -> list[_Chain]:
    """Longest first, so that a chain is taken whole before its prefixes are tried."""
    chains = [_Chain(op_pattern, b, r, a) for b in (True, False) for r in ("right", "left", None)
              for a in _Chain.ACTS]
    return sorted(chains, key=lambda c: -len(c.inner))


def _channel_const(c, channels: int, flat: bool = False) -> np.ndarray | None:
    """A constant of one value, or of one value a channel along axis 1 of an NCHW tensor
    ((1, C, 1, 1) or (C, 1, 1); (C,) where `flat`: a batch norm's), as `channels` float64 values;
    else None."""
    value = _const_array(c)
    if value is None:
        return None
    if value.size == 1:
        return np.full(channels, float(value.reshape(())))
    if value.size == channels and (value.shape in ((1, channels, 1, 1), (channels, 1, 1))
                                   or flat and value.shape == (channels,)):
        return value.reshape(-1).astype(np.float64)
    return None


def _affine_of(v, chain: dict, value: dict, users: dict, var):
    """(k, scale, shift, vars between) where v is a per-channel affine map v = k * scale + shift
    of a chain's value k that only it reads (through a batch norm's tuple: the tuple var is
    between), else None."""
    if isinstance(v, relax.TupleGetItem) and v.index == 0:
        bn = value.get(v.tuple_value)
        t = v.tuple_value
        if not (isinstance(bn, relax.Call) and getattr(bn.op, "name", None) == "relax.nn.batch_norm"
                and isinstance(t, relax.DataflowVar) and list(users.get(t, ())) == [var]):
            return None
        k = bn.args[0]
        if k not in chain or not isinstance(k, relax.DataflowVar) or list(users.get(k, ())) != [t]:
            return None
        a = bn.attrs
        n = chain[k][2].shape[0]
        params = [_channel_const(p, n, flat=True) for p in bn.args[1:5]]
        if any(p is None for p in params) or int(a.axis) != 1 or not (a.center and a.scale):
            return None
        gamma, beta, mean, var_ = params
        scale = gamma / np.sqrt(var_ + float(a.epsilon))
        return k, scale, beta - mean * scale, [t]
    if not isinstance(v, relax.Call) or len(v.args) != 2:
        return None
    op = getattr(v.op, "name", None)
    for i, k in enumerate(v.args):
        if k not in chain or not isinstance(k, relax.DataflowVar) or list(users.get(k, ())) != [var]:
            continue
        if static_f32_shape(var) != static_f32_shape(k):
            return None
        n = chain[k][2].shape[0]
        c = _channel_const(v.args[1 - i], n)
        if c is None:
            return None
        one, zero = np.ones(n), np.zeros(n)
        if op == "relax.add":
            return k, one, c, []
        if op == "relax.multiply":
            return k, c, zero, []
        if op == "relax.subtract" and i == 0:
            return k, one, -c, []
        if op == "relax.divide" and i == 0 and (c != 0.0).all():
            return k, 1.0 / c, zero, []
        return None
    return None


def _step_of(op: str, args: list, i: int, other, value: dict, users: dict, k, var):
    """(step, vars the step also consumes) of the op `op(*args)` on the kernel output args[i] = k,
    bound to var: a step of spec.STEPS, "residual" (k + r, r of k's shape), or (None, ())."""
    none = (None, ())
    if op in _UNARY_STEPS and len(args) == 1:
        return _UNARY_STEPS[op], ()
    if op == "relax.clip" and i == 0 and len(args) == 3:
        try:
            lo, hi = _float(args[1]), _float(args[2])
        except (TypeError, ValueError):
            return none
        return (("clip", lo, hi), ()) if math.isfinite(lo) and math.isfinite(hi) and lo <= hi else none
    if other is None:
        return none
    c = _scalar(other)
    if c is not None and math.isfinite(c):
        if op == "relax.multiply":
            return ("mul", c), ()
        if op == "relax.add":
            return ("add", c), ()
        if op == "relax.subtract" and i == 0:
            return ("add", -c), ()
        if op == "relax.divide" and i == 0 and c != 0.0:
            return ("mul", 1.0 / c), ()
        return none
    if op == "relax.add" and not isinstance(other, _Constant) and not other.same_as(k) \
            and static_f32_shape(other) == static_f32_shape(k):
        return "residual", ()
    if op == "relax.multiply":  # SiLU / hardswish written out: k * gate(k)
        gate = _gate(k, other, value, users)
        if gate is not None:
            return gate
    return none


def _gate(k, g, value: dict, users: dict):
    """((act,), the gate's vars) where g is sigmoid(k) (SiLU) or clip(k + 3, 0, 6) / 6
    (hardswish as ONNX's HardSwish imports), each of its values read once, else None."""
    def private(var, n=1) -> bool:
        return isinstance(var, relax.DataflowVar) and len(list(users.get(var, ()))) == n

    def call(var, op):
        v = value.get(var)
        return v if isinstance(v, relax.Call) and getattr(v.op, "name", None) == op else None

    if not private(g):
        return None
    sig = call(g, "relax.sigmoid")
    if sig is not None and sig.args[0].same_as(k):
        return ("silu",), (g,)
    div = call(g, "relax.divide")
    if div is None or _scalar(div.args[1]) != 6.0 or not private(div.args[0]):
        return None
    clip = call(div.args[0], "relax.clip")
    if clip is None or not private(clip.args[0]):
        return None
    try:
        if (_float(clip.args[1]), _float(clip.args[2])) != (0.0, 6.0):
            return None
    except (TypeError, ValueError):
        return None
    add = call(clip.args[0], "relax.add")
    if add is None or len(add.args) != 2:
        return None
    for a, c in (add.args, add.args[::-1]):
        if a.same_as(k) and _scalar(c) == 3.0:
            return ("hardswish",), (g, div.args[0], clip.args[0])
    return None


def _with_step(ep: Epilogue, step) -> Epilogue | None:
    """ep with one more step at its end ("residual": the residual add), None where it cannot
    take it (a second residual, too many steps)."""
    try:
        if step == "residual":
            if ep.residual:
                return None
            return dataclasses.replace(ep, residual=True, activation="none", pre=ep.steps, post=())
        if ep.activation == "none" and not ep.post and step[0] in ACTIVATIONS:
            if step[0] == "clip":
                return dataclasses.replace(ep, activation="clip", clip_min=step[1], clip_max=step[2])
            return dataclasses.replace(ep, activation=step[0])
        return dataclasses.replace(ep, post=(*ep.post, step))
    except ValueError:
        return None


def _threads() -> int:
    """The thread count of the target being built for (its num-cores; 1 when unknown)."""
    target = tvm.target.Target.current(allow_none=True)
    cores = target.attrs.get("num-cores") if target is not None else None
    return max(1, int(cores)) if cores else 1


def _bindings(func: relax.Function) -> tuple[dict, dict]:
    """(value -> the variable bound to it, variable -> the variables whose values use it) over
    the function's dataflow blocks."""
    bound, users = {}, {}
    body = func.body
    for block in getattr(body, "blocks", ()):
        if not isinstance(block, relax.DataflowBlock):
            continue
        for b in block.bindings:
            if isinstance(b, relax.VarBinding):
                bound[b.value] = b.var
        users.update(relax.analysis.udchain(block))
    return bound, users


def _scaled_input(fields, value: dict, users: dict, conv_var, spec: Conv2dSpec):
    """(x, s, packed weight) where a conv kernel call's input is a multiply x * s (either order)
    by a per-channel s (1, C, 1, 1) that only this call reads, and its weight is a constant;
    else None."""
    xin, w = fields[0], fields[1]
    if not isinstance(w, _Constant) or not isinstance(xin, relax.DataflowVar):
        return None
    if list(users.get(xin, ())) != [conv_var]:
        return None
    mul = value.get(xin)
    if not isinstance(mul, relax.Call) or mul.op != _MULTIPLY or len(mul.args) != 2:
        return None
    for x, s in (mul.args, mul.args[::-1]):
        if static_f32_shape(x) == spec.x_shape and static_f32_shape(s) == (1, spec.cin, 1, 1):
            return x, s, w
    return None


def _bn_relu_input(xin, value: dict, users: dict, conv_var, channels: int):
    """(z, (2, channels) float32 scale and shift, the vars between) where a conv kernel call's
    input xin is relu(batch_norm(z)[0]), an inference batch norm over the channels with constant
    parameters, each value between read by the next alone (the conv reading the relu's); else
    None."""
    def only(var, user) -> bool:
        return isinstance(var, relax.DataflowVar) and list(users.get(var, ())) == [user]

    relu = value.get(xin)
    if not only(xin, conv_var) or not isinstance(relu, relax.Call) \
            or getattr(relu.op, "name", None) != "relax.nn.relu":
        return None
    t = relu.args[0]
    item = value.get(t) if isinstance(t, relax.Var) else t
    if not isinstance(item, relax.TupleGetItem) or item.index != 0:
        return None
    between = [xin]
    if isinstance(t, relax.Var):
        if not only(t, xin):
            return None
        between.append(t)
    tup = item.tuple_value
    bn = value.get(tup)
    if not only(tup, t if isinstance(t, relax.Var) else xin) or not isinstance(bn, relax.Call) \
            or getattr(bn.op, "name", None) != "relax.nn.batch_norm":
        return None
    a = bn.attrs
    if int(a.axis) != 1 or bool(a.training) or static_f32_shape(bn.args[0]) is None \
            or static_f32_shape(bn.args[0])[1:2] != (channels,):
        return None
    gamma, beta, mean, var = (_channel_const(p, channels, flat=True) for p in bn.args[1:5])
    if mean is None or var is None or (a.scale and gamma is None) or (a.center and beta is None):
        return None
    scale = (gamma if a.scale else 1.0) / np.sqrt(var + float(a.epsilon))
    shift = (beta if a.center else 0.0) - mean * scale
    return bn.args[0], np.stack([scale, shift]).astype(np.float32), [*between, tup]


class _Rewriter(KernelRewriter):
    def __init__(self, mod: tvm.IRModule, cpu: CpuInfo):
        super().__init__(mod)
        self.cpu = cpu  # the CPU of the target being built for: the kernels' tiles

    def make_kernel(self, spec):
        from hwlat.kernels.dense import concat, conv, pool

        if isinstance(spec, concat.ConvSlice):
            func = conv.primfunc(spec.spec, cpu=self.cpu, x_channels=spec.x_channels,
                                 out=None if spec.y_channels is None else (spec.y_channels, spec.offset))
            return as_kernel(func), KERNEL_NAMES["conv"]
        if isinstance(spec, concat.ChannelCopy):
            return as_kernel(concat.copy_primfunc(spec)), "hwlat_concat_copy"
        if isinstance(spec, pool.ProloguePoolSpec):
            return as_kernel(pool.primfunc(spec)), "hwlat_prologue_pool"
        if isinstance(spec, pool.WindowPoolSpec):
            return as_kernel(pool.window_primfunc(spec)), f"hwlat_{spec.kind}_pool"
        return kernel_for(spec, self.cpu), KERNEL_NAMES[kernel_module(spec, self.cpu)[0]]

    def rewrite_function(self, func: relax.Function) -> relax.Function:
        x, w = wildcard(), is_const()
        conv = is_op("relax.nn.conv2d")(x, w)
        mm = is_op("relax.matmul")(x, w)
        func = canonical_gelu(func)
        func = self._each_block(func, self._fold_block_affine)
        rules = [(c, functools.partial(self._conv_rewrite, c, x, w)) for c in _chains(conv)]
        rules += [(c, functools.partial(self._matmul_rewrite, c, x, w)) for c in _chains(mm)]
        for chain, make in rules:
            func = rewrite_call(chain.pattern, make(*_bindings(func)), func)
        func = self._absorb_epilogues(func)
        func = self._fuse_blocks(func)
        func = self._fold_scales(func)
        func = self._fuse_prologues(func)
        func = self._pool_first(func)
        func = self._concat_in_place(func)
        cn_x, cn_g, cn_b = wildcard(), is_const(), is_const()
        first = is_op("relax.permute_dims")(cn_x)
        cn = is_op("relax.nn.layer_norm")(first, cn_g, cn_b)
        func = rewrite_call(is_op("relax.permute_dims")(cn), functools.partial(
            self._channel_norm_rewrite, cn_x, first, cn, cn_g, cn_b), func)
        ln_x, gamma, beta = wildcard(), is_const(), is_const()
        func = rewrite_call(is_op("relax.nn.layer_norm")(ln_x, gamma, beta),
                            functools.partial(self._layer_norm_rewrite, ln_x, gamma, beta), func)
        func = self._window_pools(func)
        mean_x = wildcard()
        return rewrite_call(is_op("relax.mean")(mean_x),
                            functools.partial(self._mean_rewrite, mean_x), func)

    def _window_pools(self, func: relax.Function) -> relax.Function:
        """max and average pools (NCHW, any window, stride, padding, ceil mode) as pool.py's
        separable kernel."""
        from hwlat.kernels.dense import pool

        for op in ("relax.nn.max_pool2d", "relax.nn.avg_pool2d"):
            func = rewrite_call(is_op(op)(wildcard()),
                                lambda call, _m: pool.window_rewrite(self, call), func)
        return func

    def _layer_norm_rewrite(self, x, gamma, beta, call: relax.Call, m: dict) -> relax.Expr:
        from hwlat.kernels.dense.reduce import LayerNormSpec

        a = call.attrs
        xs, g, b = static_f32_shape(m[x]), _const_array(m[gamma]), _const_array(m[beta])
        if xs is None or g is None or b is None or not xs or not (a.center and a.scale):
            return call
        axes = [int(v) % len(xs) for v in a.axes]
        dim = xs[-1]
        if axes != [len(xs) - 1] or g.size != dim or b.size != dim:
            return call
        rows = int(np.prod(xs[:-1], dtype=np.int64))
        spec = LayerNormSpec(rows, dim, float(a.epsilon))
        if why_not(spec):
            return call
        self.count += 1
        xin = m[x] if len(xs) == 2 else relax.op.reshape(m[x], (rows, dim))
        out = relax.call_tir(self.kernel(spec), [xin, relax.const(g.reshape(-1)),
                                                 relax.const(b.reshape(-1))],
                             relax.TensorType((rows, dim), "float32"))
        return out if len(xs) == 2 else relax.op.reshape(out, xs)

    def _channel_norm_rewrite(self, x, first, ln, gamma, beta, call: relax.Call,
                              m: dict) -> relax.Expr:
        """permute NCHW -> NHWC, layer norm over the last axis, permute back (ConvNeXt's
        LayerNorm2d): one channel-norm kernel on the NCHW tensor, no transposes."""
        from hwlat.graph.channel_norm import channel_norm
        from hwlat.kernels.dense.reduce import ChannelNormSpec

        xs, g, b = static_f32_shape(m[x]), _const_array(m[gamma]), _const_array(m[beta])
        if xs is None or g is None or b is None:
            return call
        a, fa = m[ln].attrs, m[first].attrs
        if fa.axes is None or call.attrs.axes is None or not (a.center and a.scale):
            return call
        # (the "tvm-cpu" fusion rules ask the same predicate: hwlat.graph.channel_norm)
        if not channel_norm(xs, [int(v) for v in fa.axes], [int(v) for v in call.attrs.axes],
                            [int(v) for v in a.axes], g.size, b.size, float(a.epsilon)):
            return call
        spec = ChannelNormSpec(*xs, float(a.epsilon))
        if why_not(spec):
            return call
        self.count += 1
        return relax.call_tir(self.kernel(spec), [m[x], relax.const(g.reshape(-1)),
                                                  relax.const(b.reshape(-1))],
                              relax.TensorType(xs, "float32"))

    def _mean_rewrite(self, x, call: relax.Call, m: dict) -> relax.Expr:
        """mean over the two spatial axes of an NCHW tensor (a global average pool)."""
        from hwlat.kernels.dense.reduce import MeanPoolSpec

        xs = static_f32_shape(m[x])
        if xs is None or len(xs) != 4 or call.attrs.axis is None:
            return call
        if sorted(int(v) % 4 for v in call.attrs.axis) != [2, 3]:
            return call
        keep = bool(call.attrs.keepdims)
        spec = MeanPoolSpec(*xs, keepdims=keep)
        if why_not(spec):
            return call
        self.count += 1
        shape = (xs[0], xs[1], 1, 1) if keep else (xs[0], xs[1])
        return relax.call_tir(self.kernel(spec), [m[x]], relax.TensorType(shape, "float32"))

    def _operands(self, chain: _Chain, m: dict, out_shape: tuple[int, ...], bias_len: int):
        """(bias array or None, residual expr or None), or None when they do not fit."""
        bias = residual = None
        if chain.bias:
            b = _const_array(m[chain.bias_c])
            if b is None or b.size != bias_len:
                return None
            # broadcast along the channel axis only: conv (1, C, 1, 1) / (C, 1, 1); matmul (.., N)
            if len(out_shape) == 4 and b.ndim >= 3 and b.shape[-3] != bias_len and bias_len != 1:
                return None
            if len(out_shape) != 4 and b.ndim >= 1 and b.shape[-1] != bias_len:
                return None
            bias = b.reshape(-1)
        if chain.residual:
            r = m[chain.res]
            if static_f32_shape(r) != tuple(out_shape):
                return None
            residual = r
        return bias, residual

    def _spec_of(self, value) -> object | None:
        """The spec of a call_tir of one of this rewrite's kernels, else None."""
        if not isinstance(value, relax.Call) or value.op != _CALL_TIR:
            return None
        return self.specs.get(value.args[0].name_hint)

    def _fold_block_affine(self, block: relax.DataflowBlock) -> tuple[relax.DataflowBlock, int]:
        """Each conv2d with a constant weight followed by per-channel constant multiplies, adds
        (a bias; also subtract and divide) or an inference batch norm, read by that chain alone,
        as conv2d(x, W') + b' (see the module doc); a plain conv + bias is left as it is."""
        value = {b.var: b.value for b in block.bindings}
        users = relax.analysis.udchain(block)
        chain = {}  # var -> [x, conv call, W (float64), bias (float64), member vars, worth it]
        for b in block.bindings:
            v = b.value
            if isinstance(v, relax.Call) and getattr(v.op, "name", None) == "relax.nn.conv2d":
                wv = _const_array(v.args[1])
                a = v.attrs
                if wv is not None and wv.ndim == 4 and static_f32_shape(b.var) is not None \
                        and (a.data_layout, a.kernel_layout, a.out_layout) == ("NCHW", "OIHW", "NCHW"):
                    chain[b.var] = [v.args[0], v, wv.astype(np.float64),
                                    np.zeros(wv.shape[0]), [b.var], False]
                continue
            got = _affine_of(v, chain, value, users, b.var)
            if got is None:
                continue
            k, scale, shift, via = got
            x, call, wv, bias, members, worth = chain.pop(k)
            chain[b.var] = [x, call, wv * scale.reshape(-1, 1, 1, 1), bias * scale + shift,
                            [*members, *via, b.var], worth or (scale != 1.0).any() or len(members) > 1]
        new, dead = {}, set()
        for var, (x, call, wv, bias, members, worth) in chain.items():
            if not worth:
                continue
            conv = self.bb.normalize(relax.Call(call.op, [x, relax.const(wv.astype(np.float32))],
                                                call.attrs))
            cv = relax.DataflowVar(f"{var.name}_conv", conv.ty)
            add = relax.op.add(cv, relax.const(bias.astype(np.float32).reshape(1, -1, 1, 1)))
            new[var] = [relax.VarBinding(cv, conv), relax.VarBinding(var, add)]
            dead |= set(members[:-1])
        if not new:
            return block, 0
        out = []
        for b in block.bindings:
            if b.var in new:
                out += new[b.var]
            elif b.var not in dead:
                out.append(b)
        return relax.DataflowBlock(out), len(new)

    def _absorb_epilogues(self, func: relax.Function) -> relax.Function:
        """Each elementwise op whose input is a conv or matmul kernel's output, read by that op
        alone, taken into the kernel's epilogue as one more step (see the module doc)."""
        self.specs = {gv.name_hint: spec for spec, gv in self.kernels.items()}
        return self._each_block(func, self._absorb_block)

    def _absorb_block(self, block: relax.DataflowBlock) -> tuple[relax.DataflowBlock, int]:
        value = {b.var: b.value for b in block.bindings}
        users = relax.analysis.udchain(block)
        kernel = {}  # var -> (spec, args) of a conv or matmul kernel call (as grown so far)
        grown, dead = {}, set()
        for b in block.bindings:
            spec = self._spec_of(b.value)
            if isinstance(spec, Conv2dSpec | MatmulSpec):
                kernel[b.var] = (spec, list(b.value.args[1].fields))
                continue
            got = self._absorbed(b, kernel, value, users)
            if got is None:
                continue
            k, spec, args, also_dead = got
            kernel[b.var] = grown[b.var] = (spec, args)
            grown.pop(k, None)
            dead |= {k, *also_dead}
        if not grown:
            return block, 0
        out = []
        for b in block.bindings:
            if b.var in grown:
                spec, args = grown[b.var]
                out.append(relax.VarBinding(b.var, relax.call_tir(
                    self.kernel(spec), args, relax.TensorType(spec.y_shape, "float32"))))
            elif b.var not in dead:
                out.append(b)
        return relax.DataflowBlock(out), len(grown)

    def _absorbed(self, b, kernel: dict, value: dict, users: dict):
        """(kernel var, grown spec, its call's arguments, other vars made dead) where binding b
        is an epilogue step on a kernel output that only b reads, else None."""
        call = b.value
        if not isinstance(call, relax.Call) or not isinstance(call.op, tvm.ir.Op):
            return None
        op, args = call.op.name, list(call.args)
        for i, k in enumerate(args[:2]):
            if k not in kernel or not isinstance(k, relax.DataflowVar):
                continue
            spec, kargs = kernel[k]
            if static_f32_shape(b.var) != spec.y_shape:
                return None
            other = args[1 - i] if len(args) == 2 else None
            step, also_dead = _step_of(op, args, i, other, value, users, k, b.var)
            readers = set(users.get(k, ()))
            if step is None or b.var not in readers or not readers <= {b.var, *also_dead}:
                continue
            ep = _with_step(spec.epilogue, step)
            if ep is None:
                return None
            new = dataclasses.replace(spec, epilogue=ep)
            if why_not(new):
                return None
            return k, new, kargs + ([other] if step == "residual" else []), also_dead
        return None

    def _fuse_blocks(self, func: relax.Function) -> relax.Function:
        """Each [expand ->] depthwise [-> project] chain of this rewrite's conv kernels that
        `mbconv` takes and prefers, as one mbconv call (see the module doc)."""
        self.specs = {gv.name_hint: spec for spec, gv in self.kernels.items()}
        return self._each_block(func, self._fuse_block)

    def _each_block(self, func: relax.Function, rewrite) -> relax.Function:
        """func with `rewrite(block) -> (block, rewrites)` applied to each dataflow block (the
        same function when nothing was rewritten), the rewrites counted."""
        body = func.body
        blocks, done = [], 0
        for block in body.blocks:
            if isinstance(block, relax.DataflowBlock):
                block, n = rewrite(block)
                done += n
            blocks.append(block)
        if not done:
            return func
        self.count += done
        return relax.Function(func.params, relax.SeqExpr(blocks, body.body), func.ret_ty,
                              func.is_pure, func.attrs)

    def _fold_scales(self, func: relax.Function) -> relax.Function:
        """Each squeeze-excite scale (x * s, s one value a channel) read only by a 1x1 conv
        kernel, folded into the conv's weight where that is the smaller tensor (see the module
        doc and scale.py)."""
        return self._each_block(func, self._fold_block_scales)

    def _fold_block_scales(self, block: relax.DataflowBlock) -> tuple[relax.DataflowBlock, int]:
        from hwlat.kernels.dense import conv
        from hwlat.kernels.dense.scale import ChannelScaleSpec

        value = {b.var: b.value for b in block.bindings}
        users = relax.analysis.udchain(block)
        out, n = [], 0
        for b in block.bindings:
            spec = self._spec_of(b.value)
            fold = None
            if isinstance(spec, Conv2dSpec) and kernel_module(spec, self.cpu)[0] == "conv" \
                    and spec.kernel == (1, 1) and spec.groups == 1 and spec.batch == 1 \
                    and spec.cout < spec.out_height * spec.out_width and not conv.is_gemv(spec, cpu=self.cpu):
                fold = _scaled_input(b.value.args[1].fields, value, users, b.var, spec)
            if fold is None:
                out.append(b)
                continue
            xin, s, w = fold
            shape = tuple(int(d) for d in w.value.shape)
            sspec = ChannelScaleSpec(shape[0], shape[1], int(np.prod(shape[2:])), shape)
            wv = relax.DataflowVar(f"{b.var.name}_scaled_w", relax.TensorType(shape, "float32"))
            out.append(relax.VarBinding(wv, relax.call_tir(
                self.kernel(sspec), [s, w], relax.TensorType(shape, "float32"))))
            fields = b.value.args[1].fields
            out.append(relax.VarBinding(b.var, relax.call_tir(
                b.value.args[0], [xin, wv, *fields[2:]], relax.TensorType(spec.y_shape, "float32"))))
            n += 1
        return (relax.DataflowBlock(out), n) if n else (block, 0)

    def _fuse_prologues(self, func: relax.Function) -> relax.Function:
        """Each inference batch norm + relu read only by a 1x1 conv kernel taken into the
        kernel's input read (its prologue; see the module doc)."""
        self.specs = {gv.name_hint: spec for spec, gv in self.kernels.items()}
        return self._each_block(func, self._prologue_block)

    def _pool_first(self, func: relax.Function) -> relax.Function:
        """DenseNet's transitions (prologue, 1x1 conv, 2x2 average pool) with the pool before
        the conv (pool.py)."""
        from hwlat.kernels.dense import pool

        self.specs = {gv.name_hint: spec for spec, gv in self.kernels.items()}
        return self._each_block(func, functools.partial(pool.rewrite_block, self))

    def _concat_in_place(self, func: relax.Function) -> relax.Function:
        """Channel concats whose producers write their slices of one buffer and whose conv
        readers read it (concat.py)."""
        from hwlat.kernels.dense import concat

        self.specs = {gv.name_hint: spec for spec, gv in self.kernels.items()}
        return self._each_block(func, functools.partial(concat.rewrite_block, self))

    def _prologue_block(self, block: relax.DataflowBlock) -> tuple[relax.DataflowBlock, int]:
        from hwlat.kernels.dense import conv

        value = {b.var: b.value for b in block.bindings}
        users = relax.analysis.udchain(block)
        new, dead = {}, set()
        for b in block.bindings:
            spec = self._spec_of(b.value)
            if not isinstance(spec, Conv2dSpec) or spec.prologue \
                    or kernel_module(spec, self.cpu)[0] != "conv":
                continue
            fields = list(b.value.args[1].fields)
            got = _bn_relu_input(fields[0], value, users, b.var, spec.cin)
            if got is None:
                continue
            spec = dataclasses.replace(spec, prologue=True)
            if why_not(spec) or conv.is_gemv(spec, cpu=self.cpu):
                continue
            z, pre, between = got
            new[b.var] = relax.call_tir(self.kernel(spec), [z, *fields[1:], relax.const(pre)],
                                        relax.TensorType(spec.y_shape, "float32"))
            dead |= set(between)
        if not new:
            return block, 0
        return relax.DataflowBlock([
            relax.VarBinding(b.var, new[b.var]) if b.var in new else b
            for b in block.bindings if b.var not in dead]), len(new)

    def _fuse_block(self, block: relax.DataflowBlock) -> tuple[relax.DataflowBlock, int]:
        from hwlat.kernels.dense import conv, mbconv

        value = {b.var: b.value for b in block.bindings}
        users = relax.analysis.udchain(block)

        def only_user(var, user) -> bool:
            return isinstance(var, relax.DataflowVar) and list(users.get(var, ())) == [user]

        def pointwise(var):  # (spec, call) of a biased 1x1 conv kernel call bound to var
            spec = self._spec_of(value.get(var))
            if isinstance(spec, Conv2dSpec) and spec.groups == 1 and spec.kernel == (1, 1) \
                    and spec.stride == (1, 1) and not any(spec.padding) and spec.epilogue.bias:
                return spec, value[var]
            return None

        def const(call, i):
            return call.args[1].fields[i].value.numpy()

        readers: dict = {}  # var -> the kernel calls that take it as their input
        for b in block.bindings:
            if self._spec_of(b.value) is not None:
                readers.setdefault(b.value.args[1].fields[0], []).append(b.var)
        new_value, dead = {}, set()
        for b in block.bindings:
            dspec = self._spec_of(b.value)
            if not (isinstance(dspec, Conv2dSpec) and dspec.depthwise) or b.var in dead \
                    or kernel_module(dspec, self.cpu)[0] != "depthwise":
                continue
            dcall, m = b.value, b.value.args[1].fields[0]
            # (a 1x1 conv an earlier chain took as its project conv is not this one's expand)
            e = pointwise(m) if only_user(m, b.var) and m not in new_value else None
            if e is not None and e[0].epilogue.residual:
                e = None
            p, reader = None, readers.get(b.var, [None])[0]
            if len(readers.get(b.var, ())) == 1 and only_user(b.var, reader):
                p = pointwise(reader)
                if p is not None and p[0].epilogue.residual and \
                        p[1].args[1].fields[3].same_as(b.var):
                    p = None  # the depthwise output is the residual too
            for ee, pp in ((e, p), (e, None), (None, p)):  # the longest chain first
                spec = None if ee is None and pp is None else mbconv.MBConvSpec(
                    ee and ee[0], dspec, pp and pp[0], _threads())
                if spec is not None and mbconv.supports(spec) is None and mbconv.preferred(spec):
                    break
            else:
                continue
            w1 = b1 = w3 = b3 = None
            if ee:
                w1, b1 = conv.unpack_weight(ee[0], const(ee[1], 1), cpu=self.cpu), const(ee[1], 2)
            if pp:
                w3, b3 = conv.unpack_weight(pp[0], const(pp[1], 1), cpu=self.cpu), const(pp[1], 2)
            packed = mbconv.pack(spec, w1, b1, const(dcall, 1).reshape(dspec.w_shape),
                                 const(dcall, 2), w3, b3)
            args = [ee[1].args[1].fields[0] if ee else m, *(relax.const(a) for a in packed)]
            if pp and pp[0].epilogue.residual:
                args.append(pp[1].args[1].fields[3])
            new_value[reader if pp else b.var] = relax.call_tir(
                self.kernel(spec), args, relax.TensorType(spec.y_shape, "float32"))
            dead |= {b.var} | ({m} if ee else set())
        if not new_value:
            return block, 0
        return relax.DataflowBlock([
            relax.VarBinding(b.var, new_value[b.var]) if b.var in new_value else b
            for b in block.bindings if b.var not in dead or b.var in new_value]), len(new_value)

    def _conv_spec(self, chain: _Chain, m: dict, x: relax.Expr, w):
        """(spec, weight, bias, residual) of a matched conv chain whose input is x, or None when
        a dense kernel does not take it."""
        conv = m[chain.core]
        a = conv.attrs
        xs, wv = static_f32_shape(x), _const_array(m[w])
        if xs is None or wv is None or len(xs) != 4 or wv.ndim != 4:
            return None
        if (a.data_layout, a.kernel_layout, a.out_layout) != ("NCHW", "OIHW", "NCHW"):
            return None
        if str(a.out_dtype) not in ("", "void", "float32", "None"):
            return None
        ep = chain.epilogue(m)
        if ep is None:
            return None
        spec = Conv2dSpec(xs[0], xs[1], xs[2], xs[3], int(wv.shape[0]),
                          (int(wv.shape[2]), int(wv.shape[3])),
                          tuple(int(s) for s in a.strides),
                          tuple(int(p) for p in a.padding),
                          tuple(int(d) for d in a.dilation), int(a.groups), ep)
        if spec.w_shape != wv.shape or static_f32_shape(conv) != spec.y_shape or why_not(spec):
            return None
        operands = self._operands(chain, m, spec.y_shape, spec.cout)
        return None if operands is None else (spec, wv, *operands)

    def _conv_rewrite(self, chain: _Chain, x, w, bound: dict, users: dict):
        def rewrite(call: relax.Call, m: dict) -> relax.Expr:
            if not chain.private(m, bound, users):
                return call
            taken = self._conv_spec(chain, m, m[x], w)
            if taken is None:
                return call
            spec, wv, bias, residual = taken
            args = [m[x], relax.const(pack_weight(spec, wv, self.cpu))]
            if bias is not None:
                args.append(relax.const(bias))
            if residual is not None:
                args.append(residual)
            self.count += 1
            return relax.call_tir(self.kernel(spec), args,
                                  relax.TensorType(spec.y_shape, "float32"))

        return rewrite

    def _matmul_rewrite(self, chain: _Chain, x, w, bound: dict, users: dict):
        def rewrite(call: relax.Call, m: dict) -> relax.Expr:
            if not chain.private(m, bound, users):
                return call
            mm = m[chain.core]
            xs, wv = static_f32_shape(m[x]), _const_array(m[w])
            if xs is None or wv is None or wv.ndim != 2 or len(xs) < 1:
                return call
            if str(mm.attrs.out_dtype) not in ("", "void", "float32", "None"):
                return call
            k, n = (int(d) for d in wv.shape)
            if xs[-1] != k:
                return call
            lead = xs[:-1]
            rows = int(np.prod(lead, dtype=np.int64)) if lead else 1
            out_shape = (*lead, n)
            if static_f32_shape(mm) != out_shape:
                return call
            ep = chain.epilogue(m)
            if ep is None:
                return call
            spec = MatmulSpec(rows, k, n, ep)
            if why_not(spec):
                return call
            operands = self._operands(chain, m, out_shape, n)
            if operands is None:
                return call
            bias, residual = operands
            xin = m[x] if len(xs) == 2 else relax.op.reshape(m[x], (rows, k))
            args = [xin, relax.const(pack_weight(spec, wv, self.cpu))]
            if bias is not None:
                args.append(relax.const(bias))
            if residual is not None:
                args.append(residual if len(out_shape) == 2 else relax.op.reshape(residual, (rows, n)))
            self.count += 1
            out = relax.call_tir(self.kernel(spec), args, relax.TensorType((rows, n), "float32"))
            return out if len(out_shape) == 2 else relax.op.reshape(out, out_shape)

        return rewrite
