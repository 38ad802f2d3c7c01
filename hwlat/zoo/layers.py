"""Building blocks shared by the zoo's convolutional nets (torchvision and Once-for-All conventions)."""

from torch import Tensor, nn

# OFA's act_func names; nn.Hardswish/Hardsigmoid compute OFA's x*relu6(x+3)/6 and relu6(x+3)/6 but
# export as single HardSwish/HardSigmoid nodes instead of four elementwise ones.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "h_swish": nn.Hardswish,
    "h_sigmoid": nn.Hardsigmoid,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
}


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of `divisor`, losing at most 10 % (MobileNet/OFA rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ConvBNAct(nn.Sequential):
    """Conv2d with 'same' padding, then optional BatchNorm and activation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        act: type[nn.Module] | None = nn.ReLU,
        bn: bool = True,
        bias: bool = False,
        dilation: int = 1,
        bn_eps: float = 1e-5,
    ):
        padding = (kernel_size // 2) * dilation
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias
            )
        ]
        if bn:
            layers.append(nn.BatchNorm2d(out_channels, eps=bn_eps))
        if act is not None:
            layers.append(act())
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """OFA's SE: channel gates from a pooled 1x1-conv bottleneck of make_divisible(C // 4) channels."""

    def __init__(self, channels: int):
        super().__init__()
        mid = make_divisible(channels // 4)
        self.gate = nn.Sequential(
            nn.Conv2d(channels, mid, 1),
            nn.ReLU(),
            nn.Conv2d(mid, channels, 1),
            nn.Hardsigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(x.mean((2, 3), keepdim=True))


class InvertedResidual(nn.Module):
    """MobileNet inverted bottleneck: [1x1 expand] -> kxk depthwise -> [SE] -> 1x1 linear project."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        mid_channels: int,
        act: type[nn.Module],
        expand: bool = True,
        use_se: bool = False,
        shortcut: bool = False,
        bn_eps: float = 1e-5,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        if expand:
            layers.append(ConvBNAct(in_channels, mid_channels, 1, act=act, bn_eps=bn_eps))
        layers.append(
            ConvBNAct(
                mid_channels, mid_channels, kernel_size, stride, mid_channels, act, bn_eps=bn_eps
            )
        )
        if use_se:
            layers.append(SqueezeExcite(mid_channels))
        layers.append(ConvBNAct(mid_channels, out_channels, 1, act=None, bn_eps=bn_eps))
        self.conv = nn.Sequential(*layers)
        self.shortcut = shortcut

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.shortcut else self.conv(x)
