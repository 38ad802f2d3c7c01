import copy
import json
from pathlib import Path

import pytest
import torch

import hwlat.zoo as zoo
from hwlat.errors import InvalidInputError

pytestmark = pytest.mark.export

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
NO_DATA = f"reference data {DATA} is absent (it lives beside the project, not in it)"
CONFIGS = (
    sorted((DATA / "ofa" / "net_configs").glob("*.json"))
    if DATA.is_dir()
    else [pytest.param(None, marks=pytest.mark.skip(reason=NO_DATA))]
)


def conv_layer(cin, cout, k=1, stride=1, act="h_swish", use_bn=True):
    return {
        "name": "ConvLayer",
        "kernel_size": k,
        "stride": stride,
        "in_channels": cin,
        "out_channels": cout,
        "use_bn": use_bn,
        "act_func": act,
        "bias": False,
    }


def block(cin, cout, k, stride, expand_ratio, mid, act, use_se, shortcut):
    return {
        "name": "MobileInvertedResidualBlock",
        "mobile_inverted_conv": {
            "name": "MBInvertedConvLayer",
            "in_channels": cin,
            "out_channels": cout,
            "kernel_size": k,
            "stride": stride,
            "expand_ratio": expand_ratio,
            "mid_channels": mid,
            "act_func": act,
            "use_se": use_se,
        },
        "shortcut": {"name": "IdentityLayer", "in_channels": [cin], "out_channels": [cout]}
        if shortcut
        else None,
    }


# A tiny MobileNetV3 exercising every part: no-expand block with shortcut, expand + SE block.
TINY_MBV3 = {
    "name": "MobileNetV3",
    "bn": {"momentum": 0.1, "eps": 1e-5},
    "first_conv": conv_layer(3, 8, k=3, stride=2),
    "blocks": [
        block(8, 8, 3, 1, 1, None, "relu", False, True),
        block(8, 16, 5, 2, 3, 24, "h_swish", True, False),
    ],
    "final_expand_layer": conv_layer(16, 32),
    "feature_mix_layer": conv_layer(32, 64, use_bn=False),
    "classifier": {
        "name": "LinearLayer",
        "in_features": 64,
        "out_features": 10,
        "bias": True,
        "act_func": None,
    },
}

TINY_PROXYLESS = {
    "name": "ProxylessNASNets",
    "first_conv": conv_layer(3, 8, k=3, stride=2, act="relu6"),
    "blocks": [block(8, 16, 3, 2, 6, None, "relu6", False, False)],
    "feature_mix_layer": conv_layer(16, 32, act="relu6"),
    "classifier": {
        "name": "LinearLayer",
        "in_features": 32,
        "out_features": 10,
        "bias": True,
        "act_func": None,
    },
}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem if p else "no-data")
def test_published_configs_build_and_run(path):
    model, (image,) = zoo.from_ofa_config(path)
    size = json.loads(path.read_text())["image_size"]
    assert tuple(image.shape) == (1, 3, size, size)
    with torch.no_grad():
        out = model(image)
    assert tuple(out.shape) == (1, 1000) and torch.isfinite(out).all()


def test_tiny_config_parameter_count_matches_hand_count():
    first_conv = 3 * 8 * 9 + 2 * 8
    block0 = 8 * 9 + 2 * 8 + 8 * 8 + 2 * 8  # depthwise + bn, project + bn (no expand)
    se_mid = 8  # make_divisible(24 // 4, 8)
    block1 = (
        8 * 24
        + 2 * 24  # expand + bn
        + 24 * 25
        + 2 * 24  # depthwise 5x5 + bn
        + 24 * se_mid
        + se_mid
        + se_mid * 24
        + 24  # squeeze-excite, with biases
        + 24 * 16
        + 2 * 16  # project + bn
    )
    final_expand = 16 * 32 + 2 * 32
    feature_mix = 32 * 64
    classifier = 64 * 10 + 10
    model, (image,) = zoo.from_ofa_config({"image_size": 32, "net": TINY_MBV3})
    assert sum(p.numel() for p in model.parameters()) == (
        first_conv + block0 + block1 + final_expand + feature_mix + classifier
    )
    assert tuple(model(image).shape) == (1, 10)


@pytest.mark.parametrize(("net", "mix_input_size"), [(TINY_MBV3, 1), (TINY_PROXYLESS, 4)])
def test_feature_mix_is_after_pooling_only_in_mobilenet_v3(net, mix_input_size):
    model, (image,) = zoo.from_ofa_config({"image_size": 16, "net": net})
    mix = (model.post_pool if net["name"] == "MobileNetV3" else model.pre_pool)[0]
    seen = []
    mix.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[-1]))
    model(image)
    assert seen == [mix_input_size]


def test_bare_net_dict_defaults_to_224_and_paths_are_read(tmp_path):
    _, (image,) = zoo.from_ofa_config(TINY_MBV3)
    assert tuple(image.shape) == (1, 3, 224, 224)
    path = tmp_path / "net.json"
    path.write_text(json.dumps({"image_size": 48, "net": TINY_PROXYLESS}))
    _, (image,) = zoo.from_ofa_config(str(path), batch_size=2)
    assert tuple(image.shape) == (2, 3, 48, 48)


def _broken(edit):
    net = copy.deepcopy(TINY_MBV3)
    edit(net)
    return net


@pytest.mark.parametrize(
    ("net", "message"),
    [
        (
            _broken(lambda n: n["blocks"][0]["mobile_inverted_conv"].update(act_func="hswish")),
            "'net.blocks[0].mobile_inverted_conv.act_func' is 'hswish'; known: relu, relu6, h_swish",
        ),
        (
            _broken(lambda n: n["blocks"][1]["mobile_inverted_conv"].pop("kernel_size")),
            "missing field 'net.blocks[1].mobile_inverted_conv.kernel_size'",
        ),
        (_broken(lambda n: n.pop("final_expand_layer")), "missing field 'net.final_expand_layer'"),
        (
            _broken(lambda n: n.update(name="EfficientNet")),
            "'net.name' is 'EfficientNet'; known: MobileNetV3",
        ),
        (
            _broken(lambda n: n["blocks"][1]["mobile_inverted_conv"].update(name="ZeroLayer")),
            "'net.blocks[1].mobile_inverted_conv.name' is 'ZeroLayer'",
        ),
        (
            _broken(lambda n: n["blocks"][1]["mobile_inverted_conv"].update(in_channels=12)),
            "'net.blocks[1].mobile_inverted_conv.in_channels' is 12 but the previous layer gives 8",
        ),
        (
            _broken(lambda n: n["first_conv"].update(out_channels=True)),
            "'net.first_conv.out_channels' must be int, got True",
        ),
        (
            _broken(lambda n: n["blocks"][1].update(shortcut=n["blocks"][0]["shortcut"])),
            "'net.blocks[1].shortcut' is an identity but the block maps 8 -> 16 channels at stride 2",
        ),
    ],
)
def test_malformed_config_names_the_field(net, message):
    with pytest.raises(InvalidInputError) as info:
        zoo.from_ofa_config(net)
    assert message in str(info.value)


def test_unreadable_file_is_invalid_input(tmp_path):
    with pytest.raises(InvalidInputError, match="cannot read OFA net config"):
        zoo.from_ofa_config(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        zoo.from_ofa_config(tmp_path / "bad.json")
