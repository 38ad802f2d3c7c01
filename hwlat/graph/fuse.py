"""Cut a Graph into Kernels the way runtimes execute them: fusion rules as data.

A rule is (name, kind, anchor ops, fn). `fn(graph, anchor, taken)` returns the nodes of one
kernel and its extra attributes, or None when it does not apply; `taken` names nodes earlier
kernels own, which an optional part of a pattern (an epilogue) must leave alone. Rules run in list order over the
graph in topological order; a node belongs to at most one kernel; what no rule claims becomes
a one-node kernel. Rule lists compose with `+`.

Kernel boundaries belong to the device: a device file's `fusion` names one of RULE_SETS
("default": what onnxruntime and TVM's own lowering run as one kernel; "tvm-cpu": the default
plus what hwlat's x86-64 TVM lowering runs as one kernel: a MobileNet block's convs
(`hwlat.graph.mbconv`), an inference BN + ReLU in front of a 1x1 conv with the conv, and
DenseNet's transition pool with them (`hwlat.graph.dense_block`), ConvNeXt's LayerNorm2d
(transpose, layer norm, transpose) as one channel-norm kernel (`hwlat.graph.channel_norm`)), and
everything that cuts a
model for a device passes it to `fuse`. A rule that does not emit (`Rule.emits`) claims nodes
that run as no kernel: "tvm-cpu"'s dense-block concats, whose producers write their slices of
one buffer in place, so the table holds no copy the compiled model does not make.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Set
from dataclasses import dataclass

import numpy as np

from hwlat.errors import InvalidInputError, InvalidModelError
from hwlat.graph import channel_norm, dense_block, mbconv
from hwlat.graph.ir import AttrValue, Graph, Node, TensorSig
from hwlat.graph.kernel import Kernel, KernelKey, KernelKind
from hwlat.graph.ops import (
    ACTIVATION,
    CONV,
    DATA_MOVEMENT,
    ELEMENTWISE,
    MATMUL,
    NORMALIZATION,
    POOL,
    REDUCTION,
    SHAPE_COMPUTE,
    SOFTMAX,
    SPIKE_THRESHOLD,
    SPIKING_ARITH,
    VIEW,
    Op,
)
from hwlat.graph.sparse import (
    MAX_POINTS,
    default_coords,
    kernel_map_size,
    log_bucket,
    sparse_geometry,
)


@dataclass(frozen=True)
class Match:
    nodes: tuple[Node, ...]
    attrs: tuple[tuple[str, AttrValue], ...] = ()


@dataclass(frozen=True)
class Rule:
    name: str
    kind: KernelKind
    anchors: frozenset[Op]
    fn: Callable[[Graph, Node, Set[str]], Match | None]  # (graph, anchor, taken)
    emits: bool = True  # False: the nodes it claims run as no kernel (written in place)


# --- helpers shared by rules -------------------------------------------------------------

def _cone(g: Graph, seeds: Iterable[str], allowed: frozenset[Op], limit: int) -> list[Node]:
    """Nodes of `allowed` ops reachable forward from `seeds` whose every non-constant input
    comes from the seeds or from the cone itself: an elementwise island hanging off them."""
    known = set(seeds)
    cone: list[Node] = []
    frontier = list(known)
    while frontier and len(cone) <= limit:
        value = frontier.pop(0)
        for u in g.users(value):
            if u in cone or u.op not in allowed:
                continue
            if all(not i or i in known or g.is_const(i) for i in u.inputs):
                cone.append(u)
                new = [o for o in u.outputs if o]
                known.update(new)
                frontier.extend(new)
    return cone


def exits(g: Graph, nodes: Iterable[Node]) -> list[str]:
    """Values produced inside `nodes` that something outside reads (or the graph returns)."""
    inside = {n.name for n in nodes}
    return [
        o for n in nodes for o in n.outputs
        if o and (o in g.outputs or any(u not in inside for u in g.values[o].uses))
    ]


# composite activations as they appear after export: (ops allowed, op that must be present)
_COMPOSITE_ACTIVATIONS = (
    (frozenset({Op.Sigmoid, Op.Mul}), Op.Sigmoid),  # SiLU / swish: x * sigmoid(x)
    (frozenset({Op.HardSigmoid, Op.Mul}), Op.HardSigmoid),  # hard swish: x * hardsigmoid(x)
    (frozenset({Op.Add, Op.Clip, Op.Div, Op.Mul}), Op.Clip),  # x * relu6(x + 3) / 6
    (frozenset({Op.Div, Op.Mul, Op.Erf, Op.Add}), Op.Erf),  # exact GELU
    (frozenset({Op.Mul, Op.Pow, Op.Add, Op.Tanh}), Op.Tanh),  # tanh-approximated GELU
)


def _activation(g: Graph, x: str) -> list[Node] | None:
    """The activation applied to `x`, as one op or as a composite written in several."""
    users = g.users(x)
    if x in g.outputs or not users:
        return None
    if len(users) == 1 and users[0].op in ACTIVATION and users[0].inputs[0] == x:
        return [users[0]]
    for allowed, required in _COMPOSITE_ACTIVATIONS:
        cone = _cone(g, [x], allowed, limit=6)
        if any(n.op is required for n in cone) and len(cone) >= 2 and len(exits(g, cone)) == 1:
            if all(u in cone for u in users):
                return cone
    return None


def _epilogue(g: Graph, out: str, claimed: Set[str], *, bn: bool, bias: bool,
              residual: bool) -> list[Node]:
    """What a conv or matmul kernel absorbs after its main op: BN, bias, residual, activation."""
    taken: list[Node] = []

    def free_user(value: str) -> Node | None:
        u = g.sole_user(value)
        return None if u is None or u.name in claimed else u

    u = free_user(out)
    if bn and u is not None and u.op is Op.BatchNormalization and u.inputs[0] == out \
            and all(g.is_const(i) for i in u.inputs[1:] if i):
        taken.append(u)
        out, u = u.outputs[0], free_user(u.outputs[0])
    if u is not None and u.op is Op.Add and out in u.inputs:
        other = u.inputs[1] if u.inputs[0] == out else u.inputs[0]
        same_shape = g.values[other].shape == g.values[out].shape
        if (bias and g.is_const(other)) or (residual and not g.is_const(other) and same_shape):
            taken.append(u)
            out = u.outputs[0]
    act = _activation(g, out) or []
    return taken + ([] if any(n.name in claimed for n in act) else act)


def _ordered(g: Graph, nodes: Iterable[Node]) -> tuple[Node, ...]:
    return tuple(sorted(set(nodes), key=lambda n: n.index))  # the file's order is topological


# --- rules ---------------------------------------------------------------------------------

def conv_rule(g: Graph, conv: Node, taken: Set[str]) -> Match | None:
    epi = _epilogue(g, conv.outputs[0], taken, bn=True, bias=True, residual=True)
    return Match(_ordered(g, [conv, *epi]))


def sparse_conv_rule(g: Graph, conv: Node, taken: Set[str]) -> Match | None:
    epi = _epilogue(g, conv.outputs[0], taken, bn=True, bias=True, residual=False)
    return Match(_ordered(g, [conv, *epi]))


def matmul_rule(g: Graph, mm: Node, taken: Set[str]) -> Match | None:
    epi = _epilogue(g, mm.outputs[0], taken, bn=False, bias=True, residual=False)
    return Match(_ordered(g, [mm, *epi]))


def single_rule(g: Graph, node: Node, taken: Set[str]) -> Match | None:
    return Match((node,))


def attention_rule(g: Graph, softmax: Node, taken: Set[str]) -> Match | None:
    """MatMul(q, kT) -> [scale Mul/Div] -> [mask Add] -> Softmax -> MatMul(., v)."""
    taken = [softmax]
    x = softmax.inputs[0]
    qk = None
    for _ in range(3):  # walk back over at most a mask Add and a scale
        p = g.producer(x)
        if p is None or g.sole_user(x) is None:
            return None
        if p.op is Op.MatMul:
            qk = p
            break
        if p.op in (Op.Mul, Op.Div, Op.Add):
            scores = [i for i in p.inputs if _leads_to_matmul(g, i)]
            if len(scores) != 1 or (p.op is not Op.Add and not _is_scalar(g, _other(p, scores[0]))):
                return None
            taken.append(p)
            x = scores[0]
            continue
        return None
    pv = g.sole_user(softmax.outputs[0])
    if qk is None or pv is None or pv.op is not Op.MatMul or pv.inputs[0] != softmax.outputs[0]:
        return None
    taken += [qk, pv]
    for operand in qk.inputs:  # the scale some exporters put on q and k, and k's transpose
        for _ in range(2):
            p = g.producer(operand)
            if p is None or g.sole_user(operand) is None:
                break
            if p.op is Op.Transpose or (p.op in (Op.Mul, Op.Div) and _is_scalar(g, p.inputs[1])):
                taken.append(p)
                operand = p.inputs[0]
            else:
                break
    return Match(_ordered(g, taken), (("causal", 0),))


def _leads_to_matmul(g: Graph, value: str) -> bool:
    for _ in range(3):
        p = g.producer(value)
        if p is None or not p.inputs:  # a graph input, or a node without inputs (Constant)
            return False
        if p.op is Op.MatMul:
            return True
        if not p.inputs:  # a Constant (e.g. LeViT's attention bias)
            return False
        value = p.inputs[0]
    return False


def _other(node: Node, value: str) -> str:
    return node.inputs[1] if node.inputs[0] == value else node.inputs[0]


def _is_scalar(g: Graph, value: str) -> bool:
    v = g.values.get(value)
    return v is not None and v.is_const and v.shape is not None and all(d == 1 for d in v.shape)


def layer_norm_rule(g: Graph, node: Node, taken: Set[str]) -> Match | None:
    """LayerNormalization, or its decomposed form anchored at the first ReduceMean:
    mean, x - mean, square, mean, + eps, sqrt, divide, [* gamma], [+ beta]."""
    if node.op is Op.LayerNormalization:
        return Match((node,))
    x = node.inputs[0]
    allowed = frozenset({Op.ReduceMean, Op.Sub, Op.Pow, Op.Mul, Op.Add, Op.Sqrt, Op.Div,
                         Op.Reciprocal})
    cone = _cone(g, [x], allowed, limit=12)
    ops = [n.op for n in cone]
    if node not in cone or ops.count(Op.ReduceMean) != 2 or Op.Sub not in ops:
        return None
    if Op.Sqrt not in ops or len(exits(g, cone)) != 1:
        return None
    return Match(_ordered(g, cone))


def spiking_neuron_rule(g: Graph, fire: Node, taken: Set[str]) -> Match | None:
    """The T unrolled steps of a LIF/IF neuron (charge: Sub/Div/Add; fire: GreaterOrEqual ->
    Cast; reset: Mul/Sub/Mul/Add) as one kernel. Anchored at a threshold compare against a
    constant; grows over the neuron arithmetic through the membrane state from step to step."""
    if not any(_is_scalar(g, i) for i in fire.inputs):
        return None
    region: dict[str, Node] = {}

    def grow_back(n: Node) -> None:
        if n.name in region or n.op not in SPIKING_ARITH or g.is_foldable(n):
            return
        region[n.name] = n
        for i in n.inputs:
            p = g.producer(i) if i and not g.is_const(i) else None
            if p is not None:
                grow_back(p)

    grow_back(fire)
    changed = True
    while changed:  # forward: the reset ops and the next steps' charge that read the state
        changed = False
        produced = {o for n in region.values() for o in n.outputs}
        for v in list(produced):
            for u in g.users(v):
                if u.name in region or u.op not in SPIKING_ARITH:
                    continue
                outside = [g.producer(i) for i in u.inputs if i and i not in produced and not g.is_const(i)]
                if all(p is None or p.op not in SPIKING_ARITH for p in outside):
                    grow_back(u)
                    changed = True
    nodes = _ordered(g, region.values())
    fires = [n for n in nodes if n.op in SPIKE_THRESHOLD]
    threshold = next(g.values[i].scalar() for i in fire.inputs if _is_scalar(g, i))
    return Match(nodes, (("threshold", float(threshold or 0.0)), ("timesteps", len(fires))))


def _block_conv(g: Graph, conv: Node, taken: Set[str], *, residual: bool) -> list[Node] | None:
    """A conv of a MobileNet block as the conv rule cuts it, where the dense kernels take that
    epilogue whole ([residual Add] [one activation]); None where the conv rule takes anything
    else (a batch norm, a second bias, a composite activation) or a node is taken."""
    nodes = list(conv_rule(g, conv, taken).nodes)
    if nodes[0] is not conv or any(n.name in taken for n in nodes):
        return None
    rest = nodes[1:]
    if rest and rest[0].op is Op.Add:
        other = [i for i in rest[0].inputs if i != conv.outputs[0]]
        if not residual or len(other) != 1 or g.is_const(other[0]):
            return None
        rest = rest[1:]
    if len(rest) > 1 or (rest and not mbconv.fusable_activation(g, rest[0])):
        return None
    return nodes


def _block_expand(g: Graph, dw: Node, taken: Set[str]) -> list[Node] | None:
    """The 1x1 conv kernel whose output the depthwise conv alone reads."""
    x = dw.inputs[0]
    if g.sole_user(x) is not dw:
        return None
    p = g.producer(x)
    if p is not None and p.op is not Op.Conv:  # back over the activation to its conv
        p = g.producer(p.inputs[0]) if p.inputs and p.inputs[0] else None
    if p is None or not mbconv.pointwise(g, p):
        return None
    nodes = _block_conv(g, p, taken, residual=False)
    return nodes if nodes is not None and nodes[-1].outputs[0] == x else None


def _block_project(g: Graph, dw_nodes: list[Node], taken: Set[str]) -> list[Node] | None:
    """The 1x1 conv kernel (with its residual) that alone reads the depthwise kernel's output."""
    y = dw_nodes[-1].outputs[0]
    q = g.sole_user(y)
    if q is None or not mbconv.pointwise(g, q) or q.inputs[0] != y:
        return None
    return _block_conv(g, q, taken, residual=True)


