"""The kernel keys every NAS space derives from its built block graphs equal what torch's export,
`hwlat.graph.load` and `fuse` give, on every choice of every block:

- OFA MobileNetV3: 9 full-depth archs in which block j takes choice (j + n) % 9 of (k, e), so
  together they run every (block, k, e); at 132 px, where stride-2 convs see odd maps;
- ProxylessNAS mobile: 7 archs that together take every choice at every block (`zero` where a
  block may be skipped);
- NAS-Bench-201: each op on all six edges, and the cells that together run every distinct kernel
  key of the space (NB201_COVERING).

Each export takes seconds: marked slow."""

from __future__ import annotations

from collections import Counter

import pytest

from hwlat.graph import fuse, load
from hwlat.nas import OFA_MBV3, PROXYLESS_MOBILE, ofa_mbv3_config, proxyless_config
from hwlat.nas.nb201_lut import NB201_COVERING, nb201_kernels
from hwlat.nas.ofa_lut import block_kernels, ofa_mbv3_kernels
from hwlat.nas.proxyless import proxyless_kernels
from hwlat.nas.spaces import NB201_OPS, nb201_arch, parse_nb201

pytestmark = [pytest.mark.slow, pytest.mark.heavy]

_OFA_CHOICES = [(k, e) for k in OFA_MBV3.kernel_sizes for e in OFA_MBV3.expand_ratios]
OFA_ARCHS = [{"ks": [_OFA_CHOICES[(j + n) % 9][0] for j in range(OFA_MBV3.n_blocks)],
              "e": [_OFA_CHOICES[(j + n) % 9][1] for j in range(OFA_MBV3.n_blocks)],
              "d": [OFA_MBV3.max_depth] * OFA_MBV3.n_stages, "r": 132} for n in range(9)]


def _proxyless_archs(r: int) -> list[dict]:
    out = []
    for shift in range(len(PROXYLESS_MOBILE.choices)):
        ops = []
        for j in range(PROXYLESS_MOBILE.n_blocks):
            allowed = PROXYLESS_MOBILE.choices
            if not PROXYLESS_MOBILE.skippable(j):
                allowed = allowed[:-1]
            ops.append(allowed[(j + shift) % len(allowed)])
        out.append({"ops": ops, "r": r})
    return out


PROXYLESS_ARCHS = _proxyless_archs(128)
NB201_CELLS = [f"|{op}~0|+|{op}~0|{op}~1|+|{op}~0|{op}~1|{op}~2|" for op in NB201_OPS] + [
    nb201_arch(i) for i in NB201_COVERING]


def _exported(tmp_path, model, inputs):
    from hwlat.onnx_export import export

    path = tmp_path / "m.onnx"
    export(model, inputs, path, compare=False)
    return [k.key.text() for k in fuse(load(path))]


def _same(derived: list[str], cut: list[str]) -> None:
    d, c = Counter(derived), Counter(cut)
    assert d == c, (f"only derived: {sorted((d - c).elements())[:4]}; "
                    f"only exported: {sorted((c - d).elements())[:4]}")


def test_the_archs_take_every_choice_of_every_block():
    for j in range(OFA_MBV3.n_blocks):
        assert {(a["ks"][j], a["e"][j]) for a in OFA_ARCHS} == set(_OFA_CHOICES)
    for j in range(PROXYLESS_MOBILE.n_blocks):
        want = set(PROXYLESS_MOBILE.choices[:None if PROXYLESS_MOBILE.skippable(j) else -1])
        assert {a["ops"][j] for a in PROXYLESS_ARCHS} == want
    cells = [parse_nb201(cell) for cell in NB201_CELLS]
    for e in range(6):
        assert {ops[e] for ops in cells} == set(NB201_OPS)


@pytest.mark.parametrize("n", range(len(OFA_ARCHS)))
def test_ofa_every_block_choice(tmp_path, n):
    from hwlat.zoo import from_ofa_config

    arch = OFA_ARCHS[n]
    cut = _exported(tmp_path, *from_ofa_config(ofa_mbv3_config(arch)))
    derived = [k.text() for k in ofa_mbv3_kernels(arch)]
    _same(derived, cut)
    for j in range(OFA_MBV3.n_blocks):  # each block's keys are in the export, as many times
        block = Counter(k.text() for k in block_kernels(132, j, arch["ks"][j], arch["e"][j]))
        assert not block - Counter(cut), j


@pytest.mark.parametrize("n", range(len(PROXYLESS_ARCHS)))
def test_proxyless_every_block_choice(tmp_path, n):
    from hwlat.zoo import from_ofa_config

    arch = PROXYLESS_ARCHS[n]
    cut = _exported(tmp_path, *from_ofa_config(proxyless_config(arch)))
    assert cut == [k.text() for k in proxyless_kernels(arch)]


@pytest.mark.parametrize("cell", NB201_CELLS)
def test_nb201_every_edge_op_and_every_key(tmp_path, cell):
    from hwlat.zoo import from_nb201

    _same([k.text() for k in nb201_kernels(cell)], _exported(tmp_path, *from_nb201(cell)))
