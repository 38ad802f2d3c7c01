"""hwlat's TIR sparse conv vs dense conv3d (and spconv's CPU build, when installed), 1 thread.

    .venv/bin/python benchmarks/sparse_conv.py [--grid 64] [--rounds 15] [--net]

A submanifold 3x3x3 conv, C=32->32, on a grid^3 volume with 1 %, 5 % and 20 % of its voxels
active (uniformly random, coordinates sorted as a voxelizer gives them), against
torch.nn.functional.conv3d on the whole dense [1, 32, grid, grid, grid] volume. Methods run
interleaved, round-robin, in one process; each round times every method (sparse ones `--inner`
times); figures are the median and interquartile range over all samples after warm-up.

  hwlat map+gemm  the compiled TIR kernels: kernel map (hash of coordinates) + gather-GEMM-scatter
  hwlat gemm      the GEMM alone, map reused (what each later layer of a net pays)
  spconv          spconv.pytorch.SubMConv3d on CPU, indices rebuilt each call (if installed)
  dense           torch conv3d over every voxel

Outputs are checked against each other before timing (sparse vs dense at the active voxels,
spconv vs hwlat). `--net` also times the zoo's sparse_convnet on 40k points in a 128^3 grid:
the library `hwlat compile` builds vs the torch model (the custom op's reference code).
"""

from __future__ import annotations

import os

os.environ["TVM_NUM_THREADS"] = "1"  # before TVM's thread pool starts
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import tvm  # noqa: E402

from hwlat.kernels.sparse_conv import conv, kernel  # noqa: E402

CIN = COUT = 32


