"""Profile: measure every kernel of some models that the table does not have yet, and fill a
device's table from tuning records.

Kernels are de-duplicated by key across all models first, so a kernel shared by many models is
timed once. Where the runner can attribute a whole-model run to kernels (onnxruntime's profiler),
a kernel is timed inside the first model that has it: with its neighbours' cache state, layout
conversions and per-node costs, as it runs in a network. What cannot be attributed is cut out and
timed alone. Where the runner measures thread CPU time (onnxruntime, one thread), every entry
gets that too, from the kernel cut out (`cpu_times` in the table; the wall-clock figures stay the
entry's median). Where the runner can say what values a model's run computes
(`model_activations`), a kernel cut out of a model is timed on the values its inputs take in
that model's run, not on random data (some kernels' time depends on it: denormal floats). Entries are committed per model and in small batches: a crash or `kill -9` loses at
most the batch in flight, and the next run resumes where this one stopped.

Tuning records into the latency table: a kernel measured once, by tuning, serves both
compiling and predicting. After `hwlat compile --device D --tune-trials N`, where D's pipeline
is static_shape_tuning and its file names the tuning database, every kernel of the model whose
fused ops all have records is written into D's table entries from those records (`recorded_ms`),
labelled pipeline `tvm-static_shape_tuning:records`; `hwlat profile --device D` then measures
only the rest (with the database's schedules applied), and `hwlat predict --device D` reads both.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import onnx

from hwlat.devices.measure import Timing, cpu_model
from hwlat.devices.spec import DeviceSpec
from hwlat.errors import InvalidModelError
from hwlat.graph import Graph, Kernel, fuse, load
from hwlat.graph.cost import kernel_cost
from hwlat.graph.extract import extract_kernel
from hwlat.graph.fuse import exits
from hwlat.lut.store import CpuTime, Entry, TableStore
from hwlat.runners.base import InModelRunner, Runner

BATCH_SECONDS = 1.0  # commit at least this often
# A kernel whose median time inside its model is below this gets those in-model durations as
# its thread CPU time instead of a cut-out timing: one thread runs it on the calling thread,
# so an unpreempted duration is CPU time, and a preemption (every few ms on a loaded machine)
# rarely lands in so short a node, leaving the median unpreempted. In its model the kernel
# pays what it does there and cut out does not: weights and inputs colder in cache, a view
# done in place (cut out, a Reshape copies to its output), nodes onnxruntime adds around it.
# Cut-out CPU sums were 4-23 % under the models' own CPU time on ViT, RegNet, ResNet and
# MobileNetV2 (load ~4); with the in-model figure below 1 ms, -5..+2 %. Longer kernels are cut out
# and timed in CPU time, where a preemption would land in most in-model runs.
SHORT_IN_MODEL_MS = 0.5
PIPELINE = "tvm-static_shape_tuning:records"  # entries written from tuning records


@dataclass(frozen=True)
class ProfilePlan:
    kernels: dict[str, tuple[Graph, Kernel]]  # key text -> one place it occurs, to be measured
    already: int  # unique keys the table had
    models: tuple[tuple[Path, Graph, list[Kernel]], ...] = ()


@dataclass(frozen=True)
class ProfileReport:
    measured: int
    skipped: int
    seconds: float


def plan(models: list[Path], device: DeviceSpec, runner: Runner, store: TableStore, *,
         force: bool = False) -> ProfilePlan:
    """Load every model and check the device can run it before anything is measured; with
    `force`, kernels already in the table are timed again (their entries replaced)."""
    todo: dict[str, tuple[Graph, Kernel]] = {}
    loaded = []
    for path in models:
        g = load(path)
        kernels = fuse(g, device.fusion)  # the device's kernel boundaries
        loaded.append((Path(path), g, kernels))
        bad = runner.unsupported({op for k in kernels for op in k.key.ops})
        if bad:
            raise InvalidModelError(
                f"{path}: device '{device.name}' cannot run {', '.join(sorted(bad))}"
            )
        for k in kernels:
            todo.setdefault(k.key.text(), (g, k))
    have = set() if force else store.keys(device.name)
    return ProfilePlan(
        {key: gk for key, gk in todo.items() if key not in have}, already=len(set(todo) & have),
        models=tuple(loaded),
    )


def profile(
    plan_: ProfilePlan,
    device: DeviceSpec,
    runner: Runner,
    store: TableStore,
    on_kernel: Callable[[Kernel], None] = lambda k: None,
) -> ProfileReport:
    env = runner.environment()
    versions = json.dumps(dict(env.versions), sort_keys=True)
    t0 = time.perf_counter()
    remaining = dict(plan_.kernels)
    batch: list[Entry] = []
    feats: list[tuple[str, str, int | None, int | None]] = []
    cpus: list[CpuTime] = []
    cpu_of = getattr(runner, "cpu_time_kernel", None)
    acts_of = getattr(runner, "model_activations", None)

    def short(t: Timing) -> bool:
        return device.threads == 1 and t.median_ms < SHORT_IN_MODEL_MS

    def add(key: str, g: Graph, k: Kernel, timing: Timing, pipeline: str, feeds=None) -> None:
        if not timing.cpu_samples_ms and cpu_of is not None and pipeline == getattr(
                runner, "in_model_pipeline", None):
            # a short kernel's in-model durations are its CPU time (see SHORT_IN_MODEL_MS)
            cpu = timing.samples_ms if short(timing) else cpu_of(extract_kernel(g, k), feeds)
            timing = Timing(timing.samples_ms, timing.rounds, cpu)
        if timing.cpu_samples_ms:
            cpus.append(CpuTime(device.name, key, timing.cpu_median_ms, timing.cpu_cv,
                                len(timing.cpu_samples_ms)))
        batch.append(Entry(
            device=device.name, key=key, kind=k.kind.value,
            median_ms=timing.median_ms, q1_ms=timing.q1_ms, q3_ms=timing.q3_ms, cv=timing.cv,
            repeats=len(timing.samples_ms), threads=env.threads, cpu=env.cpu,
            versions=versions, pipeline=pipeline,
            measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
        ))
        feats.append(kernel_features(g, k))
        remaining.pop(key, None)
        on_kernel(k)

    def commit() -> None:
        store.put_many(batch, feats, cpu_times=cpus)
        batch.clear()
        feats.clear()
        cpus.clear()

    # a runner that attributes whole-model runs to kernels times them inside their models first
    in_model = cast(InModelRunner, runner) if runner.supports_in_model else None
    for path, g, kernels in plan_.models if in_model else ():
        if not any(k.key.text() in remaining for k in kernels):
            continue
        series: dict[str, list[list[float]]] = defaultdict(list)
        found: dict[str, Kernel] = {}
        for idx, times in in_model.time_in_model(path, g, kernels).items():
            series[kernels[idx].key.text()].append(times)
            found[kernels[idx].key.text()] = kernels[idx]
        # a key met n times in the model: every occurrence of every run is a sample (a
        # preemption lands on one occurrence; in a run's mean over 24 it would move most runs)
        inside = {key: Timing(tuple(t for r in runs for t in r))
                  for key, runs in series.items() if key in remaining}
        absorbed = _absorbed(g, kernels, found, inside, remaining) if inside else {}
        acts = {}
        if acts_of is not None and cpu_of is not None:  # inputs of the kernels to be cut out
            acts = acts_of(g, [v for key, t in inside.items() if not short(t) for v in kernel_inputs(g, found[key])]
                           + [v for key, (k, to_short) in absorbed.items() if not to_short for v in kernel_inputs(g, k)])
        for key, t in inside.items():
            add(key, g, found[key], t, in_model.in_model_pipeline, acts)
        n = len(next(iter(inside.values())).samples_ms) if inside else 0
        for key, (k, to_short) in absorbed.items():
            # its in-model time is in its readers' (see _absorbed): none of its own in the model
            zero = (0.0,) * n
            cpu = () if device.threads != 1 or cpu_of is None else \
                zero if to_short else cpu_of(extract_kernel(g, k), acts)
            add(key, g, k, Timing(zero, 1, cpu), in_model.in_model_pipeline, acts)
        del acts
        commit()
    last_commit = time.perf_counter()
    todo = list(remaining.items())
    cut = _Cut([gk for _, gk in todo])
    timed = runner.time_kernels(cut) if acts_of is None else _on_activations(runner, cut)
    for i, timing in timed:  # a runner with several devices times in parallel
        key, (g, k) = todo[i]
        add(key, g, k, timing, runner.pipeline)
        if time.perf_counter() - last_commit >= BATCH_SECONDS:
            commit()
            last_commit = time.perf_counter()
    commit()
    return ProfileReport(len(plan_.kernels), plan_.already, time.perf_counter() - t0)


def _absorbed(g: Graph, kernels: list[Kernel], found: dict[str, Kernel], inside: dict[str, Timing],
              remaining) -> dict[str, tuple[Kernel, bool]]:
    """Kernels of a model onnxruntime's in-model run has no node of, whose every reader was
    timed inside the model (key -> (kernel, whether all its readers are short)).

    onnxruntime fuses such a kernel into the node that reads it and names that node after the
    reader's output (ConvNeXt's fc2 Conv and the layer-scale Mul after it run as one Conv named
    after the Mul), or drops it (a view): its time is in its readers' in-model time, or it has
    none; a chain fused into one node (Conv, Mul, Relu named after the Relu) is absorbed whole.
    Cut out and timed alone as well, it would count twice. Such a kernel is recorded
    with in-model time 0; its CPU time is 0 where its readers' CPU time is their in-model time
    (short ones: SHORT_IN_MODEL_MS), else its cut-out CPU time, as its readers' is."""
    timed = set(found)
    readers: dict[str, set[str]] = defaultdict(set)  # value -> keys of the kernels reading it
    for k in kernels:
        inside_k = {o for n in k.nodes for o in g.node(n).outputs}
        for n in k.nodes:
            for v in g.node(n).inputs:
                if v and v not in inside_k:
                    readers[v].add(k.key.text())
    outputs = set(g.outputs)
    out: dict[str, tuple[Kernel, bool]] = {}
    short = {key: t.median_ms < SHORT_IN_MODEL_MS for key, t in inside.items()}
    for k in reversed(kernels):  # readers first: a chain fused into one node is absorbed whole
        key = k.key.text()
        if key in timed or key in out or key not in remaining:
            continue
        ends = set(exits(g, [g.node(n) for n in k.nodes]))
        rs = {r for v in ends for r in readers.get(v, ())} - {key}
        if not ends or ends & outputs or not rs or not rs <= set(short):
            continue
        out[key] = (k, all(short[r] for r in rs))
        short[key] = out[key][1]
    return out


