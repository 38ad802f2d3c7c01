"""A synthetic OFA MobileNetV3 table: every kernel key the space produces, with made-up medians
that depend on the key only, and the work features estimates are fitted on."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

from hwlat.lut import Entry, TableStore
from hwlat.nas import OFA_MBV3
from hwlat.nas.ofa_lut import block_kernels, fixed_kernels, key_cost

DEVICE = "synthetic"
AT = datetime(2026, 1, 1, tzinfo=UTC).isoformat()


def synthetic_ms(text: str) -> float:
    """A made-up median (1e-6 .. 16.8 ms) that depends on the key only."""
    return (int(hashlib.blake2b(text.encode(), digest_size=3).hexdigest(), 16) + 1) * 1e-6


def space_keys(resolutions, fusion: str = "default") -> set:
    return {k for r in resolutions for k in fixed_kernels(r, OFA_MBV3, fusion)} | {
        k for r in resolutions for j in range(OFA_MBV3.n_blocks)
        for ks in OFA_MBV3.kernel_sizes for e in OFA_MBV3.expand_ratios
        for k in block_kernels(r, j, ks, e, OFA_MBV3, fusion)
    }


def synthetic_store(path: Path, resolutions, drop=lambda text: False,
                    fusion: str = "default") -> TableStore:
    """A table holding every key the space produces at `resolutions` (less those `drop` picks),
    cut by the rule set `fusion`, with synthetic medians and the work features estimates are
    fitted on."""
    entries, feats = [], []
    for key in space_keys(resolutions, fusion):
        text = key.text()
        if drop(text):
            continue
        ms = synthetic_ms(text)
        entries.append(Entry(DEVICE, text, key.kind.value, ms, ms, ms, 0.0, 1, 1, "synthetic",
                             "{}", "synthetic", AT))
        c = key_cost(key)
        feats.append((text, key.kind.value, c.macs, c.bytes_read + c.bytes_written))
    store = TableStore(path)
    store.put_many(entries, feats)
    return store
