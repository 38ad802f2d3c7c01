"""numpy reference of hwlat's sparse 3D convolution: a sorted-key kernel map, then per offset a
dense gather, matmul and scatter-add. Slow but plain; the TIR kernel is tested against it.

Same layout as the `hwlat::sparse_conv3d` torch op: features [N, Cin], coords [N, 4] (batch, z,
y, x), weight [kz*ky*kx, Cin, Cout] with offsets in (kz, ky, kx) row-major order; output row o
at coordinate c_o reads input c_o * stride - padding + offset.
"""

from __future__ import annotations

import itertools

import numpy as np


def packed_keys(coords: np.ndarray) -> np.ndarray:
    """One int64 per (batch, z, y, x) row, 16 bits per spatial axis: ordering keys orders rows."""
    c = coords.astype(np.int64)
    return (c[:, 0] << 48) | (c[:, 1] << 32) | (c[:, 2] << 16) | c[:, 3]


def downsample_coords(coords: np.ndarray, stride) -> np.ndarray:
    """Output coordinates of a strided (non-submanifold) conv: the unique coords // stride,
    sorted row-wise (batch, z, y, x)."""
    scale = np.array([1, *stride], dtype=coords.dtype)
    out = np.unique(np.floor_divide(coords, scale), axis=0) if len(coords) else coords[:0]
    return out.astype(np.int32).reshape(-1, 4)


def sparse_conv3d_reference(features: np.ndarray, coords: np.ndarray, weight: np.ndarray,
                            kernel_size, stride=(1, 1, 1), padding=(0, 0, 0),
                            subm: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(output features [M, Cout] float32, output coords [M, 4] int32); inputs assumed valid
    (unique, non-negative coordinates): the checks live in the kernel's Python API."""
    out_coords = coords.astype(np.int32) if subm else downsample_coords(coords, stride)
    out = np.zeros((len(out_coords), weight.shape[2]), np.float64)
    if len(coords) == 0 or len(out_coords) == 0:
        return out.astype(np.float32), out_coords
    keys = packed_keys(coords)
    order = np.argsort(keys)
    sorted_keys = keys[order]
    base = out_coords[:, 1:].astype(np.int64) * np.asarray(stride) - np.asarray(padding)
    for k, offset in enumerate(itertools.product(*(range(s) for s in kernel_size))):
        at = base + np.asarray(offset)
        inside = ((at >= 0) & (at < 1 << 16)).all(axis=1)
        want = packed_keys(np.concatenate([out_coords[:, :1], np.clip(at, 0, (1 << 16) - 1)], 1))
        slot = np.minimum(np.searchsorted(sorted_keys, want), len(sorted_keys) - 1)
        hit = np.nonzero(inside & (sorted_keys[slot] == want))[0]
        rows = order[slot[hit]]
        np.add.at(out, hit, features[rows].astype(np.float64) @ weight[k].astype(np.float64))
    return out.astype(np.float32), out_coords
