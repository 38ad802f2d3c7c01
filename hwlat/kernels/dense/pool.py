"""DenseNet's transition, batch norm -> relu -> 1x1 conv -> 2x2 average pool (stride 2), with the
pool first: a 1x1 conv without an activation is linear and acts on each pixel alone, so it
commutes with the average of 2x2 windows, and run after the pool it computes a quarter of the
pixels. The batch norm and relu (the conv's prologue, conv.py) come before the pool, in one
kernel (`primfunc`: y = the 2x2 mean of relu(x * scale + shift), per channel).

`rewrite_block` takes each `avg_pool2d` (2x2, stride 2, unpadded, NCHW) whose input is a 1x1
conv kernel call with a prologue, no residual and no activation, read by the pool alone.
densenet121's three transitions: 4.9 ms of convs at 1 thread, a quarter of that after.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax, s_tir
from tvm.script import tirx as T

from hwlat.graph import dense_block
from hwlat.kernels.dense.spec import Conv2dSpec
from hwlat.kernels.relax_rewrite import static_f32_shape

_AVG_POOL = tvm.ir.Op.get("relax.nn.avg_pool2d")


@dataclass(frozen=True)
class ProloguePoolSpec:
    """y (batch, channels, height // 2, width // 2) = the 2x2 stride-2 mean of relu(x * scale[c]
    + shift[c]) over x (batch, x_channels >= channels, height, width): its first channels."""

    batch: int
    channels: int
    height: int
    width: int
    x_channels: int

    @property
    def y_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.channels, self.height // 2, self.width // 2)


def primfunc(spec: ProloguePoolSpec) -> tvm.tirx.PrimFunc:
    n, c, h, w = spec.batch, spec.channels, spec.height, spec.width
    oh, ow = h // 2, w // 2
    f32 = "float32"

    def pre(v, p, ci):
        return T.max(v * p[0, ci] + p[1, ci], T.float32(0))

    @T.prim_func(s_tir=True, private=True)
    def pool(x: T.Buffer((n, spec.x_channels, h, w), f32), p: T.Buffer((2, c), f32),
             y: T.Buffer((n, c, oh, ow), f32)):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        for t in T.parallel(n * c):
            for i in range(oh):
                for j in T.vectorized(ow):
                    y[t // c, t % c, i, j] = T.float32(0.25) * (
                        pre(x[t // c, t % c, 2 * i, 2 * j], p, t % c)
                        + pre(x[t // c, t % c, 2 * i, 2 * j + 1], p, t % c)
                        + pre(x[t // c, t % c, 2 * i + 1, 2 * j], p, t % c)
                        + pre(x[t // c, t % c, 2 * i + 1, 2 * j + 1], p, t % c))

    return pool


def _is_half_pool(call) -> bool:
    a = call.attrs
    ints = lambda xs: [int(v) for v in xs]  # noqa: E731
    return dense_block.half_pool(ints(a.pool_size), ints(a.strides), ints(a.padding),
                                 ints(a.dilation), bool(a.ceil_mode)) \
        and a.layout == "NCHW" and a.out_layout == "NCHW"


def rewrite_block(rw, block: relax.DataflowBlock) -> tuple[relax.DataflowBlock, int]:
    """Each transition of the block with its pool first (see the module doc); `rw` is the dense
    rewrite (its `kernel`, `_spec_of`, `cpu`)."""
    from hwlat.kernels.dense import conv
    from hwlat.kernels.dense.lowering import _const_array, kernel_module, why_not

    value = {b.var: b.value for b in block.bindings}
    users = relax.analysis.udchain(block)
    out, dead = [], set()
    for b in block.bindings:
        call = b.value
        src = call.args[0] if isinstance(call, relax.Call) and call.op == _AVG_POOL else None
        spec = rw._spec_of(value.get(src)) if isinstance(src, relax.DataflowVar) else None
        ep = getattr(spec, "epilogue", None)
        if not isinstance(spec, Conv2dSpec) or not spec.prologue or not _is_half_pool(call) \
                or list(users.get(src, ())) != [b.var] or kernel_module(spec, rw.cpu)[0] != "conv" \
                or ep.residual or ep.activation != "none" or ep.post \
                or static_f32_shape(b.var) != (spec.batch, spec.cout, spec.height // 2, spec.width // 2):
            out.append(b)
            continue
        fields = list(value[src].args[1].fields)
        x, w, pre = fields[0], fields[1], fields[-1]
        xs = static_f32_shape(x)
        small = dataclasses.replace(spec, height=spec.height // 2, width=spec.width // 2, prologue=False)
        wp = _const_array(w)
        if xs is None or wp is None or why_not(small) \
                or conv.is_gemv(small, cpu=rw.cpu):
            out.append(b)
            continue
        pspec = ProloguePoolSpec(spec.batch, spec.cin, spec.height, spec.width, xs[1])
        pooled = relax.DataflowVar(f"{b.var.name}_in", relax.TensorType(pspec.y_shape, "float32"))
        out.append(relax.VarBinding(pooled, relax.call_tir(
            rw.kernel(pspec), [x, pre], relax.TensorType(pspec.y_shape, "float32"))))
        wv = conv.unpack_weight(spec, wp, cpu=rw.cpu)
        packed = relax.const(np.ascontiguousarray(conv.pack_weight(small, wv, cpu=rw.cpu)))
        out.append(relax.VarBinding(b.var, relax.call_tir(
            rw.kernel(small), [pooled, packed, *fields[2:-1]],
            relax.TensorType(small.y_shape, "float32"))))
        dead.add(src)
    if not dead:
        return block, 0
    return relax.DataflowBlock([b for b in out if b.var not in dead]), len(dead)


# --- max / average pools with any window, stride, padding and ceil_mode (NCHW, float32) ---------

_MAX_POOL = tvm.ir.Op.get("relax.nn.max_pool2d")
# the rewrite leaves pools with output rows shorter than one 16-lane vector to TVM: on 14x14 and
# 7x7 planes (3x3, stride 1) TVM's own loop measured as fast or faster at 1 thread
MIN_OUT_W = 16
_NEG = -3.4028234663852886e38  # the lowest float32: a max pool's padding


@dataclass(frozen=True)
class WindowPoolSpec:
    """y (batch, channels, out_h, out_w): output (i, j) reduces x (batch, channels, height,
    width) over rows i * stride_h - pad_top + [0, kernel_h) and the columns alike, the rows and
    columns outside x left out (max), or summed as zeros (avg; divided by kernel_h * kernel_w
    when `count_pad`, else by the count of x's elements in the window). The output size comes
    from the graph (floor or ceil mode alike); every window holds one element of x at least."""

    kind: str  # "max" | "avg"
    batch: int
    channels: int
    height: int
    width: int
    out_h: int
    out_w: int
    kernel_h: int
    kernel_w: int
    stride_h: int
    stride_w: int
    pad_top: int
    pad_left: int
    count_pad: bool = False

    @property
    def y_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.channels, self.out_h, self.out_w)


def window_supports(spec: WindowPoolSpec) -> str | None:
    """None when `window_primfunc` takes the spec, else the reason."""
    if spec.kind not in ("max", "avg"):
        return f"pool kind {spec.kind!r}"
    dims = (spec.batch, spec.channels, spec.height, spec.width, spec.out_h, spec.out_w,
            spec.kernel_h, spec.kernel_w, spec.stride_h, spec.stride_w)
    if min(dims) < 1 or spec.pad_top < 0 or spec.pad_left < 0:
        return "a size below 1 or a negative padding"
    for size, out, k, s, p in ((spec.height, spec.out_h, spec.kernel_h, spec.stride_h, spec.pad_top),
                               (spec.width, spec.out_w, spec.kernel_w, spec.stride_w, spec.pad_left)):
        if p >= k or (out - 1) * s - p >= size:
            return "a window with no element of the input"
        if spec.kind == "avg" and spec.count_pad and (out - 1) * s + k > size + 2 * p:
            return "an average counting the padding with windows past it (ceil mode)"
    return None


def _counts(size: int, out: int, k: int, s: int, p: int) -> list[int]:
    return [min(i * s - p + k, size) - max(i * s - p, 0) for i in range(out)]


def window_primfunc(spec: WindowPoolSpec) -> tvm.tirx.PrimFunc:
    """Per plane and output row, separably: x's rows of the window reduced into a row buffer
    (contiguous vectors over the columns; rows outside x left out, the buffer's padding columns
    hold the padding value), then each output over the window's columns of the buffer (vectorized
    along the output columns). An average is the sum times `window_divisors`."""
    reason = window_supports(spec)
    if reason is not None:
        raise ValueError(f"window pool: {reason}")
    n, c, h, w, oh, ow = spec.batch, spec.channels, spec.height, spec.width, spec.out_h, spec.out_w
    kh, kw, sh, sw, pt, pl = (spec.kernel_h, spec.kernel_w, spec.stride_h, spec.stride_w,
                              spec.pad_top, spec.pad_left)
    wp = (ow - 1) * sw + kw  # padded columns the windows cover
    cw = min(w, wp - pl)  # x's columns a window reads
    right = wp - pl - cw
    is_max = spec.kind == "max"
    f32 = "float32"
    fill = T.float32(_NEG if is_max else 0.0)

    def red(a, b):
        return T.max(a, b) if is_max else a + b

    def hsum(rb, j):
        v = rb[j * sw]
        for q in range(1, kw):
            v = red(v, rb[j * sw + q])
        return v

    # a row loop of e lanes in vectors of 16, 8 or 4 (the widest that e fills): ceil(e / V)
    # of them, the last overlapping the one before where e is not a multiple (each lane's value
    # is a pure function of x, so computing it twice is harmless); the rows a window clips at
    # the top or bottom accumulate, so there e // V vectors and single lanes after them
    def vec(e):
        return 16 if e >= 16 else 8 if e >= 8 else 4 if e >= 4 else 1

    xv, yv = vec(cw), vec(ow)
    xn, yn = -(-cw // xv), -(-ow // yv)
    xf, xt = cw // xv, cw % xv
    planes = n * c
    per_task = -(-planes // min(planes, 256))
    tasks = -(-planes // per_task)
    d_shape = (1, 1) if is_max else (oh, ow)

    def scaled(v, d, i, j):
        return v if is_max else v * d[i, j]

    def vsum(x, b, ch, r0, q):
        v = x[b, ch, r0, q]
        for u in range(1, kh):
            v = red(v, x[b, ch, r0 + u, q])
        return v

    @T.prim_func(s_tir=True, private=True)
    def pool(x: T.Buffer((n, c, h, w), f32), d: T.Buffer(d_shape, f32),
             y: T.Buffer((n, c, oh, ow), f32)):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        for t in T.parallel(tasks):
            rb = T.alloc_buffer((wp,), f32)
            for q in range(pl):
                rb[q] = fill
            for q in range(right):
                rb[pl + cw + q] = fill
            for pp in range(T.min(per_task, planes - t * per_task)):
                for i in range(oh):
                    r0 = T.max(i * sh - pt, 0)
                    r1 = T.min(i * sh - pt + kh, h)
                    if r1 - r0 == kh:  # the whole window inside x: one pass
                        for k in range(xn):
                            for v in T.vectorized(xv):
                                rb[pl + T.min(k * xv, cw - xv) + v] = vsum(
                                    x, (t * per_task + pp) // c, (t * per_task + pp) % c, r0,
                                    T.min(k * xv, cw - xv) + v)
                    else:  # rows left out at the top or bottom
                        for k in range(xf):
                            for v in T.vectorized(xv):
                                rb[pl + k * xv + v] = x[(t * per_task + pp) // c, (t * per_task + pp) % c,
                                                        r0, k * xv + v]
                        for v in range(xt):
                            rb[pl + xf * xv + v] = x[(t * per_task + pp) // c, (t * per_task + pp) % c,
                                                     r0, xf * xv + v]
                        for r in range(r0 + 1, r1):
                            for k in range(xf):
                                for v in T.vectorized(xv):
                                    rb[pl + k * xv + v] = red(rb[pl + k * xv + v], x[
                                        (t * per_task + pp) // c, (t * per_task + pp) % c, r, k * xv + v])
                            for v in range(xt):
                                rb[pl + xf * xv + v] = red(rb[pl + xf * xv + v], x[
                                    (t * per_task + pp) // c, (t * per_task + pp) % c, r, xf * xv + v])
                    for k in range(yn):
                        for v in T.vectorized(yv):
                            y[(t * per_task + pp) // c, (t * per_task + pp) % c, i,
                              T.min(k * yv, ow - yv) + v] = scaled(
                                hsum(rb, T.min(k * yv, ow - yv) + v), d, i, T.min(k * yv, ow - yv) + v)

    # a root block: Relax asks a call_tir with one non-constant input whether it is a reshape
    root = s_tir.SBlockRealize([], True, s_tir.SBlock([], [], [], "root", pool.body))
    return tvm.tirx.PrimFunc(pool.params, root, pool.ret_type, pool.attrs)

def window_divisors(spec: WindowPoolSpec) -> np.ndarray | None:
    """The average pool's per-output factor (1 / the window's count), the kernel's second
    argument ((1, 1) ones for a max pool, not read)."""
    if spec.kind == "max":
        return np.ones((1, 1), np.float32)  # not read
    if spec.count_pad:
        return np.full((spec.out_h, spec.out_w), 1.0 / (spec.kernel_h * spec.kernel_w), np.float32)
    return (1.0 / np.outer(_counts(spec.height, spec.out_h, spec.kernel_h, spec.stride_h, spec.pad_top),
                           _counts(spec.width, spec.out_w, spec.kernel_w, spec.stride_w, spec.pad_left))
            ).astype(np.float32)


def window_spec(call: relax.Call, y_shape) -> WindowPoolSpec | None:
    """The spec of a `relax.nn.max_pool2d` / `avg_pool2d` call (NCHW, float32, static shapes,
    no dilation), or None."""
    if not isinstance(call, relax.Call) or call.op not in (_MAX_POOL, _AVG_POOL):
        return None
    a = call.attrs
    xs = static_f32_shape(call.args[0])
    if xs is None or y_shape is None or len(xs) != 4 or len(y_shape) != 4 \
            or a.layout != "NCHW" or a.out_layout != "NCHW" \
            or tuple(int(v) for v in a.dilation) != (1, 1) or tuple(y_shape[:2]) != tuple(xs[:2]):
        return None
    pt, pl, pb, pr = (int(v) for v in a.padding)
    (kh, kw), (sh, sw) = (int(v) for v in a.pool_size), (int(v) for v in a.strides)
    kind = "max" if call.op == _MAX_POOL else "avg"
    count_pad = kind == "avg" and bool(a.count_include_pad)
    if count_pad and (pt, pl) != (pb, pr):
        return None
    spec = WindowPoolSpec(kind, *xs, *y_shape[2:], kh, kw, sh, sw, pt, pl, count_pad)
    # the graph's output size is floor or ceil of the padded size's windows, nothing else
    for size, out, k, s, p0, p1 in ((xs[2], y_shape[2], kh, sh, pt, pb), (xs[3], y_shape[3], kw, sw, pl, pr)):
        if out not in ((size + p0 + p1 - k) // s + 1, -(-(size + p0 + p1 - k) // s) + 1):
            return None
    return spec if window_supports(spec) is None else None


def window_rewrite(rw, call: relax.Call) -> relax.Expr:
    """A max or average pool as `window_primfunc`'s kernel (`rw`: the dense rewrite), or the
    call as it was."""
    spec = window_spec(call, static_f32_shape(call))
    if spec is None or spec.out_w < MIN_OUT_W:
        return call
    rw.count += 1
    return relax.call_tir(rw.kernel(spec), [call.args[0], relax.const(window_divisors(spec))], relax.TensorType(spec.y_shape, "float32"))
