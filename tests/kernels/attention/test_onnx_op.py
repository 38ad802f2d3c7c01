"""ONNX opset-23 Attention: lowered through relax.nn.attention into hwlat's fused kernel, equal
to onnxruntime (self, cross, causal, scale); what is not lowered is refused with its reason."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto
from onnx import helper as h

from hwlat.lowering.compile import compile_model
from hwlat.lowering.custom import import_onnx
from hwlat.lowering.pipelines import PipelineOptions, make_pipeline
from hwlat.lowering.support import LoweringUnsupportedError
from hwlat.lowering.targets import make_target

pytestmark = pytest.mark.tvm


def attention_model(path, sq: int, sk: int, causal: int = 0, scale: float | None = None,
                    extra: tuple[str, ...] = ()):
    attrs = {"is_causal": causal, **({"scale": scale} if scale else {})}
    node = h.make_node("Attention", ["q", "k", "v", *extra], ["y"], **attrs)
    inputs = [h.make_tensor_value_info("q", TensorProto.FLOAT, [1, 2, sq, 32]),
              h.make_tensor_value_info("k", TensorProto.FLOAT, [1, 2, sk, 32]),
              h.make_tensor_value_info("v", TensorProto.FLOAT, [1, 2, sk, 32])]
    inputs += [h.make_tensor_value_info(x, TensorProto.FLOAT, [sq, sk]) for x in extra]
    g = h.make_graph([node], "attention", inputs,
                     [h.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, sq, 32])])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 23)])
    m.ir_version = 10
    onnx.save(m, path)
    return path


@pytest.mark.parametrize("sq, sk, causal, scale", [
    (17, 17, 0, None), (17, 17, 1, None), (9, 23, 0, None), (23, 9, 1, 0.3)])
def test_matches_onnxruntime(tmp_path, sq, sk, causal, scale):
    path = attention_model(tmp_path / "a.onnx", sq, sk, causal, scale)
    r = compile_model(path, output=tmp_path / "a.so")
    assert r.max_abs_diff is not None and r.max_abs_diff < 1e-5, r.note


def test_runs_through_the_fused_kernel(tmp_path):
    path = attention_model(tmp_path / "a.onnx", 17, 17, 1)
    target = make_target("host")
    with target:
        mod = import_onnx(onnx.load(path))
    assert "R.nn.attention" in mod.script()
    # the pipeline's first pass is the fused attention rewrite
    built = make_pipeline("default", PipelineOptions(target))(mod)
    assert "hwlat_attention" in built.script() and "softmax" not in built.script()


def test_a_mask_is_refused_with_the_reason(tmp_path):
    path = attention_model(tmp_path / "a.onnx", 8, 8, extra=("mask",))
    with pytest.raises(LoweringUnsupportedError, match="Attention \\(x1\\): an attention mask"):
        compile_model(path, output=tmp_path / "a.so")
    assert not (tmp_path / "a.so").exists()
