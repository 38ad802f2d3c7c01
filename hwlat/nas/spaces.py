"""Search spaces: sample architectures and turn them into the descriptions the zoo builds.

No torch here (numpy and the standard library only): a NAS loop that samples and queries a
latency table never pays for importing torch. `hwlat.zoo.from_ofa_config` and
`hwlat.zoo.from_nb201` build what these functions describe.

Once-for-All MobileNetV3 (`OFA_MBV3`, and `OFA_MBV3_W12` for OFA's width-1.2 supernet)
--------------------------------------------------------------------------------------
As `ofa.imagenet_classification.elastic_nn.networks.OFAMobileNetV3` defines it: first conv
3 -> 16, stride 2, h_swish; a fixed first block 16 -> 16 (depthwise-separable, k3, expand 1,
relu, identity shortcut); 5 stages of up to 4 blocks with out widths 24, 40, 80, 112, 160, first
strides 2, 2, 2, 1, 2, activations relu, relu, h_swish, h_swish, h_swish and squeeze-excite off,
on, off, on, on; final expand 1x1 160 -> 960 h_swish, global pool, feature mix 1x1 960 -> 1280
h_swish (no BN), classifier 1280 -> 1000. Per block: kernel 3/5/7 and expand ratio 3/4/6; per
stage: depth 2/3/4 (the first `d` blocks of the stage run). Middle channels are
`make_divisible(round(in_channels * expand), 8)` (OFA's DynamicMBConvLayer.get_active_subnet);
the squeeze-excite bottleneck, `make_divisible(mid // 4, 8)`, is not part of the config: the zoo's
SqueezeExcite derives it. A block has an identity shortcut when stride is 1 and in == out.
Input resolution 128..224 in steps of 4.

An architecture is OFA's own encoding `{"ks": [20], "e": [20], "d": [5], "r": int}`:
ks[4 * s + i] and e[4 * s + i] belong to block i of stage s; entries at i >= d[s] are ignored
(but must still be allowed values, as OFA's set_active_subnet takes them).

NAS-Bench-201
-------------
A cell string `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|` over `NB201_OPS`. `nb201_index` numbers the
15,625 cells in base 5: the six edges in the order they appear in the string, the first edge
most significant, each op by its position in NB201_OPS. So index 0 is the all-"none" cell and
15,624 the all-"avg_pool_3x3" cell. This is *not* NAS-Bench-201's own benchmark index (the
`index` column of HW-NAS-Bench's tables follows NB201's file order, which is no mixed-radix
numbering); key measured tables by the cell string.
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np

from hwlat.errors import InvalidInputError

__all__ = [
    "NB201_EDGES",
    "NB201_OPS",
    "NB201_SIZE",
    "OFA_MBV3",
    "OFA_MBV3_W12",
    "OFAMobileNetV3Space",
    "nb201_arch",
    "nb201_index",
    "ofa_mbv3_config",
    "parse_nb201",
    "sample_nb201",
    "sample_ofa_mbv3",
]

Rng = np.random.Generator | int | None


def make_divisible(value: float, divisor: int = 8) -> int:
    """OFA's channel rounding: nearest multiple of `divisor`, never below 90 % of `value`."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _as_int(value: Any) -> int | None:
    """`value` as an int when it is an integer (Python or numpy, not bool), else None."""
    if isinstance(value, bool | np.bool_):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def _allowed(values: tuple[int, ...]) -> str:
    step = values[1] - values[0] if len(values) > 1 else 0
    if len(values) > 6 and all(b - a == step for a, b in pairwise(values)):
        return f"{values[0]}, {values[1]}, ..., {values[-1]} (step {values[1] - values[0]})"
    return ", ".join(map(str, values))


# ---------------------------------------------------------------------------------------------
# Once-for-All MobileNetV3
# ---------------------------------------------------------------------------------------------

_BASE_WIDTHS = (16, 16, 24, 40, 80, 112, 160, 960, 1280)  # OFAMobileNetV3.base_stage_width


