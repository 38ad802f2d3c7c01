"""Compile the corpus (`hwlat zoo --corpus`) with `hwlat.lowering.compile_model` and time each model
against onnxruntime and OpenVINO, one process, pinned, `--threads` threads (default 1).

    .venv/bin/python benchmarks/corpus_compile.py --onnx-dir build/corpus-onnx
        [--models resnet18 regnetx_002 ...] [--families regnet densenet ...] [--route hwlat torch]
        [--threads 1] [--rounds 5] [--min-time 0.4] [--results build/corpus_compile/results.jsonl]
        [--summary-only] [--retry-failed]

Models come from `--onnx-dir` as `benchmarks/corpus_export.py` writes them: `STEM.onnx` (hwlat's
export, route hwlat) and `STEM.torch.onnx` (torch's TorchScript exporter, route torch); STEM is
the timm name, `tv-NAME` for torchvision. Per model and route:

1. build: `compile_model` for `make_target("host", threads=N)` into a .so (wall seconds, the
   import to Relax, the pipeline, code generation and linking); a failure is recorded with its
   one-line error and the next model goes on.
2. accuracy: seeded standard-normal inputs; relative error = max |hwlat - onnxruntime| /
   max |onnxruntime| over all outputs (the reference must not be constant: its range is recorded
   and a constant one is a failure of the check, not a pass); OpenVINO's the same way.
3. timing: the three run interleaved call by call (the turns cycle through every order, so each
   follows each other equally often), the process pinned to `--threads` cores
   (os.sched_setaffinity), Python's GC off, each until it has run >= --min-time s a round; a
   round's figure is its median call, by wall time, by the calling thread's CPU time
   (time.thread_time) and by the process's CPU time (all threads: OpenVINO may compute on a
   thread of its own). Figures: median over rounds, min..max of the rounds, and ratios to
   onnxruntime as the median (min..max) of the per-round ratios.

Every result is one line appended to the JSONL file (resumable: a model already recorded for the
route and thread count is skipped unless --retry-failed and it failed). At the end the table of
every selected model recorded, the geometric mean of hwlat / onnxruntime, the worst model, the
count at or below 1.0x, and OpenVINO's geometric mean (by thread CPU time, and by wall time; with
`--threads 2` or more by the process's CPU time, as the runtimes then compute on other threads too).

With `--threads 2` or more, the runtimes' idle workers do not spin (onnxruntime's
`session.intra_op.allow_spinning` 0, `TVM_THREAD_POOL_SPIN_COUNT` 0): the three take turns on the
same cores, and a worker spinning after its own call took the cores from the next runtime's
(resnet18 at 2 threads: hwlat / onnxruntime 2.31x by process CPU time with spinning, 1.23x without).
"""

from __future__ import annotations

import os
import sys

THREADS = "1"
for _i, _a in enumerate(sys.argv):  # TVM reads its pool size once, when the pool first starts
    if _a == "--threads" and _i + 1 < len(sys.argv):
        THREADS = sys.argv[_i + 1]
    elif _a.startswith("--threads="):
        THREADS = _a.split("=", 1)[1]
os.environ["TVM_NUM_THREADS"] = THREADS
os.environ.setdefault("OMP_NUM_THREADS", THREADS)
if THREADS != "1":  # the runtimes take turns on the same cores: no worker spins after its call
    os.environ.setdefault("TVM_THREAD_POOL_SPIN_COUNT", "0")

import argparse  # noqa: E402
import datetime  # noqa: E402
import gc  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUNTIMES = ("hwlat", "onnxruntime", "openvino")


def cpu_line() -> str:
    """lscpu's model name and the widest x86 vector extension the kernel reports."""
    name = "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        name = next((ln.split(":", 1)[1].strip() for ln in out.splitlines()
                     if ln.startswith("Model name")), name)
    except OSError:
        pass
    flags: set[str] = set()
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("flags"):
                flags = set(ln.split(":", 1)[1].split())
                break
    except OSError:
        pass
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{name}, {isa} ({os.cpu_count()} CPUs)"


def commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "unknown"


def stem(m) -> str:
    return m.name if m.source == "timm" else f"tv-{m.name}"


