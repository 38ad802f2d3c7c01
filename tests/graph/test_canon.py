"""Canonical form at load time: the same computation written as torch's TorchScript exporter
writes it (opset 17) and as hwlat's export writes it (opset 18+) gives the same kernel keys."""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from hwlat.graph import Op, fuse, load
from hwlat.graph.cost import kernel_cost
from hwlat.graph.extract import extract_kernel
from tests.helpers.onnx_builders import const, model, node, rand, save, tensor

SQRT2 = np.float32(math.sqrt(2.0))
CONV_ATTRS = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
HWLAT_CONV_ATTRS = dict(auto_pad="NOTSET", dilations=[1, 1], group=1, kernel_shape=[3, 3],
                        pads=[1, 1, 1, 1], strides=[1, 1])


def keys(m, tmp_path, name="m.onnx"):
    return [k.key.text() for k in fuse(load(save(m, tmp_path / name)))]


def conv_then(tail_nodes, extra_inits=(), *, bias=True, opset=17, conv_attrs=CONV_ATTRS, out="y"):
    inits = [const("w", rand(8, 4, 3, 3)), *extra_inits]
    conv_in = ["x", "w"]
    if bias:
        inits.append(const("b", np.zeros(8)))
        conv_in.append("b")
    nodes = [node("Conv", conv_in, ["c"], **conv_attrs), *tail_nodes]
    return model(nodes, [tensor("x", [1, 4, 8, 8])], [tensor(out, [1, 8, 8, 8])], inits, opset=opset)


def hwlat_gelu(approximate="none"):
    return conv_then([node("Gelu", ["c"], ["y"], approximate=approximate)], bias=False, opset=20,
                     conv_attrs=HWLAT_CONV_ATTRS)


# erf GELU as exporters write it, in several operand orders
ERF_FORMS = {
    "torch": lambda s2: ([node("Div", ["c", "s2"], ["d"]), node("Erf", ["d"], ["e"]),
                          node("Add", ["e", "one"], ["a"]), node("Mul", ["c", "a"], ["m"]),
                          node("Mul", ["m", "half"], ["y"])], [const("s2", s2)]),
    "swapped": lambda s2: ([node("Div", ["c", "s2"], ["d"]), node("Erf", ["d"], ["e"]),
                            node("Add", ["one", "e"], ["a"]), node("Mul", ["half", "c"], ["h"]),
                            node("Mul", ["a", "h"], ["y"])], [const("s2", s2)]),
    "reciprocal": lambda s2: ([node("Mul", ["rs2", "c"], ["d"]), node("Erf", ["d"], ["e"]),
                               node("Add", ["e", "one"], ["a"]), node("Mul", ["a", "half"], ["m"]),
                               node("Mul", ["c", "m"], ["y"])], [const("rs2", 1 / s2)]),
}
HALF_ONE = [const("one", 1.0), const("half", 0.5)]


@pytest.mark.parametrize("form", sorted(ERF_FORMS))
def test_erf_gelu_and_zero_bias_and_default_attrs_key_as_hwlat_writes_them(tmp_path, form):
    nodes, inits = ERF_FORMS[form](SQRT2)
    torch_keys = keys(conv_then(nodes, [*inits, *HALF_ONE]), tmp_path, "t.onnx")
    assert torch_keys == keys(hwlat_gelu(), tmp_path, "h.onnx")
    assert torch_keys[0].startswith("conv|Conv+Gelu|") and "auto_pad=NOTSET" in torch_keys[0]
    g = load(str(tmp_path / "t.onnx"))
    (k,) = fuse(g)
    cost = kernel_cost(g, k)  # the conv's MACs; weights without the GELU's scalars or a bias
    assert (cost.macs, cost.params) == (8 * 4 * 9 * 64, 8 * 4 * 9)


@pytest.mark.parametrize("bad", [1.5, 1.41])
def test_gelu_with_other_constants_is_left_as_written(tmp_path, bad):
    nodes, inits = ERF_FORMS["torch"](np.float32(bad))
    (key,) = keys(conv_then(nodes, [*inits, *HALF_ONE]), tmp_path)
    assert "Gelu" not in key and "Erf" in key


