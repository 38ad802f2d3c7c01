"""A table with a valid header but a damaged page is refused with one line and left byte for
byte unchanged, by readers and writers alike; rows hand-edited into nonsense are refused the
same way, as input from a file would be."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hwlat.lut import TableError, TableStore
from tests.helpers.entries import entry

REPO = Path(__file__).resolve().parents[2]


def small_table(path: Path) -> Path:
    with TableStore(path) as store:
        store.put_many((entry(f"k{i:04d}", cpu="x" * 60) for i in range(150)),
                       [(f"k{i:04d}", "conv", 1000 * i, 10 * i) for i in range(150)])
        store.put_calibration("cpu-ort", "m1", {"kernel_sum_ms": 1.0}, 2.0)
    assert not Path(f"{path}-wal").exists()
    return path


def damage_page(src: Path, dst: Path, page: int) -> Path:
    """src with page `page` (1-based) overwritten in its b-tree header; the file header intact."""
    data = bytearray(src.read_bytes())
    size = int.from_bytes(data[16:18], "big")
    start = (page - 1) * size + (100 if page == 1 else 0)
    data[start:start + 12] = b"\x0d\xff\xff\xff\xff\x7f\xff\xff\xff\xff\xff\xff"
    dst.write_bytes(bytes(data))
    return dst


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pages(path: Path) -> int:
    data = path.read_bytes()
    return len(data) // int.from_bytes(data[16:18], "big")


def test_every_damaged_page_is_refused_untouched(tmp_path):
    table = small_table(tmp_path / "good.sqlite")
    n = pages(table)
    assert n >= 5
    for page in range(2, n + 1):
        bad = damage_page(table, tmp_path / f"bad{page}.sqlite", page)
        before = digest(bad)
        for readonly in (False, True):
            with pytest.raises(TableError) as e:
                with TableStore(bad, readonly=readonly) as store:
                    store.entries()
                    store.put_many([entry("new")])
            assert "\n" not in str(e.value) and str(bad) in str(e.value), (page, str(e.value))
            assert digest(bad) == before, f"page {page}, readonly={readonly}: the file changed"
            assert not Path(f"{bad}-wal").exists()


def hwlat(*args, home):
    env = dict(os.environ, HWLAT_HOME=str(home), PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "hwlat.cli", *args], capture_output=True,
                          text=True, env=env, timeout=300)


def test_the_cli_refuses_a_damaged_table_in_one_line(tmp_path):
    table = small_table(tmp_path / "good.sqlite")
    bad = damage_page(table, tmp_path / "bad.sqlite", pages(table))
    before = digest(bad)
    rows = tmp_path / "in.json"
    rows.write_text(json.dumps({"entries": [json.loads(json.dumps(entry("z").__dict__))]}))
    for args in (["lut", "show"], ["lut", "show", "--device", "cpu-ort"],
                 ["lut", "import", str(rows)], ["lut", "export", str(tmp_path / "o.csv")]):
        r = hwlat(*args, "--table", str(bad), home=tmp_path)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "damaged" in lines[0], (args, r.stderr)
        assert digest(bad) == before, args


def hand_edit(path: Path, *statements: str) -> Path:
    db = sqlite3.connect(path)
    for s in statements:
        db.execute(s)
    db.commit()
    db.close()
    return path


@pytest.mark.parametrize("statement, call, message", [
    ("UPDATE kernels SET macs = 'lots' WHERE key = 'k0001'", "features", "bad kernels row"),
    ("UPDATE kernels SET bytes = -4 WHERE key = 'k0001'", "features", "bad kernels row"),
    ("UPDATE calibration SET features = '[1, 2]'", "calibration", "JSON object"),
    ("UPDATE calibration SET features = '" + "[" * 10000 + "]" * 10000 + "'", "calibration", "JSON object"),
    ("UPDATE calibration SET features = '{\"kernel_sum_ms\": \"x\"}'", "calibration", "JSON object"),
    ("UPDATE calibration SET measured_ms = 0", "calibration", "positive number"),
    ("UPDATE calibration SET measured_ms = 'slow'", "calibration", "positive number"),
    ("UPDATE entries SET device = CAST('cpu-ort' AS BLOB) WHERE key = 'k0001'", "devices", "device"),
    ("UPDATE entries SET median_ms = 'fast' WHERE key = 'k0001'", "entries", "bad stored entry"),
])
def test_hand_edited_rows_are_refused_like_bad_input(tmp_path, statement, call, message):
    path = hand_edit(small_table(tmp_path / "t.sqlite"), statement)
    with TableStore(path, readonly=True) as store:
        with pytest.raises(TableError, match=message) as e:
            fn = getattr(store, call)
            fn("cpu-ort") if call in ("calibration", "entries") else fn()
    assert "\n" not in str(e.value)


def test_lut_show_refuses_a_blob_device_name(tmp_path):
    path = hand_edit(small_table(tmp_path / "t.sqlite"),
                     "UPDATE entries SET device = CAST('cpu-ort' AS BLOB) WHERE key = 'k0001'")
    r = hwlat("lut", "show", "--table", str(path), home=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and len(r.stderr.splitlines()) == 1, r.stderr


def test_calibration_rows_too_far_apart_to_fit_are_one_error():
    from hwlat.errors import InvalidInputError
    from hwlat.lut.correct import fit_correction

    rows = [({"conv_ms": 1e308, "one": 1.0}, 1e-300)] * 3
    with pytest.raises(InvalidInputError, match="cannot be fitted"):
        fit_correction(rows)


def _counting_checks(monkeypatch) -> list:
    """TableStore's integrity checks, counted."""
    from hwlat.lut import store as store_mod

    calls = []
    real = store_mod.TableStore._check_integrity

    def counted(self, db):
        calls.append(self.path)
        return real(self, db)

    monkeypatch.setattr(store_mod.TableStore, "_check_integrity", counted)
    return calls


