import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hwlat.errors import InvalidInputError
from hwlat.zoo.sparse import SparseConvNet, voxelize
from hwlat.zoo.sparse_conv import sparse_conv3d, sparse_downsample_coords

GRID = 12


def random_voxels(n_points: int, channels: int, batches: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    raw = torch.cat(
        [
            torch.randint(0, batches, (n_points, 1), generator=g),
            torch.randint(0, GRID, (n_points, 3), generator=g),
        ],
        dim=1,
    )
    coords = torch.unique(raw, dim=0).int()
    coords = coords[torch.randperm(len(coords), generator=g)]  # the op must not rely on order
    return torch.randn(len(coords), channels, generator=g), coords


def dense_conv(features, coords, weight, kernel, stride, padding, out_coords):
    """Oracle: scatter into a dense volume, F.conv3d, read back at the output coordinates."""
    batches = int(coords[:, 0].max()) + 1
    volume = torch.zeros(batches, features.shape[1], GRID, GRID, GRID)
    b, z, y, x = coords.long().T
    volume[b, :, z, y, x] = features
    dense_weight = weight.reshape(kernel, kernel, kernel, *weight.shape[1:]).permute(4, 3, 0, 1, 2)
    out = F.conv3d(volume, dense_weight, stride=stride, padding=padding)
    b, z, y, x = out_coords.long().T
    return out[b, :, z, y, x]


@pytest.mark.parametrize("kernel", [3, 1])
def test_submanifold_matches_dense_conv(kernel):
    features, coords = random_voxels(400, 5)
    weight = torch.randn(kernel**3, 5, 7, generator=torch.Generator().manual_seed(1))
    pad = kernel // 2
    out = sparse_conv3d(features, coords, weight, 1, [kernel] * 3, [1] * 3, [pad] * 3)
    expected = dense_conv(features, coords, weight, kernel, 1, pad, coords)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("kernel", "padding"), [(3, 1), (2, 0)])
def test_strided_matches_dense_conv_at_downsampled_coords(kernel, padding):
    features, coords = random_voxels(400, 4)
    weight = torch.randn(kernel**3, 4, 6, generator=torch.Generator().manual_seed(2))
    out = sparse_conv3d(features, coords, weight, 0, [kernel] * 3, [2] * 3, [padding] * 3)
    out_coords = sparse_downsample_coords(coords, [2, 2, 2])
    assert out.shape == (len(out_coords), 6)
    expected = dense_conv(features, coords, weight, kernel, 2, padding, out_coords)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_downsample_coords_are_unique_floor_divided_and_sorted():
    coords = torch.tensor(
        [[0, 3, 3, 3], [0, 2, 2, 2], [1, 0, 0, 1], [0, 0, 5, 1]], dtype=torch.int32
    )
    assert sparse_downsample_coords(coords, [2, 2, 2]).tolist() == [
        [0, 0, 2, 0],
        [0, 1, 1, 1],
        [1, 0, 0, 0],
    ]


@pytest.mark.parametrize(("subm", "stride"), [(1, [1, 1, 1]), (0, [2, 2, 2])])
def test_empty_input(subm, stride):
    out = sparse_conv3d(
        torch.zeros(0, 4),
        torch.zeros(0, 4, dtype=torch.int32),
        torch.ones(27, 4, 8),
        subm,
        [3] * 3,
        stride,
        [1] * 3,
    )
    assert out.shape == (0, 8)


def test_single_voxel_sees_only_the_kernel_centre():
    features = torch.randn(1, 4)
    weight = torch.randn(27, 4, 8)
    coords = torch.tensor([[0, 5, 5, 5]], dtype=torch.int32)
    out = sparse_conv3d(features, coords, weight, 1, [3] * 3, [1] * 3, [1] * 3)
    assert torch.equal(out, features @ weight[13])


def test_kernel_offsets_are_zyx_row_major():
    # Input at x + 1 of the output voxel is read through offset (dz, dy, dx) = (1, 1, 2): index 14.
    coords = torch.tensor([[0, 5, 5, 5], [0, 5, 5, 6]], dtype=torch.int32)
    features = torch.tensor([[0.0], [1.0]])
    weight = torch.zeros(27, 1, 1)
    weight[14] = 3.0
    out = sparse_conv3d(features, coords, weight, 1, [3] * 3, [1] * 3, [1] * 3)
    assert out.flatten().tolist() == [3.0, 0.0]


@pytest.mark.parametrize(
    ("coords", "weight", "subm", "stride", "message"),
    [
        (
            [[0, 1, 2, 3], [0, 4, 4, 4], [0, 1, 2, 3]],
            (27, 2, 3),
            1,
            [1] * 3,
            "duplicate sparse coordinate [0, 1, 2, 3]",
        ),
        (
            [[0, 1, 2, 3], [0, 4, 4, 4], [0, 1, 2, 4]],
            (27, 2, 3),
            1,
            [2] * 3,
            "submanifold sparse conv has stride 1",
        ),
        (
            [[0, 1, 2, 3], [0, 4, 4, 4], [0, 1, 2, 4]],
            (9, 2, 3),
            1,
            [1] * 3,
            "weight must be [27, 2, Cout]",
        ),
        (
            [[0, -1, 2, 3], [0, 4, 4, 4], [0, 1, 2, 4]],
            (27, 2, 3),
            1,
            [1] * 3,
            "must lie in [0, 65536)",
        ),
        (
            [[0, 1, 2, 3], [0, 4, 4, 4]],
            (27, 2, 3),
            1,
            [1] * 3,
            "3 feature rows for 2 sparse coords",
        ),
    ],
)
def test_bad_inputs_raise_invalid_input(coords, weight, subm, stride, message):
    with pytest.raises(InvalidInputError) as info:
        sparse_conv3d(
            torch.ones(3, 2),
            torch.tensor(coords, dtype=torch.int32),
            torch.ones(weight),
            subm,
            [3] * 3,
            stride,
            [1] * 3,
        )
    assert message in str(info.value)


def test_voxelize_hand_case():
    points = np.array([[0.10, 0.1, 0.1], [0.20, 0.1, 0.1], [0.9, 0.5, 0.2]], dtype=np.float32)
    coords, features = voxelize(points, 4)
    # (x, y, z) = (0.9, 0.5, 0.2) lands in voxel x=3, y=2, z=0; coords are (batch, z, y, x).
    assert coords.dtype == torch.int32
    assert coords.tolist() == [[0, 0, 0, 0], [0, 0, 2, 3]]
    torch.testing.assert_close(
        features, torch.tensor([[0.15, 0.1, 0.1, 2.0], [0.9, 0.5, 0.2, 1.0]])
    )


def test_voxelize_rejects_points_outside_the_unit_cube():
    with pytest.raises(InvalidInputError, match=r"\[0, 1\)"):
        voxelize(torch.tensor([[0.5, 0.5, 1.0]]), 8)


@pytest.mark.slow
def test_net_is_invariant_to_voxel_order():
    torch.manual_seed(0)
    model = SparseConvNet(batch_size=2).eval()
    features, coords = random_voxels(300, 4)
    perm = torch.randperm(len(coords))
    with torch.no_grad():
        torch.testing.assert_close(model(features, coords), model(features[perm], coords[perm]))