def test_half_missing_is_not_gelu(tmp_path):
    nodes = [node("Div", ["c", "s2"], ["d"]), node("Erf", ["d"], ["e"]),
             node("Add", ["e", "one"], ["a"]), node("Mul", ["c", "a"], ["y"])]
    g = load(save(conv_then(nodes, [const("s2", SQRT2), const("one", 1.0)]), tmp_path / "m.onnx"))
    assert Op.Gelu not in {n.op for n in g.nodes} and Op.Erf in {n.op for n in g.nodes}


def test_tanh_gelu_becomes_gelu_tanh(tmp_path):
    k = np.float32(math.sqrt(2 / math.pi))
    nodes = [node("Pow", ["c", "three"], ["p"]), node("Mul", ["p", "cub"], ["q"]),
             node("Add", ["c", "q"], ["r"]), node("Mul", ["r", "k"], ["s"]),
             node("Tanh", ["s"], ["t"]), node("Add", ["t", "one"], ["a"]),
             node("Mul", ["c", "half"], ["h"]), node("Mul", ["h", "a"], ["y"])]
    inits = [const("three", 3.0), const("cub", 0.044715), const("k", k), *HALF_ONE]
    torch_keys = keys(conv_then(nodes, inits), tmp_path, "t.onnx")
    assert torch_keys == keys(hwlat_gelu("tanh"), tmp_path, "h.onnx")
    wrong = [const("three", 3.0), const("cub", 0.05), const("k", k), *HALF_ONE]
    left = "\n".join(keys(conv_then(nodes, wrong), tmp_path, "w.onnx"))
    assert "Tanh" in left and "Gelu" not in left


def test_nonzero_bias_is_kept(tmp_path):
    m = conv_then([node("Relu", ["c"], ["y"])])
    m.graph.initializer[1].CopyFrom(const("b", np.ones(8)))
    (key,) = keys(m, tmp_path)
    assert "w:float32[8x4x3x3],float32[8]|" in key


def test_pool_flatten_gemm_as_hwlat_writes_them(tmp_path):
    x = [tensor("x", [1, 8, 8, 8])]
    y = [tensor("y", [1, 10])]
    torch_form = model(
        [node("MaxPool", ["x"], ["p"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
         node("GlobalAveragePool", ["p"], ["g"]), node("Flatten", ["g"], ["f"], axis=1),
         node("Gemm", ["f", "wf", "bf"], ["y"], alpha=1.0, beta=1.0, transB=1)],
        x, y, [const("wf", rand(10, 8)), const("bf", np.zeros(10))], opset=17)
    hwlat_form = model(
        [node("MaxPool", ["x"], ["p"], auto_pad="NOTSET", ceil_mode=0, dilations=[1, 1],
              kernel_shape=[3, 3], pads=[1, 1, 1, 1], storage_order=0, strides=[2, 2]),
         node("ReduceMean", ["p", "axes"], ["g"], keepdims=1, noop_with_empty_axes=0),
         node("Reshape", ["g", "shape"], ["f"], allowzero=1),
         node("Gemm", ["f", "wf"], ["y"], alpha=1.0, beta=1.0, transA=0, transB=1)],
        x, y, [const("wf", rand(10, 8)),
               helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3]),
               helper.make_tensor("shape", TensorProto.INT64, [2], [1, -1])], opset=20)
    got = keys(torch_form, tmp_path, "t.onnx")
    assert got == keys(hwlat_form, tmp_path, "h.onnx")
    assert [k.split("|")[1] for k in got] == ["MaxPool", "ReduceMean", "Reshape", "Gemm"]


def test_reduction_axes_attribute_becomes_input(tmp_path):
    x, y = [tensor("x", [1, 8, 4, 4])], [tensor("y", [1, 8, 1, 1])]
    old = model([node("ReduceMean", ["x"], ["y"], axes=[2, 3])], x, y, opset=17)
    new = model([node("ReduceMean", ["x", "axes"], ["y"])], x, y,
                [helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3])], opset=18)
    assert keys(old, tmp_path, "o.onnx") == keys(new, tmp_path, "n.onnx")


