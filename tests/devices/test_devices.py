"""Device files and the two CPU runners, on real onnxruntime and TVM."""

from __future__ import annotations

import pytest

from hwlat.devices import list_devices, load_device
from hwlat.devices.measure import Timing, measure
from hwlat.devices.spec import MeasureSpec, parse_device
from hwlat.errors import InvalidInputError
from hwlat.graph import fuse, load
from hwlat.graph.extract import extract_kernel
from hwlat.lut import TableStore
from hwlat.lut.build import plan, profile
from hwlat.lut.predict import predict
from tests.helpers.onnx_builders import conv_chain, save


def test_shipped_devices_parse():
    names = [d.name for d in list_devices()]
    assert names == ["arm64-mobile", "cpu-ort", "cpu-tvm-tuned", "cpu-tvm", "cuda-gpu",
                     "neuromorphic-45nm", "roofline-h100", "roofline-sd855"]
    tvm = load_device("cpu-tvm")
    assert tvm.runtime == "tvm" and tvm.target == {"kind": "llvm", "mcpu": "host"} and tvm.threads == 1


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


@pytest.mark.parametrize("device", ["cpu-ort", pytest.param("cpu-tvm", marks=pytest.mark.tvm)])
def test_profile_and_predict_on_each_cpu_device(tmp_path, device):
    spec = load_device(device)
    runner = spec.make_runner()
    path = save(conv_chain(2), tmp_path / "m.onnx")
    with TableStore(tmp_path / "t.sqlite") as store:
        profile(plan([path], spec, runner, store), spec, runner, store)
        entries = store.entries(device)
        assert len(entries) == 2
        # onnxruntime's kernels are timed inside the model; TVM's are built and timed one by one
        assert {e.pipeline for e in entries} == {"ort-in-model" if device == "cpu-ort" else "tvm-default"}
        g = load(path)
        assert predict(g, fuse(g), store, device).latency_ms == pytest.approx(sum(e.median_ms for e in entries))
    whole = runner.time_model(path)
    assert whole.median_ms > 0 and whole.q1_ms <= whole.median_ms <= whole.q3_ms


@pytest.mark.tvm
def test_tvm_target_uses_the_host_cpu():
    runner = load_device("cpu-tvm").make_runner()
    assert runner.target.kind.name == "llvm"
    assert str(runner.target.attrs["mcpu"]) not in ("", "host")


@pytest.mark.tvm
def test_kernel_runs_on_both_runtimes(tmp_path):
    g = load(save(conv_chain(1), tmp_path / "m.onnx"))
    k = fuse(g)[0]
    for device in ("cpu-ort", "cpu-tvm"):
        t = load_device(device).make_runner().time_kernel(extract_kernel(g, k))
        assert t.median_ms > 0 and len(t.samples_ms) >= 15


@pytest.mark.tvm
def test_tuned_device_reads_its_database_under_hwlat_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HWLAT_HOME", str(tmp_path))
    spec = load_device("cpu-tvm-tuned")
    assert spec.pipeline == "static_shape_tuning"
    assert spec.tuning_db_path() == tmp_path / "tuning" / "cpu-tvm-tuned"
    runner = spec.make_runner()  # opens (and marks) the database for the host target
    assert (tmp_path / "tuning" / "cpu-tvm-tuned" / "hwlat-target.json").is_file()
    assert runner.time_kernel(conv_chain(1)).median_ms > 0  # untuned ops keep default schedules
