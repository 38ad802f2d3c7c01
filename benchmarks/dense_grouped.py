"""hwlat's grouped conv2d kernel vs onnxruntime (one Conv node with a bias, then a Relu), one
thread, in one process, on the grouped convs of ResNeXt-26ts/50 and RegNet-X/Y (torch exports,
batch 1), the epilogue bias + relu fused in hwlat.

    .venv/bin/python benchmarks/dense_grouped.py [--rounds 5] [--min-time 0.2]
        [--models resnext26ts,regnetx_004] [--plan MR,NV,GT,ROWS] [--avx2]

--plan overrides the default tile (grouped.Plan: channels a tile, pixel vectors, groups a
tile, output rows a task); --avx2 builds 8-lane plans (default: the CPU of this machine's
target). After a warm-up, each round times both contestants in turn (interleaved), each for at
least --min-time seconds of back-to-back calls, in thread CPU time (other processes sharing the
cores count less); the table gives the medians per call, the ratio hwlat / ORT of the medians
and the spread of the per-round ratios. Outputs are checked against ORT's.
"""

from __future__ import annotations

import os

os.environ["TVM_NUM_THREADS"] = "1"  # before TVM starts its thread pool
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import tvm  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from hwlat.kernels import cpu as cpu_info  # noqa: E402
from hwlat.kernels.dense import grouped  # noqa: E402
from hwlat.kernels.dense.spec import Conv2dSpec, Epilogue  # noqa: E402
from hwlat.lowering.targets import make_target  # noqa: E402

TARGET = make_target(threads=1)

# (cin = cout, map side, groups, stride, count in the model): every grouped conv is 3x3, pad 1
SHAPES = {
    "resnext26ts": [(64, 64, 2, 1, 2), (128, 64, 4, 2, 1), (128, 32, 4, 1, 1), (256, 32, 8, 2, 1),
                    (256, 16, 8, 1, 1), (512, 16, 16, 2, 1), (512, 8, 16, 1, 1)],
    "regnetx_002": [(24, 112, 3, 2, 1), (56, 56, 7, 2, 1), (152, 28, 19, 2, 1),
                    (152, 14, 19, 1, 3), (368, 14, 46, 2, 1), (368, 7, 46, 1, 6)],
    "regnetx_004": [(32, 112, 2, 2, 1), (64, 56, 4, 2, 1), (64, 28, 4, 1, 1), (160, 28, 10, 2, 1),
                    (160, 14, 10, 1, 6), (384, 14, 24, 2, 1), (384, 7, 24, 1, 11)],
    "regnetx_008": [(64, 112, 4, 2, 1), (128, 56, 8, 2, 1), (128, 28, 8, 1, 2),
                    (288, 28, 18, 2, 1), (288, 14, 18, 1, 6), (672, 14, 42, 2, 1),
                    (672, 7, 42, 1, 4)],
    "resnext50_32x4d": [(128, 56, 32, 1, 3), (256, 56, 32, 2, 1), (256, 28, 32, 1, 3),
                        (512, 28, 32, 2, 1), (512, 14, 32, 1, 5), (1024, 14, 32, 2, 1),
                        (1024, 7, 32, 1, 2)],
}


def model_specs(models: list[str]) -> list[tuple[str, Conv2dSpec, int]]:
    ep = Epilogue(bias=True, activation="relu")
    return [(m, Conv2dSpec(1, c, hw, hw, c, (3, 3), (s, s), (1, 1, 1, 1), groups=g, epilogue=ep),
             n) for m in models for c, hw, g, s, n in SHAPES[m]]


def ort_session(spec: Conv2dSpec, w: np.ndarray, b: np.ndarray) -> ort.InferenceSession:
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=list(spec.kernel),
                              strides=list(spec.stride), pads=list(spec.padding),
                              group=spec.groups),
             helper.make_node("Relu", ["c"], ["y"])]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(spec.x_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(spec.y_shape))], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])


