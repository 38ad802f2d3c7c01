"""Matmul with a constant weight, hand-scheduled for one x86 core with AVX2 + FMA:

    y[m, n] = act(x[m, k] @ w[k, n] + bias[n] + residual[m, n])

Packed weight: ``(ceil(n / 16), k, 16)``, column panels of 16 output columns (two AVX2 vectors),
each panel k rows of 16 contiguous floats, zero-padded past n. The kernel streams one panel
linearly for any m.

- m >= 2 (GEMM): a register tile of ``MR`` (6) rows x 16 columns, 12 accumulators; per step of k
  it broadcasts x[i, kk] for the 6 rows and loads the panel's 16 floats (6 cycles of FMAs per 2
  loads + 6 broadcasts: compute bound on znver3). Tasks (in parallel) are
  (column panel, block of ``ROW_TILES`` row tiles); inside a task the panel (k x 64 bytes) stays
  in L1/L2 while the row tiles go by. The rows tail (m % 6) is a separate, shorter tile; the
  columns tail (n % 16) computes on the zero padding and stores only its columns. The epilogue
  (bias, residual, relu/clip) is applied to the accumulators as they are stored. `Blocking`
  also offers panel groups per task and a rows-major task order (none measured faster here).
- m == 1 (GEMV, memory bound): each panel is streamed once, as ``GEMV_STREAMS`` contiguous
  k segments read side by side (one accumulator row each, summed at the end): two streams keep
  more cache-line misses in flight than one (the hardware prefetchers start over at each 4 KB
  page). With the weight from memory (`benchmarks/dense_matmul.py --gemv-streams 1 2 3 4 8`,
  znver3, 1 thread), two streams beat one on the 2-7 MB classifiers, three or four do about as
  well, eight less well; OFA's net gains in-model too (figures in docs/notebook/kernels.md,
  "GEMV weight streams").
  `gemv_body` also serves the conv kernel's 1x1 convs on 1x1 maps (squeeze-excite, OFA's
  1152 -> 1536 layer).

On AVX-512 (`cpu`, from `hwlat.kernels.cpu`) the GEMM's register tile is 12 rows x 32 columns
(24 of the 32 zmm registers) and its panels 32 columns wide (`register_tile`); the GEMV keeps
panels of 16. Pack the weight for the CPU the kernel is built for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import tirx
from tvm.script import tirx as T

from hwlat.kernels.cpu import AVX2, CpuInfo
from hwlat.kernels.dense.activation import activate, kernel_entry, residual_input
from hwlat.kernels.dense.spec import Epilogue, MatmulSpec

NR = 16  # output columns of a panel / register tile (two AVX2 vectors of 8 floats)
MR = 6  # rows of the GEMM register tile (6 x 2 = 12 accumulator registers of 16)
# AVX-512 (32 zmm registers): the GEMM tile is MR_512 rows x NR_512 columns (two zmm vectors),
# MR_512 * 2 accumulators; the GEMV keeps panels of NR columns (memory bound either way)
NR_512 = 32
MR_512 = 12
ROW_TILES = 8  # row tiles per parallel task (48 rows)
GEMV_STREAMS = 2  # contiguous k segments a panel of the m == 1 path is read in, side by side


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def supports(spec: MatmulSpec) -> str | None:
    """None when the kernel takes the spec, else why not."""
    if not isinstance(spec, MatmulSpec):
        return f"not a MatmulSpec: {type(spec).__name__}"
    dims = (spec.m, spec.k, spec.n)
    if any(not isinstance(d, int | np.integer) for d in dims):
        return f"matmul dimensions must be static integers, got {dims}"
    if any(int(d) < 1 for d in dims):
        return f"matmul dimensions must be >= 1, got {dims}"
    if int(spec.m) * int(spec.n) >= 2**31 or _ceil(int(spec.n), NR) * NR * int(spec.k) >= 2**31:
        return f"matmul too large for 32-bit indexing: {dims}"
    if not isinstance(spec.epilogue, Epilogue):
        return f"epilogue must be an Epilogue, got {type(spec.epilogue).__name__}"
    return None


def register_tile(spec: MatmulSpec, cpu: CpuInfo | None = None) -> tuple[int, int]:
    """(rows, columns) of the register tile the kernel uses on the CPU; the columns are also the
    packed weight's panel width."""
    if (cpu or AVX2).avx512 and spec.m >= 2:
        return MR_512, NR_512
    return MR, NR


