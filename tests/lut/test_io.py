"""JSON and CSV export/import: exact round trips, and hostile files refused whole."""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from hwlat.lut import (
    FIELDS,
    Entry,
    TableError,
    TableStore,
    export_csv,
    export_json,
    import_csv,
    import_json,
)
from hwlat.lut.store import CpuTime
from tests.helpers.entries import entry, entry_lists

FORMATS = {"json": (export_json, import_json), "csv": (export_csv, import_csv)}


def _round_trip(entries: list[Entry], fmt: str, folder: Path) -> list[Entry]:
    export, import_ = FORMATS[fmt]
    with TableStore(folder / "a.sqlite") as a, TableStore(folder / "b.sqlite") as b:
        a.put_many(entries)
        assert export(a, folder / f"t.{fmt}") == len(entries)
        assert import_(b, folder / f"t.{fmt}") == len(entries)
        return b.entries()


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip(tmp_path, fmt):
    entries = [
        entry("a", q1_ms=0.1, median_ms=0.1 + 0.2, q3_ms=1 / 3, cpu='quote " comma , newline \r\n'),
        entry("b", device="cpu-tvm", q1_ms=5e-324, median_ms=1e-300, q3_ms=1.7976931348623157e308),
    ]
    assert _round_trip(entries, fmt, tmp_path) == sorted(entries, key=lambda e: (e.device, e.key))


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_one_device(tmp_path, fmt):
    export, import_ = FORMATS[fmt]
    with TableStore(tmp_path / "a.sqlite") as a, TableStore(tmp_path / "b.sqlite") as b:
        a.put_many([entry("a"), entry("a", device="cpu-tvm")])
        assert export(a, tmp_path / "t", device="cpu-tvm") == 1
        import_(b, tmp_path / "t")
        assert b.devices() == [("cpu-tvm", 1)]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries=entry_lists)
def test_any_entries_round_trip_exactly(entries):
    expected = sorted(entries, key=lambda e: (e.device, e.key))
    for fmt in FORMATS:
        with tempfile.TemporaryDirectory() as folder:
            assert _round_trip(entries, fmt, Path(folder)) == expected


def test_export_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "t.json"
    target.write_text("old")
    with TableStore(tmp_path / "a.sqlite") as a:
        a.put_many([entry()])
        monkeypatch.setattr("os.replace", _boom)
        with pytest.raises(TableError, match="cannot write .*t.json: No space left"):
            export_json(a, target)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


def _boom(*args):
    raise OSError(28, "No space left on device")


def _row(**overrides) -> dict:
    return asdict(entry()) | overrides


def _doc(*rows, **top) -> dict:
    return {"format": "hwlat-table", "schema_version": 1, "entries": list(rows)} | top


BAD_JSON = {
    "not json": ("{", "is not valid JSON"),
    "not an object": ("[1, 2]", "not an hwlat table export .*a JSON list"),
    "wrong format": (json.dumps(_doc(format="nn-meter")), "format 'nn-meter'"),
    "no format": (json.dumps({"entries": []}), "format None"),
    "newer schema": (
        json.dumps(_doc(schema_version=2)),
        "schema version 2; this hwlat reads version 1",
    ),
    "bool schema": (json.dumps(_doc(schema_version=True)), "schema version True"),
    "entries not list": (json.dumps(_doc() | {"entries": {}}), "'entries' must be a list"),
    "row not object": (json.dumps(_doc(_row(), 3)), "row 2: expected an object"),
    "missing field": (
        json.dumps(_doc({k: v for k, v in _row().items() if k != "cv"})),
        r"row 1: missing fields \['cv'\]",
    ),
    "extra field": (json.dumps(_doc(_row(p99_ms=1.0))), r"row 1: .*unknown fields \['p99_ms'\]"),
    "string time": (
        json.dumps(_doc(_row(), _row(key="b", median_ms="1.2"))),
        "row 2: invalid median_ms='1.2'",
    ),
    "NaN": (json.dumps(_doc(_row(cv=float("nan")))), "row 1: invalid cv=nan"),
    "Infinity": (json.dumps(_doc(_row(q3_ms=float("inf")))), "row 1: invalid q3_ms=inf"),
    "huge float": (
        json.dumps(_doc(_row(q3_ms=12.5))).replace("12.5", "1e999"),
        "row 1: invalid q3_ms=inf",
    ),
    "huge int": (json.dumps(_doc(_row(q3_ms=10**400))), "row 1: invalid q3_ms=1000"),
    "endless int": ('{"format": "hwlat-table", "x": ' + "9" * 5000 + "}", "is not valid JSON"),
    "float repeats": (json.dumps(_doc(_row(repeats=5.0))), "row 1: invalid repeats=5.0"),
    "deep nesting": ("[" * 100_000 + "]" * 100_000, "is not valid JSON"),
    "cpu time of no entry": (
        json.dumps(_doc(_row(), cpu_times=[asdict(CpuTime("cpu-ort", "other", 0.5, 0.01, 9))])),
        "cpu time 1: no entry of device 'cpu-ort' with key 'other'",
    ),
    "cpu time twice": (
        json.dumps(_doc(_row(), cpu_times=[asdict(CpuTime("cpu-ort", _row()["key"], 0.5, 0.01, 9))] * 2)),
        "cpu time 2: a second CPU time",
    ),
    "negative cpu time": (
        json.dumps(_doc(_row(), cpu_times=[asdict(CpuTime("cpu-ort", _row()["key"], 0.5, 0.01, 9))
                                           | {"cpu_ms": -1.0}])),
        "cpu time 1: invalid cpu_ms",
    ),
    "cpu time field missing": (
        json.dumps(_doc(_row(), cpu_times=[{"device": "cpu-ort", "key": _row()["key"], "cpu_ms": 1.0}])),
        "cpu time 1: expected fields device, key, cpu_ms, cpu_cv, repeats",
    ),
    "cpu_times not list": (json.dumps(_doc(_row(), cpu_times={})), "'cpu_times' must be a list"),
}


