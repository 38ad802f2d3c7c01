"""One form for the same computation, whichever exporter wrote it: a pass `graph.load` applies
before anything is fused, so that kernel keys (and the latency tables keyed by them) agree
between hwlat's export (torch's dynamo exporter, opset 18+) and torch's TorchScript exporter
(opset 17). The canonical form is the one hwlat's export writes, so its keys are unchanged:

- GELU written out (erf: x * 0.5 * (1 + erf(x / sqrt 2)), tanh: 0.5 x (1 + tanh(sqrt(2/pi)
  (x + 0.044715 x^3)))), any operand order, becomes one Gelu node (`approximate` none / tanh).
  A candidate is checked by evaluating it against GELU on sample points, so a subgraph with
  other constants is left as written;
- attributes left at their default are written out (Conv's auto_pad, dilations, group, pads,
  strides; the pools'; Gemm's alpha, beta, transA, transB; LayerNormalization's axis, epsilon,
  stash_type; the reductions' keepdims, noop_with_empty_axes; Reshape's allowzero is left as
  written, since hwlat's export writes it on some Reshapes only);
- a reduction's `axes` attribute (opset < 18) becomes its constant second input;
- a Conv or Gemm bias that is all zeros is dropped (the dynamo exporter drops it), and so is
  BatchNormalization's training_mode=0;
- a node that hands its input on unchanged is dropped, its readers reading that input: an
  Identity of an activation, a Slice of the whole tensor, a Mul or Div by a scalar one;
- GlobalAveragePool becomes ReduceMean over the spatial axes (keepdims), and Flatten(axis=1) of
  a known shape becomes Reshape to (N, -1), as the dynamo exporter writes them.

Rewritten nodes keep the file position of the node whose output they produce; a node that
stands for several of the file's nodes (a Gelu) has their positions under
`Graph.meta["sources"]`, so a kernel cut out of the file (`graph.extract`) takes the file's
nodes as written.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from hwlat.graph.builder import assemble
from hwlat.graph.ir import AttrValue, Graph, Node, TensorSig
from hwlat.graph.ops import Op

__all__ = ["canonicalize"]

# (op, attribute) -> default, given the node's spatial rank
_DEFAULTS: dict[Op, dict[str, Callable[[int], AttrValue]]] = {
    Op.Conv: {"auto_pad": lambda r: "NOTSET", "dilations": lambda r: (1,) * r,
              "group": lambda r: 1, "pads": lambda r: (0,) * (2 * r), "strides": lambda r: (1,) * r},
    Op.MaxPool: {"auto_pad": lambda r: "NOTSET", "ceil_mode": lambda r: 0,
                 "dilations": lambda r: (1,) * r, "pads": lambda r: (0,) * (2 * r),
                 "storage_order": lambda r: 0, "strides": lambda r: (1,) * r},
    Op.AveragePool: {"auto_pad": lambda r: "NOTSET", "ceil_mode": lambda r: 0,
                     "pads": lambda r: (0,) * (2 * r), "strides": lambda r: (1,) * r},
    Op.Gemm: {"alpha": lambda r: 1.0, "beta": lambda r: 1.0, "transA": lambda r: 0,
              "transB": lambda r: 0},
    Op.LayerNormalization: {"axis": lambda r: -1, "epsilon": lambda r: 1e-5,
                            "stash_type": lambda r: 1},
}
_REDUCTIONS = frozenset(op for op in Op if op.name.startswith("Reduce"))
_REDUCTION_DEFAULTS = {"keepdims": 1, "noop_with_empty_axes": 0}

_SAMPLES = np.concatenate([np.linspace(-6.0, 6.0, 49), [-0.3, 0.05, 0.7, 2.5]])
_GELU_OPS = {
    "none": (Op.Erf, frozenset({Op.Div, Op.Mul, Op.Erf, Op.Add})),
    "tanh": (Op.Tanh, frozenset({Op.Mul, Op.Pow, Op.Add, Op.Tanh, Op.Div})),
}
_UNARY = {Op.Erf: np.vectorize(math.erf), Op.Tanh: np.tanh}
_BINARY = {Op.Add: np.add, Op.Mul: np.multiply, Op.Div: np.divide, Op.Pow: np.power}


def canonicalize(g: Graph, model=None) -> Graph:
    """`g` in the canonical form above; `model` (the ModelProto `g` was read from) supplies the
    data of constants too large for the IR to keep (a bias checked for zeros)."""
    const_data = _ConstData(g, model)
    sources: dict[str, tuple[int, ...]] = dict(g.meta.get("sources", {}))
    extra_sigs: dict[str, TensorSig] = {}
    extra_data: dict[str, np.ndarray] = {}
    replaced: dict[str, Node] = {}  # name of the node a Gelu stands in for -> the Gelu
    dropped: set[str] = set()
    for approximate, (anchor, allowed) in _GELU_OPS.items():
        for n in g.nodes:
            if n.op is anchor and n.name not in dropped:
                found = _gelu_at(g, n, allowed, approximate, const_data)
                if found is None or any(m.name in dropped for m in found[1]):
                    continue
                gelu, cone = found
                dropped.update(m.name for m in cone)
                replaced[gelu.name] = gelu
                sources[gelu.name] = tuple(sorted(m.index for m in cone))
    nodes: list[Node] = []
    changed = bool(replaced)
    rename: dict[str, str] = {}  # output of a dropped no-op -> the value it passes on
    for n in g.nodes:
        if n.name in dropped and n.name not in replaced:
            continue
        n = replaced.get(n.name, n)
        if any(i in rename for i in n.inputs):
            n = Node(n.name, n.op, tuple(rename.get(i, i) for i in n.inputs), n.outputs,
                     n.attrs, n.index)
        new = _canonical_node(g, n, const_data, extra_sigs, extra_data)
        passed = _no_op_input(g, new, const_data)
        if passed is not None:
            rename[new.outputs[0]] = passed
            changed = True
            continue
        changed |= new != g.node(n.name)
        nodes.append(new)
    if not changed:
        return g
    sigs = {v: val.sig for v, val in g.values.items()} | extra_sigs
    const = {v for v, val in g.values.items() if val.is_const} | set(extra_sigs)
    data = {v: val.data for v, val in g.values.items() if val.data is not None} | extra_data
    indexed = [Node(n.name, n.op, n.inputs, n.outputs, n.attrs, n.index) for n in nodes]
    out = assemble(g.name, indexed, sigs, const, data, g.inputs, g.outputs, g.opset)
    # assemble renumbers nodes 0..n-1; hwlat keeps the file's positions (graph.extract reads them)
    out = Graph(out.name, tuple(indexed), out.values, out.inputs, out.outputs, out.opset)
    out.meta.update(g.meta)
    if sources:
        out.meta["sources"] = sources
    return out


class _ConstData:
    """Data of constant values: the IR's small ones, else the file's initializers and Constant
    nodes, looking through Identity."""

    def __init__(self, g: Graph, model) -> None:
        self.g = g
        self.inits = {t.name: t for t in model.graph.initializer} if model is not None else {}

    def get(self, name: str) -> np.ndarray | None:
        for _ in range(8):
            v = self.g.values.get(name)
            if v is None or not v.is_const:
                return None
            if v.data is not None:
                return np.asarray(v.data)
            if name in self.inits:
                from onnx import numpy_helper

                try:
                    return numpy_helper.to_array(self.inits[name])
                except Exception:
                    return None
            p = self.g.producer(name)
            if p is None or p.op is not Op.Identity:
                return None
            name = p.inputs[0]
        return None


def _canonical_node(g: Graph, n: Node, data: _ConstData, extra_sigs: dict,
                    extra_data: dict) -> Node:
    attrs = dict(n.attrs)
    inputs = n.inputs
    op = n.op
    x = g.values.get(n.inputs[0]) if n.inputs else None
    rank = len(x.shape) - 2 if x is not None and x.shape is not None and len(x.shape) > 2 else 0
    if "kernel_shape" in attrs:
        rank = len(attrs["kernel_shape"])
    if op is Op.GlobalAveragePool and rank:
        op = Op.ReduceMean
        axes = f"{n.name}.axes"
        extra_sigs[axes] = TensorSig((rank,), "int64")
        extra_data[axes] = np.arange(2, 2 + rank, dtype=np.int64)
        inputs, attrs = (n.inputs[0], axes), {"keepdims": 1}
    elif op is Op.Flatten and attrs.get("axis", 1) == 1 and x is not None and x.shape \
            and all(isinstance(d, int) for d in x.shape) and len(x.shape) > 2:
        op = Op.Reshape
        shape = f"{n.name}.shape"
        extra_sigs[shape] = TensorSig((2,), "int64")
        extra_data[shape] = np.asarray([x.shape[0], -1], dtype=np.int64)
        inputs, attrs = (n.inputs[0], shape), {"allowzero": 1}
    if op in _REDUCTIONS:
        if "axes" in attrs:
            axes = f"{n.name}.axes"
            value = np.asarray(attrs.pop("axes"), dtype=np.int64)
            extra_sigs[axes] = TensorSig(value.shape, "int64")
            extra_data[axes] = value
            inputs = (inputs[0], axes)
        for k, v in _REDUCTION_DEFAULTS.items():
            attrs.setdefault(k, v)
    for k, default in _DEFAULTS.get(op, {}).items():
        if k not in attrs and not (k in ("pads", "dilations", "strides") and rank == 0):
            attrs[k] = default(rank)
    if op is Op.BatchNormalization and attrs.get("training_mode") == 0:
        del attrs["training_mode"]
    if op in (Op.Conv, Op.Gemm) and len(inputs) == 3 and inputs[2]:
        bias = data.get(inputs[2])
        if bias is not None and bias.size and not np.any(bias):
            inputs = inputs[:2]
    new_attrs = tuple(sorted(attrs.items()))
    if op is n.op and inputs == n.inputs and new_attrs == n.attrs:
        return n
    return Node(n.name, op, inputs, n.outputs, new_attrs, n.index)


def _no_op_input(g: Graph, n: Node, data: _ConstData) -> str | None:
    """The input a node hands on unchanged (an Identity of an activation, a Slice of the whole
    tensor, a Mul or Div by a scalar one), or None. A graph output stays as written."""
    if len(n.outputs) != 1 or n.outputs[0] in g.outputs or not n.inputs or g.is_const(n.outputs[0]):
        return None
    x, out = n.inputs[0], g.values.get(n.outputs[0])
    xv = g.values.get(x)
    if out is None or xv is None or out.sig.numel() is None:
        return None
    if n.op is Op.Identity and out.sig == xv.sig:
        return x
    if n.op is Op.Slice and out.sig == xv.sig:
        steps = data.get(n.inputs[4]) if len(n.inputs) > 4 and n.inputs[4] else np.ones(1)
        return x if steps is not None and np.all(steps == 1) else None
    # a scalar one only: a weight tensor that happens to hold ones (or a zero bias after an
    # unfused MatMul) is a parameter, and hwlat's export keeps it
    if n.op not in (Op.Mul, Op.Div) or len(n.inputs) != 2:
        return None
    for keep, other in ((0, 1), (1, 0)):
        if other == 0 and n.op is Op.Div:
            continue
        c = data.get(n.inputs[other])
        v = g.values.get(n.inputs[keep])
        if c is not None and c.size == 1 and np.all(c == 1) and v is not None and v.sig == out.sig:
            return n.inputs[keep]
    return None


def _gelu_at(g: Graph, anchor: Node, allowed: frozenset[Op], approximate: str,
             data: _ConstData) -> tuple[Node, list[Node]] | None:
    """The GELU written around `anchor` (its Erf or Tanh) as (Gelu node, the nodes it replaces),
    or None."""
    candidates: list[str] = []
    stack, seen = [anchor], set()
    while stack:  # values the GELU's input could be: behind the anchor, through allowed ops
        m = stack.pop()
        if m.name in seen or len(seen) > 8:
            continue
        seen.add(m.name)
        for i in m.inputs:
            if not i or g.is_const(i):
                continue
            candidates.append(i)
            p = g.producer(i)
            if p is not None and p.op in allowed:
                stack.append(p)
    for x in dict.fromkeys(candidates):
        cone = _cone(g, x, allowed)
        if anchor not in cone:
            continue
        out = _single_exit(g, cone)
        if out is None or g.values[out].shape != g.values[x].shape:
            continue
        if not _computes_gelu(cone, x, out, approximate, data):
            continue
        last = next(m for m in cone if out in m.outputs)
        attrs = (("approximate", approximate),)
        return Node(last.name, Op.Gelu, (x,), (out,), attrs, last.index), cone
    return None


def _cone(g: Graph, x: str, allowed: frozenset[Op], limit: int = 8) -> list[Node]:
    known, cone, frontier = {x}, [], [x]
    while frontier and len(cone) <= limit:
        for u in g.users(frontier.pop(0)):
            if u in cone or u.op not in allowed:
                continue
            if all(not i or i in known or g.is_const(i) for i in u.inputs):
                cone.append(u)
                known.update(o for o in u.outputs if o)
                frontier.extend(o for o in u.outputs if o)
    return sorted(cone, key=lambda m: m.index)


def _single_exit(g: Graph, cone: list[Node]) -> str | None:
    inside = {m.name for m in cone}
    outs = [o for m in cone for o in m.outputs
            if o and (o in g.outputs or any(u not in inside for u in g.values[o].uses))]
    return outs[0] if len(outs) == 1 else None


def _computes_gelu(cone: list[Node], x: str, out: str, approximate: str, data: _ConstData) -> bool:
    vals: dict[str, np.ndarray] = {x: _SAMPLES}
    with np.errstate(all="ignore"):
        for m in cone:  # sorted by file position: topological
            args = []
            for i in m.inputs:
                if i in vals:
                    args.append(vals[i])
                    continue
                c = data.get(i)
                if c is None or c.size != 1:
                    return False
                args.append(np.float64(c.reshape(())))
            if m.op in _UNARY and len(args) == 1:
                vals[m.outputs[0]] = _UNARY[m.op](args[0])
            elif m.op in _BINARY and len(args) == 2:
                vals[m.outputs[0]] = _BINARY[m.op](args[0], args[1])
            else:
                return False
    if out not in vals:
        return False
    x64 = _SAMPLES
    if approximate == "tanh":
        want = 0.5 * x64 * (1 + np.tanh(math.sqrt(2 / math.pi) * (x64 + 0.044715 * x64 ** 3)))
    else:
        want = 0.5 * x64 * (1 + np.vectorize(math.erf)(x64 / math.sqrt(2)))
    # float32 constants: sqrt(2) and the like are exact to ~1e-7 relative
    return bool(np.allclose(vals[out], want, rtol=1e-6, atol=1e-7))
