"""Architecture-search commands: `hwlat nas predict` and `hwlat search`."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from hwlat.cli.options import DeviceFileOpt, DeviceOpt, JsonOpt, TableOpt, open_table, query_device
from hwlat.cli.render import err, out
from hwlat.errors import InvalidInputError

nas_app = typer.Typer(help="Latency inside architecture search.", no_args_is_help=True)
SPACES = ("ofa-mbv3", "proxyless-mobile", "nb201")  # hwlat.nas.SPACES, named without importing it
EstimateOpt = Annotated[bool, typer.Option(
    "--estimate", metavar="", help="estimate the kernels the device's table lacks from its measured ones")]


def _short(key: str, limit: int = 100) -> str:
    return key if len(key) <= limit else key[:limit - 3] + "..."


def _refill_hint(device: str, table: Path | None) -> str:
    spec = query_device(device, table)
    if spec.runtime == "table":
        return "refit the device (`hwlat lut fit`) or import its missing entries (`hwlat lut import`)"
    return f"profile nets that contain them (`hwlat profile MODEL.onnx --device {device}`)"


@contextmanager
def _in_cli_words(space: str, device: str, table: Path | None, estimate_flag: bool):
    """A table that lacks keys, said with the CLI's flags and one key (the rest counted)."""
    from hwlat.nas.nb201_lut import Nb201TableIncomplete
    from hwlat.nas.ofa_lut import OfaTableIncomplete

    try:
        yield
    except (OfaTableIncomplete, Nb201TableIncomplete) as e:
        missing = list(e.missing)
        total = getattr(e, "total", None)
        of = f" of the {total}" if total else ""
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        way = _refill_hint(device, table)
        est = ", or pass --estimate to estimate them from its measured kernels" if estimate_flag else ""
        raise InvalidInputError(f"device '{device}' lacks {len(missing)}{of} kernel keys {space} "
                                f"needs ({_short(missing[0])!r}{more}); {way}{est}") from e


@nas_app.command("predict")
def nas_predict(
    space: Annotated[str, typer.Option(help=f"search space: {', '.join(SPACES)}")],
    config: Annotated[Path | None, typer.Option(
        help="ofa-mbv3: OFA net config JSON ({'image_size': R, 'net': ...}); proxyless-mobile: "
             "{'ops': [21 of k3_e3..k7_e6, zero], 'r': 224}")] = None,
    archs: Annotated[Path | None, typer.Option(
        help="nb201: CSV with an arch column (or one cell string per line); ofa-mbv3: one-line "
             "archs, for a device fitted from a multi-device prior")] = None,
    device: DeviceOpt = "cpu-ort",
    table: TableOpt = None,
    as_json: JsonOpt = False,
    estimate: EstimateOpt = False,
    device_file: DeviceFileOpt = None,
) -> None:
    """Latency of architectures of a search space from the device's table: one OFA net config
    (OFA's rule), or every cell string of a CSV (printed as arch,latency_ms)."""
    from hwlat.nas import get_space

    with _in_cli_words(space, device, table, estimate_flag=space != "ofa-mbv3"):
        if space == "ofa-mbv3" and archs is not None and config is None \
                and _is_prior_fit(device, table):
            # one-line OFA archs: a device fitted from a multi-device prior (`lut fit`)
            _predict_archs(space, archs, device, table, as_json, estimate)
        elif get_space(space).arch_input == "config":
            if config is None or archs is not None:
                raise InvalidInputError(f"space '{space}' takes one --config NET.json (not --archs)")
            if estimate and space == "ofa-mbv3":
                raise InvalidInputError("--estimate: OFA's rule sums its own yaml tables' entries; "
                                        "nothing is estimated there")
            _predict_config(space, config, device, table, as_json, estimate)
        else:
            if archs is None or config is not None:
                raise InvalidInputError(f"space '{space}' takes --archs A.csv (not --config)")
            _predict_archs(space, archs, device, table, as_json, estimate)


def _is_prior_fit(device: str, table: Path | None) -> bool:
    """Whether the device's table is a model fitted from a multi-device prior."""
    from hwlat.errors import HwlatError
    from hwlat.lut.prior import read_prior_fit

    try:
        with open_table(table, readonly=True) as store:
            return read_prior_fit(store, device) is not None
    except HwlatError:  # no table, or a damaged fit: the usual route says what is wrong
        return False


def _predict_config(space: str, config: Path, device: str, table: Path | None,
                    as_json: bool, estimate: bool = False) -> None:
    from hwlat.lut.ofa import predict_ofa
    from hwlat.nas.proxyless import proxyless_latency

    try:
        cfg = json.loads(config.read_text())
    except (OSError, ValueError, RecursionError) as e:  # RecursionError: nested too deeply
        raise InvalidInputError(f"{config}: not a readable net config ({e or 'nested too deeply'})") from e
    if space == "proxyless-mobile" and estimate:  # the dense table estimates what is missing
        from hwlat.nas import get_space

        with open_table(table, readonly=True) as store:
            lut = get_space(space).table(store, device, estimate=True)
            total = float(lut.latency(lut.encode([cfg]))[0])
        _say_estimated(lut)
        if as_json:
            print(json.dumps({"latency_ms": total, "estimated_keys": lut.estimated}, indent=1))
        else:
            out.print(f"{config.name} on {device}: {total:.6f} ms")
        return
    if space == "proxyless-mobile":
        with open_table(table, readonly=True) as store:
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
    with open_table(table, readonly=True) as store:
        pred = predict_ofa(store, device, cfg)
    if as_json:
        print(json.dumps(pred.to_json(), indent=1))
        return
    t = Table("block", "ms", title=f"{config.name} on {device} (resolution {pred.image_size})")
    for row in pred.rows:
        t.add_row(row.key, f"{row.ms:.6f}")
    out.print(t)
    out.print(f"{config.name} on {device}: {pred.latency_ms:.6f} ms")


