"""TableStore: put/get, upsert, bulk lookups, devices, and Entry validation."""

from __future__ import annotations

import math
import re
import sqlite3

import pytest

from hwlat.errors import InvalidInputError
from hwlat.lut import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    TableError,
    TableStore,
    default_table_path,
)
from tests.helpers.entries import entry


def test_put_get_round_trip(tmp_path):
    e = entry()
    with TableStore(tmp_path / "t.sqlite") as store:
        assert store.put_many([e]) == 1
        assert store.get("cpu-ort", e.key) == e
        assert store.get("cpu-ort", "missing") is None
        assert store.get("other", e.key) is None
    with TableStore(tmp_path / "t.sqlite", readonly=True) as store:
        assert store.get("cpu-ort", e.key) == e


def test_new_file_is_stamped_and_in_wal_mode(tmp_path):
    path = tmp_path / "deep" / "er" / "t.sqlite"
    TableStore(path).close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    meta = dict(db.execute("SELECT k, v FROM meta"))
    assert meta["schema_version"] == "1" and meta["created_by"].startswith("hwlat ")
    db.close()


def test_upsert_replaces(tmp_path):
    with TableStore(tmp_path / "t.sqlite") as store:
        store.put_many([entry(median_ms=1.0, q3_ms=2.0)])
        store.put_many([entry(median_ms=1.5, q3_ms=2.0, pipeline="tvm-default")])
        [got] = store.entries()
        assert (got.median_ms, got.pipeline) == (1.5, "tvm-default")


def test_get_many_thousands(tmp_path):
    keys = [f"elementwise|Relu|in:f32[1,{i}]|out:f32[1,{i}]|w:|" for i in range(5000)]
    with TableStore(tmp_path / "t.sqlite") as store:
        assert (
            store.put_many(
                entry(k, median_ms=float(i), q1_ms=0.0, q3_ms=1e9) for i, k in enumerate(keys)
            )
            == 5000
        )
        got = store.get_many("cpu-ort", [*keys, "absent", keys[0]])
        assert len(got) == 5000
        assert all(got[k].median_ms == float(i) for i, k in enumerate(keys))
        assert store.get_many("other-device", keys) == {}
        with pytest.raises(InvalidInputError, match="use get"):
            store.get_many("cpu-ort", keys[0])


def test_keys_devices_delete(tmp_path):
    with TableStore(tmp_path / "t.sqlite") as store:
        store.put_many([entry("a"), entry("b"), entry("a", device="cpu-tvm")])
        assert store.keys("cpu-ort") == {"a", "b"}
        assert store.devices() == [("cpu-ort", 2), ("cpu-tvm", 1)]
        assert [(e.device, e.key) for e in store.entries()] == [
            ("cpu-ort", "a"),
            ("cpu-ort", "b"),
            ("cpu-tvm", "a"),
        ]
        assert [e.key for e in store.entries("cpu-tvm")] == ["a"]
        assert store.delete_device("cpu-ort") == 2
        assert store.delete_device("cpu-ort") == 0
        assert store.devices() == [("cpu-tvm", 1)]


def test_put_many_is_one_transaction(tmp_path):
    def batch():
        yield entry("a")
        raise RuntimeError("measurement failed")

    with TableStore(tmp_path / "t.sqlite") as store:
        with pytest.raises(RuntimeError):
            store.put_many(batch())
        with pytest.raises(InvalidInputError, match="Entry"):
            store.put_many([entry("b"), {"key": "c"}])
        assert store.entries() == []


def test_readonly(tmp_path):
    missing = tmp_path / "nope" / "t.sqlite"
    with pytest.raises(TableError, match=f"no table at {missing}"):
        TableStore(missing, readonly=True)
    assert not missing.parent.exists()
    TableStore(tmp_path / "t.sqlite").close()
    with TableStore(tmp_path / "t.sqlite", readonly=True) as store:
        with pytest.raises(TableError, match="read-only"):
            store.put_many([entry()])


def test_default_table_path(monkeypatch, tmp_path):
    monkeypatch.setenv("HWLAT_HOME", str(tmp_path / "home"))
    assert default_table_path() == tmp_path / "home" / "tables.sqlite"
    monkeypatch.delenv("HWLAT_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_table_path() == tmp_path / ".cache" / "hwlat" / "tables.sqlite"


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(median_ms=-1.0), "median_ms"),
        (dict(q1_ms=math.nan), "q1_ms"),
        (dict(q3_ms=math.inf), "q3_ms"),
        (dict(median_ms="1.0"), "median_ms"),
        (dict(median_ms=True), "median_ms"),
        (dict(cv=10**400), "cv"),
        (dict(median_ms=2.0), "q1_ms <= median_ms <= q3_ms"),
        (dict(repeats=0), "repeats"),
        (dict(threads=2.0), "threads"),
        (dict(repeats=2**64), "repeats"),
        (dict(device=" "), "device"),
        (dict(key=""), "key"),
        (dict(cpu=None), "cpu"),
        (dict(kind="\ud800"), "kind"),
        (dict(versions="[]"), "versions"),
        (dict(versions="{"), "versions"),
        (dict(measured_at="yesterday"), "measured_at"),
        (dict(measured_at="2025-01-31T12:00:00"), "measured_at"),
        (dict(measured_at="2025-01-31T12:00:00+02:00"), "measured_at"),
    ],
)
def test_entry_validation(overrides, field):
    with pytest.raises(InvalidInputError, match=re.escape(field)) as err:
        entry(**overrides)
    assert "\n" not in str(err.value)


def test_entry_tolerates_rounding_and_normalizes():
    e = entry(q1_ms=1.0000000000001, median_ms=1.0, q3_ms=1.0)
    assert e.q1_ms > e.median_ms
    e = entry(q1_ms=0, median_ms=1, q3_ms=2, cv=-0.0, measured_at="2025-01-31T12:00:00Z")
    assert (type(e.q1_ms), type(e.median_ms), math.copysign(1, e.cv)) == (float, float, 1.0)
