"""Concats along the channels with no copy: the tensors concatenated are written into their
slices of one buffer by their producers, and the convs that read a concat read the buffer.

A *family* is a concat along axis 1 of 4-D float32 tensors, `concat(x0, f1, ..., fL)` (its
fields), with every concat of a prefix of those fields in the same dataflow block:
DenseNet's block, whose layer i reads `concat(x0, f1, ..., f(i-1))` and adds f_i. A lone concat
(Inception's and SqueezeNet's modules) is left as it is: writing its producers' slices in place
measured no faster on GoogLeNet and SqueezeNet, whose copies are a small share of the net
(docs/notebook/compile.md). Rewritten (`rewrite_block`):

- one buffer of the full concat's channels: x0's producer writes its slice where it is a conv
  kernel call (conv.py, `out=`) read by the family alone, else x0 is copied in (`copy_primfunc`);
- each f_j, a conv kernel call read by the family alone, writes its slice of the buffer in
  place (`call_tir_inplace`, `out=`), in binding order;
- each reader of a shorter concat, a conv kernel reading its input in place (1x1, stride 1,
  one image), reads the buffer's first channels (`x_channels=`), bound before the next f_j's
  write; the full concat is the buffer (any reader).

Where any of that does not hold the family is left as it is. DenseNet's concat copies grow with
the block (each layer copies every feature before it): densenet121 spent 9 ms of 56 in them
(1 thread, docs/notebook/compile.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax
from tvm.script import tirx as T

from hwlat.graph import dense_block
from hwlat.kernels.dense.spec import Conv2dSpec
from hwlat.kernels.relax_rewrite import static_f32_shape

_CONCAT = tvm.ir.Op.get("relax.concat")


@dataclass(frozen=True)
class ConvSlice:
    """A conv kernel (conv.py) reading the first cin of `x_channels` input channels (None: x
    is its own) and writing channels offset .. offset + cout of `y_channels` (None: y is its
    own; offset None: read at run time from an int32 tensor of one value passed before y, so
    that a block's producers of one shape share one kernel: DenseNet's 3x3 convs, 58 kernels
    otherwise in densenet121, each compiled)."""

    spec: Conv2dSpec
    x_channels: int | None
    y_channels: int | None
    offset: int | None = None


@dataclass(frozen=True)
class ChannelCopy:
    """x (batch, channels, height, width) copied into channels offset .. offset + channels of a
    tensor of `total` channels."""

    shape: tuple[int, int, int, int]
    total: int
    offset: int = 0


def copy_primfunc(spec: ChannelCopy) -> tvm.tirx.PrimFunc:
    n, c, h, w = spec.shape
    q, total, off = h * w, spec.total, spec.offset
    f32 = "float32"

    @T.prim_func(s_tir=True, private=True)
    def copy(x: T.Buffer((n, c, h, w), f32), y: T.Buffer((n, total, h, w), f32)):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        xf = T.decl_buffer((n * c, q), f32, data=x.data)
        yf = T.decl_buffer((n, total, q), f32, data=y.data)
        for t in T.parallel(n * c):
            for j in T.vectorized(q):
                yf[t // c, off + t % c, j] = xf[t, j]

    return copy


def _concat_fields(call) -> list | None:
    """The fields of a channel concat of 4-D float32 tensors, else None."""
    if not isinstance(call, relax.Call) or call.op != _CONCAT or len(call.args) != 1:
        return None
    fields = getattr(call.args[0], "fields", None)
    out = static_f32_shape(call)
    if not fields or out is None or len(out) != 4 or call.attrs.axis is None \
            or int(call.attrs.axis) % 4 != 1:
        return None
    fields = list(fields)
    if len({*fields}) != len(fields) or not all(isinstance(f, relax.Var) for f in fields):
        return None
    return fields


def rewrite_block(rw, block: relax.DataflowBlock) -> tuple[relax.DataflowBlock, int]:
    """Each family of the block rewritten (see the module doc); `rw` is the dense rewrite
    (its `kernel`, `_spec_of`, `cpu`)."""
    from hwlat.kernels.dense.lowering import kernel_module

    value = {b.var: b.value for b in block.bindings}
    users = relax.analysis.udchain(block)
    order = {b.var: i for i, b in enumerate(block.bindings)}
    concats = {b.var: f for b in block.bindings if (f := _concat_fields(b.value)) is not None}

    def conv_call(var):  # the spec of a conv.py kernel call bound to var, else None
        spec = rw._spec_of(value.get(var))
        if isinstance(spec, Conv2dSpec) and kernel_module(spec, rw.cpu)[0] == "conv" \
                and isinstance(var, relax.DataflowVar):
            return spec
        return None

    new: dict = {}  # var -> its new value (None: the binding goes)
    before: dict = {}  # var -> bindings to put before its binding
    done = 0
    taken: set = set()
    for top in sorted(concats, key=lambda v: -len(concats[v])):
        fields = concats[top]
        if top in taken or len(fields) < 2:
            continue
        family = dense_block.prefix_family(concats, top, lambda a, b: a.same_as(b))
        if len(family) < 2 or any(v in taken for v in family):
            continue  # (a lone concat: measured no faster without its copy, see the module doc)
        plan = _plan(fields, family, top, value, users, order, conv_call, new)
        if plan is None:
            continue
        taken |= set(family)
        done += 1
        _apply(rw, plan, fields, family, top, value, new, before, order)
    if not done:
        return block, 0
    out = []
    for b in block.bindings:
        out += before.get(b.var, [])
        if b.var not in new:
            out.append(b)
        elif new[b.var] is not None:
            out.append(relax.VarBinding(b.var, new[b.var]))
    return relax.DataflowBlock(out), done


def _plan(fields, family, top, value, users, order, conv_call, new):
    """(specs of the fields' producers (None: x0 copied), offsets, readers) where the family can
    be rewritten, else None; readers: the calls reading a shorter concat, as (var, concat var).
    A call another family's rewrite took (in `new`) is neither."""
    specs = [conv_call(f) if f not in new else None for f in fields]
    shapes = [static_f32_shape(f) for f in fields]
    if any(s is None or len(s) != 4 for s in shapes) or shapes[0][0] != 1:
        return None
    if any(not isinstance(v, relax.DataflowVar) for v in family if v is not top):
        return None
    fam = set(family)
    for i, (f, sp) in enumerate(zip(fields, specs, strict=True)):
        mine = set(users.get(f, ())) <= fam
        if i == 0 and not mine:
            specs[0] = None  # x0 read elsewhere too: copied in
        elif i > 0 and (sp is None or not mine):
            return None
    # the writes in binding order, f1 .. fL after x0
    if any(order[fields[i]] >= order[fields[i + 1]] for i in range(1, len(fields) - 1)):
        return None
    readers = []
    for v, n in family.items():
        if v is top:
            continue
        for r in users.get(v, ()):
            spec = conv_call(r) if r not in new else None
            call = value.get(r)
            if spec is None or spec.batch != 1 or spec.kernel != (1, 1) or spec.stride != (1, 1) \
                    or any(spec.padding) or not call.args[1].fields[0].same_as(v) \
                    or any(a.same_as(v) for a in call.args[1].fields[1:]):
                return None
            if n < len(fields) and order[r] >= order[fields[n]]:
                return None  # read after the next field's write
            readers.append((r, v))
    offsets = [0]
    for s in shapes:
        offsets.append(offsets[-1] + s[1])
    return specs, offsets, readers


def _apply(rw, plan, fields, family, top, value, new, before, order):
    specs, offsets, readers = plan
    total = offsets[-1]
    h, w = static_f32_shape(fields[0])[2:]
    ty = relax.TensorType((1, total, h, w), "float32")
    versions = []  # the buffer after each field's write
    first = min([order[v] for v in family] + [order[fields[1]]])
    first_var = next(v for v, i in order.items() if i == first)
    for i, f in enumerate(fields):
        last = i == len(fields) - 1
        var = top if last else relax.DataflowVar(f"{top.name}_buf{i}", ty)
        if specs[i] is None:  # x0 copied into a new buffer, before the family's first binding
            gv = rw.kernel(ChannelCopy(static_f32_shape(f), total, 0))
            before.setdefault(first_var, []).append(relax.VarBinding(var, relax.call_tir(gv, [f], ty)))
        else:
            args = [*value[f].args[1].fields, relax.const(np.array([offsets[i]], np.int32))]
            gv = rw.kernel(ConvSlice(specs[i], None, total))
            if i == 0:
                call = relax.call_tir(gv, args, ty)
            else:
                call = relax.op.call_tir_inplace(gv, [*args, versions[-1]], len(args), ty)
            before.setdefault(f, []).append(relax.VarBinding(var, call))
            new[f] = None
        versions.append(var)
    for v in family:
        if v is not top:
            new[v] = None
    new.setdefault(top, None)
    for r, v in readers:
        call = value[r]
        spec = rw._spec_of(call)
        args = list(call.args[1].fields)
        args[0] = versions[family[v] - 1]
        new[r] = relax.call_tir(rw.kernel(ConvSlice(spec, total, None)), args,
                                relax.TensorType(spec.y_shape, "float32"))
