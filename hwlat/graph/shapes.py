"""Output shapes: of hwlat's custom-domain ops, which onnx's shape inference cannot see, and of
the standard ops a graph built without onnx uses (`infer_output`, for hwlat.graph.builder)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hwlat.errors import InvalidInputError
from hwlat.graph.ir import Node, TensorSig
from hwlat.graph.ops import ACTIVATION, ELEMENTWISE_BINARY, ELEMENTWISE_UNARY, NORMALIZATION, Op


def sparse_conv_output(features: TensorSig, weight: TensorSig, subm: int) -> TensorSig:
    """features [N, Cin], weight [K, Cin, Cout] -> [N_out, Cout]; N_out = N for submanifold."""
    n = features.shape[0] if features.shape and subm else None
    cout = weight.shape[-1] if weight.shape else None
    return TensorSig((n, cout), features.dtype)


def infer_custom_shapes(nodes: list[Node], sigs: dict[str, TensorSig]) -> None:
    """Fill in outputs of custom ops whose shapes the exporter did not record."""
    unknown = TensorSig(None, "undefined")
    for n in nodes:
        if n.op is not Op.SparseConv3d or not n.outputs:
            continue
        out = n.outputs[0]
        if sigs.get(out, unknown).shape is not None:
            continue
        feats = sigs.get(n.inputs[0], unknown) if n.inputs else unknown
        weight = sigs.get(n.inputs[2], unknown) if len(n.inputs) > 2 else unknown
        sigs[out] = sparse_conv_output(feats, weight, int(n.attr("subm", 1)))


# --- standard ops, for graphs built without onnx (hwlat.graph.builder) ------------------------

def _pooled(size: int, k: int, stride: int, pad_lo: int, pad_hi: int, dilation: int = 1,
            ceil_mode: int = 0) -> int:
    span = size + pad_lo + pad_hi - dilation * (k - 1) - 1
    return (-(-span // stride) if ceil_mode else span // stride) + 1


def _spatial(x: TensorSig, attrs: Mapping[str, Any], kernel: tuple[int, ...]) -> tuple[int, ...]:
    n = len(kernel)
    strides = attrs.get("strides", (1,) * n)
    dilations = attrs.get("dilations", (1,) * n)
    pads = attrs.get("pads", (0,) * (2 * n))
    return tuple(_pooled(x.shape[2 + i], kernel[i], strides[i], pads[i], pads[n + i], dilations[i],
                         attrs.get("ceil_mode", 0)) for i in range(n))


def _broadcast(a: tuple, b: tuple) -> tuple:
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + tuple(a), (1,) * (n - len(b)) + tuple(b)
    out = []
    for x, y in zip(a, b, strict=True):
        if x != y and 1 not in (x, y):
            raise InvalidInputError(f"shapes {a} and {b} do not broadcast")
        out.append(y if x == 1 else x)
    return tuple(out)


def infer_output(op: Op, inputs: Sequence[TensorSig], data: Sequence[np.ndarray | None],
                 attrs: Mapping[str, Any]) -> TensorSig:
    """The output signature of a standard op from its inputs' signatures (and the data of small
    constant inputs: axes, shapes), as onnx's shape inference gives it; InvalidInputError for an
    op this does not cover or inputs that do not fit."""
    x = inputs[0]
    if x.shape is None:
        raise InvalidInputError(f"{op.name}: the input's shape is unknown")
    if op is Op.Conv:
        w = inputs[1]
        kernel = attrs.get("kernel_shape", tuple(w.shape[2:]))
        if w.shape[1] * attrs.get("group", 1) != x.shape[1]:
            raise InvalidInputError(f"Conv: weight {w.shape} does not fit input {x.shape} "
                                    f"with group {attrs.get('group', 1)}")
        return TensorSig((x.shape[0], w.shape[0], *_spatial(x, attrs, kernel)), x.dtype)
    if op in (Op.AveragePool, Op.MaxPool):
        return TensorSig((*x.shape[:2], *_spatial(x, attrs, attrs["kernel_shape"])), x.dtype)
    if op in (Op.GlobalAveragePool, Op.GlobalMaxPool):
        return TensorSig((*x.shape[:2], *(1,) * (len(x.shape) - 2)), x.dtype)
    if op in ELEMENTWISE_BINARY:
        return TensorSig(_broadcast(x.shape, inputs[1].shape), x.dtype)
    if op in ACTIVATION or op in ELEMENTWISE_UNARY or op in NORMALIZATION or op is Op.Identity:
        return x
    if op in (Op.ReduceMean, Op.ReduceSum, Op.ReduceMax):
        axes = data[1] if len(data) > 1 and data[1] is not None else attrs.get("axes")
        axes = range(len(x.shape)) if axes is None else [int(a) % len(x.shape) for a in np.ravel(axes)]
        keep = attrs.get("keepdims", 1)
        shape = [1 if i in axes else d for i, d in enumerate(x.shape)] if keep else \
            [d for i, d in enumerate(x.shape) if i not in axes]
        return TensorSig(tuple(shape), x.dtype)
    if op is Op.Reshape:
        if len(data) < 2 or data[1] is None:
            raise InvalidInputError("Reshape: the target shape must be a known constant")
        target = [int(d) for d in np.ravel(data[1])]
        target = [x.shape[i] if d == 0 and not attrs.get("allowzero", 0) else d
                  for i, d in enumerate(target)]
        total = int(np.prod(x.shape))
        if -1 in target:
            known = int(np.prod([d for d in target if d != -1]))
            target[target.index(-1)] = total // known
        return TensorSig(tuple(target), x.dtype)
    if op is Op.Flatten:
        axis = attrs.get("axis", 1)
        return TensorSig((int(np.prod(x.shape[:axis])), int(np.prod(x.shape[axis:]))), x.dtype)
    if op is Op.Gemm:
        w = inputs[1].shape
        m = x.shape[1] if attrs.get("transA", 0) else x.shape[0]
        n = w[0] if attrs.get("transB", 0) else w[1]
        return TensorSig((m, n), x.dtype)
    if op is Op.MatMul:
        w = inputs[1].shape
        return TensorSig((*_broadcast(x.shape[:-2], w[:-2]), x.shape[-2], w[-1]), x.dtype)
    raise InvalidInputError(f"no shape function for {op.name}")
