"""Cut one kernel out of its model as a standalone ONNX model, for timing it alone.

The kernel keeps its real weights and the constant subgraphs that feed it; its activation
inputs become graph inputs and the values it hands on become graph outputs.
"""

from __future__ import annotations

import onnx
from onnx import helper

from hwlat.errors import InvalidModelError
from hwlat.graph.fuse import exits
from hwlat.graph.ir import Graph
from hwlat.graph.kernel import Kernel


def extract_kernel(g: Graph, k: Kernel) -> onnx.ModelProto:
    model: onnx.ModelProto | None = g.meta.get("onnx")
    if model is None:
        raise InvalidModelError(f"graph '{g.name}' was not loaded from a file; cannot cut kernels")
    src = model.graph
    nodes = [g.node(n) for n in k.nodes]
    inside = {o for n in nodes for o in n.outputs if o}
    needed = [i for n in nodes for i in n.inputs if i and i not in inside]
    const_nodes = _constant_producers(g, needed)
    consts_made = {o for n in const_nodes for o in n.outputs}
    inits = {t.name: t for t in src.initializer}
    value_info = {v.name: v for v in [*src.input, *src.value_info, *src.output]}
    used_inits, inputs = [], []
    for v in dict.fromkeys(needed + [i for n in const_nodes for i in n.inputs if i]):
        if v in inits:
            used_inits.append(inits[v])
        elif v not in consts_made:
            inputs.append(value_info.get(v) or _untyped(v))
    outputs = [value_info.get(o) or _untyped(o) for o in exits(g, nodes)]
    body = [src.node[n.index] for n in sorted(const_nodes + nodes, key=lambda n: n.index)]
    sub = helper.make_graph(body, f"{g.name}.{k.kind.value}", inputs, outputs, used_inits)
    out = helper.make_model(sub, opset_imports=list(model.opset_import))
    out.ir_version = model.ir_version
    return out


def _constant_producers(g: Graph, values: list[str]) -> list:
    """Nodes computing constant inputs from initializers (folded by the runtime, needed here)."""
    found: dict[str, object] = {}
    stack = [v for v in values if g.is_const(v)]
    while stack:
        p = g.producer(stack.pop())
        if p is None or p.name in found:
            continue
        found[p.name] = p
        stack.extend(i for i in p.inputs if i)
    return list(found.values())


def _untyped(name: str) -> onnx.ValueInfoProto:
    return helper.make_empty_tensor_value_info(name)
