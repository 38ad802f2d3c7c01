"""NAS-Bench-201 cells -> their kernels' keys without exporting, and latency from a table.

`nb201_kernels(arch)` gives the KernelKeys that `fuse(load(path))` cuts from the cell's exported
ONNX file (`hwlat.zoo.from_nb201` + `hwlat.export`) without torch and without exporting, so a
NAS loop or a few-shot fit can use all 15,625 cells (a few ms a cell, cached): the network is
built as a Graph (`hwlat.graph.builder`), simplified as the export simplifies it
(`hwlat.graph.simplify`: BatchNorm folded into the conv before it, the head's too when the last
cell's output is a conv output nothing else reads; one op per identical op on the same inputs;
what depends on constants alone folded, so a node with only `none` inputs is zeros and a cell
with no path from its input to its output makes the whole network a constant, no kernel at all;
what nothing reads dropped) and cut by the real `hwlat.graph.fuse`. A test holds it to real
exports on every op of every edge. The network is built with 2 cells per stage, not 5, and once
per cell with its dead edges dropped (`_live_kernels`): a cell between two cells repeats; tests
hold this to the whole network built at once (`network_kernels`).
"""

from __future__ import annotations

import csv
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path

import numpy as np

from hwlat.errors import HwlatError, InvalidInputError
from hwlat.graph.builder import GraphBuilder
from hwlat.graph.cost import key_cost
from hwlat.graph.fuse import fuse
from hwlat.graph.ir import TensorSig
from hwlat.graph.kernel import KernelKey, KernelKind
from hwlat.graph.simplify import simplify
from hwlat.lut.fewshot import OVERHEAD_KEY
from hwlat.lut.predict import MissEstimator
from hwlat.lut.store import TableStore
from hwlat.nas.blocks import graph_keys
from hwlat.nas.ofa_lut import keys_cost
from hwlat.nas.spaces import NB201_EDGES, NB201_NODES, NB201_OPS, nb201_arch, parse_nb201

__all__ = [
    "NB201_COVERING",
    "NB201_STAGES",
    "Nb201LatencyTable",
    "Nb201TableIncomplete",
    "nb201_all_keys",
    "nb201_features",
    "nb201_fit_inputs",
    "nb201_kernel_texts",
    "nb201_kernels",
    "nb201_latency",
    "nb201_space_keys",
    "nb201_unfolded_reference",
    "nb201_unfolded_texts",
    "read_archs",
]

_F32 = "float32"
STEM_CHANNELS = 16
CELLS_PER_STAGE = 5
NB201_STAGES = ((16, 32), (32, 16), (64, 8))  # (channels, feature-map size) of the 3 stages
NUM_CLASSES = 10
_SHOWN = 1


@cache
def _t(*shape: int, dtype: str = _F32) -> TensorSig:
    return TensorSig(shape, dtype)


def _relu_conv_bn(b: GraphBuilder, x: str, c: int, k: int, stride: int = 1) -> str:
    return b.batch_norm(b.conv2d(b.relu(x), c, k, stride))


def _cell(b: GraphBuilder, x: str, ops: tuple[str, ...], c: int, size: int) -> str:
    """The searched cell: node j sums its incoming edges; `none` edges (Zero) add nothing, and a
    node with only `none` edges is zeros."""
    nodes = [x]
    for j in range(1, NB201_NODES):
        inputs = []
        for (target, i), op in zip(NB201_EDGES, ops, strict=True):
            if target != j or op == "none":
                continue
            src = nodes[i]
            if op == "skip_connect":
                inputs.append(src)
            elif op == "avg_pool_3x3":  # nn.AvgPool2d(3, 1, 1, count_include_pad=False)
                inputs.append(b.avg_pool2d(src, 3, 1, 1, count_include_pad=False))
            else:
                inputs.append(_relu_conv_bn(b, src, c, 1 if op == "nor_conv_1x1" else 3))
        acc = inputs[0] if inputs else b.const(1, c, size, size)
        for v in inputs[1:]:  # `sum(inputs[1:], inputs[0])`: a chain of Adds
            acc = b.add(acc, v)
        nodes.append(acc)
    return nodes[-1]