def _say_estimated(lut) -> None:
    """How many of the kernel keys used were estimated, on stderr (stdout may be a CSV)."""
    n = getattr(lut, "estimated", 0)
    if n:
        total = getattr(lut, "keys_total", None)
        of = f" of {total:,}" if total else ""
        err.print(f"warning: {n:,}{of} kernel keys were estimated (--estimate): the device's table "
                  "lacks them", highlight=False, markup=False)


def _predict_archs(space: str, path: Path, device: str, table: Path | None, as_json: bool,
                   estimate: bool = False) -> None:
    from hwlat.lut.prior import read_prior_fit
    from hwlat.nas import get_space
    from hwlat.nas.nb201_lut import read_archs

    if space == "ofa-mbv3":
        from hwlat.nas.ofa_prior import parse_ofa_arch_text

        archs = read_archs(path, parse_ofa_arch_text)
    else:
        archs = read_archs(path)
    with open_table(table, readonly=True) as store:
        prior_fit = read_prior_fit(store, device)
        if prior_fit is None:  # per-kernel entries (profiled, or fitted from one reference)
            lut = get_space(space).table(store, device, estimate=estimate)
            ms = lut.latency(lut.encode(archs))
    if prior_fit is not None:  # a fitted combination of prior devices, not per-kernel entries
        if prior_fit[0].space != space:
            raise InvalidInputError(f"device '{device}' was fitted for space "
                                    f"'{prior_fit[0].space}', not {space}")
        if space == "ofa-mbv3":
            from hwlat.nas.ofa_prior import ofa_predict_prior as predict_prior
        else:
            from hwlat.nas.nb201_prior import nb201_predict_prior as predict_prior

        ms = predict_prior(*prior_fit, archs)
    else:
        _say_estimated(lut)
    if as_json:
        print(json.dumps([{"arch": a, "latency_ms": float(v)} for a, v in zip(archs, ms, strict=True)],
                         indent=1))
        return
    lines = ["arch,latency_ms", *(f"{a},{v:.6g}" for a, v in zip(archs, ms, strict=True))]
    sys.stdout.write("\n".join(lines) + "\n")


def search(
    latency_ms: Annotated[float, typer.Option("--latency-ms", help="latency budget (ms)")],
    space: Annotated[str, typer.Option(help=f"search space: {', '.join(SPACES)}")] = "ofa-mbv3",
    device: DeviceOpt = "cpu-ort",
    generations: Annotated[int, typer.Option(help="generations after the random population of 100 (OFA uses 500)")] = 100,
    seed: int = 0,
    estimate: EstimateOpt = False,
    top: Annotated[int, typer.Option("--top", min=1, help="rows of the Pareto front to print, best first (JSON: all)")] = 10,
    table: TableOpt = None,
    as_json: JsonOpt = False,
    device_file: DeviceFileOpt = None,
) -> None:
    """Evolutionary search within a latency budget, in the space asked for; the objective is a
    proxy (most MACs)."""
    import numpy as np

    from hwlat.nas import get_space
    from hwlat.nas.search import run_search

    spec = get_space(space)
    with _in_cli_words(space, device, table, estimate_flag=True), \
            open_table(table, readonly=True) as store:
        lut = spec.table(store, device, estimate=estimate)
        result = run_search(lut, latency_ms, generations, seed)
        n_estimated = getattr(lut, "estimated", 0)
        # the budget against the space's slowest nets: the largest of random samples
        largest = float(np.max(lut.latency(lut.sample(LARGEST_SAMPLES, np.random.default_rng(seed)))))
    notes = []
    if n_estimated:
        total = getattr(lut, "keys_total", None)
        of = f" of {total:,}" if total else ""
        notes.append(f"{n_estimated:,}{of} kernel keys were estimated (--estimate): the device's "
                     "table lacks them, so these latencies are mostly estimates")
    if latency_ms > largest:
        notes.append(f"the budget {latency_ms:g} ms is above the slowest of {LARGEST_SAMPLES:,} "
                     f"random nets of the space ({largest:.4f} ms): it constrains nothing (or "
                     "hardly anything), and the search just maximizes the objective")
    if as_json:
        doc = result.to_json()
        doc["notes"] = notes
        doc["estimated_keys"] = n_estimated
        print(json.dumps(doc, indent=1))
        return
    front = list(result.front)[::-1][:top]  # best (highest objective) first
    t = Table("latency ms", "MMACs", "M params", "arch",
              title=f"{space}: Pareto front within {latency_ms:g} ms on {device} "
                    f"(best {len(front)} of {len(result.front)}; --top N)")
    for c in front:
        t.add_row(f"{c.latency_ms:.4f}", f"{c.macs / 1e6:.1f}", f"{c.params / 1e6:.2f}",
                  lut.describe(c.arch))
    out.print(t)
    b = result.best
    out.print(f"best: {b.latency_ms:.4f} ms, {b.macs / 1e6:.1f} M MACs, {b.params / 1e6:.2f} M params")
    out.print(json.dumps(b.arch), highlight=False)
    out.print(f"objective: {result.objective}; {result.evaluated} candidates evaluated in {result.wall_s:.2f} s")
    for n in notes:
        err.print(f"warning: {n}", highlight=False, markup=False)


LARGEST_SAMPLES = 300  # random nets the budget is compared with
