"""hwlat's typed errors: one line for the terminal, the backend's exception kept whole."""

from __future__ import annotations

import os

import pytest

from hwlat.devices import list_devices, load_device
from hwlat.errors import BackendError, HwlatError, InvalidInputError, one_line


def test_one_line_joins_whitespace_and_cuts_with_an_ellipsis():
    assert one_line(ValueError("a\n  b\tc")) == "a b c"
    assert one_line(KeyError()) == "KeyError"  # no message: its type
    long = ValueError("x" * 500)
    assert one_line(long) == "x" * 297 + "..." and len(one_line(long, 200)) == 200
    assert one_line(long, None) == "x" * 500


def test_backend_error_keeps_its_cause():
    def fail():
        try:
            raise RuntimeError("deep\nfailure " + "y" * 600)
        except RuntimeError as e:
            raise BackendError("TVM cannot build the model", e, " (a hint)") from e

    with pytest.raises(BackendError) as info:
        fail()
    e = info.value
    assert isinstance(e, HwlatError) and isinstance(e.__cause__, RuntimeError)
    assert e.cause is e.__cause__ and "y" * 600 in str(e)  # whole, on one line
    assert "\n" not in str(e)
    line = e.line()
    assert line.startswith("TVM cannot build the model: deep failure y") and line.endswith("... (a hint)")
    assert len(line) == len("TVM cannot build the model: ") + 300 + len(" (a hint)")
    assert InvalidInputError("plain").line() == "plain"


def test_cli_prints_one_line_and_the_traceback_only_with_hwlat_debug(hwlat_cli):
    quiet = hwlat_cli("predict", "missing.onnx", "--device", "nosuch")
    assert quiet.returncode == 2 and quiet.stderr.startswith("error: unknown device 'nosuch'")
    assert len(quiet.stderr.strip().splitlines()) == 1
    loud = hwlat_cli("predict", "missing.onnx", "--device", "nosuch",
                     env={**os.environ, "HWLAT_DEBUG": "1"})
    assert loud.returncode == 2 and loud.stderr.startswith(quiet.stderr.strip())
    assert "Traceback (most recent call last)" in loud.stderr and "load_device" in loud.stderr


def test_each_device_names_its_prediction_route():
    routes = {d.name: d.prediction_route for d in list_devices()}
    assert routes["neuromorphic-45nm"] == "spikes"
    assert routes["roofline-sd855"] == routes["roofline-h100"] == "analytic"
    assert routes["cpu-ort"] == routes["cpu-tvm"] == routes["cuda-gpu"] == "table"
    assert load_device("cuda-gpu").timed_over_rpc and not load_device("cpu-ort").timed_over_rpc
