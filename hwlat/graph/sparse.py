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
    offsets = math.prod(int(k) for k in kernel_size)
    if len(coords) * offsets > MAX_MAP_LOOKUPS:
        raise InvalidInputError(f"a kernel map of {len(coords)} voxels x {offsets} kernel offsets "
                                f"is over hwlat's bound of {MAX_MAP_LOOKUPS} lookups")
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


# --- hwlat.SparseConv3d's schema -----------------------------------------------------------
# onnx's checker cannot check a custom-domain op, so hwlat checks its own before anything reads
# it: attributes (names, types, lengths, ranges), inputs, ranks, element types, and the work its
# declared sizes ask for (kernel maps are built from N voxels x kz*ky*kx offsets).

KERNEL_LIMIT = 9  # per axis
STRIDE_LIMIT = 8  # per axis
MAX_POINTS = 1 << 20  # active voxels a sparse conv may declare
MAX_MAP_LOOKUPS = 1 << 25  # voxels x kernel offsets over a model's kernel maps (a few seconds)
_SPARSE_ATTRS = {"subm": "INT", "kernel_size": "INTS", "stride": "INTS", "padding": "INTS"}
_SPARSE_DEFAULTS = {"subm": 1, "stride": (1, 1, 1), "padding": (0, 0, 0)}
# (input, rank, element type, what dim 1 is); weight [kz*ky*kx, Cin, Cout]
_SPARSE_INPUTS = (("features", 2, "float32"), ("coords", 2, "int32"), ("weight", 3, "float32"))


def sparse_geometry(attrs) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], int]:
    """(kernel_size, stride, padding, subm) of a checked hwlat.SparseConv3d's attributes (a
    mapping or a Node), defaults filled in."""
    get = attrs.attr if hasattr(attrs, "attr") else attrs.get
    return (tuple(get("kernel_size")), tuple(get("stride", _SPARSE_DEFAULTS["stride"])),
            tuple(get("padding", _SPARSE_DEFAULTS["padding"])), int(get("subm", 1)))