def mbconv_rule(g: Graph, dw: Node, taken: Set[str]) -> Match | None:
    """[1x1 expand ->] depthwise [-> 1x1 project (+ r)] as one conv kernel, as hwlat's x86-64
    TVM lowering runs it (hwlat.graph.mbconv): where each tensor between the convs is read by
    the next conv alone and `mbconv.preferred` says the fusion pays, the longest chain first."""
    if not mbconv.depthwise(g, dw):
        return None
    dw_nodes = _block_conv(g, dw, taken, residual=False)
    if dw_nodes is None:
        return None
    e, p = _block_expand(g, dw, taken), _block_project(g, dw_nodes, taken)
    dw_x, dw_y = mbconv.shape4(g, dw.inputs[0]), mbconv.shape4(g, dw.outputs[0])
    assert dw_x is not None and dw_y is not None  # mbconv.depthwise checked them
    for ee, pp in ((e, p), (e, None), (None, p)):
        if (ee or pp) and mbconv.preferred(dw_x, dw_y, expand=ee is not None, project=pp is not None):
            return Match(_ordered(g, [*(ee or []), *dw_nodes, *(pp or [])]))
    return None


def _ints(n: Node, key: str, default: int, count: int) -> tuple[int, ...]:
    v = n.attr(key)
    if v is None:
        return (default,) * count
    return tuple(v) if isinstance(v, tuple) else (v,)


