"""Running the `hwlat` command from tests: in a subprocess as a user runs it, or in process."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from hwlat.errors import HwlatError

ROOT = Path(__file__).resolve().parents[2]  # this checkout: subprocesses import its hwlat


def run_hwlat(*args, home=None, cwd=None, pythonpath=None, env=None,
              timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m hwlat.cli ARGS` with HWLAT_HOME=`home` (if given) and this checkout first on
    the path (after `pythonpath`, e.g. a folder with a --module factory)."""
    full = dict(os.environ if env is None else env)
    if home is not None:
        full["HWLAT_HOME"] = str(home)
    full["PYTHONPATH"] = os.pathsep.join(str(p) for p in (pythonpath, ROOT) if p)
    return subprocess.run([sys.executable, "-m", "hwlat.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=full, timeout=timeout)


@dataclass
class Result:
    exit_code: int
    output: str  # stdout and stderr, or the `error: ...` line
    stdout: str
    error: HwlatError | None = None


_runner = CliRunner()


def invoke_hwlat(*args) -> Result:
    """The command in process; a HwlatError is what `hwlat.cli.main` turns into one `error:` line
    and exit 2 (tests/test_cli.py checks that in a subprocess)."""
    from hwlat.cli import app

    r = _runner.invoke(app, [str(a) for a in args])
    if isinstance(r.exception, HwlatError):
        return Result(2, f"error: {r.exception.line()}", r.stdout, r.exception)
    return Result(r.exit_code, r.output, r.stdout)
