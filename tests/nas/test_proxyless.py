"""ProxylessNAS mobile: archs validated with the field named, derived kernel keys equal to the
exported model's, a dense table equal to `predict`'s kernel sum, and the expected latency's
gradient against finite differences."""

from __future__ import annotations

import hashlib
import itertools

import numpy as np
import pytest
import torch

from hwlat.errors import InvalidInputError
from hwlat.graph import fuse, load
from hwlat.lut import Entry, TableStore
from hwlat.lut.predict import predict
from hwlat.nas import OfaTableIncomplete
from hwlat.nas.expected import ProxylessExpectedLatency
from hwlat.nas.ofa_lut import key_cost
from hwlat.nas.proxyless import (
    PROXYLESS_MOBILE as SPACE,
)
from hwlat.nas.proxyless import (
    ProxylessLatencyTable,
    block_kernels,
    fixed_kernels,
    proxyless_config,
    proxyless_kernels,
)

pytestmark = pytest.mark.export

DEVICE = "synthetic"
AT = "2026-01-01T00:00:00+00:00"


def _every_choice(r: int) -> list[dict]:
    """Archs that together take every choice at every block (zero where allowed)."""
    out = []
    for shift in range(len(SPACE.choices)):
        ops = []
        for j in range(SPACE.n_blocks):
            allowed = SPACE.choices if SPACE.skippable(j) else SPACE.choices[:-1]
            ops.append(allowed[(j + shift) % len(allowed)])
        out.append({"ops": ops, "r": r})
    return out


ARCHS = [_every_choice(128)[0], _every_choice(160)[3], SPACE.sample(5)]


def ms_of(text: str) -> float:
    return (int(hashlib.blake2b(text.encode(), digest_size=3).hexdigest(), 16) + 1) * 1e-6


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from hwlat.onnx_export import export
    from hwlat.zoo import from_ofa_config

    folder = tmp_path_factory.mktemp("proxyless")
    out = []
    for n, arch in enumerate(ARCHS):
        path = folder / f"arch{n}.onnx"
        model, inputs = from_ofa_config(proxyless_config(arch))
        export(model, inputs, path, compare=False)
        out.append((arch, load(path)))
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    keys = set()
    for r in (128, 160, 224):
        keys |= set(fixed_kernels(r))
        keys |= {k for j in range(SPACE.n_blocks) for op in SPACE.choices
                 for k in block_kernels(r, j, op)}
    entries, feats = [], []
    for key in keys:
        text, c = key.text(), key_cost(key)
        entries.append(Entry(DEVICE, text, key.kind.value, ms_of(text), ms_of(text), ms_of(text),
                             0.0, 1, 1, "synthetic", "{}", "synthetic", AT))
        feats.append((text, key.kind.value, c.macs, c.bytes_read + c.bytes_written))
    with TableStore(tmp_path_factory.mktemp("lut") / "t.sqlite") as s:
        s.put_many(entries, feats)
        yield s


def test_every_choice_is_covered():
    for j in range(SPACE.n_blocks):
        taken = {a["ops"][j] for a in _every_choice(128)}
        assert taken == set(SPACE.choices if SPACE.skippable(j) else SPACE.choices[:-1])


@pytest.mark.parametrize("n", range(len(ARCHS)))
def test_derived_keys_equal_the_exported_kernels(exported, n):
    arch, graph = exported[n]
    assert [k.key.text() for k in fuse(graph)] == [k.text() for k in proxyless_kernels(arch)]


@pytest.mark.parametrize("n", range(len(ARCHS)))
def test_under_tvm_cpu_rules_derived_keys_equal_the_exported_kernels(exported, n):
    """cpu-tvm's kernel boundaries (a MobileNet block's convs as one kernel from 28x28 maps up)
    reach the derived keys."""
    arch, graph = exported[n]
    derived = [k.text() for k in proxyless_kernels(arch, fusion="tvm-cpu")]
    assert [k.key.text() for k in fuse(graph, "tvm-cpu")] == derived
    assert any(t.split("|")[1].count("Conv") > 1 for t in derived)


