"""The fused multi-step LIF kernel vs the unrolled neuron graph it replaces, on one thread.

    .venv/bin/python benchmarks/lif.py [--rounds 25] [--shapes 4x1x32x32x32,4x8x64x56x56]

Per neuron shape [T, B, C, H, W] (default: spiking_convnet's three neuron layers and a larger
[4, 8, 64, 56, 56]) the zoo's LIFNeuron (tau 2, threshold 1, hard reset to 0) is exported with
hwlat's exporter: T unrolled copies of Sub/Div/Add/GreaterOrEqual/Cast/Sub/Mul/Mul/Add between
Slice/Squeeze and Unsqueeze/Concat. Timed, each on 1 thread with the same input:

- ort:         onnxruntime (CPU provider, ORT_ENABLE_ALL) on the unrolled graph
- tvm-default: TVM, `default` pipeline (legalize each op, no fusion) on the unrolled graph
- tvm-zero:    TVM, `zero` pipeline (folds constants, fuses elementwise ops) on the unrolled graph
- fused:       TVM after hwlat's rewrite: one hwlat.LIFNeuron -> the fused TIR kernel

Spikes of all four are checked bit-identical first. Each variant is warmed up, then the
variants run interleaved for --rounds rounds, each round a batch of calls of about 20 ms; the
table gives the median time per call and the 10th-90th percentile spread over rounds, and the
ratio of each variant's median to the fused kernel's.

Then the whole spiking_convnet (batch 1, 3x32x32) the same way: onnxruntime, and TVM with
either pipeline on the unrolled and on the rewritten model (logits checked against
onnxruntime's to 1e-5).
"""

from __future__ import annotations

import os

os.environ.setdefault("TVM_NUM_THREADS", "1")  # before TVM starts its thread pool

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
import tvm  # noqa: E402
from tvm import relax  # noqa: E402

from hwlat import zoo  # noqa: E402
from hwlat.lowering import custom  # noqa: E402
from hwlat.lowering.pipelines import PipelineOptions, make_pipeline  # noqa: E402
from hwlat.lowering.targets import describe_target, make_target, target_dict  # noqa: E402
from hwlat.onnx_export import export  # noqa: E402
from hwlat.zoo.spiking import LIFNeuron  # noqa: E402

DEFAULT_SHAPES = ["4x1x32x32x32", "4x1x64x16x16", "4x1x128x8x8", "4x8x64x56x56"]
VARIANTS = ("ort", "tvm-default", "tvm-zero", "fused")


def unrolled_model(shape: tuple[int, ...], folder: Path) -> onnx.ModelProto:
    path = folder / ("lif_" + "x".join(map(str, shape)) + ".onnx")
    x = torch.zeros(shape)
    export(LIFNeuron(tau=2.0, v_threshold=1.0, v_reset=0.0), (x,), path, compare=False)
    return onnx.load(str(path))


def ort_runner(model: onnx.ModelProto, x: np.ndarray):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feeds = {sess.get_inputs()[0].name: x}
    return lambda: sess.run(None, feeds)[0]


def tvm_runner(model: onnx.ModelProto, x: np.ndarray, pipeline: str, rewrite: bool, target,
               fused_kernels: int | None = None):
    mod = custom.import_onnx(model, rewrite=rewrite)
    lif = sum("lif" in gv.name_hint for gv in mod.get_global_vars())
    want = int(rewrite) if fused_kernels is None else fused_kernels
    if lif != want:
        raise SystemExit(f"expected {want} fused neuron kernel(s), found {lif}")
    passes = make_pipeline(pipeline, PipelineOptions(target))
    ex = tvm.compile(mod, target=target, relax_pipeline=passes)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    vm.set_input("main", tvm.runtime.tensor(x))

    def run():
        vm.invoke_stateful("main")
        return vm.get_outputs("main").numpy()

    def call():
        vm.invoke_stateful("main")

    return run, call


def measure(calls: dict, rounds: int) -> dict[str, list[float]]:
    """Seconds per call for each variant, one sample per round, variants interleaved."""
    batch = {}
    for name, call in calls.items():
        for _ in range(3):
            call()
        t0 = time.perf_counter()
        call()
        one = time.perf_counter() - t0
        batch[name] = max(1, int(0.02 / max(one, 1e-7)))
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for r in range(rounds):
        order = list(calls) if r % 2 == 0 else list(reversed(calls))
        for name in order:
            call, n = calls[name], batch[name]
            t0 = time.perf_counter()
            for _ in range(n):
                call()
            samples[name].append((time.perf_counter() - t0) / n)
    return samples