@dataclass(frozen=True)
class OFAMobileNetV3Space:
    """OFAMobileNetV3(width_mult, ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6],
    depth_list=[2, 3, 4]) and the resolutions OFA samples, as plain data."""

    width_mult: float = 1.0
    kernel_sizes: tuple[int, ...] = (3, 5, 7)
    expand_ratios: tuple[int, ...] = (3, 4, 6)
    depths: tuple[int, ...] = (2, 3, 4)
    resolutions: tuple[int, ...] = tuple(range(128, 225, 4))
    strides: tuple[int, ...] = (2, 2, 2, 1, 2)
    acts: tuple[str, ...] = ("relu", "relu", "h_swish", "h_swish", "h_swish")
    se: tuple[bool, ...] = (False, True, False, True, True)
    n_classes: int = 1000
    # The published specialized nets carry 0.1 (width 1.0) and 0.2 (width 1.2); it does not
    # change the inference graph.
    dropout_rate: float = 0.1
    bn_momentum: float = 0.1
    bn_eps: float = 1e-05

    @property
    def widths(self) -> tuple[int, ...]:
        """Stem, first block, the 5 stages, final expand, feature mix (OFA's width_list)."""
        return tuple(make_divisible(w * self.width_mult, 8) for w in _BASE_WIDTHS)

    @property
    def stage_widths(self) -> tuple[int, ...]:
        return self.widths[2:7]

    @property
    def n_stages(self) -> int:
        return len(self.strides)

    @property
    def max_depth(self) -> int:
        return max(self.depths)

    @property
    def n_blocks(self) -> int:
        return self.n_stages * self.max_depth

    def sample(self, rng: Rng = None) -> dict:
        """A random arch as OFA's sample_active_subnet draws it: every field uniform on its
        choices, independently (so not uniform over distinct networks), plus a resolution."""
        rng = np.random.default_rng(rng)
        ks = [self.kernel_sizes[i] for i in rng.integers(len(self.kernel_sizes), size=self.n_blocks)]
        e = [self.expand_ratios[i] for i in rng.integers(len(self.expand_ratios), size=self.n_blocks)]
        d = [self.depths[i] for i in rng.integers(len(self.depths), size=self.n_stages)]
        r = self.resolutions[int(rng.integers(len(self.resolutions)))]
        return {"ks": [int(k) for k in ks], "e": [int(x) for x in e], "d": [int(x) for x in d],
                "r": int(r)}

    def validate(self, arch: Any) -> dict:
        """A checked copy of `arch` with plain-int values; InvalidInputError naming the field."""
        what = f"OFA MobileNetV3 (width {self.width_mult}) arch"
        if not isinstance(arch, dict):
            raise InvalidInputError(
                f"{what} must be a dict {{'ks', 'e', 'd', 'r'}}, got {type(arch).__name__}"
            )
        keys = ("ks", "e", "d", "r")
        missing = [k for k in keys if k not in arch]
        extra = [k for k in arch if k not in keys]
        if missing or extra:
            problems = ([f"missing {', '.join(map(repr, missing))}"] if missing else []) + (
                [f"unknown {', '.join(map(repr, extra))}"] if extra else []
            )
            raise InvalidInputError(f"{what}: {'; '.join(problems)}; expected keys ks, e, d, r")
        out: dict = {}
        for key, length, choices, meaning in (
            ("ks", self.n_blocks, self.kernel_sizes, "kernel size per block"),
            ("e", self.n_blocks, self.expand_ratios, "expand ratio per block"),
            ("d", self.n_stages, self.depths, "depth per stage"),
        ):
            values = arch[key]
            if isinstance(values, str | bytes) or not hasattr(values, "__len__"):
                raise InvalidInputError(
                    f"{what}: '{key}' must be a list of {length} ints ({meaning}), got {values!r}"
                )
            if len(values) != length:
                raise InvalidInputError(
                    f"{what}: '{key}' has {len(values)} entries; expected {length} ({meaning}"
                    + (f": {self.n_stages} stages x {self.max_depth} blocks)" if length ==
                       self.n_blocks else ")")
                )
            checked = []
            for i, v in enumerate(values):
                iv = _as_int(v)
                if iv is None or iv not in choices:
                    raise InvalidInputError(
                        f"{what}: '{key}[{i}]' is {v!r}; allowed: {_allowed(choices)}"
                    )
                checked.append(iv)
            out[key] = checked
        r = _as_int(arch["r"])
        if r is None or r not in self.resolutions:
            raise InvalidInputError(
                f"{what}: 'r' (resolution) is {arch['r']!r}; allowed: {_allowed(self.resolutions)}"
            )
        out["r"] = r
        return out

    def config(self, arch: Any) -> dict:
        """`{"image_size": r, "net": <OFA MobileNetV3 net config>}` for `arch`, in the JSON format of
        OFA's published specialized nets (MobileInvertedResidualBlock / MBInvertedConvLayer)."""
        arch = self.validate(arch)
        w = self.widths
        blocks = [_block(w[0], w[1], 3, 1, 1, self.acts[0], False)]
        channels = w[1]
        for s in range(self.n_stages):
            for i in range(arch["d"][s]):
                j = s * self.max_depth + i
                stride = self.strides[s] if i == 0 else 1
                blocks.append(_block(channels, self.stage_widths[s], arch["ks"][j], stride,
                                     arch["e"][j], self.acts[s], self.se[s]))
                channels = self.stage_widths[s]
        net = {
            "name": "MobileNetV3",
            "bn": {"momentum": self.bn_momentum, "eps": self.bn_eps},
            "first_conv": _conv(3, w[0], 3, 2, "h_swish"),
            "blocks": blocks,
            "final_expand_layer": _conv(channels, w[7], 1, 1, "h_swish"),
            "feature_mix_layer": _conv(w[7], w[8], 1, 1, "h_swish", use_bn=False),
            "classifier": {
                "name": "LinearLayer",
                "in_features": w[8],
                "out_features": self.n_classes,
                "bias": True,
                "use_bn": False,
                "act_func": None,
                "dropout_rate": self.dropout_rate,
                "ops_order": "weight_bn_act",
            },
        }
        return {"image_size": arch["r"], "net": net}


