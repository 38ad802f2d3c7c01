"""hwlat's dense matmul kernel (hwlat/kernels/dense/matmul.py) vs onnxruntime, one thread.

    .venv/bin/python benchmarks/dense_matmul.py [--rounds 7] [--min-time 0.2] [--shapes vit|gemv|all]
    .venv/bin/python benchmarks/dense_matmul.py --gemv-streams 1 2 4 [--calls 80]

Shapes (m, k, n) from build/dense_shapes.json: vit_tiny's linear layers (m = 197 tokens: qkv,
proj, fc1, fc2) and the classifiers (m = 1; the Gemm weights (n, k) there are transposed to
(k, n)). Each op is y = x @ w + bias (float32). onnxruntime runs a one-node-pair ONNX model
(MatMul + Add, constant initializers) with intra/inter-op threads 1; hwlat calls the kernel's
PrimFunc, compiled for this CPU, with the weight packed beforehand. Outputs are checked against
the numpy reference first.

After a warm-up, each round times both contestants in turn (interleaved), each for at least
--min-time seconds of back-to-back calls; the table gives the median over rounds of the per-call
time, the median of the per-round ratios hwlat / onnxruntime and their spread (min..max), for the
wall time and for the CPU time of the calling thread (both run their op on it; less sensitive to
other processes on a shared machine), and hwlat's GFLOP/s on its CPU time.

--gemv-streams S [S ...]: the GEMV kernel read as S contiguous k segments side by side, for each
S, on the classifiers and OFA's 1152 -> 1536 layer, with the weight coming from memory as in a
model whose weights outgrow the cache: before every call a 64 MB buffer is read through. The
calls of the variants take turns (--calls each, the first 5 dropped); prints each variant's
median call, GB/s of weight and the median of its per-turn ratios to the first S given.
"""

from __future__ import annotations

import os

os.environ["TVM_NUM_THREADS"] = "1"  # before TVM starts its thread pool
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import tvm  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from hwlat.kernels.cpu import cpu_of  # noqa: E402
from hwlat.kernels.dense import matmul  # noqa: E402
from hwlat.kernels.dense.reference import matmul_reference  # noqa: E402
from hwlat.kernels.dense.spec import Epilogue, MatmulSpec  # noqa: E402
from hwlat.lowering.targets import make_target  # noqa: E402

TARGET = make_target(threads=1)

VIT = [("vit qkv", 197, 192, 576), ("vit proj", 197, 192, 192), ("vit fc1", 197, 192, 768),
       ("vit fc2", 197, 768, 192)]
GEMV = [("vit head", 1, 192, 1000), ("resnet18 fc", 1, 512, 1000),
        ("mobilenet_v2 fc", 1, 1280, 1000), ("ofa fc", 1, 1536, 1000)]


def ort_session(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> Callable[[], object]:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["t"]), helper.make_node("Add", ["t", "b"], ["y"])],
        "matmul", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [x.shape[0], w.shape[1]])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feed = {"x": x}
    return sess, lambda: sess.run(None, feed)


def hwlat_call(spec: MatmulSpec, x, w, b, streams: int = matmul.GEMV_STREAMS):
    cpu = cpu_of(TARGET)  # the register tile of the target's CPU, as a model build picks it
    func = matmul.primfunc(spec, streams=streams, cpu=cpu).with_attr("global_symbol", "matmul")
    kernel = tvm.compile(tvm.IRModule({"matmul": func}), target=TARGET)["matmul"]
    args = [tvm.runtime.tensor(a) for a in (x, matmul.pack_weight(spec, w, cpu), b)]
    out = tvm.runtime.tensor(np.zeros(spec.y_shape, np.float32))
    return out, lambda: kernel(*args, out)


