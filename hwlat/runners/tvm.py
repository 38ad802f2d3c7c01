"""Time kernels and whole models built by TVM for the host CPU and run by the Relax VM.

Each kernel (or model) goes ONNX -> Relax (`from_onnx`) -> the device file's Relax pipeline ->
`tvm.compile` for an llvm target with the host's CPU features -> VirtualMachine. Entries record
the pipeline, so tuned and untuned measurements never mix.

Beside the wall-clock rounds, a one-thread device's kernels and models get their thread CPU
time, as onnxruntime's do: with one thread TVM's runtime runs every parallel loop on the
calling thread (TVM_NUM_THREADS=1), so `time.thread_time` around a VM call is what the call
cost the core, whatever other processes on a shared machine took meanwhile. The process is
pinned to one core; each of at least CPU_MIN_RUNS calls (and CPU_MIN_MS of CPU time) is one
sample, less what a call of a one-op module costs (measured once per runner).
"""

from __future__ import annotations

import os
import time
from functools import cached_property

import numpy as np
import onnx

from hwlat.devices.measure import Timing, cpu_model, measure
from hwlat.devices.spec import DeviceSpec
from hwlat.errors import BackendError, HwlatError, InvalidInputError, InvalidModelError
from hwlat.inputs import random_arrays
from hwlat.runners.base import Environment, Runner

CPU_MIN_RUNS = 15  # thread CPU samples per kernel, at least
CPU_MIN_MS = 20.0  # CPU time spent on a kernel's samples, at least (tiny kernels get more runs)
CPU_MAX_RUNS = 300


def random_inputs(proto: onnx.ModelProto, seed: int = 0) -> list[np.ndarray]:
    """Data for the model's inputs (initializers excluded): normal floats, zero integers, and
    unique voxels of a grid for the coordinates of hwlat.SparseConv3d."""
    from hwlat.kernels.sparse_conv.inputs import sparse_coords_inputs

    inits = {t.name for t in proto.graph.initializer}
    coords = sparse_coords_inputs(proto)
    specs = []
    for i in proto.graph.input:
        if i.name in inits:
            continue
        tt = i.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        if any(d is None for d in dims):
            raise InvalidModelError(f"input '{i.name}' has an unknown dimension; export with a fixed shape")
        specs.append((i.name, dims, onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)))
    return random_arrays(specs, seed, is_coords=lambda name, _shape, _dtype: name in coords)


def device_pipeline(spec: DeviceSpec, target):
    """The device's named hwlat pipeline (hwlat.lowering.pipelines, as `hwlat compile` builds),
    reading the device's tuning database, if it names one, without tuning."""
    from hwlat.lowering.pipelines import PipelineOptions, make_pipeline
    from hwlat.lowering.tuning import open_tuning_db

    name = spec.pipeline or "default"
    db = spec.tuning_db_path()
    try:
        return make_pipeline(name, PipelineOptions(target, open_tuning_db(db, target) if db else None))
    except InvalidInputError as e:
        raise InvalidInputError(f"device '{spec.name}': {e}") from None


