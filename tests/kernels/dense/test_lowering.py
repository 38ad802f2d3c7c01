"""The dense rewrite (hwlat/kernels/dense/lowering.py): which chains become one kernel call, what
is left to TVM, and the built module's output against numpy; ONNX Clip imported as relax.clip."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tvm
from onnx import TensorProto, helper
from tvm import relax

from hwlat.kernels.dense import Conv2dSpec, Epilogue, conv2d_reference
from hwlat.kernels.dense.lowering import fuse_dense
from hwlat.lowering.custom import import_onnx
from hwlat.lowering.pipelines import PipelineOptions, make_pipeline
from hwlat.lowering.targets import make_target
from tests.helpers.relax_calls import calls as _calls

pytestmark = pytest.mark.tvm

TARGET = make_target(threads=1)
RNG = np.random.default_rng(7)


def _f32(*shape) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _module(build) -> tvm.IRModule:
    """A module whose main takes x (and r), with the body `build(bb, x, r)` in a dataflow block."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 8, 10, 9), "float32"))
    r = relax.Var("r", relax.TensorType((1, 16, 10, 9), "float32"))
    with bb.function("main", [x, r]):
        with bb.dataflow():
            out = bb.emit_output(build(bb, x, r))
        bb.emit_func_output(out)
    return bb.get()


W = _f32(16, 8, 3, 3)
B = _f32(16)
DW = _f32(8, 1, 3, 3)


def _conv(bb, x, w=W, groups=1, **kw):
    return bb.emit(relax.op.nn.conv2d(x, relax.const(w), padding=(1, 1, 1, 1), groups=groups, **kw))


def _bias(bb, y, b=B):
    return bb.emit(relax.op.add(y, relax.const(b.reshape(1, -1, 1, 1))))


def _build_run(mod: tvm.IRModule, *args: np.ndarray) -> np.ndarray:
    passes = make_pipeline("default", PipelineOptions(TARGET))
    with TARGET:
        ex = tvm.compile(passes(mod), target=TARGET)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm["main"](*(tvm.runtime.tensor(a) for a in args)).numpy()


def _hardswish(bb, v, three: float = 3.0):
    """As TVM imports ONNX HardSwish: v * (clip(v + 3, 0, 6) / 6)."""
    shifted = bb.emit(relax.op.add(v, relax.const(three, "float32")))
    clipped = bb.emit(relax.op.clip(shifted, 0, 6))
    return bb.emit(relax.op.multiply(v, bb.emit(relax.op.divide(clipped, relax.const(6.0, "float32")))))


CHAINS = {
    # name: (body, epilogue, residual operand left of the add)
    "conv+bias+residual+relu": (
        lambda bb, x, r: bb.emit(relax.op.nn.relu(bb.emit(relax.op.add(_bias(bb, _conv(bb, x)), r)))),
        Epilogue(True, True, "relu")),
    "residual-left+clip": (
        lambda bb, x, r: bb.emit(relax.op.clip(bb.emit(relax.op.add(r, _bias(bb, _conv(bb, x)))), -0.5, 1.5)),
        Epilogue(True, True, "clip", -0.5, 1.5)),
    "bias-first-operand": (
        lambda bb, x, r: bb.emit(relax.op.add(relax.const(B.reshape(1, -1, 1, 1)), _conv(bb, x))),
        Epilogue(True, False, "none")),
    "conv-alone": (lambda bb, x, r: _conv(bb, x), Epilogue(False, False, "none")),
    "conv+bias+hardswish": (lambda bb, x, r: _hardswish(bb, _bias(bb, _conv(bb, x))),
                            Epilogue(True, False, "hardswish")),
    "conv+bias+gelu": (lambda bb, x, r: bb.emit(relax.op.nn.gelu(_bias(bb, _conv(bb, x)))),
                       Epilogue(True, False, "gelu")),
}


