"""`hwlat.SparseConv3d` through hwlat's TVM lowering: the zoo's sparse_convnet on a 40k-point
cloud in a 128^3 grid against torch, single nodes, refusals, and bad input at run time."""

from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest
import torch
import tvm
from onnx import TensorProto, numpy_helper
from onnx import helper as h
from tvm import relax

from hwlat import cli, zoo
from hwlat.errors import HwlatError, InvalidInputError
from hwlat.lowering import compile_model, run_library
from hwlat.lowering.artifact import TensorSpec
from hwlat.lowering.compile import lower
from hwlat.lowering.custom import import_onnx
from hwlat.lowering.run import outputs_of, random_inputs
from hwlat.onnx_export import export
from hwlat.runners.tvm import random_inputs as runner_random_inputs
from hwlat.zoo.sparse_conv import sparse_conv3d as torch_sparse_conv3d

pytestmark = [pytest.mark.tvm, pytest.mark.export]

POINTS, GRID = 40_000, 128


@pytest.fixture(scope="module")
def convnet(tmp_path_factory):
    """sparse_convnet at 40k points / 128^3: the torch model, its inputs, the compiled library."""
    directory = tmp_path_factory.mktemp("sparse_convnet")
    model, (features, coords) = zoo.build("sparse_convnet", input_shape=(POINTS, GRID))
    export(model, (features, coords), directory / "net.onnx")
    report = compile_model(directory / "net.onnx", output=directory / "net.so")
    return model, features, coords, report


def test_sparse_convnet_compiles_runs_and_matches_torch(convnet):
    model, features, coords, report = convnet
    assert len(coords) > 0.95 * POINTS  # a 128^3 grid keeps nearly every point its own voxel
    assert report.note.startswith("not compared: onnxruntime cannot run the model")
    npz = report.output.with_suffix(".npz")
    np.savez(npz, features=features.numpy(), coords=coords.numpy())
    got = run_library(report.output, npz)
    with torch.no_grad():
        want = model(features, coords).numpy()
    (out,) = got.values()
    assert out.shape == want.shape == (1, 10)
    np.testing.assert_allclose(out, want, rtol=0, atol=1e-4)
    assert np.abs(want).max() > 1e-2


def test_seeded_random_input_runs(convnet):
    """compile's own run (and `hwlat run` without --input) feeds valid coordinates."""
    *_, report = convnet
    (out,) = run_library(report.output).values()
    assert out.shape == (1, 10) and np.isfinite(out).all()


def _write(tmp_path, name, **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def test_bad_coordinates_at_run_time(convnet, tmp_path):
    _, features, coords, report = convnet
    f, c = features.numpy(), coords.numpy()
    outside = c.copy()
    outside[7, 3] = 1 << 16
    with pytest.raises(InvalidInputError, match=r"net.so: hwlat.SparseConv3d: coords must be "
                                                r"integers in \[0, 65536\) per axis"):
        run_library(report.output, _write(tmp_path, "outside.npz", features=f, coords=outside))
    negative = c.copy()
    negative[3, 1] = -1
    with pytest.raises(InvalidInputError, match="hwlat.SparseConv3d: coords must be integers"):
        run_library(report.output, _write(tmp_path, "negative.npz", features=f, coords=negative))
    with pytest.raises(InvalidInputError, match=r"input 'coords': expected int32\[\d+, 4\], got float32"):
        run_library(report.output, _write(tmp_path, "float.npz", features=f,
                                          coords=c.astype(np.float32)))
    with pytest.raises(InvalidInputError, match=r"input 'features': expected float32\[\d+, 4\]"):
        run_library(report.output, _write(tmp_path, "short.npz", features=f[:-1], coords=c))


def test_cli_run_reports_duplicates_in_one_line(convnet, tmp_path, monkeypatch, capsys):
    _, features, coords, report = convnet
    c = coords.numpy().copy()
    c[5] = c[9]
    npz = _write(tmp_path, "dup.npz", features=features.numpy(), coords=c)
    monkeypatch.setenv("HWLAT_HOME", str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["hwlat", "run", str(report.output), "-i", str(npz)])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: net.so: hwlat.SparseConv3d: duplicate coordinates in coords: voxelize the points first"]


def _sparse_model(n: int, weights: list[np.ndarray], subm: int = 1, stride=(1, 1, 1)) -> onnx.ModelProto:
    """Chained SparseConv3d nodes on one set of coordinates."""
    nodes, inits, x = [], [], "features"
    for i, w in enumerate(weights):
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(h.make_node("SparseConv3d", [x, "coords", f"w{i}"], [f"y{i}"], domain="hwlat",
                                 subm=subm, kernel_size=[3, 3, 3], stride=list(stride),
                                 padding=[1, 1, 1]))
        x = f"y{i}"
    graph = h.make_graph(
        nodes, "sparse", [h.make_tensor_value_info("features", TensorProto.FLOAT, [n, weights[0].shape[1]]),
                          h.make_tensor_value_info("coords", TensorProto.INT32, [n, 4])],
        [h.make_tensor_value_info(x, TensorProto.FLOAT, [n, weights[-1].shape[2]])], inits)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("hwlat", 1)])


