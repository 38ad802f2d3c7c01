"""Devices beyond the shipped files: table-only devices (from `lut fit` / `lut import`) answer
every query and are listed; user device files from $HWLAT_HOME/devices and --device-file;
analytic devices predict with no table at all."""

from __future__ import annotations

import json

import pytest

from tests.helpers.cli import invoke_hwlat
from tests.helpers.tables import conv_model, profiled_table

ROOFLINE = """name = "{name}"
description = "my board, roofline"
runtime = "roofline"
runner = "hwlat.analytic.roofline:RooflineRunner"

[target]
kind = "roofline"
peak_gflops = 10.0
bandwidth_gbs = 5.0
"""


@pytest.fixture
def model(tmp_path):
    return conv_model(tmp_path / "m.onnx")


def test_table_only_device_is_listed_and_predicts(model, tmp_path, hwlat_home):
    table = hwlat_home / "tables.sqlite"
    profiled_table(table, model, device="pixel3", leave_out=0, calibrate=False)
    r = invoke_hwlat("devices", "--json")
    assert r.exit_code == 0, r.output
    rows = {d["name"]: d for d in json.loads(r.stdout)}
    assert rows["pixel3"]["table_only"] and rows["pixel3"]["table_entries"] == 4
    assert not rows["cpu-ort"]["table_only"]
    r = invoke_hwlat("predict", model, "-d", "pixel3")
    assert r.exit_code == 0, r.output
    assert "on pixel3:" in r.output and "0.0% of it estimated" in r.output
    r = invoke_hwlat("profile", model, "--device", "pixel3")
    assert r.exit_code == 2 and "lives only in the table" in r.output
    assert "hwlat profile" not in r.output


def test_unknown_device_suggests_adding_one(model, hwlat_home):
    r = invoke_hwlat("predict", model, "--device", "nope")
    assert r.exit_code == 2
    assert "unknown device 'nope'" in r.output and "--device-file" in r.output


def test_device_files_from_home_and_flag(model, tmp_path, hwlat_home):
    (hwlat_home / "devices").mkdir()
    (hwlat_home / "devices" / "board.toml").write_text(ROOFLINE.format(name="my-board"))
    other = tmp_path / "other.toml"
    other.write_text(ROOFLINE.format(name="other-board").replace("10.0", "1.0"))
    r = invoke_hwlat("devices", "--json")
    assert "my-board" in {d["name"] for d in json.loads(r.stdout)}
    r = invoke_hwlat("predict", model, "--device", "my-board", "--json")
    assert r.exit_code == 0, r.output
    fast = json.loads(r.stdout)["latency_ms"]
    r = invoke_hwlat("predict", model, "--device-file", other, "--json")  # --device: the file's
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["device"] == "other-board" and doc["latency_ms"] > fast
    r = invoke_hwlat("predict", model, "--device", "other-board")  # only for that command
    assert r.exit_code == 2 and "unknown device" in r.output
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nspeed = 3\n')
    r = invoke_hwlat("predict", model, "--device-file", bad)
    assert r.exit_code == 2 and "unknown keys speed" in r.output


@pytest.mark.parametrize("device", ["roofline-sd855", "arm64-mobile", "roofline-h100"])
def test_analytic_devices_predict_on_a_fresh_machine(model, hwlat_home, device):
    assert not (hwlat_home / "tables.sqlite").exists()
    r = invoke_hwlat("predict", model, "--device", device, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["latency_ms"] > 0 and doc["estimated_share"] == 1.0
    assert not (hwlat_home / "tables.sqlite").exists()
