"""The learned correction from kernel sums to end-to-end latency."""

from __future__ import annotations

import numpy as np
import pytest

from hwlat.lut import TableStore
from hwlat.lut.correct import FEATURES, MIN_MODELS, fit_correction


def synthetic(n: int, coef, seed: int = 0):
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n):
        f = {"conv_ms": rng.uniform(1, 50), "dense_ms": rng.uniform(0, 20), "other_ms": rng.uniform(0, 5),
             "kernels": float(rng.integers(20, 300)), "nodes": float(rng.integers(300, 3000)), "boundary_mb": rng.uniform(0, 3), "one": 1.0}
        f["long_conv_ms"] = f["conv_ms"] * rng.uniform(0, 0.8)
        samples.append((f, float(np.dot(coef, [f[k] for k in FEATURES]))))
    return samples


def test_too_few_models_give_no_correction():
    assert fit_correction(synthetic(MIN_MODELS - 1, [1, 1, 1, 0, 0, 0, 0, 0])) is None


def test_identity_data_gives_the_identity():
    c = fit_correction(synthetic(20, [1, 1, 1, 0, 0, 0, 0, 0]))
    assert np.allclose(c.coef, [1, 1, 1, 0, 0, 0, 0, 0], atol=1e-6)


def test_recovers_a_systematic_bias_from_many_models():
    # cold convs, 4 us/kernel, 2 us/node, 0.5 ms/MB reordered, 30 us/run
    truth = [1.2, 0.9, 1.0, 0.004, 0.002, 0.5, 0.03, 0.0]
    samples = synthetic(200, truth)
    c = fit_correction(samples)
    errors = [abs(c.apply(f) / m - 1) for f, m in samples]
    assert max(errors) < 0.02
    assert c.coef[0] == pytest.approx(1.2, abs=0.02)
    assert c.coef[FEATURES.index("nodes")] == pytest.approx(0.002, abs=0.0005)


def test_calibration_rows_without_a_node_count_still_apply():
    c = fit_correction(synthetic(20, [1, 1, 1, 0, 0.001, 0, 0, 0]))
    old = {"conv_ms": 2.0, "dense_ms": 0.0, "other_ms": 0.0, "kernels": 10.0, "boundary_mb": 0.0, "one": 1.0}
    assert c.apply(old) == pytest.approx(c.apply({**old, "nodes": 0.0}))


def test_few_models_move_the_fit_only_towards_them():
    samples = synthetic(3, [1.5, 1.5, 1.5, 0, 0, 0, 0, 0])
    c = fit_correction(samples)
    before = np.mean([abs(sum(f[k] for k in ("conv_ms", "dense_ms", "other_ms")) / m - 1) for f, m in samples])
    after = np.mean([abs(c.apply(f) / m - 1) for f, m in samples])
    assert after < before


def test_calibration_rows_round_trip_through_the_store(tmp_path):
    with TableStore(tmp_path / "t.sqlite") as store:
        store.put_calibration("cpu-ort", "/m/a.onnx", {"conv_ms": 1.5, "one": 1.0}, 2.0)
        store.put_calibration("cpu-ort", "/m/a.onnx", {"conv_ms": 1.6, "one": 1.0}, 2.1)  # replaces
        store.put_calibration("other", "/m/a.onnx", {"conv_ms": 9.0, "one": 1.0}, 9.0)
        assert store.calibration("cpu-ort") == [("/m/a.onnx", {"conv_ms": 1.6, "one": 1.0}, 2.1)]
        with pytest.raises(Exception, match="measured_ms"):
            store.put_calibration("cpu-ort", "/m/b.onnx", {}, float("nan"))


def test_boundary_bytes_count_data_crossing_between_spatial_and_other_kernels(tmp_path):
    from onnx import TensorProto, helper

    from hwlat.graph import fuse, load
    from hwlat.lut.correct import boundary_bytes
    from tests.helpers.onnx_builders import const as init
    from tests.helpers.onnx_builders import conv_weights, model, node, rand, save, tensor

    m = model([node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
               node("ReduceMean", ["c", "axes"], ["m"], keepdims=1),
               node("Mul", ["c", "m"], ["y"]),
               node("Conv", ["y", "w2"], ["z"], pads=[1, 1, 1, 1])],
              [tensor("x", [1, 4, 8, 8])], [tensor("z", [1, 4, 8, 8])],
              conv_weights(4, 4, 3) + [init("w2", rand(4, 4, 3, 3)),
                                       helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3])])
    g = load(save(m, tmp_path / "se.onnx"))
    kernels = fuse(g)
    assert [k.kind.value for k in kernels] == ["conv", "reduction", "elementwise", "conv"]
    one = 4 * 8 * 8 * 4  # a float32 [1, 4, 8, 8]
    # c -> ReduceMean, c -> Mul, y -> Conv; m (reduction -> elementwise) stays in one layout
    assert boundary_bytes(g, kernels) == 3 * one


