"""hwlat/kernels/dense/matmul.py against the numpy reference: every epilogue on both paths
(GEMM m >= 2, GEMV m == 1), row / column / k tails, batch 2, the loop blockings, the packed
layout and what `supports` refuses."""

from __future__ import annotations

import os

os.environ.setdefault("TVM_NUM_THREADS", "2")

import itertools  # noqa: E402

import numpy as np  # noqa: E402
import pytest
import tvm  # noqa: E402

from hwlat.kernels.cpu import AVX2, AVX512  # noqa: E402
from hwlat.kernels.dense import matmul  # noqa: E402
from hwlat.kernels.dense.reference import matmul_reference  # noqa: E402
from hwlat.kernels.dense.spec import Epilogue, MatmulSpec  # noqa: E402
from hwlat.lowering.targets import make_target  # noqa: E402

pytestmark = pytest.mark.tvm

TARGET = make_target()
EPILOGUES = [Epilogue(bias=b, residual=r, activation=a, clip_min=-0.5, clip_max=0.75)
             for b, r, a in itertools.product((False, True), (False, True), ("none", "relu", "clip"))] + \
    [Epilogue(bias=True, residual=r, activation=a) for r in (False, True) for a in ("hardswish", "gelu")]


def build(spec: MatmulSpec, blocking: matmul.Blocking | None = None, cpu=None):
    func = matmul.primfunc(spec, blocking, cpu=cpu).with_attr("global_symbol", "matmul")
    return tvm.compile(tvm.IRModule({"matmul": func}), target=TARGET)["matmul"]


def check(spec: MatmulSpec, blocking: matmul.Blocking | None = None, seed: int = 0,
          x: np.ndarray | None = None, cpu=None):
    """Runs the kernel on random data and compares with the reference; returns the output."""
    rng = np.random.default_rng(seed)
    if x is None:
        x = rng.standard_normal(spec.x_shape).astype(np.float32)
    w = rng.standard_normal(spec.w_shape).astype(np.float32)
    bias = rng.standard_normal(spec.n).astype(np.float32)
    residual = rng.standard_normal(spec.y_shape).astype(np.float32)
    ep = spec.epilogue
    args = [x, matmul.pack_weight(spec, w, cpu)]
    args += [bias] if ep.bias else []
    args += [residual] if ep.residual else []
    out = tvm.runtime.tensor(np.full(spec.y_shape, np.nan, np.float32))
    build(spec, blocking, cpu)(*[tvm.runtime.tensor(a) for a in args], out)
    want = matmul_reference(spec, x, w, bias if ep.bias else None,
                            residual if ep.residual else None)
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-4, atol=1e-4 * scale)
    return out.numpy()


@pytest.mark.parametrize("ep", EPILOGUES, ids=lambda e: f"b{e.bias:d}r{e.residual:d}{e.activation}")
@pytest.mark.parametrize("m", [13, 1], ids=["gemm", "gemv"])
def test_epilogues(m, ep):
    # m = 13: two full 6-row tiles + a 1-row tail; n = 37: two full panels + a 5-column tail
    check(MatmulSpec(m, 19, 37, ep))


@pytest.mark.parametrize("shape", [
    (1, 1, 1), (2, 1, 3), (5, 7, 16), (6, 16, 16), (7, 33, 17), (12, 8, 32), (1, 5, 33),
    (1, 64, 8), (53, 40, 70),
])
def test_odd_sizes(shape):
    check(MatmulSpec(*shape, Epilogue(bias=True, residual=True, activation="relu")))


def test_batch2():
    # a batched x (2, 9, k) flattened into m = 18, and a batch-2 classifier (m = 2)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 9, 24)).astype(np.float32)
    out = check(MatmulSpec(18, 24, 40), x=x.reshape(18, 24), seed=1)
    assert out.reshape(2, 9, 40).shape == (2, 9, 40)
    check(MatmulSpec(2, 96, 100, Epilogue(bias=True)))


