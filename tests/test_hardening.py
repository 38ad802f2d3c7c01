"""Input hwlat already accepted, and hostile in ways the file formats allow: every case ends in
one `error:` line (exit code 2) or a typed HwlatError, never a traceback or a hang."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from hwlat.errors import HwlatError, InvalidInputError, escape_line
from hwlat.lut import TableError, TableStore

REPO = Path(__file__).resolve().parents[1]


def hwlat(*args, home, stdout=subprocess.PIPE):
    env = dict(os.environ, HWLAT_HOME=str(home), PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "hwlat.cli", *args], stdout=stdout,
                          stderr=subprocess.PIPE, text=True, env=env, timeout=300)


def one_error_line(r) -> str:
    lines = r.stderr.splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


# --- messages

def test_untrusted_text_cannot_split_or_inject_an_error_line(tmp_path):
    line = one_error_line(hwlat("inspect", "m\nerror: all is well\x1b[2J.onnx", home=tmp_path))
    assert "m\\nerror: all is well\\x1b[2J.onnx" in line


def test_one_line_escapes_control_characters_and_bounds_length():
    assert escape_line("a\nb\r\tc\x00") == "a\\nb\\r\\tc\\x00"
    assert escape_line("é ü ∑") == "é ü ∑"
    assert len(escape_line("x" * 10_000)) == 2000


def test_a_full_disk_under_stdout_is_escape_line(tmp_path):
    with open("/dev/full", "w") as full:
        line = one_error_line(hwlat("zoo", home=tmp_path, stdout=full))
    assert "No space left on device" in line


def test_an_hwlat_home_that_cannot_be_created_is_escape_line(tmp_path):
    (tmp_path / "file").write_text("")
    home = tmp_path / "file" / "hwlat"
    with pytest.raises(TableError, match="cannot create the folder"):
        TableStore(home / "tables.sqlite")
    rows = tmp_path / "in.csv"
    rows.write_text("device\n")
    line = one_error_line(hwlat("lut", "import", str(rows), home=home))
    assert "cannot create" in line


# --- configs, arch lists and OFA tables

def test_a_config_nested_10000_deep_is_refused(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 10_000 + "]" * 10_000)
    line = one_error_line(hwlat("nas", "predict", "--space", "ofa-mbv3", "--device", "note10",
                                "--config", str(deep), "--table", str(tmp_path / "t.sqlite"),
                                home=tmp_path))
    assert "not a readable net config" in line


def test_an_overflowing_expand_ratio_is_refused():
    from hwlat.lut.ofa import ofa_network_keys
    from tests.lut.test_ofa_tables import _tiny_net

    net = _tiny_net()
    net["blocks"][0]["mobile_inverted_conv"]["expand_ratio"] = json.loads("1e400")
    with pytest.raises(InvalidInputError, match="expand_ratio=inf"):
        ofa_network_keys(net, 224)


def test_an_arch_line_over_the_csv_field_limit_is_refused(tmp_path):
    from hwlat.nas.nb201_lut import read_archs

    path = tmp_path / "A.csv"
    path.write_text('arch\n"' + "|" * 200_000 + '"\n')
    with pytest.raises(InvalidInputError, match="not a readable CSV"):
        read_archs(path)


@pytest.mark.parametrize("kind", ["fifo", "dev_zero"])
def test_an_ofa_folder_reads_regular_files_only(tmp_path, kind):
    folder = tmp_path / "lut"
    folder.mkdir()
    target = folder / "160_lookup_table.yaml"
    if kind == "fifo":
        os.mkfifo(target)
    else:
        os.symlink("/dev/zero", target)
    r = hwlat("lut", "import", "--format", "ofa", str(folder), "--device", "d",
              "--table", str(tmp_path / "t.sqlite"), home=tmp_path)
    assert "is not a regular file" in one_error_line(r)


# --- onnxruntime refusing a model hwlat accepted

def _ort_runner():
    from hwlat.devices import load_device
    from hwlat.runners import get_runner

    return get_runner(load_device("cpu-ort"))


def _save(m: onnx.ModelProto, path: Path) -> str:
    m.ir_version = 10
    onnx.save(m, str(path))
    return str(path)


def test_an_input_of_3e12_elements_is_refused_before_allocating(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3_000_000, 1_000_000])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3_000_000, 1_000_000])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "big", [x], [y])
    path = _save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), tmp_path / "big.onnx")
    with pytest.raises(HwlatError, match="MiB"):
        _ort_runner().time_model(path)


def test_a_model_onnxruntime_will_not_run_is_one_error(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "no_outputs", [x], [])
    path = _save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), tmp_path / "n.onnx")
    with pytest.raises(HwlatError, match="onnxruntime cannot"):
        _ort_runner().time_model(path)


# --- leftovers

def test_stale_export_temp_files_of_dead_processes_are_removed(tmp_path):
    from hwlat.onnx_export import remove_stale_temps

    target = tmp_path / "resnet18.onnx"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f".resnet18.onnx.{dead}.k3j2h1g0.tmp"
    live = tmp_path / f".resnet18.onnx.{os.getpid()}.a1b2c3d4.tmp"
    other = tmp_path / f".mobilenet_v2.onnx.{dead}.k3j2h1g0.tmp"
    for p in (stale, live, other):
        p.write_bytes(b"")
    assert remove_stale_temps(target) == [stale]
    assert not stale.exists() and live.exists() and other.exists()
    assert np.all([p.exists() for p in (live, other)])
