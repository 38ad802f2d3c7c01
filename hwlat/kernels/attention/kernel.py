"""Fused attention as one TIR PrimFunc: tiled over queries and keys with an online softmax, so
the Sq x Sk score matrix never exists (only a tq x tk tile of it per query tile).

    out[b, h, i, :] = sum_j softmax_j(scale * q[b, h, i, :] . k[b, h, j, :]) v[b, h, j, :]

(plus bias[b, h, i, j] where the spec has an additive bias: a relative position bias or a
mask, broadcast over batch and heads where its leading dims are 1; times a per-head scale
hs[h] where the spec has one; with q and k L2-normalised along the head dim first,
x / max(||x||, eps), where the spec says `normalize_eps`: Swin-V2's scaled cosine attention,
whose scores are cos(q, k) * exp(logit scale[h]) + bias) over the keys j that query i
sees: all of them, or, with a causal offset c, those with
j <= i + c. c = 0 is top-left alignment (torch SDPA's `is_causal`, TVM's "TopLeft");
c = Sk - Sq is bottom-right alignment (flash-attention's; for Sq <= Sk also TVM's
"BottomRight", which uses |Sq - Sk|). A query row that sees no key gets zeros.

Layouts: "BNSD" (batch, heads, sequence, head dim; torch SDPA's and the decomposed ONNX form's)
and "BSNH" (`relax.op.nn.attention`'s), and "QKV": q, k and v read where a fused qkv
projection wrote them, (B, S, 3, N, D) as timm's ViT/Swin reshape it before permuting and
splitting it, out written BSNH, where their output projection reads it (no copies around the
kernel); the same loops serve all through strided views of the four tensors. float32, static shapes (one PrimFunc per shape), any Sq and Sk (tails are padded
inside the kernel), any head dim that is a multiple of 16 (32, 64, 128, ...).

Schedule (for AVX2/AVX-512 CPUs; hand-written loops, no TVM schedule): per (batch, head), K is
packed transposed into contiguous D x tk blocks, zero-padded past Sk (and V packed row-contiguous
for BSNH). Parallel over batch x heads x query tiles, per tile of tq query rows: Q is copied
pre-scaled; for each key tile of tk keys: S = Q K^T by an mr x nr register micro-kernel
(broadcast q, vectors of keys); an online softmax over G interleaved rows: running max m and
sum l, p = 2^(s - m_new) (scores in base 2: Q pre-scaled by log2 e) with a polynomial that
vectorises (fast_exp2), masking only in tiles that hold padding or the causal edge; the output
accumulator rescaled by 2^(m_old - m_new) and P V added by an mv x nv micro-kernel (broadcast p, vectors of V rows);
finally acc / l. Causal key tiles that no row of the query tile sees are skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tvm import tirx
from tvm.script import tirx as T

from hwlat.errors import InvalidInputError
from hwlat.kernels.cpu import CpuInfo

LAYOUTS = ("BNSD", "BSNH", "QKV")
_NEG = -3.0e38  # "minus infinity" that stays finite through subtraction and 2^x
_LOG2E = 1.4426950408889634  # scores are kept in base 2: Q is scaled by scale * log2(e)
_MAGIC = 12582912.0 + 127.0  # 1.5 * 2^23 + exponent bias
# Cephes exp2f: 2^r = 1 + r P(r) on [-1/2, 1/2], relative error ~1.4e-7
_EXP2_POLY = (1.535336188319500e-4, 1.339887440266574e-3, 9.618437357674640e-3,
              5.550332471162809e-2, 2.402264791363012e-1, 6.931472028550421e-1)


@dataclass(frozen=True)
class AttentionSpec:
    batch: int
    heads: int
    q_len: int
    kv_len: int
    head_dim: int
    head_dim_v: int
    scale: float
    causal_offset: int | None = None  # key j visible to query i iff j <= i + offset; None: all
    layout: str = "BNSD"
    # an additive score bias (relative position bias, mask) of shape (Bb, Nb, Sq, Sk), Bb in
    # {1, batch} and Nb in {1, heads} (1: broadcast): (Bb, Nb); None: no bias operand
    bias: tuple[int, int] | None = None
    # a (heads,) operand that multiplies each head's scores (with `scale`, before the bias)
    head_scale: bool = False
    # q and k divided by max(L2 norm along the head dim, eps) before the scores; None: not
    normalize_eps: float | None = None

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise InvalidInputError(f"attention layout must be one of {LAYOUTS}, "
                                    f"got {self.layout!r}")
        dims = (self.batch, self.heads, self.q_len, self.kv_len, self.head_dim, self.head_dim_v)
        if any(int(d) < 1 for d in dims):
            raise InvalidInputError(f"attention dimensions must be >= 1, got {dims}")
        if self.bias is not None and (self.bias[0] not in (1, self.batch)
                                      or self.bias[1] not in (1, self.heads)):
            raise InvalidInputError(f"attention bias leading dims {self.bias} must each be 1 "
                                    f"or ({self.batch}, {self.heads})")
        if self.layout == "QKV" and (self.q_len != self.kv_len
                                     or self.head_dim != self.head_dim_v):
            raise InvalidInputError("attention layout QKV (one packed input) needs equal q and "
                                    f"kv lengths and head dims, got {dims}")
        if self.normalize_eps is not None and not self.normalize_eps > 0:
            raise InvalidInputError(f"attention normalize_eps must be > 0, "
                                    f"got {self.normalize_eps}")

    def shape(self, seq: int, dim: int) -> tuple[int, int, int, int]:
        """The shape of q, k, v or out in this layout (QKV: of out; its q, k and v are
        `packed_shape`)."""
        if self.layout == "BNSD":
            return (self.batch, self.heads, seq, dim)
        return (self.batch, seq, self.heads, dim)

    @property
    def packed_shape(self) -> tuple[int, int, int, int, int]:
        """QKV's one input: (B, S, 3, N, D), q, k and v at index 0, 1, 2 of its third axis."""
        return (self.batch, self.q_len, 3, self.heads, self.head_dim)

    def strides(self, seq: int, dim: int) -> tuple[int, int, int, int]:
        """Strides of the (B, N, S, D) view of a tensor of this layout (QKV: of out)."""
        n = self.heads
        if self.layout == "BNSD":
            return (n * seq * dim, seq * dim, dim, 1)
        return (seq * n * dim, dim, n * dim, 1)

    @property
    def flops(self) -> int:
        """Multiply-adds x 2 of Q K^T and P V (causal tiles skipped are still counted)."""
        b, n, sq, sk = self.batch, self.heads, self.q_len, self.kv_len
        return 2 * b * n * sq * sk * (self.head_dim + self.head_dim_v)


