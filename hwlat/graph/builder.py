"""Build a Graph from ops, without onnx or torch: what a NAS space needs to get its blocks'
kernel keys from the real `fuse` without exporting anything.

`GraphBuilder.op` adds one node and fills its output's signature with hwlat's shape functions
(`hwlat.graph.shapes.infer_output`); the layer helpers (`conv2d`, `batch_norm`, `relu6`,
`linear`, ...) write a torch layer as torch's dynamo exporter writes it (its attributes, the
constants it passes as inputs). `build` returns the frozen Graph as written; pass it through
`hwlat.graph.simplify.simplify` for what the exporter's optimizer leaves in the file (BatchNorm
folded into the conv, constants folded, common subexpressions merged, dead code removed).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from hwlat.errors import InvalidInputError
from hwlat.graph.ir import SMALL_CONSTANT_ELEMENTS, AttrValue, Graph, Node, TensorSig, Value
from hwlat.graph.ops import NON_DETERMINISTIC, Op
from hwlat.graph.shapes import infer_output

F32 = "float32"

__all__ = ["GraphBuilder", "assemble"]


def assemble(name: str, nodes: Iterable[Node], sigs: Mapping[str, TensorSig],
             const: set[str], data: Mapping[str, np.ndarray], inputs: Sequence[str],
             outputs: Sequence[str], opset: int, *, keep_unused: bool = False) -> Graph:
    """A frozen Graph from nodes in topological order (re-indexed 0..n-1) and the values'
    signatures; producers and uses are derived from the nodes. The one Graph constructor of
    both paths: `GraphBuilder.build` (values nobody produces, uses or outputs dropped) and
    `graph.load` (`keep_unused`: every value the file declares kept). A value without a
    signature gets an unknown one (no shape, dtype "undefined")."""
    nodes = [n if n.index == i else Node(n.name, n.op, n.inputs, n.outputs, n.attrs, i)
             for i, n in enumerate(nodes)]
    uses: dict[str, list[str]] = {}
    for n in nodes:
        for i in n.inputs:
            if i:
                uses.setdefault(i, []).append(n.name)
    producers = {o: n.name for n in nodes for o in n.outputs if o}
    if keep_unused:
        names = [*inputs, *sigs, *producers, *uses, *outputs]
    else:
        names = [*inputs, *(v for v in sigs if v in uses or v in producers or v in outputs)]
    unknown = TensorSig(None, "undefined")
    values = {v: Value(v, sigs.get(v, unknown), producers.get(v), tuple(uses.get(v, ())),
                       v in const, data.get(v)) for v in dict.fromkeys(names)}
    return Graph(name=name, nodes=tuple(nodes), values=values, inputs=tuple(inputs),
                 outputs=tuple(outputs), opset=opset)


class GraphBuilder:
    """Add ops one by one; value names are returned and passed on, as in ONNX."""

    def __init__(self, name: str = "built", opset: int = 18):
        self.name, self.opset = name, opset
        self._nodes: list[Node] = []
        self._sigs: dict[str, TensorSig] = {}
        self._data: dict[str, np.ndarray] = {}
        self._const: set[str] = set()
        self._inputs: list[str] = []

    # --- values and ops

    def _value(self, sig: TensorSig) -> str:
        name = f"v{len(self._sigs)}"
        self._sigs[name] = sig
        return name

    @property
    def node_count(self) -> int:
        """How many nodes have been added so far (the index the next one gets)."""
        return len(self._nodes)

    def sig(self, value: str) -> TensorSig:
        return self._sigs[value]

    def shape(self, value: str) -> tuple[int, ...]:
        return self._sigs[value].shape

    def input(self, *shape: int, dtype: str = F32) -> str:
        """A runtime input of the graph."""
        v = self._value(TensorSig(tuple(shape), dtype))
        self._inputs.append(v)
        return v

    def const(self, *shape: int, dtype: str = F32, data: np.ndarray | None = None) -> str:
        """An initializer; a small one keeps its data (`data`, else zeros) as loading keeps it."""
        if data is not None:
            data = np.asarray(data, dtype=dtype)
            shape = data.shape
        v = self._value(TensorSig(tuple(int(d) for d in shape), dtype))
        self._const.add(v)
        if math.prod(shape) <= SMALL_CONSTANT_ELEMENTS:
            self._data[v] = np.zeros(shape, dtype) if data is None else data
        return v

    def op(self, op: Op, *inputs: str, **attrs: AttrValue) -> str:
        """One node with one output, its signature from the inputs'; `attrs` as the file has
        them (sorted on the node, as loading sorts them)."""
        missing = [i for i in inputs if i and i not in self._sigs]
        if missing:
            raise InvalidInputError(f"{op.name}: unknown input value(s) {missing}")
        sigs = [self._sigs[i] for i in inputs if i]
        data = [self._data.get(i) for i in inputs if i]
        out = self._value(infer_output(op, sigs, data, attrs))
        if op not in NON_DETERMINISTIC and all(not i or i in self._const for i in inputs):
            self._const.add(out)  # computed from constants alone
        self._nodes.append(Node(f"{op.op_type}_{len(self._nodes)}", op, tuple(inputs), (out,),
                                tuple(sorted(attrs.items()))))
        return out

    def build(self, *outputs: str) -> Graph:
        unknown = [o for o in outputs if o not in self._sigs]
        if not outputs or unknown:
            raise InvalidInputError(f"build needs known output values, got {list(outputs)}")
        return assemble(self.name, self._nodes, self._sigs, self._const, self._data,
                        self._inputs, outputs, self.opset)

    # --- layers as torch's exporter writes them

    def conv2d(self, x: str, cout: int, k: int = 1, stride: int = 1, groups: int = 1, *,
               bias: bool = False, padding: int | None = None) -> str:
        """nn.Conv2d(cin, cout, k, stride, padding (default k // 2), groups=groups, bias=bias)."""
        cin = self.shape(x)[1]
        pad = k // 2 if padding is None else padding
        w = self.const(cout, cin // groups, k, k)
        b = (self.const(cout),) if bias else ()
        return self.op(Op.Conv, x, w, *b, auto_pad="NOTSET", dilations=(1, 1), group=groups,
                       kernel_shape=(k, k), pads=(pad,) * 4, strides=(stride, stride))

    def batch_norm(self, x: str) -> str:
        """nn.BatchNorm2d in eval mode: scale, bias, running mean and variance as inputs."""
        c = self.shape(x)[1]
        params = [self.const(c) for _ in range(4)]
        return self.op(Op.BatchNormalization, x, *params, epsilon=1e-05, momentum=0.9)

    def relu(self, x: str) -> str:
        return self.op(Op.Relu, x)

    def relu6(self, x: str) -> str:
        """ReLU6: Clip with its bounds as two float scalar inputs."""
        lo = self.const(data=np.array(0.0, np.float32))
        hi = self.const(data=np.array(6.0, np.float32))
        return self.op(Op.Clip, x, lo, hi)

    def hardswish(self, x: str) -> str:
        return self.op(Op.HardSwish, x)

    def hardsigmoid(self, x: str) -> str:
        return self.op(Op.HardSigmoid, x, alpha=1 / 6, beta=0.5)

    def activation(self, x: str, name: str | None) -> str:
        """By OFA's names: relu, relu6, h_swish, h_sigmoid; None for none."""
        acts = {"relu": self.relu, "relu6": self.relu6, "h_swish": self.hardswish,
                "h_sigmoid": self.hardsigmoid}
        if name is None:
            return x
        if name not in acts:
            raise InvalidInputError(f"activation {name!r}: known {', '.join(acts)}")
        return acts[name](x)

    def add(self, a: str, b: str) -> str:
        return self.op(Op.Add, a, b)

    def mul(self, a: str, b: str) -> str:
        return self.op(Op.Mul, a, b)

    def mean_hw(self, x: str) -> str:
        """x.mean((2, 3), keepdim=True): opset 18 takes the axes as an int64 input."""
        axes = self.const(data=np.array([2, 3], np.int64), dtype="int64")
        return self.op(Op.ReduceMean, x, axes, keepdims=1, noop_with_empty_axes=0)

    def avg_pool2d(self, x: str, k: int, stride: int, padding: int = 0, *,
                   count_include_pad: bool = True) -> str:
        return self.op(Op.AveragePool, x, auto_pad="NOTSET", ceil_mode=0,
                       count_include_pad=int(count_include_pad), kernel_shape=(k, k),
                       pads=(padding,) * 4, strides=(stride, stride))

    def flatten(self, x: str) -> str:
        """x.view(N, -1) / torch.flatten(x, 1): a Reshape to [N, -1]."""
        shape = self.const(data=np.array([self.shape(x)[0], -1], np.int64), dtype="int64")
        return self.op(Op.Reshape, x, shape, allowzero=1)

    def linear(self, x: str, n_out: int, *, bias: bool = True) -> str:
        """nn.Linear: Gemm with the weight transposed."""
        w = self.const(n_out, self.shape(x)[-1])
        b = (self.const(n_out),) if bias else ()
        return self.op(Op.Gemm, x, w, *b, alpha=1.0, beta=1.0, transA=0, transB=1)