@pytest.mark.parametrize("name", CHAINS)
def test_chain_becomes_one_kernel_and_matches_numpy(name):
    body, ep = CHAINS[name]
    mod = _module(body)
    calls = _calls(fuse_dense(mod))
    assert calls == {"tir:hwlat_conv2d": 1}, calls
    x, r = _f32(1, 8, 10, 9), _f32(1, 16, 10, 9)
    spec = Conv2dSpec(1, 8, 10, 9, 16, (3, 3), padding=(1, 1, 1, 1), epilogue=ep)
    want = conv2d_reference(spec, x, W, B, r)
    got = _build_run(mod, x, r)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_hardswish_with_other_constants_is_not_fused():
    mod = _module(lambda bb, x, r: _hardswish(bb, _bias(bb, _conv(bb, x)), three=2.0))
    calls = _calls(fuse_dense(mod))
    assert calls["tir:hwlat_conv2d"] == 1 and calls["relax.multiply"] == 1, calls


def test_value_used_twice_is_not_fused_into_the_chain():
    """conv + bias feeds both the relu and the output: the kernel takes conv + bias only."""

    def body(bb, x, r):
        y = _bias(bb, _conv(bb, x))
        return bb.emit(relax.Tuple([bb.emit(relax.op.nn.relu(y)), y]))

    mod = _module(body)
    calls = _calls(fuse_dense(mod))
    assert calls["tir:hwlat_conv2d"] == 1 and calls["relax.nn.relu"] == 1, calls
    x, r = _f32(1, 8, 10, 9), _f32(1, 16, 10, 9)
    spec = Conv2dSpec(1, 8, 10, 9, 16, (3, 3), padding=(1, 1, 1, 1))
    want = conv2d_reference(spec, x, W, B)
    passes = make_pipeline("default", PipelineOptions(TARGET))
    with TARGET:
        ex = tvm.compile(passes(mod), target=TARGET)
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(r))
    np.testing.assert_allclose(got[1].numpy(), want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got[0].numpy(), np.maximum(want, 0), rtol=1e-4, atol=1e-4)


def test_residual_picks_the_operand_whose_chain_is_private():
    """x = convA + bias is used twice (the residual and convB's input): the kernel fuses convB
    with x as its residual, not convA (which would compute convA twice)."""
    wa, wb = _f32(8, 8, 3, 3), _f32(8, 8, 3, 3)
    ba, bbias = _f32(8), _f32(8)

    def body(bb, x, r):
        a = _bias(bb, _conv(bb, x, wa), ba)
        b = _bias(bb, _conv(bb, a, wb), bbias)
        return bb.emit(relax.op.add(a, b))

    mod = _module(body)
    assert _calls(fuse_dense(mod)) == {"tir:hwlat_conv2d": 2}
    x, r = _f32(1, 8, 10, 9), _f32(1, 16, 10, 9)
    spec = Conv2dSpec(1, 8, 10, 9, 8, (3, 3), padding=(1, 1, 1, 1))
    a = conv2d_reference(spec, x, wa, ba)
    want = a + conv2d_reference(spec, a, wb, bbias)
    np.testing.assert_allclose(_build_run(mod, x, r), want, rtol=1e-4, atol=1e-4)


def test_depthwise_and_matmul_kernels_are_chosen():
    w_fc = _f32(9, 5)
    b_fc = _f32(5)

    def body(bb, x, r):
        y = bb.emit(relax.op.clip(_bias(bb, _conv(bb, x, DW, groups=8), B[:8]), 0.0, 6.0))
        return bb.emit(relax.op.add(bb.emit(relax.op.matmul(y, relax.const(w_fc))), relax.const(b_fc)))

    mod = _module(body)
    assert _calls(fuse_dense(mod)) == {"tir:hwlat_depthwise_conv2d": 1, "tir:hwlat_matmul": 1,
                                       "relax.reshape": 2}
    x, r = _f32(1, 8, 10, 9), _f32(1, 16, 10, 9)
    spec = Conv2dSpec(1, 8, 10, 9, 8, (3, 3), padding=(1, 1, 1, 1), groups=8,
                      epilogue=Epilogue(True, False, "clip", 0.0, 6.0))
    y = conv2d_reference(spec, x, DW, B[:8])
    want = (y.astype(np.float64) @ w_fc + b_fc).astype(np.float32)
    np.testing.assert_allclose(_build_run(mod, x, r), want, rtol=1e-4, atol=1e-4)


