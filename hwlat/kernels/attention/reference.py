"""numpy reference of hwlat's fused attention: the full score matrix, softmax in float64."""

from __future__ import annotations

import numpy as np

from hwlat.kernels.attention.kernel import AttentionSpec


def attention_reference(q: np.ndarray, k: np.ndarray, v: np.ndarray,
                        spec: AttentionSpec, bias: np.ndarray | None = None,
                        head_scale: np.ndarray | None = None) -> np.ndarray:
    """Same contract as the kernel: tensors in `spec.layout`, causal offset as in AttentionSpec,
    rows that see no key give zeros; q and k L2-normalised first where `spec.normalize_eps`;
    the scores times `head_scale` (N,) per head (spec.head_scale), then `bias` (spec.bias)
    added to the scaled scores; returns float32."""
    if spec.layout == "BSNH":
        q, k, v = (np.transpose(x, (0, 2, 1, 3)) for x in (q, k, v))
    q, k = q.astype(np.float64), k.astype(np.float64)
    if spec.normalize_eps is not None:
        q, k = (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), spec.normalize_eps)
                for x in (q, k))
    s = np.einsum("bnid,bnjd->bnij", q, k) * spec.scale
    if head_scale is not None:
        s = s * head_scale.astype(np.float64).reshape(1, -1, 1, 1)
    if bias is not None:  # (Bb, Nb, Sq, Sk), broadcast over batch and heads
        s = s + bias.astype(np.float64)
    if spec.causal_offset is not None:
        i = np.arange(spec.q_len)[:, None]
        j = np.arange(spec.kv_len)[None, :]
        visible = j <= i + spec.causal_offset
        s = np.where(visible, s, -np.inf)
    m = np.max(s, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    p = np.exp(s - m)
    total = np.sum(p, axis=-1, keepdims=True)
    p = np.divide(p, total, out=np.zeros_like(p), where=total > 0)
    out = np.einsum("bnij,bnjd->bnid", p, v.astype(np.float64))
    if spec.layout == "BSNH":
        out = np.transpose(out, (0, 2, 1, 3))
    return np.ascontiguousarray(out, dtype=np.float32)
