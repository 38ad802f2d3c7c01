"""TVMScript/TIR kernels that hwlat lowers its own ops to, each with a numpy reference.

hwlat.kernels.registry lists every custom lowering the kernels provide (ONNX converters, ONNX
rewrites, Relax kernel rewrites) and the targets each applies to; hwlat.lowering reads it.
Nothing registers on import, and nothing here imports hwlat.lowering.
"""