def test_grouped_kernel_takes_grouped_and_dilated_depthwise_convs():
    wg = _f32(16, 4, 3, 3)  # groups 2: neither dense nor depthwise
    wd = _f32(16, 1, 3, 3)  # depthwise, dilation 2 (the depthwise kernel takes dilation 1 only)

    def body(bb, x, r):
        g = bb.emit(relax.op.nn.relu(bb.emit(relax.op.add(_bias(bb, _conv(bb, x, wg, groups=2)), r))))
        d = bb.emit(relax.op.nn.conv2d(g, relax.const(wd), padding=(2, 2, 2, 2), dilation=(2, 2),
                                       groups=16))
        return _hardswish(bb, _bias(bb, d))

    mod = _module(body)
    assert _calls(fuse_dense(mod)) == {"tir:hwlat_grouped_conv2d": 2}
    x, r = _f32(1, 8, 10, 9), _f32(1, 16, 10, 9)
    gspec = Conv2dSpec(1, 8, 10, 9, 16, (3, 3), padding=(1, 1, 1, 1), groups=2,
                       epilogue=Epilogue(True, True, "relu"))
    dspec = Conv2dSpec(1, 16, 10, 9, 16, (3, 3), padding=(2, 2, 2, 2), dilation=(2, 2), groups=16,
                       epilogue=Epilogue(True, False, "hardswish"))
    want = conv2d_reference(dspec, conv2d_reference(gspec, x, wg, B, r), wd, B)
    np.testing.assert_allclose(_build_run(mod, x, r), want, rtol=1e-4, atol=1e-4)


def test_what_the_kernels_do_not_take_is_left_to_tvm():
    def body(bb, x, r):
        nhwc = bb.emit(relax.op.nn.conv2d(bb.emit(relax.op.permute_dims(x, [0, 2, 3, 1])),
                                          relax.const(W.transpose(2, 3, 1, 0).copy()),
                                          padding=(1, 1, 1, 1), data_layout="NHWC",
                                          kernel_layout="HWIO", out_layout="NCHW"))
        weight_input = bb.emit(relax.op.nn.conv2d(x, bb.emit(relax.op.multiply(relax.const(W), relax.const(W))),
                                                  padding=(1, 1, 1, 1)))
        return bb.emit(relax.op.add(nhwc, weight_input))

    mod = _module(body)
    assert fuse_dense(mod).same_as(mod)  # nothing rewritten: the same module back


def _clip_model(lo, hi, opset: int = 17) -> onnx.ModelProto:
    inits, inputs = [], ["x"]
    for name, v in (("lo", lo), ("hi", hi)):
        if v is None:
            inputs.append("")
        else:
            inits.append(helper.make_tensor(name, TensorProto.FLOAT, [], [v]))
            inputs.append(name)
    while inputs and inputs[-1] == "":
        inputs.pop()
    node = helper.make_node("Clip", inputs, ["y"])
    graph = helper.make_graph([node], "clip", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("bounds", [(0.0, 6.0), (None, 1.0), (-1.0, None), (float("nan"), 0.5)])
def test_onnx_clip_with_constant_bounds_imports_as_relax_clip(bounds):
    model = _clip_model(*bounds)
    with TARGET:
        mod = import_onnx(model)
    assert "relax.clip" in _calls(mod)
    x = np.linspace(-3, 8, 10, dtype=np.float32).reshape(2, 5)
    want = ort.InferenceSession(model.SerializeToString())
    want = want.run(None, {"x": x})[0]
    with TARGET:
        ex = tvm.compile(make_pipeline("default", PipelineOptions(TARGET))(mod), target=TARGET)
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_array_equal(got, want)


def test_onnx_clip_with_input_bounds_keeps_tvms_conversion():
    node = helper.make_node("Clip", ["x", "lo"], ["y"])
    graph = helper.make_graph(
        [node], "clip", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3]),
                         helper.make_tensor_value_info("lo", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with TARGET:
        mod = import_onnx(model)
    assert "relax.clip" not in _calls(mod)
    with TARGET:
        ex = tvm.compile(make_pipeline("default", PipelineOptions(TARGET))(mod), target=TARGET)
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](
        tvm.runtime.tensor(np.array([-2.0, 0.5, 3.0], np.float32)),
        tvm.runtime.tensor(np.array(0.0, np.float32))).numpy()
    np.testing.assert_array_equal(got, [0.0, 0.5, 3.0])


def test_onnx_conv_hardswish_and_matmul_gelu_fuse_and_match_onnxruntime():
    """ONNX Conv(bias) -> HardSwish -> Reshape -> MatMul -> Add -> Gelu, as TVM imports them:
    two kernel calls, no activation left over, onnxruntime's output."""
    from onnx import numpy_helper

    w, b = _f32(4, 3, 3, 3), _f32(4)
    wm, bm = _f32(36, 7), _f32(7)
    inits = [numpy_helper.from_array(a, n) for a, n in ((w, "w"), (b, "b"), (wm, "wm"), (bm, "bm"),
                                                         (np.array([1, 36], np.int64), "shape"))]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("HardSwish", ["c"], ["h"]),
             helper.make_node("Reshape", ["h", "shape"], ["f"]),
             helper.make_node("MatMul", ["f", "wm"], ["m"]),
             helper.make_node("Add", ["m", "bm"], ["a"]),
             helper.make_node("Gelu", ["a"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 3, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 7])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    with TARGET:
        mod = import_onnx(model)
        mod = relax.transform.FoldConstant()(mod)
    calls = _calls(fuse_dense(mod))
    assert calls["tir:hwlat_conv2d"] == 1 and calls["tir:hwlat_matmul"] == 1, calls
    assert not {"relax.multiply", "relax.clip", "relax.nn.gelu", "relax.add"} & set(calls), calls
    x = _f32(1, 3, 3, 3) * 3
    want = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    with TARGET:
        mod = import_onnx(model)
        ex = tvm.compile(make_pipeline("default", PipelineOptions(TARGET))(mod), target=TARGET)
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_layer_norm_and_spatial_mean_become_kernels_and_match_numpy():
    """layer_norm over the last axis of a 3-D tensor (constant scale and shift) and a mean over
    the spatial axes (keepdims both ways); a mean over the channels is left to TVM."""
    gamma, beta = _f32(9), _f32(9)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 5, 9), "float32"))
    p = relax.Var("p", relax.TensorType((2, 3, 4, 5), "float32"))
    with bb.function("main", [x, p]):
        with bb.dataflow():
            ln = bb.emit(relax.op.nn.layer_norm(x, relax.const(gamma), relax.const(beta), axes=[-1],
                                                epsilon=1e-5))
            pool = bb.emit(relax.op.mean(p, axis=[2, 3], keepdims=True))
            flat = bb.emit(relax.op.mean(p, axis=[-1, -2], keepdims=False))
            chan = bb.emit(relax.op.mean(p, axis=[1], keepdims=False))
            out = bb.emit_output(relax.Tuple([ln, pool, flat, chan]))
        bb.emit_func_output(out)
    mod = bb.get()
    calls = _calls(fuse_dense(mod))
    assert calls["tir:hwlat_layer_norm"] == 1 and calls["tir:hwlat_mean_pool"] == 2, calls
    assert calls["relax.mean"] == 1, calls
    xv, pv = _f32(2, 5, 9) * 3 + 1, _f32(2, 3, 4, 5)
    passes = make_pipeline("default", PipelineOptions(TARGET))
    with TARGET:
        ex = tvm.compile(passes(mod), target=TARGET)
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(xv), tvm.runtime.tensor(pv))
    x64 = xv.astype(np.float64)
    mu, var = x64.mean(-1, keepdims=True), x64.var(-1, keepdims=True)
    np.testing.assert_allclose(got[0].numpy(), (x64 - mu) / np.sqrt(var + 1e-5) * gamma + beta,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[1].numpy(), pv.mean((2, 3), keepdims=True), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[2].numpy(), pv.mean((2, 3)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[3].numpy(), pv.mean(1), rtol=1e-5, atol=1e-6)


def test_layer_norm_over_permuted_channels_becomes_a_channel_norm_and_matches_onnxruntime():
    """ConvNeXt's LayerNorm2d as torch exports it: Transpose NCHW -> NHWC, LayerNormalization
    over the last axis, Transpose back: one channel-norm kernel, no transposes left; a 3x3 map
    (fewer than 16 pixels) keeps the transposes and the last-axis kernel."""
    graphs = []
    for hw in (9, 3):
        c = 37
        inits = [helper.make_tensor("g", TensorProto.FLOAT, [c], _f32(c).ravel()),
                 helper.make_tensor("b", TensorProto.FLOAT, [c], _f32(c).ravel())]
        nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
                 helper.make_node("LayerNormalization", ["t", "g", "b"], ["n"], axis=-1,
                                  epsilon=1e-6),
                 helper.make_node("Transpose", ["n"], ["y"], perm=[0, 3, 1, 2])]
        graph = helper.make_graph(
            nodes, "ln2d", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, c, hw, hw])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, c, hw, hw])], inits)
        graphs.append((hw, helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])))
    for hw, model in graphs:
        with TARGET:
            calls = _calls(fuse_dense(relax.transform.FoldConstant()(import_onnx(model))))
        if hw == 9:
            assert calls.get("tir:hwlat_channel_norm") == 1, calls
            assert "relax.permute_dims" not in calls and "relax.nn.layer_norm" not in calls, calls
        else:
            assert "tir:hwlat_channel_norm" not in calls and calls["tir:hwlat_layer_norm"] == 1
        x = _f32(2, 37, hw, hw) * 2 + 50
        want = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
        with TARGET:
            ex = tvm.compile(make_pipeline("default", PipelineOptions(TARGET))(import_onnx(model)),
                             target=TARGET)
        got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_3x3_stride1_conv_with_enough_channels_takes_winograd_and_matches_numpy():
    w32, b32 = _f32(32, 32, 3, 3), _f32(32)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 32, 10, 9), "float32"))
    r = relax.Var("r", relax.TensorType((1, 32, 10, 9), "float32"))
    with bb.function("main", [x, r]):
        with bb.dataflow():
            y = _bias(bb, _conv(bb, x, w32), b32)
            out = bb.emit_output(bb.emit(relax.op.nn.relu(bb.emit(relax.op.add(y, r)))))
        bb.emit_func_output(out)
    mod = bb.get()
    assert _calls(fuse_dense(mod)) == {"tir:hwlat_conv2d_winograd": 1}
    xv, rv = _f32(1, 32, 10, 9), _f32(1, 32, 10, 9)
    spec = Conv2dSpec(1, 32, 10, 9, 32, (3, 3), padding=(1, 1, 1, 1), epilogue=Epilogue(True, True, "relu"))
    want = conv2d_reference(spec, xv, w32, b32, rv)
    np.testing.assert_allclose(_build_run(mod, xv, rv), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def _block_module(cin: int, hw: int, cm: int, act1, act2, expand: bool = True,
                  cout: int = 0, residual: bool = False, mid_used_twice: bool = False,
                  stride: int = 2):
    """x -> [1x1 conv + bias + act1] -> depthwise 3x3 + bias + act2 -> [1x1 conv + bias
    (+ x)]; with mid_used_twice the depthwise input is an output too."""
    cm = cm if expand else cin
    w1, b1, w2, b2 = _f32(cm, cin, 1, 1), _f32(cm), _f32(cm, 1, 3, 3), _f32(cm)
    w3, b3 = _f32(cout or 1, cm, 1, 1), _f32(cout or 1)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, cin, hw, hw), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            mid = act1(bb, _bias(bb, bb.emit(relax.op.nn.conv2d(x, relax.const(w1))), b1)) \
                if expand else x
            y = act2(bb, _bias(bb, _conv(bb, mid, w2, groups=cm, strides=(stride, stride)), b2))
            if cout:
                y = _bias(bb, bb.emit(relax.op.nn.conv2d(y, relax.const(w3))), b3)
                if residual:
                    y = bb.emit(relax.op.add(y, x))
            out = bb.emit_output(relax.Tuple([y, mid]) if mid_used_twice else y)
        bb.emit_func_output(out)
    return bb.get(), (w1, b1, w2, b2, w3, b3)


def _block_reference(x, weights, acts, expand, cout, residual, stride=2):
    w1, b1, w2, b2, w3, b3 = weights
    cin, hw = x.shape[1], x.shape[2]
    m = x
    if expand:
        m = conv2d_reference(Conv2dSpec(1, cin, hw, hw, w1.shape[0], (1, 1),
                                        epilogue=Epilogue(True, False, acts[0])), x, w1, b1)
    cm = m.shape[1]
    d = Conv2dSpec(1, cm, hw, hw, cm, (3, 3), (stride, stride), (1, 1, 1, 1), groups=cm,
                   epilogue=Epilogue(True, False, acts[1]))
    y = conv2d_reference(d, m, w2, b2)
    if cout:
        p = Conv2dSpec(1, cm, d.out_height, d.out_width, cout, (1, 1),
                       epilogue=Epilogue(True, residual))
        y = conv2d_reference(p, y, w3, b3, x if residual else None)
    return y


ACTS = {  # relax builder, the epilogue's activation
    "relu": (lambda bb, v: bb.emit(relax.op.nn.relu(v)), "relu"),
    "clip": (lambda bb, v: bb.emit(relax.op.clip(v, 0.0, 6.0)), "clip"),
    "hardswish": (_hardswish, "hardswish"),
    "none": (lambda bb, v: v, "none"),
}
BLOCKS = {
    # name: (cin, hw, cm, (act1, act2), expand, cout, residual, stride)
    "expand+dw-112-relu": (8, 112, 48, ("relu", "relu"), True, 0, False, 2),
    "expand+dw-112-hardswish-none": (8, 112, 48, ("hardswish", "none"), True, 0, False, 2),
    "whole-block-28-residual": (8, 28, 24, ("clip", "clip"), True, 8, True, 1),
    "whole-block-56-s2": (6, 56, 18, ("none", "hardswish"), True, 10, False, 2),
    "dw+project-28-residual": (12, 28, 0, ("relu", "relu"), False, 12, True, 1),
}


