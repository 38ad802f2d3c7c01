"""The `hwlat` command: one subcommand per job; parses, calls the package, prints.

A HwlatError becomes one line on stderr and exit code 2; with HWLAT_DEBUG=1 the chained
traceback follows that line. The commands live by job in models, table, nas, compile and rpc;
what they print is formatted in render.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from typing import Annotated

import typer

from hwlat.cli import compile as compile_cmds
from hwlat.cli import models, nas, options, rpc, table
from hwlat.cli.render import err
from hwlat.errors import HwlatError

app = typer.Typer(
    help="hwlat: hardware-aware compiler and latency estimator for neural networks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        from hwlat import __version__

        print(f"hwlat {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", metavar="", is_eager=True, callback=_version,
                                                help="print hwlat's version and exit")] = False) -> None:
    options.reset()


# registration order is the order `hwlat --help` lists them
app.command()(models.zoo)
app.command()(models.export)
app.command()(models.inspect)
app.command()(table.devices)
app.command()(table.profile)
app.command()(table.predict)
app.command()(table.calibrate)
app.command()(table.validate)
app.add_typer(table.lut_app, name="lut")
app.add_typer(nas.nas_app, name="nas")
app.command()(nas.search)
app.command("compile")(compile_cmds.compile_)
app.command()(compile_cmds.run)
app.command()(compile_cmds.bench)
app.add_typer(rpc.rpc_app, name="rpc")


def debug_enabled() -> bool:
    """HWLAT_DEBUG=1 (any value but empty or 0): hwlat's debug log, and the traceback behind an
    error line."""
    return os.environ.get("HWLAT_DEBUG", "") not in ("", "0")


def main() -> None:
    if debug_enabled():  # hwlat's own loggers (not the backends') on stderr
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        logging.getLogger("hwlat").addHandler(handler)
        logging.getLogger("hwlat").setLevel(logging.DEBUG)
    try:
        app()
    except HwlatError as e:
        err.print(f"error: {e.line()}", highlight=False, markup=False, soft_wrap=True)
        if debug_enabled():
            traceback.print_exception(e, file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