@pytest.mark.parametrize("n", range(len(ARCHS)))
def test_table_equals_hwlat_prediction(exported, store, n):
    arch, graph = exported[n]
    table = ProxylessLatencyTable(store, DEVICE, arch["r"])
    want = predict(graph, fuse(graph), store, DEVICE, correct=False).kernel_sum_ms
    assert table.latency_one(arch) == pytest.approx(want, rel=1e-9)


def test_batch_equals_one_by_one(store):
    table = ProxylessLatencyTable(store, DEVICE, 224)
    archs = [SPACE.sample(s) for s in range(50)]
    batch = table.latency(table.encode(archs))
    one = [sum(ms_of(k.text()) for k in proxyless_kernels(a)) for a in archs]
    np.testing.assert_allclose(batch, one, rtol=1e-9)


def test_missing_keys_raise_or_are_estimated(tmp_path):
    with TableStore(tmp_path / "t.sqlite") as s:
        with pytest.raises(OfaTableIncomplete, match="ProxylessNAS mobile"):
            ProxylessLatencyTable(s, DEVICE, 224)


def test_expected_latency_is_exact_and_its_gradient_matches_finite_differences(store):
    table = ProxylessLatencyTable(store, DEVICE, 224)
    rng = np.random.default_rng(0)
    logits = torch.tensor(rng.normal(size=table.block_ms.shape), dtype=torch.float64,
                          requires_grad=True)
    mask = torch.tensor([[c < 6 or SPACE.skippable(j) for c in range(7)]
                         for j in range(SPACE.n_blocks)])
    f = ProxylessExpectedLatency(table)

    def loss(x):
        return f(torch.softmax(x.masked_fill(~mask, -torch.inf), dim=1))

    value = loss(logits)
    value.backward()
    probs = torch.softmax(logits.detach().masked_fill(~mask, -torch.inf), dim=1).numpy()
    assert float(value.detach()) == pytest.approx(table.fixed_ms + float((probs * table.block_ms).sum()))
    eps = 1e-6
    for j, c in itertools.product((0, 6, 20), (0, 3, 6)):
        up, down = logits.detach().clone(), logits.detach().clone()
        up[j, c] += eps
        down[j, c] -= eps
        numeric = (float(loss(up)) - float(loss(down))) / (2 * eps)
        assert float(logits.grad[j, c]) == pytest.approx(numeric, rel=1e-5, abs=1e-10)
    with pytest.raises(InvalidInputError, match="shape"):
        f(torch.zeros(21, 6, dtype=torch.float64))


@pytest.mark.parametrize("arch, message", [
    ({"ops": ["k3_e3"] * 20}, "'ops' must list 21 block choices"),
    ({"ops": ["k9_e3"] + ["k3_e3"] * 20}, "'ops\\[0\\]' is 'k9_e3'; allowed: k3_e3"),
    ({"ops": ["zero"] + ["k3_e3"] * 20}, "stage's first"),
    ({"ops": ["k3_e3"] * 21, "r": 225}, "'r' is 225"),
    ({"ops": ["k3_e3"] * 21, "depth": 3}, "unknown field"),
    ([1, 2], "is a dict"),
])
def test_bad_archs_name_the_field(arch, message):
    with pytest.raises(InvalidInputError, match=message):
        proxyless_kernels(arch)


def test_cli_predicts_one_arch(store, tmp_path):
    import json

    from typer.testing import CliRunner

    from hwlat.cli import app

    arch = SPACE.sample(7)
    (tmp_path / "a.json").write_text(json.dumps(arch))
    r = CliRunner().invoke(app, ["nas", "predict", "--space", "proxyless-mobile", "--config",
                                 str(tmp_path / "a.json"), "--device", DEVICE, "--table",
                                 str(store.path), "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    want = sum(ms_of(k.text()) for k in proxyless_kernels(arch))
    assert got["latency_ms"] == pytest.approx(want, rel=1e-9)
    assert len(got["parts"]) == 1 + sum(op != "zero" for op in arch["ops"])
    (tmp_path / "b.json").write_text(json.dumps({"ops": ["k9_e3"] * 21}))
    r = CliRunner().invoke(app, ["nas", "predict", "--space", "proxyless-mobile", "--config",
                                 str(tmp_path / "b.json"), "--device", DEVICE, "--table",
                                 str(store.path)])
    assert isinstance(r.exception, InvalidInputError) and "ops[0]" in str(r.exception)
