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
