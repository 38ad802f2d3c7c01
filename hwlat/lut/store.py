"""The latency table: measured kernel latencies per (device, KernelKey.text()) in one SQLite file.

An existing file is validated read-only before anything writes to it, so pointing hwlat at the
wrong file never damages that file.

Beside each entry's wall-clock figures, a kernel may have its thread CPU time (`cpu_times`: what
the kernel costs the core that runs it, free of the time other processes take on a shared
machine). That table was added to schema version 1 later: a table made before it opens as it
is (read-only: no CPU times), and gets the empty table the first time it is opened for writing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import astuple, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path

from hwlat.errors import HwlatError, InvalidInputError
from hwlat.paths import home
from hwlat.version import __version__

SCHEMA_VERSION = 1
APPLICATION_ID = 0x68776C74  # b"hwlt": marks an SQLite file as an hwlat table
_BUSY_TIMEOUT_S = 30.0  # profiling workers share one table; wait for each other's commits
_CHUNK = 500  # keys per IN (...) query, far below SQLite's bound-parameter limit
_MAX_INT = 2**63 - 1  # SQLite INTEGER


class TableError(HwlatError):
    """A latency table (or an export of one) that is missing, corrupt, foreign or of another version."""


@dataclass(frozen=True)
class Entry:
    """One measured kernel latency; validated on construction, so a stored Entry is always sound."""

    device: str
    key: str  # KernelKey.text()
    kind: str
    median_ms: float
    q1_ms: float
    q3_ms: float
    cv: float  # coefficient of variation of the samples
    repeats: int
    threads: int
    cpu: str  # CPU model
    versions: str  # JSON object text, e.g. '{"onnxruntime": "1.23.0"}'
    pipeline: str  # how it was measured, e.g. "ort-profiler", "tvm-default"
    measured_at: str  # ISO 8601 UTC

    def __post_init__(self) -> None:
        for name in FIELDS:
            kind = _FIELD_TYPES[name]
            value = getattr(self, name)
            if kind == "str":
                _check_text(name, value)
            elif kind == "float":
                object.__setattr__(self, name, _nonneg_float(name, value))
            else:
                _check_count(name, value)
        for name in ("device", "key"):
            if not getattr(self, name).strip():
                raise _invalid(name, getattr(self, name), "must not be empty")
        q1, med, q3 = self.q1_ms, self.median_ms, self.q3_ms
        if not (_le(q1, med) and _le(med, q3)):
            raise InvalidInputError(
                f"invalid quartiles q1_ms={q1!r}, median_ms={med!r}, q3_ms={q3!r}: "
                "need q1_ms <= median_ms <= q3_ms"
            )
        try:
            versions = json.loads(self.versions)
        except (ValueError, RecursionError):
            versions = None
        if not isinstance(versions, dict):
            raise _invalid(
                "versions", self.versions, 'must be a JSON object, e.g. {"onnxruntime": "1.23.0"}'
            )
        try:
            at = datetime.fromisoformat(self.measured_at)
        except ValueError:
            at = None
        if at is None or at.utcoffset() is None or at.utcoffset().total_seconds() != 0:
            raise _invalid(
                "measured_at",
                self.measured_at,
                "must be ISO 8601 UTC, e.g. 2025-01-31T12:00:00+00:00",
            )


FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Entry))
# "str" | "float" | "int": annotations are strings under postponed evaluation
_FIELD_TYPES = {f.name: f.type for f in fields(Entry)}
_SQL_TYPES = {"str": "TEXT", "float": "REAL", "int": "INTEGER"}
_COLUMNS = ", ".join(FIELDS)
_SCHEMA = (
    "CREATE TABLE entries ("
    + ", ".join(f"{n} {_SQL_TYPES[_FIELD_TYPES[n]]} NOT NULL" for n in FIELDS)
    + ", PRIMARY KEY (device, key)) WITHOUT ROWID",
    "CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID",
    # device-independent work of each kernel key: what estimates for table misses are fitted on
    "CREATE TABLE kernels (key TEXT PRIMARY KEY, kind TEXT NOT NULL, macs INTEGER, bytes INTEGER)"
    " WITHOUT ROWID",
    # whole models measured end to end: what the prediction's correction is fitted on
    "CREATE TABLE calibration (device TEXT NOT NULL, model TEXT NOT NULL, features TEXT NOT NULL,"
    " measured_ms REAL NOT NULL, measured_at TEXT NOT NULL, PRIMARY KEY (device, model)) WITHOUT ROWID",
)
# thread CPU time of an entry's kernel (median, robust CV, runs): an addition to schema version 1
_CPU_SCHEMA = ("CREATE TABLE IF NOT EXISTS cpu_times (device TEXT NOT NULL, key TEXT NOT NULL,"
               " cpu_ms REAL NOT NULL, cpu_cv REAL NOT NULL, repeats INTEGER NOT NULL,"
               " PRIMARY KEY (device, key)) WITHOUT ROWID")


@dataclass(frozen=True)
class CpuTime:
    """The thread CPU time of one entry's kernel: median and robust CV over `repeats` runs."""

    device: str
    key: str
    cpu_ms: float
    cpu_cv: float
    repeats: int

    def __post_init__(self) -> None:
        _check_text("device", self.device)
        _check_text("key", self.key)
        object.__setattr__(self, "cpu_ms", _nonneg_float("cpu_ms", self.cpu_ms))
        object.__setattr__(self, "cpu_cv", _nonneg_float("cpu_cv", self.cpu_cv))
        _check_count("repeats", self.repeats)


