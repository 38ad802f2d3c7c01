"""Dense conv2d (groups == 1, NCHW input, OIHW weight) as a hand-scheduled TIR PrimFunc for one
or more x86 cores with AVX2 + FMA; any kernel size, stride, padding and dilation, batch >= 1, the
epilogue y = act(conv + bias + residual) fused into the store.

The conv is a GEMM: rows are output channels, columns output pixels, the reduction runs over
(cin, kh, kw). Two register micro-kernels (an accumulator tile of mr rows x nr = 8 * nv columns,
mr * nv <= 12 of the 16 ymm registers):

- ``"cout"`` rows (the usual one): acc[co][pixel] += w[co] (broadcast) * x[pixels] (vector),
  the weight packed as (ceil(cout / mr), cin, kh, kw, mr) so the broadcasts are sequential;
  output rows are vector stores along the pixels of y;
- ``"pixels"`` rows (few output pixels: 7x7 and 1x1 maps): acc[pixel][co] += x[pixel]
  (broadcast) * w[co] (vector), the weight packed as (ceil(cout / nr), cin, kh, kw, nr); no
  pixel-tile padding wasted, stores are scalar (cheap next to the long reductions of those layers).
  A 1x1 conv on a 1x1 map of one image is a GEMV, and its default plan (16-channel "pixels"
  rows) runs the matmul kernel's GEMV (`is_gemv`), which reads the weight in two streams.

Output channels past cout are zero weight rows, never stored; where the "cout" kernel runs
through the scratch, a ragged last block runs a shorter tile of only its real rows instead
(its broadcasts skip the zero rows), and kernels of up to 9 taps have the taps unrolled (the
phase offsets become constant displacements).

Input access. A 1x1, stride 1, unpadded conv reads x in place (a plain GEMM over p = h * w).
Every other conv first copies each image into a zero-padded scratch split into stride phases
(each input row is vector-copied into a zero-padded row, and each phase row is one vector read of
it with stride sw, so a stride-2 copy de-interleaves in vector code):
phase (a, b) holds the padded input's rows a, a + sh, ... and columns b, b + sw, ..., as a plane
of width Wph (at most OW + the largest column shift; less where a row's right padding can be the
next row's leading zero columns, e.g. W + 1 for a 3x3 pad 1 stride 1 conv). Output pixel (oh, ow) then lives at q = oh * Wph + ow, and
tap (kh, kw) of it reads phase ((kh * dh) % sh, (kw * dw) % sw) at q + ((kh * dh) // sh) * Wph
+ (kw * dw) // sw: every tap is a contiguous, shifted vector load, whatever the stride or
dilation. Columns ow >= OW of q are computed and dropped; where Wph > OW (padding or kernel wider
than the stride) the "cout" kernel stores its tiles into a per-task scratch over whole output rows,
which the epilogue copies into y. Where the whole-image scratch outgrows L2 but the rows one
task reads fit in 64 KB (stems), each task copies just those rows into its own scratch, right
before reading them (`task_scratch`), and prefetches the next task's rows while it computes,
and its own output rows for writing (`_prefetch_w`).

Parallel over (image, pixel chunk) tasks ("cout") or (image, output-channel blocks) ("pixels").
Where a weight is reused over pixel tiles, the kernels prefetch the next channel block's weight
rows (`_prefetch`) while computing this one's: in every tile with pixel rows, in a task's first
tile with channel rows (the later tiles find the weight in L2).
Where the input rows one tile reads over all of cin overflow L1 the reduction runs in blocks of
kc channels (partial sums in a per-task buffer, tile after tile in the order they are read).
`default_plan` picks tile, chunk and blocks
from the shape (measured on an AMD EPYC znver3, 1 thread); `Plan` overrides it. The packed
weight's layout depends on the plan: pack with the plan the PrimFunc is built with.

The CPU (`hwlat.kernels.cpu`, default AVX2) picks the plan: on AVX-512 (32 zmm registers) the
plans have vectors of 16 floats (`Plan.lanes`), "cout" tiles of up to 12 channels x 32 pixels (24
accumulators; 7x7 stems 8 x 48, three 16-lane vectors) and "pixels" tiles twice as many channels
wide (long reductions through the scratch: 8 or 7 pixels x 32 channels), reduction blocks sized
by the L1d (`_plan_512`); AVX2 targets get the plans above, unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import tirx
from tvm.script import tirx as T

from hwlat.graph import dense_block
from hwlat.kernels.cpu import AVX2, CpuInfo
from hwlat.kernels.dense import matmul
from hwlat.kernels.dense.activation import activate, residual_input
from hwlat.kernels.dense.spec import Conv2dSpec, Epilogue

LANES = 8  # fp32 lanes of one AVX2 register
ACC_REGISTERS = 12  # of the 16 ymm registers, the ones a tile's accumulators may take
ACC_REGISTERS_512 = 28  # of the 32 zmm registers (AVX-512: plans with lanes 16)
ROWS = ("cout", "pixels")


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Plan:
    """How a conv is computed: which GEMM axis the tile's rows are (``"cout"`` or ``"pixels"``),
    the register tile (mr rows x nv vectors of 8), and

    - chunk: per parallel task, output rows (``"cout"`` rows through the scratch) or 16-pixel
      tiles (``"cout"`` rows storing directly); unused by ``"pixels"`` rows;
    - kc: input channels per reduction block (0: all), partial sums kept in a per-task buffer:
      the input rows a tile reads stay in L1 across the output-channel blocks;
    - mb: output-channel blocks per weight block (``"cout"`` rows through the scratch) or per
      task (``"pixels"`` rows); 0: all.
    """

    rows: str = "cout"
    mr: int = 6
    nv: int = 2
    chunk: int = 8
    co_outer: bool = False  # "cout" rows storing directly: channel blocks outside the pixel tiles
    kc: int = 0  # not "cout" rows storing directly
    mb: int = 0
    lanes: int = LANES  # fp32 lanes of a vector: 8 (AVX2) or 16 (AVX-512)

    def __post_init__(self):
        if self.rows not in ROWS:
            raise ValueError(f"rows must be one of {ROWS}, got {self.rows!r}")
        if self.lanes not in (LANES, 2 * LANES):
            raise ValueError(f"lanes must be {LANES} or {2 * LANES}, got {self.lanes}")
        acc = ACC_REGISTERS if self.lanes == LANES else ACC_REGISTERS_512
        if self.mr < 1 or self.nv < 1 or self.mr * self.nv > acc or self.chunk < 1:
            raise ValueError(f"bad tile {self.mr} x {self.nv} vectors, chunk {self.chunk}")

    @property
    def nr(self) -> int:
        return self.nv * self.lanes

    @property
    def block(self) -> int:
        """Output channels per packed weight block."""
        return self.mr if self.rows == "cout" else self.nr


@dataclass(frozen=True)
class _Geom:
    direct: bool  # x read in place (1x1, stride 1, no padding)
    nph_h: int  # stride phases kept per axis
    nph_w: int
    hrows: int  # rows of a phase plane that hold input
    wph: int  # width of a phase plane (and of the q rows)
    plane: int  # floats per phase plane (with the zero tail that tiles overrun into)
    dense: bool  # q is the output pixel index (Wph == OW)


def _geom(spec: Conv2dSpec, plan: Plan) -> _Geom:
    kh, kw = spec.kernel
    sh, sw = spec.stride
    dh, dw = spec.dilation
    oh, ow = spec.out_height, spec.out_width
    direct = (kh, kw) == (1, 1) and spec.stride == (1, 1) and not any(spec.padding)
    if direct:
        return _Geom(True, 1, 1, oh, ow, oh * ow, True)
    rsh, csh = (kh - 1) * dh // sh, (kw - 1) * dw // sw
    nph_h = max((i * dh) % sh for i in range(kh)) + 1
    nph_w = max((j * dw) % sw for j in range(kw)) + 1
    hrows = oh + rsh
    pl, w = spec.padding[1], spec.width
    wph = 1
    for b in range(nph_w):  # the plane width each column phase b needs
        shifts = [j * dw // sw for j in range(kw) if (j * dw) % sw == b]
        if not shifts:
            continue
        lead = max(0, _ceil(pl - b, sw))  # its zero columns left of the input
        cols = max(0, _ceil(pl + w - b, sw) - lead)  # and its input columns
        reach = ow + max(shifts)  # columns the outputs read
        # a row either holds every column read, or its input columns, with reads past its end
        # wrapping into the next row's leading zero columns (they double as right padding)
        wph = max(wph, reach - lead, min(lead + cols, reach))
    q_end = oh * wph + max(plan.nr, plan.mr)  # tiles overrun the last output row by < a tile
    plane = _ceil(max((hrows + 1) * wph, q_end + rsh * wph + csh), LANES) * LANES
    return _Geom(False, nph_h, nph_w, hrows, wph, plane, wph == ow)


def default_plan(spec: Conv2dSpec, cpu: CpuInfo | None = None) -> Plan:
    """The plan measured best for the spec's shape class on the CPU (default: AVX2, measured on
    an AMD EPYC znver3, 1 thread; AVX-512: `_plan_512`)."""
    if (cpu or AVX2).avx512:
        return _plan_512(spec, cpu)
    return _plan_avx2(spec)


def _plan_512(spec: Conv2dSpec, cpu: CpuInfo) -> Plan:
    """AVX-512 (32 zmm registers, vectors of 16 floats): the AVX2 plan's shape class with the
    register tile widened to 16-float vectors and, for "cout" rows, up to 12 channel rows
    (24 accumulators) of 32 pixels; the reduction blocks sized by this CPU's L1d."""
    base = _plan_avx2(spec)
    if is_gemv(spec, base):
        return base  # the matmul kernel's GEMV: memory bound, panels of 16 channels
    if base.rows == "pixels":
        g = _geom(spec, base)
        if base.mr >= 3 and spec.cin >= 128 and spec.cout >= 64 and not g.direct:
            # long reductions through the scratch (3x3 on 7x7 maps): 8 (or 7) pixels x 32
            # channels (16 accumulators), the tile over the q positions with the fewest padded
            # ones: per FMA half the weight vectors of 4 pixels x 64 channels, whose weight
            # block streams from L2 (512x7x7 3x3 0.92x, 256x14x14 -> 512 s2 0.90x the time of
            # 4 x 64 isolated; 12 or 14 rows were far slower; docs/notebook/compile.md)
            qv = spec.out_height * g.wph
            mr = min((8, 7), key=lambda m: _ceil(qv, m) * m)
            return Plan("pixels", mr, 2, kc=base.kc, lanes=2 * LANES)
        return Plan("pixels", base.mr, base.nv, kc=base.kc, lanes=2 * LANES)
    mr = min(CONV_MR_512, key=lambda m: _ceil(spec.cout, m) * m * (1 + 0.03 * (12 - m)))
    g = _geom(spec, Plan("cout", mr, 2, lanes=2 * LANES))
    if g.dense:
        if base.co_outer:  # the same pixel runs per channel block as the AVX2 plan
            return Plan("cout", mr, 2, chunk=_ceil(base.chunk, 2), co_outer=True, lanes=2 * LANES)
        return Plan("cout", mr, 2, chunk=64, lanes=2 * LANES)
    if spec.cin <= 4 and spec.kernel[0] * spec.kernel[1] >= 25:
        # stems with large kernels (7x7): 8 channel rows x 3 vectors (24 accumulators), tasks
        # of 10 rows: 0.87-0.89x the time of 8 x 2 vectors (3x3 stems: 1.08-1.16x, kept)
        mr3 = min((8, 6), key=lambda m: _ceil(spec.cout, m) * m)
        return Plan("cout", mr3, 3, chunk=10, lanes=2 * LANES)
    # reduction blocks: the rows a 32-pixel tile reads of kc channels (three cache lines per
    # distinct phase row of the taps) stay in half of L1 across the channel blocks
    kc = max(8, cpu.l1d_bytes // 2 // (192 * _segments(spec)) // 8 * 8)
    if spec.stride == (1, 1):
        # stride 1: blocks of up to twice that, of equal size (none up to 2 kc channels): the
        # partial sums between blocks cost more than the L1 misses of the larger blocks
        # (64x56x56 -> 64 3x3: no blocks 0.90-1.06x onnxruntime, 40 + 24 1.23-1.37x; 128x28x28:
        # 64 + 64 0.74x, 40 x 3 + 8 0.95x; XEON-2c, docs/notebook/compile.md)
        kc = _ceil(spec.cin, _ceil(spec.cin, 2 * kc))
    return Plan("cout", mr, 2, chunk=max(1, 2048 // g.wph), kc=kc if kc < spec.cin else 0,
                lanes=2 * LANES)


def _segments(spec: Conv2dSpec) -> int:
    """Distinct (phase, row shift) pairs of the taps: the input rows one output row reads."""
    sh, sw = spec.stride
    dh, dw = spec.dilation
    return len({((i * dh) % sh, (j * dw) % sw, i * dh // sh)
                for i in range(spec.kernel[0]) for j in range(spec.kernel[1])})


CONV_MR_512 = (12, 10, 8, 6)  # "cout" tile rows AVX-512 plans choose from


def _plan_avx2(spec: Conv2dSpec) -> Plan:
    pixels = spec.out_height * spec.out_width
    if pixels < 64 and spec.cout >= 32:
        # tile rows over the q positions (fewest padded ones, then the taller tile); 6 rows and
        # vectors of 24 or 48 channels measured far slower; a single row takes 64 channels
        g1 = _geom(spec, Plan("pixels", 1, 1))
        qv = spec.out_height * g1.wph
        if qv == 1 and spec.batch == 1 and g1.direct:
            return Plan("pixels", 1, matmul.NR // LANES)  # a GEMV (is_gemv), two weight streams
        mr = min((5, 4, 3), key=lambda m: (_ceil(qv, m) * m, -m)) if qv >= 3 else qv
        nv = 8 if mr == 1 else 4 if mr == 2 else 2
        g = _geom(spec, Plan("pixels", mr, nv))
        # reduction blocks whose input (<= ~19 KB: 96 channels of a 7x7 map) stays in L1 across
        # the channel blocks, as few as that allows, of equal size: faster in-model on OFA's net
        # than blocks of 80 channels and a short last one (192 channels: 80 + 80 + 32, now
        # 96 + 96); blocks of up to 128 channels were slower (docs/notebook/compile.md)
        most = max(16, 4704 // g.plane)
        kc = _ceil(spec.cin, _ceil(spec.cin, most))
        return Plan("pixels", mr, nv, kc=kc if kc < spec.cin else 0)
    # cout rows, 16 pixels (two vectors: 24 or 32 measured far slower): the mr in 4..6 with
    # the fewest padded channels, a fewer-row tile (fewer accumulators) counted 5 % slower a row
    mr = min((6, 5, 4), key=lambda m: _ceil(spec.cout, m) * m * (1 + 0.05 * (6 - m)))
    g = _geom(spec, Plan("cout", mr, 2))
    if g.dense:
        if pixels >= 3136:
            # large maps (56x56 and up): each channel block runs over 16 (112x112 and up: 32)
            # pixel tiles before the next, so the output is written in 1-2 KB runs per channel
            # instead of 64 bytes in each of cout streams at once (faster in-model on OFA and
            # MobileNetV2, and far faster isolated with a cold cache: docs/notebook/compile.md)
            return Plan("cout", mr, 2, chunk=32 if pixels >= 12544 else 16, co_outer=True)
        return Plan("cout", mr, 2, chunk=128)
    # reduction blocks: the rows a 16-pixel tile reads of kc channels (two cache lines per
    # distinct phase row of the taps) stay in L1 (~16 KB) across the channel blocks
    kc = max(8, 16384 // (128 * _segments(spec)) // 8 * 8)
    return Plan("cout", mr, 2, chunk=max(1, 1024 // g.wph), kc=kc if kc < spec.cin else 0)


def supports(spec: Conv2dSpec) -> str | None:
    if spec.groups != 1:
        return f"groups={spec.groups}: this kernel takes groups == 1 only"
    if spec.batch < 1 or spec.cin < 1 or spec.cout < 1:
        return "batch, cin and cout must be >= 1"
    if min(spec.kernel) < 1 or min(spec.stride) < 1 or min(spec.dilation) < 1:
        return "kernel, stride and dilation must be >= 1"
    if min(spec.padding) < 0:
        return "negative padding"
    if spec.out_height < 1 or spec.out_width < 1:
        return f"empty output {spec.y_shape}"
    if spec.prologue and not dense_block.prologue_conv(spec.kernel, spec.stride, spec.padding,
                                                       spec.batch * spec.out_height * spec.out_width):
        # (the "tvm-cpu" fusion rules ask the same predicate: hwlat.graph.dense_block)
        return "an input prologue needs a 1x1, stride-1, unpadded conv (its input read in place) " \
            "of more than one output pixel (not a GEMV)"
    return None


def packed_weight_shape(spec: Conv2dSpec, plan: Plan | None = None,
                        cpu: CpuInfo | None = None) -> tuple[int, ...]:
    plan = plan or default_plan(spec, cpu)
    blk = plan.block
    return (_ceil(spec.cout, blk), spec.cin, *spec.kernel, blk)


def pack_weight(spec: Conv2dSpec, w: np.ndarray, plan: Plan | None = None,
                cpu: CpuInfo | None = None) -> np.ndarray:
    """OIHW -> (cout blocks, cin, kh, kw, block), zero rows past cout."""
    plan = plan or default_plan(spec, cpu)
    w = np.asarray(w, np.float32)
    if w.shape != spec.w_shape:
        raise ValueError(f"weight shape {w.shape}, expected {spec.w_shape}")
    nb, _, _, _, blk = packed_weight_shape(spec, plan)
    wp = np.zeros((nb * blk, *w.shape[1:]), np.float32)
    wp[:spec.cout] = w
    return np.ascontiguousarray(wp.reshape(nb, blk, *w.shape[1:]).transpose(0, 2, 3, 4, 1))


def unpack_weight(spec: Conv2dSpec, packed: np.ndarray, plan: Plan | None = None,
                  cpu: CpuInfo | None = None) -> np.ndarray:
    """The OIHW weight that `pack_weight` packed with the same plan."""
    plan = plan or default_plan(spec, cpu)
    if packed.shape != packed_weight_shape(spec, plan):
        raise ValueError(f"packed weight shape {packed.shape}, expected "
                         f"{packed_weight_shape(spec, plan)}")
    w = np.asarray(packed).transpose(0, 4, 1, 2, 3).reshape(-1, *spec.w_shape[1:])
    return np.ascontiguousarray(w[:spec.cout])


def _prefetch_w(address):
    """A software prefetch of the cache line at `address` for writing (llvm.prefetch: write,
    locality 3, data): the line arrives owned, so the stores to it do not wait on a read."""
    return tirx.call_llvm_intrin("void", "llvm.prefetch.p0", address, tirx.const(1, "int32"),
                                 tirx.const(3, "int32"), tirx.const(1, "int32"))


def _prefetch(address):
    """A software prefetch of the cache line at `address` into every cache level, for reading
    (llvm.prefetch: read, locality 3, data)."""
    return tirx.call_llvm_intrin("void", "llvm.prefetch.p0", address, tirx.const(0, "int32"),
                                 tirx.const(3, "int32"), tirx.const(1, "int32"))


def _finish(v, ep: Epilogue, bias, res, b, co, p):
    """The epilogue on accumulator value v of image b, channel co, output pixel p (flat)."""
    if ep.bias:
        v = v + bias[co]
    if ep.residual:
        v = residual_input(v, ep) + res[b, co, p]
    return activate(v, ep)


def _pre(v, pre, ci):
    """The input prologue on input value v of channel ci: relu(v * scale + shift)."""
    return T.max(v * pre[0, ci] + pre[1, ci], T.float32(0))


def primfunc(spec: Conv2dSpec, plan: Plan | None = None,
             cpu: CpuInfo | None = None, out: tuple[int, int] | None = None,
             x_channels: int | None = None) -> tirx.PrimFunc:
    """The kernel of the spec. With `out` = (channels, offset), its output parameter is a
    tensor of `channels` channels (batch, height and width the conv's) of which it writes
    channels offset .. offset + cout, and no other: so that the producers of a concat along the
    channels can write their slices of its output, with no copy (concat.py); an offset None is
    read at run time from an int32 tensor of one value, a parameter before y. With `x_channels`
    (one image, a conv reading x in place), its input parameter has that many channels, of which
    it reads the first cin: a concat's prefix (DenseNet's layers read a block's features so)."""
    reason = supports(spec)
    if reason is not None:
        raise ValueError(f"conv2d kernel does not support {spec}: {reason}")
    if out is not None and out[1] is not None and not (0 <= out[1] and out[1] + spec.cout <= out[0]):
        raise ValueError(f"output slice {out[1]}..{out[1] + spec.cout} outside {out[0]} channels")
    plan = plan or default_plan(spec, cpu)
    if x_channels is not None and (x_channels < spec.cin or spec.batch != 1
                                   or not _geom(spec, plan).direct):
        raise ValueError(f"an input of {x_channels} channels: the conv must read x in place, "
                         f"one image, at most {x_channels} channels (cin {spec.cin})")
    g = _geom(spec, plan)
    if is_gemv(spec, plan):
        body = _body_gemv(spec)
    else:
        body = _body_cout(spec, plan, g) if plan.rows == "cout" else _body_pixels(spec, plan, g)
    return _entry(body, spec, packed_weight_shape(spec, plan), out, x_channels)


def is_gemv(spec: Conv2dSpec, plan: Plan | None = None,
            cpu: CpuInfo | None = None) -> bool:
    """Whether the conv runs as the matmul kernel's GEMV (`matmul.gemv_body`): one image, one
    output pixel read in place (a 1x1 conv on a 1x1 map), "pixels" rows of 16 channels, whose
    packed weight (cout blocks, cin, 1, 1, 16) is the GEMV's (panels, k, 16)."""
    plan = plan or default_plan(spec, cpu)
    return (plan.rows == "pixels" and plan.nr == matmul.NR and spec.batch == 1
            and spec.out_height * spec.out_width == 1 and _geom(spec, plan).direct)


def _body_gemv(spec: Conv2dSpec):
    C, CO = spec.cin, spec.cout
    NP = _ceil(CO, matmul.NR)
    gemv = matmul.gemv_body(C, CO, spec.epilogue)

    @T.macro
    def body(x, wp, bias, rf, yf):
        xv = T.decl_buffer((1, C), "float32", data=x.data)
        wv = T.decl_buffer((NP, C, matmul.NR), "float32", data=wp.data)
        yv = T.decl_buffer((1, CO), "float32", data=yf.data, elem_offset=yf.elem_offset)
        if rf is None:
            gemv(xv, wv, bias, None, yv)
        else:
            rv = T.decl_buffer((1, CO), "float32", data=rf.data)
            gemv(xv, wv, bias, rv, yv)

    return body


def _scratch_fill(spec: Conv2dSpec, g: _Geom):
    """Macro: xs[image * cin + ci, phase * plane + i * Wph + j] = padded x at the phase's
    (a + i * sh - pt, b + j * sw - pl), zero elsewhere."""
    N, C, H, W = spec.x_shape
    sh, sw = spec.stride
    pt, pl = spec.padding[0], spec.padding[1]
    nph_h, nph_w, hrows, wph, plane = g.nph_h, g.nph_w, g.hrows, g.wph, g.plane
    total = nph_h * nph_w * plane

    # each input row goes (vector copy) into a zero-padded row tmp, tmp[pl + j] = x[.., j], from
    # which phase b's plane row is the (vector, strided) read tmp[b + j * sw], j < Wph
    TW = _ceil(max(pl + W, nph_w + wph * sw), LANES) * LANES

    @T.macro
    def fill(x, xs):
        for t in T.parallel(N * C):
            tmp = T.alloc_buffer((TW,), "float32")
            for e in range(total // LANES):
                for e1 in T.vectorized(LANES):
                    xs[t, e * LANES + e1] = T.float32(0)
            for e in range(TW // LANES):
                for e1 in T.vectorized(LANES):
                    tmp[e * LANES + e1] = T.float32(0)
            for a in range(nph_h):
                for i in range(T.max(0, (pt - a + sh - 1) // sh),
                               T.min(hrows, (H - 1 + pt - a) // sh + 1)):
                    for j in T.vectorized(W):
                        tmp[pl + j] = x[t // C, t % C, a + i * sh - pt, j]
                    for bb in range(nph_w):
                        for j in T.vectorized(wph):
                            xs[t, (a * nph_w + bb) * plane + i * wph + j] = tmp[bb + j * sw]

    return fill, (N * C, total)


def _tap_offset(spec: Conv2dSpec, g: _Geom, kh, kw):
    sh, sw = spec.stride
    dh, dw = spec.dilation
    return (((kh * dh) % sh) * g.nph_w + (kw * dw) % sw) * g.plane \
        + ((kh * dh) // sh) * g.wph + (kw * dw) // sw


def _task_geom(spec: Conv2dSpec, plan: Plan, g: _Geom) -> tuple[_Geom, int]:
    """The geometry of one task's scratch ("cout" rows through the scratch): the phase rows
    its output rows read, LR of them a plane; and LR."""
    R = min(plan.chunk, spec.out_height)
    csh = (spec.kernel[1] - 1) * spec.dilation[1] // spec.stride[1]
    rsh = (spec.kernel[0] - 1) * spec.dilation[0] // spec.stride[0]
    LR = _ceil(_ceil(R * g.wph, plan.nr) * plan.nr + rsh * g.wph + csh, g.wph)
    return _Geom(False, g.nph_h, g.nph_w, g.hrows, g.wph, LR * g.wph, False), LR


def task_scratch(spec: Conv2dSpec, plan: Plan | None = None,
                 cpu: CpuInfo | None = None) -> bool:
    """Whether each task of a "cout"-rows plan through the scratch copies its own input rows
    (a whole-image scratch over 256 KB, a task's at most 64 KB: stems), not the whole image."""
    plan = plan or default_plan(spec, cpu)
    g = _geom(spec, plan)
    if plan.rows != "cout" or g.direct or g.dense:
        return False
    per_plane = 4 * spec.cin * g.nph_h * g.nph_w
    return per_plane * _task_geom(spec, plan, g)[0].plane <= 64 * 1024 < per_plane * g.plane


def _body_cout(spec: Conv2dSpec, plan: Plan, g: _Geom):
    N, C, H, W = spec.x_shape
    CO = spec.cout
    KH, KW = spec.kernel
    OH, OW = spec.out_height, spec.out_width
    Q = OH * OW
    mr, nr, nv = plan.mr, plan.nr, plan.nv
    NCB = _ceil(CO, mr)
    ragged = CO % mr != 0
    ep = spec.epilogue
    fin = _finish
    tap = _tap_offset
    direct, dense, wph = g.direct, g.dense, g.wph
    co_outer = plan.co_outer
    fill, xs_shape = (None, None) if direct else _scratch_fill(spec, g)

    @T.macro
    def mac(src, wp, acc, b, cb, q0, width, pf):
        # acc[r, j] = sum over (ci, kh, kw) of w[cb * mr + r] * input of pixel q0 + j, j < width
        for r in T.unroll(mr):
            for j in T.vectorized(width):
                acc[r, j] = T.float32(0)
        for ci in range(C):
            if pf:
                T.evaluate(_prefetch(T.address_of(wp[T.min(cb + 1, NCB - 1), ci, 0, 0, 0])))
            for kh in range(KH):
                for kw in range(KW):
                    for r in T.unroll(mr):
                        for j in T.vectorized(width):
                            if direct:
                                acc[r, j] = acc[r, j] + wp[cb, ci, kh, kw, r] * src[b, ci, q0 + j]
                            else:
                                acc[r, j] = acc[r, j] + wp[cb, ci, kh, kw, r] * src[
                                    b * C + ci, tap(spec, g, kh, kw) + q0 + j]

    @T.macro
    def store(acc, bias, res, yf, b, cb, q0, width):
        for r in T.unroll(mr):
            if not ragged or cb * mr + r < CO:
                for j in T.vectorized(width):
                    yf[b, cb * mr + r, q0 + j] = fin(acc[r, j], ep, bias, res, b, cb * mr + r, q0 + j)

    # the first pixel tile of a task, which reads the weight from memory (the later ones find it
    # in L2), prefetches the next channel block's rows: faster isolated with a cold weight and
    # in-model on OFA; prefetching in every tile was much slower (docs/notebook/compile.md)
    PF_FIRST = NCB > 1
    if dense:
        NFT = Q // nr  # full pixel tiles per image
        TAIL = Q - NFT * nr
        NT = plan.lanes if TAIL <= plan.lanes else nr  # tail tile width: one vector where that covers it
        CH = plan.chunk
        NCH = _ceil(NFT, CH)
        NCH1 = max(NCH, 1)  # (no full tile: the loop below is empty)
        # an input prologue (direct only) is applied once to the input columns the tiles read,
        # into a task buffer the tiles then read: a pixel tile's (C x nr), reused over the channel
        # blocks, or with co_outer the whole chunk's (C x CH * nr, in L2), reused over them too
        PRO = spec.prologue
        XTW = (CH * nr if co_outer else nr) if PRO else 1

        @T.macro
        def body6(x, wp, bias, rf, yf, pre):
            xf = T.decl_buffer((N, C, H * W), "float32", data=x.data)
            if direct:
                src = xf
            else:
                src = T.alloc_buffer(xs_shape, "float32")
                fill(x, src)
            for t in T.parallel(N * NCH):
                acc = T.alloc_buffer((mr, nr), "float32", scope="local")
                xt = T.alloc_buffer((1, C if PRO else 1, XTW), "float32")
                b = t // NCH1
                c = t % NCH1
                if PRO and co_outer:
                    for ci in range(C):
                        for e in range(T.min(CH, NFT - c * CH)):
                            for j in T.vectorized(nr):
                                xt[0, ci, e * nr + j] = _pre(xf[b, ci, (c * CH + e) * nr + j], pre, ci)
                    for cb in range(NCB):
                        for it in range(T.min(CH, NFT - c * CH)):
                            mac(xt, wp, acc, 0, cb, it * nr, nr, False)
                            store(acc, bias, rf, yf, b, cb, (c * CH + it) * nr, nr)
                elif PRO:
                    for it in range(T.min(CH, NFT - c * CH)):
                        for ci in range(C):
                            for j in T.vectorized(nr):
                                xt[0, ci, j] = _pre(xf[b, ci, (c * CH + it) * nr + j], pre, ci)
                        if PF_FIRST and it == 0:
                            for cb in range(NCB):
                                mac(xt, wp, acc, 0, cb, 0, nr, PF_FIRST)
                                store(acc, bias, rf, yf, b, cb, (c * CH + it) * nr, nr)
                        else:
                            for cb in range(NCB):
                                mac(xt, wp, acc, 0, cb, 0, nr, False)
                                store(acc, bias, rf, yf, b, cb, (c * CH + it) * nr, nr)
                elif co_outer:
                    for cb in range(NCB):
                        for it in range(T.min(CH, NFT - c * CH)):
                            mac(src, wp, acc, b, cb, (c * CH + it) * nr, nr, False)
                            store(acc, bias, rf, yf, b, cb, (c * CH + it) * nr, nr)
                else:
                    for it in range(T.min(CH, NFT - c * CH)):
                        if PF_FIRST and it == 0:
                            for cb in range(NCB):
                                mac(src, wp, acc, b, cb, (c * CH + it) * nr, nr, PF_FIRST)
                                store(acc, bias, rf, yf, b, cb, (c * CH + it) * nr, nr)
                        else:
                            for cb in range(NCB):
                                mac(src, wp, acc, b, cb, (c * CH + it) * nr, nr, False)
                                store(acc, bias, rf, yf, b, cb, (c * CH + it) * nr, nr)
            if TAIL > 0:
                for b in T.parallel(N):
                    acc = T.alloc_buffer((mr, nr), "float32", scope="local")
                    if direct:
                        # the last pixels, zero-padded to a whole tile (x itself ends there)
                        xt = T.alloc_buffer((N, C, NT), "float32")
                        for ci in range(C):
                            for j in range(NT):
                                if PRO:
                                    xt[b, ci, j] = T.if_then_else(
                                        j < TAIL, _pre(xf[b, ci, T.min(NFT * nr + j, Q - 1)], pre, ci),
                                        T.float32(0))
                                else:
                                    xt[b, ci, j] = T.if_then_else(
                                        j < TAIL, xf[b, ci, T.min(NFT * nr + j, Q - 1)], T.float32(0))
                        for cb in range(NCB):
                            mac(xt, wp, acc, b, cb, 0, NT, False)
                            store(acc, bias, rf, yf, b, cb, NFT * nr, TAIL)
                    else:
                        for cb in range(NCB):
                            mac(src, wp, acc, b, cb, NFT * nr, NT, False)
                            store(acc, bias, rf, yf, b, cb, NFT * nr, TAIL)

        return _with_prologue(body6, PRO)

    R = min(plan.chunk, OH)  # output rows per task
    NCH = _ceil(OH, R)
    YW = _ceil(R * wph, nr) * nr
    KC = min(plan.kc or C, C)  # input channels per reduction block
    NKB = _ceil(C, KC)
    MB = min(plan.mb or NCB, NCB)  # channel blocks per weight block (kept in L2 over a task's tiles)
    NMB = _ceil(NCB, MB)

    # the ragged last channel block runs a tile of only its MT rows (the packed weight keeps mr
    # per step: the broadcasts skip the zero rows)
    NCBF = NCB - 1 if ragged else NCB  # full channel blocks
    MT = CO - NCBF * mr if ragged else 0
    taps = T.unroll if KH * KW <= 9 else T.serial  # unrolled 3x3 taps: constant phase offsets

    # where a whole-image scratch outgrows L2 while the rows one task reads are few (stems: 3
    # input channels, a 613 KB scratch for 224x224), each task copies the phase rows its R
    # output rows read into its own scratch (laid out as the whole-image one, planes of LR rows:
    # gl) just before reading them, so that they are read from L1/L2, not written, evicted and
    # read back from memory (faster for 3x3 stride-2 stems at 224x224 with a cold cache; convs
    # with many input channels, whose tasks' scratch is as large, were slower that way and keep
    # the whole-image one, as do stems whose task scratch passes 64 KB, e.g. 7x7; figures in
    # docs/notebook/compile.md)
    sh, sw = spec.stride
    pt, pl = spec.padding[0], spec.padding[1]
    nph_h, nph_w = g.nph_h, g.nph_w
    gl, LR = _task_geom(spec, plan, g)
    LOCAL = task_scratch(spec, plan)
    gx = gl if LOCAL else g  # the geometry tiles read the scratch with
    # each task prefetches the next task's input rows (the model's input, from memory), a few
    # lines with each pixel tile; a small in-model gain (ab_builds.py), but in every run on OFA
    # and mobilenet_v2 (docs/notebook/compile.md)
    PFX = LOCAL
    PFC = _ceil((R * sh + KH) * W, 16) + 1  # lines of one channel's input rows of a task
    PFL = _ceil(C * PFC, _ceil(R * wph, nr))  # prefetched a tile
    TW = _ceil(max(pl + W, nph_w + wph * sw), LANES) * LANES  # a zero-padded input row
    # and, for writing, the lines of its own output rows, which it writes last (R rows of every
    # output channel: storage last touched an inference ago, from memory): a small in-model gain
    # on OFA's net, none on mobilenet_v2 (ab_builds.py; docs/notebook/compile.md)
    PFY = LOCAL
    YLC = _ceil(R * OW, 16)  # lines of one channel's output rows of a task
    YPL = _ceil(CO * YLC, _ceil(R * wph, nr))  # prefetched a tile

    VL = plan.lanes
    # three vectors a row (nv 3) are written as three VL-lane vectors: one 48-lane vector
    # measured 5x slower; two as one 2 VL-lane vector (split, 128x28x28 3x3 took 2x as long)
    SPLIT = nv & (nv - 1) != 0
    OWV, OWT = OW // VL, OW % VL  # whole vectors of an output row, lanes of its tail

    @T.macro
    def tile(wp, xs, acc, ybuf, row0, base, kb, it, cb, rows_):
        for r in T.unroll(rows_):
            for j in T.vectorized(nr):
                acc[r, j] = T.Select(kb == 0, T.float32(0), ybuf[cb * mr + r, it * nr + j])
        for ci in range(kb * KC, T.min(C, kb * KC + KC)):
            for kh in taps(KH):
                for kw in taps(KW):
                    if SPLIT:
                        for r in T.unroll(rows_):
                            for v in T.unroll(nv):
                                for j in T.vectorized(VL):
                                    acc[r, v * VL + j] = acc[r, v * VL + j] + wp[cb, ci, kh, kw, r] * xs[
                                        row0 + ci, tap(spec, gx, kh, kw) + base + it * nr + v * VL + j]
                    else:
                        for r in T.unroll(rows_):
                            for j in T.vectorized(nr):
                                acc[r, j] = acc[r, j] + wp[cb, ci, kh, kw, r] * xs[
                                    row0 + ci, tap(spec, gx, kh, kw) + base + it * nr + j]
        for r in T.unroll(rows_):
            for j in T.vectorized(nr):
                ybuf[cb * mr + r, it * nr + j] = acc[r, j]

    @T.macro
    def fill_rows(x, xs, tmp, b, oh0):
        # phase rows oh0 .. oh0 + LR of image b, every channel: input rows through the
        # zero-padded row tmp (a stride-sw read of it per column phase), zero outside the input
        for ci in range(C):
            for a in range(nph_h):
                for il in range(LR):
                    if oh0 + il < g.hrows and a + (oh0 + il) * sh - pt >= 0 and \
                            a + (oh0 + il) * sh - pt < H:
                        for j in T.vectorized(W):
                            tmp[pl + j] = x[b, ci, a + (oh0 + il) * sh - pt, j]
                        for bb in range(nph_w):
                            for j in T.vectorized(wph):
                                xs[ci, (a * nph_w + bb) * gl.plane + il * wph + j] = \
                                    tmp[bb + j * sw]
                    else:
                        for bb in range(nph_w):
                            for j in T.vectorized(wph):
                                xs[ci, (a * nph_w + bb) * gl.plane + il * wph + j] = \
                                    T.float32(0)

    @T.macro
    def channel_blocks(wp, xs, acc, ybuf, row0, base, rows, xf, b, oh0, yf):
        for mb in range(NMB):
            for kb in range(NKB):
                for it in range((rows * wph + nr - 1) // nr):
                    if PFY:
                        if mb == 0 and kb == 0:
                            for ln in range(YPL):
                                if it * YPL + ln < CO * YLC:
                                    T.evaluate(_prefetch_w(T.address_of(yf[
                                        b, (it * YPL + ln) // YLC,
                                        T.min(oh0 * OW + (it * YPL + ln) % YLC * 16, Q - 1)])))
                    if PFX:
                        # the next task's input rows, a few lines a tile, so that its row copy
                        # finds them in the cache (hardware prefetchers stop at each 4 KB page)
                        if mb == 0 and kb == 0 and oh0 + R < OH:
                            for ln in range(PFL):
                                if it * PFL + ln < C * PFC:
                                    T.evaluate(_prefetch(T.address_of(xf[
                                        b, (it * PFL + ln) // PFC,
                                        T.min(T.max((oh0 + R) * sh - pt, 0) * W
                                              + (it * PFL + ln) % PFC * 16, H * W - 1)])))
                    for cb in range(mb * MB, T.min(NCBF, mb * MB + MB)):
                        tile(wp, xs, acc, ybuf, row0, base, kb, it, cb, mr)
                    if MT > 0:
                        if mb == NMB - 1:
                            tile(wp, xs, acc, ybuf, row0, base, kb, it, NCB - 1, MT)

    @T.macro
    def tasks(x, xs, wp, bias, rf, yf):
        for t in T.parallel(N * NCH):
            acc = T.alloc_buffer((mr, nr), "float32", scope="local")
            ybuf = T.alloc_buffer((NCB * mr, YW), "float32")
            b = t // NCH
            oh0 = t % NCH * R
            rows = T.min(R, OH - oh0)
            if LOCAL:
                xl = T.alloc_buffer((C, nph_h * nph_w * gl.plane), "float32")
                tmp = T.alloc_buffer((TW,), "float32")
                for e in range(TW // LANES):
                    for e1 in T.vectorized(LANES):
                        tmp[e * LANES + e1] = T.float32(0)
                fill_rows(x, xl, tmp, b, oh0)
                xf = T.decl_buffer((N, C, H * W), "float32", data=x.data)
                channel_blocks(wp, xl, acc, ybuf, 0, 0, rows, xf, b, oh0, yf)
            else:
                channel_blocks(wp, xs, acc, ybuf, b * C, oh0 * wph, rows, None, b, oh0, yf)
            # the output rows in vectors of VL lanes (and a shorter tail): a row-wide vector
            # (e.g. 112 lanes) had its bias broadcast built lane by lane (12 % of a 7x7 stem)
            for co in range(CO):
                for i in range(rows):
                    for v in range(OWV):
                        for j in T.vectorized(VL):
                            yf[b, co, (oh0 + i) * OW + v * VL + j] = fin(
                                ybuf[co, i * wph + v * VL + j], ep, bias, rf, b, co,
                                (oh0 + i) * OW + v * VL + j)
                    if OWT > 0:
                        for j in T.vectorized(OWT):
                            yf[b, co, (oh0 + i) * OW + OWV * VL + j] = fin(
                                ybuf[co, i * wph + OWV * VL + j], ep, bias, rf, b, co,
                                (oh0 + i) * OW + OWV * VL + j)

    @T.macro
    def body(x, wp, bias, rf, yf):
        if LOCAL:
            tasks(x, None, wp, bias, rf, yf)
        else:
            xs = T.alloc_buffer(xs_shape, "float32")
            fill(x, xs)
            tasks(x, xs, wp, bias, rf, yf)

    return body


def _body_pixels(spec: Conv2dSpec, plan: Plan, g: _Geom):
    N, C, H, W = spec.x_shape
    CO = spec.cout
    KH, KW = spec.kernel
    OH, OW = spec.out_height, spec.out_width
    Q = OH * OW
    mr, nr = plan.mr, plan.nr
    NCB = _ceil(CO, nr)
    ragged = CO % nr != 0
    ep = spec.epilogue
    tap = _tap_offset
    direct, dense, wph = g.direct, g.dense, g.wph
    QV = OH * wph  # q positions holding outputs (some dropped when wph > OW)
    NPT = _ceil(QV, mr)
    KC = min(plan.kc or C, C)  # input channels per reduction block
    NKB = _ceil(C, KC)
    MB = min(plan.mb or NCB, NCB)  # channel blocks per task
    NG = _ceil(NCB, MB)
    # the partial sums kept between reduction blocks: ZR rows of nr channels a channel block, the
    # blocks one after another, so that each tile's are one contiguous run and a reduction block
    # reads and writes them in order (the hardware prefetchers follow). Rows of every channel
    # block side by side (a tile's 5 x 64 B, 4.6 KB apart) stalled each tile's first FMAs on
    # misses (a profile of 192 -> 1152 on 7x7 put a large share of its time on those loads;
    # docs/notebook/compile.md, session 8)
    ZR = NPT * mr if NKB > 1 else 1
    fill, xs_shape = (None, None) if direct else _scratch_fill(spec, g)
    # software prefetch of the next channel block's weight rows while this block's rows are
    # reused over the pixel tiles: faster for isolated 7x7 layers with a cold weight (warm: no
    # change). Not with a single pixel tile (a GEMV reads its weight in order; prefetching ahead
    # of it was slower; docs/notebook/compile.md)
    PREFETCH = NPT > 1 and NCB > 1
    # the epilogue as far as the vector lanes allow (faster for 7x7 layers with hardswish or
    # clip than all of it at the scalar stores; docs/notebook/compile.md)
    def vec_ep(v, bias, co):
        if ep.bias:
            v = v + bias[co]
        return v if ep.residual else activate(v, ep)

    def store_ep(v, res, b, co, p):
        return activate(residual_input(v, ep) + res[b, co, p], ep) if ep.residual else v

    PRO = spec.prologue  # direct only: the prologue applied to the whole input, once, first

    @T.macro
    def body6(x, wp, bias, rf, yf, pre):
        xf = T.decl_buffer((N, C, H * W), "float32", data=x.data)
        if PRO:
            src = T.alloc_buffer((N, C, H * W), "float32")
            for t in T.parallel(N * C):
                for j in T.vectorized(H * W):
                    src[t // C, t % C, j] = _pre(xf[t // C, t % C, j], pre, t % C)
        elif direct:
            src = xf
        else:
            src = T.alloc_buffer(xs_shape, "float32")
            fill(x, src)
        for t in T.parallel(N * NG):
            acc = T.alloc_buffer((mr, nr), "float32", scope="local")
            zbuf = T.alloc_buffer((MB * ZR, nr), "float32")
            b = t // NG
            g0 = t % NG * MB
            for kb in range(NKB):
                for cb in range(g0, T.min(NCB, g0 + MB)):
                    for pt in range(NPT):
                        for r in T.unroll(mr):
                            for j in T.vectorized(nr):
                                if NKB == 1:
                                    acc[r, j] = T.float32(0)
                                else:
                                    acc[r, j] = T.Select(kb == 0, T.float32(0),
                                                         zbuf[(cb - g0) * ZR + pt * mr + r, j])
                        for ci in range(kb * KC, T.min(C, kb * KC + KC)):
                            if PREFETCH:
                                for ln in T.unroll(nr // 16):  # a 64-byte line each
                                    T.evaluate(_prefetch(T.address_of(
                                        wp[T.min(cb + 1, NCB - 1), ci, 0, 0, ln * 16])))
                            for kh in range(KH):
                                for kw in range(KW):
                                    for r in T.unroll(mr):
                                        for j in T.vectorized(nr):
                                            if direct:
                                                acc[r, j] = acc[r, j] + src[
                                                    b, ci, T.min(pt * mr + r, Q - 1)] * wp[cb, ci, kh, kw, j]
                                            else:
                                                acc[r, j] = acc[r, j] + src[
                                                    b * C + ci, tap(spec, g, kh, kw) + pt * mr + r] \
                                                    * wp[cb, ci, kh, kw, j]
                        if kb == NKB - 1:
                            # bias (and, without a residual, the activation) on the
                            # accumulator vectors, whose lanes are channels; the stores are
                            # scalar, the residual (strided along the channels) added there
                            for r in T.unroll(mr):
                                for j in T.vectorized(nr):
                                    acc[r, j] = vec_ep(acc[r, j], bias, T.min(cb * nr + j, CO - 1))
                            for r in T.unroll(mr):
                                if pt * mr + r < QV and (dense or (pt * mr + r) % wph < OW):
                                    for j in range(nr):
                                        if not ragged or cb * nr + j < CO:
                                            yf[b, cb * nr + j, (pt * mr + r) // wph * OW
                                               + (pt * mr + r) % wph] = store_ep(
                                                acc[r, j], rf, b, cb * nr + j,
                                                (pt * mr + r) // wph * OW + (pt * mr + r) % wph)
                        else:
                            for r in T.unroll(mr):
                                for j in T.vectorized(nr):
                                    zbuf[(cb - g0) * ZR + pt * mr + r, j] = acc[r, j]

    return _with_prologue(body6, PRO)


def _with_prologue(body6, pro: bool):
    """The body macro of six arguments (x, w, bias, residual, y, prologue) where the spec has a
    prologue, else of the five every body takes (its prologue None)."""
    if pro:
        return body6

    @T.macro
    def body(x, wp, bias, rf, yf):
        body6(x, wp, bias, rf, yf, None)

    return body


def _entry(body, spec: Conv2dSpec, w_shape, out: tuple[int, int] | None = None,
           x_channels: int | None = None) -> tirx.PrimFunc:
    """The PrimFunc (x, w, [bias], [residual], [prologue], y) running `body(x, w, bias, residual,
    yf, prologue)`, yf the output viewed as (batch, cout, pixels), the residual alike, None where
    the epilogue has no bias or residual. With `out` = (channels, offset), y is a tensor of
    `channels` channels (a concat's output) and the conv writes its channels offset .. offset +
    cout only; with `x_channels` (one image), x has that many channels, the first cin read."""
    n, co, oh, ow = spec.y_shape
    q = oh * ow
    ct, c0 = out if out is not None else (co, 0)
    sym = out is not None and c0 is None  # the offset read at run time from parameter o
    x_shape, y_shape, r_shape = spec.x_shape, (n, ct, oh, ow), spec.y_shape
    if x_channels is not None:  # (the bodies read x through its data pointer: a prefix)
        x_shape = (spec.batch, x_channels, spec.height, spec.width)
    b_shape = (spec.cout,)
    q_shape = (n, co, q)  # y with flat pixels
    y_strides = (ct * q, q, 1)
    attrs = {"tirx.noalias": True, "tirx.is_scheduled": True}
    f32 = "float32"
    p_shape = (2, spec.cin)  # the prologue's scale and shift
    pro = spec.prologue  # (bodies without a prologue take five arguments: grouped.py's too)
    # written with all six parameters (dropped below where the epilogue has no bias or
    # residual, the spec no prologue); the residual is viewed with flat pixels, so it exists
    # only where it is passed
    if spec.epilogue.residual:
        @T.prim_func(s_tir=True, private=True)
        def conv2d(x: T.Buffer(x_shape, f32), w: T.Buffer(w_shape, f32), bias: T.Buffer(b_shape, f32),
                   residual: T.Buffer(r_shape, f32), pre: T.Buffer(p_shape, f32),
                   o: T.Buffer((1,), "int32"), y: T.Buffer(y_shape, f32)):
            T.func_attr(attrs)
            y_offset = T.meta_var(o[0] * q if sym else c0 * q)
            rf = T.decl_buffer(q_shape, f32, data=residual.data)
            yf = T.decl_buffer(q_shape, f32, data=y.data, strides=y_strides, elem_offset=y_offset)
            if pro:
                body(x, w, bias, rf, yf, pre)
            else:
                body(x, w, bias, rf, yf)
    else:
        @T.prim_func(s_tir=True, private=True)
        def conv2d(x: T.Buffer(x_shape, f32), w: T.Buffer(w_shape, f32), bias: T.Buffer(b_shape, f32),
                   residual: T.Buffer(r_shape, f32), pre: T.Buffer(p_shape, f32),
                   o: T.Buffer((1,), "int32"), y: T.Buffer(y_shape, f32)):
            T.func_attr(attrs)
            y_offset = T.meta_var(o[0] * q if sym else c0 * q)
            yf = T.decl_buffer(q_shape, f32, data=y.data, strides=y_strides, elem_offset=y_offset)
            if pro:
                body(x, w, bias, None, yf, pre)
            else:
                body(x, w, bias, None, yf)
    ep = spec.epilogue
    keep = [0, 1] + ([2] if ep.bias else []) + ([3] if ep.residual else []) \
        + ([4] if spec.prologue else []) + ([5] if sym else []) + [6]
    return tirx.PrimFunc([conv2d.params[i] for i in keep], conv2d.body, conv2d.ret_type, conv2d.attrs)