def random_voxels(grid: int, occupancy: float, rng) -> np.ndarray:
    n = int(round(grid**3 * occupancy))
    cells = np.sort(rng.choice(grid**3, size=n, replace=False))
    zyx = np.stack([cells // grid**2, cells // grid % grid, cells % grid], axis=1)
    return np.concatenate([np.zeros((n, 1), np.int64), zyx], axis=1).astype(np.int32)


def hwlat_methods(coords, features, weight):
    geom = conv.geometry(3)
    lib = conv._compiled(geom, CIN, COUT)
    t = tvm.runtime.tensor
    c = t(coords)
    scratch = [t(np.empty(shape, dtype)) for shape, dtype in
               kernel.map_shapes(len(coords), len(coords), geom).values()]
    f, w = t(features), t(weight)
    out = t(np.empty((len(coords), COUT), np.float32))
    build, gemm = lib["kernel_map"], lib["gemm"]

    def map_and_gemm():
        build(c, c, *scratch)
        gemm(f, w, scratch[3], scratch[4], scratch[5], out)

    def gemm_only():
        gemm(f, w, scratch[3], scratch[4], scratch[5], out)

    map_and_gemm()
    return {"hwlat map+gemm": map_and_gemm, "hwlat gemm": gemm_only}, out


def spconv_method(coords, features, weight, grid):
    try:
        import spconv.pytorch as spc
    except ImportError:
        return None, None
    layer = spc.SubMConv3d(CIN, COUT, 3, padding=1, bias=False)
    # spconv keeps weight [Cout, kz, ky, kx, Cin]; hwlat [kz*ky*kx, Cin, Cout]
    layer.weight.data = torch.from_numpy(weight.reshape(3, 3, 3, CIN, COUT).transpose(4, 0, 1, 2, 3).copy())
    f, c = torch.from_numpy(features), torch.from_numpy(coords)

    def run():
        with torch.no_grad():
            return layer(spc.SparseConvTensor(f, c, [grid] * 3, 1)).features

    return run, run()


def dense_method(coords, features, weight, grid):
    x = torch.zeros(1, CIN, grid, grid, grid)
    x[0, :, coords[:, 1], coords[:, 2], coords[:, 3]] = torch.from_numpy(features).T
    w = torch.from_numpy(weight.reshape(3, 3, 3, CIN, COUT).transpose(4, 3, 0, 1, 2).copy())

    def run():
        with torch.no_grad():
            return torch.nn.functional.conv3d(x, w, padding=1)

    y = run()
    return run, y[0, :, coords[:, 1], coords[:, 2], coords[:, 3]].T.numpy()


def interleaved(methods: dict, rounds: int, inner: dict, warmup: int = 2) -> dict[str, list[float]]:
    samples = {name: [] for name in methods}
    names = list(methods)
    for r in range(warmup + rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotate the order
            for _ in range(inner.get(name, 1)):
                t0 = time.perf_counter()
                methods[name]()
                dt = (time.perf_counter() - t0) * 1e3
                if r >= warmup:
                    samples[name].append(dt)
    return samples


def summary(ms: list[float]) -> tuple[float, float, float]:
    q1, med, q3 = np.percentile(ms, [25, 50, 75])
    return float(med), float(q1), float(q3)


def bench_occupancy(grid: int, occupancy: float, rounds: int, inner: int, rng) -> None:
    coords = random_voxels(grid, occupancy, rng)
    n = len(coords)
    features = rng.standard_normal((n, CIN)).astype(np.float32)
    weight = (rng.standard_normal((27, CIN, COUT)) * 0.1).astype(np.float32)
    methods, out = hwlat_methods(coords, features, weight)
    dense, dense_out = dense_method(coords, features, weight, grid)
    np.testing.assert_allclose(out.numpy(), dense_out, rtol=1e-4, atol=1e-3)
    sp, sp_out = spconv_method(coords, features, weight, grid)
    if sp is not None:
        np.testing.assert_allclose(sp_out.numpy(), out.numpy(), rtol=1e-4, atol=1e-3)
        methods["spconv"] = sp
    methods["dense"] = dense
    samples = interleaved(methods, rounds, {k: inner for k in methods if k != "dense"})
    stats = {k: summary(v) for k, v in samples.items()}
    print(f"\n{occupancy:.0%} occupancy: {n} of {grid}^3 voxels active")
    print(f"  {'method':16} {'median ms':>10} {'IQR ms':>17} {'samples':>8} {'dense / it':>11}")
    for name, (med, q1, q3) in stats.items():
        print(f"  {name:16} {med:10.3f} {q1:8.3f}-{q3:<8.3f} {len(samples[name]):8d} "
              f"{stats['dense'][0] / med:10.1f}x")
    if "spconv" in stats:
        print(f"  spconv / hwlat map+gemm: {stats['spconv'][0] / stats['hwlat map+gemm'][0]:.1f}x")


def bench_net(rounds: int) -> None:
    """sparse_convnet at 40k points / 128^3: compiled library vs the torch model."""
    from hwlat import zoo
    from hwlat.lowering import compile_model
    from hwlat.lowering.run import load_library
    from hwlat.onnx_export import export

    model, (features, coords) = zoo.build("sparse_convnet", input_shape=(40_000, 128))
    with tempfile.TemporaryDirectory() as d:
        export(model, (features, coords), Path(d) / "net.onnx")
        compile_model(Path(d) / "net.onnx", output=Path(d) / "net.so")
        lib = load_library(Path(d) / "net.so", threads=1)
        arrays = [features.numpy(), coords.numpy()]
        got = lib.run(arrays)[0]
        with torch.no_grad():
            want = model(features, coords).numpy()
        diff = float(np.abs(got - want).max())
        args = lib.tensors(arrays)

        def compiled():
            lib.vm["main"](*args)

        def eager():
            with torch.no_grad():
                model(features, coords)

        samples = interleaved({"hwlat library": compiled, "torch model": eager}, rounds, {})
    print(f"\nsparse_convnet, 40000 points -> {len(coords)} voxels of 128^3, 3 subm convs "
          f"(4->16->32->32); library vs torch max abs diff {diff:.2g}")
    stats = {k: summary(v) for k, v in samples.items()}
    for name, (med, q1, q3) in stats.items():
        print(f"  {name:16} median {med:9.3f} ms, IQR {q1:.3f}-{q3:.3f} ({len(samples[name])} runs)")
    print(f"  torch / library: {stats['torch model'][0] / stats['hwlat library'][0]:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grid", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--inner", type=int, default=10, help="sparse calls per round")
    parser.add_argument("--occupancy", type=float, nargs="+", default=[0.01, 0.05, 0.2])
    parser.add_argument("--net", action="store_true", help="also time sparse_convnet at 40k points")
    args = parser.parse_args()
    torch.set_num_threads(1)
    try:
        import spconv
        spconv_note = f"spconv {spconv.__version__} (CPU)"
    except ImportError:
        spconv_note = "spconv not installed (pip install spconv): its column is left out"
    print(f"1 thread; TVM {tvm.__version__}, torch {torch.__version__}; {spconv_note}; "
          f"submanifold 3x3x3, C={CIN}->{COUT}")
    rng = np.random.default_rng(0)
    for occupancy in args.occupancy:
        bench_occupancy(args.grid, occupancy, args.rounds, args.inner, rng)
    if args.net:
        bench_net(args.rounds * 2)


if __name__ == "__main__":
    main()