@pytest.mark.parametrize("name", BLOCKS)
def test_mobilenet_block_becomes_one_kernel_and_matches_numpy(name):
    """The convs of a block whose tensors between them only the next conv reads: one mbconv
    kernel call (expand + depthwise on a large map, or with the project conv from 28x28 up),
    the separate convs' output."""
    cin, hw, cm, acts, expand, cout, residual, stride = BLOCKS[name]
    mod, weights = _block_module(cin, hw, cm, ACTS[acts[0]][0], ACTS[acts[1]][0], expand, cout,
                                 residual, stride=stride)
    assert _calls(fuse_dense(mod)) == {"tir:hwlat_mbconv": 1}
    x = _f32(1, cin, hw, hw)
    want = _block_reference(x, weights, (ACTS[acts[0]][1], ACTS[acts[1]][1]), expand, cout,
                            residual, stride)
    np.testing.assert_allclose(_build_run(mod, x), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_mobilenet_block_is_not_fused_where_a_tensor_is_read_elsewhere_or_the_map_is_small():
    relu = ACTS["relu"][0]
    # the expanded tensor is an output too: the depthwise conv and the project conv fuse
    mod, _ = _block_module(8, 28, 24, relu, relu, cout=8, mid_used_twice=True, stride=1)
    assert _calls(fuse_dense(mod)) == {"tir:hwlat_conv2d": 1, "tir:hwlat_mbconv": 1}
    # expand + depthwise alone on a 0.6 MB map: two kernels
    mod, _ = _block_module(8, 56, 48, relu, relu)
    assert _calls(fuse_dense(mod)) == {"tir:hwlat_conv2d": 1, "tir:hwlat_depthwise_conv2d": 1}
    # a whole block on a 14x14 map: three kernels
    mod, _ = _block_module(8, 14, 24, relu, relu, cout=8, residual=True, stride=1)
    assert _calls(fuse_dense(mod)) == {"tir:hwlat_conv2d": 2, "tir:hwlat_depthwise_conv2d": 1}


def test_two_blocks_without_expand_in_a_row_fuse_each_with_its_own_project_conv():
    """dw -> 1x1 -> dw -> 1x1 on a 28x28 map: the first 1x1 conv is the first block's project
    conv, not also the second block's expand conv."""
    c, hw = 12, 28
    ws = [(_f32(c, 1, 3, 3), _f32(c), _f32(c, c, 1, 1), _f32(c)) for _ in range(2)]
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, c, hw, hw), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = x
            for w2, b2, w3, b3 in ws:
                y = bb.emit(relax.op.nn.relu(_bias(bb, _conv(bb, y, w2, groups=c), b2)))
                y = _bias(bb, bb.emit(relax.op.nn.conv2d(y, relax.const(w3))), b3)
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    mod = bb.get()
    assert _calls(fuse_dense(mod)) == {"tir:hwlat_mbconv": 2}
    xv = _f32(1, c, hw, hw)
    want = xv
    for w2, b2, w3, b3 in ws:
        d = Conv2dSpec(1, c, hw, hw, c, (3, 3), padding=(1, 1, 1, 1), groups=c,
                       epilogue=Epilogue(True, False, "relu"))
        want = conv2d_reference(Conv2dSpec(1, c, hw, hw, c, (1, 1)),
                                conv2d_reference(d, want, w2, b2), w3, b3)
    np.testing.assert_allclose(_build_run(mod, xv), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def _se_model(hw: int, cout: int, mul_is_output: bool = False) -> onnx.ModelProto:
    """x (1, 16, hw, hw) -> squeeze-excite (ReduceMean, Conv 16 -> 4, Relu, Conv 4 -> 16,
    HardSigmoid) -> Mul(x, s) -> Conv 1x1 16 -> cout (+ bias): a MobileNetV3 block's tail."""
    from onnx import numpy_helper

    arrays = {"w1": _f32(4, 16, 1, 1), "b1": _f32(4), "w2": _f32(16, 4, 1, 1), "b2": _f32(16),
              "w3": _f32(cout, 16, 1, 1), "b3": _f32(cout), "axes": np.array([2, 3], np.int64)}
    nodes = [helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=1),
             helper.make_node("Conv", ["m", "w1", "b1"], ["c1"]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"]),
             helper.make_node("HardSigmoid", ["c2"], ["s"], alpha=1 / 6, beta=0.5),
             helper.make_node("Mul", ["s", "x"], ["xs"]),  # the scale first: either order folds
             helper.make_node("Conv", ["xs", "w3", "b3"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cout, hw, hw])]
    if mul_is_output:
        outputs.append(helper.make_tensor_value_info("xs", TensorProto.FLOAT, [1, 16, hw, hw]))
    graph = helper.make_graph(nodes, "se", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 16, hw, hw])], outputs,
        [numpy_helper.from_array(a, n) for n, a in arrays.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _full_size_multiplies(mod: tvm.IRModule, shape: tuple) -> int:
    n = 0
    for block in mod["main"].body.blocks:
        for b in block.bindings:
            v = b.value
            if isinstance(v, relax.Call) and str(getattr(v.op, "name", "")) == "relax.multiply" \
                    and tuple(int(d) for d in b.var.ty.shape) == shape:
                n += 1
    return n


def test_squeeze_excite_scale_folds_into_the_project_convs_weight_and_matches_onnxruntime():
    """On a 12x12 map with 8 output channels (8 x 16 weights < 16 x 144 activations) the
    multiply over x becomes a scaled copy of the conv's packed weight, and the output is
    onnxruntime's; the ops of the scale itself (on 16 values) stay."""
    model = _se_model(12, 8)
    with TARGET:
        mod = relax.transform.FoldConstant()(import_onnx(model))
    out = fuse_dense(mod)
    calls = _calls(out)
    assert calls["tir:hwlat_channel_scale"] == 1 and calls["tir:hwlat_conv2d"] == 3, calls
    assert _full_size_multiplies(mod, (1, 16, 12, 12)) == 1
    assert _full_size_multiplies(out, (1, 16, 12, 12)) == 0
    x = _f32(1, 16, 12, 12) * 2
    want = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    got = _build_run(import_onnx(model), x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("hw, cout, mul_is_output", [
    (2, 8, False),   # 8 x 16 weights > 16 x 4 activations: the multiply over x is cheaper
    (12, 8, True),   # x * s is an output too: it must be computed anyway
])
def test_squeeze_excite_scale_stays_where_folding_does_not_pay_or_the_product_is_read(
        hw, cout, mul_is_output):
    model = _se_model(hw, cout, mul_is_output)
    with TARGET:
        mod = relax.transform.FoldConstant()(import_onnx(model))
    out = fuse_dense(mod)
    assert _calls(out)["tir:hwlat_channel_scale"] == 0
    assert _full_size_multiplies(out, (1, 16, hw, hw)) == 1
    x = _f32(1, 16, hw, hw)
    want = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})
    passes = make_pipeline("default", PipelineOptions(TARGET))
    with TARGET:
        ex = tvm.compile(passes(import_onnx(model)), target=TARGET)
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x))
    got = [got] if hasattr(got, "numpy") else list(got)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-5, atol=1e-5 * np.abs(w).max())


