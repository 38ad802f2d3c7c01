"""A submanifold sparse conv net on a voxelized point cloud, and the voxelizer that feeds it.

The convolution itself is the `hwlat::sparse_conv3d` custom op (sparse_conv.py); pass
ONNX_TRANSLATIONS to torch.onnx.export so it exports as one `hwlat.SparseConv3d` node.
"""

from itertools import pairwise

import numpy as np
import torch
from torch import Tensor, nn

from hwlat.errors import InvalidInputError
from hwlat.zoo.sparse_conv import ONNX_TRANSLATIONS, sparse_conv3d

__all__ = ["ONNX_TRANSLATIONS", "SparseConvNet", "SubMConv3d", "build", "voxelize"]

GRID = 32
POINTS = 2000
FEATURES = 4  # mean x, y, z of the points in a voxel, and their count


def voxelize(points: np.ndarray | Tensor, grid: int) -> tuple[Tensor, Tensor]:
    """Unique occupied voxels of points in [0, 1)^3: coords [N, 4] int32 (batch 0, z, y, x) and
    features [N, 4] float32 (mean x, y, z, point count), sorted by coordinate."""
    points = torch.as_tensor(points, dtype=torch.float32)
    if points.dim() != 2 or points.shape[1] != 3:
        raise InvalidInputError(f"points must be [P, 3], got {list(points.shape)}")
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
        raise InvalidInputError(f"grid must be a positive integer, got {grid!r}")
    if points.numel() and (points.min() < 0 or points.max() >= 1):
        raise InvalidInputError("points must lie in [0, 1): normalise the cloud first")
    # Points are (x, y, z); coords are (z, y, x) so x varies fastest, as in a dense [D, H, W] volume.
    cells = (points * grid).long().clamp(max=grid - 1).flip(1)  # clamp: float rounding near 1
    zyx, voxel = torch.unique(cells, dim=0, return_inverse=True)
    count = torch.zeros(len(zyx)).index_add_(0, voxel, torch.ones(len(points)))
    total_xyz = torch.zeros(len(zyx), 3).index_add_(0, voxel, points)
    mean_xyz = total_xyz / count.unsqueeze(1)
    coords = torch.cat([torch.zeros(len(zyx), 1, dtype=torch.long), zyx], dim=1).int()
    return coords, torch.cat([mean_xyz, count.unsqueeze(1)], dim=1)


class SubMConv3d(nn.Module):
    """Submanifold sparse conv: output voxels are the input voxels, so coords pass through unchanged.
    Weight [k^3, Cin, Cout], offsets (kz, ky, kx) row-major, centred on the output voxel."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        self.kernel_size = [kernel_size] * 3
        self.padding = [kernel_size // 2] * 3
        fan_in = in_channels * kernel_size**3
        # He initialisation, as for a dense conv with the same fan-in.
        weight = torch.randn(kernel_size**3, in_channels, out_channels) * (2 / fan_in) ** 0.5
        self.weight = nn.Parameter(weight)

    def forward(self, features: Tensor, coords: Tensor) -> Tensor:
        return sparse_conv3d(
            features, coords, self.weight, 1, self.kernel_size, [1, 1, 1], self.padding
        )


class SparseConvNet(nn.Module):
    """Three submanifold conv+BN+ReLU layers, a per-sample mean over voxels, a linear classifier."""

    def __init__(self, batch_size: int = 1, num_classes: int = 10):
        super().__init__()
        self.batch_size = batch_size
        widths = [FEATURES, 16, 32, 32]
        self.convs = nn.ModuleList(SubMConv3d(a, b) for a, b in pairwise(widths))
        self.norms = nn.ModuleList(nn.BatchNorm1d(b) for b in widths[1:])
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, features: Tensor, coords: Tensor) -> Tensor:
        x = features
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = torch.relu(norm(conv(x, coords)))
        # A one-hot [N, B] matmul pools per sample with a shape known at export, unlike a scatter.
        member = (coords[:, :1] == torch.arange(self.batch_size, dtype=coords.dtype)).to(x.dtype)
        pooled = (member.T @ x) / member.sum(0).clamp(min=1).unsqueeze(1)
        return self.fc(pooled)


def build(batch_size: int, input_shape: tuple[int, ...] | None):
    """`input_shape` (points, grid) sizes the random cloud per sample (default POINTS, GRID)."""
    points, grid = POINTS, GRID
    if input_shape is not None:
        if len(input_shape) != 2:
            raise InvalidInputError(
                "sparse_convnet takes no input_shape (C, H, W): its input is a point cloud; "
                f"give POINTS,GRID instead (e.g. 40000,128), got {','.join(map(str, input_shape))}")
        points, grid = (int(v) for v in input_shape)
    coords, features = [], []
    for sample in range(batch_size):
        c, f = voxelize(torch.rand(points, 3), grid)
        c[:, 0] = sample
        coords.append(c)
        features.append(f)
    return SparseConvNet(batch_size), (torch.cat(features), torch.cat(coords))
