"""One protocol for NAS search spaces, and the registry `SPACES` / `get_space(name)` that
`hwlat search`, `hwlat nas predict` and `hwlat lut fit` dispatch through.

A `Space` validates and samples architectures (its own form: an OFA arch dict, a ProxylessNAS
`{"ops", "r"}` dict, an NB201 cell string) and builds a `LatencyTable` on a device's table: the
dense cost arrays, queried in batches (`encode`, `latency`) or one arch at a time
(`latency_one`). The search in `hwlat.nas.search` runs on any LatencyTable through its genes (one
integer choice per gene, `gene_choices[g]` of them), its smallest arch and its (MACs, params).
No torch here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from hwlat.errors import InvalidInputError
from hwlat.lut.store import TableStore

__all__ = ["SPACES", "LatencyTable", "Space", "get_space"]

Rng = np.random.Generator | int | None


@runtime_checkable
class LatencyTable(Protocol):
    """Kernel-sum latency (ms) of a space's archs on one device."""

    space_name: str  # the registry name
    space_title: str  # for messages: "OFA MobileNetV3", ...
    device: str
    gene_choices: np.ndarray  # [G]: choices of each gene

    def encode(self, archs: Sequence[Any]) -> Any: ...  # InvalidInputError naming a bad arch
    def decode(self, enc: Any) -> list: ...
    def sample(self, n: int, rng: Rng = None) -> Any: ...  # n random archs, encoded
    def latency(self, enc: Any) -> np.ndarray: ...  # [N] ms, batched
    def latency_one(self, arch: Any) -> float: ...
    def genes(self, enc: Any) -> np.ndarray: ...  # [N, G] int64
    def from_genes(self, genes: np.ndarray) -> Any: ...
    def take(self, enc: Any, rows: np.ndarray) -> Any: ...  # rows of an encoding (mask or index)
    def concat(self, encs: Sequence[Any]) -> Any: ...
    def smallest(self) -> tuple[Any, float]: ...  # the arch of least latency, and that latency
    def costs(self, enc: Any) -> tuple[np.ndarray, np.ndarray]: ...  # (MACs, params) int64
    def params_bound(self) -> int: ...  # no arch has more params
    def describe(self, arch: Any) -> str: ...  # a few words for messages


@runtime_checkable
class Space(Protocol):
    name: str
    arch_input: str  # how `hwlat nas predict` takes archs: "config" (one JSON) or "archs" (CSV)
    fits: bool  # `hwlat lut fit` can fit a device's table from its measured archs

    def validate(self, arch: Any) -> Any: ...
    def sample(self, n: int, rng: Rng = None) -> list: ...
    def table(self, store: TableStore, device: str, *, estimate: bool = False) -> LatencyTable: ...


@dataclass(frozen=True)
class _OfaMbv3:
    name: str = "ofa-mbv3"
    arch_input: str = "config"
    fits: bool = False

    def validate(self, arch: Any) -> dict:
        from hwlat.nas.spaces import OFA_MBV3

        return OFA_MBV3.validate(arch)

    def sample(self, n: int, rng: Rng = None) -> list[dict]:
        from hwlat.nas.spaces import OFA_MBV3

        rng = np.random.default_rng(rng)
        return [OFA_MBV3.sample(rng) for _ in range(n)]

    def table(self, store: TableStore, device: str, *, estimate: bool = False) -> LatencyTable:
        from hwlat.nas.ofa_lut import OfaLatencyTable

        return OfaLatencyTable(store, device, estimate=estimate)


@dataclass(frozen=True)
class _ProxylessMobile:
    name: str = "proxyless-mobile"
    arch_input: str = "config"
    fits: bool = False

    def validate(self, arch: Any) -> dict:
        from hwlat.nas.proxyless import PROXYLESS_MOBILE

        return PROXYLESS_MOBILE.validate(arch)

    def sample(self, n: int, rng: Rng = None) -> list[dict]:
        from hwlat.nas.proxyless import PROXYLESS_MOBILE

        rng = np.random.default_rng(rng)
        return [PROXYLESS_MOBILE.sample(rng) for _ in range(n)]

    def table(self, store: TableStore, device: str, *, estimate: bool = False) -> LatencyTable:
        from hwlat.nas.proxyless import ProxylessLatencyTable

        return ProxylessLatencyTable(store, device, estimate=estimate)


@dataclass(frozen=True)
class _Nb201:
    name: str = "nb201"
    arch_input: str = "archs"
    fits: bool = True

    def validate(self, arch: Any) -> str:
        from hwlat.nas.spaces import nb201_arch, nb201_index

        return nb201_arch(nb201_index(arch))

    def sample(self, n: int, rng: Rng = None) -> list[str]:
        from hwlat.nas.spaces import sample_nb201

        rng = np.random.default_rng(rng)
        return [sample_nb201(rng) for _ in range(n)]

    def table(self, store: TableStore, device: str, *, estimate: bool = False) -> LatencyTable:
        from hwlat.nas.nb201_lut import Nb201LatencyTable

        return Nb201LatencyTable(store, device, estimate=estimate)


SPACES: dict[str, Space] = {s.name: s for s in (_OfaMbv3(), _ProxylessMobile(), _Nb201())}


def get_space(name: str) -> Space:
    """The registered space called `name`; InvalidInputError naming the known ones."""
    try:
        return SPACES[name]
    except (KeyError, TypeError):
        raise InvalidInputError(f"unknown space {name!r}; known: {', '.join(SPACES)}") from None
