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

from hwlat.kernels.attention.kernel import AttentionSpec, attention_primfunc
from hwlat.kernels.relax_rewrite import KernelRewriter, as_kernel, module_pass, static_f32_shape

KERNEL_NAME = "hwlat_attention"


@lru_cache(maxsize=64)
def kernel_for(spec: AttentionSpec) -> tvm.tirx.PrimFunc:
    return as_kernel(attention_primfunc(spec))


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
    def make_kernel(self, spec: AttentionSpec):
        return kernel_for(spec), KERNEL_NAME

    def rewrite_function(self, func: relax.Function) -> relax.Function:
        op_pat, op_fn = _op_pattern(self)
        dec_pat, dec_fn = _decomposed_pattern(self)
        return rewrite_call(dec_pat, dec_fn, rewrite_call(op_pat, op_fn, func))


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
    q, k, kt_any, v, c = wildcard(), wildcard(), wildcard(), wildcard(), is_const()
    kt_perm = is_op("relax.permute_dims")(k)
    scores = is_op("relax.matmul")(q, kt_perm | kt_any)
    mul_r, mul_l = is_op("relax.multiply")(scores, c), is_op("relax.multiply")(c, scores)
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
        scale = 1.0
        if c in m:
            value = _scalar(m[c])
            if value is None or value == 0.0:
                return call
            scale = 1.0 / value if div in m else value
        if len(qs) == 4:
            b, n = lead
        else:
            b, n = 1, int(np.prod(lead, dtype=np.int64))
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
        k_expr = _k_from(m, k, kt_perm, kt_any, len(qs))
        spec = AttentionSpec(b, n, sq, sk, d, dv, scale, None, "BNSD", bias_dims)
        args = [m[q], k_expr, m[v]]
        if len(qs) != 4:
            shapes = ((b, n, sq, d), (b, n, sk, d), (b, n, sk, dv))
            args = [relax.op.reshape(a, s) for a, s in zip(args, shapes, strict=True)]
        if bias_expr is not None:
            args.append(bias_expr)
        rw.count += 1
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