def kernel_inputs(g: Graph, k: Kernel) -> list[str]:
    """The values a kernel reads that it does not compute itself (as `extract_kernel` cuts it:
    the file's nodes, where a node of the graph stands for several)."""
    model = g.meta.get("onnx")
    if model is None:
        return [i for n in k.nodes for i in g.node(n).inputs if i]
    sources = g.meta.get("sources", {})
    written = sorted({i for n in k.nodes for i in sources.get(n, (g.node(n).index,))})
    inside = {o for i in written for o in model.graph.node[i].output if o}
    return list(dict.fromkeys(v for i in written for v in model.graph.node[i].input if v and v not in inside))


def _on_activations(runner, cut: _Cut):
    """(index, timing) of every cut-out kernel, each timed on the values its inputs take in its
    model's run (`runner.model_activations`), one model's kernels after another."""
    by_graph: dict[int, list[int]] = defaultdict(list)
    for i, (g, _) in enumerate(cut.kernels):
        by_graph[id(g)].append(i)
    for idx in by_graph.values():
        g = cut.kernels[idx[0]][0]
        acts = runner.model_activations(g, [v for i in idx for v in kernel_inputs(g, cut.kernels[i][1])])
        for i in idx:
            yield i, runner.time_kernel(cut[i], acts)
        del acts


