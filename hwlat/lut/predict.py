"""Predict a model's latency from the table: the sum of its kernels' measured medians.

A kernel missing from the table is estimated from measured kernels of the same kind on the same
device (a least-squares fit of latency on MACs and bytes moved, or, with too few of them, the
nearest measured kernel scaled by work) and is reported as an estimate, never silently.

Two clocks: "wall" (the entries' wall-clock medians: what a user of a dedicated device sees, the
default) and "cpu" (the kernels' thread CPU time, where the table has it: what a run costs the
core, which holds on a machine shared with other processes). A prediction says which it used;
with "cpu", an entry measured without a CPU time counts with its wall median and says so, the
misses are estimated from CPU times, and only calibration samples measured in CPU time (and
learned predictors trained on it) are used.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from hwlat.errors import HwlatError, InvalidInputError
from hwlat.graph import Graph, Kernel
from hwlat.graph.summary import summarize
from hwlat.lut.correct import Correction, boundary_bytes, fit_correction, model_features
from hwlat.lut.store import TableStore

MIN_FIT = 4  # same-kind entries needed before a least-squares fit replaces nearest-neighbour
CLOCKS = ("wall", "cpu")


@dataclass(frozen=True)
class KernelLatency:
    kernel: Kernel
    count: int
    ms: float  # one occurrence
    estimated: bool
    source: str  # "table", or how the estimate was made
    uncertainty: float | None = None  # an estimate's typical relative error, where known

    @property
    def total_ms(self) -> float:
        return self.ms * self.count


@dataclass(frozen=True)
class Prediction:
    device: str
    rows: tuple[KernelLatency, ...]
    boundary_bytes: int = 0
    correction: Correction | None = None
    clock: str = "wall"  # which of the table's figures the kernel sum adds up (see the module)

    @property
    def kernel_sum_ms(self) -> float:
        return sum(r.total_ms for r in self.rows)

    @property
    def features(self) -> dict[str, float]:
        return model_features(self.rows, self.boundary_bytes)

    @property
    def latency_ms(self) -> float:
        """The kernel sum, corrected when the device has been calibrated."""
        if self.correction is None:
            return self.kernel_sum_ms
        return max(self.correction.apply(self.features), 0.0)

    @property
    def estimated_share(self) -> float:
        total = self.kernel_sum_ms
        return 0.0 if total <= 0 else sum(r.total_ms for r in self.rows if r.estimated) / total

    @property
    def uncertainty_ms(self) -> float:
        """The estimated kernels' typical error, summed (one kind's errors go together)."""
        return sum(r.total_ms * r.uncertainty for r in self.rows if r.estimated and r.uncertainty)

    def to_json(self) -> dict:
        return {
            "device": self.device,
            "clock": self.clock,
            "latency_ms": self.latency_ms,
            "kernel_sum_ms": self.kernel_sum_ms,
            "estimate_uncertainty_ms": self.uncertainty_ms,
            "correction": None if self.correction is None else self.correction.describe(),
            "estimated_share": self.estimated_share,
            "kernels": [
                {
                    "kind": r.kernel.kind.value,
                    "ops": list(r.kernel.key.ops),
                    "count": r.count,
                    "ms": r.ms,
                    "total_ms": r.total_ms,
                    "estimated": r.estimated,
                    "source": r.source,
                    "uncertainty": r.uncertainty,
                    "key": r.kernel.key.text(),
                }
                for r in self.rows
            ],
        }


def features(macs: int | None, bytes_moved: int | None) -> tuple[float, float]:
    return float(macs or 0), float(bytes_moved or 0)


class Estimator(Protocol):
    def estimate(self, kind: str, cost) -> tuple[float, str]: ...


def check_clock(clock: str) -> str:
    if clock not in CLOCKS:
        raise InvalidInputError(f"unknown clock {clock!r}: choose {' or '.join(CLOCKS)}")
    return clock


def predict(g: Graph, kernels: list[Kernel], store: TableStore, device: str, *,
            correct: bool = True, fallback: Estimator | None = None, learned: bool = True,
            clock: str = "wall") -> Prediction:
    """`fallback` estimates the table's misses (e.g. a roofline device's RooflineEstimator);
    by default the device's trained per-kind predictors (`hwlat lut train`; with `learned`) do,
    and MissEstimator fits the kinds they lack on the device's measured entries. `clock`:
    "wall" or "cpu" (see the module)."""
    check_clock(clock)
    summary = summarize(g, kernels)
    keys = [r.kernel.key.text() for r in summary.rows]
    found = store.get_many(device, keys)
    cpu = store.cpu_times(device, keys) if clock == "cpu" else {}
    missing = [r for r in summary.rows if r.kernel.key.text() not in found]
    estimator = None
    if missing:
        estimator = fallback
        if estimator is None and learned:
            from hwlat.lut.learned import LearnedEstimator

            estimator = LearnedEstimator.for_device(store, device,
                                                    lambda: MissEstimator(store, device, clock), clock)
        estimator = estimator or MissEstimator(store, device, clock)
    rows = []
    for r in summary.rows:
        e = found.get(r.kernel.key.text())
        if e is not None and clock == "cpu":
            c = cpu.get(e.key)
            rows.append(KernelLatency(r.kernel, r.count, e.median_ms if c is None else c.cpu_ms, False,
                                      "table (wall: no CPU time)" if c is None else "table (cpu)"))
        elif e is not None:
            rows.append(KernelLatency(r.kernel, r.count, e.median_ms, False, "table"))
        elif hasattr(estimator, "estimate_key"):
            ms, how, unc = estimator.estimate_key(r.kernel.key.text(), r.kernel.kind.value, r.cost)
            rows.append(KernelLatency(r.kernel, r.count, ms, True, how, unc))
        else:
            ms, how = estimator.estimate(r.kernel.kind.value, r.cost)
            rows.append(KernelLatency(r.kernel, r.count, ms, True, how))
    correction = None
    if correct:
        correction = fit_correction([(f, m) for _, f, m in store.calibration(device)
                                     if calibration_clock(f) == clock])
    return Prediction(device, tuple(rows), boundary_bytes(g, kernels), correction, clock)


def calibration_clock(features: dict[str, float]) -> str:
    """Which clock a calibration sample was measured in: its features say `cpu_clock` 1 where
    it was thread CPU time (samples without the flag were measured in wall-clock time)."""
    return "cpu" if features.get("cpu_clock", 0.0) == 1.0 else "wall"


class MissEstimator:
    """Per-kind power laws of latency over (MACs, bytes) from the device's measured entries.

    log(ms) = a + b*log(1 + MACs) + c*log(1 + bytes): a power law extrapolates from small
    kernels to large ones without the blow-ups a linear fit gives, and fits relative error.
    """

    def __init__(self, store: TableStore, device: str, clock: str = "wall"):
        self.points: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
        feats = store.features()
        cpu = store.cpu_times(device) if check_clock(clock) == "cpu" else {}
        for e in store.entries(device):
            f = feats.get(e.key)
            ms = cpu[e.key].cpu_ms if e.key in cpu else e.median_ms
            if f is not None and ms > 0:
                self.points[e.kind].append((*features(f[1], f[2]), ms))
        if not self.points:
            raise HwlatError(f"the table has no entries for device '{device}'; "
                             f"run `hwlat profile MODEL.onnx --device {device}` first")
        self._fits: dict[str, np.ndarray] = {}

    def estimate(self, kind: str, cost) -> tuple[float, str]:
        moved = None if cost.bytes_read is None else cost.bytes_read + (cost.bytes_written or 0)
        macs, nbytes = features(cost.macs, moved)
        pts, scope = self.points.get(kind), kind
        if not pts:
            pts, scope = [p for ps in self.points.values() for p in ps], "all kinds"
        if len(pts) >= MIN_FIT:
            coef = self._fit(scope, pts)
            ms = float(np.exp(coef @ np.array([1.0, np.log1p(macs), np.log1p(nbytes)])))
            return ms, f"estimate: power law on {len(pts)} {scope} entries"
        nearest = min(pts, key=lambda p: abs(np.log1p(p[0]) - np.log1p(macs)) + abs(np.log1p(p[1]) - np.log1p(nbytes)))
        if macs and nearest[0]:
            scale = macs / nearest[0]
        elif nbytes and nearest[1]:
            scale = nbytes / nearest[1]
        else:
            scale = 1.0
        return nearest[2] * scale, f"estimate: nearest {scope} entry scaled by work"

    def _fit(self, scope: str, pts) -> np.ndarray:
        if scope not in self._fits:
            a = np.array([[1.0, np.log1p(m), np.log1p(b)] for m, b, _ in pts])
            y = np.log(np.array([t for _, _, t in pts]))
            # a small ridge keeps collinear MACs and bytes (convs of one shape family) stable
            reg = 1e-3 * np.diag([0.0, 1.0, 1.0])
            coef, *_ = np.linalg.lstsq(np.vstack([a, reg]), np.concatenate([y, np.zeros(3)]), rcond=None)
            # latency never falls with more work, and grows at most ~linearly with it
            clipped = np.clip(coef[1:], 0.0, 1.2)
            if not np.array_equal(clipped, coef[1:]):  # refit the intercept for the bounded slopes
                coef = np.array([np.mean(y - a[:, 1:] @ clipped), *clipped])
            self._fits[scope] = coef
        return self._fits[scope]
