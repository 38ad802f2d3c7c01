"""Few-shot tables: a device that is the reference rescaled per kind is recovered from ten NB201
cells; bad input is named."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hwlat.errors import InvalidInputError
from hwlat.lut import Entry, TableStore
from hwlat.lut.fewshot import (
    OVERHEAD_KEY,
    fewshot_entries,
    fit_fewshot,
    fit_fewshot_model,
    predict_fewshot,
    read_measurements,
    reference_from_store,
)
from hwlat.nas.nb201_lut import nb201_kernel_texts
from tests.helpers.fewshot import EMPTY, OVERHEAD, SCALE, nb201_fit_space


@pytest.fixture(scope="module")
def space():
    return nb201_fit_space()


def test_per_kind_scaling_is_recovered_from_ten_cells(space):
    archs, reference, features, device = space
    train, held_out = [*archs[:9], EMPTY], archs[9:-1]
    fit = fit_fewshot_model({a: nb201_kernel_texts(a) for a in train},
                            {a: device[a] for a in train}, reference, features)
    for a in held_out:
        assert predict_fewshot(fit.table, nb201_kernel_texts(a)) == pytest.approx(device[a], rel=1e-6)
    assert fit.table[OVERHEAD_KEY] == pytest.approx(OVERHEAD, rel=1e-6)
    for kind in ("conv", "pool", "elementwise", "normalization"):
        assert fit.group_scale[kind] == pytest.approx(SCALE[kind], rel=1e-6)
    assert math.isinf(fit.penalties[1]) and math.isinf(fit.penalties[2])  # no work, no per-key terms
    assert fit.cv_error < 1e-6 and fit.clipped == 0
    assert set(fit.table) == set(reference) | {OVERHEAD_KEY}


def test_noisy_measurements_still_rank_and_stay_close(space):
    archs, reference, features, device = space
    rng = np.random.default_rng(1)
    noisy = {a: device[a] * (1 + 0.03 * rng.standard_normal()) for a in archs[:20]}
    table = fit_fewshot({a: nb201_kernel_texts(a) for a in noisy}, noisy, reference, features)
    pred = np.array([predict_fewshot(table, nb201_kernel_texts(a)) for a in archs[20:-1]])
    want = np.array([device[a] for a in archs[20:-1]])
    assert np.max(np.abs(pred / want - 1)) < 0.15
    assert all(v >= 0 for v in table.values())


def test_bad_input_is_named(space):
    archs, reference, features, device = space
    kernels = {a: nb201_kernel_texts(a) for a in archs[:3]}
    good = {a: device[a] for a in archs[:3]}
    with pytest.raises(InvalidInputError, match=r"at least 2 measured models .*, got 1"):
        fit_fewshot(kernels, dict(list(good.items())[:1]), reference, features)
    bad_cell = "|conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    with pytest.raises(InvalidInputError, match=r"conv_5x5"):
        fit_fewshot({**kernels, bad_cell: nb201_kernel_texts(bad_cell)}, good, reference, features)
    with pytest.raises(InvalidInputError, match=r"'\|conv_5x5~0\|.*has no kernel list"):
        fit_fewshot(kernels, {**good, bad_cell: 1.0}, reference, features)
    for ms in (0.0, -2.0, math.nan, math.inf, "3"):
        with pytest.raises(InvalidInputError, match=rf"latency of '{archs[1][:12]}.*must be a positive"):
            fit_fewshot(kernels, {**good, archs[1]: ms}, reference, features)
    partial = {k: v for k, v in reference.items() if not k.startswith("pool")}
    with pytest.raises(InvalidInputError, match="the reference table lacks .* kernel keys: 'pool"):
        fit_fewshot(kernels, good, partial, features)
    with pytest.raises(InvalidInputError, match="no \\(MACs, bytes\\) features for 1 kernel keys"):
        fit_fewshot(kernels, good, reference, dict(list(features.items())[1:]))
    with pytest.raises(InvalidInputError, match=r"penalties \(0, 1, 1\): need three numbers > 0"):
        fit_fewshot_model(kernels, good, reference, features, penalties=(0, 1, 1))
    with pytest.raises(InvalidInputError, match="not in the fitted table"):
        predict_fewshot({OVERHEAD_KEY: 0.1}, kernels[archs[0]])


def test_read_measurements_names_the_line(tmp_path):
    good = tmp_path / "m.csv"
    good.write_text("index,arch,latency_ms\n0,a,1.5\n1,b,2\n")
    assert read_measurements(good) == {"a": 1.5, "b": 2.0}
    for body, message in (
        ("arch,ms\na,1\n", "needs a header with columns arch and latency_ms"),
        ("arch,latency_ms\na,1\nb,-1\n", "line 3: latency_ms '-1' of 'b' must be a positive number"),
        ("arch,latency_ms\na,1\nb,x\n", "line 3: latency_ms 'x'"),
        ("arch,latency_ms\na,1\na,2\n", "line 3: 'a' was already measured on line 2"),
    ):
        bad = tmp_path / "bad.csv"
        bad.write_text(body)
        with pytest.raises(InvalidInputError, match=message):
            read_measurements(bad)
    with pytest.raises(InvalidInputError, match="cannot read"):
        read_measurements(tmp_path / "missing.csv")


def test_fitted_table_round_trips_through_the_store(space, tmp_path):
    archs, reference, features, device = space
    at = "2026-01-01T00:00:00+00:00"
    entries = [Entry("cpu-ort", k, k.partition("|")[0], ms, ms, ms, 0.0, 5, 1, "cpu", "{}",
                     "ort-in-model", at) for k, ms in reference.items()]
    feats = [(k, k.partition("|")[0], int(m), int(b)) for k, (m, b) in features.items()]
    with TableStore(tmp_path / "t.sqlite") as store:
        with pytest.raises(InvalidInputError, match="no profiled entries for reference device"):
            reference_from_store(store, "cpu-ort")
        store.put_many(entries, feats)
        ref, ref_features = reference_from_store(store, "cpu-ort")
        assert ref == pytest.approx(reference) and ref_features == features
        fit = fit_fewshot_model({a: nb201_kernel_texts(a) for a in archs[:10]},
                                {a: device[a] for a in archs[:10]}, ref, ref_features)
        store.put_many(fewshot_entries("pixel", fit, "cpu-ort"))
        stored = {e.key: e.median_ms for e in store.entries("pixel")}
        assert stored == pytest.approx(fit.table)
        assert store.get("pixel", OVERHEAD_KEY).pipeline == "fewshot:cpu-ort:10-models"
