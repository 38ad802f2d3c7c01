"""hwlat's dense conv2d kernel (hwlat/kernels/dense/conv.py) vs onnxruntime's Conv, 1 thread.

    .venv/bin/python benchmarks/dense_conv.py [--models resnet18,mobilenet_v2] [--rounds 7]
        [--min-time 0.2] [--filter 3x3]

Every groups == 1 conv of the models in build/dense_shapes.json (benchmarks/dense_shapes.py) (batch 1, with bias, no
activation), each shape once. Per shape: a one-node ONNX Conv (with B) in an onnxruntime session
(intra/inter op threads 1) and the compiled TIR kernel (TVM_NUM_THREADS=1), outputs checked
against each other, then timed interleaved: each round runs each contestant back to back for at
least --min-time seconds; the table gives the median per-call time over the rounds, the median
of the per-round ratios hwlat / onnxruntime and their min..max over the rounds.
"""

from __future__ import annotations

import os

os.environ["TVM_NUM_THREADS"] = "1"  # before TVM's thread pool starts
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import tvm  # noqa: E402
from dense_shapes import load_shapes  # noqa: E402  (build/dense_shapes.json, written on first use)
from onnx import TensorProto, helper  # noqa: E402

from hwlat.kernels.cpu import cpu_of  # noqa: E402
from hwlat.kernels.dense import conv  # noqa: E402
from hwlat.kernels.dense.spec import Conv2dSpec, Epilogue  # noqa: E402
from hwlat.lowering.targets import make_target  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def model_specs(models: list[str]) -> list[tuple[str, Conv2dSpec]]:
    shapes = load_shapes()
    seen, out = set(), []
    for model in models:
        for c in shapes[model]["conv"]:
            if c["groups"] != 1:
                continue
            pads = tuple(c["pads"])  # ONNX order: top, left, bottom, right, as Conv2dSpec's
            spec = Conv2dSpec(1, c["cin"], *c["hw"], c["cout"], tuple(c["k"]), tuple(c["stride"]),
                              pads, epilogue=Epilogue(bias=True))
            if spec not in seen:
                seen.add(spec)
                out.append((model, spec))
    return out


def label(spec: Conv2dSpec) -> str:
    kh, kw = spec.kernel
    return (f"{spec.cin}x{spec.height}x{spec.width}->{spec.cout} {kh}x{kw}/s{spec.stride[0]}"
            f"{' p' + str(spec.padding[0]) if any(spec.padding) else ''}")


def ort_session(spec: Conv2dSpec, w: np.ndarray, b: np.ndarray):
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=list(spec.kernel),
                            strides=list(spec.stride), pads=list(spec.padding),
                            dilations=list(spec.dilation))
    graph = helper.make_graph(
        [node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, spec.x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, spec.y_shape)],
        [helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.ravel()),
         helper.make_tensor("b", TensorProto.FLOAT, b.shape, b.ravel())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def hwlat_call(spec: Conv2dSpec, w: np.ndarray, b: np.ndarray, x: np.ndarray, target, plan=None):
    cpu = cpu_of(target)  # the plans of the target's CPU, as a model build picks them
    func = conv.primfunc(spec, plan, cpu).with_attr("global_symbol", "conv")
    ex = tvm.compile(tvm.IRModule({"conv": func}), target=target)
    f = ex["conv"]
    args = [tvm.runtime.tensor(a) for a in (x, conv.pack_weight(spec, w, plan, cpu), b)]
    y = tvm.runtime.tensor(np.empty(spec.y_shape, np.float32))

    def run():
        f(*args, y)

    return run, y


def per_call(fn, min_time: float) -> float:
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        el = time.perf_counter() - start
        if el >= min_time:
            return el / n


def conv_inputs(spec: Conv2dSpec):
    """x, w, b (seeded, w scaled by 1/sqrt(fan-in)), the one-node onnxruntime session, its feed
    and its output."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(spec.x_shape).astype(np.float32)
    w = (rng.standard_normal(spec.w_shape) / np.sqrt(np.prod(spec.w_shape[1:]))).astype(np.float32)
    b = rng.standard_normal(spec.cout).astype(np.float32)
    sess = ort_session(spec, w, b)
    feed = {"x": x}
    return x, w, b, sess, feed, sess.run(None, feed)[0]


def bench(spec: Conv2dSpec, target, rounds: int, min_time: float, plan=None):
    x, w, b, sess, feed, ref = conv_inputs(spec)
    run, y = hwlat_call(spec, w, b, x, target, plan)
    run()
    err = np.abs(y.numpy() - ref).max() / (np.abs(ref).max() + 1e-12)
    if err > 1e-4:
        raise AssertionError(f"{label(spec)}: hwlat differs from onnxruntime (rel err {err:.2e})")

    def ort_run():
        sess.run(None, feed)

    for fn in (ort_run, run):  # warm-up
        per_call(fn, min_time / 2)
    t_ort, t_hw = [], []
    for _ in range(rounds):
        t_ort.append(per_call(ort_run, min_time))
        t_hw.append(per_call(run, min_time))
    ratios = np.array(t_hw) / np.array(t_ort)
    return float(np.median(t_ort)), float(np.median(t_hw)), ratios


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet18,mobilenet_v2,ofa,vit_tiny")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--min-time", type=float, default=0.2)
    ap.add_argument("--filter", default="", help="only shapes whose label contains this")
    args = ap.parse_args()
    target = make_target(threads=1)
    print(f"{time.strftime('%Y-%m-%d')}  cpu={tvm.target.codegen.llvm_get_system_cpu()}  "
          f"onnxruntime {ort.__version__}, 1 thread, {args.rounds} rounds x >= {args.min_time}s")
    print(f"{'model':13s} {'shape':32s} {'plan':22s} {'ort ms':>8s} {'hwlat ms':>9s} {'ratio':>6s}  spread")
    all_ratios = []
    for model, spec in model_specs(args.models.split(",")):
        if args.filter not in label(spec):
            continue
        t_ort, t_hw, ratios = bench(spec, target, args.rounds, args.min_time)
        p = conv.default_plan(spec, cpu_of(target))
        plan = f"{p.rows} {p.mr}x{p.nr} c{p.chunk}"
        med = float(np.median(ratios))
        all_ratios.append(med)
        print(f"{model:13s} {label(spec):32s} {plan:22s} {t_ort * 1e3:8.3f} {t_hw * 1e3:9.3f} "
              f"{med:6.2f}  {ratios.min():.2f}..{ratios.max():.2f}", flush=True)
    if all_ratios:
        print(f"geomean ratio {float(np.exp(np.mean(np.log(all_ratios)))):.2f} over {len(all_ratios)} shapes")


if __name__ == "__main__":
    main()
