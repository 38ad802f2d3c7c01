"""Build the corpus (`hwlat zoo --corpus`) for TVM's CUDA target; where a CUDA GPU is present, run
each build there, check it against onnxruntime on the CPU and time it against torch eager on the
same GPU.

    .venv/bin/python benchmarks/corpus_cuda.py --onnx-dir build/corpus-onnx
        [--models resnet18 ...] [--families ...] [--route torch hwlat] [--arch sm_90]
        [--results build/corpus_cuda/results.jsonl] [--summary-only] [--retry-failed]

Models come from `--onnx-dir` as `benchmarks/corpus_export.py` writes them (see corpus_compile.py).
Per model and route, without a GPU (what every machine can check):

1. build: `hwlat.lowering.compile.lower` for `make_target("cuda", arch=...)` (the ONNX import,
   the pipeline, CUDA code generation; wall seconds);
2. the generated CUDA source has at least one `__global__` kernel (their count is recorded), and
   the executable exports to a shared library (host code linked, device code embedded).

With a GPU (`tvm.cuda(0).exist`), also:

3. accuracy: seeded standard-normal inputs through the build on the GPU and onnxruntime on the
   CPU; relative error = max |diff| / max |reference| (the reference must not be constant);
4. timing: the build and torch eager (the same corpus model built by `hwlat.zoo.corpus.build`,
   on the GPU, `torch.no_grad`) called in turn, each call synchronised, medians over rounds;
   the ratio hwlat / torch eager per round, then its median (min..max).

One JSON line per model and route in `--results` (resumable: a recorded model is skipped unless
`--retry-failed` and it failed). At the end: how many built, how many were checked on a GPU, and
per model the build seconds, the kernel count, and (GPU) the error and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus_compile import append, commit, read_results, rel_err, select, stem  # noqa: E402


def build_one(m, route: str, path: Path, args) -> dict:
    from hwlat.errors import one_line
    from hwlat.lowering.compile import device_source, lower
    from hwlat.lowering.targets import make_target

    row: dict = {"model": m.spec, "stem": stem(m), "family": m.family, "route": route,
                 "target": "cuda", "arch": args.arch, "ok": False}
    t0 = time.perf_counter()
    try:
        built = lower(path, make_target("cuda", {"arch": args.arch}))
        src = device_source(built.executable, "cuda")
    except Exception as e:  # a build failure is a result, recorded with its one-line reason
        row.update(stage="build", error=f"{type(e).__name__}: {one_line(e, 400)}",
                   build_s=round(time.perf_counter() - t0, 1))
        return row
    row["build_s"] = round(time.perf_counter() - t0, 1)
    row["kernels"] = src.count("__global__")
    if not row["kernels"]:
        row.update(stage="codegen", error="the CUDA source has no __global__ kernel")
        return row
    with tempfile.TemporaryDirectory() as tmp:
        lib = Path(tmp) / "m.so"
        try:
            built.executable.export_library(str(lib))
        except Exception as e:
            row.update(stage="export", error=f"{type(e).__name__}: {one_line(e, 400)}")
            return row
        row["library_bytes"] = lib.stat().st_size
        import tvm

        if tvm.cuda(0).exist:
            on_gpu(m, path, built, row, args)
            return row
    row["ok"] = True
    row["checked_on_gpu"] = False
    return row


def on_gpu(m, path: Path, built, row: dict, args) -> None:
    import numpy as np
    import onnxruntime as ort
    import torch
    import tvm
    from tvm import relax

    from hwlat.lowering.run import outputs_of, random_inputs
    from hwlat.zoo.corpus import build as build_torch

    dev = tvm.cuda(0)
    vm = relax.VirtualMachine(built.executable, dev)
    arrays = random_inputs(built.inputs, args.seed)
    tensors = [tvm.runtime.tensor(a, dev) for a in arrays]
    got = outputs_of(vm["main"](*tensors))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = sess.run(None, {s.name: a for s, a in zip(built.inputs, arrays, strict=True)})
    err, spread = rel_err(got, want)
    row.update(rel_err=err, ref_range=spread, checked_on_gpu=True)
    if not spread > 0:
        row.update(stage="accuracy", error="onnxruntime's output is constant on these inputs")
        return
    model, example = build_torch(m.spec)
    model = model.cuda().eval()
    x = [torch.from_numpy(np.asarray(a)).cuda() for a in arrays] or [e.cuda() for e in example]
    fn = vm["main"]

    def hwlat_call():
        fn(*tensors)
        dev.sync()

    def torch_call():
        with torch.no_grad():
            model(*x)
        torch.cuda.synchronize()

    ratios, med = [], {"hwlat": [], "torch": []}
    for _ in range(args.rounds):
        samples = {"hwlat": [], "torch": []}
        t_end = time.perf_counter() + args.min_time * 2
        while time.perf_counter() < t_end:
            for label, call in (("hwlat", hwlat_call), ("torch", torch_call)):
                t0 = time.perf_counter()
                call()
                samples[label].append(time.perf_counter() - t0)
        for k in samples:
            med[k].append(statistics.median(samples[k]))
        ratios.append(med["hwlat"][-1] / med["torch"][-1])
    row.update(ok=True, hwlat_ms=statistics.median(med["hwlat"]) * 1e3,
               torch_ms=statistics.median(med["torch"]) * 1e3,
               hwlat_vs_torch=(statistics.median(ratios), min(ratios), max(ratios)))


def summary(rows: list[dict]) -> None:
    ok = [r for r in rows if r.get("ok")]
    gpu = [r for r in ok if r.get("checked_on_gpu")]
    print(f"\n{len(ok)} of {len(rows)} built for cuda; {len(gpu)} checked on a GPU")
    print("| model | route | build s | kernels | rel err (GPU) | hwlat / torch eager (GPU) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if not r.get("ok"):
            print(f"| {r['stem']} | {r['route']} | failed at {r.get('stage')}: {r.get('error', '')[:120]} | | | |")
            continue
        ratio = r.get("hwlat_vs_torch")
        print(f"| {r['stem']} | {r['route']} | {r['build_s']:.0f} | {r['kernels']} | "
              f"{r['rel_err']:.1e} | {ratio[0]:.2f}x ({ratio[1]:.2f}..{ratio[2]:.2f}) |" if ratio else
              f"| {r['stem']} | {r['route']} | {r['build_s']:.0f} | {r['kernels']} | not run | not run |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--onnx-dir", type=Path, default=ROOT / "build" / "corpus-onnx")
    ap.add_argument("--models", nargs="+")
    ap.add_argument("--families", nargs="+")
    ap.add_argument("--route", nargs="+", choices=("hwlat", "torch"), default=["torch"])
    ap.add_argument("--arch", default="sm_90", help="CUDA architecture of the build (sm_90: H100)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results", type=Path, default=ROOT / "build" / "corpus_cuda" / "results.jsonl")
    ap.add_argument("--retry-failed", action="store_true")
    ap.add_argument("--summary-only", action="store_true")
    args = ap.parse_args()

    chosen = select(args.models, args.families)
    done = {(r["stem"], r["route"]): r for r in read_results(args.results)}
    if not args.summary_only:
        import tvm

        print(f"commit {commit()}; GPU here: {bool(tvm.cuda(0).exist)}; arch {args.arch}", flush=True)
        for m in chosen:
            for route in args.route:
                path = args.onnx_dir / f"{stem(m)}{'.torch' if route == 'torch' else ''}.onnx"
                prev = done.get((stem(m), route))
                if prev and (prev.get("ok") or not args.retry_failed):
                    continue
                if not path.exists():
                    print(f"{stem(m)} ({route}): no {path.name}; run benchmarks/corpus_export.py", flush=True)
                    continue
                row = build_one(m, route, path, args)
                row.update(commit=commit(), at=time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()))
                append(args.results, row)
                done[(stem(m), route)] = row
                print(f"{stem(m)} ({route}): {'ok' if row['ok'] else 'FAILED ' + row.get('error', '')}"
                      f" {row.get('build_s')} s, {row.get('kernels', 0)} kernels", flush=True)
    wanted = {(stem(m), r) for m in chosen for r in args.route}
    summary([r for k, r in done.items() if k in wanted])


if __name__ == "__main__":
    main()
