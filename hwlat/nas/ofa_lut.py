"""OFA MobileNetV3 archs -> their kernels' keys without exporting, and a dense table of latencies.

`ofa_mbv3_kernels(arch)` gives the KernelKeys that `fuse(load(path))` cuts from the arch's
exported ONNX file, so a NAS loop can query a table that `hwlat profile` filled, with neither
torch nor onnx: each block (stem and first block, every searchable block choice, the head) is
built as a Graph the way the zoo writes it (`hwlat.nas.blocks`), simplified as torch's exporter
simplifies it and cut by the real `hwlat.graph.fuse`; a test holds the keys to real exports on
every choice of every block.

`OfaLatencyTable` looks up every key the space can produce once and keeps, per resolution, block
position and (kernel size, expand ratio), the sum of that block's kernel medians in a dense
array; a batch of encoded archs is then one gather and one sum.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from functools import cache
from typing import Any, NamedTuple

import numpy as np

from hwlat.errors import HwlatError, InvalidInputError
from hwlat.graph.cost import key_cost
from hwlat.graph.kernel import KernelKey
from hwlat.lut.predict import MissEstimator
from hwlat.lut.store import TableStore
from hwlat.nas.blocks import conv_bn, graph_keys, inverted_residual, out_size
from hwlat.nas.spaces import OFA_MBV3, OFAMobileNetV3Space, make_divisible

__all__ = [
    "OfaEncoding",
    "OfaLatencyTable",
    "OfaTableIncomplete",
    "block_kernels",
    "fixed_kernels",
    "key_cost",
    "keys_cost",
    "ofa_mbv3_kernels",
]

_SHOWN = 1  # missing keys quoted per error (the rest counted)
_CHUNK = 4096  # archs per gather in `latency`: its temporaries stay in the core's L2 cache


# --- keys --------------------------------------------------------------------------------------

def _sizes(space: OFAMobileNetV3Space, r: int) -> tuple[int, tuple[int, ...]]:
    """Feature-map size after the stem, and at the input of each stage."""
    size = out_size(r, 3, 2)
    stem, stages = size, []
    for stride in space.strides:
        stages.append(size)
        size = out_size(size, 3, stride)  # every odd kernel gives the same size
    return stem, tuple(stages)


def _se(space: OFAMobileNetV3Space, s: int, mid: int) -> int | None:
    return make_divisible(mid // 4) if space.se[s] else None


@cache
def block_kernels(r: int, pos: int, k: int, e: int, space: OFAMobileNetV3Space = OFA_MBV3,
                  fusion: str = "default") -> tuple[KernelKey, ...]:
    """Kernels of block `pos` (= 4 * stage + index in stage) with kernel size k and expand ratio e
    at input resolution r, whatever the rest of the arch: the zoo's InvertedResidual built as a
    Graph and cut by `fuse` with the rule set `fusion` (the device file's)."""
    s, i = divmod(pos, space.max_depth)
    w = space.widths
    cin = space.stage_widths[s] if i else (space.stage_widths[s - 1] if s else w[1])
    cout = space.stage_widths[s]
    stride = space.strides[s] if i == 0 else 1
    size = _sizes(space, r)[1][s]
    if i:
        size = out_size(size, 3, space.strides[s])
    mid = make_divisible(round(cin * e), 8)
    return _block_keys(cin, cout, size, k, stride, mid, space.acts[s], _se(space, s, mid), fusion)


@cache
def _block_keys(cin: int, cout: int, size: int, k: int, stride: int, mid: int, act: str,
                se: int | None, fusion: str = "default") -> tuple[KernelKey, ...]:
    """One InvertedResidual's keys; blocks of the same shape (the later blocks of a stage, deep
    stages at neighbouring resolutions) are built once."""
    return graph_keys(lambda b: inverted_residual(b, b.input(1, cin, size, size), cout, k, stride,
                                                  mid, act, se=se), fusion)


def _front(r: int, space: OFAMobileNetV3Space, fusion: str = "default") -> tuple[KernelKey, ...]:
    """Stem and the fixed first block (expand 1, k3, identity shortcut)."""
    w = space.widths

    def make(b):
        x = conv_bn(b, b.input(1, 3, r, r), w[0], 3, 2, act="h_swish")
        return inverted_residual(b, x, w[1], 3, 1, w[0], space.acts[0], expand=False)
    return graph_keys(make, fusion)


def _head(r: int, space: OFAMobileNetV3Space) -> tuple[KernelKey, ...]:
    """Final expand, global pool, feature mix (no BN; its zero bias left out), flatten,
    classifier (its zero bias left out)."""
    w = space.widths
    size = out_size(_sizes(space, r)[1][-1], 3, space.strides[-1])

    def make(b):
        x = conv_bn(b, b.input(1, space.stage_widths[-1], size, size), w[7], act="h_swish")
        x = b.hardswish(b.conv2d(b.mean_hw(x), w[8]))
        return b.linear(b.flatten(x), space.n_classes, bias=False)
    return graph_keys(make)


@cache
def fixed_kernels(r: int, space: OFAMobileNetV3Space = OFA_MBV3,
                  fusion: str = "default") -> tuple[KernelKey, ...]:
    """Kernels every arch at resolution r has: stem, the fixed first block and the head (the
    head has no depthwise conv: every rule set cuts it alike)."""
    return (*_front(r, space, fusion), *_head(r, space))


def ofa_mbv3_kernels(arch: Any, space: OFAMobileNetV3Space = OFA_MBV3,
                     fusion: str = "default") -> list[KernelKey]:
    """The kernel keys `fuse(load(...), fusion)` cuts from the exported arch, in the model's
    order."""
    arch = space.validate(arch)
    r = arch["r"]
    fixed = fixed_kernels(r, space, fusion)
    n_front = len(_front(r, space, fusion))
    keys = list(fixed[:n_front])
    for s, depth in enumerate(arch["d"]):
        for i in range(depth):
            j = s * space.max_depth + i
            keys += block_kernels(r, j, arch["ks"][j], arch["e"][j], space, fusion)
    return keys + list(fixed[n_front:])


# --- the dense table ---------------------------------------------------------------------------

class OfaTableIncomplete(HwlatError, LookupError):
    """The device's table lacks kernel keys the space produces; says how many and names a few."""

    def __init__(self, device: str, missing: list[str], total: int, resolutions: Sequence[int],
                 space_name: str = "OFA MobileNetV3"):
        self.device, self.missing, self.total = device, missing, total
        shown = ", ".join(repr(k) for k in missing[:_SHOWN])
        more = f" and {len(missing) - _SHOWN} more" if len(missing) > _SHOWN else ""
        super().__init__(
            f"device '{device}' lacks {len(missing)} of the {total} kernel keys {space_name} "
            f"produces at resolutions {_ranges(resolutions)}: {shown}{more}; profile subnets that "
            f"cover them (`hwlat profile MODEL.onnx --device {device}`), pass fewer resolutions, "
            "or estimate them from the measured kernels (--estimate; estimate=True in Python)"
        )


class OfaEncoding(NamedTuple):
    """A batch of N archs as indices into the space's choices; inactive blocks keep their k and e
    (so decode gives back the arch) but are masked out by `active`."""

    r_idx: np.ndarray  # [N] int16: position of r in the table's resolutions
    k_idx: np.ndarray  # [N, 20] uint8: position of ks[j] in space.kernel_sizes
    e_idx: np.ndarray  # [N, 20] uint8: position of e[j] in space.expand_ratios
    active: np.ndarray  # [N, 20] bool: block j runs (j % 4 < d[j // 4])


class OfaLatencyTable:
    """Kernel-sum latency (ms) of any OFA MobileNetV3 arch on one device, from a TableStore.

    Built once: every distinct kernel key the space produces at `resolutions` (all of the
    space's by default) is looked up, and misses either raise OfaTableIncomplete or, with
    `estimate=True`, are estimated as `hwlat.lut.predict` estimates them (`self.estimated` counts
    them). The keys are cut where the device's runtime draws kernel boundaries (its file's
    `fusion`, or `fusion=`). The result equals `predict(g, fuse(g, fusion), store, device,
    correct=False).kernel_sum_ms`.

    `block_ms[r_idx, j, k_idx, e_idx]`: block j's kernels summed; `fixed_ms[r_idx]`: stem, first
    block and head.
    """

    def __init__(self, store: TableStore, device: str, space: OFAMobileNetV3Space = OFA_MBV3, *,
                 resolutions: Sequence[int] | None = None, estimate: bool = False,
                 fusion: str | None = None):
        from hwlat.devices.spec import fusion_of

        res = tuple(space.resolutions if resolutions is None else resolutions)
        bad = [r for r in res if r not in space.resolutions]
        if not res or bad or len(set(res)) != len(res):
            raise InvalidInputError(
                f"resolutions {list(res)!r}: need distinct values of {_ranges(space.resolutions)}"
            )
        self.space, self.device, self.resolutions = space, device, res
        self.fusion = fusion_of(device) if fusion is None else fusion
        ks, es, nb = space.kernel_sizes, space.expand_ratios, space.n_blocks
        blocks = {(ri, j, ki, ei): block_kernels(r, j, k, e, space, self.fusion)
                  for ri, r in enumerate(res) for j in range(nb)
                  for ki, k in enumerate(ks) for ei, e in enumerate(es)}
        fixed = {ri: fixed_kernels(r, space, self.fusion) for ri, r in enumerate(res)}
        texts = {key: key.text() for keys in (*blocks.values(), *fixed.values()) for key in keys}
        found = store.get_many(device, texts.values())
        ms = {t: e.median_ms for t, e in found.items()}
        missing = [k for k, t in texts.items() if t not in ms]
        if missing and not estimate:
            raise OfaTableIncomplete(device, [texts[k] for k in missing], len(texts), res)
        if missing:
            estimator = MissEstimator(store, device)
            for k in missing:
                ms[texts[k]] = estimator.estimate(k.kind.value, key_cost(k))[0]
        self.estimated = len(missing)
        self.keys_total = len(texts)  # distinct kernel keys the space produces

        n_choices = len(ks) * len(es)
        # one spare choice column of zeros: where an inactive block's gather lands
        dense = np.zeros((len(res), nb, n_choices + 1))
        for (ri, j, ki, ei), keys in blocks.items():
            dense[ri, j, ki * len(es) + ei] = sum(ms[texts[k]] for k in keys)
        dense.flags.writeable = False  # block_ms and fixed_ms are views the queries rely on
        self._flat = dense.reshape(-1)
        self._inactive = n_choices
        self._base = (np.arange(len(res) * nb, dtype=np.intp) * (n_choices + 1)).reshape(len(res), nb)
        self.block_ms = dense[:, :, :n_choices].reshape(len(res), nb, len(ks), len(es))
        self.fixed_ms = np.array([sum(ms[texts[k]] for k in fixed[ri]) for ri in range(len(res))])
        self.fixed_ms.flags.writeable = False
        # plain Python for latency_one: r -> (fixed ms, ms[j][k][e] indexed by the values k and e),
        # and depths -> the blocks they run; list indexing beats hashing (k, e) tuples 3 to 1
        self._one = {}
        for ri, r in enumerate(res):
            per_block = [_by_value(ks, [_by_value(es, row) for row in self.block_ms[ri, j].tolist()])
                         for j in range(nb)]
            self._one[r] = (float(self.fixed_ms[ri]), per_block)
        m = space.max_depth
        self._runs = {d: tuple(j for s, n in enumerate(d) for j in range(m * s, m * s + n))
                      for d in itertools.product(space.depths, repeat=space.n_stages)}
        self._r_lut = _lut(res)
        self._k_lut = _lut(ks)
        self._e_lut = _lut(es)
        self._d_lut = _lut(space.depths)
        self._depths = np.array(space.depths)
        self._ks, self._es = set(ks), set(es)
        self._in_stage = np.tile(np.arange(space.max_depth), space.n_stages)  # [20]: i of block j

    # --- encoding

    def encode(self, archs: Sequence[dict]) -> OfaEncoding:
        """Index arrays of a list of arch dicts; InvalidInputError naming the first bad arch."""
        if isinstance(archs, dict | str) or not hasattr(archs, "__len__"):
            raise InvalidInputError(
                f"encode takes a list of arch dicts, got {type(archs).__name__}; for one arch "
                "use latency_one(arch) or encode([arch])"
            )
        enc = self._encode_fast(archs)
        if enc is not None:
            return enc
        for n, arch in enumerate(archs):
            try:
                arch = self.space.validate(arch)
            except InvalidInputError as e:
                raise InvalidInputError(f"archs[{n}]: {e}") from None
            if arch["r"] not in self.resolutions:
                raise InvalidInputError(
                    f"archs[{n}]: resolution {arch['r']} is not in this table (built for "
                    f"{_ranges(self.resolutions)})"
                )
        raise InvalidInputError("archs must be a sequence of arch dicts {'ks', 'e', 'd', 'r'}")

    def _encode_fast(self, archs: Sequence[dict]) -> OfaEncoding | None:
        """The encoding when every arch is valid, else None (encode then finds the culprit)."""
        sp = self.space
        if len(archs) == 0:
            empty = np.zeros((0, sp.n_blocks), dtype=np.uint8)
            return OfaEncoding(np.zeros(0, np.int16), empty, empty, empty.astype(bool))
        try:
            if any(not isinstance(a, dict) or len(a) != 4 for a in archs):
                return None
            ks = np.array([a["ks"] for a in archs])
            es = np.array([a["e"] for a in archs])
            ds = np.array([a["d"] for a in archs])
            rs = np.array([a["r"] for a in archs])
        except (KeyError, TypeError, ValueError):
            return None
        n = len(archs)
        shapes = ((ks, (n, sp.n_blocks)), (es, (n, sp.n_blocks)), (ds, (n, sp.n_stages)), (rs, (n,)))
        if any(a.shape != shape or a.dtype.kind not in "iu" for a, shape in shapes):
            return None
        idx = [_index(a, lut) for a, lut in ((rs, self._r_lut), (ks, self._k_lut),
                                                (es, self._e_lut), (ds, self._d_lut))]
        if any(i is None for i in idx):
            return None
        r_idx, k_idx, e_idx, d_idx = idx
        active = np.repeat(self._depths[d_idx], sp.max_depth, axis=1) > self._in_stage
        return OfaEncoding(r_idx.astype(np.int16), k_idx.astype(np.uint8), e_idx.astype(np.uint8),
                           active)

    def decode(self, enc: OfaEncoding) -> list[dict]:
        """The arch dicts of an encoding (inverse of encode)."""
        sp = self.space
        ks = np.asarray(sp.kernel_sizes)[enc.k_idx].tolist()
        es = np.asarray(sp.expand_ratios)[enc.e_idx].tolist()
        ds = enc.active.reshape(len(enc.active), sp.n_stages, sp.max_depth).sum(axis=2).tolist()
        rs = np.asarray(self.resolutions)[enc.r_idx].tolist()
        return [{"ks": k, "e": e, "d": d, "r": r} for k, e, d, r in zip(ks, es, ds, rs, strict=True)]

    def sample(self, n: int, rng: np.random.Generator | int | None = None) -> OfaEncoding:
        """n random archs, encoded, drawn as the space's `sample` draws them (every field uniform
        and independent) over this table's resolutions."""
        rng = np.random.default_rng(rng)
        sp = self.space
        k_idx = rng.integers(len(sp.kernel_sizes), size=(n, sp.n_blocks), dtype=np.uint8)
        e_idx = rng.integers(len(sp.expand_ratios), size=(n, sp.n_blocks), dtype=np.uint8)
        d = self._depths[rng.integers(len(sp.depths), size=(n, sp.n_stages))]
        active = np.repeat(d, sp.max_depth, axis=1) > self._in_stage
        r_idx = rng.integers(len(self.resolutions), size=n, dtype=np.int16)
        return OfaEncoding(r_idx, k_idx, e_idx, active)

    # --- queries

    def latency(self, enc: OfaEncoding) -> np.ndarray:
        """Kernel-sum latency (ms) of every encoded arch: gathers and a sum, in numpy."""
        r_idx, k_idx, e_idx, active = enc
        n, n_k, n_e = len(r_idx), len(self.space.kernel_sizes), len(self.space.expand_ratios)
        if not (k_idx.shape == e_idx.shape == active.shape == (n, self.space.n_blocks)):
            raise InvalidInputError(
                f"encoding shapes r_idx {r_idx.shape}, k_idx {k_idx.shape}, e_idx {e_idx.shape}, "
                f"active {active.shape}; expected (N,) and (N, {self.space.n_blocks}); use encode()"
            )
        # an index past its choices would silently read a neighbouring block's cost
        for name, idx, bound in (("r_idx", r_idx, len(self.resolutions)), ("k_idx", k_idx, n_k),
                                 ("e_idx", e_idx, n_e)):
            if n and (idx.min() < 0 or idx.max() >= bound):
                raise InvalidInputError(
                    f"encoding {name} spans {idx.min()}..{idx.max()}; valid: 0..{bound - 1}"
                )
        out = np.empty(n)
        for lo in range(0, n, _CHUNK):
            hi = min(lo + _CHUNK, n)
            r = r_idx[lo:hi]
            choice = np.where(active[lo:hi], k_idx[lo:hi] * n_e + e_idx[lo:hi], self._inactive)
            idx = self._base[r]
            idx += choice
            np.add(self._flat.take(idx).sum(axis=1), self.fixed_ms[r], out=out[lo:hi])
        return out

    def latency_one(self, arch: dict) -> float:
        """Kernel-sum latency (ms) of one arch dict, in plain Python (no numpy per call)."""
        try:
            fixed, blocks = self._one[arch["r"]]
            ks, es = arch["ks"], arch["e"]
            # the checks that make the lookups below safe (a -1 would index from the end)
            if not (len(arch) == 4 and len(ks) == len(es) == len(blocks) and set(ks) <= self._ks
                    and set(es) <= self._es):
                raise KeyError("ks")
            total = fixed
            for j in self._runs[tuple(arch["d"])]:
                total += blocks[j][ks[j]][es[j]]
            return total
        except (KeyError, TypeError):
            return float(self.latency(self.encode([arch]))[0])  # encode names what is wrong

    def resolution_index(self, r: int) -> int:
        if r not in self.resolutions:
            raise InvalidInputError(
                f"resolution {r!r} is not in this table (built for {_ranges(self.resolutions)})"
            )
        return self.resolutions.index(r)


    # --- what `hwlat.nas.search` needs (the LatencyTable protocol of hwlat.nas.space)

    space_name, space_title = "ofa-mbv3", "OFA MobileNetV3"

    @property
    def gene_choices(self) -> np.ndarray:
        """Genes: 20 kernel indices, 20 expand indices, 5 depth indices, 1 resolution index."""
        sp = self.space
        return np.array([len(sp.kernel_sizes)] * sp.n_blocks + [len(sp.expand_ratios)] * sp.n_blocks
                        + [len(sp.depths)] * sp.n_stages + [len(self.resolutions)])

    def genes(self, enc: OfaEncoding) -> np.ndarray:
        sp = self.space
        depth = enc.active.reshape(len(enc.active), sp.n_stages, -1).sum(axis=2)
        return np.hstack([enc.k_idx, enc.e_idx, self._d_lut[depth],
                          enc.r_idx[:, None]]).astype(np.int64)

    def from_genes(self, genes: np.ndarray) -> OfaEncoding:
        nb, ns = self.space.n_blocks, self.space.n_stages
        d = self._depths[genes[:, 2 * nb:2 * nb + ns]]
        active = np.repeat(d, self.space.max_depth, axis=1) > self._in_stage
        return OfaEncoding(genes[:, -1].astype(np.int16), genes[:, :nb].astype(np.uint8),
                           genes[:, nb:2 * nb].astype(np.uint8), active)

    def take(self, enc: OfaEncoding, rows: np.ndarray) -> OfaEncoding:
        return OfaEncoding(*(a[rows] for a in enc))

    def concat(self, encs: Sequence[OfaEncoding]) -> OfaEncoding:
        return OfaEncoding(*(np.concatenate(parts) for parts in zip(*encs, strict=True)))

    def smallest(self) -> tuple[dict, float]:
        """Per resolution, each block's cheapest (k, e) and each stage's cheapest depth; exact,
        with no sampling."""
        sp = self.space
        n_r, n_e = len(self.resolutions), len(sp.expand_ratios)
        flat = self.block_ms.reshape(n_r, sp.n_blocks, -1)  # [R, 20, K*E]
        choice = flat.argmin(axis=2)
        per_block = flat.min(axis=2).reshape(n_r, sp.n_stages, sp.max_depth)
        stage_ms = np.cumsum(per_block, axis=2)[:, :, np.array(sp.depths) - 1]  # [R, S, depth]
        d_idx = stage_ms.argmin(axis=2)
        ri = int((self.fixed_ms + stage_ms.min(axis=2).sum(axis=1)).argmin())
        arch = {"ks": [sp.kernel_sizes[c // n_e] for c in choice[ri].tolist()],
                "e": [sp.expand_ratios[c % n_e] for c in choice[ri].tolist()],
                "d": [sp.depths[i] for i in d_idx[ri].tolist()], "r": self.resolutions[ri]}
        # the latency as the batched query sums it, so the budget check agrees to the last bit
        return arch, float(self.latency(self.encode([arch]))[0])

    def _cost_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """[resolution, block, choice (+1 spare column of zeros for inactive blocks), macs/params]
        and [resolution, macs/params] of the fixed part, from the kernel keys, built once."""
        if getattr(self, "_costs", None) is None:
            sp, res = self.space, self.resolutions
            choices = [(ki * len(sp.expand_ratios) + ei, k, e)
                       for ki, k in enumerate(sp.kernel_sizes)
                       for ei, e in enumerate(sp.expand_ratios)]
            dense = np.zeros((len(res), sp.n_blocks, len(choices) + 1, 2), dtype=np.int64)
            seen: dict = {}  # the space's ~24,000 block kernels are ~2,000 distinct keys
            for ri, r in enumerate(res):
                for j in range(sp.n_blocks):
                    for c, k, e in choices:
                        dense[ri, j, c] = keys_cost(block_kernels(r, j, k, e, sp), seen)
            fixed = np.array([keys_cost(fixed_kernels(r, sp), seen) for r in res], dtype=np.int64)
            self._costs = (dense, fixed)
        return self._costs

    def costs(self, enc: OfaEncoding) -> tuple[np.ndarray, np.ndarray]:
        """(MACs, params) of every encoded arch, int64."""
        dense, fixed = self._cost_arrays()
        choice = np.where(enc.active, enc.k_idx.astype(np.intp) * len(self.space.expand_ratios)
                          + enc.e_idx, self._inactive)
        r = enc.r_idx.astype(np.intp)
        total = dense[r[:, None], np.arange(choice.shape[1]), choice].sum(axis=1)
        total += fixed[r]
        return total[:, 0], total[:, 1]

    def params_bound(self) -> int:
        dense, fixed = self._cost_arrays()
        return int(fixed[:, 1].max() + dense[..., 1].max(axis=2).sum(axis=1).max())

    def describe(self, arch: dict) -> str:
        return f"resolution {arch['r']}, depths {arch['d']}"


def keys_cost(keys, seen: dict | None = None) -> tuple[int, int]:
    """(MACs, params) summed over kernel keys (`key_cost`); `seen` caches each key's."""
    seen = {} if seen is None else seen
    macs = params = 0
    for k in keys:
        if k not in seen:
            c = key_cost(k)
            seen[k] = (c.macs or 0, c.params or 0)
        macs, params = macs + seen[k][0], params + seen[k][1]
    return macs, params


def _by_value(choices: Sequence[int], values: list) -> list:
    """values[i] at index choices[i] of a list, None elsewhere."""
    out = [None] * (max(choices) + 1)
    for c, v in zip(choices, values, strict=True):
        out[c] = v
    return out


def _lut(choices: Sequence[int]) -> np.ndarray:
    """value -> position in choices, -1 elsewhere, for values 0..max(choices)."""
    lut = np.full(max(choices) + 1, -1, dtype=np.int64)
    lut[list(choices)] = np.arange(len(choices))
    return lut


def _index(values: np.ndarray, lut: np.ndarray) -> np.ndarray | None:
    if values.size and (values.min() < 0 or values.max() >= len(lut)):
        return None
    idx = lut[values]
    return None if (idx < 0).any() else idx


def _ranges(values: Sequence[int]) -> str:
    values = list(values)
    if len(values) > 4 and all(b - a == values[1] - values[0] for a, b in itertools.pairwise(values)):
        return f"{values[0]}..{values[-1]} step {values[1] - values[0]}"
    return ", ".join(map(str, values))
