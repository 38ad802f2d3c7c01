"""Thread CPU time beside wall time: the table's cpu_times (an addition old tables open with),
the runner's CPU samples, and predictions in either clock."""

from __future__ import annotations

import hashlib
import sqlite3

import numpy as np
import pytest

from hwlat.devices import load_device
from hwlat.errors import InvalidInputError
from hwlat.graph import fuse, load
from hwlat.lut import TableStore
from hwlat.lut.store import CpuTime
from hwlat.runners import get_runner
from tests.helpers.entries import entry
from tests.helpers.onnx_builders import const, model, node, rand, save, tensor

KEY = "conv|Conv|in:f32[1,3,8,8]|out:f32[1,4,8,8]|w:f32[4,3,3,3]|"


def _old_table(path):
    """A table as hwlat wrote it before cpu_times existed: the same schema less that table."""
    with TableStore(path) as store:
        store.put_many([entry(KEY)])
    db = sqlite3.connect(path)
    db.execute("DROP TABLE cpu_times")
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def _tables(path) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        db.close()


def test_a_table_made_before_cpu_times_opens_read_only_untouched_and_gains_them_when_written(tmp_path):
    path = tmp_path / "old.sqlite"
    _old_table(path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with TableStore(path, readonly=True) as store:
        assert store.cpu_times("cpu-ort") == {} and store.cpu_times("cpu-ort", [KEY]) == {}
        assert store.get("cpu-ort", KEY) == entry(KEY)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert "cpu_times" not in _tables(path)
    with TableStore(path) as store:
        assert store.get("cpu-ort", KEY) == entry(KEY)
        store.put_many([entry(KEY)], cpu_times=[CpuTime("cpu-ort", KEY, 0.4, 0.02, 30)])
    assert "cpu_times" in _tables(path)
    with TableStore(path, readonly=True) as store:
        assert store.cpu_times("cpu-ort")[KEY] == CpuTime("cpu-ort", KEY, 0.4, 0.02, 30)


def test_cpu_times_go_with_their_entries(tmp_path):
    other = KEY.replace("[1,3,8,8]", "[1,3,9,9]")
    with TableStore(tmp_path / "t.sqlite") as store:
        store.put_many([entry(KEY), entry(other)],
                       cpu_times=[CpuTime("cpu-ort", KEY, 0.5, 0.0, 20), CpuTime("cpu-ort", other, 0.7, 0.0, 20)])
        assert {k: c.cpu_ms for k, c in store.cpu_times("cpu-ort").items()} == {KEY: 0.5, other: 0.7}
        assert set(store.cpu_times("cpu-ort", [other, "missing"])) == {other}
        # an entry measured again without a CPU time loses the old one: it described the old run
        store.put_many([entry(KEY, median_ms=1.3, q3_ms=2.0)])
        assert set(store.cpu_times("cpu-ort")) == {other}
        with pytest.raises(InvalidInputError, match="needs its entry"):
            store.put_many([], cpu_times=[CpuTime("cpu-ort", KEY, 0.5, 0.0, 20)])
        store.delete_entries("cpu-ort", other)
        assert store.cpu_times("cpu-ort") == {}


@pytest.mark.parametrize("bad", [dict(cpu_ms=-1.0), dict(cpu_ms=float("nan")), dict(repeats=0),
                                 dict(cpu_cv="x")])
def test_a_bad_cpu_time_is_refused(bad):
    with pytest.raises(InvalidInputError):
        CpuTime(**({"device": "cpu-ort", "key": KEY, "cpu_ms": 1.0, "cpu_cv": 0.0, "repeats": 5} | bad))


def _conv_net(tmp_path, c=16, hw=12):
    nodes = [node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1] * 4),
             node("Relu", ["c"], ["y"])]
    m = model(nodes, [tensor("x", [1, c, hw, hw])], [tensor("y", [1, c, hw, hw])],
              [const("w", rand(c, c, 3, 3)), const("b", rand(c))], opset=17)
    g = load(save(m, tmp_path / "m.onnx"))
    return g, fuse(g)


