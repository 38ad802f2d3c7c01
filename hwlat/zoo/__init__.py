"""Built-in models: no downloads, no pretrained weights; every build is random-initialised under a
fixed seed, so two builds give identical weights, inputs and outputs. BatchNorm statistics are
those of the example batch (weights.py says why).

`build(name)` makes a named model; `from_ofa_config` and `from_nb201` make the NAS families from
their descriptions. Each returns the model in eval mode and a tuple of example inputs.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from hwlat.errors import InvalidInputError
from hwlat.zoo import mobilenet, nb201, ofa, resnet, sparse, spiking, vit
from hwlat.zoo.inputs import check_batch_size
from hwlat.zoo.weights import calibrate_batchnorm

SEED = 0

Built = tuple[nn.Module, tuple[Tensor, ...]]


@dataclass(frozen=True)
class ZooModel:
    name: str
    description: str
    factory: Callable[..., Built]  # (batch_size, input_shape) -> (model, example inputs)
    input_names: tuple[str, ...]


_IMAGE = ("input",)
MODELS: dict[str, ZooModel] = {
    m.name: m
    for m in [
        ZooModel("mobilenet_v2", "MobileNetV2 1.0, 224x224, 1000 classes", mobilenet.build, _IMAGE),
        ZooModel("resnet18", "ResNet-18, 224x224, 1000 classes", resnet.build_resnet18, _IMAGE),
        ZooModel("resnet50", "ResNet-50, 224x224, 1000 classes", resnet.build_resnet50, _IMAGE),
        ZooModel(
            "vit_tiny", "ViT-Tiny/16 (dim 192, depth 12, 3 heads), 224x224", vit.build, _IMAGE
        ),
        ZooModel(
            "spiking_convnet",
            f"3-layer conv net of LIF neurons over T={spiking.TIME_STEPS} steps, 32x32, 10 classes",
            spiking.build,
            _IMAGE,
        ),
        ZooModel(
            "sparse_convnet",
            f"3-layer submanifold sparse conv net on {sparse.POINTS} points voxelized in a "
            f"{sparse.GRID}^3 grid (--input-shape POINTS,GRID), 10 classes",
            sparse.build,
            ("features", "coords"),
        ),
    ]
}

_FAMILIES = [
    ("ofa-config", "Once-for-All specialized net from a net config JSON (--ofa-config)"),
    ("nb201", "NAS-Bench-201 network from a cell string (--nb201)"),
]


@contextmanager
def _seeded() -> Iterator[None]:
    # A forked RNG: building a model neither depends on nor disturbs the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        yield


def _finish(built: Built) -> Built:
    model, inputs = built
    return calibrate_batchnorm(model, inputs).eval(), inputs


def build(name: str, batch_size: int = 1, input_shape: tuple[int, ...] | None = None) -> Built:
    """A named zoo model in eval mode and its example inputs; `input_shape` overrides (C, H, W)."""
    if name not in MODELS:
        raise InvalidInputError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    check_batch_size(batch_size)
    with _seeded():
        return _finish(MODELS[name].factory(batch_size, input_shape))


def from_ofa_config(cfg: dict | str | Path, batch_size: int = 1) -> Built:
    """A Once-for-All specialized net from its net config: a JSON path, or the loaded dict."""
    check_batch_size(batch_size)
    with _seeded():
        return _finish(ofa.build(cfg, batch_size))


def from_nb201(arch: str, batch_size: int = 1, num_classes: int = 10) -> Built:
    """A NAS-Bench-201 network (CIFAR skeleton, input 3x32x32) from its cell string."""
    check_batch_size(batch_size)
    with _seeded():
        return _finish(nb201.build(arch, batch_size, num_classes))


def list_models() -> list[tuple[str, str]]:
    """(name, description) of every built-in model, then of the families built from descriptions."""
    return [(m.name, m.description) for m in MODELS.values()] + _FAMILIES


def onnx_translations() -> dict:
    """The custom_translation_table torch.onnx.export needs for the zoo's custom ops."""
    return sparse.ONNX_TRANSLATIONS
