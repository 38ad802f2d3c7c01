"""Prediction accuracy on cpu-ort: the zoo, OFA Note10 configs, random NB201 cells and random OFA
MobileNetV3 subnets, each family predicted from a table built without it (leave-one-family-out).

    .venv/bin/python benchmarks/accuracy_data.py --out build/accuracy     # export the models once
    .venv/bin/python benchmarks/accuracy.py --data build/accuracy [--rounds 5]

1. Profiles every kernel of every model into build/accuracy/table.sqlite (resumable; the time
   it takes is the table's build cost).
2. Measures each model end to end in `--rounds` interleaved rounds (round-robin over models, so
   load on the shared machine hits all alike); a model's latency is the median of its round
   medians, and the spread of those round medians is the noise floor.
3. For each family F: a fresh table with only the kernels of the other families' models and the
   correction fitted on those models; predicts F's models. Kernels F alone has are estimated.
4. Prints per-model rows, per-family and overall metrics (RMSE, RMSPE, within 5/10/15 %), twice:
   leave-one-family-out, and "seen" (every kernel in the table, correction still fitted without F).

A corpus of exported ONNX files (e.g. timm models) instead of the manifest:

    .venv/bin/python benchmarks/accuracy.py --corpus DIR [--models a.onnx,b.onnx | --models-file F]
        [--families fam.json] --sampled sampled.sqlite [--out build/predict-bench] [--rounds 5]

Families: `--families` (JSON, file stem -> family), else the corpus folder's `export-log.jsonl`
(lines with "model": "timm:NAME" or "torchvision:NAME" and "family"), else the file name's
prefix. Measurement: each model in its own onnxruntime session, pinned to one core where the
device runs one thread (os.sched_setaffinity), models interleaved in rounds; per round the median
of the runs' wall time and of their thread CPU time (time.thread_time: onnxruntime runs a
one-thread session on the calling thread, so this is the model's own CPU time, free of the time
other processes on a shared machine take); a model's figure is the median of its round medians,
the noise floor the spread of those. Predictions are compared with thread CPU time here (the
machine is shared); `hwlat validate` compares with the wall-clock median, which is what a user
of a dedicated device sees.

Kernels are added up in the clock compared with (`--figure`): thread CPU time (the table's
`cpu_times`: kernels cut out and timed with time.thread_time on the values their inputs take in
their model, or, under 0.5 ms inside their model, their in-model durations; `--in-model-cpu-below`
re-derives that split from the table) against the models' thread CPU time, or wall against wall.

Per family F (leave-one-family-out): the table holds the other families' kernels and the
sampled kernels, less any key only F has; per-kind xgboost predictors trained on that table (in
the clock) estimate F's kernels; the correction is fitted on the other families. "before": the
correction with the prior it had before (per-kind scales loose, per-node cost held near 0);
"after": hwlat's (`hwlat.lut.correct._PRIOR_SCALE`; `--refit` compares the priors). "seen": every kernel of every
model in the table, the correction still fitted without F.

The rows (OUT/rows-FIGURE.json) keep each model's features, LOFO and seen; `--refit` fits the
correction priors of REFIT_PRIORS again on them and compares them, in seconds, without profiling,
measuring or training:

    .venv/bin/python benchmarks/accuracy.py --refit --out OUT
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from hwlat.devices import load_device
from hwlat.graph import fuse, load
from hwlat.lut import TableStore
from hwlat.lut.correct import PRIOR_SCALE_BEFORE, PRIOR_SCALE_NODE, fit_correction
from hwlat.lut.metrics import accuracy_metrics
from hwlat.lut.predict import predict
from hwlat.runners import get_runner
from hwlat.runners.profile import plan, profile

DEVICE = "cpu-ort"


def measure_all(models, runner, rounds: int) -> dict[str, list[float]]:
    per_round: dict[str, list[float]] = defaultdict(list)
    for r in range(rounds):
        for m in models:
            per_round[m["path"]].append(runner.time_model(m["path"]).median_ms)
        print(f"  round {r + 1}/{rounds} done", flush=True)
    return per_round


def fold_table(path: Path, master: TableStore, graphs, train) -> TableStore:
    keys = {k.key.text() for m in train for k in graphs[m["path"]][1]}
    feats = master.features()
    entries = list(master.get_many(DEVICE, keys).values())
    store = TableStore(path)
    store.put_many(entries, [(k, *feats[k]) for k in keys if k in feats])
    return store


def evaluate(models, graphs, master, measured, holdout_kernels: bool):
    """Per family: predictions with the correction fitted on the other families; with
    holdout_kernels, the table also lacks the family's own kernels."""
    families = sorted({m["family"] for m in models})
    rows = []
    for fam in families:
        train = [m for m in models if m["family"] != fam]
        test = [m for m in models if m["family"] == fam]
        with tempfile.TemporaryDirectory() as tmp:
            store = fold_table(Path(tmp) / "fold.sqlite", master, graphs, train if holdout_kernels else models)
            with store:
                for m in train:
                    g, ks = graphs[m["path"]]
                    raw = predict(g, ks, store, DEVICE, correct=False)
                    store.put_calibration(DEVICE, m["path"], raw.features, measured[m["path"]])
                for m in test:
                    g, ks = graphs[m["path"]]
                    p = predict(g, ks, store, DEVICE)
                    rows.append({"family": fam, "name": m["name"], "predicted": p.latency_ms,
                                 "kernel_sum": p.kernel_sum_ms, "measured": measured[m["path"]],
                                 "estimated_share": p.estimated_share})
    return rows


