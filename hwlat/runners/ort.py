"""Time kernels and whole models with onnxruntime's CPU execution provider.

A kernel is a small ONNX model cut out of its network. onnxruntime applies the same fusions and
NCHWc layout to it as inside the network, and its profiler reports each node it executes; the
kernel's time in one run is the sum of those nodes, less the layout Reorder nodes that exist
only because the kernel was cut loose (inside the network the neighbours share the layout).

The profiler itself adds a few microseconds to every node it reports (measured here: 2.6 us
per node on a chain of tiny Relu nodes), which would make a network of many small kernels look
slower than it is. Each runner measures that overhead once and takes it off every node it times.

Beside the profiler's wall-clock durations, every kernel gets its thread CPU time: with one
thread, onnxruntime runs the graph on the calling thread, so `time.thread_time` around a run is
what the run cost the core, whatever other processes on a shared machine took meanwhile (a wall
duration longer than a scheduler time slice carries their slices). The kernel's cut-out graph
runs in its own session without the profiler, inputs and outputs bound once (no copies per run),
for at least CPU_MIN_RUNS runs and CPU_MIN_MS of CPU time; each run's CPU time less what a
session run of a one-node graph costs (measured once per runner) and less the boundary Reorders'
share (from a short profiled run of the same graph) is one sample. With one thread the process
is pinned to one core first. (`profile` takes a kernel's in-model durations as its CPU time
where they are short, hwlat.runners.profile.SHORT_IN_MODEL_MS, and times the rest this way.)

A kernel cut out of a model is timed on the values its inputs take in a run of that model
(`model_activations`; `profile` passes them), not on random data: the time of some kernels
depends on the data. Swin's shifted-window attention masks scores with -100, so its softmax
probabilities hold tens of thousands of denormal floats, and the MatMul that reads them runs
~18x slower on them than on random inputs (4.8 ms vs 0.27 ms a call in thread CPU time).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from functools import cached_property

import numpy as np
import onnx
import onnxruntime as ort

from hwlat.devices.measure import Timing, cpu_model, measure
from hwlat.devices.spec import DeviceSpec
from hwlat.errors import BackendError, HwlatError, InvalidModelError
from hwlat.graph.extract import _typed
from hwlat.inputs import random_feeds as seeded_feeds
from hwlat.runners.base import Environment, InModelRunner

# nodes onnxruntime adds at the edge of an NCHWc region; a cut-out kernel is all edge
_BOUNDARY_OPS = frozenset({"ReorderInput", "ReorderOutput"})
CPU_MIN_RUNS = 15  # thread CPU samples per kernel, at least
CPU_MIN_MS = 20.0  # CPU time spent on a kernel's samples, at least (tiny kernels get more runs)
CPU_MAX_RUNS = 300
EDGE_RUNS = 5  # profiled runs that find the boundary Reorders' share
MAX_ACTIVATION_BYTES = 512 << 20  # a model's values kept at once to feed its cut-out kernels


def kernel_owners(g, kernels) -> dict[str, int]:
    """Node name or output value -> the index of the kernel it belongs to, for attributing an
    onnxruntime profile to kernels. A node of the graph may stand for several of the file's
    (graph.canon: a Gelu), so the file's nodes behind it are mapped too."""
    owner: dict[str, int] = {}
    sources, model = g.meta.get("sources", {}), g.meta.get("onnx")
    for idx, k in enumerate(kernels):
        for name in k.nodes:
            owner[name.rsplit("#", 1)[0]] = idx
            owner.update((o, idx) for o in g.node(name).outputs if o)
            for i in sources.get(name, ()) if model is not None else ():
                written = model.graph.node[i]
                owner[written.name or written.op_type] = idx
                owner.update((o, idx) for o in written.output if o)
    return owner


