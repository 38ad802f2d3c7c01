"""Architecture-search commands: `hwlat nas predict` and `hwlat search`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from hwlat.cli.options import DeviceOpt, TableOpt, open_table
from hwlat.cli.render import out
from hwlat.errors import InvalidInputError

nas_app = typer.Typer(help="Latency inside architecture search.", no_args_is_help=True)
SPACES = ("ofa-mbv3", "proxyless-mobile", "nb201")  # hwlat.nas.SPACES, named without importing it


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
    as_json: Annotated[bool, typer.Option("--json", metavar="", help="print JSON")] = False,
) -> None:
    """Latency of architectures of a search space from the device's table: one OFA net config
    (OFA's rule), or every cell string of a CSV (printed as arch,latency_ms)."""
    from hwlat.nas import get_space

    if get_space(space).arch_input == "config":
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
    except (OSError, ValueError) as e:
        raise InvalidInputError(f"{config}: not a readable net config ({e})") from e
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


def _predict_archs(space: str, path: Path, device: str, table: Path | None, as_json: bool) -> None:
    from hwlat.nas import get_space
    from hwlat.nas.nb201_lut import read_archs

    archs = read_archs(path)
    with open_table(table, readonly=True) as store:
        lut = get_space(space).table(store, device)
        ms = lut.latency(lut.encode(archs))
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
    estimate: Annotated[bool, typer.Option(metavar="", help="estimate kernels the table lacks")] = False,
    table: TableOpt = None,
    as_json: Annotated[bool, typer.Option("--json", metavar="", help="print JSON")] = False,
) -> None:
    """Evolutionary search within a latency budget, in the space asked for; the objective is a
    proxy (most MACs)."""
    from hwlat.nas import get_space
    from hwlat.nas.search import run_search

    spec = get_space(space)
    with open_table(table, readonly=True) as store:
        lut = spec.table(store, device, estimate=estimate)
        result = run_search(lut, latency_ms, generations, seed)
    if as_json:
        print(json.dumps(result.to_json(), indent=1))
        return
    t = Table("latency ms", "MMACs", "M params", "arch",
              title=f"{space}: Pareto front within {latency_ms:g} ms on {device}")
    for c in result.front:
        t.add_row(f"{c.latency_ms:.4f}", f"{c.macs / 1e6:.1f}", f"{c.params / 1e6:.2f}",
                  lut.describe(c.arch))
    out.print(t)
    b = result.best
    out.print(f"best: {b.latency_ms:.4f} ms, {b.macs / 1e6:.1f} M MACs, {b.params / 1e6:.2f} M params")
    out.print(json.dumps(b.arch), highlight=False)
    out.print(f"objective: {result.objective}; {result.evaluated} candidates evaluated in {result.wall_s:.2f} s")

