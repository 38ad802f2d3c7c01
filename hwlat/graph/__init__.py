"""ONNX -> Graph IR -> Kernels. Imports neither torch nor tvm."""

from hwlat.graph.fuse import DEFAULT_RULES, Rule, fuse
from hwlat.graph.ir import Graph, Node, TensorSig, Value
from hwlat.graph.kernel import Kernel, KernelKey, KernelKind
from hwlat.graph.load import load
from hwlat.graph.ops import Op

__all__ = [
    "DEFAULT_RULES", "Graph", "Kernel", "KernelKey", "KernelKind", "Node", "Op", "Rule",
    "TensorSig", "Value", "fuse", "load",
]
