"""The fused expand (1x1) + depthwise kernel against the numpy reference of the two convs: kernel
sizes 1..7, strides 1..3, symmetric, asymmetric and no padding, widths that leave column tails,
mid channels that leave a partial block, batch 2, several tasks an image, explicit tiles; what
`supports` refuses, the packing, and where the rewrite prefers it."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import tvm

from hwlat.kernels.dense import depthwise, expand_dw
from hwlat.kernels.dense.reference import conv2d_reference
from hwlat.kernels.dense.spec import Conv2dSpec, Epilogue
from hwlat.lowering.targets import make_target

TARGET = make_target(threads=1)


def pair(cin: int, h: int, w: int, cm: int, k=(3, 3), stride=(1, 1), pad=(1, 1, 1, 1),
         act1="relu", act2="hardswish", batch: int = 1, tasks: int = 1) -> expand_dw.ExpandDwSpec:
    e = Conv2dSpec(batch, cin, h, w, cm, (1, 1), epilogue=Epilogue(True, False, act1))
    d = Conv2dSpec(batch, cm, h, w, cm, k, stride, pad, groups=cm,
                   epilogue=Epilogue(True, False, act2, -0.5, 1.5))
    return expand_dw.ExpandDwSpec(e, d, tasks)


CASES = {
    # name: (spec, depthwise tile or None)
    "3x3-s1-tails": (pair(5, 13, 11, 7), None),
    "3x3-s2-odd": (pair(4, 15, 21, 13, stride=(2, 2)), None),
    "3x3-s2-even-wide": (pair(3, 16, 70, 12, stride=(2, 2), act1="clip", act2="relu"), None),
    "5x5-s1": (pair(6, 14, 14, 6, (5, 5), pad=(2, 2, 2, 2), act1="hardswish", act2="none"), None),
    "5x5-s2-batch2-tasks2": (pair(3, 17, 23, 12, (5, 5), (2, 2), (2, 2, 2, 2), batch=2, tasks=2),
                             None),
    "7x7-s1": (pair(2, 12, 40, 6, (7, 7), pad=(3, 3, 3, 3), act1="none", act2="clip"), None),
    "7x7-s2-tasks3": (pair(3, 15, 15, 20, (7, 7), (2, 2), (3, 3, 3, 3), tasks=3), None),
    "no-pad": (pair(3, 10, 26, 6, pad=(0, 0, 0, 0)), None),
    "asymmetric-pad": (pair(3, 11, 12, 6, pad=(0, 2, 1, 0)), None),
    "tf-same-s2": (pair(3, 12, 12, 6, stride=(2, 2), pad=(0, 0, 1, 1)), None),
    "mixed-stride": (pair(3, 13, 18, 6, (3, 5), (2, 1), (1, 2, 1, 2)), None),
    "stride-3": (pair(2, 20, 25, 6, stride=(3, 3)), None),
    "1x1-depthwise": (pair(4, 5, 9, 6, (1, 1), pad=(0, 0, 0, 0)), None),
    "tall-tile": (pair(4, 19, 30, 6, stride=(2, 2)), depthwise.Tile(6, 8)),
    "wide-tile": (pair(4, 9, 37, 6, (5, 5), pad=(2, 2, 2, 2)), depthwise.Tile(2, 16)),
}


@functools.cache
def _library():
    """Every case's kernel, compiled as one module (one compile is faster)."""
    mod = tvm.IRModule({f"f{i}": expand_dw.primfunc(spec, tile).with_attr("global_symbol", f"f{i}")
                        for i, (spec, tile) in enumerate(CASES.values())})
    ex = tvm.compile(mod, target=TARGET)
    return {name: ex[f"f{i}"] for i, name in enumerate(CASES)}


def weights(spec: expand_dw.ExpandDwSpec, seed: int = 0):
    rng = np.random.default_rng(seed)
    e, d = spec.expand, spec.dw
    x = rng.standard_normal(e.x_shape).astype(np.float32)
    w1 = (rng.standard_normal(e.w_shape) / np.sqrt(e.cin)).astype(np.float32)
    b1 = rng.standard_normal(e.cout).astype(np.float32)
    w2 = rng.standard_normal(d.w_shape).astype(np.float32)
    b2 = rng.standard_normal(d.cout).astype(np.float32)
    return x, w1, b1, w2, b2


