"""`hwlat predict` on cpu-tvm for the zoo's sparse and spiking nets, against measured latency.

    .venv/bin/python benchmarks/predict_sparse_spiking.py [--rounds 9] [--out build/sparse_spiking]

1. Exports sparse_convnet at 40,000 points in a 128^3 grid (~39.6k voxels) and spiking_convnet
   (T=4, 3x32x32), unless they are in --out already.
2. Profiles their kernels on cpu-tvm into a fresh table (--out/table.sqlite): each sparse conv
   with the runners' default cloud for its voxel count; a conv that reuses its model's kernel
   map is timed without building one (its key says map=0); the spiking neurons through the
   fused LIF kernel.
3. Measures each model end to end in --rounds interleaved rounds (round-robin, so load on the
   shared machine hits both alike); reports the median of the round medians, their spread
   (min..max), and the prediction's error against the median.
Goal (issue: sparse and spiking end to end): predicted within +-10 % of measured.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from hwlat.devices import load_device
from hwlat.graph import fuse, load
from hwlat.lut import TableStore
from hwlat.lut.predict import predict
from hwlat.runners import get_runner
from hwlat.runners.profile import plan, profile

DEVICE = "cpu-tvm"
MODELS = {"sparse_convnet_40k": ("sparse_convnet", (40000, 128)),
          "spiking_convnet": ("spiking_convnet", None)}


def export_models(out: Path) -> dict[str, Path]:
    from hwlat.onnx_export import export
    from hwlat.zoo import build

    paths = {}
    for name, (zoo_name, shape) in MODELS.items():
        path = out / f"{name}.onnx"
        if not path.exists():
            model, inputs = build(zoo_name, 1, shape)
            export(model, inputs, path, compare=False)
        paths[name] = path
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--out", type=Path, default=Path("build/sparse_spiking"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    paths = export_models(args.out)
    spec = load_device(DEVICE)
    runner = get_runner(spec)
    table = args.out / "table.sqlite"
    table.unlink(missing_ok=True)
    with TableStore(table) as store:
        t0 = time.perf_counter()
        report = profile(plan(list(paths.values()), spec, runner, store), spec, runner, store)
        print(f"profiled {report.measured} kernels on {DEVICE} in {time.perf_counter() - t0:.0f} s")
        predicted = {}
        for name, path in paths.items():
            g = load(path)
            pred = predict(g, fuse(g), store, DEVICE, correct=False)
            assert pred.estimated_share == 0.0, f"{name}: kernels missing from the table"
            predicted[name] = pred.latency_ms
    measured: dict[str, list[float]] = {n: [] for n in paths}
    for path in paths.values():  # warm-up: build caches, page in weights
        runner.time_model(str(path))
    for r in range(args.rounds):
        for name, path in paths.items():
            measured[name].append(runner.time_model(str(path)).median_ms)
        print(f"  round {r + 1}/{args.rounds}", flush=True)
    print(f"\n{DEVICE}, 1 thread; measured = median of {args.rounds} interleaved round medians\n")
    print("| model | predicted ms | measured ms (min..max) | error |")
    print("|---|---|---|---|")
    for name in paths:
        m = statistics.median(measured[name])
        err = (predicted[name] - m) / m
        print(f"| {name} | {predicted[name]:.3f} | {m:.3f} ({min(measured[name]):.3f}.."
              f"{max(measured[name]):.3f}) | {err:+.1%} |")


if __name__ == "__main__":
    main()
