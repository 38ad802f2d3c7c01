"""The space protocol and registry: every registered space validates, samples and builds a
LatencyTable whose batched latency equals one-by-one latency and the sum over its kernel keys."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest

from hwlat.errors import InvalidInputError
from hwlat.lut import Entry, TableStore
from hwlat.nas import SPACES, LatencyTable, Space, get_space
from hwlat.nas import proxyless as px
from hwlat.nas.nb201_lut import nb201_all_keys, nb201_kernels
from hwlat.nas.ofa_lut import block_kernels, fixed_kernels, ofa_mbv3_kernels
from hwlat.nas.spaces import OFA_MBV3

DEVICE = "synthetic"
AT = "2026-01-01T00:00:00+00:00"


def ms_of(text: str) -> float:
    return (int(hashlib.blake2b(text.encode(), digest_size=3).hexdigest(), 16) + 1) * 1e-6


def _keys(name: str) -> set:
    if name == "nb201":
        return set(nb201_all_keys().values())
    if name == "proxyless-mobile":
        return set(px.fixed_kernels(224)) | {k for j in range(px.PROXYLESS_MOBILE.n_blocks)
                                             for op in px.PROXYLESS_MOBILE.choices
                                             for k in px.block_kernels(224, j, op)}
    return {k for r in OFA_MBV3.resolutions for k in fixed_kernels(r)} | {
        k for r in OFA_MBV3.resolutions for j in range(OFA_MBV3.n_blocks)
        for ks in OFA_MBV3.kernel_sizes for e in OFA_MBV3.expand_ratios
        for k in block_kernels(r, j, ks, e)}


def _arch_keys(name: str, arch) -> list:
    return {"nb201": nb201_kernels, "proxyless-mobile": px.proxyless_kernels,
            "ofa-mbv3": ofa_mbv3_kernels}[name](arch)


@pytest.fixture(scope="module", params=sorted(SPACES))
def space_table(request, tmp_path_factory):
    name = request.param
    with TableStore(tmp_path_factory.mktemp("lut") / "t.sqlite") as store:
        store.put_many([Entry(DEVICE, k.text(), k.kind.value, ms, ms, ms, 0.0, 1, 1, "synthetic",
                              "{}", "synthetic", AT) for k in _keys(name) for ms in [ms_of(k.text())]])
        yield name, get_space(name).table(store, DEVICE)


def test_registry_names_the_spaces():
    assert list(SPACES) == ["ofa-mbv3", "proxyless-mobile", "nb201"]
    for name, space in SPACES.items():
        assert isinstance(space, Space) and get_space(name) is space and space.name == name
    with pytest.raises(InvalidInputError, match="unknown space 'foo'; known: ofa-mbv3, "
                                                "proxyless-mobile, nb201"):
        get_space("foo")


def test_tables_follow_the_protocol(space_table):
    name, table = space_table
    space = get_space(name)
    assert isinstance(table, LatencyTable) and table.space_name == name
    archs = space.sample(40, rng=3)
    assert archs == space.sample(40, rng=3) and all(space.validate(a) == a for a in archs)
    batch = table.latency(table.encode(archs))
    one = np.array([table.latency_one(a) for a in archs])
    by_key = np.array([sum(ms_of(k.text()) for k in _arch_keys(name, a)) for a in archs])
    np.testing.assert_allclose(batch, one, rtol=1e-12)
    np.testing.assert_allclose(batch, by_key, rtol=1e-12)
    enc = table.sample(50, rng=1)
    again = table.encode(table.decode(enc))
    np.testing.assert_array_equal(table.genes(enc), table.genes(again))
    genes = table.genes(enc)
    assert genes.shape[1] == len(table.gene_choices) and (genes < table.gene_choices).all()
    np.testing.assert_array_equal(table.genes(table.from_genes(genes)), genes)
    arch, least = table.smallest()
    assert least == pytest.approx(table.latency_one(arch), rel=1e-12)
    assert least <= table.latency(enc).min()
    macs, params = table.costs(enc)
    assert (macs >= 0).all() and (params >= 0).all() and params.max() <= table.params_bound()
    with pytest.raises(InvalidInputError, match=r"archs\[1\]"):
        table.encode([archs[0], "not an arch" if name != "nb201" else "|bad~0|"])


def test_cli_unknown_space_is_one_line():
    r = subprocess.run([sys.executable, "-m", "hwlat.cli", "search", "--space", "foo",
                        "--latency-ms", "1"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: unknown space 'foo'")
    assert "Traceback" not in r.stderr
