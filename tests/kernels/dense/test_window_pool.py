"""The max / average pool kernel (hwlat/kernels/dense/pool.py `window_primfunc`) against a numpy
reference: stride 1 and 2 (and 3), padding, ceil mode, count_include_pad both ways, rows
shorter and longer than a vector with ragged tails, batch 2, rectangular windows; the host's
AVX-512 build and an AVX2 one; which relax pools the dense rewrite takes; an ONNX MaxPool /
AveragePool pair through the whole pipeline against onnxruntime (heavy)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import tvm
from tvm import relax

from hwlat.kernels.dense import pool
from hwlat.kernels.dense.lowering import fuse_dense
from hwlat.kernels.dense.pool import WindowPoolSpec
from hwlat.lowering.targets import make_target
from tests.helpers.relax_calls import calls as _calls

pytestmark = pytest.mark.tvm

HOST = make_target(threads=1)
HASWELL = tvm.target.Target({"kind": "llvm", "mcpu": "haswell", "num-cores": 1})  # AVX2
RNG = np.random.default_rng(3)


def _out(size, k, s, p, ceil):
    o = (-(-(size + 2 * p - k) // s) if ceil else (size + 2 * p - k) // s) + 1
    return o - 1 if ceil and (o - 1) * s >= size + p else o  # torch: no window starts in the padding


def _spec(kind, n, c, h, w, k, s, p, ceil=False, count_pad=False, kw=None):
    kw = k if kw is None else kw
    return WindowPoolSpec(kind, n, c, h, w, _out(h, k, s, p, ceil), _out(w, kw, s, p, ceil),
                          k, kw, s, s, p, p, count_pad)


CASES = [
    _spec("max", 1, 3, 112, 112, 3, 2, 0, ceil=True),  # googlenet's stem pool: a window past x
    _spec("max", 1, 5, 35, 35, 3, 2, 0),  # inception's: floor mode, 17 outputs (16 + 1)
    _spec("max", 2, 3, 14, 14, 3, 1, 1, ceil=True),  # inception branch pool, rows < a vector
    _spec("max", 1, 4, 14, 14, 2, 2, 0, ceil=True),
    _spec("max", 1, 2, 13, 11, 3, 2, 1, ceil=True),
    _spec("avg", 1, 3, 35, 35, 3, 1, 1, count_pad=True),  # inception_v3: 35 = 2 vectors + 3
    _spec("avg", 2, 3, 17, 17, 3, 1, 1),  # inception_v4: not counting the padding
    _spec("avg", 1, 2, 13, 11, 3, 2, 1, ceil=True),
    _spec("avg", 1, 2, 9, 40, 2, 3, 0, ceil=True, kw=4),  # stride 3, a 2x4 window, 13 outputs
    _spec("max", 1, 2, 7, 7, 3, 1, 1),
]
AVX2_CASES = CASES[:3] + CASES[5:7]


def reference(spec: WindowPoolSpec, x: np.ndarray) -> np.ndarray:
    y = np.empty(spec.y_shape, np.float64)
    for i in range(spec.out_h):
        r0 = i * spec.stride_h - spec.pad_top
        for j in range(spec.out_w):
            c0 = j * spec.stride_w - spec.pad_left
            win = x[:, :, max(r0, 0):min(r0 + spec.kernel_h, spec.height),
                    max(c0, 0):min(c0 + spec.kernel_w, spec.width)].astype(np.float64)
            if spec.kind == "max":
                y[:, :, i, j] = win.max((2, 3))
            else:
                count = spec.kernel_h * spec.kernel_w if spec.count_pad else win.shape[2] * win.shape[3]
                y[:, :, i, j] = win.sum((2, 3)) / count
    return y


@functools.cache
def _library(target_key: str, cases: tuple):
    target = HOST if target_key == "host" else HASWELL
    mod = tvm.IRModule({f"k{i}": pool.window_primfunc(s).with_attr("global_symbol", f"k{i}")
                        for i, s in enumerate(cases)})
    ex = tvm.compile(mod, target=target)
    return {s: ex[f"k{i}"] for i, s in enumerate(cases)}


@pytest.mark.parametrize("target_key, cases", [("host", tuple(CASES)), ("avx2", tuple(AVX2_CASES))])
def test_window_pool_matches_numpy(target_key, cases):
    lib = _library(target_key, cases)
    for spec in cases:
        x = RNG.standard_normal((spec.batch, spec.channels, spec.height, spec.width)).astype(np.float32)
        out = tvm.runtime.tensor(np.full(spec.y_shape, np.nan, np.float32))
        lib[spec](tvm.runtime.tensor(x), tvm.runtime.tensor(pool.window_divisors(spec)), out)
        np.testing.assert_allclose(out.numpy(), reference(spec, x), rtol=1e-5, atol=1e-6, err_msg=str(spec))


def test_windows_without_input_or_past_a_counted_padding_are_refused():
    assert pool.window_supports(WindowPoolSpec("max", 1, 1, 4, 4, 3, 3, 3, 3, 2, 2, 3, 0)) is not None
    past = _spec("avg", 1, 1, 12, 12, 3, 2, 1, ceil=True, count_pad=True)
    assert (past.out_h - 1) * past.stride_h + 3 > 12 + 2  # the last window reaches past the padding
    assert "ceil" in pool.window_supports(past)
    assert pool.window_supports(_spec("avg", 1, 1, 13, 11, 3, 2, 1, count_pad=True)) is None
    with pytest.raises(ValueError, match="window pool"):
        pool.window_primfunc(past)


def _pools_module(x_shape):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(x_shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            a = bb.emit(relax.op.nn.max_pool2d(x, (3, 3), (2, 2), (0, 0, 0, 0), ceil_mode=True))
            b = bb.emit(relax.op.nn.avg_pool2d(x, (3, 3), (1, 1), (1, 1, 1, 1), count_include_pad=True))
            c = bb.emit(relax.op.nn.max_pool2d(x, (3, 3), (1, 1), (2, 2, 2, 2), dilation=(2, 2)))
            d = bb.emit(relax.op.nn.max_pool2d(bb.emit(relax.op.permute_dims(x, [0, 2, 3, 1])), (3, 3),
                                               layout="NHWC"))
            out = bb.emit_output(relax.Tuple([a, b, c, d]))
        bb.emit_func_output(out)
    return bb.get()


def test_dense_rewrite_takes_nchw_pools_and_leaves_dilated_and_nhwc_ones():
    calls = _calls(fuse_dense(_pools_module((1, 3, 40, 41))))
    assert calls["tir:hwlat_max_pool"] == 1 and calls["tir:hwlat_avg_pool"] == 1, calls
    assert calls["relax.nn.max_pool2d"] == 2, calls  # the dilated one and the NHWC one
    small = _calls(fuse_dense(_pools_module((1, 3, 12, 13))))  # rows shorter than a vector
    assert "tir:hwlat_max_pool" not in small and small["relax.nn.avg_pool2d"] == 1, small


@pytest.mark.heavy
def test_onnx_pools_through_the_pipeline_match_onnxruntime():
    """MaxPool (3x3 s2 ceil) -> AveragePool (3x3 s1 pad 1, not counting the padding), ONNX
    imported and built by hwlat's default pipeline, against onnxruntime."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from hwlat.lowering.custom import import_onnx
    from hwlat.lowering.pipelines import PipelineOptions, make_pipeline

    nodes = [helper.make_node("MaxPool", ["x"], ["m"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
             helper.make_node("AveragePool", ["m"], ["y"], kernel_shape=[3, 3], strides=[1, 1],
                              pads=[1, 1, 1, 1], count_include_pad=0)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, 40, 37])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = RNG.standard_normal((2, 5, 40, 37)).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    with HOST:
        mod = import_onnx(model)
        assert {"tir:hwlat_max_pool", "tir:hwlat_avg_pool"} <= set(_calls(fuse_dense(mod)))
        ex = tvm.compile(make_pipeline("default", PipelineOptions(HOST))(mod), target=HOST)
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
