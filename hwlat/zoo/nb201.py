"""NAS-Bench-201 networks from a cell string, as NB201's TinyNetwork builds them (CIFAR skeleton).

A cell string `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|` names, for nodes 1..3, the op on the edge
from each earlier node; node j is the sum of its incoming edges and node 3 is the cell's output.
"""

from collections.abc import Callable

import torch
from torch import Tensor, nn

from hwlat.errors import InvalidInputError
from hwlat.nas.spaces import parse_nb201
from hwlat.zoo.inputs import images

STEM_CHANNELS = 16
CELLS_PER_STAGE = 5
NODES = 4


class ReLUConvBN(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels),
        )


# "none" has no entry: its edges are left out of the sum rather than multiplied by zero.
OPS: dict[str, Callable[[int], nn.Module]] = {
    "skip_connect": lambda c: nn.Identity(),
    "nor_conv_1x1": lambda c: ReLUConvBN(c, c, 1),
    "nor_conv_3x3": lambda c: ReLUConvBN(c, c, 3),
    "avg_pool_3x3": lambda c: nn.AvgPool2d(3, 1, 1, count_include_pad=False),
}
KNOWN_OPS = ("none", *OPS)


def parse_cell(arch: str) -> list[list[str]]:
    """The op names per node: `result[j - 1][i]` is the op on edge i -> j."""
    ops = iter(parse_nb201(arch))  # validates: node count, edge order, op names
    return [[next(ops) for _ in range(j)] for j in range(1, NODES)]


class Cell(nn.Module):
    def __init__(self, cell: list[list[str]], channels: int):
        super().__init__()
        # sources[j - 1] and edges[j - 1]: node j's non-"none" inputs and the op on each.
        self.sources = [[i for i, op in enumerate(ops) if op != "none"] for ops in cell]
        self.edges = nn.ModuleList(
            nn.ModuleList(OPS[op](channels) for op in ops if op != "none") for ops in cell
        )

    def forward(self, x: Tensor) -> Tensor:
        nodes = [x]
        for sources, ops in zip(self.sources, self.edges, strict=True):
            inputs = [op(nodes[i]) for i, op in zip(sources, ops, strict=True)]
            # An all-"none" node is constant zeros, so export folds all that follows it into
            # constants; HW-NAS-Bench's Pixel 3 timings did too (0.004 ms for an all-"none" cell).
            nodes.append(sum(inputs[1:], inputs[0]) if inputs else torch.zeros_like(x))
        return nodes[-1]


class ResidualReduction(nn.Module):
    """NB201's ResNetBasicblock with stride 2, placed between stages."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.body = nn.Sequential(
            ReLUConvBN(in_channels, out_channels, 3, 2),
            ReLUConvBN(out_channels, out_channels, 3),
        )
        self.shortcut = nn.Sequential(
            nn.AvgPool2d(2, 2),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.shortcut(x) + self.body(x)


class NB201Network(nn.Module):
    def __init__(self, cell: list[list[str]], num_classes: int = 10):
        super().__init__()
        c = STEM_CHANNELS
        layers: list[nn.Module] = [nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)]
        for stage in range(3):
            if stage > 0:
                layers.append(ResidualReduction(c, 2 * c))
                c *= 2
            layers.extend(Cell(cell, c) for _ in range(CELLS_PER_STAGE))
        layers += [nn.BatchNorm2d(c), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def build(arch: str, batch_size: int, num_classes: int):
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise InvalidInputError(f"num_classes must be a positive integer, got {num_classes!r}")
    return NB201Network(parse_cell(arch), num_classes), images(batch_size, (3, 32, 32))
