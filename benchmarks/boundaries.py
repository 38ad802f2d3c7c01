#!/usr/bin/env python
"""Kernel boundaries on cpu-tvm: a model's kernel sum under cpu-tvm's own cut (a MobileNet block's
convs as one kernel, fusion "tvm-cpu") and under the default cut (each conv a kernel of its own),
against the compiled model's thread CPU time per call. With one thread the Relax VM runs the
model in the calling thread, so the figure is the model's own work even on a loaded machine
(wall-clock times of a whole model there are mostly waiting).

    benchmarks/boundaries.py M.onnx ... [--table T.sqlite] [--whole cpu-tvm] [--split cpu-tvm-split]

Both devices' entries must be in the table (`hwlat profile M.onnx --device D`); the split device
is a copy of cpu-tvm's device file under another name with `fusion = "default"`.
"""

from __future__ import annotations

import argparse
import statistics
import time

import onnx

from hwlat.devices import load_device
from hwlat.graph import fuse, load
from hwlat.lut import TableStore, default_table_path
from hwlat.lut.predict import predict
from hwlat.runners import get_runner


def cpu_ms(vm, calls: int) -> tuple[float, float]:
    """(median thread CPU ms, median wall ms) per call of the model's main."""
    for _ in range(3):
        vm.invoke_stateful("main")
    cpu, wall = [], []
    for _ in range(calls):
        t, w = time.thread_time(), time.perf_counter()
        vm.invoke_stateful("main")
        cpu.append((time.thread_time() - t) * 1e3)
        wall.append((time.perf_counter() - w) * 1e3)
    return statistics.median(cpu), statistics.median(wall)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--table", default=None)
    ap.add_argument("--whole", default="cpu-tvm", help="the device that cuts blocks whole")
    ap.add_argument("--split", default="cpu-tvm-split", help="the same device, default cut")
    ap.add_argument("--calls", type=int, default=30)
    args = ap.parse_args()
    whole, split = load_device(args.whole), load_device(args.split)
    runner = get_runner(whole)
    print("| model | thread CPU ms (wall) | kernels, default cut | sum ms | error "
          "| kernels, device's cut | sum ms | error |")
    print("|---|---|---|---|---|---|---|---|")
    with TableStore(args.table or default_table_path(), readonly=True) as store:
        for path in args.models:
            g = load(path)
            cut = {d.name: fuse(g, d.fusion) for d in (split, whole)}
            pred = {d.name: predict(g, cut[d.name], store, d.name, correct=False)
                    for d in (split, whole)}
            cpu, wall = cpu_ms(runner._build(onnx.load(path)), args.calls)
            row = [f"{path.rsplit('/', 1)[-1].removesuffix('.onnx')}", f"{cpu:.2f} ({wall:.2f})"]
            for d in (split, whole):
                p = pred[d.name]
                note = f" ({p.estimated_share:.0%} estimated)" if p.estimated_share else ""
                row += [str(len(cut[d.name])), f"{p.kernel_sum_ms:.2f}{note}",
                        f"{p.kernel_sum_ms / cpu - 1:+.1%}"]
            print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
