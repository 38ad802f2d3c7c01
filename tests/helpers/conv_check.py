"""What the conv-kernel tests share: the epilogues every kernel is checked with, and one run of a
kernel on seeded inputs against the numpy reference."""

from __future__ import annotations

import numpy as np
import tvm

from hwlat.kernels.dense.reference import conv2d_reference
from hwlat.kernels.dense.spec import Conv2dSpec, Epilogue

EPILOGUES = [Epilogue(bias=b, residual=r, activation=a, clip_min=-0.5, clip_max=2.0)
             for b in (False, True) for r in (False, True) for a in ("none", "relu", "clip")] + \
    [Epilogue(bias=True, residual=r, activation=a) for r in (False, True) for a in ("hardswish", "gelu")]


def epilogue_id(ep: Epilogue) -> str:
    return f"b{int(ep.bias)}r{int(ep.residual)}{ep.activation}"


def check_conv(spec: Conv2dSpec, pack, build, target, seed: int = 0) -> None:
    """`pack(w) -> packed weight`, `build() -> PrimFunc`: the kernel's output on random x, w,
    bias and residual equals conv2d_reference to rtol 1e-4 (atol 1e-4 x the output's scale)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(spec.x_shape).astype(np.float32)
    w = rng.standard_normal(spec.w_shape).astype(np.float32)
    bias = rng.standard_normal(spec.cout).astype(np.float32)
    res = rng.standard_normal(spec.y_shape).astype(np.float32)
    ep = spec.epilogue
    wp = pack(w)
    assert wp.flags.c_contiguous and wp.dtype == np.float32
    ex = tvm.compile(tvm.IRModule({"k": build().with_attr("global_symbol", "k")}), target=target)
    args = [x, wp] + ([bias] if ep.bias else []) + ([res] if ep.residual else [])
    y = tvm.runtime.tensor(np.full(spec.y_shape, np.nan, np.float32))
    ex["k"](*[tvm.runtime.tensor(a) for a in args], y)
    ref = conv2d_reference(spec, x, w, bias, res)
    scale = max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-4, atol=1e-4 * scale)
