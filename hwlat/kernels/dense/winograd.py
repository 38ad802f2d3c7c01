"""Winograd F(2x2, 3x3) dense conv2d (3x3, stride 1, dilation 1, groups 1; NCHW input, OIHW
weight, batch >= 1, any padding) as a hand-scheduled TIR PrimFunc for x86 cores with AVX2 + FMA,
the epilogue y = act(conv + bias + residual) fused into the output transform.

Each 2x2 block of outputs ("tile") reads a 4x4 input patch d; with U = G g G^T (weight, per
(cout, cin)) and V = B^T d B (input, per (cin, tile)), the tile is Y = A^T (sum over cin of
U (.) V) A: 16 independent GEMMs M[xi] = U[xi] (cout x cin) @ V[xi] (cin x tiles), xi = 4 a + b,
2.25x fewer multiplies than the direct conv.

1. Input transform (parallel over (image, cin)): the zero-padded input plane is split into even
   and odd columns (so that a tile's 4 columns are two contiguous vector loads of each phase),
   then V[xi, cin, tile] is computed vectorised along a row of tiles. Tiles are numbered
   (image, tile row, tile column) and padded with zeros to a multiple of 16.
2. GEMM + output transform (parallel over (output-channel group, tile block) tasks, groups of
   up to 4 blocks of 6 channels whose U fits in 256 KB of L2, reused across the tile blocks): for
   a block of 16 tiles, each of the 16 GEMMs of each channel block is a 6 x 16 register tile (6
   weights broadcast x two 8-float vectors of tiles, 12 accumulators, like matmul.py) over cin
   (the V panel of xi stays in L1 across the group's blocks), kept in a scratch; then
   Y = A^T M A (vectorised over the tiles), and the epilogue is applied as the 2x2 outputs are
   stored (scalar stores; the last tile row / column clipped where OH / OW is odd).

On resnet18's 3x3 stride-1 convs (AMD EPYC znver3, 1 thread, benchmarks/dense_winograd.py) it
is faster than onnxruntime's one-node conv and than the direct kernel; the figures are in
BENCHMARKS.md and docs/notebook/kernels.md. Room is left: the GEMMs are held back by the V
panels, strided by the tile count (512x7x7 also streams its 16 MB U from memory), and the input
transform is a sizeable part of the 64x56x56 conv's time.

Packed weight: U as (16, ceil(cout / 6), cin, 6) (xi, output-channel block, cin, channel in the
block), zero past cout. `preferred(spec)` says whether it beats the direct kernel (conv.py) here.
"""

from __future__ import annotations

import numpy as np
from tvm import tirx
from tvm.script import tirx as T

from hwlat.kernels.cpu import AVX2, CpuInfo
from hwlat.kernels.dense.activation import activate, kernel_entry, residual_input
from hwlat.kernels.dense.spec import Conv2dSpec, Epilogue

MR = 6  # output channels of the register tile (broadcast)
NR = 16  # tiles of the register tile (two AVX2 vectors)
XI = 16  # transformed positions of a 4x4 tile
CBG_MAX = 4  # output-channel blocks per task at most (their 16 GEMM results stay in L1)
L2_U = 256 * 1024  # bytes of U a task keeps in L2

_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64)
_BT = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1))
_AT = ((1, 1, 1, 0), (0, 1, -1, -1))


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def supports(spec: Conv2dSpec) -> str | None:
    if not isinstance(spec, Conv2dSpec):
        return f"not a Conv2dSpec: {type(spec).__name__}"
    if spec.groups != 1:
        return f"groups={spec.groups}: Winograd takes groups == 1 only"
    if tuple(spec.kernel) != (3, 3):
        return f"kernel {spec.kernel}: Winograd F(2x2, 3x3) takes 3x3 kernels only"
    if tuple(spec.stride) != (1, 1):
        return f"stride {spec.stride}: Winograd takes stride 1 only"
    if tuple(spec.dilation) != (1, 1):
        return f"dilation {spec.dilation}: Winograd takes dilation 1 only"
    if spec.batch < 1 or spec.cin < 1 or spec.cout < 1:
        return "batch, cin and cout must be >= 1"
    if min(spec.padding) < 0:
        return "negative padding"
    if spec.out_height < 1 or spec.out_width < 1:
        return f"empty output {spec.y_shape}"
    if XI * spec.cin * _tiles(spec)[3] >= 2**31 or XI * _ceil(spec.cout, MR) * MR * spec.cin >= 2**31:
        return "too large for 32-bit indexing"
    return None


