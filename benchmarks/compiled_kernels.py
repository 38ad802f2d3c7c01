"""Where a compiled model's time goes, kernel by kernel, next to onnxruntime's nodes (1 thread).

    .venv/bin/python benchmarks/compiled_kernels.py [--model ofa] [--top 25] [--runs 60]
        [--interleave call|block]

The model (a zoo name, or "ofa": OFA's note10 30 ms net, as benchmarks/compile_vs_runtimes.py
exports it) is imported as `hwlat compile` does, with hwlat's kernel rewrites and TVM's
legalization and fusion; every call of the resulting main function is then built alone and timed
with its own arguments: warm (back to back) and with every argument but the first (its input)
flushed from the cache first, which is how a kernel meets its weight inside a model whose weights
outgrow the cache. Then the model, compiled as `hwlat compile` builds it, and onnxruntime (1
intra-op thread, all optimizations, its profiler on) run --runs times in turns, call by call,
hwlat's kernels timed in the model through the Relax VM's instrument hook (~5 us of Python
each): the in-model column, what the model really spends, the input as the previous kernel left
it and the weights as the other runtime's call left the cache. onnxruntime's conv, matmul and
gemm nodes pair in execution order with hwlat's conv, depthwise, grouped, matmul and fused MobileNet-block
kernels (two or three convs each; both follow the graph's order) when the counts agree. Prints
the calls sorted by (in-model hwlat - onnxruntime), and the totals. Medians over repeats and
runs; a shared machine, so compare against a quiet run before reading small differences.
"""

from __future__ import annotations

import os

