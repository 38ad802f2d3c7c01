import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hwlat.errors import InvalidInputError
from hwlat.nas import (
    NB201_OPS,
    NB201_SIZE,
    OFA_MBV3,
    OFA_MBV3_W12,
    nb201_arch,
    nb201_index,
    ofa_mbv3_config,
    parse_nb201,
    sample_nb201,
    sample_ofa_mbv3,
)

pytestmark = pytest.mark.export

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
NO_DATA = f"reference data {DATA} is absent (it lives beside the project, not in it)"
NOTE10 = (
    sorted((DATA / "ofa" / "net_configs").glob("note10_*.json"))
    if DATA.is_dir()
    else [pytest.param(None, marks=pytest.mark.skip(reason=NO_DATA))]
)
CONV_FIELDS = ("in_channels", "out_channels", "kernel_size", "stride", "expand_ratio",
               "mid_channels", "act_func", "use_se")


def valid_arch(**changes):
    arch = {"ks": [3] * 20, "e": [4] * 20, "d": [2] * 5, "r": 160}
    arch.update(changes)
    return arch


def block_summary(block):
    conv = block["mobile_inverted_conv"]
    return tuple(conv[f] for f in CONV_FIELDS) + (block["shortcut"] is not None,)


def recover_arch(cfg):
    """(space, arch) whose config should reproduce the published `cfg`'s blocks."""
    net = cfg["net"]
    space = OFA_MBV3 if net["first_conv"]["out_channels"] == OFA_MBV3.widths[0] else OFA_MBV3_W12
    ks, e, d = [3] * 20, [3] * 20, [0] * 5
    for block in net["blocks"][1:]:
        conv = block["mobile_inverted_conv"]
        s = space.stage_widths.index(conv["out_channels"])
        j = s * space.max_depth + d[s]
        ks[j], e[j] = conv["kernel_size"], conv["expand_ratio"]
        d[s] += 1
    # One published net (64 ms) runs at 260, beyond the sampled 128..224; blocks don't depend on it.
    r = cfg["image_size"] if cfg["image_size"] in space.resolutions else 224
    return space, {"ks": ks, "e": e, "d": d, "r": r}


# --- OFA MobileNetV3 --------------------------------------------------------------------------


@pytest.mark.parametrize("path", NOTE10, ids=lambda p: getattr(p, "stem", "absent"))
def test_ofa_config_reproduces_published_note10_nets(path):
    published = json.loads(path.read_text())
    space, arch = recover_arch(published)
    mine = ofa_mbv3_config(arch, width_mult=space.width_mult)
    assert [block_summary(b) for b in mine["net"]["blocks"]] == [
        block_summary(b) for b in published["net"]["blocks"]
    ]
    # Not only the blocks: the whole net config, field for field, as OFA writes it.
    assert mine["net"] == published["net"]
    if published["image_size"] in space.resolutions:
        assert mine["image_size"] == published["image_size"]


def test_ofa_space_matches_ofa_definition():
    assert OFA_MBV3.widths == (16, 16, 24, 40, 80, 112, 160, 960, 1280)
    assert OFA_MBV3.strides == (2, 2, 2, 1, 2)
    assert OFA_MBV3.se == (False, True, False, True, True)
    assert OFA_MBV3.resolutions == tuple(range(128, 225, 4))
    assert OFA_MBV3_W12.widths == (24, 24, 32, 48, 96, 136, 192, 1152, 1536)


