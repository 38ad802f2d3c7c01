"""Work a kernel does: multiply-accumulates, parameters, bytes read and written.

One interpreter over the kernel's nodes, one formula per op kind; a dimension that is not
known makes that figure None (shown as '?') instead of a guess. `key_cost` applies the same
formulas to a kernel key alone (no graph), for keys written down without exporting a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

from hwlat.graph.ir import Graph, Node
from hwlat.graph.kernel import Kernel, KernelKey, KernelKind


@dataclass(frozen=True)
class Cost:
    macs: int | None
    params: int | None
    bytes_read: int | None
    bytes_written: int | None


def _shape(g: Graph, value: str) -> tuple[int, ...] | None:
    v = g.values.get(value)
    if v is None or v.shape is None or not all(isinstance(d, int) for d in v.shape):
        return None
    return tuple(v.shape)


Shape = tuple[int, ...] | None


def conv_macs(out: Shape, w: Shape) -> int | None:
    # weight [Cout, Cin/group, *k]: each output element sums Cin/group * k taps
    return None if out is None or w is None else prod(out) * prod(w[1:])


def conv_transpose_macs(x: Shape, w: Shape) -> int | None:
    # weight [Cin, Cout/group, *k]: each input element scatters into Cout/group * k taps
    return None if x is None or w is None else prod(x) * prod(w[1:])


def matmul_macs(out: Shape, a: Shape, trans_a) -> int | None:
    if out is None or a is None or not a:
        return None
    k = a[0] if len(a) == 2 and trans_a else a[-1]
    return prod(out) * k


def block_macs(x: Shape, out: Shape, weights: list[Shape], group: int) -> int | None:
    """MACs of a MobileNet block's convs run as one kernel (hwlat.graph.mbconv): [1x1 expand ->]
    depthwise [-> 1x1 project], from the block's input and output shapes, its conv weights in
    order and the depthwise conv's group. The convs before the depthwise one keep the input's
    map, the depthwise conv and those after it make the output's."""
    if x is None or out is None or len(x) != 4 or len(out) != 4 or not 2 <= len(weights) <= 3 \
            or any(w is None or len(w) != 4 for w in weights) \
            or not all(isinstance(d, int) for s in (x, out, *weights) for d in s):  # type: ignore[union-attr]
        return None
    # with two convs, the depthwise one is first where the second reads its channels
    dw = 1 if len(weights) == 3 or weights[1][1] != group else 0  # type: ignore[index]
    total = 0
    for i, w in enumerate(weights):
        n, h, wd = (x[0], x[2], x[3]) if i < dw else (out[0], out[2], out[3])
        total += n * w[0] * h * wd * prod(w[1:])  # type: ignore[index]
    return total


def _conv_macs(g: Graph, n: Node) -> int | None:
    return conv_macs(_shape(g, n.outputs[0]), _shape(g, n.inputs[1]))


def _conv_transpose_macs(g: Graph, n: Node) -> int | None:
    return conv_transpose_macs(_shape(g, n.inputs[0]), _shape(g, n.inputs[1]))


def _matmul_macs(g: Graph, n: Node) -> int | None:
    return matmul_macs(_shape(g, n.outputs[0]), _shape(g, n.inputs[0]), n.attr("transA", 0))


def _sparse_conv_macs(g: Graph, n: Node) -> int | None:
    # dense upper bound: every output voxel meets all K taps; the kernel map decides the rest
    out, w = _shape(g, n.outputs[0]), _shape(g, n.inputs[2])
    return None if out is None or w is None else out[0] * prod(w[:-1]) * w[-1]


def _attention_macs(g: Graph, n: Node) -> int | None:
    q, k = _shape(g, n.inputs[0]), _shape(g, n.inputs[1])
    if q is None or k is None or len(q) != len(k):
        return None
    # scores and weighted sum: two products of Sq x Sk x head size per batch and head
    return 2 * prod(q) * k[-2]


