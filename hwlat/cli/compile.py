"""TVM commands: `hwlat compile`, `hwlat run`, `hwlat bench`."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from hwlat.cli.options import (
    DeviceFileOpt,
    DeviceOpt,
    JsonOpt,
    TableOpt,
    measured_device,
)
from hwlat.cli.render import err, out


def compile_(
    model: Annotated[Path, typer.Argument(help="ONNX model")],
    device: DeviceOpt = "cpu-tvm",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="library to write: .so, or .tar of objects to link on the device (default: MODEL.so)")] = None,
    target_kind: Annotated[str | None, typer.Option(help="host | aarch64 | cuda (default: the device's own)")] = None,
    pipeline: Annotated[str | None, typer.Option(help="Relax pipeline: default, zero, static_shape_tuning (default: the device's; static_shape_tuning when tuning)")] = None,
    tune_trials: Annotated[int, typer.Option(min=0, help="MetaSchedule trials in all (~10 s each on 2 cores, plus ~1-2 min start-up)")] = 0,
    tuning_db: Annotated[Path | None, typer.Option(help="tuning database directory (one per target; reused when trials are 0; default: the device file's)")] = None,
    table: TableOpt = None,
    as_json: JsonOpt = False,
    device_file: DeviceFileOpt = None,
) -> None:
    """Compile a model with TVM into a library + .json sidecar, checked against onnxruntime where it
    runs; with the device's own tuning database, its records also fill the device's table."""
    from hwlat import api
    from hwlat.lut import default_table_path

    spec = measured_device(device, table)
    # MetaSchedule logs to standard output: with --json, standard output is the JSON alone
    quiet = contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()
    with quiet:
        lib = api.compile(model, spec, output=output, target_kind=target_kind, pipeline=pipeline,
                          tune_trials=tune_trials, tuning_db=tuning_db, table=table,
                          status=err.status)
    r, fed = lib.report, lib.fed
    doc = {"output": str(r.output), "sidecar": str(r.sidecar), "artifact": r.artifact,
           "target": r.target, "pipeline": r.pipeline, "compile_s": r.compile_s,
           "max_abs_diff": r.max_abs_diff, "note": r.note,
           "tuning": None if r.tuning is None else r.tuning.to_json(), "table": None}
    if not as_json:
        out.print(f"wrote {r.output} ({r.artifact}) and {r.sidecar.name}: {r.target}, pipeline "
                  f"{r.pipeline}, {r.compile_s:.1f} s", highlight=False)
        out.print(f"TVM vs onnxruntime: max abs difference {r.max_abs_diff:.3g}"
                  if r.max_abs_diff is not None else r.note)
        if r.tuning is not None:
            out.print(r.tuning.describe(), highlight=False, markup=False)
    if fed is not None:
        where = Path(table or default_table_path()).expanduser()
        doc["table"] = {"path": str(where), "device": spec.name, "written": fed.written,
                        "unrecorded": fed.unrecorded, "already": fed.already}
        if not as_json:
            out.print(f"table {where}, device {spec.name}: {fed.written} kernels' latencies "
                      f"from the tuning records; {fed.unrecorded} without records (`hwlat profile "
                      f"{model} --device {spec.name}` times them); {fed.already} already there",
                      highlight=False, markup=False)
    if as_json:
        print(json.dumps(doc, indent=1))


InputOpt = Annotated[Path | None, typer.Option("--input", "-i", help=".npy (one-input model) or .npz (by input name); default: seeded random")]


def run(
    library: Annotated[Path, typer.Argument(help="library from `hwlat compile` (its .json beside it)")],
    input_path: InputOpt = None,
    save: Annotated[Path | None, typer.Option(help="write the outputs, by name, to this .npz")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a compiled library once and summarize its outputs."""
    import numpy as np

    from hwlat import api

    outputs = api.Compiled(library).run(input_path)
    if save is not None:
        tmp = save.with_name(f".{save.name}.tmp.npz")
        np.savez(tmp, **outputs)
        os.replace(tmp, save)
    if as_json:
        print(json.dumps({"library": str(library), "saved": None if save is None else str(save),
                          "outputs": [{"name": n, "shape": list(a.shape), "dtype": str(a.dtype),
                                       "min": float(a.min()), "max": float(a.max()),
                                       "mean": float(a.mean())} for n, a in outputs.items()]},
                         indent=1))
        return
    table = Table("output", "shape", "dtype", "min", "max", "mean", title=library.name)
    for name, a in outputs.items():
        table.add_row(name, str(list(a.shape)), str(a.dtype), f"{a.min():.4g}", f"{a.max():.4g}", f"{a.mean():.4g}")
    out.print(table)
    if save is not None:
        out.print(f"wrote {save}")


def bench(
    library: Annotated[Path, typer.Argument(help="library from `hwlat compile` (its .json beside it)")],
    input_path: InputOpt = None,
    warmup: Annotated[int, typer.Option(min=0, help="untimed runs first")] = 5,
    repeats: Annotated[int, typer.Option(min=3, help="timed runs per round")] = 25,
    threads: Annotated[int | None, typer.Option(min=1, help="default: the threads it was compiled for")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Time a compiled library: median and interquartile range of whole-model runs."""
    from hwlat import api

    b = api.Compiled(library).bench(warmup=warmup, repeats=repeats, threads=threads, inputs=input_path)
    if as_json:
        print(json.dumps({"library": str(library), "device": b.device, "threads": b.threads,
                          "median_ms": b.median_ms, "iqr_ms": b.iqr_ms,
                          "runs": len(b.timing.samples_ms), "rounds": b.timing.rounds}, indent=1))
        return
    out.print(f"{library.name} on {b.device}, {b.threads} thread(s): median {b.median_ms:.4f} ms, "
              f"IQR {b.iqr_ms:.4f} ms ({len(b.timing.samples_ms)} runs, {b.timing.rounds} round(s))",
              highlight=False)

