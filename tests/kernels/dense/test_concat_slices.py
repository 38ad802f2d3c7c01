"""Conv kernels writing their channels into a slice of a wider output (a concat's, along the
channels): every input path and plan kind, AVX2 and AVX-512 plans, batch 2; the channels
outside the slice are left as they were."""

from __future__ import annotations

import os

os.environ.setdefault("TVM_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tvm  # noqa: E402
from tvm import relax  # noqa: E402

from hwlat.kernels.cpu import AVX2, AVX512  # noqa: E402
from hwlat.kernels.dense import conv  # noqa: E402
from hwlat.kernels.dense.reference import conv2d_reference  # noqa: E402
from hwlat.kernels.dense.spec import Conv2dSpec, Epilogue  # noqa: E402
from hwlat.lowering.targets import make_target  # noqa: E402

pytestmark = pytest.mark.tvm

TARGET = make_target(threads=2)
EP = Epilogue(bias=True, residual=True, activation="relu")

# (spec, channels of the wider output, offset of the conv's channels in it)
SLICES = [
    (Conv2dSpec(2, 7, 10, 10, 17, (1, 1), epilogue=EP), 30, 5),  # direct, pixel tail, batch 2
    (Conv2dSpec(1, 6, 60, 60, 13, (1, 1), epilogue=Epilogue()), 13 + 7, 7),  # co_outer, last slice
    (Conv2dSpec(2, 9, 13, 12, 20, (3, 3), (2, 2), (1, 0, 2, 1), epilogue=EP), 23, 0),  # scratch
    (Conv2dSpec(1, 21, 9, 19, 26, (3, 3), (1, 1), (1, 1, 1, 1), epilogue=EP), 40, 9),  # 3x3 s1
    (Conv2dSpec(2, 150, 7, 7, 40, (1, 1), epilogue=EP), 45, 3),  # pixel rows
    (Conv2dSpec(1, 40, 7, 7, 45, (3, 3), (1, 1), (1, 1, 1, 1)), 50, 1),  # pixel rows, scratch
    (Conv2dSpec(1, 31, 1, 1, 70, (1, 1), epilogue=EP), 100, 21),  # a GEMV
    (Conv2dSpec(1, 3, 45, 47, 24, (3, 3), (2, 2), (1, 1, 1, 1), epilogue=EP), 31, 6),  # stem
]


def _check_slice(spec: Conv2dSpec, channels: int, offset: int, cpu) -> None:
    rng = np.random.default_rng(channels + offset)
    x = rng.standard_normal(spec.x_shape).astype(np.float32)
    w = rng.standard_normal(spec.w_shape).astype(np.float32)
    bias = rng.standard_normal(spec.cout).astype(np.float32)
    res = rng.standard_normal(spec.y_shape).astype(np.float32)
    ep = spec.epilogue
    func = conv.primfunc(spec, cpu=cpu, out=(channels, offset)).with_attr("global_symbol", "k")
    ex = tvm.compile(tvm.IRModule({"k": func}), target=TARGET)
    args = [x, conv.pack_weight(spec, w, cpu=cpu)] + ([bias] if ep.bias else []) + \
        ([res] if ep.residual else [])
    n, _, oh, ow = spec.y_shape
    before = rng.standard_normal((n, channels, oh, ow)).astype(np.float32)
    y = tvm.runtime.tensor(before)
    ex["k"](*[tvm.runtime.tensor(a) for a in args], y)
    got = y.numpy()
    ref = conv2d_reference(spec, x, w, bias, res)
    scale = max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(got[:, offset:offset + spec.cout], ref, rtol=1e-4, atol=1e-4 * scale)
    outside = np.ones(channels, bool)
    outside[offset:offset + spec.cout] = False
    np.testing.assert_array_equal(got[:, outside], before[:, outside])


@pytest.mark.parametrize("cpu", [AVX2, AVX512], ids=["avx2", "avx512"])
@pytest.mark.parametrize("case", SLICES, ids=[
    f"{s.batch}x{s.cin}x{s.height}x{s.width}-{s.cout}-k{s.kernel[0]}s{s.stride[0]}-in{c}at{o}"
    for s, c, o in SLICES])
def test_conv_writes_only_its_slice(case, cpu):
    _check_slice(*case, cpu)


def test_a_slice_outside_the_output_is_refused():
    spec = Conv2dSpec(1, 4, 5, 5, 8, (1, 1))
    for out in ((7, 0), (10, 3), (10, -1)):
        with pytest.raises(ValueError, match="outside"):
            conv.primfunc(spec, out=out)


# ---- the rewrite: a concat of conv kernels without a copy -------------------------------------

HASWELL = tvm.target.Target({"kind": "llvm", "mcpu": "haswell", "num-cores": 1})  # AVX2


def _concat_model(pool_branch: bool):
    """x (1, 6, 13, 11) -> three Conv(+Relu) branches of 5, 16 and 11 channels (1x1; 3x3 pad 1;
    1x1 -> 3x3 pad 1, so the producers are not in the concat's order in the graph) -> Concat
    along the channels -> Mul by a constant (the concat is read by an op). With
    `pool_branch`, a fourth input is a MaxPool (no kernel)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)

    def f32(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    inits = {"w1": f32(5, 6, 1, 1), "b1": f32(5), "wa": f32(7, 6, 1, 1), "ba": f32(7),
             "w2": f32(16, 7, 3, 3), "b2": f32(16), "w3": f32(11, 6, 3, 3), "b3": f32(11)}
    nodes = [helper.make_node("Conv", ["x", "wa", "ba"], ["a"]),
             helper.make_node("Relu", ["a"], ["ar"]),
             helper.make_node("Conv", ["x", "w3", "b3"], ["c3"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "w1", "b1"], ["c1"]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["ar", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"])]
    parts, channels = ["r1", "r2", "c3"], 32
    if pool_branch:
        nodes.append(helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[3, 3],
                                      pads=[1, 1, 1, 1]))
        parts, channels = ["r1", "p", "r2", "c3"], 38
    inits["s"] = f32(1, channels, 1, 1)
    nodes += [helper.make_node("Concat", parts, ["cat"], axis=1),
              helper.make_node("Mul", ["cat", "s"], ["y"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 13, 11])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, 13, 11])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _main_ops(mod: tvm.IRModule) -> list[str]:
    out = []
    for block in mod["main"].body.blocks:
        for b in block.bindings:
            v = b.value
            if isinstance(v, relax.Call):
                name = str(getattr(v.op, "name", v.op))
                if name in ("relax.call_tir", "relax.call_tir_inplace"):
                    name += ":" + v.args[0].name_hint.rstrip("0123456789")
                out.append(name)
    return out


@pytest.mark.parametrize("target", [HASWELL, make_target(threads=1)], ids=["avx2", "host"])
@pytest.mark.parametrize("pool_branch", [False, True], ids=["convs", "with-pool"])
def test_concat_of_conv_kernels_has_no_copy_and_matches_onnxruntime(target, pool_branch):
    import onnxruntime as ort

    from hwlat.kernels.cpu import cpu_of
    from hwlat.kernels.dense.lowering import fuse_dense
    from hwlat.lowering.custom import import_onnx
    from hwlat.lowering.pipelines import PipelineOptions, make_pipeline

    model = _concat_model(pool_branch)
    with target:
        mod = relax.transform.FoldConstant()(import_onnx(model))
        ops = _main_ops(fuse_dense(mod))
    kernels = [op for op in ops if op.endswith("hwlat_conv2d")]
    assert len(kernels) == 4, ops
    if pool_branch:  # left as it was: four kernels with outputs of their own, and the concat
        assert "relax.concat" in ops and all(op.startswith("relax.call_tir:") for op in kernels)
    else:  # the producers in graph order: the 3x3 (11 channels) allocates, two write in place
        assert "relax.concat" not in ops, ops
        assert [op.split(":")[0] for op in kernels] == [
            "relax.call_tir", "relax.call_tir", "relax.call_tir_inplace", "relax.call_tir_inplace"]
    if cpu_of(target).avx512 and not cpu_of(make_target(threads=1)).avx512:
        pytest.skip("AVX-512 code does not run on this CPU")
    x = np.random.default_rng(4).standard_normal((1, 6, 13, 11)).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    with target:
        ex = tvm.compile(make_pipeline("default", PipelineOptions(target))(import_onnx(model)),
                         target=target)
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