@dataclass(frozen=True)
class Tiles:
    tq: int = 48  # query rows per tile
    tk: int = 64  # keys per tile
    mr: int = 6  # query rows of the score micro-kernel
    nr: int = 16  # keys of the score micro-kernel (8 lanes x registers)
    mv: int = 6  # query rows of the P V micro-kernel
    nv: int = 16  # head-dim columns of the P V micro-kernel
    g: int = 6  # query rows whose softmax steps are interleaved

    @property
    def row_step(self) -> int:
        """Rows of a query tile are processed in multiples of this (the tail padded)."""
        return math.lcm(self.mr, self.mv, self.g)

    def check(self, head_dim_v: int) -> None:
        if self.tq % self.row_step or self.tk % self.nr or self.nr % 8 or head_dim_v % self.nv:
            raise InvalidInputError(f"bad attention tiles {self} for head_dim_v {head_dim_v}")


def fast_exp2(x, flush: bool = False):
    """2^x of a float32 expression (scalar or vector) that LLVM vectorises: n = round(x) by
    adding 1.5 * 2^23 (whose float bits then also hold n + 127, the exponent of 2^n), a
    polynomial for 2^(x - n) on [-1/2, 1/2]. Inputs below -126 give 2^-126 (the kernel takes
    2^x of values <= 0 only, where that is 0 to float32 precision against the row's 1), or 0
    with `flush` (inputs <= -126): the softmax's probabilities of masked keys (Swin's -100
    mask) then multiply V as zeros, not as 2^-126, whose products are denormals that cost x86
    a microcode assist each (a shifted-window attention ran 1.9x slower)."""
    f32 = "float32"
    x = tirx.max(x, tirx.const(-126.0, f32))
    if flush:
        return tirx.Select(x <= tirx.const(-126.0, f32), tirx.const(0.0, f32), fast_exp2(x))
    t = tirx.reinterpret("int32", x + tirx.const(_MAGIC, f32))
    # through the bits, so that TVM's simplifier cannot cancel the two constants
    r = x - (tirx.reinterpret(f32, t) - tirx.const(_MAGIC, f32))
    p = tirx.const(_EXP2_POLY[0], f32)
    for c in _EXP2_POLY[1:]:
        p = p * r + tirx.const(c, f32)
    two_n = tirx.reinterpret(f32, tirx.shift_left(t, tirx.const(23, "int32")))
    return (p * r + tirx.const(1.0, f32)) * two_n


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def attention_primfunc(spec: AttentionSpec, tiles: Tiles | None = None,
                       cpu: CpuInfo | None = None) -> tirx.PrimFunc:
    """The PrimFunc `(q, k, v, [bias], [head scale], out)` for one spec (the bias where it has
    one, the head scale where `spec.head_scale`); q, k, v and out in `spec.layout` (QKV: q, k
    and v are the same (B, S, 3, N, D) tensor, passed three times, out BSNH), the bias
    (Bb, Nb, Sq, Sk) and the head scale (N,) whatever the layout."""
    t = tiles or default_tiles(spec, cpu)
    B, N, Sq, Sk = spec.batch, spec.heads, spec.q_len, spec.kv_len
    D, Dv = spec.head_dim, spec.head_dim_v
    t.check(Dv)
    tq, tk, mr, nr, mv, nv, G, P = t.tq, t.tk, t.mr, t.nr, t.mv, t.nv, t.g, t.row_step
    nq = _ceil(Sq, tq)
    nk = _ceil(Sk, tk)
    Skp = nk * tk
    causal = spec.causal_offset is not None
    off = int(spec.causal_offset or 0)
    scale = float(spec.scale) * _LOG2E  # exp(s) = 2^(s log2 e)
    q_shape, k_shape = spec.shape(Sq, D), spec.shape(Sk, D)
    v_shape, o_shape = spec.shape(Sk, Dv), spec.shape(Sq, Dv)
    q_str, k_str = spec.strides(Sq, D), spec.strides(Sk, D)
    v_str, o_str = spec.strides(Sk, Dv), spec.strides(Sq, Dv)
    offsets = (0, 0, 0)  # of q, k and v in their operands
    if spec.layout == "QKV":  # q, k and v are strided views of one (B, S, 3, N, D) operand
        q_shape = k_shape = v_shape = spec.packed_shape
        q_str = k_str = v_str = (Sq * 3 * N * D, D, 3 * N * D, 1)
        offsets = (0, N * D, 2 * N * D)
    NEG = _NEG
    step = 1 if causal else 0
    pack_v = spec.layout != "BNSD"
    def fexp(x):
        return fast_exp2(x, flush=True)

    @T.macro
    def softmax_rows(sc, red, mx, m_run, l_run, alpha, i0, n_j8, cols, base, masked):
        # row i0 + r sees columns j < cols and (causal) j < base + r
        for r in T.unroll(G):
            for jj in T.vectorized(8):
                red[r, jj] = T.float32(NEG)
        for j8 in range(n_j8):
            for r in T.unroll(G):
                for jj in T.vectorized(8):
                    if masked:
                        red[r, jj] = T.max(red[r, jj], T.Select(
                            j8 * 8 + jj < T.min(cols, base + r * step),
                            sc[i0 + r, j8 * 8 + jj], T.float32(NEG)))
                    else:
                        red[r, jj] = T.max(red[r, jj], sc[i0 + r, j8 * 8 + jj])
        for r in T.unroll(G):
            mx[r] = m_run[i0 + r]
            for jj in T.unroll(8):
                mx[r] = T.max(mx[r], red[r, jj])
            for jj in T.vectorized(8):
                red[r, jj] = T.float32(0)
        for j8 in range(n_j8):
            for r in T.unroll(G):
                for jj in T.vectorized(8):
                    if masked:
                        sc[i0 + r, j8 * 8 + jj] = T.Select(
                            j8 * 8 + jj < T.min(cols, base + r * step),
                            fexp(sc[i0 + r, j8 * 8 + jj] - mx[r]), T.float32(0))
                    else:
                        sc[i0 + r, j8 * 8 + jj] = fexp(sc[i0 + r, j8 * 8 + jj] - mx[r])
                    red[r, jj] = red[r, jj] + sc[i0 + r, j8 * 8 + jj]
        for r in T.unroll(G):
            alpha[i0 + r] = fexp(m_run[i0 + r] - mx[r])
            m_run[i0 + r] = mx[r]
            l_run[i0 + r] = l_run[i0 + r] * alpha[i0 + r]
            for jj in T.unroll(8):
                l_run[i0 + r] = l_run[i0 + r] + red[r, jj]

    has_bias = spec.bias is not None
    bb_n, bn_n = spec.bias or (1, 1)
    bias_shape = (bb_n, bn_n, Sq, Sk)
    has_hs = spec.head_scale
    norm = spec.normalize_eps is not None
    eps = float(spec.normalize_eps or 1.0)

    def q_factor(hs, h):
        """What a query row is multiplied by: scale * log2(e), times the head's scale."""
        return T.float32(scale) * hs[h] if has_hs else T.float32(scale)

    @T.macro
    def inv_norm(x, bh, j, out):
        # out[0] = 1 / max(||x[b, h, j, :]||, eps)
        out[0] = T.float32(0)
        for d in range(D):
            out[0] = out[0] + x[bh // N, bh % N, j, d] * x[bh // N, bh % N, j, d]
        out[0] = T.float32(1) / T.max(T.sqrt(out[0]), T.float32(eps))

    @T.macro
    def body(q, k, v, bias, hs, o):
        qv = T.decl_buffer((B, N, Sq, D), "float32", data=q.data, strides=q_str,
                           elem_offset=offsets[0])
        kv = T.decl_buffer((B, N, Sk, D), "float32", data=k.data, strides=k_str,
                           elem_offset=offsets[1])
        vv = T.decl_buffer((B, N, Sk, Dv), "float32", data=v.data, strides=v_str,
                           elem_offset=offsets[2])
        ov = T.decl_buffer((B, N, Sq, Dv), "float32", data=o.data, strides=o_str)
        # K^T, one contiguous D x tk block per key tile, zero-padded past Sk
        kt = T.alloc_buffer((B * N, nk, D, tk), "float32")
        # V as (B * N, Sk, Dv): BNSD already is; BSNH rows (N * Dv apart; QKV's 3 * N * Dv)
        # are packed, or the rows of a key tile would fall into few cache sets
        if pack_v:
            vp = T.alloc_buffer((B * N, Sk, Dv), "float32")
        else:
            vp = T.decl_buffer((B * N, Sk, Dv), "float32", data=v.data)
        for bh in T.parallel(B * N):
            if norm:
                kn = T.alloc_buffer((1,), "float32", scope="local")
                for j in range(Sk):
                    inv_norm(kv, bh, j, kn)
                    for d in range(D):
                        kt[bh, j // tk, d, j % tk] = kv[bh // N, bh % N, j, d] * kn[0]
            else:
                for j, d in T.grid(Sk, D):
                    kt[bh, j // tk, d, j % tk] = kv[bh // N, bh % N, j, d]
            for d, j in T.grid(D, Skp - Sk):
                kt[bh, nk - 1, d, tk - (Skp - Sk) + j] = T.float32(0)
            if pack_v:
                for j in range(Sk):
                    for d in T.vectorized(Dv):
                        vp[bh, j, d] = vv[bh // N, bh % N, j, d]
        for task in T.parallel(B * N * nq):
            qs = T.alloc_buffer((tq, D), "float32", scope="local")
            sc = T.alloc_buffer((tq, tk), "float32", scope="local")
            acc_o = T.alloc_buffer((tq, Dv), "float32", scope="local")
            m_run = T.alloc_buffer((tq,), "float32", scope="local")
            l_run = T.alloc_buffer((tq,), "float32", scope="local")
            alpha = T.alloc_buffer((tq,), "float32", scope="local")
            red = T.alloc_buffer((G, 8), "float32", scope="local")
            mx = T.alloc_buffer((G,), "float32", scope="local")
            acc = T.alloc_buffer((mr, nr), "float32", scope="local")
            acc_v = T.alloc_buffer((mv, nv), "float32", scope="local")
            qf = T.alloc_buffer((1,), "float32", scope="local")
            bh = task // nq
            b = bh // N
            h = bh % N
            q0 = task % nq * tq
            rows = T.min(tq, Sq - q0)
            rows_p = (rows + P - 1) // P * P  # padded rows: zero queries, never written out
            for i in range(tq):
                if i < rows:
                    if norm:
                        inv_norm(qv, bh, q0 + i, qf)
                        qf[0] = qf[0] * q_factor(hs, h)
                    else:
                        qf[0] = q_factor(hs, h)
                    for d in T.vectorized(D):
                        qs[i, d] = qv[b, h, q0 + i, d] * qf[0]
                else:
                    for d in T.vectorized(D):
                        qs[i, d] = T.float32(0)
                m_run[i] = T.float32(NEG)
                l_run[i] = T.float32(0)
                for d in T.vectorized(Dv):
                    acc_o[i, d] = T.float32(0)
            n_kb = T.max(0, T.min(nk, (q0 + rows + off + tk - 1) // tk)) if causal else nk
            for kb in range(n_kb):
                k0 = kb * tk
                cols = T.min(tk, Sk - k0)
                n_j8 = (cols + nr - 1) // nr * (nr // 8)
                # scores of the tile: Q K^T
                for jb, ib in T.grid((cols + nr - 1) // nr, rows_p // mr):
                    for ii in T.unroll(mr):
                        for jj in T.vectorized(nr):
                            acc[ii, jj] = T.float32(0)
                    for d in range(D):
                        for ii in T.unroll(mr):
                            for jj in T.vectorized(nr):
                                acc[ii, jj] = acc[ii, jj] + qs[ib * mr + ii, d] * kt[
                                    bh, kb, d, jb * nr + jj]
                    for ii in T.unroll(mr):
                        for jj in T.vectorized(nr):
                            sc[ib * mr + ii, jb * nr + jj] = acc[ii, jj]
                if has_bias:  # scores in base 2: the bias times log2(e), real rows and keys
                    for i, j in T.grid(rows, cols):
                        sc[i, j] = sc[i, j] + bias[b % bb_n, h % bn_n, q0 + i, k0 + j] * T.float32(
                            _LOG2E)
                # online softmax, G rows interleaved: running max m and sum l, p = 2^(s - m)
                # in place of s, alpha = 2^(m_old - m_new) to rescale the accumulator; columns
                # past the keys (or the causal limit) are masked where the group has any
                for ig in range(rows_p // G):
                    base = q0 + ig * G + off + 1 - k0 if causal else cols
                    if T.min(cols, base) == n_j8 * 8:
                        softmax_rows(sc, red, mx, m_run, l_run, alpha, ig * G, n_j8, cols, base,
                                     False)
                    else:
                        softmax_rows(sc, red, mx, m_run, l_run, alpha, ig * G, n_j8, cols, base,
                                     True)
                # acc_o = acc_o * alpha + P V
                for ib, db in T.grid(rows_p // mv, Dv // nv):
                    for ii in T.unroll(mv):
                        for dd in T.vectorized(nv):
                            acc_v[ii, dd] = (acc_o[ib * mv + ii, db * nv + dd]
                                             * alpha[ib * mv + ii])
                    for j in range(cols):
                        for ii in T.unroll(mv):
                            for dd in T.vectorized(nv):
                                acc_v[ii, dd] = acc_v[ii, dd] + sc[ib * mv + ii, j] * vp[
                                    bh, k0 + j, db * nv + dd]
                    for ii in T.unroll(mv):
                        for dd in T.vectorized(nv):
                            acc_o[ib * mv + ii, db * nv + dd] = acc_v[ii, dd]
            for i in range(rows):
                inv = T.Select(l_run[i] > T.float32(0), T.float32(1) / l_run[i], T.float32(0))
                for d in T.vectorized(Dv):
                    ov[b, h, q0 + i, d] = acc_o[i, d] * inv

    q_t, k_t, v_t = (T.Buffer(q_shape, "float32"), T.Buffer(k_shape, "float32"),
                     T.Buffer(v_shape, "float32"))
    o_t, bias_t, hs_t = (T.Buffer(o_shape, "float32"), T.Buffer(bias_shape, "float32"),
                         T.Buffer((N,), "float32"))
    if has_bias and has_hs:
        @T.prim_func(s_tir=True, private=True)
        def attention_bias_scale(q: q_t, k: k_t, v: v_t, bias: bias_t, hs: hs_t, o: o_t):
            T.func_attr({"tirx.noalias": True})
            body(q, k, v, bias, hs, o)

        return attention_bias_scale

    if has_bias:
        @T.prim_func(s_tir=True, private=True)
        def attention_bias(q: q_t, k: k_t, v: v_t, bias: bias_t, o: o_t):
            T.func_attr({"tirx.noalias": True})
            body(q, k, v, bias, q, o)

        return attention_bias

    if has_hs:
        @T.prim_func(s_tir=True, private=True)
        def attention_scale(q: q_t, k: k_t, v: v_t, hs: hs_t, o: o_t):
            T.func_attr({"tirx.noalias": True})
            body(q, k, v, q, hs, o)

        return attention_scale

    @T.prim_func(s_tir=True, private=True)
    def attention(q: q_t, k: k_t, v: v_t, o: o_t):
        T.func_attr({"tirx.noalias": True})
        body(q, k, v, q, q, o)

    return attention


def default_tiles(spec: AttentionSpec, cpu: CpuInfo | None = None) -> Tiles:
    """Tiles for a spec on a CPU (None: the AVX2 reference). AVX2: the 6 x 16 micro-kernels (12
    of the 16 ymm registers hold accumulators); tq 48 x tk 64 keeps a tile's Q, scores and
    accumulator near L1. Measured best of those tried on this project's AMD EPYC (znver3) at
    head dims 32-128. AVX-512 (32 zmm registers): 8 x 32 micro-kernels (16 accumulators),
    softmax steps of 8 rows, key tiles of 128 where there are that many keys (else 64), query
    tiles of 64 rows, or one tile of the rows rounded up to 8 where there are fewer (Swin's 49:
    56, not 48 + a tile padded from 1 row to 8); on this project's Xeon (AVX-512, 1 thread)
    0.78-0.90x the AVX2 tiles' time on ViT-S, DeiT-T, LeViT and Swin-V2 attentions. The P V
    micro-kernel's columns must divide the value head dim: one that 16 (AVX-512: 32) does not
    divide (MobileViT's 20, 36, ...) takes 16 or 8 columns where they divide it, the whole head
    dim up to 24, else its largest divisor below 16."""
    dv = int(spec.head_dim_v)
    wide = cpu is not None and cpu.avx512
    if dv % 32 == 0 and wide:
        nv = 32
    elif dv % 16 == 0:
        nv = 16
    elif dv % 8 == 0:
        nv = 8
    elif dv <= 24:
        nv = dv
    else:
        nv = max(n for n in range(1, 16) if dv % n == 0)
    if not wide:
        return Tiles(nv=nv)
    sq = int(spec.q_len)
    tq = 64 if sq > 64 else max(8, -(-sq // 8) * 8)
    tk = 128 if spec.kv_len >= 128 else 64
    return Tiles(tq=tq, tk=tk, mr=8, nr=32, mv=8, nv=nv, g=8)
