"""numpy references for the dense kernels (float64 accumulation, float32 result)."""

from __future__ import annotations

import math

import numpy as np

from hwlat.kernels.dense.spec import Conv2dSpec, Epilogue, MatmulSpec


def _step(acc: np.ndarray, step: tuple) -> np.ndarray:
    name = step[0]
    if name == "relu":
        return np.maximum(acc, 0.0)
    if name == "clip":
        return np.minimum(np.maximum(acc, step[1]), step[2])
    if name == "mul":
        return acc * step[1]
    if name == "add":
        return acc + step[1]
    if name == "hardswish":
        return acc * np.clip(acc + 3.0, 0.0, 6.0) / 6.0
    if name == "gelu":
        return 0.5 * acc * (1.0 + np.vectorize(math.erf, otypes=[np.float64])(acc / math.sqrt(2.0)))
    if name == "gelu_tanh":
        return 0.5 * acc * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (acc + 0.044715 * acc ** 3)))
    if name == "sigmoid":
        return 0.5 * (1.0 + np.tanh(0.5 * acc))  # 1 / (1 + exp(-v)) without overflow
    if name == "silu":
        return acc * 0.5 * (1.0 + np.tanh(0.5 * acc))
    raise ValueError(f"unknown epilogue step {step!r}")


def _epilogue(acc: np.ndarray, ep: Epilogue, bias, residual, channel_axis: int) -> np.ndarray:
    if ep.bias:
        shape = [1] * acc.ndim
        shape[channel_axis] = -1
        acc = acc + np.asarray(bias, np.float64).reshape(shape)
    if ep.residual:
        for step in ep.pre:
            acc = _step(acc, step)
        acc = acc + np.asarray(residual, np.float64)
    for step in ep.steps:
        acc = _step(acc, step)
    return acc.astype(np.float32)


def conv2d_reference(spec: Conv2dSpec, x: np.ndarray, w: np.ndarray, bias=None,
                     residual=None) -> np.ndarray:
    """x NCHW, w OIHW (unpacked)."""
    n, cin, _, _ = spec.x_shape
    cout, cin_g, kh, kw = spec.w_shape
    top, left, bottom, right = spec.padding
    sh, sw = spec.stride
    dh, dw = spec.dilation
    oh, ow = spec.out_height, spec.out_width
    xp = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (top, bottom), (left, right)))
    g = spec.groups
    cout_g = cout // g
    acc = np.zeros((n, cout, oh, ow))
    wd = np.asarray(w, np.float64)
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i * dh: i * dh + sh * (oh - 1) + 1: sh,
                       j * dw: j * dw + sw * (ow - 1) + 1: sw]  # (n, cin, oh, ow)
            for gi in range(g):
                xs = patch[:, gi * cin_g:(gi + 1) * cin_g]
                ws = wd[gi * cout_g:(gi + 1) * cout_g, :, i, j]  # (cout_g, cin_g)
                acc[:, gi * cout_g:(gi + 1) * cout_g] += np.einsum("oc,nchw->nohw", ws, xs)
    return _epilogue(acc, spec.epilogue, bias, residual, 1)


def matmul_reference(spec: MatmulSpec, x: np.ndarray, w: np.ndarray, bias=None,
                     residual=None) -> np.ndarray:
    acc = np.asarray(x, np.float64) @ np.asarray(w, np.float64)
    return _epilogue(acc, spec.epilogue, bias, residual, 1)
