"""The per-input-channel weight scale kernel (hwlat/kernels/dense/scale.py) against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import tvm

from hwlat.kernels.dense import scale
from hwlat.lowering.targets import make_target

pytestmark = pytest.mark.tvm

TARGET = make_target(threads=1)


@pytest.mark.parametrize("shape", [
    (23, 544, 1, 1, 6),  # OFA's 544 -> 136 project conv, packed in blocks of 6 output channels
    (3, 5, 1, 1, 3),     # rows of 15: one vector and a 7-value tail
    (2, 7, 3, 3, 4),     # kh * kw * block = 36 values a channel
    (1, 3, 1, 1, 1),     # shorter than a vector
])
def test_scaled_weight_matches_numpy(shape):
    spec = scale.ChannelScaleSpec(shape[0], shape[1], int(np.prod(shape[2:])), shape)
    lib = tvm.compile(tvm.IRModule({"k": scale.primfunc(spec).with_attr("global_symbol", "k")}),
                      target=TARGET)
    rng = np.random.default_rng(3)
    s = rng.standard_normal(spec.s_shape).astype(np.float32)
    w = rng.standard_normal(shape).astype(np.float32)
    y = tvm.runtime.tensor(np.full(shape, np.nan, np.float32))
    lib["k"](tvm.runtime.tensor(s), tvm.runtime.tensor(w), y)
    want = w * s.reshape(1, -1, *([1] * (len(shape) - 2)))
    np.testing.assert_array_equal(y.numpy(), want)
    np.testing.assert_array_equal(scale.reference(s, w), want)


@pytest.mark.parametrize("spec, match", [
    (scale.ChannelScaleSpec(0, 4, 2), "blocks must be a positive int"),
    (scale.ChannelScaleSpec(2, 4, 2, (2, 4, 3)), "does not hold"),
])
def test_bad_specs_are_refused(spec, match):
    assert match in scale.supports(spec)
    with pytest.raises(ValueError, match=match):
        scale.primfunc(spec)
