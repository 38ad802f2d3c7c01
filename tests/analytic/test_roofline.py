"""The roofline device: hand-computed latencies, the shipped figures, and profiling with it."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import numpy_helper

from hwlat.analytic.roofline import Roofline, RooflineRunner
from hwlat.devices import load_device
from hwlat.devices.spec import DeviceSpec
from hwlat.errors import InvalidInputError
from hwlat.graph import fuse, load
from hwlat.graph.extract import extract_kernel
from hwlat.lut import TableStore
from hwlat.runners import get_runner
from hwlat.runners.profile import plan, profile
from tests.helpers.onnx_builders import const, model, node, rand, save, tensor


def roof(peak_gflops, bandwidth_gbs, launch_us=10.0) -> DeviceSpec:
    return DeviceSpec(name="roof", description="test roofline", runtime="roofline",
                      runner="hwlat.analytic.roofline:RooflineRunner",
                      target={"kind": "roofline", "peak_gflops": peak_gflops,
                              "bandwidth_gbs": bandwidth_gbs, "launch_us": launch_us})


def conv_relu():
    """Conv 8->16, 3x3, pad 1, on 1x8x16x16, then Relu: one kernel.
    MACs: 16x16x16 outputs x 8x3x3 taps = 294912 (589824 FLOP).
    Bytes: input 8x16x16x4 = 8192, weights 16x8x3x3x4 = 4608, output 16x16x16x4 = 16384: 29184."""
    return model([node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), node("Relu", ["c"], ["y"])],
                 [tensor("x", [1, 8, 16, 16])], [tensor("y", [1, 16, 16, 16])], [const("w", rand(16, 8, 3, 3))])


@pytest.mark.parametrize("peak, bandwidth, expected_ms", [
    (1.0, 1.0, 589824 / 1e9 * 1e3 + 0.01),  # compute bound: 0.589824 ms + 10 us launch
    (1000.0, 1.0, 29184 / 1e9 * 1e3 + 0.01),  # memory bound: 0.029184 ms + 10 us launch
])
def test_conv_latency_is_the_slower_roof_plus_launch(tmp_path, peak, bandwidth, expected_ms):
    runner = RooflineRunner(roof(peak, bandwidth))
    t = runner.time_kernel(conv_relu())
    assert t.samples_ms == (pytest.approx(expected_ms, rel=1e-12),)
    assert t.median_ms == t.q1_ms == t.q3_ms and t.cv == 0.0
    assert runner.pipeline == "roofline"


def test_model_is_the_sum_of_its_kernels_and_views_cost_nothing(tmp_path):
    # conv+relu, then a reshape (a view: aliased, no launch) and a standalone Sigmoid
    m = model([node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), node("Relu", ["c"], ["r"]),
               node("Reshape", ["r", "shape"], ["f"]), node("Sigmoid", ["f"], ["y"])],
              [tensor("x", [1, 8, 16, 16])], [tensor("y", [1, 4096])],
              [const("w", rand(16, 8, 3, 3)), numpy_helper.from_array(np.array([1, 4096], np.int64), "shape")])
    path = save(m, tmp_path / "m.onnx")
    kinds = [k.kind.value for k in fuse(load(path))]
    assert kinds == ["conv", "view", "elementwise"]
    t = RooflineRunner(roof(1.0, 1.0, launch_us=10.0)).time_model(path)
    sigmoid = 2 * 16384 / 1e9 * 1e3  # 16384 bytes in, 16384 out, no MACs: memory bound
    assert t.samples_ms == (pytest.approx(589824 / 1e6 + 0.01 + 0 + sigmoid + 0.01, rel=1e-12),)


def test_profile_records_estimates_with_the_figures(tmp_path):
    spec = roof(1.0, 1.0)
    runner = get_runner(spec)
    path = save(conv_relu(), tmp_path / "m.onnx")
    with TableStore(tmp_path / "t.sqlite") as store:
        profile(plan([path], spec, runner, store), spec, runner, store)
        [e] = store.entries("roof")
    assert e.pipeline == "roofline" and e.repeats == 1 and e.cv == 0.0
    assert e.median_ms == pytest.approx(0.599824, rel=1e-12)
    assert '"peak_gflops": 1.0' in e.versions and '"model": "roofline"' in e.versions


@pytest.mark.parametrize("name, peak, bandwidth, launch", [
    ("roofline-h100", 67000.0, 3350.0, 5.0),  # NVIDIA datasheet: FP32 67 TFLOP/s, HBM3 3.35 TB/s
    ("roofline-sd855", 45.4, 34.1, 2.0),  # 2 FMA pipes x 4 lanes x 2 x 2.84 GHz; LPDDR4X-4266 x 8 B
])
def test_shipped_rooflines(tmp_path, name, peak, bandwidth, launch):
    spec = load_device(name)
    runner = get_runner(spec)
    assert runner.roof == Roofline(peak, bandwidth, launch)
    g = load(save(conv_relu(), tmp_path / "m.onnx"))
    ms = runner.time_kernel(extract_kernel(g, fuse(g)[0])).median_ms
    assert ms == pytest.approx(max(589824 / peak / 1e6, 29184 / bandwidth / 1e6) + launch / 1e3, rel=1e-12)


@pytest.mark.parametrize("target, match", [
    ({"kind": "llvm"}, 'needs \\[target\\] kind = "roofline"'),
    ({"kind": "roofline", "peak_gflops": 1.0}, "takes peak_gflops, bandwidth_gbs and optionally launch_us"),
    ({"kind": "roofline", "peak_gflops": 1.0, "bandwidth_gbs": 1.0, "clock": 2}, "got bandwidth_gbs, clock"),
    ({"kind": "roofline", "peak_gflops": 0, "bandwidth_gbs": 1.0}, "peak_gflops must be a positive number, got 0"),
    ({"kind": "roofline", "peak_gflops": 1, "bandwidth_gbs": "fast"}, "bandwidth_gbs must be a positive number"),
    ({"kind": "roofline", "peak_gflops": 1, "bandwidth_gbs": 1, "launch_us": -1}, "launch_us must be a non-negative"),
])
def test_bad_figures_are_named(target, match):
    spec = DeviceSpec(name="roof", description="d", runtime="roofline",
                      runner="hwlat.analytic.roofline:RooflineRunner", target=target)
    with pytest.raises(InvalidInputError, match=match):
        RooflineRunner(spec)


def _store_with(tmp_path, device, entries):
    """A table with `device` entries: (key text, kind, ms, MACs, bytes)."""
    from hwlat.lut import Entry

    at = "2026-01-01T00:00:00+00:00"
    store = TableStore(tmp_path / "t.sqlite")
    store.put_many([Entry(device, k, kind, ms, ms, ms, 0.0, 5, 1, "cpu", "{}", "ort-in-model", at)
                    for k, kind, ms, _, _ in entries],
                   [(k, kind, macs, nbytes) for k, kind, _, macs, nbytes in entries])
    return store


def test_misses_fall_back_to_the_roofline_scaled_by_measured_kernels(tmp_path):
    from hwlat.analytic.roofline import RooflineEstimator
    from hwlat.graph.cost import Cost
    from hwlat.lut.predict import predict

    r = Roofline(1.0, 1.0, launch_us=0.0)  # 1 GFLOP/s, 1 GB/s: ms = max(2 MACs, bytes) / 1e6
    # two measured convs run at 3x and 5x the roofline: median scale 4
    store = _store_with(tmp_path, "dev", [("a", "conv", 3 * 2.0, 1_000_000, 10),
                                          ("b", "conv", 5 * 4.0, 2_000_000, 10),
                                          ("c", "pool", 0.5, 0, 1_000_000)])
    est = RooflineEstimator(r, "roof", store, "dev")
    ms, how = est.estimate("conv", Cost(macs=500_000, params=0, bytes_read=10, bytes_written=0))
    assert ms == pytest.approx(4 * 1.0) and "x4" in how and "2 measured conv" in how
    ms, how = est.estimate("elementwise", Cost(0, 0, bytes_read=3_000_000, bytes_written=0))
    assert ms == pytest.approx(3 * 3.0) and "all kinds" in how  # median of ratios 3, 5, 0.5
    assert est.estimate("view", Cost(0, 0, 0, 0))[0] == 0.0
    empty = RooflineEstimator(r, "roof", store, "other")
    assert "unscaled" in empty.estimate("conv", Cost(1_000_000, 0, 0, 0))[1]
    # predict uses it for the misses and labels them
    path = save(conv_relu(), tmp_path / "m.onnx")
    g = load(path)
    pred = predict(g, fuse(g), store, "other", correct=False, fallback=empty)
    [row] = pred.rows
    assert row.estimated and row.source.startswith("estimate: roof roofline")
    assert row.ms == pytest.approx(589824 / 1e6)  # 294912 MACs at 1 GFLOP/s


def test_device_files_name_a_roofline_fallback(tmp_path):
    from hwlat.analytic.roofline import fallback_estimator
    from hwlat.devices.spec import parse_device

    arm = load_device("arm64-mobile")
    with TableStore(tmp_path / "t.sqlite") as store:
        est = fallback_estimator(arm, store)
        assert est is not None and est.name == arm.fallback == "roofline-sd855"
        assert fallback_estimator(load_device("cpu-ort"), store) is None
        with pytest.raises(InvalidInputError, match="not a roofline device"):
            fallback_estimator(arm, store, override="cpu-ort")
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\ndescription = "x"\nruntime = "onnxruntime"\n'
                   'runner = "hwlat.runners.ort:OrtRunner"\nfallback = 3\n')
    with pytest.raises(InvalidInputError, match="'fallback' must name a device"):
        parse_device(bad)


def test_predict_cli_labels_roofline_estimates(tmp_path):
    from typer.testing import CliRunner

    from hwlat.cli import app

    path = save(conv_relu(), tmp_path / "m.onnx")
    table = tmp_path / "t.sqlite"
    TableStore(table).close()
    r = CliRunner().invoke(app, ["predict", str(path), "--device", "arm64-mobile", "--table",
                                 str(table), "--json"])
    assert r.exit_code == 0, r.output
    [row] = __import__("json").loads(r.stdout)["kernels"]
    assert row["estimated"] and row["source"].startswith("estimate: roofline-sd855 roofline")
    # 294912 MACs at 45.4 GFLOP/s (compute bound) + 2 us launch, unscaled: nothing measured
    assert row["ms"] == pytest.approx(2 * 294912 / 45.4e9 * 1e3 + 2e-3, rel=1e-9)
    r = CliRunner().invoke(app, ["predict", str(path), "--device", "cpu-ort", "--table",
                                 str(table), "--fallback", "cpu-tvm"])
    assert isinstance(r.exception, InvalidInputError) and "not a roofline device" in str(r.exception)