def select(models: list[str] | None, families: list[str] | None):
    from hwlat.zoo.corpus import CORPUS, FAMILIES

    chosen = list(CORPUS)
    if families:
        unknown = sorted(set(families) - set(FAMILIES))
        if unknown:
            sys.exit(f"error: unknown families {unknown}; known: {', '.join(FAMILIES)}")
        chosen = [m for m in chosen if m.family in families]
    if models:
        by = {}
        for m in CORPUS:
            by.setdefault(m.name, m)
            by[m.spec] = by[stem(m)] = m
        unknown = [n for n in models if n not in by]
        if unknown:
            sys.exit(f"error: not in the corpus: {', '.join(unknown)}")
        wanted = [by[n] for n in models]
        chosen = [m for m in wanted if not families or m.family in families]
    return chosen


def read_results(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for ln in path.read_text().splitlines():
        if ln.strip():
            try:
                rows.append(json.loads(ln))
            except json.JSONDecodeError:
                continue  # a line cut short by a killed run
    return rows


def append(path: Path, row: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def rel_err(got, want) -> tuple[float, float]:
    """(max |got - want| / max |want|, range of want) over all outputs."""
    import numpy as np

    diff = max(float(np.max(np.abs(g.astype(np.float64) - w), initial=0.0))
               for g, w in zip(got, want, strict=True))
    scale = max(float(np.max(np.abs(w), initial=0.0)) for w in want)
    spread = max(float(np.ptp(w)) if w.size else 0.0 for w in want)
    return (diff / scale if scale > 0 else math.inf), spread


def interleaved_round(runs: dict, min_time: float) -> dict[str, tuple[float, float, float]]:
    """{label: (median wall, median thread CPU, median process CPU) s per call} of one round."""
    samples: dict[str, list[tuple[float, float, float]]] = {k: [] for k in runs}
    orders = list(itertools.permutations(runs))
    turn = 0
    while min(sum(s[0] for s in v) for v in samples.values()) < min_time or turn % len(orders):
        for label in orders[turn % len(orders)]:
            fn = runs[label]
            t0, c0, p0 = time.perf_counter(), time.thread_time(), time.process_time()
            fn()
            samples[label].append((time.perf_counter() - t0, time.thread_time() - c0,
                                   time.process_time() - p0))
        turn += 1
    return {k: tuple(statistics.median(s[i] for s in v) for i in range(3)) for k, v in samples.items()}


def measure_model(m, route: str, path: Path, args, lib_dir: Path) -> dict:
    import numpy as np
    import onnxruntime as ort
    import openvino as ov

    from hwlat.errors import one_line
    from hwlat.lowering.compile import compile_model
    from hwlat.lowering.run import load_library, random_inputs
    from hwlat.lowering.targets import make_target

    row: dict = {"model": m.spec, "stem": stem(m), "family": m.family, "route": route,
                 "threads": args.threads, "ok": False}
    lib = lib_dir / f"{path.name.removesuffix('.onnx')}.t{args.threads}.so"
    t0 = time.perf_counter()
    try:
        report = compile_model(path, make_target("host", threads=args.threads), output=lib,
                               verify=False)
    except Exception as e:  # a build failure is a result, recorded with its one-line reason
        row.update(stage="build", error=f"{type(e).__name__}: {one_line(e, 400)}",
                   build_s=round(time.perf_counter() - t0, 1))
        return row
    row["build_s"] = round(time.perf_counter() - t0, 1)
    row["compile_s"] = round(report.compile_s, 1)

    loaded = load_library(lib, args.threads)
    arrays = random_inputs(loaded.meta.inputs, args.seed)
    feeds = {s.name: a for s, a in zip(loaded.meta.inputs, arrays, strict=True)}
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    if args.threads > 1:  # idle workers yield the cores to the runtime called next
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    want = sess.run(None, feeds)
    try:
        got = loaded.run(arrays)
    except Exception as e:
        row.update(stage="run", error=f"{type(e).__name__}: {one_line(e, 400)}")
        return row
    if [g.shape for g in got] != [w.shape for w in want]:
        row.update(stage="accuracy", error=f"output shapes {[g.shape for g in got]} vs "
                                           f"onnxruntime {[w.shape for w in want]}")
        return row
    err, spread = rel_err(got, want)
    row.update(rel_err=err, ref_range=spread)
    if not spread > 0:
        row.update(stage="accuracy", error="onnxruntime's output is constant on these inputs")
        return row

    core = ov.Core()
    # f32: on a CPU with bf16 units (AVX512_BF16, AMX) OpenVINO computes in bf16 unless told,
    # ~3x faster and ~1e-2 off; onnxruntime and hwlat compute in f32, so the race is at f32
    compiled = core.compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": args.threads,
                                                     "PERFORMANCE_HINT": "LATENCY",
                                                     "INFERENCE_PRECISION_HINT": args.openvino_precision})
    row["openvino_precision"] = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
    request = compiled.create_infer_request()
    ov_inputs = {compiled.inputs[i]: feeds[s.name] for i, s in enumerate(loaded.meta.inputs)}
    res = request.infer(ov_inputs)
    ov_got = [np.asarray(res[o]) for o in compiled.outputs]
    row["openvino_rel_err"] = rel_err(ov_got, want)[0] if len(ov_got) == len(want) else None

    fn = loaded.vm["main"]
    tensors = loaded.tensors(arrays)
    runs = {"hwlat": lambda: fn(*tensors),
            "onnxruntime": lambda: sess.run(None, feeds),
            "openvino": lambda: request.infer(ov_inputs)}
    allowed = sorted(os.sched_getaffinity(0))
    pin = set(allowed[-args.threads:]) if args.core is None else set(
        range(args.core, args.core + args.threads))
    per: dict[str, list[tuple[float, float, float]]] = {k: [] for k in runs}
    os.sched_setaffinity(0, pin)
    try:
        for f in runs.values():  # warm-up
            for _ in range(3):
                f()
        for _ in range(args.rounds):
            gc.collect()
            gc.disable()  # no cyclic collection inside a timed call (as timeit)
            try:
                r = interleaved_round(runs, args.min_time)
            finally:
                gc.enable()
            for k, v in r.items():
                per[k].append(v)
    finally:
        os.sched_setaffinity(0, set(allowed))
    row["pinned"] = sorted(pin)
    for k, v in per.items():
        for i, what in enumerate(("wall", "cpu", "proc")):
            ms = [x[i] * 1e3 for x in v]
            row[f"{k}_{what}_ms"] = [round(statistics.median(ms), 4), round(min(ms), 4),
                                     round(max(ms), 4)]
    for k in ("hwlat", "openvino"):
        for i, what in enumerate(("wall", "cpu", "proc")):
            ratios = [a[i] / b[i] for a, b in zip(per[k], per["onnxruntime"], strict=True)]
            row[f"{k}_vs_ort_{what}"] = [round(statistics.median(ratios), 4),
                                         round(min(ratios), 4), round(max(ratios), 4)]
    row.update(ok=True, stage="timed")
    lib.unlink(missing_ok=True)
    lib.with_suffix(".so.json").unlink(missing_ok=True)
    Path(str(lib) + ".json").unlink(missing_ok=True)
    return row


