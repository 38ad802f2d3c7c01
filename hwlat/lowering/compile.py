"""ONNX file -> TVM library: validate, check op support up front, import to Relax, run a named
pipeline, build, export atomically with a sidecar, and (where the target runs here) compare the
library's output with onnxruntime's before it replaces anything.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import tvm
from tvm import relax

from hwlat.errors import BackendError, HwlatError, InvalidInputError, InvalidModelError, one_line
from hwlat.graph.load import load
from hwlat.lowering.artifact import (
    Sidecar,
    TensorSpec,
    artifact_kind,
    sha256_of,
    sidecar_path,
    write_atomic,
    write_json_atomic,
)
from hwlat.lowering.custom import apply_rewrites, import_onnx
from hwlat.lowering.pipelines import PipelineOptions, get_pipeline, make_pipeline
from hwlat.lowering.run import outputs_of, random_inputs
from hwlat.lowering.support import check_support
from hwlat.lowering.targets import (
    describe_target,
    find_linker,
    kind_of,
    linker_names,
    resolve_target,
    runs_here,
    target_dict,
)
from hwlat.lowering.tuning import open_tuning_db
from hwlat.version import __version__

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompileReport:
    output: Path
    sidecar: Path
    artifact: str  # "shared library" | "object archive"
    target: str  # short description
    target_kind: str
    pipeline: str
    inputs: tuple[TensorSpec, ...]
    compile_s: float  # import to Relax, pipeline (tuning included), code generation
    export_s: float  # linking and the onnxruntime comparison
    max_abs_diff: float | None  # library vs onnxruntime on seeded random input
    note: str  # why there is no comparison, when there is none
    tuning_db: Path | None = None
    trials: int = 0
    tuning: Any = None  # tuning.TuningSummary when it tuned


@dataclass(frozen=True)
class Lowered:
    executable: Any  # relax VMExecutable
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    tuning_db: Path | None
    seconds: float
    tuning: Any = None  # tuning.TuningSummary when it tuned


def lower(path: str | os.PathLike, target: str | dict[str, Any] | tvm.target.Target = "host",
          pipeline: str = "default", *, tuning_db: str | os.PathLike | None = None,
          tune_trials: int = 0, dense_kernels: bool = True) -> Lowered:
    """Validate the model, refuse every op TVM cannot take (one error), import it to Relax and
    build it with the named pipeline; nothing is written but the tuning database.
    `dense_kernels=False` leaves convs and matmuls to TVM's own lowering (for comparisons)."""
    get_pipeline(pipeline)
    target = resolve_target(target)
    # load() has folded the shape arithmetic an exporter traced (Shape -> ... -> Reshape targets,
    # Slice bounds) into constants: TVM's importer needs them constant
    model = apply_rewrites(load(path).meta["onnx"], target)
    check_support(model, target)
    inputs, outputs = _signature(model)
    db = open_tuning_db(tuning_db, target) if tuning_db is not None else None
    from hwlat.lowering.tuning import TuningSummary

    summary = TuningSummary() if tune_trials > 0 else None
    passes = make_pipeline(pipeline, PipelineOptions(target, db, tune_trials, summary,
                                                     dense_kernels=dense_kernels))
    t0 = time.perf_counter()
    ex = _build(model, inputs, target, passes, pipeline)
    return Lowered(ex, inputs, outputs, db, time.perf_counter() - t0, summary)


def device_source(executable, kind: str = "cuda") -> str:
    """The generated source of the executable's `kind` module (e.g. CUDA C), for reading."""
    stack = list(executable.mod.imports)
    while stack:
        m = stack.pop()
        if m.kind == kind:
            return m.inspect_source()
        stack.extend(m.imports)
    raise InvalidInputError(f"the executable has no {kind} module")


