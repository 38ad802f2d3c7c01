"""ONNX file -> validated Graph IR.

Order matters for hostile files: `onnx.load` reads the file first (it refuses external-data
locations outside the model folder, symlinks and hardlinks), then hwlat's own structural checks
name every unknown op and any cycle, then onnx's checker and shape inference run. Every failure
becomes one InvalidModelError line.

onnx is imported inside the functions that read or check a file: importing hwlat.graph (the IR,
the kernel keys, a NAS loop that queries a table) does not load it.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import networkx as nx
import numpy as np

from hwlat.errors import InvalidModelError, UnsupportedOpError, one_line
from hwlat.graph.builder import assemble
from hwlat.graph.canon import canonicalize
from hwlat.graph.ir import SMALL_CONSTANT_ELEMENTS, AttrValue, Graph, Node, TensorSig
from hwlat.graph.ops import NON_DETERMINISTIC, Op
from hwlat.graph.shapes import infer_custom_shapes
from hwlat.graph.sparse import check_sparse_convs

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

# onnx.AttributeProto's attribute types (fixed by ONNX's protobuf schema; tests/graph check them)
AttributeProto = SimpleNamespace(FLOAT=1, INT=2, STRING=3, TENSOR=4, FLOATS=6, INTS=7, STRINGS=8)

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
        g = canonicalize(to_ir(model, name=Path(path).stem), model)
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
    import onnx

    from hwlat.graph.external import load_external_data

    try:
        # by path, so onnx resolves external data relative to the model folder and refuses escapes
        model = onnx.load(str(p), load_external_data=False)
        load_external_data(model, p.parent)  # regular files only, no more than the dims need
        return model
    except InvalidModelError as e:
        raise InvalidModelError(f"{p}: {e}") from e
    except Exception as e:  # protobuf, OS and external-data errors all mean one thing here
        raise InvalidModelError(f"{p}: not a readable ONNX model ({one_line(e)})") from e


def check_vocabulary(model: onnx.ModelProto) -> None:
    unknown = Counter(
        _text(n.op_type) if _text(n.domain) in ("", "ai.onnx") else f"{_text(n.domain)}.{_text(n.op_type)}"
        for n in model.graph.node
        if Op.lookup(n.domain, n.op_type) is None
    )
    if unknown:
        raise UnsupportedOpError(dict(unknown))


def _text(s: str | bytes) -> str:
    """A protobuf string field as text: protobuf hands back bytes where the file's string is not
    valid UTF-8 (a damaged file), shown with its bad bytes escaped."""
    return s if isinstance(s, str) else s.decode("utf-8", "backslashreplace")


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
    if nx.is_directed_acyclic_graph(dag):  # linear; find_cycle's search is slow on big graphs
        return
    try:
        cycle = nx.find_cycle(dag)
    except nx.NetworkXNoCycle:
        return
    names = " -> ".join(_label(g.node[a], a) for a, _ in cycle)
    raise InvalidModelError(f"the graph has a cycle: {names}")


def check_and_infer(model: onnx.ModelProto, path: Path, *, fold: bool = True) -> onnx.ModelProto:
    """onnx's checker and shape inference on the graph without its weights (both serialize the
    whole model; weights are checked here instead, tensor by tensor), then the inferred shapes
    are put back into the full model. With `fold`, traced shape arithmetic is folded into
    constants (the nodes change); without, the model keeps its nodes one for one (a rewrite that
    edits the original model by the graph's nodes needs that)."""
    import onnx
    from onnx import numpy_helper

    from hwlat.graph.fold import fold_shape_computations, static_shape, static_shapes

    if len(model.graph.sparse_initializer):
        raise InvalidModelError(f"{path}: sparse initializers are not supported")
    for t in model.graph.initializer:
        try:
            numpy_helper.to_array(t)
        except Exception as e:
            raise InvalidModelError(f"{path}: initializer '{t.name}' is malformed ({one_line(e)})") from e
    check_declared_dims(model.graph)
    try:
        skeleton = _without_weights(model)  # reads names: protobuf decodes their UTF-8 here
        onnx.checker.check_model(skeleton)
    except Exception as e:
        raise InvalidModelError(f"{path}: fails the ONNX checker ({one_line(e)})") from e
    inferred = _infer(skeleton, path)
    # shape arithmetic traced into the graph (Shape -> Gather -> Concat -> Reshape ...) is
    # constant once the inputs' shapes are: fold it and infer again, until nothing more folds
    # (folded also where inference alone resolved the shapes: a runtime folds them the same way,
    # so they are no kernels)
    for _ in range(_FOLD_ROUNDS if fold else 0):
        folded = fold_shape_computations(model, static_shapes(inferred))
        if folded is None:
            break
        model = folded
        inferred = _infer(_without_weights(model, only_static_info=True), path)
    infos = list(inferred.graph.value_info)
    if _unresolved(inferred) and _standard_ops_only(model):
        # a last resort, bounded: run the model once with the unresolved values exposed
        infos += _measured_shapes(model, inferred, path)
    by_name = {v.name: v for v in model.graph.value_info}
    for v in infos:
        if v.name not in by_name or (static_shape(v.type) is not None
                                     and static_shape(by_name[v.name].type) is None):
            by_name[v.name] = v
    for v in inferred.graph.output:  # outputs declared with symbolic dims get the inferred ones
        if static_shape(v.type) is not None:
            by_name[v.name] = v
    outputs = {o.name for o in model.graph.output}
    for o in model.graph.output:
        if static_shape(o.type) is None and o.name in by_name \
                and static_shape(by_name[o.name].type) is not None:
            o.type.CopyFrom(by_name[o.name].type)
    del model.graph.value_info[:]
    model.graph.value_info.extend(v for v in by_name.values() if v.name not in outputs)
    return model


_FOLD_ROUNDS = 64  # each round resolves at least one more chain (e.g. one "same" padding)
# the most a model (weights and inputs) may weigh for hwlat to run it once to measure its shapes
MEASURE_LIMIT_BYTES = 1 << 30


def _standard_ops_only(model: onnx.ModelProto) -> bool:
    return all(n.domain in ("", "ai.onnx") for n in model.graph.node)


def _measured_shapes(model: onnx.ModelProto, inferred: onnx.ModelProto,
                     path: Path) -> list[onnx.ValueInfoProto]:
    """Shapes of the values inference and folding left unknown, from one onnxruntime run with
    those values exposed as outputs (on the inputs the profilers feed); InvalidModelError naming the first such value
    when the model cannot be run or is over MEASURE_LIMIT_BYTES."""
    import onnx
    from onnx import helper

    from hwlat.graph.fold import static_shape, static_shapes

    g = model.graph
    shapes = static_shapes(inferred)
    types = {v.name: v.type.tensor_type.elem_type for v in
             [*inferred.graph.value_info, *inferred.graph.output] if v.type.HasField("tensor_type")}
    missing = [(o, n, idx) for idx, n in enumerate(g.node) for o in n.output
               if o and o not in shapes]
    first, node, idx = missing[0]
    where = f"value '{first}' (output of {_label(node, idx)})"
    inits = {t.name for t in g.initializer}
    declared = []
    for i in g.input:
        if i.name not in inits:
            declared.append((i.name, np.dtype(onnx.helper.tensor_dtype_to_np_dtype(
                i.type.tensor_type.elem_type)), static_shape(i.type)))
    # weighed as declared, before any input is made
    size = model.ByteSize() + sum(math.prod(shape or ()) * dtype.itemsize for _, dtype, shape in declared)
    if size > MEASURE_LIMIT_BYTES:
        raise InvalidModelError(
            f"{path}: the shape of {where} is unknown after shape inference and folding, and "
            f"the model ({size / 2**20:.0f} MiB) is over the {MEASURE_LIMIT_BYTES >> 20} MiB "
            "hwlat runs once to measure shapes")
    feeds = {}
    rng = np.random.default_rng(0)
    for name, dtype, shape in declared:  # as the profilers feed them: floats standard normal, the rest zeros
        feeds[name] = (rng.standard_normal(shape).astype(dtype) if np.issubdtype(dtype, np.floating)
                       else np.zeros(shape, dtype))
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    graph_outputs = {o.name for o in g.output}
    probe.graph.output.extend(
        helper.make_tensor_value_info(o, types.get(o, onnx.TensorProto.UNDEFINED), None)
        for o, _, _ in missing if o not in graph_outputs and types.get(o))
    names = [o.name for o in probe.graph.output]
    try:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 4  # the failure is reported below, once
        sess = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        run_opts = ort.RunOptions()
        run_opts.log_severity_level = 4
        got = dict(zip(names, sess.run(names, feeds, run_opts), strict=True))
    except Exception as e:
        raise InvalidModelError(
            f"{path}: the shape of {where} is unknown after shape inference and folding, and "
            f"onnxruntime could not run the model to measure it ({_ort_reason(e)})") from e
    out = []
    for o, n, i in missing:
        if o not in got:
            raise InvalidModelError(
                f"{path}: the shape of value '{o}' (output of {_label(n, i)}) is unknown after "
                "shape inference and folding, and its type is unknown too")
        arr = np.asarray(got[o])
        out.append(helper.make_tensor_value_info(
            o, helper.np_dtype_to_tensor_dtype(arr.dtype), list(arr.shape)))
    return out


def _infer(skeleton: onnx.ModelProto, path: Path) -> onnx.ModelProto:
    import onnx

    try:
        return onnx.shape_inference.infer_shapes(skeleton, check_type=True, data_prop=True)
    except Exception as e:
        raise InvalidModelError(f"{path}: shape inference failed ({one_line(e)})") from e


def _unresolved(model: onnx.ModelProto) -> bool:
    """Whether the inputs' shapes are fixed but some node's output still has no static shape."""
    from hwlat.graph.fold import static_shape, static_shapes

    g = model.graph
    inits = {t.name for t in g.initializer}
    if not all(static_shape(i.type) is not None for i in g.input if i.name not in inits):
        return False
    shapes = static_shapes(model)
    return any(o and o not in shapes for n in g.node for o in n.output)


def check_declared_dims(graph: onnx.GraphProto) -> None:
    """Every dim a graph (or a subgraph of its nodes) declares is a non-negative number or a
    name. onnx's checker lets a negative dim through, and its shape inference then trips a C++
    assertion on some ops (a Slice of an input declared [4, -1] aborts the process)."""
    for vi in (*graph.input, *graph.output, *graph.value_info):
        _check_type_dims(vi.name, vi.type)
    for n in graph.node:
        for a in n.attribute:
            for sub in (*([a.g] if a.HasField("g") else []), *a.graphs):
                check_declared_dims(sub)


def _check_type_dims(name: str, tp: onnx.TypeProto) -> None:
    which = tp.WhichOneof("value")
    if which in ("tensor_type", "sparse_tensor_type"):
        t = getattr(tp, which)
        if t.HasField("shape"):
            for d in t.shape.dim:
                if d.HasField("dim_value") and d.dim_value < 0:
                    dims = [x.dim_value if x.HasField("dim_value") else (x.dim_param or "?")
                            for x in t.shape.dim]
                    raise InvalidModelError(f"value '{name}' declares a negative dim {dims}; "
                                            "dims are sizes >= 0 or names")
    elif which == "sequence_type":
        _check_type_dims(name, tp.sequence_type.elem_type)
    elif which == "optional_type":
        _check_type_dims(name, tp.optional_type.elem_type)
    elif which == "map_type":
        _check_type_dims(name, tp.map_type.value_type)


def _without_weights(model: onnx.ModelProto, only_static_info: bool = False) -> onnx.ModelProto:
    """The model with each large initializer turned into a typed graph input of the same shape;
    small ones stay, since shape inference reads shapes and axes from them. `only_static_info`
    drops recorded value shapes that are not fully known, so inference starts afresh on them."""
    from onnx import helper

    from hwlat.graph.fold import static_shape

    g = model.graph
    keep = [t for t in g.initializer if _numel(t.dims) <= SMALL_CONSTANT_ELEMENTS]
    declared = {i.name for i in g.input}
    as_inputs = [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                 for t in g.initializer if _numel(t.dims) > SMALL_CONSTANT_ELEMENTS and t.name not in declared]
    info = [v for v in g.value_info if not only_static_info or static_shape(v.type) is not None]
    graph = helper.make_graph(list(g.node), g.name, [*g.input, *as_inputs], list(g.output), keep,
                              value_info=info)
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

    initializers = {t.name for t in g.initializer}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return assemble(g.name or name, nodes, sigs, const, data,
                    [i.name for i in g.input if i.name not in initializers],
                    [o.name for o in g.output], int(opset), keep_unused=True)


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
    import onnx

    try:
        return str(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)))
    except Exception:
        log.debug("element type %s has no numpy dtype", elem_type, exc_info=True)
        return "undefined"


def _tensor_data(t: onnx.TensorProto) -> np.ndarray | None:
    from onnx import numpy_helper

    try:
        return numpy_helper.to_array(t)
    except Exception:
        log.debug("initializer '%s' unreadable; its value is left unknown", t.name, exc_info=True)
        return None


def _numel(dims) -> int:
    return int(np.prod([int(d) for d in dims], dtype=np.int64)) if len(dims) else 1


def _label(n, idx: int) -> str:
    return f"'{n.name}' ({n.op_type} #{idx})" if n.name else f"{n.op_type} #{idx}"


def _ort_reason(e: BaseException) -> str:
    """onnxruntime's message without its source locations: what failed, and on which node."""
    text = one_line(e)
    node = text.split("Name:'", 1)[1].split("'", 1)[0] if "Name:'" in text else None
    reason = text.rsplit(" was false. ", 1)[-1] if " was false. " in text else \
        text.rsplit("Status Message: ", 1)[-1]
    reason = reason[:200]
    return f"node '{node}': {reason}" if node else reason
