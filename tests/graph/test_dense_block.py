"""Kernel boundaries by device: DenseNet's layers and transitions under the "tvm-cpu" rule set
(hwlat/graph/dense_block.py) as hwlat's x86-64 TVM lowering runs them (BN + ReLU in a 1x1
conv's input read, the transition's pool first, a dense block's concats one buffer written in
place), and as before under the default rules."""

from __future__ import annotations

from collections import Counter

import pytest

from hwlat.graph import dense_block, fuse, load
from hwlat.graph.fuse import DEFAULT_RULES, rule_set
from tests.helpers.dense_block import dense_block as dense_model
from tests.helpers.onnx_builders import const, model, node, rand, save, tensor

LAYER = ("BatchNormalization", "Relu", "Conv", "Relu")


def _ops(kernels):
    return Counter(k.key.ops for k in kernels)


def test_a_dense_block_is_prologue_convs_and_no_concat_kernel_under_tvm_cpu(tmp_path):
    g = load(dense_model(tmp_path, layers=3))
    ks = fuse(g, "tvm-cpu")
    assert _ops(ks) == {LAYER: 3, ("Conv",): 3,
                        ("BatchNormalization", "Relu", "Conv", "AveragePool"): 1}
    assert Counter(k.rule for k in ks) == {"prologue_conv": 4, "conv": 3}
    # every node is in one kernel, but the four concats: written in place, no kernel
    inside = [n for k in ks for n in k.nodes]
    assert len(inside) == len(set(inside))
    assert {n.name for n in g.nodes} - set(inside) == {n.name for n in g.nodes if n.op.qualname == "Concat"}
    layer = next(k for k in ks if k.key.ops == LAYER)
    attrs = dict(layer.key.attrs)
    assert attrs["prologue"] == 1 and attrs["pool_first"] == 0 and attrs["kernel_shape"] == (1, 1)
    # a layer reads the concat (16 + 8 channels for the second) and writes its 1x1 conv's ReLU
    second = [k for k in ks if k.key.ops == LAYER][1]
    assert [s.shape for s in second.key.inputs] == [(1, 24, 8, 8)]
    assert [s.shape for s in second.key.outputs] == [(1, 32, 8, 8)]
    (trans,) = [k for k in ks if "AveragePool" in k.key.ops]
    assert dict(trans.key.attrs)["pool_first"] == 1
    assert [s.shape for s in trans.key.inputs] == [(1, 40, 8, 8)]
    assert [s.shape for s in trans.key.outputs] == [(1, 20, 4, 4)]


def test_the_default_rules_still_cut_bn_relu_and_concats_apart(tmp_path):
    g = load(dense_model(tmp_path, layers=3))
    ks = fuse(g)
    assert [k.key.text() for k in ks] == [k.key.text() for k in fuse(g, "default")]
    assert {r.name for r in rule_set("default")} == {r.name for r in DEFAULT_RULES}
    assert not {"prologue_conv", "concat_family"} & {r.name for r in DEFAULT_RULES}
    ops = _ops(ks)
    assert ops[("Concat",)] == 4 and ops[("BatchNormalization",)] == 4 and ops[("Relu",)] == 4
    assert ops[("AveragePool",)] == 1 and ops[("Conv", "Relu")] == 3


def test_a_transition_with_an_activation_keeps_its_pool_apart(tmp_path):
    g = load(dense_model(tmp_path, layers=2, transition_act=True))
    ks = fuse(g, "tvm-cpu")
    assert ("BatchNormalization", "Relu", "Conv", "Relu") in _ops(ks)
    assert _ops(ks)[("AveragePool",)] == 1
    assert all(dict(k.key.attrs).get("pool_first", 0) == 0 for k in ks)


def _lone(tmp_path, *, k=1, hw=8, readers=1, name="lone") -> str:
    """concat(x, y) -> BN -> ReLU -> KxK conv (ReLU read by `readers` convs)."""
    inits = [const("g", rand(16, seed=1) ** 2 + 0.5), const("b", rand(16, seed=2)),
             const("m", rand(16, seed=3)), const("v", rand(16, seed=4) ** 2 + 0.5),
             const("w", rand(8, 16, k, k, seed=5))]
    nodes = [node("Concat", ["x", "y"], ["cat"], axis=1),
             node("BatchNormalization", ["cat", "g", "b", "m", "v"], ["bn"]),
             node("Relu", ["bn"], ["r"])]
    outs = []
    for i in range(readers):
        nodes.append(node("Conv", ["r", "w"], [f"o{i}"], kernel_shape=[k, k], pads=[k // 2] * 4))
        outs.append(tensor(f"o{i}", [1, 8, hw, hw]))
    m = model(nodes, [tensor("x", [1, 8, hw, hw]), tensor("y", [1, 8, hw, hw])], outs, inits)
    return save(m, tmp_path / f"{name}.onnx")


def test_a_lone_concat_keeps_its_kernel_and_the_prologue_needs_what_the_lowering_needs(tmp_path):
    ks = fuse(load(_lone(tmp_path)), "tvm-cpu")  # a lone concat: its copy runs
    assert _ops(ks) == {("Concat",): 1, ("BatchNormalization", "Relu", "Conv"): 1}
    for kw in ({"k": 3}, {"hw": 1}, {"readers": 2}):  # a 3x3 conv; a GEMV; the ReLU read twice
        ks = fuse(load(_lone(tmp_path, **kw, name="x".join(map(str, kw.values())))), "tvm-cpu")
        assert ("BatchNormalization",) in _ops(ks) and ("Relu",) in _ops(ks), kw
        assert all(k.rule != "prologue_conv" for k in ks)


@pytest.mark.parametrize(("kernel", "stride", "pads", "pixels", "want"), [
    ((1, 1), (1, 1), (0, 0, 0, 0), 64, True), ((3, 3), (1, 1), (1, 1, 1, 1), 64, False),
    ((1, 1), (2, 2), (0, 0, 0, 0), 16, False), ((1, 1), (1, 1), (0, 0, 0, 0), 1, False)])
def test_the_prologue_predicate(kernel, stride, pads, pixels, want):
    assert dense_block.prologue_conv(kernel, stride, pads, pixels) is want


def test_the_family_is_the_concats_of_prefixes():
    concats = {"a": ("x",), "b": ("x", "f1"), "c": ("x", "f1", "f2"), "d": ("x", "f9")}
    assert dense_block.prefix_family(concats, "c", lambda p, q: p == q) == {"a": 1, "b": 2, "c": 3}
    assert dense_block.prefix_family(concats, "d", lambda p, q: p == q) == {"a": 1, "d": 2}
    assert dense_block.half_pool((2, 2), (2, 2), (0, 0, 0, 0), (1, 1), False)
    assert not dense_block.half_pool((3, 3), (2, 2), (0, 0, 0, 0), (1, 1), False)
    assert not dense_block.half_pool((2, 2), (2, 2), (0, 0, 0, 0), (1, 1), True)
