"""Model commands: `hwlat zoo`, `hwlat export`, `hwlat inspect`."""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from hwlat.cli.render import err, nbytes, num, out, sigs
from hwlat.errors import InvalidInputError


def zoo(
    corpus: Annotated[bool, typer.Option("--corpus", help="list the curated timm/torchvision corpus with families")] = False,
    as_json: Annotated[bool, typer.Option("--json", metavar="", help="print JSON")] = False,
) -> None:
    """List the built-in models (no downloads: weights are random, seeded); --corpus: the curated
    timm/torchvision models `hwlat export timm:NAME` / `torchvision:NAME` also takes."""
    if corpus:
        from hwlat.zoo.corpus import CORPUS

        if as_json:
            print(json.dumps([{"name": m.spec, "family": m.family} for m in CORPUS], indent=1))
            return
        table = Table("name", "family", title=f"hwlat corpus ({len(CORPUS)} models)")
        for m in CORPUS:
            table.add_row(m.spec, m.family)
        out.print(table)
        return
    from hwlat.zoo import list_models

    if as_json:
        print(json.dumps([{"name": n, "description": d} for n, d in list_models()], indent=1))
        return
    table = Table("name", "description", title="hwlat zoo")
    for name, desc in list_models():
        table.add_row(name, desc)
    out.print(table)



def export(
    name: Annotated[str | None, typer.Argument(help="built-in model (see `hwlat zoo`), or timm:NAME / torchvision:NAME")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="ONNX file to write")] = Path("model.onnx"),
    module: Annotated[str | None, typer.Option(help="pkg.mod:factory returning (model, example_input)")] = None,
    ofa_config: Annotated[Path | None, typer.Option(help="Once-for-All net config JSON")] = None,
    nb201: Annotated[str | None, typer.Option(help="NAS-Bench-201 cell string")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="batch size of the example input")] = 1,
    input_shape: Annotated[str | None, typer.Option(help="per-sample input shape, e.g. 3,160,160")] = None,
    opset: Annotated[int | None, typer.Option(min=7, help="ONNX opset (default: the exporter's)")] = None,
) -> None:
    """Export a model to ONNX, check it, and compare onnxruntime's output with torch's."""
    from hwlat.onnx_export import export as do_export

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
    from hwlat.zoo import corpus

    if corpus.is_corpus_spec(name):
        return corpus.build(name, batch_size=batch_size, input_shape=shape)
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


def inspect(
    model: Annotated[Path, typer.Argument(help="ONNX model")],
    as_json: Annotated[bool, typer.Option("--json", metavar="", help="print JSON instead of a table")] = False,
    device: Annotated[str | None, typer.Option(
        "--device", "-d", help="cut where this device's runtime draws kernel boundaries (its "
        "file's `fusion`; default: onnxruntime's and TVM's own)")] = None,
) -> None:
    """Show the kernels a model is cut into, with MACs, parameters and bytes moved."""
    from hwlat import api

    summary = api.inspect(model, device=device)
    if as_json:
        print(json.dumps(summary.to_json(), indent=1))
        return
    table = Table("#", "kind", "ops", "input", "output", "MACs", "params", "read", "written", "count",
                  title=f"{model.name}: {summary.totals()['kernels']} kernels from {summary.nodes} nodes")
    for i, r in enumerate(summary.rows):
        k = r.kernel.key
        table.add_row(
            str(i), k.kind.value, "+".join(k.ops), sigs(k.inputs), sigs(k.outputs),
            num(r.cost.macs), num(r.cost.params), nbytes(r.cost.bytes_read),
            nbytes(r.cost.bytes_written), str(r.count),
        )
    t = summary.totals()
    table.add_section()
    table.add_row("", "total", f"{t['unique_kernels']} unique", "", "", num(t["macs"]),
                  num(t["params"]), nbytes(t["bytes_read"]), nbytes(t["bytes_written"]),
                  str(t["kernels"]))
    out.print(table)

