"""Each fusion rule on a tiny hand-written graph, with exact asserts on the kernels cut."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from hwlat.errors import InvalidInputError
from hwlat.graph import KernelKind, fuse, load
from hwlat.graph.cost import kernel_cost
from hwlat.graph.sparse import default_coords, kernel_map_size, log_bucket
from tests.helpers.onnx_builders import (
    bn_params,
    const,
    conv_weights,
    lif_steps,
    model,
    node,
    rand,
    save,
    tensor,
)

X = tensor("x", [1, 4, 8, 8])


def kernels_of(tmp_path, m):
    g = load(save(m, tmp_path / "m.onnx"))
    return g, fuse(g)


def summary(kernels):
    return [(k.kind, k.key.ops) for k in kernels]


def test_conv_bn_residual_relu_is_one_kernel(tmp_path):
    m = model(
        [node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         node("BatchNormalization", ["c", "bn_s", "bn_b", "bn_m", "bn_v"], ["b"]),
         node("Add", ["b", "x"], ["a"]),
         node("Relu", ["a"], ["y"])],
        [X], [tensor("y", [1, 4, 8, 8])], conv_weights(4, 4, 3) + bn_params(4))
    g, ks = kernels_of(tmp_path, m)
    assert summary(ks) == [(KernelKind.CONV, ("Conv", "BatchNormalization", "Add", "Relu"))]
    k = ks[0]
    assert [s.shape for s in k.key.inputs] == [(1, 4, 8, 8)]
    assert [s.shape for s in k.key.outputs] == [(1, 4, 8, 8)]
    assert dict(k.key.attrs)["pads"] == (1, 1, 1, 1)
    cost = kernel_cost(g, k)
    assert cost.macs == 1 * 4 * 8 * 8 * 4 * 3 * 3
    assert cost.params == 4 * 4 * 3 * 3 + 4 * 4
    assert cost.bytes_written == 4 * 8 * 8 * 4


@pytest.mark.parametrize("act_nodes, ops", [
    ([node("Clip", ["c", "lo", "hi"], ["y"])], ("Conv", "Clip")),
    ([node("HardSigmoid", ["c"], ["y"])], ("Conv", "HardSigmoid")),
    ([node("HardSwish", ["c"], ["y"])], ("Conv", "HardSwish")),
    ([node("Sigmoid", ["c"], ["s"]), node("Mul", ["c", "s"], ["y"])], ("Conv", "Sigmoid", "Mul")),
    ([node("HardSigmoid", ["c"], ["s"]), node("Mul", ["s", "c"], ["y"])],
     ("Conv", "HardSigmoid", "Mul")),
])
def test_conv_absorbs_its_activation(tmp_path, act_nodes, ops):
    m = model([node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), *act_nodes],
              [X], [tensor("y", [1, 4, 8, 8])],
              conv_weights(4, 4, 3) + [const("lo", 0.0), const("hi", 6.0)])
    _, ks = kernels_of(tmp_path, m)
    assert summary(ks) == [(KernelKind.CONV, ops)]


def test_conv_output_read_twice_is_not_fused(tmp_path):
    m = model([node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
               node("Relu", ["c"], ["r"]), node("Add", ["c", "r"], ["y"])],
              [X], [tensor("y", [1, 4, 8, 8])], conv_weights(4, 4, 3))
    _, ks = kernels_of(tmp_path, m)
    assert summary(ks) == [(KernelKind.CONV, ("Conv",)), (KernelKind.ELEMENTWISE, ("Relu",)),
                           (KernelKind.ELEMENTWISE, ("Add",))]


def test_two_convs_into_one_residual_add_stay_two_conv_kernels(tmp_path):
    # a ResNet downsample: whichever conv takes the Add, the other is still a conv kernel
    m = model([node("Conv", ["x", "w"], ["a"], pads=[1, 1, 1, 1]),
               node("Conv", ["x", "w1"], ["b"]),
               node("Add", ["a", "b"], ["s"]), node("Relu", ["s"], ["y"])],
              [X], [tensor("y", [1, 4, 8, 8])], conv_weights(4, 4, 3) + [const("w1", rand(4, 4, 1, 1))])
    _, ks = kernels_of(tmp_path, m)
    assert sorted(summary(ks)) == sorted([(KernelKind.CONV, ("Conv", "Add", "Relu")), (KernelKind.CONV, ("Conv",))])


def test_matmul_bias_activation(tmp_path):
    m = model([node("MatMul", ["a", "w"], ["mm"]), node("Add", ["mm", "b"], ["ab"]),
               node("Relu", ["ab"], ["y"]),
               node("Gemm", ["y", "w2", "b2"], ["g"], transB=1), node("Tanh", ["g"], ["z"])],
              [tensor("a", [2, 16])], [tensor("z", [2, 3])],
              [const("w", rand(16, 8)), const("b", rand(8)), const("w2", rand(3, 8)), const("b2", rand(3))])
    g, ks = kernels_of(tmp_path, m)
    assert summary(ks) == [(KernelKind.MATMUL, ("MatMul", "Add", "Relu")),
                           (KernelKind.MATMUL, ("Gemm", "Tanh"))]
    assert kernel_cost(g, ks[0]).macs == 2 * 8 * 16
    assert kernel_cost(g, ks[1]).macs == 2 * 3 * 8


def test_matmul_absorbs_exact_gelu(tmp_path):
    m = model([node("MatMul", ["a", "w"], ["mm"]), node("Div", ["mm", "sqrt2"], ["d"]),
               node("Erf", ["d"], ["e"]), node("Add", ["e", "one"], ["p"]),
               node("Mul", ["mm", "p"], ["q"]), node("Mul", ["q", "half"], ["y"])],
              [tensor("a", [2, 16])], [tensor("y", [2, 8])],
              [const("w", rand(16, 8)), const("sqrt2", np.sqrt(2)), const("one", 1.0), const("half", 0.5)])
    _, ks = kernels_of(tmp_path, m)
    # the written-out GELU is one Gelu at load time (graph.canon), as hwlat's export writes it
    assert summary(ks) == [(KernelKind.MATMUL, ("MatMul", "Gelu"))]


def test_attention_subgraph_is_one_kernel(tmp_path):
    shape = [1, 2, 5, 4]
    m = model([node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
               node("MatMul", ["q", "kt"], ["s"]), node("Mul", ["s", "scale"], ["ss"]),
               node("Add", ["ss", "mask"], ["sm"]), node("Softmax", ["sm"], ["p"], axis=-1),
               node("MatMul", ["p", "v"], ["y"])],
              [tensor("q", shape), tensor("k", shape), tensor("v", shape), tensor("mask", [1, 1, 5, 5])],
              [tensor("y", shape)], [const("scale", 0.5)])
    g, ks = kernels_of(tmp_path, m)
    assert summary(ks) == [(KernelKind.ATTENTION, ("Transpose", "MatMul", "Mul", "Add", "Softmax", "MatMul"))]
    assert sorted(s.shape for s in ks[0].key.inputs) == [(1, 1, 5, 5)] + [(1, 2, 5, 4)] * 3
    assert kernel_cost(g, ks[0]).macs == 2 * (1 * 2 * 5 * 5 * 4)


def test_attention_with_a_constant_node_bias(tmp_path):
    # LeViT's attention bias, as torch's TorchScript exporter writes it: a Constant node, larger
    # than the folded constants, added to the scores
    shape = [1, 2, 5, 4]
    bias = helper.make_tensor("b", TensorProto.FLOAT, [1, 2, 5, 5], rand(1, 2, 5, 5).ravel().tolist())
    m = model([node("Constant", [], ["bias"], value=bias),
               node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
               node("MatMul", ["q", "kt"], ["s"]), node("Add", ["s", "bias"], ["sb"]),
               node("Softmax", ["sb"], ["p"], axis=-1), node("MatMul", ["p", "v"], ["y"])],
              [tensor("q", shape), tensor("k", shape), tensor("v", shape)], [tensor("y", shape)])
    g, ks = kernels_of(tmp_path, m)
    assert summary(ks) == [(KernelKind.ATTENTION, ("Transpose", "MatMul", "Add", "Softmax", "MatMul"))]
    assert kernel_cost(g, ks[0]).macs == 2 * (1 * 2 * 5 * 5 * 4)


def test_softmax_without_attention_around_it_stays_alone(tmp_path):
    m = model([node("Softmax", ["a"], ["y"], axis=-1)], [tensor("a", [2, 5])], [tensor("y", [2, 5])])
    _, ks = kernels_of(tmp_path, m)
    assert summary(ks) == [(KernelKind.SOFTMAX, ("Softmax",))]


def test_opset23_attention_op(tmp_path):
    shape = [1, 2, 5, 4]
    m = model([node("Attention", ["q", "k", "v"], ["y"])],
              [tensor("q", shape), tensor("k", [1, 2, 7, 4]), tensor("v", [1, 2, 7, 4])],
              [tensor("y", shape)], opset=23)
    g, ks = kernels_of(tmp_path, m)
    assert summary(ks) == [(KernelKind.ATTENTION, ("Attention",))]
    assert kernel_cost(g, ks[0]).macs == 2 * (1 * 2 * 5 * 4 * 7)


def test_layer_norm_op_and_decomposed_form(tmp_path):
    x = tensor("x", [1, 5, 8])
    m = model([node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1)], [x], [tensor("y", [1, 5, 8])],
              [const("g", np.ones(8)), const("b", np.zeros(8))])
    _, ks = kernels_of(tmp_path, m)
    assert summary(ks) == [(KernelKind.LAYER_NORM, ("LayerNormalization",))]

    decomposed = [
        node("ReduceMean", ["x", "axes"], ["mu"], keepdims=1),
        node("Sub", ["x", "mu"], ["d"]), node("Pow", ["d", "two"], ["d2"]),
        node("ReduceMean", ["d2", "axes"], ["var"], keepdims=1),
        node("Add", ["var", "eps"], ["ve"]), node("Sqrt", ["ve"], ["sd"]),
        node("Div", ["d", "sd"], ["n"]), node("Mul", ["n", "g"], ["ng"]), node("Add", ["ng", "b"], ["y"]),
        node("MatMul", ["y", "w"], ["z"]),
    ]
    inits = [helper.make_tensor("axes", TensorProto.INT64, [1], [-1]), const("two", 2.0),
             const("eps", 1e-5), const("g", np.ones(8)), const("b", np.zeros(8)), const("w", rand(8, 3))]
    _, ks = kernels_of(tmp_path, model(decomposed, [x], [tensor("z", [1, 5, 3])], inits))
    assert summary(ks) == [
        (KernelKind.LAYER_NORM, ("ReduceMean", "Sub", "Pow", "ReduceMean", "Add", "Sqrt", "Div", "Mul", "Add")),
        (KernelKind.MATMUL, ("MatMul",)),
    ]


def test_unrolled_lif_neuron_is_one_kernel(tmp_path):
    T, shape = 4, [1, 3, 4, 4]
    nodes, inits = lif_steps(T, shape)
    spikes = [f"s{t}" for t in range(T)]
    nodes = [node("Split", ["xs"], [f"x{t}" for t in range(T)], axis=0, num_outputs=T)] + nodes
    nodes.append(node("Concat", spikes, ["y"], axis=0))
    m = model(nodes, [tensor("xs", [T, 3, 4, 4])], [tensor("y", [T, 3, 4, 4])], inits)
    _, ks = kernels_of(tmp_path, m)
    kinds = [k.kind for k in ks]
    assert kinds == [KernelKind.DATA_MOVEMENT, KernelKind.SPIKING_NEURON, KernelKind.DATA_MOVEMENT]
    neuron = ks[1]
    assert len(neuron.nodes) == 9 * T
    attrs = dict(neuron.key.attrs)
    assert attrs["timesteps"] == T and attrs["threshold"] == 1.0
    assert len(neuron.key.inputs) == T and len(neuron.key.outputs) == T


def test_two_neuron_layers_stay_two_kernels(tmp_path):
    T, shape = 2, [1, 2, 3, 3]
    first, inits = lif_steps(T, shape)
    second = []
    for n in lif_steps(T, shape)[0]:  # same steps on another layer's values
        n2 = helper.make_node(n.op_type, [i if i in ("tau", "vth", "one", "vreset", "v0") else "L2" + i
                                          for i in n.input], ["L2" + o for o in n.output],
                              name="L2" + n.name, **{a.name: helper.get_attribute_value(a) for a in n.attribute})
        second.append(n2)
    conv = [node("Conv", [f"s{t}", "w"], [f"L2x{t}"], pads=[1, 1, 1, 1]) for t in range(T)]
    outs = [node("Concat", [f"L2s{t}" for t in range(T)], ["y"], axis=0)]
    m = model(first + conv + second + outs, [tensor(f"x{t}", shape) for t in range(T)],
              [tensor("y", [T, 2, 3, 3])], inits + conv_weights(2, 2, 3))
    _, ks = kernels_of(tmp_path, m)
    assert [k.kind for k in ks].count(KernelKind.SPIKING_NEURON) == 2
    assert [k.kind for k in ks].count(KernelKind.CONV) == T


def test_sparse_conv_node_with_bn_and_relu(tmp_path):
    n, cin, cout = 10, 4, 8
    m = model(
        [node("SparseConv3d", ["f", "coords", "w"], ["sc"], domain="hwlat", subm=1,
              kernel_size=[3, 3, 3], stride=[1, 1, 1], padding=[1, 1, 1]),
         node("BatchNormalization", ["sc", "bn_s", "bn_b", "bn_m", "bn_v"], ["b"]),
         node("Relu", ["b"], ["y"])],
        [tensor("f", [n, cin]), tensor("coords", [n, 4], TensorProto.INT32)],
        [tensor("y", [n, cout])], [const("w", rand(27, cin, cout))] + bn_params(cout),
        extra_opsets=[("hwlat", 1)])
    g, ks = kernels_of(tmp_path, m)
    assert summary(ks) == [(KernelKind.SPARSE_CONV, ("hwlat.SparseConv3d", "BatchNormalization", "Relu"))]
    k = ks[0]
    assert [s.shape for s in k.key.outputs] == [(log_bucket(n), cout)]
    attrs = dict(k.key.attrs)
    assert attrs["kernel_size"] == (3, 3, 3) and attrs["voxels"] == log_bucket(n)
    # by default the key is measured on the runners' cloud for N voxels
    _, pairs = kernel_map_size(default_coords(n), (3, 3, 3), (1, 1, 1), (1, 1, 1), True)
    assert attrs["pairs"] == log_bucket(pairs)
    assert kernel_cost(g, k).macs == log_bucket(pairs) * cin * cout
    # a sample's coordinates: a row of 10 voxels along x, each with its neighbours on the row
    line = np.array([[0, 5, 5, x] for x in range(n)])
    [k2] = fuse(g, samples={"coords": line})
    assert dict(k2.key.attrs)["pairs"] == log_bucket(n + 2 * (n - 1)) == 27
    assert kernel_cost(g, k2).macs == 27 * cin * cout
    with pytest.raises(InvalidInputError, match="has 3 rows"):
        fuse(g, samples={"coords": line[:3]})


def test_constant_subgraphs_are_folded_not_kernels(tmp_path):
    m = model([node("Mul", ["c1", "c2"], ["c3"]), node("Add", ["a", "c3"], ["y"])],
              [tensor("a", [3])], [tensor("y", [3])], [const("c1", rand(3)), const("c2", rand(3))])
    _, ks = kernels_of(tmp_path, m)
    assert summary(ks) == [(KernelKind.ELEMENTWISE, ("Add",))]
