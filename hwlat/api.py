"""hwlat's Python API: one call per job, for scripts and architecture-search loops.

    import hwlat
    r = hwlat.predict(model, device="cpu-ort", input_shape=(1, 3, 224, 224))
    r.latency_ms, r.estimated_share, r.rows, r.to_json()

`model` is a `torch.nn.Module` (with `inputs=` example tensors or `input_shape=`), an ONNX
file path, or an `onnx.ModelProto`. A module goes to hwlat's graph IR by the fast path
(`hwlat.fastpath`: torch.fx, no ONNX written) and falls back to exporting the whole model
where the fast path cannot map a call exactly; `result.route` says which ("fast", "export",
or "onnx" for a model given as ONNX). Both give the same kernels.

The functions do what the CLI commands do (`hwlat predict / inspect / profile / calibrate /
validate / compile`) and raise the same typed `HwlatError`s that the CLI prints as one
`error: ...` line. `hwlat.Table` is the latency table (an SQLite file).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwlat.errors import HwlatError, InvalidInputError
from hwlat.lut.store import TableStore, default_table_path

if TYPE_CHECKING:
    import onnx
    import torch

    from hwlat.analytic.neuromorphic import Estimate
    from hwlat.devices.spec import DeviceSpec
    from hwlat.graph import Graph, Kernel
    from hwlat.graph.summary import Summary
    from hwlat.lowering import BenchReport, CompileReport
    from hwlat.lut.correct import Correction
    from hwlat.lut.predict import KernelLatency, Prediction
    from hwlat.runners.profile import ProfileReport

    ModelLike = torch.nn.Module | str | os.PathLike | onnx.ModelProto

ROUTES = ("auto", "fast", "export")


class Table(TableStore):
    """The latency table: `Table()` opens $HWLAT_HOME/tables.sqlite (created if absent),
    `Table(path, readonly=True)` an existing one. A context manager; see `hwlat.lut.TableStore`."""

    def __init__(self, path: str | os.PathLike | None = None, *, readonly: bool = False):
        super().__init__(Path(path) if path is not None else default_table_path(), readonly=readonly)


# --- models to graphs ------------------------------------------------------------------------

@dataclass(frozen=True)
class Loaded:
    """A model as hwlat's graph IR, and how it got there."""

    graph: Graph
    route: str  # "fast" | "export" | "onnx"
    seconds: float
    fallback: str = ""  # why a module was exported instead of taking the fast path


def _is_module(model: Any) -> bool:
    return hasattr(model, "named_modules") and hasattr(model, "forward")


def _is_proto(model: Any) -> bool:
    return type(model).__name__ == "ModelProto" and hasattr(model, "graph")


def to_graph(model: ModelLike, *, inputs=None, input_shape=None, route: str = "auto") -> Loaded:
    """The model as hwlat's graph IR (`hwlat.graph.Graph`).

    route: "auto" (the fast path, else the export), "fast" (the fast path or an error naming
    the submodule it cannot map), "export" (always export to ONNX first). A module is put in
    eval mode, as `hwlat.export` does."""
    if route not in ROUTES:
        raise InvalidInputError(f"route={route!r}: one of {', '.join(ROUTES)}")
    t0 = time.perf_counter()
    if _is_module(model):
        from hwlat import fastpath

        example = fastpath.example_inputs(inputs, input_shape)
        if model.training:  # a submodule left in training mode takes the export route
            model.eval()
        if route != "export":
            try:
                g = fastpath.to_graph(model, example, name=type(model).__name__)
                return Loaded(g, "fast", time.perf_counter() - t0)
            except fastpath.Unmappable as e:
                if route == "fast":
                    raise fastpath.Unmappable(e.where, f"{e.why}; route='export' (or 'auto') "
                                                       "exports the whole model instead") from None
                reason = str(e)
        else:
            reason = "route='export'"
        with _collections_allowed(), tempfile.TemporaryDirectory(prefix="hwlat-api-") as d:
            path = _export(model, example, Path(d) / f"{type(model).__name__}.onnx")
            g = _load_path(path)
        return Loaded(g, "export", time.perf_counter() - t0, reason)
    if inputs is not None or input_shape is not None:
        raise InvalidInputError("inputs= and input_shape= apply to torch modules; an ONNX model "
                                "has its own input shapes")
    if _is_proto(model):
        with tempfile.TemporaryDirectory(prefix="hwlat-api-") as d:
            path = Path(d) / "model.onnx"
            path.write_bytes(model.SerializeToString())
            g = _load_path(path)
        return Loaded(g, "onnx", time.perf_counter() - t0)
    if isinstance(model, str | os.PathLike):
        return Loaded(_load_path(Path(model)), "onnx", time.perf_counter() - t0)
    raise InvalidInputError(f"model: a torch.nn.Module, an ONNX path or an onnx.ModelProto, "
                            f"not {type(model).__name__}")


# --- the cyclic garbage collector inside a prediction ---------------------------------------------
#
# A prediction by the fast path makes thousands of short-lived containers (records, tuples, the
# graph IR) and no reference cycles: reference counting frees all of it when the call returns.
# Python's cyclic collector still counts those allocations and starts collections inside the
# call; each walks objects that are all alive or about to be freed anyway, promotes them to
# older generations, and every so often a full collection walks every object the process holds
# (torch's alone are hundreds of thousands: about half a second on a small core). So
# `predict` runs collection-free: the collector is off for the call (if it was on), the
# allocation count it keeps goes on, and the first allocation after the call starts the
# collection that would have run, over the few objects the call kept (its result, hwlat's
# caches). An export (torch.onnx.export makes cyclic garbage) runs with the collector on.