class OrtRunner(InModelRunner):
    pipeline = "ort-profiler"
    in_model_pipeline = "ort-in-model"
    supports_in_model = True

    def __init__(self, spec: DeviceSpec):
        self.spec = spec

    def environment(self) -> Environment:
        return Environment(cpu_model(), self.spec.threads,
                           {"onnxruntime": ort.__version__, "onnx": onnx.__version__,
                            "profiler_overhead_us": round(self.profiler_overhead_ms * 1e3, 3)})

    @cached_property
    def profiler_overhead_ms(self) -> float:
        """What the profiler adds to each node's time: a long chain of tiny nodes, per node, as
        the profiler reports it less as the wall clock sees it without the profiler. Rounds
        alternate between the two; the smallest difference is kept, so a burst of load on the
        shared machine can only make hwlat subtract too little, never too much."""
        chain = 200
        x = {"x0": np.zeros((1, 16, 8, 8), np.float32)}
        proto = _relu_chain(chain, x["x0"].shape).SerializeToString()
        plain = _session(proto, self._options())
        diffs = []
        with tempfile.TemporaryDirectory(prefix="hwlat-ort-") as tmp:
            for _ in range(3):
                walls = []
                for i in range(30):
                    t0 = time.perf_counter()
                    plain.run(None, x)
                    if i >= 10:
                        walls.append((time.perf_counter() - t0) * 1e3)
                profiled = _session(proto, self._options(tmp))
                for _ in range(30):
                    profiled.run(None, x)
                runs = kernel_times_per_run(profiled.end_profiling())[10:]
                diffs.append((np.median([t for t, _ in runs]) - np.median(walls)) / chain)
        return max(float(min(diffs)), 0.0)

    @cached_property
    def run_overhead_cpu_ms(self) -> float:
        """Thread CPU time of one bound session run of a one-node graph on a tiny tensor: what
        every kernel's CPU samples carry beside the kernel (the smallest of 3 rounds' medians)."""
        self.pin()
        x = {"x0": np.zeros((1, 4), np.float32)}
        sess = _session(_relu_chain(1, x["x0"].shape).SerializeToString(), self._options())
        run = _bound_run(sess, x)
        medians = []
        for _ in range(3):
            for _ in range(20):
                run()
            samples = []
            for _ in range(200):
                c0 = time.thread_time()
                run()
                samples.append((time.thread_time() - c0) * 1e3)
            medians.append(float(np.median(samples)))
        return min(medians)

    def pin(self) -> None:
        """With one thread, pin the calling thread (onnxruntime's only one) to one core, once."""
        if self.spec.threads == 1 and not getattr(self, "_pinned", False) \
                and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
            self._pinned = True

    def model_activations(self, g, names) -> dict[str, np.ndarray]:
        """The values `names` take in one run of `g`'s model (loaded from a file) on the random
        inputs `time_model` runs it on: what its cut-out kernels are fed (see the module's text).
        Names the graph does not compute (initializers, unknown values) are left out, and so
        are values past MAX_ACTIVATION_BYTES in all (their kernels get random inputs)."""
        model = g.meta.get("onnx")
        if model is None:
            return {}
        inits = {t.name for t in model.graph.initializer}
        outputs, total = [], 0
        for v in dict.fromkeys(names):
            val = g.values.get(v)
            nbytes = val.sig.nbytes() if val is not None else None
            if v in inits or not nbytes or total + nbytes > MAX_ACTIVATION_BYTES:
                continue
            total += nbytes
            outputs.append(_typed(g, v))
        if not outputs:
            return {}
        m = onnx.ModelProto()
        m.CopyFrom(model)
        have = {o.name for o in m.graph.output}
        m.graph.output.extend(o for o in outputs if o.name not in have)
        sess = _session(m.SerializeToString(), self._options())
        feeds = random_feeds(sess)
        wanted = [o.name for o in outputs]
        try:
            values = sess.run(wanted, feeds)
        except Exception as e:
            raise HwlatError(f"onnxruntime cannot run the model: {' '.join(str(e).split())[:300]}") from e
        return {**{k: v for k, v in feeds.items() if k in set(names)}, **dict(zip(wanted, values, strict=True))}

    def cpu_time_kernel(self, proto: onnx.ModelProto,
                        feeds: dict[str, np.ndarray] | None = None) -> tuple[float, ...]:
        """Thread CPU time (ms) of a cut-out kernel, one sample per run (see the module's text),
        on `feeds` where they fit its inputs (random values otherwise); empty where the runtime
        uses more than one thread (the calling thread's CPU time is then not the kernel's)."""
        if self.spec.threads != 1:
            return ()
        self.pin()
        blob = proto.SerializeToString()
        overhead, base = self.profiler_overhead_ms, self.run_overhead_cpu_ms
        with tempfile.TemporaryDirectory(prefix="hwlat-ort-") as tmp:
            sess = _session(blob, self._options(tmp))
            feeds = _fed(sess, feeds)
            for _ in range(self.spec.measure.warmup + EDGE_RUNS):
                _run(sess, feeds)
            trace = sess.end_profiling()
            edges = kernel_times_per_run(trace, boundary=True)[-EDGE_RUNS:]
            os.unlink(trace)
        edge = float(np.median([max(t - n * overhead, 0.0) for t, n in edges]))
        plain = _session(blob, self._options())
        run = _bound_run(plain, feeds)
        for _ in range(self.spec.measure.warmup):
            run()
        samples: list[float] = []
        spent = 0.0
        while len(samples) < CPU_MIN_RUNS or (spent < CPU_MIN_MS and len(samples) < CPU_MAX_RUNS):
            c0 = time.thread_time()
            run()
            c = (time.thread_time() - c0) * 1e3
            spent += c
            samples.append(max(c - base - edge, 0.0))
        return tuple(samples)

    def unsupported(self, ops: set[str]) -> set[str]:
        """Ops of these (qualnames) that onnxruntime's CPU provider cannot run."""
        return {op for op in ops if "." in op}  # hwlat's custom-domain ops have no ORT kernel

    def _options(self, profile_dir: str | None = None) -> ort.SessionOptions:
        o = ort.SessionOptions()
        o.intra_op_num_threads = self.spec.threads
        o.inter_op_num_threads = 1
        o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        o.log_severity_level = 3
        if profile_dir:
            o.enable_profiling = True
            o.profile_file_prefix = os.path.join(profile_dir, "ort")
        return o

    def time_kernel(self, proto: onnx.ModelProto, feeds: dict[str, np.ndarray] | None = None) -> Timing:
        """A cut-out kernel's profiler durations and thread CPU time, on `feeds` where they fit
        its inputs (`model_activations`), random values otherwise."""
        wall = self._time_kernel_wall(proto, feeds)
        return Timing(wall.samples_ms, wall.rounds, self.cpu_time_kernel(proto, feeds))

    def _time_kernel_wall(self, proto: onnx.ModelProto, given: dict[str, np.ndarray] | None = None) -> Timing:
        self.pin()
        feeds = None
        overhead = self.profiler_overhead_ms
        with tempfile.TemporaryDirectory(prefix="hwlat-ort-") as tmp:
            def round_(n: int) -> list[float]:
                nonlocal feeds
                sess = _session(proto.SerializeToString(), self._options(tmp))
                feeds = feeds or _fed(sess, given)
                for _ in range(self.spec.measure.warmup + n):
                    _run(sess, feeds)
                trace = sess.end_profiling()
                runs = kernel_times_per_run(trace)
                os.unlink(trace)
                return [max(t - nodes * overhead, 0.0) for t, nodes in runs[-n:]]

            return measure(round_, self.spec.measure)

    def time_in_model(self, path: str, g, kernels) -> dict[int, list[float]]:
        """Per kernel (by index in `kernels`), its time in each run of the whole model.

        onnxruntime names the nodes it executes after the original nodes or their output values
        (`<value>_nchwc` for a fused conv, `<node>/<Fusion>` for other fusions); a node it adds
        itself (a layout Reorder, a Gemm's Reshape) is charged to the next kernel that runs,
        which is the one that needed it, except a node of an op the kernel just run ends with
        (a written-out GELU fused into a node named just `Gelu`), which is that kernel's tail. Kernels onnxruntime removed or renamed beyond
        recognition are absent from the result and are timed alone instead. Like every
        measurement, a round whose spread is too wide is run again (the tightest round is kept
        for each kernel).
        """
        self.pin()
        owner = kernel_owners(g, kernels)
        tails = {idx: frozenset(k.key.ops) - _NOT_TAIL for idx, k in enumerate(kernels)}
        best: dict[int, Timing] = {}
        for _ in range(self.spec.measure.max_rounds):
            for idx, samples in self._in_model_round(path, owner, tails).items():
                t = Timing(tuple(samples))
                if idx not in best or t.cv < best[idx].cv:
                    best[idx] = t
            if all(t.cv <= self.spec.measure.max_cv for t in best.values()):
                break
        return {idx: list(t.samples_ms) for idx, t in best.items()}

    def _in_model_round(self, path: str, owner: dict[str, int],
                        tails: dict[int, frozenset[str]] | None = None) -> dict[int, list[float]]:
        overhead = self.profiler_overhead_ms
        n = self.spec.measure.repeats
        with tempfile.TemporaryDirectory(prefix="hwlat-ort-") as tmp:
            sess = _session(str(path), self._options(tmp))
            feeds = random_feeds(sess)
            for _ in range(self.spec.measure.warmup + n):
                _run(sess, feeds)
            trace = sess.end_profiling()
            with open(trace) as f:
                events = json.load(f)
        runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                      if e.get("cat") == "Session" and e.get("name") == "model_run")[-n:]
        nodes = sorted((e["ts"], e["dur"], e["name"][: -len("_kernel_time")], e.get("args", {}).get("op_name", ""))
                       for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"))
        return attribute(nodes, runs, owner, overhead, tails)

    def time_model(self, path: str) -> Timing:
        self.pin()
        sess = _session(path, self._options())
        feeds = random_feeds(sess)

        cpu: list[float] = []

        def round_(n: int) -> list[float]:
            for _ in range(self.spec.measure.warmup):
                _run(sess, feeds)
            out = []
            for _ in range(n):
                t0, c0 = time.perf_counter(), time.thread_time()
                _run(sess, feeds)
                cpu.append((time.thread_time() - c0) * 1e3)
                out.append((time.perf_counter() - t0) * 1e3)
            return out

        wall = measure(round_, self.spec.measure)
        # the calling thread's CPU time is the model's only where onnxruntime runs one thread
        return Timing(wall.samples_ms, wall.rounds, tuple(cpu) if self.spec.threads == 1 else ())


def _session(model: bytes | str, options: ort.SessionOptions) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise BackendError("onnxruntime cannot build the model", e) from e


def _run(sess: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> None:
    """One run; onnxruntime's refusal to run a model is one HwlatError line."""
    try:
        sess.run(None, feeds)
    except Exception as e:  # onnxruntime raises its own Fail/InvalidArgument/RuntimeException
        raise HwlatError(f"onnxruntime cannot run the model: {' '.join(str(e).split())[:300]}") from e


def _bound_run(sess: ort.InferenceSession, feeds: dict[str, np.ndarray]):
    """A function that runs `sess` on `feeds` with inputs and outputs bound once, so a run copies
    and allocates nothing in Python; plain runs where an output's shape is not fixed."""
    outs = sess.get_outputs()
    if any(not isinstance(d, int) or d < 0 for o in outs for d in o.shape) \
            or any(_NP.get(o.type) is None for o in outs):
        return lambda: _run(sess, feeds)
    binding = sess.io_binding()
    for name, value in feeds.items():
        binding.bind_cpu_input(name, value)
    keep = []
    for o in outs:
        buf = np.empty(o.shape, _NP[o.type])
        keep.append(buf)
        binding.bind_output(o.name, "cpu", 0, buf.dtype, buf.shape, buf.ctypes.data)

    def run() -> None:
        try:
            sess.run_with_iobinding(binding)
        except Exception as e:
            raise HwlatError(f"onnxruntime cannot run the model: {' '.join(str(e).split())[:300]}") from e
        _ = keep  # the bound output buffers live as long as the function

    return run


MAX_FEED_BYTES = 1 << 30  # random inputs hwlat makes up to time a model


_NP = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
       "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
       "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}


def random_feeds(sess: ort.InferenceSession, seed: int = 0) -> dict[str, np.ndarray]:
    specs = []
    total = 0
    for i in sess.get_inputs():
        if any(not isinstance(d, int) or d < 0 for d in i.shape):
            raise InvalidModelError(f"input '{i.name}' has an unknown dimension {i.shape}; "
                                    "export with a fixed shape to time it")
        dtype = _NP.get(i.type)
        if dtype is None:
            raise InvalidModelError(f"input '{i.name}' has type {i.type}, which hwlat cannot feed")
        total += math.prod(i.shape) * np.dtype(dtype).itemsize
        if total > MAX_FEED_BYTES:
            raise InvalidModelError(f"input '{i.name}' {list(i.shape)} takes the model's inputs past "
                                    f"{MAX_FEED_BYTES >> 20} MiB; hwlat times models with smaller inputs")
        specs.append((i.name, i.shape, dtype))
    return seeded_feeds(specs, seed)


def _fed(sess: ort.InferenceSession, given: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    """The session's inputs: the `given` value where one of the input's shape and type is
    given, a random one otherwise."""
    feeds = random_feeds(sess)
    for name, rnd in feeds.items():
        v = (given or {}).get(name)
        if v is not None and v.shape == rnd.shape and v.dtype == rnd.dtype:
            feeds[name] = v
    return feeds


def kernel_times_per_run(trace_path: str, boundary: bool = False) -> list[tuple[float, int]]:
    """Per run: the summed time (ms) of the nodes onnxruntime executed, and how many there were,
    boundary reorders left out (with `boundary`: of the boundary reorders only)."""
    with open(trace_path) as f:
        events = json.load(f)
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                  if e.get("cat") == "Session" and e.get("name") == "model_run")
    nodes = sorted((e["ts"], e["dur"]) for e in events
                   if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")
                   and (e.get("args", {}).get("op_name") in _BOUNDARY_OPS) == boundary)
    totals, j = [], 0
    for start, end in runs:
        total = count = 0
        while j < len(nodes) and nodes[j][0] < start:
            j += 1
        while j < len(nodes) and nodes[j][0] <= end:
            total += nodes[j][1]
            count += 1
            j += 1
        totals.append((total / 1e3, count))
    return totals


# ops of nodes onnxruntime adds for the next kernel's sake: never the tail of the last one
_NOT_TAIL = frozenset({"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity",
                       "ReorderInput", "ReorderOutput", "Cast", "Concat", "Split", "Slice", "Gather"})


def attribute(nodes, runs, owner: dict[str, int], overhead: float,
              tails: dict[int, frozenset[str]] | None = None) -> dict[int, list[float]]:
    """Per kernel index, its time (ms) in each run: `nodes` are (start us, duration us, name,
    op) of the executed nodes, `runs` (start, end) of the runs. A node no kernel owns is charged
    to the next kernel that runs, or, where its op is among `tails[last]` (ops of the kernel
    just run), to that kernel (see OrtRunner.time_in_model)."""
    tails = tails or {}
    per: dict[int, list[float]] = {}
    for r, (start, end) in enumerate(runs):
        pending, last = 0.0, None
        for ts, dur, name, op in nodes:
            if ts < start or ts > end:
                continue
            cost = max(dur / 1e3 - overhead, 0.0)
            idx = _ort_owner(name, owner)
            if idx is None:
                if last is not None and not pending and op in tails.get(last, ()):
                    per[last][r] += cost
                else:
                    pending += cost
                continue
            times = per.setdefault(idx, [0.0] * len(runs))
            times[r] += cost + pending
            pending, last = 0.0, idx
        if pending and last is not None:
            per[last][r] += pending
    return per


def _ort_owner(name: str, owner: dict[str, int]) -> int | None:
    """The kernel an executed onnxruntime node was made from: its name is an original node or
    value name, with `_nchwc` after a value made NCHWc and `/<Fusion>` after a fused node. Names
    may hold `/` themselves (torch's exporter names nodes `/layer1/conv1/Conv`), so the name
    is tried whole, then less one trailing `/...` at a time."""
    while True:
        for cand in (name, name.removesuffix("_nchwc")):
            if cand in owner:
                return owner[cand]
        if "/" not in name.strip("/"):
            return None
        name = name.rsplit("/", 1)[0]


def _relu_chain(n: int, shape) -> onnx.ModelProto:
    h = onnx.helper
    nodes = [h.make_node("Relu", [f"x{i}"], [f"x{i + 1}"]) for i in range(n)]
    info = lambda name: h.make_tensor_value_info(name, onnx.TensorProto.FLOAT, list(shape))  # noqa: E731
    graph = h.make_graph(nodes, "chain", [info("x0")], [info(f"x{n}")])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    return model
