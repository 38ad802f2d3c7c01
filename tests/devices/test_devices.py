"""Device files: the shipped ones, refused ones, and the measurement statistics."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hwlat.devices import list_devices, load_device
from hwlat.devices.measure import Timing, measure
from hwlat.devices.spec import MeasureSpec, parse_device
from hwlat.errors import InvalidInputError


def test_shipped_devices_parse():
    names = [d.name for d in list_devices()]
    assert names == ["arm64-mobile", "cpu-ort", "cpu-tvm-rpc", "cpu-tvm-tuned", "cpu-tvm", "cuda-gpu",
                     "neuromorphic-45nm", "roofline-h100", "roofline-sd855"]
    tvm = load_device("cpu-tvm")
    assert tvm.runtime == "tvm" and tvm.target == {"kind": "llvm", "mcpu": "host"} and tvm.threads == 1
    # every device names a runner outside this package, by import path
    assert all(d.runner.startswith(("hwlat.runners.", "hwlat.analytic.")) for d in list_devices())


def test_the_folders_lint_config_is_not_a_device(tmp_path):
    (tmp_path / "ruff.toml").write_text('extend = "../pyproject.toml"\n')
    (tmp_path / "x.toml").write_text('name="x"\ndescription="d"\nruntime="r"\nrunner="a:b"\n')
    assert [d.name for d in list_devices(tmp_path)] == ["x"]


@pytest.mark.parametrize("text, match", [
    ('name = "x"\n', "'description' must be a non-empty string"),
    ('name="x"\ndescription="d"\nruntime="r"\nrunner="a:b"\ncolour="red"\n', "unknown keys colour"),
    ('name="x"\ndescription="d"\nruntime="r"\nrunner="a:b"\nthreads=0\n', "'threads' must be a positive integer"),
    ('name="x"\ndescription="d"\nruntime="r"\nrunner="a:b"\n[measure]\nrepeats=1\n', "measure settings out of range"),
    ("name = [", "not a readable device file"),
    ('name="x"\ndescription="d"\nruntime="r"\nrunner="a:b"\ntuning_db=3\n',
     "'tuning_db' must be a directory path"),
])
def test_bad_device_files_are_named(tmp_path, text, match):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(InvalidInputError, match=match):
        parse_device(p)


def test_spread_too_wide_is_measured_again_and_the_tightest_kept():
    rounds = iter([[1.0, 5.0, 1.0, 9.0, 1.0, 7.0], [2.0, 2.1, 2.0, 1.9, 2.0, 2.0], [9.0] * 6])
    t = measure(lambda n: next(rounds), MeasureSpec(warmup=0, repeats=6, max_cv=0.1, max_rounds=3))
    assert t.rounds == 2 and t.median_ms == 2.0
    assert Timing((1.0, 2.0, 3.0, 4.0)).cv == pytest.approx((3.25 - 1.75) / 1.349 / 2.5)


def test_reading_device_files_imports_no_other_layer():
    code = ("import sys; from hwlat.devices import list_devices; from hwlat.devices.measure import measure; "
            "list_devices(); layers = ('hwlat.runners', 'hwlat.analytic', 'hwlat.lut', 'hwlat.graph', "
            "'hwlat.nas', 'hwlat.lowering', 'hwlat.kernels', 'tvm', 'torch', 'onnx', 'onnxruntime'); "
            "bad = sorted(m for m in sys.modules if m.startswith(layers)); assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    assert r.returncode == 0, r.stderr
