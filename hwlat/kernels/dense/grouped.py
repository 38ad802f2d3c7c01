"""Grouped conv2d (1 < groups, groups < cin or a channel multiplier: not the depthwise kernel's
groups == cin == cout; NCHW input, OIHW weight (cout, cin / groups, kh, kw)) as one
hand-scheduled TIR PrimFunc, the epilogue y = act(conv + bias + residual) fused into the store.
Any group count, channels per group, kernel size, stride, padding and dilation, batch >= 1.

Each group is a small GEMM: rows its output channels, columns output pixels, the reduction over
its cin / groups input channels and the taps. A register tile holds `rows` output channels x
`nv` vectors of pixels (vector lanes are pixels, so a narrow group wastes no lanes):

    acc[r][pixels] += w[co_r] (broadcast) * x[ci of co_r's group][tap-shifted pixels] (vector)

Groups of at least 4 output channels: a tile's rows are `mr` channels of one group (its
channel blocks one after another, a ragged last block runs a tile of only its real rows).
Narrower groups (1-3 channels, e.g. a channel multiplier): a tile holds `gt` whole groups side by
side (their rows each read their own group's input vectors), so that the tile still has enough
accumulators to hide the FMA latency.

The input is first copied into conv.py's zero-padded scratch split into stride phases
(`conv._scratch_fill`): every tap of a pixel tile is one contiguous, shifted vector load
whatever the stride and dilation, with positions q = oh * Wph + ow (columns ow >= OW computed
and dropped). Where that whole-image scratch passes TASK_FILL_BYTES (`task_fill`: regnet's
64 x 112 x 112 stride-2 conv, 3.3 MB), each task instead copies the phase rows its output rows
read, of its group block's channels only, into a scratch of its own just before its tiles read
it (from L1/L2, not written out to memory and read back), the column phases split in one loop
that LLVM vectorises as an interleaved group. Parallel over (image, group block, chunk of output rows) tasks; a task runs its
pixel tiles, each over every channel block of its groups (the tile's input rows stay in L1, the
group's weight in L1/L2), into a per-task buffer over whole rows of q, which the epilogue copies
into y one output row at a time (vector stores along the row).

Packed weight: (group blocks, channel blocks, cin / groups, kh, kw, tile rows), tile row
gi * mr + r being channel (block * gt + gi) * cout_g + cb * mr + r of the OIHW weight; rows past
the group's (or the groups') channels are zero and never stored. The layout depends on the
plan: pack with the plan the PrimFunc is built with. `default_plan` sizes the tile by the CPU
(`hwlat.kernels.cpu`): 8-float vectors and 12 accumulators on AVX2, 16-float vectors and up to
28 accumulators on AVX-512.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import tirx
from tvm.script import tirx as T

from hwlat.kernels.cpu import AVX2, CpuInfo
from hwlat.kernels.dense import conv
from hwlat.kernels.dense.spec import Conv2dSpec

LANES = 8  # fp32 lanes of one AVX2 register
ACC_REGISTERS = {8: 12, 16: 28}  # lanes -> accumulator registers a tile may take
NARROW = 4  # groups of fewer output channels share a tile (gt groups a tile)
TASK_Q = 512  # q positions (output rows x Wph) a task should hold at least
TASK_FILL_BYTES = 1024 * 1024  # a whole-image scratch larger than this: each task fills its own


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Plan:
    """The register tile: `gt` groups x `mr` channels of each (gt > 1 only where the groups
    have at most mr channels) x `nv` vectors of `lanes` pixels; `rows` output rows a task
    (0: the default, about TASK_Q positions)."""

    mr: int = 4
    nv: int = 2
    gt: int = 1
    rows: int = 0
    lanes: int = LANES
    # each task copies the phase rows it reads of its groups' channels into its own scratch
    # (True), or one scratch holds the whole input (False); None: `task_fill`'s rule
    task_fill: bool | None = None

    def __post_init__(self):
        if self.lanes not in ACC_REGISTERS:
            raise ValueError(f"lanes must be one of {tuple(ACC_REGISTERS)}, got {self.lanes}")
        if min(self.mr, self.nv, self.gt) < 1 or self.rows < 0 or \
                self.gt * self.mr * self.nv > ACC_REGISTERS[self.lanes]:
            raise ValueError(f"bad grouped-conv tile {self}")

    @property
    def nr(self) -> int:
        return self.nv * self.lanes

    @property
    def block(self) -> int:
        """Output channels (weight rows) of one tile."""
        return self.gt * self.mr


def supports(spec: Conv2dSpec) -> str | None:
    """None when the kernel takes the spec, else the reason."""
    g = spec.groups
    if g < 2:
        return f"groups={g}: this kernel takes grouped convs (groups > 1)"
    if spec.cin % g or spec.cout % g:
        return f"cin {spec.cin} and cout {spec.cout} must be multiples of groups {g}"
    if spec.batch < 1 or spec.cin < 1 or spec.cout < 1:
        return "batch, cin and cout must be >= 1"
    if min(spec.kernel) < 1 or min(spec.stride) < 1 or min(spec.dilation) < 1:
        return "kernel, stride and dilation must be >= 1"
    if min(spec.padding) < 0:
        return "negative padding"
    if spec.height < 1 or spec.width < 1 or spec.out_height < 1 or spec.out_width < 1:
        return f"empty input {spec.x_shape} or output {spec.y_shape}"
    return None


def default_plan(spec: Conv2dSpec, cpu: CpuInfo | None = None) -> Plan:
    """Two pixel vectors; groups of >= 4 channels: the rows in 4..6 (AVX2) or 4..8 (AVX-512)
    with the fewest padded channels (a fewer-row tile counted 5 % slower a row); narrower
    groups: as many whole groups a tile as the accumulators allow (at most the group count)."""
    lanes = 2 * LANES if (cpu or AVX2).avx512 else LANES
    nv = 2
    cog = spec.cout // max(1, spec.groups)
    most = ACC_REGISTERS[lanes] // nv  # tile rows
    if cog < NARROW:
        gt = max(1, min(most // cog, spec.groups))
        return Plan(cog, nv, gt, lanes=lanes)
    top = min(most, 8)  # AVX-512: 12 x 2 and 16 x 1 tiles measured slower than 8 x 2
    mr = min(range(NARROW, top + 1),
             key=lambda m: (_ceil(cog, m) * m * (1 + 0.05 * (top - m)), -m))
    return Plan(mr, nv, 1, lanes=lanes)


def _check_plan(spec: Conv2dSpec, plan: Plan) -> None:
    cog = spec.cout // spec.groups
    if plan.gt > 1 and plan.mr != cog:
        raise ValueError(f"a tile of {plan.gt} groups needs mr = cout / groups = {cog}, "
                         f"got {plan.mr}")


def packed_weight_shape(spec: Conv2dSpec, plan: Plan | None = None,
                        cpu: CpuInfo | None = None) -> tuple[int, ...]:
    """(group blocks, channel blocks, cin / groups, kh, kw, gt * mr)."""
    plan = plan or default_plan(spec, cpu)
    cog = spec.cout // spec.groups
    return (_ceil(spec.groups, plan.gt), _ceil(cog, plan.mr), spec.cin // spec.groups,
            *spec.kernel, plan.block)


def _rows_of(spec: Conv2dSpec, plan: Plan) -> np.ndarray:
    """The OIHW channel of each packed row (group block, channel block, tile row), -1 past the
    channels."""
    ngb, ncb, _, _, _, blk = packed_weight_shape(spec, plan)
    cog = spec.cout // spec.groups
    gb, cb, t = np.meshgrid(np.arange(ngb), np.arange(ncb), np.arange(blk), indexing="ij")
    gi, r = t // plan.mr, t % plan.mr
    group, ch = gb * plan.gt + gi, cb * plan.mr + r
    return np.where((group < spec.groups) & (ch < cog), group * cog + ch, -1)


def pack_weight(spec: Conv2dSpec, w: np.ndarray, plan: Plan | None = None,
                cpu: CpuInfo | None = None) -> np.ndarray:
    """The OIHW weight in the plan's layout, float32, C-contiguous, zero rows past the
    channels."""
    plan = plan or default_plan(spec, cpu)
    _check_plan(spec, plan)
    w = np.asarray(w, np.float32)
    if w.shape != spec.w_shape:
        raise ValueError(f"grouped conv weight of shape {w.shape}, expected {spec.w_shape}")
    rows = _rows_of(spec, plan)  # (ngb, ncb, blk)
    wz = np.concatenate([w, np.zeros((1, *w.shape[1:]), np.float32)])  # row -1: zeros
    packed = wz[rows]  # (ngb, ncb, blk, cig, kh, kw)
    return np.ascontiguousarray(packed.transpose(0, 1, 3, 4, 5, 2))


def unpack_weight(spec: Conv2dSpec, packed: np.ndarray, plan: Plan | None = None,
                  cpu: CpuInfo | None = None) -> np.ndarray:
    """The OIHW weight that `pack_weight` packed with the same plan."""
    plan = plan or default_plan(spec, cpu)
    if packed.shape != packed_weight_shape(spec, plan):
        raise ValueError(f"packed weight shape {packed.shape}, expected "
                         f"{packed_weight_shape(spec, plan)}")
    rows = _rows_of(spec, plan)
    flat = np.asarray(packed).transpose(0, 1, 5, 2, 3, 4).reshape(-1, *spec.w_shape[1:])
    w = np.zeros(spec.w_shape, np.float32)
    keep = rows.reshape(-1) >= 0
    w[rows.reshape(-1)[keep]] = flat[keep]
    return w


def task_fill(spec: Conv2dSpec, plan: Plan) -> bool:
    """Whether the plan's tasks each fill their own scratch: where the whole-image scratch passes
    TASK_FILL_BYTES (it is written, evicted and read back from memory; a task's phase rows are
    copied just before its tiles read them, from L1/L2) and the conv is strided or padded."""
    if plan.task_fill is not None:
        return plan.task_fill
    g = _geometry(spec, plan)
    return 4 * spec.batch * spec.cin * g.nph_h * g.nph_w * g.plane > TASK_FILL_BYTES


def _geometry(spec: Conv2dSpec, plan: Plan):
    """conv.py's scratch geometry for the tile, never reading x in place (a 1x1 unpadded conv
    goes through the scratch too, whose zero tail the last tile overruns into)."""
    g = conv._geom(spec, conv.Plan("cout", 1, 1, lanes=plan.lanes))
    oh, ow = spec.out_height, spec.out_width
    if g.direct:
        g = conv._Geom(False, 1, 1, oh, ow, 0, True)
    rsh = (spec.kernel[0] - 1) * spec.dilation[0] // spec.stride[0]
    csh = (spec.kernel[1] - 1) * spec.dilation[1] // spec.stride[1]
    # the last pixel tile starts before oh * Wph and reads up to the taps' reach past its end
    plane = _ceil(max((g.hrows + 1) * g.wph, oh * g.wph + plan.nr + rsh * g.wph + csh),
                  LANES) * LANES
    return conv._Geom(False, g.nph_h, g.nph_w, g.hrows, g.wph, plane, g.dense)


def primfunc(spec: Conv2dSpec, plan: Plan | None = None,
             cpu: CpuInfo | None = None) -> tirx.PrimFunc:
    """PrimFunc(x, packed w, [bias], [residual], y) (ValueError when `supports` refuses the
    spec); `plan` overrides `default_plan(spec, cpu)`."""
    reason = supports(spec)
    if reason is not None:
        raise ValueError(f"grouped conv2d: {reason}")
    plan = plan or default_plan(spec, cpu)
    _check_plan(spec, plan)
    g = _geometry(spec, plan)
    N, C, _, _ = spec.x_shape
    CO, G = spec.cout, spec.groups
    CIG, COG = C // G, CO // G
    KH, KW = spec.kernel
    OH, OW = spec.out_height, spec.out_width
    mr, nr, gt = plan.mr, plan.nr, plan.gt
    NGB, NCB = _ceil(G, gt), _ceil(COG, mr)
    GTL = G - (NGB - 1) * gt  # groups of the last group block
    MT = COG - (NCB - 1) * mr  # rows of the last channel block (gt == 1)
    wph = g.wph
    R = min(OH, plan.rows or max(1, _ceil(TASK_Q, wph)))  # output rows a task
    NCH = _ceil(OH, R)
    YW = _ceil(R * wph, nr) * nr
    ep = spec.epilogue
    taps = T.unroll if KH * KW <= 9 else T.serial
    LOCAL = task_fill(spec, plan)
    if LOCAL:
        # a task's scratch: the phase rows its R output rows read (LR of them a phase plane,
        # tiles' overrun included), of its group block's gt * CIG input channels
        rsh = (KH - 1) * spec.dilation[0] // spec.stride[0]
        csh = (KW - 1) * spec.dilation[1] // spec.stride[1]
        LR = _ceil(_ceil(R * wph, nr) * nr + rsh * wph + csh, wph)
        gx = conv._Geom(False, g.nph_h, g.nph_w, g.hrows, wph, LR * wph, False)
        H, W = spec.height, spec.width
        sh, sw = spec.stride
        pt, pl = spec.padding[0], spec.padding[1]
        nph_h, nph_w = g.nph_h, g.nph_w
        TW = _ceil(max(pl + W, nph_w + wph * sw), LANES) * LANES  # a zero-padded input row
        xs_shape = (gt * CIG, nph_h * nph_w * gx.plane)
    else:
        gx = g
        fill, xs_shape = conv._scratch_fill(spec, g)

    def tap(kh, kw):
        return conv._tap_offset(spec, gx, kh, kw)

    def row0(b, gb):  # the scratch row of the first input channel of group block gb
        return 0 if LOCAL else b * C + gb * gt * CIG

    @T.macro
    def fill_rows(x, xs, tmp, b, gb, oh0):
        # phase rows oh0 .. oh0 + LR of image b, the block's channels: input rows through the
        # zero-padded row tmp (a stride-sw read of it per column phase), zero outside the input
        for ci in range(T.min(gt, G - gb * gt) * CIG):
            for a in range(nph_h):
                for il in range(LR):
                    if oh0 + il < g.hrows and a + (oh0 + il) * sh - pt >= 0 and \
                            a + (oh0 + il) * sh - pt < H:
                        for j in T.vectorized(W):
                            tmp[pl + j] = x[b, gb * gt * CIG + ci, a + (oh0 + il) * sh - pt, j]
                        # all column phases in one loop: LLVM vectorises its strided reads as
                        # one interleaved group (whole vectors and shuffles)
                        for j in range(wph):
                            for bb in T.unroll(nph_w):
                                xs[ci, (a * nph_w + bb) * gx.plane + il * wph + j] = \
                                    tmp[bb + j * sw]
                    else:
                        for bb in range(nph_w):
                            for j in T.vectorized(wph):
                                xs[ci, (a * nph_w + bb) * gx.plane + il * wph + j] = \
                                    T.float32(0)

    @T.macro
    def tile(wp, xs, acc, ybuf, b, gb, cb, base, it, gts, rows_):
        # gts groups x rows_ channels of channel block cb, pixel tile it of the task
        for gi in T.unroll(gts):
            for r in T.unroll(rows_):
                for j in T.vectorized(nr):
                    acc[gi * mr + r, j] = T.float32(0)
        for ci in range(CIG):
            for kh in taps(KH):
                for kw in taps(KW):
                    for gi in T.unroll(gts):
                        for r in T.unroll(rows_):
                            for j in T.vectorized(nr):
                                acc[gi * mr + r, j] = acc[gi * mr + r, j] + \
                                    wp[gb, cb, ci, kh, kw, gi * mr + r] * xs[
                                        row0(b, gb) + gi * CIG + ci,
                                        tap(kh, kw) + base + it * nr + j]
        for gi in T.unroll(gts):
            for r in T.unroll(rows_):
                for j in T.vectorized(nr):
                    ybuf[gi * COG + cb * mr + r, it * nr + j] = acc[gi * mr + r, j]

    @T.macro
    def block(wp, xs, acc, ybuf, b, gb, base, rows, gts):
        for it in range((rows * wph + nr - 1) // nr):
            for cb in range(NCB - 1):
                tile(wp, xs, acc, ybuf, b, gb, cb, base, it, gts, mr)
            tile(wp, xs, acc, ybuf, b, gb, NCB - 1, base, it, gts, MT)

    @T.macro
    def tasks(x, wp, xs, yf, bias, rf):
        for t in T.parallel(N * NGB * NCH):
            acc = T.alloc_buffer((gt * mr, nr), "float32", scope="local")
            ybuf = T.alloc_buffer((gt * COG, YW), "float32")
            b = t // (NGB * NCH)
            gb = t // NCH % NGB
            oh0 = t % NCH * R
            rows = T.min(R, OH - oh0)
            if LOCAL:
                xl = T.alloc_buffer(xs_shape, "float32")
                tmp = T.alloc_buffer((TW,), "float32")
                for e in range(TW // LANES):
                    for e1 in T.vectorized(LANES):
                        tmp[e * LANES + e1] = T.float32(0)
                fill_rows(x, xl, tmp, b, gb, oh0)
                if gb < NGB - 1:
                    block(wp, xl, acc, ybuf, b, gb, 0, rows, gt)
                else:
                    block(wp, xl, acc, ybuf, b, gb, 0, rows, GTL)
            else:
                if gb < NGB - 1:
                    block(wp, xs, acc, ybuf, b, gb, oh0 * wph, rows, gt)
                else:
                    block(wp, xs, acc, ybuf, b, gb, oh0 * wph, rows, GTL)
            for c in range(T.min(gt, G - gb * gt) * COG):
                for i in range(rows):
                    for j in T.vectorized(OW):
                        yf[b, gb * gt * COG + c, (oh0 + i) * OW + j] = conv._finish(
                            ybuf[c, i * wph + j], ep, bias, rf, b, gb * gt * COG + c,
                            (oh0 + i) * OW + j)

    @T.macro
    def body(x, wp, bias, rf, y):
        yf = T.decl_buffer((N, CO, OH * OW), "float32", data=y.data)
        if LOCAL:
            tasks(x, wp, None, yf, bias, rf)
        else:
            xs = T.alloc_buffer(xs_shape, "float32")
            fill(x, xs)
            tasks(x, wp, xs, yf, bias, rf)

    return conv._entry(body, spec, packed_weight_shape(spec, plan))
