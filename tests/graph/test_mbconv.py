"""Kernel boundaries by device: a MobileNet block's convs as one kernel under the "tvm-cpu" rule
set (hwlat/graph/mbconv.py), as hwlat's x86-64 TVM lowering runs them; three kernels under the
default rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hwlat.errors import InvalidInputError
from hwlat.graph import fuse, load
from hwlat.graph.cost import block_macs, kernel_cost, key_cost
from hwlat.graph.fuse import RULE_SETS, rule_set
from hwlat.graph.mbconv import MIN_PAIR_BYTES, MIN_PROJECT_PIXELS, preferred
from hwlat.lut.features import FEATURE_NAMES, key_features, parse_key
from tests.helpers.mbconv_block import mobilenet_block


def _block(tmp_path, **kw):
    return load(mobilenet_block(tmp_path, **kw))


def _convs(kernels):
    return [k for k in kernels if k.kind.value == "conv"]


def test_a_mobilenet_v2_block_is_one_kernel_under_tvm_cpu_rules_and_three_by_default(tmp_path):
    g = _block(tmp_path)
    default, tvm = _convs(fuse(g)), _convs(fuse(g, "tvm-cpu"))
    assert [k.rule for k in default] == ["conv", "conv", "conv"]
    assert [k.rule for k in tvm] == ["mbconv"]
    block = tvm[0]
    assert block.key.ops == ("Conv", "Clip", "Conv", "Clip", "Conv", "Add")
    assert set(block.nodes) == {n for k in default for n in k.nodes}
    # the block reads x (also its residual) and the weights, writes its output: nothing between
    assert [s.shape for s in block.key.inputs] == [(1, 8, 28, 28)]
    assert [s.shape for s in block.key.outputs] == [(1, 8, 28, 28)]
    attrs = dict(block.key.attrs)  # told apart by its depthwise conv
    assert attrs["group"] == 24 and attrs["kernel_shape"] == (3, 3) and attrs["strides"] == (1, 1)


def test_the_fused_kernels_work_is_the_sum_of_its_convs_and_its_key_alone_says_so(tmp_path):
    for i, (stride, expand, project, hw, mid) in enumerate(
            [(1, True, True, 28, 24), (2, True, True, 56, 24), (1, False, True, 28, 8),
             (2, True, False, 112, 48)]):  # the last: expand + depthwise alone, 2.4 MB between
        g = _block(tmp_path, stride=stride, expand=expand, project=project, hw=hw, mid=mid,
                   residual=stride == 1 and project, name=f"b{i}")
        parts = _convs(fuse(g))
        (block,) = _convs(fuse(g, "tvm-cpu"))
        want = sum(kernel_cost(g, k).macs for k in parts)
        assert want > 0
        assert kernel_cost(g, block).macs == want
        assert key_cost(block.key).macs == want
        macs = math.expm1(key_features(block.key.text())[FEATURE_NAMES.index("macs")])
        assert round(macs) == want
        # bytes: the block's input and weights in, its output out; the tensors between stay out
        cost = key_cost(block.key)
        assert cost.bytes_written == 4 * int(np.prod(block.key.outputs[0].shape))
        assert cost.bytes_written < sum(kernel_cost(g, k).bytes_written for k in parts)


def test_the_fused_kernels_key_round_trips_through_its_text(tmp_path):
    g = _block(tmp_path, stride=2, hw=56, residual=False)
    (block,) = _convs(fuse(g, "tvm-cpu"))
    text = block.key.text()
    p = parse_key(text)
    assert p.kind == "conv" and p.ops == block.key.ops
    assert [s.shape for s in p.params] == [s.shape for s in block.key.params]
    assert [s.shape for s in p.outputs] == [(1, 8, 28, 28)]
    assert p.attrs["strides"] == "2x2" and p.attrs["group"] == "24"
    # cut again: the same key (the table's column); and where each clip has bounds of its own
    assert [k.key.text() for k in _convs(fuse(g, "tvm-cpu"))] == [text]
    own = _block(tmp_path, stride=2, hw=56, residual=False, shared_bounds=False, name="own")
    assert [k.key.text() for k in _convs(fuse(own, "tvm-cpu"))] == [text]


def test_blocks_the_lowering_leaves_apart_stay_apart(tmp_path):
    # a whole block on a 14x14 map: below the project threshold, and 2 MB are not saved
    g = _block(tmp_path, hw=14, name="small")
    assert [k.rule for k in _convs(fuse(g, "tvm-cpu"))] == ["conv"] * 3
    # the expanded tensor is also an output: the depthwise and project convs fuse alone
    g = _block(tmp_path, mid_output=True, name="shared")
    assert [k.rule for k in _convs(fuse(g, "tvm-cpu"))] == ["conv", "mbconv"]
    assert _convs(fuse(g, "tvm-cpu"))[1].key.ops == ("Conv", "Clip", "Conv", "Add")
    # a composite activation (SiLU) is not fused into the dense kernels, so neither is the block
    g = _block(tmp_path, act="Sigmoid", name="sigmoid")
    assert [k.rule for k in _convs(fuse(g, "tvm-cpu"))] == ["conv"] * 3


def test_preferred_is_the_lowerings_threshold():
    small, large = (1, 24, 27, 27), (1, 24, 28, 28)
    assert not preferred(small, small, expand=True, project=True)
    assert preferred(large, large, expand=True, project=True)
    assert preferred(large, large, expand=False, project=True)
    assert not preferred(large, large, expand=False, project=False)
    assert MIN_PROJECT_PIXELS == 28 * 28
    # expand + depthwise alone: the expanded tensor must be at least MIN_PAIR_BYTES
    c = MIN_PAIR_BYTES // (4 * 56 * 56)
    assert preferred((1, c + 1, 56, 56), (1, c + 1, 28, 28), expand=True, project=False)
    assert not preferred((1, c - 1, 56, 56), (1, c - 1, 28, 28), expand=True, project=False)


def test_block_macs_places_the_depthwise_conv_by_its_channels():
    x, out = (1, 8, 56, 56), (1, 16, 28, 28)
    e, d, p = (24, 8, 1, 1), (24, 1, 3, 3), (16, 24, 1, 1)
    three = 56 * 56 * 24 * 8 + 28 * 28 * 24 * 9 + 28 * 28 * 16 * 24
    assert block_macs(x, out, [e, d, p], 24) == three
    assert block_macs(x, (1, 24, 28, 28), [e, d], 24) == 56 * 56 * 24 * 8 + 28 * 28 * 24 * 9
    assert block_macs((1, 24, 56, 56), out, [d, p], 24) == 28 * 28 * 24 * 9 + 28 * 28 * 16 * 24
    assert block_macs(x, out, [e], 24) is None
    assert block_macs(x, (1, 16, None, 28), [e, d, p], 24) is None


def test_rule_sets_are_named_and_an_unknown_one_is_refused():
    from hwlat.devices.spec import FUSION_RULE_SETS

    assert tuple(RULE_SETS) == FUSION_RULE_SETS
    names = [r.name for r in rule_set("tvm-cpu")]
    # blocks, then BN + ReLU into 1x1 convs (the lowering's order), then each conv alone
    assert names.index("mbconv") == names.index("prologue_conv") - 1 == names.index("conv") - 2
    assert names[-1] == "concat_family"
    # ConvNeXt's LayerNorm2d as one kernel, before the layer-norm rule would take the norm alone
    assert names.index("channel_norm") == names.index("layer_norm") - 1
    tvm_only = {"mbconv", "prologue_conv", "concat_family", "channel_norm"}
    assert [r.name for r in rule_set("default")] == [n for n in names if n not in tvm_only]
    with pytest.raises(InvalidInputError, match="unknown fusion rule set 'fast'"):
        rule_set("fast")
