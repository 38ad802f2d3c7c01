"""DenseNet-style blocks through the dense rewrite: each batch norm + relu before a 1x1 conv
taken into the conv's input read (its prologue), the block's concats with no copy (concat.py:
the producers write their slices of one buffer, the 1x1 convs read its first channels), the
transition's pool before its conv (pool.py); the built module against onnxruntime, on the
host's plans (AVX-512 here) and AVX2's."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

from hwlat.kernels.dense.lowering import fuse_dense
from hwlat.lowering.custom import import_onnx
from hwlat.lowering.pipelines import PipelineOptions, make_pipeline
from hwlat.lowering.targets import make_target
from tests.helpers.relax_calls import calls as _calls

pytestmark = pytest.mark.tvm

RNG = np.random.default_rng(17)
HASWELL = tvm.target.Target({"kind": "llvm", "mcpu": "haswell", "num-cores": 1})  # AVX2


def _f32(*shape) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _dense_model(c0: int = 13, hw: int = 9, growth=(7, 5), mid: int = 20, trans: int = 11,
                 side_output: bool = True) -> onnx.ModelProto:
    """x (1, c0, hw, hw) -> dense layers (BN, Relu, Conv 1x1 -> mid, Relu, Conv 3x3 -> g), each
    reading the concat of x and every feature before it -> the last concat -> BN, Relu, Conv 1x1
    -> trans, AveragePool 2x2 (a transition); with `side_output`, the last concat's global
    average pool is an output too (a reader of the full concat that is not a conv)."""
    inits, nodes = [], []

    def const(name, a):
        inits.append(numpy_helper.from_array(a, name))
        return name

    def bn_relu_conv(src, cin, cout, k, name):
        bn = [const(f"{name}_{p}", a) for p, a in (
            ("g", RNG.uniform(0.5, 1.5, cin).astype(np.float32)), ("b", _f32(cin)),
            ("m", _f32(cin)), ("v", RNG.uniform(0.5, 2.0, cin).astype(np.float32)))]
        nodes.append(helper.make_node("BatchNormalization", [src, *bn], [f"{name}_n"]))
        nodes.append(helper.make_node("Relu", [f"{name}_n"], [f"{name}_r"]))
        w = const(f"{name}_w", (_f32(cout, cin, k, k) / np.sqrt(cin * k * k)).astype(np.float32))
        nodes.append(helper.make_node("Conv", [f"{name}_r", w], [f"{name}_c"], pads=[k // 2] * 4))
        return f"{name}_c"

    feats, chans = ["x"], c0
    for i, g in enumerate(growth):
        src = feats[0] if len(feats) == 1 else f"cat{i}"
        if len(feats) > 1:
            nodes.append(helper.make_node("Concat", list(feats), [src], axis=1))
        h = bn_relu_conv(src, chans, mid, 1, f"l{i}a")
        feats.append(bn_relu_conv(h, mid, g, 3, f"l{i}b"))
        chans += g
    nodes.append(helper.make_node("Concat", list(feats), ["top"], axis=1))
    t = bn_relu_conv("top", chans, trans, 1, "t")
    nodes.append(helper.make_node("AveragePool", [t], ["y"], kernel_shape=[2, 2], strides=[2, 2]))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, trans, hw // 2, hw // 2])]
    if side_output:
        nodes.append(helper.make_node("GlobalAveragePool", ["top"], ["gap"]))
        outputs.append(helper.make_tensor_value_info("gap", TensorProto.FLOAT, [1, chans, 1, 1]))
    graph = helper.make_graph(nodes, "dense", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, c0, hw, hw])], outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _check(model: onnx.ModelProto, target) -> None:
    x = _f32(*[d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim])
    want = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})
    with target:
        ex = tvm.compile(make_pipeline("default", PipelineOptions(target))(import_onnx(model)),
                         target=target)
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x))
    got = [got] if hasattr(got, "numpy") else list(got)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-5, atol=1e-5 * np.abs(w).max())


def _rewritten(model: onnx.ModelProto, target):
    with target:
        return _calls(fuse_dense(relax.transform.FoldConstant()(import_onnx(model))))


def test_dense_block_has_no_batch_norm_nor_concat_and_matches_onnxruntime():
    """3 producers of 13 (x, copied in), 7 and 5 channels; every BN + Relu in a conv's prologue;
    no concat left; onnxruntime's outputs."""
    model = _dense_model()
    target = make_target(threads=1)
    calls = _rewritten(model, target)
    assert not {"relax.concat", "relax.nn.batch_norm", "relax.nn.relu"} & set(calls), calls
    assert calls["tir:hwlat_concat_copy"] == 1 and calls["relax.call_tir_inplace"] == 2, calls
    # the transition's pool first (on the odd 9x9 map: the same floor windows), then the conv
    assert calls["tir:hwlat_prologue_pool"] == 1 and "relax.nn.avg_pool2d" not in calls, calls
    _check(model, target)


@pytest.mark.heavy
def test_dense_block_on_avx2_plans_matches_onnxruntime():
    _check(_dense_model(c0=10, hw=11, growth=(9, 6, 3), mid=17, trans=7), HASWELL)


def test_concat_read_by_other_ops_keeps_its_copy():
    """A shorter concat read by an op other than a 1x1 conv (here an output) stays a concat."""
    model = _dense_model(side_output=False)
    model.graph.output.append(helper.make_tensor_value_info("cat1", TensorProto.FLOAT, None))
    calls = _rewritten(model, make_target(threads=1))
    assert calls["relax.concat"] == 2 and calls["tir:hwlat_concat_copy"] == 0, calls


def test_a_lone_concat_keeps_its_copy():
    """One dense layer: the only concat (of x and one feature) has no prefix concat beside it,
    so it is left as it is (Inception's modules too); the prologues still fuse."""
    calls = _rewritten(_dense_model(growth=(7,), side_output=False), make_target(threads=1))
    assert calls["relax.concat"] == 1 and "relax.call_tir_inplace" not in calls, calls
    assert "relax.nn.batch_norm" not in calls, calls