@pytest.mark.parametrize("case", BAD_JSON)
def test_bad_json_import_changes_nothing(tmp_path, case):
    text, message = BAD_JSON[case]
    _assert_refused(tmp_path, tmp_path / "bad.json", text, import_json, message)


def _cells(**overrides) -> str:
    row = _row(key="bad") | overrides
    row["versions"] = '"' + row["versions"].replace('"', '""') + '"'
    return ",".join(str(row[f]) for f in FIELDS)


def _csv(header=",".join(FIELDS), rows=()) -> str:
    return "\n".join([header, _cells(key="good"), *rows]) + "\n"


BAD_CSV = {
    "empty": ("", "is empty; expected a header row"),
    "missing column": (
        _csv(header=",".join(FIELDS[:-1])),
        r"header: missing fields \['measured_at'\]",
    ),
    "extra column": (_csv(header=",".join(FIELDS) + ",p99_ms"), r"unknown fields \['p99_ms'\]"),
    "repeated column": (_csv(header=",".join(FIELDS) + ",cv"), "header repeats a column"),
    "short row": (_csv(rows=["cpu-ort,k"]), "row 2: 2 cells, the header has 13"),
    "text time": (
        _csv(rows=[_cells(median_ms="fast")]),
        "row 2: invalid median_ms='fast': not a number",
    ),
    "nan": (_csv(rows=[_cells(cv="nan")]), "row 2: invalid cv=nan"),
    "inf": (_csv(rows=[_cells(q3_ms="1e999")]), "row 2: invalid q3_ms=inf"),
    "float repeats": (
        _csv(rows=[_cells(repeats="5.0")]),
        "row 2: invalid repeats='5.0': not an integer",
    ),
    "endless int": (_csv(rows=[_cells(threads="9" * 5000)]), "row 2: invalid threads='9999"),
    "bad order": (_csv(rows=[_cells(q1_ms=3.0)]), "row 2: invalid quartiles"),
    "huge cell": (_csv(rows=[_cells(cpu="x" * 200_000)]), "field larger than field limit"),
    "one cpu column": (_csv(header=",".join(FIELDS) + ",cpu_ms"),
                       "CPU time columns cpu_ms, cpu_cv, cpu_repeats go together"),
    "partial cpu time": (
        "\n".join([",".join((*FIELDS, "cpu_ms", "cpu_cv", "cpu_repeats")),
                    _cells(key="good") + ",,,", _cells() + ",0.5,,"]) + "\n",
        "row 2: give all of cpu_ms, cpu_cv, cpu_repeats or none",
    ),
    "text cpu time": (
        "\n".join([",".join((*FIELDS, "cpu_ms", "cpu_cv", "cpu_repeats")),
                    _cells() + ",slow,0.1,3"]) + "\n",
        "row 1: invalid cpu_ms/cpu_cv 'slow'",
    ),
}


@pytest.mark.parametrize("case", BAD_CSV)
def test_bad_csv_import_changes_nothing(tmp_path, case):
    text, message = BAD_CSV[case]
    _assert_refused(tmp_path, tmp_path / "bad.csv", text, import_csv, message)