def _conv(cin: int, cout: int, k: int, stride: int, act: str | None, use_bn: bool = True) -> dict:
    return {
        "name": "ConvLayer",
        "kernel_size": k,
        "stride": stride,
        "dilation": 1,
        "groups": 1,
        "bias": False,
        "has_shuffle": False,
        "in_channels": cin,
        "out_channels": cout,
        "use_bn": use_bn,
        "act_func": act,
        "dropout_rate": 0,
        "ops_order": "weight_bn_act",
    }


def _block(cin: int, cout: int, k: int, stride: int, expand: int, act: str, use_se: bool) -> dict:
    # OFA's expand-1 first block is an MBConvLayer without inverted bottleneck: mid_channels null.
    mid = None if expand == 1 else make_divisible(round(cin * expand), 8)
    shortcut = None
    if stride == 1 and cin == cout:
        shortcut = {
            "name": "IdentityLayer",
            "in_channels": [cin],
            "out_channels": [cout],
            "use_bn": False,
            "act_func": None,
            "dropout_rate": 0,
            "ops_order": "weight_bn_act",
        }
    return {
        "name": "MobileInvertedResidualBlock",
        "mobile_inverted_conv": {
            "name": "MBInvertedConvLayer",
            "in_channels": cin,
            "out_channels": cout,
            "kernel_size": k,
            "stride": stride,
            "expand_ratio": expand,
            "mid_channels": mid,
            "act_func": act,
            "use_se": use_se,
        },
        "shortcut": shortcut,
    }


OFA_MBV3 = OFAMobileNetV3Space()
# OFA's ofa_mbv3_d234_e346_k357_w1.2 supernet (stem 24, stages 32/48/96/136/192, 1152, 1536): the
# family of the four larger published Note10 nets. Only the widths (and dropout) differ.
OFA_MBV3_W12 = OFAMobileNetV3Space(width_mult=1.2, dropout_rate=0.2)
_OFA_SPACES = {1.0: OFA_MBV3, 1.2: OFA_MBV3_W12}


