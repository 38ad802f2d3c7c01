"""IR passes for what torch's exporter and its optimizer do to a model before the file is
written, so that a Graph built op by op (hwlat.graph.builder) is the Graph `graph.load` reads
from the exported file:

- `fold_constants`: nodes computed from constants alone are dropped; their outputs become
  constants (initializers in the file);
- `merge_common`: a node with the same op, inputs and attributes as an earlier one is merged
  into it (one Relu per value however many branches apply it);
- `remove_dead`: nodes no graph output depends on are dropped;
- `fold_batch_norm`: a BatchNormalization with constant parameters that alone reads a Conv's
  output becomes the conv's bias (again, when the conv's output then feeds another one).

`simplify` runs them in that order. Each pass returns a new Graph; the input is not changed.
"""

from __future__ import annotations

from hwlat.graph.builder import assemble
from hwlat.graph.ir import Graph, Node, TensorSig
from hwlat.graph.ops import Op

__all__ = ["fold_batch_norm", "fold_constants", "merge_common", "remove_dead", "simplify"]


def _rebuild(g: Graph, nodes: list[Node], outputs: tuple[str, ...] | None = None,
             extra: dict[str, TensorSig] | None = None) -> Graph:
    sigs = {v: val.sig for v, val in g.values.items()} | (extra or {})
    const = {v for v, val in g.values.items() if val.is_const} | set(extra or ())
    data = {v: val.data for v, val in g.values.items() if val.data is not None}
    return assemble(g.name, nodes, sigs, const, data, g.inputs,
                    g.outputs if outputs is None else outputs, g.opset)


def fold_constants(g: Graph) -> Graph:
    nodes = [n for n in g.nodes if not g.is_foldable(n)]
    return g if len(nodes) == len(g.nodes) else _rebuild(g, nodes)


def merge_common(g: Graph) -> Graph:
    rename: dict[str, str] = {}
    seen: dict[tuple, Node] = {}
    nodes: list[Node] = []
    for n in g.nodes:
        inputs = tuple(rename.get(i, i) for i in n.inputs)
        key = (n.op, inputs, n.attrs)
        first = seen.get(key)
        if first is not None and len(first.outputs) == len(n.outputs):
            rename.update(zip(n.outputs, first.outputs, strict=True))
            continue
        n = Node(n.name, n.op, inputs, n.outputs, n.attrs, n.index)
        seen[key] = n
        nodes.append(n)
    if not rename:
        return g
    return _rebuild(g, nodes, tuple(rename.get(o, o) for o in g.outputs))


def remove_dead(g: Graph) -> Graph:
    live: set[str] = set()
    needed = set(g.outputs)
    for n in reversed(g.nodes):
        if any(o in needed for o in n.outputs):
            live.add(n.name)
            needed.update(i for i in n.inputs if i)
    if len(live) == len(g.nodes):
        return g
    return _rebuild(g, [n for n in g.nodes if n.name in live])


def fold_batch_norm(g: Graph) -> Graph:
    """Until none is left: a conv's output read only by a BatchNormalization with constant
    parameters becomes the BatchNorm's output, the conv given a bias if it had none."""
    while True:
        folded = _fold_batch_norm_once(g)
        if folded is None:
            return g
        g = folded


def _fold_batch_norm_once(g: Graph) -> Graph | None:
    nodes: list[Node] = []
    extra: dict[str, TensorSig] = {}
    folded: set[str] = set()
    for n in g.nodes:
        if n.name in folded:
            continue
        bn = g.sole_user(n.outputs[0]) if n.op is Op.Conv else None
        if bn is not None and bn.op is Op.BatchNormalization and bn.inputs[0] == n.outputs[0] \
                and all(g.is_const(i) for i in bn.inputs[1:] if i):
            inputs = n.inputs
            if len(inputs) < 3 or not inputs[2]:
                bias = f"{n.name}.bias"
                extra[bias] = TensorSig((g.values[n.inputs[1]].shape[0],),
                                        g.values[n.outputs[0]].sig.dtype)
                inputs = (*inputs[:2], bias)
            n = Node(n.name, n.op, inputs, bn.outputs[:1], n.attrs, n.index)
            folded.add(bn.name)
        nodes.append(n)
    return _rebuild(g, nodes, extra=extra) if folded else None


def simplify(g: Graph) -> Graph:
    """The graph as the exporter writes it: constants folded, common subexpressions merged, dead
    nodes removed, BatchNorm folded into the conv before it."""
    return fold_batch_norm(remove_dead(merge_common(fold_constants(g))))
