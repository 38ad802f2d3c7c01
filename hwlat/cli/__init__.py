"""The `hwlat` command: one subcommand per job; parses, calls the package, prints.

A HwlatError becomes one line on stderr and exit code 2; with HWLAT_DEBUG=1 the chained
traceback follows that line. The commands live by job in models, table, nas, compile and rpc;
what they print is formatted in render.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys
import traceback
from typing import Annotated

import typer

from hwlat.cli import compile as compile_cmds
from hwlat.cli import models, nas, options, rpc, table
from hwlat.errors import HwlatError, escape_line

app = typer.Typer(
    help="hwlat: hardware-aware compiler and latency estimator for neural networks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        from hwlat.version import __version__

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


def main(*, hard_exit: bool = False) -> None:
    """Run the CLI on sys.argv. A HwlatError is one `error:` line on stderr and exit code 2
    (SystemExit). With `hard_exit` (the `hwlat` command itself) the process ends right after that
    line, so no library's finalizer writes after it (TVM warns as its objects are destroyed);
    callers in a process of their own (tests, embedding programs) get SystemExit instead."""
    if debug_enabled():  # hwlat's own loggers (not the backends') on stderr
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        logging.getLogger("hwlat").addHandler(handler)
        logging.getLogger("hwlat").setLevel(logging.DEBUG)
    try:
        app()
    except HwlatError as e:
        line = f"error: {escape_line(e.line())}"
        if debug_enabled():  # the chained traceback after the line
            line += "\n" + "".join(traceback.format_exception(e)).rstrip()
        _exit_now(2, line, hard_exit)
    except KeyboardInterrupt:
        _exit_now(130, "interrupted", hard_exit)
    except OSError as e:  # a full disk or a closed pipe under stdout; any other is a bug
        if e.errno not in _OUTPUT_ERRNOS:
            raise
        _exit_now(2, f"error: cannot write the output: {escape_line(e.strerror or str(e))}", hard_exit)
    except SystemExit as e:
        if e.code not in (None, 0):
            raise
    try:
        sys.stdout.flush()
    except OSError as e:
        _exit_now(2, f"error: cannot write the output: {escape_line(e.strerror or str(e))}", hard_exit)


def entry() -> None:
    """The `hwlat` command (and `python -m hwlat.cli`)."""
    main(hard_exit=True)


_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EPIPE, errno.EIO}


def _exit_now(code: int, line: str, hard: bool) -> None:
    """One line on stderr and the exit code; `hard`: and nothing after it, no unflushed output,
    and no library's finalizer (TVM warns as its objects are destroyed) writing at exit."""
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    if hard:
        os._exit(code)
    raise SystemExit(code)


if __name__ == "__main__":
    entry()
