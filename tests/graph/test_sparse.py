"""Kernel-map sizes of sparse convs from coordinates, hand-counted; log buckets; bad coordinates."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from hwlat.errors import InvalidInputError
from hwlat.graph.sparse import check_coords, default_coords, kernel_map_size, log_bucket

K3, S1, P1 = (3, 3, 3), (1, 1, 1), (1, 1, 1)


def brute_force(coords, k, stride, pad, subm):
    """Pairs by definition: every output voxel against every input voxel."""
    active = {tuple(c) for c in coords.tolist()}
    outs = active if subm else {(b, z // stride[0], y // stride[1], x // stride[2])
                                for b, z, y, x in active}
    pairs = 0
    for b, *c in outs:
        for off in itertools.product(*(range(n) for n in k)):
            src = tuple(ci * s - p + o for ci, s, p, o in zip(c, stride, pad, off, strict=True))
            pairs += (b, *src) in active
    return len(outs), pairs


def test_single_voxel_meets_only_itself():
    assert kernel_map_size(np.array([[0, 3, 3, 3]]), K3, S1, P1, True) == (1, 1)


def test_empty_input_has_no_pairs():
    assert kernel_map_size(np.zeros((0, 4), np.int32), K3, S1, P1, True) == (0, 0)


def test_a_full_cube_counts_every_neighbour():
    cube = np.array([(0, z, y, x) for z in range(3) for y in range(3) for x in range(3)])
    # per axis, offsets that stay inside a 3-long row: 3 + 2 + 2 over positions = 7; cubed
    assert kernel_map_size(cube, K3, S1, P1, True) == (27, 7**3)
    # stride 2, kernel 2, no padding: outputs are the 2x2x2 blocks a voxel falls in
    out, pairs = kernel_map_size(cube, (2, 2, 2), (2, 2, 2), (0, 0, 0), False)
    assert (out, pairs) == (8, 27)  # every input lands in exactly one block at one offset


@pytest.mark.parametrize("seed", range(4))
def test_random_clouds_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    cells = rng.choice(6**3, size=40, replace=False)
    coords = np.stack([rng.integers(0, 2, 40), cells // 36, cells // 6 % 6, cells % 6], axis=1)
    for k, stride, pad, subm in ((K3, S1, P1, True), ((1, 1, 1), S1, (0, 0, 0), True),
                                 (K3, (2, 2, 2), P1, False)):
        assert kernel_map_size(coords, k, stride, pad, subm) == brute_force(coords, k, stride, pad, subm)


def test_log_buckets_are_quarter_octaves():
    assert [log_bucket(n) for n in (0, 1, 2, 3, 4, 1000, 1024, 1100)] == [0, 1, 2, 3, 4, 1024, 1024, 1024]
    assert log_bucket(1300) == 1218  # 2^10.25


def test_default_cloud_is_fixed_by_its_size():
    a, b = default_coords(500), default_coords(500)
    assert np.array_equal(a, b) and a.dtype == np.int32 and a.shape == (500, 4)
    check_coords(a)  # unique, in range


@pytest.mark.parametrize("coords, message", [
    (np.array([[0, 1, 2, 3], [0, 1, 2, 3]]), "duplicate voxels"),
    (np.array([[0, -1, 2, 3]]), "not be negative"),
    (np.array([[0, 70000, 2, 3]]), "must lie in"),
    (np.array([[0, 1.5, 2, 3]]), "must be integers"),
    (np.array([[0, 1, 2]]), r"must be \[N, 4\]"),
])
def test_bad_coordinates_are_named(coords, message):
    with pytest.raises(InvalidInputError, match=message):
        kernel_map_size(coords, K3, S1, P1, True)
