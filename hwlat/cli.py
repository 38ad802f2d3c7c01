"""The `hwlat` command: one subcommand per job; parses, calls the package, prints.

A HwlatError becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from hwlat.errors import HwlatError, InvalidInputError

app = typer.Typer(
    help="hwlat: hardware-aware compiler and latency estimator for neural networks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# piped output is not cut to 80 columns: tables stay readable in logs
out = Console(width=shutil.get_terminal_size(fallback=(200, 50)).columns)
err = Console(stderr=True)


@app.command()
def zoo() -> None:
    """List the built-in models (no downloads: weights are random, seeded)."""
    from hwlat.zoo import list_models

    table = Table("name", "description", title="hwlat zoo")
    for name, desc in list_models():
        table.add_row(name, desc)
    out.print(table)


@app.command()
def export(
    name: Annotated[str | None, typer.Argument(help="built-in model (see `hwlat zoo`)")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="ONNX file to write")] = Path("model.onnx"),
    module: Annotated[str | None, typer.Option(help="pkg.mod:factory returning (model, example_input)")] = None,
    ofa_config: Annotated[Path | None, typer.Option(help="Once-for-All net config JSON")] = None,
    nb201: Annotated[str | None, typer.Option(help="NAS-Bench-201 cell string")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="batch size of the example input")] = 1,
    input_shape: Annotated[str | None, typer.Option(help="per-sample input shape, e.g. 3,160,160")] = None,
    opset: Annotated[int | None, typer.Option(min=7, help="ONNX opset (default: the exporter's)")] = None,
) -> None:
    """Export a model to ONNX, check it, and compare onnxruntime's output with torch's."""
    from hwlat.export import export as do_export

    model, inputs = _model_source(name, module, ofa_config, nb201, batch_size, input_shape)
    with err.status(f"exporting to {output} ..."):
        report = do_export(model, inputs, output, opset=opset)
    out.print(f"wrote {report.path} ({report.nodes} nodes, {report.seconds:.1f} s)")
    if report.max_abs_diff is not None:
        out.print(f"onnxruntime vs torch: max abs difference {report.max_abs_diff:.3g}")
    else:
        out.print(report.note)


def _model_source(name, module, ofa_config, nb201, batch_size, input_shape):
    chosen = [s for s in (name, module, ofa_config, nb201) if s is not None]
    if len(chosen) != 1:
        raise InvalidInputError("give exactly one of: NAME, --module, --ofa-config, --nb201")
    shape = _parse_shape(input_shape) if input_shape else None
    if module is not None:
        if shape or batch_size != 1:
            raise InvalidInputError("--batch-size and --input-shape apply to built-in models; "
                                    "a --module factory makes its own example input")
        return _from_module(module)
    from hwlat import zoo

    if ofa_config is not None:
        return zoo.from_ofa_config(ofa_config, batch_size=batch_size)
    if nb201 is not None:
        return zoo.from_nb201(nb201, batch_size=batch_size)
    return zoo.build(name, batch_size=batch_size, input_shape=shape)


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.replace("x", ",").split(","))
    except ValueError:
        raise InvalidInputError(f"--input-shape '{text}': expected integers like 3,224,224") from None
    if not dims or any(d <= 0 for d in dims):
        raise InvalidInputError(f"--input-shape '{text}': dimensions must be positive")
    return dims


def _from_module(spec: str):
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise InvalidInputError(f"--module '{spec}': expected pkg.mod:factory")
    sys.path.insert(0, os.getcwd())
    try:
        factory = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as e:
        raise InvalidInputError(f"--module '{spec}': {e}") from e
    result = factory()
    if not (isinstance(result, tuple) and len(result) == 2):
        raise InvalidInputError(f"--module '{spec}': the factory must return (model, example_input)")
    return result


@app.command()
def inspect(
    model: Annotated[Path, typer.Argument(help="ONNX model")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Show the kernels a model is cut into, with MACs, parameters and bytes moved."""
    from hwlat.graph import fuse, load
    from hwlat.graph.summary import summarize

    g = load(model)
    summary = summarize(g, fuse(g))
    if as_json:
        print(json.dumps(summary.to_json(), indent=1))
        return
    table = Table("#", "kind", "ops", "input", "output", "MACs", "params", "read", "written", "count",
                  title=f"{model.name}: {summary.totals()['kernels']} kernels from {summary.nodes} nodes")
    for i, r in enumerate(summary.rows):
        k = r.kernel.key
        table.add_row(
            str(i), k.kind.value, "+".join(k.ops), _sigs(k.inputs), _sigs(k.outputs),
            _num(r.cost.macs), _num(r.cost.params), _bytes(r.cost.bytes_read),
            _bytes(r.cost.bytes_written), str(r.count),
        )
    t = summary.totals()
    table.add_section()
    table.add_row("", "total", f"{t['unique_kernels']} unique", "", "", _num(t["macs"]),
                  _num(t["params"]), _bytes(t["bytes_read"]), _bytes(t["bytes_written"]),
                  str(t["kernels"]))
    out.print(table)


