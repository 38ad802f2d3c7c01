"""MetaSchedule tuning: one database directory per target, and tuning that builds on this machine.

A database tuned for one target applied to another silently gives slow (or wrong-ISA) schedules,
so each directory records the target it was made for in `hwlat-target.json` and refuses others.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tvm

from hwlat.errors import InvalidInputError
from hwlat.lowering.artifact import write_json_atomic
from hwlat.lowering.targets import describe_target, target_dict
from hwlat.version import __version__

log = logging.getLogger(__name__)

TARGET_MARKER = "hwlat-target.json"
# candidate builds of a conv took over 30 s, MetaSchedule's default builder timeout, past which
# a candidate counts as a failed build
BUILDER_TIMEOUT_S = 240.0


def open_tuning_db(directory: str | Path, target: tvm.target.Target) -> Path:
    """The database directory for `target`: created and marked if new, checked if not."""
    d = Path(directory)
    want = target_dict(target)
    marker = d / TARGET_MARKER
    if marker.is_file():
        try:
            have = json.loads(marker.read_text())["target"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InvalidInputError(f"{marker}: unreadable ({e}); use another --tuning-db directory") from e
        if have != want:
            raise InvalidInputError(
                f"tuning database {d} was made for target {describe_target(have)}, not {describe_target(want)} "
                f"(they differ in {', '.join(_differing(have, want))}); "
                "use another --tuning-db directory for this target")
        return d
    if d.exists() and not d.is_dir():
        raise InvalidInputError(f"--tuning-db {d}: not a directory")
    if d.is_dir() and any(d.glob("database_*.json")):
        raise InvalidInputError(f"tuning database {d} has records but no {TARGET_MARKER}, so its "
                                "target is unknown; use a new --tuning-db directory")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InvalidInputError(f"cannot create tuning database folder {d}: {e.strerror or e}") from e
    write_json_atomic(marker, json.dumps({"target": want, "hwlat": __version__}, indent=1, sort_keys=True))
    return d


def _differing(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def build_candidate(mod, target, params):
    """MetaSchedule's default candidate build without its `import tvm.s_tir.tensor_intrin`: that
    registers every tensor intrinsic, CUDA's included, which took ~100 s on this 2-core machine
    and is paid again by each batch's fresh worker pool, so every build hit the timeout. CPU fp32
    schedules use no intrinsic; a candidate that does fails here and retries the default way."""
    from tvm.s_tir.meta_schedule.builder.local_builder import default_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    try:
        return tvm.tirx.build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target)
    except Exception:
        log.debug("tuning build without the weight-layout rewrite failed; the default build", exc_info=True)
        return default_build(mod, target, params)


def trials_per_iter(trials: int, tasks: int) -> int:
    """Candidates measured per task per round: the budget spread over every task (MetaSchedule
    gives each round's batch to one task, so a batch of the whole budget tunes only the first),
    at most 64."""
    return max(1, min(64, trials // max(1, tasks)))


def hand_scheduled(task) -> bool:
    """Whether an extracted task is one of hwlat's hand-scheduled kernels (`tirx.is_scheduled` on
    the PrimFunc; MetaSchedule's own skip looks at the task module's attributes only)."""
    return any(isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None
               and bool(f.attrs.get("tirx.is_scheduled", False))
               for f in task.dispatched[0].functions.values())


def tunable_tasks(tasks: list) -> list:
    """The tasks MetaSchedule should tune: all but hwlat's hand-scheduled kernels."""
    return [t for t in tasks if not hand_scheduled(t)]


@dataclass
class TuningSummary:
    """What a tuning run did: the tasks MetaSchedule found, those left to it (hwlat's
    hand-scheduled kernels are not tuned), and the trials it really ran."""

    trials_asked: int = 0
    tasks: int = 0  # extracted from the module
    hand_scheduled: int = 0  # of them, hwlat's own kernels: never tuned
    tuned: list[str] = field(default_factory=list)  # the tasks tuned, by name
    trials_run: int = 0  # candidates measured (new records in the database)

    def describe(self) -> str:
        tuned = ", ".join(self.tuned[:6]) + (f" and {len(self.tuned) - 6} more" if len(self.tuned) > 6 else "")
        line = (f"tuning: {self.trials_run} of {self.trials_asked} trials ran, on "
                f"{len(self.tuned)} task(s){': ' + tuned if tuned else ''}; "
                f"{self.hand_scheduled} of {self.tasks} tasks are hwlat's hand-scheduled kernels "
                "(convs, matmuls, norms, pooling, attention), which are not tuned")
        if self.trials_run < self.trials_asked:
            line += ("; MetaSchedule stops a task once its few candidates are measured, so the "
                     "remaining small ops used fewer trials than asked")
        return line

    def to_json(self) -> dict:
        return {"trials_asked": self.trials_asked, "trials_run": self.trials_run,
                "tasks": self.tasks, "hand_scheduled": self.hand_scheduled, "tuned": self.tuned}


def _records(db: Path) -> int:
    """Tuning records in the database directory (one a line)."""
    f = db / "database_tuning_record.json"
    try:
        with open(f, "rb") as fh:
            return sum(1 for line in fh if line.strip())
    except OSError:
        return 0


def tune_pass(target: tvm.target.Target, db: Path, trials: int,
              summary: TuningSummary | None = None) -> tvm.transform.Pass:
    """Tune every task of the module for up to `trials` candidates in all, recording into `db`
    (and what was done into `summary`); the module itself is returned unchanged
    (MetaScheduleApplyDatabase applies the records)."""

    @tvm.transform.module_pass(opt_level=0, name="hwlat.MetaScheduleTune")
    def _tune(mod, _ctx):
        from tvm.s_tir import meta_schedule as ms

        if trials > 0:
            extracted = ms.relax_integration.extract_tasks(mod, target)
            tasks = tunable_tasks(extracted)
            before = _records(db)
            if summary is not None:
                summary.trials_asked, summary.tasks = trials, len(extracted)
                summary.hand_scheduled = len(extracted) - len(tasks)
                summary.tuned = [str(t.task_name) for t in tasks]
            if tasks:
                contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
                    tasks, str(db))
                ms.tune.tune_tasks(
                    tasks=contexts, task_weights=weights, work_dir=str(db),
                    max_trials_global=trials, num_trials_per_iter=trials_per_iter(trials, len(tasks)),
                    builder=ms.builder.LocalBuilder(timeout_sec=BUILDER_TIMEOUT_S,
                                                    f_build=build_candidate),
                )
            if summary is not None:
                summary.trials_run = _records(db) - before
        return mod

    return _tune