def packed_weight_shape(spec: MatmulSpec, cpu: CpuInfo | None = None) -> tuple[int, int, int]:
    nr = register_tile(spec, cpu)[1]
    return (_ceil(spec.n, nr), spec.k, nr)


def pack_weight(spec: MatmulSpec, w: np.ndarray, cpu: CpuInfo | None = None) -> np.ndarray:
    """w (k, n) -> (ceil(n / nr), k, nr), zero-padded past n; nr 16 (AVX2, and every GEMV) or
    32 (GEMMs on AVX-512)."""
    w = np.asarray(w, np.float32)
    if w.shape != spec.w_shape:
        raise ValueError(f"weight shape {w.shape} != {spec.w_shape}")
    panels, k, nr = packed_weight_shape(spec, cpu)
    padded = np.zeros((k, panels * nr), np.float32)
    padded[:, :spec.n] = w
    return np.ascontiguousarray(padded.reshape(k, panels, nr).transpose(1, 0, 2))


def _finish(v, ep, bias, residual, i, j):
    """The epilogue of one output value (PrimExprs built while the script is parsed)."""
    if ep.bias:
        v = v + bias[j]
    if ep.residual:
        v = residual_input(v, ep) + residual[i, j]
    return activate(v, ep)


@dataclass(frozen=True)
class Blocking:
    """Loop blocking of the GEMM path. A parallel task is (block of `row_tiles` row tiles, group
    of `panel_group` column panels), ordered rows-major (`rows_outer`) or panels-major; inside a
    task each row tile sweeps the group's panels (its x rows stay in L1 across them), the group's
    panels staying in L1/L2 across the row tiles. The default (one panel per task, panels-major)
    measured as fast as any other here; k blocking measured no faster for k up to 3072 (the
    hardware prefetchers keep the 6 x rows and the panel streaming), so there is none."""

    row_tiles: int = ROW_TILES
    panel_group: int = 1
    rows_outer: bool = False

    def __post_init__(self):
        if self.row_tiles < 1 or self.panel_group < 1:
            raise ValueError(f"bad blocking {self}")


def _tree_sum(acc, rows: int, j):
    """acc[0, j] + ... + acc[rows - 1, j] as a balanced tree (a PrimExpr)."""
    terms = [acc[r, j] for r in range(rows)]
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i]
                 for i in range(0, len(terms), 2)]
    return terms[0]


def primfunc(spec: MatmulSpec, blocking: Blocking | None = None,
             streams: int = GEMV_STREAMS, cpu: CpuInfo | None = None) -> tirx.PrimFunc:
    """PrimFunc(x (m, k), packed w, [bias (n,)], [residual (m, n)], y (m, n)); `blocking`
    overrides the GEMM path's default loop blocking, `streams` the GEMV's weight streams; `cpu`
    (default: AVX2) sizes the register tile (`register_tile`): pack the weight for the same CPU."""
    reason = supports(spec)
    if reason is not None:
        raise ValueError(f"hwlat dense matmul: {reason}")
    if spec.m == 1:
        return _gemv(spec, streams)
    return _gemm(spec, blocking, *register_tile(spec, cpu))


