"""Multi-device priors: a device that is a known combination of prior devices is recovered from ten
NB201 cells; proposals spread; bad prior files are refused naming the row; the prior and the fit
live in the table as JSON numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hwlat.errors import InvalidInputError
from hwlat.lut import TableStore
from hwlat.lut.prior import (
    PRIOR_MODEL_KEY,
    PriorFit,
    fit_prior,
    propose,
    read_prior_fit,
    store_prior,
    stored_prior,
    write_prior_fit,
)
from hwlat.nas.nb201_prior import (
    nb201_has_path,
    nb201_predict_prior,
    nb201_prior_fit,
    nb201_propose,
    read_nb201_prior,
)
from hwlat.nas.spaces import NB201_SIZE
from tests.helpers.prior import (
    DEVICES,
    _drop,
    _dup,
    _nan,
    _neg,
    _unknown,
    true_ms,
    write_prior_csv,
)


def test_a_combination_of_prior_devices_is_recovered_from_ten_cells(prior, archs):
    rng = np.random.default_rng(0)
    y = true_ms(prior)
    rows = rng.choice(NB201_SIZE, 10, replace=False)
    measured = {archs[i]: float(y[i]) for i in rows}
    fit = nb201_prior_fit(prior, measured, hw_column=False)
    pred = nb201_predict_prior(fit, prior, archs)
    assert np.max(np.abs(pred / y - 1)) < 0.01
    raw = fit.raw_weights()
    assert raw["gpu_a"] == pytest.approx(0.6, abs=0.02)
    assert raw["phone_c"] == pytest.approx(0.4, abs=0.02)
    assert abs(raw["cpu_b"]) < 0.02 and abs(raw["phone_d"]) < 0.02
    assert fit.loo_error < 0.01 and fit.penalties[0] <= 0.01  # exact data: the weakest penalties


def test_noisy_measurements_are_shrunk_towards_the_prior_mean(prior, archs):
    """Pure noise around the prior devices' mean: the strongest penalty keeps every raw weight
    near 1/D."""
    rng = np.random.default_rng(1)
    base = np.exp(prior.log_columns().mean(axis=1))
    rows = rng.choice(NB201_SIZE, 8, replace=False)
    measured = {archs[i]: float(base[i] * math.exp(rng.normal(0, 0.3))) for i in rows}
    fit = nb201_prior_fit(prior, measured, hw_column=False, penalties=(1e3, 1e3))
    for w in fit.raw_weights().values():
        assert w == pytest.approx(1 / len(DEVICES), abs=0.03)


def test_hw_column_joins_the_fit(prior, archs):
    y = true_ms(prior)
    measured = {archs[i]: float(y[i]) for i in (100, 2000, 4000, 7000, 9000, 12000, 15000, 3333)}
    fit = nb201_prior_fit(prior, measured)
    assert fit.columns[-1] == "hwlat:roofline-sd855" and fit.n_devices == len(DEVICES)
    pred = nb201_predict_prior(fit, prior, archs[:50])
    assert np.all(np.isfinite(pred)) and np.all(pred > 0)


def test_fit_json_round_trip_predicts_the_same(prior, archs):
    y = true_ms(prior)
    measured = {archs[i]: float(y[i]) for i in range(200, 5200, 500)}
    fit = nb201_prior_fit(prior, measured, hw_column=False)
    again = PriorFit.from_json(fit.to_json(), "test")
    assert again == fit
    assert "pickle" not in fit.to_json()
    with pytest.raises(InvalidInputError, match="not a readable prior fit"):
        PriorFit.from_json('{"space": "nb201"}', "test")


def test_propose_spreads_and_skips_cells_without_a_path(prior, archs):
    chosen = nb201_propose(prior, 12, hw_column=False)
    assert len(set(chosen)) == 12
    assert all(nb201_has_path(a) for a in chosen)
    # k-center: the chosen cells are farther apart than random ones in the prior's log space
    logs = prior.log_columns()
    z = (logs - logs.mean(0)) / logs.std(0)

    def min_gap(rows):
        pts = z[rows]
        d = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
        return d[np.triu_indices(len(rows), 1)].min()

    picked = [archs.index(a) for a in chosen]
    rng = np.random.default_rng(0)
    assert min_gap(picked) > np.median([min_gap(rng.choice(NB201_SIZE, 12, replace=False))
                                        for _ in range(20)])
    with pytest.raises(InvalidInputError, match="N must be"):
        propose(logs, 0)


def test_has_path():
    assert not nb201_has_path("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    assert not nb201_has_path("|skip_connect~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    assert nb201_has_path("|skip_connect~0|+|none~0|none~1|+|none~0|skip_connect~1|none~2|")


def test_fit_prior_checks_shapes_and_values():
    with pytest.raises(InvalidInputError, match="at least 2"):
        fit_prior(np.ones((1, 2)), np.ones(1), ["a", "b"], 2, [0, 0], [1, 1])
    with pytest.raises(InvalidInputError, match="positive"):
        fit_prior(np.ones((3, 2)), np.array([1.0, -1.0, 2.0]), ["a", "b"], 2, [0, 0], [1, 1])
    with pytest.raises(InvalidInputError, match="do not match"):
        fit_prior(np.ones((3, 2)), np.ones(3), ["a"], 1, [0], [1])


def test_prior_csv_round_trip(prior, archs, tmp_path):
    path = write_prior_csv(tmp_path / "p.csv", prior, archs)
    again = read_nb201_prior(path)
    assert again.devices == DEVICES
    assert np.array_equal(again.ms, prior.ms) and again.digest() == prior.digest()


@pytest.mark.parametrize("edit, message", [
    (_drop, r"1 of the 15625 architectures of nb201 are missing \(numbers 1234\)"),
    (_dup, r"line 22: arch .* is already on line 12"),
    (_nan, r"line 9: latency 'nan' of .* on 'cpu_b' must be a positive number"),
    (_neg, r"line 10: latency '-1.5' of .* on 'gpu_a' must be a positive number"),
    (_unknown, r"line 11: .*unknown op 'conv_5x5'"),
])
def test_bad_prior_files_are_refused_naming_the_row(prior, archs, tmp_path, edit, message):
    path = write_prior_csv(tmp_path / "p.csv", prior, archs, edit=edit)
    with pytest.raises(InvalidInputError, match=message):
        read_nb201_prior(path)


def test_prior_and_fit_are_stored_in_the_table(prior, archs, tmp_path):
    y = true_ms(prior)
    measured = {archs[i]: float(y[i]) for i in range(300, 6300, 600)}
    fit = nb201_prior_fit(prior, measured, hw_column=False)
    with TableStore(tmp_path / "t.sqlite") as store:
        with pytest.raises(InvalidInputError, match="holds no device prior"):
            stored_prior(store, "nb201")
        digest = store_prior(store, prior)
        assert stored_prior(store, "nb201").digest() == digest
        write_prior_fit(store, "new", fit, prior)
        assert [e.key for e in store.entries("new")] == [PRIOR_MODEL_KEY]
        got_fit, got_prior = read_prior_fit(store, "new")
        assert got_fit == fit and got_prior.digest() == digest
        assert read_prior_fit(store, "other") is None
        with pytest.raises(InvalidInputError, match="one of the prior's devices"):
            write_prior_fit(store, "gpu_a", fit, prior)


def test_meta_values_are_set_dropped_and_hwlats_own_keys_kept(tmp_path):
    with TableStore(tmp_path / "t.sqlite") as store:
        store.put_meta({"a": "1", "b": "2"})
        store.put_meta({"c": "3"}, drop=["a"])
        assert (store.meta("a"), store.meta("b"), store.meta("c")) == (None, "2", "3")
        for bad in ({"schema_version": "9"}, {"x": 1}):
            with pytest.raises(InvalidInputError, match="meta key"):
                store.put_meta(bad)
        assert store.meta("schema_version") == "1"
