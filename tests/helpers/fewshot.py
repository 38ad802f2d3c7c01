"""A few-shot fitting problem on NB201 cells: a made-up reference table and a device that is the
reference scaled per kernel kind plus an overhead."""

from __future__ import annotations

import hashlib

import numpy as np

from hwlat.nas.nb201_lut import nb201_kernel_texts, nb201_space_keys
from hwlat.nas.ofa_lut import key_cost
from hwlat.nas.spaces import nb201_arch

EMPTY = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"  # no path: no kernel, just the overhead
SCALE = {"conv": 3.1, "pool": 0.7, "elementwise": 1.9, "normalization": 2.5, "reduction": 1.2,
         "view": 0.0, "matmul": 4.0}
OVERHEAD = 0.37


def ref_ms(key: str) -> float:
    """A made-up reference latency (0.001 .. 1 ms) that depends on the key only."""
    return 0.001 + int(hashlib.blake2b(key.encode(), digest_size=2).hexdigest(), 16) / 65536


def nb201_fit_space():
    """60 cells with a path from input to output and the empty cell, their kernel keys with a
    reference latency and work, and a device that is the reference scaled per kind plus an
    overhead."""
    rng = np.random.default_rng(0)
    archs = [a for a in (nb201_arch(int(i)) for i in rng.choice(15625, 80, replace=False))
             if nb201_kernel_texts(a)][:60] + [EMPTY]
    keys = nb201_space_keys(archs)
    reference = {t: ref_ms(t) for t in keys}
    features = {}
    for t, k in keys.items():
        c = key_cost(k)
        features[t] = (float(c.macs), float(c.bytes_read + c.bytes_written))
    device = {a: OVERHEAD + sum(SCALE[t.partition("|")[0]] * reference[t]
                                for t in nb201_kernel_texts(a)) for a in archs}
    return archs, reference, features, device