def _settled(monkeypatch, path: Path) -> None:
    """The table's timestamps older than the (shortened) settling time a clean check needs."""
    from hwlat.lut import store as store_mod

    monkeypatch.setattr(store_mod, "_SETTLED_NS", 50_000_000)
    while time.time_ns() - min(path.stat().st_mtime_ns, path.stat().st_ctime_ns) < 60_000_000:
        time.sleep(0.02)


@pytest.mark.parametrize("how", ["in place", "replaced"])
def test_a_table_damaged_after_a_clean_check_is_refused(tmp_path, hwlat_home, monkeypatch, how):
    table = small_table(tmp_path / "t.sqlite")
    _settled(monkeypatch, table)
    calls = _counting_checks(monkeypatch)
    for _ in range(3):
        with TableStore(table, readonly=True) as store:
            assert len(store.entries("cpu-ort")) == 150
    assert len(calls) == 1  # checked once: the file did not change
    assert list((hwlat_home / "table-checks").iterdir())
    # the same size; in place: the same inode too
    damaged = damage_page(table, tmp_path / "d.sqlite", pages(table)).read_bytes()
    if how == "in place":
        with open(table, "r+b") as f:
            f.write(damaged)
    else:
        (tmp_path / "new.sqlite").write_bytes(damaged)
        os.replace(tmp_path / "new.sqlite", table)
    before = digest(table)
    with pytest.raises(TableError, match="damaged"):
        TableStore(table, readonly=True)
    assert len(calls) == 2 and digest(table) == before


def test_a_write_or_a_fresh_file_is_checked_again(tmp_path, hwlat_home, monkeypatch):
    table = small_table(tmp_path / "t.sqlite")
    calls = _counting_checks(monkeypatch)
    TableStore(table, readonly=True).close()
    TableStore(table, readonly=True).close()
    assert len(calls) == 2  # modified within the last seconds: not recorded as clean
    _settled(monkeypatch, table)
    TableStore(table, readonly=True).close()
    TableStore(table, readonly=True).close()
    assert len(calls) == 3
    with TableStore(table) as store:  # a write open always checks
        store.put_many([entry("new")])
    assert len(calls) == 4
    TableStore(table, readonly=True).close()
    assert len(calls) == 5  # the write changed the file


def test_a_home_that_cannot_be_written_only_means_checking_every_time(tmp_path, monkeypatch):
    table = small_table(tmp_path / "t.sqlite")
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("HWLAT_HOME", str(blocker / "home"))  # under a regular file
    _settled(monkeypatch, table)
    calls = _counting_checks(monkeypatch)
    for _ in range(2):
        with TableStore(table, readonly=True) as store:
            assert store.devices() == [("cpu-ort", 150)]
    assert len(calls) == 2