os.environ.setdefault("TVM_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import tvm  # noqa: E402
from tvm import relax  # noqa: E402
from tvm.relax.expr_functor import PyExprVisitor, visitor  # noqa: E402

from hwlat.graph.load import load  # noqa: E402
from hwlat.lowering.compile import _signature  # noqa: E402
from hwlat.lowering.custom import apply_rewrites, import_onnx  # noqa: E402
from hwlat.lowering.pipelines import PipelineOptions, _kernel_rewrites  # noqa: E402
from hwlat.lowering.targets import make_target  # noqa: E402
from hwlat.onnx_export import export  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PAIRED_HWLAT = ("hwlat_conv2d", "hwlat_depthwise", "hwlat_grouped", "hwlat_matmul", "hwlat_mbconv")
FUSED = "hwlat_mbconv"  # one hwlat kernel for two or three onnxruntime convs
PAIRED_ORT = ("Conv", "FusedConv", "Gemm", "MatMul", "FusedMatMul")


def model_path(name: str, out: Path) -> Path:
    from compile_vs_runtimes import build_model  # the same models, exported the same way

    path = out / f"{name}.onnx"
    if not path.exists():
        model, inputs = build_model(name)
        out.mkdir(parents=True, exist_ok=True)
        export(model.eval(), inputs, path, compare=False)
    return path


def fused_calls(path: Path, target) -> tuple[tvm.IRModule, list[tuple[str, list[tuple[int, ...]]]]]:
    """The module after fusion and, in order, each call_tir of main: (PrimFunc name, shapes of
    its arguments and outputs)."""
    model = apply_rewrites(load(path).meta["onnx"])
    inputs, _ = _signature(model)
    with target:
        mod = import_onnx(model, shape_dict={s.name: list(s.shape) for s in inputs},
                          dtype_dict={s.name: s.dtype for s in inputs}, rewrite=False)
        mod = tvm.transform.Sequential([
            *_kernel_rewrites(PipelineOptions(target)), relax.transform.LegalizeOps(),
            relax.transform.AnnotateTIROpPattern(), relax.transform.FoldConstant(),
            relax.transform.FuseOps(), relax.transform.FuseTIR(),
            relax.transform.DeadCodeElimination()])(mod)
    calls = []
    call_tir = tvm.ir.Op.get("relax.call_tir")

    @visitor
    class Calls(PyExprVisitor):
        def visit_call_(self, call):
            if call.op == call_tir:
                shapes = [tuple(int(d) for d in a.ty.shape) for a in call.args[1].fields]
                out = call.ty
                outs = [out] if hasattr(out, "shape") else list(out.fields)
                calls.append((call.args[0].name_hint,
                              shapes + [tuple(int(d) for d in o.shape) for o in outs]))
            super().visit_call_(call)

    Calls().visit_expr(mod["main"])
    return mod, calls


def time_calls(mod, calls, target, repeats: int) -> list[tuple[float, float]]:
    dev, built, out = tvm.cpu(0), {}, []
    rng = np.random.default_rng(0)
    for name, shapes in calls:
        if name not in built:
            f = mod[name].with_attr("global_symbol", name)
            built[name] = tvm.compile(tvm.IRModule({name: f}), target=target).mod
        args = [tvm.runtime.tensor(rng.random(s, dtype=np.float32), dev) for s in shapes]
        warm = built[name].time_evaluator(name, dev, number=10, repeat=repeats, min_repeat_ms=10)
        cold = built[name].time_evaluator(name, dev, number=1, repeat=10 * repeats,
                                          f_preproc="cache_flush_cpu_non_first_arg")
        out.append((float(np.median(warm(*args).results)) * 1e3,
                    float(np.median(cold(*args).results)) * 1e3))
    return out


def in_model(path: Path, target, runs: int, interleave: str = "call") -> tuple[
        list[tuple[str, float]], list[tuple[str, str, float]]]:
    """hwlat's kernel calls timed inside the compiled model ((PrimFunc, median ms) in call order,
    through the Relax VM's instrument hook: each time holds ~5 us of Python around the call), and
    onnxruntime's executed nodes ((node, op, median ms) in execution order, its profiler). With
    interleave "call" the two models run in turns, call by call, so that both meet the cache as
    the other leaves it; with "block", each runs `runs` times back to back (its weights as its
    own previous call left them), hwlat first."""
    from hwlat.lowering.compile import lower

    vm = relax.VirtualMachine(lower(path, target).executable, tvm.cpu())
    calls: list[list[tuple[str, float]]] = []
    state = {"t": 0.0}

    def instrument(func, name, before, ret, *args):
        if before:
            state["t"] = time.perf_counter()
        else:
            calls[-1].append((name, time.perf_counter() - state["t"]))
        return 0

    vm.set_instrument(instrument)
    with tempfile.TemporaryDirectory() as tmp:
        o = ort.SessionOptions()
        o.intra_op_num_threads = o.inter_op_num_threads = 1
        o.enable_profiling = True
        o.profile_file_prefix = os.path.join(tmp, "p")
        s = ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])
        feeds = {i.name: np.random.default_rng(0).random(i.shape, dtype=np.float32)
                 for i in s.get_inputs()}
        x = [tvm.runtime.tensor(v) for v in feeds.values()]
        if interleave == "call":
            for _ in range(runs):
                calls.append([])
                vm["main"](*x)
                s.run(None, feeds)
        else:
            for _ in range(runs):
                calls.append([])
                vm["main"](*x)
            for _ in range(runs):
                s.run(None, feeds)
        with open(s.end_profiling()) as f:
            events = json.load(f)
    kept = calls[runs // 4:]
    hw = [(kept[0][i][0], float(np.median([c[i][1] for c in kept])) * 1e3)
          for i in range(len(kept[0]))]
    return hw, _ort_medians(events, runs)


def _ort_medians(events: list, runs: int) -> list[tuple[str, str, float]]:
    """(node, op, median ms) of onnxruntime's profiled nodes, in execution order."""
    times: dict[tuple[str, str], list[float]] = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            key = (e["name"][:-len("_kernel_time")], e["args"]["op_name"])
            times.setdefault(key, []).append(e["dur"] / 1e3)
    return [(n, op, float(np.median(t[runs // 4:]))) for (n, op), t in times.items()]


def _merge_pairs(hw: list, ort_nodes: list) -> list:
    """onnxruntime's nodes with the convs of each fused MobileNet-block kernel of hwlat's as one
    (times summed), so that the lists pair one to one in order. hw rows: (name, shapes, ...); a
    fused kernel's convs are the depthwise one and one per 1x1 weight (its 3-D arguments)."""
    out, i = [], 0
    for row in hw:
        if i >= len(ort_nodes):
            break
        take = 1 + sum(len(s) == 3 for s in row[1]) if row[0].startswith(FUSED) else 1
        group = ort_nodes[i:i + take]
        out.append((" + ".join(n for n, _, _ in group), group[0][1], sum(t for _, _, t in group)))
        i += take
    return out + ort_nodes[i:]


def _in_model_column(calls: list, hw: list[tuple[str, float]]) -> list[float] | None:
    """The in-model time of each of `calls` that is one of hwlat's kernels (NaN for the others:
    TVM's fused functions are named otherwise in the built model), or None when the kernels
    differ between the two."""
    seq = [(n, t) for n, t in hw if n.startswith("hwlat_")]
    if [n for n, _ in seq] != [n for n, _ in calls if n.startswith("hwlat_")]:
        return None
    times = iter(t for _, t in seq)
    return [next(times) if n.startswith("hwlat_") else float("nan") for n, _ in calls]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="ofa")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--runs", type=int, default=60, help="in-model runs of each model")
    ap.add_argument("--interleave", choices=("call", "block"), default="call",
                    help="in-model runs: call by call in turns, or each model's back to back")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "compile_bench")
    args = ap.parse_args()

    target = make_target("host", None, 1)
    path = model_path(args.model, args.out)
    mod, calls = fused_calls(path, target)
    timed = time_calls(mod, calls, target, args.repeats)
    hw, nodes = in_model(path, target, args.runs, args.interleave)
    inside = _in_model_column(calls, hw)
    if inside is None:
        print("the compiled model's calls differ from the module's (not timed in-model)")
        inside = [float("nan")] * len(calls)
    mine = [(n, s, w, c, m) for (n, s), (w, c), m in zip(calls, timed, inside, strict=True)]
    paired_hw = [r for r in mine if r[0].startswith(PAIRED_HWLAT)]
    paired_ort = _merge_pairs(paired_hw, [r for r in nodes if r[1] in PAIRED_ORT])
    print(f"{args.model}: {len(calls)} hwlat kernel calls, warm sum {sum(r[2] for r in mine):.2f} ms, "
          f"flushed sum {sum(r[3] for r in mine):.2f} ms, in-model sum of hwlat's kernels "
          f"{np.nansum([r[4] for r in mine]):.2f} ms; onnxruntime {len(nodes)} nodes, "
          f"in-model sum {sum(r[2] for r in nodes):.2f} ms")
    others: dict[str, float] = {}
    for _, op, t in nodes:
        if op not in PAIRED_ORT:
            others[op] = others.get(op, 0.0) + t
    print("onnxruntime's other nodes (ms): "
          + ", ".join(f"{op} {t:.3f}" for op, t in sorted(others.items(), key=lambda x: -x[1])))
    if len(paired_hw) != len(paired_ort):
        print(f"conv/matmul counts differ ({len(paired_hw)} hwlat, {len(paired_ort)} onnxruntime): "
              "not paired")
        return
    rows = sorted(((m - o[2], n, s, w, c, m, o[2])
                   for (n, s, w, c, m), o in zip(paired_hw, paired_ort, strict=True)),
                  key=lambda r: -r[0] if r[0] == r[0] else 0.0)
    print("\n| hwlat kernel | input -> output | warm ms | flushed ms | in-model ms | "
          "onnxruntime in-model ms | in-model - onnxruntime |\n|---|---|---|---|---|---|---|")
    for d, n, s, w, c, m, o in rows[:args.top]:
        print(f"| {n} | {s[0]} -> {s[-1]} | {w:.3f} | {c:.3f} | {m:.3f} | {o:.3f} | {d:+.3f} |")
    print(f"\npaired totals: hwlat warm {sum(r[3] for r in rows):.2f} ms, flushed "
          f"{sum(r[4] for r in rows):.2f} ms, in-model {sum(r[5] for r in rows):.2f} ms; "
          f"onnxruntime in-model {sum(r[6] for r in rows):.2f} ms")


if __name__ == "__main__":
    main()
