"""Python API of hwlat's sparse 3D convolution: checks the input, builds the TIR kernels for the
host CPU (once per shape of kernel and channels) and runs them.

`sparse_conv3d(features, coords, weight, kernel_size, ...)` returns the output features and
coordinates. Submanifold convs keep the input coordinates; strided convs output the unique
`coords // stride` (sorted), computed here in numpy, so that both TIR kernels see static shapes.
Coordinates sorted by (batch, z, y, x), as `hwlat.zoo.sparse.voxelize` gives them, run fastest.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hwlat.errors import InvalidInputError
from hwlat.kernels.sparse_conv import kernel
from hwlat.kernels.sparse_conv.kernel import AXIS_LIMIT, BATCH_LIMIT, ConvGeometry
from hwlat.kernels.sparse_conv.reference import downsample_coords, packed_keys


@dataclass(frozen=True)
class SparseResult:
    features: np.ndarray  # [M, Cout] float32
    coords: np.ndarray  # [M, 4] int32 (batch, z, y, x)


def _triple(name: str, value, minimum: int) -> tuple[int, int, int]:
    values = (value,) * 3 if isinstance(value, int | np.integer) else tuple(value)
    if len(values) != 3 or any(isinstance(v, bool) or not isinstance(v, int | np.integer)
                               or v < minimum for v in values):
        raise InvalidInputError(f"{name} must be an integer >= {minimum} or three of them (z, y, x), "
                                f"got {value!r}")
    return tuple(int(v) for v in values)


def geometry(kernel_size, stride=1, padding=None, subm: bool = True) -> ConvGeometry:
    """The checked ConvGeometry; padding defaults to kernel_size // 2 (submanifold) or 0."""
    ks = _triple("kernel_size", kernel_size, 1)
    st = _triple("stride", stride, 1)
    pad = _triple("padding", padding, 0) if padding is not None else \
        tuple(k // 2 for k in ks) if subm else (0, 0, 0)
    if subm and st != (1, 1, 1):
        raise InvalidInputError(f"a submanifold sparse conv has stride 1, got stride {list(st)}")
    return ConvGeometry(ks, st, pad, bool(subm))


def check_coords(coords, grid: int | Sequence[int] | None = None) -> np.ndarray:
    """coords as int32 [N, 4] (batch, z, y, x) after checking that they are integers, lie in the
    grid (default: the packing limit, 65536 per axis) and are unique; the error names the row."""
    c = np.asarray(coords)
    if not (np.issubdtype(c.dtype, np.integer) or c.size == 0 and c.dtype == np.float64):
        raise InvalidInputError(f"sparse coords must be integers, got {c.dtype}")
    if c.ndim != 2 or c.shape[1] != 4:
        raise InvalidInputError(f"sparse coords must be [N, 4] (batch, z, y, x), got {list(c.shape)}")
    extent = _triple("grid", grid, 1) if grid is not None else (AXIS_LIMIT,) * 3
    if any(e > AXIS_LIMIT for e in extent):
        raise InvalidInputError(f"grid {list(extent)} exceeds {AXIS_LIMIT} per axis")
    c = c.astype(np.int64)
    bad = (c < 0).any(axis=1) | (c[:, 0] >= BATCH_LIMIT) | (c[:, 1:] >= np.asarray(extent)).any(axis=1)
    if bad.any():
        row = int(np.argmax(bad))
        where = "is negative" if (c[row] < 0).any() else \
            f"lies outside the grid {'x'.join(map(str, extent))}" if c[row, 0] < BATCH_LIMIT \
            else f"has batch index >= {BATCH_LIMIT}"
        raise InvalidInputError(f"sparse coords row {row} = {c[row].tolist()} {where}")
    keys = packed_keys(c)
    order = np.argsort(keys, kind="stable")
    same = np.nonzero(keys[order][1:] == keys[order][:-1])[0]
    if len(same):
        first, second = sorted((int(order[same[0]]), int(order[same[0] + 1])))
        raise InvalidInputError(f"duplicate sparse coordinate {c[first].tolist()} (rows {first} and "
                                f"{second}): voxelize the points first")
    return c.astype(np.int32)


@functools.lru_cache(maxsize=32)
def _compiled(geom: ConvGeometry, cin: int, cout: int):
    import tvm

    from hwlat.kernels.target import host_target

    mod = tvm.IRModule({
        "kernel_map": kernel.kernel_map(geom).with_attr("global_symbol", "kernel_map"),
        "gemm": kernel.gemm(geom.volume, cin, cout).with_attr("global_symbol", "gemm"),
    })
    return tvm.compile(mod, target=host_target()).jit()


def sparse_conv3d(features, coords, weight, kernel_size, stride=1, padding=None, subm: bool = True,
                  grid: int | Sequence[int] | None = None) -> SparseResult:
    """features [N, Cin] float, coords [N, 4] integer (batch, z, y, x), weight [kz*ky*kx, Cin,
    Cout] (offsets row-major) -> SparseResult. `grid` (one size or (z, y, x)) bounds the
    coordinates; any coordinate outside it, negative, non-integer or repeated is an error."""
    import tvm

    geom = geometry(kernel_size, stride, padding, subm)
    c = check_coords(coords, grid)
    f = np.asarray(features)
    if f.ndim != 2 or not np.issubdtype(f.dtype, np.number):
        raise InvalidInputError(f"sparse features must be a numeric [N, C] array, got {f.dtype}{list(f.shape)}")
    if len(f) != len(c):
        raise InvalidInputError(f"{len(f)} feature rows for {len(c)} sparse coords: one row per voxel")
    w = np.asarray(weight)
    if w.ndim != 3 or w.shape[0] != geom.volume or w.shape[1] != f.shape[1]:
        raise InvalidInputError(
            f"sparse conv weight must be [{geom.volume}, {f.shape[1]}, Cout] for kernel "
            f"{list(geom.kernel_size)} and {f.shape[1]} input channels, got {list(w.shape)}")
    out_coords = c if geom.subm else downsample_coords(c, geom.stride)
    cin, cout = int(w.shape[1]), int(w.shape[2])
    lib = _compiled(geom, cin, cout)
    dev = tvm.cpu(0)

    def tensor(a, dtype):
        return tvm.runtime.tensor(np.ascontiguousarray(a, dtype=dtype), dev)

    shapes = kernel.map_shapes(len(c), len(out_coords), geom)
    scratch = {name: tensor(np.empty(shape, dtype), dtype) for name, (shape, dtype) in shapes.items()}
    coords_in = tensor(c, "int32")
    coords_out = coords_in if geom.subm else tensor(out_coords, "int32")
    lib["kernel_map"](coords_in, coords_out, *scratch.values())
    out = tensor(np.empty((len(out_coords), cout), np.float32), "float32")
    lib["gemm"](tensor(f, "float32"), tensor(w, "float32"), scratch["pair_in"],
                scratch["pair_out"], scratch["segment"], out)
    return SparseResult(out.numpy(), out_coords)
