"""The Relax pass that puts hwlat's fused attention kernel in place of attention in a module.

Two forms are rewritten into one `call_tir` of the kernel (kernel.py), before legalization:

- `relax.nn.attention(q, k, v)` (BSNH; no bias, no sliding window): the kernel runs in BSNH, so
  no transposes are added. `causal_mask` "TopLeft" is causal offset 0; "BottomRight" is offset
  |Sq - Sk|, exactly TVM's own legalization of the op (for Sq <= Sk that is bottom-right
  alignment, Sk - Sq). `scale` None is 1/sqrt(head_dim).
- the decomposed form ONNX exporters write (and `import_onnx` keeps):
  `matmul(q, kT) [* c | c * | / c] [+ bias] -> softmax(axis=-1) -> matmul(., v)` with q (..., Sq, D),
  kT (..., D, Sk), v (..., Sk, Dv), a scalar constant c, the same leading dims on all three:
  the kernel runs in BNSD; k is kT's input when kT is a permute_dims of the last two axes (as
  the exporters write k.transpose(-2, -1)), else a transpose of kT is added. Rank 4 maps to
  (B, N); rank 2 and 3 get reshapes to (1, N, S, D) and back. The bias (either operand order
  of the add; a relative position bias, a mask; constant or not) is any float32 tensor that
  broadcasts to the scores: it goes to the kernel as (Bb, Nb, Sq, Sk), Bb and Nb 1 where it is
  broadcast over batch or heads (LeViT's and Swin's per-head position biases stay one copy).
  c may also be a per-head tensor, constant or not, of shape (1, N, 1, 1) (or fewer leading
  dims): the kernel's (N,) head-scale operand (Swin-V2's exp(clamped logit scale), folded by
  the importer to a constant). q and k that are both L2-normalised along the head dim as
  torch's F.normalize exports, `x / broadcast_to(clip(sqrt(sum(x * x, -1, keepdims)), eps,
  inf))` (or `maximum(., eps)`; broadcast_to optional), with the same eps, are read before the
  normalisation and normalised inside the kernel (Swin-V2's cosine attention).
  Swin's shifted-window form, `reshape(reshape(scores + bias, (B / nW, nW, ...)) + mask,
  scores' shape)`, takes bias and mask summed to one (B, N, Sq, Sk) bias (constants: folded).

Only float32 with static shapes is rewritten; everything else is left to TVM's lowering. Each
distinct shape gets one PrimFunc, shared by all its calls. The PrimFunc is marked opaque
(`op_pattern` 8) and scheduled, so FuseOps leaves it alone and MetaSchedule does not tune it.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

from hwlat.kernels import cpu as cpu_info
from hwlat.kernels.attention.kernel import AttentionSpec, attention_primfunc
from hwlat.kernels.cpu import CpuInfo
from hwlat.kernels.relax_rewrite import KernelRewriter, as_kernel, module_pass, static_f32_shape

KERNEL_NAME = "hwlat_attention"
_Constant = tvm.ir.expr.Constant  # relax.const(...)


@lru_cache(maxsize=64)
def kernel_for(spec: AttentionSpec, cpu: CpuInfo | None = None) -> tvm.tirx.PrimFunc:
    """The kernel for a spec, tiled for `cpu` (None: the AVX2 reference tiles)."""
    return as_kernel(attention_primfunc(spec, cpu=cpu))


def fuse_attention_pass() -> tvm.transform.Pass:
    """Module pass: rewrite attention (both forms above) into calls of the fused kernel."""
    return module_pass("hwlat.FuseAttention", fuse_attention)


def fuse_attention(mod: tvm.IRModule) -> tvm.IRModule:
    """The module with every attention the kernel can take rewritten (the same module object
    when there is none)."""
    return _Rewriter(mod).run()


def _scalar(c: relax.Expr) -> float | None:
    value = c.value.numpy()
    if value.size != 1 or not np.issubdtype(value.dtype, np.floating):
        return None
    return float(value.reshape(()))


class _Rewriter(KernelRewriter):
    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.var2val: dict = {}
        self.packed = 0  # rewrites that read a packed qkv (layout QKV)

    def make_kernel(self, spec: AttentionSpec):
        return kernel_for(spec, cpu_info.current()), KERNEL_NAME

    def rewrite_function(self, func: relax.Function) -> relax.Function:
        op_pat, op_fn = _op_pattern(self)
        dec_pat, dec_fn = _decomposed_pattern(self)
        func = rewrite_call(op_pat, op_fn, func)
        self.var2val = relax.analysis.get_var2val(func)  # to see how q, k and v were made
        func = rewrite_call(dec_pat, dec_fn, func)
        return _cancel_permutes(func) if self.packed else func


def _op_pattern(rw: _Rewriter):
    q, k, v = wildcard(), wildcard(), wildcard()
    pattern = is_op("relax.nn.attention")(q, k, v)

    def rewrite(call: relax.Call, m: dict) -> relax.Expr:
        attrs = call.attrs
        qs, ks, vs = static_f32_shape(m[q]), static_f32_shape(m[k]), static_f32_shape(m[v])
        if attrs.window_size is not None or qs is None or ks is None or vs is None:
            return call
        if len(qs) != 4 or len(ks) != 4 or len(vs) != 4:
            return call
        (b, sq, n, d), (_, sk, _, _), dv = qs, ks, vs[3]
        if ks != (b, sk, n, d) or vs[:3] != (b, sk, n):
            return call
        mask = attrs.causal_mask
        offset = {None: None, "TopLeft": 0, "BottomRight": abs(sq - sk)}.get(mask, -1)
        if offset == -1:
            return call
        scale = float(attrs.scale.value) if attrs.scale is not None else 1.0 / math.sqrt(d)
        spec = AttentionSpec(b, n, sq, sk, d, dv, scale, offset, "BSNH")
        rw.count += 1
        return relax.call_tir(rw.kernel(spec), [m[q], m[k], m[v]],
                              relax.TensorType((b, sq, n, dv), "float32"))

    return pattern, rewrite


def _decomposed_pattern(rw: _Rewriter):
    q, k, kt_any, v, c, cm = wildcard(), wildcard(), wildcard(), wildcard(), is_const(), wildcard()
    kt_perm = is_op("relax.permute_dims")(k)
    scores = is_op("relax.matmul")(q, kt_perm | kt_any)
    mul_r, mul_l = is_op("relax.multiply")(scores, cm), is_op("relax.multiply")(cm, scores)
    div = is_op("relax.divide")(scores, c)
    scaled = mul_r | mul_l | div | scores
    bias = wildcard()
    add_r, add_l = is_op("relax.add")(scaled, bias), is_op("relax.add")(bias, scaled)
    # Swin's shifted windows: (scores + bias).view(B / nW, nW, nH, S, S) + mask, viewed back
    bias5, mask5 = wildcard(), wildcard()
    view5 = is_op("relax.reshape")(is_op("relax.add")(scaled, bias5), wildcard())
    viewed = is_op("relax.reshape")(is_op("relax.add")(view5, mask5), wildcard())
    softmax = is_op("relax.nn.softmax")(add_r | add_l | viewed | scaled)
    pattern = is_op("relax.matmul")(softmax, v)

    def rewrite(call: relax.Call, m: dict) -> relax.Expr:
        qs, vs = static_f32_shape(m[q]), static_f32_shape(m[v])
        kt_expr = m[kt_perm] if kt_perm in m else m[kt_any]
        kts = static_f32_shape(kt_expr)
        if qs is None or vs is None or kts is None or not 2 <= len(qs) <= 4:
            return call
        if len(kts) != len(qs) or len(vs) != len(qs):
            return call
        *lead, sq, d = qs
        sk, dv = vs[-2:]
        if tuple(kts) != (*lead, d, sk) or tuple(vs[:-2]) != tuple(lead):
            return call
        if any(str(mm.attrs.out_dtype) not in ("None", "void", "float32")
               for mm in (call, m[scores])):
            return call
        sm = m[softmax]
        if int(sm.attrs.axis) not in (-1, len(qs) - 1):
            return call
        if len(qs) == 4:
            b, n = lead
        else:
            b, n = 1, int(np.prod(lead, dtype=np.int64))
        scale, head_scale = 1.0, None
        if c in m:
            value = _scalar(m[c])
            if value is None or value == 0.0:
                return call
            scale = 1.0 / value
        elif cm in m:
            value = _scalar(m[cm]) if isinstance(m[cm], _Constant) else None
            if value is not None:
                if value == 0.0:
                    return call
                scale = value
            else:
                head_scale = _head_scale(m[cm], tuple(lead), sq, sk, n)
                if head_scale is None:
                    return call
        bias_dims, bias_expr = None, None
        if viewed in m:
            v5 = static_f32_shape(m[view5])
            if tuple(static_f32_shape(m[viewed]) or ()) != (*lead, sq, sk) or v5 is None:
                return call
            if not _broadcasts(static_f32_shape(m[bias5]), (*lead, sq, sk)) or not _broadcasts(
                    static_f32_shape(m[mask5]), v5):
                return call
            full = relax.op.broadcast_to(m[bias5], (*lead, sq, sk))
            total = relax.op.add(relax.op.reshape(full, v5), m[mask5])
            bias_dims, bias_expr = _bias(relax.op.reshape(total, (*lead, sq, sk)), tuple(lead),
                                         sq, sk, b, n, shape=(*lead, sq, sk))
        elif add_r in m or add_l in m:
            bias_dims, bias_expr = _bias(m[bias], tuple(lead), sq, sk, b, n)
            if bias_expr is None:
                return call
        q_expr, k_expr = m[q], _k_from(m, k, kt_perm, kt_any, len(qs))
        qn, kn = _l2_normalized(q_expr, rw.var2val), _l2_normalized(k_expr, rw.var2val)
        eps = None
        if qn is not None and kn is not None and qn[1] == kn[1]:
            (q_expr, eps), k_expr = qn, kn[0]
        packed = None
        if len(qs) == 4 and sq == sk and d == dv:
            packed = _packed_qkv(q_expr, k_expr, m[v], rw.var2val, (b, sq, 3, n, d),
                                 scales=eps is None)
        layout = "BNSD"
        if packed is not None:
            qkv, factor = packed
            layout, scale = "QKV", scale * factor
        spec = AttentionSpec(b, n, sq, sk, d, dv, scale, None, layout, bias_dims,
                             head_scale is not None, eps)
        args = [q_expr, k_expr, m[v]] if packed is None else [qkv, qkv, qkv]
        if len(qs) != 4:
            shapes = ((b, n, sq, d), (b, n, sk, d), (b, n, sk, dv))
            args = [relax.op.reshape(a, s) for a, s in zip(args, shapes, strict=True)]
        if bias_expr is not None:
            args.append(bias_expr)
        if head_scale is not None:
            args.append(head_scale)
        rw.count += 1
        if packed is not None:  # out BSNH, viewed BNSD (the exporters' permute back cancels it)
            rw.packed += 1
            out = relax.call_tir(rw.kernel(spec), args,
                                 relax.TensorType((b, sq, n, dv), "float32"))
            return relax.op.permute_dims(out, [0, 2, 1, 3])
        out = relax.call_tir(rw.kernel(spec), args, relax.TensorType((b, n, sq, dv), "float32"))
        if len(qs) != 4:
            out = relax.op.reshape(out, (*lead, sq, dv))
        return out

    return pattern, rewrite


def _broadcasts(shape: tuple | None, full: tuple) -> bool:
    """Whether a float32 tensor of static `shape` broadcasts to `full` without widening it."""
    if shape is None or len(shape) > len(full):
        return False
    shape = (1,) * (len(full) - len(shape)) + tuple(shape)
    return all(s in (1, f) for s, f in zip(shape, full, strict=True))


def _bias(x: relax.Expr, lead: tuple, sq: int, sk: int, b: int, n: int,
          shape: tuple | None = None) -> tuple[tuple[int, int] | None, relax.Expr | None]:
    """The scores' additive operand as the kernel's (Bb, Nb, Sq, Sk) bias: ((Bb, Nb), expr), or
    (None, None) where it is not a float32 tensor of static shape that broadcasts to the scores
    (*lead, Sq, Sk) without widening them. Leading dims that are all 1 or all the scores' stay
    unexpanded (a reshape); others, and a bias broadcast along Sq or Sk, are broadcast first."""
    shape = static_f32_shape(x) if shape is None else shape  # given: x not yet normalized
    full = (*lead, sq, sk)
    if not _broadcasts(shape, full):
        return None, None
    shape = (1,) * (len(full) - len(shape)) + tuple(shape)
    if shape[-2:] == (sq, sk):
        head = shape[:-2]
        if len(lead) == 2 and all(s in (1, f) for s, f in zip(head, lead, strict=True)):
            dims = (head[0], head[1])
            return dims, relax.op.reshape(x, (*dims, sq, sk))
        if all(s == 1 for s in head):
            return (1, 1), relax.op.reshape(x, (1, 1, sq, sk))
        if head == tuple(lead):
            return (1, n), relax.op.reshape(x, (1, n, sq, sk))
    return (b, n), relax.op.reshape(relax.op.broadcast_to(x, full), (b, n, sq, sk))


def _packed_qkv(q: relax.Expr, k: relax.Expr, v: relax.Expr, var2val: dict, shape: tuple,
                scales: bool) -> tuple[relax.Expr, float] | None:
    """(X, factor) where q, k and v (B, N, S, D) are X's slices 0, 1 and 2 as timm's attention
    takes them from its qkv projection, `X (B, S, 3, N, D) -> permute_dims [2, 0, 3, 1, 4] ->
    split(3, axis 0) -> squeeze(0)`, and q and k are, apart from that, only multiplied by scalar
    constants (their product: `factor`; where `scales`) or transposed and transposed back
    (torch's export of SDPA's q * sqrt(scale), k^T * sqrt(scale)); else None."""
    found = [_qkv_slice(x, var2val, scales) for x in (q, k, v)]
    if any(f is None for f in found):
        return None
    (xq, iq, fq), (xk, ik, fk), (xv, iv, fv) = found
    if (iq, ik, iv) != (0, 1, 2) or fv != 1.0 or not (xq.same_as(xk) and xk.same_as(xv)):
        return None
    if static_f32_shape(xq) != tuple(shape):
        return None
    return xq, fq * fk


def _qkv_slice(x: relax.Expr, var2val: dict, scales: bool) -> tuple[relax.Expr, int, float] | None:
    """(X, i, factor): x is factor times slice i of X's third axis, viewed (B, N, S, D) (see
    _packed_qkv), else None."""
    factor, swapped = 1.0, False
    while True:
        e = _bound(x, var2val)
        if _is_call(e, "relax.multiply") and scales:
            lhs, rhs = e.args
            const, x = (rhs, lhs) if isinstance(rhs, _Constant) else (lhs, rhs)
            c = _scalar(const) if isinstance(const, _Constant) else None
            if c is None:
                return None
            factor *= c
        elif _is_call(e, "relax.permute_dims"):
            axes = e.attrs.axes
            if axes is None or [int(a) for a in axes] != [0, 1, 3, 2]:
                return None
            swapped, x = not swapped, e.args[0]
        elif _is_call(e, "relax.squeeze") and not swapped:
            axes = e.attrs.axis
            item = _bound(e.args[0], var2val)
            if axes is None or [int(a) for a in axes] != [0] or not isinstance(
                    item, relax.TupleGetItem):
                return None
            split = _bound(item.tuple_value, var2val)
            if not _is_call(split, "relax.split") or int(split.attrs.axis) != 0:
                return None
            sections = split.attrs.indices_or_sections
            sections = [int(i) for i in sections] if hasattr(sections, "__len__") else [
                int(sections)]
            if sections not in ([1, 2], [3]):
                return None
            perm = _bound(split.args[0], var2val)
            if not _is_call(perm, "relax.permute_dims") or perm.attrs.axes is None or [
                    int(a) for a in perm.attrs.axes] != [2, 0, 3, 1, 4]:
                return None
            return perm.args[0], int(item.index), factor
        else:
            return None


def _cancel_permutes(func: relax.Function) -> relax.Function:
    """permute_dims(permute_dims(x, a), b) that composes to the identity -> x."""
    x = wildcard()
    inner = is_op("relax.permute_dims")(x)
    pattern = is_op("relax.permute_dims")(inner)

    def rewrite(call: relax.Call, m: dict) -> relax.Expr:
        a, b = m[inner].attrs.axes, call.attrs.axes
        if a is None or b is None:
            return call
        a, b = [int(i) for i in a], [int(i) for i in b]
        return m[x] if [a[i] for i in b] == list(range(len(a))) else call

    return rewrite_call(pattern, rewrite, func)


def _head_scale(x: relax.Expr, lead: tuple, sq: int, sk: int, n: int) -> relax.Expr | None:
    """A multiplier of the scores (*lead, Sq, Sk) that varies by head only, as the kernel's
    (N,) head-scale operand; None where it is not one (a float32 tensor of static shape that
    is 1 but on the heads axis: axis 1 of rank-4 scores, axis 0 of rank-3 ones)."""
    shape = static_f32_shape(x)
    full = (*lead, sq, sk)
    if not _broadcasts(shape, full):
        return None
    shape = (1,) * (len(full) - len(shape)) + tuple(shape)
    heads_axis = len(lead) - 1 if len(lead) else None
    if any(s != 1 for i, s in enumerate(shape) if i != heads_axis):
        return None
    size = int(np.prod(shape, dtype=np.int64))
    flat = relax.op.reshape(x, (size,))
    return flat if size == n else relax.op.broadcast_to(flat, (n,))


def _bound(expr: relax.Expr, var2val: dict) -> relax.Expr:
    return var2val.get(expr, expr) if isinstance(expr, relax.Var) else expr


def _is_call(expr: relax.Expr, op: str) -> bool:
    return isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == op


def _float_arg(a) -> float | None:
    """A clip bound: a FloatImm, or a value that wraps one."""
    v = getattr(a, "value", None)
    v = getattr(v, "value", v)
    return float(v) if isinstance(v, int | float) else None


def _l2_normalized(expr: relax.Expr, var2val: dict) -> tuple[relax.Expr, float] | None:
    """(x, eps) where `expr` is x L2-normalised along its last axis as torch's F.normalize
    exports it: x / [broadcast_to](clip(sqrt(sum(x * x, axis=-1, keepdims=True)), eps, inf))
    or with maximum(., eps) for the clip; else None."""
    div = _bound(expr, var2val)
    if not _is_call(div, "relax.divide"):
        return None
    x, den = div.args
    den = _bound(den, var2val)
    if _is_call(den, "relax.broadcast_to"):
        den = _bound(den.args[0], var2val)
    if _is_call(den, "relax.clip"):
        lo, hi = (_float_arg(a) for a in den.args[1:])
        if lo is None or hi is None or not math.isinf(hi) or hi < 0:
            return None
        eps, root = float(lo), _bound(den.args[0], var2val)
    elif _is_call(den, "relax.maximum"):
        lhs, rhs = den.args
        const, other = (rhs, lhs) if isinstance(rhs, _Constant) else (lhs, rhs)
        eps = _scalar(const) if isinstance(const, _Constant) else None
        root = _bound(other, var2val)
    else:
        return None
    if eps is None or not eps > 0 or not _is_call(root, "relax.sqrt"):
        return None
    red = _bound(root.args[0], var2val)
    if not _is_call(red, "relax.sum") or not bool(red.attrs.keepdims):
        return None
    rank = len(static_f32_shape(x) or ())
    axes = red.attrs.axis
    if rank == 0 or axes is None or [int(a) % rank for a in axes] != [rank - 1]:
        return None
    sq = _bound(red.args[0], var2val)
    if not _is_call(sq, "relax.multiply") or not all(a.same_as(x) for a in sq.args):
        return None
    return x, eps


def _k_from(m: dict, k, kt_perm, kt_any, rank: int) -> relax.Expr:
    """k (..., Sk, D): the input of a permute_dims that swaps kT's last two axes, else kT
    transposed here."""
    swap = [*range(rank - 2), rank - 1, rank - 2]
    if kt_perm in m:
        axes = m[kt_perm].attrs.axes
        axes = list(reversed(range(rank))) if axes is None else [int(a) for a in axes]
        if axes == swap:
            return m[k]
        return relax.op.permute_dims(m[kt_perm], swap)
    return relax.op.permute_dims(m[kt_any], swap)