@pytest.mark.parametrize("blocking", [
    matmul.Blocking(row_tiles=2, panel_group=3, rows_outer=True),
    matmul.Blocking(row_tiles=1, panel_group=2),
], ids=["groups-rows-outer", "groups"])
def test_blockings(blocking):
    # panel groups with a shorter last group, row blocks with a shorter last block + the tail tile
    check(MatmulSpec(29, 45, 75, Epilogue(bias=True, residual=True, activation="clip")), blocking)
    with pytest.raises(ValueError, match="bad blocking"):
        matmul.Blocking(row_tiles=0)


def test_packed_layout():
    spec = MatmulSpec(3, 5, 21)
    w = np.arange(5 * 21, dtype=np.float32).reshape(5, 21)
    packed = matmul.pack_weight(spec, w)
    assert packed.shape == matmul.packed_weight_shape(spec) == (2, 5, 16)
    assert packed.dtype == np.float32 and packed.flags.c_contiguous
    np.testing.assert_array_equal(packed[0], w[:, :16])
    np.testing.assert_array_equal(packed[1, :, :5], w[:, 16:])
    assert not packed[1, :, 5:].any()
    with pytest.raises(ValueError, match="weight shape"):
        matmul.pack_weight(spec, w.T)


def test_parameters():
    for ep, count in ((Epilogue(bias=False), 3), (Epilogue(bias=True), 4),
                      (Epilogue(bias=True, residual=True), 5), (Epilogue(bias=False, residual=True), 4)):
        for m in (1, 4):
            func = matmul.primfunc(MatmulSpec(m, 3, 5, ep))
            assert len(func.params) == count
            assert func.attrs["tirx.is_scheduled"]


@pytest.mark.parametrize("spec, reason", [
    (MatmulSpec(0, 4, 4), ">= 1"),
    (MatmulSpec(4, -1, 4), ">= 1"),
    (MatmulSpec(4, 4, 0), ">= 1"),
    (MatmulSpec(4.0, 4, 4), "static integers"),
    (MatmulSpec(1 << 20, 4, 1 << 12), "32-bit"),
    ("not a spec", "MatmulSpec"),
])
def test_supports_refuses(spec, reason):
    got = matmul.supports(spec)
    assert isinstance(got, str) and reason in got
    with pytest.raises(ValueError, match="hwlat dense matmul"):
        matmul.primfunc(spec)


def test_supports_model_shapes():
    for m, k, n in [(197, 192, 576), (197, 768, 192), (1, 1280, 1000), (1, 1536, 1000)]:
        assert matmul.supports(MatmulSpec(m, k, n)) is None


# AVX-512: GEMM tiles of 12 rows x 32 columns (panels of 32); 16-float vectors compile for any
# x86 target, so these run here whatever the CPU
@pytest.mark.parametrize("shape", [
    (2, 1, 3), (11, 7, 17), (12, 8, 32), (13, 19, 37), (25, 33, 47), (53, 40, 70), (197, 24, 65),
    (1, 31, 70),
])
def test_avx512_tiles_odd_sizes(shape):
    check(MatmulSpec(*shape, Epilogue(bias=True, residual=True, activation="relu")), cpu=AVX512)


@pytest.mark.parametrize("ep", EPILOGUES[::3], ids=lambda e: f"b{e.bias:d}r{e.residual:d}{e.activation}")
def test_avx512_tiles_epilogues(ep):
    check(MatmulSpec(29, 45, 75, ep), cpu=AVX512)


def test_avx512_packing():
    gemm, gemv = MatmulSpec(30, 5, 40), MatmulSpec(1, 5, 40)
    assert matmul.register_tile(gemm, AVX2) == (6, 16) == matmul.register_tile(gemm)
    assert matmul.register_tile(gemm, AVX512) == (12, 32)
    assert matmul.register_tile(gemv, AVX512) == (6, 16)  # the GEMV keeps panels of 16
    w = np.arange(5 * 40, dtype=np.float32).reshape(5, 40)
    packed = matmul.pack_weight(gemm, w, AVX512)
    assert packed.shape == matmul.packed_weight_shape(gemm, AVX512) == (2, 5, 32)
    np.testing.assert_array_equal(packed[1, :, :8], w[:, 32:])
    assert not packed[1, :, 8:].any()
    assert matmul.pack_weight(gemv, w, AVX512).shape == (3, 5, 16)
