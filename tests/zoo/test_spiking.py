import pytest
import torch

from hwlat.zoo.spiking import TIME_STEPS, LIFNeuron, SpikingConvNet


def constant(value: float, steps: int = 4) -> torch.Tensor:
    return torch.full((steps, 1), value)


def test_lif_constant_input_hand_computed():
    # v: 0.75 (no spike), 0.75 + (1.5 - 0.75) / 2 = 1.125 (spike, reset to 0), 0.75, 1.125 (spike)
    spikes = LIFNeuron(tau=2.0, v_threshold=1.0, v_reset=0.0)(constant(1.5))
    assert spikes.flatten().tolist() == [0.0, 1.0, 0.0, 1.0]


def test_lif_reset_value_and_threshold_inclusive():
    # v: 0.75, 1.125 (spike, reset to 0.5), 0.5 + (1.5 - 0.5) / 2 = 1.0 (>= threshold: spike), 1.0
    spikes = LIFNeuron(tau=2.0, v_threshold=1.0, v_reset=0.5)(constant(1.5))
    assert spikes.flatten().tolist() == [0.0, 1.0, 1.0, 1.0]


def test_lif_subthreshold_input_never_fires():
    # v approaches the input 0.9 from below and never reaches 1.0
    assert not LIFNeuron()(constant(0.9, steps=20)).any()


def test_lif_keeps_shape_and_dtype():
    x = torch.randn(TIME_STEPS, 2, 3, 5, 5, dtype=torch.float64)
    spikes = LIFNeuron()(x)
    assert spikes.shape == x.shape and spikes.dtype == torch.float64
    assert set(spikes.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("batch", [1, 3])
def test_net_averages_over_time_steps(batch):
    model = SpikingConvNet().eval()
    with torch.no_grad():
        assert tuple(model(torch.randn(batch, 3, 32, 32)).shape) == (batch, 10)
