import pytest
import torch

import hwlat.zoo as zoo
from hwlat.errors import InvalidInputError
from hwlat.zoo.nb201 import Cell, parse_cell

pytestmark = pytest.mark.export

BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
MIXED = "|avg_pool_3x3~0|+|nor_conv_1x1~0|none~1|+|none~0|skip_connect~1|nor_conv_3x3~2|"
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
ALL_CONV = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"


@pytest.mark.parametrize("arch", [BEST, MIXED, ALL_NONE])
def test_builds_cifar_network(arch):
    model, (image,) = zoo.from_nb201(arch)
    assert tuple(image.shape) == (1, 3, 32, 32)
    with torch.no_grad():
        out = model(image)
    assert tuple(out.shape) == (1, 10) and torch.isfinite(out).all()


def test_parameter_counts_match_nb201_published_range():
    # NAS-Bench-201 reports 0.073 M (all "none") to 1.532 M (all 3x3 conv) parameters.
    counts = [
        sum(p.numel() for p in zoo.from_nb201(a)[0].parameters()) for a in (ALL_NONE, ALL_CONV)
    ]
    assert [round(c / 1e6, 3) for c in counts] == [0.073, 1.532]


def test_parse_cell():
    assert parse_cell(MIXED) == [
        ["avg_pool_3x3"],
        ["nor_conv_1x1", "none"],
        ["none", "skip_connect", "nor_conv_3x3"],
    ]


def test_none_edges_build_no_ops():
    cell = Cell(parse_cell(MIXED), 8)
    assert [len(ops) for ops in cell.edges] == [1, 1, 2]
    assert cell.sources == [[0], [0], [1, 2]]


def test_all_none_cell_outputs_zeros():
    cell = Cell(parse_cell(ALL_NONE), 8)
    assert len(list(cell.parameters())) == 0
    assert torch.equal(cell(torch.randn(1, 8, 4, 4)), torch.zeros(1, 8, 4, 4))


def test_skip_only_cell_sums_paths():
    # node1 = x, node2 = node1 = x, node3 = x + node1 + node2 = 3x
    cell = Cell(
        parse_cell(
            "|skip_connect~0|+|none~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
        ),
        4,
    )
    x = torch.randn(1, 4, 3, 3)
    assert torch.equal(cell(x), x + x + x)


@pytest.mark.parametrize(
    ("arch", "message"),
    [
        (
            "|conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|",
            "unknown op 'conv_5x5' in token 'conv_5x5~0'; allowed ops: none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3",
        ),
        ("|none~0|+|none~0|none~1|", "has 2 '+'-separated nodes; expected 3"),
        ("|none~0|+|none~0|+|none~0|none~1|none~2|", "NB201 node 2 '|none~0|' in '|none~0|+|none~0|+|none~0|none~1|none~2|' must have 2 edge(s)"),
        (
            "|none~0|+|none~1|none~0|+|none~0|none~1|none~2|",
            "token 'none~1' (node 2, edge 0) must read 'none~0'",
        ),
        (
            "none~0+|none~0|none~1|+|none~0|none~1|none~2|",
            "NB201 node 1 'none~0' in 'none~0+|none~0|none~1|+|none~0|none~1|none~2|' must have 1 edge(s)",
        ),
    ],
)
def test_malformed_cell_string_raises(arch, message):
    with pytest.raises(InvalidInputError) as info:
        zoo.from_nb201(arch)
    assert message in str(info.value)
