"""Latency-table commands: `hwlat devices`, `profile`, `predict`, `calibrate`, `validate`, and
`hwlat lut show/export/import/fit`."""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from hwlat.api import MIN_ENTRIES, noisy_keys
from hwlat.cli.options import (
    DeviceFileOpt,
    DeviceOpt,
    JsonOpt,
    KeyOpt,
    RpcAliasOpt,
    TableOpt,
    TrackerOpt,
    measured_device,
    open_table,
    query_device,
    table_devices,
)
from hwlat.cli.render import energy, err, num, out, sigs
from hwlat.errors import InvalidInputError
from hwlat.runners import get_runner


def devices(table: TableOpt = None, as_json: JsonOpt = False,
            device_file: DeviceFileOpt = None) -> None:
    """List the devices hwlat can profile and predict for: the shipped device files, the user's
    ($HWLAT_HOME/devices/*.toml, --device-file), and devices that live only in the table."""
    from importlib import metadata

    from hwlat.devices import list_devices, table_only_device

    dists = {"onnxruntime": "onnxruntime", "tvm": "apache-tvm", "roofline": "hwlat",
             "neuromorphic": "hwlat", "table": "hwlat"}
    specs = list_devices()
    entries = dict(table_devices(table))
    specs += [table_only_device(name) for name in entries if name not in {s.name for s in specs}]
    rows = []
    for d in specs:
        try:
            version = metadata.version(dists.get(d.runtime, d.runtime))
        except metadata.PackageNotFoundError:
            version = "not installed"
        rows.append({"name": d.name, "runtime": d.runtime, "version": version, "threads": d.threads,
                     "table_entries": entries.get(d.name, 0), "table_only": d.runtime == "table",
                     "source": d.source, "description": d.description})
    if as_json:
        print(json.dumps(rows, indent=1))
        return
    t = Table("name", "runtime", "version", "threads", "entries", "description", title="hwlat devices")
    for r in rows:
        t.add_row(r["name"], r["runtime"], r["version"], str(r["threads"]),
                  str(r["table_entries"]), r["description"])
    out.print(t)


