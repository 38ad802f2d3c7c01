"""Shape computations folded into constants, so that a model with fixed input shapes has every
value's shape known.

Exporters that trace `x.shape` (torch's TorchScript exporter above all) write the shape
arithmetic into the graph: Shape -> Gather -> Div -> Concat -> Reshape, Shape -> Slice bounds.
onnx's shape inference gives up behind such chains (it propagates Shape's data through a few
ops only), leaving symbolic dims on everything downstream: a channel shuffle's Reshape, a Swin
window partition, a ViT's token reshape. With the input shapes fixed these chains are constants;
runtimes fold them before the first run, and so does `fold_shape_computations`: a Shape (or
Size) of a value whose shape is known becomes a constant, and so does every small node whose
inputs are then all small constants (exporters also write a static shape's arithmetic out from
Constants: Ceil, Clip, Cast ... -> Pad amounts, which onnx's inference cannot read either). Shape
inference is then run again, until nothing more folds.

Evaluation is onnx's reference implementation, on tensors of at most FOLD_ELEMENTS elements; no
node that reads a weight, draws random numbers, or holds a subgraph is evaluated.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import AttributeProto, helper, numpy_helper

FOLD_ELEMENTS = 4096  # shape tensors are tiny; anything bigger is data, not a shape
_NEVER = frozenset({"Dropout", "RandomNormal", "RandomNormalLike", "RandomUniform",
                    "RandomUniformLike", "Multinomial", "Bernoulli", "If", "Loop", "Scan"})


def static_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """name -> shape of every graph input, value_info and output whose dims are all known."""
    g = model.graph
    out: dict[str, tuple[int, ...]] = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        shape = static_shape(vi.type)
        if shape is not None:
            out[vi.name] = shape
    for t in g.initializer:
        out[t.name] = tuple(int(d) for d in t.dims)
    return out


def static_shape(tp: onnx.TypeProto) -> tuple[int, ...] | None:
    if not tp.HasField("tensor_type") or not tp.tensor_type.HasField("shape"):
        return None
    dims = tp.tensor_type.shape.dim
    if not all(d.HasField("dim_value") and d.dim_value >= 0 for d in dims):
        return None
    return tuple(int(d.dim_value) for d in dims)


def fold_shape_computations(model: onnx.ModelProto,
                            shapes: dict[str, tuple[int, ...]]) -> onnx.ModelProto | None:
    """`model` with its shape computations replaced by initializers, given the known static
    `shapes` (name -> dims); None when nothing folds."""
    g = model.graph
    opsets = {(o.domain or ""): o.version for o in model.opset_import}
    known: dict[str, np.ndarray] = {
        t.name: numpy_helper.to_array(t) for t in g.initializer if _numel(t.dims) <= FOLD_ELEMENTS
    }
    folded: set[int] = set()
    graph_outputs = {o.name for o in g.output}
    for idx, n in enumerate(g.node):
        if n.domain not in ("", "ai.onnx") or n.op_type in _NEVER or _has_subgraph(n):
            continue
        if any(o in graph_outputs for o in n.output):
            continue
        if n.op_type == "Constant":
            value = _constant_value(n)
            if value is not None and value.size <= FOLD_ELEMENTS:
                known[n.output[0]] = value
            continue
        if n.op_type in ("Shape", "Size"):
            shape = shapes.get(n.input[0])
            if shape is None:
                continue
            known[n.output[0]] = _shape_op(n, shape)
            folded.add(idx)
            continue
        ins = [i for i in n.input if i]
        if not ins or not all(i in known for i in ins):
            continue
        try:
            results = _evaluate(n, {i: known[i] for i in ins}, opsets)
        except Exception:
            continue  # left to the runtime; shape inference reports what stays unknown
        if any(r is None or np.asarray(r).size > FOLD_ELEMENTS for r in results):
            continue
        for name, r in zip(n.output, results, strict=False):
            if name:
                known[name] = np.asarray(r)
        folded.add(idx)
    if not folded:
        return None
    return _rewrite(model, folded, known)


def _rewrite(model: onnx.ModelProto, folded: set[int], known: dict[str, np.ndarray]) -> onnx.ModelProto:
    g = model.graph
    kept = [n for i, n in enumerate(g.node) if i not in folded]
    # Constant nodes only the folded nodes read are dropped with them
    while True:
        used = {i for n in kept for i in n.input} | {o.name for o in g.output}
        dead = [n for n in kept if n.op_type == "Constant" and not any(o in used for o in n.output)]
        if not dead:
            break
        kept = [n for n in kept if n not in dead]
    used = {i for n in kept for i in n.input} | {o.name for o in g.output}
    produced_by_folds = {o for i in folded for o in g.node[i].output if o}
    new_inits = [numpy_helper.from_array(np.ascontiguousarray(known[v]), v)
                 for v in sorted(produced_by_folds & used)]
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(kept)
    out.graph.initializer.extend(new_inits)
    gone = produced_by_folds
    keep_vi = [v for v in out.graph.value_info if v.name not in gone]
    del out.graph.value_info[:]
    out.graph.value_info.extend(keep_vi)
    return out


def _shape_op(n: onnx.NodeProto, shape: tuple[int, ...]) -> np.ndarray:
    if n.op_type == "Size":
        return np.asarray(int(np.prod(shape, dtype=np.int64)), dtype=np.int64)
    attrs = {a.name: a.i for a in n.attribute if a.type == AttributeProto.INT}
    start, end = attrs.get("start", 0), attrs.get("end", len(shape))
    return np.asarray(shape[slice(start, end if "end" in attrs else None)], dtype=np.int64)


def _evaluate(n: onnx.NodeProto, feeds: dict[str, np.ndarray], opsets: dict[str, int]) -> list:
    from onnx.reference import ReferenceEvaluator

    node = helper.make_node(n.op_type, list(n.input), list(n.output), domain=n.domain)
    node.attribute.extend(n.attribute)
    return list(ReferenceEvaluator(node, opsets={"": opsets.get("", opsets.get("ai.onnx", 17))}).run(None, feeds))


def _constant_value(n: onnx.NodeProto) -> np.ndarray | None:
    for a in n.attribute:
        if a.type == AttributeProto.TENSOR:
            return numpy_helper.to_array(a.t)
        if a.name in ("value_int", "value_ints", "value_float", "value_floats"):
            v = helper.get_attribute_value(a)
            dtype = np.int64 if "int" in a.name else np.float32
            return np.asarray(v, dtype=dtype)
    return None


def _has_subgraph(n: onnx.NodeProto) -> bool:
    return any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for a in n.attribute)


def _numel(dims) -> int:
    return int(np.prod([int(d) for d in dims], dtype=np.int64)) if len(dims) else 1
