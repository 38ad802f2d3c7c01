"""Tuning records into the latency table: a kernel measured once, by tuning, serves both
compiling and predicting.

After `hwlat compile --device D --tune-trials N`, where D's pipeline is static_shape_tuning and
its file names the tuning database, every kernel of the model whose fused ops all have records is
written into D's table entries from those records (`recorded_ms`), labelled pipeline
`tvm-static_shape_tuning:records`; `hwlat profile --device D` then measures only the rest (with
the database's schedules applied), and `hwlat predict --device D` reads both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import tvm

from hwlat.devices.measure import Timing, cpu_model
from hwlat.devices.spec import DeviceSpec
from hwlat.graph import fuse, load
from hwlat.graph.extract import extract_kernel
from hwlat.lowering.recorded import recorded_ms
from hwlat.lut.build import kernel_features
from hwlat.lut.store import Entry, TableStore

PIPELINE = "tvm-static_shape_tuning:records"


@dataclass(frozen=True)
class Fed:
    written: int  # kernels whose entries came from the records
    unrecorded: int  # kernels with an op tuning never measured (profile measures them)
    already: int  # kernels the table had


def feeds_table(spec: DeviceSpec, db: Path | None) -> bool:
    """Whether records of `db` may fill `spec`'s table: the device builds with that database."""
    own = spec.tuning_db_path()
    return (db is not None and own is not None and spec.pipeline == "static_shape_tuning"
            and Path(db).resolve() == own.resolve())


def feed_table(model: str | Path, spec: DeviceSpec, target: tvm.target.Target, db: Path,
               store: TableStore) -> Fed:
    g = load(model)
    kernels = {}
    for k in fuse(g):
        kernels.setdefault(k.key.text(), k)
    have = store.keys(spec.name)
    versions = json.dumps({"apache-tvm": tvm.__version__, "target": str(target),
                           "tuning_db": str(db)}, sort_keys=True)
    at = datetime.now(UTC).isoformat(timespec="seconds")
    entries, feats, unrecorded = [], [], 0
    for key, k in kernels.items():
        if key in have:
            continue
        samples = recorded_ms(extract_kernel(g, k), target, db)
        if samples is None:
            unrecorded += 1
            continue
        t = Timing(tuple(samples))
        entries.append(Entry(device=spec.name, key=key, kind=k.kind.value, median_ms=t.median_ms,
                             q1_ms=t.q1_ms, q3_ms=t.q3_ms, cv=t.cv, repeats=len(samples),
                             threads=spec.threads, cpu=cpu_model(), versions=versions,
                             pipeline=PIPELINE, measured_at=at))
        feats.append(kernel_features(g, k))
    store.put_many(entries, feats)
    return Fed(len(entries), unrecorded, len(kernels) - len(entries) - unrecorded)
