"""Latencies read from a MetaSchedule tuning database instead of measured: a model's fused ops
(the tasks static_shape_tuning tunes) at their best records' run times."""

from __future__ import annotations

import statistics
from pathlib import Path

import tvm

from hwlat.lowering.custom import import_onnx
from hwlat.lowering.pipelines import PipelineOptions, tuning_prefix


def recorded_ms(proto, target: tvm.target.Target, db: Path) -> list[float] | None:
    """A model's (or kernel's) latency samples in ms from a tuning database's records, without
    running it: the fused ops static_shape_tuning would tune (its tasks), each at its best
    record's measured run times, summed (times each op's call count), sample by sample. None
    when an op has no record: tuning never measured it."""
    from tvm.s_tir import meta_schedule as ms

    with target:
        mod = tuning_prefix(PipelineOptions(target))(import_onnx(proto))
        tasks = ms.relax_integration.extract_tasks(mod, target)
    database = ms.database.JSONDatabase(work_dir=str(db))
    total: list[float] | None = None
    for task in tasks:
        record = database.query_tuning_record(task.dispatched[0], target, task.task_name)
        if record is None or not record.run_secs:
            return None
        ms_each = [float(s) * 1e3 * task.weight for s in record.run_secs]
        if total is None:
            total = ms_each
        else:  # pair the samples up; a shorter list is padded by its own median
            n = max(len(total), len(ms_each))
            total = [a + b for a, b in zip(_pad(total, n), _pad(ms_each, n), strict=True)]
    return total or None


def _pad(values: list[float], n: int) -> list[float]:
    return values + [statistics.median(values)] * (n - len(values))
