"""`hwlat search` and `hwlat nas predict` say what they estimated, report a budget that
constrains nothing, print the best --top N rows, run on table-only devices, and phrase missing
keys with CLI flags and one key."""

from __future__ import annotations

import json

import pytest

from hwlat.lut import TableStore
from tests.helpers.cli import invoke_hwlat
from tests.helpers.fewshot import nb201_fit_space
from tests.helpers.tables import entry


@pytest.fixture(scope="module")
def space():
    return nb201_fit_space()


@pytest.fixture
def table(space, tmp_path, hwlat_home):
    archs, reference, features, device = space
    path = tmp_path / "t.sqlite"
    with TableStore(path) as s:
        s.put_many([entry("cpu-ort", k, k.partition("|")[0], ms) for k, ms in reference.items()],
                   [(k, k.partition("|")[0], int(m), int(b)) for k, (m, b) in features.items()])
    return path


def test_search_estimate_says_what_it_estimated_and_a_loose_budget(table):
    r = invoke_hwlat("search", "--space", "nb201", "--device", "cpu-ort", "--latency-ms", "1000",
                     "--estimate", "--generations", "2", "--table", table, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["estimated_keys"] > 0
    assert any("kernel keys were estimated" in n for n in doc["notes"])
    assert any("constrains nothing" in n for n in doc["notes"])
    r = invoke_hwlat("search", "--space", "nb201", "--device", "cpu-ort", "--latency-ms", "1000",
                     "--estimate", "--generations", "2", "--table", table, "--top", "3")
    assert r.exit_code == 0, r.output
    assert "(best 3 of" in r.output and "were estimated" in r.output


def test_missing_keys_are_said_with_flags_and_one_key(table, tmp_path):
    r = invoke_hwlat("search", "--space", "nb201", "--device", "cpu-ort", "--latency-ms", "1",
                     "--generations", "2", "--table", table)
    assert r.exit_code == 2
    line = r.output
    assert "--estimate" in line and "estimate=True" not in line and "more)" in line
    assert line.count("|") < 40 and len(line) < 500
    cfg = tmp_path / "arch.json"
    cfg.write_text(json.dumps({"ops": ["k3_e3"] * 21, "r": 224}))
    r = invoke_hwlat("nas", "predict", "--space", "proxyless-mobile", "--config", cfg,
                     "--table", table)
    assert r.exit_code == 2
    assert "--estimate" in r.output and "estimate=True" not in r.output and len(r.output) < 500
    r = invoke_hwlat("nas", "predict", "--space", "proxyless-mobile", "--config", cfg,
                     "--table", table, "--estimate")
    assert r.exit_code == 0, r.output
    assert "kernel keys were estimated" in r.output


def test_lut_fit_names_one_missing_key(space, table, tmp_path):
    archs, _, _, device = space
    with TableStore(table) as s:  # the reference loses a few keys
        for e in s.entries("cpu-ort")[:5]:
            s.delete_entries("cpu-ort", e.key)
    m = tmp_path / "m.csv"
    m.write_text("arch,latency_ms\n" + "".join(f"{a},{device[a]!r}\n" for a in archs[:20]))
    r = invoke_hwlat("lut", "fit", "--space", "nb201", "--measurements", m, "--device", "pixel3",
                     "--reference-device", "cpu-ort", "--table", table)
    assert r.exit_code == 2
    assert r.output.count("'conv|") + r.output.count("'pool|") + r.output.count("'elementwise|") <= 1
    assert "more" in r.output


@pytest.mark.slow
def test_a_fitted_device_searches_and_predicts(space, table, tmp_path):
    archs, _, _, device = space
    m = tmp_path / "m.csv"
    m.write_text("arch,latency_ms\n" + "".join(f"{a},{device[a]!r}\n" for a in archs[:20]))
    r = invoke_hwlat("lut", "fit", "--space", "nb201", "--measurements", m, "--device", "pixel3",
                     "--reference-device", "cpu-ort", "--table", table, "--json")
    assert r.exit_code == 0, r.output
    fit = json.loads(r.stdout)
    assert fit["device"] == "pixel3" and fit["entries"] > 0
    assert "inf" not in json.dumps(fit["penalties"])
    r = invoke_hwlat("lut", "fit", "--space", "nb201", "--measurements", m, "--device", "pixel3",
                     "--reference-device", "cpu-ort", "--table", table)
    assert "inf" not in r.output.split()
    r = invoke_hwlat("search", "--space", "nb201", "-d", "pixel3", "--latency-ms", "3",
                     "--generations", "2", "--estimate", "--table", table)
    assert r.exit_code == 0, r.output