def _sigs(sigs) -> str:
    return " ".join("x".join(str(d) if d is not None else "?" for d in s.shape) if s.shape is not None
                    else "?" for s in sigs)


def _num(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def _bytes(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def _table(path: Path | None, *, readonly: bool):
    from hwlat.lut import TableStore, default_table_path

    return TableStore(path or default_table_path(), readonly=readonly)


TableOpt = Annotated[Path | None, typer.Option("--table", help="table file (default $HWLAT_HOME/tables.sqlite)")]
DeviceOpt = Annotated[str, typer.Option("--device", "-d", help="device name (see `hwlat devices`)")]
RpcOpt = Annotated[str | None, typer.Option("--rpc", help="RPC tracker HOST:PORT, for devices timed over RPC (default 127.0.0.1:9190)")]
KeyOpt = Annotated[str | None, typer.Option("--key", help="RPC key the device's servers registered under (default: the device name)")]
RPC_RUNNER = "hwlat.devices.tvm_rpc_runner:TvmRpcRunner"


def _runner(spec, tracker: str | None, key: str | None):
    if tracker is None and key is None:
        return spec.make_runner()
    if spec.runner != RPC_RUNNER:
        from hwlat.devices import list_devices

        remote = ", ".join(d.name for d in list_devices() if d.runner == RPC_RUNNER)
        raise InvalidInputError(f"device '{spec.name}' is not timed over RPC; --rpc and --key apply to {remote}")
    return spec.make_runner(tracker=tracker, key=key)


@app.command()
def devices() -> None:
    """List the devices hwlat can profile and predict for."""
    from importlib import metadata

    from hwlat.devices import list_devices

    dists = {"onnxruntime": "onnxruntime", "tvm": "apache-tvm", "roofline": "hwlat", "neuromorphic": "hwlat"}
    table = Table("name", "runtime", "version", "threads", "description", title="hwlat devices")
    for d in list_devices():
        try:
            version = metadata.version(dists.get(d.runtime, d.runtime))
        except metadata.PackageNotFoundError:
            version = "not installed"
        table.add_row(d.name, d.runtime, version, str(d.threads), d.description)
    out.print(table)


@app.command()
def profile(
    models: Annotated[list[Path] | None, typer.Argument(help="ONNX models")] = None,
    device: DeviceOpt = "cpu-ort",
    table: TableOpt = None,
    zoo_models: Annotated[bool, typer.Option("--zoo", help="also profile every built-in model the device runs")] = False,
    rpc: RpcOpt = None,
    key: KeyOpt = None,
) -> None:
    """Measure every kernel of the models that the table lacks for the device (resumable)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from hwlat.devices import load_device
    from hwlat.lut.build import plan
    from hwlat.lut.build import profile as run_profile

    spec = load_device(device)
    paths = list(models or [])
    if zoo_models:
        paths += _export_zoo(spec)
    if not paths:
        raise InvalidInputError("give ONNX models to profile, or --zoo")
    runner = _runner(spec, rpc, key)
    with _table(table, readonly=False) as store:
        todo = plan(paths, spec, runner, store)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
        with Progress(*columns, console=err) as bar:
            task = bar.add_task(f"profiling on {spec.name}", total=len(todo.kernels))
            logged = _progress_lines(spec.name, len(todo.kernels))

            def on_kernel(k) -> None:
                bar.advance(task)
                logged(k)

            report = run_profile(todo, spec, runner, store, on_kernel=on_kernel)
    for line in getattr(runner, "lost", ()):  # RPC servers that died mid-kernel; the kernel was retried
        err.print(f"warning: {line}", highlight=False, markup=False)
    out.print(f"{report.measured} kernels measured, {report.skipped} already in {store.path} "
              f"({report.seconds:.1f} s)")


def _progress_lines(device: str, total: int, every_s: float = 30.0):
    """Where stderr is no terminal (a log, a pipe) a progress bar shows only once done: there,
    a line every `every_s` seconds and at the end, so a long profile shows it is moving."""
    if err.is_terminal or total == 0:
        return lambda k: None
    start = time.monotonic()
    state = {"done": 0, "last": start}

    def kernel_done(k) -> None:
        state["done"] += 1
        now = time.monotonic()
        if now - state["last"] >= every_s or state["done"] == total:
            state["last"] = now
            err.print(f"profiling on {device}: {state['done']}/{total} kernels, "
                      f"{now - start:.0f} s", highlight=False, markup=False)

    return kernel_done


def _export_zoo(spec) -> list[Path]:
    """Built-in models exported once into $HWLAT_HOME/zoo; those the device cannot run are left out."""
    from hwlat import home_folder, zoo
    from hwlat.export import export as do_export

    folder = home_folder("zoo")
    paths = []
    for name in zoo.MODELS:
        path = folder / f"{name}.onnx"
        if not path.exists():
            with err.status(f"exporting {name} ..."):
                do_export(*zoo.build(name), path, compare=False)
        paths.append(path)
    runner = spec.make_runner()
    from hwlat.graph import fuse, load

    return [p for p in paths if not runner.unsupported({op for k in fuse(load(p)) for op in k.key.ops})]


@app.command()
def predict(
    model: Annotated[Path, typer.Argument(help="ONNX model")],
    device: DeviceOpt = "cpu-ort",
    table: TableOpt = None,
    breakdown: Annotated[bool, typer.Option(help="show every kernel's share")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    sample: Annotated[Path | None, typer.Option("--input", "-i", help="sample input, .npy (one-input model) or .npz (by input name): on neuromorphic devices the spikes it fires are measured; a sparse model's coordinates set its kernel maps")] = None,
    precision: Annotated[str | None, typer.Option(help="neuromorphic devices: energy preset, fp32, fp16 or int8 (default: the device file's)")] = None,
    fallback: Annotated[str | None, typer.Option(
        help="roofline device that estimates kernels missing from the table (default: the device "
             "file's `fallback`, else fits on the device's measured kernels)")] = None,
) -> None:
    """Predict a model's latency on a device from the table, without running it; on a neuromorphic
    device, its energy and latency from the spikes it fires on a sample input."""
    from hwlat.devices import load_device
    from hwlat.devices.roofline import fallback_estimator
    from hwlat.graph import fuse, load
    from hwlat.lut.predict import predict as do_predict

    spec = load_device(device)
    if spec.runtime == "neuromorphic":
        _predict_neuromorphic(model, spec, sample, precision, as_json)
        return
    if precision is not None:
        raise InvalidInputError(f"--precision applies to neuromorphic devices; '{spec.name}' "
                                "predicts from its table")
    g = load(model)
    kernels = fuse(g)
    if sample is not None:  # a sparse model's coordinates decide its kernel maps
        from hwlat.devices.neuromorphic import load_sample
        from hwlat.graph import KernelKind

        if not any(k.kind is KernelKind.SPARSE_CONV for k in kernels):
            raise InvalidInputError(f"--input applies to neuromorphic devices and to models with "
                                    f"sparse convs (their coordinates); '{spec.name}' predicts "
                                    f"{model.name} from its table alone")
        kernels = fuse(g, samples=load_sample(sample, g))
    with _table(table, readonly=True) as store:
        pred = do_predict(g, kernels, store, spec.name,
                          fallback=fallback_estimator(spec, store, fallback))
    if as_json:
        print(json.dumps(pred.to_json(), indent=1))
        return
    if breakdown:
        t = Table("kind", "ops", "output", "count", "ms each", "ms total", "share", "source",
                  title=f"{model.name} on {spec.name}")
        for r in sorted(pred.rows, key=lambda r: -r.total_ms):
            t.add_row(r.kernel.kind.value, "+".join(r.kernel.key.ops), _sigs(r.kernel.key.outputs),
                      str(r.count), f"{r.ms:.4f}", f"{r.total_ms:.4f}",
                      f"{r.total_ms / pred.latency_ms:.1%}" if pred.latency_ms else "-", r.source)
        out.print(t)
    out.print(f"{model.name} on {spec.name}: {pred.latency_ms:.3f} ms predicted "
              f"(kernel sum {pred.kernel_sum_ms:.3f} ms, {pred.estimated_share:.1%} of it estimated)")
    if pred.correction is not None:
        out.print(f"correction: {pred.correction.describe()}")


def _predict_neuromorphic(model: Path, spec, sample: Path | None, precision: str | None, as_json: bool) -> None:
    from hwlat.devices.neuromorphic import predict_file

    est = predict_file(model, spec, sample, precision)
    if as_json:
        print(json.dumps(est.to_json(), indent=1))
        return
    rate = lambda r: "-" if r is None else f"{r:.2%}"  # noqa: E731
    t = Table("layer", "op", "input", "in rate", "fire rate", "neurons", "cores", "SOPs", "MACs",
              "energy", "latency", "bound", title=f"{model.name} on {spec.name} ({est.precision}), "
              f"{est.time_steps} steps x {est.batch} sample(s)")
    for r in est.layers:
        t.add_row(r.name, r.op, r.input, rate(r.in_rate), rate(r.fire_rate), str(r.neurons), str(r.cores),
                  _num(r.sops), _num(r.macs), _energy(r.energy_pj), f"{r.latency_ns / 1e3:.2f} us", r.bound)
    t.add_section()
    t.add_row("barrier", "", "", "", "", "", "", "", "", "", f"{est.steps * est.barrier_ns / 1e3:.2f} us", "")
    t.add_row("total", "", "", "", rate(est.firing_rate), str(sum(r.neurons for r in est.layers)),
              str(est.cores), _num(est.sops), _num(est.macs), _energy(est.energy_pj),
              f"{est.latency_ns / 1e3:.2f} us", "")
    out.print(t)
    out.print(f"{model.name} on {spec.name} ({est.precision}): {_energy(est.energy_pj)}, "
              f"{est.latency_ns / 1e3:.2f} us for {est.steps} steps ({est.latency_ns / est.steps / 1e3:.2f} us "
              f"a step), {est.cores} cores; {_num(est.sops)} SOPs, {_num(est.macs)} MACs, firing rate "
              f"{est.firing_rate:.2%} (estimates)", highlight=False)


def _energy(pj: float) -> str:
    for unit, scale in (("mJ", 1e9), ("uJ", 1e6), ("nJ", 1e3)):
        if pj >= scale:
            return f"{pj / scale:.3f} {unit}"
    return f"{pj:.3f} pJ"


def _predicted_and_measured(graphs, spec, runner, store, *, correct: bool):
    """(path, prediction, end-to-end timing) of each model, measured on the device."""
    from hwlat.graph import fuse
    from hwlat.lut.predict import predict as do_predict

    for path, g in graphs:
        pred = do_predict(g, fuse(g), store, spec.name, correct=correct)
        with err.status(f"measuring {path.name} on {spec.name} ..."):
            measured = runner.time_model(str(path))
        yield path, pred, measured


@app.command()
def calibrate(
    models: Annotated[list[Path], typer.Argument(help="ONNX models to measure end to end")],
    device: DeviceOpt = "cpu-ort",
    table: TableOpt = None,
    rpc: RpcOpt = None,
    key: KeyOpt = None,
) -> None:
    """Measure whole models and fit the correction from kernel sums to end-to-end latency."""
    from hwlat.devices import load_device
    from hwlat.graph import load
    from hwlat.lut.correct import fit_correction

    spec = load_device(device)
    runner = _runner(spec, rpc, key)
    graphs = [(p, load(p)) for p in models]
    with _table(table, readonly=False) as store:
        for path, pred, measured in _predicted_and_measured(graphs, spec, runner, store, correct=False):
            store.put_calibration(spec.name, str(path.resolve()), pred.features, measured.median_ms)
            out.print(f"{path.name}: kernel sum {pred.kernel_sum_ms:.3f} ms, measured {measured.median_ms:.3f} ms "
                      f"({pred.kernel_sum_ms / measured.median_ms - 1:+.1%})")
        samples = store.calibration(spec.name)
    correction = fit_correction([(f, m) for _, f, m in samples])
    if correction is None:
        out.print(f"{len(samples)} models calibrated on {spec.name}; the correction needs at least 3")
    else:
        out.print(f"correction for {spec.name}: {correction.describe()}")


@app.command()
def validate(
    models: Annotated[list[Path], typer.Argument(help="ONNX models")],
    device: DeviceOpt = "cpu-ort",
    table: TableOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    plot: Annotated[Path | None, typer.Option(help="write a predicted-vs-measured scatter (PNG)")] = None,
    rpc: RpcOpt = None,
    key: KeyOpt = None,
) -> None:
    """Measure models end to end and compare with the table's prediction."""
    from hwlat.devices import load_device
    from hwlat.graph import load
    from hwlat.lut.metrics import accuracy_metrics

    spec = load_device(device)
    runner = _runner(spec, rpc, key)
    graphs = [(p, load(p)) for p in models]
    rows = []
    with _table(table, readonly=True) as store:
        for path, pred, measured in _predicted_and_measured(graphs, spec, runner, store, correct=True):
            rows.append({"model": str(path), "predicted_ms": pred.latency_ms,
                         "kernel_sum_ms": pred.kernel_sum_ms, "corrected": pred.correction is not None,
                         "measured_ms": measured.median_ms, "measured_cv": measured.cv,
                         "estimated_share": pred.estimated_share,
                         "error": pred.latency_ms / measured.median_ms - 1})
    metrics = accuracy_metrics([r["predicted_ms"] for r in rows], [r["measured_ms"] for r in rows])
    if plot is not None:
        _scatter(rows, plot, spec.name)
    if as_json:
        print(json.dumps({"device": spec.name, "models": rows, "metrics": metrics}, indent=1))
        return
    t = Table("model", "predicted ms", "kernel sum ms", "measured ms", "error", "estimated",
              title=f"validate on {spec.name}")
    for r in rows:
        t.add_row(Path(r["model"]).name, f"{r['predicted_ms']:.3f}", f"{r['kernel_sum_ms']:.3f}",
                  f"{r['measured_ms']:.3f}", f"{r['error']:+.1%}", f"{r['estimated_share']:.0%}")
    out.print(t)
    out.print(f"RMSE {metrics['rmse_ms']:.3f} ms, RMSPE {metrics['rmspe']:.1%}, within 5/10/15 %: "
              f"{metrics['within_5']:.0%} / {metrics['within_10']:.0%} / {metrics['within_15']:.0%}")


def _scatter(rows, path: Path, device: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = [r["measured_ms"] for r in rows]
    p = [r["predicted_ms"] for r in rows]
    hi = max(m + p) * 1.1
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.fill_between([0, hi], [0, hi * 0.9], [0, hi * 1.1], color="tab:green", alpha=0.15, label="±10 %")
    ax.plot([0, hi], [0, hi], color="gray", lw=1)
    ax.scatter(m, p, s=18)
    ax.set(xlabel="measured (ms)", ylabel="predicted (ms)", title=f"hwlat predict vs measured, {device}",
           xlim=(0, hi), ylim=(0, hi))
    ax.legend(loc="upper left")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


lut_app = typer.Typer(help="Show, export and import latency tables.", no_args_is_help=True)
app.add_typer(lut_app, name="lut")


@lut_app.command("show")
def lut_show(table: TableOpt = None,
             device: Annotated[str | None, typer.Option(help="list this device's entries")] = None) -> None:
    """Devices in the table and their entry counts, or one device's entries."""
    with _table(table, readonly=True) as store:
        if device is None:
            t = Table("device", "entries", title=str(store.path))
            for name, n in store.devices():
                t.add_row(name, str(n))
        else:
            t = Table("kind", "median ms", "cv", "repeats", "pipeline", "key", title=f"{device} in {store.path}")
            for e in store.entries(device):
                t.add_row(e.kind, f"{e.median_ms:.4f}", f"{e.cv:.1%}", str(e.repeats), e.pipeline, e.key)
    out.print(t)


def _format_of(path: Path, fmt: str | None) -> str:
    fmt = fmt or path.suffix.lstrip(".").lower()
    if fmt not in ("json", "csv", "ofa"):
        raise InvalidInputError(f"format '{fmt}': use --format json, csv or ofa")
    return fmt


def _ofa_device(device: str | None) -> str:
    if not device:
        raise InvalidInputError("--format ofa needs --device NAME: the device the OFA tables were measured on")
    return device


@lut_app.command("export")
def lut_export(path: Annotated[Path, typer.Argument(help="file to write")],
               fmt: Annotated[str | None, typer.Option("--format", help="json or csv (default: from suffix)")] = None,
               device: Annotated[str | None, typer.Option(help="only this device")] = None,
               table: TableOpt = None) -> None:
    """Write table entries to JSON, CSV, or OFA's yaml tables (a folder, one file per resolution)."""
    from hwlat.lut import export_csv, export_json
    from hwlat.lut.ofa import export_ofa_dir

    fmt = _format_of(path, fmt)
    with _table(table, readonly=True) as store:
        if fmt == "ofa":
            n = export_ofa_dir(store, path, _ofa_device(device))
        else:
            n = (export_json if fmt == "json" else export_csv)(store, path, device)
    out.print(f"wrote {n} entries to {path}")


@lut_app.command("import")
def lut_import(path: Annotated[Path, typer.Argument(help="file to read")],
               fmt: Annotated[str | None, typer.Option("--format", help="json, csv or ofa (default: from suffix)")] = None,
               device: Annotated[str | None, typer.Option(help="with --format ofa: the device to file them under")] = None,
               table: TableOpt = None) -> None:
    """Read entries from JSON, CSV or a folder of OFA yaml tables into the table (all or nothing)."""
    from hwlat.lut import import_csv, import_json
    from hwlat.lut.ofa import import_ofa_dir

    fmt = _format_of(path, fmt)
    if fmt == "ofa":
        if not path.is_dir():
            raise InvalidInputError(f"{path}: not a folder of OFA <R>_lookup_table.yaml files")
        with _table(table, readonly=False) as store:
            n = import_ofa_dir(store, path, _ofa_device(device))
        out.print(f"imported {n} entries into {store.path}")
        return
    if not path.is_file():
        raise InvalidInputError(f"{path}: no such file")
    with _table(table, readonly=False) as store:
        n = (import_json if fmt == "json" else import_csv)(store, path)
    out.print(f"imported {n} entries into {store.path}")


@lut_app.command("fit")
def lut_fit(
    space: Annotated[str, typer.Option(help="search space of the measured models: nb201")],
    measurements: Annotated[Path, typer.Option(help="CSV with columns arch,latency_ms")],
    device: Annotated[str, typer.Option("--device", "-d", help="name of the new device")],
    reference_device: Annotated[str, typer.Option(
        help="the prior: a device with a profiled table, or a roofline device")] = "cpu-ort",
    zero_work: Annotated[bool, typer.Option(
        help="nb201: the device ran exports that keep `none` edges' zeros (e.g. HW-NAS-Bench's): "
             "also count ops on zero inputs, which hwlat's export folds away")] = False,
    table: TableOpt = None,
) -> None:
    """Fit a per-kernel table for a new device from whole-model measurements (few-shot)."""
    from hwlat.lut.fewshot import fit_device_table, read_measurements, reference_from_store
    from hwlat.nas.nb201_lut import nb201_all_keys, nb201_fit_inputs

    if space not in ARCH_LIST_SPACES:
        raise InvalidInputError(f"space '{space}' has no one-line architecture strings; use: "
                                f"{', '.join(ARCH_LIST_SPACES)}")
    measured = read_measurements(measurements)
    with _table(table, readonly=False) as store:
        if _is_roofline(reference_device):  # an analytic prior: nothing profiled needed
            from hwlat.devices.roofline import roofline_reference

            reference = roofline_reference(reference_device, nb201_all_keys())
        else:
            reference = reference_from_store(store, reference_device)
        arch_kernels, reference, groups = nb201_fit_inputs(measured, reference, zero_work)
        fit = fit_device_table(store, device, reference_device, measured, arch_kernels, reference,
                               groups)
        path = store.path
    out.print(f"fitted {len(fit.table)} entries for '{device}' into {path} from {fit.n_models} "
              f"models (reference '{reference_device}')")
    out.print(fit.describe(), markup=False)


def _is_roofline(name: str) -> bool:
    from hwlat.devices import list_devices

    return any(d.name == name and d.runtime == "roofline" for d in list_devices())


nas_app = typer.Typer(help="Latency inside architecture search.", no_args_is_help=True)
app.add_typer(nas_app, name="nas")
SPACES = ("ofa-mbv3", "proxyless-mobile", "nb201")
CONFIG_SPACES = ("ofa-mbv3", "proxyless-mobile")  # one JSON per query (--config)
ARCH_LIST_SPACES = ("nb201",)  # a CSV of architecture strings (--archs)


@nas_app.command("predict")
def nas_predict(
    space: Annotated[str, typer.Option(help=f"search space: {', '.join(SPACES)}")],
    config: Annotated[Path | None, typer.Option(
        help="ofa-mbv3: OFA net config JSON ({'image_size': R, 'net': ...}); proxyless-mobile: "
             "{'ops': [21 of k3_e3..k7_e6, zero], 'r': 224}")] = None,
    archs: Annotated[Path | None, typer.Option(
        help="nb201: CSV with an arch column (or one cell string per line)")] = None,
    device: DeviceOpt = "cpu-ort",
    table: TableOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Latency of architectures of a search space from the device's table: one OFA net config
    (OFA's rule), or every cell string of a CSV (printed as arch,latency_ms)."""
    if space not in SPACES:
        raise InvalidInputError(f"unknown space '{space}'; known: {', '.join(SPACES)}")
    if space in CONFIG_SPACES:
        if config is None or archs is not None:
            raise InvalidInputError(f"space '{space}' takes one --config NET.json (not --archs)")
        _predict_config(space, config, device, table, as_json)
    else:
        if archs is None or config is not None:
            raise InvalidInputError(f"space '{space}' takes --archs A.csv (not --config)")
        _predict_archs(space, archs, device, table, as_json)


def _predict_config(space: str, config: Path, device: str, table: Path | None,
                    as_json: bool) -> None:
    from hwlat.lut.ofa import predict_ofa
    from hwlat.nas.proxyless import proxyless_latency

    try:
        cfg = json.loads(config.read_text())
    except (OSError, ValueError, RecursionError) as e:  # RecursionError: nested too deeply
        raise InvalidInputError(f"{config}: not a readable net config ({e or 'nested too deeply'})") from e
    if space == "proxyless-mobile":
        with _table(table, readonly=True) as store:
            rows = proxyless_latency(store, device, cfg)
        total = sum(ms for _, ms in rows)
        if as_json:
            print(json.dumps({"latency_ms": total, "parts": dict(rows)}, indent=1))
            return
        t = Table("part", "ms", title=f"{config.name} on {device}")
        for name, ms in rows:
            t.add_row(name, f"{ms:.6f}")
        out.print(t)
        out.print(f"{config.name} on {device}: {total:.6f} ms")
        return
    with _table(table, readonly=True) as store:
        pred = predict_ofa(store, device, cfg)
    if as_json:
        print(json.dumps(pred.to_json(), indent=1))
        return
    t = Table("block", "ms", title=f"{config.name} on {device} (resolution {pred.image_size})")
    for row in pred.rows:
        t.add_row(row.key, f"{row.ms:.6f}")
    out.print(t)
    out.print(f"{config.name} on {device}: {pred.latency_ms:.6f} ms")


def _predict_archs(space: str, path: Path, device: str, table: Path | None, as_json: bool) -> None:
    from hwlat.nas.nb201_lut import nb201_latency, read_archs

    archs = read_archs(path)
    with _table(table, readonly=True) as store:
        entries = store.entries(device)
    if not entries:
        raise InvalidInputError(f"the table has no entries for device '{device}'; profile it or "
                                f"fit one with `hwlat lut fit --space {space} --device {device}`")
    ms = nb201_latency({e.key: e.median_ms for e in entries}, archs)
    if as_json:
        print(json.dumps([{"arch": a, "latency_ms": float(v)} for a, v in zip(archs, ms, strict=True)],
                         indent=1))
        return
    lines = ["arch,latency_ms", *(f"{a},{v:.6g}" for a, v in zip(archs, ms, strict=True))]
    sys.stdout.write("\n".join(lines) + "\n")


@app.command()
def search(
    latency_ms: Annotated[float, typer.Option("--latency-ms", help="latency budget (ms)")],
    space: Annotated[str, typer.Option(help=f"search space: {', '.join(SPACES)}")] = "ofa-mbv3",
    device: DeviceOpt = "cpu-ort",
    generations: Annotated[int, typer.Option(help="generations after the random population of 100 (OFA uses 500)")] = 100,
    seed: int = 0,
    estimate: Annotated[bool, typer.Option(help="estimate kernels the table lacks")] = False,
    table: TableOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Evolutionary search within a latency budget; the objective is a proxy (most MACs)."""
    from hwlat.nas import OfaLatencyTable
    from hwlat.nas.search import run_search

    if space not in SPACES:
        raise InvalidInputError(f"unknown space '{space}'; known: {', '.join(SPACES)}")
    with _table(table, readonly=True) as store:
        lut = OfaLatencyTable(store, device, estimate=estimate)
    result = run_search(lut, latency_ms, generations, seed)
    if as_json:
        print(json.dumps(result.to_json(), indent=1))
        return
    t = Table("latency ms", "MMACs", "M params", "r", "depths",
              title=f"Pareto front within {latency_ms:g} ms on {device}")
    for c in result.front:
        t.add_row(f"{c.latency_ms:.4f}", f"{c.macs / 1e6:.1f}", f"{c.params / 1e6:.2f}",
                  str(c.arch["r"]), str(c.arch["d"]))
    out.print(t)
    b = result.best
    out.print(f"best: {b.latency_ms:.4f} ms, {b.macs / 1e6:.1f} M MACs, {b.params / 1e6:.2f} M params")
    out.print(json.dumps(b.arch), highlight=False)
    out.print(f"objective: {result.objective}; {result.evaluated} candidates evaluated in {result.wall_s:.2f} s")


@app.command("compile")
def compile_(
    model: Annotated[Path, typer.Argument(help="ONNX model")],
    device: Annotated[str, typer.Option("--device", "-d", help="TVM device: its host target, threads and pipeline")] = "cpu-tvm",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="library to write: .so, or .tar of objects to link on the device (default: MODEL.so)")] = None,
    target_kind: Annotated[str | None, typer.Option(help="host | aarch64 | cuda (default: the device's own)")] = None,
    pipeline: Annotated[str | None, typer.Option(help="Relax pipeline: default, zero, static_shape_tuning (default: the device's; static_shape_tuning when tuning)")] = None,
    tune_trials: Annotated[int, typer.Option(min=0, help="MetaSchedule trials in all (~10 s each on 2 cores, plus ~1-2 min start-up)")] = 0,
    tuning_db: Annotated[Path | None, typer.Option(help="tuning database directory (one per target; reused when trials are 0; default: the device file's)")] = None,
    table: TableOpt = None,
) -> None:
    """Compile a model with TVM into a library + .json sidecar, checked against onnxruntime where it
    runs; with the device's own tuning database, its records also fill the device's table."""
    from hwlat.devices import load_device
    from hwlat.lowering import compile_model, target_for_device
    from hwlat.lowering.records import feed_table, feeds_table
    from hwlat.lowering.targets import kind_of

    spec = load_device(device)
    target = target_for_device(spec, target_kind)
    if tuning_db is None and target_kind in (None, kind_of(spec.target or {"kind": "llvm"})):
        tuning_db = spec.tuning_db_path()  # the device's own database, if its file names one
    tuning = tuning_db is not None or tune_trials > 0
    with err.status(f"compiling {model.name} for {target_kind or spec.name} ..."):
        r = compile_model(model, target, pipeline or (None if tuning else spec.pipeline), output,
                          tuning_db=tuning_db, tune_trials=tune_trials)
    out.print(f"wrote {r.output} ({r.artifact}) and {r.sidecar.name}: {r.target}, pipeline {r.pipeline}, "
              f"{r.compile_s:.1f} s", highlight=False)
    out.print(f"TVM vs onnxruntime: max abs difference {r.max_abs_diff:.3g}" if r.max_abs_diff is not None
              else r.note)
    if r.tuning_db is not None and feeds_table(spec, r.tuning_db):
        with err.status("reading the tuning records into the table ..."), \
                _table(table, readonly=False) as store:
            fed = feed_table(model, spec, target, r.tuning_db, store)
        out.print(f"table {store.path}, device {spec.name}: {fed.written} kernels' latencies from "
                  f"the tuning records; {fed.unrecorded} without records (`hwlat profile` times "
                  f"them); {fed.already} already there")


InputOpt = Annotated[Path | None, typer.Option("--input", "-i", help=".npy (one-input model) or .npz (by input name); default: seeded random")]


@app.command()
def run(
    library: Annotated[Path, typer.Argument(help="library from `hwlat compile` (its .json beside it)")],
    input_path: InputOpt = None,
    save: Annotated[Path | None, typer.Option(help="write the outputs, by name, to this .npz")] = None,
) -> None:
    """Run a compiled library once and summarize its outputs."""
    import numpy as np

    from hwlat.lowering import run_library

    outputs = run_library(library, input_path)
    table = Table("output", "shape", "dtype", "min", "max", "mean", title=library.name)
    for name, a in outputs.items():
        table.add_row(name, str(list(a.shape)), str(a.dtype), f"{a.min():.4g}", f"{a.max():.4g}", f"{a.mean():.4g}")
    out.print(table)
    if save is not None:
        tmp = save.with_name(f".{save.name}.tmp.npz")
        np.savez(tmp, **outputs)
        os.replace(tmp, save)
        out.print(f"wrote {save}")


@app.command()
def bench(
    library: Annotated[Path, typer.Argument(help="library from `hwlat compile` (its .json beside it)")],
    input_path: InputOpt = None,
    warmup: Annotated[int, typer.Option(min=0, help="untimed runs first")] = 5,
    repeats: Annotated[int, typer.Option(min=3, help="timed runs per round")] = 25,
    threads: Annotated[int | None, typer.Option(min=1, help="default: the threads it was compiled for")] = None,
) -> None:
    """Time a compiled library: median and interquartile range of whole-model runs."""
    from hwlat.devices.spec import MeasureSpec
    from hwlat.lowering import bench_library

    b = bench_library(library, input_path, MeasureSpec(warmup=warmup, repeats=repeats), threads)
    out.print(f"{library.name} on {b.device}, {b.threads} thread(s): median {b.median_ms:.4f} ms, "
              f"IQR {b.iqr_ms:.4f} ms ({len(b.timing.samples_ms)} runs, {b.timing.rounds} round(s))",
              highlight=False)


rpc_app = typer.Typer(help="Run and query the TVM RPC tracker and servers that remote devices are timed through.",
                      no_args_is_help=True)
app.add_typer(rpc_app, name="rpc")
HostOpt = Annotated[str, typer.Option(help="address to listen on; any but loopback lets the network run code here")]


@rpc_app.command("tracker")
def rpc_tracker(
    host: HostOpt = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="port to listen on")] = 9190,
) -> None:
    """Run a TVM RPC tracker in the foreground; Ctrl-C stops it and everything it started."""
    from hwlat.devices import rpc

    proc = _start_rpc(host, "tracker", lambda: rpc.start_tracker(host, port))
    out.print(f"tracker on {proc.address}; add servers with `hwlat rpc server --tracker {proc.address} "
              f"--key DEVICE`; Ctrl-C stops it", highlight=False, markup=False)
    rpc.serve_forever(proc)


@rpc_app.command("server")
def rpc_server(
    tracker: Annotated[str, typer.Option("--tracker", help="tracker to register with, HOST:PORT")],
    key: Annotated[str, typer.Option("--key", help="key clients ask the tracker for: the device's name")],
    host: HostOpt = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65435, help="first port to try (up to 100 more)")] = 9090,
) -> None:
    """Run a TVM RPC server registered with a tracker, in the foreground; Ctrl-C stops it."""
    from hwlat.devices import rpc

    proc = _start_rpc(host, "server", lambda: rpc.start_server(tracker, key, host, port))
    fresh = "; each session a new process (a CUDA GPU is here)" if "--no-fork" in proc.popen.args else ""
    out.print(f"server on {proc.address}, registered with {tracker} under key '{key}'{fresh}; "
              "Ctrl-C stops it", highlight=False, markup=False)
    rpc.serve_forever(proc)


def _start_rpc(host: str, role: str, start):
    from hwlat.devices import rpc

    warning = rpc.security_warning(host)
    if warning:
        err.print(f"warning: {warning}", highlight=False, markup=False)
    with err.status(f"starting the {role} (it imports TVM: seconds) ..."):
        return start()


@rpc_app.command("status")
def rpc_status(
    tracker: Annotated[str, typer.Option("--tracker", help="tracker, HOST:PORT")] = "127.0.0.1:9190",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Show the servers registered with a tracker and its queue, per key."""
    from hwlat.devices import rpc

    status = rpc.tracker_status(tracker, timeout=5.0)
    rows = [{"key": k, "servers": [f"{h}:{p}" for h, p in status.servers.get(k, ())],
             "free": status.queue.get(k, (0, 0))[0], "waiting": status.queue.get(k, (0, 0))[1]}
            for k in status.keys()]
    if as_json:
        print(json.dumps({"tracker": tracker, "keys": rows}, indent=1))
        return
    t = Table("key", "servers", "free", "waiting", "addresses", title=f"RPC tracker {tracker}")
    for r in rows:
        t.add_row(r["key"], str(len(r["servers"])), str(r["free"]), str(r["waiting"]), " ".join(r["servers"]))
    out.print(t)
    if not rows:
        out.print(f"no servers yet: `hwlat rpc server --tracker {tracker} --key DEVICE`", highlight=False, markup=False)


def main() -> None:
    from hwlat.errors import one_line

    try:
        app()
    except HwlatError as e:
        _exit_now(2, f"error: {one_line(str(e))}")
    except KeyboardInterrupt:
        _exit_now(130, "interrupted")
    except OSError as e:  # a full disk or a closed pipe under stdout; any other is a bug
        if e.errno not in _OUTPUT_ERRNOS:
            raise
        _exit_now(2, f"error: cannot write the output: {one_line(e.strerror or str(e))}")
    except SystemExit as e:
        if e.code not in (None, 0):
            raise
    try:
        sys.stdout.flush()
    except OSError as e:
        _exit_now(2, f"error: cannot write the output: {one_line(e.strerror or str(e))}")


_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EPIPE, errno.EIO}


def _exit_now(code: int, line: str) -> None:
    """One line on stderr and the exit code, and nothing after it: no unflushed output, and no
    library's finalizer (TVM warns as its objects are destroyed) writes at interpreter exit."""
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
