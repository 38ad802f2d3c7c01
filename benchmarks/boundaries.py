#!/usr/bin/env python
"""Kernel boundaries on cpu-tvm: a model's kernel sum under cpu-tvm's own cut (a MobileNet block's
convs as one kernel, fusion "tvm-cpu") and under the default cut (each conv a kernel of its own),
against the compiled model, all timed in this one process, interleaved in rounds.

    benchmarks/boundaries.py M.onnx ... [--rounds 5] [--calls 10] [--cuts tvm-cpu]

Every distinct kernel of both cuts is cut out and built as `hwlat profile --device cpu-tvm`
builds it (TvmRunner), and so is the whole model; each round times every one of them (median
thread CPU ms of --calls calls: with one thread the Relax VM runs in the calling thread, so the
figure is the work's own even on a loaded machine) and sums each cut's kernels as `hwlat
predict` sums table entries. Printed: medians over the rounds of the model's time, each cut's
sum and its error; and per MobileNet block, its one kernel against its convs summed. `--cuts`
names the cuts to build (both by default; `tvm-cpu` alone builds a third of DenseNet's kernels).
"""

from __future__ import annotations

import argparse
import statistics
import time

import onnx

from hwlat.devices import load_device
from hwlat.graph import fuse, load
from hwlat.graph.extract import extract_kernel
from hwlat.runners import get_runner


def cpu_ms(vm, calls: int) -> float:
    """Median thread CPU ms of a call of the module's main."""
    vm.invoke_stateful("main")
    out = []
    for _ in range(calls):
        t = time.thread_time()
        vm.invoke_stateful("main")
        out.append((time.thread_time() - t) * 1e3)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--cuts", nargs="+", choices=("default", "tvm-cpu"), default=["default", "tvm-cpu"])
    args = ap.parse_args()
    runner = get_runner(load_device("cpu-tvm"))
    print("| model | compiled model ms | " + " | ".join(f"{c} cut: kernels, sum ms, error" for c in args.cuts)
          + " |")
    print("|---|---|" + "---|" * len(args.cuts))
    block_rows = []
    for path in args.models:
        name = path.rsplit("/", 1)[-1].removesuffix(".onnx")
        g = load(path)
        cuts = {f: fuse(g, f) for f in args.cuts}
        vms, where = {}, {}
        for ks in cuts.values():
            for k in ks:
                if k.key.text() not in vms:
                    vms[k.key.text()] = runner._build(extract_kernel(g, k))
                    where[k.key.text()] = k
        model = runner._build(onnx.load(path))
        rounds = []
        for _ in range(args.rounds):
            ms = {key: cpu_ms(vm, args.calls) for key, vm in vms.items()}
            whole = cpu_ms(model, args.calls)
            rounds.append((whole, ms))
        med = statistics.median
        whole = med(r[0] for r in rounds)
        row = [name, f"{whole:.2f}"]
        for ks in cuts.values():
            s = med(sum(r[1][k.key.text()] for k in ks) for r in rounds)
            row.append(f"{len(ks)}, {s:.2f}, {s / whole - 1:+.1%}")
        print("| " + " | ".join(row) + " |", flush=True)
        parts = cuts.get("default", [])
        for b in cuts.get("tvm-cpu", []) if parts else ():
            if b.rule != "mbconv":
                continue
            ps = [p for p in parts if set(p.nodes) <= set(b.nodes)]
            one = med(r[1][b.key.text()] for r in rounds)
            three = med(sum(r[1][p.key.text()] for p in ps) for r in rounds)
            block_rows.append((name, b.key.inputs[0].text(), b.key.outputs[0].text(), len(ps),
                               one, three))
    print("\n| model | block in -> out | convs | one kernel ms | the convs summed ms | ratio |")
    print("|---|---|---|---|---|---|")
    for name, x, y, n, one, three in block_rows:
        print(f"| {name} | {x} -> {y} | {n} | {one:.3f} | {three:.3f} | {one / three:.2f} |")


if __name__ == "__main__":
    main()
