"""Repeated timing with warm-up and a spread check: the statistics every table entry carries."""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from hwlat.devices.spec import MeasureSpec


@dataclass(frozen=True)
class Timing:
    samples_ms: tuple[float, ...]  # wall clock
    rounds: int = 1
    # the calling thread's CPU time of the same work, where the runner measures it (a one-thread
    # runtime that runs on the calling thread): on a shared machine, free of other processes' time
    cpu_samples_ms: tuple[float, ...] = ()

    @property
    def cpu_median_ms(self) -> float | None:
        return float(np.median(self.cpu_samples_ms)) if self.cpu_samples_ms else None

    @property
    def cpu_cv(self) -> float | None:
        if not self.cpu_samples_ms:
            return None
        q1, med, q3 = np.percentile(self.cpu_samples_ms, [25, 50, 75])
        return 0.0 if med <= 0 else float((q3 - q1) / 1.349 / med)

    @cached_property
    def _quartiles(self) -> tuple[float, float, float]:
        q1, med, q3 = np.percentile(self.samples_ms, [25, 50, 75])
        return float(q1), float(med), float(q3)

    @property
    def median_ms(self) -> float:
        return self._quartiles[1]

    @property
    def q1_ms(self) -> float:
        return self._quartiles[0]

    @property
    def q3_ms(self) -> float:
        return self._quartiles[2]

    @property
    def cv(self) -> float:
        """Robust coefficient of variation: IQR / 1.349 (sigma of a normal) over the median.
        One preempted run on a shared machine must not make a steady kernel look noisy."""
        q1, med, q3 = self._quartiles
        return 0.0 if med <= 0 else (q3 - q1) / 1.349 / med


def measure(run_round: Callable[[int], list[float]], spec: MeasureSpec) -> Timing:
    """Time rounds of `spec.repeats` runs until one's spread is within `spec.max_cv`; keep the
    tightest. `run_round(n)` does its own warm-up and returns n times in milliseconds."""
    best: Timing | None = None
    for r in range(1, spec.max_rounds + 1):
        t = Timing(tuple(run_round(spec.repeats)), rounds=r)
        if best is None or t.cv < best.cv:
            best = Timing(t.samples_ms, rounds=r)
        if t.cv <= spec.max_cv:
            break
    assert best is not None  # max_rounds >= 1 is validated in MeasureSpec
    return best


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