def test_chained_nodes_share_one_kernel_map_and_match_torch(tmp_path):
    rng = np.random.default_rng(0)
    n, grid = 600, 16
    cells = rng.choice(grid**3, n, replace=False)
    coords = np.stack([np.zeros(n, int), cells // grid**2, cells // grid % grid, cells % grid], 1)
    coords = coords.astype(np.int32)
    features = rng.standard_normal((n, 4)).astype(np.float32)
    weights = [rng.standard_normal((27, 4, 16)).astype(np.float32),
               rng.standard_normal((27, 16, 8)).astype(np.float32)]
    model = _sparse_model(n, weights)
    script = import_onnx(model).script()
    assert script.count("R.call_tir(cls.hwlat_sparse_kernel_map") == 1
    assert script.count("R.call_tir(cls.hwlat_sparse_gemm") == 2
    onnx.save(model, tmp_path / "two.onnx")
    lowered = lower(tmp_path / "two.onnx")
    vm = relax.VirtualMachine(lowered.executable, tvm.cpu())
    got = outputs_of(vm["main"](tvm.runtime.tensor(features), tvm.runtime.tensor(coords)))[0]
    want = torch.from_numpy(features)
    for w in weights:
        want = torch_sparse_conv3d(want, torch.from_numpy(coords), torch.from_numpy(w), 1,
                                   [3] * 3, [1] * 3, [1] * 3)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-4)


def test_a_strided_sparse_conv_is_refused_with_the_reason(tmp_path):
    w = np.zeros((27, 4, 4), np.float32)
    onnx.save(_sparse_model(10, [w], subm=0, stride=(2, 2, 2)), tmp_path / "strided.onnx")
    with pytest.raises(HwlatError, match="hwlat.SparseConv3d \\(x1\\): strided sparse convs "
                                         "\\(subm=0\\) are not lowered: their number of output "
                                         "voxels depends on the coordinates"):
        lower(tmp_path / "strided.onnx")


def test_random_inputs_give_valid_coordinates():
    specs = [TensorSpec("features", (500, 4), "float32"), TensorSpec("coords", (500, 4), "int32"),
             TensorSpec("index", (3, 4), "int32")]
    features, coords, index = random_inputs(specs, seed=1)
    assert coords.dtype == np.int32 and len(np.unique(coords, axis=0)) == 500
    assert coords.min() >= 0 and (coords[:, 0] == 0).all()
    assert not index.any()  # other integer inputs stay zero
    proto = _sparse_model(300, [np.zeros((27, 4, 4), np.float32)])
    f, c = runner_random_inputs(proto)
    assert f.shape == (300, 4) and len(np.unique(c, axis=0)) == 300


def test_constant_coordinates_get_their_kernel_map_at_compile_time(tmp_path):
    """A conv whose coordinates are a constant (how the table times a conv that reuses its
    model's map) has no kernel-map call left, and the same output."""
    from hwlat.graph import fuse, load
    from hwlat.graph.extract import extract_kernel
    from hwlat.graph.sparse import default_coords

    rng = np.random.default_rng(3)
    n = 300
    weights = [rng.standard_normal((27, 4, 8)).astype(np.float32),
               rng.standard_normal((27, 8, 8)).astype(np.float32)]
    onnx.save(_sparse_model(n, weights), tmp_path / "two.onnx")
    g = load(tmp_path / "two.onnx")
    first, second = [k for k in fuse(g) if k.kind.value == "sparse_conv"]
    assert dict(first.key.attrs)["map"] == 1 and dict(second.key.attrs)["map"] == 0
    cut = extract_kernel(g, second)
    assert [i.name for i in cut.graph.input] == ["y0"]  # coords became a constant
    coords = numpy_helper.to_array(next(t for t in cut.graph.initializer if t.name == "coords"))
    assert np.array_equal(coords, default_coords(n))
    script = import_onnx(cut).script()
    assert "hwlat_sparse_kernel_map" not in script and "hwlat_sparse_gemm" in script
    onnx.save(cut, tmp_path / "cut.onnx")
    x = rng.standard_normal((n, 8)).astype(np.float32)
    vm = relax.VirtualMachine(lower(tmp_path / "cut.onnx").executable, tvm.cpu())
    got = outputs_of(vm["main"](tvm.runtime.tensor(x)))[0]
    want = torch_sparse_conv3d(torch.from_numpy(x), torch.from_numpy(coords),
                               torch.from_numpy(weights[1]), 1, [3, 3, 3], [1, 1, 1], [1, 1, 1])
    np.testing.assert_allclose(got, want.numpy(), atol=1e-4)
    # a constant with a duplicate voxel is refused when the map is built, naming the rows
    bad = onnx.ModelProto()
    bad.CopyFrom(cut)
    dup = coords.copy()
    dup[1] = dup[0]
    for i, t in enumerate(bad.graph.initializer):
        if t.name == "coords":
            bad.graph.initializer[i].CopyFrom(numpy_helper.from_array(dup, "coords"))
    with pytest.raises(InvalidInputError, match="duplicate"):
        import_onnx(bad)