def test_gelu_kernel_cut_from_the_file_runs_as_written(tmp_path):
    nodes, inits = ERF_FORMS["swapped"](SQRT2)
    path = save(conv_then(nodes, [*inits, *HALF_ONE]), tmp_path / "t.onnx")
    g = load(path)
    (k,) = fuse(g)
    cut = extract_kernel(g, k)
    onnx.checker.check_model(cut)
    assert [n.op_type for n in cut.graph.node] == ["Conv", "Div", "Erf", "Add", "Mul", "Mul"]
    x = rand(1, 4, 8, 8, seed=1)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    want = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    got = ort.InferenceSession(cut.SerializeToString(), opts,
                               providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)


def i64(name, values):
    return helper.make_tensor(name, TensorProto.INT64, [len(values)], values)


NO_OPS = {
    "identity": ([node("Identity", ["c"], ["n"])], []),
    "whole_slice": ([node("Slice", ["c", "s0", "s8", "ax"], ["n"])],
                    [i64("s0", [0]), i64("s8", [8]), i64("ax", [1])]),
    "times_one": ([node("Mul", ["one", "c"], ["n"])], [const("one", [1.0])]),
}


@pytest.mark.parametrize("form", sorted(NO_OPS))
def test_no_op_between_conv_and_relu_is_dropped(tmp_path, form):
    extra, inits = NO_OPS[form]
    torch_form = conv_then([*extra, node("Relu", ["n"], ["y"])], inits, bias=False)
    plain = conv_then([node("Relu", ["c"], ["y"])], bias=False)
    got = keys(torch_form, tmp_path, "t.onnx")
    assert got == keys(plain, tmp_path, "p.onnx") and got[0].startswith("conv|Conv+Relu|")


def test_slice_that_cuts_a_mul_by_two_or_an_add_of_zeros_stays(tmp_path):
    cut = conv_then([node("Slice", ["c", "s0", "s8", "ax"], ["n"]), node("Relu", ["n"], ["y"])],
                    [i64("s0", [0]), i64("s8", [4]), i64("ax", [1])], bias=False)
    cut.graph.output[0].CopyFrom(tensor("y", [1, 4, 8, 8]))
    assert any("Slice" in k for k in keys(cut, tmp_path, "c.onnx"))
    two = conv_then([node("Mul", ["c", "two"], ["n"]), node("Relu", ["n"], ["y"])],
                    [const("two", 2.0)], bias=False)
    assert "Mul" in "".join(keys(two, tmp_path, "t.onnx"))
    # a bias-like Add of zeros is a parameter (hwlat's export keeps it): left as written
    zeros = conv_then([node("Add", ["c", "z"], ["n"]), node("Relu", ["n"], ["y"])],
                      [const("z", np.zeros((1, 8, 1, 1)))], bias=False)
    assert any("Add" in k for k in keys(zeros, tmp_path, "z.onnx"))


def test_batch_norm_training_mode_zero_keys_as_absent(tmp_path):
    def bn(**attrs):
        return model([node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], **attrs)],
                     [tensor("x", [1, 4, 8, 8])], [tensor("y", [1, 4, 8, 8])],
                     [const("s", rand(4)), const("b", rand(4)), const("m", rand(4)),
                      const("v", np.ones(4))])
    assert keys(bn(training_mode=0), tmp_path, "t.onnx") == keys(bn(), tmp_path, "h.onnx")


def test_in_model_timing_charges_a_written_out_gelu_to_its_kernel(tmp_path, monkeypatch):
    from hwlat.devices import load_device
    from hwlat.runners import get_runner

    nodes, inits = ERF_FORMS["torch"](SQRT2)
    m = conv_then([*nodes, node("Relu", ["y"], ["r"])], [*inits, *HALF_ONE], out="r")
    g = load(save(m, tmp_path / "t.onnx"))
    kernels = fuse(g)
    assert [k.key.ops for k in kernels] == [("Conv", "Gelu"), ("Relu",)]
    runner = get_runner(load_device("cpu-ort"))
    owners = {}
    monkeypatch.setattr(runner, "_in_model_round", lambda path, owner, tails=None: owners.update(owner) or {})
    runner.time_in_model("unused", g, kernels)
    # onnxruntime names executed nodes after the file's nodes: Div, Erf, Add, Mul belong to kernel 0
    assert {owners.get(n.name) for n in m.graph.node if n.op_type in ("Div", "Erf", "Add", "Mul")} == {0}
    assert owners["d"] == owners["e"] == 0 and owners["Relu_r"] == 1
