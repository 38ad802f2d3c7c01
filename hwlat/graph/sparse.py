"""What a sparse conv's cost depends on besides its shapes: how many voxels are active and how
many (input, output) pairs its kernel map holds, both known only from the coordinates.

A sparse conv kernel's table key carries them bucketed on a log scale (a quarter octave,
`log_bucket`), with the active-voxel count standing for N in its shapes, so one entry serves
clouds of about the same size and density. The pairs come from the coordinates the model is fed:
a sample the user gives, or, by default, `default_coords(N)` — the same deterministic cloud the
TVM runners feed a model or kernel with N voxels, so profiling a kernel cut out of a model and
predicting the model agree on its key. numpy only.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from hwlat.errors import InvalidInputError

AXIS_BITS = 16  # per spatial axis in a packed key, as hwlat.SparseConv3d's reference packs them
AXIS_LIMIT = 1 << AXIS_BITS
BATCH_LIMIT = 1 << (63 - 3 * AXIS_BITS)
OCCUPANCY = 0.05  # of the cubic grid the default cloud fills
PER_OCTAVE = 4  # log buckets per factor of 2


def log_bucket(n: int) -> int:
    """n rounded to the nearest of 2^(k/4) (as an integer); 0 stays 0."""
    if n <= 0:
        return 0
    return int(round(2 ** (round(PER_OCTAVE * math.log2(n)) / PER_OCTAVE)))


def default_coords(n: int) -> np.ndarray:
    """n unique (0, z, y, x) int32 rows of a cubic grid at about OCCUPANCY, sorted; the same for
    the same n, everywhere."""
    rng = np.random.default_rng(n)
    side = max(1, math.ceil((n / OCCUPANCY) ** (1 / 3)))
    cells = np.sort(rng.choice(side**3, size=n, replace=False))
    zyx = np.stack([cells // (side * side), cells // side % side, cells % side], axis=1)
    return np.concatenate([np.zeros((n, 1), np.int64), zyx], axis=1).astype(np.int32)


def check_coords(coords: np.ndarray, what: str = "sparse coords") -> np.ndarray:
    """coords as int64 [N, 4] (batch, z, y, x): integers, in range, no duplicates; else one
    clear InvalidInputError."""
    a = np.asarray(coords)
    if a.ndim != 2 or a.shape[1] != 4:
        raise InvalidInputError(f"{what} must be [N, 4] (batch, z, y, x), got {list(a.shape)}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if not np.issubdtype(a.dtype, np.floating) or not np.all(np.isfinite(a)) \
                or not np.array_equal(a, np.round(a)):
            raise InvalidInputError(f"{what} must be integers, got {a.dtype} values")
    a = a.astype(np.int64)
    if a.size and (a.min() < 0 or a[:, 1:].max() >= AXIS_LIMIT or a[:, 0].max() >= BATCH_LIMIT):
        raise InvalidInputError(f"{what} must lie in [0, {AXIS_LIMIT}) per axis and "
                                f"[0, {BATCH_LIMIT}) per batch, and not be negative")
    keys = np.sort(_keys(a))
    if keys.size > 1 and np.any(keys[1:] == keys[:-1]):
        raise InvalidInputError(f"{what} hold duplicate voxels: voxelize the points first")
    return a


def _keys(a: np.ndarray) -> np.ndarray:
    key = a[:, 0].astype(np.int64)
    for axis in (1, 2, 3):
        key = (key << AXIS_BITS) | a[:, axis]
    return key


def kernel_map_size(coords: np.ndarray, kernel_size: Sequence[int], stride: Sequence[int],
                    padding: Sequence[int], subm: bool) -> tuple[int, int]:
    """(output voxels, kernel-map pairs) of a sparse conv over `coords`: an output voxel at c
    reads input c * stride - padding + offset for each kernel offset that lands on an active
    input voxel; each such (input, output) is one pair, one row of a gather-GEMM-scatter."""
    a = check_coords(coords)
    if not len(a):
        return 0, 0
    out = a if subm else np.unique(a // np.array([1, *stride]), axis=0)
    in_keys = np.sort(_keys(a))
    base = out[:, 1:] * np.array(stride) - np.array(padding)
    pairs = 0
    for offset in itertools.product(*(range(k) for k in kernel_size)):
        nb = base + np.array(offset)
        inside = np.all((nb >= 0) & (nb < AXIS_LIMIT), axis=1)
        keys = _keys(np.concatenate([out[:, :1], np.clip(nb, 0, AXIS_LIMIT - 1)], axis=1))
        slot = np.minimum(np.searchsorted(in_keys, keys), len(in_keys) - 1)
        pairs += int(np.sum(inside & (in_keys[slot] == keys)))
    return len(out), pairs
