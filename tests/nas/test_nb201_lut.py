"""NB201 kernel keys derived without export, held to real exports; latency from a table."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from hwlat.errors import InvalidInputError
from hwlat.graph import fuse, load
from hwlat.lut.fewshot import OVERHEAD_KEY
from hwlat.nas.nb201_lut import (
    Nb201TableIncomplete,
    nb201_features,
    nb201_kernel_texts,
    nb201_kernels,
    nb201_latency,
)

pytestmark = pytest.mark.export

BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
MIXED = "|avg_pool_3x3~0|+|nor_conv_1x1~0|none~1|+|none~0|skip_connect~1|nor_conv_3x3~2|"
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
CELLS = [
    BEST,  # residual Adds taken by convs, Relu fused after a sum
    MIXED,  # none edges, a pool, 1x1 and 3x3 convs
    ALL_NONE,  # no path from input to output: the export folds everything, no kernel
    # node 1 is zeros: convs on it are constants, taken as a bias Add or an Add with a constant
    "|none~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|skip_connect~0|nor_conv_3x3~1|avg_pool_3x3~2|",
    # the last cell ends in a conv: the head's BatchNorm folds into it; node 2 is dead code
    "|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|none~0|skip_connect~1|none~2|",
    # node 1 is node 0: one AveragePool for both, node 2 adds it to itself, and node 3's first
    # Add is node 2's
    "|skip_connect~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|avg_pool_3x3~0|avg_pool_3x3~1|nor_conv_1x1~2|",
]


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """The graph of every cell in CELLS, exported once per session."""
    from hwlat.onnx_export import export
    from hwlat.zoo import from_nb201

    folder = tmp_path_factory.mktemp("nb201-export")
    graphs = []
    for n, arch in enumerate(CELLS):
        path = folder / f"cell{n}.onnx"
        model, inputs = from_nb201(arch)
        export(model, inputs, path, compare=False)
        graphs.append(load(path))
    return graphs


@pytest.mark.parametrize("n", range(len(CELLS)))
def test_derived_keys_equal_the_exported_kernels(exported, n):
    derived = Counter(k.text() for k in nb201_kernels(CELLS[n]))
    cut = Counter(k.key.text() for k in fuse(exported[n]))
    assert derived == cut, (
        f"only derived: {sorted((derived - cut).elements())[:3]}; "
        f"only exported: {sorted((cut - derived).elements())[:3]}"
    )


def test_degenerate_cell_has_no_kernels_and_others_share_the_skeleton():
    assert nb201_kernels(ALL_NONE) == []
    assert nb201_kernels("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|nor_conv_3x3~2|") == []
    best = Counter(k.kind.value for k in nb201_kernels(BEST))
    assert best["matmul"] == best["reduction"] == best["view"] == 1
    # 15 cells x 5 convs + stem + 2 x 3 in the reductions
    assert best["conv"] == 15 * 5 + 1 + 6


def test_features_count_kernels_per_cell():
    keys, counts = nb201_features([BEST, ALL_NONE, MIXED])
    assert counts.shape == (3, len(keys)) and keys == sorted(keys)
    assert counts[0].sum() == len(nb201_kernels(BEST)) and counts[1].sum() == 0
    assert dict(zip(keys, counts[2], strict=True)) == {
        k: float(n) for k, n in Counter(nb201_kernel_texts(MIXED)).items()} | {
        k: 0.0 for k in keys if k not in nb201_kernel_texts(MIXED)}
    with pytest.raises(InvalidInputError, match="not in keys"):
        nb201_features([BEST], keys=keys[1:])


def test_latency_sums_the_table_plus_overhead():
    archs = [BEST, MIXED, ALL_NONE]
    keys, counts = nb201_features(archs)
    table = {k: 0.01 * (i + 1) for i, k in enumerate(keys)}
    np.testing.assert_allclose(nb201_latency(table, archs), counts @ [table[k] for k in keys])
    with_overhead = nb201_latency(table | {OVERHEAD_KEY: 0.5}, archs)
    np.testing.assert_allclose(with_overhead, counts @ [table[k] for k in keys] + 0.5)
    assert with_overhead[2] == 0.5
    with pytest.raises(Nb201TableIncomplete, match=r"lacks 1 kernel keys .*: 'conv\|") as e:
        nb201_latency({k: v for k, v in table.items() if k != keys[0]}, archs)
    assert isinstance(e.value, LookupError)


def test_bad_cells_are_named():
    with pytest.raises(InvalidInputError, match="unknown op 'conv_5x5'"):
        nb201_kernels("|conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    with pytest.raises(InvalidInputError, match="expected 3"):
        nb201_latency({}, ["|none~0|+|none~0|none~1|"])


def test_imports_no_torch():
    code = ("import sys, hwlat.nas.nb201_lut as m; m.nb201_kernels(" + repr(BEST) + "); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_covering_cells_hold_every_key_of_random_cells():
    from hwlat.nas.nb201_lut import nb201_all_keys
    from hwlat.nas.spaces import nb201_arch

    every = nb201_all_keys()
    rng = np.random.default_rng(7)
    for i in rng.choice(15625, 400, replace=False):
        assert set(nb201_kernel_texts(nb201_arch(int(i)))) <= set(every)