def _reduction(b: GraphBuilder, x: str, cout: int) -> str:
    """NB201's ResNet reduction block: ReLU-conv-BN 3x3 stride 2, ReLU-conv-BN 3x3, plus a
    shortcut of AvgPool2d(2, 2) and a 1x1 conv (no bias, no BN)."""
    shortcut = b.conv2d(b.avg_pool2d(x, 2, 2), cout, 1)
    body = _relu_conv_bn(b, _relu_conv_bn(b, x, cout, 3, 2), cout, 3)
    return b.add(shortcut, body)


def _network(b: GraphBuilder, ops: tuple[str, ...]) -> str:
    x = b.batch_norm(b.conv2d(b.input(1, 3, 32, 32), STEM_CHANNELS, 3))
    for s, (c, size) in enumerate(NB201_STAGES):
        if s:
            x = _reduction(b, x, c)
        for _ in range(CELLS_PER_STAGE):
            x = _cell(b, x, ops, c, size)
    x = b.mean_hw(b.relu(b.batch_norm(x)))
    return b.linear(b.flatten(x), NUM_CLASSES)


def network_kernels(ops: tuple[str, ...]) -> tuple[KernelKey, ...]:
    """The keys of the whole network built and cut at once (15 cells): what the fast path
    (`_kernels`) must equal; tests and benchmarks/nb201_keys.py compare the two."""
    return graph_keys(lambda b: _network(b, ops))


# --- the fast path: each cell's keys from a network with 2 cells per stage -------------------
#
# The 5 cells of a stage are the same cell, so the whole network's kernels are: the stem's, and
# per stage the first cell's (its left neighbour the stem or a reduction), three times the
# kernels of a cell between two cells, the last cell's (its right neighbour a reduction or the
# head), then the reduction's or the head's. A kernel belongs to the part its first node was
# built in. A network with 2 cells per stage, A then B, is cut by the real `fuse`: A has the
# stem's or the reduction's left and a cell's right, B a cell's left. A cell between two cells
# starts a kernel at each node B starts one at (what a cell's end takes from B's start, A's end
# takes from B's: nothing starts there in either), and the kernel it starts there is A's (whose
# right is a cell); where A starts none, the stem or the reduction took that node, which only
# the producer of the cell's input can take (its first ReLU or Add), so B's lone-node kernel.
# Edges into a node that reaches no cell output are dropped by the export (`_live`): cells that
# differ only there share one derivation. They are made `none` before the derivation, as a
# dead node can stand for the next cell's op (a pool of the same value, merged into it as a
# common subexpression), which would move a kernel from one cell to the one before it.

def _live(ops: tuple[str, ...]) -> tuple[str, ...]:
    """The cell with every edge into a node that reaches no cell output set to `none`."""
    edge = dict(zip(NB201_EDGES, ops, strict=True))
    reach = {NB201_NODES - 1: True}
    for i in range(NB201_NODES - 2, -1, -1):
        reach[i] = any(edge[(j, i)] != "none" and reach[j] for j in range(i + 1, NB201_NODES))
    return tuple(op if reach[j] else "none" for (j, _), op in zip(NB201_EDGES, ops, strict=True))


@cache
def _live_kernels(ops: tuple[str, ...]) -> tuple[KernelKey, ...]:
    b = GraphBuilder()
    bounds: list[int] = []  # the node count where each part starts

    def mark() -> None:
        bounds.append(b.node_count)

    mark()
    x = b.batch_norm(b.conv2d(b.input(1, 3, 32, 32), STEM_CHANNELS, 3))
    for s, (c, size) in enumerate(NB201_STAGES):
        if s:
            mark()
            x = _reduction(b, x, c)
        for _ in range(2):
            mark()
            x = _cell(b, x, ops, c, size)
    mark()
    x = b.mean_hw(b.relu(b.batch_norm(x)))
    out = b.linear(b.flatten(x), NUM_CLASSES)
    g = b.build(out)
    built = {n.name: n.index for n in g.nodes}  # simplify keeps the names of the nodes it keeps
    parts: list[dict[int, KernelKey]] = [{} for _ in bounds]  # by the first node's local index
    for k in fuse(simplify(g)):
        i = built[k.nodes[0]]
        p = bisect_right(bounds, i) - 1
        parts[p][i - bounds[p]] = k.key
    keys: list[KernelKey] = []
    for s in range(len(NB201_STAGES)):
        context, first, last = (list(parts[3 * s + j].values()) for j in range(3))
        a, b_ = parts[3 * s + 1], parts[3 * s + 2]
        between = [a.get(n, key) for n, key in b_.items()]
        keys += context + first + between * (CELLS_PER_STAGE - 2) + last
    return tuple(keys + list(parts[-1].values()))


def _kernels(ops: tuple[str, ...]) -> tuple[KernelKey, ...]:
    return _live_kernels(_live(ops))


def nb201_kernels(arch: str) -> list[KernelKey]:
    """The kernel keys `fuse(load(...))` cuts from the exported cell's network; empty for a cell
    with no path from its input to its output (the export folds the network into a constant).
    In graph order of the network whose dead edges (into nodes that reach no output) are
    `none`: a dead conv's ReLU or a dead pool, merged with a live one, would only move it."""
    return list(_kernels(parse_nb201(arch)))


@cache
def _text(key: KernelKey) -> str:
    return key.text()


@cache
def _texts(ops: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(map(_text, _kernels(ops)))


def nb201_kernel_texts(arch: str) -> list[str]:
    """`[k.text() for k in nb201_kernels(arch)]`, cached."""
    return list(_texts(parse_nb201(arch)))


def nb201_space_keys(archs: Iterable[str]) -> dict[str, KernelKey]:
    """Every distinct kernel key of the given cells, by text."""
    out: dict[str, KernelKey] = {}
    for a in archs:
        for k in _kernels(parse_nb201(a)):
            out.setdefault(_text(k), k)
    return out


# Cells that together run every distinct kernel key of the space (67), found by a greedy set
# cover over all 15,625 (benchmarks/fewshot_nb201.py); tests check random cells against them.
NB201_COVERING = (26, 752, 809, 1383, 3532, 7818)


def nb201_all_keys() -> dict[str, KernelKey]:
    """Every distinct kernel key of the NB201 space, by text."""
    return nb201_space_keys(nb201_arch(i) for i in NB201_COVERING)


def nb201_features(archs: Sequence[str], keys: Sequence[str] | None = None
                   ) -> tuple[list[str], np.ndarray]:
    """(key texts, counts): counts[i, j] is how many times cell i runs kernel keys[j]. `keys`
    defaults to every key the cells have, sorted; a cell's key not in `keys` raises."""
    rows = [Counter(nb201_kernel_texts(a)) for a in archs]
    if keys is None:
        keys = sorted({k for r in rows for k in r})
    col = {k: j for j, k in enumerate(keys)}
    counts = np.zeros((len(rows), len(keys)))
    for i, r in enumerate(rows):
        for k, n in r.items():
            if k not in col:
                raise InvalidInputError(f"cell {archs[i]!r} runs kernel {k!r}, which is not in keys")
            counts[i, col[k]] = n
    return list(keys), counts


class Nb201TableIncomplete(HwlatError, LookupError):
    """A table lacks kernel keys the cells need; says how many and names a few."""

    def __init__(self, missing: list[str]):
        self.missing = missing
        shown = ", ".join(repr(k) for k in missing[:_SHOWN])
        more = f" and {len(missing) - _SHOWN} more" if len(missing) > _SHOWN else ""
        super().__init__(
            f"the table lacks {len(missing)} kernel keys these NB201 cells run: {shown}{more}; "
            "profile cells that contain them, fit the device's table with `hwlat lut fit`, or "
            "estimate them from the measured kernels (--estimate; estimate=True in Python)"
        )


def nb201_latency(table: Mapping[str, float], archs: Sequence[str]) -> np.ndarray:
    """Latency (ms) of each cell: its kernels' ms from `table` summed, plus `table`'s
    OVERHEAD_KEY entry when it has one (a few-shot fitted table does), plus the unfolded work
    (`nb201_unfolded_texts`) of the classes the table has entries for (a table fitted with
    `hwlat lut fit --zero-work` does)."""
    keys, counts = nb201_features(archs)
    missing = [k for k in keys if k not in table]
    if missing:
        raise Nb201TableIncomplete(missing)
    ms = np.array([table[k] for k in keys])
    total = counts @ ms + float(table.get(OVERHEAD_KEY, 0.0))
    classes = tuple(sorted({k.split("|")[2] for k in table if k.startswith(UNFOLDED + "|")}))
    if classes:
        for i, a in enumerate(archs):
            texts = nb201_unfolded_texts(a, classes)
            missing = [k for k in texts if k not in table]
            if missing:
                raise Nb201TableIncomplete(sorted(set(missing)))
            total[i] += sum(table[k] for k in texts)
    return total


class Nb201LatencyTable:
    """Latency (ms) of NB201 cells on one device, from its entries in a TableStore (a profiled
    table, or one `hwlat lut fit` fitted), as `nb201_latency` gives it. A batch is encoded as
    [N, 6] op indices (one per edge, in the cell string's order, positions in NB201_OPS); each
    distinct cell's latency is worked out once and kept. Kernel keys the device lacks raise
    Nb201TableIncomplete, or with `estimate=True` are estimated as `hwlat.lut.predict` estimates
    them (counted in `estimated`)."""

    space_name, space_title = "nb201", "NAS-Bench-201"

    def __init__(self, store: TableStore, device: str, *, estimate: bool = False):
        entries = store.entries(device)
        if not entries:
            raise InvalidInputError(
                f"the table has no entries for device '{device}'; profile it or fit one with "
                f"`hwlat lut fit --space nb201 --device {device}`")
        self.device, self.space = device, None
        self._table = {e.key: e.median_ms for e in entries}
        self._estimator = MissEstimator(store, device) if estimate else None
        self.estimated = 0
        self._ms: dict[int, float] = {}
        self._costs: dict[int, tuple[int, int]] = {}
        self.gene_choices = np.full(len(NB201_EDGES), len(NB201_OPS))
        self._radix = len(NB201_OPS) ** np.arange(len(NB201_EDGES) - 1, -1, -1)
        self._op_index = {op: i for i, op in enumerate(NB201_OPS)}

    def encode(self, archs: Sequence[str]) -> np.ndarray:
        if isinstance(archs, str):
            raise InvalidInputError("encode takes a list of cell strings; for one cell use "
                                    "latency_one(arch) or encode([arch])")
        out = np.empty((len(archs), len(NB201_EDGES)), dtype=np.uint8)
        for n, arch in enumerate(archs):
            try:
                out[n] = [self._op_index[op] for op in parse_nb201(arch)]
            except InvalidInputError as e:
                raise InvalidInputError(f"archs[{n}]: {e}") from None
        return out

    def decode(self, enc: np.ndarray) -> list[str]:
        return [nb201_arch(int(i)) for i in self._indices(enc)]

    def sample(self, n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
        rng = np.random.default_rng(rng)
        return rng.integers(0, len(NB201_OPS), size=(n, len(NB201_EDGES))).astype(np.uint8)

    def _indices(self, enc: np.ndarray) -> np.ndarray:
        enc = np.asarray(enc)
        if enc.ndim != 2 or enc.shape[1] != len(NB201_EDGES) or (
                enc.size and (enc.min() < 0 or enc.max() >= len(NB201_OPS))):
            raise InvalidInputError(f"NB201 encodings are [N, 6] op indices 0..4, got shape "
                                    f"{list(enc.shape)}; use encode()")
        return enc.astype(np.int64) @ self._radix

    def _fill(self, indices: np.ndarray) -> None:
        new = [int(i) for i in dict.fromkeys(indices.tolist()) if int(i) not in self._ms]
        if not new:
            return
        archs = [nb201_arch(i) for i in new]
        if self._estimator is not None:
            for a in archs:
                for k in nb201_kernels(a):
                    text = _text(k)
                    if text not in self._table:
                        self._table[text] = self._estimator.estimate(k.kind.value, key_cost(k))[0]
                        self.estimated += 1
        self._ms.update(zip(new, nb201_latency(self._table, archs).tolist(), strict=True))

    def latency(self, enc: np.ndarray) -> np.ndarray:
        idx = self._indices(enc)
        self._fill(idx)
        return np.array([self._ms[i] for i in idx.tolist()], dtype=float)

    def latency_one(self, arch: str) -> float:
        return float(self.latency(self.encode([arch]))[0])

    # --- search (the LatencyTable protocol of hwlat.nas.space)

    def genes(self, enc: np.ndarray) -> np.ndarray:
        return np.asarray(enc, dtype=np.int64)

    def from_genes(self, genes: np.ndarray) -> np.ndarray:
        return np.asarray(genes, dtype=np.uint8)

    def take(self, enc: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return enc[rows]

    def concat(self, encs: Sequence[np.ndarray]) -> np.ndarray:
        return np.concatenate(encs) if len(encs) else np.zeros((0, len(NB201_EDGES)), np.uint8)

    def smallest(self) -> tuple[str, float]:
        """The all-`none` cell: no kernel (the export folds it to a constant), so nothing but
        the table's overhead entry, and no kernel time is negative."""
        arch = nb201_arch(0)
        return arch, self.latency_one(arch)

    def costs(self, enc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = self._indices(enc).tolist()
        for i in idx:
            if i not in self._costs:
                self._costs[i] = keys_cost(nb201_kernels(nb201_arch(i)))
        out = np.array([self._costs[i] for i in idx], dtype=np.int64).reshape(len(idx), 2)
        return out[:, 0], out[:, 1]

    def params_bound(self) -> int:
        """The all-3x3-conv cell's params (the most weights), plus a constant operand the size
        of a feature map at every node of every cell (zeros a node with only `none` edges
        feeds on)."""
        conv3 = "|{0}~0|+|{0}~0|{0}~1|+|{0}~0|{0}~1|{0}~2|".format("nor_conv_3x3")
        zeros = sum(CELLS_PER_STAGE * (NB201_NODES - 1) * c * size * size
                    for c, size in NB201_STAGES)
        return keys_cost(nb201_kernels(conv3))[1] + zeros

    def describe(self, arch: str) -> str:
        return f"cell {arch}"


def read_archs(path: Path | str, check: Callable[[str], object] | None = None) -> list[str]:
    """Cell strings from a CSV with an `arch` column (other columns ignored), or from a file with
    one cell string per line; each checked (by `check`, NB201's parser by default), a bad one
    named by its line."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise InvalidInputError(f"{path}: cannot read ({e.strerror})") from e
    except UnicodeDecodeError as e:
        raise InvalidInputError(f"{path}: not a text file ({e.reason})") from e
    try:
        header = next(csv.reader(lines[:1]), [])
        if "arch" in header:
            col, first = header.index("arch"), 2
            rows = [(n, r[col] if col < len(r) else "") for n, r in
                    enumerate(csv.reader(lines[1:]), start=first) if any(c.strip() for c in r)]
    except csv.Error as e:  # e.g. a field over the csv module's size limit
        raise InvalidInputError(f"{path}: not a readable CSV ({e})") from None
    if "arch" not in header:
        rows = [(n, line.strip()) for n, line in enumerate(lines, start=1) if line.strip()]
    if not rows:
        raise InvalidInputError(f"{path}: no architectures (a CSV with an arch column, or one "
                                "cell string per line)")
    for n, arch in rows:
        try:
            (check or parse_nb201)(arch)
        except InvalidInputError as e:
            raise InvalidInputError(f"{path} line {n}: {e}") from None
    return [arch for _, arch in rows]


# --- work a runtime does when it does not fold `none` edges -----------------------------------
#
# hwlat's export folds a `none` edge (NB201's Zero: x * 0) to a constant and drops what depends
# on constants or feeds nothing; some devices' converters do not (HW-NAS-Bench's Pixel 3 ran
# convs on zeros: cells with no path from input to output measured 0.5..15 ms). For such devices
# a few-shot fit can also count, per stage, the ops of edges whose input is the zero of `none`
# edges only ("zero-input") or whose output reaches no cell output ("dead"), each as a
# pseudo-kernel that costs what the live op costs there (ReLU + conv, or the pool, and the Add
# that sums it into its node).

UNFOLDED = "unfolded"


def _edge_classes(ops: tuple[str, ...]) -> list[tuple[str, str]]:
    """(op, "zero-input" | "dead") of every conv/pool edge that hwlat's export drops."""
    edge = dict(zip(NB201_EDGES, ops, strict=True))
    zero = {0: False}
    for j in range(1, NB201_NODES):
        zero[j] = all(edge[(j, i)] == "none" or zero[i] for i in range(j))
    reach = {NB201_NODES - 1: True}
    for i in range(NB201_NODES - 2, -1, -1):
        reach[i] = any(edge[(j, i)] != "none" and reach[j] for j in range(i + 1, NB201_NODES))
    out = []
    for (j, i), op in edge.items():
        if op in ("nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3") and (zero[i] or not reach[j]):
            out.append((op, "zero-input" if zero[i] else "dead"))
    return out


@cache
def _unfolded(ops: tuple[str, ...], classes: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"{UNFOLDED}|{op}|{cls}|stage{s}" for op, cls in _edge_classes(ops)
                 if cls in classes
                 for s in range(len(NB201_STAGES)) for _ in range(CELLS_PER_STAGE))


def nb201_unfolded_texts(arch: str, classes: tuple[str, ...] = ("zero-input", "dead")
                         ) -> list[str]:
    """Pseudo-kernel keys of the work a runtime that keeps `none` edges' zeros also runs:
    ops on zero inputs, and ops whose output reaches no cell output (`classes`)."""
    return list(_unfolded(parse_nb201(arch), tuple(classes)))


def nb201_unfolded_reference(reference: Mapping[str, float],
                             features: Mapping[str, tuple[float, float]]
                             ) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """Reference ms and (MACs, bytes) of every pseudo-kernel: the sum of the live kernels it
    stands for (from a reference table over `nb201_all_keys()`)."""
    keys = nb201_all_keys()
    ref, feats = {}, {}

    def find(s: int, x: TensorSig, kind: KernelKind, ops: tuple[str, ...],
             k: int | None = None) -> str:
        for text, key in keys.items():
            if key.kind is kind and key.ops == ops and key.inputs[0] == x == key.outputs[0] \
                    and (k is None or dict(key.attrs).get("kernel_shape") == (k, k)):
                return text
        raise InvalidInputError(f"no {'+'.join(ops)} kernel at stage {s} in the NB201 keys")

    for s, (c, size) in enumerate(NB201_STAGES):
        x = _t(1, c, size, size)
        relu = find(s, x, KernelKind.ELEMENTWISE, ("Relu",))
        add = find(s, x, KernelKind.ELEMENTWISE, ("Add",))
        parts = {"nor_conv_1x1": (relu, find(s, x, KernelKind.CONV, ("Conv",), 1), add),
                 "nor_conv_3x3": (relu, find(s, x, KernelKind.CONV, ("Conv",), 3), add),
                 "avg_pool_3x3": (find(s, x, KernelKind.POOL, ("AveragePool",), 3), add)}
        for op, texts in parts.items():
            missing = [t for t in texts if t not in reference or t not in features]
            if missing:
                raise InvalidInputError(f"the reference table lacks {missing[0]!r}, which the "
                                        f"unfolded {op} work at stage {s} stands for")
            for cls in ("zero-input", "dead"):
                name = f"{UNFOLDED}|{op}|{cls}|stage{s}"
                ref[name] = sum(reference[t] for t in texts)
                feats[name] = (sum(features[t][0] for t in texts),
                               sum(features[t][1] for t in texts))
    return ref, feats


ZERO_WORK = ("zero-input",)  # the unfolded work class a few-shot fit counts with zero_work


def nb201_fit_inputs(archs: Iterable[str],
                     reference: tuple[dict[str, float], dict[str, tuple[float, float]]],
                     zero_work: bool = False):
    """What `hwlat.lut.fewshot.fit_device_table` takes for measured NB201 cells: each cell's
    kernel keys, the reference (ms, (MACs, bytes)) and the kernel groups. With `zero_work`, the
    ops a device ran on `none` edges' zeros join each cell, priced from the reference, as one
    more group (None: groups by kind)."""
    arch_kernels = {a: nb201_kernel_texts(a) + (nb201_unfolded_texts(a, ZERO_WORK) if zero_work
                                                else []) for a in archs}
    if not zero_work:
        return arch_kernels, reference, None
    ref, feats = (dict(r) for r in reference)
    extra_ref, extra_feats = nb201_unfolded_reference(ref, feats)
    kept = [k for k in extra_ref if k.split("|")[2] in ZERO_WORK]
    ref.update({k: extra_ref[k] for k in kept})
    feats.update({k: extra_feats[k] for k in kept})
    groups = {k: f"{UNFOLDED}-{k.split('|')[2]}" if k in kept else k.partition("|")[0] for k in ref}
    return arch_kernels, (ref, feats), groups
