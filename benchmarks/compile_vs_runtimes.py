"""Compiled models (`hwlat.lowering`) vs onnxruntime vs torch eager, one process, 1 thread.

    .venv/bin/python benchmarks/compile_vs_runtimes.py [--models mobilenet_v2 resnet18 vit_tiny ofa]
        [--pipelines default zero] [--tvm-lowering] [--tune-trials N --tuning-db DIR] [--rounds 5]
        [--interleave block|call] [--order permuted|fixed]

Each model is exported once (the zoo; "ofa" is OFA's note10 30 ms net from ../shared/data), then
built by `hwlat.lowering.lower` with each pipeline (compile time printed; with --tune-trials the
static_shape_tuning pipeline tunes into --tuning-db first and its time is the tuning time);
`--tvm-lowering` adds the default pipeline without hwlat's dense kernels (convs and matmuls left to
TVM's own legalization), the baseline they replace. Then,
per round and model, the contestants (the Relax VM, an onnxruntime session with 1 intra-op
thread and all optimizations, the torch module with torch.set_num_threads(1) in inference mode)
run interleaved: with `--interleave block` (the default: latency in a loop, each model's
weights as warm as its own back-to-back calls leave them) each runs >= --min-time s of
back-to-back calls in turn, a round's figure its mean call; with `--interleave call` they take
turns call by call until each has run >= --min-time s (the turns cycle through every order of the
contestants, so that each follows each other equally often; `--order fixed`: A, B, C, A, B, C,
...; on OFA's net the two measured alike, 2026-11-27), a round's figure
its median call: the load of this shared machine drifts under all alike (tighter ratios), and
each call finds the cache holding the other contestant's weights (colder than a loop). Prints
the median over rounds, the min..max of the round medians, and the ratio to onnxruntime as the
median (min..max) of the per-round ratios, by wall time and by the calling thread's CPU time.
Goal (compile issue): compiled <= 1.0x onnxruntime's latency.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TVM_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
OFA_NET = ROOT.parent / "shared" / "data" / "ofa" / "net_configs" / "note10_lat-30ms_top1-78.4_finetune-75.json"


def build_model(name: str):
    from hwlat import zoo

    if name == "ofa":
        return zoo.from_ofa_config(OFA_NET)
    return zoo.build(name, 1, None)


def per_call_s(fn, min_time: float) -> tuple[float, float]:
    """(wall, CPU time of this thread) per call, over >= min_time s of back-to-back calls."""
    n, t0, c0 = 0, time.perf_counter(), time.thread_time()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_time:
            return elapsed / n, (time.thread_time() - c0) / n


def interleaved_calls(runs: dict, min_time: float, order: str = "permuted") -> dict[
        str, tuple[float, float]]:
    """{label: (median wall s, median CPU s of this thread) per call}: the contestants called in
    turn, one call each, until every one has run >= min_time s. With order "fixed" every turn
    calls them in the order of `runs`, so each always meets the cache as the same predecessor
    left it (e.g. dirty with torch's activations); with "permuted" the turns cycle through every
    order of the contestants, so that each follows each of the others equally often."""
    walls: dict[str, list[float]] = {k: [] for k in runs}
    cpus: dict[str, list[float]] = {k: [] for k in runs}
    orders = list(itertools.permutations(runs)) if order == "permuted" else [tuple(runs)]
    turn = 0
    while min(sum(w) for w in walls.values()) < min_time or turn % len(orders):
        labels = orders[turn % len(orders)]
        turn += 1
        for label in labels:
            fn = runs[label]
            t0, c0 = time.perf_counter(), time.thread_time()
            fn()
            walls[label].append(time.perf_counter() - t0)
            cpus[label].append(time.thread_time() - c0)
    return {k: (statistics.median(walls[k]), statistics.median(cpus[k])) for k in runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["mobilenet_v2", "resnet18", "vit_tiny", "ofa"])
    ap.add_argument("--pipelines", nargs="+", default=["default"])
    ap.add_argument("--tvm-lowering", action="store_true",
                    help="also build the default pipeline without hwlat's dense kernels")
    ap.add_argument("--tune-trials", type=int, default=0)
    ap.add_argument("--tuning-db", type=Path, default=None)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=0.5)
    ap.add_argument("--interleave", choices=("block", "call"), default="block")
    ap.add_argument("--order", choices=("permuted", "fixed"), default="permuted",
                    help="call by call: cycle through every order of the contestants, or keep "
                         "one (each then always follows the same predecessor)")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "compile_bench")
    args = ap.parse_args()

    import numpy as np
    import onnxruntime as ort
    import torch
    import tvm
    from tvm import relax

    from hwlat.lowering.compile import lower
    from hwlat.lowering.targets import make_target
    from hwlat.onnx_export import export

    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    target = make_target("host", None, 1)
    dev = tvm.cpu(0)
    contestants: dict[str, dict[str, object]] = {}
    for name in args.models:
        model, inputs = build_model(name)
        model.eval()
        path = args.out / f"{name}.onnx"
        if not path.exists():
            export(model, inputs, path, compare=False)
        x = inputs[0] if isinstance(inputs, tuple) else inputs
        feed = x.numpy()
        runs: dict[str, object] = {}
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        in_name = sess.get_inputs()[0].name
        runs["onnxruntime"] = lambda s=sess, n=in_name, f=feed: s.run(None, {n: f})

        def torch_run(m=model, t=x):
            with torch.inference_mode():
                m(t)

        runs["torch eager"] = torch_run
        builds = [(f"tvm {p}", p, True) for p in args.pipelines]
        if args.tvm_lowering:
            builds.append(("tvm default, TVM's conv/matmul", "default", False))
        if args.tune_trials or args.tuning_db:
            builds.append(("tvm static_shape_tuning", "static_shape_tuning", True))
        for label, p, dense in builds:
            t0 = time.perf_counter()
            tuned = p == "static_shape_tuning"
            built = lower(path, target, p, tuning_db=args.tuning_db if tuned else None,
                          tune_trials=args.tune_trials if tuned else 0, dense_kernels=dense)
            seconds = time.perf_counter() - t0
            vm = relax.VirtualMachine(built.executable, dev)
            vm.set_input("main", tvm.runtime.tensor(feed, dev))
            out = vm["main"](tvm.runtime.tensor(feed, dev))
            out = out if hasattr(out, "numpy") else out[0]
            want = sess.run(None, {in_name: feed})[0]
            diff = float(np.max(np.abs(out.numpy() - want)))
            runs[label] = lambda v=vm: v.invoke_stateful("main")
            print(f"{name}: built '{label}' in {seconds:.0f} s; max |diff| vs onnxruntime "
                  f"{diff:.2e}", flush=True)
        contestants[name] = runs

    for runs in contestants.values():  # warm-up
        for fn in runs.values():
            fn()
    times: dict[tuple[str, str], list[float]] = {}
    cpus: dict[tuple[str, str], list[float]] = {}
    for r in range(args.rounds):
        for name, runs in contestants.items():
            # Python's cyclic GC off while timing (as timeit does): a full collection walks every
            # object of the process (~250 K with torch and TVM loaded: ~0.2 s here) and lands on
            # whichever call allocated last, more often on the runtime that allocates more
            gc.collect()
            gc.disable()
            try:
                if args.interleave == "call":
                    per_label = interleaved_calls(runs, args.min_time, args.order)
                else:
                    per_label = {label: per_call_s(fn, args.min_time) for label, fn in runs.items()}
            finally:
                gc.enable()
            for label, (wall, cpu) in per_label.items():
                times.setdefault((name, label), []).append(wall * 1e3)
                cpus.setdefault((name, label), []).append(cpu * 1e3)
        print(f"  round {r + 1}/{args.rounds}", flush=True)

    how = "call by call" if args.interleave == "call" else "in blocks of back-to-back calls"
    print(f"\n1 thread; median of {args.rounds} rounds, contestants interleaved {how} (min..max of "
          "round figures); "
          "ratio to onnxruntime: median (min..max) of the per-round ratios, wall time and CPU time "
          "of the calling thread (both runtimes compute on it with one thread)\n")
    print("| model | runtime | ms | min..max | vs onnxruntime (wall) | vs onnxruntime (CPU) |")
    print("|---|---|---|---|---|---|")
    for name, runs in contestants.items():
        for label in runs:
            t = times[(name, label)]
            wall = [a / b for a, b in zip(t, times[(name, "onnxruntime")], strict=True)]
            cpu = [a / b for a, b in zip(cpus[(name, label)], cpus[(name, "onnxruntime")], strict=True)]
            print(f"| {name} | {label} | {statistics.median(t):.2f} | {min(t):.2f}..{max(t):.2f} | "
                  f"{statistics.median(wall):.2f}x ({min(wall):.2f}..{max(wall):.2f}) | "
                  f"{statistics.median(cpu):.2f}x ({min(cpu):.2f}..{max(cpu):.2f}) |")


if __name__ == "__main__":
    main()
