"""The layer norm, channel norm and global average pool kernels (hwlat/kernels/dense/reduce.py)
against their numpy references (the channel norm: channel counts no multiple of 16, planes no
multiple of 16 pixels, batch 2, inputs far from zero): dims and planes that leave vector tails (or are shorter than a vector), several
rows / batches and parallel tasks, keepdims both ways, offset and constant rows, and what
`supports` refuses."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import tvm

from hwlat.kernels.dense import reduce
from hwlat.kernels.dense.reduce import ChannelNormSpec, LayerNormSpec, MeanPoolSpec
from hwlat.lowering.targets import make_target

pytestmark = pytest.mark.tvm

TARGET = make_target(threads=1)

LN_CASES = [
    LayerNormSpec(1, 8),
    LayerNormSpec(3, 37, 1e-6),  # 4 vectors + 5 lanes
    LayerNormSpec(4, 3),  # shorter than a vector
    LayerNormSpec(37, 69),  # 2 groups of 4 vectors + 1 vector + 5 lanes; 13 tasks, the last short
    LayerNormSpec(2, 32, 0.0),
    LayerNormSpec(5, 192, 1e-5),  # vit_tiny's dim
    LayerNormSpec(2, 1001, 1e-3),
]
POOL_CASES = [
    MeanPoolSpec(1, 5, 7, 7),  # 49: 6 vectors + 1 lane
    MeanPoolSpec(2, 3, 1, 1),  # a single pixel
    MeanPoolSpec(2, 3, 5, 7, keepdims=False),
    MeanPoolSpec(1, 17, 8, 8),  # whole vectors only
    MeanPoolSpec(2, 37, 6, 6),  # 4 vectors + 4 lanes; several tasks
    MeanPoolSpec(1, 3, 9, 13),  # 14 vectors (3 groups of 4 + 2) + 5 lanes
    MeanPoolSpec(3, 2, 3, 1, keepdims=False),
    MeanPoolSpec(1, 40, 14, 14),
]

CN_CASES = [
    ChannelNormSpec(1, 80, 9, 9, 1e-6),  # 81 pixels: blocks of 32, the last overlapping
    ChannelNormSpec(2, 37, 7, 7),  # 49 pixels (3 vectors, 1 pixel over), batch 2
    ChannelNormSpec(1, 640, 5, 4),  # 20 pixels: one 16-pixel vector, overlapping
    ChannelNormSpec(1, 3, 4, 4, 0.0),  # exactly one vector
    ChannelNormSpec(2, 21, 13, 11, 1e-5),  # 143 pixels in blocks of 64
]


@functools.cache
def _library():
    """Every case's kernel, compiled as one module (one compile is faster)."""
    cases = LN_CASES + POOL_CASES + CN_CASES
    mod = tvm.IRModule({f"k{i}": reduce.primfunc(s).with_attr("global_symbol", f"k{i}")
                        for i, s in enumerate(cases)})
    ex = tvm.compile(mod, target=TARGET)
    return {s: ex[f"k{i}"] for i, s in enumerate(cases)}


def run_layer_norm(spec: LayerNormSpec, x, gamma, beta) -> np.ndarray:
    out = tvm.runtime.tensor(np.full((spec.rows, spec.dim), np.nan, np.float32))
    _library()[spec](*(tvm.runtime.tensor(a) for a in (x, gamma, beta)), out)
    return out.numpy()


def check_layer_norm(spec: LayerNormSpec, x, gamma, beta) -> None:
    got = run_layer_norm(spec, x, gamma, beta)
    want = reduce.layer_norm_reference(spec, x, gamma, beta)
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("spec", LN_CASES, ids=lambda s: f"{s.rows}x{s.dim}")
def test_layer_norm(spec: LayerNormSpec):
    assert reduce.supports(spec) is None
    rng = np.random.default_rng(spec.dim)
    x = (rng.standard_normal((spec.rows, spec.dim)) * 2 + 0.5).astype(np.float32)
    gamma = rng.standard_normal(spec.dim).astype(np.float32)
    beta = rng.standard_normal(spec.dim).astype(np.float32)
    check_layer_norm(spec, x, gamma, beta)


