"""hwlat's depthwise conv2d kernel vs onnxruntime (one Conv node with groups == C and a bias),
one thread, in one process, on the depthwise convs of build/dense_shapes.json (mobilenet_v2
and OFA), with the epilogue bias + clip(0, 6) fused in hwlat (ORT runs Conv + Clip).

    .venv/bin/python benchmarks/dense_depthwise.py [--rounds 7] [--min-time 0.2]
        [--models mobilenet_v2,ofa] [--plain]

--plain: bias only, no activation, on both sides. After a warm-up, each round times both
contestants in turn (interleaved), each for at least --min-time seconds of back-to-back calls;
the table gives the median per-call wall time over the rounds, the ratio hwlat / ORT of the
medians, and the spread of the per-round ratios (min..max). Outputs are checked against ORT's.
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
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import tvm  # noqa: E402
from dense_shapes import load_shapes  # noqa: E402  (build/dense_shapes.json, written on first use)
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from hwlat.kernels.dense import depthwise  # noqa: E402
from hwlat.kernels.dense.spec import Conv2dSpec, Epilogue  # noqa: E402
from hwlat.lowering.targets import make_target  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TARGET = make_target(threads=1)


def model_specs(models: list[str], epilogue: Epilogue) -> list[tuple[str, Conv2dSpec, int]]:
    shapes = load_shapes()
    out = []
    for model in models:
        for c in shapes[model]["conv"]:
            spec = Conv2dSpec(1, c["cin"], *c["hw"], c["cout"], tuple(c["k"]), tuple(c["stride"]),
                              tuple(c["pads"][i] for i in (0, 1, 2, 3)), groups=c["groups"],
                              epilogue=epilogue)
            if spec.depthwise:
                out.append((model, spec, c["count"]))
    return out


def ort_session(spec: Conv2dSpec, w: np.ndarray, b: np.ndarray) -> ort.InferenceSession:
    t, left, bot, right = spec.padding
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c" if spec.epilogue.activation != "none"
                                                        else "y"],
                              kernel_shape=list(spec.kernel), strides=list(spec.stride),
                              pads=[t, left, bot, right], group=spec.groups)]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    if spec.epilogue.activation == "clip":
        inits += [numpy_helper.from_array(np.float32(spec.epilogue.clip_min), "lo"),
                  numpy_helper.from_array(np.float32(spec.epilogue.clip_max), "hi")]
        nodes.append(helper.make_node("Clip", ["c", "lo", "hi"], ["y"]))
    elif spec.epilogue.activation == "relu":
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))
    graph = helper.make_graph(
        nodes, "dw", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(spec.x_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(spec.y_shape))], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])


def sample(fn: Callable, min_time: float) -> float:
    """Per-call wall seconds over back-to-back calls lasting >= min_time."""
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        wall = time.perf_counter() - t0
        if wall >= min_time:
            return wall / n


def contestants(spec: Conv2dSpec, rng, tile=None) -> tuple[dict[str, Callable], float]:
    x = rng.standard_normal(spec.x_shape).astype(np.float32)
    w = rng.standard_normal(spec.w_shape).astype(np.float32)
    b = rng.standard_normal(spec.cout).astype(np.float32)
    sess = ort_session(spec, w, b)
    feed = {"x": x}
    func = depthwise.primfunc(spec, tile).with_attr("global_symbol", "dw")
    kernel = tvm.compile(tvm.IRModule({"dw": func}), target=TARGET)["dw"]
    args = [tvm.runtime.tensor(a) for a in (x, depthwise.pack_weight(spec, w), b)]
    out = tvm.runtime.tensor(np.zeros(spec.y_shape, np.float32))
    kernel(*args, out)
    want = sess.run(None, feed)[0]
    err = float(np.abs(out.numpy() - want).max() / max(1.0, np.abs(want).max()))
    runs = {"ort": lambda: sess.run(None, feed), "hwlat": lambda: kernel(*args, out)}
    return runs, err


def describe(spec: Conv2dSpec) -> str:
    return (f"C{spec.cin} {spec.height}x{spec.width} k{spec.kernel[0]}x{spec.kernel[1]} "
            f"s{spec.stride[0]}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--min-time", type=float, default=0.2, help="seconds per contestant per round")
    ap.add_argument("--models", default="mobilenet_v2,ofa")
    ap.add_argument("--plain", action="store_true", help="bias only, no clip")
    args = ap.parse_args()
    ep = Epilogue(bias=True) if args.plain else Epilogue(bias=True, activation="clip")
    rng = np.random.default_rng(0)
    print(f"# {datetime.date.today()}, {platform.processor() or platform.machine()}, "
          f"TVM target {TARGET.attrs['mcpu']}, onnxruntime {ort.__version__}, 1 thread, "
          f"{args.rounds} rounds x {args.min_time} s, epilogue {'bias' if args.plain else 'bias+clip'}")
    print("\n| model | shape | count | ORT ms | hwlat ms | ratio | ratio spread | max rel err |")
    print("|---|---|---|---|---|---|---|---|")
    totals = {}
    for model, spec, count in model_specs(args.models.split(","), ep):
        runs, err = contestants(spec, rng)
        for fn in runs.values():  # warm-up
            sample(fn, args.min_time / 2)
        walls = {n: [] for n in runs}
        for _ in range(args.rounds):
            for name, fn in runs.items():
                walls[name].append(sample(fn, args.min_time))
        ratios = [h / o for h, o in zip(walls["hwlat"], walls["ort"], strict=True)]
        mo, mh = statistics.median(walls["ort"]), statistics.median(walls["hwlat"])
        tot = totals.setdefault(model, [0.0, 0.0])
        tot[0] += count * mo
        tot[1] += count * mh
        print(f"| {model} | {describe(spec)} | {count} | {mo * 1e3:.3f} | {mh * 1e3:.3f} "
              f"| {mh / mo:.2f} | {min(ratios):.2f}..{max(ratios):.2f} | {err:.1e} |", flush=True)
    for model, (o, h) in totals.items():
        print(f"| {model} | total (x count) | | {o * 1e3:.3f} | {h * 1e3:.3f} | {h / o:.2f} | | |")


if __name__ == "__main__":
    main()
