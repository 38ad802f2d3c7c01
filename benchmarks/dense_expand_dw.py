"""The fused expand + depthwise kernel (hwlat/kernels/dense/expand_dw.py) vs the same two convs as
hwlat's separate kernels vs onnxruntime (one model: Conv + act -> depthwise Conv + act), one
thread, in one process, on the expand -> depthwise pairs of OFA's note10 30 ms net and
MobileNetV2 whose expanded tensor is large.

    .venv/bin/python benchmarks/dense_expand_dw.py [--calls 300] [--cold]

The three contestants take turns call by call (A, B, C, A, B, C, ...), after a warm-up; with
--cold every call first finds the cache flushed (a 64 MB buffer written), which is how the
weights meet a call inside a model larger than the cache. Prints the median call (ms) of each,
the ratios fused / separate and fused / onnxruntime as the median of the per-turn ratios, and
their p25..p75. Outputs are checked against onnxruntime's first.
"""

from __future__ import annotations

import os

os.environ["TVM_NUM_THREADS"] = "1"  # before TVM starts its thread pool
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import tvm  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from hwlat.kernels.dense import conv, depthwise, expand_dw  # noqa: E402
from hwlat.kernels.dense.spec import Conv2dSpec, Epilogue  # noqa: E402
from hwlat.lowering.targets import make_target  # noqa: E402

TARGET = make_target(threads=1)
ACT = {"relu": ("Relu", {}), "hardswish": ("HardSwish", {}), "clip": ("Clip", {})}

# name: (cin, height/width, cmid, kernel, stride, activation)
CASES = {
    "ofa 24->72 112 k3s2": (24, 112, 72, 3, 2, "relu"),
    "ofa 32->96 56 k3s1": (32, 56, 96, 3, 1, "relu"),
    "ofa 32->128 56 k5s2": (32, 56, 128, 5, 2, "hardswish"),
    "ofa 48->192 28 k5s1": (48, 28, 192, 5, 1, "hardswish"),
    "mbv2 16->96 112 k3s2": (16, 112, 96, 3, 2, "clip"),
    "mbv2 24->144 56 k3s1": (24, 56, 144, 3, 1, "clip"),
    "mbv2 24->144 56 k3s2": (24, 56, 144, 3, 2, "clip"),
    "mbv2 32->192 28 k3s1": (32, 28, 192, 3, 1, "clip"),
}


def specs(cin: int, hw: int, cm: int, k: int, s: int, act: str):
    ep = Epilogue(True, False, act)
    e = Conv2dSpec(1, cin, hw, hw, cm, (1, 1), epilogue=ep)
    p = k // 2
    d = Conv2dSpec(1, cm, hw, hw, cm, (k, k), (s, s), (p, p, p, p), groups=cm, epilogue=ep)
    return e, d, expand_dw.ExpandDwSpec(e, d)


def ort_model(e: Conv2dSpec, d: Conv2dSpec, w1, b1, w2, b2, act: str) -> ort.InferenceSession:
    op, attrs = ACT[act]
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"),
                                                        (b2, "b2"))]
    extra = []
    if op == "Clip":
        inits += [numpy_helper.from_array(np.array(0, np.float32), "lo"),
                  numpy_helper.from_array(np.array(6, np.float32), "hi")]
        extra = ["lo", "hi"]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[1, 1]),
             helper.make_node(op, ["c1", *extra], ["m"], **attrs),
             helper.make_node("Conv", ["m", "w2", "b2"], ["c2"], kernel_shape=list(d.kernel),
                              strides=list(d.stride), pads=[d.padding[i] for i in (0, 1, 2, 3)],
                              group=d.groups),
             helper.make_node(op, ["c2", *extra], ["y"], **attrs)]
    g = helper.make_graph(nodes, "expand_dw",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, e.x_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, d.y_shape)],
                          inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    o = ort.SessionOptions()
    o.intra_op_num_threads = o.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), o, providers=["CPUExecutionProvider"])


def build(funcs: dict) -> tvm.runtime.Module:
    mod = tvm.IRModule({n: f.with_attr("global_symbol", n) for n, f in funcs.items()})
    return tvm.compile(mod, target=TARGET)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--cold", action="store_true")
    ap.add_argument("--filter", default="")
    args = ap.parse_args()
    print(f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
          f"load {os.getloadavg()[0]:.2f}, 1 thread, {'cold' if args.cold else 'warm'} calls")
    flush = np.zeros(16 << 20, np.float32)  # 64 MB, written before each call with --cold
    rng = np.random.default_rng(0)
    print("\n| pair | separate ms | fused ms | onnxruntime ms | fused / separate | "
          "fused / onnxruntime |\n|---|---|---|---|---|---|")
    for name, case in CASES.items():
        if args.filter in name:
            row = run_case(case, args.calls, flush if args.cold else None, rng)
            print(f"| {name} | {row} |", flush=True)


def run_case(case: tuple, calls: int, flush: np.ndarray | None, rng) -> str:
    """The table row (less the name) of one pair: the three contestants, call by call."""
    e, d, f = specs(*case)
    x = rng.standard_normal(e.x_shape, dtype=np.float32)
    w1 = (rng.standard_normal(e.w_shape, dtype=np.float32) / np.sqrt(e.cin)).astype(np.float32)
    w2 = (rng.standard_normal(d.w_shape, dtype=np.float32) / 3).astype(np.float32)
    b1 = rng.standard_normal(e.cout, dtype=np.float32)
    b2 = rng.standard_normal(d.cout, dtype=np.float32)
    lib = build({"e": conv.primfunc(e), "d": depthwise.primfunc(d), "f": expand_dw.primfunc(f)})
    t = tvm.runtime.tensor
    xe = t(x)
    e_args = [xe, t(conv.pack_weight(e, w1)), t(b1)]
    mid = t(np.empty(e.y_shape, np.float32))
    d_args = [mid, t(depthwise.pack_weight(d, w2)), t(b2)]
    y1, y2 = t(np.empty(d.y_shape, np.float32)), t(np.empty(d.y_shape, np.float32))
    f_args = [xe, *(t(a) for a in expand_dw.pack(f, w1, b1, w2, b2))]
    sess = ort_model(e, d, w1, b1, w2, b2, case[-1])
    ef, df, ff = lib["e"], lib["d"], lib["f"]

    def separate():
        ef(*e_args, mid)
        df(*d_args, y1)

    def fused():
        ff(*f_args, y2)

    def onnx():
        sess.run(None, {"x": x})

    want = sess.run(None, {"x": x})[0]
    separate()
    fused()
    for got in (y1, y2):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-3, atol=1e-3)
    contestants = (separate, fused, onnx)
    times = [[] for _ in contestants]
    for i in range(calls + 20):
        for k, fn in enumerate(contestants):
            if flush is not None:
                flush += 1.0
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            if i >= 20:
                times[k].append(dt * 1e3)
    a = np.array(times)
    r1, r2 = a[1] / a[0], a[1] / a[2]
    med = np.median(a, axis=1)

    def q(r):
        return f"{np.median(r):.2f}x ({np.percentile(r, 25):.2f}..{np.percentile(r, 75):.2f})"

    return f"{med[0]:.3f} | {med[1]:.3f} | {med[2]:.3f} | {q(r1)} | {q(r2)}"


if __name__ == "__main__":
    main()
