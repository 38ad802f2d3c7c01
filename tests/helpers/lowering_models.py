"""Tiny ONNX models for the lowering tests, written with onnx.helper."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from tests.helpers.onnx_builders import const, conv_weights, model, node, rand, save, tensor


def conv_relu(directory) -> str:
    m = model([node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), node("Relu", ["c"], ["y"])],
              [tensor("x", [1, 3, 8, 8])], [tensor("y", [1, 4, 8, 8])], conv_weights(4, 3, 3))
    return save(m, directory / "conv_relu.onnx")


def matmul_add(directory) -> str:
    m = model([node("MatMul", ["x", "w"], ["m"]), node("Add", ["m", "b"], ["y"])],
              [tensor("x", [4, 16])], [tensor("y", [4, 8])],
              [const("w", rand(16, 8, seed=1)), const("b", rand(8, seed=2))])
    return save(m, directory / "matmul_add.onnx")


def two_inputs(directory) -> str:
    """Two named inputs and two outputs: inputs by name from an .npz, outputs by name."""
    m = model([node("Add", ["a", "b"], ["s"]), node("Mul", ["a", "b"], ["p"])],
              [tensor("a", [2, 3]), tensor("b", [2, 3])], [tensor("s", [2, 3]), tensor("p", [2, 3])])
    return save(m, directory / "two_inputs.onnx")


def unsupported(directory) -> str:
    """Two op types TVM cannot lower, both accepted by onnx's checker and hwlat's loader:
    hwlat's strided sparse conv (twice; submanifold ones are lowered) and ONNX opset-23 Attention
    with an attention mask (hwlat lowers it without one)."""
    sparse = [node("SparseConv3d", ["f", "coords", w], [out], domain="hwlat", subm=0,
                   kernel_size=[3, 3, 3], stride=[1, 1, 1], padding=[1, 1, 1])
              for w, out in (("w1", "s1"), ("w2", "s2"))]
    m = model(sparse + [node("Attention", ["q", "k", "v", "mask"], ["att"])],
              [tensor("f", [10, 4]), tensor("coords", [10, 4], TensorProto.INT32),
               tensor("q", [1, 2, 4, 8]), tensor("k", [1, 2, 4, 8]), tensor("v", [1, 2, 4, 8]),
               tensor("mask", [4, 4])],
              [tensor("s2", [10, 4]), tensor("att", [1, 2, 4, 8])],
              [const("w1", rand(27, 4, 4)), const("w2", rand(27, 4, 4))],
              opset=23, extra_opsets=[("hwlat", 1)])
    return save(m, directory / "unsupported.onnx")


def dynamic_batch(directory) -> str:
    m = model([node("Relu", ["x"], ["y"])], [tensor("x", ["batch", 4])], [tensor("y", ["batch", 4])])
    return save(m, directory / "dynamic.onnx")


def npy(directory, name: str, array: np.ndarray) -> str:
    path = directory / name
    np.save(path, array)
    return str(path)
