"""How much a compiled model and onnxruntime gain from what their own previous call left in the
cache (1 thread, one process):

    .venv/bin/python benchmarks/cache_reuse.py LIB.so MODEL.onnx [--rounds 12] [--calls 10]
        [--flush-mb 96]

LIB.so is `hwlat compile MODEL.onnx -o LIB.so`. In each round, each runtime runs --calls calls
back to back, then --calls calls each preceded by a write over a --flush-mb buffer (which evicts
its weights and activations, and leaves the cache full of dirty lines). The first two calls of
each group are dropped. Prints the median call of each runtime both ways, the ratio flushed /
back to back, and hwlat / onnxruntime both ways. A model whose weights are near the size of the
last-level cache gains from back-to-back calls only as far as its footprint and access order let
the cache keep some of it.
"""

from __future__ import annotations

import os

os.environ.setdefault("TVM_NUM_THREADS", "1")  # before TVM starts its thread pool

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import tvm  # noqa: E402
from tvm import relax  # noqa: E402

from hwlat.lowering.run import outputs_of  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("lib")
    ap.add_argument("model")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--flush-mb", type=int, default=96)
    args = ap.parse_args()
    if args.calls < 3 or args.rounds < 1:
        raise SystemExit("--calls must be >= 3 and --rounds >= 1")

    o = ort.SessionOptions()
    o.intra_op_num_threads = o.inter_op_num_threads = 1
    sess = ort.InferenceSession(args.model, o, providers=["CPUExecutionProvider"])
    feeds = {i.name: np.random.default_rng(0).random(i.shape, dtype=np.float32)
             for i in sess.get_inputs()}
    vm = relax.VirtualMachine(tvm.runtime.load_module(args.lib), tvm.cpu())
    x = [tvm.runtime.tensor(v) for v in feeds.values()]
    got = outputs_of(vm["main"](*x))[0]
    diff = float(np.abs(got - sess.run(None, feeds)[0]).max())
    print(f"max |hwlat - onnxruntime| {diff:.2e}")

    runs = {"hwlat": lambda: vm["main"](*x), "onnxruntime": lambda: sess.run(None, feeds)}
    junk = np.ones((args.flush_mb << 20) // 4, np.float32)
    times: dict[tuple[str, str], list[float]] = {(k, m): [] for k in runs for m in ("b2b", "flushed")}
    for _ in range(args.rounds):
        for name, run in runs.items():
            for mode in ("b2b", "flushed"):
                for i in range(args.calls):
                    if mode == "flushed":
                        junk += 1.0
                    t0 = time.perf_counter()
                    run()
                    dt = time.perf_counter() - t0
                    if i >= 2:
                        times[(name, mode)].append(dt)

    med = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
    print(f"{args.rounds} rounds x {args.calls - 2} timed calls; median ms")
    print("| runtime | back to back | after a write flush | flushed / back to back |")
    print("|---|---|---|---|")
    for name in runs:
        b, f = med[(name, "b2b")], med[(name, "flushed")]
        print(f"| {name} | {b:.2f} | {f:.2f} | {f / b:.3f} |")
    print(f"hwlat / onnxruntime: back to back {med[('hwlat', 'b2b')] / med[('onnxruntime', 'b2b')]:.3f}, "
          f"flushed {med[('hwlat', 'flushed')] / med[('onnxruntime', 'flushed')]:.3f}")


if __name__ == "__main__":
    main()
