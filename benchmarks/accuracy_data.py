"""Export the accuracy benchmark's model set as ONNX files, with a manifest.

    .venv/bin/python benchmarks/accuracy_data.py --out build/accuracy [--seed 0] \
        [--n-nb201 20] [--n-ofa 20] [--no-check]

Families (the `family` field of the manifest):
  zoo            mobilenet_v2, resnet18, resnet50, vit_tiny, spiking_convnet (not sparse_convnet:
                 onnxruntime cannot run its custom op)
  ofa-note10     the eight published Once-for-All Note10 nets (../shared/data/ofa/net_configs)
  proxyless-gpu  the published OFA 1080 Ti net (ProxylessNAS family)
  nb201          n distinct NAS-Bench-201 cells, uniform, seeded (name = the cell string)
  ofa-random     n OFA MobileNetV3 (width 1.0) subnets, seeded; their net config JSON is
                 written beside each ONNX file

`manifest.json` in the output folder lists `{"path", "family", "name"}`, the path relative to
the manifest's folder. Exports are skipped when their file exists, so a killed run resumes
where it stopped. Seeds: NB201 cells come from default_rng([seed, 0]), OFA subnets from
default_rng([seed, 1]), so changing one count does not change the other family's models.
Every file is then loaded with hwlat.graph.load (unless --no-check).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CONFIGS = DATA / "ofa" / "net_configs"
ZOO_MODELS = ("mobilenet_v2", "resnet18", "resnet50", "vit_tiny", "spiking_convnet")


class Job:
    def __init__(self, family: str, name: str, rel: str, build: Callable, extra: dict | None = None):
        self.family, self.name, self.rel, self.build = family, name, rel, build
        self.extra = extra  # written as JSON beside the ONNX file (its net config), if given

    def entry(self) -> dict:
        return {"path": self.rel, "family": self.family, "name": self.name}


def ofa_name(arch: dict) -> str:
    """r176_d23224_k35.._e46..: resolution, depths, then kernel and expand of the blocks used."""
    used = [4 * s + i for s, d in enumerate(arch["d"]) for i in range(d)]
    return (f"r{arch['r']}_d{''.join(map(str, arch['d']))}"
            f"_k{''.join(str(arch['ks'][j]) for j in used)}"
            f"_e{''.join(str(arch['e'][j]) for j in used)}")


def jobs(seed: int, n_nb201: int, n_ofa: int) -> list[Job]:
    from hwlat import zoo
    from hwlat.nas import nb201_index, ofa_mbv3_config, sample_nb201, sample_ofa_mbv3

    out = [Job("zoo", name, f"zoo/{name}.onnx", lambda n=name: zoo.build(n)) for name in ZOO_MODELS]
    if not CONFIGS.is_dir():
        print(f"warning: {CONFIGS} is absent; skipping ofa-note10 and proxyless-gpu",
              file=sys.stderr)
    else:
        note10 = sorted(CONFIGS.glob("note10_*.json"))
        gpu = sorted(CONFIGS.glob("1080ti_*.json"))
        for family, paths in (("ofa-note10", note10), ("proxyless-gpu", gpu)):
            out += [Job(family, p.stem, f"{family}/{p.stem}.onnx",
                        lambda p=p: zoo.from_ofa_config(p)) for p in paths]

    rng = np.random.default_rng([seed, 0])
    cells: list[str] = []
    while len(cells) < n_nb201:
        cell = sample_nb201(rng)
        if cell not in cells:
            cells.append(cell)
    out += [Job("nb201", c, f"nb201/{nb201_index(c):05d}.onnx", lambda c=c: zoo.from_nb201(c))
            for c in cells]

    rng = np.random.default_rng([seed, 1])
    names: dict[str, dict] = {}
    while len(names) < n_ofa:
        arch = sample_ofa_mbv3(rng)
        names.setdefault(ofa_name(arch), ofa_mbv3_config(arch))
    out += [Job("ofa-random", name, f"ofa-random/{name}.onnx",
                lambda cfg=cfg: zoo.from_ofa_config(cfg), extra=cfg)
            for name, cfg in names.items()]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="build/accuracy", type=Path)
    ap.add_argument("--seed", default=0, type=int)
    ap.add_argument("--n-nb201", default=20, type=int)
    ap.add_argument("--n-ofa", default=20, type=int)
    ap.add_argument("--no-check", action="store_true", help="skip loading each file afterwards")
    args = ap.parse_args()
    if args.n_nb201 < 0 or args.n_ofa < 0:
        ap.error("--n-nb201 and --n-ofa must be >= 0")

    from hwlat.onnx_export import export

    # The exporter warns once per export that torchvision's ops are not registered; not ours.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    t_start = time.perf_counter()
    todo = jobs(args.seed, args.n_nb201, args.n_ofa)
    exported = skipped = 0
    for i, job in enumerate(todo, 1):
        path = args.out / job.rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if job.extra is not None:
            path.with_suffix(".json").write_text(json.dumps(job.extra, indent=1) + "\n")
        prefix = f"[{i:3d}/{len(todo)}] {job.family:13s} {job.name}"
        if path.exists():
            skipped += 1
            print(f"{prefix}: exists, skipped", flush=True)
            continue
        t0 = time.perf_counter()
        model, inputs = job.build()
        report = export(model, inputs, path, compare=False)
        exported += 1
        print(f"{prefix}: {report.nodes} nodes, {time.perf_counter() - t0:.1f} s", flush=True)
    manifest = args.out / "manifest.json"
    manifest.write_text(json.dumps([j.entry() for j in todo], indent=1) + "\n")
    t_export = time.perf_counter() - t_start
    print(f"exported {exported}, skipped {skipped} existing; {len(todo)} models in {manifest}; "
          f"export time {t_export:.1f} s", flush=True)

    if args.no_check:
        return 0
    from hwlat.errors import HwlatError
    from hwlat.graph import load

    t0 = time.perf_counter()
    failed = []
    for job in todo:
        try:
            load(args.out / job.rel)
        except HwlatError as e:
            failed.append(job.rel)
            print(f"load failed: {job.rel}: {e}", flush=True)
    print(f"hwlat.graph.load: {len(todo) - len(failed)}/{len(todo)} files load "
          f"({time.perf_counter() - t0:.1f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