class _Cut(Sequence):
    """Kernels cut out of their graphs when asked for, so their weights are not all held at once."""

    def __init__(self, kernels: list[tuple[Graph, Kernel]]):
        self.kernels = kernels

    def __len__(self) -> int:
        return len(self.kernels)

    def __getitem__(self, i: int) -> onnx.ModelProto:
        return extract_kernel(*self.kernels[i])


def kernel_features(g: Graph, k: Kernel) -> tuple[str, str, int | None, int | None]:
    c = kernel_cost(g, k)
    moved = None if c.bytes_read is None or c.bytes_written is None else c.bytes_read + c.bytes_written
    return k.key.text(), k.kind.value, c.macs, moved


@dataclass(frozen=True)
class Fed:
    written: int  # kernels whose entries came from the records
    unrecorded: int  # kernels with an op tuning never measured (profile measures them)
    already: int  # kernels the table had


def feeds_table(spec: DeviceSpec, db: Path | None) -> bool:
    """Whether records of `db` may fill `spec`'s table: the device builds with that database."""
    own = spec.tuning_db_path()
    return (db is not None and own is not None and spec.pipeline == "static_shape_tuning"
            and Path(db).resolve() == own.resolve())


def feed_table(model: str | Path, spec: DeviceSpec, target, db: Path, store: TableStore) -> Fed:
    """Write the tuning records of `db` (for the tvm.target.Target `target`) into `spec`'s
    table: one entry per kernel of `model` the table lacks and the records cover."""
    # only here, when called: planning and profiling import no TVM
    import tvm  # noqa: TID251

    from hwlat.lowering.recorded import recorded_ms

    g = load(model)
    kernels = {}
    for k in fuse(g, spec.fusion):
        kernels.setdefault(k.key.text(), k)
    have = store.keys(spec.name)
    versions = json.dumps({"apache-tvm": tvm.__version__, "target": str(target),
                           "tuning_db": str(db)}, sort_keys=True)
    at = datetime.now(UTC).isoformat(timespec="seconds")
    entries, feats, unrecorded = [], [], 0
    for key, k in kernels.items():
        if key in have:
            continue
        samples = recorded_ms(extract_kernel(g, k), target, db)
        if samples is None:
            unrecorded += 1
            continue
        t = Timing(tuple(samples))
        entries.append(Entry(device=spec.name, key=key, kind=k.kind.value, median_ms=t.median_ms,
                             q1_ms=t.q1_ms, q3_ms=t.q3_ms, cv=t.cv, repeats=len(samples),
                             threads=spec.threads, cpu=cpu_model(), versions=versions,
                             pipeline=PIPELINE, measured_at=at))
        feats.append(kernel_features(g, k))
    store.put_many(entries, feats)
    return Fed(len(entries), unrecorded, len(kernels) - len(entries) - unrecorded)