def test_not_utf8_or_missing(tmp_path):
    with TableStore(tmp_path / "t.sqlite") as store:
        (tmp_path / "bad.csv").write_bytes(b"\xff\xfe\x00garbage")
        with pytest.raises(TableError, match="bad.csv is not UTF-8 text"):
            import_csv(store, tmp_path / "bad.csv")
        with pytest.raises(TableError, match="cannot read .*nope.json"):
            import_json(store, tmp_path / "nope.json")


def test_csv_good_rows_import(tmp_path):
    with TableStore(tmp_path / "t.sqlite") as store:
        (tmp_path / "ok.csv").write_text(_csv(rows=[_cells()]))
        assert import_csv(store, tmp_path / "ok.csv") == 2
        assert store.get("cpu-ort", "bad") == entry("bad")


def _assert_refused(tmp_path, path, text, import_, message):
    path.write_text(text)
    with TableStore(tmp_path / "t.sqlite") as store:
        store.put_many([entry("existing")])
        before = store.entries()
        with pytest.raises(TableError, match=message) as err:
            import_(store, path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)
        assert store.entries() == before


def _with_cpu_times(store: TableStore) -> list[CpuTime]:
    """Entries on two devices, some with a thread CPU time and one without."""
    store.put_many([entry("a", median_ms=2.0, q3_ms=2.5), entry("b"), entry("c", device="cpu-tvm")],
                   cpu_times=[CpuTime("cpu-ort", "a", 1 / 3, 0.02, 7),
                              CpuTime("cpu-tvm", "c", 5e-324, 0.0, 1)])
    return [c for d in ("cpu-ort", "cpu-tvm") for c in store.cpu_times(d).values()]


@pytest.mark.parametrize("fmt", FORMATS)
def test_cpu_times_round_trip_exactly(tmp_path, fmt):
    export, import_ = FORMATS[fmt]
    with TableStore(tmp_path / "a.sqlite") as a, TableStore(tmp_path / "b.sqlite") as b:
        times = _with_cpu_times(a)
        assert len(times) == 2
        assert export(a, tmp_path / f"t.{fmt}") == 3
        assert import_(b, tmp_path / f"t.{fmt}") == 3
        assert b.entries() == a.entries()
        assert b.cpu_times("cpu-ort") == a.cpu_times("cpu-ort") == {"a": times[0]}
        assert b.cpu_times("cpu-tvm") == {"c": times[1]}


@pytest.mark.parametrize("fmt", FORMATS)
def test_one_device_export_carries_only_its_cpu_times(tmp_path, fmt):
    export, import_ = FORMATS[fmt]
    with TableStore(tmp_path / "a.sqlite") as a, TableStore(tmp_path / "b.sqlite") as b:
        _with_cpu_times(a)
        assert export(a, tmp_path / "t", device="cpu-tvm") == 1
        import_(b, tmp_path / "t")
        assert b.cpu_times("cpu-ort") == {} and set(b.cpu_times("cpu-tvm")) == {"c"}


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_import_without_cpu_times_drops_the_replaced_entries_old_ones(tmp_path, fmt):
    """Re-importing an entry measured again without a CPU time leaves no stale CPU time."""
    export, import_ = FORMATS[fmt]
    with TableStore(tmp_path / "a.sqlite") as a, TableStore(tmp_path / "b.sqlite") as b:
        a.put_many([entry("a")])
        export(a, tmp_path / "t")
        _with_cpu_times(b)
        import_(b, tmp_path / "t")
        assert "a" not in b.cpu_times("cpu-ort")


def test_exports_made_before_cpu_times_still_import(tmp_path):
    old_json = json.dumps(_doc(_row(key="k"), kernels=[], calibration=[]))
    old_csv = ",".join((*FIELDS, "macs", "bytes")) + "\n" + _cells(key="k") + ",10,20\n"
    for name, text, import_ in (("old.json", old_json, import_json), ("old.csv", old_csv, import_csv)):
        with TableStore(tmp_path / f"{name}.sqlite") as store:
            (tmp_path / name).write_text(text)
            assert import_(store, tmp_path / name) == 1
            assert store.get("cpu-ort", "k") == entry("k")
            assert store.cpu_times("cpu-ort") == {}


def test_csv_row_given_twice_keeps_its_last_cpu_time(tmp_path):
    header = ",".join((*FIELDS, "cpu_ms", "cpu_cv", "cpu_repeats"))
    (tmp_path / "t.csv").write_text("\n".join([header, _cells(key="k") + ",1.5,0.1,3",
                                               _cells(key="k") + ",2.5,0.2,4"]) + "\n")
    with TableStore(tmp_path / "t.sqlite") as store:
        assert import_csv(store, tmp_path / "t.csv") == 2
        assert store.cpu_times("cpu-ort") == {"k": CpuTime("cpu-ort", "k", 2.5, 0.2, 4)}
