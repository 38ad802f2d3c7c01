"""Run and time a library written by `compile_model`, through the Relax VM.

Its sidecar names the inputs; inputs come from a .npy (one-input models) or .npz (by name) file,
or are seeded random. Timing is the device runners' own: warm-up, then rounds of repeats until
the spread settles (hwlat.devices.measure).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from hwlat.devices.measure import Timing, measure
from hwlat.devices.spec import MeasureSpec
from hwlat.errors import InvalidInputError
from hwlat.inputs import random_arrays
from hwlat.lowering.artifact import Sidecar, TensorSpec, read_sidecar
from hwlat.lowering.targets import resolve_target, runs_here


@dataclass(frozen=True)
class LoadedModel:
    path: Path
    meta: Sidecar
    vm: relax.VirtualMachine
    device: tvm.runtime.Device

    def tensors(self, arrays: Sequence[np.ndarray]) -> list:
        return [tvm.runtime.tensor(a, self.device) for a in arrays]

    def run(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        try:
            return outputs_of(self.vm["main"](*self.tensors(arrays)))
        except ValueError as e:  # a runtime check of an hwlat kernel refused the input
            if not str(e).startswith("hwlat."):
                raise
            raise InvalidInputError(f"{self.path.name}: {' '.join(str(e).split())}") from None


@dataclass(frozen=True)
class BenchReport:
    path: Path
    timing: Timing
    threads: int
    device: str

    @property
    def median_ms(self) -> float:
        return self.timing.median_ms

    @property
    def iqr_ms(self) -> float:
        return self.timing.q3_ms - self.timing.q1_ms


def load_library(path: str | os.PathLike, threads: int | None = None) -> LoadedModel:
    """Open a compiled library where its target runs. `threads` (default: the target's
    num-cores; a CUDA library's: its host's) takes effect only before TVM's thread pool first
    starts in this process."""
    path = Path(path)
    meta = read_sidecar(path)
    if path.suffix == ".tar":
        raise InvalidInputError(f"{path} is an object archive, to be linked on its device; "
                                "compile with -o NAME.so for a library that loads")
    target = resolve_target(meta.target)
    if not runs_here(target):
        if target.kind.name == "cuda":
            raise InvalidInputError(f"{path} is built for CUDA and this machine has no CUDA GPU")
        raise InvalidInputError(f"{path} is built for {target.attrs.get('mtriple')}, not this machine; "
                                "copy it and its .json to such a device")
    host = target.host if target.kind.name == "cuda" and target.host is not None else target
    cores = threads or (int(host.attrs["num-cores"]) if "num-cores" in host.attrs else None)
    if cores:
        os.environ["TVM_NUM_THREADS"] = str(cores)
    device = tvm.cuda(0) if target.kind.name == "cuda" else tvm.cpu(0)
    return LoadedModel(path, meta, relax.VirtualMachine(load_fresh(path), device), device)


def load_fresh(path: Path):
    """`tvm.runtime.load_module` of the library as the file is now. The dynamic loader hands back
    a library it has loaded before from the same path, even after the file was replaced (a
    model compiled again to the same -o, in one process): so load it under a name of its own,
    a hard link (or, across file systems, a copy) removed once loaded."""
    folder = tempfile.mkdtemp(prefix="hwlat-load-")
    alias = os.path.join(folder, f"{uuid.uuid4().hex}{path.suffix}")
    try:
        try:
            os.link(path, alias)
        except OSError:
            shutil.copyfile(path, alias)
        return tvm.runtime.load_module(alias)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def outputs_of(result) -> list[np.ndarray]:
    """The VM returns one tensor for a one-output model, a tuple otherwise."""
    if hasattr(result, "numpy"):
        return [result.numpy()]
    return [r.numpy() for r in result]


def random_inputs(specs: Sequence[TensorSpec], seed: int = 0) -> list[np.ndarray]:
    """Standard normal floats; zeros for integer and bool inputs (always valid as indices), except
    sparse coordinates (int32 [N, 4] named `coords`): unique voxels of a grid."""
    from hwlat.kernels.sparse_conv.inputs import is_sparse_coords

    return random_arrays(((s.name, s.shape, s.dtype) for s in specs), seed, is_coords=is_sparse_coords)


def read_inputs(path: str | os.PathLike | None, specs: Sequence[TensorSpec], seed: int = 0) -> list[np.ndarray]:
    if path is None:
        return random_inputs(specs, seed)
    p = Path(path)
    try:
        loaded = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InvalidInputError(f"{p}: not a readable .npy/.npz file ({e})") from e
    if isinstance(loaded, np.ndarray):
        if len(specs) != 1:
            raise InvalidInputError(f"{p} holds one array but the model takes {len(specs)} inputs "
                                    f"({', '.join(s.name for s in specs)}); give an .npz with those names")
        arrays = [loaded]
    else:
        with loaded:
            missing = [s.name for s in specs if s.name not in loaded.files]
            if missing:
                raise InvalidInputError(f"{p} lacks input(s) {', '.join(missing)}; it has {', '.join(loaded.files)}")
            arrays = [loaded[s.name] for s in specs]
    for a, s in zip(arrays, specs, strict=True):
        if tuple(a.shape) != s.shape or str(a.dtype) != s.dtype:
            raise InvalidInputError(f"input '{s.name}': expected {s.dtype}{list(s.shape)}, "
                                    f"got {a.dtype}{list(a.shape)} from {p}")
    return arrays


def run_library(path: str | os.PathLike, inputs: str | os.PathLike | None = None,
                seed: int = 0) -> dict[str, np.ndarray]:
    """Outputs by name of one run on `inputs` (a .npy/.npz file) or seeded random input."""
    model = load_library(path)
    outs = model.run(read_inputs(inputs, model.meta.inputs, seed))
    return {s.name: o for s, o in zip(model.meta.outputs, outs, strict=True)}


def bench_library(path: str | os.PathLike, inputs: str | os.PathLike | None = None,
                  spec: MeasureSpec | None = None, threads: int | None = None) -> BenchReport:
    """Median and spread of whole-model latency, each sample one VM invocation."""
    spec = spec or MeasureSpec()
    model = load_library(path, threads)
    model.vm.set_input("main", *model.tensors(read_inputs(inputs, model.meta.inputs)))
    timer = model.vm.time_evaluator("invoke_stateful", model.device, number=1, repeat=spec.repeats)

    def round_(n: int) -> list[float]:
        for _ in range(spec.warmup):
            model.vm.invoke_stateful("main")
        return [r * 1e3 for r in timer("main").results[:n]]

    timing = measure(round_, spec)
    return BenchReport(model.path, timing, tvm.runtime.num_threads(), str(model.device))