_MACS = {
    "Conv": _conv_macs,
    "ConvTranspose": _conv_transpose_macs,
    "MatMul": _matmul_macs,
    "Gemm": _matmul_macs,
    "hwlat.SparseConv3d": _sparse_conv_macs,
    "Attention": _attention_macs,
}


def kernel_cost(g: Graph, k: Kernel) -> Cost:
    macs = 0
    for name in k.nodes:
        node = g.node(name)
        fn = _MACS.get(node.op.qualname)
        m = fn(g, node) if fn is not None else 0
        macs = None if macs is None or m is None else macs + m
    return _cost(k.key, macs)


def key_cost(key: KernelKey) -> Cost:
    """What `kernel_cost` gives a kernel, from its key alone. The key holds the shapes of the
    kernel's inputs, outputs and constants, not of the values inside it, so the MACs are those of
    a conv (weight: the first constant) or matmul kernel led by its one multiplying op (Conv,
    ConvTranspose, Gemm, MatMul; the output shaped as the op's; a MobileNet block's convs run as one kernel:
    `block_macs`), and none (0) for kinds without
    a MAC formula; for other kernels that multiply (attention, a sparse conv without its pair
    count) they are unknown (None). Parameters and bytes are `kernel_cost`'s."""
    op = key.ops[0] if key.ops else ""

    def shape(sigs, i: int) -> Shape:
        dims = sigs[i].shape if len(sigs) > i else None
        if dims is None or not all(isinstance(d, int) for d in dims):
            return None
        return tuple(dims)

    if key.kind is KernelKind.VIEW:
        macs: int | None = 0
    elif key.kind is KernelKind.CONV and key.ops.count("Conv") > 1:  # a MobileNet block
        group = dict(key.attrs).get("group", 1)
        weights = [shape(key.params, i) for i, s in enumerate(key.params)
                   if s.shape is not None and len(s.shape) == 4]
        macs = block_macs(shape(key.inputs, 0), shape(key.outputs, 0), weights,
                          group if isinstance(group, int) else 1)
    elif key.kind is KernelKind.CONV and op == "Conv":
        macs = conv_macs(shape(key.outputs, 0), shape(key.params, 0))
    elif key.kind is KernelKind.CONV and op == "ConvTranspose":
        macs = conv_transpose_macs(shape(key.inputs, 0), shape(key.params, 0))
    elif key.kind is KernelKind.MATMUL and op in ("Gemm", "MatMul"):
        macs = matmul_macs(shape(key.outputs, 0), shape(key.inputs, 0),
                           dict(key.attrs).get("transA", 0))
    elif any(o in _MACS for o in key.ops):
        macs = None
    else:
        macs = 0
    return _cost(key, macs)


def _cost(key: KernelKey, macs: int | None) -> Cost:
    """A kernel's cost from its key, given the MACs of its nodes."""
    if key.kind is KernelKind.VIEW:  # runtimes alias the buffer: nothing is moved
        return Cost(macs=0, params=0, bytes_read=0, bytes_written=0)
    pairs = dict(key.attrs).get("pairs", -1) if key.kind is KernelKind.SPARSE_CONV else -1
    if isinstance(pairs, int) and pairs >= 0 and key.params:
        # gather-GEMM-scatter: each kernel-map pair is one row of Cin x Cout (the key's bucket)
        w = key.params[0].shape
        macs = pairs * w[-2] * w[-1]
    return Cost(
        macs=macs,
        # weights are floating-point constants; integer ones are shapes, axes and indices
        params=_sum(s.numel() for s in key.params if s.dtype.startswith(("float", "bfloat"))),
        bytes_read=_sum(s.nbytes() for s in (*key.inputs, *key.params)),
        bytes_written=_sum(s.nbytes() for s in key.outputs),
    )


def _sum(xs) -> int | None:
    total = 0
    for x in xs:
        if x is None:
            return None
        total += x
    return total
