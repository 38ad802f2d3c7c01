"""A 1x1 expand conv and the depthwise conv that reads its output, fused into one hand-scheduled
TIR PrimFunc (the first half of a MobileNet inverted-residual block), so that the expanded
tensor is never written to memory:

    m[n, c, h, w] = act1(sum_k x[n, k, h, w] * w1[c, k] + b1[c])
    y[n, c, oh, ow] = act2(sum_{ky, kx} mpad[n, c, oh*sh + ky, ow*sw + kx] * w2[c, ky, kx] + b2[c])

(mpad: m zero-padded by the depthwise conv's padding). On large maps m is megabytes (72 x 112 x
112 floats in OFA's first stage: 3.6 MB), written by the expand conv and read back by the
depthwise conv; fused, each band of its rows lives in a per-task window in L1/L2 between being
computed and being read.

Both convs have a bias (ONNX's folded batch norms; the rewrite gives a zero one where there is
none) and no residual; the activations are any of activation.py's. The depthwise conv takes any
kernel size, stride and (non-negative) padding, dilation 1.

Packed weights: w1 as (ceil(cmid / G), cin, G) (G = 6 mid channels a block, the broadcasts of
one input channel sequential); b1, w2 (as (cmid, kh * kw)) and b2 padded with zeros to whole
blocks (the padded channels are computed and never stored).

Schedule. Parallel over tasks of (image, set of channel blocks) (`ExpandDwSpec.tasks` sets an
image). Per task, the depthwise output is walked in row tiles of R rows (depthwise.py's tile),
which read NI = (R - 1) * sh + kh padded rows of m; the window holds those rows of every channel
of the task, split by columns into `sw` phases as in depthwise.py (phase p, column q holds
padded column q*sw + p, so every tap of a depthwise tile is one contiguous vector load). Per row
tile: the input rows it needs first are de-interleaved into phases once (xs, all cin channels:
the 1x1 conv is pointwise, so phase-split input gives phase-split output); then per channel
block, the rows the previous tile shared with this one (kh - sh) move to the window's top, the
new rows are computed by a 6-channel x 16-column register tile (12 accumulators; one input
vector pair loaded per input channel, the 6 weights broadcast), activated and stored into the
window, whose padding columns and rows are (re)set to zero; then each channel's depthwise tiles
run over the window (depthwise.py's register tile) and are stored through the second epilogue.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import tirx
from tvm.script import tirx as T

from hwlat.kernels.dense import depthwise
from hwlat.kernels.dense.activation import activate
from hwlat.kernels.dense.spec import Conv2dSpec

LANES = 8
G = 6  # mid channels of one expand register tile (and of a packed weight block)
EV = 2  # vectors of one expand register tile (16 columns)
EW = EV * LANES


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _ceil_expr(a, b: int):
    return (a + b - 1) // b


@dataclass(frozen=True)
class ExpandDwSpec:
    """The fused pair: `expand` (1x1, stride 1, no padding, groups 1) and `dw` (depthwise over
    the expand's output), and the parallel tasks per image (sets of channel blocks)."""

    expand: Conv2dSpec
    dw: Conv2dSpec
    tasks: int = 1

    @property
    def x_shape(self) -> tuple[int, int, int, int]:
        return self.expand.x_shape

    @property
    def y_shape(self) -> tuple[int, int, int, int]:
        return self.dw.y_shape

    @property
    def blocks(self) -> int:
        """Mid-channel blocks of G."""
        return _ceil(self.expand.cout, G)

    @property
    def mid_bytes(self) -> int:
        """Bytes of the expanded tensor the fusion keeps out of memory."""
        return 4 * int(np.prod(self.expand.y_shape))


# the fusion pays where the expanded tensor outgrows L2 by far (measured on an AMD EPYC znver3,
# 1 thread: 24->72 and 16->96 at 112x112 0.76-0.86x of the two kernels; at 56x56 and 28x28,
# 1.2-1.8 MB, 1.02-1.26x, slower: the separate 1x1 kernel's tiles run longer)
MIN_MID_BYTES = 2 << 20


def preferred(spec: ExpandDwSpec) -> bool:
    """Whether the rewrite fuses the pair (else each conv gets its own kernel)."""
    return spec.mid_bytes >= MIN_MID_BYTES


def supports(spec: ExpandDwSpec) -> str | None:
    """None when the kernel takes the spec, else the reason."""
    e, d = spec.expand, spec.dw
    if e.kernel != (1, 1) or e.stride != (1, 1) or any(e.padding) or e.groups != 1:
        return f"the expand conv must be 1x1, stride 1, unpadded, groups 1 (got {e})"
    if e.dilation != (1, 1):
        return f"the expand conv has dilation {e.dilation}"
    if not (e.epilogue.bias and d.epilogue.bias) or e.epilogue.residual or d.epilogue.residual:
        return "both convs need a bias and no residual"
    if d.x_shape != e.y_shape:
        return f"the depthwise input {d.x_shape} is not the expand output {e.y_shape}"
    if spec.tasks < 1:
        return f"tasks must be >= 1, got {spec.tasks}"
    if min(e.cin, e.cout, e.batch) < 1:
        return f"empty expand conv {e}"
    return depthwise.supports(d)


def packed_shapes(spec: ExpandDwSpec) -> tuple[tuple[int, ...], ...]:
    """Shapes of (w1, b1, w2, b2) as the kernel takes them."""
    cp = spec.blocks * G
    k = spec.dw.kernel[0] * spec.dw.kernel[1]
    return (spec.blocks, spec.expand.cin, G), (cp,), (cp, k), (cp,)


def pack(spec: ExpandDwSpec, w1: np.ndarray, b1: np.ndarray, w2: np.ndarray,
         b2: np.ndarray) -> tuple[np.ndarray, ...]:
    """The OIHW weights (cmid, cin, 1, 1), (cmid, 1, kh, kw) and the biases (cmid,) in the kernel's
    layout: (w1, b1, w2, b2), float32, C-contiguous, zero past cmid."""
    e, d = spec.expand, spec.dw
    w1, w2 = np.asarray(w1, np.float32), np.asarray(w2, np.float32)
    if w1.shape != e.w_shape or w2.shape != d.w_shape:
        raise ValueError(f"weights of shapes {w1.shape}, {w2.shape}; expected {e.w_shape}, "
                         f"{d.w_shape}")
    cm, cp = e.cout, spec.blocks * G
    s1, s2, s3, s4 = packed_shapes(spec)
    pw1 = np.zeros((cp, e.cin), np.float32)
    pw1[:cm] = w1.reshape(cm, e.cin)
    pw1 = pw1.reshape(spec.blocks, G, e.cin).transpose(0, 2, 1)
    pw2 = np.zeros(s3, np.float32)
    pw2[:cm] = w2.reshape(cm, -1)
    pb1, pb2 = np.zeros(s2, np.float32), np.zeros(s4, np.float32)
    pb1[:cm] = np.asarray(b1, np.float32).reshape(-1)
    pb2[:cm] = np.asarray(b2, np.float32).reshape(-1)
    return tuple(np.ascontiguousarray(a) for a in (pw1, pb1, pw2, pb2))


def primfunc(spec: ExpandDwSpec, tile: depthwise.Tile | None = None) -> tirx.PrimFunc:
    """PrimFunc(x, w1, b1, w2, b2, y) (ValueError when `supports` refuses the spec); `tile` is
    the depthwise register tile (default: depthwise.default_tile)."""
    reason = supports(spec)
    if reason is not None:
        raise ValueError(f"expand + depthwise conv2d: {reason}")
    e, d = spec.expand, spec.dw
    tile = tile or depthwise.default_tile(d)
    ep1, ep2 = e.epilogue, d.epilogue
    N, CI, H, W = e.x_shape
    CM = e.cout
    OH, OW = d.out_height, d.out_width
    KH, KW = d.kernel
    SH, SW = d.stride
    PT, PL = d.padding[0], d.padding[1]
    R, V = tile.rows, tile.cols
    L = LANES
    NV = V // L
    if V % L or R < 1:
        raise ValueError(f"bad depthwise tile {tile}: cols must be a multiple of {L}")
    NRB = _ceil(OH, R)
    NCB, CB, CT = _ceil(OW, V), OW // V, OW % V
    # phase p's columns q in [q0(p), q1(p)) hold input; the rest of a window row is padding
    Q0 = [max(0, _ceil(PL - p, SW)) for p in range(SW)]
    Q1 = [max(Q0[p], (W - 1 + PL - p) // SW + 1) for p in range(SW)]
    NQT = max(_ceil(Q1[p] - Q0[p], EW) for p in range(SW))  # expand tiles a phase row
    # window columns: what the depthwise tiles read, and the expand tiles write
    WQW = _ceil(max(NCB * V + (KW - 1) // SW, *(Q0[p] + NQT * EW for p in range(SW))),
                LANES) * LANES
    NI = (R - 1) * SH + KH  # window rows: the padded rows one row tile reads
    STEP = R * SH  # padded rows from one row tile to the next
    OV = max(0, KH - SH)  # rows a row tile shares with the next
    NB = spec.blocks
    BPS = _ceil(NB, min(spec.tasks, NB))  # channel blocks a task
    SETS = _ceil(NB, BPS)
    TASKS = N * SETS
    # phase p's columns q that hold input (the rest of the window row is padding, zero)
    def q0(p):  # Q0[p] for a loop variable p
        return tirx.max(0, (PL - p + SW - 1) // SW)

    def q1(p):
        return tirx.max(q0(p), (W - 1 + PL - p) // SW + 1)

    f32 = "float32"
    w1s, b1s, w2s, b2s = packed_shapes(spec)
    x_shape, y_shape = e.x_shape, d.y_shape

    def out(v, c, b2):
        return activate(v + b2[c], ep2)

    @T.prim_func(s_tir=True, private=True)
    def fused(x: T.Buffer(x_shape, f32), w1: T.Buffer(w1s, f32), b1: T.Buffer(b1s, f32),
              w2: T.Buffer(w2s, f32), b2: T.Buffer(b2s, f32), y: T.Buffer(y_shape, f32)):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        for t in T.parallel(TASKS):
            xs = T.alloc_buffer((CI, SW, NI, WQW), f32)
            win = T.alloc_buffer((BPS * G, SW, NI, WQW), f32)
            for rb in range(NRB):
                # the input rows of the window rows this tile computes, phase-split
                for k in range(CI):
                    for p in T.unroll(SW):
                        for i in range(T.Select(rb > 0, OV, 0), NI):
                            if rb * STEP + i - PT >= 0 and rb * STEP + i - PT < H:
                                if SW == 1 and W < 64:
                                    for j in T.vectorized(W):
                                        xs[k, 0, i, PL + j] = x[t // SETS, k,
                                                                rb * STEP + i - PT, j]
                                else:
                                    for q in range(q0(p), q1(p)):
                                        xs[k, p, i, q] = x[t // SETS, k, rb * STEP + i - PT,
                                                           q * SW + p - PL]
                for bl in range(T.min(BPS, NB - (t % SETS) * BPS)):
                    # the rows shared with the previous tile move to the window's top
                    if OV > 0 and rb > 0:
                        for c in range(G):
                            for p in range(SW):
                                for i in range(OV):
                                    for q in T.vectorized(WQW):
                                        win[bl * G + c, p, i, q] = win[bl * G + c, p,
                                                                       i + STEP, q]
                    # the new rows: 1x1 conv of xs, 6 channels x 16 columns a register tile
                    for i in range(T.Select(rb > 0, OV, 0), NI):
                        if rb * STEP + i - PT >= 0 and rb * STEP + i - PT < H:
                            for p in T.unroll(SW):
                                for qt in range(_ceil_expr(q1(p) - q0(p), EW)):
                                    acc = T.alloc_buffer((G, EV, L), f32)
                                    xv = T.alloc_buffer((EV, L), f32)
                                    for c in T.unroll(G):
                                        for u in T.unroll(EV):
                                            for j in T.vectorized(L):
                                                acc[c, u, j] = T.float32(0)
                                    for k in range(CI):
                                        for u in T.unroll(EV):
                                            for j in T.vectorized(L):
                                                xv[u, j] = xs[k, p, i, q0(p) + qt * EW + u * L + j]
                                        for c in T.unroll(G):
                                            for u in T.unroll(EV):
                                                for j in T.vectorized(L):
                                                    acc[c, u, j] = acc[c, u, j] + w1[
                                                        (t % SETS) * BPS + bl, k, c] * xv[u, j]
                                    for c in T.unroll(G):
                                        for u in T.unroll(EV):
                                            for j in T.vectorized(L):
                                                win[bl * G + c, p, i, q0(p) + qt * EW + u * L + j] = \
                                                    activate(acc[c, u, j] + b1[
                                                        ((t % SETS) * BPS + bl) * G + c], ep1)
                                # the padding columns (computed from garbage above) back to 0
                                for c in range(G):
                                    for q in range(q0(p)):
                                        win[bl * G + c, p, i, q] = T.float32(0)
                                    for q in range(q1(p), WQW):
                                        win[bl * G + c, p, i, q] = T.float32(0)
                        else:  # a padding row
                            for c in range(G):
                                for p in range(SW):
                                    for q in T.vectorized(WQW):
                                        win[bl * G + c, p, i, q] = T.float32(0)
                    # the depthwise tiles of each real channel of the block
                    for c in range(G):
                        if ((t % SETS) * BPS + bl) * G + c < CM:
                            for cb in range(NCB):
                                acc2 = T.alloc_buffer((R, NV, L), f32)
                                xin = T.alloc_buffer((L,), f32)
                                for r in T.unroll(R):
                                    for u in T.unroll(NV):
                                        for j in T.vectorized(L):
                                            acc2[r, u, j] = T.float32(0)
                                for i in T.unroll(NI):
                                    for kx in T.unroll(KW):
                                        for u in T.unroll(NV):
                                            for j in T.vectorized(L):
                                                xin[j] = win[bl * G + c, kx % SW, i,
                                                             cb * V + kx // SW + u * L + j]
                                            for r in T.unroll(R):
                                                if i - r * SH >= 0 and i - r * SH < KH:
                                                    for j in T.vectorized(L):
                                                        acc2[r, u, j] = acc2[r, u, j] + xin[j] * w2[
                                                            ((t % SETS) * BPS + bl) * G + c,
                                                            (i - r * SH) * KW + kx]
                                for r in T.unroll(R):
                                    if rb * R + r < OH:
                                        if cb < CB:
                                            for u in T.unroll(NV):
                                                for j in T.vectorized(L):
                                                    y[t // SETS, ((t % SETS) * BPS + bl) * G + c,
                                                      rb * R + r, cb * V + u * L + j] = out(
                                                        acc2[r, u, j],
                                                        ((t % SETS) * BPS + bl) * G + c, b2)
                                        else:  # the last, partial column tile
                                            for u in T.unroll(NV):
                                                if u * L + L <= CT:
                                                    for j in T.vectorized(L):
                                                        y[t // SETS,
                                                          ((t % SETS) * BPS + bl) * G + c,
                                                          rb * R + r, CB * V + u * L + j] = out(
                                                            acc2[r, u, j],
                                                            ((t % SETS) * BPS + bl) * G + c, b2)
                                                for j in T.unroll(L):
                                                    if u * L + j < CT and u * L + L > CT:
                                                        y[t // SETS,
                                                          ((t % SETS) * BPS + bl) * G + c,
                                                          rb * R + r, CB * V + u * L + j] = out(
                                                            acc2[r, u, j],
                                                            ((t % SETS) * BPS + bl) * G + c, b2)

    return fused