def report(title: str, rows) -> None:
    print(f"\n### {title}\n")
    print("| family | n | RMSE ms | RMSPE | within 5 % | within 10 % | within 15 % | raw kernel-sum RMSPE |")
    print("|---|---|---|---|---|---|---|---|")
    for fam in sorted({r["family"] for r in rows}) + ["all"]:
        rs = [r for r in rows if fam in ("all", r["family"])]
        m = accuracy_metrics([r["predicted"] for r in rs], [r["measured"] for r in rs])
        raw = accuracy_metrics([r["kernel_sum"] for r in rs], [r["measured"] for r in rs])
        print(f"| {fam} | {m['n']} | {m['rmse_ms']:.3f} | {m['rmspe']:.1%} | {m['within_5']:.0%} | "
              f"{m['within_10']:.0%} | {m['within_15']:.0%} | {raw['rmspe']:.1%} |")


def corpus_families(corpus: Path, paths: list[Path], families: Path | None) -> dict[str, str]:
    """file stem -> family (see the module's docstring for where it comes from)."""
    if families is not None:
        fam = json.loads(families.read_text())
    else:
        fam = {}
        log = corpus / "export-log.jsonl"
        if log.exists():
            for line in log.read_text().splitlines():
                d = json.loads(line)
                src, _, name = d["model"].partition(":")
                fam[("tv-" if src == "torchvision" else "") + name] = d["family"]
    out = {}
    for p in paths:
        stem = p.name.removesuffix(".onnx").removesuffix(".torch")
        out[str(p)] = fam.get(stem) or re.split(r"[_\d-]", stem, maxsplit=1)[0]
    return out


def measure_corpus(paths: list[str], threads: int, rounds: int, runs: int = 15) -> dict:
    """Per model: per round, the median wall and thread CPU time (ms) of `runs` runs."""
    import numpy as np
    import onnxruntime as ort

    from hwlat.runners.ort import random_feeds

    if threads == 1 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    o.log_severity_level = 3
    sessions = {}
    for p in paths:
        sess = ort.InferenceSession(p, o, providers=["CPUExecutionProvider"])
        sessions[p] = (sess, random_feeds(sess))
    out = {p: {"wall": [], "cpu": []} for p in paths}
    for r in range(rounds):
        for p in paths:
            sess, feeds = sessions[p]
            for _ in range(3):
                sess.run(None, feeds)
            wall, cpu = [], []
            for _ in range(runs):
                t0, c0 = time.perf_counter(), time.thread_time()
                sess.run(None, feeds)
                cpu.append((time.thread_time() - c0) * 1e3)
                wall.append((time.perf_counter() - t0) * 1e3)
            out[p]["wall"].append(float(np.median(wall)))
            out[p]["cpu"].append(float(np.median(cpu)))
        print(f"  round {r + 1}/{rounds} done", flush=True)
    return out


