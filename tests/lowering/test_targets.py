"""Cross targets: aarch64 artifacts built here, CUDA source generated here and run where a GPU is."""

from __future__ import annotations

import tarfile

import numpy as np
import pytest
import tvm

from hwlat.devices.spec import load_device
from hwlat.errors import InvalidInputError
from hwlat.lowering import compile as compile_module
from hwlat.lowering import compile_model, make_target, resolve_target, run_library
from hwlat.lowering.compile import device_source, lower
from hwlat.lowering.targets import find_linker, linker_names, system_cpu, target_dict
from tests.helpers import lowering_models as models

pytestmark = pytest.mark.tvm

EM_AARCH64 = 183
HAS_GPU = tvm.cuda(0).exist


def elf_machine(data: bytes) -> int:
    assert data[:4] == b"\x7fELF"
    return int.from_bytes(data[18:20], "little")


def test_aarch64_object_archive_needs_no_cross_linker(tmp_path, monkeypatch):
    monkeypatch.setattr(compile_module, "find_linker", lambda names: None)
    report = compile_model(models.conv_relu(tmp_path), "aarch64", output=tmp_path / "m.tar")
    assert (report.artifact, report.target_kind, report.max_abs_diff) == ("object archive", "aarch64", None)
    assert "does not run here" in report.note
    with tarfile.open(report.output) as tar:
        objects = [m for m in tar.getmembers() if m.name.endswith(".o")]
        assert objects
        assert {elf_machine(tar.extractfile(m).read(64)) for m in objects} == {EM_AARCH64}
    with pytest.raises(InvalidInputError, match="object archive, to be linked on its device"):
        run_library(report.output)


def test_aarch64_shared_library_without_cross_linker_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("HWLAT_CROSS_CC", raising=False)
    monkeypatch.setattr(compile_module, "find_linker", lambda names: None)
    with pytest.raises(InvalidInputError, match=r"needs aarch64-linux-gnu-g\+\+ or aarch64-linux-gnu-gcc, "
                                                r"not found \(Debian: apt-get install gcc-aarch64-linux-gnu.*-o m\.tar"):
        compile_model(models.conv_relu(tmp_path), "aarch64", output=tmp_path / "m.so")
    assert not (tmp_path / "m.so").exists()


@pytest.mark.skipif(find_linker(linker_names(make_target("aarch64"))) is None,
                    reason="no aarch64 cross compiler (apt-get install gcc-aarch64-linux-gnu)")
def test_aarch64_shared_library_is_cross_linked(tmp_path):
    report = compile_model(models.conv_relu(tmp_path), "aarch64", output=tmp_path / "m.so")
    data = report.output.read_bytes()
    assert elf_machine(data) == EM_AARCH64 and int.from_bytes(data[16:18], "little") == 3  # ET_DYN
    with pytest.raises(InvalidInputError, match="built for aarch64-linux-gnu, not this machine"):
        run_library(report.output)


def test_a_dlight_rule_that_raises_hands_the_function_to_the_next_rule():
    """DLight's GPU Matmul rule asserts on some fused epilogues (EfficientNetV2's); hwlat's CUDA
    pipeline guards each rule so the next one (at last Fallback) schedules the function."""
    from hwlat.lowering.pipelines import _Guarded

    class Asserts:
        def apply(self, func, target, tunable):
            raise AssertionError("consumers of the cache-write stage are not inlined")

    class Schedules:
        def apply(self, func, target, tunable):
            return "scheduled"

    assert _Guarded(Asserts()).apply(None, None, False) is None
    assert _Guarded(Schedules()).apply(None, None, False) == "scheduled"


def test_cuda_source_has_kernels(tmp_path):
    built = lower(models.conv_relu(tmp_path), "cuda")
    assert "__global__" in device_source(built.executable, "cuda")
    target = make_target("cuda")
    assert (target.kind.name, target.host.kind.name) == ("cuda", "llvm")


@pytest.mark.skipif(HAS_GPU, reason="checks the refusal where no GPU is")
def test_cuda_library_exports_here_and_refuses_to_run_without_a_gpu(tmp_path):
    report = compile_model(models.matmul_add(tmp_path), "cuda", output=tmp_path / "m.so")
    assert report.output.is_file() and report.max_abs_diff is None
    with pytest.raises(InvalidInputError, match="built for CUDA and this machine has no CUDA GPU"):
        run_library(report.output)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="no CUDA GPU (tvm.cuda(0).exist is False)")
