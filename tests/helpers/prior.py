"""A made-up multi-device NB201 prior (four devices with known per-op costs) and ways to spoil its
CSV, for the prior tests of tests/lut and tests/nas."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from hwlat.lut.prior import DevicePrior
from hwlat.nas.spaces import NB201_OPS, NB201_SIZE, nb201_arch, parse_nb201

DEVICES = ("gpu_a", "cpu_b", "phone_c", "phone_d")
# made-up per-op costs (ms) of each prior device, and a fixed cost: the devices disagree on ops
COSTS = {"gpu_a": (0.0, 0.3, 0.5, 0.6, 0.4, 4.0), "cpu_b": (0.0, 0.1, 1.0, 4.0, 0.8, 1.0),
         "phone_c": (0.0, 0.2, 1.5, 7.0, 0.5, 2.0), "phone_d": (0.0, 0.6, 0.9, 2.5, 2.0, 0.5)}
TRUE = {"intercept": 0.3, "gpu_a": 0.6, "phone_c": 0.4}  # the new device: log ms = 0.3 + 0.6 log a + 0.4 log c


def device_ms(arch: str, device: str) -> float:
    *op_cost, fixed = COSTS[device]
    ops = parse_nb201(arch)
    return fixed + sum(op_cost[NB201_OPS.index(op)] * (1 + e) for e, op in enumerate(ops))


@pytest.fixture(scope="module")
def archs() -> list[str]:
    return [nb201_arch(i) for i in range(NB201_SIZE)]


@pytest.fixture(scope="module")
def prior(archs) -> DevicePrior:
    return DevicePrior("nb201", DEVICES, np.array([[device_ms(a, d) for d in DEVICES] for a in archs]))


def true_ms(prior: DevicePrior) -> np.ndarray:
    logs = prior.log_columns()
    return np.exp(TRUE["intercept"] + TRUE["gpu_a"] * logs[:, 0] + TRUE["phone_c"] * logs[:, 2])


def write_prior_csv(path, prior: DevicePrior, archs, *, edit=None):
    """The prior as a CSV (index, arch, one column per device); `edit(rows)` may spoil it."""
    rows = [[str(i), a, *(repr(float(v)) for v in prior.ms[i])] for i, a in enumerate(archs)]
    if edit is not None:
        edit(rows)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "arch", *prior.devices])
        w.writerows(rows)
    return path


def _drop(rows):
    del rows[1234]


def _dup(rows):
    rows[20] = rows[10]


def _nan(rows):
    rows[7][3] = "nan"


def _neg(rows):
    rows[8][2] = "-1.5"


def _unknown(rows):
    rows[9][1] = "|conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|"