def corpus_fold(path: Path, master: TableStore, sampled: TableStore | None, keys: set[str],
                held: set[str]) -> TableStore:
    """A table of the master's entries for `keys` and the sampled entries not in `held`, with
    their thread CPU times."""
    feats = {**master.features(), **(sampled.features() if sampled else {})}
    entries = list(master.get_many(DEVICE, keys).values())
    cpu = list(master.cpu_times(DEVICE, keys).values())
    if sampled is not None:
        extra = [e for e in sampled.entries(DEVICE) if e.key not in held and e.key not in keys]
        entries += extra
        cpu += list(sampled.cpu_times(DEVICE, [e.key for e in extra]).values())
    store = TableStore(path)
    store.put_many(entries, [(e.key, *feats[e.key]) for e in entries if e.key in feats], cpu_times=cpu)
    return store


def corpus_main(args) -> None:
    from hwlat.lut.learned import train

    corpus = Path(args.corpus)
    if args.models_file:
        names = Path(args.models_file).read_text().split()
    elif args.models:
        names = args.models.split(",")
    else:
        names = sorted(str(p) for p in corpus.glob("*.onnx"))
    paths = [Path(n) if "/" in n else corpus / n for n in names]
    fam = corpus_families(corpus, paths, Path(args.families) if args.families else None)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = load_device(DEVICE)
    if args.wall_rounds:  # the in-model wall-clock rounds, fewer on a loaded machine
        from dataclasses import replace

        spec = replace(spec, measure=replace(spec.measure, max_rounds=args.wall_rounds))
    runner = get_runner(spec)
    graphs = {}
    for p in paths:
        g = load(p)
        graphs[str(p)] = (g, fuse(g, spec.fusion))
    models = [{"path": str(p), "family": fam[str(p)], "name": p.name.removesuffix(".onnx")} for p in paths]
    clock = args.figure  # thread CPU time of kernels against that of models, or wall against wall
    with TableStore(out / "table.sqlite") as master:
        t0 = time.perf_counter()
        rep = profile(plan(paths, spec, runner, master), spec, runner, master)
        print(f"table: {rep.measured} kernels measured now, {rep.skipped} already there "
              f"({time.perf_counter() - t0:.0f} s); {len(models)} models in "
              f"{len({m['family'] for m in models})} families")
        cache = out / f"measured-{args.rounds}.json"
        per = json.loads(cache.read_text()) if cache.exists() else {}
        if set(per) != {m["path"] for m in models}:
            per = measure_corpus([m["path"] for m in models], spec.threads, args.rounds, args.runs)
            cache.write_text(json.dumps(per))
        if args.measure_only:
            return
        if args.in_model_cpu_below is not None:  # evaluate on a derived table (see its --help)
            master = in_model_cpu_table(master, out / f"table-inmodel-{args.in_model_cpu_below:g}.sqlite",
                                        args.in_model_cpu_below)
            print(f"CPU times: in-model durations of kernels under {args.in_model_cpu_below:g} ms, "
                  f"cut-out thread CPU time of the rest")
        sampled = TableStore(args.sampled, readonly=True) if args.sampled else None
        fig = args.figure
        measured = {p: statistics.median(v[fig]) for p, v in per.items()}
        noise = {p: (max(v[fig]) - min(v[fig])) / statistics.median(v[fig]) for p, v in per.items()}
        ratio = statistics.median(statistics.median(v["wall"]) / statistics.median(v["cpu"]) for v in per.values())
        print(f"measured: {fig} time; wall / thread CPU time median {ratio:.3f}; noise floor (range of "
              f"{args.rounds} round medians) median {statistics.median(noise.values()):.1%}")
        gap_report(models, graphs, master, measured, clock)
        if clock == "cpu":  # the same sums in wall-clock entries: what the load puts in them
            gap_report(models, graphs, master, measured, "wall")
        # every kernel of every model is in the master table: a model's features (kernel sums
        # per kind, nodes, ...) are the same in any table that holds its kernels, so the
        # correction of each fold is fitted on these, and "seen" applies it to them too
        full = {}
        for m in models:
            g, ks = graphs[m["path"]]
            full[m["path"]] = predict(g, ks, master, DEVICE, correct=False, learned=False, clock=clock)
        rows = []
        for family in sorted({m["family"] for m in models}):
            train_m = [m for m in models if m["family"] != family]
            test_m = [m for m in models if m["family"] == family]
            keys = {k.key.text() for m in train_m for k in graphs[m["path"]][1]}
            held = {k.key.text() for m in test_m for k in graphs[m["path"]][1]} - keys
            samples = [(full[m["path"]].features, measured[m["path"]]) for m in train_m]
            after, before = fit_correction(samples), fit_correction(samples, PRIOR_SCALE_BEFORE)
            with tempfile.TemporaryDirectory() as tmp:
                # leave-one-family-out: the other families' kernels and the sampled ones, learned
                # predictors (in the clock) for the family's kernels
                with corpus_fold(Path(tmp) / "lofo.sqlite", master, sampled, keys, held) as store:
                    train(store, DEVICE, clock=clock)
                    for m in test_m:
                        g, ks = graphs[m["path"]]
                        p = predict(g, ks, store, DEVICE, correct=False, clock=clock)
                        seen = full[m["path"]].features
                        rows.append({
                            "family": family, "name": m["name"], "measured": measured[m["path"]],
                            "noise": noise[m["path"]], "after": max(after.apply(p.features), 0.0),
                            "before": max(before.apply(p.features), 0.0), "sum": p.kernel_sum_ms,
                            "estimated": p.estimated_share, "seen": max(after.apply(seen), 0.0),
                            "seen_before": max(before.apply(seen), 0.0),
                            "seen_sum": full[m["path"]].kernel_sum_ms,
                            "features": p.features, "seen_features": seen})
            print(f"  {family}: done ({after.describe()})", flush=True)
        if sampled is not None:
            sampled.close()
    (out / f"rows-{fig}.json").write_text(json.dumps(rows, indent=1))
    corpus_report(rows, fig)


