"""The grouped conv2d kernel (hwlat/kernels/dense/grouped.py) against the numpy reference: groups
2..32, channels per group 1..24 (narrow groups sharing a tile, ragged channel blocks), kernels
1/3/5, strides 1/2, dilation 2, symmetric and asymmetric padding, odd map sizes, batch 2, every
epilogue, explicit plans (several tasks a map, a partial last one), and what `supports`
refuses. The AVX2 (8-lane) and AVX-512 (16-lane) plans are both built for this machine's target
(an AVX2 plan's code runs on any x86 CPU with AVX2; the AVX-512 cases need a host with
AVX-512 and are skipped elsewhere)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import tvm

from hwlat.kernels import cpu as cpu_info
from hwlat.kernels.cpu import AVX2, AVX512
from hwlat.kernels.dense import grouped
from hwlat.kernels.dense.lowering import kernel_module, why_not
from hwlat.kernels.dense.reference import conv2d_reference
from hwlat.kernels.dense.spec import Conv2dSpec, Epilogue
from hwlat.lowering.targets import make_target

pytestmark = pytest.mark.tvm

TARGET = make_target(threads=2)
HOST_AVX512 = cpu_info.cpu_of(TARGET).avx512
P = grouped.Plan


def gspec(batch, cin, h, w, cout, groups, k=(3, 3), stride=(1, 1), pad=(1, 1, 1, 1),
          dilation=(1, 1), ep=None) -> Conv2dSpec:
    return Conv2dSpec(batch, cin, h, w, cout, k, stride, pad, dilation, groups,
                      ep or Epilogue())


# (spec, plan or None for the default, cpu)
CASES = [
    # groups 2 of 12 -> 12 channels, 3x3, odd map, bias + residual + relu
    (gspec(1, 10, 9, 11, 24, 2, ep=Epilogue(True, True, "relu")), None, AVX512),
    (gspec(1, 10, 9, 11, 24, 2, ep=Epilogue(True, True, "relu")), None, AVX2),
    # groups 4 of 3 -> 6 channels, 5x5 stride 2, asymmetric padding, hardswish
    (gspec(1, 12, 13, 10, 24, 4, (5, 5), (2, 2), (2, 1, 1, 2),
           ep=Epilogue(True, False, "hardswish")), None, AVX2),
    # 32 groups of 2 -> 1 channel (narrow: 16 groups a tile on AVX-512), 1x1 unpadded, batch 2,
    # clip without a bias
    (gspec(2, 64, 7, 5, 32, 32, (1, 1), pad=(0, 0, 0, 0),
           ep=Epilogue(False, False, "clip", -0.5, 0.5)), None, AVX512),
    # 3 groups of 4 -> 3 channels (2 groups a tile on AVX2: a ragged last group block),
    # dilation 2, gelu
    (gspec(1, 12, 11, 9, 9, 3, pad=(2, 2, 2, 2), dilation=(2, 2),
           ep=Epilogue(True, False, "gelu")), None, AVX2),
    # groups 2 of 24 -> 24 channels (3 blocks of 8), stride 2, odd map, bias only
    (gspec(1, 48, 13, 7, 48, 2, stride=(2, 2)), None, AVX512),
    # groups 4 of 5 -> 20 channels (7 + 7 + 6 rows on AVX-512: a ragged channel block), 1x1
    # stride 2, no epilogue at all
    (gspec(1, 20, 9, 9, 80, 4, (1, 1), (2, 2), (0, 0, 0, 0), ep=Epilogue(False)), None, AVX512),
    # a channel multiplier: groups == cin 4, 2 channels each, 3x3 stride 2 pad 1
    (gspec(1, 4, 10, 10, 8, 4, stride=(2, 2), ep=Epilogue(True, False, "relu")), None, AVX2),
    # explicit plans: 3 output rows a task (a partial last task), 1 vector of pixels, ragged
    # 4 + 4 + 2 channel blocks; and 2 groups a tile of an explicit width
    (gspec(1, 6, 8, 9, 20, 2, ep=Epilogue(True, True, "none")), P(4, 1, 1, rows=3), AVX2),
    (gspec(1, 8, 6, 6, 8, 4, ep=Epilogue(True, False, "clip", 0.0, 6.0)),
     P(2, 2, 2, rows=4, lanes=16), AVX512),
    # each task filling its own scratch: group width 16 (regnet), 3x3 stride 2 on an odd map,
    # 5 output rows a task (a partial last one); group width 8, stride 1, residual; narrow
    # groups 3 a tile (a ragged last group block), 5x5 stride 2, asymmetric padding, batch 2;
    # dilation 2; and a whole-image scratch forced on the same stride-2 shape
    (gspec(1, 48, 23, 19, 48, 3, stride=(2, 2), ep=Epilogue(True, False, "relu")),
     P(8, 2, 1, rows=5, lanes=16, task_fill=True), AVX512),
    (gspec(1, 40, 11, 13, 40, 5, ep=Epilogue(True, True, "none")),
     P(8, 1, 1, lanes=8, task_fill=True), AVX2),
    (gspec(2, 14, 15, 12, 21, 7, (5, 5), (2, 2), (1, 2, 2, 1), ep=Epilogue(True, False, "gelu")),
     P(3, 2, 3, rows=3, lanes=16, task_fill=True), AVX512),
    (gspec(1, 12, 11, 9, 24, 3, pad=(2, 2, 2, 2), dilation=(2, 2), ep=Epilogue(bias=True)),
     P(8, 1, 1, rows=4, lanes=8, task_fill=True), AVX2),
    (gspec(1, 48, 23, 19, 48, 3, stride=(2, 2), ep=Epilogue(True, False, "relu")),
     P(8, 2, 1, rows=5, lanes=16, task_fill=False), AVX512),
]


def _plan(spec, plan, cpu):
    return plan or grouped.default_plan(spec, cpu)


@functools.cache
def _library():
    """Every case's kernel compiled as one module (one compile is faster)."""
    funcs = {f"g{i}": grouped.primfunc(s, _plan(s, p, c)).with_attr("global_symbol", f"g{i}")
             for i, (s, p, c) in enumerate(CASES)}
    ex = tvm.compile(tvm.IRModule(funcs), target=TARGET)
    return [ex[f"g{i}"] for i in range(len(CASES))]


