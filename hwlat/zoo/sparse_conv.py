"""The `hwlat::sparse_conv3d` op: a 3D sparse convolution as one torch custom op and one ONNX node.

Sparse conv has no ONNX standard op, so export keeps it whole as `hwlat.SparseConv3d` (opset 1)
for graph/ and lowering/ to recognise; the torch implementation is the numerical reference.

Layout: `features` [N, Cin] float32, `coords` [N, 4] int32 rows (batch, z, y, x), `weight`
[kz*ky*kx, Cin, Cout] with the kernel offsets in (kz, ky, kx) row-major order. Output row o at
coordinate c_o reads input c_o * stride - padding + (dz, dy, dx) through weight offset (dz, dy, dx),
as a dense `F.conv3d` would. With `subm` the output coordinates are the input coordinates (stride
must be 1); otherwise they are `sparse_downsample_coords(coords, stride)`.
"""

import itertools

import onnx
import onnxscript
import torch
from torch import Tensor

from hwlat.errors import InvalidInputError

# Coordinates are packed into one int64 key, 16 bits per spatial axis, so that neighbour lookup is
# a sorted search over integers (the gather-GEMM-scatter "kernel map").
_AXIS_BITS = 16
_AXIS_LIMIT = 1 << _AXIS_BITS
_BATCH_LIMIT = 1 << (63 - 3 * _AXIS_BITS)


def _keys(batch: Tensor, zyx: Tensor) -> Tensor:
    key = batch.long()
    for axis in range(3):
        key = (key << _AXIS_BITS) | zyx[:, axis].long()
    return key


def _check_coords(coords: Tensor) -> None:
    if coords.dim() != 2 or coords.shape[1] != 4:
        raise InvalidInputError(
            f"sparse coords must be [N, 4] (batch, z, y, x), got {list(coords.shape)}"
        )
    if coords.numel() == 0:
        return
    if coords.min() < 0 or coords[:, 1:].max() >= _AXIS_LIMIT or coords[:, 0].max() >= _BATCH_LIMIT:
        raise InvalidInputError(
            f"sparse coords must lie in [0, {_AXIS_LIMIT}) per axis and [0, {_BATCH_LIMIT}) per batch"
        )


def sparse_downsample_coords(coords: Tensor, stride: list[int]) -> Tensor:
    """Output coordinates of a strided sparse conv: the unique input coordinates divided by stride, sorted."""
    _check_coords(coords)
    scale = torch.tensor([1, *stride], dtype=coords.dtype)
    return torch.unique(torch.div(coords, scale, rounding_mode="floor"), dim=0)


@torch.library.custom_op("hwlat::sparse_conv3d", mutates_args=())
def sparse_conv3d(
    features: Tensor,
    coords: Tensor,
    weight: Tensor,
    subm: int,
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
) -> Tensor:
    """Gather-GEMM-scatter over a sorted-key kernel map; see the module docstring for the layout."""
    _check_coords(coords)
    if len(features) != len(coords):
        raise InvalidInputError(f"{len(features)} feature rows for {len(coords)} sparse coords")
    if not len(kernel_size) == len(stride) == len(padding) == 3:
        raise InvalidInputError(
            f"kernel_size, stride and padding take (z, y, x), got {kernel_size}, {stride}, {padding}"
        )
    if subm and any(s != 1 for s in stride):
        raise InvalidInputError(f"a submanifold sparse conv has stride 1, got stride {stride}")
    kz, ky, kx = kernel_size
    if weight.shape[0] != kz * ky * kx or weight.shape[1] != features.shape[1]:
        raise InvalidInputError(
            f"sparse conv weight must be [{kz * ky * kx}, {features.shape[1]}, Cout] for kernel "
            f"{kernel_size} and {features.shape[1]} input channels, got {list(weight.shape)}"
        )
    in_keys, order = torch.sort(_keys(coords[:, 0], coords[:, 1:]))
    if in_keys.numel() > 1 and bool((in_keys[1:] == in_keys[:-1]).any()):
        duplicate = coords[order[1:][in_keys[1:] == in_keys[:-1]][0]].tolist()
        raise InvalidInputError(
            f"duplicate sparse coordinate {duplicate}: voxelize the points first"
        )
    out_coords = coords if subm else sparse_downsample_coords(coords, stride)
    out = features.new_zeros(out_coords.shape[0], weight.shape[2])
    if len(features) == 0:  # nothing to gather; searchsorted below needs at least one key
        return out
    base = out_coords[:, 1:].long() * torch.tensor(stride) - torch.tensor(padding)
    offsets = itertools.product(range(kz), range(ky), range(kx))
    for k, offset in enumerate(offsets):
        neighbour = base + torch.tensor(offset)
        inside = ((neighbour >= 0) & (neighbour < _AXIS_LIMIT)).all(dim=1)
        keys = _keys(out_coords[:, 0], neighbour.clamp(0, _AXIS_LIMIT - 1))
        slot = torch.searchsorted(in_keys, keys).clamp(max=in_keys.numel() - 1)
        hit = (inside & (in_keys[slot] == keys)).nonzero().squeeze(1)
        out.index_add_(0, hit, features[order[slot[hit]]] @ weight[k])
    return out


@sparse_conv3d.register_fake
def _(features, coords, weight, subm, kernel_size, stride, padding):
    # Strided output size depends on which voxels share a cell: only the data can tell.
    rows = features.shape[0] if subm else torch.library.get_ctx().new_dynamic_size()
    return features.new_empty(rows, weight.shape[2])


def _onnx_schema() -> onnx.defs.OpSchema:
    # The exporter's tracer needs a schema to tell inputs from attributes; it is only handed to the
    # traced op, not registered globally, so importing hwlat changes no ONNX checker behaviour.
    schema = onnx.defs.OpSchema
    ints = schema.AttrType.INTS
    return schema(
        "SparseConv3d",
        "hwlat",
        1,
        doc=__doc__,
        inputs=[
            schema.FormalParameter("features", "T"),
            schema.FormalParameter("coords", "tensor(int32)"),
            schema.FormalParameter("weight", "T"),
        ],
        outputs=[schema.FormalParameter("output", "T")],
        type_constraints=[("T", ["tensor(float)"], "features, weights and output")],
        attributes=[
            schema.Attribute("subm", schema.AttrType.INT, "1: output coordinates are the input's"),
            schema.Attribute("kernel_size", ints, "(kz, ky, kx)"),
            schema.Attribute("stride", ints, "(sz, sy, sx)"),
            schema.Attribute("padding", ints, "(pz, py, px)"),
        ],
    )


_SPARSE_CONV3D = onnxscript.values.Op(
    onnxscript.values.Opset("hwlat", 1), "SparseConv3d", _onnx_schema()
)


def _sparse_conv3d_onnx(features, coords, weight, subm, kernel_size, stride, padding):
    return _SPARSE_CONV3D(
        features,
        coords,
        weight,
        subm=subm,
        kernel_size=kernel_size,
        stride=stride,
        padding=padding,
    )


# For torch.onnx.export(..., dynamo=True, custom_translation_table=ONNX_TRANSLATIONS).
ONNX_TRANSLATIONS = {torch.ops.hwlat.sparse_conv3d.default: _sparse_conv3d_onnx}
