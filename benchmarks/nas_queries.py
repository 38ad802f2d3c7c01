"""How fast a NAS loop can query OFA MobileNetV3 latencies, on one core.

    .venv/bin/python benchmarks/nas_queries.py [--n 1000000] [--rounds 5] [--core N]

A: hwlat's OfaLatencyTable (dense array, numpy gathers): `latency` on N encoded subnets at once,
   and `latency_one` on one arch dict at a time.
B: OFA's way (its tutorial LatencyEstimator.predict_network_latency_given_spec, re-created
   here): a string key built per layer (`expanded_conv-input:...`), looked up in a Python dict,
   summed in Python, one spec at a time.
Both run in this process on the same subnets, rounds interleaved A, B, A, B...; the tables are
synthetic (every key present), so nothing needs profiling. Goals: >= 1,000,000 subnets/s batched,
<= 20 us for one query.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from hwlat.lut import Entry, TableStore
from hwlat.nas import OFA_MBV3
from hwlat.nas.ofa_lut import OfaLatencyTable, block_kernels, fixed_kernels

DEVICE = "synthetic"


def synthetic_table(folder: Path) -> OfaLatencyTable:
    keys = {k.text(): k.kind.value for r in OFA_MBV3.resolutions for k in fixed_kernels(r)}
    keys |= {k.text(): k.kind.value for r in OFA_MBV3.resolutions
             for j in range(OFA_MBV3.n_blocks) for ks in OFA_MBV3.kernel_sizes
             for e in OFA_MBV3.expand_ratios for k in block_kernels(r, j, ks, e)}
    rng = np.random.default_rng(0)
    at = datetime.now(UTC).isoformat(timespec="seconds")
    entries = [Entry(DEVICE, text, kind, ms, ms, ms, 0.0, 1, 1, "synthetic", "{}", "synthetic", at)
               for (text, kind), ms in zip(keys.items(), rng.uniform(0.01, 2.0, len(keys)),
                                           strict=True)]
    with TableStore(folder / "t.sqlite") as store:
        store.put_many(entries)
        t0 = time.perf_counter()
        table = OfaLatencyTable(store, DEVICE)
        print(f"table: {len(keys)} kernel keys over {len(OFA_MBV3.resolutions)} resolutions, "
              f"built in {time.perf_counter() - t0:.2f} s")
    return table


class OfaStyleTable:
    """OFA's per-resolution dicts `{key: {"mean": ms}}` and its per-spec walk."""

    def __init__(self, space=OFA_MBV3, seed: int = 1):
        self.space = space
        self.luts: dict[int, dict[str, dict[str, float]]] = {}
        rng = np.random.default_rng(seed)
        for r in space.resolutions:
            keys = []
            spec = {"ks": [3] * 20, "e": [3] * 20, "d": [4] * 5, "r": r}
            for k in space.kernel_sizes:
                for e in space.expand_ratios:
                    keys += self.keys(spec | {"ks": [k] * 20, "e": [e] * 20})
            keys = list(dict.fromkeys(keys))
            self.luts[r] = {key: {"mean": float(ms)}
                            for key, ms in zip(keys, rng.uniform(0.01, 2.0, len(keys)), strict=True)}

    def keys(self, spec: dict) -> list[str]:
        return [key for key, _ in self._walk(spec, None)]

    def predict(self, spec: dict) -> float:
        lut = self.luts[spec["r"]]
        total = 0.0
        for key, _ in self._walk(spec, lut):
            total += lut[key]["mean"]
        return total

    def _walk(self, spec, lut):
        w, sw = self.space.widths, self.space.stage_widths
        r = spec["r"]
        size = (r + 1) // 2
        yield _key("Conv", (r, r, 3), (size, size, w[0])), lut
        yield _key("expanded_conv", (size, size, w[0]), (size, size, w[1]),
                   mid=w[1], ks=3, stride=1, id_skip=1, se=0, h_swish=0), lut
        cin = w[1]
        for i in range(20):
            stage = i // 4
            if i % 4 + 1 > spec["d"][stage]:
                continue
            stride = self.space.strides[stage] if i % 4 == 0 else 1
            cout = sw[stage]
            out = int((size - 1) / stride + 1)
            yield _key("expanded_conv", (size, size, cin), (out, out, cout),
                       mid=round(cin * spec["e"][i]), ks=spec["ks"][i], stride=stride,
                       id_skip=int(stride == 1 and cin == cout), se=int(self.space.se[stage]),
                       h_swish=int(self.space.acts[stage] == "h_swish")), lut
            size, cin = out, cout
        yield _key("Conv_1", (size, size, cin), (size, size, w[7])), lut
        yield _key("AvgPool2D", (size, size, w[7]), (1, 1, w[7])), lut
        yield _key("Conv_2", (1, 1, w[7]), (1, 1, w[8])), lut
        yield _key("Logits", (1, 1, w[8]), (self.space.n_classes,)), lut


