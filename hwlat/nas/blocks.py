"""Blocks of the NAS spaces as Graphs, and their kernel keys from the real `fuse`.

Each block is built alone with `hwlat.graph.builder` (its input a graph input, its output the
graph's output), simplified as torch's exporter simplifies the whole model
(`hwlat.graph.simplify`) and cut by `hwlat.graph.fuse`: no key is written down by hand, so a
change to the fusion rules, an attribute or the exporter's conventions reaches the NAS tables.
A block alone gives the kernels it gives inside the network: no fusion rule crosses a block's
boundary (a block ends in a conv without activation, or the Add of its shortcut; the "tvm-cpu"
rules' MobileNet block is an inverted residual's own convs).
"""

from __future__ import annotations

from collections.abc import Callable

from hwlat.graph.builder import GraphBuilder
from hwlat.graph.fuse import fuse
from hwlat.graph.kernel import KernelKey
from hwlat.graph.simplify import simplify

__all__ = ["conv_bn", "graph_keys", "inverted_residual", "out_size"]


def out_size(size: int, k: int, stride: int) -> int:
    """Feature-map size after a kxk conv with 'same' padding (k // 2), as the zoo pads."""
    return (size + 2 * (k // 2) - k) // stride + 1


def graph_keys(make: Callable[[GraphBuilder], str],
               fusion: str = "default") -> tuple[KernelKey, ...]:
    """Kernel keys, in graph order, of the graph `make(builder)` writes (it returns the output),
    cut by the rule set `fusion` (a device file's: hwlat.graph.fuse.RULE_SETS)."""
    b = GraphBuilder()
    out = make(b)
    return tuple(k.key for k in fuse(simplify(b.build(out)), fusion))


def conv_bn(b: GraphBuilder, x: str, cout: int, k: int = 1, stride: int = 1, groups: int = 1,
            act: str | None = None) -> str:
    """The zoo's conv (no bias) -> BatchNorm -> activation."""
    return b.activation(b.batch_norm(b.conv2d(x, cout, k, stride, groups)), act)


def inverted_residual(b: GraphBuilder, x: str, cout: int, k: int, stride: int, mid: int,
                      act: str, *, expand: bool = True, se: int | None = None) -> str:
    """[1x1 expand] -> kxk depthwise -> [squeeze-excite to `se` channels] -> 1x1 project, plus
    the identity shortcut at stride 1 with equal widths. The squeeze-excite convs' biases are
    zero-initialised in the zoo, and the exporter leaves zero biases out of the file."""
    cin = b.shape(x)[1]
    y = conv_bn(b, x, mid, act=act) if expand else x
    y = conv_bn(b, y, mid, k, stride, mid, act)
    if se is not None:
        gate = b.relu(b.conv2d(b.mean_hw(y), se))
        gate = b.hardsigmoid(b.conv2d(gate, mid))
        y = b.mul(y, gate)
    y = conv_bn(b, y, cout)
    return b.add(y, x) if stride == 1 and cin == cout else y