def test_ofa_config_structure():
    arch = valid_arch(d=[4, 2, 3, 2, 4], ks=[7] * 20, e=[6] * 20, r=224)
    cfg = ofa_mbv3_config(arch)
    assert cfg["image_size"] == 224
    blocks = [b["mobile_inverted_conv"] for b in cfg["net"]["blocks"]]
    assert len(blocks) == 1 + 4 + 2 + 3 + 2 + 4
    assert blocks[0]["mid_channels"] is None and blocks[0]["expand_ratio"] == 1
    assert cfg["net"]["blocks"][0]["shortcut"] is not None
    first_of_stage = [blocks[i] for i in (1, 5, 7, 10, 12)]
    assert [b["stride"] for b in first_of_stage] == [2, 2, 2, 1, 2]
    assert [b["out_channels"] for b in first_of_stage] == [24, 40, 80, 112, 160]
    assert [b["mid_channels"] for b in first_of_stage] == [96, 144, 240, 480, 672]
    # Every non-first block of a stage keeps its width at stride 1: identity shortcut.
    for b, block in zip(blocks[1:], cfg["net"]["blocks"][1:], strict=True):
        assert (block["shortcut"] is not None) == (b["stride"] == 1 and
                                                  b["in_channels"] == b["out_channels"])
    assert cfg["net"]["feature_mix_layer"]["use_bn"] is False
    assert cfg["net"]["classifier"]["in_features"] == 1280


def test_ofa_ignores_entries_beyond_depth():
    a = valid_arch()
    b = valid_arch(ks=[3, 3, 7, 7] * 5, e=[4, 4, 6, 6] * 5)
    assert ofa_mbv3_config(a) == ofa_mbv3_config(b)


def test_ofa_sampler_is_seeded_and_valid():
    a = sample_ofa_mbv3(np.random.default_rng(7))
    assert a == sample_ofa_mbv3(np.random.default_rng(7))
    assert a != sample_ofa_mbv3(np.random.default_rng(8))
    rng = np.random.default_rng(0)
    for _ in range(50):
        arch = sample_ofa_mbv3(rng)
        assert len(arch["ks"]) == 20 and len(arch["e"]) == 20 and len(arch["d"]) == 5
        assert all(type(v) is int for key in ("ks", "e", "d") for v in arch[key])
        assert arch["r"] in OFA_MBV3.resolutions
        ofa_mbv3_config(arch)


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"ks": [3] * 19}, ["'ks'", "19", "20"]),
        ({"e": [4] * 21}, ["'e'", "21", "20"]),
        ({"d": [2] * 4}, ["'d'", "4", "5"]),
        ({"ks": [3] * 5 + [9] + [3] * 14}, ["'ks[5]'", "9", "3, 5, 7"]),
        ({"e": [5] + [4] * 19}, ["'e[0]'", "5", "3, 4, 6"]),
        ({"d": [2, 1, 2, 2, 2]}, ["'d[1]'", "1", "2, 3, 4"]),
        ({"r": 130}, ["'r'", "130", "128, 132, ..., 224"]),
        ({"r": 228}, ["'r'", "228", "128, 132, ..., 224"]),
        ({"r": 160.0}, ["'r'", "160.0"]),
        ({"ks": [True] * 20}, ["'ks[0]'", "True"]),
        ({"ks": "3" * 20}, ["'ks'", "list of 20 ints"]),
        ({"image_size": 160}, ["unknown 'image_size'"]),
    ],
)
def test_ofa_arch_validation(changes, words):
    with pytest.raises(InvalidInputError) as err:
        ofa_mbv3_config(valid_arch(**changes))
    for word in words:
        assert word in str(err.value)


def test_ofa_arch_validation_missing_key_and_width():
    arch = valid_arch()
    del arch["r"]
    with pytest.raises(InvalidInputError, match="missing 'r'"):
        ofa_mbv3_config(arch)
    with pytest.raises(InvalidInputError, match="must be a dict"):
        ofa_mbv3_config([3] * 20)
    with pytest.raises(InvalidInputError, match="width_mult is 1.1; allowed: 1.0, 1.2"):
        ofa_mbv3_config(valid_arch(), width_mult=1.1)


def test_ofa_accepts_numpy_ints():
    arch = valid_arch(ks=np.full(20, 5), d=np.array([2, 3, 4, 2, 3]), r=np.int64(176))
    assert ofa_mbv3_config(arch)["image_size"] == 176


