"""The TIR of hwlat's sparse 3D convolution: a kernel map built over a hash of the active
coordinates, then gather-GEMM-scatter per kernel offset. Hand-scheduled for one x86 core with
AVX2 (no tuning needed; marked `tirx.is_scheduled`); the voxel counts are symbolic extents.

`kernel_map` (input coords, output coords -> pair lists and their chunk segments)
  1. checks every input coordinate (non-negative, inside the packing limits) and inserts its
     packed (batch, z, y, x) key into an open-addressing hash table (multiplicative hash, linear
     probing, a power-of-two capacity at least twice the voxel count), refusing a duplicate, and
     sets its bit in an occupancy filter (the grid folded to 128^3 bits);
  2. neighbour table, in parallel over offsets: for each output voxel, the input row it reads
     through offset k (filter first, then the hash table). For a centred odd submanifold kernel,
     offsets k and K-1-k mirror each other: one lookup fills both, and the centre is the identity;
  3. compaction, in parallel over offsets: the hits of offset k as (input row, output row) pairs
     in output order, padded with row 0 to a whole tile, and where each chunk of CHUNK output
     rows starts in that list.

`gemm` (features, weight, pair lists, segments -> output features)
  in parallel over output chunks (each owns its rows: no write conflicts), for each offset k,
  tiles of `rows` pairs of that chunk: gather the input rows, multiply by weight[k] with the
  rows x width accumulator tile in registers (vectorised over Cout), scatter-add into the output
  rows, which stay in cache across the offsets.

Runtime checks are TIR assertions raising ValueError with a message that starts with
`hwlat.SparseConv3d:`; the Python API (conv.py) checks the same rules first and names the row.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm.script import tirx as T

AXIS_BITS = 16
AXIS_LIMIT = 1 << AXIS_BITS  # z, y, x each lie in [0, AXIS_LIMIT)
BATCH_LIMIT = 1 << (63 - 3 * AXIS_BITS)  # batch lies in [0, BATCH_LIMIT)
_MULTIPLIER = 0x5851F42D4C957F2D  # odd 63-bit multiplier (PCG's): multiplicative hashing
VECTOR_LANES = 8  # fp32 lanes of one AVX2 register
ACC_REGISTERS = 12  # accumulator registers a tile may hold (of 16 ymm)
CHUNK = 512  # output rows per GEMM task: their accumulators stay in L2 across the kernel offsets

# Occupancy filter: one bit per cell of the grid folded to 2^FILTER_AXIS_BITS per axis (exact for
# grids up to that size); most neighbour lookups of a sparse grid end there, before the hash table.
FILTER_AXIS_BITS = 7
FILTER_WORDS = 1 << (3 * FILTER_AXIS_BITS - 5)

ERR_RANGE = (
    f"hwlat.SparseConv3d: coords must be integers in [0, {AXIS_LIMIT}) per axis and "
    f"[0, {BATCH_LIMIT}) per batch"
)
ERR_DUPLICATE = "hwlat.SparseConv3d: duplicate coordinates in coords: voxelize the points first"


@dataclass(frozen=True)
class ConvGeometry:
    """Kernel size, stride and padding per axis (z, y, x), and whether it is submanifold."""

    kernel_size: tuple[int, int, int]
    stride: tuple[int, int, int] = (1, 1, 1)
    padding: tuple[int, int, int] = (0, 0, 0)
    subm: bool = True

    @property
    def volume(self) -> int:
        kz, ky, kx = self.kernel_size
        return kz * ky * kx

    @property
    def mirrored(self) -> bool:
        """Offsets k and K-1-k are each other's negation and k = K//2 is the identity."""
        return (self.subm and self.stride == (1, 1, 1)
                and all(k % 2 == 1 and p == k // 2
                        for k, p in zip(self.kernel_size, self.padding, strict=True)))


def hash_capacity(n: int) -> int:
    """Rows of the hash table for n voxels: a power of two, load factor at most 1/2."""
    return max(16, 1 << (2 * max(n, 1) - 1).bit_length())


