"""Few-shot latency tables: NAS-Bench-201 on a Pixel 3 from N whole-model measurements.

    .venv/bin/python benchmarks/fewshot_nb201.py [--seeds 10] [--sizes 10 20 50 100]
        [--prior cpu-ort | cpu-tvm | roofline-sd855] [--unfolded [zero-input] [dead]]

(a) Reference: the NB201 space's distinct kernels (from `hwlat.nas.nb201_lut`, no export) are
    covered by a few cells, chosen greedily; those are exported and profiled on --prior (cpu-ort,
    the default, or cpu-tvm: this machine) into build/fewshot/ref.sqlite. A second run reuses
    the table.
(b) For each N and seed: N cells drawn from HW-NAS-Bench's Pixel 3 measurements
    (../shared/data/nb201/pixel3.csv), a few-shot table fitted (`hwlat.lut.fewshot`), all 15,625
    cells predicted and compared with their measurements: Spearman rank correlation, share within
    +-10 %, RMSPE; mean and min..max over seeds.

Degenerate cells: 341 cells have no path from the cell's input to its output. hwlat's export
folds their whole network into a constant (no kernel), so their prediction is the fitted overhead
alone; the Pixel 3 measured 273 of them at ~0.004 ms (its converter folded them too) and 68 at
0.5..15 ms (it ran convs on zeros). Training cells are drawn from the 15,284 cells with a path
(`--train-from all` draws from every cell); metrics are reported on all 15,625 and on those 15,284.
`--unfolded zero-input` also counts what the phone ran and hwlat's export folds away: convs and
pools on the zeros of `none` edges (`hwlat lut fit --zero-work`), as one more fitted group.
`--prior roofline-sd855` takes a roofline device's latencies as the reference (nothing profiled).
Goals: Spearman >= 0.95 at N = 10; >= 95 % within +-10 % at N = 100.

    .venv/bin/python benchmarks/fewshot_nb201.py --lodo [--seeds 5] [--sizes 5 10 20 100]

(c) Leave one device out over HW-NAS-Bench's 13 device settings
    (../shared/data/nb201/hw_nas_bench_13_devices.csv): each device in turn is the new one, the
    other 12 the prior (`hwlat.lut.prior` through `hwlat.nas.nb201_prior`: a shrunk combination
    of the prior devices' log-latencies and hwlat's roofline column, penalties by leave-one-out
    on the N cells). N cells measured on it, either drawn at random (--seeds draws) or proposed
    (`hwlat lut fit --propose`: k-center over the prior's principal components; one set per
    device), all 15,625 predicted: Spearman, Kendall tau, share within +-10 %, RMSPE per device;
    beside today's single-reference fit with roofline-sd855 on the same random cells. Devices
    whose near twin (Spearman >= 0.97 with them over all cells) sits in the prior are also run
    with every such twin removed from the prior: the honest "unseen" case. The noise bound: pairs
    of cells that compute the same thing, measured on the device: the Spearman of one against
    the other, which no predictor of what a cell computes can beat on those cells.
    Goals: N = 10, mean over seeds: Spearman >= 0.95 on average and >= 0.90 on every device;
    N = 100: >= 85 % within +-10 % on the phones.
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path

import numpy as np

from hwlat.lut import TableStore
from hwlat.lut.fewshot import OVERHEAD_KEY, fit_fewshot_model
from hwlat.nas.nb201_lut import nb201_features, nb201_kernel_texts
from hwlat.nas.spaces import NB201_SIZE, nb201_arch, nb201_index, parse_nb201

ROOT = Path(__file__).resolve().parents[1]
PIXEL3 = ROOT.parent / "shared" / "data" / "nb201" / "pixel3.csv"
THIRTEEN = ROOT.parent / "shared" / "data" / "nb201" / "hw_nas_bench_13_devices.csv"
PHONES = ("samsung_a50", "pixel3", "essential_ph_1", "samsung_s7")
TWIN_SPEARMAN = 0.97
OUT = ROOT / "build" / "fewshot"
REF_DEVICE = "cpu-ort"


def covering_cells(archs: list[str]) -> list[str]:
    """Few cells that together run every distinct kernel key of the space (greedy set cover)."""
    keys = {a: set(nb201_kernel_texts(a)) for a in archs}
    todo = set().union(*keys.values())
    chosen = []
    while todo:
        best = max(archs, key=lambda a: len(keys[a] & todo))
        chosen.append(best)
        todo -= keys[best]
    return chosen


def build_reference(archs: list[str], path: Path, device_name: str = REF_DEVICE
                    ) -> tuple[dict[str, float], dict]:
    """Profile the space's kernels on a device of this machine (once); key -> ms and key ->
    (MACs, bytes)."""
    from hwlat.devices import load_device
    from hwlat.nas.spaces import nb201_index
    from hwlat.onnx_export import export
    from hwlat.runners import get_runner
    from hwlat.runners.profile import plan, profile
    from hwlat.zoo import from_nb201

    space = {k for a in archs for k in nb201_kernel_texts(a)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with TableStore(path) as store:
        if not space <= store.keys(device_name):
            cells = covering_cells(archs)
            print(f"reference: {len(space)} distinct kernel keys, covered by {len(cells)} cells; "
                  f"exporting and profiling on {device_name}")
            files = []
            for a in cells:
                f = path.parent / "cells" / f"nb201_{nb201_index(a)}.onnx"
                f.parent.mkdir(exist_ok=True)
                if not f.exists():
                    model, inputs = from_nb201(a)
                    export(model, inputs, f, compare=False)
                files.append(f)
            device = load_device(device_name)
            runner = get_runner(device)
            t0 = time.perf_counter()
            report = profile(plan(files, device, runner, store), device, runner, store)
            print(f"profiled {report.measured} kernels in {time.perf_counter() - t0:.0f} s")
        missing = space - store.keys(device_name)
        if missing:
            raise SystemExit(f"{len(missing)} kernel keys still missing from {path}: {sorted(missing)[:2]}")
        entries = store.get_many(device_name, space)
        feats = store.features()
    ref = {k: e.median_ms for k, e in entries.items()}
    return ref, {k: (float(feats[k][1] or 0), float(feats[k][2] or 0)) for k in space}


def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1, ties sharing their mean rank."""
    values, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return (start + (counts - 1) / 2.0)[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float(ra @ rb / math.sqrt((ra @ ra) * (rb @ rb)))


def metrics(pred: np.ndarray, meas: np.ndarray) -> tuple[float, float, float]:
    rel = (pred - meas) / meas
    return spearman(pred, meas), float(np.mean(np.abs(rel) <= 0.10)), float(np.sqrt(np.mean(rel**2)))


def summary(values: list[float], fmt: str) -> str:
    return f"{fmt.format(np.mean(values))} ({fmt.format(min(values))}..{fmt.format(max(values))})"


def ceilings(counts: np.ndarray, y: np.ndarray, path: np.ndarray) -> list[tuple[str, tuple]]:
    """What no table of these kernels can beat, on the cells with a path: (a) per-key latencies
    fitted on all of them at once (relative least squares); (b) any predictor of the kernel
    multiset: cells with the same multiset get the same prediction, the best one for that group's
    ranks and for +-10 % (each group's best window)."""
    x = np.hstack([counts, np.ones((len(y), 1))])[path]
    yp = y[path]
    theta, *_ = np.linalg.lstsq(x / yp[:, None], np.ones(len(yp)), rcond=None)
    groups: dict[bytes, list[int]] = {}
    for i, row in enumerate(counts[path]):
        groups.setdefault(row.tobytes(), []).append(i)
    median, within = np.empty(len(yp)), 0
    for members in groups.values():
        v = np.sort(yp[members])
        median[members] = np.median(v)
        # the most of v inside [p / 1.1, p / 0.9] for some p: windows starting at each value
        within += max(int(np.sum(v <= lo * 1.1 / 0.9 * (1 + 1e-12))) - i for i, lo in enumerate(v))
    return [("per-key least squares on all of them", metrics(x @ theta, yp)),
            ("group median (same multiset, same prediction)", metrics(median, yp)),
            ("best any multiset predictor can do for +-10 %", (math.nan, within / len(yp), math.nan))]


def twin_cells(archs: list[str]) -> list[tuple[int, int]]:
    """Pairs of cells that compute the same thing under any reading of the cell: node 1 a skip
    of node 0, node 2's two inputs swapped."""
    index = {a: i for i, a in enumerate(archs)}
    pairs = []
    for a in archs:
        ops = parse_nb201(a)
        if ops[0] != "skip_connect" or ops[1] == ops[2]:
            continue
        b = f"|{ops[0]}~0|+|{ops[2]}~0|{ops[1]}~1|+|{ops[3]}~0|{ops[4]}~1|{ops[5]}~2|"
        if a < b:
            pairs.append((index[a], index[b]))
    return pairs


def identical_pairs(archs: list[str], y: np.ndarray) -> np.ndarray:
    """Ratios of the latencies of cells that compute the same thing (`twin_cells`)."""
    ratios = [max(y[i], y[j]) / min(y[i], y[j]) for i, j in twin_cells(archs)
              if min(y[i], y[j]) > 0.1]
    return np.array(ratios)


def kendall(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(a, b)[0])


def edge_op_onehots(archs: list[str]) -> np.ndarray:
    """[cells, edges x ops]: which op each edge of each cell has."""
    parsed = [parse_nb201(a) for a in archs]
    ops = sorted({o for p in parsed for o in p})
    out = np.zeros((len(archs), len(parsed[0]) * len(ops)))
    for i, p in enumerate(parsed):
        for e, o in enumerate(p):
            out[i, e * len(ops) + ops.index(o)] = 1.0
    return out


def residual_ridge(train: np.ndarray, resid: np.ndarray, every: np.ndarray) -> np.ndarray:
    """A correction of the prior's log prediction: ridge of the measured cells' log residual on
    per-cell features (standardised; intercept free), its penalty by leave-one-out among a grid
    and "no correction"; the correction of every cell."""
    n = len(resid)
    sd = train.std(axis=0)
    keep = sd > 0
    mu = train[:, keep].mean(axis=0)
    a = np.hstack([np.ones((n, 1)), (train[:, keep] - mu) / sd[keep]])
    best = (float(np.sqrt(np.mean(resid**2))), None)  # no correction
    for lam in 10.0 ** np.arange(3.0, -2.01, -0.5):
        gram = a.T @ a + np.diag([0.0] + [lam * n] * (a.shape[1] - 1))
        hat = a @ np.linalg.solve(gram, a.T)
        lev = np.minimum(np.diag(hat), 1 - 1e-9)
        loo = float(np.sqrt(np.mean(((resid - hat @ resid) / (1 - lev)) ** 2)))
        if loo < best[0] - 1e-12:
            best = (loo, np.linalg.solve(gram, a.T @ resid))
    if best[1] is None:
        return np.zeros(len(every))
    return np.hstack([np.ones((len(every), 1)), (every[:, keep] - mu) / sd[keep]]) @ best[1]


def lodo(args) -> None:
    """(c): leave one device out over the 13 HW-NAS-Bench devices."""
    from hwlat.analytic.roofline import roofline_reference
    from hwlat.lut.prior import DevicePrior
    from hwlat.nas.nb201_lut import nb201_all_keys
    from hwlat.nas.nb201_prior import (
        nb201_has_path,
        nb201_hw_ms,
        nb201_prior_fit,
        nb201_propose,
        read_nb201_prior,
    )

    if not args.lodo.is_file():
        raise SystemExit(f"{args.lodo}: not found (the shared reference data)")
    full = read_nb201_prior(args.lodo)
    devices = full.devices
    archs = [nb201_arch(i) for i in range(NB201_SIZE)]
    t0 = time.perf_counter()
    keys, counts = nb201_features(archs)
    hw = nb201_hw_ms(archs)
    print(f"{len(devices)} devices; kernels and roofline column of {len(archs):,} cells in "
          f"{time.perf_counter() - t0:.0f} s")
    path = np.array([nb201_has_path(a) for a in archs])
    pool = np.flatnonzero(path)
    ref, feats = roofline_reference("roofline-sd855", nb201_all_keys())
    rho = np.array([[spearman(full.ms[:, i], full.ms[:, j]) for j in range(len(devices))]
                    for i in range(len(devices))])
    twins = {d: [devices[j] for j in range(len(devices)) if j != i and rho[i, j] >= TWIN_SPEARMAN]
             for i, d in enumerate(devices)}
    pairs = np.array(twin_cells(archs))

    def measure(y, pred):
        """On the cells with a path (a no-path cell is a constant in hwlat's export; the Pixel 3
        measured most at ~0.004 ms): Spearman, Kendall, within +-10 %, RMSPE; then Spearman on
        all cells."""
        s, w, r = metrics(pred[path], y[path])
        return s, kendall(pred[path], y[path]), w, r, spearman(pred, y)

    def prior_without(drop):
        keep = [j for j, d in enumerate(devices) if d not in drop]
        return DevicePrior("nb201", tuple(devices[j] for j in keep), full.ms[:, keep])

    def prior_pred(prior, rows, y):
        fit = nb201_prior_fit(prior, {archs[i]: float(y[i]) for i in rows})
        raw = np.hstack([prior.ms, hw[:, None]])
        return fit.predict(raw), fit

    # results[(scenario, method, selection, n, device)] = list of (spearman, kendall, within, rmspe)
    results: dict[tuple, list] = {}
    lams: dict[tuple, list] = {}
    t0 = time.perf_counter()
    cell_feats = np.hstack([edge_op_onehots(archs), counts]) if args.residual else None
    for j, dev in enumerate(devices):
        if args.devices and dev not in args.devices:
            continue
        y = full.ms[:, j]
        scenarios = [("prior", (dev,))]
        if twins[dev]:
            scenarios.append(("no twin", (dev, *twins[dev])))
        for scenario, drop in scenarios:
            prior = prior_without(drop)
            for n in args.sizes:
                draws = [("random", np.random.default_rng(seed).choice(pool, n, replace=False))
                         for seed in range(args.seeds)]
                proposed = [nb201_index(a) for a in nb201_propose(prior, n)]
                draws.append(("proposed", np.array(proposed)))
                for selection, rows in draws:
                    pred, fit = prior_pred(prior, rows, y)
                    results.setdefault((scenario, "multi-device prior", selection, n, dev), []).append(
                        measure(y, pred))
                    lams.setdefault((scenario, selection, n), []).append(fit.penalties)
                    if args.residual and scenario == "prior":
                        corr = residual_ridge(cell_feats[rows], np.log(y[rows] / pred[rows]),
                                              cell_feats)
                        results.setdefault(("prior", "prior + residual ridge", selection, n, dev),
                                           []).append(measure(y, pred * np.exp(corr)))
                    if scenario == "prior":  # the single-reference fit: no prior devices at all
                        kfit = fit_fewshot_model({archs[i]: nb201_kernel_texts(archs[i]) for i in rows},
                                                 {archs[i]: float(y[i]) for i in rows}, ref, feats)
                        kpred = counts @ np.array([kfit.table[k] for k in keys]) + kfit.table[OVERHEAD_KEY]
                        results.setdefault(("prior", "roofline-sd855 reference", selection, n, dev),
                                           []).append(measure(y, kpred))
        print(f"  {dev}: done ({time.perf_counter() - t0:.0f} s)", flush=True)

    run = [d for d in devices if not args.devices or d in args.devices]

    def dev_mean(key):
        return np.mean(np.array(results[key]), axis=0)  # mean over seeds, per metric

    print(f"\n{args.seeds} random draws per N (mean over draws), or the proposed cells (one set); "
          f"metrics on the {int(path.sum()):,} cells with a path (Spearman also on all {len(archs):,}); "
          f"twins: Spearman >= {TWIN_SPEARMAN} over all cells")
    print("\n| N | method | cells | mean Spearman | worst device | mean Kendall | within +-10 % "
          "(mean; phones) | RMSPE (mean) | mean Spearman, all cells |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        for method in ("multi-device prior", "prior + residual ridge", "roofline-sd855 reference"):
            for selection in ("random", "proposed"):
                if ("prior", method, selection, n, run[0]) not in results:
                    continue
                per = {d: dev_mean(("prior", method, selection, n, d)) for d in run}
                m = np.array(list(per.values()))
                worst = min(per, key=lambda d: per[d][0])
                phones = np.mean([per[d][2] for d in PHONES if d in per])
                print(f"| {n} | {method} | {selection} | {m[:, 0].mean():.3f} | "
                      f"{per[worst][0]:.3f} ({worst}) | {m[:, 1].mean():.3f} | "
                      f"{100 * m[:, 2].mean():.1f} %; {100 * phones:.1f} % | "
                      f"{100 * m[:, 3].mean():.1f} % | {m[:, 4].mean():.3f} |")
    for n in args.sizes:
        print(f"\nN = {n}, per device: multi-device prior, random cells (mean and worst draw) | "
              "proposed | twins removed from the prior (random mean; proposed) | "
              "roofline-sd855 reference (random mean)")
        print("| device | Spearman random | worst draw | Kendall | within +-10 % | RMSPE | "
              "Spearman proposed | twins removed | no-twin Spearman | roofline ref. |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for d in run:
            r = dev_mean(("prior", "multi-device prior", "random", n, d))
            worst = min(v[0] for v in results[("prior", "multi-device prior", "random", n, d)])
            p = dev_mean(("prior", "multi-device prior", "proposed", n, d))
            k = dev_mean(("prior", "roofline-sd855 reference", "random", n, d))
            if twins[d]:
                tr = dev_mean(("no twin", "multi-device prior", "random", n, d))
                tp = dev_mean(("no twin", "multi-device prior", "proposed", n, d))
                twin = f"{', '.join(twins[d])} | {tr[0]:.3f}; {tp[0]:.3f}"
            else:
                twin = "- | -"
            print(f"| {d} | {r[0]:.3f} | {worst:.3f} | {r[1]:.3f} | {100 * r[2]:.1f} % | "
                  f"{100 * r[3]:.1f} % | {p[0]:.3f} | {twin} | {k[0]:.3f} |")
            if args.residual:
                c = dev_mean(("prior", "prior + residual ridge", "random", n, d))
                print(f"|   + residual ridge | {c[0]:.3f} | | {c[1]:.3f} | {100 * c[2]:.1f} % | "
                      f"{100 * c[3]:.1f} % | | | | |")
    print("\nnoise bound per device, from the cell pairs that compute the same thing (both "
          "measured): the Spearman of one cell's latency against its twin's; its square root, what "
          "a noise-free predictor of what a cell computes reaches against one noisy measurement "
          "(when the noise is additive and independent); the share of pairs less than 1.1 / 0.9 "
          "apart, and so at most what any such predictor puts within +-10 % (the rest count half)")
    for j, d in enumerate(devices):
        if d not in run:
            continue
        a, b = full.ms[pairs[:, 0], j], full.ms[pairs[:, 1], j]
        ratio = np.maximum(a, b) / np.minimum(a, b)
        rho_twin = spearman(a, b)
        reach = np.mean(ratio <= 1.1 / 0.9) + 0.5 * np.mean(ratio > 1.1 / 0.9)
        print(f"  {d}: {len(pairs)} pairs, Spearman {rho_twin:.3f} (sqrt {math.sqrt(max(rho_twin, 0)):.3f}), "
              f"within +-10 % at most {100 * reach:.1f} %")
    print("\npenalties chosen (device weights / roofline column), by leave-one-out on the N cells:")
    for (scenario, selection, n), v in sorted(lams.items()):
        if scenario == "prior":
            med = np.median(np.log10(np.array(v)), axis=0)
            print(f"  N={n} {selection}: median log10 {med[0]:+.1f} / {med[1]:+.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 20, 50, 100])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--train-from", choices=("path", "all"), default="path")
    ap.add_argument("--reference", type=Path, default=OUT / "ref.sqlite")
    ap.add_argument("--prior", default=REF_DEVICE,
                    help="a device of this machine (cpu-ort, cpu-tvm: profiled here into "
                         "--reference) or a roofline device (nothing profiled)")
    ap.add_argument("--unfolded", nargs="*", choices=("zero-input", "dead"), default=None,
                    help="also count the work of `none` edges' zeros that the phone may run "
                         "(hwlat.nas.nb201_lut.nb201_unfolded_texts), each class its own group")
    ap.add_argument("--lodo", type=Path, nargs="?", const=THIRTEEN, default=None,
                    help="leave one device out over a multi-device file (default: HW-NAS-Bench's "
                         "13 devices); --sizes defaults to 5 10 20 100, --seeds to 5")
    ap.add_argument("--devices", nargs="+", default=None,
                    help="--lodo: hold out only these devices (default: every one)")
    ap.add_argument("--residual", action="store_true",
                    help="--lodo: also correct the prior's prediction by a ridge of the log "
                         "residual on each cell's edge ops and hwlat kernel counts (penalty by "
                         "leave-one-out on the N cells, or no correction)")
    args = ap.parse_args()
    if args.lodo is not None:
        import sys

        if "--sizes" not in sys.argv:
            args.sizes = [5, 10, 20, 100]
        if "--seeds" not in sys.argv:
            args.seeds = 5
        lodo(args)
        return
    if not PIXEL3.is_file():
        raise SystemExit(f"{PIXEL3}: not found (the shared reference data)")

    with open(PIXEL3, newline="") as f:
        measured = {r["arch"]: float(r["latency_ms"]) for r in csv.DictReader(f)}
    archs = [nb201_arch(i) for i in range(NB201_SIZE)]
    if set(archs) != set(measured):
        raise SystemExit(f"{PIXEL3} does not hold the {NB201_SIZE} NB201 cells")
    t0 = time.perf_counter()
    keys, counts = nb201_features(archs)
    print(f"kernel keys of all {len(archs)} cells derived in {time.perf_counter() - t0:.1f} s: "
          f"{len(keys)} distinct")
    from hwlat.devices import load_device

    if load_device(args.prior).runtime != "roofline":
        ref, feats = build_reference(archs, args.reference, args.prior)
    else:
        from hwlat.analytic.roofline import roofline_reference
        from hwlat.nas.nb201_lut import nb201_all_keys

        ref, feats = roofline_reference(args.prior, nb201_all_keys())

    kernels_of = nb201_kernel_texts
    groups = None
    if args.unfolded is not None:
        classes = tuple(args.unfolded or ("zero-input", "dead"))
        from hwlat.nas.nb201_lut import nb201_unfolded_reference, nb201_unfolded_texts

        extra_ref, extra_feats = nb201_unfolded_reference(ref, feats)
        ref, feats = {**ref, **extra_ref}, {**feats, **extra_feats}
        groups = {k: ("unfolded-" + k.split("|")[2]) if k.startswith("unfolded|")
                  else k.partition("|")[0] for k in ref}

        def kernels_of(a):
            return nb201_kernel_texts(a) + nb201_unfolded_texts(a, classes)

        extra_keys = sorted(extra_ref)
        col = {k: j for j, k in enumerate(extra_keys)}
        extra = np.zeros((len(archs), len(extra_keys)))
        for i, a in enumerate(archs):
            for k in nb201_unfolded_texts(a, classes):
                extra[i, col[k]] += 1
        keys, counts = keys + extra_keys, np.hstack([counts, extra])
        print(f"unfolded work: {int((extra.sum(axis=1) > 0).sum())} cells run some")
    y = np.array([measured[a] for a in archs])
    path = np.array([bool(nb201_kernel_texts(a)) for a in archs])  # no kernel: no path
    n_path = int(path.sum())
    print(f"{len(archs) - n_path} cells without a path (no kernels; predicted as the overhead "
          f"alone): measured {np.sum(y[~path] < 0.1)} below 0.1 ms, {np.sum(y[~path] >= 0.1)} at "
          f"{y[~path][y[~path] >= 0.1].min():.2f}..{y[~path].max():.2f} ms")
    pool = np.flatnonzero(path) if args.train_from == "path" else np.arange(len(archs))
    methods = {"few-shot": None, "scale + overhead only": (math.inf,) * 3}

    results = []
    for n in args.sizes:
        for method, penalties in methods.items():
            res: dict[str, list] = {"all": [], "path": []}
            chosen, cv, fit_s = [], [], []
            for seed in range(args.seeds):
                train = np.random.default_rng(seed).choice(pool, size=n, replace=False)
                t0 = time.perf_counter()
                fit = fit_fewshot_model({archs[i]: kernels_of(archs[i]) for i in train},
                                        {archs[i]: measured[archs[i]] for i in train}, ref, feats,
                                        groups, penalties=penalties)
                fit_s.append(time.perf_counter() - t0)
                pred = counts @ np.array([fit.table[k] for k in keys]) + fit.table[OVERHEAD_KEY]
                res["all"].append(metrics(pred, y))
                res["path"].append(metrics(pred[path], y[path]))
                chosen.append(fit.penalties)
                cv.append(fit.cv_error)
            results.append((n, method, res, chosen, cv, fit_s))

    train_note = (f"the {n_path:,} cells with a path" if args.train_from == "path"
                  else f"all {len(archs):,} cells")
    print(f"\nreference {args.prior} ({len(ref)} kernels); {args.seeds} seeds; training cells drawn "
          f"from {train_note}; metrics on all {len(archs):,} cells and on the {n_path:,} with a path\n")
    print("| N | fit | cells | Spearman | within +-10 % | RMSPE |")
    print("|---|---|---|---|---|---|")
    for n, method, res, *_ in results:
        for scope, label in (("all", f"all {len(archs):,}"), ("path", f"{n_path:,} with a path")):
            s, w, r = zip(*res[scope], strict=True)
            print(f"| {n} | {method} | {label} | {summary(s, '{:.3f}')} | "
                  f"{summary([100 * v for v in w], '{:.1f} %')} | {summary([100 * v for v in r], '{:.1f} %')} |")
    print("\nfew-shot penalties chosen (group scales/work terms/per key), median leave-one-out error, "
          "fit time:")
    for n, method, _, chosen, cv, fit_s in results:
        if method == "few-shot":
            picks = ", ".join("/".join(f"{v:g}" for v in lams) for lams in chosen)
            print(f"  N={n}: {picks}; LOO {summary([100 * v for v in cv], '{:.1f} %')}; "
                  f"fit {np.median(fit_s) * 1e3:.0f} ms")

    print(f"\nceilings on the {n_path:,} cells with a path (Spearman, within +-10 %, RMSPE):")
    for label, (s, w, r) in ceilings(counts, y, path):
        shown = [f"Spearman {s:.3f}" if math.isfinite(s) else "", f"within +-10 % {100 * w:.1f} %",
                 f"RMSPE {100 * r:.1f} %" if math.isfinite(r) else ""]
        print(f"  {label}: {', '.join(x for x in shown if x)}")
    ratios = identical_pairs(archs, y)
    print(f"  measurement noise: {len(ratios)} pairs of cells that compute the same thing differ by "
          f"median {100 * (np.median(ratios) - 1):.1f} %, by more than 10 % in "
          f"{100 * np.mean(ratios > 1.1):.0f} %; a perfect predictor gets at most "
          f"{100 * (np.mean(ratios <= 1.1 / 0.9) + 0.5 * np.mean(ratios > 1.1 / 0.9)):.0f} % of them "
          "within +-10 %")


if __name__ == "__main__":
    main()
