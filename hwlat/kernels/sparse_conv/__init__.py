"""Sparse 3D convolution on CPU: TIR kernels (kernel.py), their Python API (conv.py), a numpy
reference (reference.py) and the lowering of the `hwlat.SparseConv3d` ONNX op (lowering.py)."""

from hwlat.kernels.sparse_conv.conv import SparseResult, sparse_conv3d
from hwlat.kernels.sparse_conv.reference import sparse_conv3d_reference

__all__ = ["SparseResult", "sparse_conv3d", "sparse_conv3d_reference"]
