"""Replace each unrolled spiking neuron the graph finds by one hwlat.LIFNeuron node.

The set of neurons is the graph's: hwlat.graph loads the model and its `spiking_neuron` rule
cuts the kernels. A kernel is replaced only when its nodes are exactly the T unrolled steps of
one neuron form (neuron.py), which is checked by matching them, value by value, against the
symbolic expansion of `neuron.step` over T steps: operands must be the same (Add and Mul in
either order, which float32 does not distinguish), constants scalar (the initial potential
may be any uniform constant broadcasting to the input) and equal wherever one parameter
appears twice, and nothing but the spikes may leave the kernel. Its constants become the
node's attributes, so the kernel evaluates the very arithmetic it replaces. A kernel that
matches no form stays unrolled.

The node reads x [T, ...] and writes spikes [T, ...]. Where the graph slices its T inputs out
of one [T, ...] tensor (Slice/Split + Squeeze, or Gather, on axis 0) the node reads that tensor,
and where the spikes only go into Unsqueeze + Concat on axis 0 the node writes the Concat's
output: the zoo's neurons become Reshape -> LIFNeuron -> Reshape. Otherwise Unsqueeze + Concat
stack the inputs and a Gather per step hands each spike tensor on under its old name. Slicing
left unused is removed.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from hwlat.errors import HwlatError
from hwlat.graph import Graph, KernelKind, fuse
from hwlat.graph.fuse import exits
from hwlat.graph.load import check_and_infer, check_structure, check_vocabulary, to_ir
from hwlat.kernels.spiking.neuron import CHARGES, FIRES, PARAMS, RESETS, NeuronSpec, step

log = logging.getLogger(__name__)

DOMAIN = "hwlat"
OP_TYPE = "LIFNeuron"
_STANDARD = ("", "ai.onnx")


# --- constants of the model ------------------------------------------------------------------

class _Constants:
    """Values of initializers and Constant nodes, and whether a value is one repeated float32."""

    def __init__(self, model: onnx.ModelProto):
        self._inits = {t.name: t for t in model.graph.initializer}
        self._nodes = {o: n for n in model.graph.node for o in n.output if o}
        self._cache: dict[str, np.ndarray | None] = {}

    def array(self, name: str) -> np.ndarray | None:
        if name not in self._cache:
            self._cache[name] = self._array(name)
        return self._cache[name]

    def _array(self, name: str) -> np.ndarray | None:
        try:
            if name in self._inits:
                return numpy_helper.to_array(self._inits[name])
            n = self._nodes.get(name)
            if n is None or n.domain not in _STANDARD:
                return None
            if n.op_type == "Constant" and len(n.attribute) == 1:
                a = n.attribute[0]
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
                if a.name in ("value_float", "value_floats"):
                    return np.asarray(helper.get_attribute_value(a), dtype=np.float32)
                if a.name in ("value_int", "value_ints"):
                    return np.asarray(helper.get_attribute_value(a), dtype=np.int64)
        except Exception:  # a malformed constant is simply not one hwlat reads
            log.debug("constant '%s' unreadable", name, exc_info=True)
            return None
        return None

    def ints(self, name: str) -> list[int] | None:
        a = self.array(name) if name else None
        if a is None or a.dtype.kind not in "iu":
            return None
        return [int(v) for v in a.reshape(-1)]

    def uniform(self, name: str) -> np.float32 | None:
        """The float32 every element of a constant value holds (bit for bit), else None."""
        a = self.array(name)
        if a is not None:
            if a.dtype != np.float32 or a.size == 0:
                return None
            bits = a.reshape(-1).view(np.uint32)
            return np.float32(a.reshape(-1)[0]) if np.all(bits == bits[0]) else None
        n = self._nodes.get(name)
        if n is None or n.domain not in _STANDARD:
            return None
        if n.op_type == "ConstantOfShape":
            if not n.attribute:
                return np.float32(0.0)  # the op's default value
            value = numpy_helper.to_array(n.attribute[0].t)
            return np.float32(value.reshape(-1)[0]) if value.dtype == np.float32 else None
        if n.op_type in ("Expand", "Identity"):
            return self.uniform(n.input[0])
        return None


def _bits(x: np.float32) -> int:
    return int(np.asarray(x, dtype=np.float32).view(np.uint32))


# --- the symbolic neuron and the matcher -----------------------------------------------------

class _Sym:
    """A value of the symbolic expansion: an ONNX op over others, or a leaf (input x at step t,
    the initial potential v0, a named parameter, a fixed constant)."""

    __slots__ = ("op", "args")

    def __init__(self, op: str, *args):
        self.op = op
        self.args = args


class _SymArith:
    def param(self, name):
        return _Sym("param", name)

    def const(self, value):
        return _Sym("const", value)

    def add(self, a, b):
        return _Sym("Add", a, b)

    def sub(self, a, b):
        return _Sym("Sub", a, b)

    def mul(self, a, b):
        return _Sym("Mul", a, b)

    def div(self, a, b):
        return _Sym("Div", a, b)

    def ge(self, a, b):
        return _Sym("GreaterOrEqual", a, b)

    def gt(self, a, b):
        return _Sym("Greater", a, b)

    def to_float(self, c):
        return _Sym("Cast", c)


def _expand(spec: NeuronSpec) -> tuple[list[_Sym], _Sym]:
    """Spikes of each step and the final potential, symbolically."""
    a, v, spikes = _SymArith(), _Sym("v0"), []
    for t in range(spec.steps):
        s, v = step(spec, a, v, _Sym("x", t))
        spikes.append(s)
    return spikes, v


_COMMUTATIVE = ("Add", "Mul")
_COMPARES = ("Greater", "GreaterOrEqual")


class _Matcher:
    def __init__(self, g: Graph, model: onnx.ModelProto, consts: _Constants, nodes: set[str]):
        self.g, self.model, self.consts, self.nodes = g, model, consts, nodes
        self.inside = {o for n in nodes for o in g.node(n).outputs if o}
        self.pairs: dict[int, str] = {}  # id(sym) -> ONNX value
        self.bound: dict[str, int] = {}  # parameter (or "v_init") -> float32 bits
        self.xs: dict[int, str] = {}  # step -> input value
        self.leaves: set[str] = set()  # constant values read

    def _state(self):
        return dict(self.pairs), dict(self.bound), dict(self.xs), set(self.leaves)

    def _restore(self, state) -> None:
        self.pairs, self.bound, self.xs, self.leaves = (type(s)(s) for s in state)

    def match(self, sym: _Sym, value: str) -> bool:
        key = id(sym)
        if key in self.pairs:
            return self.pairs[key] == value
        if not self._match(sym, value):
            return False
        self.pairs[key] = value
        return True

    def _match(self, sym: _Sym, value: str) -> bool:
        if not value:
            return False
        if sym.op == "x":
            if value in self.inside or self.g.is_const(value):
                return False
            if self.xs.setdefault(sym.args[0], value) != value:
                return False
            return True
        if sym.op in ("v0", "param", "const"):
            c = self.consts.uniform(value)
            if c is None or value in self.inside:
                return False
            self.leaves.add(value)
            if sym.op == "const":
                return _bits(c) == _bits(np.float32(sym.args[0]))
            name = "v_init" if sym.op == "v0" else sym.args[0]
            return self.bound.setdefault(name, _bits(c)) == _bits(c)
        node = self.g.producer(value)
        # a node of the kernel, or one computing from constants alone, which the graph leaves
        # out of the kernel (the runtime folds it): the first step's arithmetic on v0
        if node is None or (node.name not in self.nodes and not self.g.is_foldable(node)):
            return False
        proto = self.model.graph.node[node.index]
        if proto.domain not in _STANDARD or proto.op_type != sym.op or proto.output[:] != [value]:
            return False
        if sym.op == "Cast":
            if len(proto.input) != 1 or _int_attr(proto, "to", None) != TensorProto.FLOAT:
                return False
            return self.match(sym.args[0], proto.input[0])
        if len(proto.input) != 2:
            return False
        orders = [(0, 1), (1, 0)] if sym.op in _COMMUTATIVE else [(0, 1)]
        for i, j in orders:
            state = self._state()
            if self.match(sym.args[0], proto.input[i]) and self.match(sym.args[1], proto.input[j]):
                return True
            self._restore(state)
        return False

    def matched_nodes(self) -> set[str]:
        return {self.g.producer(v).name for v in self.pairs.values() if v in self.inside}


@dataclass(frozen=True)
class NeuronMatch:
    """One neuron of the graph: its form, inputs x_t and spikes s_t in step order, its nodes."""

    spec: NeuronSpec
    inputs: tuple[str, ...]
    spikes: tuple[str, ...]
    nodes: frozenset[str]  # graph node names
    shape: tuple[int, ...]  # of one step's input


def match_neuron(g: Graph, model: onnx.ModelProto, consts: _Constants,
                 kernel_nodes) -> NeuronMatch | None:
    """The neuron form whose T-step expansion is exactly these nodes, or None."""
    nodes = set(kernel_nodes)
    fires = [g.node(n) for n in kernel_nodes if g.node(n).op.op_type in _COMPARES]
    steps = len(fires)
    if steps == 0:
        return None
    # the spike of step t is the Cast that follows the t-th compare (the file's order is the
    # time order: each step's compare depends on the one before through the potential)
    spike_values = []
    for f in fires:
        casts = [u for u in g.users(f.outputs[0]) if u.name in nodes and u.op.op_type == "Cast"]
        if len(casts) != 1:
            return None
        spike_values.append(casts[0].outputs[0])
    for c, f, r in itertools.product(CHARGES, FIRES, RESETS):
        m = _try_form(g, model, consts, nodes, NeuronSpec(steps, c, f, r), spike_values)
        if m is not None:
            return m
    return None


def _try_form(g, model, consts, nodes, form: NeuronSpec, spike_values) -> NeuronMatch | None:
    spikes, final_v = _expand(form)
    m = _Matcher(g, model, consts, nodes)
    if not all(m.match(s, v) for s, v in zip(spikes, spike_values, strict=True)):
        return None
    if sorted(m.xs) != list(range(form.steps)):
        return None
    left = nodes - m.matched_nodes()
    if left:  # the last step's reset, computed though nothing reads it
        produced = {o for n in left for o in g.node(n).outputs if o}
        read = {i for n in left for i in g.node(n).inputs}
        sinks = [v for v in produced if v not in read]
        if len(sinks) != 1 or not m.match(final_v, sinks[0]) or m.matched_nodes() != nodes:
            return None
    if not set(exits(g, [g.node(n) for n in nodes])) <= set(spike_values):
        return None
    shape = _step_shape(g, [m.xs[t] for t in range(form.steps)])
    if shape is None or not all(_broadcasts(g.values[c].shape, shape) for c in m.leaves):
        return None
    values = {k: float(np.asarray(b, dtype=np.uint32).view(np.float32)) for k, b in m.bound.items()}
    try:
        spec = NeuronSpec(form.steps, form.charge, form.fire, form.reset,
                          **{k: values[k] for k in (*PARAMS, "v_init") if k in values})
    except HwlatError:  # e.g. tau = 0
        log.debug("not a neuron hwlat lowers", exc_info=True)
        return None
    return NeuronMatch(spec, tuple(m.xs[t] for t in range(form.steps)), tuple(spike_values),
                       frozenset(nodes), shape)


def _step_shape(g: Graph, inputs: list[str]) -> tuple[int, ...] | None:
    sigs = {g.values[x].sig for x in inputs if x in g.values}
    if len(sigs) != 1:
        return None
    sig = sigs.pop()
    if sig.dtype != "float32" or sig.shape is None:
        return None
    if not all(isinstance(d, int) and d > 0 for d in sig.shape):
        return None
    return tuple(sig.shape)


def _broadcasts(const_shape, shape: tuple[int, ...]) -> bool:
    """A constant of this shape broadcast against `shape` leaves it as it is."""
    if const_shape is None or len(const_shape) > len(shape):
        return False
    return all(d in (1, s) for d, s in zip(reversed(const_shape), reversed(shape), strict=False))


# --- the rewrite -----------------------------------------------------------------------------

def find_neurons(model: onnx.ModelProto) -> tuple[Graph | None, list[NeuronMatch]]:
    """The graph of the model and the neurons of its spiking-neuron kernels that match a form."""
    if not any(n.op_type in _COMPARES and n.domain in _STANDARD for n in model.graph.node):
        return None, []  # no threshold compare: no neuron (and no need to build the graph)
    g = _graph_of(model)
    if g is None:
        return None, []
    consts = _Constants(model)
    found = []
    for k in fuse(g):
        if k.kind is KernelKind.SPIKING_NEURON:
            m = match_neuron(g, model, consts, k.nodes)
            if m is not None:
                found.append(m)
    return g, found


def _graph_of(model: onnx.ModelProto) -> Graph | None:
    """hwlat's graph of the model (as `graph.load` builds it from a file); None when the model
    holds ops the graph does not know (or fails its checks): it then has no graph kernels."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    name = m.graph.name or "model"
    try:
        check_vocabulary(m)
        check_structure(m)
        # unfolded: the neurons found in the graph are edited in `model` node for node
        return to_ir(check_and_infer(m, Path(name), fold=False), name=name)
    except HwlatError:  # the import itself reports what is wrong with the model, if anything
        log.debug("neuron rewrite skipped", exc_info=True)
        return None


