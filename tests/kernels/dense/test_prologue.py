"""Conv kernels with an input prologue (spec.prologue: the input read as relu(x * scale[c] +
shift[c]), a batch norm and relu before the conv): every plan kind a 1x1 conv takes (pixel tiles
with a ragged tail, co_outer chunks, "pixels" rows), AVX2 and AVX-512 plans, batch 2, channel
counts off the vector width; and the refusals."""

from __future__ import annotations

import os

os.environ.setdefault("TVM_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tvm  # noqa: E402

from hwlat.kernels.cpu import AVX2, AVX512  # noqa: E402
from hwlat.kernels.dense import conv  # noqa: E402
from hwlat.kernels.dense.reference import conv2d_reference  # noqa: E402
from hwlat.kernels.dense.spec import Conv2dSpec, Epilogue  # noqa: E402
from hwlat.lowering.targets import make_target  # noqa: E402

pytestmark = pytest.mark.tvm

TARGET = make_target(threads=2)
RELU = Epilogue(bias=True, activation="relu")

CASES = {
    # 37 channels on a 10x10 map: full pixel tiles and a ragged tail, 20 output channels
    "tiles-tail": Conv2dSpec(2, 37, 10, 10, 20, (1, 1), epilogue=RELU),
    # a 60x60 map: co_outer chunks (the chunk's prologue in a task buffer), 13 channels out
    "co-outer": Conv2dSpec(1, 21, 60, 60, 13, (1, 1), epilogue=Epilogue(bias=False)),
    # 7x7, many channels: "pixels" rows, reduction blocks, a residual
    "pixels": Conv2dSpec(2, 150, 7, 7, 40, (1, 1), epilogue=Epilogue(residual=True, activation="relu")),
}


def _run(spec: Conv2dSpec, cpu, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(spec.x_shape).astype(np.float32)
    w = rng.standard_normal(spec.w_shape).astype(np.float32)
    bias = rng.standard_normal(spec.cout).astype(np.float32)
    res = rng.standard_normal(spec.y_shape).astype(np.float32)
    pre = np.stack([rng.uniform(0.5, 2.0, spec.cin) * rng.choice([-1, 1], spec.cin),
                    rng.standard_normal(spec.cin)]).astype(np.float32)
    ep = spec.epilogue
    func = conv.primfunc(spec, cpu=cpu).with_attr("global_symbol", "k")
    ex = tvm.compile(tvm.IRModule({"k": func}), target=TARGET)
    args = [x, conv.pack_weight(spec, w, cpu=cpu)] + ([bias] if ep.bias else []) + \
        ([res] if ep.residual else []) + [pre]
    y = tvm.runtime.empty(spec.y_shape, "float32")
    ex["k"](*[tvm.runtime.tensor(a) for a in args], y)
    xin = np.maximum(x * pre[0].reshape(1, -1, 1, 1) + pre[1].reshape(1, -1, 1, 1), 0)
    plain = Conv2dSpec(*spec.x_shape, spec.cout, spec.kernel, epilogue=ep)
    # (the reference with the prologue, and without it: the conv of x itself)
    return y.numpy(), conv2d_reference(plain, xin, w, bias, res), conv2d_reference(plain, x, w, bias, res)


@pytest.mark.parametrize("cpu", [AVX2, AVX512], ids=["avx2", "avx512"])
@pytest.mark.parametrize("name", list(CASES))
def test_prologue_matches_numpy(name, cpu):
    spec = Conv2dSpec(**{**CASES[name].__dict__, "prologue": True})
    got, ref, plain = _run(spec, cpu)
    scale = max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * scale)
    assert not np.allclose(plain, ref, atol=1e-3 * scale)  # the prologue changes the result


def test_prologue_is_refused_where_the_input_is_not_read_in_place():
    for spec, why in ((Conv2dSpec(1, 8, 9, 9, 8, (3, 3), padding=(1, 1, 1, 1), prologue=True), "1x1"),
                      (Conv2dSpec(1, 8, 9, 9, 8, (1, 1), stride=(2, 2), prologue=True), "1x1"),
                      (Conv2dSpec(1, 64, 1, 1, 40, (1, 1), prologue=True), "GEMV")):
        assert why in conv.supports(spec)
        with pytest.raises(ValueError, match=why):
            conv.primfunc(spec)
