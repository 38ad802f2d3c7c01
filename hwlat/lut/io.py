"""Export a latency table to JSON or CSV and import it back: exact floats, all-or-nothing imports.

An export carries everything the table holds for its devices: the entries, their kernels' thread
CPU times (where measured), the work (MACs, bytes) of their kernels that estimates are fitted on,
and the end-to-end calibration samples the correction is fitted on; a table exported and imported
answers every query as before, in either clock. Files written before CPU times were exported
(no "cpu_times" section, no cpu_* columns) still import.
Imports parse and validate every row before writing any, so a bad file leaves the table unchanged.
Writing: `-` is standard output; a symlink is written through (the file it points to is replaced
atomically); a regular file or a new path is replaced atomically; a device, FIFO or socket is
written into directly, never replaced.
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
import stat
import sys
from dataclasses import asdict
from pathlib import Path

from hwlat.errors import InvalidInputError, one_line
from hwlat.lut.store import (
    _FIELD_TYPES,
    FIELDS,
    SCHEMA_VERSION,
    CpuTime,
    Entry,
    TableError,
    TableStore,
)

FORMAT = "hwlat-table"
STDOUT = "-"  # the path that means standard output (and, for imports, standard input)
FEATURE_FIELDS = ("macs", "bytes")  # CSV: the work of each entry's kernel, empty when unknown
CPU_FIELDS = ("device", "key", "cpu_ms", "cpu_cv", "repeats")  # JSON: one CPU time
# CSV: each entry's thread CPU time (median, CV, runs), all three empty where none was measured
CPU_COLUMNS = ("cpu_ms", "cpu_cv", "cpu_repeats")
CALIBRATION_FIELDS = ("device", "model", "features", "measured_ms", "measured_at")
# CSV: the calibration samples follow the entries under this header row
CALIBRATION_HEADER = ("calibration_device", *CALIBRATION_FIELDS[1:])


def _kernel_rows(store: TableStore, entries) -> list[dict]:
    """Work of the kernels: all the table knows, or (one device's export) those of its entries."""
    feats = store.features()
    return [{"key": k, "kind": kind, "macs": macs, "bytes": nbytes}
            for k, (kind, macs, nbytes) in sorted(feats.items())
            if entries is None or k in entries]


def _calibration_rows(store: TableStore, device: str | None) -> list[dict]:
    return [dict(zip(CALIBRATION_FIELDS, r, strict=True)) for r in store.calibration_rows(device)]


def _cpu_times(store: TableStore, entries) -> dict[tuple[str, str], CpuTime]:
    """The thread CPU times of `entries`, by (device, key)."""
    out = {}
    for d in sorted({e.device for e in entries}):
        out.update({(d, k): c for k, c in store.cpu_times(d).items()})
    return out


def export_json(store: TableStore, path: Path | str, device: str | None = None) -> int:
    """Write the entries (of one device, if given), their thread CPU times, their kernels' work
    and the calibration samples as JSON; returns how many entries were written."""
    entries = store.entries(device)
    cpu = _cpu_times(store, entries)
    doc = {"format": FORMAT, "schema_version": SCHEMA_VERSION,
           "entries": [asdict(e) for e in entries],
           "cpu_times": [asdict(cpu[e.device, e.key]) for e in entries if (e.device, e.key) in cpu],
           "kernels": _kernel_rows(store, None if device is None else {e.key for e in entries}),
           "calibration": _calibration_rows(store, device)}
    # json writes floats with repr, which reads back to the same float
    write_text(path, json.dumps(doc, indent=1, ensure_ascii=False, allow_nan=False) + "\n")
    return len(entries)


def export_csv(store: TableStore, path: Path | str, device: str | None = None) -> int:
    """Write the entries (of one device, if given) as CSV with a header row, each with its
    kernel's work (macs, bytes) and thread CPU time (CPU_COLUMNS, empty where none); the
    calibration samples follow under their own header row (CALIBRATION_HEADER). Returns how
    many entries were written."""
    entries = store.entries(device)
    feats = store.features()
    cpu = _cpu_times(store, entries)
    out = io.StringIO()
    writer = csv.writer(out)  # the default \r\n terminator makes it quote cells holding a lone \r
    writer.writerow((*FIELDS, *FEATURE_FIELDS, *CPU_COLUMNS))
    for e in entries:
        _, macs, nbytes = feats.get(e.key, (None, None, None))
        c = cpu.get((e.device, e.key))
        writer.writerow(
            [*(repr(v) if isinstance(v, float) else v for v in (getattr(e, n) for n in FIELDS)),
             "" if macs is None else macs, "" if nbytes is None else nbytes,
             *(("", "", "") if c is None else (repr(c.cpu_ms), repr(c.cpu_cv), c.repeats))]
        )
    calibration = _calibration_rows(store, device)
    if calibration:
        writer.writerow(CALIBRATION_HEADER)
        for c in calibration:
            writer.writerow(repr(v) if isinstance(v, float) else v for v in c.values())
    write_text(path, out.getvalue())
    return len(entries)


def import_json(store: TableStore, path: Path | str) -> int:
    """Validate a JSON export whole, then upsert its entries in one transaction; returns how many."""
    path = Path(path)
    try:
        doc = json.loads(_read_text(path))
    except (ValueError, RecursionError) as e:  # ValueError covers over-long integer literals too
        raise TableError(f"{path} is not valid JSON ({one_line(e, 200)})") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        got = repr(doc.get("format")) if isinstance(doc, dict) else f"a JSON {type(doc).__name__}"
        raise TableError(
            f"{path} is not an hwlat table export (format {got[:60]}, expected {FORMAT!r})"
        )
    version = doc.get("schema_version")
    if type(version) is not int or version != SCHEMA_VERSION:
        raise TableError(
            f"{path} has table schema version {str(version)[:20]}; this hwlat reads version {SCHEMA_VERSION}"
            " — re-profile or export/import with a matching hwlat"
        )
    rows = doc.get("entries")
    if not isinstance(rows, list):
        raise TableError(f"{path}: 'entries' must be a list, not {type(rows).__name__}")
    entries = []
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise TableError(
                f"{path}: row {n}: expected an object of entry fields, got {type(row).__name__}"
            )
        _check_names(path, n, row.keys())
        entries.append(_entry(path, n, row))
    kernels = doc.get("kernels", [])
    calibration = doc.get("calibration", [])
    cpu_rows = doc.get("cpu_times", [])  # absent from exports made before CPU times were carried
    for name, rows in (("kernels", kernels), ("calibration", calibration), ("cpu_times", cpu_rows)):
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise TableError(f"{path}: '{name}' must be a list of objects")
    features = [_feature(path, n, r) for n, r in enumerate(kernels, 1)]
    samples = [_calibration(path, n, r) for n, r in enumerate(calibration, 1)]
    cpu = [_cpu_time(path, n, r) for n, r in enumerate(cpu_rows, 1)]
    _check_cpu_entries(path, entries, cpu)
    return store.put_many(entries, features, samples, cpu)


def import_csv(store: TableStore, path: Path | str) -> int:
    """Validate a CSV export whole, then upsert its entries in one transaction; returns how many."""
    path = Path(path)
    reader = csv.reader(io.StringIO(_read_text(path), newline=""))
    entries, features, samples = [], [], []
    cpu: dict[tuple[str, str], CpuTime | None] = {}  # a key given twice: its last row holds
    try:
        header = next(reader, None)
        if header is None:
            raise TableError(f"{path} is empty; expected a header row {','.join(FIELDS)}")
        if len(set(header)) != len(header):
            raise TableError(f"{path}: header repeats a column: {header}")
        work = [f for f in FEATURE_FIELDS if f in header]
        has_cpu = [f for f in CPU_COLUMNS if f in header]
        if has_cpu and len(has_cpu) != len(CPU_COLUMNS):
            raise TableError(f"{path}: header: CPU time columns {', '.join(CPU_COLUMNS)} go together; "
                             f"it has only {', '.join(has_cpu)}")
        work += has_cpu
        _check_names(path, 0, [h for h in header if h not in work])
        in_calibration = False
        for n, cells in enumerate(reader, 1):
            if not cells:
                continue  # blank line
            if tuple(cells) == CALIBRATION_HEADER:
                in_calibration, header = True, list(CALIBRATION_FIELDS)
                continue
            if len(cells) != len(header):
                raise TableError(
                    f"{path}: row {n}: {len(cells)} cells, the header has {len(header)}"
                )
            if in_calibration:
                row = dict(zip(header, cells, strict=True))
                try:
                    row["measured_ms"] = float(row["measured_ms"])
                except ValueError as e:
                    raise TableError(f"{path}: row {n}: invalid measured_ms="
                                     f"{row['measured_ms'][:60]!r}: not a number") from e
                samples.append(_calibration(path, n, row))
                continue
            row = {
                name: _parse_cell(path, n, name, cell)
                for name, cell in zip(header, cells, strict=True) if name not in work
            }
            entry = _entry(path, n, row)
            entries.append(entry)
            cell = dict(zip(header, cells, strict=True))
            if any(f in header for f in FEATURE_FIELDS):
                features.append(_feature(path, n, {
                    "key": entry.key, "kind": entry.kind,
                    **{f: None if cell.get(f, "") == "" else _parse_work(path, n, f, cell[f])
                       for f in FEATURE_FIELDS}}))
            cpu[entry.device, entry.key] = (_csv_cpu_time(path, n, entry, cell)
                                            if has_cpu and any(cell[f] != "" for f in CPU_COLUMNS)
                                            else None)
    except csv.Error as e:
        raise TableError(f"{path}: row {reader.line_num}: {one_line(e, 200)}") from e
    return store.put_many(entries, features, samples, [c for c in cpu.values() if c is not None])


def _parse_work(path: Path, n: int, name: str, cell: str) -> int:
    try:
        return int(cell)
    except ValueError as e:
        raise TableError(f"{path}: row {n}: invalid {name}={cell[:60]!r}: not an integer") from e


def _feature(path: Path, n: int, row: dict) -> tuple[str, str, int | None, int | None]:
    """(key, kind, macs, bytes) of one kernel, checked."""
    if set(row) != {"key", "kind", "macs", "bytes"}:
        raise TableError(f"{path}: kernel {n}: expected fields key, kind, macs, bytes")
    if not isinstance(row["key"], str) or not row["key"] or not isinstance(row["kind"], str):
        raise TableError(f"{path}: kernel {n}: key and kind must be non-empty strings")
    for f in FEATURE_FIELDS:
        v = row[f]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**63):
            raise TableError(f"{path}: kernel {n}: {f} must be a non-negative integer or empty")
    return row["key"], row["kind"], row["macs"], row["bytes"]


