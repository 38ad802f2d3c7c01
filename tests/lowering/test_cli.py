"""`hwlat compile`, `run` and `bench` end to end, in subprocesses, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import lowering_models as models
from tests.helpers.onnx_builders import rand

pytestmark = [pytest.mark.tvm, pytest.mark.export]

COMMAND = [sys.executable, "-m", "hwlat.cli"]


def hwlat_cli(*args, home):
    env = dict(os.environ, HWLAT_HOME=str(home))
    return subprocess.run([*COMMAND, *map(str, args)], capture_output=True, text=True, env=env, timeout=300)


def test_compile_run_bench(tmp_path):
    lib = tmp_path / "m.so"
    r = hwlat_cli("compile", models.matmul_add(tmp_path), "--device", "cpu-tvm", "-o", lib, home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert float(r.stdout.split("max abs difference")[1].split()[0]) < 1e-4
    assert json.loads((tmp_path / "m.so.json").read_text())["inputs"][0]["name"] == "x"
    r = hwlat_cli("run", lib, "--input", models.npy(tmp_path, "x.npy", rand(4, 16)),
                  "--save", tmp_path / "out.npz", home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out.npz").is_file()
    r = hwlat_cli("bench", lib, "--repeats", "5", "--warmup", "1", home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert float(r.stdout.split("median")[1].split()[0]) > 0
    r = hwlat_cli("run", lib, "--json", home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["outputs"][0]["shape"] == [4, 8]
    r = hwlat_cli("bench", lib, "--repeats", "5", "--warmup", "1", "--json", home=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["median_ms"] > 0 and doc["runs"] >= 5


def test_errors_are_one_line(tmp_path):
    r = hwlat_cli("compile", models.unsupported(tmp_path), home=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "error: TVM cannot lower 2 op type(s): Attention (x1): an attention mask or past "
        "key/value inputs are not lowered; hwlat.SparseConv3d (x2): strided "
        "sparse convs (subm=0) are not lowered: their number of output voxels depends on the "
        "coordinates"]
