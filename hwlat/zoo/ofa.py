"""Once-for-All specialized nets from OFA's net config JSON (MobileNetV3 and ProxylessNASNets).

The config is validated as it is read, so a bad one fails with the path of the offending field
(`net.blocks[3].mobile_inverted_conv.act_func`) rather than deep inside torch.
"""

import json
import math
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from hwlat.errors import InvalidInputError
from hwlat.zoo.inputs import images
from hwlat.zoo.layers import ACTIVATIONS, ConvBNAct, InvertedResidual
from hwlat.zoo.weights import init_weights

DEFAULT_IMAGE_SIZE = 224
FAMILIES = ("MobileNetV3", "ProxylessNASNets")


def _field(
    cfg: dict, key: str, path: str, kind: type | tuple[type, ...], default: Any = ...
) -> Any:
    """cfg[key], checked to be of `kind` (numbers also positive); `default` when absent, if given."""
    if key not in cfg:
        if default is ...:
            raise InvalidInputError(f"OFA net config: missing field '{path}.{key}'")
        return default
    value = cfg[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # bool is an int subclass, but `true` is no channel count.
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        expected = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
        raise InvalidInputError(f"OFA net config: '{path}.{key}' must be {expected}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInputError(f"OFA net config: '{path}.{key}' must be a finite number, got {value!r}")
    if isinstance(value, int | float) and not isinstance(value, bool) and value <= 0:
        raise InvalidInputError(f"OFA net config: '{path}.{key}' must be positive, got {value!r}")
    return value


def _section(cfg: dict, key: str, path: str, name: str) -> tuple[dict, str]:
    """A sub-object whose "name" must be `name` (OFA's layer class), with its path for errors."""
    section = _field(cfg, key, path, dict)
    path = f"{path}.{key}"
    layer = _field(section, "name", path, str)
    if layer != name:
        raise InvalidInputError(
            f"OFA net config: '{path}.name' is {layer!r}; supported here: {name!r}"
        )
    return section, path


def _activation(cfg: dict, path: str) -> type[nn.Module] | None:
    act = _field(cfg, "act_func", path, (str, type(None)))
    if act is not None and act not in ACTIVATIONS:
        raise InvalidInputError(
            f"OFA net config: '{path}.act_func' is {act!r}; known: {', '.join(ACTIVATIONS)} or null"
        )
    return None if act is None else ACTIVATIONS[act]


def _channels(cfg: dict, key: str, path: str, expected: int) -> int:
    value = _field(cfg, key, path, int)
    if value != expected:
        raise InvalidInputError(
            f"OFA net config: '{path}.{key}' is {value} but the previous layer gives {expected}"
        )
    return value


class _Reader:
    """Walks a net config, building layers and tracking the channel count between them."""

    def __init__(self, net: dict, bn_eps: float, in_channels: int):
        self.net = net
        self.bn_eps = bn_eps
        self.channels = in_channels

    def conv_layer(self, key: str) -> nn.Module:
        cfg, path = _section(self.net, key, "net", "ConvLayer")
        ops_order = _field(cfg, "ops_order", path, str, "weight_bn_act")
        if ops_order != "weight_bn_act":
            raise InvalidInputError(
                f"OFA net config: '{path}.ops_order' is {ops_order!r}; supported: 'weight_bn_act'"
            )
        for unsupported in ("has_shuffle", "use_se"):
            if _field(cfg, unsupported, path, bool, False):
                raise InvalidInputError(
                    f"OFA net config: '{path}.{unsupported}' true is unsupported"
                )
        layer = ConvBNAct(
            _channels(cfg, "in_channels", path, self.channels),
            _field(cfg, "out_channels", path, int),
            _field(cfg, "kernel_size", path, int),
            _field(cfg, "stride", path, int, 1),
            _field(cfg, "groups", path, int, 1),
            _activation(cfg, path),
            _field(cfg, "use_bn", path, bool, True),
            _field(cfg, "bias", path, bool, False),
            _field(cfg, "dilation", path, int, 1),
            self.bn_eps,
        )
        self.channels = cfg["out_channels"]
        return layer

    def block(self, index: int, cfg: dict) -> nn.Module:
        path = f"net.blocks[{index}]"
        if not isinstance(cfg, dict) or cfg.get("name") != "MobileInvertedResidualBlock":
            raise InvalidInputError(
                f"OFA net config: '{path}' must be a MobileInvertedResidualBlock object"
            )
        conv, conv_path = _section(cfg, "mobile_inverted_conv", path, "MBInvertedConvLayer")
        in_channels = _channels(conv, "in_channels", conv_path, self.channels)
        out_channels = _field(conv, "out_channels", conv_path, int)
        stride = _field(conv, "stride", conv_path, int)
        expand_ratio = _field(conv, "expand_ratio", conv_path, (int, float))
        mid = _field(conv, "mid_channels", conv_path, (int, type(None)), None)
        mid = round(in_channels * expand_ratio) if mid is None else mid
        if expand_ratio == 1 and mid != in_channels:
            raise InvalidInputError(
                f"OFA net config: '{conv_path}.mid_channels' is {mid} but expand_ratio 1 "
                f"needs {in_channels}"
            )
        act = _activation(conv, conv_path)
        if act is None:
            raise InvalidInputError(
                f"OFA net config: '{conv_path}.act_func' must name an activation, got null"
            )
        shortcut = cfg.get("shortcut")
        if shortcut is not None:
            _section(cfg, "shortcut", path, "IdentityLayer")
            if stride != 1 or in_channels != out_channels:
                raise InvalidInputError(
                    f"OFA net config: '{path}.shortcut' is an identity but the block maps "
                    f"{in_channels} -> {out_channels} channels at stride {stride}"
                )
        self.channels = out_channels
        return InvertedResidual(
            in_channels,
            out_channels,
            _field(conv, "kernel_size", conv_path, int),
            stride,
            mid,
            act,
            expand=expand_ratio != 1,
            use_se=_field(conv, "use_se", conv_path, bool, False),
            shortcut=shortcut is not None,
            bn_eps=self.bn_eps,
        )

    def classifier(self) -> nn.Module:
        cfg, path = _section(self.net, "classifier", "net", "LinearLayer")
        if _field(cfg, "use_bn", path, bool, False):
            raise InvalidInputError(f"OFA net config: '{path}.use_bn' true is unsupported")
        act = _activation(cfg, path)
        # Dropout is left out: it is the identity at inference, the only mode the zoo builds for.
        linear = nn.Linear(
            _channels(cfg, "in_features", path, self.channels),
            _field(cfg, "out_features", path, int),
            _field(cfg, "bias", path, bool, True),
        )
        return linear if act is None else nn.Sequential(linear, act())


class OFANet(nn.Module):
    """MobileNetV3 pools before the feature-mix conv; ProxylessNASNets pools after it."""

    def __init__(self, net: dict):
        super().__init__()
        family = _field(net, "name", "net", str)
        if family not in FAMILIES:
            raise InvalidInputError(
                f"OFA net config: 'net.name' is {family!r}; known: {', '.join(FAMILIES)}"
            )
        bn_eps = _field(_field(net, "bn", "net", dict, {}), "eps", "net.bn", (int, float), 1e-5)
        first = _field(net, "first_conv", "net", dict)
        self.in_channels = _field(first, "in_channels", "net.first_conv", int)
        reader = _Reader(net, bn_eps, self.in_channels)
        blocks = _field(net, "blocks", "net", list)
        self.features = nn.Sequential(
            reader.conv_layer("first_conv"),
            *(reader.block(i, cfg) for i, cfg in enumerate(blocks)),
        )
        if family == "MobileNetV3":
            self.features.append(reader.conv_layer("final_expand_layer"))
            self.pre_pool = nn.Identity()
            self.post_pool = reader.conv_layer("feature_mix_layer")
        else:
            has_mix = net.get("feature_mix_layer") is not None
            self.pre_pool = reader.conv_layer("feature_mix_layer") if has_mix else nn.Identity()
            self.post_pool = nn.Identity()
        self.classifier = reader.classifier()

    def forward(self, x: Tensor) -> Tensor:
        x = self.pre_pool(self.features(x)).mean((2, 3), keepdim=True)
        return self.classifier(self.post_pool(x).flatten(1))


def load_config(cfg: dict | str | Path) -> tuple[dict, int]:
    """(net dict, image size) from a path, a `{"image_size", "net"}` dict or a bare net dict."""
    if isinstance(cfg, str | Path):
        try:
            cfg = json.loads(Path(cfg).read_text())
        except OSError as e:
            raise InvalidInputError(f"cannot read OFA net config '{cfg}': {e.strerror}") from e
        except (ValueError, RecursionError) as e:  # bad JSON, bad UTF-8, nested too deep
            raise InvalidInputError(f"OFA net config '{cfg}' is not valid JSON: "
                                    f"{str(e) or 'nested too deeply'}") from e
    if not isinstance(cfg, dict):
        raise InvalidInputError(f"OFA net config must be a JSON object, got {type(cfg).__name__}")
    if "net" not in cfg:
        return cfg, DEFAULT_IMAGE_SIZE
    net = _field(cfg, "net", "config", dict)
    return net, _field(cfg, "image_size", "config", int, DEFAULT_IMAGE_SIZE)


def build(cfg: dict | str | Path, batch_size: int):
    net, image_size = load_config(cfg)
    model = init_weights(OFANet(net))
    return model, images(batch_size, (model.in_channels, image_size, image_size))
