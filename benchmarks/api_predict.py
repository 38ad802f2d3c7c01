"""`hwlat.predict` inside a search loop over a torch-defined space: candidates a second, on one core.

    .venv/bin/python benchmarks/api_predict.py [--family resnet|mobilenet|both] [--n 200]
        [--export-n 3] [--device roofline-sd855] [--table PATH] [--core N] [--seed 0] [--gc-freeze]

A search samples random candidates from two spaces defined here as torch modules:
- resnet: ResNet-style bottleneck stacks (ResNet-50-sized at the top of the range): stem width
  {48, 64}, four stages of depth {2..6} with widths 64*2^i scaled by {0.75, 1, 1.25}, 3x3 or 5x5
  middle convs;
- mobilenet: MobileNetV2-style inverted residual stacks: width multiplier {0.75, 1, 1.25},
  seven stages of depth {1..4}, expand ratio {3, 4, 6}, kernel size {3, 5, 7}.
Each candidate is a new module (new weights); it is scored by `hwlat.predict` (the fast path:
torch.fx, no ONNX) on the device: candidates a second, and the share of time per stage (trace:
module -> graph IR, fuse, query: table lookup and estimates), and the whole loop's rate by CPU
time (making each candidate module too: what a search sees). The first --export-n candidates
of each family are also scored by the export route (`route="export"`: torch.onnx.export, load,
fuse, query) for the same figures; both predictions must be identical (same kernel keys, same
latency), which the benchmark asserts.

The default device, roofline-sd855, needs no profiling (every kernel estimated by its roofline);
a profiled device (e.g. --device cpu-ort with a table from `hwlat profile`) reads its table.
Goals: >= 20 candidates/s for ResNet-50-sized modules, >= 100 for MobileNet-sized ones.

Python's cyclic garbage collector: `hwlat.predict` runs with it off (a prediction makes no
reference cycles), so the collections that the loop's allocations trigger fire outside the
timed calls, mostly while candidate modules are made; the loop rate counts them. Full
collections walk every object the process holds (torch's alone are ~0.7 M). --gc-freeze calls
`gc.freeze()` after the warm-up, as a long search loop may do once after its setup: the
objects made so far are left out of later collections (they are never freed), which makes
each full collection cheap.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import random
import statistics
import time

import torch
from torch import nn

import hwlat


def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: type | None = nn.ReLU):
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, cout: int, stride: int, k: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn(cin, width, 1), conv_bn(width, width, k, stride),
                                  conv_bn(width, cout, 1, act=None))
        self.down = None if stride == 1 and cin == cout else conv_bn(cin, cout, 1, stride, act=None)
        self.relu = nn.ReLU()

    def forward(self, x):
        skip = x if self.down is None else self.down(x)
        return self.relu(self.body(x) + skip)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int, k: int):
        super().__init__()
        mid = cin * expand
        self.conv = nn.Sequential(conv_bn(cin, mid, 1, act=nn.ReLU6),
                                  conv_bn(mid, mid, k, stride, groups=mid, act=nn.ReLU6),
                                  conv_bn(mid, cout, 1, act=None))
        self.skip = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.skip else self.conv(x)


class Net(nn.Module):
    def __init__(self, stem: nn.Module, blocks: list[nn.Module], channels: int, classes: int = 1000):
        super().__init__()
        self.stem = stem
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, classes)

    def forward(self, x):
        return self.fc(self.pool(self.blocks(self.stem(x))).flatten(1))


def _round8(x: float) -> int:
    return max(8, int(x + 4) // 8 * 8)


def resnet_candidate(rng: random.Random) -> Net:
    stem_w = rng.choice([48, 64])
    stem = nn.Sequential(conv_bn(3, stem_w, 7, 2), nn.MaxPool2d(3, 2, 1))
    blocks, cin = [], stem_w
    for stage in range(4):
        width = _round8(64 * 2**stage * rng.choice([0.75, 1.0, 1.25]))
        k = rng.choice([3, 5])
        for i in range(rng.randint(2, 6)):
            blocks.append(Bottleneck(cin, width, 4 * width, 2 if stage and i == 0 else 1, k))
            cin = 4 * width
    return Net(stem, blocks, cin).eval()


_MBV2 = [(16, 1, 1), (24, 2, 2), (32, 3, 2), (64, 4, 2), (96, 3, 1), (160, 3, 2), (320, 1, 1)]


def mobilenet_candidate(rng: random.Random) -> Net:
    mult = rng.choice([0.75, 1.0, 1.25])
    cin = _round8(32 * mult)
    stem = conv_bn(3, cin, 3, 2, act=nn.ReLU6)
    blocks = []
    for c, depth, stride in _MBV2:
        cout = _round8(c * mult)
        for i in range(rng.randint(1, 4) if depth > 1 else 1):
            blocks.append(InvertedResidual(cin, cout, stride if i == 0 else 1,
                                           rng.choice([3, 4, 6]), rng.choice([3, 5, 7])))
            cin = cout
    head = conv_bn(cin, 1280, 1, act=nn.ReLU6)
    return Net(nn.Sequential(stem), [*blocks, head], 1280).eval()


FAMILIES = {"resnet": resnet_candidate, "mobilenet": mobilenet_candidate}
SHAPE = (1, 3, 224, 224)


def score(make, n: int, seed: int, device: str, table, route: str):
    """Candidates made one at a time, as a search makes them (not timed), each predicted (timed)."""
    rng, results, wall, cpu = random.Random(seed), [], [], []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        loop = time.process_time()
        for _ in range(n):
            m = make(rng)
            t0, c0 = time.perf_counter(), time.process_time()
            results.append(hwlat.predict(m, device=device, input_shape=SHAPE, table=table, route=route))
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        del m
        loop = time.process_time() - loop
    return results, wall, cpu, loop


def report(label: str, results, wall, cpu, loop: float) -> dict:
    """Candidates a second by the wall clock and by this process's CPU time (the figure for a
    core of its own where the machine is shared), each stage's share of the wall time, and the
    whole loop's CPU rate (making each candidate module too, and the garbage collections that
    fire there: what a search loop sees)."""
    stages = {s: sum(r.stages[s] for r in results) for s in ("trace", "fuse", "query")}
    total = sum(wall)
    row = {"label": label, "n": len(wall), "per_s": len(wall) / total,
           "per_cpu_s": len(cpu) / max(sum(cpu), 1e-9), "median_ms": statistics.median(wall) * 1e3,
           "loop_per_cpu_s": len(cpu) / max(loop, 1e-9),
           **{f"{s}_share": stages[s] / total for s in stages}}
    print(f"{label:<24} {row['n']:>4} candidates {row['per_s']:7.1f}/s wall {row['per_cpu_s']:7.1f}/s "
          f"CPU  median {row['median_ms']:8.1f} ms  trace {row['trace_share']:5.1%} fuse "
          f"{row['fuse_share']:5.1%} query {row['query_share']:5.1%}  loop {row['loop_per_cpu_s']:6.1f}/s CPU",
          flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", choices=[*FAMILIES, "both"], default="both")
    ap.add_argument("--n", type=int, default=200, help="candidates per family (fast path)")
    ap.add_argument("--export-n", type=int, default=3, help="of them also scored by the export route")
    ap.add_argument("--device", default="roofline-sd855")
    ap.add_argument("--table", default=None)
    ap.add_argument("--core", type=int, default=None, help="pin to this CPU core")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gc-freeze", action="store_true",
                    help="gc.freeze() after the warm-up (see the module's help)")
    args = ap.parse_args()
    if args.core is not None:
        os.sched_setaffinity(0, {args.core})
    torch.set_num_threads(1)
    families = list(FAMILIES) if args.family == "both" else [args.family]
    # one warm-up prediction: first-call costs (imports, torch's meta kernels) are not a candidate's
    hwlat.predict(FAMILIES[families[0]](random.Random(-1)), device=args.device, input_shape=SHAPE,
                  table=args.table)
    if args.gc_freeze:
        gc.collect()
        gc.freeze()
    for fam in families:
        macs = [hwlat.inspect(FAMILIES[fam](random.Random(i)), input_shape=SHAPE).totals()["macs"]
                for i in range(5)]
        print(f"{fam}: {args.n} candidates ({min(macs) / 1e9:.2f}-{max(macs) / 1e9:.2f} GMACs in "
              f"a sample of 5); device {args.device}")
        fast, wall, cpu, loop = score(FAMILIES[fam], args.n, args.seed, args.device, args.table, "auto")
        routes = {r.route for r in fast}
        assert routes == {"fast"}, f"some candidates left the fast path: {routes}"
        report(f"{fam} fast path", fast, wall, cpu, loop)
        if args.export_n:
            exported, ewall, ecpu, eloop = score(FAMILIES[fam], args.export_n, args.seed, args.device,
                                                 args.table, "export")
            report(f"{fam} export route", exported, ewall, ecpu, eloop)
            for a, b in zip(fast, exported, strict=False):
                per_kernel = lambda r: {x.kernel.key.text(): (x.count, x.ms, x.source) for x in r.rows}  # noqa: E731
                assert per_kernel(a) == per_kernel(b), "kernel keys or their latencies differ"
                # the same terms; only the order of the sum may differ
                assert math.isclose(a.latency_ms, b.latency_ms, rel_tol=1e-12), (a.latency_ms, b.latency_ms)
            print(f"{fam}: the {len(exported)} exported candidates' predictions are identical "
                  f"to the fast path's")


if __name__ == "__main__":
    main()
