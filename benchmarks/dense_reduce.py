"""hwlat's layer norm and global average pool kernels (hwlat/kernels/dense/reduce.py) vs
onnxruntime (one LayerNormalization node, opset 17, scale and bias; one ReduceMean node over
axes [2, 3] with keepdims, opset 18, and one GlobalAveragePool node) and vs TVM's own
legalization of relax.op.nn.layer_norm / relax.op.mean (a one-op Relax module through
relax.get_pipeline("zero") and tvm.compile, run by the Relax VM), one thread, in one process.

    .venv/bin/python benchmarks/dense_reduce.py [--rounds 7] [--min-time 0.2] [--only ln,pool]
        [--no-tvm]

Shapes: the 25 layer norms of vit_tiny (1x197x192, eps 1e-5) and the ReduceMean pools of
build/compile_bench/{ofa,mobilenet_v2,resnet18}.onnx, plus two more OFA squeeze-excite sizes
(72x56x56, 960x7x7). After a warm-up, each round times every contestant in turn (interleaved),
each for at least --min-time seconds of back-to-back calls; the table gives the median per-call
wall time over the rounds, the ratio hwlat / ORT of the medians and the spread of the per-round
ratios (min..max), and the ratio TVM-legalized / hwlat. "ORT/op in chain" is ORT's time per op
in one run of CHAIN (16) of them (a chain of layer norms; 16 pools of the same input), which
leaves out most of ORT's per-run overhead (hwlat's per-call overhead, about 0.2-0.4 us, stays). Outputs are checked against ORT's.
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
import onnxruntime as ort  # noqa: E402
import tvm  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from tvm import relax  # noqa: E402

from hwlat.kernels.dense import reduce  # noqa: E402
from hwlat.kernels.dense.reduce import LayerNormSpec, MeanPoolSpec  # noqa: E402
from hwlat.lowering.targets import make_target  # noqa: E402

TARGET = make_target(threads=1)
CHAIN = 16  # ops in ORT's amortised run

LAYER_NORMS = [("vit_tiny", (1, 197, 192), 1e-5, 25)]
POOLS = [  # model, (C, H, W), count
    ("ofa", (128, 28, 28), 1), ("ofa", (144, 28, 28), 1), ("ofa", (192, 28, 28), 1),
    ("ofa", (576, 14, 14), 1), ("ofa", (544, 14, 14), 2), ("ofa", (816, 7, 7), 1),
    ("ofa", (1152, 7, 7), 2), ("ofa", (768, 7, 7), 1), ("ofa", (576, 7, 7), 1),
    ("ofa-se", (72, 56, 56), 1), ("ofa-se", (960, 7, 7), 1),
    ("mobilenet_v2", (1280, 7, 7), 1), ("resnet18", (512, 7, 7), 1),
]


def session(nodes, inputs, output, inits, opset: int,
            extra_outputs: tuple[str, ...] = ()) -> ort.InferenceSession:
    """One ONNX graph with output "y" of shape `output` (and `extra_outputs` of the same shape)."""
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(output))
         for n in ("y", *extra_outputs)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def relax_vm(params: list[tuple[str, tuple[int, ...]]], body: Callable) -> Callable:
    """A one-op Relax function legalized by TVM (pipeline "zero"), compiled, on the VM."""
    bb = relax.BlockBuilder()
    vs = [relax.Var(n, relax.TensorType(s, "float32")) for n, s in params]
    with bb.function("main", vs):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(body(*vs)))
        bb.emit_func_output(out)
    mod = relax.get_pipeline("zero")(bb.get())
    vm = relax.VirtualMachine(tvm.compile(mod, target=TARGET), tvm.cpu())
    return vm["main"]


def kernel(func) -> Callable:
    ex = tvm.compile(tvm.IRModule({"k": func.with_attr("global_symbol", "k")}), target=TARGET)
    return ex["k"]


def layer_norm_case(shape, eps, rng, with_tvm: bool):
    rows, dim = int(np.prod(shape[:-1])), shape[-1]
    spec = LayerNormSpec(rows, dim, eps)
    x = rng.standard_normal(shape).astype(np.float32)
    g = rng.standard_normal(dim).astype(np.float32)
    b = rng.standard_normal(dim).astype(np.float32)
    inits = [numpy_helper.from_array(g, "g"), numpy_helper.from_array(b, "b")]
    sess = session([helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1,
                                     epsilon=eps)], [("x", shape)], shape, inits, 17)
    # a chain of CHAIN layer norms in one run: ORT's per-op time without its per-run overhead
    chain = session([helper.make_node("LayerNormalization", [f"t{i}" if i else "x", "g", "b"],
                                      [f"t{i + 1}" if i + 1 < CHAIN else "y"], axis=-1, epsilon=eps)
                     for i in range(CHAIN)], [("x", shape)], shape, inits, 17)
    feed = {"x": x}
    want = sess.run(None, feed)[0]
    k = kernel(reduce.primfunc(spec))
    args = [tvm.runtime.tensor(a) for a in (x.reshape(rows, dim), g, b)]
    out = tvm.runtime.tensor(np.zeros((rows, dim), np.float32))
    runs = {"ort": lambda: sess.run(None, feed), "ort_chain": lambda: chain.run(None, feed),
            "hwlat": lambda: k(*args, out)}
    k(*args, out)
    errs = {"hwlat": out.numpy().reshape(shape)}
    if with_tvm:
        f = relax_vm([("x", shape), ("g", (dim,)), ("b", (dim,))],
                     lambda xv, gv, bv: relax.op.nn.layer_norm(xv, gv, bv, axes=[-1], epsilon=eps))
        targs = [tvm.runtime.tensor(a) for a in (x, g, b)]
        runs["tvm"] = lambda: f(*targs)
        errs["tvm"] = f(*targs).numpy()
    err = max(float(np.abs(v - want).max()) for v in errs.values()) / max(1.0, np.abs(want).max())
    return f"LN {'x'.join(map(str, shape))}", runs, err


def pool_case(chw, rng, with_tvm: bool):
    spec = MeanPoolSpec(1, *chw)
    x = rng.standard_normal(spec.x_shape).astype(np.float32)
    axes = numpy_helper.from_array(np.array([2, 3], np.int64), "axes")
    sess = session([helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=1)],
                   [("x", spec.x_shape)], spec.y_shape, [axes], 18)
    # CHAIN pools of the same input in one run (CHAIN outputs): ORT's per-op time
    many = session([helper.make_node("ReduceMean", ["x", "axes"], [f"y{i}" if i else "y"], keepdims=1)
                    for i in range(CHAIN)], [("x", spec.x_shape)], spec.y_shape, [axes], 18,
                   extra_outputs=[f"y{i}" for i in range(1, CHAIN)])
    gap = session([helper.make_node("GlobalAveragePool", ["x"], ["y"])],
                  [("x", spec.x_shape)], spec.y_shape, [], 17)
    feed = {"x": x}
    want = sess.run(None, feed)[0]
    k = kernel(reduce.primfunc(spec))
    xt = tvm.runtime.tensor(x)
    out = tvm.runtime.tensor(np.zeros(spec.y_shape, np.float32))
    runs = {"ort": lambda: sess.run(None, feed), "ort_gap": lambda: gap.run(None, feed),
            "ort_chain": lambda: many.run(None, feed),
            "hwlat": lambda: k(xt, out)}
    k(xt, out)
    outs = [out.numpy(), gap.run(None, feed)[0]]
    if with_tvm:
        f = relax_vm([("x", spec.x_shape)], lambda xv: relax.op.mean(xv, axis=[2, 3], keepdims=True))
        runs["tvm"] = lambda: f(xt)
        outs.append(f(xt).numpy())
    err = max(float(np.abs(v - want).max()) for v in outs) / max(1.0, np.abs(want).max())
    return f"pool {'x'.join(map(str, chw))}", runs, err


def sample(fn: Callable, min_time: float) -> float:
    """Per-call wall seconds over back-to-back calls lasting >= min_time."""
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        wall = time.perf_counter() - t0
        if wall >= min_time:
            return wall / n


def ratio(walls: dict[str, list[float]], base: str) -> str:
    """hwlat / base of the medians, and the min..max of the per-round ratios."""
    r = [h / o for h, o in zip(walls["hwlat"], walls[base], strict=True)]
    med = statistics.median(walls["hwlat"]) / statistics.median(walls[base])
    return f"{med:.2f} ({min(r):.2f}..{max(r):.2f})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--min-time", type=float, default=0.2, help="seconds per contestant per round")
    ap.add_argument("--only", default="ln,pool")
    ap.add_argument("--no-tvm", action="store_true", help="skip TVM's legalized ops")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    only = args.only.split(",")
    cases = []
    if "ln" in only:
        cases += [(m, c, lambda s=s, e=e: layer_norm_case(s, e, rng, not args.no_tvm))
                  for m, s, e, c in LAYER_NORMS]
    if "pool" in only:
        cases += [(m, c, lambda s=s: pool_case(s, rng, not args.no_tvm)) for m, s, c in POOLS]
    print(f"# {datetime.date.today()}, {platform.processor() or platform.machine()}, "
          f"TVM target {TARGET.attrs['mcpu']}, onnxruntime {ort.__version__}, 1 thread, "
          f"{args.rounds} rounds x {args.min_time} s")
    print("\n| model | op | count | ORT ms | ORT GAP ms | ORT/op in chain ms | TVM ms | hwlat ms "
          "| hwlat/ORT (spread) | hwlat/ORT-op (spread) | TVM/hwlat | max rel err |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for model, count, make in cases:
        name, runs, err = make()
        for fn in runs.values():  # warm-up
            sample(fn, args.min_time / 2)
        walls = {n: [] for n in runs}
        for _ in range(args.rounds):
            for n, fn in runs.items():
                walls[n].append(sample(fn, args.min_time) / (CHAIN if n == "ort_chain" else 1))
        med = {n: statistics.median(w) for n, w in walls.items()}
        ms = {n: f"{med[n] * 1e3:.4f}" if n in med else "-"
              for n in ("ort", "ort_gap", "ort_chain", "tvm", "hwlat")}
        tvm_ratio = f"{med['tvm'] / med['hwlat']:.1f}" if "tvm" in med else "-"
        print(f"| {model} | {name} | {count} | {ms['ort']} | {ms['ort_gap']} | {ms['ort_chain']} "
              f"| {ms['tvm']} | {ms['hwlat']} | {ratio(walls, 'ort')} | {ratio(walls, 'ort_chain')} "
              f"| {tvm_ratio} | {err:.1e} |", flush=True)

if __name__ == "__main__":
    main()
