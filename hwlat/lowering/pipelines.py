"""Named Relax pipelines: each turns the imported module into one `tvm.compile` can build.

TVM's own "zero" and "static_shape_tuning" stop before the VM lowering passes (its examples run
them, then `tvm.compile` with the default build), and its "default" has no GPU schedules; each
pipeline here is complete for the target it is given.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tvm
from tvm import relax

from hwlat.errors import InvalidInputError
from hwlat.lowering.tuning import tune_pass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineOptions:
    target: tvm.target.Target
    tuning_db: Path | None = None  # an opened database (tuning.open_tuning_db)
    trials: int = 0
    tuning_summary: Any = None  # a tuning.TuningSummary that tuning fills, or None
    # rewrite attention into hwlat's fused kernel (hwlat/kernels/attention) on CPU targets;
    # False leaves it to TVM's own legalization
    fused_attention: bool = True
    # rewrite convs and matmuls with constant weights (and their bias, residual and activation)
    # into hwlat's dense kernels (hwlat/kernels/dense) on CPU targets; False leaves them to TVM
    dense_kernels: bool = True


@dataclass(frozen=True)
class Pipeline:
    summary: str
    make: Callable[[PipelineOptions], tvm.transform.Pass]
    tunes: bool = False  # reads a tuning database and may measure candidates on this machine


def _is_gpu(target: tvm.target.Target) -> bool:
    return "gpu" in target.keys


def kernel_rewrites(target: tvm.target.Target) -> list[str]:
    """The names of the hwlat.kernels.registry Relax rewrites a build for `target` runs (with
    every option on), in order."""
    from hwlat.kernels import registry

    return [e.name for e in registry.relax_rewrites(target)]


def _kernel_rewrites(o: PipelineOptions) -> list[tvm.transform.Pass]:
    """hwlat's kernel rewrites (hwlat.kernels.registry), first in every pipeline, where they
    apply to the target and the options keep them: they replace high-level ops, so they run
    before legalization."""
    from hwlat.kernels import registry

    passes: list[tvm.transform.Pass] = []
    for entry in registry.relax_rewrites(o.target):
        if getattr(o, entry.switch):
            passes += entry.passes()
    return passes


def _lower(o: PipelineOptions) -> tvm.transform.Pass:
    """Legalize and lower to the VM; GPU targets also get DLight's default schedules."""
    if o.target.kind.name == "cuda":
        return _cuda_lower(o.target)
    return relax.get_default_pipeline(o.target) if _is_gpu(o.target) else relax.get_pipeline("default")


class _Guarded:
    """A DLight schedule rule that declines (returns None, so the next rule is tried) where the
    rule it wraps raises: DLight's GPU Matmul rule asserts on some fused epilogues (e.g.
    EfficientNetV2's, "consumers of the cache-write stage that are not properly inlined"),
    which would fail the whole build although a later rule schedules the function."""

    def __init__(self, rule):
        self.rule = rule

    def apply(self, func, target, tunable):
        try:
            return self.rule.apply(func, target, tunable)
        except Exception:  # noqa: BLE001 - any failure of one rule hands the function on
            log.debug("DLight rule %s declined a function", type(self.rule).__name__, exc_info=True)
            return None


def _cuda_lower(target: tvm.target.Target) -> tvm.transform.Pass:
    """TVM's CUDA default pipeline, with each DLight rule guarded (see _Guarded)."""
    from tvm.relax.backend.cuda import pipeline as cuda
    from tvm.s_tir import dlight as dl

    rules = [dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction()]

    @tvm.transform.module_pass(opt_level=0, name="hwlat.cuda_lower")
    def _pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        with target:
            # cuda.legalize_passes(target) but its last pass, DLight's unguarded schedules
            legalize = [relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
                        relax.transform.FoldConstant(), relax.transform.FuseOps(),
                        relax.transform.FuseTIR()]
            seq = tvm.transform.Sequential(
                cuda.library_dispatch_passes(target) + legalize
                + [dl.ApplyDefaultSchedule(*[_Guarded(r) for r in rules], dl.gpu.Fallback())]
                + cuda.dataflow_lower_passes(target) + cuda.finalize_passes(target))
            return seq(mod)

    return _pipeline


def _build(o: PipelineOptions) -> tvm.transform.Pass:
    return tvm.transform.Sequential([*_kernel_rewrites(o), _lower(o)], name="hwlat.default")


def _zero(o: PipelineOptions) -> tvm.transform.Pass:
    return tvm.transform.Sequential([*_kernel_rewrites(o), relax.get_pipeline("zero"), _lower(o)],
                                    name="hwlat.zero")


def tuning_prefix(o: PipelineOptions) -> tvm.transform.Pass:
    """What static_shape_tuning does before tuning: the module whose fused ops are its tasks
    (and the workloads its database records)."""
    return tvm.transform.Sequential([
        *_kernel_rewrites(o),
        relax.transform.DecomposeOpsForInference(),
        relax.transform.CanonicalizeBindings(),
        relax.get_pipeline("zero"),
    ], name="hwlat.tuning_prefix")


def _static_shape_tuning(o: PipelineOptions) -> tvm.transform.Pass:
    if _is_gpu(o.target) or o.target.kind.name != "llvm":
        raise InvalidInputError("pipeline 'static_shape_tuning' measures candidates on this machine's "
                                f"CPU; target kind '{o.target.kind.name}' cannot be tuned here")
    if o.trials and "num-cores" not in o.target.attrs:
        raise InvalidInputError("tuning needs the target's thread count: add \"num-cores\" to it")
    if o.tuning_db is None:
        raise InvalidInputError("pipeline 'static_shape_tuning' needs a tuning database (--tuning-db DIR)")
    return tvm.transform.Sequential([
        tuning_prefix(o),
        tune_pass(o.target, o.tuning_db, o.trials, o.tuning_summary),
        relax.transform.MetaScheduleApplyDatabase(str(o.tuning_db)),
        _lower(o),
    ], name="hwlat.static_shape_tuning")


PIPELINES: dict[str, Pipeline] = {
    "default": Pipeline("legalize each op and build, untuned (what `tvm.compile` does)", _build),
    "zero": Pipeline("fold constants and fuse ops, then build, untuned", _zero),
    "static_shape_tuning": Pipeline(
        "fuse, tune each fused op with MetaSchedule into --tuning-db (--tune-trials N; 0 reuses "
        "what it holds), apply the database, build", _static_shape_tuning, tunes=True),
}


def get_pipeline(name: str) -> Pipeline:
    if name not in PIPELINES:
        raise InvalidInputError(f"unknown pipeline '{name}'; known: {', '.join(PIPELINES)}")
    return PIPELINES[name]


def make_pipeline(name: str, options: PipelineOptions) -> tvm.transform.Pass:
    pipeline = get_pipeline(name)
    if not pipeline.tunes and (options.tuning_db is not None or options.trials):
        tuning = [n for n, p in PIPELINES.items() if p.tunes]
        raise InvalidInputError(f"pipeline '{name}' does not tune nor read a tuning database; "
                                f"use --pipeline {' or '.join(tuning)}")
    if options.trials < 0:
        raise InvalidInputError(f"tuning trials must be >= 0, got {options.trials}")
    with options.target:  # some passes read the target when they are made
        return pipeline.make(options)