def geomean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else math.nan


def summarize(rows: list[dict], threads: int) -> None:
    timed = [r for r in rows if r.get("ok")]
    failed = [r for r in rows if not r.get("ok")]
    # at 1 thread every runtime computes on the calling thread; with more, on others too: then
    # the process's CPU time (all threads) is the measure
    cpu, cpu_label = ("cpu", "thread CPU") if threads == 1 else ("proc", "process CPU")
    print(f"\n{threads} thread(s); per model: build s, relative error vs onnxruntime, hwlat / "
          "onnxruntime and openvino / onnxruntime as the median (min..max) of the per-round "
          f"ratios by {cpu_label} time, then by wall time; ms: onnxruntime's median call "
          f"({cpu_label})\n")
    print(f"| model | family | route | build s | rel err | ort ms | hwlat/ort ({cpu_label}) | "
          f"openvino/ort ({cpu_label}) | hwlat/ort (wall) | openvino/ort (wall) |")
    print("|---|---|---|---|---|---|---|---|---|---|")

    def fmt(v):
        return f"{v[0]:.2f}x ({v[1]:.2f}..{v[2]:.2f})"

    for r in timed:
        print(f"| {r['stem']} | {r['family']} | {r['route']} | {r['build_s']:.0f} | "
              f"{r['rel_err']:.1e} | {r[f'onnxruntime_{cpu}_ms'][0]:.2f} | "
              f"{fmt(r[f'hwlat_vs_ort_{cpu}'])} | {fmt(r[f'openvino_vs_ort_{cpu}'])} | "
              f"{fmt(r['hwlat_vs_ort_wall'])} | {fmt(r['openvino_vs_ort_wall'])} |")
    for route in sorted({r["route"] for r in timed}):
        sel = [r for r in timed if r["route"] == route]
        for what in (cpu, "wall"):
            h = [r[f"hwlat_vs_ort_{what}"][0] for r in sel]
            o = [r[f"openvino_vs_ort_{what}"][0] for r in sel]
            worst = max(sel, key=lambda r, w=what: r[f"hwlat_vs_ort_{w}"][0])
            label = cpu_label if what == cpu else "wall"
            print(f"\nroute {route}, {len(sel)} models, by {label}: hwlat / onnxruntime geometric "
                  f"mean {geomean(h):.2f}x, worst {worst['stem']} "
                  f"{worst[f'hwlat_vs_ort_{what}'][0]:.2f}x, {sum(x <= 1.0 for x in h)} at or "
                  f"below 1.0x; openvino / onnxruntime geometric mean {geomean(o):.2f}x")
    high = [r for r in timed if r["rel_err"] > 1e-4]
    if high:
        print("\nrelative error > 1e-4: " + ", ".join(
            f"{r['stem']} ({r['route']}) {r['rel_err']:.1e}" for r in high))
    if failed:
        print("\nfailures:")
        for r in failed:
            print(f"  {r['stem']} ({r['route']}), {r.get('stage')}: {r.get('error')}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--onnx-dir", type=Path, default=ROOT / "build" / "corpus-onnx")
    ap.add_argument("--models", nargs="+", help="corpus names (timm name, tv-NAME or source:NAME)")
    ap.add_argument("--families", nargs="+")
    ap.add_argument("--route", nargs="+", choices=("hwlat", "torch"), default=["torch"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--core", type=int, default=None,
                    help="first core to pin to (default: the last --threads allowed cores)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=0.4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results", type=Path, default=ROOT / "build" / "corpus_compile" / "results.jsonl")
    ap.add_argument("--lib-dir", type=Path, default=ROOT / "build" / "corpus_compile" / "lib")
    ap.add_argument("--retry-failed", action="store_true")
    ap.add_argument("--openvino-precision", choices=("f32", "bf16"), default="f32",
                    help="OpenVINO's INFERENCE_PRECISION_HINT (f32: the precision of the others)")
    ap.add_argument("--summary-only", action="store_true")
    args = ap.parse_args()
    if str(args.threads) != THREADS:
        sys.exit("error: --threads must be given as its own argument")

    models = select(args.models, args.families)
    print(f"CPU: {cpu_line()}; {args.threads} thread(s); commit {commit()}; "
          f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC", flush=True)
    args.lib_dir.mkdir(parents=True, exist_ok=True)
    wanted = {(stem(m), route) for m in models for route in args.route}
    if not args.summary_only:
        done = {(r["stem"], r["route"]): r for r in read_results(args.results)
                if r.get("threads") == args.threads}
        for m in models:
            for route in args.route:
                prev = done.get((stem(m), route))
                if prev is not None and (prev.get("ok") or not args.retry_failed):
                    continue
                path = args.onnx_dir / (f"{stem(m)}.onnx" if route == "hwlat"
                                        else f"{stem(m)}.torch.onnx")
                if not path.exists():
                    row = {"model": m.spec, "stem": stem(m), "family": m.family, "route": route,
                           "threads": args.threads, "ok": False, "stage": "missing",
                           "error": f"{path} not found"}
                else:
                    print(f"{stem(m)} ({route}): building ...", flush=True)
                    row = measure_model(m, route, path, args, args.lib_dir)
                row.update(cpu=cpu_line(), commit=commit(),
                           date=f"{datetime.datetime.now(datetime.UTC):%Y-%m-%dT%H:%M}Z",
                           rounds=args.rounds, min_time=args.min_time)
                append(args.results, row)
                if row["ok"]:
                    c = "cpu" if args.threads == 1 else "proc"
                    print(f"  built in {row['build_s']:.0f} s, rel err {row['rel_err']:.1e}; "
                          f"hwlat/ort {row[f'hwlat_vs_ort_{c}'][0]:.2f}x, openvino/ort "
                          f"{row[f'openvino_vs_ort_{c}'][0]:.2f}x "
                          f"({'thread' if c == 'cpu' else 'process'} CPU time)", flush=True)
                else:
                    print(f"  FAILED at {row['stage']}: {row['error']}", flush=True)
    latest: dict[tuple[str, str], dict] = {}
    for r in read_results(args.results):
        if r.get("threads") == args.threads and (r["stem"], r["route"]) in wanted:
            latest[(r["stem"], r["route"])] = r
    summarize(list(latest.values()), args.threads)


if __name__ == "__main__":
    main()
