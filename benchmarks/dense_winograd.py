"""hwlat's Winograd F(2x2, 3x3) conv kernel (hwlat/kernels/dense/winograd.py) vs the direct conv
kernel (hwlat/kernels/dense/conv.py) and onnxruntime's Conv, 1 thread.

    .venv/bin/python benchmarks/dense_winograd.py [--models resnet18] [--rounds 7] [--min-time 0.2]
        [--filter 64x56]

Every 3x3 stride-1 groups-1 conv of the models in build/dense_shapes.json (batch 1, with bias, no
activation), each shape once. Per shape: a one-node ONNX Conv (with B) in an onnxruntime session
(intra/inter op threads 1), the compiled direct and Winograd TIR kernels (TVM_NUM_THREADS=1),
outputs checked against onnxruntime's, then timed interleaved: each round runs each contestant
back to back for at least --min-time seconds. The table gives the median per-call times over the
rounds, the medians of the per-round ratios winograd / onnxruntime and winograd / direct, their
min..max over the rounds, and whether `winograd.preferred` picks the shape.
"""

from __future__ import annotations

import os

os.environ["TVM_NUM_THREADS"] = "1"  # before TVM's thread pool starts
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import tvm  # noqa: E402
from dense_conv import conv_inputs, per_call  # noqa: E402
from dense_conv import model_specs as conv_specs  # noqa: E402  (the sibling benchmark)

from hwlat.kernels.dense import conv, winograd  # noqa: E402
from hwlat.kernels.dense.spec import Conv2dSpec  # noqa: E402
from hwlat.lowering.targets import make_target  # noqa: E402


def model_specs(models: list[str]) -> list[tuple[str, Conv2dSpec]]:
    """The models' distinct convs that the Winograd kernel takes."""
    return [(m, spec) for m, spec in conv_specs(models) if winograd.supports(spec) is None]


def label(spec: Conv2dSpec) -> str:
    return f"{spec.cin}x{spec.height}x{spec.width}->{spec.cout} p{spec.padding[0]}"


def tvm_call(module, spec: Conv2dSpec, w: np.ndarray, b: np.ndarray, x: np.ndarray, target, **kw):
    func = module.primfunc(spec, **kw).with_attr("global_symbol", "k")
    ex = tvm.compile(tvm.IRModule({"k": func}), target=target)
    f = ex["k"]
    args = [tvm.runtime.tensor(a) for a in (x, module.pack_weight(spec, w), b)]
    y = tvm.runtime.tensor(np.empty(spec.y_shape, np.float32))

    def run():
        f(*args, y)

    return run, y


def bench(spec: Conv2dSpec, target, rounds: int, min_time: float, **kw):
    x, w, b, sess, feed, ref = conv_inputs(spec)
    runs = {}
    for name, module, kwargs in (("direct", conv, {}), ("winograd", winograd, kw)):
        run, y = tvm_call(module, spec, w, b, x, target, **kwargs)
        run()
        err = np.abs(y.numpy() - ref).max() / (np.abs(ref).max() + 1e-12)
        if err > 1e-4:
            raise AssertionError(f"{label(spec)}: {name} differs from onnxruntime (rel err {err:.2e})")
        runs[name] = run
    runs = {"ort": lambda: sess.run(None, feed), **runs}
    for fn in runs.values():  # warm-up
        per_call(fn, min_time / 2)
    times = {k: [] for k in runs}
    for _ in range(rounds):
        for k, fn in runs.items():
            times[k].append(per_call(fn, min_time))
    return {k: np.array(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet18")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--min-time", type=float, default=0.2)
    ap.add_argument("--filter", default="", help="only shapes whose label contains this")
    ap.add_argument("--cbg", type=int, default=0, help="winograd output-channel blocks per task (0: default)")
    args = ap.parse_args()
    target = make_target(threads=1)
    print(f"{time.strftime('%Y-%m-%d')}  cpu={tvm.target.codegen.llvm_get_system_cpu()}  "
          f"onnxruntime {ort.__version__}, 1 thread, {args.rounds} rounds x >= {args.min_time}s")
    print(f"{'shape':22s} {'ort ms':>8s} {'direct ms':>9s} {'wino ms':>8s} {'w/ort':>6s} {'spread':>10s} "
          f"{'w/direct':>8s} {'spread':>10s} preferred")
    kw = {"cbg": args.cbg} if args.cbg else {}
    for _, spec in model_specs(args.models.split(",")):
        if args.filter not in label(spec):
            continue
        t = bench(spec, target, args.rounds, args.min_time, **kw)
        r_ort = t["winograd"] / t["ort"]
        r_dir = t["winograd"] / t["direct"]
        print(f"{label(spec):22s} {np.median(t['ort']) * 1e3:8.3f} {np.median(t['direct']) * 1e3:9.3f} "
              f"{np.median(t['winograd']) * 1e3:8.3f} {np.median(r_ort):6.2f} "
              f"{r_ort.min():4.2f}..{r_ort.max():4.2f} {np.median(r_dir):8.2f} "
              f"{r_dir.min():4.2f}..{r_dir.max():4.2f} {winograd.preferred(spec)}", flush=True)


if __name__ == "__main__":
    main()
