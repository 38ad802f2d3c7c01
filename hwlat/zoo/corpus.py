"""Models users bring: timm's architectures and torchvision's, by name, with random weights.

`timm:NAME` is any model `timm.list_models()` knows and `torchvision:NAME` any builder in
`torchvision.models`; both are created without pretrained weights (nothing is downloaded), under
the zoo's fixed seed, with BatchNorm statistics taken from the example batch like the zoo's own
models. `CORPUS` is a curated list spanning the common CNN, transformer and hybrid families; it is
what `hwlat zoo --corpus` lists and `benchmarks/corpus_export.py` exports.

timm and torchvision are imported only when a name from them is asked for.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import torch

from hwlat.errors import InvalidInputError
from hwlat.zoo.inputs import check_batch_size

SOURCES = ("timm", "torchvision")


@dataclass(frozen=True)
class CorpusModel:
    source: str  # "timm" or "torchvision"
    name: str  # the exact name the source knows
    family: str

    @property
    def spec(self) -> str:
        return f"{self.source}:{self.name}"


def _timm(family: str, *names: str) -> list[CorpusModel]:
    return [CorpusModel("timm", n, family) for n in names]


def _tv(family: str, *names: str) -> list[CorpusModel]:
    return [CorpusModel("torchvision", n, family) for n in names]


# Small and tiny variants first: a whole-corpus export must stay practical on a laptop.
CORPUS: tuple[CorpusModel, ...] = tuple([
    *_timm("resnet", "resnet18", "resnet34", "resnet50", "resnext26ts", "resnext50_32x4d",
           "wide_resnet50_2", "seresnext26d_32x4d"),
    *_tv("resnet", "resnet18"),
    *_timm("regnet", "regnetx_002", "regnetx_004", "regnetx_008", "regnety_002", "regnety_004",
           "regnety_008"),
    *_timm("efficientnet", "efficientnet_b0", "efficientnet_lite0", "tinynet_a",
           "efficientnetv2_rw_t", "tf_efficientnetv2_b0"),
    *_timm("mobilenet", "mobilenetv2_050", "mobilenetv2_100", "mobilenetv3_small_100",
           "mobilenetv3_large_100", "tf_mobilenetv3_small_minimal_100", "lcnet_050"),
    *_tv("mobilenet", "mobilenet_v3_small"),
    *_timm("mnasnet-fbnet-ghostnet", "mnasnet_100", "mnasnet_small", "semnasnet_100",
           "fbnetc_100", "fbnetv3_b", "ghostnet_100"),
    *_tv("mnasnet-fbnet-ghostnet", "mnasnet0_5"),
    *_timm("densenet", "densenet121", "densenetblur121d"),
    *_timm("inception", "inception_v3", "inception_v4"),
    *_tv("inception", "googlenet"),
    *_tv("squeezenet", "squeezenet1_0", "squeezenet1_1"),
    *_tv("shufflenet", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0"),
    *_timm("convnext", "convnext_atto", "convnext_femto", "convnext_pico", "convnext_nano",
           "convnext_tiny", "convnextv2_atto"),
    *_timm("vit-deit", "vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224",
           "deit_tiny_patch16_224", "deit_small_patch16_224", "deit_tiny_distilled_patch16_224"),
    *_timm("swin", "swin_tiny_patch4_window7_224", "swinv2_cr_tiny_224"),
    *_timm("hybrid", "mobilevit_xxs", "mobilevit_xs", "mobilevitv2_050", "levit_128s"),
])

FAMILIES: tuple[str, ...] = tuple(dict.fromkeys(m.family for m in CORPUS))


def is_corpus_spec(name: str) -> bool:
    """Whether `name` names a model from a source (`timm:...`, `torchvision:...`)."""
    source, sep, _ = name.partition(":")
    return bool(sep) and source in SOURCES


def family_of(spec: str) -> str | None:
    return next((m.family for m in CORPUS if m.spec == spec), None)


def build(spec: str, batch_size: int = 1, input_shape: tuple[int, ...] | None = None):
    """`timm:NAME` or `torchvision:NAME` in eval mode, random weights under the zoo's seed, and its
    example input: batch `batch_size` of the model's native (C, H, W) unless `input_shape`."""
    from hwlat.zoo import _finish, _seeded

    source, sep, name = spec.partition(":")
    if not sep or source not in SOURCES or not name:
        raise InvalidInputError(f"'{spec}': expected timm:NAME or torchvision:NAME")
    check_batch_size(batch_size)
    if input_shape is not None:
        input_shape = tuple(input_shape)
        if len(input_shape) != 3 or any(d <= 0 for d in input_shape):
            raise InvalidInputError(f"{spec}: --input-shape must be C,H,W, got {input_shape}")
    make = _timm_model if source == "timm" else _torchvision_model
    with _seeded():
        model, native = make(name)
        shape = input_shape or native
        x = torch.randn(batch_size, *shape)
        model.eval()
        return _finish((model, (x,)))


def _timm_model(name: str):
    try:
        import timm
    except ImportError as e:
        raise InvalidInputError("timm: models need the 'corpus' extra (pip install 'hwlat[corpus]')") from e
    known = timm.list_models()
    if name not in known:
        raise InvalidInputError(f"unknown timm model '{name}'{_close(name, known)}")
    try:
        model = timm.create_model(name, pretrained=False)
    except Exception as e:
        raise InvalidInputError(f"timm:{name}: cannot be created ({_one_line(e)})") from e
    cfg = getattr(model, "pretrained_cfg", None) or {}
    shape = tuple(int(d) for d in cfg.get("input_size", (3, 224, 224)))
    return model, shape


def _torchvision_model(name: str):
    try:
        import torchvision
    except ImportError as e:
        raise InvalidInputError("torchvision: models need the 'corpus' extra (pip install 'hwlat[corpus]')") from e
    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        raise InvalidInputError(f"unknown torchvision model '{name}'{_close(name, known)}")
    kwargs = {"weights": None}
    if name in ("googlenet", "inception_v3"):
        kwargs["aux_logits"] = False  # the auxiliary heads only run in training
        kwargs["init_weights"] = True
    model = torchvision.models.get_model(name, **kwargs)
    return model, (3, 299, 299) if name == "inception_v3" else (3, 224, 224)


def _close(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    return f"; close matches: {', '.join(close)}" if close else "; no close match"


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."
