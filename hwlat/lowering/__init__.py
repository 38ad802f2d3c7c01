"""ONNX -> TVM Relax -> a named pass pipeline -> a library for a target; run and time it."""

from hwlat.lowering.compile import CompileReport, compile_model
from hwlat.lowering.pipelines import PIPELINES
from hwlat.lowering.run import BenchReport, bench_library, load_library, run_library
from hwlat.lowering.targets import TARGET_KINDS, make_target, resolve_target

__all__ = ["PIPELINES", "TARGET_KINDS", "BenchReport", "CompileReport", "bench_library",
           "compile_model", "load_library", "make_target", "resolve_target", "run_library"]
