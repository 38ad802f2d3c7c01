"""A new device from N whole-net timings with a multi-device prior: OFA MobileNetV3.

    .venv/bin/python benchmarks/fewshot_ofa.py measure [--n 300] [--seed 0] [--out build/fewshot/ofa]
        [--ofa-lut DIR] [--min-time 0.1]
    .venv/bin/python benchmarks/fewshot_ofa.py lodo [--out build/fewshot/ofa] [--seeds 5]

measure: --n subnets sampled from the OFA MobileNetV3 space (resolutions 160..224 by 16, the
    ones OFA's published Note10 tables hold), exported with hwlat's exporter, and timed end to end
    on this machine by onnxruntime (`cpu-ort`, 1 thread) and OpenVINO (`openvino`, 1 thread):
    pinned to one core, the two runtimes' calls interleaved, process CPU time per call (the
    machine is shared), median. Resumable: OUT/measured.jsonl. With --ofa-lut (a folder of OFA
    <R>_lookup_table.yaml files: the Note10's), every subnet also gets `note10`: OFA's own
    per-layer rule over that table, for the arch's choices at width 1.2 (the tables' supernet). OUT/prior.csv: arch + one ms column per device (the form
    `hwlat lut fit --space ofa-mbv3 --prior-devices` reads).
lodo: each device in turn is held out, the others (and hwlat's roofline-sd855 column) are the
    prior; N subnets timed on it (random: --seeds draws; or proposed, k-center over the prior);
    all the prior's subnets predicted: Spearman, within +-10 %, RMSPE, at N = 5, 10, 20, 100.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build" / "fewshot" / "ofa"
RESOLUTIONS = (160, 176, 192, 208, 224)
RUNTIMES = ("cpu-ort", "openvino")


def sample_archs(n: int, seed: int) -> list[str]:
    from hwlat.nas.ofa_prior import ofa_arch_text
    from hwlat.nas.spaces import OFA_MBV3

    rng = np.random.default_rng(seed)
    out: dict[str, None] = {}
    while len(out) < n:
        a = OFA_MBV3.sample(rng)
        a["r"] = int(RESOLUTIONS[int(rng.integers(len(RESOLUTIONS)))])
        out[ofa_arch_text(a)] = None
    return list(out)


def export_fast(model, inputs, path: Path) -> None:
    """torch's TorchScript exporter: a few times less CPU than the dynamo exporter hwlat's
    `export` uses, on a shared machine; both runtimes optimise the graph they load, and what is
    timed is the network."""
    import warnings

    import torch

    tmp = path.with_suffix(".tmp")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), inputs if isinstance(inputs, tuple) else (inputs,), str(tmp),
                          dynamo=False, opset_version=17)
    tmp.replace(path)


def time_pair(path: Path, min_time: float) -> dict[str, float]:
    """Median process CPU ms per call of onnxruntime and OpenVINO (1 thread each), interleaved."""
    import onnxruntime as ort
    import openvino as ov

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    x = np.random.default_rng(0).standard_normal([int(d) for d in inp.shape]).astype(np.float32)
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": 1,
                                                          "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    runs = {"cpu-ort": lambda: sess.run(None, {inp.name: x}),
            "openvino": lambda: request.infer({0: x})}
    for f in runs.values():
        for _ in range(2):
            f()
    samples: dict[str, list[float]] = {k: [] for k in runs}
    turn = 0
    gc.collect()
    gc.disable()
    try:
        while min(sum(v) for v in samples.values()) < min_time or min(map(len, samples.values())) < 5:
            order = list(runs) if turn % 2 == 0 else list(reversed(runs))
            for k in order:
                p0 = time.process_time()
                runs[k]()
                samples[k].append(time.process_time() - p0)
            turn += 1
    finally:
        gc.enable()
    return {k: statistics.median(v) * 1e3 for k, v in samples.items()}


def measure(args) -> None:
    from hwlat.nas.ofa_prior import parse_ofa_arch_text
    from hwlat.nas.spaces import OFA_MBV3
    from hwlat.zoo import from_ofa_config

    out = args.out
    (out / "nets").mkdir(parents=True, exist_ok=True)
    log = out / "measured.jsonl"
    done = {}
    if log.exists():
        for line in log.read_text().splitlines():
            row = json.loads(line)
            done[row["arch"]] = row
    archs = sample_archs(args.n, args.seed)
    allowed = sorted(os.sched_getaffinity(0))
    pin = {allowed[-1]}
    print(f"{len(done)} of {len(archs)} already measured; pinned to core {sorted(pin)}", flush=True)
    t_start = time.perf_counter()
    for i, a in enumerate(archs):
        if a in done:
            continue
        net = out / "nets" / f"ofa_{i:04d}.onnx"
        if not net.exists():
            model, inputs = from_ofa_config(OFA_MBV3.config(parse_ofa_arch_text(a)))
            export_fast(model, inputs, net)
        os.sched_setaffinity(0, pin)
        try:
            ms = time_pair(net, args.min_time)
        finally:
            os.sched_setaffinity(0, set(allowed))
        row = {"index": i, "arch": a, **{k: round(v, 5) for k, v in ms.items()},
               "load": round(os.getloadavg()[0], 2),
               "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        with open(log, "a") as f:
            f.write(json.dumps(row) + "\n")
        done[a] = row
        print(f"  {len(done)}/{len(archs)} {a}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in ms.items())
              + f" (load {row['load']}, {time.perf_counter() - t_start:.0f} s)", flush=True)
    write_prior(args, [a for a in archs if a in done], done)


def write_prior(args, archs: list[str], done: dict) -> None:
    columns = {d: [done[a][d] for a in archs] for d in RUNTIMES}
    if args.ofa_lut is not None:
        columns["note10"] = note10_ms(args.ofa_lut, archs).tolist()
    with open(args.out / "prior.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arch", *columns])
        for i, a in enumerate(archs):
            w.writerow([a, *(f"{columns[d][i]:.6g}" for d in columns)])
    print(f"wrote {args.out / 'prior.csv'}: {len(archs)} subnets x {list(columns)}")


def note10_ms(lut_dir: Path, archs: list[str]) -> np.ndarray:
    import tempfile

    from hwlat.lut.ofa import import_ofa_dir, predict_ofa
    from hwlat.lut.store import TableStore
    from hwlat.nas.ofa_prior import parse_ofa_arch_text
    from hwlat.nas.spaces import ofa_mbv3_config

    # OFA's Note10 tables are of its width-1.2 supernet: each arch's choices at width 1.2
    with tempfile.TemporaryDirectory() as tmp, TableStore(Path(tmp) / "t.sqlite") as store:
        import_ofa_dir(store, lut_dir, "note10")
        return np.array([predict_ofa(store, "note10", ofa_mbv3_config(parse_ofa_arch_text(a), 1.2)).latency_ms
                         for a in archs])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--n", type=int, default=300)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--min-time", type=float, default=0.1)
    m.add_argument("--ofa-lut", type=Path, default=None)
    m.add_argument("--out", type=Path, default=OUT)
    lo = sub.add_parser("lodo")
    lo.add_argument("--out", type=Path, default=OUT)
    lo.add_argument("--seeds", type=int, default=5)
    lo.add_argument("--sizes", type=int, nargs="+", default=[5, 10, 20, 100])
    args = ap.parse_args()
    if args.cmd == "measure":
        measure(args)
    else:
        lodo(args)


def lodo(args) -> None:
    from scipy.stats import spearmanr

    from hwlat.lut.prior import DevicePrior
    from hwlat.nas.ofa_prior import ofa_predict_prior, ofa_prior_fit, ofa_propose, read_ofa_prior

    full = read_ofa_prior(args.out / "prior.csv")
    archs, devices = list(full.archs), full.devices
    n_all = len(archs)
    rho = {(a, b): spearmanr(full.ms[:, i], full.ms[:, j])[0]
           for i, a in enumerate(devices) for j, b in enumerate(devices) if i < j}
    print(f"{n_all} subnets x {len(devices)} devices ({', '.join(devices)}); Spearman between "
          "devices: " + ", ".join(f"{a}/{b} {v:.3f}" for (a, b), v in rho.items()))
    print("\n| held out | N | cells | Spearman | Kendall | within +-10 % | RMSPE |")
    print("|---|---|---|---|---|---|---|")
    from scipy.stats import kendalltau

    for j, dev in enumerate(devices):
        keep = [k for k in range(len(devices)) if k != j]
        prior = DevicePrior(full.space, tuple(devices[k] for k in keep), full.ms[:, keep], full.archs)
        y = full.ms[:, j]
        for n in args.sizes:
            if n > n_all - 10:
                print(f"| {dev} | {n} | - | (only {n_all} subnets: fewer than 10 left to judge) | | | |")
                continue
            draws = [("random", list(np.random.default_rng(seed).choice(n_all, n, replace=False)))
                     for seed in range(args.seeds)]
            draws.append(("proposed", [archs.index(a) for a in ofa_propose(prior, n)]))
            per: dict[str, list] = {}
            for selection, rows in draws:
                fit = ofa_prior_fit(prior, {archs[i]: float(y[i]) for i in rows})
                rest = np.setdiff1d(np.arange(n_all), rows)
                pred = ofa_predict_prior(fit, prior, [archs[i] for i in rest])
                rel = (pred - y[rest]) / y[rest]
                per.setdefault(selection, []).append((spearmanr(pred, y[rest])[0],
                                                      kendalltau(pred, y[rest])[0],
                                                      np.mean(np.abs(rel) <= 0.1), np.sqrt(np.mean(rel**2))))
            for selection, v in per.items():
                m = np.mean(np.array(v), axis=0)
                lo = min(x[0] for x in v)
                print(f"| {dev} | {n} | {selection} | {m[0]:.3f} (worst {lo:.3f}) | {m[1]:.3f} | "
                      f"{100 * m[2]:.1f} % | {100 * m[3]:.1f} % |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
