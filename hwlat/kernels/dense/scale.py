"""A packed conv weight scaled per input channel, as hand-scheduled TIR: how a squeeze-excite
block's channel scale reaches the 1x1 conv after it without a pass over the activation.

Squeeze-excite (MobileNetV3, OFA, EfficientNet) multiplies the activation by a per-channel scale
s (computed from that same activation) right before a 1x1 conv:

    y[o, p] = sum_c w[o, c] * (x[c, p] * s[c])  =  sum_c (w[o, c] * s[c]) * x[c, p]

so the conv may read x as it is, with its weight scaled: cout * cin products instead of
cin * pixels, fewer wherever cout < pixels (OFA's 28x28 and 14x14 blocks: 9-74 K weights against
100-150 K activations), and the scaled weight is hot in the cache when the conv reads it.

`ChannelScaleSpec(blocks, channels, inner)`: PrimFunc(s[1, channels, 1, 1], w[blocks, channels,
inner], y[blocks, channels, inner]) with y[i, c, r] = w[i, c, r] * s[c] (w as conv.py packs it:
(cout blocks, cin, kh, kw, block), kh * kw * block = inner, passed with that 5-D shape). The scale
is first expanded to one row of channels * inner values, then every block's row is one contiguous
vectorised multiply by it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import tirx
from tvm.script import tirx as T

LANES = 8  # float32 lanes of an AVX2 register
_INDEX_LIMIT = 2**31 - 1


@dataclass(frozen=True)
class ChannelScaleSpec:
    blocks: int  # the packed weight's leading axis (output-channel blocks)
    channels: int  # input channels: the scale's length
    inner: int  # the values of one (block, channel): kh * kw * block
    w_shape: tuple[int, ...] = ()  # the packed weight's shape (default: (blocks, channels, inner))

    @property
    def shape(self) -> tuple[int, ...]:
        return self.w_shape or (self.blocks, self.channels, self.inner)

    @property
    def s_shape(self) -> tuple[int, int, int, int]:
        return (1, self.channels, 1, 1)


def supports(spec: ChannelScaleSpec) -> str | None:
    for name in ("blocks", "channels", "inner"):
        v = getattr(spec, name)
        if not isinstance(v, int | np.integer) or isinstance(v, bool) or v < 1:
            return f"{name} must be a positive int, got {v!r}"
    if int(np.prod(spec.shape)) != spec.blocks * spec.channels * spec.inner:
        return f"weight shape {spec.shape} does not hold {spec.blocks} x {spec.channels} x {spec.inner}"
    if spec.blocks * spec.channels * spec.inner > _INDEX_LIMIT:
        return "more than 2**31 - 1 weights"
    return None


def primfunc(spec: ChannelScaleSpec) -> tirx.PrimFunc:
    reason = supports(spec)
    if reason is not None:
        raise ValueError(f"channel scale kernel does not support {spec}: {reason}")
    NB, C, R = spec.blocks, spec.channels, spec.inner
    CR = C * R
    NV = CR // LANES  # whole vectors of a row
    TAIL = CR - NV * LANES
    f32 = "float32"

    @T.prim_func(s_tir=True, private=True)
    def channel_scale(s: T.Buffer(spec.s_shape, f32), w: T.Buffer(spec.shape, f32),
                      y: T.Buffer(spec.shape, f32)):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        sf = T.decl_buffer((C,), f32, data=s.data)
        wf = T.decl_buffer((NB * CR,), f32, data=w.data)
        yf = T.decl_buffer((NB * CR,), f32, data=y.data)
        row = T.alloc_buffer((CR,), f32)
        for c in range(C):
            for r in range(R):
                row[c * R + r] = sf[c]
        for i in range(NB):
            for v in range(NV):
                for j in T.vectorized(LANES):
                    yf[i * CR + v * LANES + j] = wf[i * CR + v * LANES + j] * row[v * LANES + j]
            for j in range(TAIL):
                yf[i * CR + NV * LANES + j] = wf[i * CR + NV * LANES + j] * row[NV * LANES + j]

    return channel_scale


def reference(s: np.ndarray, w: np.ndarray) -> np.ndarray:
    """y[i, c, ...] = w[i, c, ...] * s[c] for a packed weight w (axis 1: input channels)."""
    s = np.asarray(s, np.float32).reshape(-1)
    w = np.asarray(w, np.float32)
    return (w * s.reshape((1, -1) + (1,) * (w.ndim - 2))).astype(np.float32)
