"""ResNet-18 and ResNet-50 as torchvision builds them (stride on the 3x3 conv of a bottleneck)."""

from functools import partial

from torch import Tensor, nn

from hwlat.zoo.inputs import image_shape, images
from hwlat.zoo.layers import ConvBNAct
from hwlat.zoo.weights import init_weights


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            ConvBNAct(in_channels, channels, 3, stride),
            ConvBNAct(channels, channels, 3, act=None),
        )
        self.downsample = _downsample(in_channels, channels * self.expansion, stride)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.downsample(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            ConvBNAct(in_channels, channels, 1),
            ConvBNAct(channels, channels, 3, stride),
            ConvBNAct(channels, channels * self.expansion, 1, act=None),
        )
        self.downsample = _downsample(in_channels, channels * self.expansion, stride)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.downsample(x))


def _downsample(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return ConvBNAct(in_channels, out_channels, 1, stride, act=None)


class ResNet(nn.Module):
    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        depths: list[int],
        in_channels: int = 3,
        num_classes: int = 1000,
    ):
        super().__init__()
        layers: list[nn.Module] = [
            ConvBNAct(in_channels, 64, 7, 2),
            nn.MaxPool2d(3, 2, 1),
        ]
        channels = 64
        for stage, depth in enumerate(depths):
            width = 64 << stage
            for i in range(depth):
                layers.append(block(channels, width, 2 if stage > 0 and i == 0 else 1))
                channels = width * block.expansion
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def _build(block, depths, batch_size: int, input_shape: tuple[int, ...] | None):
    shape = image_shape(input_shape, (3, 224, 224))
    return init_weights(ResNet(block, depths, shape[0])), images(batch_size, shape)


build_resnet18 = partial(_build, BasicBlock, [2, 2, 2, 2])
build_resnet50 = partial(_build, Bottleneck, [3, 4, 6, 3])