def _calibration(path: Path, n: int, row: dict) -> tuple[str, str, str, float, str]:
    """(device, model, features JSON, measured_ms, measured_at) of one calibration sample, checked."""
    if set(row) != set(CALIBRATION_FIELDS):
        raise TableError(f"{path}: calibration {n}: expected fields {', '.join(CALIBRATION_FIELDS)}")
    feats = row["features"]
    if isinstance(feats, str):
        try:
            feats = json.loads(feats)
        except ValueError:
            feats = None
    if not isinstance(feats, dict) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in feats.values()):
        raise TableError(f"{path}: calibration {n}: features must be an object of numbers")
    ms = row["measured_ms"]
    if isinstance(ms, bool) or not isinstance(ms, int | float) or not 0 < ms < float("inf"):
        raise TableError(f"{path}: calibration {n}: measured_ms must be a positive number")
    for f in ("device", "model", "measured_at"):
        if not isinstance(row[f], str) or not row[f]:
            raise TableError(f"{path}: calibration {n}: {f} must be a non-empty string")
    return (row["device"], row["model"], json.dumps(feats, sort_keys=True), float(ms),
            row["measured_at"])


def _cpu_time(path: Path, n: int, row: dict) -> CpuTime:
    """One JSON CPU time, checked."""
    if set(row) != set(CPU_FIELDS):
        raise TableError(f"{path}: cpu time {n}: expected fields {', '.join(CPU_FIELDS)}")
    try:
        return CpuTime(**row)
    except InvalidInputError as e:
        raise TableError(f"{path}: cpu time {n}: {e}") from e


