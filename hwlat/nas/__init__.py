"""Neural architecture search support: search spaces that sample architectures as descriptions
(OFA net configs, ProxylessNAS mobile block choices, NAS-Bench-201 cell strings) for `hwlat.zoo`
to build, and batched latency queries over a device's table; one protocol for the spaces and
their registry (`SPACES`, `get_space`, hwlat.nas.space). No torch import here
(`hwlat.nas.expected` is the torch part)."""

from hwlat.nas.ofa_lut import OfaEncoding, OfaLatencyTable, OfaTableIncomplete, ofa_mbv3_kernels
from hwlat.nas.proxyless import (
    PROXYLESS_MOBILE,
    ProxylessLatencyTable,
    ProxylessSpace,
    proxyless_config,
    proxyless_kernels,
    sample_proxyless,
)
from hwlat.nas.search import EvolutionSearch, MacsObjective, RandomSearch, SearchResult, run_search
from hwlat.nas.space import SPACES, LatencyTable, Space, get_space
from hwlat.nas.spaces import (
    NB201_EDGES,
    NB201_OPS,
    NB201_SIZE,
    OFA_MBV3,
    OFA_MBV3_W12,
    OFAMobileNetV3Space,
    nb201_arch,
    nb201_index,
    ofa_mbv3_config,
    parse_nb201,
    sample_nb201,
    sample_ofa_mbv3,
)

__all__ = [
    "SPACES",
    "LatencyTable",
    "Space",
    "get_space",
    "PROXYLESS_MOBILE",
    "ProxylessLatencyTable",
    "ProxylessSpace",
    "proxyless_config",
    "proxyless_kernels",
    "sample_proxyless",
    "NB201_EDGES",
    "NB201_OPS",
    "NB201_SIZE",
    "OFA_MBV3",
    "OFA_MBV3_W12",
    "OFAMobileNetV3Space",
    "OfaEncoding",
    "OfaLatencyTable",
    "OfaTableIncomplete",
    "EvolutionSearch",
    "MacsObjective",
    "RandomSearch",
    "SearchResult",
    "run_search",
    "ofa_mbv3_kernels",
    "nb201_arch",
    "nb201_index",
    "ofa_mbv3_config",
    "parse_nb201",
    "sample_nb201",
    "sample_ofa_mbv3",
]
