"""Models users bring (timm:NAME, torchvision:NAME) and shapes resolved behind traced shape
arithmetic: Shape -> Gather -> Concat -> Reshape chains, as torch's TorchScript exporter writes."""

from __future__ import annotations

import importlib
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from hwlat.errors import InvalidModelError
from hwlat.graph import fuse, load
from hwlat.graph.summary import summarize
from hwlat.zoo import corpus
from tests.helpers.cli import run_hwlat
from tests.helpers.onnx_builders import channel_shuffle_model

INT64 = TensorProto.INT64


def test_onnx_inference_alone_leaves_the_chain_unresolved():
    # the premise of the folding: without it, these shapes stay unknown
    inferred = onnx.shape_inference.infer_shapes(channel_shuffle_model(), data_prop=True)
    info = {v.name: v for v in inferred.graph.value_info}
    dims = info["left"].type.tensor_type.shape.dim
    assert not all(d.HasField("dim_value") for d in dims)


def test_shape_chain_is_folded_and_every_shape_is_known(tmp_path):
    path = tmp_path / "shuffle.onnx"
    onnx.save(channel_shuffle_model(), path)
    g = load(path)
    # the Shape/Gather/Div/Concat nodes became constants
    assert {n.op.name for n in g.nodes} == {"Conv", "Reshape", "Transpose", "Slice"}
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = ["y5", "t5", "shuffled", "left", "out"]
    probe = onnx.load(path)
    probe.graph.output.extend(helper.make_empty_tensor_value_info(v) for v in names[:-1])
    onnx.save(probe, tmp_path / "probe.onnx")
    sess = ort.InferenceSession(str(tmp_path / "probe.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"x": np.zeros((1, 3, 6, 6), np.float32)})
    want = dict(zip([o.name for o in sess.get_outputs()], got, strict=True))
    for v in names:
        assert g.values[v].shape == want[v].shape, v
    s = summarize(g, fuse(g))
    t = s.totals()
    assert all(r.cost.macs is not None for r in s.rows)
    # conv 3->8 (3x3) on 6x6, then conv 4->4 (1x1) on the left half of the shuffled channels
    assert t["macs"] == 8 * 36 * 27 + 4 * 36 * 4
    assert t["bytes_read"] is not None and t["bytes_written"] is not None


def test_folded_model_still_computes_the_same(tmp_path):
    path = tmp_path / "shuffle.onnx"
    onnx.save(channel_shuffle_model(), path)
    folded = load(path).meta["onnx"]
    x = np.random.default_rng(3).standard_normal((1, 3, 6, 6)).astype(np.float32)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = ort.InferenceSession(folded.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, want)
    assert not any(n.op_type == "Shape" for n in folded.graph.node)


def _reshape_by_input_data() -> onnx.ModelProto:
    """Reshape(x, s) with s a graph input: no folding can know the target shape, and the run
    that would measure it fails (s is fed zeros; allowzero=1 keeps them)."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "s"], ["y"], name="by_data", allowzero=1),
         helper.make_node("Relu", ["y"], ["z"])],
        "dyn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
                helper.make_tensor_value_info("s", INT64, [2])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["a", "b"])])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    return m


def test_unresolvable_shape_is_one_error_naming_the_value(tmp_path):
    path = tmp_path / "dyn.onnx"
    onnx.save(_reshape_by_input_data(), path)
    with pytest.raises(InvalidModelError, match="value 'y' \\(output of 'by_data' \\(Reshape #0\\)\\)"):
        load(path)
    r = hwlat("inspect", str(path), tmp=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "'y'" in lines[0], r.stderr


def test_measuring_shapes_is_bounded(tmp_path, monkeypatch):
    path = tmp_path / "dyn.onnx"
    onnx.save(_reshape_by_input_data(), path)
    monkeypatch.setattr(importlib.import_module("hwlat.graph.load"), "MEASURE_LIMIT_BYTES", 16)
    with pytest.raises(InvalidModelError, match="over the 0 MiB"):
        load(path)


def test_data_dependent_shape_is_measured_once(tmp_path):
    # NonZero's output size depends on the data: measured on the profilers' input (normal)
    graph = helper.make_graph(
        [helper.make_node("NonZero", ["x"], ["nz"]), helper.make_node("Cast", ["nz"], ["f"], to=1),
         helper.make_node("Relu", ["f"], ["out"])],
        "nz", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["a", "b"])])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    onnx.save(m, tmp_path / "nz.onnx")
    g = load(tmp_path / "nz.onnx")
    assert g.values["nz"].shape == (2, 6) and g.values["out"].shape == (2, 6)


def test_corpus_names_exist_and_span_the_families():
    timm = pytest.importorskip("timm")
    tv = pytest.importorskip("torchvision")
    known = set(timm.list_models())
    tv_known = set(tv.models.list_models(module=tv.models))
    assert len(corpus.CORPUS) >= 50
    assert len({m.spec for m in corpus.CORPUS}) == len(corpus.CORPUS)
    for m in corpus.CORPUS:
        assert m.name in (known if m.source == "timm" else tv_known), m.spec
    assert {"resnet", "regnet", "efficientnet", "mobilenet", "mnasnet-fbnet-ghostnet", "densenet",
            "inception", "squeezenet", "shufflenet", "convnext", "vit-deit", "swin",
            "hybrid"} <= set(corpus.FAMILIES)


@pytest.mark.slow
def test_zoo_corpus_lists_names_with_families(tmp_path):
    r = hwlat("zoo", "--corpus", tmp=tmp_path)
    assert r.returncode == 0, r.stderr
    for m in corpus.CORPUS[:: 7]:
        assert m.spec in r.stdout and m.family in r.stdout


@pytest.mark.slow
def test_unknown_timm_name_is_one_error_with_close_matches(tmp_path):
    r = hwlat("export", "timm:resnet18x", "-o", str(tmp_path / "m.onnx"), tmp=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown timm model 'resnet18x'"), r.stderr
    assert "resnet18" in lines[0]
    r = hwlat("export", "torchvision:shufflenet_v3", "-o", str(tmp_path / "m.onnx"), tmp=tmp_path)
    assert r.returncode == 2 and "shufflenet_v2_x1_0" in r.stderr


@pytest.mark.slow
def test_timm_is_imported_only_for_timm_names():
    import subprocess
    import sys

    code = ("import sys, hwlat.cli, hwlat.zoo, hwlat.zoo.corpus; "
            "print('timm' in sys.modules, 'torchvision' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["False", "False"], r.stdout + r.stderr


def _inspect_totals(path, tmp_path) -> dict:
    r = hwlat("inspect", str(path), "--json", tmp=tmp_path)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert all(k["macs"] is not None for k in data["kernels"]), \
        [k["key"] for k in data["kernels"] if k["macs"] is None]
    return data["totals"]


@pytest.mark.slow
@pytest.mark.parametrize("spec", [
    pytest.param("timm:resnet18", marks=pytest.mark.heavy), "timm:mobilenetv3_small_100",
    pytest.param("timm:deit_tiny_patch16_224", marks=pytest.mark.heavy),
    pytest.param("torchvision:shufflenet_v2_x0_5", marks=pytest.mark.heavy)])
def test_export_by_name_then_inspect_complete(spec, tmp_path):
    out = tmp_path / "m.onnx"
    r = hwlat("export", spec, "-o", str(out), tmp=tmp_path)
    assert r.returncode == 0, r.stderr
    assert float(r.stdout.split("max abs difference")[1].split()[0]) < 1e-3
    t = _inspect_totals(out, tmp_path)
    for field in ("macs", "params", "bytes_read", "bytes_written"):
        assert t[field] is not None and t[field] > 0, field


@pytest.mark.slow
def test_torch_exported_shufflenet_inspects_with_the_same_macs(tmp_path):
    # TorchScript's export traces the channel shuffle's shapes into Shape -> ... -> Reshape
    import torch

    model, inputs = corpus.build("torchvision:shufflenet_v2_x0_5")
    path = tmp_path / "s.torch.onnx"
    with torch.no_grad():
        torch.onnx.export(model, inputs, str(path), opset_version=17, dynamo=False)
    assert any(n.op_type == "Shape" for n in onnx.load(path).graph.node)
    t = _inspect_totals(path, tmp_path)
    # MACs of every conv and linear, from torch's own shapes via forward hooks
    macs = []

    def hook(mod, args, out):
        w = mod.weight
        macs.append(out.numel() * (w[0].numel() if isinstance(mod, torch.nn.Conv2d) else w.shape[1]))

    hooks = [m.register_forward_hook(hook) for m in model.modules()
             if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    with torch.no_grad():
        model(*inputs)
    for h in hooks:
        h.remove()
    assert t["macs"] == sum(macs)


def hwlat(*args, tmp):
    return run_hwlat(*args, home=tmp)