def preferred(spec: Conv2dSpec, cpu: CpuInfo | None = None) -> bool:
    """Whether this kernel should be used over the direct one (conv.py) for the spec: measured
    faster on AVX2 (AMD EPYC znver3, 1 thread) where the GEMMs are long enough (cin and cout
    >= 32) and the tile padding small. Never on AVX-512: there the direct kernel's 12 x 32
    register tiles took 0.70-1.00x this kernel's time on resnet18's 3x3 stride-1 convs (Xeon
    Sapphire Rapids, 1 thread, interleaved calls; 7x7 and 56x56 maps 0.70x and 0.76x, 14x14
    and 28x28 1.00x and 0.99x)."""
    if supports(spec) is not None or (cpu or AVX2).avx512:
        return False
    _, _, nt, tp = _tiles(spec)
    return spec.cin >= 32 and spec.cout >= 32 and tp <= 1.34 * nt


def _tiles(spec: Conv2dSpec) -> tuple[int, int, int, int]:
    """Tile rows and columns per image, tiles in all, tiles padded to a multiple of NR."""
    th, tw = _ceil(spec.out_height, 2), _ceil(spec.out_width, 2)
    nt = spec.batch * th * tw
    return th, tw, nt, _ceil(nt, NR) * NR


def packed_weight_shape(spec: Conv2dSpec) -> tuple[int, int, int, int]:
    return (XI, _ceil(spec.cout, MR), spec.cin, MR)


def pack_weight(spec: Conv2dSpec, w: np.ndarray) -> np.ndarray:
    """OIHW -> U = G g G^T as (16, ceil(cout / 6), cin, 6), zero rows past cout."""
    w = np.asarray(w, np.float32)
    if w.shape != spec.w_shape:
        raise ValueError(f"weight shape {w.shape}, expected {spec.w_shape}")
    _, ncb, cin, _ = packed_weight_shape(spec)
    u = np.einsum("ai,ocij,bj->abco", _G, w.astype(np.float64), _G)  # (4, 4, cin, cout)
    up = np.zeros((4, 4, cin, ncb * MR), np.float64)
    up[..., :spec.cout] = u
    up = up.reshape(XI, cin, ncb, MR).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(up, dtype=np.float32)


