"""A table file is never damaged: bad files are refused untouched, and killed writers lose no commit."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from hwlat.lut import TableError, TableStore
from tests.helpers.entries import entry

REPO = Path(__file__).resolve().parents[2]


def _real_table(path: Path, n: int = 2000) -> Path:
    with TableStore(path) as store:
        store.put_many(entry(f"k{i:05d}", cpu="x" * 100) for i in range(n))
    return path


def random_bytes(path: Path) -> Path:
    path.write_bytes(random.Random(0).randbytes(8192))
    return path


def truncated_table(path: Path) -> Path:
    data = _real_table(path).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def foreign_db(path: Path) -> Path:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    db.execute("INSERT INTO users (name) VALUES ('ada')")
    db.commit()
    db.close()
    return path


def newer_schema(path: Path) -> Path:
    _real_table(path, n=10)
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 2")
    db.close()
    return path


def wrong_columns(path: Path) -> Path:
    _real_table(path, n=10)
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE entries DROP COLUMN cv")
    db.close()
    return path


def empty_with_header_only(path: Path) -> Path:
    path.write_bytes(b"SQLite format 3\x00" + b"\x00" * 50)
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (random_bytes, "is not an SQLite database"),
        (truncated_table, "is truncated"),
        (foreign_db, r"is not an hwlat table \(application_id 0"),
        (newer_schema, "has table schema version 2; this hwlat reads version 1 — re-profile"),
        (wrong_columns, "damaged hwlat table"),
        (empty_with_header_only, "is not an SQLite database"),
    ],
)
@pytest.mark.parametrize("readonly", [False, True])
def test_bad_file_is_refused_untouched(tmp_path, make, message, readonly):
    path = make(tmp_path / "t.sqlite")
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(TableError, match=message) as err:
        TableStore(path, readonly=readonly)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def blank_db(path: Path) -> Path:
    db = sqlite3.connect(path)
    db.execute(
        "PRAGMA journal_mode = WAL"
    )  # writes a header, nothing else: what a creator killed early leaves
    db.close()
    return path


@pytest.mark.parametrize("make", [Path.touch, blank_db])
def test_empty_file_or_blank_db_becomes_a_table(tmp_path, make):
    path = tmp_path / "t.sqlite"
    make(path)
    with pytest.raises(TableError, match=f"{path} is an empty"):
        TableStore(path, readonly=True)
    with TableStore(path) as store:
        store.put_many([entry()])
    with TableStore(path, readonly=True) as store:
        assert store.entries() == [entry()]


CREATOR = """
import sys
from hwlat.lut import TableStore
from tests.helpers.entries import entry

with TableStore(sys.argv[1]) as store:
    store.put_many(entry(f"w{sys.argv[2]}-{i}") for i in range(100))
"""


def test_concurrent_creators(tmp_path):
    path = tmp_path / "new" / "t.sqlite"
    procs = [_python(CREATOR, str(path), str(w)) for w in range(4)]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    with TableStore(path, readonly=True) as store:
        assert store.devices() == [("cpu-ort", 400)]


def _python(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        env=os.environ | {"PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


WRITER = """
import sys
from hwlat.lut import TableStore
from tests.helpers.entries import entry

with TableStore(sys.argv[1]) as store:
    for b in range(100_000):
        store.put_many(entry(f"b{b}-{i}", cpu="x" * 200) for i in range(BATCH))
        print(b, flush=True)
"""
BATCH = 200


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_kill_9_loses_no_commit(tmp_path):
    path = tmp_path / "t.sqlite"
    proc = _python(WRITER.replace("BATCH", str(BATCH)), str(path))
    watchdog = threading.Timer(60, proc.kill)
    watchdog.start()
    try:
        reported = []
        while len(reported) < 3:
            line = proc.stdout.readline()
            assert line, f"writer died: {proc.stderr.read()}"
            reported.append(int(line))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        reported += [int(line) for line in proc.stdout.read().split()]  # printed before the kill
    finally:
        watchdog.cancel()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    with TableStore(path) as store:
        keys = store.keys("cpu-ort")
    batches: dict[int, int] = {}
    for k in keys:
        b = int(k[1:].split("-")[0])
        batches[b] = batches.get(b, 0) + 1
    assert set(reported) <= set(batches)
    assert all(n == BATCH for n in batches.values()), "a batch was partly committed"
    assert sorted(batches) == list(range(len(batches))), "batches commit in order"
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
