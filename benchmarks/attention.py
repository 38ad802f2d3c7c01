"""hwlat's fused attention kernel vs torch SDPA vs TVM's default lowering of relax.nn.attention,
one thread, in one process.

    .venv/bin/python benchmarks/attention.py [--rounds 7] [--min-time 0.2]

Shapes (batch, heads, sequence, head dim), self attention, float32, non-causal:
(1, 12, 197, 64) (ViT-B/16 at 224) and (1, 8, 1024, 64). Contestants:

- `sdpa`: torch.nn.functional.scaled_dot_product_attention on contiguous BNSD tensors;
- `hwlat BNSD`: the kernel's PrimFunc called directly on the same BNSD layout;
- `hwlat BSNH (relax)`: a Relax module holding `relax.op.nn.attention` (BSNH), built with the
  "default" pipeline, which rewrites it into the kernel; called through the VM;
- `tvm default (relax)`: the same module built with the rewrite off (TVM's legalization).

After a warm-up, each round times every contestant in turn (interleaved), each for at least
--min-time seconds of back-to-back calls; the table gives the median over rounds of the
per-call wall time, its spread (min-max over rounds), the median per-call CPU time of the
calling thread (less sensitive to other processes on a shared machine), and the ratio of each
median to SDPA's. Outputs are checked against the numpy reference first.
"""

from __future__ import annotations

import os

os.environ["TVM_NUM_THREADS"] = "1"  # before TVM starts its thread pool
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import tvm  # noqa: E402
from tvm import relax  # noqa: E402

from hwlat.kernels.attention import (  # noqa: E402
    AttentionSpec,
    attention_primfunc,
    attention_reference,
)
from hwlat.lowering.pipelines import PipelineOptions, make_pipeline  # noqa: E402
from hwlat.lowering.targets import make_target  # noqa: E402

SHAPES = [(1, 12, 197, 64), (1, 8, 1024, 64)]
TARGET = make_target(threads=1)


def relax_attention(b: int, h: int, s: int, d: int, fused: bool):
    bb = relax.BlockBuilder()
    args = [relax.Var(n, relax.TensorType((b, s, h, d), "float32")) for n in "qkv"]
    with bb.function("main", args):
        with bb.dataflow():
            out = bb.emit_output(relax.op.nn.attention(*args))
        bb.emit_func_output(out)
    passes = make_pipeline("default", PipelineOptions(TARGET, fused_attention=fused))
    ex = tvm.compile(bb.get(), target=TARGET, relax_pipeline=passes)
    return relax.VirtualMachine(ex, tvm.cpu())["main"]


def contestants(b: int, h: int, s: int, d: int, rng) -> tuple[dict[str, Callable], dict]:
    spec = AttentionSpec(b, h, s, s, d, d, 1 / math.sqrt(d))
    q, k, v = (rng.standard_normal((b, h, s, d)).astype(np.float32) for _ in range(3))
    want = attention_reference(q, k, v, spec)
    tq, tk, tv = (torch.from_numpy(x) for x in (q, k, v))

    kernel = tvm.compile(tvm.IRModule({"attn": attention_primfunc(spec).with_attr(
        "global_symbol", "attn")}), target=TARGET)["attn"]
    nd = [tvm.runtime.tensor(x) for x in (q, k, v)]
    out_bnsd = tvm.runtime.tensor(np.zeros_like(q))
    bsnh = [tvm.runtime.tensor(np.ascontiguousarray(x.transpose(0, 2, 1, 3))) for x in (q, k, v)]
    fused, default = relax_attention(b, h, s, d, True), relax_attention(b, h, s, d, False)

    runs = {
        "sdpa": lambda: torch.nn.functional.scaled_dot_product_attention(tq, tk, tv),
        "hwlat BNSD": lambda: kernel(*nd, out_bnsd),
        "hwlat BSNH (relax)": lambda: fused(*bsnh),
        "tvm default (relax)": lambda: default(*bsnh),
    }
    outputs = {
        "sdpa": lambda: runs["sdpa"]().numpy(),
        "hwlat BNSD": lambda: (runs["hwlat BNSD"](), out_bnsd.numpy())[1],
        "hwlat BSNH (relax)": lambda: fused(*bsnh).numpy().transpose(0, 2, 1, 3),
        "tvm default (relax)": lambda: default(*bsnh).numpy().transpose(0, 2, 1, 3),
    }
    errors = {name: float(np.abs(get() - want).max()) for name, get in outputs.items()}
    return runs, errors


def sample(fn: Callable, min_time: float) -> tuple[float, float]:
    """Per-call (wall, thread CPU) seconds over back-to-back calls lasting >= min_time."""
    n, w0, c0 = 0, time.perf_counter(), time.thread_time()
    while True:
        fn()
        n += 1
        wall = time.perf_counter() - w0
        if wall >= min_time:
            return wall / n, (time.thread_time() - c0) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--min-time", type=float, default=0.2, help="seconds per contestant per round")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    print(f"# {platform.processor() or platform.machine()}, TVM target {TARGET.attrs['mcpu']}, "
          f"torch {torch.__version__}, 1 thread, {args.rounds} rounds")
    for b, h, s, d in SHAPES:
        runs, errors = contestants(b, h, s, d, rng)
        for fn in runs.values():  # warm-up
            sample(fn, args.min_time / 2)
        walls = {n: [] for n in runs}
        cpus = {n: [] for n in runs}
        for _ in range(args.rounds):
            for name, fn in runs.items():
                w, c = sample(fn, args.min_time)
                walls[name].append(w)
                cpus[name].append(c)
        ref_w = statistics.median(walls["sdpa"])
        ref_c = statistics.median(cpus["sdpa"])
        flops = 4 * b * h * s * s * d
        print(f"\n(B{b}, H{h}, S{s}, D{d}), {flops / 1e9:.2f} GFLOP\n")
        print("| implementation | median ms (wall) | spread ms | median ms (CPU) | GFLOP/s "
              "| vs SDPA (wall) | vs SDPA (CPU) | max abs err |")
        print("|---|---|---|---|---|---|---|---|")
        for name in runs:
            mw, mc = statistics.median(walls[name]), statistics.median(cpus[name])
            print(f"| {name} | {mw * 1e3:.2f} | {min(walls[name]) * 1e3:.2f}-"
                  f"{max(walls[name]) * 1e3:.2f} | {mc * 1e3:.2f} | {flops / mw / 1e9:.1f} "
                  f"| {mw / ref_w:.2f}x | {mc / ref_c:.2f}x | {errors[name]:.1e} |")


if __name__ == "__main__":
    main()