def check_sparse_convs(model) -> None:
    """Refuse, with one InvalidModelError line, any hwlat.SparseConv3d node of an onnx
    ModelProto whose schema is wrong or whose declared sizes would make hwlat's work unbounded."""
    from onnx import AttributeProto, helper

    from hwlat.errors import InvalidModelError

    g = model.graph
    declared: dict[str, tuple[int, list]] = {}  # name -> (elem type, dims: int, str or None)
    for vi in [*g.input, *g.value_info, *g.output]:
        tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
        if tt is None:
            continue
        dims = None
        if tt.HasField("shape"):
            dims = [int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or None)
                    for d in tt.shape.dim]
        declared[vi.name] = (tt.elem_type, dims)
    for t in g.initializer:
        declared[t.name] = (t.data_type, [int(d) for d in t.dims])
    lookups = 0
    maps: set = set()
    for idx, n in enumerate(g.node):
        if n.domain != "hwlat" or n.op_type != "SparseConv3d":
            continue
        label = f"hwlat.SparseConv3d {n.name!r} (#{idx})" if n.name else f"hwlat.SparseConv3d #{idx}"

        def bad(why: str, label=label) -> InvalidModelError:
            return InvalidModelError(f"{label}: {why}")

        attrs: dict = {}
        for a in n.attribute:
            want = _SPARSE_ATTRS.get(a.name)
            if want is None:
                raise bad(f"unknown attribute '{a.name}' (takes {', '.join(_SPARSE_ATTRS)})")
            if a.name in attrs:
                raise bad(f"attribute '{a.name}' given twice")
            if a.type != getattr(AttributeProto, want):
                got = AttributeProto.AttributeType.Name(a.type) if a.type in \
                    AttributeProto.AttributeType.values() else str(a.type)
                raise bad(f"attribute '{a.name}' must be {want}, got {got}")
            attrs[a.name] = helper.get_attribute_value(a)
        if "kernel_size" not in attrs:
            raise bad("attribute 'kernel_size' (kz, ky, kx) is missing")
        for name in ("kernel_size", "stride", "padding"):
            value = list(attrs.get(name, _SPARSE_DEFAULTS.get(name, ())))
            if len(value) != 3:
                raise bad(f"attribute '{name}' must hold 3 integers (z, y, x), got {len(value)}")
        k, stride, pad, subm = sparse_geometry(attrs)
        if subm not in (0, 1):
            raise bad(f"attribute 'subm' must be 0 or 1, got {subm}")
        if not all(1 <= x <= KERNEL_LIMIT for x in k):
            raise bad(f"kernel_size {list(k)} must lie in [1, {KERNEL_LIMIT}] per axis")
        if not all(1 <= x <= STRIDE_LIMIT for x in stride):
            raise bad(f"stride {list(stride)} must lie in [1, {STRIDE_LIMIT}] per axis")
        if subm and stride != (1, 1, 1):
            raise bad(f"a submanifold sparse conv (subm=1) has stride 1, got {list(stride)}")
        if not all(0 <= p < x for p, x in zip(pad, k, strict=True)):
            raise bad(f"padding {list(pad)} must lie in [0, kernel_size) per axis for kernel {list(k)}")
        if len(n.input) != 3 or not all(n.input):
            raise bad(f"takes 3 inputs (features, coords, weight), got {len(n.input)} "
                      f"{[i or '<empty>' for i in n.input]}")
        if len(n.output) != 1 or not n.output[0]:
            raise bad(f"has one output, got {len(n.output)}")
        dims: dict[str, list | None] = {}
        for (what, rank, dtype), name in zip(_SPARSE_INPUTS, n.input, strict=True):
            elem, shape = declared.get(name, (0, None))
            if elem and _elem_name(elem) != dtype:
                raise bad(f"{what} '{name}' must be {dtype}, got {_elem_name(elem)}")
            if shape is not None:
                if len(shape) != rank:
                    raise bad(f"{what} '{name}' must have rank {rank}, got {len(shape)}")
                if any(isinstance(d, int) and d < 0 for d in shape):
                    raise bad(f"{what} '{name}' has a negative dimension {shape}")
            dims[what] = shape
        elem, shape = declared.get(n.output[0], (0, None))
        if elem and _elem_name(elem) != "float32":
            raise bad(f"output '{n.output[0]}' must be float32, got {_elem_name(elem)}")
        feats, coords, weight = dims["features"], dims["coords"], dims["weight"]
        if coords is not None and isinstance(coords[1], int) and coords[1] != 4:
            raise bad(f"coords '{n.input[1]}' must be [N, 4] (batch, z, y, x), got {coords}")
        offsets = k[0] * k[1] * k[2]
        if weight is not None:
            if isinstance(weight[0], int) and weight[0] != offsets:
                raise bad(f"weight '{n.input[2]}' must hold {offsets} kernel offsets for kernel "
                          f"{list(k)}, got {weight[0]}")
            if feats is not None and all(isinstance(d, int) for d in (feats[1], weight[1])) \
                    and feats[1] != weight[1]:
                raise bad(f"weight '{n.input[2]}' takes {weight[1]} input channels, features "
                          f"'{n.input[0]}' have {feats[1]}")
        rows = [d[0] for d in (feats, coords) if d is not None and isinstance(d[0], int)]
        if len(rows) == 2 and rows[0] != rows[1]:
            raise bad(f"{rows[0]} feature rows for {rows[1]} coordinate rows")
        if rows and rows[0] > MAX_POINTS:
            raise bad(f"declares {rows[0]} active voxels; hwlat takes at most {MAX_POINTS}")
        geometry = (n.input[1], k, stride, pad, subm)
        if rows and geometry not in maps:
            maps.add(geometry)
            lookups += rows[0] * offsets
            if lookups > MAX_MAP_LOOKUPS:
                raise bad(f"its kernel maps take {lookups} voxel x offset lookups in all; hwlat "
                          f"takes at most {MAX_MAP_LOOKUPS}")


def _elem_name(elem: int) -> str:
    from onnx import helper

    try:
        return str(np.dtype(helper.tensor_dtype_to_np_dtype(elem)))
    except Exception:
        return f"element type {elem}"
