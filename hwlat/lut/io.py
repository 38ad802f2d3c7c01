"""Export a latency table to JSON or CSV and import it back: exact floats, all-or-nothing imports.

Imports parse and validate every row before writing any, so a bad file leaves the table unchanged.
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
import stat
from dataclasses import asdict
from pathlib import Path

from hwlat.errors import InvalidInputError, one_line
from hwlat.lut.store import _FIELD_TYPES, FIELDS, SCHEMA_VERSION, Entry, TableError, TableStore

FORMAT = "hwlat-table"


def export_json(store: TableStore, path: Path | str, device: str | None = None) -> int:
    """Write the entries (of one device, if given) as JSON; returns how many were written."""
    rows = [asdict(e) for e in store.entries(device)]
    doc = {"format": FORMAT, "schema_version": SCHEMA_VERSION, "entries": rows}
    # json writes floats with repr, which reads back to the same float
    _write_atomic(Path(path), json.dumps(doc, indent=1, ensure_ascii=False, allow_nan=False) + "\n")
    return len(rows)


def export_csv(store: TableStore, path: Path | str, device: str | None = None) -> int:
    """Write the entries (of one device, if given) as CSV with a header row; returns how many."""
    entries = store.entries(device)
    out = io.StringIO()
    writer = csv.writer(out)  # the default \r\n terminator makes it quote cells holding a lone \r
    writer.writerow(FIELDS)
    for e in entries:
        writer.writerow(
            repr(v) if isinstance(v, float) else v for v in (getattr(e, n) for n in FIELDS)
        )
    _write_atomic(Path(path), out.getvalue())
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
    return store.put_many(entries)


def import_csv(store: TableStore, path: Path | str) -> int:
    """Validate a CSV export whole, then upsert its entries in one transaction; returns how many."""
    path = Path(path)
    reader = csv.reader(io.StringIO(_read_text(path), newline=""))
    entries = []
    try:
        header = next(reader, None)
        if header is None:
            raise TableError(f"{path} is empty; expected a header row {','.join(FIELDS)}")
        if len(set(header)) != len(header):
            raise TableError(f"{path}: header repeats a column: {header}")
        _check_names(path, 0, header)
        for n, cells in enumerate(reader, 1):
            if not cells:
                continue  # blank line
            if len(cells) != len(header):
                raise TableError(
                    f"{path}: row {n}: {len(cells)} cells, the header has {len(header)}"
                )
            row = {
                name: _parse_cell(path, n, name, cell)
                for name, cell in zip(header, cells, strict=True)
            }
            entries.append(_entry(path, n, row))
    except csv.Error as e:
        raise TableError(f"{path}: row {reader.line_num}: {one_line(e, 200)}") from e
    return store.put_many(entries)


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
    refused before anything is read (a FIFO is opened without waiting for a writer)."""
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


