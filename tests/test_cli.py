"""The CLI end to end, in subprocesses, as a user runs it."""

from __future__ import annotations

import json

import pytest

from tests.helpers.cli import run_hwlat

NB201 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def hwlat(*args, cwd=None, tmp=None):
    return run_hwlat(*args, home=tmp or cwd or ".", cwd=cwd, pythonpath=cwd)


def test_zoo_lists_the_built_in_models(tmp_path):
    r = hwlat("zoo", tmp=tmp_path)
    assert r.returncode == 0
    for name in ("mobilenet_v2", "resnet18", "resnet50", "vit_tiny", "spiking_convnet", "sparse_convnet"):
        assert name in r.stdout


@pytest.mark.export
def test_export_nb201_then_inspect_json(tmp_path):
    out = tmp_path / "cell.onnx"
    r = hwlat("export", "--nb201", NB201, "-o", str(out), tmp=tmp_path)
    assert r.returncode == 0, r.stderr
    diff = float(r.stdout.split("max abs difference")[1].split()[0])
    assert diff < 1e-3
    r = hwlat("inspect", str(out), "--json", tmp=tmp_path)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    totals = data["totals"]
    assert totals["kernels"] == sum(k["count"] for k in data["kernels"])
    assert totals["macs"] == sum(k["macs"] * k["count"] for k in data["kernels"])
    assert totals["by_kind"]["conv"] >= 9  # stem, 3 x 3x3 per cell at least, reductions


@pytest.mark.export
def test_export_from_a_module_factory(tmp_path):
    (tmp_path / "mymodels.py").write_text(
        "import torch\n"
        "def factory():\n"
        "    m = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU())\n"
        "    return m, torch.randn(2, 8)\n")
    r = hwlat("export", "--module", "mymodels:factory", "-o", "m.onnx", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "m.onnx").exists()


@pytest.mark.slow  # five subprocesses that import torch
def test_export_bad_arguments_are_one_line_and_write_nothing(tmp_path):
    for args in (["export", "-o", "x.onnx"],  # no source
                 ["export", "resnet18", "--nb201", NB201, "-o", "x.onnx"],  # two sources
                 ["export", "resnt18", "-o", "x.onnx"],
                 ["export", "resnet18", "-o", "no/such/dir/x.onnx"],
                 ["export", "--module", "nosuchmod:f", "-o", "x.onnx"]):
        r = hwlat(*args, cwd=tmp_path)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []
