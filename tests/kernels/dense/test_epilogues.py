"""The sigmoid and SiLU epilogues of the dense kernels, and GELU as torch's exporter writes it
(Div/Erf/Add/Mul/Mul) recognised before the kernels are matched."""

from __future__ import annotations

import math

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

pytestmark = pytest.mark.tvm

TARGET = make_target(threads=1)
RNG = np.random.default_rng(11)


def _f32(*shape) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _module(x_shape, build) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(x_shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(build(bb, x))
        bb.emit_func_output(out)
    return bb.get()


def _run(mod: tvm.IRModule, x: np.ndarray) -> np.ndarray:
    with TARGET:
        ex = tvm.compile(make_pipeline("default", PipelineOptions(TARGET))(mod), target=TARGET)
    return relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()


def _silu(bb, v, gate_first: bool = False):
    gate = bb.emit(relax.op.sigmoid(v))
    return bb.emit(relax.op.multiply(gate, v) if gate_first else relax.op.multiply(v, gate))


def _sigmoid(bb, v):
    return bb.emit(relax.op.sigmoid(v))


W, B = _f32(16, 8, 3, 3), _f32(16)
DW, DB = _f32(8, 1, 3, 3), _f32(8)
GW, GB = _f32(12, 2, 3, 3), _f32(12)  # 4 groups of 2 input, 3 output channels
WM, BM = _f32(9, 12), _f32(12)


def _conv(bb, x, w, b, groups=1):
    y = bb.emit(relax.op.nn.conv2d(x, relax.const(w), padding=(1, 1, 1, 1), groups=groups))
    return bb.emit(relax.op.add(y, relax.const(b.reshape(1, -1, 1, 1))))


CASES = {
    # name: (body, kernel called, spec, weight, bias)
    "conv+silu": (lambda bb, x: _silu(bb, _conv(bb, x, W, B)), "tir:hwlat_conv2d",
                  Conv2dSpec(1, 8, 10, 9, 16, (3, 3), padding=(1, 1, 1, 1),
                             epilogue=Epilogue(True, False, "silu")), W, B),
    "conv+silu-gate-first": (lambda bb, x: _silu(bb, _conv(bb, x, W, B), gate_first=True),
                             "tir:hwlat_conv2d",
                             Conv2dSpec(1, 8, 10, 9, 16, (3, 3), padding=(1, 1, 1, 1),
                                        epilogue=Epilogue(True, False, "silu")), W, B),
    "conv+sigmoid": (lambda bb, x: _sigmoid(bb, _conv(bb, x, W, B)), "tir:hwlat_conv2d",
                     Conv2dSpec(1, 8, 10, 9, 16, (3, 3), padding=(1, 1, 1, 1),
                                epilogue=Epilogue(True, False, "sigmoid")), W, B),
    "depthwise+silu": (lambda bb, x: _silu(bb, _conv(bb, x, DW, DB, groups=8)),
                       "tir:hwlat_depthwise_conv2d",
                       Conv2dSpec(1, 8, 10, 9, 8, (3, 3), padding=(1, 1, 1, 1), groups=8,
                                  epilogue=Epilogue(True, False, "silu")), DW, DB),
    "grouped+silu": (lambda bb, x: _silu(bb, _conv(bb, x, GW, GB, groups=4)),
                     "tir:hwlat_grouped_conv2d",
                     Conv2dSpec(1, 8, 10, 9, 12, (3, 3), padding=(1, 1, 1, 1), groups=4,
                                epilogue=Epilogue(True, False, "silu")), GW, GB),
}


@pytest.mark.parametrize("name", CASES)
def test_sigmoid_and_silu_fuse_into_the_conv_kernels_and_match_numpy(name):
    body, kernel, spec, w, b = CASES[name]
    mod = _module((1, 8, 10, 9), body)
    assert _calls(fuse_dense(mod)) == {kernel: 1}
    x = _f32(1, 8, 10, 9) * 4  # both tails of the sigmoid
    want = conv2d_reference(spec, x, w, b)
    np.testing.assert_allclose(_run(mod, x), want, rtol=1e-5, atol=1e-5)


def test_sigmoid_and_silu_on_the_matmul_kernel_stay_accurate_over_a_wide_range():
    """matmul by the identity, then sigmoid and SiLU over [-100, 100]: where exp(-v) overflows
    float32 the result is still 0 (no inf or nan), and the error is float32 rounding's."""
    eye = np.eye(16, dtype=np.float32)
    x = np.linspace(-100, 100, 64 * 16, dtype=np.float32).reshape(64, 16)
    for act, body in (("sigmoid", _sigmoid), ("silu", _silu)):
        mod = _module((64, 16), lambda bb, x, body=body: body(bb, bb.emit(relax.op.matmul(x, relax.const(eye)))))
        assert _calls(fuse_dense(mod)) == {"tir:hwlat_matmul": 1}
        got = _run(mod, x)
        want = matmul_reference(MatmulSpec(64, 16, 16, Epilogue(False, False, act)), x, eye)
        assert np.isfinite(got).all()
        err = np.abs(got.astype(np.float64) - want) / np.maximum(1.0, np.abs(x))
        assert err.max() <= 5e-7, (act, float(err.max()))


def test_matmul_bias_silu_fuses_and_matches_numpy():
    mod = _module((5, 9), lambda bb, x: _silu(bb, bb.emit(relax.op.add(
        relax.const(BM), bb.emit(relax.op.matmul(x, relax.const(WM)))))))
    assert _calls(fuse_dense(mod)) == {"tir:hwlat_matmul": 1}
    x = _f32(5, 9)
    want = matmul_reference(MatmulSpec(5, 9, 12, Epilogue(True, False, "silu")), x, WM, BM)
    np.testing.assert_allclose(_run(mod, x), want, rtol=1e-5, atol=1e-5)


def test_efficientnet_block_with_silu_fuses_expand_and_depthwise_into_one_kernel():
    """1x1 expand + SiLU -> depthwise 3x3 stride 2 + SiLU on a 112x112 map (EfficientNet's
    first stages): one mbconv call, the separate convs' output."""
    cin, hw, cm = 8, 112, 48
    w1, b1, w2, b2 = _f32(cm, cin, 1, 1), _f32(cm), _f32(cm, 1, 3, 3), _f32(cm)

    def body(bb, x):
        m = _silu(bb, bb.emit(relax.op.add(bb.emit(relax.op.nn.conv2d(x, relax.const(w1))),
                                           relax.const(b1.reshape(1, -1, 1, 1)))))
        d = bb.emit(relax.op.nn.conv2d(m, relax.const(w2), strides=(2, 2), padding=(1, 1, 1, 1),
                                       groups=cm))
        return _silu(bb, bb.emit(relax.op.add(d, relax.const(b2.reshape(1, -1, 1, 1)))))

    mod = _module((1, cin, hw, hw), body)
    assert _calls(fuse_dense(mod)) == {"tir:hwlat_mbconv": 1}
    x = _f32(1, cin, hw, hw)
    m = conv2d_reference(Conv2dSpec(1, cin, hw, hw, cm, (1, 1), epilogue=Epilogue(True, False, "silu")),
                         x, w1, b1)
    want = conv2d_reference(Conv2dSpec(1, cm, hw, hw, cm, (3, 3), (2, 2), (1, 1, 1, 1), groups=cm,
                                       epilogue=Epilogue(True, False, "silu")), m, w2, b2)
    np.testing.assert_allclose(_run(mod, x), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


# ---- GELU as torch's exporter writes it ------------------------------------------------------

def _erf_gelu(x: str, tag: str, *, form: str, half: float = 0.5) -> tuple[list, list, str]:
    """(nodes, initializers, output) of GELU written out on value x. form "torch":
    ((x * (erf(x / sqrt 2) + 1)) * 0.5), torch's order; "half-first": (0.5 * x) * (1 + erf(x *
    (1 / sqrt 2))), the other operand orders."""
    n = lambda name: f"{tag}_{name}"  # noqa: E731
    if form == "torch":
        inits = [numpy_helper.from_array(np.array(v, np.float32), n(k))
                 for k, v in (("sqrt2", math.sqrt(2)), ("one", 1.0), ("half", half))]
        nodes = [helper.make_node("Div", [x, n("sqrt2")], [n("d")]),
                 helper.make_node("Erf", [n("d")], [n("e")]),
                 helper.make_node("Add", [n("e"), n("one")], [n("a")]),
                 helper.make_node("Mul", [x, n("a")], [n("m")]),
                 helper.make_node("Mul", [n("m"), n("half")], [n("y")])]
    else:
        inits = [numpy_helper.from_array(np.array(v, np.float32), n(k))
                 for k, v in (("rsqrt2", 1 / math.sqrt(2)), ("one", 1.0), ("half", half))]
        nodes = [helper.make_node("Mul", [n("rsqrt2"), x], [n("d")]),
                 helper.make_node("Erf", [n("d")], [n("e")]),
                 helper.make_node("Add", [n("one"), n("e")], [n("a")]),
                 helper.make_node("Mul", [n("half"), x], [n("m")]),
                 helper.make_node("Mul", [n("a"), n("m")], [n("y")])]
    return nodes, inits, n("y")


def _gelu_model(half: float = 0.5):
    """Conv(bias) -> GELU (torch's form) -> Reshape -> MatMul -> Add(bias first) -> GELU
    (the other form), opset 17 as torch exports it."""
    w, b, wm, bm = _f32(6, 3, 3, 3), _f32(6), _f32(54, 7), _f32(7)
    g1, i1, y1 = _erf_gelu("c", "g1", form="torch", half=half)
    g2, i2, y2 = _erf_gelu("a", "g2", form="half-first", half=half)
    inits = [numpy_helper.from_array(a, k) for a, k in ((w, "w"), (b, "b"), (wm, "wm"), (bm, "bm"),
                                                         (np.array([1, 54], np.int64), "shape"))]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), *g1,
             helper.make_node("Reshape", [y1, "shape"], ["f"]),
             helper.make_node("MatMul", ["f", "wm"], ["m"]),
             helper.make_node("Add", ["bm", "m"], ["a"]), *g2,
             helper.make_node("Identity", [y2], ["y"])]
    graph = helper.make_graph(nodes, "gelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 3, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 7])],
                              [*inits, *i1, *i2])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _imported(model) -> tvm.IRModule:
    with TARGET:
        return relax.transform.FoldConstant()(import_onnx(model))


