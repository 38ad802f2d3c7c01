"""A small spiking conv net: LIF neurons over T time steps, direct (repeated-image) input encoding.

Convs and BatchNorms run once on all steps at [T*B, C, H, W]; only the neurons, which carry state,
step through time. The Python loop unrolls at export into T copies of the neuron's update, the
pattern graph/ re-detects as one spiking-neuron kernel (the `spiking_neuron` rule of
`hwlat.graph.fuse`), the unit hwlat's fused LIF kernel computes.
"""

import torch
from torch import Tensor, nn

from hwlat.zoo.inputs import image_shape, images
from hwlat.zoo.weights import init_weights

TIME_STEPS = 4


class LIFNeuron(nn.Module):
    """Leaky integrate-and-fire with hard reset, stepping over dim 0 of a [T, ...] input."""

    def __init__(self, tau: float = 2.0, v_threshold: float = 1.0, v_reset: float = 0.0):
        super().__init__()
        self.tau = tau
        self.v_threshold = v_threshold
        self.v_reset = v_reset

    def forward(self, x_seq: Tensor) -> Tensor:
        v = torch.zeros_like(x_seq[0])
        spikes = []
        for x_t in x_seq:
            v = v + (x_t - v) / self.tau
            spike = (v >= self.v_threshold).to(x_t.dtype)
            v = v * (1.0 - spike) + self.v_reset * spike
            spikes.append(spike)
        return torch.stack(spikes)


class ConvLIF(nn.Module):
    """Conv+BN over all time steps at once, then the neuron over time."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, time_steps: int):
        super().__init__()
        self.time_steps = time_steps
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.lif = LIFNeuron()

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn(self.conv(x))
        return self.lif(y.unflatten(0, (self.time_steps, -1))).flatten(0, 1)


class SpikingConvNet(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 10, time_steps: int = TIME_STEPS):
        super().__init__()
        self.time_steps = time_steps
        self.features = nn.Sequential(
            ConvLIF(in_channels, 32, 1, time_steps),
            ConvLIF(32, 64, 2, time_steps),
            ConvLIF(64, 128, 2, time_steps),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x_seq = x.unsqueeze(0).expand(self.time_steps, *x.shape).flatten(0, 1)
        logits = self.fc(self.pool(self.features(x_seq)).flatten(1))
        return logits.unflatten(0, (self.time_steps, -1)).mean(0)


def build(batch_size: int, input_shape: tuple[int, ...] | None):
    shape = image_shape(input_shape, (3, 32, 32))
    return init_weights(SpikingConvNet(shape[0])), images(batch_size, shape)
