"""Depthwise conv2d (groups == cin == cout, NCHW input, OIHW weight (C, 1, kh, kw)) as one
hand-scheduled TIR PrimFunc, with the epilogue (bias, residual, relu/clip) fused into the store.

    y[n, c, oh, ow] = act(sum_{ky, kx} xpad[n, c, oh*sh + ky, ow*sw + kx] * w[c, ky, kx]
                          + bias[c] + residual[n, c, oh, ow])

Any kernel size, stride and (non-negative) padding; dilation 1; channel multiplier 1.

Packed weight: (C, kh * kw), the taps of each channel in row-major (ky, kx) order (the OIHW
weight with its unit axis dropped).

Schedule (memory/latency bound: kh*kw multiply-adds per output): parallel over tasks of
consecutive (batch, channel) planes (at least TASK_OUTPUTS outputs a task, unless that leaves
fewer than MIN_TASKS tasks); each task owns a scratch, zeroed once, that holds one zero-padded
input plane, split by columns into `sw` phases (phase p, column q holds padded column
q*sw + p), so that every tap of a tile of output columns is one contiguous vector load: tap
(ky, kx) of output (oh, ow) is scratch[kx % sw, oh*sh + ky, ow + kx // sw]. The scratch is as
wide and as tall as the output rounded up to whole tiles (plus the taps' reach), so the hot loop
has no bounds checks; only the padding border, which no plane writes, stays zero between
planes. Per plane and row tile: the input rows that tile is the first to read are copied into
the scratch (so they are still in L1 when read; narrow stride-1 rows as one vector store each),
then each rows x cols register tile of outputs
(cols a multiple of the vector lanes; `Tile`, `default_tile`) accumulates all taps with vector FMAs,
input rows streamed (each vector loaded once, multiplied into every output row that reads it,
the taps broadcast from the packed weight), and is stored through the epilogue: rows past the
output are skipped, and the last, partial column tile stores whole 8-lane vectors then single
lanes. On AVX-512 (`default_tile(spec, cpu)`) the tile's vectors are 16 lanes wide (8 where the
output has at most 8 columns) and its loop runs by kernel column, that column's kh taps
broadcast into registers once a tile (`Tile.held_taps`), so that no multiply-add loads a tap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import tirx
from tvm.script import tirx as T

from hwlat.kernels.cpu import AVX2, CpuInfo
from hwlat.kernels.dense.activation import activate, epilogue_params, residual_input
from hwlat.kernels.dense.spec import Conv2dSpec

VECTOR_LANES = 8  # float32 lanes of an AVX2 register
AVX512_ACC = 14  # accumulator registers an AVX-512 tile may take (more measured slower)
TILE_CYCLES = 12  # the model's fixed cost of one register tile (stores, loop, epilogue)
TASK_OUTPUTS = 8192  # outputs a parallel task should hold at least (planes are grouped)
MIN_TASKS = 16  # ... unless that leaves fewer tasks than this


@dataclass(frozen=True)
class Tile:
    rows: int  # output rows of one register tile
    cols: int  # output columns of one register tile (a multiple of lanes)
    lanes: int = VECTOR_LANES  # float32 lanes of one vector: 8 (AVX2) or 16 (AVX-512)
    # taps held in registers: each kernel column's kh taps broadcast into kh vector registers
    # once a tile, the input rows walked under it (else each tap is broadcast from memory at
    # each multiply-add; the taps do not fit in AVX2's 16 registers beside the accumulators)
    held_taps: bool = False


def supports(spec: Conv2dSpec) -> str | None:
    """None when the kernel takes the spec, else the reason."""
    if not spec.depthwise:
        return (f"not a depthwise conv (groups {spec.groups}, cin {spec.cin}, cout {spec.cout}; "
                "needs groups == cin == cout > 1)")
    if spec.dilation != (1, 1):
        return f"dilation {spec.dilation} is not supported (only (1, 1))"
    if any(p < 0 for p in spec.padding):
        return f"negative padding {spec.padding} is not supported"
    if min(spec.kernel) < 1 or min(spec.stride) < 1:
        return f"bad kernel {spec.kernel} or stride {spec.stride}"
    if spec.batch < 1 or spec.height < 1 or spec.width < 1:
        return f"empty input {spec.x_shape}"
    if spec.out_height < 1 or spec.out_width < 1:
        return f"empty output {spec.y_shape}"
    return None


def packed_weight_shape(spec: Conv2dSpec) -> tuple[int, int]:
    """(C, kh * kw)."""
    return (spec.cout, spec.kernel[0] * spec.kernel[1])


def pack_weight(spec: Conv2dSpec, w: np.ndarray) -> np.ndarray:
    """The OIHW weight (C, 1, kh, kw) as (C, kh * kw), float32, C-contiguous."""
    w = np.asarray(w, np.float32)
    if w.shape != spec.w_shape:
        raise ValueError(f"depthwise weight of shape {w.shape}, expected {spec.w_shape}")
    return np.ascontiguousarray(w.reshape(packed_weight_shape(spec)))


def default_tile(spec: Conv2dSpec, cpu: CpuInfo | None = None) -> Tile:
    """AVX2 (the default): 8 columns for kernels up to 3x3 (the taps fit in registers beside the
    accumulators), 16 for larger ones (whose taps are reloaded anyway) when the output is wider
    than 8; the rows (at most 8 accumulator registers) that waste the fewest rows past the
    output, 4 if tied. AVX-512: `_avx512_tile`."""
    if (cpu or AVX2).avx512:
        return _avx512_tile(spec)
    small = spec.kernel[0] * spec.kernel[1] <= 9 or spec.out_width <= VECTOR_LANES
    cols = VECTOR_LANES if small else 2 * VECTOR_LANES
    oh = spec.out_height
    rows = min((r for r in (4, 3, 5, 6, 7, 2) if r * cols <= 8 * VECTOR_LANES),
               key=lambda r: _ceil(oh, r) * r - oh)
    return Tile(min(rows, oh), cols)


def _avx512_tile(spec: Conv2dSpec) -> Tile:
    """Taps held in registers; 16-lane vectors where the output is wider than 8 columns (8 lanes
    for narrower ones: a 16-lane multiply-add costs the same and would compute 9+ dropped
    columns); the tile (at most AVX512_ACC accumulators) with the fewest cycles by a model of
    the hot loop: multiply-adds (two a cycle) against loads (two a cycle: one input vector a
    padded row, tap column and vector, shared by the rows that read it; the taps once a tile),
    plus a fixed cost a tile, over the tiles the output needs. Kernels of up to 9 taps on
    outputs of 28+ rows (memory bound) take at most 4 accumulators: taller tiles measured up to
    15 % slower there (figures in docs/notebook/compile.md)."""
    kh, kw = spec.kernel
    sh = spec.stride[0]
    oh, ow = spec.out_height, spec.out_width
    lanes = VECTOR_LANES if ow <= VECTOR_LANES else 2 * VECTOR_LANES
    most = 4 if kh * kw <= 9 and oh >= 28 else AVX512_ACC  # accumulators
    best = None
    for nv in range(1, 5):
        if nv > 1 and (nv - 1) * lanes >= ow:
            break
        for r in range(1, min(oh, most // nv) + 1):
            ni = (r - 1) * sh + kh
            fma, loads = r * nv * kh * kw, ni * nv * kw + kh * kw
            cycles = _ceil(oh, r) * _ceil(ow, nv * lanes) * (max(fma, loads) / 2 + TILE_CYCLES)
            if best is None or cycles < best[0]:
                best = (cycles, Tile(r, nv * lanes, lanes, True))
    return best[1]


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def primfunc(spec: Conv2dSpec, tile: Tile | None = None,
             cpu: CpuInfo | None = None) -> tirx.PrimFunc:
    """PrimFunc(x, packed w, [bias], [residual], y) for one spec (ValueError when `supports`
    refuses it); `tile` overrides `default_tile(spec, cpu)`."""
    reason = supports(spec)
    if reason is not None:
        raise ValueError(f"depthwise conv2d: {reason}")
    tile = tile or default_tile(spec, cpu)
    ep = spec.epilogue
    N, C, H, W = spec.x_shape
    OH, OW = spec.out_height, spec.out_width
    KH, KW = spec.kernel
    SH, SW = spec.stride
    PT, PL = spec.padding[0], spec.padding[1]
    R, V, L = tile.rows, tile.cols, tile.lanes
    if L not in (VECTOR_LANES, 2 * VECTOR_LANES) or V % L or R < 1 or V < 1:
        raise ValueError(f"bad depthwise tile {tile}: lanes 8 or 16, cols a multiple of lanes")
    NV = V // L
    HELD = tile.held_taps
    S = min(L, VECTOR_LANES)  # lanes of one store of the last, partial column tile
    NRB = _ceil(OH, R)  # row tiles (the last may reach past OH: those rows are not stored)
    NCB, CB, CT = _ceil(OW, V), OW // V, OW % V  # column tiles, whole ones, columns left
    HS = (NRB * R - 1) * SH + KH  # padded rows read
    WQ = NCB * V + (KW - 1) // SW  # columns of each phase
    ROWS_IN = max(0, min(H, HS - PT))  # input rows that land in the scratch
    # narrow stride-1 rows are copied as one vector store each: the loop over a short row took
    # about half the kernel's time at 28x28 and 14x14; rows of 64 and more, and strided rows,
    # keep the loop (faster there; figures in docs/notebook/compile.md)
    VEC_COPY = SW == 1 and W < 64
    NI = (R - 1) * SH + KH  # padded rows one row tile reads
    NC = N * C
    per_task = max(1, min(_ceil(TASK_OUTPUTS, OH * OW), _ceil(NC, MIN_TASKS)))
    TASKS = _ceil(NC, per_task)
    has_bias, has_res = ep.bias, ep.residual
    f32 = "float32"
    x_shape, w_shape, y_shape = spec.x_shape, packed_weight_shape(spec), spec.y_shape

    def finish(v, n, c, oh, ow, b, res):
        if has_bias:
            v = v + b[c]
        if has_res:
            v = residual_input(v, ep) + res[n, c, oh, ow]
        return activate(v, ep)

    def rows_end(rb):  # padded rows read by the first rb row tiles
        return tirx.Select(rb > 0, tirx.min(HS, (rb * R - 1) * SH + KH), 0)

    # all five parameters here; those the epilogue does not use are dropped below (the body
    # does not read them). No T.macro: each macro call costs TVMScript a walk of the stack.
    @T.prim_func(s_tir=True, private=True)
    def dw(x: T.Buffer(x_shape, f32), w: T.Buffer(w_shape, f32), b: T.Buffer((C,), f32),
           res: T.Buffer(y_shape, f32), y: T.Buffer(y_shape, f32)):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        for t in T.parallel(TASKS):
            sc = T.alloc_buffer((SW, HS, WQ), f32)
            for p in range(SW):
                for i in range(HS):
                    for q in T.vectorized(WQ):
                        sc[p, i, q] = T.float32(0)
            for pl in range(T.min(per_task, NC - t * per_task)):
                for rb in range(NRB):
                    # the input rows this row tile is the first to read
                    if VEC_COPY:  # one vector store per row
                        for ih in range(T.max(0, rows_end(rb) - PT),
                                        T.min(ROWS_IN, rows_end(rb + 1) - PT)):
                            for j in T.vectorized(W):
                                sc[0, ih + PT, PL + j] = x[(t * per_task + pl) // C,
                                                           (t * per_task + pl) % C, ih, j]
                    else:  # by phase, a loop LLVM vectorises
                        for p in T.unroll(SW):
                            for ih in range(T.max(0, rows_end(rb) - PT),
                                            T.min(ROWS_IN, rows_end(rb + 1) - PT)):
                                for q in range(T.max(0, (PL - p + SW - 1) // SW),
                                               T.min(WQ, (W - 1 + PL - p) // SW + 1)):
                                    sc[p, ih + PT, q] = x[(t * per_task + pl) // C,
                                                          (t * per_task + pl) % C, ih,
                                                          q * SW + p - PL]
                    for cb in range(NCB):
                        # R x V outputs at (rb*R, cb*V); each vector of padded row i is
                        # loaded once and multiplies into every output row r that reads it
                        acc = T.alloc_buffer((R, NV, L), f32)
                        xin = T.alloc_buffer((L,), f32)
                        wv = T.alloc_buffer((KH, L), f32)
                        for r in T.unroll(R):
                            for u in T.unroll(NV):
                                for j in T.vectorized(L):
                                    acc[r, u, j] = T.float32(0)
                        if HELD:  # by kernel column: its kh taps in registers, then the rows
                            for kx in T.unroll(KW):
                                for ky in T.unroll(KH):
                                    for j in T.vectorized(L):
                                        wv[ky, j] = w[(t * per_task + pl) % C, ky * KW + kx]
                                for i in T.unroll(NI):
                                    for u in T.unroll(NV):
                                        for j in T.vectorized(L):
                                            xin[j] = sc[kx % SW, rb * R * SH + i,
                                                        cb * V + kx // SW + u * L + j]
                                        for r in T.unroll(R):
                                            if i - r * SH >= 0 and i - r * SH < KH:
                                                for j in T.vectorized(L):
                                                    acc[r, u, j] = acc[r, u, j] + \
                                                        xin[j] * wv[i - r * SH, j]
                        else:
                            for i in T.unroll(NI):
                                for kx in T.unroll(KW):
                                    for u in T.unroll(NV):
                                        for j in T.vectorized(L):
                                            xin[j] = sc[kx % SW, rb * R * SH + i,
                                                        cb * V + kx // SW + u * L + j]
                                        for r in T.unroll(R):
                                            if i - r * SH >= 0 and i - r * SH < KH:
                                                for j in T.vectorized(L):
                                                    acc[r, u, j] = acc[r, u, j] + xin[j] * w[
                                                        (t * per_task + pl) % C,
                                                        (i - r * SH) * KW + kx]
                        for r in T.unroll(R):
                            if rb * R + r < OH:
                                if cb < CB:
                                    for u in T.unroll(NV):
                                        for j in T.vectorized(L):
                                            y[(t * per_task + pl) // C, (t * per_task + pl) % C,
                                              rb * R + r, cb * V + u * L + j] = finish(
                                                acc[r, u, j], (t * per_task + pl) // C,
                                                (t * per_task + pl) % C, rb * R + r,
                                                cb * V + u * L + j, b, res)
                                else:  # the last, partial column tile: whole stores of S
                                    for h in T.unroll(V // S):  # lanes, then the lanes left
                                        if h * S + S <= CT:
                                            for j in T.vectorized(S):
                                                y[(t * per_task + pl) // C,
                                                  (t * per_task + pl) % C,
                                                  rb * R + r, CB * V + h * S + j] = finish(
                                                    acc[r, (h * S + j) // L, (h * S + j) % L],
                                                    (t * per_task + pl) // C,
                                                    (t * per_task + pl) % C, rb * R + r,
                                                    CB * V + h * S + j, b, res)
                                        for j in T.unroll(S):
                                            if h * S + j < CT and h * S + S > CT:
                                                y[(t * per_task + pl) // C,
                                                  (t * per_task + pl) % C,
                                                  rb * R + r, CB * V + h * S + j] = finish(
                                                    acc[r, (h * S + j) // L, (h * S + j) % L],
                                                    (t * per_task + pl) // C,
                                                    (t * per_task + pl) % C, rb * R + r,
                                                    CB * V + h * S + j, b, res)

    return epilogue_params(dw, ep)
