"""Cut one kernel out of its model as a standalone ONNX model, for timing it alone.

The kernel keeps its real weights and the constant subgraphs that feed it; its activation
inputs become graph inputs and the values it hands on become graph outputs.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from hwlat.errors import InvalidModelError
from hwlat.graph.fuse import exits, sparse_anchor
from hwlat.graph.ir import Graph
from hwlat.graph.kernel import Kernel, KernelKind
from hwlat.graph.sparse import default_coords


def extract_kernel(g: Graph, k: Kernel) -> onnx.ModelProto:
    model: onnx.ModelProto | None = g.meta.get("onnx")
    if model is None:
        raise InvalidModelError(f"graph '{g.name}' was not loaded from a file; cannot cut kernels")
    src = model.graph
    nodes = [g.node(n) for n in k.nodes]
    # the file's nodes as written (a node of the graph may stand for several, graph.canon)
    sources = g.meta.get("sources", {})
    written = sorted({i for n in nodes for i in sources.get(n.name, (n.index,))})
    inside = {o for i in written for o in src.node[i].output if o}
    needed = list(dict.fromkeys(v for i in written for v in src.node[i].input if v and v not in inside))
    const_nodes = _constant_producers(g, needed)
    consts_made = {o for n in const_nodes for o in n.outputs}
    inits = {t.name: t for t in src.initializer}
    value_info = {v.name: v for v in [*src.input, *src.value_info, *src.output]}
    used_inits, inputs = [], []
    for v in dict.fromkeys(needed + [i for n in const_nodes for i in n.inputs if i]):
        if v in inits:
            used_inits.append(inits[v])
        elif v not in consts_made:
            inputs.append(value_info.get(v) or _typed(g, v))
    if k.kind is KernelKind.SPARSE_CONV and dict(k.key.attrs).get("map") == 0:
        # a conv that reuses its model's kernel map is timed without building one: its
        # coordinates (the runners' default cloud) become a constant the map is built from
        # at compile time
        coords = sparse_anchor(g, k).inputs[1]
        shape = g.values[coords].shape
        if any(i.name == coords for i in inputs) and shape and isinstance(shape[0], int):
            inputs = [i for i in inputs if i.name != coords]
            used_inits.append(numpy_helper.from_array(default_coords(shape[0]), coords))
    outputs = [value_info.get(o) or _typed(g, o) for o in exits(g, nodes)]
    body = [src.node[i] for i in sorted({n.index for n in const_nodes} | set(written))]
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


def _typed(g: Graph, name: str) -> onnx.ValueInfoProto:
    """The value's type from the graph's own inference (e.g. of hwlat's ops, which onnx's
    shape inference does not know), else an untyped value."""
    v = g.values.get(name)
    sig = v.sig if v is not None else None
    if sig is None or sig.shape is None or not all(isinstance(d, int) for d in sig.shape):
        return helper.make_empty_tensor_value_info(name)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(sig.dtype))
    return helper.make_tensor_value_info(name, elem, list(sig.shape))
