"""hwlat's Python API: one call per job, the same answers as the CLI, the same typed errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest
import torch
from torch import nn

import hwlat
from hwlat.errors import HwlatError, InvalidInputError
from hwlat.lut import Entry


def tiny(width: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, width, 3, 1, 1, groups=width), nn.ReLU6(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10),
    ).eval()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HWLAT_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def onnx_file(tmp_path):
    path = tmp_path / "tiny.onnx"
    from hwlat.onnx_export import export

    export(tiny(), torch.randn(1, 3, 32, 32), path, compare=False)
    return path


def entry(device: str, key: str, kind: str, ms: float) -> Entry:
    return Entry(device=device, key=key, kind=kind, median_ms=ms, q1_ms=ms, q3_ms=ms, cv=0.0,
                 repeats=5, threads=1, cpu="test", versions="{}", pipeline="test",
                 measured_at=datetime.now(UTC).isoformat(timespec="seconds"))


def features(row) -> tuple:
    c = row.cost
    return (row.kernel.key.text(), row.kernel.kind.value, c.macs, c.bytes_read + c.bytes_written)


def test_import_hwlat_stays_light():
    r = subprocess.run([sys.executable, "-c", "import sys, hwlat; print(sorted(m for m in "
                        "('torch', 'onnx', 'tvm', 'hwlat.api') if m in sys.modules))"],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=os.getcwd()))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
    assert hwlat.predict is hwlat.api.predict and hwlat.Table is hwlat.api.Table


def test_a_module_and_its_onnx_file_predict_the_same_on_an_analytic_device(home, onnx_file):
    module = hwlat.predict(tiny(), device="roofline-sd855", input_shape=(1, 3, 32, 32))
    from_file = hwlat.predict(onnx_file, device="roofline-sd855")
    import onnx

    from_proto = hwlat.predict(onnx.load(str(onnx_file)), device="roofline-sd855")
    assert (module.route, from_file.route, from_proto.route) == ("fast", "onnx", "onnx")
    assert module.latency_ms == pytest.approx(from_file.latency_ms, rel=1e-12)
    assert from_proto.latency_ms == from_file.latency_ms
    assert sorted(r.kernel.key.text() for r in module.rows) == \
        sorted(r.kernel.key.text() for r in from_file.rows)
    assert module.latency_ms > 0 and module.estimated_share == 1.0  # nothing profiled
    assert set(module.stages) == {"trace", "fuse", "query"}
    data = module.to_json()
    assert data["route"] == "fast" and data["latency_ms"] == module.latency_ms
    assert len(data["kernels"]) == len(module.rows)


def test_table_entries_are_used_and_misses_labelled(home):
    summary = hwlat.inspect(tiny(), input_shape=(1, 3, 32, 32))
    rows = summary.rows
    assert summary.totals()["kernels"] == sum(r.count for r in rows)
    measured = {r.kernel.key.text(): 0.5 for r in rows[:-1]}  # all but the last kernel
    with hwlat.Table() as t:
        t.put_many([entry("cpu-ort", k, r.kernel.kind.value, 0.5)
                    for r, k in zip(rows, measured, strict=False)],
                   [features(r) for r in rows[:-1]])
    r = hwlat.predict(tiny(), device="cpu-ort", input_shape=(1, 3, 32, 32), breakdown=True)
    sources = {row.kernel.key.text(): row.source for row in r.rows}
    assert all(sources[k] == "table" for k in measured)
    missing = rows[-1].kernel.key.text()
    assert sources[missing].startswith("estimate")
    assert 0 < r.estimated_share < 1
    totals = [row.total_ms for row in r.rows]
    assert totals == sorted(totals, reverse=True)  # breakdown: largest first
    assert r.breakdown()[0][1] == pytest.approx(totals[0] / r.kernel_sum_ms)
    # a table written between two calls is read again
    with hwlat.Table() as t:
        t.put_many([entry("cpu-ort", missing, rows[-1].kernel.kind.value, 0.25)])
    again = hwlat.predict(tiny(), device="cpu-ort", input_shape=(1, 3, 32, 32))
    assert again.estimated_share == 0.0
    assert again.latency_ms == pytest.approx(0.5 * sum(x.count for x in rows[:-1]) + 0.25 * rows[-1].count)


def test_predict_and_inspect_answer_what_the_cli_prints(home, onnx_file):
    with hwlat.Table() as t:
        s = hwlat.inspect(onnx_file)
        t.put_many([entry("cpu-ort", r.kernel.key.text(), r.kernel.kind.value, 0.1 * (i + 1))
                    for i, r in enumerate(s.rows[:3])], [features(r) for r in s.rows[:3]])
    env = dict(os.environ, HWLAT_HOME=str(home))
    cli = lambda *a: subprocess.run([sys.executable, "-m", "hwlat.cli", *a], capture_output=True,  # noqa: E731
                                    text=True, env=env, timeout=300)
    r = cli("predict", str(onnx_file), "--device", "cpu-ort", "--json")
    assert r.returncode == 0, r.stderr
    api = hwlat.predict(onnx_file, device="cpu-ort").to_json()
    cli_doc = json.loads(r.stdout)
    assert api.pop("route") == "onnx" and api == cli_doc  # the CLI prints the API's object
    assert cli_doc["thin_estimate"] is False and all(k["noisy"] is False for k in cli_doc["kernels"])
    r = cli("inspect", str(onnx_file), "--json")
    assert json.loads(r.stdout) == hwlat.inspect(onnx_file).to_json()


def test_an_open_table_can_be_passed_and_queried_in_a_loop(home, tmp_path):
    path = tmp_path / "t.sqlite"
    with hwlat.Table(path) as t:
        first = hwlat.predict(tiny(8), device="roofline-sd855", input_shape=(1, 3, 32, 32), table=t)
        wider = hwlat.predict(tiny(16), device="roofline-sd855", input_shape=(1, 3, 32, 32), table=t)
    assert wider.latency_ms > first.latency_ms


def test_bad_input_is_one_typed_error(home, onnx_file):
    with pytest.raises(InvalidInputError, match="input_shape="):
        hwlat.predict(tiny(), device="roofline-sd855")
    with pytest.raises(InvalidInputError, match="not both"):
        hwlat.predict(tiny(), device="roofline-sd855", inputs=torch.zeros(1, 3, 8, 8),
                      input_shape=(1, 3, 8, 8))
    with pytest.raises(InvalidInputError, match="apply to torch modules"):
        hwlat.predict(onnx_file, device="roofline-sd855", input_shape=(1, 3, 8, 8))
    with pytest.raises(InvalidInputError, match="not int"):
        hwlat.predict(3, device="roofline-sd855")
    with pytest.raises(InvalidInputError, match="route="):
        hwlat.predict(tiny(), device="roofline-sd855", input_shape=(1, 3, 8, 8), route="fastest")
    with pytest.raises(HwlatError, match="nosuchdevice"):
        hwlat.predict(onnx_file, device="nosuchdevice")
    with pytest.raises(HwlatError, match="no such file"):
        hwlat.predict(onnx_file.parent / "missing.onnx", device="roofline-sd855")
    with pytest.raises(InvalidInputError, match="refuses the input") as e:
        hwlat.predict(tiny(), device="roofline-sd855", input_shape=(1, 4, 32, 32))
    assert "\n" not in str(e.value) and "channels" in str(e.value)
    with pytest.raises(HwlatError, match="no table"):  # a measured device needs its table
        hwlat.predict(onnx_file, device="cpu-ort", table=onnx_file.parent / "none.sqlite")


class Rolled(nn.Module):
    def forward(self, x):
        return torch.roll(x, 1, dims=1).relu()


def test_a_module_the_fast_path_cannot_map_is_exported_and_says_so(home):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), Rolled()).eval()
    r = hwlat.predict(model, device="roofline-sd855", input_shape=(1, 3, 8, 8))
    assert r.route == "export" and "submodule '1'" in r.fallback and "roll" in r.fallback
    assert r.latency_ms > 0


def test_profile_then_predict_and_validate_on_onnxruntime(home):
    model = tiny()
    report = hwlat.profile(model, device="cpu-ort", input_shape=(1, 3, 32, 32))
    assert report.measured >= 3
    r = hwlat.predict(model, device="cpu-ort", input_shape=(1, 3, 32, 32))
    assert r.route == "fast" and r.estimated_share == 0.0 and r.latency_ms > 0
    v = hwlat.validate(model, device="cpu-ort", input_shape=(1, 3, 32, 32))
    assert v["device"] == "cpu-ort" and len(v["models"]) == 1
    assert v["models"][0]["predicted_ms"] == pytest.approx(r.latency_ms)
    assert v["models"][0]["measured_ms"] > 0 and v["metrics"]["n"] == 1


def test_compile_returns_a_library_to_call_and_bench(home):
    np = pytest.importorskip("numpy")
    pytest.importorskip("tvm")
    model = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 4)).eval()
    lib = hwlat.compile(model, device="cpu-tvm", input_shape=(1, 3, 16, 16))
    assert lib.path.suffix == ".so" and lib.report.max_abs_diff is not None
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype("float32")
    want = model(torch.from_numpy(x)).detach().numpy()
    assert np.abs(lib(x)[0] - want).max() < 1e-4
    assert np.abs(hwlat.api.Compiled(lib.path)(x)[0] - want).max() < 1e-4  # a library on disk
    b = lib.bench(warmup=1, repeats=5)
    assert b.median_ms > 0 and len(b.timing.samples_ms) >= 5
    with pytest.raises(InvalidInputError, match="takes 1 input"):
        lib(x, x)


def test_hwlat_export_stays_the_function_after_the_exporter_module_is_imported():
    # the exporter lives in hwlat.onnx_export: a submodule named `export` would replace the
    # package attribute `hwlat.export` (the function) once anything imported it
    import hwlat
    import hwlat.onnx_export  # noqa: F401

    assert callable(hwlat.export) and hwlat.export.__module__ == "hwlat"


def test_predict_takes_the_clock(home, onnx_file):
    from hwlat.lut.predict import predict as lut_predict
    from hwlat.lut.store import CpuTime

    s = hwlat.inspect(onnx_file)
    with hwlat.Table() as t:
        t.put_many([entry("cpu-ort", r.kernel.key.text(), r.kernel.kind.value, 0.4) for r in s.rows],
                   [features(r) for r in s.rows])
        with pytest.raises(InvalidInputError, match=r"no thread CPU times .*--force.*clock='wall'"):
            hwlat.predict(onnx_file, device="cpu-ort", clock="cpu")
        with pytest.raises(InvalidInputError, match=r"unknown clock 'gpu' \(clock=\)"):
            hwlat.predict(onnx_file, device="cpu-ort", clock="gpu")
        t.put_many([entry("cpu-ort", r.kernel.key.text(), r.kernel.kind.value, 0.4) for r in s.rows],
                   cpu_times=[CpuTime("cpu-ort", r.kernel.key.text(), 0.1, 0.0, 5) for r in s.rows])
        raw = hwlat.predict(onnx_file, device="cpu-ort", clock="cpu").prediction.features
        for i in range(4):  # CPU-time samples 2x the kernel sum: a wall prediction ignores them
            t.put_calibration("cpu-ort", f"c{i}", {**raw, "cpu_clock": 1.0},
                              2 * (raw["conv_ms"] + raw["dense_ms"] + raw["other_ms"]))
    n = sum(r.count for r in s.rows)
    wall = hwlat.predict(onnx_file, device="cpu-ort")
    cpu = hwlat.predict(onnx_file, device="cpu-ort", clock="cpu")
    assert wall.to_json()["clock"] == "wall" and cpu.to_json()["clock"] == "cpu"
    assert wall.prediction.kernel_sum_ms == pytest.approx(0.4 * n) and wall.prediction.correction is None
    assert cpu.prediction.kernel_sum_ms == pytest.approx(0.1 * n)
    assert cpu.prediction.correction.n_models == 4
    assert cpu.latency_ms == pytest.approx(0.2 * n, rel=0.1)
    # the API's cached query answers what hwlat.lut.predict.predict does on the same table
    from hwlat.devices import load_device
    from hwlat.graph import fuse, load

    g = load(onnx_file)
    with hwlat.Table() as t:
        ref = lut_predict(g, fuse(g, load_device("cpu-ort").fusion), t, "cpu-ort", clock="cpu")
    assert cpu.prediction.to_json() == ref.to_json()
