"""Fixtures every test folder shares; helpers to import live in tests/helpers."""

from __future__ import annotations

import pytest

from tests.helpers.cli import invoke_hwlat, run_hwlat

# fixtures of a made-up multi-device NB201 prior (archs, prior)
pytest_plugins = ["tests.helpers.prior"]


@pytest.fixture
def hwlat_home(tmp_path, monkeypatch):
    """A fresh $HWLAT_HOME (tables, zoo exports, tuning databases) for this test."""
    home = tmp_path / "hwlat-home"
    home.mkdir()
    monkeypatch.setenv("HWLAT_HOME", str(home))
    return home


@pytest.fixture
def hwlat_cli(tmp_path):
    """`hwlat ...` in a subprocess with this test's own $HWLAT_HOME."""
    home = tmp_path / "hwlat-home"
    home.mkdir(exist_ok=True)
    return lambda *args, **kw: run_hwlat(*args, **{"home": home, **kw})


@pytest.fixture
def hwlat_invoke(hwlat_home):
    """`hwlat ...` in process (typer's CliRunner) with this test's own $HWLAT_HOME."""
    return invoke_hwlat
