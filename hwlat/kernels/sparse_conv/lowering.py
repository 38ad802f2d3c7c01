"""`hwlat.SparseConv3d` -> two `R.call_tir`s: the kernel map over the coordinates, then the
gather-GEMM-scatter over the features (kernel.py).

Submanifold convs only: their output has the input's voxels, so every shape is static. A strided
conv's output count depends on which voxels share a cell, known only from the data; it is
refused with that reason. Layers that share coordinates and kernel geometry (every layer of a
submanifold net) share one kernel map.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tvm
from tvm import relax

from hwlat.errors import InvalidModelError
from hwlat.kernels.sparse_conv import kernel
from hwlat.kernels.sparse_conv.kernel import ConvGeometry

OP = "hwlat.SparseConv3d"

# Kernel maps emitted so far by the import in progress: (coords expr, geometry) -> map outputs.
# The builder is held (not just its id) so that a new import can never be mistaken for it.
_maps: dict[str, Any] = {"builder": None, "maps": {}}


def _static_shape(expr, what: str, rank: int) -> list[int]:
    ty = expr.ty
    shape = getattr(ty, "shape", None)
    if shape is None or not hasattr(shape, "values") or getattr(ty, "ndim", -1) != rank:
        raise InvalidModelError(f"{OP}: {what} must be a tensor of rank {rank} with a known shape")
    try:
        return [int(v) for v in shape.values]
    except TypeError:
        raise InvalidModelError(f"{OP}: {what} has a dynamic shape {shape}; export with a fixed "
                                "number of voxels") from None


def _triple(attrs: dict, name: str, default: tuple[int, int, int] | None) -> tuple[int, int, int]:
    value = attrs.get(name, default)
    if value is None or len(value) != 3:
        raise InvalidModelError(f"{OP}: attribute {name} must hold 3 integers (z, y, x), got {value}")
    return tuple(int(v) for v in value)


def geometry_of(attrs: dict) -> ConvGeometry:
    subm = int(attrs.get("subm", 1))
    geom = ConvGeometry(_triple(attrs, "kernel_size", None), _triple(attrs, "stride", (1, 1, 1)),
                        _triple(attrs, "padding", (0, 0, 0)), bool(subm))
    if not geom.subm:
        raise InvalidModelError(
            f"{OP} with subm=0 (stride {list(geom.stride)}) is not lowered: its number of output "
            "voxels depends on the coordinates, so the compiled graph cannot have a static shape; "
            "hwlat lowers submanifold sparse convs (subm=1)")
    if geom.stride != (1, 1, 1):
        raise InvalidModelError(f"{OP}: a submanifold conv has stride 1, got {list(geom.stride)}")
    if min(geom.kernel_size) < 1 or min(geom.padding) < 0:
        raise InvalidModelError(f"{OP}: bad kernel_size {list(geom.kernel_size)} or padding "
                                f"{list(geom.padding)}")
    return geom


def _kernel_map(bb: relax.BlockBuilder, coords, n: int, geom: ConvGeometry):
    if _maps["builder"] is not bb:
        _maps["builder"], _maps["maps"] = bb, {}
    key = (coords, geom)
    if key not in _maps["maps"] and isinstance(coords, tvm.ir.expr.Constant):
        # coordinates fixed at compile time (a deployed scene, or a kernel timed without its
        # map, as the table keys a conv that reuses one): the map is built now, once
        shapes = kernel.map_shapes(n, n, geom)
        built = _map_now(geom, coords.value.numpy(), shapes)
        _maps["maps"][key] = {f: bb.emit(relax.const(built[f], shapes[f][1]))
                              for f in ("pair_in", "pair_out", "segment")}
    if key not in _maps["maps"]:
        k, p = geom.kernel_size, geom.padding
        name = "hwlat_sparse_kernel_map_k{}_p{}".format("x".join(map(str, k)), "x".join(map(str, p)))
        gv = bb.add_func(kernel.kernel_map(geom).with_attr("global_symbol", name), name)
        shapes = kernel.map_shapes(n, n, geom)
        out_ty = [relax.TensorType(shape, dtype) for shape, dtype in shapes.values()]
        built = bb.emit(relax.call_tir(gv, [coords, coords], out_ty))
        fields = list(shapes)
        _maps["maps"][key] = {f: bb.emit(relax.TupleGetItem(built, fields.index(f)))
                              for f in ("pair_in", "pair_out", "segment")}
    return _maps["maps"][key]


def _map_now(geom: ConvGeometry, coords: np.ndarray, shapes: dict) -> dict[str, np.ndarray]:
    """The kernel map of constant coordinates, built by the same TIR kernel on this CPU."""
    import tvm

    from hwlat.kernels.sparse_conv.conv import check_coords
    from hwlat.kernels.target import host_target

    check_coords(coords)  # the row that is wrong, before the kernel's own check
    lib = tvm.compile(tvm.IRModule({"map": kernel.kernel_map(geom).with_attr("global_symbol", "map")}),
                      target=host_target()).jit()
    dev = tvm.cpu(0)
    c = tvm.runtime.tensor(np.ascontiguousarray(coords, dtype=np.int32), dev)
    outs = {name: tvm.runtime.tensor(np.empty(shape, dtype), dev)
            for name, (shape, dtype) in shapes.items()}
    lib["map"](c, c, *outs.values())
    return {name: t.numpy() for name, t in outs.items()}


def convert(bb: relax.BlockBuilder, inputs: list, attrs: dict):
    if len(inputs) != 3:
        raise InvalidModelError(f"{OP} takes features, coords and weight, got {len(inputs)} inputs")
    features, coords, weight = inputs
    geom = geometry_of(attrs)
    n, cin = _static_shape(features, "features", 2)
    nc, four = _static_shape(coords, "coords", 2)
    volume, wcin, cout = _static_shape(weight, "weight", 3)
    if four != 4 or coords.ty.dtype != "int32":
        raise InvalidModelError(f"{OP}: coords must be int32 [N, 4], got {coords.ty.dtype}[{nc}, {four}]")
    if nc != n:
        raise InvalidModelError(f"{OP}: {n} feature rows for {nc} coordinates: one row per voxel")
    if features.ty.dtype != "float32" or weight.ty.dtype != "float32":
        raise InvalidModelError(f"{OP}: features and weight must be float32")
    if volume != geom.volume or wcin != cin:
        raise InvalidModelError(f"{OP}: weight must be [{geom.volume}, {cin}, Cout] for kernel "
                                f"{list(geom.kernel_size)} and {cin} channels, got "
                                f"[{volume}, {wcin}, {cout}]")
    kmap = _kernel_map(bb, coords, n, geom)
    name = f"hwlat_sparse_gemm_k{geom.volume}_{cin}x{cout}"
    gv = bb.add_func(kernel.gemm(geom.volume, cin, cout).with_attr("global_symbol", name), name)
    return relax.call_tir(gv, [features, weight, kmap["pair_in"], kmap["pair_out"], kmap["segment"]],
                          relax.TensorType((n, cout), "float32"))


def refuse(node) -> str | None:
    """Why a node cannot be lowered (asked before the import): strided convs."""
    subm = next((a.i for a in node.attribute if a.name == "subm"), 1)
    if subm == 0:
        return ("strided sparse convs (subm=0) are not lowered: their number of output voxels "
                "depends on the coordinates")
    return None
