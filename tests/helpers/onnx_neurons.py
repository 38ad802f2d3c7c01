"""Unrolled spiking neurons written as ONNX graphs by hand, the way PyTorch exports them.

Each step function transcribes one neuron's Python source (hwlat's zoo, SpikingJelly's LIF and
IF in their eval and surrogate forms) op by op, so the graphs are independent of the rewrite's
own pattern definition.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FLOAT = TensorProto.FLOAT


class Emitter:
    """Builds ONNX nodes; float operands become scalar float32 initializers."""

    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.k = 0

    def name(self, base: str) -> str:
        self.k += 1
        return f"{base}_{self.k}"

    def const(self, value, dtype=np.float32) -> str:
        name = self.name("c")
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, *inputs, n_out: int = 1, **attrs):
        ins = [self.const(i) if isinstance(i, float) else i for i in inputs]
        outs = [self.name(op_type.lower()) for _ in range(n_out)]
        name = self.name(f"n_{op_type}")
        self.nodes.append(helper.make_node(op_type, ins, outs, name=name, **attrs))
        return outs[0] if n_out == 1 else outs

    def add(self, a, b):
        return self.op("Add", a, b)

    def sub(self, a, b):
        return self.op("Sub", a, b)

    def mul(self, a, b):
        return self.op("Mul", a, b)

    def div(self, a, b):
        return self.op("Div", a, b)

    def spike(self, cmp_op: str, a, b):
        return self.op("Cast", self.op(cmp_op, a, b), to=FLOAT)


# --- neuron steps: (emitter, x, v, p) -> (spike, v); p holds tau, thr, vr --------------------

def zoo_lif(e, x, v, p):
    """hwlat.zoo.spiking.LIFNeuron: v + (x - v) / tau; v >= thr; v * (1 - s) + v_reset * s."""
    v = e.add(v, e.div(e.sub(x, v), p["tau"]))
    s = e.spike("GreaterOrEqual", v, p["thr"])
    return s, e.add(e.mul(v, e.sub(1.0, s)), e.mul(p["vr"], s))


def sj_lif_hard(e, x, v, p):
    """SpikingJelly LIFNode eval: v + (x - (v - vr)) / tau; v >= thr; vr * s + (1 - s) * v."""
    v = e.add(v, e.div(e.sub(x, e.sub(v, p["vr"])), p["tau"]))
    s = e.spike("GreaterOrEqual", v, p["thr"])
    return s, e.add(e.mul(p["vr"], s), e.mul(e.sub(1.0, s), v))


def sj_if_soft(e, x, v, p):
    """SpikingJelly IFNode, surrogate form: v + x; heaviside(v - thr); v - s * thr."""
    v = e.add(v, x)
    s = e.spike("GreaterOrEqual", e.sub(v, p["thr"]), 0.0)
    return s, e.sub(v, e.mul(s, p["thr"]))


def sj_lif_no_decay_gt(e, x, v, p):
    """SpikingJelly LIFNode decay_input=False: v - (v - vr) / tau + x; v > thr; hard reset."""
    v = e.add(e.sub(v, e.div(e.sub(v, p["vr"]), p["tau"])), x)
    s = e.spike("Greater", v, p["thr"])
    return s, e.add(e.mul(p["vr"], s), e.mul(e.sub(1.0, s), v))


def sj_simple_lif_soft(e, x, v, p):
    """SpikingJelly SimpleLIFNode charge: v + (vr - v + x) / tau; (v - thr) > 0; soft reset."""
    v = e.add(v, e.div(e.add(e.sub(p["vr"], v), x), p["tau"]))
    s = e.spike("Greater", e.sub(v, p["thr"]), 0.0)
    return s, e.sub(v, e.mul(s, p["thr"]))


def unrolled(step, steps: int, shape, params: dict, *, inputs: str = "slice",
             outputs: str = "concat", v0: str = "init", v_init: float = 0.0,
             last_reset: bool = False, opset: int = 18) -> onnx.ModelProto:
    """The neuron unrolled over `steps` steps on inputs of `shape`.
    inputs: "slice" (Slice + Squeeze of X [T, ...]), "gather" (Gather of X), "split" (Split +
    Squeeze of X) or "separate" (graph inputs x0, x1, ...); outputs: "concat" (Unsqueeze +
    Concat into Y [T, ...]) or "separate" (graph outputs s0, s1, ...); v0: "init" (a full
    initializer), "scalar", "expand" (Expand of a scalar) or "fill" (ConstantOfShape)."""
    e = Emitter()
    shape = list(shape)
    full = [steps, *shape]
    graph_in = [helper.make_tensor_value_info("X", FLOAT, full)]
    if inputs == "slice":
        xs = [e.op("Squeeze", e.op("Slice", "X", e.const([t], np.int64), e.const([t + 1], np.int64),
                                   e.const([0], np.int64)), e.const([0], np.int64))
              for t in range(steps)]
    elif inputs == "gather":
        xs = [e.op("Gather", "X", e.const(t, np.int64), axis=0) for t in range(steps)]
    elif inputs == "split":
        parts = e.op("Split", "X", axis=0, num_outputs=steps, n_out=steps)
        parts = [parts] if steps == 1 else parts
        xs = [e.op("Squeeze", part, e.const([0], np.int64)) for part in parts]
    else:
        graph_in = [helper.make_tensor_value_info(f"x{t}", FLOAT, shape) for t in range(steps)]
        xs = [f"x{t}" for t in range(steps)]
    if v0 == "init":
        v = e.const(np.full(shape, v_init))
    elif v0 == "scalar":
        v = e.const(v_init)
    elif v0 == "expand":
        v = e.op("Expand", e.const(v_init), e.const(shape, np.int64))
    else:
        v = e.op("ConstantOfShape", e.const(shape, np.int64),
                 value=numpy_helper.from_array(np.asarray([v_init], np.float32)))
    spikes = []
    for t in range(steps):
        s, v_next = step(e, xs[t], v, params)
        spikes.append(s)
        v = v_next
    if not last_reset:  # as the exporter does: drop the last reset, which nothing reads
        _drop_dead(e, set(spikes))
    if outputs == "concat":
        e.op("Concat", *[e.op("Unsqueeze", s, e.const([0], np.int64)) for s in spikes], axis=0)
        e.nodes[-1].output[0] = "Y"
        graph_out = [helper.make_tensor_value_info("Y", FLOAT, full)]
    else:
        for t, s in enumerate(spikes):
            for n in e.nodes:
                n.input[:] = [f"s{t}" if i == s else i for i in n.input]
                n.output[:] = [f"s{t}" if o == s else o for o in n.output]
        graph_out = [helper.make_tensor_value_info(f"s{t}", FLOAT, shape) for t in range(steps)]
    read = {i for n in e.nodes for i in n.input}
    inits = [t for t in e.inits if t.name in read]
    g = helper.make_graph(e.nodes, "neuron", graph_in, graph_out, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    onnx.checker.check_model(m)
    return m


def _drop_dead(e: Emitter, keep: set[str]) -> None:
    while True:
        read = {i for n in e.nodes for i in n.input} | keep
        dead = [n for n in e.nodes if not any(o in read for o in n.output)]
        if not dead:
            return
        e.nodes = [n for n in e.nodes if n not in dead]


def spike_names(model: onnx.ModelProto) -> list[str]:
    return [o.name for o in model.graph.output]