def gemm_tile(cout: int) -> tuple[int, int]:
    """(rows, Cout width) of one register tile of the GEMM: 6 x 16 (12 accumulator registers)
    measured faster than 3 x 32 and 2 x 32 here."""
    width = min(cout, 2 * VECTOR_LANES)
    return max(1, ACC_REGISTERS // -(-width // VECTOR_LANES)), width


def map_shapes(n: int, m: int, geom: ConvGeometry) -> dict[str, tuple[tuple[int, ...], str]]:
    """Shape and dtype of each output of `kernel_map` for n input and m output voxels, in order."""
    rows = ACC_REGISTERS  # padding for the tallest tile any Cout uses
    K = geom.volume
    return {
        "table": ((hash_capacity(n), 2), "int64"),
        "filter": ((FILTER_WORDS,), "uint32"),
        "neighbour": ((K, m), "int32"),
        "pair_in": ((K, m + rows), "int32"),
        "pair_out": ((K, m + rows), "int32"),
        "segment": ((K, -(-m // CHUNK) + 1), "int32"),
    }


def kernel_map(geom: ConvGeometry) -> tvm.tirx.PrimFunc:
    """PrimFunc(in_coords[n,4], out_coords[m,4] -> table, filter, neighbour, pair_in, pair_out,
    segment), shapes as `map_shapes` gives. For a submanifold conv out_coords is in_coords (the
    same tensor may be passed twice).

    table[t, 2]: the hash table, rows (packed key, input row), key -1 when empty, t a power of
    two >= 2n; filter: the occupancy bits; neighbour[k, o]: the input row output o reads through
    offset k, or -1; pair_in/pair_out[k, :]: the hits of offset k in output order, then `rows`
    padding entries of row 0 (`ACC_REGISTERS` of them, a whole tile of any GEMM); segment[k, c]: where output chunk c (CHUNK rows) starts in the
    pair list of k, and segment[k, -1] its length. All but the last three are scratch.
    """
    K = geom.volume
    kz, ky, kx = geom.kernel_size
    pz, py, px = geom.padding
    sz, sy, sx = geom.stride
    mirrored = geom.mirrored
    lookups = K // 2 + 1 if mirrored else K
    centre = K // 2
    rows = ACC_REGISTERS
    chunk = CHUNK
    limit = AXIS_LIMIT
    batch_limit = BATCH_LIMIT
    multiplier = _MULTIPLIER
    fbits = FILTER_AXIS_BITS
    fmask = (1 << FILTER_AXIS_BITS) - 1
    words = FILTER_WORDS

    def pack(b, z, y, x):  # PrimExprs, built while the script below is parsed
        return (T.Cast("int64", b) << T.int64(48)) | (T.Cast("int64", z) << T.int64(32)) \
            | (T.Cast("int64", y) << T.int64(16)) | T.Cast("int64", x)

    def filter_bit(z, y, x):
        return ((z & fmask) << (2 * fbits)) | ((y & fmask) << fbits) | (x & fmask)

    @T.macro
    def find(slot, table, t, key):
        # slot[0] <- the input row whose key is `key`, or -1; slot[1] <- where the probe ended
        slot[1] = T.Cast("int32", ((T.Cast("uint64", key) * T.uint64(multiplier)) >> T.uint64(32))
                         & T.Cast("uint64", t - 1))
        slot[0] = -2
        while slot[0] == -2:
            if table[slot[1], 0] == key:
                slot[0] = T.Cast("int32", table[slot[1], 1])
            elif table[slot[1], 0] == T.int64(-1):
                slot[0] = -1
            else:
                slot[1] = (slot[1] + 1) & (t - 1)

    @T.prim_func(s_tir=True)
    def sparse_kernel_map(c_in: T.handle, c_out: T.handle, h_table: T.handle, h_filter: T.handle,
                          h_nbr: T.handle, p_in: T.handle, p_out: T.handle, p_seg: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        n = T.int32()
        m = T.int32()
        t = T.int32()
        mp = T.int32()
        nc = T.int32()
        cin = T.match_buffer(c_in, (n, 4), "int32")
        cout = T.match_buffer(c_out, (m, 4), "int32")
        table = T.match_buffer(h_table, (t, 2), "int64")
        occupied = T.match_buffer(h_filter, (words,), "uint32")
        nbr = T.match_buffer(h_nbr, (K, m), "int32")
        pair_in = T.match_buffer(p_in, (K, mp), "int32")
        pair_out = T.match_buffer(p_out, (K, mp), "int32")
        segment = T.match_buffer(p_seg, (K, nc), "int32")
        T.Assert(mp == m + rows and nc == (m + chunk - 1) // chunk + 1 and t >= 2 * n
                 and (t & (t - 1)) == 0, "hwlat.SparseConv3d: kernel map buffers of the wrong size",
                 "ValueError")
        for s in T.parallel(t):
            table[s, 0] = T.int64(-1)
        for s in T.parallel(words):
            occupied[s] = T.uint32(0)
        for k in T.parallel(K):
            for o in range(m):
                nbr[k, o] = -1
        # 1. insert every input voxel, checking its coordinates and refusing duplicates
        for i in range(n):
            T.Assert(cin[i, 0] >= 0 and cin[i, 0] < batch_limit and cin[i, 1] >= 0
                     and cin[i, 1] < limit and cin[i, 2] >= 0 and cin[i, 2] < limit
                     and cin[i, 3] >= 0 and cin[i, 3] < limit, ERR_RANGE, "ValueError")
            slot = T.alloc_buffer((2,), "int32")
            key: T.let[T.int64] = pack(cin[i, 0], cin[i, 1], cin[i, 2], cin[i, 3])
            find(slot, table, t, key)
            T.Assert(slot[0] == -1, ERR_DUPLICATE, "ValueError")
            table[slot[1], 0] = key
            table[slot[1], 1] = T.Cast("int64", i)
            bit: T.let[T.int32] = filter_bit(cin[i, 1], cin[i, 2], cin[i, 3])
            occupied[bit >> 5] = occupied[bit >> 5] | (T.uint32(1) << T.Cast("uint32", bit & 31))
        # 2. neighbour table: per offset, the input each output reads (mirrored: both directions)
        for k in T.parallel(lookups):
            slot = T.alloc_buffer((2,), "int32")
            if mirrored and k == centre:
                for o in range(m):
                    nbr[centre, o] = o
            else:
                oz: T.let[T.int32] = k // (ky * kx) - pz
                oy: T.let[T.int32] = k // kx % ky - py
                ox: T.let[T.int32] = k % kx - px
                for o in range(m):
                    z: T.let[T.int32] = cout[o, 1] * sz + oz
                    y: T.let[T.int32] = cout[o, 2] * sy + oy
                    x: T.let[T.int32] = cout[o, 3] * sx + ox
                    bit: T.let[T.int32] = filter_bit(z, y, x)
                    if z >= 0 and z < limit and y >= 0 and y < limit and x >= 0 and x < limit \
                            and (occupied[bit >> 5] >> T.Cast("uint32", bit & 31)) & T.uint32(1) \
                            == T.uint32(1):
                        find(slot, table, t, pack(cout[o, 0], z, y, x))
                        if slot[0] >= 0:
                            nbr[k, o] = slot[0]
                            if mirrored:
                                nbr[K - 1 - k, slot[0]] = o
        # 3. per offset, the hits in output order, with where each output chunk starts
        for k in T.parallel(K):
            count = T.alloc_buffer((1,), "int32")
            count[0] = 0
            for o in range(m):
                if o % chunk == 0:
                    segment[k, o // chunk] = count[0]
                if nbr[k, o] >= 0:
                    pair_in[k, count[0]] = nbr[k, o]
                    pair_out[k, count[0]] = o
                    count[0] = count[0] + 1
            segment[k, nc - 1] = count[0]
            for p in range(rows):  # a tile that overruns its segment gathers row 0
                pair_in[k, count[0] + p] = 0
                pair_out[k, count[0] + p] = 0

    return sparse_kernel_map


def gemm(volume: int, cin: int, cout: int, tile: tuple[int, int] | None = None) -> tvm.tirx.PrimFunc:
    """PrimFunc(features[n,cin], weight[K,cin,cout], pair_in, pair_out, segment -> out[m,cout]):
    gather-GEMM-scatter over the kernel map, one output chunk per task."""
    K = volume
    rows, width = tile or gemm_tile(cout)
    tiles = -(-cout // width)
    C_in = cin
    C_out = cout
    chunk = CHUNK

    @T.prim_func(s_tir=True)
    def sparse_gemm(f: T.handle, w: T.handle, p_in: T.handle, p_out: T.handle,
                    p_seg: T.handle, o: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        n = T.int32()
        m = T.int32()
        mp = T.int32()
        nc = T.int32()
        feat = T.match_buffer(f, (n, C_in), "float32")
        weight = T.match_buffer(w, (K, C_in, C_out), "float32")
        pair_in = T.match_buffer(p_in, (K, mp), "int32")
        pair_out = T.match_buffer(p_out, (K, mp), "int32")
        segment = T.match_buffer(p_seg, (K, nc), "int32")
        out = T.match_buffer(o, (m, C_out), "float32")
        for c in T.parallel(nc - 1):
            for r in range(c * chunk, T.min(m, c * chunk + chunk)):
                for j in T.vectorized(C_out):
                    out[r, j] = T.float32(0)
            for k in range(K):
                for b in range((segment[k, c + 1] - segment[k, c] + rows - 1) // rows):
                    for tile in range(tiles):
                        acc = T.alloc_buffer((rows, width), "float32")
                        src = T.alloc_buffer((rows,), "int32")
                        for r in T.unroll(rows):
                            src[r] = pair_in[k, segment[k, c] + b * rows + r]
                            for j in T.vectorized(width):
                                acc[r, j] = T.float32(0)
                        for ci in range(C_in):
                            for r in T.unroll(rows):
                                for j in T.vectorized(width):
                                    if tile * width + j < C_out:
                                        acc[r, j] = acc[r, j] + feat[src[r], ci] \
                                            * weight[k, ci, tile * width + j]
                        for r in T.unroll(rows):
                            if segment[k, c] + b * rows + r < segment[k, c + 1]:
                                for j in T.vectorized(width):
                                    if tile * width + j < C_out:
                                        out[pair_out[k, segment[k, c] + b * rows + r],
                                            tile * width + j] = \
                                            out[pair_out[k, segment[k, c] + b * rows + r],
                                                tile * width + j] + acc[r, j]

    return sparse_gemm