def test_predictions_say_their_clock_and_add_up_that_clock(tmp_path):
    from hwlat.lut.predict import predict

    g, ks = _conv_net(tmp_path)
    keys = sorted({k.key.text() for k in ks})
    with TableStore(tmp_path / "t.sqlite") as store:
        store.put_many([entry(k, median_ms=2.0, q1_ms=2.0, q3_ms=2.0) for k in keys],
                       cpu_times=[CpuTime("cpu-ort", keys[0], 0.5, 0.0, 20)])
        wall = predict(g, ks, store, "cpu-ort", correct=False)
        cpu = predict(g, ks, store, "cpu-ort", correct=False, clock="cpu")
        assert wall.clock == "wall" and wall.to_json()["clock"] == "wall"
        assert cpu.clock == "cpu" and cpu.to_json()["clock"] == "cpu"
        by_key = {r.kernel.key.text(): r for r in cpu.rows}
        assert by_key[keys[0]].ms == 0.5 and by_key[keys[0]].source == "table (cpu)"
        # an entry without a CPU time counts with its wall median, labelled
        assert all(r.ms == 2.0 and r.source == "table (wall: no CPU time)"
                   for k, r in by_key.items() if k != keys[0])
        assert all(r.ms == 2.0 and r.source == "table" for r in wall.rows)
        with pytest.raises(InvalidInputError, match="unknown clock"):
            predict(g, ks, store, "cpu-ort", clock="gpu")


def test_the_correction_is_fitted_on_samples_of_the_prediction_clock_only(tmp_path):
    from hwlat.lut.predict import predict

    g, ks = _conv_net(tmp_path)
    keys = sorted({k.key.text() for k in ks})
    with TableStore(tmp_path / "t.sqlite") as store:
        store.put_many([entry(k, median_ms=1.0, q1_ms=1.0, q3_ms=1.0) for k in keys],
                       cpu_times=[CpuTime("cpu-ort", k, 1.0, 0.0, 20) for k in keys])
        raw = predict(g, ks, store, "cpu-ort", correct=False).features
        for i in range(4):  # wall-clock samples 3x the kernel sum, CPU samples equal to it
            store.put_calibration("cpu-ort", f"w{i}", raw, 3.0 * raw["conv_ms"] + 3.0 * raw["other_ms"])
            store.put_calibration("cpu-ort", f"c{i}", {**raw, "cpu_clock": 1.0}, raw["conv_ms"] + raw["other_ms"])
        wall = predict(g, ks, store, "cpu-ort")
        cpu = predict(g, ks, store, "cpu-ort", clock="cpu")
        assert wall.correction.n_models == 4 and cpu.correction.n_models == 4
        assert wall.latency_ms / wall.kernel_sum_ms > 2.0
        assert cpu.latency_ms / cpu.kernel_sum_ms == pytest.approx(1.0, abs=0.1)


def test_predictors_trained_on_one_clock_are_not_used_for_the_other(tmp_path):
    from hwlat.lut.learned import train, trained_clock
    from hwlat.lut.predict import predict
    from tests.lut.test_learned import _synthetic_table

    g, ks = _conv_net(tmp_path, c=24, hw=20)
    with _synthetic_table(tmp_path / "t.sqlite") as store:
        ents = store.entries("cpu-ort")
        store.put_many(ents, cpu_times=[CpuTime("cpu-ort", e.key, e.median_ms / 2, 0.0, 20) for e in ents])
        train(store, "cpu-ort", clock="cpu")
        assert trained_clock(store, "cpu-ort") == "cpu"
        conv = lambda p: [r for r in p.rows if r.kernel.kind.value == "conv"]  # noqa: E731
        assert all("gbt" in r.source for r in conv(predict(g, ks, store, "cpu-ort", clock="cpu")))
        assert all("power law" in r.source for r in conv(predict(g, ks, store, "cpu-ort")))
        train(store, "cpu-ort")
        assert trained_clock(store, "cpu-ort") == "wall"
        assert all("gbt" in r.source for r in conv(predict(g, ks, store, "cpu-ort")))


