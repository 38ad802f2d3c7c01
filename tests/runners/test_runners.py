"""The runners: the device's runner from its file, what every runner offers, and the two CPU
runners on real onnxruntime and TVM."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hwlat.devices import list_devices, load_device
from hwlat.devices.measure import Timing
from hwlat.devices.spec import DeviceSpec
from hwlat.errors import InvalidInputError
from hwlat.graph import fuse, load
from hwlat.graph.extract import extract_kernel
from hwlat.lut import TableStore
from hwlat.lut.predict import predict
from hwlat.runners import RPC_RUNNER, Environment, InModelRunner, Runner, get_runner
from hwlat.runners.profile import plan, profile
from tests.helpers.onnx_builders import conv_chain, save


def test_each_runner_states_its_capabilities():
    ort_runner = get_runner(load_device("cpu-ort"))
    assert isinstance(ort_runner, InModelRunner) and ort_runner.supports_in_model
    roof = get_runner(load_device("roofline-sd855"))
    assert isinstance(roof, Runner) and not roof.supports_in_model
    assert not isinstance(roof, InModelRunner)


def test_rpc_options_apply_only_to_rpc_devices():
    remote = sorted(d.name for d in list_devices() if d.runner == RPC_RUNNER)
    assert remote == ["arm64-mobile", "cpu-tvm-rpc", "cuda-gpu"]
    with pytest.raises(InvalidInputError, match="not timed over RPC; --tracker and --key apply to "
                                                "arm64-mobile, cpu-tvm-rpc, cuda-gpu"):
        get_runner(load_device("cpu-ort"), tracker="127.0.0.1:9190")


class _NotARunner:
    def __init__(self, spec):
        self.spec = spec


@pytest.mark.parametrize("runner, match", [
    ("hwlat.runners.nowhere:OrtRunner", "cannot load runner hwlat.runners.nowhere:OrtRunner"),
    ("hwlat.runners.ort:Nothing", "cannot load runner hwlat.runners.ort:Nothing"),
    (f"{__name__}:_NotARunner", "does not offer what a runner offers"),
])
def test_a_device_whose_runner_is_not_one_is_refused(runner, match):
    spec = DeviceSpec(name="x", description="d", runtime="r", runner=runner)
    with pytest.raises(InvalidInputError, match=match):
        get_runner(spec)


def test_environment_is_stored_as_the_dict_it_was(tmp_path):
    env = Environment("cpu X", 2, {"b": 1, "a": "v"})
    assert env.to_dict() == {"cpu": "cpu X", "threads": 2, "versions": {"b": 1, "a": "v"}}
    spec = load_device("roofline-sd855")
    runner = get_runner(spec)
    path = save(conv_chain(1), tmp_path / "m.onnx")
    with TableStore(tmp_path / "t.sqlite") as store:
        profile(plan([path], spec, runner, store), spec, runner, store)
        (e,) = store.entries(spec.name)
    got = runner.environment().to_dict()
    assert (e.cpu, e.threads) == (got["cpu"], got["threads"]) == (spec.description, 1)
    assert e.versions == json.dumps(got["versions"], sort_keys=True)
    assert json.loads(e.versions)["model"] == "roofline"


def test_kernels_are_timed_one_after_another_unless_the_runner_says_otherwise():
    class Counting(Runner):
        pipeline = "count"

        def __init__(self):
            self.calls = []

        def time_kernel(self, proto):
            self.calls.append(proto)
            return Timing((float(proto),))

    r = Counting()
    timed = r.time_kernels([3, 1, 2])
    assert r.calls == []  # lazily, so a profile commits as it goes
    assert list(timed) == [(0, Timing((3.0,))), (1, Timing((1.0,))), (2, Timing((2.0,)))]
    assert r.calls == [3, 1, 2]


@pytest.mark.parametrize("device", ["cpu-ort", pytest.param("cpu-tvm", marks=pytest.mark.tvm)])
def test_profile_and_predict_on_each_cpu_device(tmp_path, device):
    spec = load_device(device)
    runner = get_runner(spec)
    path = save(conv_chain(2), tmp_path / "m.onnx")
    with TableStore(tmp_path / "t.sqlite") as store:
        profile(plan([path], spec, runner, store), spec, runner, store)
        entries = store.entries(device)
        assert len(entries) == 2
        # onnxruntime's kernels are timed inside the model; TVM's are built and timed one by one
        assert {e.pipeline for e in entries} == {"ort-in-model" if device == "cpu-ort" else "tvm-default"}
        # one thread: both runners give every entry its thread CPU time too
        cpu = store.cpu_times(device)
        assert set(cpu) == {e.key for e in entries} and all(c.cpu_ms > 0 and c.repeats >= 15 for c in cpu.values())
        g = load(path)
        assert predict(g, fuse(g), store, device).latency_ms == pytest.approx(sum(e.median_ms for e in entries))
    whole = runner.time_model(path)
    assert whole.median_ms > 0 and whole.q1_ms <= whole.median_ms <= whole.q3_ms


@pytest.mark.tvm
def test_tvm_target_uses_the_host_cpu():
    runner = get_runner(load_device("cpu-tvm"))
    assert runner.target.kind.name == "llvm"
    assert str(runner.target.attrs["mcpu"]) not in ("", "host")


@pytest.mark.tvm
def test_kernel_runs_on_both_runtimes(tmp_path):
    g = load(save(conv_chain(1), tmp_path / "m.onnx"))
    k = fuse(g)[0]
    for device in ("cpu-ort", "cpu-tvm"):
        t = get_runner(load_device(device)).time_kernel(extract_kernel(g, k))
        assert t.median_ms > 0 and len(t.samples_ms) >= 15


@pytest.mark.tvm
def test_tvm_times_kernels_and_models_in_thread_cpu_time_that_grows_with_their_work(tmp_path):
    """With one thread TVM runs its loops on the calling thread: the thread's CPU time is the
    kernel's (work on another thread would read as ~0 here, whatever its size)."""
    from hwlat.runners.tvm import CPU_MIN_RUNS
    from tests.helpers.onnx_builders import const, model, node, rand, tensor

    def pointwise(c: int):
        return model([node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[1, 1])],
                     [tensor("x", [1, c, 28, 28])], [tensor("y", [1, c, 28, 28])],
                     [const("w", rand(c, c, 1, 1)), const("b", rand(c))], opset=17)

    runner = get_runner(load_device("cpu-tvm"))
    small, large = runner.time_kernel(pointwise(32)), runner.time_kernel(pointwise(128))  # 16x the MACs
    assert len(small.cpu_samples_ms) >= CPU_MIN_RUNS and len(large.cpu_samples_ms) >= CPU_MIN_RUNS
    assert small.cpu_median_ms > 0 and large.cpu_median_ms > 4 * small.cpu_median_ms
    assert 0 < runner.call_overhead_cpu_ms < 1.0  # a VM call's fixed cost: microseconds
    whole = runner.time_model(save(pointwise(64), tmp_path / "p.onnx"))
    assert whole.cpu_samples_ms and whole.cpu_median_ms > 0


