"""The fast NB201 key derivation (2 cells per stage, cached by the live cell) gives exactly the
keys of the whole network built and cut at once, in the order of the network whose dead edges
are `none`."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from hwlat.nas import nb201_lut
from hwlat.nas.nb201_lut import _kernels, _live, nb201_kernels, network_kernels
from hwlat.nas.spaces import NB201_SIZE, nb201_arch, parse_nb201

# cells whose kernels cross a cell's boundary, or whose cell is no kernel at all
EDGE_CASES = [
    "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",  # no path: no kernel
    "|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|",  # the identity
    "|skip_connect~0|+|none~0|skip_connect~1|+|none~0|none~1|skip_connect~2|",  # identity too
    "|skip_connect~0|+|none~0|none~1|+|skip_connect~0|skip_connect~1|none~2|",  # x + x
    # one conv: it takes the next cell's ReLU; the first takes the stem's or reduction's
    "|none~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|none~2|",
    "|nor_conv_1x1~0|+|none~0|none~1|+|none~0|nor_conv_3x3~1|none~2|",
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    "|avg_pool_3x3~0|+|none~0|none~1|+|none~0|nor_conv_1x1~1|none~2|",
    "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|",
    # dead nodes whose ReLU or pool merges with a live one (sets the kernel order)
    "|nor_conv_3x3~0|+|avg_pool_3x3~0|none~1|+|nor_conv_1x1~0|none~1|nor_conv_1x1~2|",
    "|avg_pool_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|avg_pool_3x3~0|none~1|none~2|",
]


def _cells() -> list[str]:
    rng = np.random.default_rng(201)
    return EDGE_CASES + [nb201_arch(int(i)) for i in rng.choice(NB201_SIZE, 250, replace=False)]


@pytest.mark.parametrize("chunk", range(4))
def test_fast_keys_equal_the_whole_network_build(chunk):
    cells = _cells()[chunk::4]
    for arch in cells:
        ops = parse_nb201(arch)
        fast = list(_kernels(ops))
        assert fast == list(network_kernels(_live(ops))), arch  # in order
        assert Counter(fast) == Counter(network_kernels(ops)), arch  # dead edges: the same keys


def test_cells_differing_in_dead_edges_share_keys():
    # node 1 reaches no output: whatever its edge is, the export drops it
    base = "|{}~0|+|nor_conv_3x3~0|none~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|"
    variants = [base.format(op) for op in ("none", "skip_connect", "nor_conv_1x1",
                                           "nor_conv_3x3", "avg_pool_3x3")]
    assert {_live(parse_nb201(a)) for a in variants} == {parse_nb201(variants[0])}
    keys = [Counter(network_kernels(parse_nb201(a))) for a in variants]
    assert all(k == keys[0] for k in keys)
    assert all(Counter(nb201_kernels(a)) == keys[0] for a in variants)
    live = parse_nb201(EDGE_CASES[6])  # every node reaches the output: nothing changes
    assert _live(live) == live


def test_the_fast_path_builds_each_live_cell_once():
    nb201_lut._live_kernels.cache_clear()
    base = "|{}~0|+|nor_conv_3x3~0|none~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|"
    for op in ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"):
        nb201_kernels(base.format(op))
    assert nb201_lut._live_kernels.cache_info().misses == 1