def _pointwise_conv(tmp_path, c: int, name: str):
    m = model([node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[1, 1])],
              [tensor("x", [1, c, 28, 28])], [tensor("y", [1, c, 28, 28])],
              [const("w", rand(c, c, 1, 1)), const("b", rand(c))], opset=17)
    import onnx

    return onnx.load(save(m, tmp_path / name))


def test_ort_runner_times_a_kernel_in_thread_cpu_time_that_grows_with_its_work(tmp_path):
    from hwlat.runners.ort import CPU_MIN_RUNS

    runner = get_runner(load_device("cpu-ort"))
    small = runner.cpu_time_kernel(_pointwise_conv(tmp_path, 32, "s.onnx"))
    large = runner.cpu_time_kernel(_pointwise_conv(tmp_path, 128, "l.onnx"))  # 16x the MACs
    assert len(small) >= CPU_MIN_RUNS and len(large) >= CPU_MIN_RUNS
    assert np.median(small) > 0 and np.median(large) > 4 * np.median(small)
    assert 0 < runner.run_overhead_cpu_ms < 1.0  # a session run's fixed cost: microseconds
    t = runner.time_model(str(tmp_path / "l.onnx"))
    assert t.cpu_samples_ms and t.cpu_median_ms > 0 and t.cpu_cv is not None


def test_in_model_names_with_slashes_are_attributed_to_their_kernels():
    from hwlat.runners.ort import _ort_owner

    owner = {"/layer1/conv2/Conv_output_0": 3, "/layer1/act/Relu": 4, "Conv_7": 5}
    assert _ort_owner("/layer1/conv2/Conv_output_0_nchwc", owner) == 3
    assert _ort_owner("/layer1/act/Relu/ReluFusion", owner) == 4
    assert _ort_owner("Conv_7/FusedConv", owner) == 5
    assert _ort_owner("/layer1/other/Add", owner) is None and _ort_owner("ReorderInput", owner) is None


def test_a_torch_exported_model_is_timed_inside_itself(tmp_path):
    """Torch names nodes `/a/b/Op`: every conv of such a model is found in the profiler's trace."""
    from hwlat.devices import load_device

    nodes = [node("Conv", ["x", "w", "b"], ["/c1/Conv_output_0"], kernel_shape=[3, 3], pads=[1] * 4),
             node("Relu", ["/c1/Conv_output_0"], ["/act/Relu_output_0"]),
             node("Conv", ["/act/Relu_output_0", "w2", "b2"], ["y"], kernel_shape=[3, 3], pads=[1] * 4)]
    for n, name in zip(nodes, ["/c1/Conv", "/act/Relu", "/c2/Conv"], strict=True):
        n.name = name
    m = model(nodes, [tensor("x", [1, 16, 12, 12])], [tensor("y", [1, 16, 12, 12])],
              [const("w", rand(16, 16, 3, 3)), const("b", rand(16)), const("w2", rand(16, 16, 3, 3, seed=1)),
               const("b2", rand(16))], opset=17)
    path = save(m, tmp_path / "t.onnx")
    g = load(path)
    ks = fuse(g)
    times = get_runner(load_device("cpu-ort")).time_in_model(path, g, ks)
    convs = [i for i, k in enumerate(ks) if k.kind.value == "conv"]
    assert len(convs) == 2 and set(convs) <= set(times)


