"""NAS-Bench-201 with a multi-device prior (`hwlat.lut.prior`): read, fit, propose, predict.

The prior's columns are the prior devices' log-latencies of each cell; one more column is hwlat's
own view of the cell: the roofline-sd855 latency of its kernels (`nb201_kernel_texts`), summed.
It tells the fit what the cell computes in hwlat's export (which folds `none` edges away), which
no prior device need share: it helps most on devices whose converter folds like hwlat's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path

import numpy as np

from hwlat.errors import InvalidInputError
from hwlat.lut.prior import DevicePrior, PriorFit, fit_prior, propose, read_prior_csv
from hwlat.nas.nb201_lut import nb201_kernel_texts
from hwlat.nas.spaces import (
    NB201_EDGES,
    NB201_NODES,
    NB201_SIZE,
    nb201_arch,
    nb201_index,
    parse_nb201,
)

__all__ = [
    "HW_COLUMN",
    "nb201_has_path",
    "nb201_hw_ms",
    "nb201_predict_prior",
    "nb201_prior_fit",
    "nb201_propose",
    "read_nb201_prior",
]

SPACE = "nb201"
HW_DEVICE = "roofline-sd855"
HW_COLUMN = f"hwlat:{HW_DEVICE}"
_HW_OFFSET_SHARE = 0.05  # log(ms + 5 % of the median cell's): cells with no kernel stay finite
_SAMPLE_STEP = 16  # the extra column's center and scale: over every 16th cell of the space


def read_nb201_prior(path: Path | str) -> DevicePrior:
    """A prior CSV of all 15,625 cells (`arch` column, one ms column per device) in cell order."""
    return read_prior_csv(path, SPACE, nb201_index, NB201_SIZE)


def nb201_has_path(arch: str) -> bool:
    """Whether the cell's output depends on its input (else hwlat's export folds the network to a
    constant, and no kernel runs)."""
    edge = dict(zip(NB201_EDGES, parse_nb201(arch), strict=True))
    reach = {0}
    for j in range(1, NB201_NODES):
        if any(edge[(j, i)] != "none" and i in reach for i in range(j)):
            reach.add(j)
    return NB201_NODES - 1 in reach


@cache
def _roofline() -> dict[str, float]:
    from hwlat.analytic.roofline import roofline_reference
    from hwlat.nas.nb201_lut import nb201_all_keys

    return roofline_reference(HW_DEVICE, nb201_all_keys())[0]


def nb201_hw_ms(archs: Sequence[str]) -> np.ndarray:
    """roofline-sd855's latency (ms) of each cell's kernels, summed (0 for a cell with none)."""
    ref = _roofline()
    return np.array([sum(ref[k] for k in nb201_kernel_texts(a)) for a in archs])


@cache
def _hw_stats() -> tuple[float, float, float]:
    sample = [nb201_arch(i) for i in range(0, NB201_SIZE, _SAMPLE_STEP)]
    ms = nb201_hw_ms(sample)
    offset = _HW_OFFSET_SHARE * float(np.median(ms[ms > 0]))
    logs = np.log(ms + offset)
    return offset, float(logs.mean()), float(logs.std())


def _raw(prior: DevicePrior, rows: Sequence[int], archs: Sequence[str], hw: bool) -> np.ndarray:
    raw = prior.ms[list(rows)]
    return np.hstack([raw, nb201_hw_ms(archs)[:, None]]) if hw else raw


def nb201_prior_fit(prior: DevicePrior, measured: Mapping[str, float], *, hw_column: bool = True,
                    penalties: tuple[float, float] | None = None) -> PriorFit:
    """Fit a new device from measured cells {arch: ms} with the prior's devices (and hwlat's
    roofline column)."""
    if prior.space != SPACE:
        raise InvalidInputError(f"the prior is of space '{prior.space}', not {SPACE}")
    archs = list(measured)
    rows = [nb201_index(a) for a in archs]
    logs = prior.log_columns()
    columns, center = list(prior.devices), logs.mean(axis=0).tolist()
    scale, offsets = logs.std(axis=0).tolist(), [0.0] * len(prior.devices)
    if hw_column:
        off, mu, sd = _hw_stats()
        columns.append(HW_COLUMN)
        center.append(mu)
        scale.append(sd)
        offsets.append(off)
    return fit_prior(_raw(prior, rows, archs, hw_column), np.array([measured[a] for a in archs]),
                     columns, len(prior.devices), center, scale, offsets, space=SPACE,
                     prior=prior.digest(), penalties=penalties)


def nb201_predict_prior(fit: PriorFit, prior: DevicePrior, archs: Sequence[str]) -> np.ndarray:
    """ms of each cell on the fitted device."""
    devices = fit.columns[:fit.n_devices]
    extra = fit.columns[fit.n_devices:]
    if fit.space != SPACE or prior.digest() != fit.prior or extra not in ((), (HW_COLUMN,)) \
            or not set(devices) <= set(prior.devices):
        raise InvalidInputError(f"the stored fit (space {fit.space}, columns {list(fit.columns)}) "
                                "does not match its prior; fit the device again")
    rows = [nb201_index(a) for a in archs]
    raw = prior.ms[np.ix_(rows, [prior.devices.index(d) for d in devices])]
    if extra:
        raw = np.hstack([raw, nb201_hw_ms(archs)[:, None]])
    return fit.predict(raw)


def nb201_propose(prior: DevicePrior, n: int, *, hw_column: bool = True) -> list[str]:
    """N cells to measure on a new device: spread over the leading principal components of the
    prior's log-latencies (and hwlat's roofline column: it needs every cell's kernels, ~30 s),
    among cells whose output depends on their input."""
    archs = [nb201_arch(i) for i in range(NB201_SIZE)]
    cand = np.array([nb201_has_path(a) for a in archs])
    logs = prior.log_columns()
    if hw_column:
        off, _, _ = _hw_stats()
        logs = np.hstack([logs, np.log(nb201_hw_ms(archs) + off)[:, None]])
    return [archs[i] for i in propose(logs, n, cand)]