_OWN_META = frozenset({"created_by", "schema_version"})


def default_table_path() -> Path:
    """$HWLAT_HOME/tables.sqlite, HWLAT_HOME defaulting to ~/.cache/hwlat."""
    return home() / "tables.sqlite"


class TableStore:
    """An open latency table; use as a context manager or call close()."""

    def __init__(self, path: Path | str, *, readonly: bool = False):
        self.path = Path(path).expanduser()
        self.readonly = readonly
        if readonly and not self.path.exists():
            raise TableError(f"no table at {self.path}")
        # A missing file, or a blank database (a creator killed early, or one creating it now), gets
        # the schema under SQLite's write lock. Anything else is judged read-only before any write.
        blank = not self.path.exists() or (not readonly and self.path.stat().st_size == 0)
        if not blank:
            sidecars = [Path(f"{self.path}{s}") for s in ("-wal", "-shm")]
            created = [f for f in sidecars if not f.exists()]
            state = _file_state(self.path)  # before opening: a change meanwhile voids the check
            ro = self._open_ro()
            try:
                blank = self._validate(ro)
                if readonly and blank:
                    raise TableError(f"{self.path} is an empty SQLite database, not an hwlat table")
                # before any write, and before the journal mode; a read-only open skips it when
                # the file has not changed since a clean check
                if not blank and not (readonly and _checked_clean(self.path, state)):
                    self._check_integrity(ro)
                    if readonly:
                        _record_clean(self.path, state)
            except BaseException:
                ro.close()
                _remove_empty_sidecars(created)
                raise
            if readonly:
                self._db = ro
                return
            ro.close()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # e.g. an HWLAT_HOME that cannot be created
            raise TableError(f"cannot create the folder of {self.path}: {e.strerror or e}") from e
        self._db = self._open_rw()
        try:
            self._use_wal()
            if blank:
                self._create_if_blank()
                self._validate(self._db)
            else:
                self._add_cpu_times()
        except BaseException:
            self._db.close()
            raise

    def __enter__(self) -> TableStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    # --- writing

    def put_many(self, entries: Iterable[Entry],
                 features: Iterable[tuple[str, str, int | None, int | None]] = (),
                 calibration: Iterable[tuple[str, str, str, float, str]] = (),
                 cpu_times: Iterable[CpuTime] = ()) -> int:
        """Insert or replace entries, (key, kind, macs, bytes) features of their kernels,
        (device, model, features JSON, measured_ms, measured_at) calibration samples and the
        entries' thread CPU times, in one transaction; returns how many entries were written.
        A replaced entry's old CPU time goes with it unless `cpu_times` gives a new one."""
        rows = []
        for e in entries:
            if not isinstance(e, Entry):
                raise InvalidInputError(f"put_many takes Entry objects, got {type(e).__name__}")
            rows.append(astuple(e))
        cpu = []
        for c in cpu_times:
            if not isinstance(c, CpuTime):
                raise InvalidInputError(f"put_many's cpu_times takes CpuTime objects, got {type(c).__name__}")
            cpu.append(astuple(c))
        written = {(r[0], r[1]) for r in rows}
        if any((c[0], c[1]) not in written for c in cpu):
            raise InvalidInputError("put_many: a CPU time needs its entry written in the same call")
        placeholders = ", ".join("?" * len(FIELDS))
        with self._write():
            self._db.executemany(
                f"INSERT OR REPLACE INTO entries ({_COLUMNS}) VALUES ({placeholders})", rows
            )
            self._db.executemany("DELETE FROM cpu_times WHERE device = ? AND key = ?", list(written))
            self._db.executemany("INSERT INTO cpu_times VALUES (?, ?, ?, ?, ?)", cpu)
            self._db.executemany("INSERT OR REPLACE INTO kernels VALUES (?, ?, ?, ?)", list(features))
            self._db.executemany("INSERT OR REPLACE INTO calibration VALUES (?, ?, ?, ?, ?)",
                                 list(calibration))
        return len(rows)

    def replace_device(self, device: str, entries: Iterable[Entry]) -> int:
        """Every entry of `device` replaced by `entries` (all of that device) in one transaction:
        a crash leaves the old entries or the new ones, never neither."""
        rows = []
        for e in entries:
            if not isinstance(e, Entry) or e.device != device:
                raise InvalidInputError(f"replace_device('{device}') takes that device's Entry objects")
            rows.append(astuple(e))
        placeholders = ", ".join("?" * len(FIELDS))
        with self._write():
            self._db.execute("DELETE FROM entries WHERE device = ?", (device,))
            self._db.execute("DELETE FROM cpu_times WHERE device = ?", (device,))
            self._db.executemany(
                f"INSERT INTO entries ({_COLUMNS}) VALUES ({placeholders})", rows
            )
        return len(rows)

    def put_meta(self, items: dict[str, str], drop: Iterable[str] = ()) -> None:
        """Set text values of the table's meta store, and delete the keys in `drop`, in one
        transaction. Keys "created_by" and "schema_version" are hwlat's own."""
        for k, v in items.items():
            if not isinstance(k, str) or not isinstance(v, str) or k in _OWN_META:
                raise InvalidInputError(f"meta key {k!r}: need a str key (not {sorted(_OWN_META)}) "
                                        "and a str value")
        with self._write():
            self._db.executemany("DELETE FROM meta WHERE k = ?", [(k,) for k in drop])
            self._db.executemany("INSERT OR REPLACE INTO meta (k, v) VALUES (?, ?)", list(items.items()))

    def replace_device_with_meta(self, device: str, entries: Iterable[Entry],
                                 meta: dict[str, str]) -> int:
        """`replace_device` and `put_meta(meta)` in one transaction: a crash leaves both old or
        both new."""
        rows = []
        for e in entries:
            if not isinstance(e, Entry) or e.device != device:
                raise InvalidInputError(f"replace_device('{device}') takes that device's Entry objects")
            rows.append(astuple(e))
        if any(not isinstance(k, str) or not isinstance(v, str) or k in _OWN_META
               for k, v in meta.items()):
            raise InvalidInputError("meta: need str keys (not hwlat's own) and str values")
        placeholders = ", ".join("?" * len(FIELDS))
        with self._write():
            self._db.execute("DELETE FROM entries WHERE device = ?", (device,))
            self._db.execute("DELETE FROM cpu_times WHERE device = ?", (device,))
            self._db.executemany(
                f"INSERT INTO entries ({_COLUMNS}) VALUES ({placeholders})", rows
            )
            self._db.executemany("INSERT OR REPLACE INTO meta (k, v) VALUES (?, ?)", list(meta.items()))
        return len(rows)

    def delete_device(self, device: str) -> int:
        """Delete every entry of one device; returns how many were deleted."""
        with self._write():
            self._db.execute("DELETE FROM cpu_times WHERE device = ?", (device,))
            return self._db.execute("DELETE FROM entries WHERE device = ?", (device,)).rowcount

    # --- reading

    def get(self, device: str, key: str) -> Entry | None:
        rows = self._rows(f"SELECT {_COLUMNS} FROM entries WHERE device = ? AND key = ?", (device, key))
        return self._entry(rows[0]) if rows else None

    def get_many(self, device: str, keys: Iterable[str]) -> dict[str, Entry]:
        """The entries found among keys, by key; keys without an entry are absent from the result."""
        if isinstance(keys, str):
            raise InvalidInputError(
                f"get_many takes an iterable of keys, not one str {keys[:60]!r}; use get()"
            )
        wanted = list(dict.fromkeys(keys))
        found: dict[str, Entry] = {}
        for i in range(0, len(wanted), _CHUNK):
            chunk = wanted[i : i + _CHUNK]
            query = f"SELECT {_COLUMNS} FROM entries WHERE device = ? AND key IN ({', '.join('?' * len(chunk))})"
            for row in self._rows(query, (device, *chunk)):
                entry = self._entry(row)
                found[entry.key] = entry
        return found

    def keys(self, device: str) -> set[str]:
        keys = {k for (k,) in self._rows("SELECT key FROM entries WHERE device = ?", (device,))}
        if not all(isinstance(k, str) for k in keys):
            raise TableError(f"{self.path}: a stored key of device {_shown(device)} is not text")
        return keys

    def entries(self, device: str | None = None) -> list[Entry]:
        """All entries (of one device, if given), ordered by device then key."""
        where, args = ("WHERE device = ?", (device,)) if device is not None else ("", ())
        rows = self._rows(f"SELECT {_COLUMNS} FROM entries {where} ORDER BY device, key", args)
        return [self._entry(row) for row in rows]

    def cpu_times(self, device: str, keys: Iterable[str] | None = None) -> dict[str, CpuTime]:
        """The thread CPU times of a device's entries (of `keys`, if given), by key; entries
        measured without one (or a table made before CPU times were recorded) are absent."""
        if not self._has_cpu_times():
            return {}
        cols = "device, key, cpu_ms, cpu_cv, repeats"
        if keys is None:
            rows = self._rows(f"SELECT {cols} FROM cpu_times WHERE device = ?", (device,))
        else:
            wanted, rows = list(dict.fromkeys(keys)), []
            for i in range(0, len(wanted), _CHUNK):
                chunk = wanted[i : i + _CHUNK]
                rows += self._rows(f"SELECT {cols} FROM cpu_times WHERE device = ? AND key IN "
                                   f"({', '.join('?' * len(chunk))})", (device, *chunk))
        out = {}
        for row in rows:
            try:
                out[row[1]] = CpuTime(*row)
            except InvalidInputError as e:
                raise TableError(f"{self.path}: bad stored CPU time ({row[0]!r}, {row[1]!r}): {e}") from e
        return out

    def put_calibration(self, device: str, model: str, features: dict[str, float],
                        measured_ms: float) -> None:
        """Record one model measured end to end with the features of its prediction."""
        if not (math.isfinite(measured_ms) and measured_ms > 0):
            raise InvalidInputError(f"measured_ms must be a positive number, got {measured_ms!r}")
        with self._write():
            self._db.execute(
                "INSERT OR REPLACE INTO calibration VALUES (?, ?, ?, ?, ?)",
                (device, model, json.dumps(features, sort_keys=True), float(measured_ms),
                 datetime.now(UTC).isoformat(timespec="seconds")),
            )

    def calibration(self, device: str) -> list[tuple[str, dict[str, float], float]]:
        """(model, features, measured_ms) of every model measured end to end on the device."""
        rows = self._rows(
            "SELECT model, features, measured_ms FROM calibration WHERE device = ? ORDER BY model", (device,))
        out = []
        for model, feats, ms in rows:
            def bad(why: str, model=model) -> TableError:
                return TableError(f"{self.path}: bad calibration row for {_shown(model)}: {why}")
            if not isinstance(model, str):
                raise bad(f"the model name is {type(model).__name__}, not text")
            try:
                parsed = json.loads(feats) if isinstance(feats, str) else None
            except (ValueError, RecursionError):
                parsed = None
            if not isinstance(parsed, dict) or not all(
                    isinstance(k, str) and _is_number(v) and math.isfinite(v) for k, v in parsed.items()):
                raise bad("features must be a JSON object of finite numbers")
            if not (_is_number(ms) and math.isfinite(ms) and ms > 0):
                raise bad(f"measured_ms must be a positive number, got {_shown(ms)}")
            out.append((model, {k: float(v) for k, v in parsed.items()}, float(ms)))
        return out

    def meta(self, key: str) -> str | None:
        """A text value of the table's meta store, or None."""
        row = self._db.execute("SELECT v FROM meta WHERE k = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def calibration_rows(self, device: str | None = None) -> list[tuple[str, str, str, float, str]]:
        """(device, model, features JSON, measured_ms, measured_at) of the calibration samples
        (of one device, if given), as stored: what an export carries."""
        where, args = ("WHERE device = ?", (device,)) if device is not None else ("", ())
        return self._db.execute(f"SELECT device, model, features, measured_ms, measured_at FROM "
                                f"calibration {where} ORDER BY device, model", args).fetchall()

    def delete_entries(self, device: str, key: str | None = None) -> int:
        """Delete one device's entries (only `key`'s, if given) and, when all go, its calibration
        samples; returns how many entries were deleted."""
        with self._write():
            if key is not None:
                self._db.execute("DELETE FROM cpu_times WHERE device = ? AND key = ?", (device, key))
                return self._db.execute("DELETE FROM entries WHERE device = ? AND key = ?",
                                        (device, key)).rowcount
            self._db.execute("DELETE FROM calibration WHERE device = ?", (device,))
            self._db.execute("DELETE FROM cpu_times WHERE device = ?", (device,))
            return self._db.execute("DELETE FROM entries WHERE device = ?", (device,)).rowcount

    def features(self) -> dict[str, tuple[str, int | None, int | None]]:
        """key -> (kind, MACs, bytes moved) for every kernel whose work is known."""
        out = {}
        for k, kind, macs, nbytes in self._rows("SELECT key, kind, macs, bytes FROM kernels"):
            if not isinstance(k, str) or not isinstance(kind, str) or not all(
                    v is None or (isinstance(v, int) and 0 <= v) for v in (macs, nbytes)):
                raise TableError(f"{self.path}: bad kernels row {_shown(k)}: key and kind must be "
                                 f"text, macs and bytes whole numbers >= 0 or NULL, got "
                                 f"{_shown(kind)}, {_shown(macs)}, {_shown(nbytes)}")
            out[k] = (kind, macs, nbytes)
        return out

    def devices(self) -> list[tuple[str, int]]:
        """(device, entry count) for every device in the table, ordered by device."""
        rows = self._rows("SELECT device, COUNT(*) FROM entries GROUP BY device ORDER BY device")
        for device, _ in rows:
            try:
                _check_text("device", device)
            except InvalidInputError as e:
                raise TableError(f"{self.path}: bad stored device name: {e}") from e
        return rows

    # --- internals

    def _rows(self, query: str, args: tuple = ()) -> list[tuple]:
        """All rows of a query; an SQLite error while reading (a damaged page) is one TableError."""
        try:
            return self._db.execute(query, args).fetchall()
        except sqlite3.Error as e:
            raise TableError(f"cannot read {self.path}: {_one_line(e)}") from e

    def _check_integrity(self, db: sqlite3.Connection) -> None:
        """SQLite's quick_check on a read-only connection: damaged pages or indexes refuse the
        file before anything reads from or writes to it."""
        try:
            problems = [r[0] for r in db.execute("PRAGMA quick_check(3)").fetchall()]
        except sqlite3.Error as e:
            raise TableError(f"{self.path} is a damaged SQLite database ({_one_line(e)})") from e
        if problems != ["ok"]:
            raise TableError(f"{self.path} is a damaged SQLite database (quick_check: "
                             f"{_one_line('; '.join(map(str, problems)))})")

    def _entry(self, row: tuple) -> Entry:
        try:
            return Entry(*row)
        except InvalidInputError as e:
            raise TableError(f"{self.path}: bad stored entry ({row[0]!r}, {row[1]!r}): {e}") from e

    @contextmanager
    def _write(self) -> Iterator[None]:
        if self.readonly:
            raise TableError(f"{self.path} was opened read-only")
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise TableError(f"cannot write {self.path}: {_one_line(e)}") from e

    def _use_wal(self) -> None:
        try:
            self._db.execute("PRAGMA journal_mode = WAL")
            # with WAL, NORMAL still keeps every commit through a killed process
            self._db.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as e:
            raise TableError(
                f"cannot open {self.path} for writing ({e}); pass readonly=True to read it"
            ) from e

    def _open_rw(self) -> sqlite3.Connection:
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE in _write)
        try:
            return sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as e:
            raise TableError(f"cannot open {self.path}: {e}") from e

    def _open_ro(self) -> sqlite3.Connection:
        _check_header(self.path)
        uri = self.path.resolve().as_uri() + "?mode=ro"
        try:
            return sqlite3.connect(uri, uri=True, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as e:
            raise TableError(f"cannot open {self.path}: {e}") from e

    def _validate(self, db: sqlite3.Connection) -> bool:
        """Raise unless db is an hwlat table of this schema or blank; return whether it is blank."""
        path = self.path
        try:
            if _is_blank(db):
                return True
            app_id = db.execute("PRAGMA application_id").fetchone()[0]
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = {
                n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
            columns = tuple(r[1] for r in db.execute("PRAGMA table_info(entries)"))
        except sqlite3.Error as e:
            raise TableError(f"{path} is not a readable SQLite database ({_one_line(e)})") from e
        if app_id != APPLICATION_ID:
            raise TableError(
                f"{path} is not an hwlat table (application_id {app_id}, expected {APPLICATION_ID})"
            )
        if version != SCHEMA_VERSION:
            raise TableError(
                f"{path} has table schema version {version}; this hwlat reads version {SCHEMA_VERSION}"
                " — re-profile or export/import with a matching hwlat"
            )
        if not {"meta", "kernels", "calibration"} <= tables or columns != FIELDS:
            raise TableError(
                f"{path} is a damaged hwlat table (tables {sorted(tables)}, entries columns {list(columns)}; "
                f"expected entries columns {list(FIELDS)}, meta, kernels and calibration)"
            )
        return False

    def _add_cpu_times(self) -> None:
        """A table made before `cpu_times` existed gets it (empty), the first time it is written."""
        if self._has_cpu_times():
            return
        with self._write():
            self._db.execute(_CPU_SCHEMA)

    def _has_cpu_times(self) -> bool:
        return bool(self._rows("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'cpu_times'"))

    def _create_if_blank(self) -> None:
        with self._write():
            if not _is_blank(self._db):
                return  # another process created it meanwhile; _validate judges it
            for statement in (*_SCHEMA, _CPU_SCHEMA):
                self._db.execute(statement)
            self._db.executemany(
                "INSERT INTO meta (k, v) VALUES (?, ?)",
                [("created_by", f"hwlat {__version__}"), ("schema_version", str(SCHEMA_VERSION))],
            )
            self._db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


# --- clean checks: quick_check reads every page (about 0.3 s for 200,000 entries), so a
# read-only open runs it once per change of the file. The record of the last clean check is kept
# in hwlat's home (a read-only open never writes the table) and names the file's identity and
# every stamp a write changes: device, inode, size, mtime and ctime (which no utime call sets
# back), of the table and of a non-empty -wal. A file changed since is checked again.

_SETTLED_NS = 2_000_000_000  # a file modified this recently may change again within the same
# timestamp tick; its clean check is not recorded (the racily-clean rule of git's index)


def _stamps(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _file_state(path: Path) -> list | None:
    """The stamps of the table and of its -wal (None when missing or empty: nothing pending)."""
    main = _stamps(path)
    wal = _stamps(Path(f"{path}-wal"))
    return None if main is None else [main, wal if wal and wal[2] > 0 else None]


def _record_path(path: Path) -> Path:
    digest = hashlib.sha256(str(path.resolve()).encode("utf-8", "surrogateescape")).hexdigest()
    return home() / "table-checks" / f"{digest[:32]}.json"


def _checked_clean(path: Path, state: list | None) -> bool:
    """Whether a clean check of exactly this state of the file is on record."""
    if state is None:
        return False
    try:
        with open(_record_path(path), "rb") as f:
            record = json.loads(f.read(4096))
    except (OSError, ValueError, RecursionError):
        return False
    return (isinstance(record, dict) and record.get("path") == str(path.resolve())
            and record.get("state") == state)


def _record_clean(path: Path, state: list | None) -> None:
    """Note a clean check of `state` when the file is as it was before the check and has settled;
    best effort (a home that cannot be written only means checking again next time)."""
    if state is None or state != _file_state(path):
        return
    now = time.time_ns()
    if any(s is not None and now - min(s[3], s[4]) < _SETTLED_NS for s in state):
        return
    record = _record_path(path)
    tmp = record.with_name(f".{record.name}.{os.getpid()}.tmp")
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"path": str(path.resolve()), "state": state}))
        os.replace(tmp, record)
    except (OSError, ValueError):
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def _remove_empty_sidecars(created: list[Path]) -> None:
    """A refused file is left as found: the -wal and -shm files SQLite made for reading a WAL-mode
    file are removed again, when the -wal holds nothing."""
    wal = next((f for f in created if f.name.endswith("-wal")), None)
    try:
        if wal is not None and wal.exists() and wal.stat().st_size > 0:
            return
        for f in created:
            f.unlink(missing_ok=True)
    except OSError:
        pass


