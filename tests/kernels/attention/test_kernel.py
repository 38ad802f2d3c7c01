"""hwlat's fused attention kernel against the numpy reference (float64 softmax): non-causal and
causal, self and cross attention, lengths that are not multiples of the tiles, head dims 32, 64
and 128 and value head dims 16 does not divide (20, 36, 40), both layouts; Swin-V2's cosine
attention (q and k L2-normalised in the kernel, a per-head score scale)."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
import tvm
from tvm.script import tirx as T

from hwlat.errors import InvalidInputError
from hwlat.kernels.attention import (
    AttentionSpec,
    Tiles,
    attention_primfunc,
    attention_reference,
    fast_exp2,
)
from hwlat.kernels.attention.kernel import default_tiles
from hwlat.kernels.cpu import AVX512
from hwlat.lowering.targets import make_target

pytestmark = pytest.mark.tvm

TARGET = make_target(threads=1)


@functools.cache
def _compiled(spec: AttentionSpec, tiles: Tiles | None):
    func = attention_primfunc(spec, tiles).with_attr("global_symbol", "attn")
    return tvm.compile(tvm.IRModule({"attn": func}), target=TARGET)


def run_kernel(spec: AttentionSpec, tiles: Tiles | None = None, seed: int = 0):
    ex = _compiled(spec, tiles)
    rng = np.random.default_rng(seed)
    q = rng.standard_normal(spec.shape(spec.q_len, spec.head_dim)).astype(np.float32)
    k = rng.standard_normal(spec.shape(spec.kv_len, spec.head_dim)).astype(np.float32)
    v = rng.standard_normal(spec.shape(spec.kv_len, spec.head_dim_v)).astype(np.float32)
    out = tvm.runtime.tensor(np.full(spec.shape(spec.q_len, spec.head_dim_v), np.nan, np.float32))
    ex["attn"](*(tvm.runtime.tensor(x) for x in (q, k, v)), out)
    return q, k, v, out.numpy()


CASES = {
    # name: spec (batch, heads, Sq, Sk, D, Dv, scale, causal offset, layout)
    "self-197-d64": AttentionSpec(1, 2, 197, 197, 64, 64, 0.125),
    "self-causal-77-d32": AttentionSpec(1, 3, 77, 77, 32, 32, 32 ** -0.5, 0),
    "cross-50x197-d128-batch2": AttentionSpec(2, 1, 50, 197, 128, 128, 128 ** -0.5),
    "cross-causal-bottom-right-1x77": AttentionSpec(1, 2, 1, 77, 64, 64, 0.125, 76),
    "cross-causal-33x100-bsnh": AttentionSpec(1, 2, 33, 100, 32, 32, 0.2, 67, "BSNH"),
    "self-1x1": AttentionSpec(1, 1, 1, 1, 32, 32, 1.0),
    "cross-dv64-d32-bsnh": AttentionSpec(1, 2, 40, 70, 32, 64, 0.3, None, "BSNH"),
    # value head dims 16 does not divide (MobileViT-XXS: 20): narrower P V tiles, same kernel
    "self-d20-bsnh": AttentionSpec(1, 4, 64, 64, 20, 20, 20 ** -0.5, None, "BSNH"),
    "self-d36": AttentionSpec(1, 2, 50, 50, 36, 36, 36 ** -0.5),
    "self-d24-dv40": AttentionSpec(1, 2, 30, 30, 24, 40, 0.2),
}


@pytest.mark.parametrize("name", CASES)
def test_kernel_matches_reference(name):
    spec = CASES[name]
    q, k, v, got = run_kernel(spec)
    want = attention_reference(q, k, v, spec)
    assert got.shape == want.shape == spec.shape(spec.q_len, spec.head_dim_v)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("spec", [
    AttentionSpec(2, 3, 49, 49, 32, 32, 32 ** -0.5, bias=(1, 3)),  # Swin window, per-head bias
    AttentionSpec(1, 4, 16, 49, 16, 32, 0.25, bias=(1, 4)),  # LeViT subsample: Sq < Sk
    AttentionSpec(2, 2, 33, 70, 32, 32, 0.2, 37, "BSNH", bias=(2, 1)),  # a mask per image
])
def test_additive_bias_matches_reference(spec):
    func = attention_primfunc(spec).with_attr("global_symbol", "attn")
    ex = tvm.compile(tvm.IRModule({"attn": func}), target=TARGET)
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal(spec.shape(s, d)).astype(np.float32) for s, d in (
        (spec.q_len, spec.head_dim), (spec.kv_len, spec.head_dim),
        (spec.kv_len, spec.head_dim_v)))
    bias = (3 * rng.standard_normal((*spec.bias, spec.q_len, spec.kv_len))).astype(np.float32)
    out = tvm.runtime.tensor(np.full(spec.shape(spec.q_len, spec.head_dim_v), np.nan, np.float32))
    ex["attn"](*(tvm.runtime.tensor(x) for x in (q, k, v, bias)), out)
    want = attention_reference(q, k, v, spec, bias)
    assert np.abs(want - attention_reference(q, k, v, spec)).max() > 0.1  # the bias matters
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-4, atol=2e-5)


COSINE = {
    # Swin-V2 windows: odd head counts, 7x7 and 8x8 windows, a bias; the normalisation and head
    # scale also without a bias, causal, in BSNH and with a head dim 16 does not divide
    "swinv2-w7-3heads-bias": AttentionSpec(2, 3, 49, 49, 32, 32, 1.0, bias=(1, 3),
                                           head_scale=True, normalize_eps=1e-12),
    "swinv2-w8-5heads-bias-per-image": AttentionSpec(3, 5, 64, 64, 32, 32, 1.0, bias=(3, 1),
                                                     head_scale=True, normalize_eps=1e-12),
    "normalized-only-causal-d20": AttentionSpec(1, 3, 33, 41, 20, 20, 0.7, 8,
                                                normalize_eps=1e-6),
    "head-scale-only-bsnh": AttentionSpec(1, 7, 30, 70, 24, 40, 0.2, None, "BSNH",
                                          head_scale=True),
}


@pytest.mark.parametrize("name", COSINE)
def test_cosine_attention_and_head_scale_match_reference(name):
    spec = COSINE[name]
    func = attention_primfunc(spec).with_attr("global_symbol", "attn")
    ex = tvm.compile(tvm.IRModule({"attn": func}), target=TARGET)
    rng = np.random.default_rng(4)
    # rows of different norms (and one zero row of q: eps keeps it finite, its scores 0)
    q, k, v = (rng.standard_normal(spec.shape(s, d)).astype(np.float32)
               * rng.uniform(0.1, 5.0, spec.shape(s, 1)).astype(np.float32)
               for s, d in ((spec.q_len, spec.head_dim), (spec.kv_len, spec.head_dim),
                            (spec.kv_len, spec.head_dim_v)))
    q[0, ..., 0, :] = 0.0
    args = [q, k, v]
    bias = head_scale = None
    if spec.bias is not None:
        bias = (3 * rng.standard_normal((*spec.bias, spec.q_len, spec.kv_len))).astype(np.float32)
        args.append(bias)
    if spec.head_scale:  # exp(logit scale clamped to log(100)), one per head
        head_scale = np.exp(rng.uniform(0.0, np.log(100.0), spec.heads)).astype(np.float32)
        args.append(head_scale)
    out = tvm.runtime.tensor(np.full(spec.shape(spec.q_len, spec.head_dim_v), np.nan, np.float32))
    ex["attn"](*(tvm.runtime.tensor(x) for x in args), out)
    want = attention_reference(q, k, v, spec, bias, head_scale)
    plain = dataclasses.replace(spec, head_scale=False, normalize_eps=None)
    assert np.abs(want - attention_reference(q, k, v, plain, bias)).max() > 0.1  # both matter
    # scores up to 100 x cos: a relative error of 1e-7 in a score moves the output ~1e-5
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-4, atol=5e-5)


@pytest.mark.parametrize("name", [*CASES, *COSINE])
def test_avx512_tiles_match_reference(name):
    """The tiles AVX-512 targets get (8 x 32 micro-kernels, key tiles of 128, one query tile
    for short sequences) on every case; built for this machine's CPU, any x86-64 runs them."""
    spec = {**CASES, **COSINE}[name]
    tiles = default_tiles(spec, AVX512)
    assert tiles != default_tiles(spec) and tiles.nr == 32
    func = attention_primfunc(spec, cpu=AVX512).with_attr("global_symbol", "attn")
    ex = tvm.compile(tvm.IRModule({"attn": func}), target=TARGET)
    rng = np.random.default_rng(6)
    q, k, v = (rng.standard_normal(spec.shape(s, d)).astype(np.float32) for s, d in (
        (spec.q_len, spec.head_dim), (spec.kv_len, spec.head_dim), (spec.kv_len, spec.head_dim_v)))
    args, bias, head_scale = [q, k, v], None, None
    if spec.bias is not None:
        bias = rng.standard_normal((*spec.bias, spec.q_len, spec.kv_len)).astype(np.float32)
        args.append(bias)
    if spec.head_scale:
        head_scale = rng.uniform(1.0, 20.0, spec.heads).astype(np.float32)
        args.append(head_scale)
    out = tvm.runtime.tensor(np.full(spec.shape(spec.q_len, spec.head_dim_v), np.nan, np.float32))
    ex["attn"](*(tvm.runtime.tensor(x) for x in args), out)
    want = attention_reference(q, k, v, spec, bias, head_scale)
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-4, atol=5e-5)