def _csv_cpu_time(path: Path, n: int, entry: Entry, cell: dict) -> CpuTime:
    """A CSV row's CPU time: all three cells given, numbers."""
    if any(cell[f] == "" for f in CPU_COLUMNS):
        raise TableError(f"{path}: row {n}: give all of {', '.join(CPU_COLUMNS)} or none")
    try:
        ms, cv = float(cell["cpu_ms"]), float(cell["cpu_cv"])
    except ValueError as e:
        raise TableError(f"{path}: row {n}: invalid cpu_ms/cpu_cv "
                         f"{cell['cpu_ms'][:30]!r}, {cell['cpu_cv'][:30]!r}: not numbers") from e
    repeats = _parse_work(path, n, "cpu_repeats", cell["cpu_repeats"])
    try:
        return CpuTime(entry.device, entry.key, ms, cv, repeats)
    except InvalidInputError as e:
        raise TableError(f"{path}: row {n}: {e}") from e


def _check_cpu_entries(path: Path, entries: list[Entry], cpu: list[CpuTime]) -> None:
    """Each CPU time belongs to an entry of the same file, and to only one CPU time."""
    have = {(e.device, e.key) for e in entries}
    seen: set[tuple[str, str]] = set()
    for n, c in enumerate(cpu, 1):
        k = (c.device, c.key)
        if k not in have:
            raise TableError(f"{path}: cpu time {n}: no entry of device {c.device[:40]!r} "
                             f"with key {c.key[:60]!r} in the file")
        if k in seen:
            raise TableError(f"{path}: cpu time {n}: a second CPU time for key {c.key[:60]!r}")
        seen.add(k)