def fmt_ms(s: float) -> str:
    ms = s * 1e3
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=25)
    ap.add_argument("--shapes", default=",".join(DEFAULT_SHAPES))
    ap.add_argument("--no-model", action="store_true", help="skip the whole-model comparison")
    args = ap.parse_args()
    target = make_target("host", threads=1)
    print(f"target: {describe_target(target_dict(target))}; TVM_NUM_THREADS="
          f"{os.environ['TVM_NUM_THREADS']}; onnxruntime {ort.__version__}, 1 thread; "
          f"{args.rounds} interleaved rounds")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for text in args.shapes.split(","):
            shape = tuple(int(d) for d in text.split("x"))
            model = unrolled_model(shape, Path(tmp))
            x = (np.random.default_rng(0).standard_normal(shape) * 1.5).astype(np.float32)
            runs, calls = {}, {}
            runs["ort"] = calls["ort"] = ort_runner(model, x)
            for name, pipeline, rewrite in (("tvm-default", "default", False),
                                            ("tvm-zero", "zero", False),
                                            ("fused", "default", True)):
                runs[name], calls[name] = tvm_runner(model, x, pipeline, rewrite, target)
            spikes = {name: run() for name, run in runs.items()}
            for name, s in spikes.items():
                if not np.array_equal(s, spikes["ort"]):
                    raise SystemExit(f"{shape}: {name} spikes differ from onnxruntime's")
            samples = measure(calls, args.rounds)
            med = {k: statistics.median(v) for k, v in samples.items()}
            row = [text, f"{spikes['ort'].mean():.3f}"]
            for name in VARIANTS:
                p10, p90 = np.percentile(samples[name], [10, 90])
                row.append(f"{fmt_ms(med[name])} ({fmt_ms(p10)}-{fmt_ms(p90)})")
            row += [f"{med[name] / med['fused']:.1f}x" for name in VARIANTS[:3]]
            gbs = 2 * x.nbytes / med["fused"] / 1e9
            row.append(f"{gbs:.1f}")
            rows.append(row)
            print(" | ".join(row), flush=True)
        header = ["shape [T,B,C,H,W]", "spike rate", *(f"{v} ms" for v in VARIANTS),
                  "ort / fused", "tvm-default / fused", "tvm-zero / fused", "fused GB/s"]
        table(header, rows)
        if not args.no_model:
            whole_model(Path(tmp), target, args.rounds)


def whole_model(folder: Path, target, rounds: int) -> None:
    net, inputs = zoo.build("spiking_convnet")
    path = folder / "spiking_convnet.onnx"
    export(net, inputs, path, compare=False)
    model = onnx.load(str(path))
    x = inputs[0].numpy()
    runs, calls = {"ort": ort_runner(model, x)}, {}
    calls["ort"] = runs["ort"]
    for pipeline in ("default", "zero"):
        for rewrite in (False, True):
            name = f"tvm-{pipeline}" + (" fused" if rewrite else " unrolled")
            runs[name], calls[name] = tvm_runner(model, x, pipeline, rewrite, target,
                                                 fused_kernels=3 if rewrite else 0)
    logits = {name: run() for name, run in runs.items()}
    for name, y in logits.items():
        if not np.allclose(y, logits["ort"], rtol=1e-5, atol=1e-5):
            raise SystemExit(f"spiking_convnet: {name} logits differ from onnxruntime's")
    samples = measure(calls, rounds)
    med = {k: statistics.median(v) for k, v in samples.items()}
    rows = []
    for name, v in samples.items():
        p10, p90 = np.percentile(v, [10, 90])
        rows.append([name, f"{fmt_ms(med[name])} ({fmt_ms(p10)}-{fmt_ms(p90)})",
                     f"{med[name] / med['tvm-default fused']:.2f}x"])
    print("\nspiking_convnet, whole model")
    table(["runtime", "ms", "/ tvm-default fused"], rows)


def table(header: list[str], rows: list[list[str]]) -> None:
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
