"""A device file's `fusion`: the kernel boundaries of its runtime, validated, and passed by every
command that cuts a model for the device."""

from __future__ import annotations

import json

import pytest

from hwlat.devices import list_devices
from hwlat.devices.spec import FUSION_RULE_SETS, parse_device
from hwlat.errors import InvalidInputError
from tests.helpers.cli import invoke_hwlat, run_hwlat
from tests.helpers.mbconv_block import mobilenet_block

BASE = 'name="x"\ndescription="d"\nruntime="r"\nrunner="a:b"\n'
ROOFLINE = """name = "{name}"
description = "a roofline"
runtime = "roofline"
runner = "hwlat.analytic.roofline:RooflineRunner"
fusion = "{fusion}"

[target]
kind = "roofline"
peak_gflops = 10.0
bandwidth_gbs = 10.0
launch_us = 5.0
"""


def test_tvm_cpu_devices_cut_mobilenet_blocks_whole_and_the_others_do_not():
    fusion = {d.name: d.fusion for d in list_devices()}
    assert {n for n, f in fusion.items() if f == "tvm-cpu"} == {"cpu-tvm", "cpu-tvm-rpc",
                                                                 "cpu-tvm-tuned"}
    assert set(fusion.values()) <= set(FUSION_RULE_SETS)


def test_a_device_without_a_file_cuts_by_the_default_rules():
    from hwlat.devices.spec import fusion_of

    assert fusion_of("cpu-tvm") == "tvm-cpu" and fusion_of("cpu-ort") == "default"
    assert fusion_of("made-by-lut-fit") == "default"


@pytest.mark.parametrize("value", ['"fast"', "3", '""'])
def test_an_unknown_rule_set_is_refused_naming_the_known_ones(tmp_path, value):
    p = tmp_path / "bad.toml"
    p.write_text(BASE + f"fusion = {value}\n")
    with pytest.raises(InvalidInputError, match=r"'fusion' must name a rule set \(default, tvm-cpu\)"):
        parse_device(p)


def test_the_cli_refuses_it_in_one_line_with_exit_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(BASE + 'fusion = "fast"\n')
    r = run_hwlat("devices", "--device-file", bad, home=tmp_path)
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
    assert "'fusion' must name a rule set" in r.stderr and "Traceback" not in r.stderr


def test_predict_and_inspect_cut_where_the_device_does(tmp_path, hwlat_home):
    block = mobilenet_block(tmp_path)
    (hwlat_home / "devices").mkdir()
    for name, fusion in (("split", "default"), ("whole", "tvm-cpu")):
        (hwlat_home / "devices" / f"{name}.toml").write_text(ROOFLINE.format(name=name, fusion=fusion))
    rows = {}
    for name in ("split", "whole"):
        r = invoke_hwlat("predict", block, "--device", name, "--breakdown", "--json")
        assert r.exit_code == 0, r.output
        rows[name] = [row for row in json.loads(r.stdout)["kernels"] if row["kind"] == "conv"]
    assert len(rows["split"]) == 3 and len(rows["whole"]) == 1
    assert rows["whole"][0]["ops"] == ["Conv", "Clip", "Conv", "Clip", "Conv", "Add"]
    for device, want in ((None, 3), ("cpu-ort", 3), ("cpu-tvm", 1)):
        r = invoke_hwlat("inspect", block, "--json", *(("--device", device) if device else ()))
        assert r.exit_code == 0, r.output
        convs = [k for k in json.loads(r.stdout)["kernels"] if k["kind"] == "conv"]
        assert sum(k["count"] for k in convs) == want
