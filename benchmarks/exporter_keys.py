"""Kernel keys of the same model from two exporters: hwlat's (torch's dynamo exporter) and
torch's TorchScript exporter (`torch.onnx.export(..., dynamo=False)`).

    .venv/bin/python benchmarks/exporter_keys.py --onnx-dir DIR [--models A B ...] [--json OUT]

DIR holds STEM.onnx (hwlat's export) and STEM.torch.onnx (torch's), as
`benchmarks/corpus_export.py` writes them. For each pair both files are loaded and fused, and
the multisets of kernel key texts are compared: per model the kernel counts, the count of keys
that differ (hwlat's kernels whose key torch's export lacks, and the other way round) and the
most common kinds of difference; then a corpus total.

A difference's kind comes from pairing each unmatched key with the most similar unmatched key
of the same kernel kind on the other side and naming the fields that differ: `ops A -> B`,
`attrs +name/-name`, `w` (weights: e.g. a bias on one side only), `in`, `out`; a key left
without a partner counts as `unpaired KIND` (the exports cut different kernels).
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import time
from collections import Counter
from pathlib import Path

from hwlat.graph import fuse, load

FIELDS = ("kind", "ops", "in", "out", "w", "attrs")


def key_texts(path: Path) -> list[str]:
    return [k.key.text() for k in fuse(load(path))]


def _fields(text: str) -> dict[str, str]:
    parts = text.split("|", 5)
    return dict(zip(FIELDS, parts, strict=True))


def _difference(a: str, b: str) -> list[str]:
    fa, fb = _fields(a), _fields(b)
    kinds = []
    if fa["ops"] != fb["ops"]:
        kinds.append(f"ops {fa['ops']} -> {fb['ops']}")
    if fa["attrs"] != fb["attrs"]:
        sa = {x.split("=", 1)[0]: x for x in fa["attrs"].split(",") if x}
        sb = {x.split("=", 1)[0]: x for x in fb["attrs"].split(",") if x}
        names = sorted(n for n in sa.keys() | sb.keys() if sa.get(n) != sb.get(n))
        kinds.append("attrs " + ",".join(
            ("-" if n not in sb else "+" if n not in sa else "~") + n for n in names))
    for f in ("w", "in", "out"):
        if fa[f] != fb[f]:
            kinds.append(f)
    return kinds


def compare(hwlat_keys: list[str], torch_keys: list[str]) -> dict:
    """Counts and kinds of difference between two exports' key multisets."""
    ca, cb = Counter(hwlat_keys), Counter(torch_keys)
    only_a = list((ca - cb).elements())
    only_b = list((cb - ca).elements())
    kinds: Counter[str] = Counter()
    left = list(only_b)
    for a in only_a:
        kind = a.split("|", 1)[0]
        same = [b for b in left if b.split("|", 1)[0] == kind]
        if not same:
            kinds[f"unpaired {kind} (hwlat)"] += 1
            continue
        b = max(same, key=lambda b: difflib.SequenceMatcher(None, a, b, autojunk=False).ratio())
        left.remove(b)
        kinds.update(_difference(a, b))
    for b in left:
        kinds[f"unpaired {b.split('|', 1)[0]} (torch)"] += 1
    return {"kernels_hwlat": len(hwlat_keys), "kernels_torch": len(torch_keys),
            "differ_hwlat": len(only_a), "differ_torch": len(only_b), "kinds": dict(kinds)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--onnx-dir", required=True, type=Path)
    ap.add_argument("--models", nargs="*", help="stems (default: every STEM with both files)")
    ap.add_argument("--top", type=int, default=3, help="kinds of difference shown per model")
    ap.add_argument("--json", type=Path, help="write the per-model results here")
    args = ap.parse_args(argv)
    stems = args.models or sorted(p.name[:-len(".torch.onnx")] for p in args.onnx_dir.glob("*.torch.onnx")
                                  if (args.onnx_dir / (p.name[:-len(".torch.onnx")] + ".onnx")).exists())
    results: dict[str, dict] = {}
    total: Counter[str] = Counter()
    print(f"{'model':34} {'kernels h/t':>12} {'differ h/t':>11}  most common differences")
    for stem in stems:
        t0 = time.perf_counter()
        try:
            r = compare(key_texts(args.onnx_dir / f"{stem}.onnx"),
                        key_texts(args.onnx_dir / f"{stem}.torch.onnx"))
        except Exception as e:  # a model one side cannot load is reported, not fatal
            print(f"{stem:34} error: {e}".splitlines()[0], flush=True)
            results[stem] = {"error": str(e).splitlines()[0]}
            continue
        r["seconds"] = round(time.perf_counter() - t0, 1)
        results[stem] = r
        kinds = Counter(r["kinds"])
        total.update(kinds)
        top = "; ".join(f"{n}x {k}" for k, n in kinds.most_common(args.top))
        print(f"{stem:34} {r['kernels_hwlat']:>5}/{r['kernels_torch']:<6} "
              f"{r['differ_hwlat']:>4}/{r['differ_torch']:<6} {top}", flush=True)
    ok = [r for r in results.values() if "error" not in r]
    kh, kt = sum(r["kernels_hwlat"] for r in ok), sum(r["kernels_torch"] for r in ok)
    dh, dt = sum(r["differ_hwlat"] for r in ok), sum(r["differ_torch"] for r in ok)
    same = sum(1 for r in ok if r["differ_hwlat"] == r["differ_torch"] == 0)
    print(f"\ncorpus: {len(ok)} models ({len(results) - len(ok)} failed to load), kernels "
          f"{kh} hwlat / {kt} torch, keys that differ {dh} hwlat / {dt} torch; "
          f"{same} models with identical key multisets")
    print("most common differences:")
    for k, n in total.most_common(15):
        print(f"  {n:6}  {k}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
