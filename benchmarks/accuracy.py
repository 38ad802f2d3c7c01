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
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from hwlat.devices import load_device
from hwlat.graph import fuse, load
from hwlat.lut import TableStore
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="build/accuracy")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rows", action="store_true", help="print every model's row")
    args = ap.parse_args()
    data = Path(args.data)
    models = json.loads((data / "manifest.json").read_text())
    for m in models:  # manifest paths are relative to its folder
        m["path"] = str(data / m["path"])
    spec = load_device(DEVICE)
    runner = get_runner(spec)
    graphs = {}
    for m in models:
        g = load(m["path"])
        graphs[m["path"]] = (g, fuse(g))
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
