"""Tiny ONNX graphs written by hand, for exact asserts on loading and fusion."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FLOAT = TensorProto.FLOAT


def tensor(name: str, shape, dtype=FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def const(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)


def node(op: str, inputs, outputs, domain: str = "", **attrs) -> onnx.NodeProto:
    return helper.make_node(op, list(inputs), list(outputs), name=f"{op}_{outputs[0]}", domain=domain, **attrs)


def model(nodes, inputs, outputs, initializers=(), opset: int = 18, extra_opsets=()) -> onnx.ModelProto:
    graph = helper.make_graph(list(nodes), "tiny", list(inputs), list(outputs), list(initializers))
    opsets = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, v) for d, v in extra_opsets)]
    m = helper.make_model(graph, opset_imports=opsets)
    m.ir_version = 10
    return m


def save(m: onnx.ModelProto, path) -> str:
    onnx.save(m, str(path))
    return str(path)


def rand(*shape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def conv_weights(cout: int, cin: int, k: int, seed: int = 0):
    return [const("w", rand(cout, cin, k, k, seed=seed))]


def bn_params(c: int, prefix: str = "bn"):
    return [const(f"{prefix}_s", np.ones(c)), const(f"{prefix}_b", np.zeros(c)),
            const(f"{prefix}_m", np.zeros(c)), const(f"{prefix}_v", np.ones(c))]


def lif_steps(T: int, shape, tau: float = 2.0, threshold: float = 1.0):
    """The unrolled LIF neuron exactly as exported: per step Sub/Div/Add -> GreaterOrEqual ->
    Cast -> Mul/Sub/Mul/Add, the membrane carried from step to step."""
    nodes, inits = [], [const("tau", tau), const("vth", threshold), const("one", 1.0),
                        const("vreset", 0.0), const("v0", np.zeros(shape))]
    v = "v0"
    for t in range(T):
        x = f"x{t}"
        nodes += [
            node("Sub", [x, v], [f"d{t}"]),
            node("Div", [f"d{t}", "tau"], [f"q{t}"]),
            node("Add", [v, f"q{t}"], [f"h{t}"]),
            node("GreaterOrEqual", [f"h{t}", "vth"], [f"ge{t}"]),
            node("Cast", [f"ge{t}"], [f"s{t}"], to=FLOAT),
            node("Sub", ["one", f"s{t}"], [f"ns{t}"]),
            node("Mul", [f"h{t}", f"ns{t}"], [f"keep{t}"]),
            node("Mul", ["vreset", f"s{t}"], [f"rst{t}"]),
            node("Add", [f"keep{t}", f"rst{t}"], [f"v{t + 1}"]),
        ]
        v = f"v{t + 1}"
    return nodes, inits


def conv_chain(n: int, c: int = 8, hw: int = 16, seed: int = 0):
    """n convs of distinct widths: n distinct kernel keys."""
    nodes, inits, x, cin = [], [], "x", c
    for i in range(n):
        cout = c + 4 * (i + 1)
        k = 1 + 2 * (i % 2)
        inits.append(const(f"w{i}", rand(cout, cin, k, k, seed=seed + i)))
        nodes.append(node("Conv", [x, f"w{i}"], [f"c{i}"], pads=[k // 2] * 4))
        nodes.append(node("Relu", [f"c{i}"], [f"r{i}"]))
        x, cin = f"r{i}", cout
    return model(nodes, [tensor("x", [1, c, hw, hw])], [tensor(x, [1, cin, hw, hw])], inits)


def _i64(name, values):
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


def channel_shuffle_model(groups: int = 2, c: int = 8, hw: int = 6) -> onnx.ModelProto:
    """x -> conv -> channel shuffle whose Reshape targets come from Shape -> Gather -> Div ->
    Concat (batch, groups, C / groups, H, W), then chunk halves with Slice bounds from Shape, and
    a conv on one half: the conv's MACs depend on the shapes behind the chain."""
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w0"], ["y"], pads=[1, 1, 1, 1]),
        n("Shape", ["y"], ["s"]),
        n("Gather", ["s", "i0"], ["b"], axis=0),
        n("Gather", ["s", "i1"], ["ch"], axis=0),
        n("Gather", ["s", "i2"], ["h"], axis=0),
        n("Gather", ["s", "i3"], ["w"], axis=0),
        n("Div", ["ch", "g"], ["cpg"]),
        n("Concat", ["b", "g", "cpg", "h", "w"], ["shape5"], axis=0),
        n("Reshape", ["y", "shape5"], ["y5"]),
        n("Transpose", ["y5"], ["t5"], perm=[0, 2, 1, 3, 4]),
        n("Concat", ["b", "ch", "h", "w"], ["shape4"], axis=0),
        n("Reshape", ["t5", "shape4"], ["shuffled"]),
        # torch.chunk(x, 2, dim=1) traced: the split point is Shape[1] / 2
        n("Shape", ["shuffled"], ["s2"]),
        n("Gather", ["s2", "i1"], ["c2"], axis=0),
        n("Div", ["c2", "two"], ["half"]),
        n("Slice", ["shuffled", "zero", "half", "one"], ["left"]),
        n("Conv", ["left", "w1"], ["out"]),
    ]
    inits = [
        numpy_helper.from_array(np.random.default_rng(0).standard_normal((c, 3, 3, 3)).astype(np.float32), "w0"),
        numpy_helper.from_array(np.random.default_rng(1).standard_normal((4, c // 2, 1, 1)).astype(np.float32), "w1"),
        _i64("i0", [0]), _i64("i1", [1]), _i64("i2", [2]), _i64("i3", [3]),
        _i64("g", [groups]), _i64("two", [2]), _i64("zero", [0]), _i64("one", [1]),
    ]
    graph = helper.make_graph(nodes, "shuffle", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, hw, hw])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", "c", "h", "w"])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    return m


# Blocks of the corpus families (`hwlat zoo --corpus`) as the exporters write them, small enough
# to compile in seconds: for the lowering's corpus smoke test.

def _w(name: str, *shape, seed: int, scale: float = 0.3):
    return const(name, rand(*shape, seed=seed) * scale)


def grouped_conv_block(c: int = 16, groups: int = 4, hw: int = 10) -> onnx.ModelProto:
    """RegNet-X / ResNeXt: 1x1 conv, 3x3 grouped conv, 1x1 conv (biases from folded BN), ReLUs and
    the residual add."""
    nodes = [
        node("Conv", ["x", "w1", "b1"], ["c1"]),
        node("Relu", ["c1"], ["r1"]),
        node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=groups),
        node("Relu", ["c2"], ["r2"]),
        node("Conv", ["r2", "w3", "b3"], ["c3"]),
        node("Add", ["c3", "x"], ["s"]),
        node("Relu", ["s"], ["y"]),
    ]
    inits = [_w("w1", c, c, 1, 1, seed=1), _w("b1", c, seed=2),
             _w("w2", c, c // groups, 3, 3, seed=3), _w("b2", c, seed=4),
             _w("w3", c, c, 1, 1, seed=5), _w("b3", c, seed=6)]
    return model(nodes, [tensor("x", [1, c, hw, hw])], [tensor("y", [1, c, hw, hw])], inits, opset=17)


def dense_concat_block(c: int = 8, growth: int = 4, layers: int = 3, hw: int = 8) -> onnx.ModelProto:
    """DenseNet: each layer BN (Mul, Add) -> ReLU -> 3x3 conv over the concatenation of every
    feature map before it; then a transition 1x1 conv and 2x2 average pool."""
    nodes, inits, feats, cin = [], [], ["x"], c
    for i in range(layers):
        src = feats[0]
        if len(feats) > 1:
            nodes.append(node("Concat", feats, [f"cat{i}"], axis=1))
            src = f"cat{i}"
        nodes += [node("Mul", [src, f"s{i}"], [f"m{i}"]), node("Add", [f"m{i}", f"a{i}"], [f"n{i}"]),
                  node("Relu", [f"n{i}"], [f"r{i}"]),
                  node("Conv", [f"r{i}", f"w{i}"], [f"f{i}"], pads=[1, 1, 1, 1])]
        inits += [const(f"s{i}", 1.0 + 0.1 * rand(1, cin, 1, 1, seed=10 + i)),
                  _w(f"a{i}", 1, cin, 1, 1, seed=20 + i), _w(f"w{i}", growth, cin, 3, 3, seed=30 + i)]
        feats.append(f"f{i}")
        cin += growth
    nodes += [node("Concat", feats, ["all"], axis=1),
              node("Conv", ["all", "wt"], ["t"]),
              node("AveragePool", ["t"], ["y"], kernel_shape=[2, 2], strides=[2, 2])]
    inits.append(_w("wt", cin // 2, cin, 1, 1, seed=40))
    return model(nodes, [tensor("x", [1, c, hw, hw])], [tensor("y", [1, cin // 2, hw // 2, hw // 2])],
                 inits, opset=17)


def convnext_block(c: int = 16, hw: int = 8) -> onnx.ModelProto:
    """ConvNeXt: 7x7 depthwise conv, to channels-last, LayerNorm over channels, Linear 4c, GELU in
    the erf form torch's exporter writes, Linear c, layer scale, back to channels-first, residual."""
    nodes = [
        node("Conv", ["x", "wd", "bd"], ["d"], pads=[3, 3, 3, 3], group=c),
        node("Transpose", ["d"], ["t"], perm=[0, 2, 3, 1]),
        node("LayerNormalization", ["t", "g", "be"], ["ln"], axis=-1, epsilon=1e-6),
        node("MatMul", ["ln", "w1"], ["h1"]),
        node("Add", ["h1", "b1"], ["h"]),
        node("Div", ["h", "sqrt2"], ["hd"]),
        node("Erf", ["hd"], ["e"]),
        node("Add", ["e", "one"], ["e1"]),
        node("Mul", ["h", "e1"], ["he"]),
        node("Mul", ["he", "half"], ["gelu"]),
        node("MatMul", ["gelu", "w2"], ["h2"]),
        node("Add", ["h2", "b2"], ["o"]),
        node("Mul", ["o", "gamma"], ["os"]),
        node("Transpose", ["os"], ["back"], perm=[0, 3, 1, 2]),
        node("Add", ["back", "x"], ["y"]),
    ]
    inits = [_w("wd", c, 1, 7, 7, seed=1), _w("bd", c, seed=2),
             const("g", 1.0 + 0.1 * rand(c, seed=3)), _w("be", c, seed=4),
             _w("w1", c, 4 * c, seed=5), _w("b1", 4 * c, seed=6),
             _w("w2", 4 * c, c, seed=7), _w("b2", c, seed=8), _w("gamma", c, seed=9),
             const("sqrt2", np.sqrt(2.0)), const("one", 1.0), const("half", 0.5)]
    return model(nodes, [tensor("x", [1, c, hw, hw])], [tensor("y", [1, c, hw, hw])], inits, opset=17)


def silu_se_block(c: int = 8, expand: int = 4, hw: int = 10) -> onnx.ModelProto:
    """EfficientNet MBConv: 1x1 expand, SiLU (Sigmoid, Mul), 3x3 depthwise, SiLU, squeeze-excite
    (global average pool, 1x1 reduce, SiLU, 1x1 expand, Sigmoid, Mul), 1x1 project, residual."""
    e, r = c * expand, max(1, c // 4)
    nodes = [
        node("Conv", ["x", "we", "be"], ["c1"]),
        node("Sigmoid", ["c1"], ["g1"]), node("Mul", ["c1", "g1"], ["a1"]),
        node("Conv", ["a1", "wd", "bd"], ["c2"], pads=[1, 1, 1, 1], group=e),
        node("Sigmoid", ["c2"], ["g2"]), node("Mul", ["c2", "g2"], ["a2"]),
        node("GlobalAveragePool", ["a2"], ["p"]),
        node("Conv", ["p", "wr", "br"], ["q"]),
        node("Sigmoid", ["q"], ["gq"]), node("Mul", ["q", "gq"], ["aq"]),
        node("Conv", ["aq", "wx", "bx"], ["z"]),
        node("Sigmoid", ["z"], ["gate"]),
        node("Mul", ["a2", "gate"], ["scaled"]),
        node("Conv", ["scaled", "wp", "bp"], ["proj"]),
        node("Add", ["proj", "x"], ["y"]),
    ]
    inits = [_w("we", e, c, 1, 1, seed=1), _w("be", e, seed=2), _w("wd", e, 1, 3, 3, seed=3),
             _w("bd", e, seed=4), _w("wr", r, e, 1, 1, seed=5), _w("br", r, seed=6),
             _w("wx", e, r, 1, 1, seed=7), _w("bx", e, seed=8), _w("wp", c, e, 1, 1, seed=9),
             _w("bp", c, seed=10)]
    return model(nodes, [tensor("x", [1, c, hw, hw])], [tensor("y", [1, c, hw, hw])], inits, opset=17)


def mobilevit_attention_block(tokens: int = 16, heads: int = 4, head_dim: int = 20) -> onnx.ModelProto:
    """MobileViT's transformer attention as torch's exporter writes it: Q, K, V projections,
    heads split by Reshape and Transpose (K to K^T directly), scaled scores, Softmax, P V, heads
    merged, output projection. Head dim 20: not a multiple of the kernel's 16-column tiles."""
    e = heads * head_dim
    split = _i64("split", [1, tokens, heads, head_dim])
    merge = _i64("merge", [1, tokens, e])
    nodes = [node("MatMul", ["x", f"w{p}"], [f"{p}0"]) for p in "qkv"]
    nodes += [node("Reshape", [f"{p}0", "split"], [f"{p}1"]) for p in "qkv"]
    nodes += [
        node("Transpose", ["q1"], ["q"], perm=[0, 2, 1, 3]),
        node("Transpose", ["k1"], ["kt"], perm=[0, 2, 3, 1]),
        node("Transpose", ["v1"], ["v"], perm=[0, 2, 1, 3]),
        node("MatMul", ["q", "kt"], ["s"]),
        node("Mul", ["s", "scale"], ["ss"]),
        node("Softmax", ["ss"], ["p"], axis=-1),
        node("MatMul", ["p", "v"], ["o"]),
        node("Transpose", ["o"], ["ot"], perm=[0, 2, 1, 3]),
        node("Reshape", ["ot", "merge"], ["om"]),
        node("MatMul", ["om", "wo"], ["y"]),
    ]
    inits = [_w("wq", e, e, seed=1), _w("wk", e, e, seed=2), _w("wv", e, e, seed=3),
             _w("wo", e, e, seed=4), const("scale", head_dim ** -0.5), split, merge]
    return model(nodes, [tensor("x", [1, tokens, e])], [tensor("y", [1, tokens, e])], inits, opset=17)
