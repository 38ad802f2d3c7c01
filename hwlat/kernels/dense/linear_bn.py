"""A BatchNorm after a matmul with a constant weight, folded into the weight (LeViT's Linear ->
BatchNorm1d, as torch exports it):

    reshape(batch_norm(reshape(matmul(x, W), (R, C)), g, b, mean, var)[0], S)
        ->  reshape(matmul(x, W * s) + (b - mean * s), S)      s = g / sqrt(var + eps)

(either reshape absent too), where W (K, C) and the four BatchNorm operands are constants, the
norm runs in inference mode over the last axis, and that axis is the matmul's output channels C
in both views. The fold runs before the dense rewrite, so the matmul kernel takes the shift as
its bias and the residual add and activation after it into its store, where the BatchNorm was
left to TVM's loops before. Anything else is left as it was.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, is_tuple_get_item, rewrite_call, wildcard

from hwlat.kernels.relax_rewrite import static_f32_shape

_Constant = tvm.ir.expr.Constant


def _array(c) -> np.ndarray | None:
    if not isinstance(c, _Constant) or not hasattr(c.value, "numpy"):
        return None
    value = c.value.numpy()
    return value if value.dtype == np.float32 else None


def fold_linear_bn(mod: tvm.IRModule) -> tvm.IRModule:
    """The module with every such BatchNorm folded (the same module object when there is none)."""
    x, w = wildcard(), is_const()
    mm = is_op("relax.matmul")(x, w)
    view = is_op("relax.reshape")(mm, wildcard())
    g, b, mean, var = is_const(), is_const(), is_const(), is_const()
    bn = is_op("relax.nn.batch_norm")(view | mm, g, b, mean, var)
    item = is_tuple_get_item(bn, 0)
    pattern = is_op("relax.reshape")(item, wildcard()) | item
    changed = False

    def rewrite(call: relax.Expr, m: dict) -> relax.Expr:
        nonlocal changed
        bn_call, mm_call = m[bn], m[mm]
        attrs = bn_call.attrs
        if bool(attrs.training) or not bool(attrs.scale) or not bool(attrs.center):
            return call
        weight = _array(m[w])
        params = [_array(m[p]) for p in (g, b, mean, var)]
        in_shape, mm_shape = static_f32_shape(bn_call.args[0]), static_f32_shape(mm_call)
        out_shape = static_f32_shape(call)
        if weight is None or weight.ndim != 2 or any(p is None for p in params):
            return call
        if in_shape is None or mm_shape is None or out_shape is None:
            return call
        c = weight.shape[1]
        axis = int(attrs.axis)
        if axis not in (-1, len(in_shape) - 1) or in_shape[-1] != c or mm_shape[-1] != c:
            return call
        if any(p.shape != (c,) for p in params):
            return call
        if str(mm_call.attrs.out_dtype) not in ("None", "void", "float32"):
            return call
        gamma, beta, mu, sigma2 = (p.astype(np.float64) for p in params)
        s = gamma / np.sqrt(sigma2 + float(attrs.epsilon))
        w2 = (weight.astype(np.float64) * s).astype(np.float32)
        shift = (beta - mu * s).astype(np.float32)
        out = relax.op.add(relax.op.matmul(m[x], relax.const(w2)), relax.const(shift))
        changed = True
        return out if tuple(out_shape) == tuple(mm_shape) else relax.op.reshape(out, out_shape)

    updates = {}
    for gv, func in mod.functions.items():
        if isinstance(func, relax.Function):
            new = rewrite_call(pattern, rewrite, func)
            if not new.same_as(func):
                updates[gv] = new
    if not changed:
        return mod
    mod = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
    for gv, func in updates.items():
        mod[gv] = func
    return mod