def _ofa_space(width_mult: float) -> OFAMobileNetV3Space:
    if width_mult not in _OFA_SPACES:
        raise InvalidInputError(
            f"OFA MobileNetV3 width_mult is {width_mult!r}; allowed: "
            f"{', '.join(map(str, _OFA_SPACES))}"
        )
    return _OFA_SPACES[width_mult]


def sample_ofa_mbv3(rng: Rng = None, width_mult: float = 1.0) -> dict:
    """A random OFA MobileNetV3 arch `{"ks": [20], "e": [20], "d": [5], "r": int}`."""
    return _ofa_space(width_mult).sample(rng)


def ofa_mbv3_config(arch: dict, width_mult: float = 1.0) -> dict:
    """`{"image_size": r, "net": ...}` for an OFA arch, ready for `hwlat.zoo.from_ofa_config`."""
    return copy.deepcopy(_ofa_space(width_mult).config(arch))


# ---------------------------------------------------------------------------------------------
# NAS-Bench-201
# ---------------------------------------------------------------------------------------------

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NB201_NODES = 4
# (target node, source node) of each edge, in cell-string order.
NB201_EDGES = tuple((j, i) for j in range(1, NB201_NODES) for i in range(j))
NB201_SIZE = len(NB201_OPS) ** len(NB201_EDGES)  # 15,625


def parse_nb201(arch: Any) -> tuple[str, ...]:
    """The six ops of a cell string, in string order (edges 0->1, 0->2, 1->2, 0->3, 1->3, 2->3)."""
    example = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|none~2|"
    if not isinstance(arch, str):
        raise InvalidInputError(f"NB201 cell string must be a string, got {arch!r}")
    nodes = arch.split("+")
    if len(nodes) != NB201_NODES - 1:
        raise InvalidInputError(
            f"NB201 cell string {arch!r} has {len(nodes)} '+'-separated nodes; expected "
            f"{NB201_NODES - 1}, like {example}"
        )
    ops: list[str] = []
    for j, node in enumerate(nodes, start=1):
        tokens = node.split("|")
        if len(tokens) != j + 2 or tokens[0] or tokens[-1]:
            raise InvalidInputError(
                f"NB201 node {j} {node!r} in {arch!r} must have {j} edge(s): "
                + "".join(f"|op~{i}" for i in range(j)) + "|"
            )
        for i, token in enumerate(tokens[1:-1]):
            op, sep, source = token.partition("~")
            if op not in NB201_OPS:
                raise InvalidInputError(
                    f"NB201 cell string {arch!r}: unknown op {op!r} in token {token!r}; "
                    f"allowed ops: {', '.join(NB201_OPS)}"
                )
            if not sep or source != str(i):
                raise InvalidInputError(
                    f"NB201 cell string {arch!r}: token {token!r} (node {j}, edge {i}) must "
                    f"read '{op}~{i}'"
                )
            ops.append(op)
    return tuple(ops)


def nb201_index(arch: str) -> int:
    """The cell's number in 0..15,624 (base 5 over the edges, first edge most significant)."""
    index = 0
    for op in parse_nb201(arch):
        index = index * len(NB201_OPS) + NB201_OPS.index(op)
    return index


def nb201_arch(index: int) -> str:
    """The cell string numbered `index` (inverse of nb201_index)."""
    i = _as_int(index)
    if i is None or not 0 <= i < NB201_SIZE:
        raise InvalidInputError(
            f"NB201 index is {index!r}; allowed: integers 0..{NB201_SIZE - 1}"
        )
    digits = []
    for _ in NB201_EDGES:
        i, d = divmod(i, len(NB201_OPS))
        digits.append(NB201_OPS[d])
    ops = digits[::-1]
    nodes, k = [], 0
    for j in range(1, NB201_NODES):
        nodes.append("|" + "|".join(f"{ops[k + i]}~{i}" for i in range(j)) + "|")
        k += j
    return "+".join(nodes)


def sample_nb201(rng: Rng = None) -> str:
    """A cell string drawn uniformly from all 15,625."""
    return nb201_arch(int(np.random.default_rng(rng).integers(NB201_SIZE)))
