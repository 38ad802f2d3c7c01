"""A small ConvNeXt-like block written by hand: depthwise 7x7 conv -> LayerNorm2d as exported
(Transpose NCHW -> NHWC, LayerNormalization over the last axis, Transpose back) -> 1x1 conv ->
residual Add."""

from __future__ import annotations

from tests.helpers.onnx_builders import const, model, node, rand, save, tensor


def convnext_block(tmp_path, *, c: int = 16, hw: int = 8, perm=(0, 2, 3, 1), back=(0, 3, 1, 2),
                   axis: int = -1, bias: bool = True, tap: bool = False, name: str = "cnx.onnx") -> str:
    """`tap`: the NHWC tensor is also a graph output (read outside the norm)."""
    nhwc = [1, hw, hw, c]
    ln_inputs = ["t", "gamma", *(["beta"] if bias else [])]
    nodes = [
        node("Conv", ["x", "wd"], ["d"], group=c, kernel_shape=[7, 7], pads=[3] * 4),
        node("Transpose", ["d"], ["t"], perm=list(perm)),
        node("LayerNormalization", ln_inputs, ["n"], axis=axis, epsilon=1e-6),
        node("Transpose", ["n"], ["u"], perm=list(back)),
        node("Conv", ["u", "wp"], ["p"]),
        node("Add", ["p", "x"], ["y"]),
    ]
    inits = [const("wd", rand(c, 1, 7, 7, seed=1)), const("wp", rand(c, c, 1, 1, seed=2)),
             const("gamma", 1 + 0.1 * rand(c, seed=3))]
    if bias:
        inits.append(const("beta", 0.1 * rand(c, seed=4)))
    outputs = [tensor("y", [1, c, hw, hw])] + ([tensor("t", nhwc)] if tap else [])
    m = model(nodes, [tensor("x", [1, c, hw, hw])], outputs, inits)
    return save(m, tmp_path / name)