HASWELL = tvm.target.Target({"kind": "llvm", "mcpu": "haswell", "num-cores": 1})  # AVX2
SKYLAKE_AVX512 = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 1})


def _conv_matmul_module():
    """A 3x3 stride-1 conv (32 -> 35 channels: no multiple of 16) with bias, residual and relu,
    and a matmul (13 x 40 @ 40 x 37) with bias."""
    w, b, wm, bm = _f32(35, 32, 3, 3), _f32(35), _f32(40, 37), _f32(37)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 32, 10, 9), "float32"))
    r = relax.Var("r", relax.TensorType((1, 35, 10, 9), "float32"))
    a = relax.Var("a", relax.TensorType((13, 40), "float32"))
    with bb.function("main", [x, r, a]):
        with bb.dataflow():
            y = _bias(bb, _conv(bb, x, w), b)
            y = bb.emit(relax.op.nn.relu(bb.emit(relax.op.add(y, r))))
            z = bb.emit(relax.op.add(bb.emit(relax.op.matmul(a, relax.const(wm))), relax.const(bm)))
            out = bb.emit_output(relax.Tuple([y, z]))
        bb.emit_func_output(out)
    return bb.get(), (w, b, wm, bm)


def _packed_shapes(mod: tvm.IRModule) -> list[tuple[int, ...]]:
    """The shapes of the packed weights the kernel calls of main take (their second argument)."""
    out = []
    for block in mod["main"].body.blocks:
        for bnd in block.bindings:
            v = bnd.value
            if isinstance(v, relax.Call) and str(getattr(v.op, "name", "")) == "relax.call_tir":
                out.append(tuple(int(d) for d in v.args[1].fields[1].ty.shape.values))
    return out