def sample(fn: Callable, min_time: float) -> float:
    """Per-call thread CPU seconds over back-to-back calls lasting >= min_time."""
    n, t0 = 0, time.thread_time()
    while True:
        fn()
        n += 1
        spent = time.thread_time() - t0
        if spent >= min_time:
            return spent / n


def contestants(spec: Conv2dSpec, rng, plan, cpu) -> tuple[dict[str, Callable], float]:
    x = rng.standard_normal(spec.x_shape).astype(np.float32)
    w = rng.standard_normal(spec.w_shape).astype(np.float32)
    b = rng.standard_normal(spec.cout).astype(np.float32)
    sess = ort_session(spec, w, b)
    feed = {"x": x}
    func = grouped.primfunc(spec, plan, cpu).with_attr("global_symbol", "g")
    kernel = tvm.compile(tvm.IRModule({"g": func}), target=TARGET)["g"]
    args = [tvm.runtime.tensor(a) for a in (x, grouped.pack_weight(spec, w, plan, cpu), b)]
    out = tvm.runtime.tensor(np.zeros(spec.y_shape, np.float32))
    kernel(*args, out)
    want = sess.run(None, feed)[0]
    err = float(np.abs(out.numpy() - want).max() / max(1.0, np.abs(want).max()))
    return {"ort": lambda: sess.run(None, feed), "hwlat": lambda: kernel(*args, out)}, err


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=0.2, help="seconds per contestant per round")
    ap.add_argument("--models", default="resnext26ts,regnetx_002,regnetx_004,regnetx_008")
    ap.add_argument("--plan", default="", help="MR,NV,GT,ROWS (default: grouped.default_plan)")
    ap.add_argument("--avx2", action="store_true", help="8-lane plans")
    args = ap.parse_args()
    cpu = cpu_info.AVX2 if args.avx2 else cpu_info.cpu_of(TARGET)
    rng = np.random.default_rng(0)
    print(f"# {datetime.date.today()}, TVM target {TARGET.attrs['mcpu']}, plans for {cpu.isa}, "
          f"onnxruntime {ort.__version__}, 1 thread, {args.rounds} rounds x {args.min_time} s "
          f"thread CPU, plan {args.plan or 'default'}")
    print("\n| model | shape | count | plan | ORT us | hwlat us | ratio | spread | max rel err |")
    print("|---|---|---|---|---|---|---|---|---|")
    totals = {}
    for model, spec, count in model_specs(args.models.split(",")):
        plan = grouped.default_plan(spec, cpu)
        if args.plan:
            mr, nv, gt, rows = (int(v) for v in args.plan.split(","))
            plan = grouped.Plan(mr, nv, gt, rows, plan.lanes)
        runs, err = contestants(spec, rng, plan, cpu)
        for fn in runs.values():  # warm-up
            sample(fn, args.min_time / 2)
        spent = {n: [] for n in runs}
        for _ in range(args.rounds):
            for name, fn in runs.items():
                spent[name].append(sample(fn, args.min_time))
        ratios = [h / o for h, o in zip(spent["hwlat"], spent["ort"], strict=True)]
        mo, mh = statistics.median(spent["ort"]), statistics.median(spent["hwlat"])
        tot = totals.setdefault(model, [0.0, 0.0])
        tot[0] += count * mo
        tot[1] += count * mh
        shape = f"C{spec.cin} {spec.height}x{spec.width} g{spec.groups} s{spec.stride[0]}"
        print(f"| {model} | {shape} | {count} | {plan.mr}x{plan.nv}x{plan.gt} r{plan.rows} "
              f"| {mo * 1e6:.0f} | {mh * 1e6:.0f} | {mh / mo:.2f} "
              f"| {min(ratios):.2f}..{max(ratios):.2f} | {err:.1e} |", flush=True)
    for model, (o, h) in totals.items():
        print(f"| {model} | total (x count) | | | {o * 1e6:.0f} | {h * 1e6:.0f} | {h / o:.2f} "
              "| | |")


if __name__ == "__main__":
    main()
