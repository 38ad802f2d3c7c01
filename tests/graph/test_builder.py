"""hwlat.graph.builder and hwlat.graph.simplify: graphs built without onnx, shapes from hwlat's
shape functions, and the exporter's simplifications as IR passes."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hwlat import graph
from hwlat.errors import InvalidInputError
from hwlat.graph import Op, fuse, load
from hwlat.graph.builder import GraphBuilder
from hwlat.graph.simplify import (
    fold_batch_norm,
    fold_constants,
    merge_common,
    remove_dead,
    simplify,
)
from tests.helpers.onnx_builders import const, model, node, rand, save, tensor


def test_shapes_follow_onnx_rules():
    b = GraphBuilder()
    x = b.input(1, 8, 15, 15)
    assert b.shape(b.conv2d(x, 16, 3, 2)) == (1, 16, 8, 8)
    assert b.shape(b.conv2d(x, 8, 7, 2, groups=8)) == (1, 8, 8, 8)
    assert b.shape(b.conv2d(x, 4, 5, 1, padding=0)) == (1, 4, 11, 11)
    assert b.shape(b.avg_pool2d(x, 2, 2)) == (1, 8, 7, 7)
    assert b.shape(b.avg_pool2d(x, 3, 1, 1, count_include_pad=False)) == (1, 8, 15, 15)
    m = b.mean_hw(x)
    assert b.shape(m) == (1, 8, 1, 1)
    assert b.shape(b.mul(x, m)) == (1, 8, 15, 15)
    f = b.flatten(m)
    assert b.shape(f) == (1, 8)
    assert b.shape(b.linear(f, 10)) == (1, 10)
    assert b.shape(b.relu6(x)) == (1, 8, 15, 15)


def test_bad_ops_are_refused():
    b = GraphBuilder()
    x = b.input(1, 8, 4, 4)
    with pytest.raises(InvalidInputError, match="weight"):
        b.op(Op.Conv, x, b.const(4, 3, 1, 1))
    with pytest.raises(InvalidInputError, match="no shape function for Transpose"):
        b.op(Op.Transpose, x)
    with pytest.raises(InvalidInputError, match="do not broadcast"):
        b.add(x, b.input(1, 3, 4, 4))
    with pytest.raises(InvalidInputError, match="unknown input"):
        b.relu("nope")


def test_fold_constants_drops_what_depends_on_constants_alone():
    b = GraphBuilder()
    x = b.input(1, 4, 4, 4)
    zeros = b.relu(b.const(1, 4, 4, 4))
    g = b.build(b.add(x, zeros))
    assert [n.op for n in g.nodes] == [Op.Relu, Op.Add]
    folded = fold_constants(g)
    assert [n.op for n in folded.nodes] == [Op.Add]
    assert folded.is_const(zeros) and folded.values[zeros].producer is None
    assert [k.key.params for k in fuse(folded)] == [(g.values[zeros].sig,)]


def test_merge_common_keeps_one_op_per_value():
    b = GraphBuilder()
    x = b.input(1, 4, 4, 4)
    r1, r2 = b.relu(x), b.relu(x)
    c1, c2 = b.conv2d(r1, 4), b.conv2d(r2, 4)  # distinct weights: never merged
    g = merge_common(b.build(b.add(c1, c2)))
    assert [n.op for n in g.nodes] == [Op.Relu, Op.Conv, Op.Conv, Op.Add]
    assert g.nodes[2].inputs[0] == r1 and len(g.values[r1].uses) == 2


def test_remove_dead_drops_unread_branches():
    b = GraphBuilder()
    x = b.input(1, 4, 4, 4)
    b.conv2d(b.relu(x), 8)  # read by nothing
    g = remove_dead(b.build(b.avg_pool2d(x, 2, 2)))
    assert [n.op for n in g.nodes] == [Op.AveragePool]


def test_fold_batch_norm_only_where_the_conv_output_is_read_by_it_alone():
    b = GraphBuilder()
    x = b.input(1, 4, 8, 8)
    y = b.relu(b.batch_norm(b.conv2d(x, 4, 3)))
    c = b.conv2d(y, 4)
    g = fold_batch_norm(b.build(b.add(b.batch_norm(c), c)))
    assert [n.op for n in g.nodes] == [Op.Conv, Op.Relu, Op.Conv, Op.BatchNormalization, Op.Add]
    first = g.nodes[0]
    assert len(first.inputs) == 3 and g.values[first.inputs[2]].shape == (4,)
    assert g.is_const(first.inputs[2])
    # twice in a row: the second BatchNorm folds into the conv that already has a bias
    b = GraphBuilder()
    x = b.input(1, 4, 8, 8)
    g = fold_batch_norm(b.build(b.batch_norm(b.batch_norm(b.conv2d(x, 4, bias=True)))))
    assert [n.op for n in g.nodes] == [Op.Conv]


def test_built_graph_cuts_like_the_same_onnx_file(tmp_path):
    """Conv -> BN -> Relu, Conv -> BN + residual, Clip, a mean and a Gemm, written as an ONNX file
    (BatchNorm already folded, as the exporter leaves it) and built here, give the same keys."""
    b = GraphBuilder()
    x = b.input(1, 8, 9, 9)
    y = b.relu(b.batch_norm(b.conv2d(x, 8, 3)))
    y = b.relu6(b.add(b.batch_norm(b.conv2d(y, 8, 3)), x))
    out = b.linear(b.flatten(b.mean_hw(y)), 5)
    built = fuse(simplify(b.build(out)))

    conv = dict(auto_pad="NOTSET", dilations=[1, 1], group=1, kernel_shape=[3, 3],
                pads=[1, 1, 1, 1], strides=[1, 1])
    nodes = [
        node("Conv", ["x", "w1", "b1"], ["c1"], **conv), node("Relu", ["c1"], ["r1"]),
        node("Conv", ["r1", "w2", "b2"], ["c2"], **conv), node("Add", ["c2", "x"], ["a"]),
        node("Clip", ["a", "lo", "hi"], ["y"]),
        node("ReduceMean", ["y", "axes"], ["m"], keepdims=1, noop_with_empty_axes=0),
        node("Reshape", ["m", "shape"], ["f"], allowzero=1),
        node("Gemm", ["f", "w3", "b3"], ["out"], alpha=1.0, beta=1.0, transA=0, transB=1),
    ]
    from onnx import numpy_helper

    inits = [const("w1", rand(8, 8, 3, 3)), const("b1", rand(8)), const("w2", rand(8, 8, 3, 3)),
             const("b2", rand(8)), const("lo", 0.0), const("hi", 6.0),
             numpy_helper.from_array(np.array([2, 3], np.int64), "axes"),
             numpy_helper.from_array(np.array([1, -1], np.int64), "shape"),
             const("w3", rand(5, 8)), const("b3", rand(5))]
    path = save(model(nodes, [tensor("x", [1, 8, 9, 9])], [tensor("out", [1, 5])], inits),
                tmp_path / "m.onnx")
    loaded = fuse(load(path))
    assert [k.key for k in built] == [k.key for k in loaded]
    assert [k.rule for k in built] == ["conv", "conv", "single", "single", "matmul"]


def test_builder_imports_neither_onnx_nor_torch():
    for module in ("builder", "simplify", "shapes"):
        tree = ast.parse(Path(graph.__file__).with_name(f"{module}.py").read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not {m.split(".")[0] for m in names} & {"onnx", "torch", "tvm"}, module
    code = ("import sys, hwlat.graph.builder, hwlat.graph.simplify; "
            "print(sorted(m for m in ('torch', 'tvm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