def _entry(path: Path, n: int, row: dict) -> Entry:
    try:
        return Entry(**row)
    except InvalidInputError as e:
        raise TableError(f"{path}: row {n}: {e}") from e


def _check_names(path: Path, n: int, names) -> None:
    missing = [f for f in FIELDS if f not in names]
    extra = sorted(str(x)[:40] for x in set(names) - set(FIELDS))
    if missing or extra:
        where = "header" if n == 0 else f"row {n}"
        raise TableError(f"{path}: {where}: missing fields {missing}, unknown fields {extra}")


def _parse_cell(path: Path, n: int, name: str, cell: str) -> object:
    kind = _FIELD_TYPES[name]
    if kind == "str":
        return cell
    try:
        return float(cell) if kind == "float" else int(cell)
    except ValueError as e:  # also over-long integer literals
        what = "a number" if kind == "float" else "an integer"
        raise TableError(f"{path}: row {n}: invalid {name}={cell[:60]!r}: not {what}") from e


MAX_TEXT_BYTES = 512 << 20  # an exported table of a million entries is far smaller


def _read_text(path: Path) -> str:
    """A regular file's UTF-8 text; a FIFO, a device, a folder or a file over MAX_TEXT_BYTES is
    refused before anything is read (a FIFO is opened without waiting for a writer); "-" is
    standard input (at most MAX_TEXT_BYTES)."""
    if str(path) == STDOUT:  # standard input
        data = sys.stdin.buffer.read(MAX_TEXT_BYTES + 1)
        if len(data) > MAX_TEXT_BYTES:
            raise TableError(f"standard input holds over {MAX_TEXT_BYTES} bytes; hwlat reads no more")
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise TableError(f"standard input is not UTF-8 text (byte {e.start})") from e
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with open(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise TableError(f"{path} is not a regular file")
            if st.st_size > MAX_TEXT_BYTES:
                raise TableError(f"{path} holds {st.st_size} bytes; hwlat reads at most {MAX_TEXT_BYTES}")
            data = f.read(MAX_TEXT_BYTES + 1)
        if len(data) > MAX_TEXT_BYTES:
            raise TableError(f"{path} holds over {MAX_TEXT_BYTES} bytes; hwlat reads no more")
        # no newline translation: \r\n stays inside CSV cells; utf-8-sig drops a spreadsheet's BOM
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise TableError(f"{path} is not UTF-8 text (byte {e.start})") from e
    except OSError as e:
        raise TableError(f"cannot read {path}: {e.strerror}") from e


def write_text(path: Path | str, text: str) -> Path | None:
    """Write `text` where a user means it to go: `-` is standard output; a symlink is followed
    and the file it points to replaced atomically; a device, FIFO or socket is written into,
    never replaced; anything else (a regular file, a new path) is replaced atomically.
    Returns the file written when it differs from `path` (a symlink's target), else None."""
    if str(path) == STDOUT:
        sys.stdout.write(text)
        sys.stdout.flush()
        return None
    path = Path(path)
    try:
        st = os.stat(path)  # through symlinks
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise TableError(f"cannot write {path}: {e.strerror}") from e
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise TableError(f"cannot write {path}: it is a folder")
    if st is not None and not stat.S_ISREG(st.st_mode):  # /dev/stdout, a FIFO: write into it
        try:
            with open(path, "w", encoding="utf-8", newline="") as f:
                f.write(text)
        except OSError as e:
            raise TableError(f"cannot write {path}: {e.strerror}") from e
        return None
    real = path.resolve() if path.is_symlink() else path
    _write_atomic(real, text)
    return real if real != path else None


def _write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder, so a failure never leaves a partial file."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with open(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise TableError(f"cannot write {path}: {e.strerror}") from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


