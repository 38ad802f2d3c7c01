import pytest
import torch

import hwlat.zoo as zoo
from hwlat.errors import InvalidInputError

pytestmark = pytest.mark.export

OUTPUT_SHAPES = {
    "mobilenet_v2": (1, 1000),
    "resnet18": (1, 1000),
    "resnet50": (1, 1000),
    "vit_tiny": (1, 1000),
    "spiking_convnet": (1, 10),
    "sparse_convnet": (1, 10),
}


def test_models_are_the_documented_set():
    assert list(zoo.MODELS) == list(OUTPUT_SHAPES)
    assert all(name == entry.name for name, entry in zoo.MODELS.items())


@pytest.mark.parametrize("name", OUTPUT_SHAPES)
def test_builds_in_eval_mode_with_expected_output(name):
    model, inputs = zoo.build(name)
    assert not model.training
    assert len(inputs) == len(zoo.MODELS[name].input_names)
    with torch.no_grad():
        out = model(*inputs)
    assert tuple(out.shape) == OUTPUT_SHAPES[name]
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", OUTPUT_SHAPES)
def test_two_builds_are_identical(name):
    (model_a, inputs_a), (model_b, inputs_b) = zoo.build(name), zoo.build(name)
    for a, b in zip(inputs_a, inputs_b, strict=True):
        assert torch.equal(a, b)
    with torch.no_grad():
        assert torch.equal(model_a(*inputs_a), model_b(*inputs_b))


def test_build_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    zoo.build("spiking_convnet")
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("name", ["resnet18", "spiking_convnet", "sparse_convnet"])
def test_batch_size(name):
    model, inputs = zoo.build(name, batch_size=2)
    with torch.no_grad():
        assert model(*inputs).shape[0] == 2


def test_spiking_net_fires():
    # BatchNorm statistics come from the example batch, so a random net still spikes.
    model, inputs = zoo.build("spiking_convnet")
    rates = []
    for layer in model.features:
        layer.lif.register_forward_hook(lambda module, args, out: rates.append(out.mean().item()))
    model(*inputs)
    assert len(rates) == 3 and all(0.01 < rate < 0.5 for rate in rates)


@pytest.mark.parametrize(
    ("name", "shape", "out"),
    [
        ("vit_tiny", (3, 64, 96), (1, 1000)),
        ("resnet18", (1, 64, 64), (1, 1000)),
        ("spiking_convnet", (2, 16, 16), (1, 10)),
    ],
)
def test_input_shape_override(name, shape, out):
    model, (image,) = zoo.build(name, input_shape=shape)
    assert tuple(image.shape) == (1, *shape)
    with torch.no_grad():
        assert tuple(model(image).shape) == out


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        (
            "resnt18",
            {},
            "unknown model 'resnt18'; known: mobilenet_v2, resnet18, resnet50, vit_tiny",
        ),
        ("resnet18", {"batch_size": 0}, "batch_size must be a positive integer, got 0"),
        ("resnet18", {"input_shape": (224, 224)}, "input_shape must be (C, H, W)"),
        ("vit_tiny", {"input_shape": (3, 100, 100)}, "multiples of 16"),
        ("sparse_convnet", {"input_shape": (3, 32, 32)}, "sparse_convnet takes no input_shape"),
    ],
)
def test_bad_requests_raise_invalid_input(name, kwargs, message):
    with pytest.raises(InvalidInputError) as info:
        zoo.build(name, **kwargs)
    assert message in str(info.value)


def test_list_models_names_models_and_families():
    listing = dict(zoo.list_models())
    assert set(zoo.MODELS) < set(listing)
    assert "--ofa-config" in listing["ofa-config"] and "--nb201" in listing["nb201"]


def test_onnx_translations_cover_the_sparse_op():
    assert torch.ops.hwlat.sparse_conv3d.default in zoo.onnx_translations()