@pytest.mark.tvm
def test_tuned_device_reads_its_database_under_hwlat_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HWLAT_HOME", str(tmp_path))
    spec = load_device("cpu-tvm-tuned")
    assert spec.pipeline == "static_shape_tuning"
    assert spec.tuning_db_path() == tmp_path / "tuning" / "cpu-tvm-tuned"
    runner = get_runner(spec)  # opens (and marks) the database for the host target
    assert (tmp_path / "tuning" / "cpu-tvm-tuned" / "hwlat-target.json").is_file()
    assert runner.time_kernel(conv_chain(1)).median_ms > 0  # untuned ops keep default schedules


def test_profiling_on_onnxruntime_imports_no_tvm():
    code = ("import sys; from hwlat.devices import load_device; from hwlat.runners import get_runner; "
            "import hwlat.runners.profile; get_runner(load_device('cpu-ort')); "
            "bad = sorted(m for m in sys.modules if m.startswith(('tvm', 'torch'))); assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    assert r.returncode == 0, r.stderr


def test_the_rpc_commands_import_neither_onnx_nor_tvm():
    code = ("import sys; from hwlat.runners import get_runner, rpc; "
            "bad = sorted(m for m in sys.modules if m.startswith(('onnx', 'tvm', 'torch'))); "
            "assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    assert r.returncode == 0, r.stderr
