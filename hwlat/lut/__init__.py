"""Latency tables: measured kernel latencies keyed by (device, KernelKey.text()), in SQLite."""

from hwlat.lut.io import export_csv, export_json, import_csv, import_json
from hwlat.lut.store import (
    APPLICATION_ID,
    FIELDS,
    SCHEMA_VERSION,
    Entry,
    TableError,
    TableStore,
    default_table_path,
)

__all__ = [
    "APPLICATION_ID",
    "FIELDS",
    "SCHEMA_VERSION",
    "Entry",
    "TableError",
    "TableStore",
    "default_table_path",
    "export_csv",
    "export_json",
    "import_csv",
    "import_json",
]
