"""The TIR sparse conv against the numpy reference and the torch op; its edge cases and refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm

from hwlat.errors import InvalidInputError
from hwlat.kernels.sparse_conv import conv, kernel
from hwlat.kernels.sparse_conv.conv import sparse_conv3d
from hwlat.kernels.sparse_conv.reference import sparse_conv3d_reference
from hwlat.zoo.sparse_conv import sparse_conv3d as torch_sparse_conv3d

pytestmark = pytest.mark.tvm


def cloud(n: int, grid: int, seed: int, batches: int = 1, shuffle: bool = False) -> np.ndarray:
    """n unique voxels spread over `batches` samples of a grid^3 volume."""
    rng = np.random.default_rng(seed)
    cells = rng.choice(batches * grid**3, size=n, replace=False)
    b, cell = np.divmod(cells, grid**3)
    c = np.stack([b, cell // grid**2, cell // grid % grid, cell % grid], axis=1).astype(np.int32)
    c = c[np.lexsort(c.T[::-1])]
    return c[rng.permutation(n)] if shuffle else c


def data(n: int, volume: int, cin: int, cout: int, seed: int):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, cin)).astype(np.float32),
            rng.standard_normal((volume, cin, cout)).astype(np.float32))


# One channel pair throughout, so that each geometry compiles once; 19 = a 16-wide register tile
# and a masked 3-wide one.
CIN, COUT = 5, 19

CASES = [  # kernel, stride, padding, subm
    (3, 1, 1, True),
    (1, 1, 0, True),
    (3, 2, 1, False),
    (2, 2, 0, False),
    ((3, 1, 3), 1, (1, 0, 1), True),  # non-cubic, with padding 0 on one axis
    (3, 1, 0, True),  # not centred: no mirrored lookups
]


@pytest.mark.parametrize(("ks", "stride", "padding", "subm"), CASES)
def test_matches_numpy_reference(ks, stride, padding, subm):
    coords = cloud(700, 12, seed=1, batches=2, shuffle=True)
    geom = conv.geometry(ks, stride, padding, subm)
    features, weight = data(len(coords), geom.volume, CIN, COUT, seed=2)
    got = sparse_conv3d(features, coords, weight, ks, stride, padding, subm)
    want, want_coords = sparse_conv3d_reference(features, coords, weight, geom.kernel_size,
                                                geom.stride, geom.padding, subm)
    np.testing.assert_array_equal(got.coords, want_coords)
    assert got.features.shape == (len(want_coords), COUT)
    np.testing.assert_allclose(got.features, want, rtol=1e-5, atol=1e-4)
    assert np.abs(want).max() > 1  # not vacuous: outputs are sums of several products


@pytest.mark.parametrize(("ks", "stride", "subm"), [(3, 1, True), (3, 2, False), (1, 1, True)])
def test_matches_the_torch_op(ks, stride, subm):
    coords = cloud(3000, 32, seed=3)  # many output chunks
    features, weight = data(len(coords), ks**3, CIN, COUT, seed=4)
    pad = ks // 2
    got = sparse_conv3d(features, coords, weight, ks, stride, pad, subm)
    want = torch_sparse_conv3d(torch.from_numpy(features), torch.from_numpy(coords),
                               torch.from_numpy(weight), int(subm), [ks] * 3, [stride] * 3, [pad] * 3)
    np.testing.assert_allclose(got.features, want.numpy(), rtol=1e-5, atol=1e-4)


def test_reference_matches_the_torch_op():
    coords = cloud(400, 10, seed=5, batches=2, shuffle=True)
    features, weight = data(len(coords), 27, 3, 4, seed=6)
    want = torch_sparse_conv3d(torch.from_numpy(features), torch.from_numpy(coords),
                               torch.from_numpy(weight), 0, [3] * 3, [2] * 3, [1] * 3)
    got, _ = sparse_conv3d_reference(features, coords, weight, (3,) * 3, (2,) * 3, (1,) * 3, False)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("stride", "subm"), [(1, True), (2, False)])
def test_empty_input(stride, subm):
    features, weight = data(0, 27, CIN, COUT, seed=0)
    got = sparse_conv3d(features, np.zeros((0, 4), np.int32), weight, 3, stride, 1, subm)
    assert got.features.shape == (0, COUT) and got.coords.shape == (0, 4)


def test_single_voxel_reads_only_the_centre_weight():
    features, weight = data(1, 27, CIN, COUT, seed=7)
    got = sparse_conv3d(features, [[0, 5, 6, 7]], weight, 3)
    np.testing.assert_allclose(got.features, features @ weight[13], rtol=1e-6)
    strided = sparse_conv3d(features, [[0, 5, 6, 7]], weight, 3, stride=2, padding=1, subm=False)
    np.testing.assert_array_equal(strided.coords, [[0, 2, 3, 3]])
    # output (2, 3, 3) reads input (2,3,3)*2 - 1 + offset: (5, 6, 7) is offset (2, 1, 2)
    np.testing.assert_allclose(strided.features, features @ weight[2 * 9 + 1 * 3 + 2], rtol=1e-6)


def test_neighbours_across_batches_do_not_mix():
    coords = np.array([[0, 1, 1, 1], [1, 1, 1, 2]], np.int32)
    features, weight = data(2, 27, CIN, COUT, seed=8)
    got = sparse_conv3d(features, coords, weight, 3)
    np.testing.assert_allclose(got.features, features @ weight[13], rtol=1e-6)


def test_duplicate_coordinates_are_rejected_with_their_rows():
    coords = np.array([[0, 1, 2, 3], [0, 4, 4, 4], [0, 1, 2, 3]])
    features, weight = data(3, 27, 2, 2, seed=0)
    with pytest.raises(InvalidInputError, match=r"duplicate sparse coordinate \[0, 1, 2, 3\] "
                                                r"\(rows 0 and 2\): voxelize the points first"):
        sparse_conv3d(features, coords, weight, 3)


def test_the_compiled_kernel_checks_coordinates_itself():
    """The library refuses bad coordinates even when no Python check ran before it."""
    geom = conv.geometry(3)
    lib = conv._compiled(geom, CIN, COUT)

    def run_map(coords):
        c = tvm.runtime.tensor(np.asarray(coords, np.int32))
        scratch = [tvm.runtime.tensor(np.empty(shape, dtype))
                   for shape, dtype in kernel.map_shapes(len(coords), len(coords), geom).values()]
        lib["kernel_map"](c, c, *scratch)

    run_map([[0, 1, 2, 3], [0, 1, 2, 4]])
    with pytest.raises(ValueError, match="hwlat.SparseConv3d: duplicate coordinates"):
        run_map([[0, 1, 2, 3], [0, 5, 5, 5], [0, 1, 2, 3]])
    with pytest.raises(ValueError, match=r"hwlat.SparseConv3d: coords must be integers in \[0, 65536\)"):
        run_map([[0, 1, 2, 3], [0, -1, 2, 3]])
    with pytest.raises(ValueError, match="hwlat.SparseConv3d: coords must be"):
        run_map([[0, 1, 2, 70000]])


@pytest.mark.parametrize(("coords", "grid", "message"), [
    ([[0, 1, 2, 3], [0, 1, -2, 3]], None, r"sparse coords row 1 = \[0, 1, -2, 3\] is negative"),
    ([[0, 1, 2, 3], [0, 1, 2, 32]], 32, r"row 1 = \[0, 1, 2, 32\] lies outside the grid 32x32x32"),
    ([[0, 1, 2, 3], [0, 1, 2, 3]], (4, 4, 2), r"row 0 = \[0, 1, 2, 3\] lies outside the grid 4x4x2"),
    ([[0.0, 1.0, 2.0, 3.0], [0, 1, 2, 4.5]], None, "sparse coords must be integers, got float64"),
    ([[0, 1, 2]], None, r"sparse coords must be \[N, 4\] \(batch, z, y, x\), got \[1, 3\]"),
])
def test_bad_coordinates_are_named(coords, grid, message):
    features, weight = data(len(coords), 27, 2, 2, seed=0)
    with pytest.raises(InvalidInputError, match=message):
        sparse_conv3d(features, coords, weight, 3, grid=grid)


def test_features_and_coordinates_of_different_lengths():
    features, weight = data(3, 27, 2, 2, seed=0)
    with pytest.raises(InvalidInputError, match="3 feature rows for 2 sparse coords"):
        sparse_conv3d(features, [[0, 1, 1, 1], [0, 2, 2, 2]], weight, 3)


def test_bad_weight_and_stride():
    features, weight = data(2, 27, 2, 2, seed=0)
    coords = [[0, 1, 1, 1], [0, 2, 2, 2]]
    with pytest.raises(InvalidInputError, match=r"weight must be \[1, 2, Cout\]"):
        sparse_conv3d(features, coords, weight, 1)
    with pytest.raises(InvalidInputError, match="submanifold sparse conv has stride 1"):
        sparse_conv3d(features, coords, weight, 3, stride=2)
