"""Once-for-All latency tables: the YAML form, the key grammar, import/export, and OFA's sum checked
against an independent computation from the published Note10 tables."""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import pytest

from hwlat.errors import HwlatError, InvalidInputError
from hwlat.lut import TableError, TableStore
from hwlat.lut.ofa import (
    OfaKeyMissing,
    OfaLayer,
    export_ofa_dir,
    import_ofa_dir,
    ofa_network_keys,
    parse_ofa_key,
    predict_ofa,
    read_ofa_yaml,
    write_ofa_yaml,
)
from tests.helpers.entries import entry

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
LUT = DATA / "ofa" / "note10_lut"
CONFIGS = DATA / "ofa" / "net_configs"
RESOLUTIONS = (160, 176, 192, 208, 224)
NOTE10 = sorted(p.stem for p in CONFIGS.glob("note10_*.json")) if CONFIGS.is_dir() else []
# the Note10 tables hold OFA's width-1.2 supernet (stem 24) at these five resolutions
COVERED = {"note10_lat-30ms_top1-78.4_finetune-75"}
needs_data = pytest.mark.skipif(
    not LUT.is_dir(), reason=f"reference data {LUT} is absent (a clone without ../shared)"
)

BLOCK = "expanded_conv-input:112x112x24-output:56x56x32-expand:144-kernel:3-stride:2-idskip:0-se:0-hs:0"
GOOD = {
    "Conv-input:224x224x3-output:112x112x24": (500, 0.994418, 0.01726798413249215),
    BLOCK: (54, 4.812240740740741, 0.08956353738593026),
    "Logits-input:1x1x1536-output:1000": (500, 0.669412, 1e-05),
}


# --- an independent oracle: plain f-strings over the config and a minimal line parser

def oracle_keys(config: dict) -> list[str]:
    r, net = config["image_size"], config["net"]
    s = (r + 1) // 2
    keys = [f"Conv-input:{r}x{r}x3-output:{s}x{s}x{net['first_conv']['out_channels']}"]
    for b in net["blocks"]:
        c = b["mobile_inverted_conv"]
        o = (s - 1) // c["stride"] + 1
        mid = c["mid_channels"] or c["in_channels"] * c["expand_ratio"]
        keys.append(
            f"expanded_conv-input:{s}x{s}x{c['in_channels']}-output:{o}x{o}x{c['out_channels']}"
            f"-expand:{mid}-kernel:{c['kernel_size']}-stride:{c['stride']}"
            f"-idskip:{int(b['shortcut'] is not None)}-se:{int(c['use_se'])}"
            f"-hs:{int(c['act_func'] == 'h_swish')}"
        )
        s = o
    fe, fm, cl = net["final_expand_layer"], net["feature_mix_layer"], net["classifier"]
    return keys + [
        f"Conv_1-input:{s}x{s}x{fe['in_channels']}-output:{s}x{s}x{fe['out_channels']}",
        f"AvgPool2D-input:{s}x{s}x{fe['out_channels']}-output:1x1x{fe['out_channels']}",
        f"Conv_2-input:1x1x{fm['in_channels']}-output:1x1x{fm['out_channels']}",
        f"Logits-input:1x1x{cl['in_features']}-output:{cl['out_features']}",
    ]


def oracle_means(path: Path) -> dict[str, float]:
    means, key = {}, None
    for line in path.read_text().splitlines():
        if line.startswith("  mean:"):
            means[key] = float(line.split(":", 1)[1])
        elif line and not line.startswith(" "):
            key = line[:-1]
    return means


@pytest.fixture(scope="module")
def note10(tmp_path_factory):
    if not LUT.is_dir():
        pytest.skip(f"reference data {LUT} is absent (a clone without ../shared)")
    store = TableStore(tmp_path_factory.mktemp("ofa") / "t.sqlite")
    assert import_ofa_dir(store, LUT, "note10") == 96 * len(RESOLUTIONS)
    yield store
    store.close()


def _config(stem: str) -> dict:
    return json.loads((CONFIGS / f"{stem}.json").read_text())


# --- the shipped tables