# correction priors compared by --refit (scales aligned with hwlat.lut.correct.FEATURES:
# conv, dense, other scale; us/kernel, us/node, ms/MB, ms, long-conv scale)
REFIT_PRIORS = {
    "now": None,
    "before": PRIOR_SCALE_BEFORE,
    "node (scales near 1, per-node cost loose)": PRIOR_SCALE_NODE,
    "loose scales, node loose": [0.5, 0.5, 0.5, 0.05, 0.05, 1.0, 0.05, 0.25],
    "tight scales, node pinned": [0.25, 0.25, 0.25, 0.05, 0.01, 1.0, 0.05, 1e-9],
}


def refit_report(rows, priors: dict | None = None) -> None:
    """Each correction prior fitted again per family on the rows of a finished run (rows-*.json
    with the models' features: no profiling, measuring or training): seen and LOFO within 5/10 %
    and RMSPE, per family and over all."""
    priors = REFIT_PRIORS if priors is None else priors
    if any("features" not in r for r in rows):
        raise SystemExit("error: these rows hold no model features; rerun the evaluation with this version")
    fams = sorted({r["family"] for r in rows})
    print("\n### correction priors refitted on the rows (seen / LOFO: within 5 % / 10 %, RMSPE)\n")
    print("| prior | " + " | ".join(fams) + " | all seen | all LOFO |")
    print("|---" * (len(fams) + 3) + "|")
    for name, scale in priors.items():
        seen, lofo = {}, {}
        for fam in fams:
            samples = [(r["seen_features"], r["measured"]) for r in rows if r["family"] != fam]
            c = fit_correction(samples, None if scale is None else np.asarray(scale, dtype=float))
            for i, r in enumerate(rows):
                if r["family"] == fam:
                    seen[i] = max(c.apply(r["seen_features"]), 0.0)
                    lofo[i] = max(c.apply(r["features"]), 0.0)
        cells = []
        for fam in [*fams, "all"]:
            idx = [i for i, r in enumerate(rows) if fam in ("all", r["family"])]
            ms = [rows[i]["measured"] for i in idx]
            a = accuracy_metrics([lofo[i] for i in idx], ms)
            if fam == "all":
                s = accuracy_metrics([seen[i] for i in idx], ms)
                cells.append(f"{s['within_5']:.0%} / {s['within_10']:.0%}, {s['rmspe']:.1%}")
            cells.append(f"{a['within_5']:.0%} / {a['within_10']:.0%}, {a['rmspe']:.1%}")
        print(f"| {name} | " + " | ".join(cells) + " |")


