"""Fused attention: a TIR kernel with an online softmax over key tiles (kernel.py), its numpy
reference (reference.py) and the Relax pass that substitutes it for attention (lowering.py)."""

from hwlat.kernels.attention.kernel import AttentionSpec, Tiles, attention_primfunc, fast_exp2
from hwlat.kernels.attention.lowering import KERNEL_NAME, fuse_attention, fuse_attention_pass
from hwlat.kernels.attention.reference import attention_reference

__all__ = ["KERNEL_NAME", "AttentionSpec", "Tiles", "attention_primfunc", "attention_reference",
           "fast_exp2", "fuse_attention", "fuse_attention_pass"]
