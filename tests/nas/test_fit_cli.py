"""`hwlat lut fit` and `hwlat nas predict --space nb201`: a new device's table fitted from
whole-cell measurements in a CSV, written in one transaction, and queried for a CSV of cells."""

from __future__ import annotations

import csv
import json
import sqlite3

import numpy as np
import pytest

from hwlat.lut import Entry, TableStore
from hwlat.lut.fewshot import OVERHEAD_KEY
from tests.helpers.cli import invoke_hwlat
from tests.helpers.fewshot import OVERHEAD, nb201_fit_space, ref_ms

AT = "2026-01-01T00:00:00+00:00"


@pytest.fixture(scope="module")
def space():
    return nb201_fit_space()


@pytest.fixture
def store_path(space, tmp_path):
    archs, reference, features, device = space
    path = tmp_path / "t.sqlite"
    with TableStore(path) as store:
        store.put_many([Entry("cpu-ort", k, k.partition("|")[0], ms, ms, ms, 0.0, 5, 1, "cpu", "{}",
                              "ort-in-model", AT) for k, ms in reference.items()],
                       [(k, k.partition("|")[0], int(m), int(b)) for k, (m, b) in features.items()])
    return path


def _csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


_cli = invoke_hwlat


def test_fit_then_predict_recovers_a_rescaled_device(space, store_path, tmp_path):
    archs, _, _, device = space
    train, held_out = archs[:10], archs[10:30]
    m = _csv(tmp_path / "m.csv", ["arch", "latency_ms"], [(a, repr(device[a])) for a in train])
    r = _cli("lut", "fit", "--space", "nb201", "--measurements", m, "--device", "phone",
             "--table", store_path)
    assert r.exit_code == 0, r.output
    assert "from 10 models" in r.output
    a = _csv(tmp_path / "a.csv", ["index", "arch"], list(enumerate(held_out)))
    r = _cli("nas", "predict", "--space", "nb201", "--device", "phone", "--archs", a,
             "--table", store_path)
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(r.stdout.splitlines()))
    assert [row["arch"] for row in rows] == held_out
    for row in rows:
        assert float(row["latency_ms"]) == pytest.approx(device[row["arch"]], rel=1e-5)
    r = _cli("nas", "predict", "--space", "nb201", "--device", "phone", "--archs", a,
             "--table", store_path, "--json")
    got = json.loads(r.stdout)
    assert len(got) == len(held_out) and got[0]["arch"] == held_out[0]


def test_refit_replaces_the_fitted_table_and_keeps_the_reference(space, store_path, tmp_path):
    archs, reference, _, device = space
    for n in (10, 12):
        train = [*archs[:n - 1], archs[-1]]  # the last cell is the empty one: the overhead alone
        m = _csv(tmp_path / f"m{n}.csv", ["arch", "latency_ms"], [(a, device[a]) for a in train])
        r = _cli("lut", "fit", "--space", "nb201", "--measurements", m, "--device", "phone",
                 "--table", store_path)
        assert r.exit_code == 0, r.output
    with TableStore(store_path, readonly=True) as store:
        phone = store.entries("phone")
        assert {e.pipeline for e in phone} == {"fewshot:cpu-ort:12-models"}
        assert store.get("phone", OVERHEAD_KEY).median_ms == pytest.approx(OVERHEAD, rel=1e-5)
        assert len(store.entries("cpu-ort")) == len(reference)