_GC_OWNER = threading.local()  # .off: this thread turned the collector off


@contextlib.contextmanager
def _collection_free():
    """The cyclic collector off inside (if it was on), back on at exit, exceptions included.
    Only the section that turned it off turns it back on: a nested section, another thread's,
    or a caller who turned it off leaves it as found."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    _GC_OWNER.off = True
    try:
        yield
    finally:
        _GC_OWNER.off = False
        gc.enable()


@contextlib.contextmanager
def _collections_allowed():
    """Inside a collection-free section of this thread: the collector on again (an export)."""
    if not getattr(_GC_OWNER, "off", False) or gc.isenabled():
        yield
        return
    gc.enable()
    _GC_OWNER.off = False
    try:
        yield
    finally:
        _GC_OWNER.off = True
        gc.disable()


def _load_path(path: Path) -> Graph:
    from hwlat.graph import load

    return load(path)


def _export(model, example, path: Path) -> Path:
    from hwlat.onnx_export import export

    export(model, example, path, compare=False)
    return path


def _onnx_file(model: ModelLike, folder: Path, index: int, *, inputs=None, input_shape=None) -> Path:
    """An ONNX file of the model, for the jobs that run it on a device (profile, validate,
    compile): a path as given, a ModelProto written out, a module exported."""
    if isinstance(model, str | os.PathLike) and not _is_module(model):
        return Path(model)
    if _is_proto(model):
        path = folder / f"model{index}.onnx"
        path.write_bytes(model.SerializeToString())
        return path
    if _is_module(model):
        from hwlat import fastpath

        example = fastpath.example_inputs(inputs, input_shape)
        return _export(model.eval(), example, folder / f"{type(model).__name__}{index}.onnx")
    raise InvalidInputError(f"model: a torch.nn.Module, an ONNX path or an onnx.ModelProto, "
                            f"not {type(model).__name__}")


# --- predict ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Result:
    """A latency prediction: `hwlat.lut.predict.Prediction` and how the model got there."""

    prediction: Prediction
    route: str  # "fast" | "export" | "onnx"
    stages: dict[str, float] = field(default_factory=dict)  # seconds: trace, fuse, query
    fallback: str = ""  # why a module was exported instead of taking the fast path
    model: str = ""  # the model's name in messages: a file's name, a module's class
    thin: str = ""  # why it is a rough guess, where mostly extrapolated from a nearly empty table
    noisy: frozenset[str] = frozenset()  # key texts of the rows whose table entries are noisy

    @property
    def device(self) -> str:
        return self.prediction.device

    @property
    def latency_ms(self) -> float:
        return self.prediction.latency_ms

    @property
    def kernel_sum_ms(self) -> float:
        return self.prediction.kernel_sum_ms

    @property
    def estimated_share(self) -> float:
        return self.prediction.estimated_share

    @property
    def correction(self) -> Correction | None:
        return self.prediction.correction

    @property
    def rows(self) -> tuple[KernelLatency, ...]:
        """One row per distinct kernel (key, count, ms each, estimated, source)."""
        return self.prediction.rows

    def breakdown(self) -> list[tuple[KernelLatency, float]]:
        """(row, share of the kernel sum), largest first: what `hwlat predict --breakdown` shows."""
        total = self.kernel_sum_ms
        return [(r, r.total_ms / total if total else 0.0)
                for r in sorted(self.rows, key=lambda r: -r.total_ms)]

    @property
    def thin_estimate(self) -> bool:
        """Mostly (> 50 %) extrapolated from fewer than MIN_ENTRIES table entries (estimate=True)."""
        return bool(self.thin)

    @property
    def uncertainty_ms(self) -> float:
        return self.prediction.uncertainty_ms

    def is_noisy(self, row: KernelLatency) -> bool:
        """The row's table entry varied more than the device's max_cv (`hwlat profile --force`
        times it again)."""
        return row.kernel.key.text() in self.noisy

    def to_json(self, *, route: bool = True) -> dict:
        """`hwlat predict --json`'s object (`thin_estimate`, each kernel's `noisy` flag), with
        the route added unless `route=False` (the CLI's object: its model is always a file)."""
        doc = self.prediction.to_json()
        doc["thin_estimate"] = self.thin_estimate
        for k in doc["kernels"]:
            k["noisy"] = k["key"] in self.noisy
        if route:
            doc["route"] = self.route
        return doc


@dataclass(frozen=True)
class SpikingResult:
    """A neuromorphic device's estimate: energy and latency from the spikes a sample fires."""

    estimate: Estimate
    route: str

    @property
    def device(self) -> str:
        return self.estimate.device

    @property
    def latency_ms(self) -> float:
        return self.estimate.latency_ns / 1e6

    @property
    def energy_pj(self) -> float:
        return self.estimate.energy_pj

    @property
    def estimated_share(self) -> float:
        return 1.0  # an analytic device: every figure is an estimate

    @property
    def rows(self):
        return tuple(self.estimate.layers)

    def to_json(self) -> dict:
        return {**self.estimate.to_json(), "latency_ms": self.latency_ms, "route": self.route}


class _EmptyTable:
    """An analytic device's table where no table file exists: nothing measured."""

    path = None

    def get_many(self, device, keys):
        return {}

    def entries(self, device=None):
        return []

    def keys(self, device):
        return []

    def features(self):
        return {}

    def calibration(self, device):
        return []

    def cpu_times(self, device, keys=None):
        return {}


MIN_ENTRIES = 5  # fewer table entries than this cannot carry a prediction that is mostly estimate


def profile_hint(spec: DeviceSpec) -> str:
    """The command that fills the device's table, where one can."""
    if spec.runtime == "table":
        return ("the device lives only in the table; refit it (`hwlat lut fit`) or import more "
                "entries (`hwlat lut import`)")
    return f"profile the model first (`hwlat profile MODEL.onnx --device {spec.name}`)"


def cpu_hint(spec: DeviceSpec) -> str:
    """The command that records a device's thread CPU times, where one can."""
    if spec.runtime == "onnxruntime":
        return (f"time its kernels again to record them (`hwlat profile MODEL.onnx --device "
                f"{spec.name} --force`)")
    return (f"device '{spec.name}' ({spec.runtime}) does not record them; import a table that "
            "has them (`hwlat lut import`)")


def noisy_keys(store, device: str, max_cv: float) -> frozenset[str]:
    """Key texts of the device's entries whose timings varied more than `max_cv` (the device
    file's measure.max_cv)."""
    return frozenset(e.key for e in store.entries(device) if e.cv > max_cv)


@dataclass
class _Query:
    """A device's view of a table, kept between calls of a search loop: the miss estimator, the
    correction, the entry count and the noisy entries are read once per table state."""

    store: Any
    spec: DeviceSpec
    fallback: str | None
    roofline: Any = None  # the device's roofline estimator of misses, if it has one
    n_entries: int = 0
    noisy: frozenset[str] = frozenset()
    estimator: Any = None
    correction: Any = None
    corrected: bool = False
    estimates: dict[str, tuple[float, str, float | None]] = field(default_factory=dict)
    clock: str = "wall"  # which of the table's figures it adds up (see hwlat.lut.predict)
    cpu: dict = field(default_factory=dict)  # clock "cpu": the device's CPU times, by key
    names: Mapping[str, str] = field(default_factory=lambda: API_NAMES)

    def __post_init__(self) -> None:
        from hwlat.analytic.roofline import fallback_estimator

        self.roofline = fallback_estimator(self.spec, self.store, self.fallback or self._own_roofline())
        self.n_entries = len(self.store.keys(self.spec.name))
        if self.roofline is None and self.n_entries == 0:
            raise InvalidInputError(f"the table has no entries for device '{self.spec.name}'; "
                                    f"{profile_hint(self.spec)}")
        if self.clock == "cpu":
            self.cpu = self.store.cpu_times(self.spec.name)
            if not self.cpu:
                raise InvalidInputError(
                    f"the table has no thread CPU times for device '{self.spec.name}'; "
                    f"{cpu_hint(self.spec)}, or predict in wall-clock time ({self.names['wall']})")
        self.noisy = noisy_keys(self.store, self.spec.name, self.spec.measure.max_cv)

    def miss_estimator(self):
        """As `hwlat.lut.predict.predict` picks it: the roofline, else the device's trained
        predictors, else fits on its measured entries."""
        if self.estimator is None:
            from hwlat.lut.learned import LearnedEstimator
            from hwlat.lut.predict import MissEstimator

            store, name, clock = self.store, self.spec.name, self.clock
            self.estimator = (self.roofline
                              or LearnedEstimator.for_device(store, name,
                                                             lambda: MissEstimator(store, name, clock), clock)
                              or MissEstimator(store, name, clock))
        return self.estimator

    def estimate(self, text: str, kind: str, cost) -> tuple[float, str, float | None]:
        est = self.estimates.get(text)
        if est is None:
            e = self.miss_estimator()
            if hasattr(e, "estimate_key"):
                est = e.estimate_key(text, kind, cost)
            else:
                est = (*e.estimate(kind, cost), None)
            self.estimates[text] = est
        return est

    def _own_roofline(self) -> str | None:
        # a roofline device needs no profiling: its own roofline estimates what is not measured
        if self.spec.fallback is None and self.spec.prediction_route == "analytic":
            return self.spec.name
        return None

    def get_correction(self):
        if not self.corrected:
            from hwlat.lut.correct import fit_correction
            from hwlat.lut.predict import calibration_clock

            self.correction = fit_correction([(f, m) for _, f, m in self.store.calibration(self.spec.name)
                                              if calibration_clock(f) == self.clock])
            self.corrected = True
        return self.correction


_QUERIES: dict[tuple, _Query] = {}
_OPEN: dict[Path, tuple[tuple, TableStore]] = {}  # path -> (file state, the store read then)


def _table_state(path: Path) -> tuple:
    try:
        st = path.stat()
    except OSError:
        return (None,)
    wal = path.with_name(path.name + "-wal")
    w = wal.stat() if wal.exists() else None
    return (st.st_mtime_ns, st.st_size, None if w is None else (w.st_mtime_ns, w.st_size))


def _query(spec: DeviceSpec, table, fallback: str | None, clock: str = "wall",
           names: Mapping[str, str] | None = None) -> _Query:
    names = names or API_NAMES
    if isinstance(table, TableStore):  # the caller's open table: its state is theirs to keep
        key = ("store", id(table), spec.name, fallback, clock)
        q = _QUERIES.get(key)
        if q is None or q.store is not table or not _same(q.spec, spec):
            q = _QUERIES[key] = _Query(table, spec, fallback, clock=clock, names=names)
        return q
    path = Path(table).expanduser() if table is not None else default_table_path()
    state = _table_state(path.resolve() if path.exists() else path)
    key = ("path", str(path), state, spec.name, fallback, clock)
    q = _QUERIES.get(key)
    if q is None or not _same(q.spec, spec):
        for k in [k for k in _QUERIES if k[0] == "path" and k[1] == str(path) and k[2] != state]:
            del _QUERIES[k]
        if not path.exists():
            if not (fallback or spec.fallback or spec.prediction_route == "analytic"):
                raise InvalidInputError(f"no table at {path}; {profile_hint(spec)}")
            store: Any = _EmptyTable()  # nothing profiled yet: the roofline estimates every kernel
        else:
            was = _OPEN.get(path)
            if was is not None and was[0] == state:
                store = was[1]
            else:
                if was is not None:
                    was[1].close()
                store = TableStore(path, readonly=True)
                _OPEN[path] = (state, store)
        q = _QUERIES[key] = _Query(store, spec, fallback, clock=clock, names=names)
    return q


_TEXTS: dict = {}  # KernelKey -> its text: a search meets the same kernels again and again
_TEXTS_LIMIT = 1 << 16


def _text(key) -> str:
    text = _TEXTS.get(key)
    if text is None:
        if len(_TEXTS) >= _TEXTS_LIMIT:
            _TEXTS.clear()
        text = _TEXTS[key] = key.text()
    return text


def _same(a: DeviceSpec, b: DeviceSpec) -> bool:
    return a is b or a == b


def _lookup(g: Graph, kernels: list[Kernel], q: _Query, correct: bool = True) -> Prediction:
    """`hwlat.lut.predict.predict` (the same rows, in the same order, the same estimators), with
    the miss estimator, the correction and the estimates of keys met before kept in `q`: a
    kernel's cost is worked out only for a key that neither the table nor an earlier call
    answered."""
    from hwlat.graph.cost import kernel_cost
    from hwlat.lut.correct import boundary_bytes
    from hwlat.lut.predict import KernelLatency, Prediction

    first: dict = {}
    counts: dict = {}
    for k in kernels:
        first.setdefault(k.key, k)
        counts[k.key] = counts.get(k.key, 0) + 1
    texts = {key: _text(key) for key in first}
    found = q.store.get_many(q.spec.name, texts.values())
    rows = []
    for key, k in first.items():
        text = texts[key]
        e = found.get(text)
        if e is not None and q.clock == "cpu":
            c = q.cpu.get(text)
            rows.append(KernelLatency(k, counts[key], e.median_ms if c is None else c.cpu_ms, False,
                                      "table (wall: no CPU time)" if c is None else "table (cpu)"))
            continue
        if e is not None:
            rows.append(KernelLatency(k, counts[key], e.median_ms, False, "table"))
            continue
        ms, how, unc = q.estimate(text, k.kind.value, kernel_cost(g, k) if text not in q.estimates else None)
        rows.append(KernelLatency(k, counts[key], ms, True, how, unc))
    correction = q.get_correction() if correct else None
    return Prediction(q.spec.name, tuple(rows), boundary_bytes(g, kernels), correction, q.clock)


def _samples(sample, g: Graph) -> dict | None:
    if sample is None:
        return None
    if isinstance(sample, Mapping):
        import numpy as np

        return {k: np.asarray(v) for k, v in sample.items()}
    from hwlat.analytic.neuromorphic import load_sample

    return load_sample(Path(sample), g)


@functools.cache
def _device(name: str) -> DeviceSpec:
    from hwlat.devices import load_device

    return load_device(name)


def _resolve(device: str | DeviceSpec, table) -> DeviceSpec:
    """A device by name: its file, else a device the table holds entries of (made by `hwlat lut
    fit` or `lut import`)."""
    if not isinstance(device, str):
        return device
    try:
        return _device(device)
    except InvalidInputError:
        store = table if isinstance(table, TableStore) else None
        path = None if store is not None else Path(table or default_table_path()).expanduser()
        if store is None and path.exists():
            with TableStore(path, readonly=True) as s:
                known = {d for d, _ in s.devices()}
        else:
            known = {d for d, _ in store.devices()} if store is not None else set()
        if device in known:
            from hwlat.devices import table_only_device

            return table_only_device(device)
        raise


# How a caller spells the options that messages name: the API's keywords; the CLI passes its flags.
API_NAMES = {"precision": "precision=", "sample": "sample=", "estimate": "estimate=True",
             "sample_hint": "sample= (.npy/.npz path or dict; {shapes})", "clock": "clock=",
             "wall": "clock='wall'"}


def predict(model: ModelLike, device: str | DeviceSpec = "cpu-ort", *, inputs=None,
            input_shape=None, table: str | os.PathLike | TableStore | None = None,
            breakdown: bool = False, fallback: str | None = None, sample=None,
            precision: str | None = None, estimate: bool = False,
            route: str = "auto", clock: str = "wall") -> Result | SpikingResult:
    """A model's latency on a device, from the latency table, without running the model.

    model: a torch module (with `inputs=` example tensors or `input_shape=`, e.g.
    (1, 3, 224, 224)), an ONNX path or an onnx.ModelProto.
    device: a name (see `hwlat devices`; a device that lives only in the table too) or a
    `DeviceSpec`.
    table: a path, an open `hwlat.Table`, or None for $HWLAT_HOME/tables.sqlite. A path is
    read again when the file changes; an open Table's entries are read at each call, but its
    miss estimates, correction, entry count and noisy entries are those of the first call.
    Kernels the table lacks are estimated and labelled (`estimated_share`, each row's
    `source`): by the device file's `fallback` roofline or `fallback=`, a roofline device by its
    own roofline (no profiling needed), else by the device's trained predictors or fits on its
    measured kernels. A prediction mostly (> 50 %) extrapolated from fewer than MIN_ENTRIES
    entries is refused, unless `estimate=True` (then `thin_estimate` flags it). Rows whose
    entries are noisy are named in `noisy`.
    sample: a neuromorphic device's input (.npy/.npz path or {input name: array}), or a sparse
    model's coordinates. precision: a neuromorphic device's energy preset.
    breakdown: `rows` sorted by their share, largest first (see `Result.breakdown()`).
    route: "auto", "fast" or "export" (see `hwlat.api.to_graph`).
    clock: "wall" (the entries' wall-clock medians, what a dedicated device shows) or "cpu" (the
    kernels' thread CPU time, which holds on a machine shared with other processes; entries
    without one count with their wall median, labelled "table (wall: no CPU time)"; the
    correction and trained predictors of that clock only). The device's table must hold CPU
    times (`hwlat profile` on cpu-ort and cpu-tvm records them).

    The call runs with Python's cyclic garbage collector off (on again at return, and during an
    export): the fast path makes no reference cycles, and collections started by its short-lived
    objects would only walk the process's objects (see the comment above `_collection_free`)."""
    return _predict(model, _resolve(device, table), inputs=inputs, input_shape=input_shape,
                    table=table, breakdown=breakdown, fallback=fallback, sample=sample,
                    precision=precision, estimate=estimate, route=route, clock=clock)


def _name_of(model) -> str:
    if _is_module(model):
        return type(model).__name__
    if _is_proto(model):
        return model.graph.name or "model"
    if isinstance(model, str | os.PathLike):
        return Path(model).name
    return type(model).__name__


def _predict(model, spec: DeviceSpec, *, inputs=None, input_shape=None, table=None,
             breakdown=False, fallback=None, sample=None, precision=None, estimate=False,
             route="auto", names: Mapping[str, str] = API_NAMES,
             clock: str = "wall") -> Result | SpikingResult:
    """`predict` for a resolved device; `names` spells the options in messages (the CLI's
    flags for the CLI). Collection-free, as `predict` says."""
    with _collection_free():
        return _predict_collection_free(model, spec, inputs=inputs, input_shape=input_shape,
                                        table=table, breakdown=breakdown, fallback=fallback,
                                        sample=sample, precision=precision, estimate=estimate,
                                        route=route, names=names, clock=clock)


def _predict_collection_free(model, spec: DeviceSpec, *, inputs, input_shape, table, breakdown,
                             fallback, sample, precision, estimate, route, names,
                             clock) -> Result | SpikingResult:
    from hwlat.lut.predict import CLOCKS

    t0 = time.perf_counter()
    name = _name_of(model)
    if clock not in CLOCKS:
        raise InvalidInputError(f"unknown clock {str(clock)[:40]!r} ({names['clock']}): choose "
                                f"{' or '.join(CLOCKS)}")
    if spec.prediction_route == "spikes":
        if clock != "wall":
            raise InvalidInputError(f"device '{spec.name}' estimates from spikes, not from "
                                    f"timed kernels: it has no CPU-time clock ({names['wall']})")
        from hwlat.analytic.neuromorphic import Neuromorphic

        chip = Neuromorphic.from_spec(spec, precision)
        if route == "auto":
            route = "export"  # the estimate runs the model on the sample: it needs the ONNX form
        loaded = to_graph(model, inputs=inputs, input_shape=input_shape, route=route)
        return _predict_neuromorphic(loaded, spec, chip, sample, name, names)
    if precision is not None:
        raise InvalidInputError(f"{names['precision']} applies to neuromorphic devices; "
                                f"'{spec.name}' predicts from its table")
    loaded = to_graph(model, inputs=inputs, input_shape=input_shape, route=route)
    from hwlat.graph import KernelKind, fuse

    t1 = time.perf_counter()
    kernels = fuse(loaded.graph, spec.fusion)  # the device's kernel boundaries
    if sample is not None:  # a sparse model's coordinates decide its kernel maps
        if not any(k.kind is KernelKind.SPARSE_CONV for k in kernels):
            raise InvalidInputError(f"{names['sample']} applies to neuromorphic devices and to "
                                    f"models with sparse convs (their coordinates); '{spec.name}' "
                                    f"predicts {name} from its table alone")
        kernels = fuse(loaded.graph, spec.fusion, samples=_samples(sample, loaded.graph))
    _check_runs(kernels, spec, name)
    t2 = time.perf_counter()
    q = _query(spec, table, fallback, clock, names)
    pred = _lookup(loaded.graph, kernels, q)
    thin = ""
    if q.roofline is None and pred.estimated_share > 0.5 and q.n_entries < MIN_ENTRIES:
        thin = (f"{pred.estimated_share:.0%} of the prediction for {name} on {spec.name} is "
                f"extrapolated from only {q.n_entries} table "
                f"entr{'y' if q.n_entries == 1 else 'ies'}")
    if thin and not estimate:
        raise InvalidInputError(f"{thin}: not a prediction; "
                                f"{profile_hint(spec)}, or pass {names['estimate']} to see it "
                                "flagged")
    if breakdown:
        pred = replace(pred, rows=tuple(sorted(pred.rows, key=lambda r: -r.total_ms)))
    t3 = time.perf_counter()
    stages = {"trace": t1 - t0, "fuse": t2 - t1, "query": t3 - t2}
    return Result(pred, loaded.route, stages, loaded.fallback, name, thin, q.noisy)


def _check_runs(kernels: list[Kernel], spec: DeviceSpec, name: str) -> None:
    """hwlat's own ops (a sparse conv...) that the device's runner cannot run: no latency there."""
    custom = {op for k in kernels for op in k.key.ops if "." in op}
    if custom and spec.runner and spec.prediction_route == "table":
        from hwlat.runners import get_runner

        bad = get_runner(spec).unsupported(custom)
        if bad:
            raise InvalidInputError(f"{name}: device '{spec.name}' cannot run "
                                    f"{', '.join(sorted(bad))}, so it has no latency there")


def _predict_neuromorphic(loaded: Loaded, spec: DeviceSpec, chip, sample, name: str,
                          names: Mapping[str, str]) -> SpikingResult:
    from hwlat.analytic.neuromorphic import estimate

    g = loaded.graph
    if sample is None:
        shapes = ", ".join(
            f"{i} {'x'.join(map(str, g.values[i].shape or ('?',)))} {g.values[i].sig.dtype}"
            for i in g.inputs)
        raise InvalidInputError(f"device '{spec.name}' estimates from measured spikes: give a "
                                f"sample input with {names['sample_hint'].format(shapes=shapes)}")
    if "onnx" not in g.meta:  # the estimate runs the model: it needs the ONNX form
        raise InvalidInputError(f"device '{spec.name}' runs the model on the sample: pass the "
                                "ONNX file, or route='export'")
    est = estimate(g, _samples(sample, g), chip, device=spec.name, threads=spec.threads)
    return SpikingResult(replace(est, model=name), loaded.route)


# --- inspect ----------------------------------------------------------------------------------

def inspect(model: ModelLike, *, inputs=None, input_shape=None, route: str = "auto",
            device: str | None = None) -> Summary:
    """The kernels a model is cut into, with MACs, parameters and bytes moved: `hwlat inspect`'s
    rows (`.rows`, `.totals()`, `.to_json()` as `hwlat inspect --json` prints). With `device`,
    cut where that device's runtime draws kernel boundaries (its file's `fusion`)."""
    from hwlat.graph import fuse
    from hwlat.graph.summary import summarize

    fusion = _device(device).fusion if device is not None else "default"
    g = to_graph(model, inputs=inputs, input_shape=input_shape, route=route).graph
    return summarize(g, fuse(g, fusion))


# --- profile, calibrate, validate: these run models on the device --------------------------------

def _as_list(models) -> list:
    if isinstance(models, str | os.PathLike) or _is_module(models) or _is_proto(models):
        return [models]
    out = list(models)
    if not out:
        raise InvalidInputError("give at least one model")
    return out


def profile(models: ModelLike | Iterable[ModelLike], device: str | DeviceSpec = "cpu-ort", *,
            inputs=None, input_shape=None, table: str | os.PathLike | None = None,
            rpc: str | None = None, key: str | None = None, force: bool = False,
            on_total: Callable[[int], None] | None = None,
            on_kernel: Callable[[Kernel], None] | None = None,
            on_warning: Callable[[str], None] | None = None) -> ProfileReport:
    """Measure every kernel of the models that the table lacks for the device (resumable):
    `hwlat profile`. Modules are exported to ONNX first (the device runs ONNX). force: time
    again the kernels already in the table, replacing them. on_total(n): the number of kernels
    to time, before the first; on_kernel(kernel): after each; on_warning(line): an RPC server
    that died mid-kernel (the kernel was retried)."""
    from hwlat.runners import get_runner
    from hwlat.runners.profile import plan
    from hwlat.runners.profile import profile as run_profile

    spec = _spec(device)
    items = _as_list(models)
    runner = get_runner(spec, rpc, key)
    with tempfile.TemporaryDirectory(prefix="hwlat-api-") as d:
        paths = [_onnx_file(m, Path(d), i, inputs=inputs, input_shape=input_shape)
                 for i, m in enumerate(items)]
        with Table(table) as store:
            todo = plan(paths, spec, runner, store, force=force)
            if on_total is not None:
                on_total(len(todo.kernels))
            report = run_profile(todo, spec, runner, store, on_kernel=on_kernel or (lambda k: None))
    for line in getattr(runner, "lost", ()):
        if on_warning is not None:
            on_warning(line)
    return report


def _spec(device: str | DeviceSpec) -> DeviceSpec:
    if not isinstance(device, str):
        return device
    from hwlat.devices import load_device

    return load_device(device)


def _graphs(paths) -> list:
    """Every model read before the table is opened or anything measured: a bad file stops the
    job first."""
    from hwlat.graph import load

    return [(Path(p), load(p)) for p in paths]


def _measured(graphs, spec, runner, store, *, correct: bool, on_measure, clock: str = "wall"):
    """(path, prediction, measured ms, its CV) of each model, measured on the device in `clock`
    (wall: wall-clock medians; cpu: the calling thread's CPU time, onnxruntime at 1 thread)."""
    from hwlat.graph import fuse
    from hwlat.lut.predict import check_clock
    from hwlat.lut.predict import predict as do_predict

    check_clock(clock)
    for path, g in graphs:
        pred = do_predict(g, fuse(g, spec.fusion), store, spec.name, correct=correct, clock=clock)
        with on_measure(path) if on_measure is not None else contextlib.nullcontext():
            measured = runner.time_model(str(path))
        if clock == "cpu":
            if measured.cpu_median_ms is None:
                raise InvalidInputError(f"device '{spec.name}' does not measure thread CPU time "
                                        "(onnxruntime at 1 thread does); use the wall clock")
            yield path, pred, measured.cpu_median_ms, measured.cpu_cv
        else:
            yield path, pred, measured.median_ms, measured.cv


MeasureHook = Callable[[Path], AbstractContextManager] | None


def calibrate(models: ModelLike | Iterable[ModelLike], device: str | DeviceSpec = "cpu-ort", *,
              inputs=None, input_shape=None, table: str | os.PathLike | None = None,
              rpc: str | None = None, key: str | None = None, on_measure: MeasureHook = None,
              on_model: Callable[[dict], None] | None = None, clock: str = "wall") -> dict:
    """Measure whole models and fit the correction from kernel sums to end-to-end latency:
    `hwlat calibrate --json`'s object ({"device", "models": [{"model", "clock", "kernel_sum_ms",
    "measured_ms", "error"}], "calibrated_models": n, "correction": text or None}).
    on_measure(path): a context around each model's timing (a spinner); on_model(row): each
    model's row as it is measured. `clock`: "wall", or "cpu" (thread CPU time, which holds on a
    shared machine); the correction is fitted on, and used in, that clock's samples only."""
    from hwlat.lut.correct import fit_correction
    from hwlat.lut.predict import calibration_clock
    from hwlat.runners import get_runner

    spec = _spec(device)
    runner = get_runner(spec, rpc, key)
    rows = []
    with tempfile.TemporaryDirectory(prefix="hwlat-api-") as d:
        paths = [_onnx_file(m, Path(d), i, inputs=inputs, input_shape=input_shape)
                 for i, m in enumerate(_as_list(models))]
        graphs = _graphs(paths)
        with Table(table) as store:
            for path, pred, ms, _ in _measured(graphs, spec, runner, store, correct=False,
                                               on_measure=on_measure, clock=clock):
                feats = {**pred.features, **({"cpu_clock": 1.0} if clock == "cpu" else {})}
                store.put_calibration(spec.name, str(path.resolve()), feats, ms)
                rows.append({"model": str(path), "clock": clock, "kernel_sum_ms": pred.kernel_sum_ms,
                             "measured_ms": ms, "error": pred.kernel_sum_ms / ms - 1})
                if on_model is not None:
                    on_model(rows[-1])
            samples = [s for s in store.calibration(spec.name) if calibration_clock(s[1]) == clock]
    correction = fit_correction([(f, m) for _, f, m in samples])
    return {"device": spec.name, "models": rows, "calibrated_models": len(samples),
            "correction": None if correction is None else correction.describe()}


def validate(models: ModelLike | Iterable[ModelLike], device: str | DeviceSpec = "cpu-ort", *,
             inputs=None, input_shape=None, table: str | os.PathLike | None = None,
             rpc: str | None = None, key: str | None = None,
             plot: str | os.PathLike | None = None, on_measure: MeasureHook = None,
             clock: str = "wall") -> dict:
    """Measure models end to end on the device and compare with the table's prediction:
    `hwlat validate --json`'s object ({"device", "clock", "models": [...], "metrics": {...}});
    `plot`: a predicted-vs-measured scatter (PNG) there too. `clock`: "wall" (what a dedicated
    device shows) or "cpu" (thread CPU time of kernels and models, which holds on a machine
    shared with other processes)."""
    from hwlat.lut.metrics import accuracy_metrics
    from hwlat.runners import get_runner

    spec = _spec(device)
    runner = get_runner(spec, rpc, key)
    rows = []
    with tempfile.TemporaryDirectory(prefix="hwlat-api-") as d:
        paths = [_onnx_file(m, Path(d), i, inputs=inputs, input_shape=input_shape)
                 for i, m in enumerate(_as_list(models))]
        graphs = _graphs(paths)
        with Table(table, readonly=True) as store:
            for path, pred, ms, cv in _measured(graphs, spec, runner, store, correct=True,
                                                on_measure=on_measure, clock=clock):
                rows.append({"model": str(path), "clock": clock, "predicted_ms": pred.latency_ms,
                             "kernel_sum_ms": pred.kernel_sum_ms,
                             "corrected": pred.correction is not None,
                             "measured_ms": ms, "measured_cv": cv,
                             "estimated_share": pred.estimated_share,
                             "estimate_uncertainty_ms": pred.uncertainty_ms,
                             "error": pred.latency_ms / ms - 1})
    metrics = accuracy_metrics([r["predicted_ms"] for r in rows], [r["measured_ms"] for r in rows])
    if plot is not None:
        from hwlat.plot import scatter

        scatter(rows, Path(plot), spec.name)
    return {"device": spec.name, "clock": clock, "models": rows, "metrics": metrics}


# --- compile ----------------------------------------------------------------------------------

@dataclass
class Compiled:
    """A library compiled by TVM (`hwlat.compile`, or `Compiled(path)` for one on disk with its
    .json beside it), loaded on first use: call it on numpy arrays (one per model input) for its
    outputs (`hwlat run`), or `bench()` it (`hwlat bench`)."""

    path: Path
    report: CompileReport | None = None
    fed: Any = None  # tuning records written into the device's table (runners.profile.Fed)
    threads: int | None = None
    _loaded: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    def _model(self):
        if self._loaded is None:
            from hwlat.lowering import load_library

            self._loaded = load_library(self.path, self.threads)
        return self._loaded

    def __call__(self, *arrays) -> list:
        """The outputs (numpy arrays) for these inputs; none given: seeded random ones."""
        from hwlat.lowering.run import random_inputs

        m = self._model()
        if not arrays:
            arrays = tuple(random_inputs(m.meta.inputs))
        if len(arrays) != len(m.meta.inputs):
            raise InvalidInputError(f"{self.path.name} takes {len(m.meta.inputs)} input(s), "
                                    f"got {len(arrays)}")
        return m.run(list(arrays))

    def run(self, inputs: str | os.PathLike | None = None) -> dict:
        """The outputs by name of one run on `inputs` (a .npy/.npz file) or seeded random
        input: `hwlat run`."""
        from hwlat.lowering import run_library

        return run_library(self.path, inputs)

    def bench(self, *, warmup: int = 5, repeats: int = 25, threads: int | None = None,
              inputs: str | os.PathLike | None = None) -> BenchReport:
        """Median and interquartile range of whole-model runs: `hwlat bench`."""
        from hwlat.devices.spec import MeasureSpec
        from hwlat.lowering import bench_library

        return bench_library(self.path, inputs, MeasureSpec(warmup=warmup, repeats=repeats),
                             threads or self.threads)


def compile(model: ModelLike, device: str | DeviceSpec = "cpu-tvm", *,
            output: str | os.PathLike | None = None, inputs=None, input_shape=None,
            target_kind: str | None = None, pipeline: str | None = None, tune_trials: int = 0,
            tuning_db: str | os.PathLike | None = None, table: str | os.PathLike | None = None,
            status: Callable[[str], AbstractContextManager] | None = None) -> Compiled:
    """Compile a model with TVM into a library and its .json sidecar, checked against
    onnxruntime where it runs: `hwlat compile`. With the device's own tuning database, its
    records also fill the device's table (`.fed`). `output` defaults to MODEL.so beside an ONNX
    file, else a file in a new temporary folder. status(text): a context around each long step
    (a spinner)."""
    from hwlat.lowering import compile_model, resolve_target
    from hwlat.lowering.targets import kind_of
    from hwlat.runners.profile import feed_table, feeds_table

    spec = _spec(device)
    step = status or (lambda text: contextlib.nullcontext())
    target = resolve_target(device=spec, kind=target_kind)
    if tuning_db is None and target_kind in (None, kind_of(spec.target or {"kind": "llvm"})):
        tuning_db = spec.tuning_db_path()  # the device's own database, if its file names one
    tuning = tuning_db is not None or tune_trials > 0
    if isinstance(model, str | os.PathLike) and not _is_module(model):
        src = Path(model)
    else:
        folder = Path(tempfile.mkdtemp(prefix="hwlat-compile-"))
        src = _onnx_file(model, folder, 0, inputs=inputs, input_shape=input_shape)
        if output is None:
            output = folder / src.with_suffix(".so").name
    with step(f"compiling {src.name} for {target_kind or spec.name} ..."):
        r = compile_model(src, target, pipeline or (None if tuning else spec.pipeline), output,
                          tuning_db=tuning_db, tune_trials=tune_trials)
    fed = None
    if r.tuning_db is not None and feeds_table(spec, r.tuning_db):
        with step("reading the tuning records into the table ..."), Table(table) as store:
            fed = feed_table(src, spec, target, r.tuning_db, store)
    return Compiled(r.output, r, fed)


__all__ = ["ROUTES", "Compiled", "HwlatError", "Loaded", "Result", "SpikingResult", "Table",
           "calibrate", "compile", "inspect", "predict", "profile", "to_graph", "validate"]
