"""MobileNetV2 (width 1.0) as torchvision builds it: ReLU6, inverted residuals, 1000 classes."""

from torch import Tensor, nn

from hwlat.zoo.inputs import image_shape, images
from hwlat.zoo.layers import ConvBNAct, InvertedResidual, make_divisible
from hwlat.zoo.weights import init_weights

# (expand ratio, output channels, repeats, first stride), from the MobileNetV2 paper's Table 2.
_STAGES = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


class MobileNetV2(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 1000):
        super().__init__()
        channels = make_divisible(32)
        layers: list[nn.Module] = [ConvBNAct(in_channels, channels, 3, 2, act=nn.ReLU6)]
        for expand_ratio, out_channels, repeats, first_stride in _STAGES:
            for i in range(repeats):
                stride = first_stride if i == 0 else 1
                layers.append(
                    InvertedResidual(
                        channels,
                        out_channels,
                        3,
                        stride,
                        round(channels * expand_ratio),
                        nn.ReLU6,
                        expand=expand_ratio != 1,
                        shortcut=stride == 1 and channels == out_channels,
                    )
                )
                channels = out_channels
        layers.append(ConvBNAct(channels, 1280, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(1280, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


def build(batch_size: int, input_shape: tuple[int, ...] | None):
    shape = image_shape(input_shape, (3, 224, 224))
    return init_weights(MobileNetV2(shape[0])), images(batch_size, shape)