def test_torch_erf_gelu_in_either_form_fuses_and_matches_onnxruntime():
    model = _gelu_model()
    calls = _calls(fuse_dense(_imported(model)))
    assert calls["tir:hwlat_conv2d"] == 1 and calls["tir:hwlat_matmul"] == 1, calls
    assert not {"relax.erf", "relax.multiply", "relax.divide", "relax.nn.gelu"} & set(calls), calls
    x = _f32(1, 3, 3, 3) * 3
    want = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    with TARGET:
        got = _run(import_onnx(model), x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_erf_expression_with_other_constants_is_not_taken_for_gelu():
    calls = _calls(fuse_dense(_imported(_gelu_model(half=0.25))))
    assert calls["relax.erf"] == 2 and "relax.nn.gelu" not in calls, calls


def _tanh_gelu(x: str, tag: str, *, pow_form: bool) -> tuple[list, list, str]:
    """GELU's tanh approximation written out on x: torch's order, 0.5 * (x * (1 + tanh(beta *
    (x + kappa * (x * (x * x)))))), or with the cube as Pow(x, 3) and the other operand orders."""
    n = lambda name: f"{tag}_{name}"  # noqa: E731
    inits = [numpy_helper.from_array(np.array(v, np.float32), n(k))
             for k, v in (("three", 3.0), ("kappa", 0.044715), ("beta", math.sqrt(2 / math.pi)),
                          ("one", 1.0), ("half", 0.5))]
    if pow_form:
        cube = [helper.make_node("Pow", [x, n("three")], [n("cube")])]
    else:
        cube = [helper.make_node("Mul", [x, x], [n("sq")]),
                helper.make_node("Mul", [x, n("sq")], [n("cube")])]
    nodes = [*cube,
             helper.make_node("Mul", [n("kappa"), n("cube")] if not pow_form else [n("cube"), n("kappa")], [n("k")]),
             helper.make_node("Add", [x, n("k")] if not pow_form else [n("k"), x], [n("i")]),
             helper.make_node("Mul", [n("beta"), n("i")] if not pow_form else [n("i"), n("beta")], [n("u")]),
             helper.make_node("Tanh", [n("u")], [n("t")]),
             helper.make_node("Add", [n("one"), n("t")], [n("a")]),
             helper.make_node("Mul", [x, n("a")], [n("m")]),
             helper.make_node("Mul", [n("half"), n("m")], [n("y")])]
    return nodes, inits, n("y")


def test_torch_tanh_gelu_in_either_form_fuses_and_matches_onnxruntime():
    """Conv(bias) -> tanh GELU (Pow form) -> Reshape -> MatMul -> Add -> tanh GELU (torch's
    x * (x * x) form): two kernel calls with the gelu_tanh epilogue, onnxruntime's output."""
    w, b, wm, bm = _f32(6, 3, 3, 3), _f32(6), _f32(54, 7), _f32(7)
    g1, i1, y1 = _tanh_gelu("c", "g1", pow_form=True)
    g2, i2, y2 = _tanh_gelu("a", "g2", pow_form=False)
    inits = [numpy_helper.from_array(a, k) for a, k in ((w, "w"), (b, "b"), (wm, "wm"), (bm, "bm"),
                                                         (np.array([1, 54], np.int64), "shape"))]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), *g1,
             helper.make_node("Reshape", [y1, "shape"], ["f"]),
             helper.make_node("MatMul", ["f", "wm"], ["m"]),
             helper.make_node("Add", ["m", "bm"], ["a"]), *g2,
             helper.make_node("Identity", [y2], ["y"])]
    graph = helper.make_graph(nodes, "gelu_tanh", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 3, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 7])],
                              [*inits, *i1, *i2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    calls = _calls(fuse_dense(_imported(model)))
    assert calls["tir:hwlat_conv2d"] == 1 and calls["tir:hwlat_matmul"] == 1, calls
    assert not {"relax.tanh", "relax.multiply", "relax.power", "relax.nn.gelu_tanh"} & set(calls), calls
    x = _f32(1, 3, 3, 3) * 3
    want = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    with TARGET:
        got = _run(import_onnx(model), x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
