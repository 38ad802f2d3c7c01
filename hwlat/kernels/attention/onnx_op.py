"""ONNX opset-23 `Attention` -> `relax.nn.attention`, which the fused attention pass then turns
into hwlat's kernel (TVM's own converter of that name implements com.microsoft's Attention).

Lowered: 4-D Q, K, V ([batch, heads, seq, head dim], as ONNX's layout with q_num_heads implied),
equal head counts for Q and K/V, optional `scale` and `is_causal` (ONNX's causal mask is aligned
top-left, as TVM's "TopLeft"). Refused before the import, with the reason: an attention mask,
past key/value caches or the present/qk outputs, softcap, and grouped heads.
"""

from __future__ import annotations

from tvm import relax

from hwlat.errors import InvalidModelError


def _attr(node, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return a.i if a.type == a.INT else a.f if a.type == a.FLOAT else default
    return default


def refuse(node) -> str | None:
    if any(node.input[3:]):
        return "an attention mask or past key/value inputs are not lowered"
    if len([o for o in node.output if o]) > 1:
        return "only the attention output is lowered (not present key/value or qk outputs)"
    if _attr(node, "softcap", 0.0):
        return "softcap is not lowered"
    if _attr(node, "qk_matmul_output_mode", 0):
        return "qk_matmul_output_mode is not lowered"
    return None


def convert(bb: relax.BlockBuilder, inputs: list, attrs: dict):
    q, k, v = inputs[:3]
    shapes = []
    for name, x in (("Q", q), ("K", k), ("V", v)):
        ty = x.ty
        if getattr(ty, "ndim", -1) != 4:
            raise InvalidModelError(f"Attention: {name} must be 4-D [batch, heads, seq, head dim] "
                                    "to be lowered (3-D inputs with q_num_heads are not)")
        shapes.append([int(d) for d in ty.shape.values])
    if shapes[0][1] != shapes[1][1] or shapes[1][1] != shapes[2][1]:
        raise InvalidModelError(f"Attention: grouped heads ({shapes[0][1]} query heads, "
                                f"{shapes[1][1]} key/value heads) are not lowered")
    scale = attrs.get("scale")
    bsnh = [bb.emit(relax.op.permute_dims(x, [0, 2, 1, 3])) for x in (q, k, v)]
    out = bb.emit(relax.op.nn.attention(
        *bsnh, scale=float(scale) if scale else None,
        causal_mask="TopLeft" if attrs.get("is_causal", 0) else None))
    return relax.op.permute_dims(out, [0, 2, 1, 3])