def test_cuda_library_runs_and_matches_onnxruntime(tmp_path):
    arch = "sm_" + tvm.cuda(0).compute_version.replace(".", "")
    target = make_target("cuda", {"arch": arch})
    for src in (models.conv_relu(tmp_path), models.matmul_add(tmp_path)):
        report = compile_model(src, target, output=tmp_path / "m.so")
        assert report.max_abs_diff is not None and report.max_abs_diff < 1e-4, report
        assert all(np.isfinite(o).all() for o in run_library(report.output).values())


def test_host_target_comes_from_the_tvm_device_file():
    spec = load_device("cpu-tvm")
    target = resolve_target(device=spec)
    assert target.kind.name == "llvm" and str(target.attrs["mcpu"]) == system_cpu()
    assert int(target.attrs["num-cores"]) == spec.threads
    other = resolve_target(device=spec, kind="aarch64")  # another kind asked of it: that kind's defaults
    assert str(other.attrs["mtriple"]) == "aarch64-linux-gnu"
    with pytest.raises(InvalidInputError, match="device 'cpu-ort' runs onnxruntime"):
        resolve_target(device=load_device("cpu-ort"))


def test_resolve_target_takes_kinds_dicts_targets_and_device_files_as_written():
    host = resolve_target("host", threads=3)
    assert int(host.attrs["num-cores"]) == 3 and str(host.attrs["mcpu"]) == system_cpu()
    assert target_dict(resolve_target(threads=3)) == target_dict(host)
    assert target_dict(resolve_target(kind="aarch64")) == target_dict(make_target("aarch64"))
    assert resolve_target(host) is host
    assert str(resolve_target({"kind": "llvm", "mcpu": "haswell"}).attrs["mcpu"]) == "haswell"
    with pytest.raises(InvalidInputError, match="bad target"):
        resolve_target({"kind": "no-such-kind"})
    # as the RPC runner builds for a remote device: the file's table, mcpu "host" resolved only
    phone = load_device("arm64-mobile")
    written = resolve_target(device=phone, as_written=True)
    assert target_dict(written)["mtriple"] == phone.target["mtriple"]
    assert "num-cores" not in target_dict(written)
    tvm_cpu = resolve_target(device=load_device("cpu-tvm"), as_written=True)
    assert str(tvm_cpu.attrs["mcpu"]) == system_cpu()


def _kernel_functions(model_path: str, target) -> set[str]:
    """The PrimFuncs of hwlat's kernels a build for `target` puts in the module (the pipeline's
    kernel rewrites, on the imported model)."""
    import onnx

    from hwlat.lowering.custom import import_onnx
    from hwlat.lowering.pipelines import PipelineOptions, _kernel_rewrites

    with target:
        mod = import_onnx(onnx.load(model_path), target=target)
        mod = tvm.transform.Sequential(_kernel_rewrites(PipelineOptions(target)))(mod)
    return {gv.name_hint for gv, f in mod.functions.items()
            if isinstance(f, tvm.tirx.PrimFunc) and gv.name_hint.startswith("hwlat_")}


def test_aarch64_builds_get_no_x86_tiled_dense_kernels(tmp_path):
    from hwlat.kernels.target import host_arch
    from hwlat.lowering.pipelines import kernel_rewrites

    x86 = resolve_target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "haswell"})
    host, arm = make_target("host"), make_target("aarch64")
    assert kernel_rewrites(x86) == ["attention", "dense"]
    assert kernel_rewrites(arm) == ["attention"]  # attention is generic TIR: every CPU target
    assert kernel_rewrites(make_target("cuda")) == []
    assert kernel_rewrites(host) == kernel_rewrites(x86 if host_arch() == "x86_64" else arm)
    src = models.conv_relu(tmp_path)
    assert any(name.startswith("hwlat_conv2d") for name in _kernel_functions(src, x86))
    assert _kernel_functions(src, arm) == set()  # the conv is left to TVM's own lowering


def test_unknown_target_kind_lists_the_kinds():
    with pytest.raises(InvalidInputError, match="unknown target kind 'arm'; known: host, aarch64, cuda"):
        make_target("arm")