def _key(layer, inp, out, mid=None, ks=None, stride=None, id_skip=None, se=None, h_swish=None):
    # OFA's LatencyEstimator.query, %-formatting and all
    infos = [layer, "input:%s" % "x".join(str(x) for x in inp),  # noqa: UP031
             "output:%s" % "x".join(str(x) for x in out)]  # noqa: UP031
    if layer == "expanded_conv":
        infos += ["expand:%d" % mid, "kernel:%d" % ks, "stride:%d" % stride,  # noqa: UP031
                  "idskip:%d" % id_skip, "se:%d" % se, "hs:%d" % h_swish]  # noqa: UP031
    return "-".join(infos)


def _stats(xs) -> tuple[float, float, float]:
    return float(np.median(xs)), float(np.min(xs)), float(np.max(xs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="subnets per batched run")
    ap.add_argument("--single", type=int, default=10_000, help="single queries per round")
    ap.add_argument("--ofa-batch", type=int, default=20_000,
                    help="subnets per OFA-style batch run (a Python loop)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--core", type=int, default=None, help="CPU to pin to (default: the last)")
    args = ap.parse_args()
    core = args.core if args.core is not None else max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    print(f"pinned to CPU {core}; numpy {np.__version__}")

    with tempfile.TemporaryDirectory() as tmp:
        table = synthetic_table(Path(tmp))
    ofa = OfaStyleTable()
    enc = table.sample(args.n, rng=0)
    m = max(args.single, args.ofa_batch)
    head = type(enc)(*(a[:m] for a in enc))
    archs = table.decode(head)  # the first m subnets as arch dicts, for the one-at-a-time paths
    singles = archs[: args.single]
    ofa_batch = archs[: args.ofa_batch]
    if not np.allclose(table.latency(head), [table.latency_one(a) for a in archs], rtol=1e-12):
        raise SystemExit("latency and latency_one disagree")

    batch_a, batch_b, one_a, one_b = [], [], [], []
    clock = time.perf_counter_ns
    for _ in range(args.rounds):
        t0 = clock()
        table.latency(enc)
        batch_a.append(args.n / ((clock() - t0) * 1e-9))
        t0 = clock()
        for a in ofa_batch:
            ofa.predict(a)
        batch_b.append(len(ofa_batch) / ((clock() - t0) * 1e-9))
        for a in singles:  # each call timed alone
            t0 = clock()
            table.latency_one(a)
            one_a.append(clock() - t0)
        for a in singles:
            t0 = clock()
            ofa.predict(a)
            one_b.append(clock() - t0)

    print(f"\n(a) batched, subnets/s, {args.rounds} interleaved rounds (median [min, max])")
    med_a, lo_a, hi_a = _stats(batch_a)
    med_b, lo_b, hi_b = _stats(batch_b)
    print(f"  hwlat OfaLatencyTable.latency, {args.n:,} encoded subnets: "
          f"{med_a:,.0f} [{lo_a:,.0f}, {hi_a:,.0f}]")
    print(f"  OFA-style dict lookup, first {len(ofa_batch):,} of them:      "
          f"{med_b:,.0f} [{lo_b:,.0f}, {hi_b:,.0f}]")
    print(f"  ratio hwlat / OFA-style: {med_a / med_b:,.0f}x")

    print(f"\n(b, c) one query, us, {len(one_a):,} calls each, every call timed alone "
          "(median, IQR [q1, q3])")
    qa, qb = np.percentile(one_a, [25, 50, 75]) / 1e3, np.percentile(one_b, [25, 50, 75]) / 1e3
    print(f"  hwlat OfaLatencyTable.latency_one: {qa[1]:.2f} us  IQR [{qa[0]:.2f}, {qa[2]:.2f}]"
          f"  = {1e6 / qa[1]:,.0f} queries/s")
    print(f"  OFA-style dict lookup:             {qb[1]:.2f} us  IQR [{qb[0]:.2f}, {qb[2]:.2f}]"
          f"  = {1e6 / qb[1]:,.0f} queries/s")
    print(f"  ratio OFA-style / hwlat time: {qb[1] / qa[1]:.1f}x")
    goal_a, goal_b = med_a >= 1e6, qa[1] <= 20
    print(f"\ngoals: batched >= 1,000,000 subnets/s: {'met' if goal_a else 'NOT met'}; "
          f"one query <= 20 us: {'met' if goal_b else 'NOT met'}")


if __name__ == "__main__":
    main()
