"""hwlat's kernels vs the nodes onnxruntime really executes, for every zoo model ORT can run.

    .venv/bin/python benchmarks/kernel_counts.py [--out-dir build/bench]

Prints, per model: ONNX nodes, hwlat kernels (by kind), onnxruntime executed nodes (by op,
1 thread, ORT_ENABLE_ALL, from its profiler), and `hwlat inspect` time. Also `hwlat inspect`
wall time on resnet50 (load + fuse + cost, median of 5).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnxruntime as ort

from hwlat import zoo
from hwlat.graph import fuse, load
from hwlat.graph.summary import summarize
from hwlat.onnx_export import export


def ort_executed(path: str) -> Counter:
    with tempfile.TemporaryDirectory() as tmp:
        o = ort.SessionOptions()
        o.intra_op_num_threads = 1
        o.enable_profiling = True
        o.profile_file_prefix = os.path.join(tmp, "p")
        s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
        feeds = {i.name: np.random.default_rng(0).standard_normal(i.shape).astype(np.float32)
                 for i in s.get_inputs()}
        s.run(None, feeds)
        events = json.load(open(s.end_profiling()))
    return Counter(e["args"]["op_name"] for e in events
                   if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out-dir", default="build/bench")
    args = ap.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    models = {name: (lambda n=name: zoo.build(n)) for name in zoo.MODELS if name != "sparse_convnet"}
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "ofa" / "net_configs"
    cfg = shared / "note10_lat-30ms_top1-78.4_finetune-75.json"
    if cfg.exists():
        models["ofa note10-30ms"] = lambda: zoo.from_ofa_config(cfg)
    models["nb201 (pixel3 #1)"] = lambda: zoo.from_nb201(
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")
    print("| model | ONNX nodes | hwlat kernels | ORT executed nodes | hwlat kinds | ORT ops |")
    print("|---|---|---|---|---|---|")
    for name, build in models.items():
        path = out / (name.replace(" ", "_").replace("(", "").replace(")", "").replace("#", "") + ".onnx")
        if not path.exists():
            export(*build(), path)
        g = load(path)
        t = summarize(g, fuse(g)).totals()
        ex = ort_executed(str(path))
        kinds = ", ".join(f"{k} {v}" for k, v in t["by_kind"].items())
        ops = ", ".join(f"{k} {v}" for k, v in ex.most_common())
        print(f"| {name} | {t['nodes']} | {t['kernels']} | {sum(ex.values())} | {kinds} | {ops} |")
    path = out / "resnet50.onnx"
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        g = load(path)
        summarize(g, fuse(g))
        times.append(time.perf_counter() - t0)
    print(f"\ninspect resnet50 (load + fuse + cost, in process): median {statistics.median(times) * 1e3:.0f} ms, "
          f"min {min(times) * 1e3:.0f}, max {max(times) * 1e3:.0f} (5 runs)")


if __name__ == "__main__":
    main()