@needs_data
@pytest.mark.parametrize("r", RESOLUTIONS)
def test_shipped_yaml_parses_and_keys_round_trip(r):
    path = LUT / f"{r}_lookup_table.yaml"
    table = read_ofa_yaml(path)
    assert len(table) == 96
    assert {k: mean for k, (_, mean, _) in table.items()} == oracle_means(path)
    for key in table:
        assert parse_ofa_key(key).text() == key


@needs_data
def test_30ms_config_matches_independent_sum(note10):
    """THE acceptance check: OFA's sum for the 30 ms Note10 net, from our import, equals a sum of
    the file's 'mean' fields over keys built directly from the config."""
    config = _config("note10_lat-30ms_top1-78.4_finetune-75")
    keys = oracle_keys(config)
    means = oracle_means(LUT / f"{config['image_size']}_lookup_table.yaml")
    expected = sum(means[k] for k in keys)
    got = predict_ofa(note10, "note10", config)
    assert ofa_network_keys(config["net"], config["image_size"]) == keys
    assert [row.key for row in got.rows] == keys and len(keys) == 16 + 5
    assert math.isclose(got.latency_ms, expected, rel_tol=1e-6)
    assert 29.0 < got.latency_ms < 31.0  # the latency the OFA authors targeted


@needs_data
@pytest.mark.parametrize("stem", NOTE10)
def test_note10_configs_summed_or_refused(note10, stem):
    config = _config(stem)
    r, keys = config["image_size"], oracle_keys(config)
    assert ofa_network_keys(config["net"], r) == keys
    path = LUT / f"{r}_lookup_table.yaml"
    means = oracle_means(path) if path.exists() else {}
    missing = [k for k in keys if k not in means]
    assert (not missing) == (stem in COVERED)
    if not missing:
        got = predict_ofa(note10, "note10", config).latency_ms
        assert math.isclose(got, sum(means[k] for k in keys), rel_tol=1e-6)
        return
    with pytest.raises(OfaKeyMissing, match=f"at resolution {r} ") as info:
        predict_ofa(note10, "note10", config)
    assert info.value.key == missing[0] and missing[0] in str(info.value)
    assert info.value.resolutions == list(RESOLUTIONS)
    assert "160, 176, 192, 208, 224" in str(info.value)
    assert isinstance(info.value, LookupError) and isinstance(info.value, HwlatError)


@needs_data
def test_proxyless_and_unknown_layers_refused():
    with pytest.raises(InvalidInputError, match="net.name='ProxylessNASNets'"):
        ofa_network_keys(_config("1080ti_gpu64-27ms_top1-76.4_finetune-25")["net"], 188)
    net = _config("note10_lat-30ms_top1-78.4_finetune-75")["net"]
    cases = [
        (("blocks", 3, "mobile_inverted_conv", "name"), "FancyConv",
         r"net\.blocks\[3\]\.mobile_inverted_conv\.name='FancyConv'"),
        (("blocks", 2, "shortcut", "name"), "ConvLayer", r"net\.blocks\[2\]\.shortcut\.name"),
        (("classifier", "name"), "MLP", r"net\.classifier\.name='MLP'"),
        (("blocks", 5, "mobile_inverted_conv", "act_func"), "gelu", r"act_func='gelu'"),
        (("blocks", 5, "mobile_inverted_conv", "in_channels"), 40,
         r"net\.blocks\[5\]\.mobile_inverted_conv\.in_channels=40, but the layer before gives 48"),
    ]
    for path, value, message in cases:
        bad = copy.deepcopy(net)
        *parents, last = path
        target = bad
        for p in parents:
            target = target[p]
        target[last] = value
        with pytest.raises(InvalidInputError, match=message):
            ofa_network_keys(bad, 224)
    with pytest.raises(InvalidInputError, match="'net' object"):
        ofa_network_keys({"image_size": 224, "net": net}, 224)


def test_missing_device_says_how_to_import(tmp_path):
    net = {"name": "MobileNetV3"}  # never walked past the name: the config is refused first
    with TableStore(tmp_path / "t.sqlite") as store:
        with pytest.raises(InvalidInputError, match="image_size"):
            predict_ofa(store, "note10", {"net": net})
        write_ofa_yaml(tmp_path / "224_lookup_table.yaml", GOOD)
        import_ofa_dir(store, tmp_path, "note10")
        config = {"image_size": 224, "net": _tiny_net()}
        with pytest.raises(OfaKeyMissing, match="device 'pixel' has no OFA entries"):
            predict_ofa(store, "pixel", config)
        with pytest.raises(OfaKeyMissing, match=r"'expanded_conv-input:112x112x24-output:112x112x24"):
            predict_ofa(store, "note10", config)


