"""Kernel boundaries by device: ConvNeXt's LayerNorm2d (Transpose -> LayerNormalization over
the last axis -> Transpose) under the "tvm-cpu" rule set as one channel-norm kernel, as hwlat's
x86-64 TVM lowering runs it (hwlat/graph/channel_norm.py), and as before under the default
rules."""

from __future__ import annotations

from collections import Counter

import pytest

from hwlat.graph import channel_norm, fuse, load
from hwlat.graph.fuse import DEFAULT_RULES, rule_set
from tests.helpers.convnext_block import convnext_block

NORM = ("Transpose", "LayerNormalization", "Transpose")


def _ops(kernels):
    return Counter(k.key.ops for k in kernels)


def test_layer_norm_2d_is_one_kernel_under_tvm_cpu(tmp_path):
    g = load(convnext_block(tmp_path, c=16, hw=8))
    ks = fuse(g, "tvm-cpu")
    assert _ops(ks) == {("Conv",): 1, NORM: 1, ("Conv", "Add"): 1}
    (norm,) = [k for k in ks if k.key.ops == NORM]
    assert norm.rule == "channel_norm" and norm.key.kind.value == "layer_norm"
    attrs = dict(norm.key.attrs)
    assert attrs["channels"] == 1 and attrs["axis"] == -1 and "perm" not in attrs
    assert attrs["epsilon"] == pytest.approx(1e-6)
    # the kernel reads and writes NCHW: no NHWC tensor crosses its boundary
    assert [s.shape for s in norm.key.inputs] == [(1, 16, 8, 8)]
    assert [s.shape for s in norm.key.outputs] == [(1, 16, 8, 8)]
    assert [s.shape for s in norm.key.params] == [(16,), (16,)]
    inside = [n for k in ks for n in k.nodes]
    assert sorted(inside) == sorted(n.name for n in g.nodes)


def test_a_norm_without_bias_is_one_kernel_too(tmp_path):
    ks = fuse(load(convnext_block(tmp_path, bias=False)), "tvm-cpu")
    (norm,) = [k for k in ks if k.rule == "channel_norm"]
    assert [s.shape for s in norm.key.params] == [(16,)]


def test_the_default_rules_still_cut_the_transposes_apart(tmp_path):
    g = load(convnext_block(tmp_path))
    ks = fuse(g)
    assert [k.key.text() for k in ks] == [k.key.text() for k in fuse(g, "default")]
    assert "channel_norm" not in {r.name for r in DEFAULT_RULES}
    assert {r.name for r in rule_set("default")} == {r.name for r in DEFAULT_RULES}
    assert _ops(ks) == {("Conv",): 1, ("Transpose",): 2, ("LayerNormalization",): 1,
                        ("Conv", "Add"): 1}
    assert [r.name for r in rule_set("tvm-cpu")].index("channel_norm") \
        < [r.name for r in rule_set("tvm-cpu")].index("layer_norm")


@pytest.mark.parametrize("kwargs", [
    {"hw": 3},  # 9 pixels a plane: the channel-norm kernel refuses it
    {"perm": (0, 3, 2, 1), "back": (0, 3, 2, 1)},  # not NCHW -> NHWC
    {"axis": 2, "hw": 16, "c": 16},  # not the last axis (gamma still of 16)
    {"tap": True},  # the NHWC tensor is read outside the norm
])
def test_where_the_lowering_does_not_rewrite_the_cut_is_the_default_one(tmp_path, kwargs):
    g = load(convnext_block(tmp_path, **kwargs))
    assert not [k for k in fuse(g, "tvm-cpu") if k.rule == "channel_norm"]
    assert _ops(fuse(g, "tvm-cpu"))[("Transpose",)] == 2


def test_the_predicate():
    ok = dict(shape=(1, 80, 56, 56), first=(0, 2, 3, 1), last=(0, 3, 1, 2), axes=[-1], gamma=80,
              beta=80, eps=1e-6)
    assert channel_norm.channel_norm(**ok)
    assert channel_norm.channel_norm(**{**ok, "axes": [3]})
    assert channel_norm.channel_norm(**{**ok, "shape": (1, 80, 4, 4)})  # 16 pixels
    for bad in ({"shape": (1, 80, 3, 5)}, {"shape": (1, 80, 56)}, {"first": (0, 3, 1, 2)},
                {"last": (0, 2, 3, 1)}, {"axes": [1]}, {"axes": [2, 3]}, {"gamma": 56},
                {"beta": 1}, {"eps": float("nan")}, {"eps": -1.0},
                {"shape": (64, 1024, 256, 256)}):
        assert not channel_norm.channel_norm(**{**ok, **bad}), bad
