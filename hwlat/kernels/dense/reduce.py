"""Row reductions that untuned TVM leaves as slow scalar loops, as hand-scheduled TIR: layer
norm over the last axis, layer norm over the channels of NCHW, and the global average pool (mean
over H and W of NCHW).

Layer norm (`LayerNormSpec`; PrimFunc(x[rows, dim], gamma[dim], beta[dim], y[rows, dim])):

    y = (x - mean) / sqrt(var + eps) * gamma + beta

mean and the biased variance over the last axis, as ONNX LayerNormalization (axis -1, stash
type float32) and torch.nn.LayerNorm compute them. Per row (which stays in L1 across its three
sweeps): the float32 mean m with UNROLL partial-sum vectors of VECTOR_LANES lanes; then, the same
way, the sums of d = x - m and of d^2 (the corrected two-pass algorithm: mean = m + E[d],
var = E[d^2] - E[d]^2, accurate for rows far from zero); then y = ((x - m) - E[d]) * rstd * gamma
+ beta. The dim % 8 lanes left over are summed and written by a separate scalar loop.

Channel layer norm (`ChannelNormSpec`; PrimFunc(x[b, c, h, w], gamma[c], beta[c], y[b, c, h, w])):
the layer norm over the channel axis of NCHW, as ConvNeXt's LayerNorm2d computes it through
permute -> layer norm over the last axis -> permute (which the rewrite replaces, transposes and
all). Vector lanes are pixels: a block of BLOCK_BYTES / (4 * c) pixels (16 to 64, whole
16-lane vectors; the last block of a plane overlaps the one before it, so that every block is
whole) is swept over its channels three times, as the last-axis kernel sweeps a row (shift,
corrected sums of d and d^2, normalise), each pixel vector with its own accumulators. Planes of
fewer than 16 pixels are refused.

Global average pool (`MeanPoolSpec`; PrimFunc(x[b, c, h, w], y[b, c, 1, 1]), or y[b, c] with
keepdims=False): the mean of each channel's contiguous h*w run, summed with up to UNROLL
partial-sum vectors, then the leftover lanes one at a time, times 1 / (h*w).

Both are parallel over tasks of consecutive rows / (batch, channel) planes (at least
TASK_ELEMENTS inputs a task, unless that leaves fewer than MIN_TASKS tasks); the hot loops have no
predicates. ``supports(spec)``, ``primfunc(spec)`` take either spec; the numpy references
(`layer_norm_reference`, `mean_pool_reference`) accumulate in float64 and return float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from tvm import tirx
from tvm.script import tirx as T

from hwlat.graph.channel_norm import PIXEL_LANES

VECTOR_LANES = 8  # float32 lanes of an AVX2 register
UNROLL = 4  # partial-sum vectors of a reduction (hides the add latency)
TASK_ELEMENTS = 8192  # inputs a parallel task should hold at least ...
MIN_TASKS = 16  # ... unless that leaves fewer tasks than this
_INDEX_LIMIT = 2**31 - 1  # int32 indexing


@dataclass(frozen=True)
class LayerNormSpec:
    rows: int  # the leading axes, flattened
    dim: int  # the normalised (last) axis
    eps: float = 1e-5


@dataclass(frozen=True)
class ChannelNormSpec:
    batch: int
    channels: int
    height: int
    width: int
    eps: float = 1e-5

    @property
    def x_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.channels, self.height, self.width)


# the channel norm's pixel vectors (split in two by LLVM on AVX2); the "tvm-cpu" fusion rules
# ask for planes of at least as many pixels (hwlat.graph.channel_norm)
CHANNEL_LANES = PIXEL_LANES
BLOCK_BYTES = 40 * 1024  # a channel-norm block's inputs (every channel of its pixels): in L1


@dataclass(frozen=True)
class MeanPoolSpec:
    batch: int
    channels: int
    height: int
    width: int
    keepdims: bool = True  # y[b, c, 1, 1] (else y[b, c])

    @property
    def x_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.channels, self.height, self.width)

    @property
    def y_shape(self) -> tuple[int, ...]:
        return (self.batch, self.channels, 1, 1) if self.keepdims else (self.batch, self.channels)


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _tasks(items: int, size: int) -> tuple[int, int]:
    """(items per task, tasks) for `items` independent items of `size` inputs each."""
    per_task = max(1, min(_ceil(TASK_ELEMENTS, max(size, 1)), _ceil(items, MIN_TASKS)))
    return per_task, _ceil(items, per_task)


def _positive_ints(**fields) -> str | None:
    for name, v in fields.items():
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            return f"{name} must be a positive int, got {v!r}"
    return None


def supports(spec: LayerNormSpec | ChannelNormSpec | MeanPoolSpec) -> str | None:
    """None when a kernel of this module takes the spec, else the reason."""
    if isinstance(spec, ChannelNormSpec):
        reason = _positive_ints(batch=spec.batch, channels=spec.channels, height=spec.height,
                                width=spec.width)
        if reason:
            return reason
        if not isinstance(spec.eps, (int, float)) or not math.isfinite(spec.eps) or spec.eps < 0:
            return f"eps must be a finite float >= 0, got {spec.eps!r}"
        if spec.height * spec.width < CHANNEL_LANES:
            return f"planes of {spec.height}x{spec.width}: fewer than {CHANNEL_LANES} pixels"
        if math.prod(spec.x_shape) > _INDEX_LIMIT:
            return f"input {spec.x_shape} exceeds int32 indexing"
        return None
    if isinstance(spec, LayerNormSpec):
        reason = _positive_ints(rows=spec.rows, dim=spec.dim)
        if reason:
            return reason
        if not isinstance(spec.eps, (int, float)) or not math.isfinite(spec.eps) or spec.eps < 0:
            return f"eps must be a finite float >= 0, got {spec.eps!r}"
        if spec.rows * spec.dim > _INDEX_LIMIT:
            return f"{spec.rows} x {spec.dim} elements exceed int32 indexing"
        return None
    if isinstance(spec, MeanPoolSpec):
        reason = _positive_ints(batch=spec.batch, channels=spec.channels, height=spec.height,
                                width=spec.width)
        if reason:
            return reason
        if math.prod(spec.x_shape) > _INDEX_LIMIT:
            return f"input {spec.x_shape} exceeds int32 indexing"
        return None
    return f"not a LayerNormSpec, ChannelNormSpec or MeanPoolSpec: {type(spec).__name__}"


def primfunc(spec: LayerNormSpec | ChannelNormSpec | MeanPoolSpec) -> tirx.PrimFunc:
    """The kernel of the spec (ValueError when `supports` refuses it)."""
    reason = supports(spec)
    if reason is not None:
        raise ValueError(f"reduce kernel: {reason}")
    if isinstance(spec, LayerNormSpec):
        return layer_norm_primfunc(spec)
    if isinstance(spec, ChannelNormSpec):
        return channel_norm_primfunc(spec)
    return mean_pool_primfunc(spec)


def layer_norm_primfunc(spec: LayerNormSpec) -> tirx.PrimFunc:
    """PrimFunc(x[rows, dim], gamma[dim], beta[dim], y[rows, dim])."""
    reason = supports(spec) if isinstance(spec, LayerNormSpec) else "not a LayerNormSpec"
    if reason is not None:
        raise ValueError(f"layer norm: {reason}")
    R, D = spec.rows, spec.dim
    L, U = VECTOR_LANES, UNROLL
    NV = D // L  # whole vectors of a row
    NQ = NV // U  # groups of U vectors
    NL = NV - NQ * U  # whole vectors after the groups
    DT = D - NV * L  # lanes after the whole vectors
    per_task, TASKS = _tasks(R, D)
    f32 = "float32"
    inv_d = tirx.const(1.0 / D, f32)
    eps = tirx.const(spec.eps, f32)
    zero = tirx.const(0.0, f32)

    @T.prim_func(s_tir=True, private=True)
    def layer_norm(x: T.Buffer((R, D), f32), gamma: T.Buffer((D,), f32),
                   beta: T.Buffer((D,), f32), y: T.Buffer((R, D), f32)):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        for t in T.parallel(TASKS):
            acc = T.alloc_buffer((U, L), f32)
            sq = T.alloc_buffer((U, L), f32)
            s = T.alloc_buffer((2,), f32)
            for rr in range(T.min(per_task, R - t * per_task)):
                # pass 1: the sum
                for u in T.unroll(U):
                    for j in T.vectorized(L):
                        acc[u, j] = zero
                for q in range(NQ):
                    for u in T.unroll(U):
                        for j in T.vectorized(L):
                            acc[u, j] = acc[u, j] + x[t * per_task + rr, q * (U * L) + u * L + j]
                for u in T.unroll(NL):
                    for j in T.vectorized(L):
                        acc[u, j] = acc[u, j] + x[t * per_task + rr, NQ * (U * L) + u * L + j]
                for j in T.vectorized(L):
                    acc[0, j] = (acc[0, j] + acc[1, j]) + (acc[2, j] + acc[3, j])
                for j in T.vectorized(L // 2):
                    acc[0, j] = acc[0, j] + acc[0, j + L // 2]
                s[0] = (acc[0, 0] + acc[0, 2]) + (acc[0, 1] + acc[0, 3])
                for k in T.unroll(DT):
                    s[0] = s[0] + x[t * per_task + rr, NV * L + k]
                shift: T.let[T.float32] = s[0] * inv_d
                # pass 2: the sums of the deviations d = x - shift and of their squares (the
                # shift is the float32 mean; the sum of d corrects it: var = E[d^2] - E[d]^2)
                for u in T.unroll(U):
                    for j in T.vectorized(L):
                        acc[u, j] = zero
                        sq[u, j] = zero
                for q in range(NQ):
                    for u in T.unroll(U):
                        for j in T.vectorized(L):
                            acc[u, j] = acc[u, j] + (
                                x[t * per_task + rr, q * (U * L) + u * L + j] - shift)
                            sq[u, j] = sq[u, j] + (
                                x[t * per_task + rr, q * (U * L) + u * L + j] - shift) * (
                                x[t * per_task + rr, q * (U * L) + u * L + j] - shift)
                for u in T.unroll(NL):
                    for j in T.vectorized(L):
                        acc[u, j] = acc[u, j] + (x[t * per_task + rr, NQ * (U * L) + u * L + j] - shift)
                        sq[u, j] = sq[u, j] + (
                            x[t * per_task + rr, NQ * (U * L) + u * L + j] - shift) * (
                            x[t * per_task + rr, NQ * (U * L) + u * L + j] - shift)
                for j in T.vectorized(L):
                    acc[0, j] = (acc[0, j] + acc[1, j]) + (acc[2, j] + acc[3, j])
                    sq[0, j] = (sq[0, j] + sq[1, j]) + (sq[2, j] + sq[3, j])
                for j in T.vectorized(L // 2):
                    acc[0, j] = acc[0, j] + acc[0, j + L // 2]
                    sq[0, j] = sq[0, j] + sq[0, j + L // 2]
                s[0] = (acc[0, 0] + acc[0, 2]) + (acc[0, 1] + acc[0, 3])
                s[1] = (sq[0, 0] + sq[0, 2]) + (sq[0, 1] + sq[0, 3])
                for k in T.unroll(DT):
                    s[0] = s[0] + (x[t * per_task + rr, NV * L + k] - shift)
                    s[1] = s[1] + (x[t * per_task + rr, NV * L + k] - shift) * (
                        x[t * per_task + rr, NV * L + k] - shift)
                corr: T.let[T.float32] = s[0] * inv_d  # mean - shift
                rstd: T.let[T.float32] = T.float32(1) / T.sqrt(
                    T.max(s[1] * inv_d - corr * corr, zero) + eps)
                # pass 3: normalise ((x - shift) is exact when x is near the mean), scale, shift
                for v in range(NV):
                    for j in T.vectorized(L):
                        y[t * per_task + rr, v * L + j] = (
                            (x[t * per_task + rr, v * L + j] - shift) - corr) * rstd \
                            * gamma[v * L + j] + beta[v * L + j]
                for k in T.unroll(DT):
                    y[t * per_task + rr, NV * L + k] = (
                        (x[t * per_task + rr, NV * L + k] - shift) - corr) * rstd \
                        * gamma[NV * L + k] + beta[NV * L + k]

    return layer_norm


def channel_norm_primfunc(spec: ChannelNormSpec) -> tirx.PrimFunc:
    """PrimFunc(x[b, c, h, w], gamma[c], beta[c], y[b, c, h, w])."""
    reason = supports(spec) if isinstance(spec, ChannelNormSpec) else "not a ChannelNormSpec"
    if reason is not None:
        raise ValueError(f"channel norm: {reason}")
    N, C, H, W = spec.x_shape
    P = H * W
    L = CHANNEL_LANES
    NV = max(1, min(4, BLOCK_BYTES // (4 * C * L), P // L))  # pixel vectors a block
    B = NV * L
    NB = _ceil(P, B)  # blocks a plane; the last starts at P - B
    TASKS = N * NB
    f32 = "float32"
    inv_c = tirx.const(1.0 / C, f32)
    eps = tirx.const(spec.eps, f32)
    zero = tirx.const(0.0, f32)

    @T.prim_func(s_tir=True, private=True)
    def channel_norm(x: T.Buffer((N, C, H, W), f32), gamma: T.Buffer((C,), f32),
                     beta: T.Buffer((C,), f32), y: T.Buffer((N, C, H, W), f32)):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        xf = T.decl_buffer((N, C, P), f32, data=x.data)
        yf = T.decl_buffer((N, C, P), f32, data=y.data)
        for t in T.parallel(TASKS):
            acc = T.alloc_buffer((NV, L), f32)
            sq = T.alloc_buffer((NV, L), f32)
            shift = T.alloc_buffer((NV, L), f32)
            rstd = T.alloc_buffer((NV, L), f32)
            # pass 1: the sums over the channels, one vector of pixels each
            for u in T.unroll(NV):
                for j in T.vectorized(L):
                    acc[u, j] = zero
            for c in range(C):
                for u in T.unroll(NV):
                    for j in T.vectorized(L):
                        acc[u, j] = acc[u, j] + xf[t // NB, c,
                                                   T.min(t % NB * B, P - B) + u * L + j]
            for u in T.unroll(NV):
                for j in T.vectorized(L):
                    shift[u, j] = acc[u, j] * inv_c
                    acc[u, j] = zero
                    sq[u, j] = zero
            # pass 2: the sums of d = x - shift and d^2 (var = E[d^2] - E[d]^2)
            for c in range(C):
                for u in T.unroll(NV):
                    for j in T.vectorized(L):
                        acc[u, j] = acc[u, j] + (xf[t // NB, c, T.min(t % NB * B, P - B)
                                                    + u * L + j] - shift[u, j])
                        sq[u, j] = sq[u, j] + (xf[t // NB, c, T.min(t % NB * B, P - B)
                                                  + u * L + j] - shift[u, j]) * (
                            xf[t // NB, c, T.min(t % NB * B, P - B) + u * L + j] - shift[u, j])
            for u in T.unroll(NV):
                for j in T.vectorized(L):
                    acc[u, j] = acc[u, j] * inv_c  # mean - shift
                    rstd[u, j] = T.float32(1) / T.sqrt(
                        T.max(sq[u, j] * inv_c - acc[u, j] * acc[u, j], zero) + eps)
            # pass 3: normalise, scale, shift
            for c in range(C):
                for u in T.unroll(NV):
                    for j in T.vectorized(L):
                        yf[t // NB, c, T.min(t % NB * B, P - B) + u * L + j] = (
                            (xf[t // NB, c, T.min(t % NB * B, P - B) + u * L + j] - shift[u, j])
                            - acc[u, j]) * rstd[u, j] * gamma[c] + beta[c]

    return channel_norm


def channel_norm_reference(spec: ChannelNormSpec, x: np.ndarray, gamma: np.ndarray,
                           beta: np.ndarray) -> np.ndarray:
    """y[b, c, h, w] in float32, computed in float64 (layer norm over axis 1)."""
    xd = np.asarray(x, np.float64).reshape(spec.x_shape)
    mean = xd.mean(axis=1, keepdims=True)
    var = ((xd - mean) ** 2).mean(axis=1, keepdims=True)
    shape = (1, spec.channels, 1, 1)
    y = (xd - mean) / np.sqrt(var + spec.eps) * np.asarray(gamma, np.float64).reshape(shape) \
        + np.asarray(beta, np.float64).reshape(shape)
    return y.astype(np.float32)


def mean_pool_primfunc(spec: MeanPoolSpec) -> tirx.PrimFunc:
    """PrimFunc(x[b, c, h, w], y[b, c, 1, 1]) (y[b, c] when not keepdims)."""
    reason = supports(spec) if isinstance(spec, MeanPoolSpec) else "not a MeanPoolSpec"
    if reason is not None:
        raise ValueError(f"mean pool: {reason}")
    B, C, H, W = spec.x_shape
    NC, P = B * C, H * W
    L = VECTOR_LANES
    NV = P // L  # whole vectors of a plane
    U = max(1, min(UNROLL, NV))  # partial-sum vectors
    NQ = NV // U
    NL = NV - NQ * U
    PT = P - NV * L
    per_task, TASKS = _tasks(NC, P)
    f32 = "float32"
    inv_p = tirx.const(1.0 / P, f32)
    zero = tirx.const(0.0, f32)
    y_shape = spec.y_shape

    @T.prim_func(s_tir=True, private=True)
    def mean_pool(x: T.Buffer((B, C, H, W), f32), y: T.Buffer(y_shape, f32)):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        xf = T.decl_buffer((NC, P), f32, data=x.data)
        yf = T.decl_buffer((NC,), f32, data=y.data)
        for t in T.parallel(TASKS):
            acc = T.alloc_buffer((U, L), f32)
            s = T.alloc_buffer((1,), f32)
            for cc in range(T.min(per_task, NC - t * per_task)):
                for u in T.unroll(U):
                    for j in T.vectorized(L):
                        acc[u, j] = zero
                for q in range(NQ):
                    for u in T.unroll(U):
                        for j in T.vectorized(L):
                            acc[u, j] = acc[u, j] + xf[t * per_task + cc, q * (U * L) + u * L + j]
                for u in T.unroll(NL):
                    for j in T.vectorized(L):
                        acc[u, j] = acc[u, j] + xf[t * per_task + cc, NQ * (U * L) + u * L + j]
                for u in T.unroll(U - 1):
                    for j in T.vectorized(L):
                        acc[0, j] = acc[0, j] + acc[u + 1, j]
                for j in T.vectorized(L // 2):
                    acc[0, j] = acc[0, j] + acc[0, j + L // 2]
                s[0] = (acc[0, 0] + acc[0, 2]) + (acc[0, 1] + acc[0, 3])
                for k in T.unroll(PT):
                    s[0] = s[0] + xf[t * per_task + cc, NV * L + k]
                yf[t * per_task + cc] = s[0] * inv_p

    return mean_pool


def layer_norm_reference(spec: LayerNormSpec, x: np.ndarray, gamma: np.ndarray,
                         beta: np.ndarray) -> np.ndarray:
    """y[rows, dim] in float32, computed in float64."""
    xd = np.asarray(x, np.float64).reshape(spec.rows, spec.dim)
    mean = xd.mean(axis=-1, keepdims=True)
    var = ((xd - mean) ** 2).mean(axis=-1, keepdims=True)
    y = (xd - mean) / np.sqrt(var + spec.eps) * np.asarray(gamma, np.float64) \
        + np.asarray(beta, np.float64)
    return y.astype(np.float32)


def mean_pool_reference(spec: MeanPoolSpec, x: np.ndarray) -> np.ndarray:
    """y[b, c, 1, 1] (or y[b, c]) in float32, computed in float64."""
    y = np.asarray(x, np.float64).reshape(spec.x_shape).mean(axis=(2, 3))
    return y.reshape(spec.y_shape).astype(np.float32)
