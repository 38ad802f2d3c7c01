"""Host CPU: compile tiny models to a .so, run it, compare with onnxruntime, time it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest

from hwlat import __version__
from hwlat.devices.spec import MeasureSpec
from hwlat.errors import InvalidInputError, InvalidModelError
from hwlat.lowering import bench_library, compile_model, run_library
from hwlat.lowering.targets import system_cpu
from tests.helpers import lowering_models as models
from tests.helpers.onnx_builders import rand

pytestmark = pytest.mark.tvm


def onnxruntime_outputs(path, feeds):
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.fixture(scope="module")
def conv_lib(tmp_path_factory):
    d = tmp_path_factory.mktemp("conv")
    src = models.conv_relu(d)
    return src, compile_model(src, "host", output=d / "conv.so")


def test_conv_relu_library_matches_onnxruntime(conv_lib, tmp_path):
    src, report = conv_lib
    assert report.artifact == "shared library" and report.output.is_file()
    assert report.max_abs_diff is not None and report.max_abs_diff < 1e-4
    x = rand(1, 3, 8, 8, seed=5)
    got = run_library(report.output, models.npy(tmp_path, "x.npy", x))
    assert list(got) == ["y"]
    np.testing.assert_allclose(got["y"], onnxruntime_outputs(src, {"x": x})[0], atol=1e-4)


def test_sidecar_describes_the_library(conv_lib):
    src, report = conv_lib
    meta = json.loads(report.sidecar.read_text())
    assert report.sidecar.name == "conv.so.json"
    assert meta["inputs"] == [{"name": "x", "shape": [1, 3, 8, 8], "dtype": "float32"}]
    assert meta["outputs"] == [{"name": "y", "shape": [1, 4, 8, 8], "dtype": "float32"}]
    assert (meta["target"]["kind"], meta["target"]["mcpu"]) == ("llvm", system_cpu())
    assert (meta["target_kind"], meta["pipeline"], meta["tuning_db"]) == ("host", "default", None)
    assert (meta["hwlat"], meta["model"]) == (__version__, src)


def test_matmul_add_through_the_zero_pipeline(tmp_path):
    src = models.matmul_add(tmp_path)
    report = compile_model(src, "host", "zero", tmp_path / "mm.so")
    assert report.pipeline == "zero" and report.max_abs_diff < 1e-4
    x = rand(4, 16, seed=3)
    got = run_library(report.output, models.npy(tmp_path, "x.npy", x))["y"]
    np.testing.assert_allclose(got, x @ rand(16, 8, seed=1) + rand(8, seed=2), atol=1e-4)
    np.testing.assert_allclose(got, onnxruntime_outputs(src, {"x": x})[0], atol=1e-4)


def test_inputs_by_name_from_npz_and_outputs_by_name(tmp_path):
    report = compile_model(models.two_inputs(tmp_path), output=tmp_path / "two.so")
    a, b = rand(2, 3, seed=1), rand(2, 3, seed=2)
    np.savez(tmp_path / "in.npz", b=b, a=a)
    got = run_library(report.output, tmp_path / "in.npz")
    np.testing.assert_allclose(got["s"], a + b, atol=1e-6)
    np.testing.assert_allclose(got["p"], a * b, atol=1e-6)
    with pytest.raises(InvalidInputError, match="one array but the model takes 2 inputs"):
        run_library(report.output, models.npy(tmp_path, "a.npy", a))


def test_input_of_the_wrong_shape_is_refused_naming_both(conv_lib, tmp_path):
    _, report = conv_lib
    bad = models.npy(tmp_path, "x.npy", rand(1, 3, 4, 4))
    with pytest.raises(InvalidInputError, match=r"input 'x': expected float32\[1, 3, 8, 8\], got float32\[1, 3, 4, 4\]"):
        run_library(report.output, bad)


def test_bench_reports_a_positive_median_and_spread(conv_lib):
    _, report = conv_lib
    b = bench_library(report.output, spec=MeasureSpec(warmup=2, repeats=5, max_rounds=1))
    assert b.median_ms > 0 and b.iqr_ms >= 0
    assert len(b.timing.samples_ms) == 5 and b.threads >= 1


def test_library_without_its_sidecar_is_refused(conv_lib, tmp_path):
    _, report = conv_lib
    lone = tmp_path / "lone.so"
    shutil.copy(report.output, lone)
    with pytest.raises(InvalidInputError, match=r"no lone\.so\.json beside it"):
        run_library(lone)


def test_sidecar_of_another_build_is_refused(conv_lib, tmp_path):
    _, report = conv_lib
    lib = tmp_path / "m.so"
    shutil.copy(report.output, lib)
    shutil.copy(report.sidecar, tmp_path / "m.so.json")
    with open(lib, "ab") as f:
        f.write(b"\0")
    with pytest.raises(InvalidInputError, match="describes another build"):
        run_library(lib)


def test_failed_compile_leaves_the_previous_library_untouched(conv_lib, tmp_path):
    _, report = conv_lib
    out = tmp_path / "keep.so"
    shutil.copy(report.output, out)
    before = out.read_bytes()
    with pytest.raises(InvalidModelError):
        compile_model(models.unsupported(tmp_path), output=out)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.so", "unsupported.onnx"]


def test_unknown_dimensions_are_refused(tmp_path):
    with pytest.raises(InvalidModelError, match=r"unknown dimension.*x\[-1, 4\].*fixed input shapes"):
        compile_model(models.dynamic_batch(tmp_path), output=tmp_path / "d.so")


def test_output_suffix_decides_the_artifact(tmp_path):
    with pytest.raises(InvalidInputError, match=r"m\.bin: .*\.so \(shared library\), \.tar \(object archive\)"):
        compile_model(models.conv_relu(tmp_path), output=tmp_path / "m.bin")


def test_a_library_compiled_again_to_the_same_path_runs_as_the_new_model(tmp_path):
    # the dynamic loader keeps a library loaded from a path; loading the path again after it was
    # replaced must not hand back the first model (it did: conv_relu ran with matmul's input)
    out = tmp_path / "m.so"
    compile_model(models.conv_relu(tmp_path), "host", output=out)
    x = rand(1, 3, 8, 8, seed=1)
    assert run_library(out, models.npy(tmp_path, "x.npy", x))["y"].shape == (1, 4, 8, 8)
    compile_model(models.matmul_add(tmp_path), "host", output=out)
    x = rand(4, 16, seed=3)
    got = run_library(out, models.npy(tmp_path, "x2.npy", x))["y"]
    np.testing.assert_allclose(got, x @ rand(16, 8, seed=1) + rand(8, seed=2), atol=1e-4)


def test_traced_shape_arithmetic_is_folded_before_lowering(tmp_path):
    # a channel shuffle whose Reshape targets and Slice bounds come from Shape -> Gather -> Div ->
    # Concat, as torch's TorchScript exporter writes it: TVM's importer needs them constant
    import onnx

    from tests.helpers.onnx_builders import channel_shuffle_model

    src = tmp_path / "shuffle.onnx"
    onnx.save(channel_shuffle_model(), src)
    report = compile_model(src, "host", output=tmp_path / "shuffle.so")
    assert report.max_abs_diff is not None and report.max_abs_diff < 1e-4
    x = rand(1, 3, 6, 6, seed=2)
    got = run_library(report.output, models.npy(tmp_path, "x.npy", x))
    np.testing.assert_allclose(got["out"], onnxruntime_outputs(str(src), {"x": x})[0], atol=1e-4)