def _tiny_net() -> dict:
    conv = dict(name="ConvLayer", in_channels=3, out_channels=24, stride=2)
    block = dict(name="MBInvertedConvLayer", in_channels=24, out_channels=24, kernel_size=3,
                 stride=1, expand_ratio=1, mid_channels=None, act_func="relu", use_se=False)
    return {
        "name": "MobileNetV3",
        "first_conv": conv,
        "blocks": [{"name": "MobileInvertedResidualBlock", "mobile_inverted_conv": block,
                    "shortcut": {"name": "IdentityLayer"}}],
        "final_expand_layer": dict(name="ConvLayer", in_channels=24, out_channels=1152),
        "feature_mix_layer": dict(name="ConvLayer", in_channels=1152, out_channels=1536),
        "classifier": dict(name="LinearLayer", in_features=1536, out_features=1000),
    }


def test_tiny_net_keys():
    """An expand-1 block's 'expand' is its input width; feature maps follow OFA's (f-1)//s+1."""
    assert ofa_network_keys(_tiny_net(), 225) == [
        "Conv-input:225x225x3-output:113x113x24",
        "expanded_conv-input:113x113x24-output:113x113x24-expand:24-kernel:3-stride:1-idskip:1-se:0-hs:0",
        "Conv_1-input:113x113x24-output:113x113x1152",
        "AvgPool2D-input:113x113x1152-output:1x1x1152",
        "Conv_2-input:1x1x1152-output:1x1x1536",
        "Logits-input:1x1x1536-output:1000",
    ]


# --- the key grammar

def test_key_fields():
    k = parse_ofa_key(BLOCK)
    assert (k.layer, k.input, k.output) == (OfaLayer.BLOCK, (112, 112, 24), (56, 56, 32))
    assert (k.expand, k.kernel, k.stride, k.idskip, k.se, k.hs) == (144, 3, 2, 0, 0, 0)
    logits = parse_ofa_key("Logits-input:1x1x1536-output:1000")
    assert logits.output == (1000,) and logits.text() == "Logits-input:1x1x1536-output:1000"


@pytest.mark.parametrize("key", [
    "Conv-input:224x224x3",
    "Conv-input:224x224x3-output:112x112x24-expand:24",
    "conv-input:224x224x3-output:112x112x24",
    "Conv-input:224x224x0-output:112x112x24",
    "Logits-input:1x1x1536-output:1x1x1000",
    "Conv_3-input:1x1x1536-output:1x1x1000",
    BLOCK.replace("expand:144", "expand:0144"),
    BLOCK.replace("idskip:0", "idskip:2"),
    BLOCK.replace("-se:0", ""),
    BLOCK + "-extra:1",
    BLOCK + " ",
])
def test_malformed_keys_refused(key):
    with pytest.raises(InvalidInputError, match="malformed OFA key") as info:
        parse_ofa_key(key)
    assert repr(key) in str(info.value)


# --- the YAML form and import

def _yaml(entries: dict) -> str:
    return "".join(
        f"{k}:\n  count: {c}\n  mean: {m!r}\n  std: {s!r}\n" for k, (c, m, s) in entries.items()
    )


def test_write_read_round_trip_is_exact(tmp_path):
    entries = {**GOOD, "Conv_2-input:1x1x1152-output:1x1x1536": (1, 1e16, 0.1 + 0.2)}
    assert write_ofa_yaml(tmp_path / "224_lookup_table.yaml", entries) == 4
    text = (tmp_path / "224_lookup_table.yaml").read_text()
    assert "  std: 1.0e-05\n" in text and "  mean: 1.0e+16\n" in text  # floats PyYAML reads as floats
    assert read_ofa_yaml(tmp_path / "224_lookup_table.yaml") == entries
    assert [p.name for p in tmp_path.iterdir()] == ["224_lookup_table.yaml"]


