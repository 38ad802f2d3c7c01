"""ONNX file -> validated Graph IR.

Order matters for hostile files: `onnx.load` reads the file first (it refuses external-data
locations outside the model folder, symlinks and hardlinks), then hwlat's own structural checks
name every unknown op and any cycle, then onnx's checker and shape inference run. Every failure
becomes one InvalidModelError line.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import networkx as nx
import numpy as np
import onnx
from onnx import AttributeProto, helper, numpy_helper

from hwlat.errors import InvalidModelError, UnsupportedOpError
from hwlat.graph.external import load_external_data
from hwlat.graph.ir import SMALL_CONSTANT_ELEMENTS, AttrValue, Graph, Node, TensorSig, Value
from hwlat.graph.ops import NON_DETERMINISTIC, Op
from hwlat.graph.shapes import infer_custom_shapes
from hwlat.graph.sparse import check_sparse_convs

_PRIMITIVE_ATTRS = {
    AttributeProto.INT: lambda a: int(a.i),
    AttributeProto.FLOAT: lambda a: float(a.f),
    AttributeProto.STRING: lambda a: a.s.decode("utf-8", "replace"),
    AttributeProto.INTS: lambda a: tuple(int(x) for x in a.ints),
    AttributeProto.FLOATS: lambda a: tuple(float(x) for x in a.floats),
    AttributeProto.STRINGS: lambda a: tuple(s.decode("utf-8", "replace") for s in a.strings),
}


def load(path: str | os.PathLike) -> Graph:
    """Read, validate and convert an ONNX model file; InvalidModelError on any problem."""
    model = read_model(path)
    try:
        check_vocabulary(model)
        check_structure(model)
        check_sparse_convs(model)  # hwlat's own op, which onnx's checker cannot check
        model = check_and_infer(model, Path(path))
        g = to_ir(model, name=Path(path).stem)
    except UnicodeDecodeError as e:  # ONNX strings are decoded lazily, on first access
        raise InvalidModelError(f"{path}: a name or string in the model is not valid UTF-8") from e
    g.meta["onnx"] = model
    return g


def read_model(path: str | os.PathLike) -> onnx.ModelProto:
    p = Path(path)
    if not p.exists():
        raise InvalidModelError(f"{p}: no such file")
    if not p.is_file():
        raise InvalidModelError(f"{p}: not a regular file")
    try:
        # by path, so onnx resolves external data relative to the model folder and refuses escapes
        model = onnx.load(str(p), load_external_data=False)
        load_external_data(model, p.parent)  # regular files only, no more than the dims need
        return model
    except InvalidModelError as e:
        raise InvalidModelError(f"{p}: {e}") from e
    except Exception as e:  # protobuf, OS and external-data errors all mean one thing here
        raise InvalidModelError(f"{p}: not a readable ONNX model ({_one_line(e)})") from e


def check_vocabulary(model: onnx.ModelProto) -> None:
    unknown = Counter(
        n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"
        for n in model.graph.node
        if Op.lookup(n.domain, n.op_type) is None
    )
    if unknown:
        raise UnsupportedOpError(dict(unknown))


def check_structure(model: onnx.ModelProto) -> None:
    """Every input defined once, no value produced twice, no cycle."""
    g = model.graph
    defined = {i.name for i in g.input} | {t.name for t in g.initializer}
    producer: dict[str, int] = {}
    for idx, n in enumerate(g.node):
        for o in n.output:
            if not o:
                continue
            if o in producer or o in defined:
                raise InvalidModelError(f"value '{o}' is produced twice (node {_label(n, idx)})")
            producer[o] = idx
    dag = nx.DiGraph()
    dag.add_nodes_from(range(len(g.node)))
    for idx, n in enumerate(g.node):
        for i in n.input:
            if not i or i in defined:
                continue
            if i not in producer:
                raise InvalidModelError(f"node {_label(n, idx)} reads '{i}', which nothing produces")
            dag.add_edge(producer[i], idx)
    for o in g.output:
        if o.name not in producer and o.name not in defined:
            raise InvalidModelError(f"graph output '{o.name}' is never produced")
    try:
        cycle = nx.find_cycle(dag)
    except nx.NetworkXNoCycle:
        return
    names = " -> ".join(_label(g.node[a], a) for a, _ in cycle)
    raise InvalidModelError(f"the graph has a cycle: {names}")


def check_and_infer(model: onnx.ModelProto, path: Path) -> onnx.ModelProto:
    """onnx's checker and shape inference on the graph without its weights (both serialize the
    whole model; weights are checked here instead, tensor by tensor), then the inferred shapes
    are put back into the full model."""
    if len(model.graph.sparse_initializer):
        raise InvalidModelError(f"{path}: sparse initializers are not supported")
    for t in model.graph.initializer:
        try:
            numpy_helper.to_array(t)
        except Exception as e:
            raise InvalidModelError(f"{path}: initializer '{t.name}' is malformed ({_one_line(e)})") from e
    try:
        skeleton = _without_weights(model)  # reads names: protobuf decodes their UTF-8 here
        onnx.checker.check_model(skeleton)
    except Exception as e:
        raise InvalidModelError(f"{path}: fails the ONNX checker ({_one_line(e)})") from e
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton, check_type=True, data_prop=True)
    except Exception as e:
        raise InvalidModelError(f"{path}: shape inference failed ({_one_line(e)})") from e
    known = {v.name for v in model.graph.value_info}
    model.graph.value_info.extend(v for v in inferred.graph.value_info if v.name not in known)
    return model


def _without_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with each large initializer turned into a typed graph input of the same shape;
    small ones stay, since shape inference reads shapes and axes from them."""
    g = model.graph
    keep = [t for t in g.initializer if _numel(t.dims) <= SMALL_CONSTANT_ELEMENTS]
    declared = {i.name for i in g.input}
    as_inputs = [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                 for t in g.initializer if _numel(t.dims) > SMALL_CONSTANT_ELEMENTS and t.name not in declared]
    graph = helper.make_graph(list(g.node), g.name, [*g.input, *as_inputs], list(g.output), keep,
                              value_info=list(g.value_info))
    out = helper.make_model(graph, opset_imports=list(model.opset_import))
    out.ir_version = model.ir_version
    return out