def test_a_measured_device_is_not_overwritten(space, store_path, tmp_path):
    archs, _, _, device = space
    m = _csv(tmp_path / "m.csv", ["arch", "latency_ms"], [(a, device[a]) for a in archs[:10]])
    before = sqlite3.connect(store_path).execute("SELECT COUNT(*) FROM entries").fetchone()
    r = _cli("lut", "fit", "--space", "nb201", "--measurements", m, "--device", "cpu-ort",
             "--reference-device", "cpu-ort", "--table", store_path)
    assert r.exit_code == 2 and "both 'cpu-ort'" in r.output
    with TableStore(store_path) as store:  # a device with profiled entries
        e = store.entries("cpu-ort")[0]
        store.put_many([Entry("phone", e.key, e.kind, 1.0, 1.0, 1.0, 0.0, 5, 1, "cpu", "{}",
                              "ort-in-model", AT)])
    r = _cli("lut", "fit", "--space", "nb201", "--measurements", m, "--device", "phone",
             "--table", store_path)
    assert r.exit_code == 2 and "already has 1 measured entries" in r.output
    after = sqlite3.connect(store_path).execute("SELECT COUNT(*) FROM entries").fetchone()
    assert after[0] == before[0] + 1


@pytest.mark.parametrize("args, message", [
    (["nas", "predict", "--space", "nb201", "--device", "phone", "--config", "x.json"],
     "takes --archs"),
    (["nas", "predict", "--space", "ofa-mbv3", "--device", "phone", "--archs", "a.csv"],
     "takes one --config"),
    (["nas", "predict", "--space", "nb202", "--archs", "a.csv"], "unknown space 'nb202'"),
    (["lut", "fit", "--space", "ofa-mbv3", "--measurements", "m.csv", "--device", "p"],
     "no one-line architecture strings"),
])
def test_wrong_space_arguments_get_one_line(args, message, tmp_path):
    r = _cli(*args, "--table", tmp_path / "t.sqlite")
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output


def test_bad_cells_are_named_by_line(space, store_path, tmp_path):
    archs, _, _, device = space
    m = _csv(tmp_path / "m.csv", ["arch", "latency_ms"], [(archs[0], 1.0), ("|conv~0|+|x|", 2.0)])
    r = _cli("lut", "fit", "--space", "nb201", "--measurements", m, "--device", "phone",
             "--table", store_path)
    assert r.exit_code == 2 and "conv~0" in r.output
    bad_op = archs[1].replace("none", "max_pool", 1).replace("skip_connect", "max_pool", 1)
    a = tmp_path / "a.txt"
    a.write_text(f"{archs[0]}\n\n{bad_op}\n")
    r = _cli("nas", "predict", "--space", "nb201", "--device", "cpu-ort", "--archs", a,
             "--table", store_path)
    assert r.exit_code == 2 and "line 3" in r.output and "max_pool" in r.output
    a.write_text("")
    r = _cli("nas", "predict", "--space", "nb201", "--device", "cpu-ort", "--archs", a,
             "--table", store_path)
    assert r.exit_code == 2 and "no architectures" in r.output
    r = _cli("nas", "predict", "--space", "nb201", "--device", "cpu-ort", "--archs",
             tmp_path / "missing.csv", "--table", store_path)
    assert r.exit_code == 2 and "cannot read" in r.output


def test_a_roofline_device_is_a_prior_without_any_profiling(space, tmp_path):
    from hwlat.analytic.roofline import roofline_reference
    from hwlat.nas.nb201_lut import nb201_all_keys, nb201_kernel_texts

    archs, _, _, _ = space
    ref, _ = roofline_reference("roofline-sd855", nb201_all_keys())
    # a device that runs every kernel at 2.5x the roofline, plus 0.2 ms per model
    device = {a: 0.2 + 2.5 * sum(ref[k] for k in nb201_kernel_texts(a)) for a in archs}
    m = _csv(tmp_path / "m.csv", ["arch", "latency_ms"], [(a, device[a]) for a in archs[:10]])
    table = tmp_path / "fresh.sqlite"
    r = _cli("lut", "fit", "--space", "nb201", "--measurements", m, "--device", "phone",
             "--reference-device", "roofline-sd855", "--table", table)
    assert r.exit_code == 0, r.output
    a = _csv(tmp_path / "a.csv", ["arch"], [(x,) for x in archs[10:20]])
    r = _cli("nas", "predict", "--space", "nb201", "--device", "phone", "--archs", a,
             "--table", table)
    rows = list(csv.DictReader(r.stdout.splitlines()))
    for row in rows:
        assert float(row["latency_ms"]) == pytest.approx(device[row["arch"]], rel=1e-5)
    r = _cli("lut", "fit", "--space", "nb201", "--measurements", m, "--device", "phone2",
             "--table", table)  # cpu-ort, never profiled into this table
    assert r.exit_code == 2 and "no profiled entries for reference device 'cpu-ort'" in r.output


