"""Profiling into a table, predicting from it, and what bad input gets, on real onnxruntime."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from hwlat.devices import load_device
from hwlat.graph import fuse, load
from hwlat.lut import TableStore
from hwlat.lut.predict import predict
from hwlat.runners import get_runner
from hwlat.runners.profile import plan, profile
from tests.helpers.cli import run_hwlat
from tests.helpers.onnx_builders import const, conv_chain, model, node, rand, save, tensor


@pytest.fixture
def device():
    return load_device("cpu-ort")


def test_profile_then_predict_sums_the_table(tmp_path, device):
    path = save(conv_chain(3), tmp_path / "m.onnx")
    runner = get_runner(device)
    with TableStore(tmp_path / "t.sqlite") as store:
        todo = plan([path], device, runner, store)
        assert len(todo.kernels) == 3 and todo.already == 0
        report = profile(todo, device, runner, store)
        assert report.measured == 3
        assert plan([path], device, runner, store).kernels == {}  # resumable: nothing left
        entries = {e.key: e for e in store.entries("cpu-ort")}
        assert len(entries) == 3
        for e in entries.values():
            assert e.q1_ms <= e.median_ms <= e.q3_ms and e.median_ms > 0
            # every kernel of a plain conv chain is found in onnxruntime's run of the model
            assert e.threads == 1 and e.pipeline == "ort-in-model" and e.repeats >= 25
        g = load(path)
        pred = predict(g, fuse(g), store, "cpu-ort")
        assert pred.estimated_share == 0.0
        assert pred.latency_ms == pytest.approx(sum(e.median_ms for e in entries.values()))


def test_without_the_model_kernels_are_cut_out_and_timed_alone(tmp_path, device):
    path = save(conv_chain(2), tmp_path / "m.onnx")
    runner = get_runner(device)
    with TableStore(tmp_path / "t.sqlite") as store:
        full = plan([path], device, runner, store)
        alone = type(full)(kernels=full.kernels, already=0)  # no models: nothing to attribute
        profile(alone, device, runner, store)
        assert {e.pipeline for e in store.entries("cpu-ort")} == {"ort-profiler"}


def test_in_model_attribution_charges_added_nodes_to_a_kernel(tmp_path, device):
    # conv -> flatten -> gemm: onnxruntime adds a ReorderOutput (NCHWc) it has to charge somewhere
    m = model([node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), node("Relu", ["c"], ["r"]),
               node("Flatten", ["r"], ["f"]), node("Gemm", ["f", "wg", "bg"], ["y"], transB=1)],
              [tensor("x", [1, 8, 8, 8])], [tensor("y", [1, 10])],
              [const("w", rand(16, 8, 3, 3)), const("wg", rand(10, 16 * 8 * 8)), const("bg", rand(10))])
    path = save(m, tmp_path / "m.onnx")
    g = load(path)
    kernels = fuse(g)
    per = get_runner(device).time_in_model(path, g, kernels)
    assert sorted(per) == list(range(len(kernels)))  # every kernel found in the run
    assert all(len(v) == device.measure.repeats and min(v) >= 0 for v in per.values())


def test_missing_kernel_is_estimated_and_says_so(tmp_path, device):
    runner = get_runner(device)
    with TableStore(tmp_path / "t.sqlite") as store:
        profile(plan([save(conv_chain(6), tmp_path / "a.onnx")], device, runner, store), device, runner, store)
        other = save(conv_chain(2, c=24, hw=12, seed=9), tmp_path / "b.onnx")
        g = load(other)
        pred = predict(g, fuse(g), store, "cpu-ort")
    assert pred.estimated_share == 1.0
    assert all(r.estimated and r.source.startswith("estimate") for r in pred.rows)
    assert pred.latency_ms > 0


def cli(*args, env_home, timeout=300):
    return run_hwlat(*args, home=env_home, timeout=timeout)


def digest(p) -> str:
    return hashlib.sha256(open(p, "rb").read()).hexdigest()


def one_error_line(r):
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def test_unknown_device_names_the_known_ones_and_creates_no_table(tmp_path):
    path = save(conv_chain(1), tmp_path / "m.onnx")
    r = cli("profile", path, "--device", "cpu-ortt", env_home=tmp_path / "home")
    assert "unknown device 'cpu-ortt'; known: arm64-mobile, cpu-ort, cpu-tvm-rpc, cpu-tvm-tuned, cpu-tvm, cuda-gpu, neuromorphic-45nm, roofline-h100, roofline-sd855" in one_error_line(r)
    assert not (tmp_path / "home").exists()


@pytest.mark.parametrize("content", ["random", "foreign", "version"])
def test_bad_table_is_refused_and_left_unchanged(tmp_path, content):
    path = save(conv_chain(1), tmp_path / "m.onnx")
    table = tmp_path / "t.sqlite"
    if content == "random":
        table.write_bytes(os.urandom(8192))
    else:
        db = sqlite3.connect(table)
        db.execute("CREATE TABLE other (a, b)")
        if content == "version":
            TableStore(tmp_path / "real.sqlite").close()
            db.close()
            table.write_bytes((tmp_path / "real.sqlite").read_bytes())
            db = sqlite3.connect(table)
            db.execute("PRAGMA user_version = 7")
        db.commit()
        db.close()
    before = digest(table)
    for args in (["profile", path, "--table", str(table)], ["predict", path, "--table", str(table)]):
        one_error_line(cli(*args, env_home=tmp_path / "home"))
        assert digest(table) == before


def test_kernels_the_device_cannot_run_are_refused_before_measuring(tmp_path):
    m = model([node("SparseConv3d", ["f", "coords", "w"], ["y"], domain="hwlat", subm=1,
                    kernel_size=[3, 3, 3], stride=[1, 1, 1], padding=[1, 1, 1])],
              [tensor("f", [10, 4]), tensor("coords", [10, 4], 6)], [tensor("y", [10, 8])],
              [const("w", rand(27, 4, 8))], extra_opsets=[("hwlat", 1)])
    path = save(m, tmp_path / "s.onnx")
    table = tmp_path / "t.sqlite"
    TableStore(table).close()
    before = digest(table)
    line = one_error_line(cli("profile", path, "--table", str(table), env_home=tmp_path / "home"))
    assert "cannot run hwlat.SparseConv3d" in line
    assert digest(table) == before


@pytest.mark.slow
def test_kill_9_during_profile_loses_nothing_committed(tmp_path):
    # 30 models of distinct kernels: profile commits after each, so a kill lands between commits
    paths = [save(conv_chain(3, c=4 + 2 * i, hw=24, seed=i), tmp_path / f"m{i}.onnx") for i in range(30)]
    total = len({k.key.text() for p in paths for k in fuse(load(p))})  # models share some kernels
    table = tmp_path / "t.sqlite"
    env = dict(os.environ, HWLAT_HOME=str(tmp_path / "home"))
    proc = subprocess.Popen([sys.executable, "-m", "hwlat.cli", "profile", *paths, "--table", str(table)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    committed: dict = {}
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
            if table.exists():
                try:
                    with TableStore(table, readonly=True) as store:
                        committed = {e.key: e for e in store.entries("cpu-ort")}
                except Exception:
                    continue
            if committed:
                break
        assert proc.poll() is None, "profile finished before it could be killed; give it more models"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert committed
    with TableStore(table, readonly=True) as store:
        after = {e.key: e for e in store.entries("cpu-ort")}
    assert set(committed) <= set(after) and len(after) < total
    for key, e in committed.items():
        assert after[key] == e
    r = cli("profile", *paths, "--table", str(table), env_home=tmp_path / "home")
    assert r.returncode == 0, r.stderr
    assert f"{total - len(after)} kernels measured, {len(after)} already" in r.stdout
    left = total - len(after)  # stderr is a pipe here: progress comes as lines too, one at the end
    assert any(line.startswith(f"profiling on cpu-ort: {left}/{left} kernels, ")
               for line in r.stderr.splitlines()), r.stderr
    with TableStore(table, readonly=True) as store:
        final = {e.key: e for e in store.entries("cpu-ort")}
    assert len(final) == total and all(final[k] == e for k, e in after.items())


@pytest.mark.slow  # measures whole models end to end
def test_calibrate_then_predict_and_validate_use_the_correction(tmp_path):
    import json

    paths = [save(conv_chain(2 + i, seed=10 * i), tmp_path / f"m{i}.onnx") for i in range(3)]
    table = str(tmp_path / "t.sqlite")
    home = tmp_path / "home"
    assert cli("profile", *paths, "--table", table, env_home=home).returncode == 0
    r = cli("predict", paths[0], "--table", table, "--json", env_home=home)
    before = json.loads(r.stdout)
    assert before["correction"] is None and before["latency_ms"] == before["kernel_sum_ms"]
    r = cli("calibrate", *paths, "--table", table, env_home=home)
    assert r.returncode == 0, r.stderr
    assert "correction for cpu-ort" in r.stdout
    after = json.loads(cli("predict", paths[0], "--table", table, "--json", env_home=home).stdout)
    assert after["correction"].endswith("(fitted on 3 models)")
    assert after["kernel_sum_ms"] == pytest.approx(before["kernel_sum_ms"])
    plot = tmp_path / "v.png"
    r = cli("validate", *paths, "--table", table, "--json", "--plot", str(plot), env_home=home)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["metrics"]["n"] == 3 and len(report["models"]) == 3
    assert all(m["corrected"] for m in report["models"])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_in_model_rounds_repeat_while_noisy_and_keep_the_tightest(tmp_path, device, monkeypatch):
    runner = get_runner(device)
    rounds = iter([{0: [1.0, 3.0, 1.0, 5.0], 1: [2.0, 2.0, 2.0, 2.0]},   # kernel 0 too noisy
                   {0: [1.0, 1.0, 1.1, 1.0], 1: [9.0, 1.0, 9.0, 1.0]}])  # now kernel 1 is
    calls = []
    monkeypatch.setattr(runner, "_in_model_round", lambda path, owner, tails=None: calls.append(1) or next(rounds))
    g = load(save(conv_chain(2), tmp_path / "m.onnx"))
    per = runner.time_in_model("unused", g, fuse(g))
    assert len(calls) == 2
    assert per == {0: [1.0, 1.0, 1.1, 1.0], 1: [2.0, 2.0, 2.0, 2.0]}