def to_ir(model: onnx.ModelProto, name: str = "model") -> Graph:
    g = model.graph
    sigs: dict[str, TensorSig] = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        sigs[vi.name] = _sig_from_type(vi.type)
    data: dict[str, np.ndarray] = {}
    const: set[str] = set()
    for t in g.initializer:
        sigs[t.name] = TensorSig(tuple(int(d) for d in t.dims), _dtype_name(t.data_type))
        const.add(t.name)
        if _numel(t.dims) <= SMALL_CONSTANT_ELEMENTS:
            data[t.name] = _tensor_data(t)

    nodes = [_convert_node(n, idx, data, sigs) for idx, n in enumerate(g.node)]
    for n in nodes:  # constant propagation: what a runtime folds before the first run
        if n.op is Op.Constant or (
            n.op not in NON_DETERMINISTIC and all(not i or i in const for i in n.inputs)
        ):
            const.update(o for o in n.outputs if o)
    infer_custom_shapes(nodes, sigs)

    uses: dict[str, list[str]] = {}
    for n in nodes:
        for i in n.inputs:
            if i:
                uses.setdefault(i, []).append(n.name)
    producers = {o: n.name for n in nodes for o in n.outputs if o}
    names = set(sigs) | set(producers) | set(uses)
    values = {
        v: Value(
            name=v,
            sig=sigs.get(v, TensorSig(None, "undefined")),
            producer=producers.get(v),
            uses=tuple(uses.get(v, ())),
            is_const=v in const,
            data=data.get(v),
        )
        for v in names
    }
    initializers = {t.name for t in g.initializer}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return Graph(
        name=g.name or name,
        nodes=tuple(nodes),
        values=values,
        inputs=tuple(i.name for i in g.input if i.name not in initializers),
        outputs=tuple(o.name for o in g.output),
        opset=int(opset),
    )


def _convert_node(n, idx: int, data: dict, sigs: dict) -> Node:
    op = Op.lookup(n.domain, n.op_type)
    assert op is not None  # check_vocabulary ran first
    attrs: list[tuple[str, AttrValue]] = []
    for a in n.attribute:
        if op is Op.Constant:
            _constant_literal(a, n.output[0], data, sigs)
        elif a.type in _PRIMITIVE_ATTRS:
            attrs.append((a.name, _PRIMITIVE_ATTRS[a.type](a)))
    return Node(
        name=f"{n.name or n.op_type}#{idx}",
        op=op,
        inputs=tuple(n.input),
        outputs=tuple(n.output),
        attrs=tuple(sorted(attrs)),
        index=idx,
    )


def _constant_literal(a, out: str, data: dict, sigs: dict) -> None:
    """A Constant node's value: a tensor, or a literal such as value_float / value_ints."""
    if a.type == AttributeProto.TENSOR:
        arr = _tensor_data(a.t)
    elif a.type in _PRIMITIVE_ATTRS and a.type != AttributeProto.STRING:
        arr = np.asarray(_PRIMITIVE_ATTRS[a.type](a))
    else:
        return
    if arr is None:
        return
    sigs[out] = TensorSig(tuple(int(d) for d in arr.shape), str(arr.dtype))
    if arr.size <= SMALL_CONSTANT_ELEMENTS:
        data[out] = arr


def _sig_from_type(tp: onnx.TypeProto) -> TensorSig:
    if not tp.HasField("tensor_type"):
        return TensorSig(None, "undefined")
    tt = tp.tensor_type
    shape = None
    if tt.HasField("shape"):
        shape = tuple(
            int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or None)
            for d in tt.shape.dim
        )
    return TensorSig(shape, _dtype_name(tt.elem_type))


def _dtype_name(elem_type: int) -> str:
    try:
        return str(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)))
    except Exception:
        return "undefined"


def _tensor_data(t: onnx.TensorProto) -> np.ndarray | None:
    try:
        return numpy_helper.to_array(t)
    except Exception:
        return None


def _numel(dims) -> int:
    return int(np.prod([int(d) for d in dims], dtype=np.int64)) if len(dims) else 1


def _label(n, idx: int) -> str:
    return f"'{n.name}' ({n.op_type} #{idx})" if n.name else f"{n.op_type} #{idx}"


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."