def _vin(pe, po, r0, tx, xi: int):
    """V[xi] = (B^T d B)[a, b] of the tile whose patch starts at row r0, column 2 tx, from the
    even (pe) and odd (po) column phases of the padded plane."""
    a, b = divmod(xi, 4)
    v = None
    for i in range(4):
        for j in range(4):
            c = _BT[a][i] * _BT[b][j]
            if c == 0:
                continue
            term = (pe if j % 2 == 0 else po)[r0 + i, tx + j // 2]
            if v is None:
                v = term if c > 0 else -term
            else:
                v = v + term if c > 0 else v - term
    return v


def _yout(ml, r, j, dy: int, dx: int):
    """(A^T M A)[dy, dx] from the 16 GEMM results ml[xi, r, j]."""
    v = None
    for a in range(4):
        for b in range(4):
            c = _AT[dy][a] * _AT[dx][b]
            if c == 0:
                continue
            term = ml[a * 4 + b, r, j]
            if v is None:
                v = term if c > 0 else -term
            else:
                v = v + term if c > 0 else v - term
    return v


def _fin(v, ep: Epilogue, bias, res, n, co, oh, ow):
    if ep.bias:
        v = v + bias[co]
    if ep.residual:
        v = residual_input(v, ep) + res[n, co, oh, ow]
    return activate(v, ep)


def primfunc(spec: Conv2dSpec, cbg: int | None = None) -> tirx.PrimFunc:
    """PrimFunc(x, packed U, [bias], [residual], y). `cbg`: output-channel blocks (of 6) per
    parallel task (default: from the L2 size)."""
    reason = supports(spec)
    if reason is not None:
        raise ValueError(f"winograd conv2d kernel does not support {spec}: {reason}")
    N, C, H, W = spec.x_shape
    CO = spec.cout
    OH, OW = spec.out_height, spec.out_width
    pt, pl = spec.padding[0], spec.padding[1]
    th, tw, NT, TP = _tiles(spec)
    THW = th * tw
    NTB = TP // NR
    NCB = _ceil(CO, MR)
    ragged = CO % MR != 0
    # output-channel blocks per task: their U (16 x cin x 6 floats each) stays in L2 across the
    # tile blocks, each V panel (cin x 16 tiles) in L1 across them
    CBG = min(NCB, cbg or max(1, min(CBG_MAX, L2_U // (XI * C * MR * 4))))
    NCG = _ceil(NCB, CBG)
    PH = 2 * th + 2  # padded plane rows a tile row's patches read
    PW = tw + 1  # columns of each column phase
    TWID = _ceil(max(2 * PW, pl + W), 8) * 8
    odd_h, odd_w = OH % 2 == 1, OW % 2 == 1
    ep = spec.epilogue
    vin, yout, fin = _vin, _yout, _fin

    @T.macro
    def body(x, u, bias, res, y):
        v = T.alloc_buffer((XI, C, TP), "float32")
        for task in T.parallel(N * C):
            n = task // C
            ci = task % C
            tmp = T.alloc_buffer((TWID,), "float32")
            pe = T.alloc_buffer((PH, PW), "float32")
            po = T.alloc_buffer((PH, PW), "float32")
            for e in T.vectorized(TWID):
                tmp[e] = T.float32(0)
            for r in range(PH):
                if r >= pt and r < pt + H:
                    for j in T.vectorized(W):
                        tmp[pl + j] = x[n, ci, r - pt, j]
                    for k in T.vectorized(PW):
                        pe[r, k] = tmp[2 * k]
                    for k in T.vectorized(PW):
                        po[r, k] = tmp[2 * k + 1]
                else:
                    for k in T.vectorized(PW):
                        pe[r, k] = T.float32(0)
                    for k in T.vectorized(PW):
                        po[r, k] = T.float32(0)
            for ty in range(th):
                for tx in T.vectorized(tw):
                    v[0, ci, n * THW + ty * tw + tx] = vin(pe, po, 2 * ty, tx, 0)
                    v[1, ci, n * THW + ty * tw + tx] = vin(pe, po, 2 * ty, tx, 1)
                    v[2, ci, n * THW + ty * tw + tx] = vin(pe, po, 2 * ty, tx, 2)
                    v[3, ci, n * THW + ty * tw + tx] = vin(pe, po, 2 * ty, tx, 3)
                    v[4, ci, n * THW + ty * tw + tx] = vin(pe, po, 2 * ty, tx, 4)
                    v[5, ci, n * THW + ty * tw + tx] = vin(pe, po, 2 * ty, tx, 5)
                    v[6, ci, n * THW + ty * tw + tx] = vin(pe, po, 2 * ty, tx, 6)
                    v[7, ci, n * THW + ty * tw + tx] = vin(pe, po, 2 * ty, tx, 7)
                    v[8, ci, n * THW + ty * tw + tx] = vin(pe, po, 2 * ty, tx, 8)
                    v[9, ci, n * THW + ty * tw + tx] = vin(pe, po, 2 * ty, tx, 9)
                    v[10, ci, n * THW + ty * tw + tx] = vin(pe, po, 2 * ty, tx, 10)
                    v[11, ci, n * THW + ty * tw + tx] = vin(pe, po, 2 * ty, tx, 11)
                    v[12, ci, n * THW + ty * tw + tx] = vin(pe, po, 2 * ty, tx, 12)
                    v[13, ci, n * THW + ty * tw + tx] = vin(pe, po, 2 * ty, tx, 13)
                    v[14, ci, n * THW + ty * tw + tx] = vin(pe, po, 2 * ty, tx, 14)
                    v[15, ci, n * THW + ty * tw + tx] = vin(pe, po, 2 * ty, tx, 15)
            if TP > NT and n == N - 1:
                for xi in range(XI):
                    for j in range(TP - NT):
                        v[xi, ci, NT + j] = T.float32(0)
        for task in T.parallel(NTB * NCG):
            acc = T.alloc_buffer((MR, NR), "float32", scope="local")
            ml = T.alloc_buffer((XI, CBG * MR, NR), "float32")
            yl = T.alloc_buffer((4, MR, NR), "float32")
            cg = task // NTB
            tb = task % NTB
            for xi in range(XI):
                for cb in range(cg * CBG, T.min(NCB, cg * CBG + CBG)):
                    for r in T.unroll(MR):
                        for j in T.vectorized(NR):
                            acc[r, j] = T.float32(0)
                    for ci in range(C):
                        for r in T.unroll(MR):
                            for j in T.vectorized(NR):
                                acc[r, j] = acc[r, j] + u[xi, cb, ci, r] * v[xi, ci, tb * NR + j]
                    for r in T.unroll(MR):
                        for j in T.vectorized(NR):
                            ml[xi, (cb - cg * CBG) * MR + r, j] = acc[r, j]
            for cb in range(cg * CBG, T.min(NCB, cg * CBG + CBG)):
                for r in T.unroll(MR):
                    for j in T.vectorized(NR):
                        yl[0, r, j] = yout(ml, (cb - cg * CBG) * MR + r, j, 0, 0)
                        yl[1, r, j] = yout(ml, (cb - cg * CBG) * MR + r, j, 0, 1)
                        yl[2, r, j] = yout(ml, (cb - cg * CBG) * MR + r, j, 1, 0)
                        yl[3, r, j] = yout(ml, (cb - cg * CBG) * MR + r, j, 1, 1)
                for j in range(T.min(NR, NT - tb * NR)):
                    n = (tb * NR + j) // THW
                    oh = (tb * NR + j) % THW // tw * 2
                    ow = (tb * NR + j) % tw * 2
                    for r in T.unroll(MR):
                        if not ragged or cb * MR + r < CO:
                            y[n, cb * MR + r, oh, ow] = fin(yl[0, r, j], ep, bias, res, n, cb * MR + r, oh, ow)
                            if not odd_w or ow + 1 < OW:
                                y[n, cb * MR + r, oh, ow + 1] = fin(yl[1, r, j], ep, bias, res, n,
                                                                    cb * MR + r, oh, ow + 1)
                            if not odd_h or oh + 1 < OH:
                                y[n, cb * MR + r, oh + 1, ow] = fin(yl[2, r, j], ep, bias, res, n,
                                                                    cb * MR + r, oh + 1, ow)
                                if not odd_w or ow + 1 < OW:
                                    y[n, cb * MR + r, oh + 1, ow + 1] = fin(yl[3, r, j], ep, bias, res, n,
                                                                            cb * MR + r, oh + 1, ow + 1)

    return kernel_entry(body, spec.x_shape, packed_weight_shape(spec), spec.cout, spec.y_shape,
                        spec.epilogue)