def in_model_cpu_table(master: TableStore, path: Path, below_ms: float) -> TableStore:
    """A copy of `master` whose kernels timed inside their model with a median under `below_ms`
    have those in-model samples as their CPU time, as `profile` now records them (a table
    profiled before that rule, or another threshold); 0: every kernel's cut-out CPU time."""
    from hwlat.lut.store import CpuTime

    if path.exists():
        path.unlink()
    entries = master.entries(DEVICE)
    feats = master.features()
    cpu = master.cpu_times(DEVICE)
    times = []
    for e in entries:
        if e.pipeline == "ort-in-model" and e.median_ms < below_ms:
            times.append(CpuTime(DEVICE, e.key, e.median_ms, e.cv, e.repeats))
        elif e.key in cpu:
            times.append(cpu[e.key])
    store = TableStore(path)
    store.put_many(entries, [(e.key, *feats[e.key]) for e in entries if e.key in feats], cpu_times=times)
    return store


def gap_report(models, graphs, master, measured, clock: str = "wall") -> None:
    """What the kernel sum leaves out, with every kernel in the table: per model the gap between
    measured and kernel sum beside the node count, kernel count and layout-boundary MB, and a
    least-squares split of the gap over them (and a per-run constant)."""
    import numpy as np

    from hwlat.lut.correct import boundary_bytes

    print(f"\n### what the kernel sum misses (every kernel in the table, no correction; {clock} time)\n")
    print("| family | model | measured ms | kernel sum ms | gap ms | gap % | kernels | nodes | boundary MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    xs, ys = [], []
    for m in models:
        g, ks = graphs[m["path"]]
        p = predict(g, ks, master, DEVICE, correct=False, learned=False, clock=clock)
        gap = measured[m["path"]] - p.kernel_sum_ms
        f = p.features
        mb = boundary_bytes(g, ks) / 1e6
        xs.append([f["nodes"], f["kernels"], mb, 1.0])
        ys.append(gap)
        print(f"| {m['family']} | {m['name']} | {measured[m['path']]:.2f} | {p.kernel_sum_ms:.2f} | {gap:+.2f} | "
              f"{gap / p.kernel_sum_ms:+.1%} | {f['kernels']:.0f} | {f['nodes']:.0f} | {mb:.1f} |")
    coef, *_ = np.linalg.lstsq(np.array(xs), np.array(ys), rcond=None)
    print(f"\nleast squares over {len(ys)} models: gap ~ {coef[0] * 1e3:+.1f} us/node "
          f"{coef[1] * 1e3:+.1f} us/kernel {coef[2]:+.3f} ms/MB at layout boundaries {coef[3]:+.3f} ms")


def corpus_report(rows, fig: str) -> None:
    print(f"\n### corpus, cpu-ort 1 thread, against {fig} time: seen and leave-one-family-out\n")
    print("| family | n | noise floor | seen: within 5 % / 10 % | seen RMSPE (before) | LOFO before: within 5 % / 10 % "
          "| before RMSPE | LOFO after: within 5 % / 10 % | after RMSPE | LOFO kernel sum only RMSPE |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for family in sorted({r["family"] for r in rows}) + ["all"]:
        rs = [r for r in rows if family in ("all", r["family"])]
        ms = [r["measured"] for r in rs]
        se = accuracy_metrics([r["seen"] for r in rs], ms)
        sb = accuracy_metrics([r["seen_before"] for r in rs], ms)
        b = accuracy_metrics([r["before"] for r in rs], ms)
        a = accuracy_metrics([r["after"] for r in rs], ms)
        s = accuracy_metrics([r["sum"] for r in rs], ms)
        print(f"| {family} | {len(rs)} | {statistics.median(r['noise'] for r in rs):.1%} | "
              f"{se['within_5']:.0%} / {se['within_10']:.0%} | {se['rmspe']:.1%} ({sb['rmspe']:.1%}) | "
              f"{b['within_5']:.0%} / {b['within_10']:.0%} | {b['rmspe']:.1%} | "
              f"{a['within_5']:.0%} / {a['within_10']:.0%} | {a['rmspe']:.1%} | {s['rmspe']:.1%} |")
    print("\n| family | model | measured ms | noise | seen | LOFO before | error | LOFO after | error | kernel sum | estimated |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['family']} | {r['name']} | {r['measured']:.2f} | {r['noise']:.1%} | "
              f"{r['seen'] / r['measured'] - 1:+.1%} | {r['before']:.2f} | {r['before'] / r['measured'] - 1:+.1%} | "
              f"{r['after']:.2f} | {r['after'] / r['measured'] - 1:+.1%} | {r['sum']:.2f} | {r['estimated']:.0%} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="build/accuracy")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rows", action="store_true", help="print every model's row")
    ap.add_argument("--corpus", help="folder of ONNX models (corpus mode, see above)")
    ap.add_argument("--models", help="corpus mode: comma-separated files (default: every *.onnx)")
    ap.add_argument("--models-file", help="corpus mode: a file listing the models, whitespace-separated")
    ap.add_argument("--families", help="corpus mode: JSON object, file stem -> family")
    ap.add_argument("--sampled", help="corpus mode: table of sampled kernels (`hwlat lut sample`)")
    ap.add_argument("--out", default="build/predict-bench", help="corpus mode: table and measurements")
    ap.add_argument("--figure", choices=("cpu", "wall"), default="cpu",
                    help="corpus mode: compare with thread CPU time (default) or wall time")
    ap.add_argument("--wall-rounds", type=int, help="corpus mode: at most this many in-model wall-clock "
                    "rounds per model (the device file's max_rounds otherwise)")
    ap.add_argument("--runs", type=int, default=15, help="corpus mode: timed runs per model and round")
    ap.add_argument("--in-model-cpu-below", type=float, metavar="MS",
                    help="corpus mode: evaluate with the in-model durations of kernels timed inside their "
                    "model under MS as their CPU time (profile's rule, SHORT_IN_MODEL_MS), the cut-out "
                    "CPU time of the rest; 0: every kernel's cut-out CPU time (the table as profiled otherwise)")
    ap.add_argument("--refit", action="store_true", help="corpus mode: refit the correction priors on the "
                    "rows of a finished run (OUT/rows-FIGURE.json) and compare them; no profiling or training")
    ap.add_argument("--measure-only", action="store_true", help="corpus mode: profile and measure, then stop")
    args = ap.parse_args()
    if args.refit:
        rows = json.loads((Path(args.out) / f"rows-{args.figure}.json").read_text())
        refit_report(rows)
        return
    if args.corpus:
        corpus_main(args)
        return
    data = Path(args.data)
    models = json.loads((data / "manifest.json").read_text())
    for m in models:  # manifest paths are relative to its folder
        m["path"] = str(data / m["path"])
    spec = load_device(DEVICE)
    runner = get_runner(spec)
    graphs = {}
    for m in models:
        g = load(m["path"])
        graphs[m["path"]] = (g, fuse(g, spec.fusion))
    with TableStore(data / "table.sqlite") as master:
        t0 = time.perf_counter()
        todo = plan([Path(m["path"]) for m in models], spec, runner, master)
        rep = profile(todo, spec, runner, master)
        print(f"table: {rep.measured} kernels measured now, {rep.skipped} already there "
              f"({time.perf_counter() - t0:.0f} s); {len(models)} models")
        cache = data / f"measured-{args.rounds}.json"
        if cache.exists():
            per_round = json.loads(cache.read_text())
        else:
            per_round = measure_all(models, runner, args.rounds)
            cache.write_text(json.dumps(per_round))
        measured = {p: statistics.median(v) for p, v in per_round.items()}
        spread = [(max(v) - min(v)) / statistics.median(v) for v in per_round.values()]
        cvs = [statistics.pstdev(v) / statistics.mean(v) for v in per_round.values()]
        print(f"noise floor (same model across {args.rounds} rounds): median range {statistics.median(spread):.1%}, "
              f"max range {max(spread):.1%}; median CV {statistics.median(cvs):.1%}")
        lofo = evaluate(models, graphs, master, measured, holdout_kernels=True)
        seen = evaluate(models, graphs, master, measured, holdout_kernels=False)
    report("leave-one-family-out (table and correction without the family)", lofo)
    report("seen kernels (table has every kernel; correction fitted without the family)", seen)
    if args.rows:
        print("\n| family | model | measured ms | predicted (LOFO) | error | estimated | predicted (seen) | error |")
        print("|---|---|---|---|---|---|---|---|")
        for a, b in zip(lofo, seen, strict=True):
            name = a["name"].replace("|", "\\|")  # NB201 cell strings hold pipes
            print(f"| {a['family']} | {name} | {a['measured']:.3f} | {a['predicted']:.3f} | "
                  f"{a['predicted'] / a['measured'] - 1:+.1%} | {a['estimated_share']:.0%} | "
                  f"{b['predicted']:.3f} | {b['predicted'] / b['measured'] - 1:+.1%} |")


if __name__ == "__main__":
    main()
