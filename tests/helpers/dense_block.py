"""A DenseNet block (and transition) written with onnx.helper, for the kernel-boundary tests."""

from __future__ import annotations

import numpy as np

from tests.helpers.onnx_builders import const, model, node, rand, save, tensor


def dense_block(directory, *, cin=16, hw=8, growth=8, layers=3, transition=True,
                transition_act=False, name="dense") -> str:
    """DIRECTORY/NAME.onnx as torch exports DenseNet: x -> layers, layer i reading
    concat(x, f1, ..., f(i-1)) through BN -> ReLU -> 1x1 conv (biased: its own BN folded) -> ReLU
    -> 3x3 conv (no bias) = f_i; then concat(x, f1, ..., fL) -> [transition: BN -> ReLU -> 1x1
    conv (no bias) [-> ReLU with `transition_act`] -> 2x2 average pool]."""
    nodes, inits, fields, c = [], [], ["x"], cin

    def bn_relu(src, ch, out):
        rng = np.random.default_rng(len(inits))
        inits.extend([const(f"{out}_g", rng.uniform(0.5, 1.5, ch)), const(f"{out}_b", rand(ch, seed=1)),
                      const(f"{out}_m", rand(ch, seed=2)), const(f"{out}_v", rng.uniform(0.5, 1.5, ch))])
        nodes.append(node("BatchNormalization", [src, f"{out}_g", f"{out}_b", f"{out}_m", f"{out}_v"],
                          [f"{out}_bn"], epsilon=1e-5))
        nodes.append(node("Relu", [f"{out}_bn"], [out]))

    for i in range(1, layers + 1):
        nodes.append(node("Concat", list(fields), [f"cat{i}"], axis=1))
        bn_relu(f"cat{i}", c, f"n{i}")
        inits += [const(f"w1_{i}", rand(4 * growth, c, 1, 1, seed=i)), const(f"b1_{i}", rand(4 * growth, seed=i))]
        nodes.append(node("Conv", [f"n{i}", f"w1_{i}", f"b1_{i}"], [f"c{i}"], kernel_shape=[1, 1]))
        nodes.append(node("Relu", [f"c{i}"], [f"r{i}"]))
        inits.append(const(f"w3_{i}", rand(growth, 4 * growth, 3, 3, seed=10 + i)))
        nodes.append(node("Conv", [f"r{i}", f"w3_{i}"], [f"f{i}"], kernel_shape=[3, 3], pads=[1] * 4))
        fields.append(f"f{i}")
        c += growth
    nodes.append(node("Concat", list(fields), ["top"], axis=1))
    out, shape = "top", [1, c, hw, hw]
    if transition:
        bn_relu("top", c, "nt")
        inits.append(const("wt", rand(c // 2, c, 1, 1, seed=99)))
        nodes.append(node("Conv", ["nt", "wt"], ["ct"], kernel_shape=[1, 1]))
        src = "ct"
        if transition_act:
            nodes.append(node("Relu", ["ct"], ["ctr"]))
            src = "ctr"
        nodes.append(node("AveragePool", [src], ["pool"], kernel_shape=[2, 2], strides=[2, 2]))
        out, shape = "pool", [1, c // 2, hw // 2, hw // 2]
    m = model(nodes, [tensor("x", [1, cin, hw, hw])], [tensor(out, shape)], inits)
    return save(m, directory / f"{name}.onnx")
