"""Hand-scheduled CPU kernels for convs and matmuls with constant weights, with the bias, a
residual and the activation fused into their store (spec.py says what each computes; lowering.py
puts them into compiled models)."""

from hwlat.kernels.dense.reference import conv2d_reference, matmul_reference
from hwlat.kernels.dense.spec import Conv2dSpec, Epilogue, MatmulSpec

__all__ = ["Conv2dSpec", "Epilogue", "MatmulSpec", "conv2d_reference", "matmul_reference"]