def reference(spec: expand_dw.ExpandDwSpec, x, w1, b1, w2, b2) -> np.ndarray:
    return conv2d_reference(spec.dw, conv2d_reference(spec.expand, x, w1, b1), w2, b2)


@pytest.mark.parametrize("name", CASES)
def test_matches_the_two_convs(name):
    spec, _ = CASES[name]
    assert expand_dw.supports(spec) is None
    x, w1, b1, w2, b2 = weights(spec)
    packed = expand_dw.pack(spec, w1, b1, w2, b2)
    assert tuple(a.shape for a in packed) == expand_dw.packed_shapes(spec)
    out = tvm.runtime.tensor(np.full(spec.y_shape, np.nan, np.float32))
    _library()[name](tvm.runtime.tensor(x), *(tvm.runtime.tensor(a) for a in packed), out)
    want = reference(spec, x, w1, b1, w2, b2)
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-4, atol=1e-4 * scale)


def test_pack_pads_the_last_block_with_zero_channels():
    spec = pair(3, 8, 8, 7)  # 7 mid channels: blocks of 6, the second holds one real channel
    x, w1, b1, w2, b2 = weights(spec)
    pw1, pb1, pw2, pb2 = expand_dw.pack(spec, w1, b1, w2, b2)
    assert pw1.shape == (2, 3, expand_dw.G) and pb1.shape == pw2.shape[:1] == pb2.shape == (12,)
    assert pw1[1, :, 0].tolist() == w1[6, :, 0, 0].tolist()
    assert not pw1[1, :, 1:].any() and not pb1[7:].any() and not pw2[7:].any() and not pb2[7:].any()
    np.testing.assert_array_equal(pw2[:7], w2.reshape(7, 9))
    with pytest.raises(ValueError, match="weights of shapes"):
        expand_dw.pack(spec, w1[:, :2], b1, w2, b2)


def _with(spec: expand_dw.ExpandDwSpec, expand=None, dw=None, tasks=None):
    return expand_dw.ExpandDwSpec(expand or spec.expand, dw or spec.dw,
                                  spec.tasks if tasks is None else tasks)


@pytest.mark.parametrize("change, reason", [
    (lambda s: _with(s, expand=Conv2dSpec(1, 4, 10, 10, 6, (3, 3), padding=(1, 1, 1, 1))),
     "must be 1x1"),
    (lambda s: _with(s, expand=Conv2dSpec(1, 4, 10, 10, 6, (1, 1), epilogue=Epilogue(False))),
     "need a bias"),
    (lambda s: _with(s, dw=Conv2dSpec(1, 6, 10, 10, 6, (3, 3), padding=(1, 1, 1, 1), groups=6,
                                      epilogue=Epilogue(True, True))), "no residual"),
    (lambda s: _with(s, dw=Conv2dSpec(1, 6, 9, 10, 6, (3, 3), padding=(1, 1, 1, 1), groups=6)),
     "is not the expand output"),
    (lambda s: _with(s, dw=Conv2dSpec(1, 6, 10, 10, 6, (3, 3), padding=(1, 1, 1, 1))),
     "not a depthwise conv"),
    (lambda s: _with(s, tasks=0), "tasks must be"),
])
def test_supports_refuses(change, reason):
    spec = change(pair(4, 10, 10, 6))
    assert reason in expand_dw.supports(spec)
    with pytest.raises(ValueError, match=reason):
        expand_dw.primfunc(spec)


def test_preferred_where_the_expanded_tensor_is_large():
    assert expand_dw.preferred(pair(24, 112, 112, 72, stride=(2, 2)))  # OFA's first stage: 3.6 MB
    assert expand_dw.preferred(pair(16, 112, 112, 96, stride=(2, 2)))  # MobileNetV2's: 4.8 MB
    assert not expand_dw.preferred(pair(24, 56, 56, 144))  # 1.8 MB: the two kernels are faster
    assert not expand_dw.preferred(pair(136, 14, 14, 816))