def test_sampled_ofa_nets_build_and_run():
    import torch

    import hwlat.zoo as zoo

    rng = np.random.default_rng(0)
    for _ in range(2):
        cfg = ofa_mbv3_config(sample_ofa_mbv3(rng))
        model, (x,) = zoo.from_ofa_config(cfg)
        r = cfg["image_size"]
        assert x.shape == (1, 3, r, r)
        with torch.no_grad():
            y = model(x)
        assert y.shape == (1, 1000) and torch.isfinite(y).all()


def test_import_does_not_load_torch():
    code = "import sys, hwlat.nas; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- NAS-Bench-201 ----------------------------------------------------------------------------


def test_nb201_bijection_round_trips_every_cell():
    archs = [nb201_arch(i) for i in range(NB201_SIZE)]
    assert len(set(archs)) == NB201_SIZE == 15_625
    assert [nb201_index(a) for a in archs] == list(range(NB201_SIZE))
    assert archs[0] == "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    assert nb201_arch(NB201_SIZE - 1) == "|avg_pool_3x3~0|+" + \
        "|avg_pool_3x3~0|avg_pool_3x3~1|+|avg_pool_3x3~0|avg_pool_3x3~1|avg_pool_3x3~2|"
    assert nb201_arch(1) == "|none~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|"


@pytest.mark.skipif(not DATA.is_dir(), reason=NO_DATA)
def test_nb201_covers_the_measured_cells():
    import csv

    with open(DATA / "nb201" / "pixel3.csv") as f:
        measured = {row["arch"] for row in csv.DictReader(f)}
    assert measured == {nb201_arch(i) for i in range(NB201_SIZE)}


def test_nb201_sampler_is_seeded_and_uniformish():
    a = [sample_nb201(np.random.default_rng(3)) for _ in range(2)]
    assert a[0] == a[1]
    rng = np.random.default_rng(0)
    draws = [nb201_index(sample_nb201(rng)) for _ in range(2000)]
    assert len(set(draws)) > 1800  # 2000 uniform draws from 15,625 repeat ~125 times
    assert 0.4 < np.mean(draws) / NB201_SIZE < 0.6


def test_sampled_nb201_cells_build():
    import hwlat.zoo as zoo

    rng = np.random.default_rng(0)
    for _ in range(3):
        arch = sample_nb201(rng)
        model, (x,) = zoo.from_nb201(arch)
        assert x.shape == (1, 3, 32, 32)
        assert model(x).shape == (1, 10)
    # The zoo's parser agrees with ours on every op.
    from hwlat.zoo.nb201 import parse_cell

    for i in range(0, NB201_SIZE, 97):
        arch = nb201_arch(i)
        assert tuple(op for node in parse_cell(arch) for op in node) == parse_nb201(arch)


@pytest.mark.parametrize(
    "arch, words",
    [
        ("|conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|",
         ["'conv_3x3'", "'conv_3x3~0'", *NB201_OPS]),
        ("|none~0|+|none~0|none~1|+|none~0|none~1|max_pool~2|", ["'max_pool'", "avg_pool_3x3"]),
        ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", ["'none~1'", "'none~0'"]),
        ("|none|+|none~0|none~1|+|none~0|none~1|none~2|", ["'none'", "'none~0'"]),
        ("|none~0|+|none~0|none~1|", ["2", "expected 3"]),
        ("|none~0|+|none~0|+|none~0|none~1|none~2|", ["node 2", "2 edge(s)"]),
        ("none~0+|none~0|none~1|+|none~0|none~1|none~2|", ["node 1"]),
        (None, ["must be a string"]),
    ],
)
def test_nb201_validation(arch, words):
    with pytest.raises(InvalidInputError) as err:
        nb201_index(arch)
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize("index", [-1, NB201_SIZE, 1.0, True, "3"])
def test_nb201_arch_rejects_bad_index(index):
    with pytest.raises(InvalidInputError, match="0..15624"):
        nb201_arch(index)
