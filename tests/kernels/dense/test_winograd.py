"""hwlat.kernels.dense.winograd against the numpy reference: every epilogue, odd output sizes
(clipped tiles), padding 0 / 1 / asymmetric, batch 2, cin / cout not multiples of 6 / 16, several
output-channel blocks per task, and supports() refusals."""

from __future__ import annotations

import os

os.environ.setdefault("TVM_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import pytest

from hwlat.kernels.dense import winograd  # noqa: E402
from hwlat.kernels.dense.spec import Conv2dSpec, Epilogue  # noqa: E402
from hwlat.lowering.targets import make_target  # noqa: E402
from tests.helpers.conv_check import EPILOGUES, check_conv, epilogue_id  # noqa: E402

pytestmark = pytest.mark.tvm

TARGET = make_target(threads=2)


def run(spec: Conv2dSpec, cbg: int | None = None, seed: int = 0) -> None:
    assert winograd.supports(spec) is None

    def pack(w):
        wp = winograd.pack_weight(spec, w)
        assert wp.shape == winograd.packed_weight_shape(spec)
        return wp

    check_conv(spec, pack, lambda: winograd.primfunc(spec, cbg), TARGET, seed)


@pytest.mark.parametrize("ep", EPILOGUES, ids=epilogue_id)
def test_epilogues(ep):
    # batch 2, odd output (9 x 11: clipped last tile row and column), ragged channels
    run(Conv2dSpec(2, 5, 9, 11, 7, (3, 3), (1, 1), (1, 1, 1, 1), epilogue=ep))


EP = Epilogue(bias=True, residual=True, activation="relu")


@pytest.mark.parametrize("spec,cbg", [
    (Conv2dSpec(1, 8, 7, 7, 13, (3, 3), (1, 1), (1, 1, 1, 1), epilogue=EP), None),  # 7x7, odd
    (Conv2dSpec(1, 8, 7, 11, 13, (3, 3), epilogue=EP), None),  # no padding: 5x9 output
    (Conv2dSpec(2, 3, 6, 8, 20, (3, 3), (1, 1), (0, 2, 1, 0), epilogue=EP), 2),  # asymmetric pads
    (Conv2dSpec(1, 17, 12, 12, 40, (3, 3), (1, 1), (1, 1, 1, 1), epilogue=EP), 3),  # groups of 3
    (Conv2dSpec(2, 33, 3, 3, 1, (3, 3), epilogue=EP), None),  # 1x1 output, one channel
])
def test_shapes(spec, cbg):
    run(spec, cbg)


def test_refusals():
    base = dict(batch=1, cin=8, height=8, width=8, cout=8, kernel=(3, 3), padding=(1, 1, 1, 1))
    assert winograd.supports(Conv2dSpec(**base)) is None
    cases = {
        "stride": Conv2dSpec(**{**base, "stride": (2, 2)}),
        "kernel": Conv2dSpec(**{**base, "kernel": (5, 5)}),
        "groups": Conv2dSpec(**{**base, "groups": 2}),
        "dilation": Conv2dSpec(**{**base, "dilation": (2, 2)}),
    }
    for word, spec in cases.items():
        reason = winograd.supports(spec)
        assert isinstance(reason, str) and word in reason, (word, reason)
        assert not winograd.preferred(spec)
        with pytest.raises(ValueError):
            winograd.primfunc(spec)
    with pytest.raises(ValueError):
        winograd.pack_weight(Conv2dSpec(**base), np.zeros((8, 8, 5, 5), np.float32))


def test_preferred():
    for c, hw in ((64, 56), (128, 28), (256, 14), (512, 7)):
        assert winograd.preferred(Conv2dSpec(1, c, hw, hw, c, (3, 3), (1, 1), (1, 1, 1, 1)))
    assert not winograd.preferred(Conv2dSpec(1, 3, 32, 32, 16, (3, 3), (1, 1), (1, 1, 1, 1)))