def _mobile_and_resnet(per_node_ms: float, share: float):
    """12 mobile models of many short kernels that cost `share` more than their kernels plus
    `per_node_ms` a graph node, and a ResNet-like model of a few long convs with its truth."""
    rng = np.random.default_rng(1)
    mobile = []
    for _ in range(12):
        nodes = float(rng.integers(100, 400))
        f = {"conv_ms": nodes * rng.uniform(0.04, 0.08), "dense_ms": 0.0, "other_ms": nodes * 0.005,
             "kernels": nodes / 2, "nodes": nodes, "boundary_mb": 0.0, "one": 1.0}
        mobile.append((f, (f["conv_ms"] + f["other_ms"]) * share + per_node_ms * nodes))
    resnet = {"conv_ms": 30.0, "dense_ms": 0.1, "other_ms": 0.4, "kernels": 24.0, "nodes": 49.0,
              "boundary_mb": 0.0, "one": 1.0}
    return mobile, resnet, 30.5 * share + per_node_ms * 49


def test_a_per_node_gap_on_mobile_models_is_not_carried_to_long_convs_as_a_scale_by_the_node_prior():
    """Kernels cut out and timed alone: models of many short kernels lose 30 us a graph node
    outside their kernels. PRIOR_SCALE_NODE puts that on the nodes, so a model of a few long convs
    (a ResNet) is not scaled up by it; a prior with loose scales takes it for a conv scale."""
    from hwlat.lut.correct import PRIOR_SCALE_BEFORE, PRIOR_SCALE_NODE

    mobile, resnet, truth = _mobile_and_resnet(0.03, 1.0)
    node = fit_correction(mobile, PRIOR_SCALE_NODE).apply(resnet) / truth - 1
    before = fit_correction(mobile, PRIOR_SCALE_BEFORE).apply(resnet) / truth - 1
    assert abs(node) < 0.08
    assert before > 0.15  # the loose scales take the gap for a conv scale


def test_a_share_of_each_kind_is_carried_to_long_convs_by_the_default_prior():
    """Kernels' CPU times taken inside their model: a model costs ~10 % more than its kernels
    whatever their number, and nothing per node. The default prior fits that share and carries
    it to a ResNet; the node prior, its scales held near 1, puts part of it on the nodes and
    predicts the ResNet low."""
    from hwlat.lut.correct import PRIOR_SCALE_NODE

    mobile, resnet, truth = _mobile_and_resnet(0.0, 1.1)
    now = fit_correction(mobile).apply(resnet) / truth - 1
    node = fit_correction(mobile, PRIOR_SCALE_NODE).apply(resnet) / truth - 1
    assert abs(now) < 0.03
    assert node < now - 0.02


def test_long_convs_get_their_own_scale():
    """Long convs that cost 20 % less in the model than cut out, short ones that cost their sum:
    the fit finds the long-conv scale, and model_features counts convs from LONG_CONV_MS up."""
    from types import SimpleNamespace

    from hwlat.lut.correct import LONG_CONV_MS, model_features

    rng = np.random.default_rng(2)
    samples = []
    for _ in range(30):
        short, long_ = rng.uniform(2, 20), rng.uniform(0, 60)
        f = {"conv_ms": short + long_, "dense_ms": 0.0, "other_ms": 1.0, "kernels": 50.0, "nodes": 100.0,
             "boundary_mb": 0.0, "one": 1.0, "long_conv_ms": long_}
        samples.append((f, short + 0.8 * long_ + 1.0))
    c = fit_correction(samples)
    a = dict(zip(FEATURES, c.coef, strict=True))
    assert a["conv_ms"] + a["long_conv_ms"] == pytest.approx(0.8, abs=0.05)
    assert a["long_conv_ms"] < -0.05 and a["conv_ms"] > 0.85  # the long convs take most of it
    assert max(abs(c.apply(f) / m - 1) for f, m in samples) < 0.05

    def row(kind, ms, count=1):
        return SimpleNamespace(kernel=SimpleNamespace(kind=SimpleNamespace(value=kind), nodes=("n",)),
                               ms=ms, count=count, total_ms=ms * count)

    f = model_features([row("conv", LONG_CONV_MS, 2), row("conv", LONG_CONV_MS / 2), row("matmul", 5.0)], 0)
    assert f["long_conv_ms"] == 2 * LONG_CONV_MS and f["conv_ms"] == 2.5 * LONG_CONV_MS
