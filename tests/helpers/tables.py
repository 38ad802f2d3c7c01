"""A small table for CLI tests: a conv chain's kernels profiled on a device (one left out, so
predictions estimate it from the kernels' work), a few calibration samples, and an NB201
reference table with a device fitted from it (a table-only device)."""

from __future__ import annotations

from pathlib import Path

from hwlat.graph import fuse, load
from hwlat.graph.summary import summarize
from hwlat.lut import Entry, TableStore
from tests.helpers import onnx_builders as ob

AT = "2026-01-01T00:00:00+00:00"


def entry(device: str, key: str, kind: str, ms: float, cv: float = 0.01) -> Entry:
    return Entry(device, key, kind, ms, ms, ms, cv, 15, 1, "test cpu", "{}", "ort-in-model", AT)


def conv_model(path: Path, n: int = 4, seed: int = 0) -> Path:
    ob.save(ob.conv_chain(n, seed=seed), path)
    return path


def profiled_table(table: Path, model: Path, device: str = "cpu-ort", *, leave_out: int = 1,
                   calibrate: bool = True, noisy: int = 0) -> list[str]:
    """Entries (and work) for the model's kernels but the last `leave_out`; the first `noisy`
    stored with a CV of 80 %; three calibration samples. Returns the keys stored."""
    g = load(model)
    rows = summarize(g, fuse(g)).rows
    kept = rows[:len(rows) - leave_out]
    entries, feats = [], []
    for i, r in enumerate(kept):
        text = r.kernel.key.text()
        ms = 0.01 + 1e-9 * (r.cost.macs or 0) + 1e-8 * (r.cost.bytes_read or 0)
        entries.append(entry(device, text, r.kernel.kind.value, ms, 0.8 if i < noisy else 0.01))
    for r in rows:  # the work of every kernel, as `hwlat profile` records it
        feats.append((r.kernel.key.text(), r.kernel.kind.value, r.cost.macs,
                      (r.cost.bytes_read or 0) + (r.cost.bytes_written or 0)))
    with TableStore(table) as store:
        store.put_many(entries, feats)
        if calibrate:
            for i in range(3):
                store.put_calibration(device, f"/m/{i}.onnx",
                                      {"conv_ms": 1.0 + i, "dense_ms": 0.0, "other_ms": 0.1 * i,
                                       "kernels": 10.0 + i, "boundary_mb": 0.0, "one": 1.0},
                                      1.3 + 1.2 * i)
    return [e.key for e in entries]
