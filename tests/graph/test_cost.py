"""One cost formula: `key_cost` (a kernel key alone) gives what `kernel_cost` (the graph) gives."""

from __future__ import annotations

import dataclasses

import numpy as np
from onnx import numpy_helper

from hwlat.graph import KernelKind, fuse, load
from hwlat.graph.cost import kernel_cost, key_cost
from tests.helpers.onnx_builders import (
    bn_params,
    const,
    conv_weights,
    model,
    node,
    rand,
    save,
    tensor,
)


def test_key_cost_equals_kernel_cost_for_convs_matmuls_and_the_rest(tmp_path):
    m = model(
        [node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
         node("BatchNormalization", ["c", "bn_s", "bn_b", "bn_m", "bn_v"], ["n"]),
         node("Relu", ["n"], ["r"]),
         node("Conv", ["r", "dw"], ["d"], group=8, strides=[2, 2], pads=[1, 1, 1, 1]),
         node("ConvTranspose", ["d", "tw"], ["t"], strides=[2, 2]),
         node("Reshape", ["t", "shape"], ["f"]),
         node("MatMul", ["f", "mw"], ["mm"]), node("Add", ["mm", "mb"], ["ma"]),
         node("Relu", ["ma"], ["y"]),
         node("Gemm", ["y", "gw"], ["g"], transB=1),
         node("Gemm", ["at", "g2"], ["h"], transA=1), node("Sigmoid", ["h"], ["z"])],
        [tensor("x", [1, 4, 8, 8]), tensor("at", [16, 2])], [tensor("g", [1, 5]), tensor("z", [2, 3])],
        [*conv_weights(8, 4, 3), const("b", rand(8)), const("dw", rand(8, 1, 3, 3, seed=1)),
         *bn_params(8), const("tw", rand(8, 2, 2, 2)),
         numpy_helper.from_array(np.array([1, -1], np.int64), "shape"), const("mw", rand(128, 16)), const("mb", rand(16)),
         const("gw", rand(5, 16)), const("g2", rand(16, 3))])
    g = load(save(m, tmp_path / "m.onnx"))
    ks = fuse(g)
    kinds = {k.kind for k in ks}
    assert {KernelKind.CONV, KernelKind.MATMUL, KernelKind.VIEW} <= kinds
    assert [k.key.ops[0] for k in ks if k.kind is KernelKind.CONV] == ["Conv", "Conv", "ConvTranspose"]
    for k in ks:
        assert key_cost(k.key) == kernel_cost(g, k), k.key.text()
    macs = {k.key.ops[0]: kernel_cost(g, k).macs for k in ks if k.kind is KernelKind.MATMUL
            and k.key.ops[0] == "MatMul"}
    assert macs == {"MatMul": 16 * 128}
    assert sum(key_cost(k.key).macs for k in ks) == sum(kernel_cost(g, k).macs for k in ks) > 0


def test_key_cost_does_not_guess_what_the_key_cannot_tell(tmp_path):
    shape = [1, 2, 5, 4]
    m = model([node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
               node("MatMul", ["q", "kt"], ["s"]), node("Softmax", ["s"], ["p"], axis=-1),
               node("MatMul", ["p", "v"], ["y"])],
              [tensor("q", shape), tensor("k", shape), tensor("v", shape)], [tensor("y", shape)])
    g = load(save(m, tmp_path / "m.onnx"))
    (k,) = fuse(g)
    assert k.kind is KernelKind.ATTENTION
    by_key, by_graph = key_cost(k.key), kernel_cost(g, k)
    assert by_key.macs is None and by_graph.macs == 2 * (1 * 2 * 5 * 5 * 4)
    assert dataclasses.replace(by_key, macs=by_graph.macs) == by_graph