@pytest.mark.parametrize("spec", [
    AttentionSpec(1, 6, 197, 197, 64, 64, 0.125, layout="QKV"),  # ViT-S
    AttentionSpec(3, 5, 49, 49, 32, 32, 1.0, layout="QKV", bias=(3, 5), head_scale=True,
                  normalize_eps=1e-12),  # Swin-V2's shifted windows, odd heads
    AttentionSpec(2, 3, 20, 20, 20, 20, 0.3, 4, layout="QKV"),  # causal, head dim 20
])
@pytest.mark.parametrize("cpu", [None, AVX512])
def test_packed_qkv_matches_reference(spec, cpu):
    """Layout QKV: q, k and v read from one (B, S, 3, N, D) tensor, passed three times; out
    BSNH."""
    func = attention_primfunc(spec, cpu=cpu).with_attr("global_symbol", "attn")
    ex = tvm.compile(tvm.IRModule({"attn": func}), target=TARGET)
    rng = np.random.default_rng(7)
    packed = rng.standard_normal(spec.packed_shape).astype(np.float32)
    args, bias, head_scale = [packed] * 3, None, None
    if spec.bias is not None:
        bias = rng.standard_normal((*spec.bias, spec.q_len, spec.kv_len)).astype(np.float32)
        args.append(bias)
    if spec.head_scale:
        head_scale = rng.uniform(1.0, 20.0, spec.heads).astype(np.float32)
        args.append(head_scale)
    out = tvm.runtime.tensor(np.full(spec.shape(spec.q_len, spec.head_dim_v), np.nan, np.float32))
    ex["attn"](*(tvm.runtime.tensor(x) for x in args), out)
    q, k, v = (np.ascontiguousarray(packed[:, :, i]) for i in range(3))  # BSNH each
    want = attention_reference(q, k, v, dataclasses.replace(spec, layout="BSNH"), bias,
                               head_scale)
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-4, atol=5e-5)