def _prologue(g: Graph, conv: Node, taken: Set[str]) -> list[Node] | None:
    """[BatchNorm, Relu] in front of a conv the dense kernels read through a prologue
    (`dense_block.prologue_conv`): a float32 static-shape 2-D conv, groups 1, constant weight,
    whose input is relu(batch_norm(z)) (inference, constant parameters over z's channels), each
    value read by the next alone; else None."""
    if conv.op is not Op.Conv or conv.attr("group", 1) != 1 or not g.is_const(conv.inputs[1]) \
            or conv.attr("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
        return None
    x, y = mbconv.shape4(g, conv.inputs[0]), mbconv.shape4(g, conv.outputs[0])
    w = mbconv.shape4(g, conv.inputs[1])
    if x is None or y is None or w is None or any(d != 1 for d in _ints(conv, "dilations", 1, 2)):
        return None
    if not dense_block.prologue_conv(w[2:], _ints(conv, "strides", 1, 2), _ints(conv, "pads", 0, 4),
                                     y[0] * y[2] * y[3]):
        return None
    relu = g.producer(conv.inputs[0])
    if relu is None or relu.op is not Op.Relu or g.sole_user(conv.inputs[0]) is not conv \
            or conv.inputs[0] in g.outputs:
        return None
    bn = g.producer(relu.inputs[0])
    if bn is None or bn.op is not Op.BatchNormalization or g.sole_user(relu.inputs[0]) is not relu \
            or relu.inputs[0] in g.outputs or len([o for o in bn.outputs if o]) != 1 \
            or bn.attr("training_mode", 0) or mbconv.shape4(g, bn.inputs[0]) != x \
            or not all(g.is_const(i) for i in bn.inputs[1:5] if i):
        return None
    if bn.name in taken or relu.name in taken:
        return None
    return [bn, relu]


def _pool_after(g: Graph, nodes: list[Node], taken: Set[str]) -> Node | None:
    """The 2x2 average pool that alone reads a prologue conv kernel's output, where the kernel
    has no activation or residual: the pool the lowering runs first (`dense_block.half_pool`)."""
    conv = next(n for n in nodes if n.op is Op.Conv)
    if any(n.op is not Op.BatchNormalization and not (n.op is Op.Add and any(
            g.is_const(i) for i in n.inputs)) for n in nodes if n.index > conv.index):
        return None  # an activation or a residual after the conv
    out = nodes[-1].outputs[0]
    pool = g.sole_user(out)
    if pool is None or pool.op is not Op.AveragePool or pool.name in taken or out in g.outputs:
        return None
    y = mbconv.shape4(g, out)
    if y is None or y[2] < 2 or y[3] < 2 or (y[0] * (y[2] // 2) * (y[3] // 2)) <= 1:
        return None  # (the conv after the pool would be a GEMV)
    if not dense_block.half_pool(_ints(pool, "kernel_shape", 1, 2), _ints(pool, "strides", 1, 2),
                                 _ints(pool, "pads", 0, 4), _ints(pool, "dilations", 1, 2),
                                 bool(pool.attr("ceil_mode", 0))):
        return None
    return pool if mbconv.shape4(g, pool.outputs[0]) == (y[0], y[1], y[2] // 2, y[3] // 2) else None


def prologue_conv_rule(g: Graph, conv: Node, taken: Set[str]) -> Match | None:
    """BatchNorm -> Relu -> 1x1 conv (+ its epilogue) as one conv kernel, as hwlat's x86-64 TVM
    lowering runs it (the BN and ReLU in the conv's input read; `hwlat.graph.dense_block`), with
    DenseNet's transition pool after it where the lowering runs that pool first."""
    pro = _prologue(g, conv, taken)
    if pro is None:
        return None
    nodes = [*pro, *conv_rule(g, conv, taken).nodes]
    pool = _pool_after(g, nodes, taken)
    return Match(_ordered(g, [*nodes, *([pool] if pool is not None else [])]),
                 (("prologue", 1), ("pool_first", int(pool is not None))))


def _conv_output(g: Graph, value: str) -> bool:
    """Whether a value is what a groups-1 conv kernel (the conv rule's cut) writes."""
    p = g.producer(value)
    for _ in range(4):  # back over the epilogue to its conv
        if p is None:
            return False
        if p.op is Op.Conv:
            return p.attr("group", 1) == 1 and conv_rule(g, p, frozenset()).nodes[-1].outputs[0] == value
        p = g.producer(p.inputs[0]) if p.inputs and p.inputs[0] else None
    return False


def _channel_concat(g: Graph, n: Node) -> tuple[str, ...] | None:
    """The inputs of a channel concat of float32 static NCHW tensors, each once, else None."""
    if n.op is not Op.Concat or mbconv.shape4(g, n.outputs[0]) is None:
        return None
    if n.attr("axis") not in (1, -3) or len(set(n.inputs)) != len(n.inputs):
        return None
    return tuple(n.inputs) if all(mbconv.shape4(g, i) is not None for i in n.inputs) else None


def concat_family_rule(g: Graph, anchor: Node, taken: Set[str]) -> Match | None:
    """A dense block's channel concats (a concat and the concats of prefixes of its inputs, two
    or more: `dense_block.prefix_family`) as no kernel, where hwlat's x86-64 TVM lowering writes
    them as one buffer: the inputs after the first written in place by their conv kernels, read
    by the family alone and written in order, and every shorter concat read only by prologue
    conv kernels (1x1, one image) before the next input is written. Anchored at the family's
    first concat; the rule claims them all."""
    concats = {n.name: f for n in g.nodes if (f := _channel_concat(g, n)) is not None}
    if anchor.name not in concats:
        return None
    for top in sorted(concats, key=lambda c: -len(concats[c])):
        fields = concats[top]
        family = dense_block.prefix_family(concats, top, lambda a, b: a == b)
        if anchor.name not in family or len(family) < 2 or any(c in taken for c in family):
            continue
        if _in_place(g, fields, family, top):
            return Match(_ordered(g, [g.node(c) for c in family]))
        return None  # the longest family holding the anchor is the one the lowering tries first
    return None


def _in_place(g: Graph, fields: tuple[str, ...], family: Mapping[str, int], top: str) -> bool:
    shapes = [mbconv.shape4(g, f) for f in fields]
    if any(s is None or s[0] != 1 for s in shapes):
        return False
    fam = set(family)
    producers = []
    for i, f in enumerate(fields):
        if i > 0 and (f in g.outputs or not _conv_output(g, f)
                      or not {u.name for u in g.users(f)} <= fam):
            return False
        p = g.producer(f)
        producers.append(p.index if p is not None else -1)
    if any(a >= b for a, b in zip(producers[1:], producers[2:], strict=False)):
        return False  # the writes in order
    for c, n in family.items():
        if c == top:
            continue
        out = g.node(c).outputs[0]
        if out in g.outputs:
            return False
        for u in g.users(out):
            conv = g.sole_user(u.outputs[0]) if u.op is Op.BatchNormalization else None
            conv = g.sole_user(conv.outputs[0]) if conv is not None and conv.op is Op.Relu else None
            if conv is None or _prologue(g, conv, frozenset()) is None:
                return False
            if n < len(fields) and conv.index >= producers[n]:
                return False  # read after the next input's write
    return True


def channel_norm_rule(g: Graph, ln: Node, taken: Set[str]) -> Match | None:
    """Transpose(NCHW -> NHWC) -> LayerNormalization(last axis) -> Transpose(back) as one
    layer-norm kernel (`channels=1`), as hwlat's x86-64 TVM lowering runs it: one channel-norm
    kernel on the NCHW tensor, no transposes (`channel_norm.channel_norm`); each value read by
    the next alone, the norm's mean and inverse-deviation outputs unread, gamma and beta
    constant."""
    if ln.op is not Op.LayerNormalization or len(ln.inputs) < 2 or not ln.inputs[0] \
            or not g.is_const(ln.inputs[1]):
        return None
    beta = ln.inputs[2] if len(ln.inputs) > 2 and ln.inputs[2] else None
    if beta is not None and not g.is_const(beta):
        return None
    if any(o and (o in g.outputs or g.users(o)) for o in ln.outputs[1:]):
        return None
    first, last = g.producer(ln.inputs[0]), g.sole_user(ln.outputs[0])
    if first is None or last is None or first.op is not Op.Transpose or last.op is not Op.Transpose:
        return None
    if g.sole_user(ln.inputs[0]) is not ln or ln.inputs[0] in g.outputs \
            or ln.outputs[0] in g.outputs or last.inputs[0] != ln.outputs[0]:
        return None
    if any(n.name in taken for n in (first, ln, last)):
        return None
    shape = mbconv.shape4(g, first.inputs[0])
    perms = first.attr("perm"), last.attr("perm")
    if shape is None or any(not isinstance(p, tuple) for p in perms):
        return None

    def size(value: str) -> int:
        s = g.values[value].shape
        return int(np.prod(s)) if s is not None and all(isinstance(d, int) for d in s) else -1

    eps = ln.attr("epsilon", 1e-5)
    if not channel_norm.channel_norm(shape, perms[0], perms[1], [ln.attr("axis", -1)],
                                     size(ln.inputs[1]), size(beta) if beta else size(ln.inputs[1]),
                                     float(eps) if isinstance(eps, (int, float)) else float("nan")):
        return None
    return Match((first, ln, last), (("channels", 1),))


DEFAULT_RULES: list[Rule] = [
    # hwlat.SparseConv3d with its BatchNorm and activation: one gather-GEMM-scatter pass
    Rule("sparse_conv", KernelKind.SPARSE_CONV, frozenset({Op.SparseConv3d}), sparse_conv_rule),
    # LIF/IF neuron unrolled over T steps -> one multi-step neuron kernel
    Rule("spiking_neuron", KernelKind.SPIKING_NEURON, SPIKE_THRESHOLD, spiking_neuron_rule),
    # the opset-23 Attention op is already one kernel
    Rule("attention_op", KernelKind.ATTENTION, frozenset({Op.Attention}), single_rule),
    # scaled dot-product attention written as MatMul -> scale -> mask -> Softmax -> MatMul
    Rule("attention", KernelKind.ATTENTION, frozenset({Op.Softmax}), attention_rule),
    # LayerNormalization, or mean/var/normalize/affine written out
    Rule("layer_norm", KernelKind.LAYER_NORM,
         frozenset({Op.LayerNormalization, Op.ReduceMean}), layer_norm_rule),
    # Conv (+BN folded) (+residual Add) (+activation): ORT's FusedConv / NCHWc conv with Sum
    Rule("conv", KernelKind.CONV, CONV, conv_rule),
    # MatMul/Gemm (+bias) (+activation)
    Rule("matmul", KernelKind.MATMUL, MATMUL, matmul_rule),
]


def _with_mbconv(rules: list[Rule]) -> list[Rule]:
    # before the conv rule: a block's convs are claimed whole before each is cut alone
    at = next(i for i, r in enumerate(rules) if r.name == "conv")
    # MobileNet block: [1x1 expand ->] depthwise [-> 1x1 project (+r)], anchored at the depthwise
    return [*rules[:at], Rule("mbconv", KernelKind.CONV, frozenset({Op.Conv}), mbconv_rule),
            *rules[at:]]


def _with_dense_block(rules: list[Rule]) -> list[Rule]:
    # after mbconv (the lowering fuses blocks before prologues), before the conv rule
    at = next(i for i, r in enumerate(rules) if r.name == "conv")
    return [*rules[:at],
            # BN -> ReLU -> 1x1 conv [-> the transition's 2x2 average pool], anchored at the conv
            Rule("prologue_conv", KernelKind.CONV, frozenset({Op.Conv}), prologue_conv_rule),
            *rules[at:],
            # a dense block's concats: one buffer written in place, no kernel
            Rule("concat_family", KernelKind.VIEW, frozenset({Op.Concat}), concat_family_rule,
                 emits=False)]


def _with_channel_norm(rules: list[Rule]) -> list[Rule]:
    # before the layer-norm rule, which would claim the norm alone
    at = next(i for i, r in enumerate(rules) if r.name == "layer_norm")
    # Transpose -> LayerNormalization -> Transpose (ConvNeXt's LayerNorm2d), anchored at the norm
    return [*rules[:at], Rule("channel_norm", KernelKind.LAYER_NORM,
                              frozenset({Op.LayerNormalization}), channel_norm_rule), *rules[at:]]


# the rule sets a device file's `fusion` names (hwlat.devices.spec.FUSION_RULE_SETS lists them)
RULE_SETS: dict[str, Callable[[], list[Rule]]] = {
    "default": lambda: DEFAULT_RULES,
    "tvm-cpu": lambda: _with_channel_norm(_with_dense_block(_with_mbconv(DEFAULT_RULES))),
}


def rule_set(name: str) -> list[Rule]:
    """The rules of a named rule set (RULE_SETS)."""
    make = RULE_SETS.get(name)
    if make is None:
        raise InvalidInputError(f"unknown fusion rule set '{name}'; known: {', '.join(RULE_SETS)}")
    return make()


_SINGLE_KIND = (
    (CONV, KernelKind.CONV),
    (MATMUL, KernelKind.MATMUL),
    (NORMALIZATION, KernelKind.NORMALIZATION),
    (POOL, KernelKind.POOL),
    (SOFTMAX, KernelKind.SOFTMAX),
    (REDUCTION, KernelKind.REDUCTION),
    (ELEMENTWISE, KernelKind.ELEMENTWISE),
    (VIEW, KernelKind.VIEW),
    (DATA_MOVEMENT | SHAPE_COMPUTE, KernelKind.DATA_MOVEMENT),
)
# metadata only: a runtime answers them without touching tensor data
_NOT_KERNELS = frozenset({Op.Shape, Op.Size, Op.Constant})


def single_kind(op: Op) -> KernelKind:
    for ops, kind in _SINGLE_KIND:
        if op in ops:
            return kind
    return KernelKind.DATA_MOVEMENT


def fuse(g: Graph, rules: list[Rule] | str = DEFAULT_RULES, *,
         samples: Mapping[str, np.ndarray] | None = None) -> list[Kernel]:
    """Kernels of `g`, in graph order, cut by `rules` (a list, or a RULE_SETS name: a device
    file's `fusion`). `samples` (graph input name -> array) gives the sparse
    coordinates a sparse conv's key is measured on; by default the graph's coordinate inputs
    are `hwlat.graph.sparse.default_coords(N)`, what the TVM runners feed them."""
    if isinstance(rules, str):
        rules = rule_set(rules)
    claimed: set[str] = set()
    found: list[tuple[str, KernelKind, Match]] = []
    for rule in rules:
        for node in g.nodes:
            if node.op not in rule.anchors or node.name in claimed or g.is_foldable(node):
                continue
            m = rule.fn(g, node, claimed)
            if m is None or any(n.name in claimed for n in m.nodes):
                continue
            claimed.update(n.name for n in m.nodes)
            if rule.emits:
                found.append((rule.name, rule.kind, m))
    for node in g.nodes:
        if node.name in claimed or g.is_foldable(node) or node.op in _NOT_KERNELS:
            continue
        found.append(("single", single_kind(node.op), Match((node,))))
    order = {n.name: i for i, n in enumerate(g.nodes)}
    found.sort(key=lambda f: order[f[2].nodes[0].name])
    kernels = [_make_kernel(g, rule, kind, m) for rule, kind, m in found]
    # (coords, kernel geometry) whose kernel map an earlier conv built -> its (outputs, pairs)
    maps: dict[tuple, tuple[int, int]] = {}
    return [_sparse_key(g, k, samples or {}, maps) if k.kind is KernelKind.SPARSE_CONV else k
            for k in kernels]


def sparse_anchor(g: Graph, k: Kernel) -> Node:
    """The hwlat.SparseConv3d node of a sparse conv kernel."""
    return next(g.node(n) for n in k.nodes if g.node(n).op is Op.SparseConv3d)


def _sparse_key(g: Graph, k: Kernel, samples: Mapping[str, np.ndarray], maps: dict) -> Kernel:
    """The sparse conv's key on (Cin, Cout, kernel, stride, active voxels, kernel-map pairs),
    voxel and pair counts bucketed (hwlat.graph.sparse): N in its shapes is the voxel bucket.
    `map` says whether the kernel builds its kernel map (1) or reuses the one an earlier conv on
    the same coordinates and kernel geometry built (0), as hwlat's lowering shares them."""
    conv = sparse_anchor(g, k)
    kernel_size, stride, padding, subm = sparse_geometry(conv)
    geometry = (conv.inputs[1], kernel_size, stride, padding, subm)
    builds = geometry not in maps
    feats, coords_name = g.values[conv.inputs[0]].shape, conv.inputs[1]
    n = feats[0] if feats and isinstance(feats[0], int) else None
    if n is not None and not 0 <= n <= MAX_POINTS:
        raise InvalidModelError(f"sparse conv {conv.name} takes {n} voxels; hwlat takes at most "
                                f"{MAX_POINTS}")
    coords = samples.get(coords_name)
    if coords is None and n is not None and coords_name in g.inputs:
        coords = default_coords(n)
    if coords is not None and n is not None and len(coords) != n:
        raise InvalidInputError(f"sample '{coords_name}' has {len(coords)} rows; the model's "
                                f"sparse conv takes {n}")
    if coords is None:
        n_out = pairs = -1  # coordinates computed inside the model: unknown here
    elif not builds:
        n_out, pairs = maps[geometry]
    else:
        n_out, pairs = kernel_map_size(coords, kernel_size, stride, padding, bool(subm))
    maps[geometry] = (n_out, pairs)
    voxels = log_bucket(n) if n is not None else -1

    def rows(sig: TensorSig, count: int) -> TensorSig:
        if not sig.shape or count < 0:
            return sig
        return TensorSig((log_bucket(count), *sig.shape[1:]), sig.dtype)

    key = k.key
    bucketed = KernelKey(
        kind=key.kind, ops=key.ops,
        inputs=tuple(rows(sig, n if n is not None else -1) for sig in key.inputs),
        outputs=tuple(rows(sig, n_out) for sig in key.outputs),
        params=key.params,
        attrs=tuple(sorted((*key.attrs, ("map", int(builds)),
                            ("pairs", log_bucket(pairs) if pairs >= 0 else -1),
                            ("voxels", voxels)))),
    )
    return Kernel(key=bucketed, nodes=k.nodes, rule=k.rule)


def _make_kernel(g: Graph, rule: str, kind: KernelKind, m: Match) -> Kernel:
    inside = {o for n in m.nodes for o in n.outputs if o}
    ext = list(dict.fromkeys(i for n in m.nodes for i in n.inputs if i and i not in inside))
    acts: list[TensorSig] = []
    params: list[TensorSig] = []
    for i in ext:
        v = g.values[i]
        (params if v.is_const else acts).append(v.sig)
    if rule == "mbconv":  # each conv's constants, even where an exporter shares them (clip bounds)
        params = [g.values[i].sig for n in m.nodes for i in n.inputs
                  if i and i not in inside and g.is_const(i)]
    outs = [g.values[o].sig for o in exits(g, m.nodes)]
    anchor = m.nodes[0] if kind in (KernelKind.SPIKING_NEURON, KernelKind.LAYER_NORM) else \
        next((n for n in m.nodes if _is_anchor(n, kind)), m.nodes[0])
    if rule == "mbconv":  # a block is told apart by its depthwise conv: kernel, stride, padding
        anchor = next(n for n in m.nodes if n.op in CONV and (n.attr("group", 1) or 1) > 1)
    if rule == "channel_norm":  # the norm's axis and epsilon, not the transpose's perm
        anchor = next(n for n in m.nodes if n.op is Op.LayerNormalization)
    key = KernelKey(
        kind=kind,
        ops=tuple(n.op.qualname for n in m.nodes),
        inputs=tuple(acts),
        outputs=tuple(outs),
        params=tuple(params),
        attrs=tuple(sorted(anchor.attrs + m.attrs)),
    )
    return Kernel(key=key, nodes=tuple(n.name for n in m.nodes), rule=rule)


def _is_anchor(n: Node, kind: KernelKind) -> bool:
    if kind is KernelKind.CONV:
        return n.op in CONV
    if kind is KernelKind.MATMUL:
        return n.op in MATMUL
    if kind is KernelKind.SPARSE_CONV:
        return n.op is Op.SparseConv3d
    if kind is KernelKind.ATTENTION:
        return n.op in (Op.Softmax, Op.Attention)
    return True
