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
from tvm import relax
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