def run(i: int, seed: int = 0) -> None:
    spec, plan, cpu = CASES[i]
    if cpu.avx512 and not HOST_AVX512:
        pytest.skip("an AVX-512 plan needs an AVX-512 host")
    plan = _plan(spec, plan, cpu)
    assert grouped.supports(spec) is None
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(spec.x_shape).astype(np.float32)
    w = rng.standard_normal(spec.w_shape).astype(np.float32)
    bias = rng.standard_normal(spec.cout).astype(np.float32)
    res = rng.standard_normal(spec.y_shape).astype(np.float32)
    packed = grouped.pack_weight(spec, w, plan)
    assert packed.shape == grouped.packed_weight_shape(spec, plan) and packed.flags.c_contiguous
    np.testing.assert_array_equal(grouped.unpack_weight(spec, packed, plan), w)
    args = [x, packed] + ([bias] if spec.epilogue.bias else []) + \
        ([res] if spec.epilogue.residual else [])
    out = tvm.runtime.tensor(np.full(spec.y_shape, np.nan, np.float32))
    _library()[i](*(tvm.runtime.tensor(a) for a in args), out)
    want = conv2d_reference(spec, x, w, bias, res)
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("i", range(len(CASES)), ids=[
    f"g{s.groups}-cin{s.cin}-cout{s.cout}-k{s.kernel[0]}-s{s.stride[0]}-d{s.dilation[0]}-"
    f"{s.epilogue.activation}-{c.isa}" for s, _, c in CASES])
def test_matches_reference(i):
    run(i)


def test_plans_fit_the_registers_and_use_the_vector_width():
    for cog in (1, 2, 3, 4, 5, 8, 12, 16, 20, 24, 32, 48):
        for groups in (2, 3, 32, 46):
            spec = gspec(1, 8 * groups, 14, 14, cog * groups, groups)
            for cpu, lanes in ((AVX2, 8), (AVX512, 16)):
                plan = grouped.default_plan(spec, cpu)
                assert plan.lanes == lanes
                assert plan.block * plan.nv <= grouped.ACC_REGISTERS[lanes]
                if cog < grouped.NARROW:  # narrow groups share a tile
                    assert plan.mr == cog and 1 < plan.gt <= groups or groups == 1
                else:
                    assert plan.gt == 1 and grouped.NARROW <= plan.mr <= min(cog, 8)
                nb, ncb = grouped.packed_weight_shape(spec, plan)[:2]
                assert nb * plan.gt >= groups and ncb * plan.mr >= cog


def test_task_fill_rule():
    """Large strided inputs (regnet's 64 x 112 x 112 stride-2 conv) fill a scratch a task; small
    ones one scratch; an explicit plan field wins."""
    big = gspec(1, 64, 112, 112, 64, 4, stride=(2, 2))
    small = gspec(1, 288, 14, 14, 288, 18)
    assert grouped.task_fill(big, grouped.default_plan(big, AVX512))
    assert not grouped.task_fill(small, grouped.default_plan(small, AVX512))
    assert not grouped.task_fill(big, P(8, 2, 1, lanes=16, task_fill=False))
    assert grouped.task_fill(small, P(8, 2, 1, lanes=16, task_fill=True))


def test_supports_and_the_rewrite_route():
    assert "groups=1" in grouped.supports(gspec(1, 8, 5, 5, 8, 1))
    assert "multiples" in grouped.supports(Conv2dSpec(1, 6, 5, 5, 8, (3, 3), groups=4))
    assert "negative" in grouped.supports(gspec(1, 8, 5, 5, 8, 2, pad=(-1, 0, 0, 0)))
    assert "empty" in grouped.supports(gspec(1, 8, 2, 2, 8, 2, (5, 5), pad=(0, 0, 0, 0)))
    with pytest.raises(ValueError, match="grouped conv2d"):
        grouped.primfunc(gspec(1, 8, 5, 5, 8, 1))
    with pytest.raises(ValueError, match="bad grouped-conv tile"):
        P(8, 2, 1, lanes=8)  # 16 accumulators on AVX2
    with pytest.raises(ValueError, match="needs mr"):
        grouped.pack_weight(gspec(1, 8, 5, 5, 8, 4), np.zeros((8, 2, 3, 3)), P(1, 2, 2))
    # grouped convs and depthwise convs the depthwise kernel refuses (dilated, a channel
    # multiplier) run this kernel; plain depthwise convs keep theirs
    assert kernel_module(gspec(1, 8, 5, 5, 16, 2))[0] == "grouped"
    assert kernel_module(gspec(1, 8, 9, 9, 8, 8, dilation=(2, 2)))[0] == "grouped"
    assert kernel_module(gspec(1, 8, 5, 5, 16, 8))[0] == "grouped"
    assert kernel_module(gspec(1, 8, 5, 5, 8, 8))[0] == "depthwise"
    assert why_not(gspec(1, 8, 5, 5, 16, 2)) is None
