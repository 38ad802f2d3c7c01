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
             "kernels": float(rng.integers(20, 300)), "one": 1.0}
        samples.append((f, float(np.dot(coef, [f[k] for k in FEATURES]))))
    return samples


def test_too_few_models_give_no_correction():
    assert fit_correction(synthetic(MIN_MODELS - 1, [1, 1, 1, 0, 0])) is None


def test_identity_data_gives_the_identity():
    c = fit_correction(synthetic(20, [1, 1, 1, 0, 0]))
    assert np.allclose(c.coef, [1, 1, 1, 0, 0], atol=1e-6)


def test_recovers_a_systematic_bias_from_many_models():
    truth = [1.2, 0.9, 1.0, 0.004, 0.3]  # cold caches on convs, 4 us per kernel, 0.3 ms per run
    samples = synthetic(200, truth)
    c = fit_correction(samples)
    errors = [abs(c.apply(f) / m - 1) for f, m in samples]
    assert max(errors) < 0.02
    assert c.coef[0] == pytest.approx(1.2, abs=0.02)


def test_few_models_move_the_fit_only_towards_them():
    samples = synthetic(3, [1.5, 1.5, 1.5, 0, 0])
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
