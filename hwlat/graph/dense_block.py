"""DenseNet's layers and transitions as hwlat's TVM CPU lowering runs them: the boundaries the
"tvm-cpu" fusion rules draw, and the predicates the lowering asks too.

hwlat's dense rewrite (`hwlat.kernels.dense.lowering`) runs, after its conv kernels are in place:

- an inference BatchNorm + ReLU read only by a 1x1, stride-1, unpadded conv kernel in that
  conv's input read (`Conv2dSpec.prologue`): one kernel, not three (`prologue_conv`; not on a
  GEMV, one pixel of one image);
- such a conv with no activation or residual whose output only a 2x2 stride-2 unpadded average
  pool reads (DenseNet's transition) with the pool first: the prologue and the pool one kernel,
  the conv a second on a quarter of the pixels (`half_pool`);
- a family of channel concats, a concat and the concats of prefixes of its inputs (DenseNet's
  block; two or more, not a lone concat), as one buffer its producers write their slices of: no
  concat copy (`prefix_family`).

The fusion rules (`hwlat.graph.fuse`: `prologue_conv_rule`, `concat_family_rule`) cut a graph
the same way, so that a cpu-tvm table's keys are the kernels the compiled model calls. This
module holds what both sides ask; it imports nothing of hwlat.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TypeVar


def prologue_conv(kernel: Sequence[int], stride: Sequence[int], pads: Sequence[int],
                  pixels: int) -> bool:
    """Whether a conv kernel reads its input through a prologue (BN + ReLU in its input read):
    1x1, stride 1, unpadded, and more than one output pixel (`pixels`: batch x height x width;
    one is the GEMV, which reads no tiles)."""
    return tuple(kernel) == (1, 1) and all(s == 1 for s in stride) and not any(pads) and pixels > 1


def half_pool(pool: Sequence[int], stride: Sequence[int], pads: Sequence[int],
              dilation: Sequence[int], ceil: bool) -> bool:
    """A 2x2, stride-2, unpadded, undilated average pool without ceil mode: the transition's
    pool that runs before its conv."""
    return tuple(pool) == (2, 2) and tuple(stride) == (2, 2) and not any(pads) \
        and all(d == 1 for d in dilation) and not ceil


K = TypeVar("K", bound=Hashable)
F = TypeVar("F")


def prefix_family(concats: Mapping[K, Sequence[F]], top: K,
                  same: Callable[[F, F], bool] = lambda a, b: a is b) -> dict[K, int]:
    """The concats (key -> number of fields) whose fields are a prefix of `top`'s, `top`
    included: one buffer where there are two or more (`same` compares fields)."""
    fields = concats[top]
    return {k: len(f) for k, f in concats.items()
            if len(f) <= len(fields) and all(same(a, b) for a, b in zip(f, fields, strict=False))}
