"""OFA MobileNetV3 kernel keys derived without export, held to real exports; the dense table held
to hwlat's normal prediction on the same exported graphs."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from hwlat.errors import InvalidInputError
from hwlat.graph import fuse, load
from hwlat.lut import TableStore
from hwlat.lut.predict import predict
from hwlat.nas import ofa_mbv3_config, sample_ofa_mbv3
from hwlat.nas.ofa_lut import (
    OfaLatencyTable,
    OfaTableIncomplete,
    ofa_mbv3_kernels,
)
from tests.helpers.ofa_tables import DEVICE, synthetic_ms, synthetic_store

pytestmark = pytest.mark.export


def _arch(r: int, d: list[int], k_shift: int, e_shift: int) -> dict:
    return {"ks": [(3, 5, 7)[(j + k_shift) % 3] for j in range(20)],
            "e": [(3, 4, 6)[(j // 2 + e_shift) % 3] for j in range(20)], "d": d, "r": r}


# resolutions 128..224 (132 and 196 give odd feature maps), depths 2/3/4, every k and e in
# SE and plain stages, and two archs drawn as OFA draws them
ARCHS = [
    _arch(128, [2, 2, 2, 2, 2], 0, 0),
    _arch(132, [4, 4, 4, 4, 4], 1, 1),
    _arch(224, [2, 3, 4, 2, 3], 2, 2),
    _arch(196, [4, 2, 3, 4, 2], 0, 1),
    sample_ofa_mbv3(7) | {"r": 128},
    sample_ofa_mbv3(11),
]
RESOLUTIONS = tuple(sorted({a["r"] for a in ARCHS}))


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """(arch, ONNX path, graph) of every arch in ARCHS, exported once per session."""
    from hwlat.onnx_export import export
    from hwlat.zoo import from_ofa_config

    folder = tmp_path_factory.mktemp("ofa-export")
    out = []
    for n, arch in enumerate(ARCHS):
        path = folder / f"arch{n}.onnx"
        model, inputs = from_ofa_config(ofa_mbv3_config(arch))
        export(model, inputs, path, compare=False)
        out.append((arch, path, load(path)))
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with synthetic_store(tmp_path_factory.mktemp("lut") / "t.sqlite", RESOLUTIONS) as s:
        yield s


@pytest.fixture(scope="module")
def table(store):
    return OfaLatencyTable(store, DEVICE, resolutions=RESOLUTIONS)


def test_archs_cover_the_choices():
    active = [(a["ks"][j], a["e"][j], a["d"][j // 4]) for a in ARCHS for j in range(20)
              if j % 4 < a["d"][j // 4]]
    assert {k for k, _, _ in active} == {3, 5, 7} and {e for _, e, _ in active} == {3, 4, 6}
    assert {d for _, _, d in active} == {2, 3, 4}


@pytest.mark.parametrize("n", range(len(ARCHS)))
def test_derived_keys_equal_the_exported_kernels(exported, n):
    arch, _, g = exported[n]
    derived = Counter(k.text() for k in ofa_mbv3_kernels(arch))
    cut = Counter(k.key.text() for k in fuse(g))
    assert derived == cut, (
        f"only derived: {sorted((derived - cut).elements())[:4]}; "
        f"only exported: {sorted((cut - derived).elements())[:4]}"
    )


@pytest.mark.parametrize("n", [0, 2])
def test_under_tvm_cpu_rules_keys_and_table_follow_the_export(exported, tmp_path, n):
    """cpu-tvm's kernel boundaries (a MobileNet block's convs as one kernel from 28x28 maps up)
    reach the derived keys and the dense table."""
    arch, _, g = exported[n]
    derived = Counter(k.text() for k in ofa_mbv3_kernels(arch, fusion="tvm-cpu"))
    cut = Counter(k.key.text() for k in fuse(g, "tvm-cpu"))
    assert derived == cut
    blocks = [t for t in derived.elements() if t.split("|")[1].count("Conv") > 1]
    assert blocks and len(derived) < len(Counter(k.text() for k in ofa_mbv3_kernels(arch)))
    with synthetic_store(tmp_path / "t.sqlite", (arch["r"],), fusion="tvm-cpu") as s:
        table = OfaLatencyTable(s, DEVICE, resolutions=(arch["r"],), fusion="tvm-cpu")
        want = predict(g, fuse(g, "tvm-cpu"), s, DEVICE, correct=False).kernel_sum_ms
        assert table.latency_one(arch) == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("n", range(len(ARCHS)))
def test_table_equals_hwlat_prediction(exported, store, table, n):
    arch, _, g = exported[n]
    pred = predict(g, fuse(g), store, DEVICE, correct=False)
    assert pred.estimated_share == 0.0
    want = pred.kernel_sum_ms
    assert table.latency_one(arch) == pytest.approx(want, rel=1e-9)
    assert table.latency(table.encode([arch]))[0] == pytest.approx(want, rel=1e-9)


def test_missing_keys_raise_or_are_estimated_as_predict_estimates_them(exported, tmp_path):
    def drop(text):  # every 7x7 depthwise conv
        return "x1x7x7]" in text

    with synthetic_store(tmp_path / "t.sqlite", RESOLUTIONS, drop) as partial:
        with pytest.raises(OfaTableIncomplete) as e:
            OfaLatencyTable(partial, DEVICE, resolutions=RESOLUTIONS)
        assert isinstance(e.value, LookupError) and "x1x7x7" in str(e.value)
        assert f"lacks {len(e.value.missing)} of the {e.value.total} kernel keys" in str(e.value)
        table = OfaLatencyTable(partial, DEVICE, resolutions=RESOLUTIONS, estimate=True)
        assert table.estimated == len(e.value.missing) > 0
        for arch, _, g in exported:
            pred = predict(g, fuse(g), partial, DEVICE, correct=False)
            assert 0 < pred.estimated_share < 1
            assert table.latency_one(arch) == pytest.approx(pred.kernel_sum_ms, rel=1e-9)


def test_batch_equals_one_by_one_and_the_sum_over_derived_keys(table):
    rng = np.random.default_rng(0)
    archs = [sample_ofa_mbv3(rng) | {"r": int(rng.choice(RESOLUTIONS))} for _ in range(200)]
    batch = table.latency(table.encode(archs))
    one = np.array([table.latency_one(a) for a in archs])
    by_key = np.array([sum(synthetic_ms(k.text()) for k in ofa_mbv3_kernels(a)) for a in archs])
    np.testing.assert_allclose(batch, one, rtol=1e-12)
    np.testing.assert_allclose(batch, by_key, rtol=1e-12)


def test_sample_decode_encode_round_trip(table):
    enc = table.sample(3000, rng=1)
    archs = table.decode(enc)
    again = table.encode(archs)
    for a, b in zip(enc, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert {a["r"] for a in archs} == set(RESOLUTIONS)
    np.testing.assert_allclose(table.latency(enc)[:50], [table.latency_one(a) for a in archs[:50]],
                               rtol=1e-12)


def test_bad_archs_are_named(table):
    good = ARCHS[0]
    with pytest.raises(InvalidInputError, match=r"archs\[1\].*'ks\[3\]' is 4"):
        table.encode([good, good | {"ks": good["ks"][:3] + [4] + good["ks"][4:]}])
    with pytest.raises(InvalidInputError, match=r"archs\[0\]: resolution 140 is not in this table"):
        table.encode([good | {"r": 140}])
    with pytest.raises(InvalidInputError, match=r"'d\[0\]' is 5"):
        table.latency_one(good | {"d": [5, 2, 2, 2, 2]})
    with pytest.raises(InvalidInputError, match="'e' has 19 entries"):
        table.latency_one(good | {"e": good["e"][:19]})
    with pytest.raises(InvalidInputError, match="list of arch dicts"):
        table.encode(good)
    with pytest.raises(InvalidInputError, match="resolutions"):
        OfaLatencyTable(None, DEVICE, resolutions=(130,))
    assert table.latency(table.encode([])).shape == (0,)


@pytest.mark.slow
def test_real_profile_on_cpu_ort(exported, tmp_path):
    """Two archs profiled on onnxruntime: the table (the rest of the space estimated) gives what
    hwlat's prediction gives for their exported graphs."""
    from hwlat.devices import load_device
    from hwlat.runners import get_runner
    from hwlat.runners.profile import plan, profile

    device = load_device("cpu-ort")
    runner = get_runner(device)
    pairs = [(a, p, g) for a, p, g in exported if a["r"] == 128]
    assert len(pairs) == 2
    with TableStore(tmp_path / "t.sqlite") as s:
        profile(plan([p for _, p, _ in pairs], device, runner, s), device, runner, s)
        table = OfaLatencyTable(s, "cpu-ort", resolutions=(128,), estimate=True)
        assert table.estimated > 0
        for arch, _, g in pairs:
            pred = predict(g, fuse(g), s, "cpu-ort", correct=False)
            assert pred.estimated_share == 0.0
            assert table.latency_one(arch) == pytest.approx(pred.kernel_sum_ms, rel=1e-9)