def test_causal_mask_changes_the_result():
    """The causal case is not the non-causal one by accident: row 0 sees key 0 only."""
    spec = CASES["self-causal-77-d32"]
    q, k, v, got = run_kernel(spec)
    full = attention_reference(q, k, v, AttentionSpec(1, 3, 77, 77, 32, 32, 32 ** -0.5))
    assert np.abs(got - full).max() > 0.1
    np.testing.assert_allclose(got[:, :, 0], v[:, :, 0], rtol=1e-5, atol=1e-6)


def test_rows_that_see_no_key_are_zero():
    """Offset -10 with Sq 20, Sk 10 (bottom-right alignment for Sq > Sk): rows 0-9 see nothing."""
    spec = AttentionSpec(1, 1, 20, 10, 32, 32, 0.5, -10)
    q, k, v, got = run_kernel(spec)
    assert not np.isnan(got).any()
    np.testing.assert_array_equal(got[:, :, :10], 0.0)
    np.testing.assert_allclose(got, attention_reference(q, k, v, spec), rtol=1e-4, atol=2e-5)


def test_other_tiles_give_the_same_result():
    """Micro-kernels of different heights (rows padded to lcm(4, 3, 2) = 12), key tile 32."""
    spec = AttentionSpec(1, 2, 61, 45, 64, 64, 0.125, 0)
    tiles = Tiles(tq=24, tk=32, mr=4, nr=16, mv=3, nv=32, g=2)
    q, k, v, got = run_kernel(spec, tiles)
    np.testing.assert_allclose(got, attention_reference(q, k, v, spec), rtol=1e-4, atol=2e-5)


