"""ProxylessNAS's mobile search space: architectures, their kernels' keys, and a dense table.

As ProxylessNAS (Cai, Zhu and Han, ICLR 2019) searched it for mobile phones: first conv 3 -> 32,
3x3 stride 2, ReLU6; a fixed first block 32 -> 16 (3x3 depthwise-separable, expand 1, no
shortcut); six stages of 4, 4, 4, 4, 4 and 1 blocks with out widths 24, 40, 80, 96, 192, 320 and
first strides 2, 2, 2, 1, 2, 1; a feature-mix 1x1 conv 320 -> 1280 (ReLU6), global average pool
and a 1280 -> 1000 classifier. Each of the 21 searchable blocks is one of six MBConv choices,
kernel 3/5/7 with expand ratio 3/6 (`k3_e3` ... `k7_e6`), or `zero` (the block is skipped: its
identity shortcut alone) where the block has a shortcut, i.e. every block but a stage's first.
MBConvs are 1x1 expand, kxk depthwise, 1x1 project (ReLU6 after the first two), middle channels
`round(in * expand)`, an identity shortcut at stride 1 with equal widths. Input resolution
128..224 in steps of 4 (the searched nets use 224).

An architecture is `{"ops": [21 choice names], "r": int}`. `proxyless_config` writes it as
OFA's `ProxylessNASNets` net config, which `hwlat.zoo.from_ofa_config` builds;
`proxyless_kernels` gives the kernel keys that `fuse(load(path))` cuts from its export
without exporting, each block built as a Graph and cut by the real `fuse` (a test holds the two
equal on every block choice); `ProxylessLatencyTable` answers batches of
encoded archs with one gather and one sum.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from hwlat.errors import InvalidInputError
from hwlat.graph.builder import GraphBuilder
from hwlat.graph.cost import key_cost
from hwlat.graph.kernel import KernelKey
from hwlat.lut.predict import MissEstimator
from hwlat.lut.store import TableStore
from hwlat.nas.blocks import conv_bn, graph_keys, inverted_residual, out_size
from hwlat.nas.ofa_lut import OfaTableIncomplete, keys_cost

__all__ = [
    "PROXYLESS_MOBILE",
    "ProxylessLatencyTable",
    "ProxylessSpace",
    "proxyless_config",
    "proxyless_kernels",
    "proxyless_latency",
    "sample_proxyless",
]

ZERO = "zero"


@dataclass(frozen=True)
class ProxylessSpace:
    first_conv: int = 32
    first_block: int = 16
    widths: tuple[int, ...] = (24, 40, 80, 96, 192, 320)
    depths: tuple[int, ...] = (4, 4, 4, 4, 4, 1)
    strides: tuple[int, ...] = (2, 2, 2, 1, 2, 1)
    kernel_sizes: tuple[int, ...] = (3, 5, 7)
    expand_ratios: tuple[int, ...] = (3, 6)
    feature_mix: int = 1280
    n_classes: int = 1000
    resolutions: tuple[int, ...] = tuple(range(128, 225, 4))

    @property
    def choices(self) -> tuple[str, ...]:
        """Block choices: the MBConvs, then `zero`."""
        return (*(f"k{k}_e{e}" for k in self.kernel_sizes for e in self.expand_ratios), ZERO)

    @property
    def n_blocks(self) -> int:
        return sum(self.depths)

    @property
    def blocks(self) -> tuple[tuple[int, int, int], ...]:
        """(in channels, out channels, stride) of each searchable block."""
        out, cin = [], self.first_block
        for width, depth, stride in zip(self.widths, self.depths, self.strides, strict=True):
            for i in range(depth):
                out.append((cin, width, stride if i == 0 else 1))
                cin = width
        return tuple(out)

    def skippable(self, j: int) -> bool:
        cin, cout, stride = self.blocks[j]
        return stride == 1 and cin == cout

    def sample(self, rng: np.random.Generator | int | None = None) -> dict:
        rng = np.random.default_rng(rng)
        choices = self.choices
        ops = [choices[int(rng.integers(len(choices) - (0 if self.skippable(j) else 1)))]
               for j in range(self.n_blocks)]
        return {"ops": ops, "r": 224}

    def validate(self, arch: Any) -> dict:
        """The arch as {"ops": list, "r": int}; InvalidInputError naming the field and the
        allowed values otherwise."""
        if not isinstance(arch, dict):
            raise InvalidInputError(
                f"a ProxylessNAS arch is a dict {{'ops': [{self.n_blocks} choices], 'r': int}}, "
                f"got {type(arch).__name__}")
        extra = sorted(set(arch) - {"ops", "r"})
        if extra:
            raise InvalidInputError(f"ProxylessNAS arch: unknown field(s) {extra}; fields: ops, r")
        ops, r = arch.get("ops"), arch.get("r", 224)
        if not isinstance(ops, list | tuple) or len(ops) != self.n_blocks:
            got = f"{len(ops)} entries" if isinstance(ops, list | tuple) else repr(ops)
            raise InvalidInputError(
                f"ProxylessNAS arch field 'ops' must list {self.n_blocks} block choices "
                f"(stages of {', '.join(map(str, self.depths))}), got {got}")
        choices = self.choices
        for j, op in enumerate(ops):
            if op not in choices:
                raise InvalidInputError(
                    f"ProxylessNAS arch field 'ops[{j}]' is {op!r}; allowed: {', '.join(choices)}")
            if op == ZERO and not self.skippable(j):
                raise InvalidInputError(
                    f"ProxylessNAS arch field 'ops[{j}]' is 'zero' but block {j} is its stage's "
                    f"first (no shortcut); allowed: {', '.join(choices[:-1])}")
        if isinstance(r, bool) or not isinstance(r, int) or r not in self.resolutions:
            raise InvalidInputError(
                f"ProxylessNAS arch field 'r' is {r!r}; allowed: {self.resolutions[0]}.."
                f"{self.resolutions[-1]} in steps of {self.resolutions[1] - self.resolutions[0]}")
        return {"ops": list(ops), "r": r}


PROXYLESS_MOBILE = ProxylessSpace()


def sample_proxyless(rng: np.random.Generator | int | None = None) -> dict:
    return PROXYLESS_MOBILE.sample(rng)


def _parse_choice(op: str) -> tuple[int, int]:
    k, e = op.split("_")
    return int(k[1:]), int(e[1:])


# --- the net config the zoo builds -----------------------------------------------------------

def _conv_layer(cin: int, cout: int, k: int, stride: int, act: str | None) -> dict:
    return {"name": "ConvLayer", "kernel_size": k, "stride": stride, "dilation": 1, "groups": 1,
            "bias": False, "has_shuffle": False, "in_channels": cin, "out_channels": cout,
            "use_bn": True, "act_func": act, "dropout_rate": 0, "ops_order": "weight_bn_act"}


def _mb_block(cin: int, cout: int, k: int, stride: int, e: int, shortcut: bool) -> dict:
    conv = {"name": "MBInvertedConvLayer", "in_channels": cin, "out_channels": cout,
            "kernel_size": k, "stride": stride, "expand_ratio": e,
            "mid_channels": None if e == 1 else round(cin * e), "act_func": "relu6",
            "use_se": False}
    identity = {"name": "IdentityLayer", "in_channels": [cin], "out_channels": [cout],
                "use_bn": False, "act_func": None, "dropout_rate": 0, "ops_order": "weight_bn_act"}
    return {"name": "MobileInvertedResidualBlock", "mobile_inverted_conv": conv,
            "shortcut": identity if shortcut else None}


def proxyless_config(arch: Any, space: ProxylessSpace = PROXYLESS_MOBILE) -> dict:
    """OFA's net config JSON (`{"image_size", "net"}`, family ProxylessNASNets) of the arch;
    `zero` blocks are left out."""
    arch = space.validate(arch)
    blocks = [_mb_block(space.first_conv, space.first_block, 3, 1, 1, False)]
    for op, (cin, cout, stride) in zip(arch["ops"], space.blocks, strict=True):
        if op != ZERO:
            k, e = _parse_choice(op)
            blocks.append(_mb_block(cin, cout, k, stride, e, stride == 1 and cin == cout))
    last = space.widths[-1]
    net = {
        "name": "ProxylessNASNets",
        "bn": {"momentum": 0.1, "eps": 1e-3},
        "first_conv": _conv_layer(3, space.first_conv, 3, 2, "relu6"),
        "blocks": blocks,
        "feature_mix_layer": _conv_layer(last, space.feature_mix, 1, 1, "relu6"),
        "classifier": {"name": "LinearLayer", "in_features": space.feature_mix,
                       "out_features": space.n_classes, "bias": True, "use_bn": False,
                       "act_func": None, "dropout_rate": 0, "ops_order": "weight_bn_act"},
    }
    return {"image_size": arch["r"], "net": net}


# --- kernel keys -----------------------------------------------------------------------------

def _mbconv(b: GraphBuilder, x: str, cout: int, k: int, stride: int, e: int) -> str:
    """MBInvertedConvLayer (relu6, middle channels round(in * e), no expand conv at e = 1) with
    the identity shortcut at stride 1 with equal widths."""
    return inverted_residual(b, x, cout, k, stride, round(b.shape(x)[1] * e), "relu6",
                             expand=e != 1)


def _sizes(space: ProxylessSpace, r: int) -> tuple[int, ...]:
    """Input feature-map size of each searchable block."""
    size = out_size(r, 3, 2)  # the first block keeps the stem's size
    out = []
    for _, _, stride in space.blocks:
        out.append(size)
        size = out_size(size, 3, stride)
    return tuple(out)


@cache
def block_kernels(r: int, j: int, op: str, space: ProxylessSpace = PROXYLESS_MOBILE,
                  fusion: str = "default") -> tuple[KernelKey, ...]:
    """Kernels of searchable block j with choice `op` at resolution r (none for `zero`), from
    the block built as a Graph and cut by `fuse` with the rule set `fusion` (the device file's)."""
    if op == ZERO:
        return ()
    cin, cout, stride = space.blocks[j]
    k, e = _parse_choice(op)
    return _block_keys(cin, cout, _sizes(space, r)[j], k, stride, e, fusion)


@cache
def _block_keys(cin: int, cout: int, size: int, k: int, stride: int, e: int,
                fusion: str = "default") -> tuple[KernelKey, ...]:
    """One MBConv's keys; blocks of the same shape are built once."""
    return graph_keys(lambda b: _mbconv(b, b.input(1, cin, size, size), cout, k, stride, e),
                      fusion)


def _front(r: int, space: ProxylessSpace, fusion: str = "default") -> tuple[KernelKey, ...]:
    def make(b):
        x = conv_bn(b, b.input(1, 3, r, r), space.first_conv, 3, 2, act="relu6")
        return _mbconv(b, x, space.first_block, 3, 1, 1)
    return graph_keys(make, fusion)


def _head(r: int, space: ProxylessSpace) -> tuple[KernelKey, ...]:
    """Feature mix, global pool, flatten, classifier (its zero bias left out)."""
    last = out_size(_sizes(space, r)[-1], 3, space.blocks[-1][2])

    def make(b):
        x = conv_bn(b, b.input(1, space.widths[-1], last, last), space.feature_mix, act="relu6")
        return b.linear(b.flatten(b.mean_hw(x)), space.n_classes, bias=False)
    return graph_keys(make)


@cache
def fixed_kernels(r: int, space: ProxylessSpace = PROXYLESS_MOBILE,
                  fusion: str = "default") -> tuple[KernelKey, ...]:
    """Stem, the fixed first block and the head, which every arch at resolution r runs (the head
    has no depthwise conv: every rule set cuts it alike)."""
    return (*_front(r, space, fusion), *_head(r, space))


def proxyless_kernels(arch: Any, space: ProxylessSpace = PROXYLESS_MOBILE,
                      fusion: str = "default") -> list[KernelKey]:
    """The kernel keys `fuse(load(...), fusion)` cuts from the exported arch, in the model's
    order."""
    arch = space.validate(arch)
    r = arch["r"]
    keys = list(_front(r, space, fusion))
    for j, op in enumerate(arch["ops"]):
        keys += block_kernels(r, j, op, space, fusion)
    return keys + list(_head(r, space))


# --- the dense table -------------------------------------------------------------------------

class ProxylessLatencyTable:
    """Kernel-sum latency (ms) of ProxylessNAS mobile archs at one resolution on one device.

    `block_ms[j, c]`: block j's kernels summed for choice c of `space.choices` (0 for `zero`);
    `fixed_ms`: stem, first block and head. A batch is `encode`d to choice indices [N, 21] and
    `latency` is one gather and one sum. Misses raise OfaTableIncomplete, or with
    `estimate=True` are estimated as `hwlat.lut.predict` estimates them (counted in
    `estimated`). Keys are cut where the device's runtime cuts (its file's `fusion`, or
    `fusion=`)."""

    def __init__(self, store: TableStore, device: str, resolution: int = 224,
                 space: ProxylessSpace = PROXYLESS_MOBILE, *, estimate: bool = False,
                 fusion: str | None = None):
        from hwlat.devices.spec import fusion_of

        if resolution not in space.resolutions:
            raise InvalidInputError(f"resolution {resolution!r}: allowed {space.resolutions[0]}.."
                                    f"{space.resolutions[-1]} in steps of 4")
        self.space, self.device, self.resolution = space, device, resolution
        self.fusion = fusion_of(device) if fusion is None else fusion
        choices = space.choices
        blocks = {(j, c): block_kernels(resolution, j, op, space, self.fusion)
                  for j in range(space.n_blocks) for c, op in enumerate(choices)}
        fixed = fixed_kernels(resolution, space, self.fusion)
        texts = {k: k.text() for keys in (*blocks.values(), fixed) for k in keys}
        ms = {t: e.median_ms for t, e in store.get_many(device, texts.values()).items()}
        missing = [k for k, t in texts.items() if t not in ms]
        if missing and not estimate:
            raise OfaTableIncomplete(device, [texts[k] for k in missing], len(texts),
                                     (resolution,), space_name="ProxylessNAS mobile")
        if missing:
            estimator = MissEstimator(store, device)
            for k in missing:
                ms[texts[k]] = estimator.estimate(k.kind.value, key_cost(k))[0]
        self.estimated = len(missing)
        self.keys_total = len(texts)  # distinct kernel keys the space produces
        dense = np.zeros((space.n_blocks, len(choices)))
        for (j, c), keys in blocks.items():
            dense[j, c] = sum(ms[texts[k]] for k in keys)
        dense.flags.writeable = False
        self.block_ms = dense
        self.fixed_ms = float(sum(ms[texts[k]] for k in fixed))
        self._index = {op: c for c, op in enumerate(choices)}
        self._rows = np.arange(space.n_blocks)

    def encode(self, archs: Sequence[dict]) -> np.ndarray:
        """[N, 21] uint8 choice indices; InvalidInputError naming the first bad arch."""
        out = np.empty((len(archs), self.space.n_blocks), dtype=np.uint8)
        for n, arch in enumerate(archs):
            try:
                arch = self.space.validate(arch)
            except InvalidInputError as e:
                raise InvalidInputError(f"archs[{n}]: {e}") from None
            if arch["r"] != self.resolution:
                raise InvalidInputError(f"archs[{n}]: resolution {arch['r']}; this table is for "
                                        f"{self.resolution}")
            out[n] = [self._index[op] for op in arch["ops"]]
        return out

    def latency(self, choice_idx: np.ndarray) -> np.ndarray:
        """Kernel-sum ms of each encoded arch."""
        idx = np.asarray(choice_idx)
        if idx.ndim != 2 or idx.shape[1] != self.space.n_blocks:
            raise InvalidInputError(f"choice indices must be [N, {self.space.n_blocks}], got "
                                    f"{list(idx.shape)}")
        return self.fixed_ms + self.block_ms[self._rows, idx].sum(axis=1)

    def latency_one(self, arch: dict) -> float:
        return float(self.latency(self.encode([arch]))[0])


    # --- batches and search (the LatencyTable protocol of hwlat.nas.space)

    space_name, space_title = "proxyless-mobile", "ProxylessNAS mobile"

    @property
    def gene_choices(self) -> np.ndarray:
        """One gene per block: its choice index; `zero` (the last) only where it may be skipped."""
        n = len(self.space.choices)
        return np.array([n if self.space.skippable(j) else n - 1
                         for j in range(self.space.n_blocks)])

    def decode(self, choice_idx: np.ndarray) -> list[dict]:
        choices = self.space.choices
        return [{"ops": [choices[c] for c in row], "r": self.resolution}
                for row in np.asarray(choice_idx).tolist()]

    def sample(self, n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
        """n random archs, encoded: every block's choice uniform over those it allows."""
        rng = np.random.default_rng(rng)
        return rng.integers(0, self.gene_choices, size=(n, self.space.n_blocks)).astype(np.uint8)

    def genes(self, choice_idx: np.ndarray) -> np.ndarray:
        return np.asarray(choice_idx, dtype=np.int64)

    def from_genes(self, genes: np.ndarray) -> np.ndarray:
        return np.asarray(genes, dtype=np.uint8)

    def take(self, choice_idx: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return choice_idx[rows]

    def concat(self, encs: Sequence[np.ndarray]) -> np.ndarray:
        return np.concatenate(encs) if len(encs) else np.zeros((0, self.space.n_blocks), np.uint8)

    def smallest(self) -> tuple[dict, float]:
        """Each block's cheapest allowed choice: exact."""
        allowed = np.arange(len(self.space.choices)) < self.gene_choices[:, None]
        choice = np.where(allowed, self.block_ms, np.inf).argmin(axis=1)
        arch = self.decode(choice[None])[0]
        return arch, float(self.latency(choice[None])[0])

    def _cost_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if getattr(self, "_costs", None) is None:
            seen: dict = {}
            dense = np.array([[keys_cost(block_kernels(self.resolution, j, op, self.space), seen)
                               for op in self.space.choices] for j in range(self.space.n_blocks)],
                             dtype=np.int64)
            fixed = np.array(keys_cost(fixed_kernels(self.resolution, self.space), seen),
                             dtype=np.int64)
            self._costs = (dense, fixed)
        return self._costs

    def costs(self, choice_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dense, fixed = self._cost_arrays()
        total = dense[self._rows, np.asarray(choice_idx, dtype=np.intp)].sum(axis=1) + fixed
        return total[:, 0], total[:, 1]

    def params_bound(self) -> int:
        dense, fixed = self._cost_arrays()
        return int(fixed[1] + dense[..., 1].max(axis=1).sum())

    def describe(self, arch: dict) -> str:
        return f"resolution {arch['r']}"


def proxyless_latency(store: TableStore, device: str, arch: Any,
                      space: ProxylessSpace = PROXYLESS_MOBILE) -> list[tuple[str, float]]:
    """(part, ms) rows of one arch from the device's entries: "fixed" (stem, first block, head),
    then each searchable block that runs; a missing key raises OfaTableIncomplete."""
    arch = space.validate(arch)
    r = arch["r"]
    parts = [("fixed", fixed_kernels(r, space))]
    parts += [(f"block {j} {op}", block_kernels(r, j, op, space))
              for j, op in enumerate(arch["ops"]) if op != ZERO]
    texts = {k.text() for _, keys in parts for k in keys}
    found = store.get_many(device, texts)
    missing = sorted(texts - set(found))
    if missing:
        raise OfaTableIncomplete(device, missing, len(texts), (r,), space_name="this arch")
    return [(name, sum(found[k.text()].median_ms for k in keys)) for name, keys in parts]
