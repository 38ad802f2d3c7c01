"""How long NB201 cells' kernel keys take to derive, cold (each round a fresh process).

    .venv/bin/python benchmarks/nb201_keys.py [--n 1000] [--rounds 3] [--all] [--cli] [--check N]

keys:  `nb201_kernel_texts` over N random cells (a new draw each round), then
       `Nb201LatencyTable.encode` + `latency` on the same cells from a synthetic table (every
       key of the space, nothing profiled);
--all: the same over all 15,625 cells;
--cli: `hwlat nas predict --space nb201 --archs` on all 15,625 cells (the synthetic table);
--check N: the fast derivation against the whole-network build (`network_kernels`) on N
       random cells (15625: all), key lists compared in order (as multisets for cells with
       dead edges, whose order is the live cell's); exits 1 on a difference.
Rounds run one after the other; the median and the spread (min..max) are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

DEVICE = "synthetic"
ROOT = Path(__file__).resolve().parent.parent


def _round(n: int, seed: int, table: str) -> dict[str, float]:
    from hwlat.lut import TableStore
    from hwlat.nas.nb201_lut import Nb201LatencyTable, nb201_kernel_texts
    from hwlat.nas.spaces import NB201_SIZE, nb201_arch

    rng = np.random.default_rng(seed)
    idx = range(NB201_SIZE) if n >= NB201_SIZE else rng.choice(NB201_SIZE, n, replace=False)
    archs = [nb201_arch(int(i)) for i in idx]
    t0 = time.perf_counter()
    for a in archs:
        nb201_kernel_texts(a)
    keys_s = time.perf_counter() - t0
    from hwlat.nas import nb201_lut
    for name in ("_kernels", "_live_kernels", "_texts", "_text"):  # cold again for the table
        f = getattr(nb201_lut, name, None)
        if hasattr(f, "cache_clear"):
            f.cache_clear()
    with TableStore(table, readonly=True) as store:
        lut = Nb201LatencyTable(store, DEVICE)
        t0 = time.perf_counter()
        lut.latency(lut.encode(archs))
        table_s = time.perf_counter() - t0
    return {"keys_s": keys_s, "table_s": table_s}


def _table(folder: Path) -> Path:
    from hwlat.lut import Entry, TableStore
    from hwlat.nas.nb201_lut import nb201_all_keys

    at = datetime.now(UTC).isoformat(timespec="seconds")
    rng = np.random.default_rng(0)
    keys = nb201_all_keys()
    entries = [Entry(DEVICE, text, key.kind.value, ms, ms, ms, 0.0, 1, 1, "synthetic", "{}",
                     "synthetic", at)
               for (text, key), ms in zip(keys.items(), rng.uniform(0.01, 2.0, len(keys)),
                                          strict=True)]
    path = folder / "t.sqlite"
    with TableStore(path) as store:
        store.put_many(entries)
    return path


def _check(n: int) -> int:
    from collections import Counter

    from hwlat.nas.nb201_lut import _kernels, _live, network_kernels
    from hwlat.nas.spaces import NB201_SIZE, nb201_arch, parse_nb201

    idx = range(NB201_SIZE) if n >= NB201_SIZE else \
        np.random.default_rng(7).choice(NB201_SIZE, n, replace=False)
    bad, dead = [], 0
    for i in idx:
        ops = parse_nb201(nb201_arch(int(i)))
        fast, whole = list(_kernels(ops)), list(network_kernels(ops))
        if _live(ops) != ops:  # dead edges: the same keys; their order is the live cell's
            dead += 1
            fast, whole = Counter(fast), Counter(whole)
        if fast != whole:
            bad.append(int(i))
            print(f"differs: {nb201_arch(int(i))}", flush=True)
    print(f"check: {len(idx)} cells ({dead} with dead edges, compared as multisets), "
          f"{len(bad)} differ from the whole-network build")
    return 1 if bad else 0


def _spread(xs: list[float]) -> str:
    return f"median {statistics.median(xs):.2f} s (min {min(xs):.2f}, max {max(xs):.2f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--all", action="store_true", help="all 15,625 cells")
    ap.add_argument("--cli", action="store_true", help="hwlat nas predict --archs, all cells")
    ap.add_argument("--check", type=int, default=0, metavar="N")
    ap.add_argument("--_round", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._round:
        n, seed, table = args._round
        print(json.dumps(_round(int(n), int(seed), table)))
        return
    if args.check:
        sys.exit(_check(args.check))
    n = 15625 if args.all else args.n
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with tempfile.TemporaryDirectory() as tmp:
        table = _table(Path(tmp))
        keys, tables, cli = [], [], []
        for r in range(args.rounds):
            out = subprocess.run([sys.executable, __file__, "--_round", str(n), str(r), str(table)],
                                 check=True, capture_output=True, text=True, env=env).stdout
            got = json.loads(out.splitlines()[-1])
            keys.append(got["keys_s"])
            tables.append(got["table_s"])
            print(f"round {r}: keys {got['keys_s']:.2f} s, table latency {got['table_s']:.2f} s",
                  flush=True)
        print(f"{n} cells: nb201_kernel_texts {_spread(keys)}; "
              f"Nb201LatencyTable.encode+latency {_spread(tables)}")
        if args.cli:
            from hwlat.nas.spaces import NB201_SIZE, nb201_arch
            archs = Path(tmp) / "all.csv"
            archs.write_text("arch\n" + "".join(nb201_arch(i) + "\n" for i in range(NB201_SIZE)))
            hwlat = Path(sys.executable).with_name("hwlat")
            for r in range(args.rounds):
                t0 = time.perf_counter()
                subprocess.run([str(hwlat), "nas", "predict", "--space", "nb201", "--device",
                                DEVICE, "--table", str(table), "--archs", str(archs)],
                               check=True, capture_output=True, env=env)
                cli.append(time.perf_counter() - t0)
                print(f"cli round {r}: {cli[-1]:.2f} s", flush=True)
            print(f"hwlat nas predict --space nb201 --archs (15,625 cells): {_spread(cli)}")


if __name__ == "__main__":
    main()
