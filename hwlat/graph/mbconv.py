"""A MobileNet block's convs as one kernel: the boundary hwlat's TVM CPU lowering draws.

On x86-64 TVM targets hwlat's dense rewrite (`hwlat.kernels.dense.lowering`) runs

    [conv1x1 ->] depthwise conv [-> conv1x1 (+ r)]

as one hand-scheduled kernel (`hwlat.kernels.dense.mbconv`) where each tensor between the convs
is read by the next conv alone and `preferred` says the fusion pays for the shape. The fusion
rule `hwlat.graph.fuse.mbconv_rule` cuts a graph the same way, so that a device whose compiled
models run these blocks as one kernel (`fusion = "tvm-cpu"` in its device file) has table keys
and timings of what runs. `preferred` is the one predicate both sides ask: the lowering imports
it back. This module holds it and the graph facts the rule checks; it imports nothing of
hwlat.graph but the IR.

What the rule takes, as the lowering does: every conv float32 with static shapes and a bias
input; the expand and project convs 1x1, stride 1, unpadded, groups 1; the depthwise conv
groups == channels > 1, dilation 1; after each conv at most one activation the dense kernels fuse
(Relu, Clip with constant bounds, HardSwish, Gelu), and a residual Add only after the project
conv. The longest chain the predicate prefers is taken: expand + depthwise + project, then
expand + depthwise, then depthwise + project.
"""

from __future__ import annotations

from math import prod

from hwlat.graph.ir import Graph, Node

# Thresholds measured on the compiled models (the dense kernels' benchmarks): a whole block (or
# depthwise + project) fuses from a 28x28 depthwise input map; expand + depthwise alone where the
# expanded tensor kept out of memory is at least 2 MB.
MIN_PROJECT_PIXELS = 28 * 28
MIN_PAIR_BYTES = 2 << 20

Shape4 = tuple[int, int, int, int]


def saved_bytes(dw_x: Shape4, dw_y: Shape4, *, expand: bool, project: bool) -> int:
    """Bytes of the float32 tensors between the convs that the fusion keeps out of memory: the
    depthwise conv's input (with an expand conv) and its output (with a project conv)."""
    return 4 * ((prod(dw_x) if expand else 0) + (prod(dw_y) if project else 0))


def preferred(dw_x: Shape4, dw_y: Shape4, *, expand: bool, project: bool) -> bool:
    """Whether the convs around a depthwise conv with input shape `dw_x` and output shape `dw_y`
    (NCHW) run as one kernel: with a project conv from a 28x28 depthwise input map up, an expand
    conv alone where it keeps 2 MB out of memory."""
    if not expand and not project:
        return False
    if project:
        return dw_x[2] * dw_x[3] >= MIN_PROJECT_PIXELS
    return saved_bytes(dw_x, dw_y, expand=expand, project=project) >= MIN_PAIR_BYTES


# --- what the dense kernels take (the fusion rule, hwlat.graph.fuse.mbconv_rule, asks) ----------

def shape4(g: Graph, value: str) -> Shape4 | None:
    """A float32 value's static NCHW shape, else None."""
    v = g.values.get(value)
    if v is None or v.shape is None or len(v.shape) != 4 or v.sig.dtype != "float32" \
            or not all(isinstance(d, int) and d > 0 for d in v.shape):
        return None
    return tuple(v.shape)  # type: ignore[return-value]


def _ints(node: Node, key: str, default: int, n: int) -> tuple[int, ...]:
    v = node.attr(key)
    if v is None:
        return (default,) * n
    return tuple(v) if isinstance(v, tuple) else (v,)


def _biased_conv(g: Graph, n: Node) -> bool:
    """A 2-D float32 Conv with constant weight and bias and static shapes, explicit padding."""
    if n.op.qualname != "Conv" or len(n.inputs) < 3 or not n.inputs[2]:
        return False
    if not (g.is_const(n.inputs[1]) and g.is_const(n.inputs[2])):
        return False
    if n.attr("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
        return False
    return all(shape4(g, v) is not None for v in (n.inputs[0], n.inputs[1], n.outputs[0])) and \
        all(d == 1 for d in _ints(n, "dilations", 1, 2))


def pointwise(g: Graph, n: Node) -> bool:
    """An expand or project conv: biased 1x1, stride 1, unpadded, groups 1."""
    w = shape4(g, n.inputs[1])
    return _biased_conv(g, n) and n.attr("group", 1) == 1 and w is not None and w[2:] == (1, 1) \
        and all(s == 1 for s in _ints(n, "strides", 1, 2)) \
        and not any(_ints(n, "pads", 0, 4))


def depthwise(g: Graph, n: Node) -> bool:
    """A biased depthwise conv (groups == channels > 1), dilation 1, padding not negative."""
    if not _biased_conv(g, n):
        return False
    x, y = shape4(g, n.inputs[0]), shape4(g, n.outputs[0])
    group = n.attr("group", 1)
    return x is not None and y is not None and group > 1 and x[1] == y[1] == group \
        and all(p >= 0 for p in _ints(n, "pads", 0, 4))


def fusable_activation(g: Graph, n: Node) -> bool:
    """An activation the dense kernels fuse into their store, as TVM imports it."""
    name = n.op.qualname
    if name in ("Relu", "HardSwish"):
        return True
    if name == "Gelu":
        return n.attr("approximate", "none") in ("none", b"none")
    if name == "Clip":
        return all(not i or g.is_const(i) for i in n.inputs[1:])
    return False
