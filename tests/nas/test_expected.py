"""Expected latency of an OFA sampling distribution: the closed form against exhaustive
enumeration and Monte Carlo over the dense table, and its gradients against finite differences."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from hwlat.errors import InvalidInputError
from hwlat.nas import OFA_MBV3
from hwlat.nas.expected import ExpectedLatency, expected_latency
from hwlat.nas.ofa_lut import OfaEncoding, OfaLatencyTable
from tests.helpers.ofa_tables import DEVICE, synthetic_store

R = 160
N_BLOCKS, N_STAGES, DEPTH = OFA_MBV3.n_blocks, OFA_MBV3.n_stages, OFA_MBV3.max_depth
DEPTHS = np.array(OFA_MBV3.depths)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    with synthetic_store(tmp_path_factory.mktemp("lut") / "t.sqlite", (R,)) as store:
        return OfaLatencyTable(store, DEVICE, resolutions=(R,))


def _distribution(rng, peaked_from_block: int = N_BLOCKS, peaked_from_stage: int = N_STAGES):
    """Dirichlet choice and depth probabilities; blocks and stages from the given ones on are
    one-hot (so an exhaustive sum stays small)."""
    p = rng.dirichlet(np.ones(9), size=N_BLOCKS)
    q = rng.dirichlet(np.ones(3), size=N_STAGES)
    p[peaked_from_block:] = np.eye(9)[rng.integers(9, size=N_BLOCKS - peaked_from_block)]
    q[peaked_from_stage:] = np.eye(3)[rng.integers(3, size=N_STAGES - peaked_from_stage)]
    return p, q


def _encode(choice: np.ndarray, depth_idx: np.ndarray) -> OfaEncoding:
    """choice [N, 20] in 0..8 (k_idx * 3 + e_idx), depth_idx [N, 5] -> an encoding at R."""
    active = np.repeat(DEPTHS[depth_idx], DEPTH, axis=1) > np.tile(np.arange(DEPTH), N_STAGES)
    return OfaEncoding(np.zeros(len(choice), np.int16), (choice // 3).astype(np.uint8),
                       (choice % 3).astype(np.uint8), active)


def _closed_form(table, p, q) -> float:
    el = ExpectedLatency(table, R)
    return float(el(torch.tensor(p).reshape(N_BLOCKS, 3, 3), torch.tensor(q)))


def test_equals_the_exhaustive_expectation(table):
    """Stage 0 (4 blocks, 9 choices each, 3 depths) random, the rest fixed: 19,683 archs."""
    p, q = _distribution(np.random.default_rng(0), peaked_from_block=4, peaked_from_stage=1)
    fixed_choice = p[4:].argmax(axis=1)
    fixed_depth = q[1:].argmax(axis=1)
    combos = np.array(list(itertools.product(range(9), repeat=4)))  # [6561, 4]
    choice, depth, weight = [], [], []
    for d in range(3):
        choice.append(np.hstack([combos, np.tile(fixed_choice, (len(combos), 1))]))
        depth.append(np.tile(np.r_[d, fixed_depth], (len(combos), 1)))
        weight.append(q[0, d] * np.prod(p[np.arange(4), combos], axis=1))
    lat = table.latency(_encode(np.vstack(choice), np.vstack(depth)))
    exhaustive = float(np.dot(np.concatenate(weight), lat))
    assert _closed_form(table, p, q) == pytest.approx(exhaustive, rel=1e-9)


def test_agrees_with_monte_carlo(table):
    rng = np.random.default_rng(1)
    p, q = _distribution(rng)
    n = 200_000
    # inverse-CDF draws per block and per stage
    choice = (rng.random((n, N_BLOCKS, 1)) > np.cumsum(p, axis=1)[None, :, :-1]).sum(axis=2)
    depth = (rng.random((n, N_STAGES, 1)) > np.cumsum(q, axis=1)[None, :, :-1]).sum(axis=2)
    lat = table.latency(_encode(choice, depth))
    stderr = lat.std() / np.sqrt(n)
    assert abs(_closed_form(table, p, q) - lat.mean()) < 5 * stderr


def test_gradients_match_finite_differences(table):
    el = ExpectedLatency(table, R)
    p, q = _distribution(np.random.default_rng(2))
    p = torch.tensor(p.reshape(N_BLOCKS, 3, 3), requires_grad=True)
    q = torch.tensor(q, requires_grad=True)
    assert torch.autograd.gradcheck(el, (p, q), eps=1e-6, atol=1e-7)
    # the gradient is the cost table weighted by how likely each block runs
    el(p, q).backward()
    runs = q.detach() @ el.reach
    expected = runs.reshape(-1)[:, None, None] * torch.tensor(table.block_ms[0])
    torch.testing.assert_close(p.grad, expected)


def test_trains_through_softmax_logits_in_float32(table):
    logits = torch.zeros(N_BLOCKS, 9, requires_grad=True)
    depth_logits = torch.zeros(N_STAGES, 3, requires_grad=True)
    lat = expected_latency(table, R, logits.softmax(-1).reshape(N_BLOCKS, 3, 3),
                           depth_logits.softmax(-1))
    assert lat.dtype == torch.float32 and lat.ndim == 0
    lat.backward()
    assert logits.grad.abs().sum() > 0 and depth_logits.grad.abs().sum() > 0
    uniform = table.latency(table.sample(200_000, rng=3)).mean()
    assert lat.item() == pytest.approx(uniform, rel=0.01)


def test_bad_shapes_and_resolution_are_refused(table):
    el = ExpectedLatency(table, R)
    with pytest.raises(InvalidInputError, match=r"choice_probs .*\[20, 3, 3\], got \(20, 9\)"):
        el(torch.ones(20, 9), torch.ones(5, 3))
    with pytest.raises(InvalidInputError, match="depth_probs"):
        el(torch.ones(20, 3, 3), [[1.0, 0.0, 0.0]] * 5)
    with pytest.raises(InvalidInputError, match="resolution 224 is not in this table"):
        ExpectedLatency(table, 224)