BAD_FILES = {
    "malformed key": (_yaml(GOOD) + _yaml({"Conv-input:224x224x3-output:112x112": (5, 1.0, 0.1)}),
                      "malformed key 'Conv-input:224x224x3-output:112x112'"),
    "missing mean": (_yaml(GOOD).replace("  mean: 4.812240740740741\n", ""),
                     f"key '{BLOCK}' has no mean"),
    "non-numeric mean": (_yaml(GOOD).replace("mean: 4.812240740740741", "mean: fast"),
                         f"key '{BLOCK}': mean 'fast' is not a number"),
    "nan mean": (_yaml(GOOD).replace("mean: 4.812240740740741", "mean: .nan"), "mean '.nan'"),
    "duplicate key": (_yaml(GOOD) + _yaml({BLOCK: (1, 1.0, 0.0)}), f"duplicate key '{BLOCK}'"),
    "unknown field": (_yaml(GOOD) .replace("  count: 54\n", "  count: 54\n  median: 3\n"),
                      "'  median: 3' is not 'count', 'mean' or 'std'"),
    "zero count": (_yaml(GOOD).replace("count: 54", "count: 0"), "count '0'"),
    "flow form": ("{" + BLOCK + ": {count: 1, mean: 1.0, std: 0.0}}\n", "is neither 'KEY:'"),
    "empty": ("\n", "holds no OFA latency entries"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_file_refused_and_table_unchanged(tmp_path, case):
    text, message = BAD_FILES[case]
    folder = tmp_path / "lut"
    folder.mkdir()
    write_ofa_yaml(folder / "160_lookup_table.yaml",
                   {k.replace("224x224", "160x160"): v for k, v in GOOD.items()})
    (folder / "224_lookup_table.yaml").write_text(text)
    with TableStore(tmp_path / "t.sqlite") as store:
        store.put_many([entry(), entry("ofa:224:" + BLOCK, device="note10")])
        before = store.entries()
        with pytest.raises(TableError) as info:
            import_ofa_dir(store, folder, "note10")
        assert message in str(info.value) and "224_lookup_table.yaml" in str(info.value)
        assert store.entries() == before


def test_errors_quote_at_most_three(tmp_path):
    bad = {f"Conv-input:{i}x{i}x3": (1, 1.0, 0.0) for i in range(1, 6)}
    (tmp_path / "x.yaml").write_text(_yaml(bad))
    with pytest.raises(TableError, match=r"and 2 more$") as info:
        read_ofa_yaml(tmp_path / "x.yaml")
    assert str(info.value).count("malformed key") == 3


def test_import_folder_checks(tmp_path):
    with TableStore(tmp_path / "t.sqlite") as store:
        with pytest.raises(TableError, match="no such folder"):
            import_ofa_dir(store, tmp_path / "nope", "note10")
        (tmp_path / "empty").mkdir()
        with pytest.raises(TableError, match="holds no <resolution>_lookup_table.yaml"):
            import_ofa_dir(store, tmp_path / "empty", "note10")
        (tmp_path / "lut").mkdir()
        write_ofa_yaml(tmp_path / "lut" / "192_lookup_table.yaml", GOOD)  # 224 content
        with pytest.raises(TableError, match="is not at resolution 192"):
            import_ofa_dir(store, tmp_path / "lut", "note10")
        assert store.entries() == []


def test_imported_entry_fields(tmp_path):
    write_ofa_yaml(tmp_path / "224_lookup_table.yaml", GOOD)
    with TableStore(tmp_path / "t.sqlite") as store:
        assert import_ofa_dir(store, tmp_path, "note10") == 3
        e = store.get("note10", "ofa:224:" + BLOCK)
    assert (e.kind, e.repeats, e.threads, e.cpu, e.pipeline) == (
        "ofa_block", 54, 1, "imported", "ofa-import")
    assert json.loads(e.versions) == {"source": "ofa-yaml"}
    assert e.median_ms == 4.812240740740741
    assert math.isclose(e.q3_ms - e.median_ms, 0.6745 * 0.08956353738593026)
    assert math.isclose(e.cv, 0.08956353738593026 / 4.812240740740741)
    assert e.measured_at.endswith("+00:00")


# --- export

def _round_trip_means(src: Path, tmp_path: Path) -> None:
    with TableStore(tmp_path / "a.sqlite") as a, TableStore(tmp_path / "b.sqlite") as b:
        n = import_ofa_dir(a, src, "dev")
        assert export_ofa_dir(a, tmp_path / "out", "dev") == n
        assert import_ofa_dir(b, tmp_path / "out", "dev") == n
        got = {e.key: (e.median_ms, e.repeats) for e in b.entries("dev")}
        assert got == {e.key: (e.median_ms, e.repeats) for e in a.entries("dev")}
    for path in sorted(src.glob("*_lookup_table.yaml")):
        before, after = read_ofa_yaml(path), read_ofa_yaml(tmp_path / "out" / path.name)
        assert {k: v[:2] for k, v in after.items()} == {k: v[:2] for k, v in before.items()}
        for k, (_, mean, std) in before.items():
            if mean - 0.6745 * std >= 0:  # std is exact up to rounding unless q1 was clamped
                assert math.isclose(after[k][2], std, rel_tol=1e-9)


def test_export_import_round_trip(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_ofa_yaml(src / "224_lookup_table.yaml", GOOD)
    write_ofa_yaml(src / "160_lookup_table.yaml",
                   {k.replace("224x224", "160x160"): (c, m / 3, s) for k, (c, m, s) in GOOD.items()})
    _round_trip_means(src, tmp_path)


@needs_data
def test_note10_export_import_round_trip(tmp_path):
    _round_trip_means(LUT, tmp_path)


def test_export_writes_nothing_on_failure(tmp_path):
    out = tmp_path / "out"
    with TableStore(tmp_path / "t.sqlite") as store:
        with pytest.raises(TableError, match="no OFA entries"):
            export_ofa_dir(store, out, "note10")
        good = [entry(f"ofa:{r}:{k.replace('224x224', f'{r}x{r}')}", device="note10")
                for r in (160, 224) for k in GOOD]
        store.put_many([*good, entry("ofa:208:garbage", device="note10")])
        with pytest.raises(TableError, match="malformed OFA keys 'ofa:208:garbage'"):
            export_ofa_dir(store, out, "note10")
        assert not out.exists()

        store.put_many([entry("ofa:208:garbage", device="other")])
        store.delete_device("note10")
        store.put_many(good)
        out.mkdir()
        (out / "160_lookup_table.yaml").write_text("old\n")
        (out / "224_lookup_table.yaml").mkdir()  # in the way of the second file
        with pytest.raises(TableError, match="224_lookup_table.yaml"):
            export_ofa_dir(store, out, "note10")
        assert (out / "160_lookup_table.yaml").read_text() == "old\n"
        assert sorted(p.name for p in out.iterdir()) == ["160_lookup_table.yaml",
                                                          "224_lookup_table.yaml"]
        shutil.rmtree(out / "224_lookup_table.yaml")
        assert export_ofa_dir(store, out, "note10") == 6
        assert sorted(p.name for p in out.iterdir()) == ["160_lookup_table.yaml",
                                                          "224_lookup_table.yaml"]


@needs_data
def test_cli_import_then_nas_predict_equals_ofa_rule(tmp_path, hwlat_cli):
    import json as _json

    run = lambda *a: hwlat_cli(*a, timeout=120)  # noqa: E731
    r = run("lut", "import", "--format", "ofa", str(DATA / "ofa" / "note10_lut"), "--device", "note10")
    assert r.returncode == 0, r.stderr
    stem = "note10_lat-30ms_top1-78.4_finetune-75"
    r = run("nas", "predict", "--space", "ofa-mbv3", "--device", "note10", "--config",
            str(DATA / "ofa" / "net_configs" / f"{stem}.json"), "--json")
    assert r.returncode == 0, r.stderr
    cfg = _config(stem)
    means = oracle_means(DATA / "ofa" / "note10_lut" / f"{cfg['image_size']}_lookup_table.yaml")
    want = sum(means[k] for k in oracle_keys(cfg))
    assert _json.loads(r.stdout)["latency_ms"] == pytest.approx(want, rel=1e-6)
    r = run("lut", "import", "--format", "ofa", str(tmp_path / "nowhere"), "--device", "note10")
    assert r.returncode == 2 and r.stderr.startswith("error: ")