def _allocations(stmt) -> list[int]:
    """Element counts of every buffer the statement allocates."""
    if isinstance(stmt, tvm.tirx.AllocBuffer):
        return [int(np.prod([int(d) for d in stmt.buffer.shape]))]
    children = []
    for field in ("seq", "body", "then_case", "else_case", "block"):
        child = getattr(stmt, field, None)
        children.extend(child if isinstance(child, (list, tvm.ir.Array)) else [child])
    return [n for c in children if isinstance(c, (tvm.tirx.Stmt, tvm.ir.Node)) and c is not None
            for n in _allocations(c)]


def test_no_buffer_holds_the_score_matrix():
    spec = AttentionSpec(1, 1, 512, 512, 32, 32, 0.125)
    tiles = Tiles()
    sizes = _allocations(attention_primfunc(spec, tiles).body)
    assert tiles.tq * tiles.tk in sizes  # the score tile
    assert max(sizes) == 512 * 32  # packed K^T, the size of K
    assert max(sizes) < spec.q_len * spec.kv_len // 8


def test_fast_exp2_is_accurate_below_zero():
    @T.prim_func(s_tir=True)
    def exp2_all(a: T.Buffer((4096,), "float32"), b: T.Buffer((4096,), "float32")):
        for i in T.vectorized(4096):
            b[i] = fast_exp2(a[i])

    ex = tvm.compile(tvm.IRModule({"exp2_all": exp2_all.with_attr("global_symbol", "exp2_all")}),
                     target=TARGET)
    x = np.concatenate([np.linspace(-125.0, 0.0, 4000), [-1e30, -300.0], np.zeros(94)])
    x = x.astype(np.float32)
    out = tvm.runtime.tensor(np.zeros_like(x))
    ex["exp2_all"](tvm.runtime.tensor(x), out)
    got, want = out.numpy()[:4000].astype(np.float64), np.exp2(x[:4000].astype(np.float64))
    assert np.max(np.abs(got - want) / want) < 1e-6
    assert 0.0 <= out.numpy()[4000] < 1e-37 and 0.0 <= out.numpy()[4001] < 1e-37


def test_fast_exp2_flushed_gives_zeros_not_denormals_below_minus_126():
    """The softmax's 2^x: masked keys (x far below -126) weigh exactly 0, and nothing between
    0 and the smallest normal float32 comes out (denormal products slow x86 down)."""
    @T.prim_func(s_tir=True)
    def exp2_flush(a: T.Buffer((4096,), "float32"), b: T.Buffer((4096,), "float32")):
        for i in T.vectorized(4096):
            b[i] = fast_exp2(a[i], flush=True)

    ex = tvm.compile(tvm.IRModule({"f": exp2_flush.with_attr("global_symbol", "f")}),
                     target=TARGET)
    x = np.concatenate([np.linspace(-125.9, 0.0, 4000), np.linspace(-200.0, -126.0, 90),
                        [-1e30, -3e38, -126.2, -126.7, -127.0, -126.0]]).astype(np.float32)
    out = tvm.runtime.tensor(np.full_like(x, np.nan))
    ex["f"](tvm.runtime.tensor(x), out)
    got = out.numpy()
    want = np.exp2(x[:4000].astype(np.float64))
    assert np.max(np.abs(got[:4000] - want) / want) < 1e-6
    np.testing.assert_array_equal(got[4000:], 0.0)
    tiny = np.finfo(np.float32).tiny
    assert not np.any((got > 0) & (got < tiny))


def test_bad_spec_and_tiles_are_refused():
    with pytest.raises(InvalidInputError, match="bias"):
        AttentionSpec(2, 3, 8, 8, 32, 32, 1.0, bias=(2, 2))
    with pytest.raises(InvalidInputError, match="layout"):
        AttentionSpec(1, 1, 4, 4, 32, 32, 1.0, None, "BHSD")
    with pytest.raises(InvalidInputError, match="dimensions"):
        AttentionSpec(1, 1, 0, 4, 32, 32, 1.0)
    with pytest.raises(InvalidInputError, match="QKV"):
        AttentionSpec(1, 1, 4, 8, 32, 32, 1.0, layout="QKV")
    with pytest.raises(InvalidInputError, match="normalize_eps"):
        AttentionSpec(1, 1, 4, 4, 32, 32, 1.0, normalize_eps=0.0)
    with pytest.raises(InvalidInputError, match="tiles"):
        attention_primfunc(AttentionSpec(1, 1, 4, 4, 32, 32, 1.0), Tiles(tq=20))
