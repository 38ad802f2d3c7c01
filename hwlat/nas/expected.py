"""Differentiable expected latency of an OFA MobileNetV3 sampling distribution (ProxylessNAS and
FBNet style), from an OfaLatencyTable's dense per-block costs.

A distribution picks, independently, one (kernel size, expand ratio) per block with probabilities
`choice_probs[j, k_idx, e_idx]` and one depth per stage with probabilities `depth_probs[s, d_idx]`
over `space.depths`; the resolution is fixed. Block j (index i in stage s) runs when the stage's
depth exceeds i, so by linearity of expectation

    E[latency] = fixed + sum_j P(depth_s > i) * sum_{k, e} choice_probs[j, k, e] * block_ms[j, k, e]

exactly, with no sampling; it is linear in each argument, so the gradient is the cost table
itself, weighted. Pass softmax outputs of architecture logits to train through it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hwlat.errors import InvalidInputError
from hwlat.nas.ofa_lut import OfaLatencyTable
from hwlat.nas.proxyless import ProxylessLatencyTable

__all__ = ["ExpectedLatency", "ProxylessExpectedLatency", "expected_latency"]


class ExpectedLatency:
    """`ExpectedLatency(table, r)(choice_probs, depth_probs)` -> expected kernel-sum ms, a torch
    scalar on the probabilities' device and dtype, differentiable in both."""

    def __init__(self, table: OfaLatencyTable, resolution: int):
        ri = table.resolution_index(resolution)
        space = table.space
        self.resolution = resolution
        self.block_ms = torch.tensor(table.block_ms[ri], dtype=torch.float64)  # [20, K, E]
        self.fixed_ms = float(table.fixed_ms[ri])
        # reach[d_idx, i] = 1 where a stage of depth depths[d_idx] runs its block i
        self.reach = torch.tensor(
            [[float(d > i) for i in range(space.max_depth)] for d in space.depths],
            dtype=torch.float64,
        )
        self._choice_shape = tuple(self.block_ms.shape)
        self._depth_shape = (space.n_stages, len(space.depths))

    def __call__(self, choice_probs: Tensor, depth_probs: Tensor) -> Tensor:
        for name, t, shape in (("choice_probs", choice_probs, self._choice_shape),
                               ("depth_probs", depth_probs, self._depth_shape)):
            if not isinstance(t, Tensor) or tuple(t.shape) != shape or not t.is_floating_point():
                got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise InvalidInputError(
                    f"{name} must be a floating-point tensor of shape {list(shape)}, got {got}"
                )
        cost = self.block_ms.to(dtype=choice_probs.dtype, device=choice_probs.device)
        reach = self.reach.to(dtype=depth_probs.dtype, device=depth_probs.device)
        per_block = (choice_probs * cost).sum(dim=(1, 2))  # [20]
        runs = (depth_probs @ reach).reshape(-1)  # [5, 4] -> [20]: P(block j runs)
        return self.fixed_ms + (runs * per_block).sum()


def expected_latency(table: OfaLatencyTable, resolution: int, choice_probs: Tensor,
                     depth_probs: Tensor) -> Tensor:
    """One-off form of ExpectedLatency (which keeps the cost tensors between calls)."""
    return ExpectedLatency(table, resolution)(choice_probs, depth_probs)


class ProxylessExpectedLatency:
    """ProxylessNAS's latency loss: `ProxylessExpectedLatency(table)(probs)` with `probs[j, c]`
    the probability that block j takes choice c of `table.space.choices` (`zero` included, last)
    -> fixed + sum_j sum_c probs[j, c] * block_ms[j, c], exact and differentiable. A probability
    on `zero` where a block cannot be skipped is refused only by shape, not by value: pass
    probabilities over the allowed choices (zero elsewhere)."""

    def __init__(self, table: ProxylessLatencyTable):
        self.block_ms = torch.tensor(table.block_ms, dtype=torch.float64)  # [21, 7]
        self.fixed_ms = float(table.fixed_ms)

    def __call__(self, probs: Tensor) -> Tensor:
        shape = tuple(self.block_ms.shape)
        if not isinstance(probs, Tensor) or tuple(probs.shape) != shape or not probs.is_floating_point():
            got = tuple(probs.shape) if isinstance(probs, Tensor) else type(probs).__name__
            raise InvalidInputError(f"probs must be a floating-point tensor of shape {list(shape)}, "
                                    f"got {got}")
        cost = self.block_ms.to(dtype=probs.dtype, device=probs.device)
        return self.fixed_ms + (probs * cost).sum()