def test_layer_norm_offset_rows():
    """Rows far from zero (corrected two-pass: the float32 mean's error is removed) and a
    constant row."""
    spec = LayerNormSpec(37, 69)
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((spec.rows, spec.dim)) * 0.5
         + rng.uniform(-500, 500, (spec.rows, 1))).astype(np.float32)
    x[3] = 7.25  # variance 0: y = beta
    gamma = rng.uniform(0.5, 2, spec.dim).astype(np.float32)
    beta = rng.standard_normal(spec.dim).astype(np.float32)
    got = run_layer_norm(spec, x, gamma, beta)
    want = reduce.layer_norm_reference(spec, x, gamma, beta)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))
    np.testing.assert_array_equal(got[3], beta)


@pytest.mark.parametrize("spec", POOL_CASES,
                         ids=lambda s: f"{s.batch}x{s.channels}x{s.height}x{s.width}-{s.keepdims}")
def test_mean_pool(spec: MeanPoolSpec):
    assert reduce.supports(spec) is None
    rng = np.random.default_rng(spec.channels)
    x = (rng.standard_normal(spec.x_shape) + 0.25).astype(np.float32)
    out = tvm.runtime.tensor(np.full(spec.y_shape, np.nan, np.float32))
    _library()[spec](tvm.runtime.tensor(x), out)
    want = reduce.mean_pool_reference(spec, x)
    assert want.shape == spec.y_shape
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-5,
                               atol=1e-5 * max(1.0, float(np.abs(want).max())))


@pytest.mark.parametrize("spec", CN_CASES, ids=str)
def test_channel_norm(spec: ChannelNormSpec):
    rng = np.random.default_rng(spec.channels)
    x = (rng.standard_normal(spec.x_shape) * 3 + 100).astype(np.float32)  # far from zero
    gamma = rng.standard_normal(spec.channels).astype(np.float32)
    beta = rng.standard_normal(spec.channels).astype(np.float32)
    out = tvm.runtime.tensor(np.full(spec.x_shape, np.nan, np.float32))
    _library()[spec](*(tvm.runtime.tensor(a) for a in (x, gamma, beta)), out)
    want = reduce.channel_norm_reference(spec, x, gamma, beta)
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-4, atol=2e-4)


def test_channel_norm_refuses():
    assert "fewer than 16 pixels" in reduce.supports(ChannelNormSpec(1, 8, 3, 5))
    assert "eps" in reduce.supports(ChannelNormSpec(1, 8, 4, 4, float("nan")))
    assert "channels" in reduce.supports(ChannelNormSpec(1, 0, 4, 4))
    with pytest.raises(ValueError, match="fewer than 16"):
        reduce.primfunc(ChannelNormSpec(1, 8, 1, 1))


def test_primfunc_params():
    ln = reduce.primfunc(LayerNormSpec(3, 37))
    assert [tuple(p.shape) for p in ln.params] == [(3, 37), (37,), (37,), (3, 37)]
    for keepdims, y in ((True, (2, 3, 1, 1)), (False, (2, 3))):
        pool = reduce.primfunc(MeanPoolSpec(2, 3, 5, 7, keepdims))
        assert [tuple(p.shape) for p in pool.params] == [(2, 3, 5, 7), y]
    for f in (ln, pool):
        assert f.attrs["tirx.noalias"] and f.attrs["tirx.is_scheduled"]


@pytest.mark.parametrize("spec, words", [
    (LayerNormSpec(0, 8), "rows"),
    (LayerNormSpec(4, -1), "dim"),
    (LayerNormSpec(4, 8.0), "dim"),
    (LayerNormSpec(True, 8), "rows"),
    (LayerNormSpec(4, 8, float("nan")), "eps"),
    (LayerNormSpec(4, 8, -1e-5), "eps"),
    (LayerNormSpec(2**16, 2**16), "int32"),
    (MeanPoolSpec(1, 0, 7, 7), "channels"),
    (MeanPoolSpec(1, 8, 7, -7), "width"),
    (MeanPoolSpec(2**11, 2**10, 32, 32), "int32"),
    ("layer norm", "not a LayerNormSpec, ChannelNormSpec or MeanPoolSpec"),
])
def test_supports_refuses(spec, words: str):
    reason = reduce.supports(spec)
    assert reason is not None and words in reason
    with pytest.raises(ValueError, match=words):
        reduce.primfunc(spec)