@pytest.mark.slow
def test_cli_profile_calibrate_and_validate_in_thread_cpu_time(tmp_path):
    import json

    from tests.helpers.cli import run_hwlat

    g_path = tmp_path / "m.onnx"
    _conv_net(tmp_path)  # writes m.onnx
    table = str(tmp_path / "t.sqlite")
    r = run_hwlat("profile", str(g_path), "--device", "cpu-ort", "--table", table, home=tmp_path)
    assert r.returncode == 0, r.stderr
    with TableStore(table, readonly=True) as store:
        assert set(store.cpu_times("cpu-ort")) == store.keys("cpu-ort")
    r = run_hwlat("validate", str(g_path), "--device", "cpu-ort", "--table", table, "--clock", "cpu",
                  "--json", home=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["clock"] == "cpu" and out["models"][0]["clock"] == "cpu" and out["models"][0]["measured_ms"] > 0
    r = run_hwlat("validate", str(g_path), "--device", "cpu-ort", "--table", table, "--clock", "gpu", home=tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "clock" in lines[0]


def _scaled_softmax_net(tmp_path):
    """x -> Mul by a constant -> Softmax -> MatMul with w: the MatMul's input is a value the
    model computes (its softmax probabilities), not a graph input."""
    nodes = [node("Mul", ["x", "s"], ["/m/Mul_output_0"]), node("Softmax", ["/m/Mul_output_0"], ["/p/Softmax_output_0"]),
             node("MatMul", ["/p/Softmax_output_0", "w"], ["y"])]
    m = model(nodes, [tensor("x", [1, 4, 16, 16])], [tensor("y", [1, 4, 16, 8])],
              [const("s", np.array(40.0, np.float32)), const("w", rand(16, 8))], opset=17)
    path = save(m, tmp_path / "sm.onnx")
    return path, load(path)


def _reference(path, name):
    import onnx
    import onnxruntime as ort

    from hwlat.runners.ort import random_feeds

    m = onnx.load(path)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    x = random_feeds(sess)["x"]
    z = x * 40.0
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    return x, {"/m/Mul_output_0": z, "/p/Softmax_output_0": p / p.sum(axis=-1, keepdims=True)}[name]


def test_model_activations_are_the_values_a_run_of_the_model_computes(tmp_path):
    path, g = _scaled_softmax_net(tmp_path)
    runner = get_runner(load_device("cpu-ort"))
    acts = runner.model_activations(g, ["/p/Softmax_output_0", "x", "w", "no-such-value"])
    x, probs = _reference(path, "/p/Softmax_output_0")
    assert set(acts) == {"/p/Softmax_output_0", "x"}  # the weight and the unknown name left out
    np.testing.assert_allclose(acts["/p/Softmax_output_0"], probs, rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(acts["x"], x)  # the random inputs time_model runs it on
    assert len(g.meta["onnx"].graph.output) == 1  # the loaded model is left as it was


def test_a_kernel_is_timed_on_the_given_values_where_they_fit_its_inputs(tmp_path, monkeypatch):
    import onnx

    import hwlat.runners.ort as ort_mod

    path, g = _scaled_softmax_net(tmp_path)
    seen = []
    real = ort_mod._bound_run

    def spy(sess, feeds):
        seen.append(dict(feeds))
        return real(sess, feeds)

    monkeypatch.setattr(ort_mod, "_bound_run", spy)
    runner = get_runner(load_device("cpu-ort"))
    proto = onnx.load(path)
    given = {"x": np.full((1, 4, 16, 16), 0.25, np.float32)}
    assert runner.cpu_time_kernel(proto, given)
    assert np.array_equal(seen[-1]["x"], given["x"])
    # a value of another shape is not fed: the input gets random values
    runner.cpu_time_kernel(proto, {"x": np.zeros((1, 4, 16, 8), np.float32)})
    assert seen[-1]["x"].shape == (1, 4, 16, 16) and np.any(seen[-1]["x"] != 0)


def test_profile_feeds_cut_out_kernels_the_values_of_their_models_run(tmp_path, monkeypatch):
    from hwlat.runners.profile import plan, profile

    path, g = _scaled_softmax_net(tmp_path)
    spec = load_device("cpu-ort")
    runner = get_runner(spec)
    fed: dict[str, dict] = {}
    real = type(runner).cpu_time_kernel

    def spy(self, proto, feeds=None):
        fed[proto.graph.node[-1].op_type] = {i.name: (feeds or {}).get(i.name) for i in proto.graph.input}
        return real(self, proto, feeds)

    monkeypatch.setattr(type(runner), "cpu_time_kernel", spy)
    monkeypatch.setattr("hwlat.runners.profile.SHORT_IN_MODEL_MS", 0.0)  # every kernel's CPU time cut out
    for in_model in (True, False):  # kernels timed inside the model, and cut out alone
        if not in_model:
            monkeypatch.setattr(type(runner), "time_in_model", lambda self, p, g, ks: {})
        fed.clear()
        with TableStore(tmp_path / f"t{in_model}.sqlite") as store:
            profile(plan([path], spec, runner, store), spec, runner, store)
            assert set(store.cpu_times("cpu-ort")) == store.keys("cpu-ort")
        matmul = [v for k, v in fed.items() if k == "MatMul"]
        assert matmul, fed
        _, probs = _reference(path, "/p/Softmax_output_0")
        np.testing.assert_allclose(matmul[0]["/p/Softmax_output_0"], probs, rtol=1e-4, atol=1e-7)


def test_a_short_kernel_timed_in_its_model_has_its_in_model_durations_as_cpu_time(tmp_path, monkeypatch):
    import hwlat.runners.profile as prof

    path, _ = _scaled_softmax_net(tmp_path)
    spec = load_device("cpu-ort")
    runner = get_runner(spec)
    cut = []
    real = type(runner).cpu_time_kernel
    monkeypatch.setattr(type(runner), "cpu_time_kernel",
                        lambda self, proto, feeds=None: cut.append(proto) or real(self, proto, feeds))
    with TableStore(tmp_path / "t.sqlite") as store:
        prof.profile(prof.plan([path], spec, runner, store), spec, runner, store)
        entries = {e.key: e for e in store.entries("cpu-ort")}
        cpu = store.cpu_times("cpu-ort")
    assert entries and all(e.pipeline == "ort-in-model" and e.median_ms < prof.SHORT_IN_MODEL_MS
                           for e in entries.values())
    assert cut == []  # none cut out: the in-model samples are the CPU samples
    assert set(cpu) == set(entries)
    assert all(cpu[k].cpu_ms == pytest.approx(e.median_ms) and cpu[k].repeats == e.repeats
               for k, e in entries.items())


def test_a_kernel_onnxruntime_fuses_into_its_reader_is_not_counted_twice(tmp_path):
    """Conv, a per-channel Mul, Relu: hwlat cuts three kernels, onnxruntime runs one Conv named
    after the Relu's output. The Relu's in-model time holds the others': they get 0, not their
    cut-out time on top."""
    import hwlat.runners.profile as prof
    from hwlat.lut.predict import predict

    c = 32
    nodes = [node("Conv", ["x", "w", "b"], ["/fc2/Conv_output_0"], kernel_shape=[1, 1]),
             node("Mul", ["/fc2/Conv_output_0", "gamma"], ["/Mul_output_0"]),
             node("Relu", ["/Mul_output_0"], ["y"])]
    for n, name in zip(nodes, ["/fc2/Conv", "/Mul", "/act/Relu"], strict=True):
        n.name = name
    m = model(nodes, [tensor("x", [1, c, 28, 28])], [tensor("y", [1, c, 28, 28])],
              [const("w", rand(c, c, 1, 1)), const("b", rand(c)), const("gamma", rand(1, c, 1, 1, seed=2))], opset=17)
    path = save(m, tmp_path / "f.onnx")
    g = load(path)
    ks = fuse(g)
    assert [k.key.ops for k in ks][:2] == [("Conv",), ("Mul",)]
    spec = load_device("cpu-ort")
    runner = get_runner(spec)
    attributed = runner.time_in_model(path, g, ks)
    assert set(attributed) == {2}  # one fused node, named after the Relu's output
    with TableStore(tmp_path / "t.sqlite") as store:
        prof.profile(prof.plan([path], spec, runner, store), spec, runner, store)
        conv, mul, relu = (k.key.text() for k in ks)
        e = {x.key: x for x in store.entries("cpu-ort")}
        cpu = store.cpu_times("cpu-ort")
        for key in (conv, mul):
            assert e[key].median_ms == 0 and e[key].pipeline == "ort-in-model" and cpu[key].cpu_ms == 0
        assert e[relu].median_ms > 0 and cpu[relu].cpu_ms == pytest.approx(e[relu].median_ms)
        p = predict(g, ks, store, "cpu-ort", correct=False, clock="cpu")
        assert p.kernel_sum_ms == pytest.approx(sum(cpu[k.key.text()].cpu_ms for k in ks if k.key.text() in cpu))


def test_a_fused_tail_onnxruntime_names_generically_is_charged_to_the_kernel_it_ends():
    """onnxruntime fuses a written-out GELU into a node named just `Gelu`: it ends the kernel
    just run (MatMul+Add+Gelu), while a Reshape it adds before a Gemm belongs to the next."""
    from hwlat.runners.ort import attribute

    owner = {"/fc1/MatMul": 0, "/fc2/MatMul": 1}
    nodes = [(10, 400, "/fc1/MatMul", "Gemm"), (420, 300, "Gelu", "Gelu"),
             (730, 20, "gemm_input_reshape", "Reshape"), (760, 500, "/fc2/MatMul", "Gemm")]
    runs = [(0, 2000)]
    tails = {0: frozenset({"MatMul", "Add", "Gelu"}), 1: frozenset({"MatMul", "Add"})}
    got = attribute(nodes, runs, owner, 0.0, tails)
    assert got[0] == [pytest.approx(0.7)] and got[1] == [pytest.approx(0.52)]
    # without the kernels' ops, every node no kernel owns goes to the next kernel
    plain = attribute(nodes, runs, owner, 0.0)
    assert plain[0] == [pytest.approx(0.4)] and plain[1] == [pytest.approx(0.82)]


def test_a_kernel_met_many_times_in_its_model_pools_its_occurrences(tmp_path, monkeypatch):
    """Every occurrence of every run is one sample: a preemption in one occurrence of a run does
    not move the kernel's median (the runs' means over 4 occurrences all would)."""
    import hwlat.runners.profile as prof

    c = 8
    nodes = [node("Conv", [f"x{i}", "w"], [f"x{i + 1}"], kernel_shape=[3, 3], pads=[1] * 4) for i in range(4)]
    m = model(nodes, [tensor("x0", [1, c, 12, 12])], [tensor("x4", [1, c, 12, 12])], [const("w", rand(c, c, 3, 3))],
              opset=17)
    path = save(m, tmp_path / "c.onnx")  # four convs of one key
    g = load(path)
    ks = fuse(g)
    same = [i for i, k in enumerate(ks) if k.key == ks[0].key]
    assert len(same) == 4
    spec = load_device("cpu-ort")
    runner = get_runner(spec)
    runs = 5
    # occurrence j of run r: 0.1 ms, but run r preempted in its occurrence r (2 ms)
    fake = {i: [2.0 if r == j else 0.1 for r in range(runs)] for j, i in enumerate(same)}
    monkeypatch.setattr(type(runner), "time_in_model", lambda self, p, g, k: fake)
    with TableStore(tmp_path / "t.sqlite") as store:
        prof.profile(prof.plan([path], spec, runner, store), spec, runner, store)
        e = store.get("cpu-ort", ks[0].key.text())
        cpu = store.cpu_times("cpu-ort")[ks[0].key.text()]
    assert e.repeats == runs * len(same)
    assert e.median_ms == pytest.approx(0.1) and cpu.cpu_ms == pytest.approx(0.1)