def compile_model(path: str | os.PathLike, target: str | dict[str, Any] | tvm.target.Target = "host",
                  pipeline: str | None = None, output: str | os.PathLike | None = None, *,
                  tuning_db: str | os.PathLike | None = None, tune_trials: int = 0,
                  verify: bool = True, seed: int = 0) -> CompileReport:
    """Compile an ONNX model for `target` (a kind: host, aarch64, cuda; a target dict; or a
    Target) into `output` (.so or .tar; default: the model's name with .so). `pipeline` defaults
    to static_shape_tuning when tuning is asked for, else default."""
    path = Path(path)
    name = pipeline or ("static_shape_tuning" if tuning_db is not None or tune_trials else "default")
    get_pipeline(name)  # an unknown name fails before any work
    target = resolve_target(target)
    out = Path(output) if output is not None else path.with_suffix(".so")
    artifact = artifact_kind(out)
    if not out.parent.is_dir():
        raise InvalidInputError(f"{out.parent}: no such directory")
    linkers = linker_names(target) if out.suffix == ".so" else []
    linker = find_linker(linkers) if linkers else None
    if linkers and not linker:
        raise InvalidInputError(
            f"linking a {kind_of(target)} shared library needs {' or '.join(linkers)}, not found "
            f"(Debian: apt-get install {_cross_package(linkers[-1])}; or set HWLAT_CROSS_CC); "
            f"or write an object archive to link on the device: -o {out.with_suffix('.tar').name}")

    built = lower(path, target, name, tuning_db=tuning_db, tune_trials=tune_trials)
    ex, inputs, db = built.executable, built.inputs, built.tuning_db
    t1 = time.perf_counter()
    here = runs_here(target)
    diff, note = None, "" if here else f"not compared: {kind_of(target)} code does not run here"
    if not verify:
        note = "not compared: verification off"

    def export(tmp: str) -> None:
        nonlocal diff, note
        try:
            ex.export_library(tmp, **({"cc": linker} if linker else {}))
        except Exception as e:
            raise BackendError(f"exporting the {artifact} failed", e) from e
        if verify and here:  # before the rename: a library that cannot run replaces nothing
            diff, note = _compare_with_onnxruntime(path, ex if out.suffix == ".tar" else tmp,
                                                   inputs, target, seed)

    write_atomic(out, export)
    meta = Sidecar(inputs=inputs, outputs=built.outputs, target=target_dict(target),
                   target_kind=kind_of(target), pipeline=name,
                   tuning_db=str(db) if db is not None else None,
                   library_sha256=sha256_of(out), model=str(path), hwlat=__version__)
    write_json_atomic(sidecar_path(out), meta.to_json())
    return CompileReport(out, sidecar_path(out), artifact, describe_target(target_dict(target)),
                         kind_of(target), name, inputs, built.seconds, time.perf_counter() - t1,
                         diff, note, db, tune_trials, built.tuning)


def _signature(model: onnx.ModelProto) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    inits = {t.name for t in model.graph.initializer}
    inputs = tuple(_spec(v) for v in model.graph.input if v.name not in inits)
    unknown = [f"{s.name}{list(s.shape)}" for s in inputs if any(d < 0 for d in s.shape)]
    if unknown:
        raise InvalidModelError(f"input(s) with an unknown dimension (shown as -1): {', '.join(unknown)}; "
                                "export the model with fixed input shapes")
    return inputs, tuple(_spec(v) for v in model.graph.output)


def _spec(v: onnx.ValueInfoProto) -> TensorSpec:
    tt = v.type.tensor_type
    dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim)
    return TensorSpec(v.name, dims, str(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type))))


def _build(model, inputs, target, passes, name):
    try:
        with target:  # hwlat's converters pick the CPU or GPU schedule of their kernels by it
            mod = import_onnx(model, shape_dict={s.name: list(s.shape) for s in inputs},
                              dtype_dict={s.name: s.dtype for s in inputs}, rewrite=False,
                              target=target)
    except Exception as e:
        raise BackendError("TVM's ONNX frontend failed", e) from e
    try:
        return tvm.compile(mod, target=target, relax_pipeline=passes)
    except HwlatError:
        raise
    except Exception as e:
        raise BackendError(f"TVM cannot build the model with pipeline '{name}'", e) from e


def _compare_with_onnxruntime(path: Path, library, inputs, target, seed) -> tuple[float | None, str]:
    """Max abs difference over all outputs; `library` is the exported file or, for an archive
    that loads only once linked, the executable itself."""
    import onnxruntime as ort

    arrays = random_inputs(inputs, seed)
    device = tvm.cuda(0) if target.kind.name == "cuda" else tvm.cpu(0)
    module = tvm.runtime.load_module(library) if isinstance(library, str) else library
    vm = relax.VirtualMachine(module, device)
    try:
        got = outputs_of(vm["main"](*[tvm.runtime.tensor(a, device) for a in arrays]))
    except Exception as e:
        raise BackendError("the compiled model fails to run", e) from e
    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        want = sess.run(None, {s.name: a for s, a in zip(inputs, arrays, strict=True)})
    except Exception as e:
        log.debug("onnxruntime cannot run %s", path, exc_info=True)
        return None, f"not compared: onnxruntime cannot run the model ({one_line(e)})"
    if len(got) != len(want) or any(g.shape != w.shape for g, w in zip(got, want, strict=False)):
        raise HwlatError(f"the compiled model returns shapes {[g.shape for g in got]}, "
                         f"onnxruntime {[w.shape for w in want]}")
    return max(float(np.max(np.abs(g.astype(np.float64) - w), initial=0.0))
               for g, w in zip(got, want, strict=True)), ""


def _cross_package(compiler: str) -> str:
    """aarch64-linux-gnu-gcc -> gcc-aarch64-linux-gnu (Debian's cross toolchain packages)."""
    triple, _, tool = compiler.rpartition("-")
    return f"{tool}-{triple}"


