"""The fused MobileNet-block kernel (hwlat/kernels/dense/mbconv.py) vs the same convs as hwlat's
separate kernels vs onnxruntime (one model of the same convs), one thread, in one process, on
blocks of OFA's note10 30 ms net and MobileNetV2: expand -> depthwise pairs, and whole blocks
(expand -> depthwise -> project, or depthwise -> project, with the residual where the model has
one).

    .venv/bin/python benchmarks/dense_mbconv.py [--calls 300] [--cold] [--filter STR]

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

from hwlat.kernels.dense import conv, depthwise, mbconv  # noqa: E402
from hwlat.kernels.dense.spec import Conv2dSpec, Epilogue  # noqa: E402
from hwlat.lowering.targets import make_target  # noqa: E402

TARGET = make_target(threads=1)
ACT = {"relu": "Relu", "hardswish": "HardSwish", "clip": "Clip"}

# name: (cin, height/width, mid channels (0: no expand), kernel, stride, activation,
#        project output channels (0: none), residual)
CASES = {
    "ofa 24->72 112 k3s2": (24, 112, 72, 3, 2, "relu", 0, False),
    "ofa 24->72 112 k3s2 ->32": (24, 112, 72, 3, 2, "relu", 32, False),
    "ofa dw24 112 k3s1 ->24 +r": (24, 112, 0, 3, 1, "relu", 24, True),
    "ofa 32->96 56 k3s1 ->32 +r": (32, 56, 96, 3, 1, "relu", 32, True),
    "ofa 32->128 56 k5s2 ->48": (32, 56, 128, 5, 2, "hardswish", 48, False),
    "ofa 48->192 28 k5s1 ->48 +r": (48, 28, 192, 5, 1, "hardswish", 48, True),
    "ofa 96->288 14 k3s1 ->96 +r": (96, 14, 288, 3, 1, "hardswish", 96, True),
    "ofa 136->816 14 k3s2 ->192": (136, 14, 816, 3, 2, "hardswish", 192, False),
    "ofa 192->1152 7 k5s1 ->192 +r": (192, 7, 1152, 5, 1, "hardswish", 192, True),
    "mbv2 16->96 112 k3s2": (16, 112, 96, 3, 2, "clip", 0, False),
    "mbv2 16->96 112 k3s2 ->24": (16, 112, 96, 3, 2, "clip", 24, False),
    "mbv2 dw32 112 k3s1 ->16": (32, 112, 0, 3, 1, "clip", 16, False),
    "mbv2 24->144 56 k3s1 ->24 +r": (24, 56, 144, 3, 1, "clip", 24, True),
    "mbv2 32->192 28 k3s1 ->32 +r": (32, 28, 192, 3, 1, "clip", 32, True),
    "mbv2 64->384 14 k3s1 ->64 +r": (64, 14, 384, 3, 1, "clip", 64, True),
    "mbv2 160->960 7 k3s1 ->160 +r": (160, 7, 960, 3, 1, "clip", 160, True),
}


def specs(cin: int, hw: int, cm: int, k: int, s: int, act: str, cout: int, residual: bool):
    """The separate convs' specs and the fused one's."""
    ep = Epilogue(True, False, act)
    e = Conv2dSpec(1, cin, hw, hw, cm, (1, 1), epilogue=ep) if cm else None
    cm = cm or cin
    p = k // 2
    d = Conv2dSpec(1, cm, hw, hw, cm, (k, k), (s, s), (p, p, p, p), groups=cm, epilogue=ep)
    pr = Conv2dSpec(1, cm, d.out_height, d.out_width, cout, (1, 1),
                    epilogue=Epilogue(True, residual, "none")) if cout else None
    return [c for c in (e, d, pr) if c], mbconv.MBConvSpec(e, d, pr)


def ort_model(convs: list[Conv2dSpec], weights: list, act: str) -> ort.InferenceSession:
    inits, nodes, prev = [], [], "x"
    if act == "clip":
        inits += [numpy_helper.from_array(np.array(0, np.float32), "lo"),
                  numpy_helper.from_array(np.array(6, np.float32), "hi")]
    for i, (c, (w, b)) in enumerate(zip(convs, weights, strict=True)):
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("Conv", [prev, f"w{i}", f"b{i}"], [f"c{i}"],
                                      kernel_shape=list(c.kernel), strides=list(c.stride),
                                      pads=[c.padding[j] for j in (0, 1, 2, 3)], group=c.groups))
        prev = f"c{i}"
        if c.epilogue.residual:
            nodes.append(helper.make_node("Add", [prev, "r"], [f"s{i}"]))
            prev = f"s{i}"
        if c.epilogue.activation != "none":
            extra = ["lo", "hi"] if act == "clip" else []
            nodes.append(helper.make_node(ACT[act], [prev, *extra], [f"a{i}"]))
            prev = f"a{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, convs[0].x_shape)]
    if convs[-1].epilogue.residual:
        inputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, convs[-1].y_shape))
    g = helper.make_graph(nodes, "block", inputs,
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, convs[-1].y_shape)],
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
    print("\n| block | separate ms | fused ms | onnxruntime ms | fused / separate | "
          "fused / onnxruntime |\n|---|---|---|---|---|---|")
    for name, case in CASES.items():
        if args.filter in name:
            row = run_case(case, args.calls, flush if args.cold else None, rng)
            print(f"| {name} | {row} |", flush=True)


def run_case(case: tuple, calls: int, flush: np.ndarray | None, rng) -> str:
    """The table row (less the name) of one block: the three contestants, call by call."""
    convs, f = specs(*case)
    x = rng.standard_normal(convs[0].x_shape, dtype=np.float32)
    weights = [((rng.standard_normal(c.w_shape, dtype=np.float32)
                 / np.sqrt(np.prod(c.w_shape[1:]))).astype(np.float32),
                rng.standard_normal(c.cout, dtype=np.float32)) for c in convs]
    r = rng.standard_normal(convs[-1].y_shape, dtype=np.float32)
    has_r = convs[-1].epilogue.residual
    kernels = {f"k{i}": (depthwise if c.depthwise else conv).primfunc(c)
               for i, c in enumerate(convs)}
    lib = build({**kernels, "f": mbconv.primfunc(f)})
    t = tvm.runtime.tensor
    steps, prev = [], t(x)
    for i, (c, (w, b)) in enumerate(zip(convs, weights, strict=True)):
        out = t(np.empty(c.y_shape, np.float32))
        args = [prev, t((depthwise if c.depthwise else conv).pack_weight(c, w)), t(b)]
        steps.append((lib[f"k{i}"], [*args, *([t(r)] if c.epilogue.residual else []), out]))
        prev = out
    y_sep = prev
    by_name = dict(zip([c for c in ("expand", "dw", "project") if getattr(f, c)],
                       weights, strict=True))
    w1, b1 = by_name.get("expand", (None, None))
    w3, b3 = by_name.get("project", (None, None))
    packed = mbconv.pack(f, w1, b1, *by_name["dw"], w3, b3)
    y_fused = t(np.empty(f.y_shape, np.float32))
    f_args = [t(x), *(t(a) for a in packed), *([t(r)] if has_r else []), y_fused]
    sess = ort_model(convs, weights, case[5])
    feeds = {"x": x, **({"r": r} if has_r else {})}
    ff = lib["f"]

    def separate():
        for fn, a in steps:
            fn(*a)

    def fused():
        ff(*f_args)

    def onnx():
        sess.run(None, feeds)

    want = sess.run(None, feeds)[0]
    separate()
    fused()
    for got in (y_sep, y_fused):
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

    def q(v):
        return f"{np.median(v):.2f}x ({np.percentile(v, 25):.2f}..{np.percentile(v, 75):.2f})"

    return f"{med[0]:.3f} | {med[1]:.3f} | {med[2]:.3f} | {q(r1)} | {q(r2)}"


if __name__ == "__main__":
    main()
