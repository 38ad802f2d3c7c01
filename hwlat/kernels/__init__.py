"""TVMScript/TIR kernels that hwlat lowers its own ops to, each with a numpy reference.

Importing this package registers each kernel's ONNX converter and graph rewrite with
hwlat.lowering.custom (see LOWERINGS).
"""

import importlib

# Modules whose import registers a CustomOp and/or a rewrite.
LOWERINGS: tuple[str, ...] = (
    "hwlat.kernels.spiking.lowering",
    "hwlat.kernels.sparse_conv.lowering",
    "hwlat.kernels.attention.onnx_op",
    "hwlat.kernels.dense.lowering",
)

for _name in LOWERINGS:
    importlib.import_module(_name)
