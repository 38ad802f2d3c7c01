"""ConvNeXt's LayerNorm2d as hwlat's TVM CPU lowering runs it: the boundary the "tvm-cpu" fusion
rules draw, and the predicate the lowering asks too.

LayerNorm2d is exported as Transpose(NCHW -> NHWC) -> LayerNormalization over the last axis ->
Transpose(back). hwlat's dense rewrite (`hwlat.kernels.dense.lowering`) runs the three as one
channel-norm kernel on the NCHW tensor (`hwlat.kernels.dense.reduce.ChannelNormSpec`), no
transposes; the fusion rule (`hwlat.graph.fuse.channel_norm_rule`) cuts them as one layer-norm
kernel (key attribute `channels=1`), so that a cpu-tvm table's keys are the kernels the compiled
model calls. This module holds what both sides ask; it imports nothing of hwlat.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

TO_CHANNELS_LAST = (0, 2, 3, 1)  # NCHW -> NHWC
TO_CHANNELS_FIRST = (0, 3, 1, 2)  # NHWC -> NCHW
PIXEL_LANES = 16  # the kernel's pixel vectors: it refuses planes of fewer pixels
INDEX_LIMIT = 2**31 - 1  # int32 indexing


def channel_norm(shape: Sequence[int], first: Sequence[int], last: Sequence[int],
                 axes: Sequence[int], gamma: int, beta: int, eps: float) -> bool:
    """Whether permute(`first`) -> layer norm over `axes` (gamma, beta: their element counts) ->
    permute(`last`) of a float32 NCHW tensor of static `shape` runs as one channel-norm kernel:
    NCHW -> NHWC, the last axis alone, back to NCHW, an affine of one value per channel, planes
    of at least PIXEL_LANES pixels, int32-indexable, eps finite and >= 0."""
    if len(shape) != 4 or not all(isinstance(d, int) and d > 0 for d in shape):
        return False
    if tuple(first) != TO_CHANNELS_LAST or tuple(last) != TO_CHANNELS_FIRST:
        return False
    if [int(a) % 4 for a in axes] != [3] or gamma != shape[1] or beta != shape[1]:
        return False
    if not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
        return False
    return shape[2] * shape[3] >= PIXEL_LANES and math.prod(shape) <= INDEX_LIMIT