class TvmRunner(Runner):
    def __init__(self, spec: DeviceSpec):
        # the runtime's thread pool reads this once, when it first starts
        os.environ["TVM_NUM_THREADS"] = str(spec.threads)
        import tvm

        from hwlat.lowering.targets import resolve_target

        self.spec = spec
        # the target `hwlat compile --device` builds for (host CPU, thread count): a tuning
        # database made by one is read by the other
        self.target = resolve_target(device=spec)
        self._pipeline = device_pipeline(spec, self.target)
        self.pipeline = f"tvm-{spec.pipeline or 'default'}"
        self._dev = tvm.cpu(0)

    def environment(self) -> Environment:
        import tvm

        return Environment(cpu_model(), self.spec.threads,
                           {"apache-tvm": tvm.__version__, "target": str(self.target)})

    def unsupported(self, ops: set[str]) -> set[str]:
        from hwlat.lowering.custom import custom_ops

        known = custom_ops()  # custom ops with a lowering in hwlat/kernels are supported
        return {op for op in ops if "." in op and op not in known}

    def _build(self, proto: onnx.ModelProto):
        import tvm
        from tvm import relax

        from hwlat.lowering.custom import import_onnx

        try:
            with self.target:  # hwlat's kernels pick their CPU or GPU schedule by it
                mod = import_onnx(proto)
            ex = tvm.compile(mod, target=self.target, relax_pipeline=self._pipeline)
        except Exception as e:
            raise BackendError("TVM cannot build the model", e) from e
        try:
            vm = relax.VirtualMachine(ex, self._dev)
            args = [tvm.runtime.tensor(a, self._dev) for a in random_inputs(proto)]
            vm.set_input("main", *args)
        except HwlatError:
            raise
        except Exception as e:  # TVMError, or inputs too large to make
            raise BackendError("TVM cannot run the model", e) from e
        return vm

    def _time(self, vm) -> Timing:
        def round_(n: int) -> list[float]:
            try:
                for _ in range(self.spec.measure.warmup):
                    vm.invoke_stateful("main")
                res = vm.time_evaluator("invoke_stateful", self._dev, number=1, repeat=n)("main")
            except Exception as e:  # the runtime's own errors (TVMError)
                raise HwlatError(f"TVM cannot run the model: {' '.join(str(e).split())[:300]}") from e
            return [r * 1e3 for r in res.results]

        self.pin()
        wall = measure(round_, self.spec.measure)
        return Timing(wall.samples_ms, wall.rounds, self.cpu_time(vm))

    def pin(self) -> None:
        """With one thread, pin the calling thread (the runtime's only one) to one core, once."""
        if self.spec.threads == 1 and not getattr(self, "_pinned", False) \
                and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
            self._pinned = True

    def cpu_time(self, vm, less_overhead: bool = True) -> tuple[float, ...]:
        """Thread CPU time (ms) of calls of the VM's main, one sample per call (see the
        module's text); empty where the runtime uses more than one thread (the calling
        thread's CPU time is then not the work's)."""
        if self.spec.threads != 1:
            return ()
        self.pin()
        base = self.call_overhead_cpu_ms if less_overhead else 0.0
        samples: list[float] = []
        spent = 0.0
        try:
            for _ in range(self.spec.measure.warmup):
                vm.invoke_stateful("main")
            while len(samples) < CPU_MIN_RUNS or (spent < CPU_MIN_MS and len(samples) < CPU_MAX_RUNS):
                c0 = time.thread_time()
                vm.invoke_stateful("main")
                c = (time.thread_time() - c0) * 1e3
                spent += c
                samples.append(max(c - base, 0.0))
        except Exception as e:  # the runtime's own errors (TVMError)
            raise HwlatError(f"TVM cannot run the model: {' '.join(str(e).split())[:300]}") from e
        return tuple(samples)

    @cached_property
    def call_overhead_cpu_ms(self) -> float:
        """Thread CPU time of one VM call of a one-op module on a tiny tensor: what every
        sample carries beside the work (the smallest of 3 rounds' medians)."""
        h = onnx.helper
        info = lambda name: h.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [1, 4])  # noqa: E731
        graph = h.make_graph([h.make_node("Relu", ["x"], ["y"])], "one", [info("x")], [info("y")])
        proto = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
        proto.ir_version = 8
        vm = self._build(proto)
        medians = []
        for _ in range(3):
            samples = self.cpu_time(vm, less_overhead=False)
            medians.append(float(np.median(samples)))
        return min(medians)

    def time_kernel(self, proto: onnx.ModelProto) -> Timing:
        return self._time(self._build(proto))

    def time_model(self, path: str) -> Timing:
        return self._time(self._build(onnx.load(path)))