def test_zero_work_counts_ops_on_zero_inputs(tmp_path):
    """A device that also runs the ops hwlat's export folds away (convs and pools on the zeros of
    `none` edges) at half their live cost: `--zero-work` fits it, and predictions add that work."""
    from hwlat.nas.nb201_lut import (
        _edge_classes,
        nb201_all_keys,
        nb201_kernel_texts,
        nb201_unfolded_reference,
        nb201_unfolded_texts,
    )
    from hwlat.nas.spaces import nb201_arch, parse_nb201

    cell = "|none~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|skip_connect~0|none~1|none~2|"
    assert _edge_classes(parse_nb201(cell)) == [("nor_conv_3x3", "dead"),
                                               ("nor_conv_1x1", "zero-input")]
    assert nb201_unfolded_texts(cell, ("zero-input",)) == [
        f"unfolded|nor_conv_1x1|zero-input|stage{s}" for s in range(3) for _ in range(5)]

    keys = nb201_all_keys()
    reference = {t: ref_ms(t) for t in keys}
    features = {t: (1.0, 1.0) for t in keys}
    extra, _ = nb201_unfolded_reference(reference, features)
    stage0 = [t for t in keys if "in:float32[1x16x32x32]" in t and "out:float32[1x16x32x32]" in t]
    [relu] = [t for t in stage0 if t.startswith("elementwise|Relu|")]
    [conv] = [t for t in stage0 if t.startswith("conv|Conv|") and "kernel_shape=1x1" in t]
    adds = [t for t in stage0 if t.startswith("elementwise|Add|")]
    got = extra["unfolded|nor_conv_1x1|zero-input|stage0"]
    assert any(got == pytest.approx(reference[relu] + reference[conv] + reference[a]) for a in adds)

    rng = np.random.default_rng(1)
    cells = [nb201_arch(int(i)) for i in rng.choice(15625, 400, replace=False)]
    cells = [a for a in cells if nb201_kernel_texts(a)]
    with_zero = [a for a in cells if nb201_unfolded_texts(a, ("zero-input",))]
    train = with_zero[:15] + [a for a in cells if a not in with_zero][:25]
    held_out = [a for a in with_zero[15:35]]

    def device(a):
        return 0.3 + 2.0 * sum(reference[k] for k in nb201_kernel_texts(a)) + \
            0.5 * 2.0 * sum(extra[k] for k in nb201_unfolded_texts(a, ("zero-input",)))

    path = tmp_path / "t.sqlite"
    with TableStore(path) as store:
        store.put_many([Entry("cpu-ort", k, k.partition("|")[0], ms, ms, ms, 0.0, 5, 1, "cpu",
                              "{}", "ort-in-model", AT) for k, ms in reference.items()],
                       [(k, k.partition("|")[0], 1, 1) for k in keys])
    m = _csv(tmp_path / "m.csv", ["arch", "latency_ms"], [(a, device(a)) for a in train])
    r = _cli("lut", "fit", "--space", "nb201", "--measurements", m, "--device", "phone",
             "--zero-work", "--table", path)
    assert r.exit_code == 0, r.output
    assert "unfolded-zero-input x1" in r.output  # half of the live scale 2: x1 the reference
    a = _csv(tmp_path / "a.csv", ["arch"], [(x,) for x in held_out])
    r = _cli("nas", "predict", "--space", "nb201", "--device", "phone", "--archs", a,
             "--table", path)
    for row in csv.DictReader(r.stdout.splitlines()):
        assert float(row["latency_ms"]) == pytest.approx(device(row["arch"]), rel=1e-4)
