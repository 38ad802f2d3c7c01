"""What the dense kernels share in TIR: the parameter list of their epilogue (`epilogue_params`)
and the activations they fuse into their store, as TIR expressions that LLVM vectorises
(no calls into libm): relu, clip, hardswish, gelu (erf form), gelu_tanh (tanh form), sigmoid
and silu (v * sigmoid(v)), and the other elementwise steps of an epilogue's chain (`residual_input`
applies its `pre` steps, `activate` its activation and `post` steps).

gelu(v) = v/2 (1 + erf(v / sqrt 2)), with erf from Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7;
measured <= 4.6e-7 on gelu in float32 over [-10, 10]) and the exponential from the attention
kernel's vectorisable exp2 polynomial.

sigmoid(v) = 1 / (1 + 2^(-v log2 e)), the exponent clamped to [-126, 126] (2^126 ~ 8.5e37: the
result is then 0 or 1 to float32 precision, and the polynomial's bit tricks stay in range);
within 5e-7 of sigmoid, and of silu / max(1, |v|), over [-100, 100] (the dense kernels' tests).
gelu_tanh(v) = v * sigmoid(2 sqrt(2/pi) (v + 0.044715 v^3)) (= v/2 (1 + tanh(u)), since
(1 + tanh(u)) / 2 = sigmoid(2u)).
"""

from __future__ import annotations

import math

from tvm import tirx
from tvm.script import tirx as T

from hwlat.kernels.dense.spec import Epilogue

_F32 = "float32"
_AS_P = 0.3275911
_AS_A = (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592)  # a5 .. a1


def _c(x: float):
    return tirx.const(x, _F32)


def _gelu(v):
    from hwlat.kernels.attention.kernel import fast_exp2

    a = tirx.abs(v) * _c(1.0 / math.sqrt(2.0))
    t = _c(1.0) / (_c(1.0) + _c(_AS_P) * a)
    p = _c(_AS_A[0])
    for coeff in _AS_A[1:]:
        p = p * t + _c(coeff)
    p = p * t
    erf_a = _c(1.0) - p * fast_exp2(-(a * a) * _c(1.0 / math.log(2.0)))
    return _c(0.5) * v * (_c(1.0) + tirx.Select(v < _c(0.0), -erf_a, erf_a))


def _sigmoid(v):
    from hwlat.kernels.attention.kernel import fast_exp2

    e = tirx.min(v * _c(-1.0 / math.log(2.0)), _c(126.0))  # fast_exp2 clamps below -126
    return _c(1.0) / (_c(1.0) + fast_exp2(e))


def _step(v, step: tuple):
    """One elementwise step (spec.STEPS) applied to the float32 expression v."""
    name = step[0]
    if name == "relu":
        return tirx.max(v, _c(0.0))
    if name == "clip":
        return tirx.min(tirx.max(v, _c(step[1])), _c(step[2]))
    if name == "mul":
        return v * _c(step[1])
    if name == "add":
        return v + _c(step[1])
    if name == "hardswish":
        # ONNX HardSwish's definition, v * clip(v / 6 + 1/2, 0, 1) (= v * clip(v + 3, 0, 6) / 6,
        # as TVM imports it, up to float rounding): multiplies only; the division by 6 compiled
        # to vdivps, which showed in a profile of the 14x14 expand convs (docs/notebook/compile.md)
        return v * tirx.min(tirx.max(v * _c(1.0 / 6.0) + _c(0.5), _c(0.0)), _c(1.0))
    if name == "gelu":
        return _gelu(v)
    if name == "gelu_tanh":
        u = v + _c(0.044715) * v * v * v
        return v * _sigmoid(u * _c(2.0 * math.sqrt(2.0 / math.pi)))
    if name == "sigmoid":
        return _sigmoid(v)
    if name == "silu":
        return v * _sigmoid(v)
    raise ValueError(f"unknown epilogue step {step!r}")


def residual_input(v, ep: Epilogue):
    """The epilogue's `pre` steps applied to v (bias added, residual not yet): the value the
    residual is added to."""
    for step in ep.pre:
        v = _step(v, step)
    return v


def activate(v, ep: Epilogue):
    """What follows the residual add, applied to the float32 expression v: the epilogue's
    activation, then its `post` steps."""
    for step in ep.steps:
        v = _step(v, step)
    return v


def epilogue_params(func: tirx.PrimFunc, ep: Epilogue) -> tirx.PrimFunc:
    """A kernel written with all five parameters (x, w, bias, residual, y), with those the
    epilogue does not have dropped; its body reads bias and residual only when the epilogue has
    them (TVM 0.27's PrimFunc has no buffer map, so the parameter list is all there is)."""
    keep = [0, 1] + ([2] if ep.bias else []) + ([3] if ep.residual else []) + [4]
    return tirx.PrimFunc([func.params[i] for i in keep], func.body, func.ret_type, func.attrs)


def kernel_entry(body, x_shape, w_shape, n_bias: int, y_shape, ep: Epilogue) -> tirx.PrimFunc:
    """The PrimFunc (x, w, [bias], [residual], y) that runs the macro `body(x, w, bias, residual,
    y)`, which reads bias and residual only when the epilogue has them (`epilogue_params`)."""
    f32 = "float32"

    @T.prim_func(s_tir=True, private=True)
    def kernel(x: T.Buffer(x_shape, f32), w: T.Buffer(w_shape, f32), bias: T.Buffer((n_bias,), f32),
               residual: T.Buffer(y_shape, f32), y: T.Buffer(y_shape, f32)):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        body(x, w, bias, residual, y)

    return epilogue_params(kernel, ep)
