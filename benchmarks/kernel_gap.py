"""What a model's kernel sum misses on cpu-ort (1 thread), kernel by kernel.

    .venv/bin/python benchmarks/kernel_gap.py MODEL.onnx [MODEL.onnx ...] [--runs 20] [--json out.json]

Per model, interleaved in one process pinned to one core:

* the whole model's thread CPU time (bound inputs, median of `--runs` runs) and its wall time;
* the same model under onnxruntime's profiler: each executed node's duration (less the
  profiler's per-node overhead), charged to the hwlat kernel it was made from, or to "outside"
  (nodes onnxruntime added: layout Reorders, a Gemm's Reshapes) by op type; the gap between the
  run's duration and the sum of its nodes is the executor's own time between nodes;
* every kernel cut out and timed alone in thread CPU time on the values its inputs take in the
  model's run (the table's `cpu_times`, as `profile` measures them).

It prints per kernel kind: count, the sum of the in-model times, the sum of the cut-out CPU
times and their ratio; the nodes outside kernels; and the top kernels where cut-out and in-model
time differ most. On an idle machine a profiler duration is CPU time (wall / thread CPU of the
runs is printed: near 1 means idle), so in-model vs cut-out compares the same clock; under load
read only the cut-out CPU sum against the model's thread CPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from hwlat.devices import load_device
from hwlat.graph import fuse, load
from hwlat.graph.extract import extract_kernel
from hwlat.runners.ort import (
    OrtRunner,
    _bound_run,
    _ort_owner,
    _session,
    kernel_owners,
    random_feeds,
)
from hwlat.runners.profile import kernel_inputs


def in_model(runner: OrtRunner, path: str, kernels, owner, runs: int) -> dict:
    """Profiled runs: per kernel index the median in-model ms; outside nodes per op type; the
    executor's time between nodes; and the runs' thread CPU and wall time."""
    overhead = runner.profiler_overhead_ms
    with tempfile.TemporaryDirectory(prefix="hwlat-gap-") as tmp:
        sess = _session(path, runner._options(tmp))
        feeds = random_feeds(sess)
        for _ in range(5):
            sess.run(None, feeds)
        cpu, wall = [], []
        for _ in range(runs):
            t0, c0 = time.perf_counter(), time.thread_time()
            sess.run(None, feeds)
            cpu.append((time.thread_time() - c0) * 1e3)
            wall.append((time.perf_counter() - t0) * 1e3)
            time.sleep(0.002)  # a fresh time slice for the next run
        trace = sess.end_profiling()
        with open(trace) as f:
            events = json.load(f)
    model_runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                        if e.get("cat") == "Session" and e.get("name") == "model_run")[-runs:]
    nodes = sorted((e["ts"], e["dur"], e["name"][: -len("_kernel_time")], e.get("args", {}).get("op_name", "?"))
                   for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"))
    per_k: dict[int, list[float]] = defaultdict(lambda: [0.0] * len(model_runs))
    outside: dict[str, list[float]] = defaultdict(lambda: [0.0] * len(model_runs))
    n_out: dict[str, int] = defaultdict(int)
    between, node_counts = [], []
    for r, (start, end) in enumerate(model_runs):
        total, count = 0.0, 0
        for ts, dur, name, op in nodes:
            if ts < start or ts > end:
                continue
            cost = max(dur / 1e3 - overhead, 0.0)
            total += dur / 1e3
            count += 1
            idx = _ort_owner(name, owner)
            if idx is None:
                outside[op][r] += cost
                if r == 0:
                    n_out[op] += 1
            else:
                per_k[idx][r] += cost
        between.append((end - start) / 1e3 - total)
        node_counts.append(count)
    return {"kernel_ms": {i: statistics.median(v) for i, v in per_k.items()},
            "kernel_min_ms": {i: min(v) for i, v in per_k.items()},
            "outside_min_ms": sum(min(v) for v in outside.values()),
            "outside_ms": {op: statistics.median(v) for op, v in outside.items()},
            "outside_n": dict(n_out), "between_ms": statistics.median(between),
            "ort_nodes": statistics.median(node_counts),
            "profiled_cpu_ms": statistics.median(cpu), "profiled_wall_ms": statistics.median(wall)}


def model_cpu(path: str, runs: int) -> tuple[float, float]:
    sess = _session(path, OrtRunner(load_device("cpu-ort"))._options())
    run = _bound_run(sess, random_feeds(sess))
    for _ in range(5):
        run()
    cpu, wall = [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.thread_time()
        run()
        cpu.append((time.thread_time() - c0) * 1e3)
        wall.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(cpu), statistics.median(wall)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--top", type=int, default=8)
    ap.add_argument("--json", help="write every kernel's figures here")
    args = ap.parse_args()
    spec = load_device("cpu-ort")
    runner = OrtRunner(spec)
    runner.pin()
    print(f"pid {os.getpid()}; profiler overhead {runner.profiler_overhead_ms * 1e3:.2f} us/node, "
          f"run overhead {runner.run_overhead_cpu_ms * 1e3:.2f} us; load {os.getloadavg()[0]:.1f}")
    out = {}
    for path in args.models:
        g = load(path)
        kernels = fuse(g, spec.fusion)
        owner = kernel_owners(g, kernels)
        m_cpu0, m_wall0 = model_cpu(path, args.runs)
        im = in_model(runner, path, kernels, owner, args.runs)
        cut: dict[str, float] = {}
        acts = runner.model_activations(g, [v for k in kernels for v in kernel_inputs(g, k)])
        for k in kernels:
            key = k.key.text()
            if key not in cut:
                cut[key] = float(np.median(runner.cpu_time_kernel(extract_kernel(g, k), acts)))
        m_cpu1, m_wall1 = model_cpu(path, args.runs)
        m_cpu = (m_cpu0 + m_cpu1) / 2
        by_kind: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0, 0, 0.0])
        rows = []
        for idx, k in enumerate(kernels):
            kind = k.kind.value
            a = by_kind[kind]
            if len(a) == 4:
                a.append(0.0)
            a[4] += im["kernel_min_ms"].get(idx, 0.0)
            a[0] += 1
            c = cut[k.key.text()]
            a[2] += c
            if idx in im["kernel_ms"]:
                a[1] += im["kernel_ms"][idx]
                rows.append((kind, im["kernel_min_ms"][idx], c, "+".join(k.key.ops), len(k.nodes)))
            else:
                a[3] += 1
        cut_sum = sum(cut[k.key.text()] for k in kernels)
        in_sum = sum(im["kernel_ms"].values())
        out_sum = sum(im["outside_ms"].values())
        name = Path(path).name
        print(f"\n## {name}: {len(kernels)} kernels, {len(g.nodes)} graph nodes, {im['ort_nodes']:.0f} ORT nodes; "
              f"load {os.getloadavg()[0]:.1f}")
        print(f"model thread CPU {m_cpu:.2f} ms (before/after {m_cpu0:.2f}/{m_cpu1:.2f}; wall {m_wall0:.2f}/{m_wall1:.2f}); "
              f"profiled run CPU {im['profiled_cpu_ms']:.2f} wall {im['profiled_wall_ms']:.2f}")
        in_min = sum(im["kernel_min_ms"].values())
        print(f"in-model, each node's fastest run: kernels {in_min:.2f} + outside {im['outside_min_ms']:.2f} ms")
        print(f"cut-out CPU sum {cut_sum:.2f} ms ({cut_sum / m_cpu - 1:+.1%} vs model); in-model kernels {in_sum:.2f} + "
              f"outside nodes {out_sum:.2f} + between nodes {im['between_ms']:.2f} = "
              f"{in_sum + out_sum + im['between_ms']:.2f} ms")
        print("| kind | kernels | in-model ms (median / fastest) | cut-out CPU ms | cut / fastest in-model | not attributed |")
        print("|---|---|---|---|---|---|")
        for kind, (n, i_ms, c_ms, miss, lo) in sorted(by_kind.items(), key=lambda kv: -kv[1][2]):
            print(f"| {kind} | {n} | {i_ms:.2f} / {lo:.2f} | {c_ms:.2f} | {c_ms / lo if lo else float('nan'):.2f} | {miss} |")
        print("outside kernels: " + ", ".join(f"{op} x{im['outside_n'].get(op, 0)} {ms:.2f} ms"
                                              for op, ms in sorted(im["outside_ms"].items(), key=lambda kv: -kv[1])))
        rows.sort(key=lambda r: -abs(r[2] - r[1]))
        for kind, i_ms, c_ms, ops, nn in rows[: args.top]:
            print(f"  {kind:12s} in (fastest) {i_ms * 1e3:8.1f} us cut {c_ms * 1e3:8.1f} us  {ops} ({nn} nodes)")
        out[name] = {"model_cpu_ms": m_cpu, "cut_sum_ms": cut_sum, "in_model": {
            k: v for k, v in im.items() if k not in ("kernel_ms", "kernel_min_ms")},
            "kernels": [{"kind": k.kind.value, "ops": list(k.key.ops), "nodes": len(k.nodes),
                         "in_ms": im["kernel_ms"].get(i), "in_min_ms": im["kernel_min_ms"].get(i), "cut_cpu_ms": cut[k.key.text()]}
                        for i, k in enumerate(kernels)]}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
