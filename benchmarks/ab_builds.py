"""Two compiled builds of one model against each other and onnxruntime, in one process, 1 thread:
the A/B for a kernel change, measured inside the model.

    .venv/bin/python benchmarks/ab_builds.py A.so B.so MODEL.onnx [--calls 400]

A.so and B.so are `hwlat compile` outputs of MODEL.onnx (e.g. before and after a change; build
each with its checkout). After a warm-up and a check that A, B and onnxruntime agree, single
calls take turns (A, B, onnxruntime; then B, A, onnxruntime, ...) --calls times, so that the
shared machine's load drifts under all three alike and each call meets the cache as the others
leave it. Prints the median call of each, and the paired ratios B / A, A / onnxruntime and
B / onnxruntime: median and p10..p90 (B / A) or p25..p75 of the per-turn ratios.
"""

from __future__ import annotations

import os

os.environ.setdefault("TVM_NUM_THREADS", "1")  # before TVM starts its thread pool

import argparse  # noqa: E402
import gc  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import tvm  # noqa: E402
from tvm import relax  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("model")
    ap.add_argument("--calls", type=int, default=400)
    args = ap.parse_args()
    o = ort.SessionOptions()
    o.intra_op_num_threads = o.inter_op_num_threads = 1
    sess = ort.InferenceSession(args.model, o, providers=["CPUExecutionProvider"])
    feeds = {i.name: np.random.default_rng(0).random(i.shape, dtype=np.float32)
             for i in sess.get_inputs()}
    xs = [tvm.runtime.tensor(v) for v in feeds.values()]
    fa, fb = (relax.VirtualMachine(tvm.runtime.load_module(p), tvm.cpu())["main"]
              for p in (args.a, args.b))
    want = sess.run(None, feeds)[0]
    ya, yb = (y if hasattr(y, "numpy") else y[0] for y in (fa(*xs), fb(*xs)))  # the first output
    print(f"max |A - onnxruntime| {np.abs(ya.numpy() - want).max():.2e}, "
          f"max |B - onnxruntime| {np.abs(yb.numpy() - want).max():.2e}")
    calls = [lambda: fa(*xs), lambda: fb(*xs), lambda: sess.run(None, feeds)]
    times = [[], [], []]
    gc.collect()
    gc.disable()  # no cyclic collection inside a timed call (as timeit)
    for i in range(args.calls + 20):
        for k in ((0, 1, 2) if i % 2 == 0 else (1, 0, 2)):
            t0 = time.perf_counter()
            calls[k]()
            if i >= 20:
                times[k].append(time.perf_counter() - t0)
    gc.enable()
    a = np.array(times) * 1e3
    r, ra, rb = a[1] / a[0], a[0] / a[2], a[1] / a[2]
    print(f"median ms: A {np.median(a[0]):.3f}, B {np.median(a[1]):.3f}, "
          f"onnxruntime {np.median(a[2]):.3f}")
    print(f"B / A {np.median(r):.3f} (p10 {np.percentile(r, 10):.3f} .. p90 "
          f"{np.percentile(r, 90):.3f})")
    for name, v in (("A", ra), ("B", rb)):
        print(f"{name} / onnxruntime {np.median(v):.3f} ({np.percentile(v, 25):.3f}.."
              f"{np.percentile(v, 75):.3f})")


if __name__ == "__main__":
    main()
