"""Chains of elementwise ops after a conv or matmul kernel taken into its epilogue (spec.py's
`pre` / `post` steps): an activation before or after the residual, a second activation, constant
scalar multiplies and adds, HardSigmoid as TVM imports it."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

from hwlat.kernels.dense import Conv2dSpec, Epilogue, MatmulSpec, conv2d_reference, matmul_reference
from hwlat.kernels.dense.lowering import fuse_dense
from hwlat.lowering.custom import import_onnx
from hwlat.lowering.pipelines import PipelineOptions, make_pipeline
from hwlat.lowering.targets import make_target
from tests.helpers.relax_calls import calls as _calls

TARGET = make_target(threads=1)
RNG = np.random.default_rng(17)


def _f32(*shape) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _module(shapes, build) -> tvm.IRModule:
    """main(x, r) -> build(bb, x, r) (r: the residual input, the output's shape)."""
    bb = relax.BlockBuilder()
    params = [relax.Var(n, relax.TensorType(s, "float32")) for n, s in zip(("x", "r"), shapes, strict=False)]
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit_output(build(bb, *params))
        bb.emit_func_output(out)
    return bb.get()


def _run(mod: tvm.IRModule, *args: np.ndarray) -> np.ndarray:
    with TARGET:
        ex = tvm.compile(make_pipeline("default", PipelineOptions(TARGET))(mod), target=TARGET)
    return relax.VirtualMachine(ex, tvm.cpu())["main"](*(tvm.runtime.tensor(a) for a in args)).numpy()


def _c(v) -> relax.Constant:
    return relax.const(np.asarray(v, np.float32))


# ---- the Epilogue's steps, without a build ------------------------------------------------------

def test_epilogue_rejects_malformed_steps():
    with pytest.raises(ValueError, match="pre steps need a residual"):
        Epilogue(True, False, "none", pre=(("relu",),))
    with pytest.raises(ValueError, match="one of"):
        Epilogue(post=(("tanh",),))
    with pytest.raises(ValueError, match="takes 1 parameters"):
        Epilogue(post=(("mul",),))
    with pytest.raises(ValueError, match="floats"):
        Epilogue(post=(("add", 1),))
    with pytest.raises(ValueError, match="more than"):
        Epilogue(post=(("relu",),) * 9)
    ep = Epilogue(True, True, "clip", 0.0, 1.0, pre=(("silu",),), post=(("mul", 2.0),))
    assert ep.steps == (("clip", 0.0, 1.0), ("mul", 2.0))


def test_reference_applies_pre_before_the_residual_and_post_after_the_activation():
    spec = MatmulSpec(2, 1, 1, Epilogue(False, True, "relu", pre=(("mul", -1.0),),
                                        post=(("add", 0.5),)))
    x, w, r = np.array([[1.0], [-3.0]], np.float32), np.ones((1, 1), np.float32), np.full((2, 1), 2.0, np.float32)
    # relu(-v + 2) + 0.5: v = 1 -> 1.5, v = -3 -> 5.5
    np.testing.assert_array_equal(matmul_reference(spec, x, w, residual=r), [[1.5], [5.5]])


# ---- chains fused by the rewrite, against numpy ---------------------------------------------------

X = (1, 5, 11, 7)  # odd sizes: the kernels' row and channel tails
W3, B3 = _f32(13, 5, 3, 3), _f32(13)
Y3 = (1, 13, 11, 7)
DW, DB = _f32(5, 1, 3, 3), _f32(5)


def _conv(bb, x, w, b, groups=1):
    y = bb.emit(relax.op.nn.conv2d(x, _c(w), padding=(1, 1, 1, 1), groups=groups))
    return bb.emit(relax.op.add(y, _c(b.reshape(1, -1, 1, 1))))


def _relu_scale_shift(bb, x, r):  # conv -> + bias -> relu -> * 0.5 -> + 0.25 (r unused)
    v = bb.emit(relax.op.nn.relu(_conv(bb, x, W3, B3)))
    return bb.emit(relax.op.add(bb.emit(relax.op.multiply(_c(0.5), v)), _c(0.25)))


def _act_then_residual(bb, x, r):  # conv -> + bias -> silu -> + r -> / 2
    v = _conv(bb, x, W3, B3)
    v = bb.emit(relax.op.multiply(v, bb.emit(relax.op.sigmoid(v))))
    return bb.emit(relax.op.divide(bb.emit(relax.op.add(r, v)), _c(2.0)))


def _residual_act_act(bb, x, r):  # depthwise -> + bias -> + r -> relu -> - 1 -> sigmoid
    v = bb.emit(relax.op.nn.relu(bb.emit(relax.op.add(_conv(bb, x, DW, DB, groups=5), r))))
    return bb.emit(relax.op.sigmoid(bb.emit(relax.op.subtract(v, _c(1.0)))))


CHAINS = {
    "conv relu*c+c": (_relu_scale_shift, Y3, "tir:hwlat_conv2d",
                      Conv2dSpec(*X, 13, (3, 3), padding=(1, 1, 1, 1), epilogue=Epilogue(
                          True, False, "relu", post=(("mul", 0.5), ("add", 0.25)))), W3, B3),
    "conv silu+r /c": (_act_then_residual, Y3, "tir:hwlat_conv2d",
                       Conv2dSpec(*X, 13, (3, 3), padding=(1, 1, 1, 1), epilogue=Epilogue(
                           True, True, pre=(("silu",),), post=(("mul", 0.5),))), W3, B3),
    "depthwise +r relu -c sigmoid": (_residual_act_act, X, "tir:hwlat_depthwise_conv2d",
                                     Conv2dSpec(*X, 5, (3, 3), padding=(1, 1, 1, 1), groups=5,
                                                epilogue=Epilogue(True, True, "relu", post=(
                                                    ("add", -1.0), ("sigmoid",)))), DW, DB),
}


@pytest.mark.tvm
@pytest.mark.parametrize("name", CHAINS)
def test_elementwise_chains_fuse_into_one_kernel_and_match_numpy(name):
    body, y_shape, kernel, spec, w, b = CHAINS[name]
    mod = _module((X, y_shape), body)
    fused = fuse_dense(mod)
    assert _calls(fused) == {kernel: 1}, _calls(fused)
    x, r = _f32(*X) * 2, _f32(*y_shape)
    want = conv2d_reference(spec, x, w, b, residual=r)
    np.testing.assert_allclose(_run(mod, x, r), want, rtol=1e-5, atol=1e-5)


@pytest.mark.tvm
def test_matmul_gelu_then_residual_fuses_and_matches_numpy():
    wm, bm = _f32(9, 10), _f32(10)
    mod = _module(((7, 9), (7, 10)), lambda bb, x, r: bb.emit(relax.op.add(bb.emit(relax.op.nn.gelu(
        bb.emit(relax.op.add(bb.emit(relax.op.matmul(x, _c(wm))), _c(bm))))), r)))
    assert _calls(fuse_dense(mod)) == {"tir:hwlat_matmul": 1}
    x, r = _f32(7, 9), _f32(7, 10)
    want = matmul_reference(MatmulSpec(7, 9, 10, Epilogue(True, True, pre=(("gelu",),))), x, wm, bm, r)
    np.testing.assert_allclose(_run(mod, x, r), want, rtol=1e-5, atol=1e-5)


def test_a_step_whose_input_is_read_elsewhere_stays_a_separate_op():
    def body(bb, x, r=None):
        v = bb.emit(relax.op.nn.relu(_conv(bb, x, W3, B3)))
        return bb.emit(relax.op.add(bb.emit(relax.op.multiply(v, _c(3.0))), v))  # v read twice

    calls = _calls(fuse_dense(_module((X, Y3), body)))
    assert calls == {"tir:hwlat_conv2d": 1, "relax.multiply": 1, "relax.add": 1}, calls


# ---- HardSigmoid (MobileNetV3's squeeze-excite gate) through ONNX, against onnxruntime -----------

@pytest.mark.tvm
def test_onnx_hardsigmoid_and_hardswish_after_convs_fuse_and_match_onnxruntime():
    """1x1 conv -> HardSigmoid (alpha 1/6, torch's) -> 3x3 conv -> HardSwish -> Add(the input)."""
    w1, b1, w2, b2 = _f32(6, 6, 1, 1), _f32(6), _f32(6, 6, 3, 3), _f32(6)
    inits = [numpy_helper.from_array(a, k) for a, k in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"]),
             helper.make_node("HardSigmoid", ["c1"], ["g"], alpha=1.0 / 6.0, beta=0.5),
             helper.make_node("Conv", ["g", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("HardSwish", ["c2"], ["h"]),
             helper.make_node("Add", ["h", "x"], ["y"])]
    graph = helper.make_graph(nodes, "hs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 9, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 9, 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with TARGET:
        mod = import_onnx(model)
        calls = _calls(fuse_dense(relax.transform.FoldConstant()(mod)))
    assert calls == {"tir:hwlat_conv2d": 2}, calls
    x = _f32(1, 6, 9, 5) * 3
    want = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(_run(mod, x), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


# ---- per-channel constants before any activation: folded into the weight and the bias -----------

def _bn_relu(bb, x, r=None):  # conv (no bias) -> batch norm (inference) -> relu
    y = bb.emit(relax.op.nn.conv2d(x, _c(W3), padding=(1, 1, 1, 1)))
    bn = bb.emit(relax.op.nn.batch_norm(y, _c(GAMMA), _c(BETA), _c(MEAN), _c(VAR), axis=1, epsilon=1e-3))
    return bb.emit(relax.op.nn.relu(bb.emit(relax.TupleGetItem(bn, 0))))


def _scale_shift_silu(bb, x, r=None):  # conv + bias -> * s[c] -> - t[c] -> / 2 -> silu
    v = bb.emit(relax.op.multiply(_c(GAMMA.reshape(1, -1, 1, 1)), _conv(bb, x, W3, B3)))
    v = bb.emit(relax.op.divide(bb.emit(relax.op.subtract(v, _c(BETA.reshape(-1, 1, 1)))), _c(2.0)))
    return bb.emit(relax.op.multiply(v, bb.emit(relax.op.sigmoid(v))))


GAMMA, BETA, MEAN, VAR = _f32(13), _f32(13), _f32(13), np.abs(_f32(13)) + 0.1


def _folded(w, b, scale, shift):
    """(w, b) of conv(x, w) + b = (conv(x, W) + B) * scale + shift, per output channel."""
    return (w * scale.reshape(-1, 1, 1, 1)).astype(np.float32), (b * scale + shift).astype(np.float32)


@pytest.mark.tvm
def test_per_channel_affine_and_batch_norm_fold_into_the_conv_and_match_numpy():
    bn_scale = GAMMA.astype(np.float64) / np.sqrt(VAR.astype(np.float64) + 1e-3)
    cases = [(_bn_relu, "relu", _folded(W3, np.zeros(13), bn_scale, BETA - MEAN * bn_scale)),
             (_scale_shift_silu, "silu", _folded(W3, B3, GAMMA / 2.0, -BETA / 2.0))]
    for body, act, (w, b) in cases:
        mod = _module((X,), body)
        calls = _calls(fuse_dense(mod))
        assert calls == {"tir:hwlat_conv2d": 1}, (act, calls)
        spec = Conv2dSpec(*X, 13, (3, 3), padding=(1, 1, 1, 1), epilogue=Epilogue(True, False, act))
        x = _f32(*X)
        np.testing.assert_allclose(_run(mod, x), conv2d_reference(spec, x, w, b), rtol=1e-4, atol=1e-4)


def test_a_per_channel_multiply_after_the_activation_is_not_folded_into_the_weight():
    def body(bb, x, r=None):
        v = bb.emit(relax.op.nn.relu(_conv(bb, x, W3, B3)))
        return bb.emit(relax.op.multiply(v, _c(GAMMA.reshape(1, -1, 1, 1))))

    calls = _calls(fuse_dense(_module((X,), body)))
    assert calls == {"tir:hwlat_conv2d": 1, "relax.multiply": 1}, calls