def _gemm(spec: MatmulSpec, blocking: Blocking | None = None, MR: int = MR,
          NR: int = NR) -> tirx.PrimFunc:
    M, K, N = int(spec.m), int(spec.k), int(spec.n)
    bl = blocking or Blocking()
    ep = spec.epilogue
    NP = _ceil(N, NR)
    NT = N - (NP - 1) * NR  # columns of the last panel
    MT = M // MR  # full row tiles
    RT = M - MT * MR  # rows of the tail tile (0: none)
    TB = bl.row_tiles
    NRB = max(1, _ceil(MT, TB))  # row blocks (the tail tile joins the last one)
    PG = min(bl.panel_group, NP)
    NPG = _ceil(NP, PG)  # panel groups
    fin = _finish

    # (TVMScript macro calls are slow to parse (each walks the Python stack): few, not nested)
    @T.macro
    def tile(x, wp, bias, residual, y, acc, p, i0, rows):
        for ii in T.unroll(rows):
            for jj in T.vectorized(NR):
                acc[ii, jj] = T.float32(0)
        for kk in range(K):
            for ii in T.unroll(rows):
                for jj in T.vectorized(NR):
                    acc[ii, jj] = acc[ii, jj] + x[i0 + ii, kk] * wp[p, kk, jj]
        if NT == NR or p < NP - 1:
            for ii in T.unroll(rows):
                for jj in T.vectorized(NR):
                    y[i0 + ii, p * NR + jj] = fin(acc[ii, jj], ep, bias, residual, i0 + ii,
                                                  p * NR + jj)
        else:
            for ii in T.unroll(rows):
                for jj in T.vectorized(NT):
                    y[i0 + ii, p * NR + jj] = fin(acc[ii, jj], ep, bias, residual, i0 + ii,
                                                  p * NR + jj)

    @T.macro
    def body(x, wp, bias, residual, y):
        for task in T.parallel(NRB * NPG):
            acc = T.alloc_buffer((MR, NR), "float32", scope="local")
            rb = task // NPG if bl.rows_outer else task % NRB
            pg = task % NPG if bl.rows_outer else task // NRB
            for it in range(T.min(TB, MT - rb * TB)):
                for pp in range(T.min(PG, NP - pg * PG)):
                    tile(x, wp, bias, residual, y, acc, pg * PG + pp, (rb * TB + it) * MR, MR)
            if RT > 0 and rb == NRB - 1:
                for pp in range(T.min(PG, NP - pg * PG)):
                    tile(x, wp, bias, residual, y, acc, pg * PG + pp, MT * MR, RT)

    return kernel_entry(body, spec.x_shape, (NP, K, NR), spec.n, spec.y_shape,
                        spec.epilogue)


def gemv_body(K: int, N: int, ep: Epilogue, streams: int = GEMV_STREAMS):
    """Macro body(x (1, K), packed w (ceil(N / 16), K, 16), bias (N,), residual (1, N) or None,
    y (1, N)): y = act(x @ w + bias + residual), each panel read as `streams` contiguous k
    segments side by side (the last K % streams rows one to an accumulator at the end)."""
    NP = _ceil(N, NR)
    NT = N - (NP - 1) * NR
    S = max(1, min(streams, K))
    KS = K // S
    KR = K - KS * S
    fin = _finish

    @T.macro
    def body(x, wp, bias, residual, y):
        for p in T.parallel(NP):
            acc = T.alloc_buffer((S, NR), "float32", scope="local")
            for s in T.unroll(S):
                for jj in T.vectorized(NR):
                    acc[s, jj] = T.float32(0)
            for kq in range(KS):
                for s in T.unroll(S):
                    for jj in T.vectorized(NR):
                        acc[s, jj] = acc[s, jj] + x[0, s * KS + kq] * wp[p, s * KS + kq, jj]
            for s in T.unroll(KR):
                for jj in T.vectorized(NR):
                    acc[s, jj] = acc[s, jj] + x[0, KS * S + s] * wp[p, KS * S + s, jj]
            if NT == NR or p < NP - 1:
                for jj in T.vectorized(NR):
                    y[0, p * NR + jj] = fin(_tree_sum(acc, S, jj), ep, bias, residual, 0,
                                            p * NR + jj)
            else:
                for jj in T.vectorized(NT):
                    y[0, p * NR + jj] = fin(_tree_sum(acc, S, jj), ep, bias, residual, 0,
                                            p * NR + jj)

    return body


def _gemv(spec: MatmulSpec, streams: int) -> tirx.PrimFunc:
    if streams < 1:
        raise ValueError(f"hwlat dense matmul: streams must be >= 1, got {streams}")
    return kernel_entry(gemv_body(int(spec.k), int(spec.n), spec.epilogue, streams), spec.x_shape,
                        (_ceil(int(spec.n), NR), int(spec.k), NR), spec.n, spec.y_shape,
                        spec.epilogue)