def _is_blank(db: sqlite3.Connection) -> bool:
    """An SQLite database nobody has stamped or put a table in yet."""
    stamps = (
        db.execute("PRAGMA application_id").fetchone()[0],
        db.execute("PRAGMA user_version").fetchone()[0],
    )
    return stamps == (0, 0) and db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0


def _check_header(path: Path) -> None:
    """Reject what SQLite might open without complaint: non-database files and truncated tables."""
    try:
        with open(path, "rb") as f:
            header = f.read(100)
        size = path.stat().st_size
    except OSError as e:
        raise TableError(f"cannot read {path}: {e.strerror}") from e
    if size == 0:
        raise TableError(f"{path} is an empty file, not an hwlat table")
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        raise TableError(f"{path} is not an SQLite database (no SQLite header)")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    size_is_valid = header[24:28] == header[92:96]  # the file-format rule for trusting bytes 28..31
    wal = Path(f"{path}-wal")
    # A non-empty WAL may legitimately hold pages a checkpoint had not yet written back.
    wal_pending = wal.exists() and wal.stat().st_size > 0
    if size_is_valid and not wal_pending and size < pages * page_size:
        raise TableError(
            f"{path} is truncated ({size} bytes; its header says {pages} pages of {page_size})"
        )


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _shown(value: object) -> str:
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _one_line(e: object) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _le(a: float, b: float) -> bool:
    return a <= b or math.isclose(a, b, rel_tol=1e-9)


def _invalid(name: str, value: object, why: str) -> InvalidInputError:
    shown = repr(value)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    return InvalidInputError(f"invalid {name}={shown}: {why}")


def _check_text(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise _invalid(name, value, f"must be a string, not {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise _invalid(name, value, "must be valid Unicode text (has a lone surrogate)") from e


def _nonneg_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid(name, value, f"must be a number, not {type(value).__name__}")
    try:
        x = float(value)
    except OverflowError:
        x = math.inf
    if not (math.isfinite(x) and x >= 0):
        raise _invalid(name, value, "must be a finite number >= 0")
    return x + 0.0  # -0.0 -> 0.0, as SQLite would store it


def _check_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(name, value, f"must be an integer, not {type(value).__name__}")
    if not 1 <= value <= _MAX_INT:
        raise _invalid(name, value, f"must be between 1 and {_MAX_INT}")
