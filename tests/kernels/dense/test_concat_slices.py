"""Conv kernels writing their channels into a slice of a wider output (a concat's, along the
channels): every input path and plan kind, AVX2 and AVX-512 plans, batch 2; the channels
outside the slice are left as they were."""

from __future__ import annotations

import os

os.environ.setdefault("TVM_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tvm  # noqa: E402

from hwlat.kernels.cpu import AVX2, AVX512  # noqa: E402
from hwlat.kernels.dense import conv  # noqa: E402
from hwlat.kernels.dense.reference import conv2d_reference  # noqa: E402
from hwlat.kernels.dense.spec import Conv2dSpec, Epilogue  # noqa: E402
from hwlat.lowering.targets import make_target  # noqa: E402

# heavy (`make test-all`): concat.py writes into slices with it, checked in-model by the light
# test of tests/kernels/dense/test_dense_blocks.py
pytestmark = [pytest.mark.tvm, pytest.mark.heavy]

TARGET = make_target(threads=2)
EP = Epilogue(bias=True, residual=True, activation="relu")

# (spec, channels of the wider output, offset of the conv's channels in it)
SLICES = [
    (Conv2dSpec(2, 7, 10, 10, 17, (1, 1), epilogue=EP), 30, 5),  # direct, pixel tail, batch 2
    (Conv2dSpec(1, 6, 60, 60, 13, (1, 1), epilogue=Epilogue()), 13 + 7, 7),  # co_outer, last slice
    (Conv2dSpec(2, 9, 13, 12, 20, (3, 3), (2, 2), (1, 0, 2, 1), epilogue=EP), 23, 0),  # scratch
    (Conv2dSpec(1, 21, 9, 19, 26, (3, 3), (1, 1), (1, 1, 1, 1), epilogue=EP), 40, 9),  # 3x3 s1
    (Conv2dSpec(2, 150, 7, 7, 40, (1, 1), epilogue=EP), 45, 3),  # pixel rows
    (Conv2dSpec(1, 40, 7, 7, 45, (3, 3), (1, 1), (1, 1, 1, 1)), 50, 1),  # pixel rows, scratch
    (Conv2dSpec(1, 31, 1, 1, 70, (1, 1), epilogue=EP), 100, 21),  # a GEMV
    (Conv2dSpec(1, 3, 45, 47, 24, (3, 3), (2, 2), (1, 1, 1, 1), epilogue=EP), 31, 6),  # stem
]


def _check_slice(spec: Conv2dSpec, channels: int, offset: int, cpu) -> None:
    rng = np.random.default_rng(channels + offset)
    x = rng.standard_normal(spec.x_shape).astype(np.float32)
    w = rng.standard_normal(spec.w_shape).astype(np.float32)
    bias = rng.standard_normal(spec.cout).astype(np.float32)
    res = rng.standard_normal(spec.y_shape).astype(np.float32)
    ep = spec.epilogue
    func = conv.primfunc(spec, cpu=cpu, out=(channels, offset)).with_attr("global_symbol", "k")
    ex = tvm.compile(tvm.IRModule({"k": func}), target=TARGET)
    args = [x, conv.pack_weight(spec, w, cpu=cpu)] + ([bias] if ep.bias else []) + \
        ([res] if ep.residual else [])
    n, _, oh, ow = spec.y_shape
    before = rng.standard_normal((n, channels, oh, ow)).astype(np.float32)
    y = tvm.runtime.tensor(before)
    ex["k"](*[tvm.runtime.tensor(a) for a in args], y)
    got = y.numpy()
    ref = conv2d_reference(spec, x, w, bias, res)
    scale = max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(got[:, offset:offset + spec.cout], ref, rtol=1e-4, atol=1e-4 * scale)
    outside = np.ones(channels, bool)
    outside[offset:offset + spec.cout] = False
    np.testing.assert_array_equal(got[:, outside], before[:, outside])


@pytest.mark.parametrize("cpu", [AVX2, AVX512], ids=["avx2", "avx512"])
@pytest.mark.parametrize("case", SLICES, ids=[
    f"{s.batch}x{s.cin}x{s.height}x{s.width}-{s.cout}-k{s.kernel[0]}s{s.stride[0]}-in{c}at{o}"
    for s, c, o in SLICES])
def test_conv_writes_only_its_slice(case, cpu):
    _check_slice(*case, cpu)


def test_a_slice_outside_the_output_is_refused():
    spec = Conv2dSpec(1, 4, 5, 5, 8, (1, 1))
    for out in ((7, 0), (10, 3), (10, -1)):
        with pytest.raises(ValueError, match="outside"):
            conv.primfunc(spec, out=out)


def test_one_kernel_writes_the_slice_its_run_time_offset_says():
    """out=(channels, None): the offset is an int32 tensor of one value passed before y."""
    spec = Conv2dSpec(1, 21, 9, 19, 26, (3, 3), (1, 1), (1, 1, 1, 1), epilogue=EP)
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal(spec.x_shape).astype(np.float32), rng.standard_normal(spec.w_shape).astype(np.float32)
    bias, res = rng.standard_normal(spec.cout).astype(np.float32), rng.standard_normal(spec.y_shape).astype(np.float32)
    func = conv.primfunc(spec, out=(40, None)).with_attr("global_symbol", "k")
    ex = tvm.compile(tvm.IRModule({"k": func}), target=TARGET)
    ref = conv2d_reference(spec, x, w, bias, res)
    for offset in (0, 5, 14):
        before = rng.standard_normal((1, 40, 9, 19)).astype(np.float32)
        y = tvm.runtime.tensor(before)
        ex["k"](*[tvm.runtime.tensor(a) for a in (x, conv.pack_weight(spec, w), bias, res,
                                                  np.array([offset], np.int32))], y)
        got = y.numpy()
        np.testing.assert_allclose(got[:, offset:offset + 26], ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
        outside = np.ones(40, bool)
        outside[offset:offset + 26] = False
        np.testing.assert_array_equal(got[:, outside], before[:, outside])
