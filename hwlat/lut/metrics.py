"""The field's accuracy metrics for latency predictors (as nn-Meter and HELP report them)."""

from __future__ import annotations

import numpy as np


def accuracy_metrics(predicted, measured) -> dict[str, float]:
    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    if p.shape != m.shape or p.size == 0:
        raise ValueError("predicted and measured must be non-empty and of equal length")
    rel = (p - m) / m
    return {
        "n": int(p.size),
        "rmse_ms": float(np.sqrt(np.mean((p - m) ** 2))),
        "rmspe": float(np.sqrt(np.mean(rel**2))),
        "mape": float(np.mean(np.abs(rel))),
        "within_5": float(np.mean(np.abs(rel) <= 0.05)),
        "within_10": float(np.mean(np.abs(rel) <= 0.10)),
        "within_15": float(np.mean(np.abs(rel) <= 0.15)),
    }