def profile(
    models: Annotated[list[Path] | None, typer.Argument(help="ONNX models")] = None,
    device: DeviceOpt = "cpu-ort",
    table: TableOpt = None,
    zoo_models: Annotated[bool, typer.Option("--zoo", metavar="", help="also profile every built-in model the device runs")] = False,
    force: Annotated[bool, typer.Option("--force", metavar="", help="time again the kernels already in the table (e.g. noisy entries), replacing them")] = False,
    tracker: TrackerOpt = None,
    key: KeyOpt = None,
    rpc: RpcAliasOpt = None,
    device_file: DeviceFileOpt = None,
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

    from hwlat import api
    from hwlat.lut import default_table_path

    spec = measured_device(device, table)
    paths = list(models or [])
    if zoo_models:
        paths += _export_zoo(spec)
    if not paths:
        raise InvalidInputError("give ONNX models to profile, or --zoo")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    # a bar only on a terminal: elsewhere it would print its last state, a line before any
    # error line (_progress_lines says how far it got there)
    bar = Progress(*columns, console=err, disable=not err.is_terminal)
    state: dict = {}
    warnings: list[str] = []

    def on_total(n: int) -> None:  # the bar shows once the kernels to time are known
        bar.start()
        state["task"] = bar.add_task(f"profiling on {spec.name}", total=n)
        state["logged"] = _progress_lines(spec.name, n)

    def on_kernel(k) -> None:
        bar.advance(state["task"])
        state["logged"](k)

    try:
        report = api.profile(paths, spec, table=table, rpc=tracker or rpc, key=key, force=force,
                             on_total=on_total, on_kernel=on_kernel, on_warning=warnings.append)
    finally:
        bar.stop()
    for line in warnings:  # RPC servers that died mid-kernel; the kernel was retried
        err.print(f"warning: {line}", highlight=False, markup=False)
    again = " (timed again: --force)" if force else ""
    out.print(f"{report.measured} kernels measured{again}, {report.skipped} already in "
              f"{Path(table or default_table_path()).expanduser()} ({report.seconds:.1f} s)")


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
    from hwlat import zoo
    from hwlat.onnx_export import export as do_export
    from hwlat.paths import home_folder

    folder = home_folder("zoo")
    paths = []
    for name in zoo.MODELS:
        path = folder / f"{name}.onnx"
        if not path.exists():
            with err.status(f"exporting {name} ..."):
                do_export(*zoo.build(name), path, compare=False)
        paths.append(path)
    runner = get_runner(spec)
    from hwlat.graph import fuse, load

    return [p for p in paths
            if not runner.unsupported({op for k in fuse(load(p), spec.fusion) for op in k.key.ops})]


def predict(
    model: Annotated[Path, typer.Argument(help="ONNX model")],
    device: DeviceOpt = "cpu-ort",
    table: TableOpt = None,
    breakdown: Annotated[bool, typer.Option("--breakdown", metavar="", help="show every kernel's share")] = False,
    as_json: JsonOpt = False,
    sample: Annotated[Path | None, typer.Option("--input", "-i", help="sample input, .npy (one-input model) or .npz (by input name): on neuromorphic devices the spikes it fires are measured; a sparse model's coordinates set its kernel maps")] = None,
    precision: Annotated[str | None, typer.Option(help="neuromorphic devices: energy preset, fp32, fp16 or int8 (default: the device file's)")] = None,
    fallback: Annotated[str | None, typer.Option(
        help="roofline device that estimates kernels missing from the table (default: the device "
             "file's `fallback`, else fits on the device's measured kernels)")] = None,
    estimate: Annotated[bool, typer.Option(
        "--estimate", metavar="", help=f"print a prediction mostly (> 50 %) extrapolated from fewer than "
                           f"{MIN_ENTRIES} table entries, flagged, instead of refusing it")] = False,
    device_file: DeviceFileOpt = None,
    clock: Annotated[str, typer.Option(
        "--clock", help="wall: the entries' wall-clock medians, what a dedicated device shows; cpu: "
                        "the kernels' thread CPU time (recorded by cpu-ort and cpu-tvm), which holds on a machine "
                        "shared with other processes")] = "wall",
) -> None:
    """Predict a model's latency on a device from the table, without running it; on a neuromorphic
    device, its energy and latency from the spikes it fires on a sample input."""
    from hwlat import api

    spec = query_device(device, table)
    r = api._predict(model, spec, table=table, fallback=fallback, sample=sample,
                     precision=precision, estimate=estimate, names=CLI_NAMES, clock=clock)
    if isinstance(r, api.SpikingResult):
        _print_spikes(model, spec, r.estimate, as_json)
    else:
        _print_prediction(model, spec, r, breakdown, as_json)


# the options that `hwlat.predict`'s messages name, as the command spells them
CLI_NAMES = {"precision": "--precision", "sample": "--input", "estimate": "--estimate",
             "sample_hint": "--input sample.npy ({shapes})", "clock": "--clock",
             "wall": "--clock wall"}


def _print_prediction(model: Path, spec, res, breakdown: bool, as_json: bool) -> None:
    """The sum of the table's entries for the model's kernels; misses estimated and labelled."""
    pred, noisy = res.prediction, res.noisy
    thin = res.thin_estimate
    if thin:
        err.print(f"warning: {res.thin}: a rough guess (--estimate)", highlight=False, markup=False)
    if as_json:
        print(json.dumps(res.to_json(route=False), indent=1))
        return
    if breakdown:
        t = Table("kind", "ops", "output", "count", "ms each", "ms total", "share", "source",
                  title=f"{model.name} on {spec.name}")
        for r in sorted(pred.rows, key=lambda r: -r.total_ms):
            source = r.source + (" (noisy)" if r.kernel.key.text() in noisy else "")
            t.add_row(r.kernel.kind.value, "+".join(r.kernel.key.ops), sigs(r.kernel.key.outputs),
                      str(r.count), f"{r.ms:.4f}", f"{r.total_ms:.4f}",
                      f"{r.total_ms / pred.latency_ms:.1%}" if pred.latency_ms else "-", source)
        out.print(t)
        used = sum(1 for r in pred.rows if r.kernel.key.text() in noisy)
        if used:
            out.print(f"{used} of the entries used are noisy (CV above the device's max_cv); "
                      f"`hwlat profile {model.name} --device {spec.name} --force` times them "
                      "again", highlight=False, markup=False)
    flag = "ROUGH GUESS (--estimate): " if thin else ""
    in_cpu = " (thread CPU time)" if pred.clock == "cpu" else ""
    out.print(f"{flag}{model.name} on {spec.name}: {pred.latency_ms:.3f} ms predicted{in_cpu} "
              f"(kernel sum {pred.kernel_sum_ms:.3f} ms, {pred.estimated_share:.1%} of it estimated"
              + (f", ±{pred.uncertainty_ms:.3f} ms" if pred.uncertainty_ms else "") + ")",
              highlight=False, markup=False)
    if pred.correction is not None:
        out.print(f"correction: {pred.correction.describe()}")


def _print_spikes(model: Path, spec, est, as_json: bool) -> None:
    """Energy and latency, layer by layer, from the spikes a sample input fires."""
    if as_json:
        print(json.dumps(est.to_json(), indent=1))
        return
    rate = lambda r: "-" if r is None else f"{r:.2%}"  # noqa: E731
    t = Table("layer", "op", "input", "in rate", "fire rate", "neurons", "cores", "SOPs", "MACs",
              "energy", "latency", "bound", title=f"{model.name} on {spec.name} ({est.precision}), "
              f"{est.time_steps} steps x {est.batch} sample(s)")
    for r in est.layers:
        t.add_row(r.name, r.op, r.input, rate(r.in_rate), rate(r.fire_rate), str(r.neurons), str(r.cores),
                  num(r.sops), num(r.macs), energy(r.energy_pj), f"{r.latency_ns / 1e3:.2f} us", r.bound)
    t.add_section()
    t.add_row("barrier", "", "", "", "", "", "", "", "", "", f"{est.steps * est.barrier_ns / 1e3:.2f} us", "")
    t.add_row("total", "", "", "", rate(est.firing_rate), str(sum(r.neurons for r in est.layers)),
              str(est.cores), num(est.sops), num(est.macs), energy(est.energy_pj),
              f"{est.latency_ns / 1e3:.2f} us", "")
    out.print(t)
    out.print(f"{model.name} on {spec.name} ({est.precision}): {energy(est.energy_pj)}, "
              f"{est.latency_ns / 1e3:.2f} us for {est.steps} steps ({est.latency_ns / est.steps / 1e3:.2f} us "
              f"a step), {est.cores} cores; {num(est.sops)} SOPs, {num(est.macs)} MACs, firing rate "
              f"{est.firing_rate:.2%} (estimates)", highlight=False)


_ClockOpt = Annotated[str, typer.Option(
    "--clock", help="wall: wall-clock medians, what a dedicated device shows; cpu: the thread CPU "
                    "time of kernels and models (onnxruntime, 1 thread), which holds on a machine "
                    "shared with other processes")]


def calibrate(
    models: Annotated[list[Path], typer.Argument(help="ONNX models to measure end to end")],
    device: DeviceOpt = "cpu-ort",
    table: TableOpt = None,
    tracker: TrackerOpt = None,
    key: KeyOpt = None,
    as_json: JsonOpt = False,
    rpc: RpcAliasOpt = None,
    device_file: DeviceFileOpt = None,
    clock: _ClockOpt = "wall",
) -> None:
    """Measure whole models and fit the correction from kernel sums to end-to-end latency."""
    from hwlat import api

    spec = measured_device(device, table)

    def on_model(row: dict) -> None:
        if not as_json:
            out.print(f"{Path(row['model']).name}: kernel sum {row['kernel_sum_ms']:.3f} ms, "
                      f"measured {row['measured_ms']:.3f} ms ({clock}) ({row['error']:+.1%})")

    doc = api.calibrate(models, spec, table=table, rpc=tracker or rpc, key=key,
                        on_measure=_measuring(spec), on_model=on_model, clock=clock)
    if as_json:
        print(json.dumps(doc, indent=1))
    elif doc["correction"] is None:
        out.print(f"{doc['calibrated_models']} models calibrated on {spec.name}; the correction "
                  "needs at least 3")
    else:
        out.print(f"correction for {spec.name}: {doc['correction']}")


def _measuring(spec):
    """The spinner while a model is timed on the device."""
    return lambda path: err.status(f"measuring {path.name} on {spec.name} ...")


def validate(
    models: Annotated[list[Path], typer.Argument(help="ONNX models")],
    device: DeviceOpt = "cpu-ort",
    table: TableOpt = None,
    as_json: Annotated[bool, typer.Option("--json", metavar="", help="print JSON")] = False,
    plot: Annotated[Path | None, typer.Option(help="write a predicted-vs-measured scatter (PNG)")] = None,
    tracker: TrackerOpt = None,
    key: KeyOpt = None,
    rpc: RpcAliasOpt = None,
    device_file: DeviceFileOpt = None,
    clock: _ClockOpt = "wall",
) -> None:
    """Measure models end to end and compare with the table's prediction (in --clock's time)."""
    from hwlat import api
    from hwlat.devices import load_device

    spec = load_device(device)
    doc = api.validate(models, spec, table=table, rpc=tracker or rpc, key=key, plot=plot,
                       on_measure=_measuring(spec), clock=clock)
    rows, metrics = doc["models"], doc["metrics"]
    if as_json:
        print(json.dumps(doc, indent=1))
        return
    what = "thread CPU time" if clock == "cpu" else "wall-clock time"
    t = Table("model", "predicted ms", "kernel sum ms", "measured ms", "error", "estimated",
              title=f"validate on {spec.name}, against {what}")
    for r in rows:
        t.add_row(Path(r["model"]).name, f"{r['predicted_ms']:.3f}", f"{r['kernel_sum_ms']:.3f}",
                  f"{r['measured_ms']:.3f}", f"{r['error']:+.1%}", f"{r['estimated_share']:.0%}")
    out.print(t)
    out.print(f"RMSE {metrics['rmse_ms']:.3f} ms, RMSPE {metrics['rmspe']:.1%}, within 5/10/15 %: "
              f"{metrics['within_5']:.0%} / {metrics['within_10']:.0%} / {metrics['within_15']:.0%}")



lut_app = typer.Typer(help="Show, export, import, sample and train on latency tables.", no_args_is_help=True)


@lut_app.command("show")
def lut_show(table: TableOpt = None,
             device: Annotated[str | None, typer.Option("--device", "-d", help="list this device's entries")] = None,
             as_json: JsonOpt = False) -> None:
    """Devices in the table and their entry counts, or one device's entries; entries whose
    timings varied more than the device's max_cv are flagged noisy."""
    with open_table(table, readonly=True) as store:
        if device is None:
            rows = [{"device": name, "entries": n, "noisy": len(noisy_keys(store, name, max_cv_of(name)))}
                    for name, n in store.devices()]
            if as_json:
                print(json.dumps({"table": str(store.path), "devices": rows}, indent=1))
                return
            t = Table("device", "entries", "noisy", title=str(store.path))
            for r in rows:
                t.add_row(r["device"], str(r["entries"]), str(r["noisy"]) if r["noisy"] else "")
        else:
            limit = max_cv_of(device)
            entries = store.entries(device)
            if as_json:
                print(json.dumps({"table": str(store.path), "device": device, "max_cv": limit,
                                  "entries": [{**asdict(e), "noisy": e.cv > limit} for e in entries]},
                                 indent=1))
                return
            t = Table("kind", "median ms", "cv", "repeats", "pipeline", "key", title=f"{device} in {store.path}")
            for e in entries:
                cv = f"{e.cv:.1%}" + (" noisy" if e.cv > limit else "")
                t.add_row(e.kind, f"{e.median_ms:.4f}", cv, str(e.repeats), e.pipeline, e.key)
            n_noisy = sum(e.cv > limit for e in entries)
    out.print(t)
    if device is not None and n_noisy:
        out.print(f"{n_noisy} of {len(entries)} entries are noisy (CV above the device's max_cv "
                  f"{limit:.0%}); re-time them with `hwlat profile MODEL.onnx --device {device} "
                  "--force`, or drop one with `hwlat lut delete --device "
                  f"{device} --key KEY`", highlight=False, markup=False)


def max_cv_of(device: str) -> float:
    """The CV above which a device's entry is noisy: its file's max_cv (the default for a
    table-only device)."""
    from hwlat.devices import MeasureSpec
    from hwlat.devices.spec import find_device

    spec = find_device(device)
    return (spec.measure if spec is not None else MeasureSpec()).max_cv


@lut_app.command("delete")
def lut_delete(device: DeviceOpt,
               key: Annotated[str | None, typer.Option(help="only this kernel key's entry (default: every entry of the device, and its calibration)")] = None,
               table: TableOpt = None) -> None:
    """Delete a device's entries (or one of them) from the table."""
    with open_table(table, readonly=False) as store:
        if key is not None and store.get(device, key) is None:
            raise InvalidInputError(f"the table has no entry for device '{device}' and that key; "
                                    f"`hwlat lut show --device {device}` lists them")
        if key is None and not store.keys(device):
            raise InvalidInputError(f"the table has no entries for device '{device}'")
        n = store.delete_entries(device, key)
    out.print(f"deleted {n} entries of '{device}' from {store.path}", highlight=False, markup=False)


@lut_app.command("sample")
def lut_sample(
    device: DeviceOpt = "cpu-ort",
    kinds: Annotated[str, typer.Option(help="comma-separated kernel kinds: " + ", ".join(
        ("conv", "matmul", "layer_norm", "attention", "pool", "elementwise", "data_movement")))] = "conv,matmul,layer_norm,attention",
    n: Annotated[int, typer.Option("--n", help="sampled kernels of each kind the table should hold")] = 100,
    corpus: Annotated[Path | None, typer.Option(help="folder of ONNX models whose kernels, with the zoo's, form the prior")] = None,
    zoo_prior: Annotated[bool, typer.Option("--zoo/--no-zoo", help="fit the prior to the zoo's models too")] = True,
    adaptive: Annotated[bool, typer.Option(help="draw the second half around the worst-predicted configurations")] = True,
    seed: int = 0,
    table: TableOpt = None,
) -> None:
    """Time kernels drawn from the configurations real models use (resumable, killable)."""
    from hwlat.devices import load_device
    from hwlat.lut.sample import KINDS, corpus_configs, model_keys
    from hwlat.lut.sample import sample as run_sample
    from hwlat.runners.profile import ProfilePlan
    from hwlat.runners.profile import profile as profile_plan

    wanted = [k.strip() for k in kinds.split(",") if k.strip()]
    bad = [k for k in wanted if k not in KINDS]
    if bad or not wanted:
        raise InvalidInputError(f"unknown kernel kinds {bad or [kinds]}; the sampler draws {', '.join(KINDS)}")
    if n < 1:
        raise InvalidInputError(f"--n must be at least 1, got {n}")
    spec = load_device(device)
    if spec.runtime in ("roofline", "neuromorphic"):
        raise InvalidInputError(f"device '{spec.name}' is not timed; sample on a measured device")
    paths: list[Path] = []
    if corpus is not None:
        if not corpus.is_dir():
            raise InvalidInputError(f"--corpus {corpus} is not a folder")
        paths += sorted(corpus.glob("*.onnx"))
    if zoo_prior:
        paths += _export_zoo(spec)
    if not paths:
        raise InvalidInputError("no models to fit the prior to: give --corpus DIR or leave --zoo on")
    # the table is opened (a damaged or foreign one refused) before the models are read
    with open_table(table, readonly=False) as store:
        with err.status(f"reading {len(paths)} models for the prior ..."):
            prior = corpus_configs(model_keys(paths), wanted)
        empty = [k for k, v in prior.items() if not v]
        for k in empty:
            err.print(f"warning: no {k} kernel the sampler can build in the corpus; none sampled",
                      highlight=False)
        runner = get_runner(spec)
        logged = _progress_lines(spec.name, len(wanted) * n)
        def timer(todo) -> int:
            return profile_plan(ProfilePlan(todo, already=0), spec, runner, store,
                                on_kernel=logged).measured

        rep = run_sample(store, spec, timer, {k: v for k, v in prior.items() if v}, n, seed=seed,
                         adaptive=adaptive)
    for k in wanted:
        if k in rep.total:
            out.print(f"{k}: {rep.timed.get(k, 0)} sampled kernels timed now, {rep.total[k]} in the table "
                      f"(prior: {len(prior[k])} kernels of {len(paths)} models)")
    if rep.dropped:
        out.print(f"{rep.dropped} drawn configurations did not fuse as intended and were dropped")


@lut_app.command("train")
def lut_train(device: DeviceOpt = "cpu-ort", table: TableOpt = None, clock: _ClockOpt = "wall") -> None:
    """Fit the device's per-kind latency predictors (xgboost) on its table entries; stored in the table."""
    import math

    from hwlat.lut.learned import train
    from hwlat.lut.predict import check_clock

    check_clock(clock)
    with open_table(table, readonly=False) as store, err.status(f"training predictors for {device} ..."):
        reports = train(store, device, clock=clock)
    for r in reports:
        out.print(f"{r.kind}: {r.n_train} entries, cross-validated error ±{math.exp(r.cv_rmse) - 1:.0%} "
                  f"(RMSE of log latency {r.cv_rmse:.3f})")


def _format_of(path: Path, fmt: str | None) -> str:
    if str(path) == "-" and fmt is None:
        return "json"  # standard output/input: JSON unless --format says otherwise
    fmt = fmt or path.suffix.lstrip(".").lower()
    if fmt not in ("json", "csv", "ofa"):
        raise InvalidInputError(f"format '{fmt}': use --format json, csv or ofa")
    return fmt


def _ofa_device(device: str | None) -> str:
    if not device:
        raise InvalidInputError("--format ofa needs --device NAME: the device the OFA tables were measured on")
    return device


@lut_app.command("export")
def lut_export(path: Annotated[Path, typer.Argument(help="file to write; - for standard output")],
               fmt: Annotated[str | None, typer.Option("--format", help="json, csv or ofa (default: from suffix; json for -)")] = None,
               device: Annotated[str | None, typer.Option("--device", "-d", help="only this device")] = None,
               table: TableOpt = None) -> None:
    """Write the table (entries, their CPU times, kernels' work, calibration) to JSON, CSV, or OFA's yaml tables
    (a folder, one file per resolution). A symlink is written through; a device or FIFO is
    written into, never replaced."""
    from hwlat.lut import export_csv, export_json
    from hwlat.lut.io import STDOUT
    from hwlat.lut.ofa import export_ofa_dir

    fmt = _format_of(path, fmt)
    to_stdout = str(path) == STDOUT or _is_stdout(path)
    if to_stdout and fmt == "ofa":
        raise InvalidInputError("--format ofa writes a folder of yaml files; give a folder, not -")
    where = "standard output" if str(path) == STDOUT else str(path)
    if not to_stdout and path.is_symlink():
        where = f"{path} (a symlink: written through to {path.resolve()})"
    with open_table(table, readonly=True) as store:
        if fmt == "ofa":
            n = export_ofa_dir(store, path, _ofa_device(device))
        else:
            n = (export_json if fmt == "json" else export_csv)(store, path, device)
    # the data may be on stdout: what was done goes to stderr then
    (err if to_stdout else out).print(f"wrote {n} entries to {where}", highlight=False, markup=False)


def _is_stdout(path: Path) -> bool:
    """`path` is where standard output goes (/dev/stdout, /proc/self/fd/1, the tty it is)."""
    import os

    try:
        return os.path.samestat(os.stat(path), os.fstat(1))
    except (OSError, ValueError):
        return False


@lut_app.command("import")
def lut_import(path: Annotated[Path, typer.Argument(help="file to read; - for standard input")],
               fmt: Annotated[str | None, typer.Option("--format", help="json, csv or ofa (default: from suffix; json for -)")] = None,
               device: Annotated[str | None, typer.Option("--device", "-d", help="with --format ofa: the device to file them under")] = None,
               table: TableOpt = None) -> None:
    """Read entries from JSON, CSV or a folder of OFA yaml tables into the table (all or nothing)."""
    from hwlat.lut import import_csv, import_json
    from hwlat.lut.ofa import import_ofa_dir

    fmt = _format_of(path, fmt)
    if fmt == "ofa":
        if not path.is_dir():
            raise InvalidInputError(f"{path}: not a folder of OFA <R>_lookup_table.yaml files")
        with open_table(table, readonly=False) as store:
            n = import_ofa_dir(store, path, _ofa_device(device))
        out.print(f"imported {n} entries into {store.path}")
        return
    if str(path) != "-" and not path.exists():
        raise InvalidInputError(f"{path}: no such file")
    with open_table(table, readonly=False) as store:
        n = (import_json if fmt == "json" else import_csv)(store, path)
    out.print(f"imported {n} entries into {store.path}")


@lut_app.command("fit")
def lut_fit(
    space: Annotated[str, typer.Option(help="search space of the measured models: nb201; "
                                       "ofa-mbv3 with a multi-device prior")],
    measurements: Annotated[Path | None, typer.Option(
        help="CSV with columns arch,latency_ms")] = None,
    device: Annotated[str | None, typer.Option("--device", "-d", help="name of the new device")] = None,
    reference_device: Annotated[str, typer.Option(
        help="the prior: a device with a profiled table, or a roofline device")] = "cpu-ort",
    zero_work: Annotated[bool, typer.Option(
        metavar="",
        help="nb201: the device ran exports that keep `none` edges' zeros (e.g. HW-NAS-Bench's): "
             "also count ops on zero inputs, which hwlat's export folds away")] = False,
    prior_devices: Annotated[Path | None, typer.Option(
        help="a multi-device prior instead of --reference-device: CSV with an arch column and "
             "one latency column (ms) per prior device: nb201, every cell once; ofa-mbv3, a "
             "sample of archs in one-line form (r224-k35.735.3573.35.735-e46.634.6343.34.463)")] = None,
    stored_prior: Annotated[bool, typer.Option(
        "--stored-prior", help="use the prior stored in the table (`hwlat lut prior import`)")] = False,
    hw_column: Annotated[bool, typer.Option(
        help="with a multi-device prior: also combine hwlat's roofline-sd855 latency of each "
             "cell's kernels")] = True,
    propose: Annotated[int | None, typer.Option(
        help="print N architectures to measure on the new device (needs a multi-device prior) "
             "and fit nothing")] = None,
    table: TableOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fit a table for a new device from whole-model measurements (few-shot), or --propose which
    models to measure."""
    from hwlat.lut.fewshot import fit_device_table, read_measurements, reference_from_store
    from hwlat.nas import SPACES, get_space
    from hwlat.nas.nb201_lut import nb201_all_keys, nb201_fit_inputs
    from hwlat.nas.spaces import parse_nb201

    if prior_devices is not None and stored_prior:
        raise InvalidInputError("give --prior-devices FILE.csv or --stored-prior, not both")
    multi = prior_devices is not None or stored_prior
    if not get_space(space).fits and not (multi and space in _PRIOR_SPACES):
        raise InvalidInputError(
            f"space '{space}' has no one-line architecture strings; use: "
            f"{', '.join(n for n, s in SPACES.items() if s.fits)}"
            + (f" (or {space} with a multi-device prior: --prior-devices FILE.csv)"
               if space in _PRIOR_SPACES else ""))
    if propose is not None:
        if not multi:
            raise InvalidInputError("--propose needs a multi-device prior: --prior-devices "
                                    "FILE.csv or --stored-prior")
        if measurements is not None:
            raise InvalidInputError("--propose chooses what to measure: it takes no --measurements")
    elif measurements is None or device is None:
        raise InvalidInputError("lut fit needs --measurements M.csv and --device NAME (or "
                                "--propose N)")
    if multi and zero_work:
        raise InvalidInputError("--zero-work is for a single reference device; a multi-device "
                                "prior already holds what the devices ran")
    if multi:
        from hwlat.lut.prior import stored_prior as read_stored
        from hwlat.lut.prior import write_prior_fit

        read_prior, check_arch, fit_prior, propose_archs = _prior_functions(space)
        measured = read_measurements(measurements, check_arch) if propose is None else {}
        prior = read_prior(prior_devices) if prior_devices is not None else None
        if propose is not None:
            if prior is None:
                with open_table(table, readonly=True) as store:
                    prior = read_stored(store, space)
            lines = ["index,arch", *(f"{i},{a}" for i, a in enumerate(propose_archs(prior, propose, hw_column=hw_column)))]
            sys.stdout.write("\n".join(lines) + "\n")
            return
        if prior is None:
            with open_table(table, readonly=True) as store:
                prior = read_stored(store, space)
        fit = fit_prior(prior, measured, hw_column=hw_column)  # before the table is opened to write
        with open_table(table, readonly=False) as store:
            write_prior_fit(store, device, fit, prior)
            path = store.path
        out.print(f"fitted a prior model for '{device}' into {path} from {fit.n_models} models "
                  f"(prior of {len(prior.devices)} devices, {prior.digest()[:12]})")
        out.print(fit.describe(), markup=False)
        return
    measured = read_measurements(measurements, parse_nb201)
    with open_table(table, readonly=False) as store:
        if _is_analytic(reference_device):  # an analytic prior: nothing profiled needed
            from hwlat.analytic.roofline import roofline_reference

            reference = roofline_reference(reference_device, nb201_all_keys())
        else:
            reference = reference_from_store(store, reference_device)
        arch_kernels, reference, groups = nb201_fit_inputs(measured, reference, zero_work)
        fit = fit_device_table(store, device, reference_device, measured, arch_kernels, reference,
                               groups)
        path = store.path
    if as_json:
        print(json.dumps({
            "device": device, "reference_device": reference_device, "table": str(path),
            "entries": len(fit.table), "models": fit.n_models, "group_scale": fit.group_scale,
            "per_kernel_ms": fit.per_kernel_ms, "per_gmac_ms": fit.per_gmac_ms,
            "per_mb_ms": fit.per_mb_ms,
            # a dropped term (an infinite penalty) is null: JSON has no infinity
            "penalties": dict(zip(("group_scales", "work_terms", "per_key"),
                                  (None if math.isinf(p) else p for p in fit.penalties), strict=True)),
            "cv_error": fit.cv_error, "clipped": fit.clipped}, indent=1))
        return
    out.print(f"fitted {len(fit.table)} entries for '{device}' into {path} from {fit.n_models} "
              f"models (reference '{reference_device}')")
    out.print(fit.describe(), markup=False)


prior_app = typer.Typer(help="Whole-model latencies of a search space on many devices: the "
                        "prior of `hwlat lut fit --stored-prior`.", no_args_is_help=True)
lut_app.add_typer(prior_app, name="prior")


@prior_app.command("import")
def lut_prior_import(
    path: Annotated[Path, typer.Argument(help="CSV: arch column, one latency column (ms) per device")],
    space: Annotated[str, typer.Option(help="search space of the archs: nb201 (every cell), "
                                       "ofa-mbv3 (a sample, one-line forms)")],
    table: TableOpt = None,
) -> None:
    """Store a multi-device prior in the table (every cell of the space once, positive ms)."""
    from hwlat.lut.prior import store_prior
    from hwlat.nas import get_space

    get_space(space)  # an unknown space: named with the known ones
    if space not in _PRIOR_SPACES:
        raise InvalidInputError(f"space '{space}': a prior is read for {', '.join(_PRIOR_SPACES)}")
    prior = _prior_functions(space)[0](path)
    with open_table(table, readonly=False) as store:
        digest = store_prior(store, prior)
        where = store.path
    out.print(f"stored the {space} prior of {len(prior.devices)} devices "
              f"({', '.join(prior.devices)}) as {digest[:12]} in {where}", markup=False)


_PRIOR_SPACES = ("nb201", "ofa-mbv3")  # spaces a multi-device prior is read for


def _prior_functions(space: str):
    """(read the prior CSV, check a measured arch, fit, propose) of a space with priors."""
    if space == "ofa-mbv3":
        from hwlat.nas.ofa_prior import (
            ofa_prior_fit,
            ofa_propose,
            parse_ofa_arch_text,
            read_ofa_prior,
        )

        return read_ofa_prior, parse_ofa_arch_text, ofa_prior_fit, ofa_propose
    from hwlat.nas.nb201_prior import nb201_prior_fit, nb201_propose, read_nb201_prior
    from hwlat.nas.spaces import parse_nb201

    return read_nb201_prior, parse_nb201, nb201_prior_fit, nb201_propose


def _is_analytic(name: str) -> bool:
    from hwlat.devices import list_devices

    return any(d.name == name and d.prediction_route == "analytic" for d in list_devices())
