"""`hwlat lut export` / `lut import` as a user types them: `-` is standard output/input, symlinks
are written through, devices and FIFOs are written into, and a round trip keeps everything every
command answers from (entries, kernels' work, calibration)."""

from __future__ import annotations

import csv
import json
import os
import stat
import subprocess
import sys

import pytest

from hwlat.lut import TableStore
from tests.helpers.cli import ROOT, invoke_hwlat
from tests.helpers.fewshot import nb201_fit_space
from tests.helpers.tables import conv_model, entry, profiled_table


@pytest.fixture
def table(tmp_path, hwlat_home):
    t = tmp_path / "t.sqlite"
    profiled_table(t, conv_model(tmp_path / "m.onnx"))
    return t


def test_dash_is_standard_output(table, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = invoke_hwlat("lut", "export", "-", "--table", table)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["format"] == "hwlat-table" and len(doc["entries"]) == 3
    assert not (tmp_path / "-").exists()
    r = invoke_hwlat("lut", "export", "-", "--format", "csv", "--table", table)
    assert r.exit_code == 0
    assert next(csv.reader(r.stdout.splitlines()))[:2] == ["device", "key"]


def test_symlink_is_written_through(table, tmp_path):
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    r = invoke_hwlat("lut", "export", link, "--table", table)
    assert r.exit_code == 0, r.output
    assert "written through" in r.output
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert json.loads(real.read_text())["format"] == "hwlat-table"


def test_fifo_is_written_into_not_replaced(table, tmp_path):
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    r = invoke_hwlat("lut", "export", fifo, "--table", table)
    got, _ = reader.communicate(timeout=60)
    assert r.exit_code == 0, r.output
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert json.loads(got)["format"] == "hwlat-table"


def test_the_readme_pipe_copies_a_table(table, tmp_path, hwlat_home):
    """`hwlat lut export - | hwlat lut import - --table copy.sqlite`, in a real shell pipe;
    exporting to /dev/stdout leaves /dev/stdout a device."""
    env = {**os.environ, "HWLAT_HOME": str(hwlat_home), "PYTHONPATH": str(ROOT)}
    hw = f"{sys.executable} -m hwlat.cli"
    copy = tmp_path / "copy.sqlite"
    p = subprocess.run(f"{hw} lut export - --table {table} | {hw} lut import - --table {copy}",
                       shell=True, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "wrote 3 entries to standard output" in p.stderr
    with TableStore(copy, readonly=True) as s:
        assert len(s.entries("cpu-ort")) == 3
    p = subprocess.run(f"{hw} lut export /dev/stdout --format json --table {table} | cat",
                       shell=True, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["format"] == "hwlat-table"
    assert not os.path.isfile("/dev/stdout") or os.path.islink("/dev/stdout")


def _answers(table, tmp_path, archs):
    """What the query commands say about the table (the table's own path left out)."""
    got = {}
    for name, args in {
        "predict": ["predict", tmp_path / "m.onnx", "--json"],
        "predict-breakdown": ["predict", tmp_path / "m.onnx", "--breakdown"],
        "show": ["lut", "show", "--json"],
        "show-device": ["lut", "show", "--device", "cpu-ort", "--json"],
        "nas": ["nas", "predict", "--space", "nb201", "--device", "phone", "--archs", archs],
    }.items():
        r = invoke_hwlat(*args, "--table", table)
        assert r.exit_code == 0, (name, r.output)
        got[name] = r.stdout.replace(str(table), "TABLE")
    return got


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_round_trip_answers_every_query_the_same(table, tmp_path, fmt):
    archs_, reference, features, device = nb201_fit_space()
    with TableStore(table) as s:
        s.put_many([entry("nb-ref", k, k.partition("|")[0], ms) for k, ms in reference.items()],
                   [(k, k.partition("|")[0], int(m), int(b)) for k, (m, b) in features.items()])
    m = tmp_path / "m.csv"
    m.write_text("arch,latency_ms\n" + "".join(f"{a},{device[a]!r}\n" for a in archs_[:10]))
    r = invoke_hwlat("lut", "fit", "--space", "nb201", "--measurements", m, "--device", "phone",
                     "--reference-device", "nb-ref", "--table", table)
    assert r.exit_code == 0, r.output
    archs = tmp_path / "a.csv"
    archs.write_text("arch\n" + "".join(f"{a}\n" for a in archs_[10:20]))
    before = _answers(table, tmp_path, archs)
    assert json.loads(before["predict"])["correction"] is not None  # calibrated
    out = tmp_path / f"t.{fmt}"
    assert invoke_hwlat("lut", "export", out, "--table", table).exit_code == 0
    copy = tmp_path / "copy.sqlite"
    r = invoke_hwlat("lut", "import", out, "--table", copy)
    assert r.exit_code == 0, r.output
    after = _answers(copy, tmp_path, archs)
    assert after == {k: v.replace(str(table), "TABLE") for k, v in before.items()}