def per_call(fn: Callable[[], object], min_time: float) -> tuple[float, float]:
    """(wall, CPU time of the calling thread) per call, over >= min_time s of calls."""
    calls, start, cpu = 0, time.perf_counter(), time.thread_time()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return elapsed / calls, (time.thread_time() - cpu) / calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--min-time", type=float, default=0.2)
    ap.add_argument("--shapes", choices=("vit", "gemv", "all"), default="all")
    ap.add_argument("--gemv-streams", type=int, nargs="+", metavar="S")
    ap.add_argument("--calls", type=int, default=80)
    args = ap.parse_args()
    if args.gemv_streams:
        gemv_streams(args.gemv_streams, args.calls)
        return
    shapes = {"vit": VIT, "gemv": GEMV, "all": VIT + GEMV}[args.shapes]
    rng = np.random.default_rng(0)
    print(f"# {datetime.date.today()} {platform.node()} {platform.processor() or platform.machine()}"
          f" llvm mcpu={TARGET.attrs.get('mcpu')} onnxruntime {ort.__version__}; 1 thread;"
          f" {args.rounds} rounds x >= {args.min_time} s")
    print(f"{'shape':<16} {'m x k x n':>13} {'ort ms':>8} {'hwlat ms':>8} {'ratio':>6} "
          f"{'spread':>11} | {'ort cpu':>8} {'hwlat cpu':>9} {'ratio':>6} {'spread':>11} "
          f"{'GF/s':>5}")
    for name, m, k, n in shapes:
        spec = MatmulSpec(m, k, n, Epilogue(bias=True))
        x = rng.standard_normal((m, k)).astype(np.float32)
        w = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
        b = rng.standard_normal(n).astype(np.float32)
        want = matmul_reference(spec, x, w, b)
        _, ort_run = ort_session(x, w, b)
        out, hw_run = hwlat_call(spec, x, w, b)
        hw_run()
        tol = 1e-4 * float(np.abs(want).max())
        for label, got in (("onnxruntime", ort_run()[0]), ("hwlat", out.numpy())):
            err = float(np.abs(got - want).max())
            if err > tol:
                raise SystemExit(f"{name}: {label} differs from the reference by {err:.3g}")
        for fn in (ort_run, hw_run):
            per_call(fn, args.min_time)
        t_ort, t_hw = [], []
        for _ in range(args.rounds):
            t_ort.append(per_call(ort_run, args.min_time))
            t_hw.append(per_call(hw_run, args.min_time))
        cols = []
        for i in (0, 1):  # wall, CPU
            o = [t[i] for t in t_ort]
            h = [t[i] for t in t_hw]
            ratios = [a / b for a, b in zip(h, o, strict=True)]
            cols.append(f"{statistics.median(o) * 1e3:8.4f} {statistics.median(h) * 1e3:8.4f}"
                        f"{' ' * i} {statistics.median(ratios):6.2f}"
                        f" {f'{min(ratios):.2f}..{max(ratios):.2f}':>11}")
        gflops = 2 * m * k * n / statistics.median(t[1] for t in t_hw) / 1e9
        print(f"{name:<16} {f'{m}x{k}x{n}':>13} {cols[0]} | {cols[1]} {gflops:5.1f}", flush=True)


def gemv_streams(streams: list[int], calls: int) -> None:
    if min(streams) < 1 or calls < 10:
        raise SystemExit("--gemv-streams takes counts >= 1, --calls >= 10")
    rng = np.random.default_rng(0)
    flush = np.ones((64 << 20) // 4, np.float32)
    print(f"# {datetime.date.today()} {platform.node()} llvm mcpu={TARGET.attrs.get('mcpu')}; 1 thread;"
          f" weight from memory (64 MB read before each call); {calls} calls each, in turns")
    print(f"{'shape':<16} {'k x n':>11} " + " ".join(f"{f'S={s} ms':>9} {'GB/s':>5} {'ratio':>5}"
                                                   for s in streams))
    for name, _, k, n in GEMV + [("ofa 1152->1536", 1, 1152, 1536)]:
        spec = MatmulSpec(1, k, n, Epilogue(bias=True))
        x = rng.standard_normal((1, k)).astype(np.float32)
        w = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
        b = rng.standard_normal(n).astype(np.float32)
        want = matmul_reference(spec, x, w, b)
        runs = []
        for s in streams:
            out, run = hwlat_call(spec, x, w, b, s)
            run()
            err = float(np.abs(out.numpy() - want).max())
            if err > 1e-4 * float(np.abs(want).max()):
                raise SystemExit(f"{name}: {s} streams differ from the reference by {err:.3g}")
            runs.append(run)
        times = [[] for _ in runs]
        for _ in range(calls):
            for i, run in enumerate(runs):
                flush.sum()
                t0 = time.perf_counter()
                run()
                times[i].append(time.perf_counter() - t0)
        t = [np.array(v[5:]) for v in times]
        cols = [f"{np.median(v) * 1e3:9.4f} {4 * k * n / np.median(v) / 1e9:5.1f} "
                f"{np.median(v / t[0]):5.2f}" for v in t]
        print(f"{name:<16} {f'{k}x{n}':>11} " + " ".join(cols), flush=True)


if __name__ == "__main__":
    main()