@pytest.mark.parametrize("target, winograd, shapes", [
    (HASWELL, True, [(16, 6, 32, 6), (3, 40, 16)]),  # U in blocks of 6, panels of 16
    (SKYLAKE_AVX512, False, [(3, 32, 3, 3, 12), (2, 40, 32)]),  # 12-channel blocks, panels of 32
], ids=["avx2-haswell", "avx512-skylake"])
def test_kernels_follow_the_targets_cpu_and_match_numpy(target, winograd, shapes):
    from hwlat.kernels.cpu import cpu_of

    mod, (w, b, wm, bm) = _conv_matmul_module()
    with target:
        fused = fuse_dense(mod)
    conv_kernel = "tir:hwlat_conv2d_winograd" if winograd else "tir:hwlat_conv2d"
    assert _calls(fused) == {conv_kernel: 1, "tir:hwlat_matmul": 1}, _calls(fused)
    assert sorted(_packed_shapes(fused), key=len, reverse=True) == shapes
    if cpu_of(target).avx512 and not cpu_of(TARGET).avx512:
        pytest.skip("AVX-512 code does not run on this CPU")
    passes = make_pipeline("default", PipelineOptions(target))
    with target:
        ex = tvm.compile(passes(mod), target=target)
    xv, rv, av = _f32(1, 32, 10, 9), _f32(1, 35, 10, 9), _f32(13, 40)
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](*(tvm.runtime.tensor(v) for v in (xv, rv, av)))
    spec = Conv2dSpec(1, 32, 10, 9, 35, (3, 3), padding=(1, 1, 1, 1),
                      epilogue=Epilogue(True, True, "relu"))
    want = conv2d_reference(spec, xv, w, b, rv)
    np.testing.assert_allclose(got[0].numpy(), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    np.testing.assert_allclose(got[1].numpy(), av @ wm + bm, rtol=1e-4, atol=1e-4)