def rewrite_spiking_neurons(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the model with each matching neuron replaced; the model itself when none is."""
    g, neurons = find_neurons(model)
    if not neurons:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    ed = _Editor(out, g)
    replaced = [m for m in neurons if ed.replace(m)]
    if not replaced:
        return model
    ed.finish()
    if not any(o.domain == DOMAIN for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    return out


class _Editor:
    """Edits the node list of a model (a copy) neuron by neuron."""

    def __init__(self, model: onnx.ModelProto, g: Graph):
        self.model, self.g = model, g
        self.consts = _Constants(model)
        self.opset = next((o.version for o in model.opset_import if o.domain in _STANDARD), 0)
        self.nodes: list[onnx.NodeProto] = [_copy(n) for n in model.graph.node]
        self.by_name = {n.name: self.nodes[n.index] for n in g.nodes}  # graph name -> proto
        self.names = {v for n in model.graph.node for v in [*n.input, *n.output, n.name]} | \
            {t.name for t in model.graph.initializer} | {v.name for v in model.graph.input}
        self.graph_outputs = {o.name for o in model.graph.output}
        self.implicit = _subgraph_reads(model.graph)
        self.new_inits: list[onnx.TensorProto] = []
        self.dropped_inputs: set[str] = set()
        self.count = 0

    def fresh(self, base: str) -> str:
        for k in itertools.count():
            name = f"{base}_{k}"
            if name not in self.names:
                self.names.add(name)
                return name
        raise AssertionError  # unreachable

    def int_const(self, base: str, values, scalar: bool = False) -> str:
        name = self.fresh(base)
        arr = np.asarray(values, dtype=np.int64)
        self.new_inits.append(numpy_helper.from_array(arr.reshape(()) if scalar else arr, name))
        self.names.add(name)
        return name

    def replace(self, m: NeuronMatch) -> bool:
        g = self.g
        kernel = {id(self.by_name[n]) for n in m.nodes}
        inside = {o for n in m.nodes for o in g.node(n).outputs if o}
        if inside & self.implicit:
            return False
        steps = m.spec.steps
        tag = f"hwlat_lif{self.count}"
        source = self._stacked_source(m)
        stack = self._stack_consumer(m)
        removed = set(kernel) | ({id(p) for p in stack[1]} if stack else set())
        glue_in: list[onnx.NodeProto] = []
        if source is None:
            axes = self.int_const(f"{tag}_axes", [0]) if self.opset >= 13 else None
            parts = []
            for t, x in enumerate(m.inputs):
                u = self.fresh(f"{tag}_x{t}")
                glue_in.append(self._unsqueeze0(x, u, axes, tag))
                parts.append(u)
            source = parts[0] if steps == 1 else self.fresh(f"{tag}_x")
            if steps > 1:
                glue_in.append(helper.make_node("Concat", parts, [source], axis=0,
                                                name=self.fresh(f"{tag}_stack")))
        result = stack[0] if stack else self.fresh(f"{tag}_spikes")
        lif = helper.make_node(OP_TYPE, [source], [result], name=self.fresh(tag), domain=DOMAIN,
                               **m.spec.attrs())
        glue_out = []
        if not stack:
            for t, s in enumerate(m.spikes):
                if s in self.graph_outputs or any(u.name not in m.nodes for u in g.users(s)):
                    idx = self.int_const(f"{tag}_t{t}", t, scalar=True)
                    glue_out.append(helper.make_node("Gather", [result, idx], [s],
                                                     name=self.fresh(f"{tag}_step"), axis=0))
        rest = [n for n in self.nodes if id(n) not in removed]
        pos = {id(n): i for i, n in enumerate(rest)}
        producers = {o: pos[id(n)] for n in rest for o in n.output if o}
        needs = [i for n in [*glue_in, lif] for i in n.input]
        made = {o for n in [*glue_in, lif, *glue_out] for o in n.output}
        after = max([producers.get(i, -1) for i in needs], default=-1)
        readers = [pos[id(n)] for n in rest if made & set(n.input)]
        if made & self.implicit or (readers and min(readers) <= after):
            return False  # a spike is read before a later step's input exists: not one pass
        self.nodes = rest[:after + 1] + glue_in + [lif] + glue_out + rest[after + 1:]
        gone = [p for p in self.by_name.values() if id(p) in removed]
        self.dropped_inputs |= {i for p in gone for i in p.input if i}
        self.count += 1
        return True

    def _unsqueeze0(self, x: str, out: str, axes: str | None, tag: str) -> onnx.NodeProto:
        """x[None]: axes as an input (opset 13 on) or as the attribute (before)."""
        name = self.fresh(f"{tag}_unsqueeze")
        if axes is not None:
            return helper.make_node("Unsqueeze", [x, axes], [out], name=name)
        return helper.make_node("Unsqueeze", [x], [out], name=name, axes=[0])

    def _axes(self, proto: onnx.NodeProto, index: int) -> list[int] | None:
        """An axes-like operand: the input at `index` (newer opsets) or the `axes` attribute."""
        if len(proto.input) > index and proto.input[index]:
            return self.consts.ints(proto.input[index])
        attr = next((a for a in proto.attribute if a.name == "axes"), None)
        return list(attr.ints) if attr is not None and attr.type == AttributeProto.INTS else None

    def _stacked_source(self, m: NeuronMatch) -> str | None:
        """The [T, ...] tensor the graph slices the inputs out of, step t at index t of axis 0."""
        g, steps, sources = self.g, m.spec.steps, set()
        for t, x in enumerate(m.inputs):
            p = g.producer(x)
            if p is None:
                return None
            proto = self.by_name[p.name]
            if proto.domain not in _STANDARD:
                return None
            if proto.op_type == "Gather":
                idx = self.consts.array(proto.input[1])
                if _int_attr(proto, "axis", 0) != 0 or idx is None or idx.shape != ():
                    return None
                if idx.dtype.kind not in "iu" or int(idx) not in (t, t - steps):
                    return None
                sources.add(proto.input[0])
                continue
            if proto.op_type != "Squeeze" or self._axes(proto, 1) != [0]:
                return None
            q = g.producer(proto.input[0])
            if q is None:
                return None
            inner = self.by_name[q.name]
            if inner.domain not in _STANDARD:
                return None
            if inner.op_type == "Slice" and self._is_step_slice(inner, t, steps):
                sources.add(inner.input[0])
            elif inner.op_type == "Split" and self._is_step_split(inner, proto.input[0], t, steps):
                sources.add(inner.input[0])
            else:
                return None
        if len(sources) != 1:
            return None
        source = sources.pop()
        sig = g.values[source].sig if source in g.values else None
        if sig is None or sig.dtype != "float32" or sig.shape != (steps, *m.shape):
            return None
        return source

    def _is_step_slice(self, proto: onnx.NodeProto, t: int, steps: int) -> bool:
        if self.opset >= 10:
            ops = [self.consts.ints(i) if i else None for i in list(proto.input[1:]) + [""] * 4][:4]
            starts, ends, axes, stride = ops
            if len(proto.input) > 3 and proto.input[3] and axes is None:
                return False
            if len(proto.input) > 4 and proto.input[4] and stride is None:
                return False
        else:
            starts, ends = _ints_attr(proto, "starts"), _ints_attr(proto, "ends")
            axes, stride = _ints_attr(proto, "axes"), None
        if starts is None or ends is None or len(starts) != 1 or len(ends) != 1:
            return False
        if axes not in (None, [0]) or stride not in (None, [1]):
            return False
        start, end = starts[0], ends[0]
        return start in (t, t - steps) and (end == t + 1 or (t == steps - 1 and end >= steps))

    def _is_step_split(self, proto: onnx.NodeProto, value: str, t: int, steps: int) -> bool:
        if _int_attr(proto, "axis", 0) != 0 or len(proto.output) != steps:
            return False
        if proto.output[t] != value:
            return False
        if len(proto.input) > 1 and proto.input[1]:
            sizes = self.consts.ints(proto.input[1])
        else:
            sizes = _ints_attr(proto, "split")
        return sizes is None or sizes == [1] * steps  # no sizes: equal parts of a [T, ...] source

    def _stack_consumer(self, m: NeuronMatch) -> tuple[str, list[onnx.NodeProto]] | None:
        """(output, nodes) of the Unsqueeze(axis 0) + Concat(axis 0) that only restack the
        spikes, in step order; None when the spikes go anywhere else."""
        g, rank = self.g, len(m.shape)
        unsq, concat = [], None
        for s in m.spikes:
            users = [u for u in g.values[s].uses if u not in m.nodes]
            if s in self.graph_outputs or s in self.implicit or len(users) != 1:
                return None
            proto = self.by_name[users[0]]
            if proto.domain not in _STANDARD or proto.op_type != "Unsqueeze":
                return None
            if self._axes(proto, 1) != [0]:
                return None
            u = proto.output[0]
            if u in self.graph_outputs or u in self.implicit or len(g.values[u].uses) != 1:
                return None
            c = self.by_name[g.values[u].uses[0]]
            if concat is not None and c is not concat:
                return None
            concat = c
            unsq.append(proto)
        if concat is None or concat.op_type != "Concat" or concat.domain not in _STANDARD:
            return None
        if concat.input[:] != [p.output[0] for p in unsq]:
            return None
        if _int_attr(concat, "axis", None) not in (0, -rank - 1):
            return None
        return concat.output[0], [*unsq, concat]

    def finish(self) -> None:
        """Drop what only the replaced nodes read, then write the node list back."""
        outputs = self.graph_outputs | self.implicit
        producer = {o: n for n in self.nodes for o in n.output if o}
        readers: dict[str, int] = {}
        for n in self.nodes:
            for i in n.input:
                readers[i] = readers.get(i, 0) + 1
        dead: set[int] = set()
        freed = set(self.dropped_inputs)  # values that lost a reader
        work = [producer[i] for i in freed if i in producer]
        while work:
            n = work.pop()
            if id(n) in dead or any(o in outputs or readers.get(o, 0) for o in n.output if o):
                continue
            dead.add(id(n))
            for i in filter(None, n.input):
                readers[i] -= 1
                freed.add(i)
                if i in producer and not readers[i]:
                    work.append(producer[i])
        self.nodes = [n for n in self.nodes if id(n) not in dead]
        read = {i for n in self.nodes for i in n.input} | outputs
        declared = {v.name for v in self.model.graph.input}
        keep_inits = [t for t in self.model.graph.initializer
                      if t.name in read or t.name in declared or t.name not in freed]
        graph = self.model.graph
        del graph.node[:]
        graph.node.extend(self.nodes)
        del graph.initializer[:]
        graph.initializer.extend(keep_inits + [t for t in self.new_inits if t.name in read])
        live = read | {o for n in self.nodes for o in n.output}
        kept_info = [v for v in graph.value_info if v.name in live]
        del graph.value_info[:]
        graph.value_info.extend(kept_info)


def _copy(n: onnx.NodeProto) -> onnx.NodeProto:
    c = onnx.NodeProto()
    c.CopyFrom(n)
    return c


def _int_attr(proto: onnx.NodeProto, name: str, default):
    a = next((a for a in proto.attribute if a.name == name), None)
    return a.i if a is not None and a.type == AttributeProto.INT else default


def _ints_attr(proto: onnx.NodeProto, name: str) -> list[int] | None:
    a = next((a for a in proto.attribute if a.name == name), None)
    return list(a.ints) if a is not None and a.type == AttributeProto.INTS else None


def _subgraph_reads(graph: onnx.GraphProto) -> set[str]:
    """Names the subgraphs (If/Loop/Scan bodies) of the graph's nodes read."""
    names: set[str] = set()
    for n in graph.node:
        for a in n.attribute:
            for sub in ([a.g] if a.type == AttributeProto.GRAPH else list(a.graphs)):
                for m in sub.node:
                    names.update(i for i in m.input if i)
                names |= _subgraph_reads(sub)
    return names
