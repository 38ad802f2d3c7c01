"""NAS-Bench-201 cells -> their kernels' keys without exporting, and latency from a table.

`nb201_kernels(arch)` writes down the KernelKeys that `fuse(load(path))` cuts from the cell's
exported ONNX file (`hwlat.zoo.from_nb201` + `hwlat.export`) without torch and without exporting,
so a NAS loop or a few-shot fit can use all 15,625 cells (a few ms a cell, cached). It replays, on
a small graph of the network, what the export does and what `hwlat.graph.fuse` then does; a test
holds it to real exports (when it was written: 132 cells, 12 chosen and 120 random, all equal).

The export (torch's dynamo exporter and its onnxscript optimizer):
- BatchNorm is folded into the conv before it (bias); the head's BatchNorm too, when the last
  cell's output is a conv output nothing else reads;
- identical ops on the same inputs are merged (common subexpressions): one Relu per value however
  many ReLU-conv-BN edges leave it, one AveragePool per value, and node 3's first Add is node 2's
  when their first two inputs are the same values;
- what depends only on constants is folded: a node with only `none` inputs is zeros, and ops on it
  are constants; a cell with no path from its input to its output makes the whole network a
  constant (no kernel at all);
- what nothing reads is dropped.
`fuse` then takes, per conv in graph order, the Add that alone reads it (a residual, or a constant
operand as a bias) and the Relu that alone reads the result; the rest are one-op kernels.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from hwlat.errors import HwlatError, InvalidInputError
from hwlat.graph.ir import AttrValue, TensorSig
from hwlat.graph.kernel import KernelKey, KernelKind
from hwlat.lut.fewshot import OVERHEAD_KEY
from hwlat.nas.spaces import NB201_EDGES, NB201_NODES, parse_nb201

__all__ = [
    "NB201_COVERING",
    "NB201_STAGES",
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
_SHOWN = 3

Attrs = tuple[tuple[str, AttrValue], ...]


def _conv_attrs(k: int, stride: int) -> Attrs:
    return (("auto_pad", "NOTSET"), ("dilations", (1, 1)), ("group", 1), ("kernel_shape", (k, k)),
            ("pads", (k // 2,) * 4), ("strides", (stride, stride)))


def _pool_attrs(k: int, stride: int, pad: int, include_pad: int) -> Attrs:
    return (("auto_pad", "NOTSET"), ("ceil_mode", 0), ("count_include_pad", include_pad),
            ("kernel_shape", (k, k)), ("pads", (pad,) * 4), ("strides", (stride, stride)))


_CELL_POOL = _pool_attrs(3, 1, 1, 0)  # nn.AvgPool2d(3, 1, 1, count_include_pad=False)
_REDUCE_POOL = _pool_attrs(2, 2, 0, 1)  # the reduction shortcut's nn.AvgPool2d(2, 2)
_BN = (("epsilon", 1e-05), ("momentum", 0.9))
_MEAN = (("keepdims", 1), ("noop_with_empty_axes", 0))
_RESHAPE = (("allowzero", 1),)
_GEMM = (("alpha", 1.0), ("beta", 1.0), ("transA", 0), ("transB", 1))
_SINGLE_KIND = {"Relu": KernelKind.ELEMENTWISE, "Add": KernelKind.ELEMENTWISE,
                "AveragePool": KernelKind.POOL, "BatchNormalization": KernelKind.NORMALIZATION,
                "ReduceMean": KernelKind.REDUCTION, "Reshape": KernelKind.VIEW,
                "Gemm": KernelKind.MATMUL}


@cache
def _t(*shape: int, dtype: str = _F32) -> TensorSig:
    return TensorSig(shape, dtype)


@dataclass
class _Node:
    op: str
    inputs: tuple[int, ...]  # value ids, weights included, in ONNX input order
    out: int
    attrs: Attrs


class _Net:
    """The exported graph, built as the export leaves it: folded, merged and pruned."""

    def __init__(self) -> None:
        self.sigs: list[TensorSig] = []
        self.const: list[bool] = []
        self.nodes: list[_Node] = []
        self.producer: dict[int, int] = {}
        self._merged: dict[tuple, int] = {}

    def value(self, sig: TensorSig, const: bool) -> int:
        self.sigs.append(sig)
        self.const.append(const)
        return len(self.sigs) - 1

    def op(self, op: str, inputs: Sequence[int], out: TensorSig, attrs: Attrs = (),
           weights: Sequence[TensorSig] = ()) -> int:
        ins = (*inputs, *(self.value(w, True) for w in weights))
        if all(self.const[i] for i in ins):  # constant folding
            return self.value(out, True)
        key = (op, ins, attrs)
        if not weights and key in self._merged:  # common subexpression (weights are unique)
            return self._merged[key]
        v = self.value(out, False)
        self.producer[v] = len(self.nodes)
        self.nodes.append(_Node(op, ins, v, attrs))
        self._merged[key] = v
        return v

    def conv(self, x: int, cout: int, size: int, k: int, stride: int = 1, *, relu: bool = True,
             bias: bool = True) -> int:
        """[Relu ->] Conv (BatchNorm folded into its bias)."""
        cin = self.sigs[x].shape[1]
        if relu:
            x = self.op("Relu", (x,), self.sigs[x])
        out = (size + 2 * (k // 2) - k) // stride + 1
        weights = (_t(cout, cin, k, k), *((_t(cout),) if bias else ()))
        return self.op("Conv", (x,), _t(1, cout, out, out), _conv_attrs(k, stride), weights)

    def add_all(self, xs: list[int]) -> int:
        """`sum(xs[1:], xs[0])`: a chain of Adds."""
        acc = xs[0]
        for x in xs[1:]:
            acc = self.op("Add", (acc, x), self.sigs[acc])
        return acc


def _cell(net: _Net, x: int, ops: tuple[str, ...], c: int, size: int) -> int:
    nodes = [x]
    for j in range(1, NB201_NODES):
        inputs = []
        for (target, i), op in zip(NB201_EDGES, ops, strict=True):
            if target != j or op == "none":
                continue
            src = nodes[i]
            if op == "skip_connect":
                inputs.append(src)
            elif op == "avg_pool_3x3":
                inputs.append(net.op("AveragePool", (src,), net.sigs[src], _CELL_POOL))
            else:
                inputs.append(net.conv(src, c, size, 1 if op == "nor_conv_1x1" else 3))
        nodes.append(net.add_all(inputs) if inputs else net.value(_t(1, c, size, size), True))
    return nodes[-1]


def _reduction(net: _Net, x: int, cout: int, size: int) -> int:
    cin = net.sigs[x].shape[1]
    half = size // 2
    pooled = net.op("AveragePool", (x,), _t(1, cin, half, half), _REDUCE_POOL)
    shortcut = net.conv(pooled, cout, half, 1, relu=False, bias=False)
    body = net.conv(net.conv(x, cout, size, 3, 2), cout, half, 3)
    return net.op("Add", (shortcut, body), net.sigs[body])


def _network(ops: tuple[str, ...]) -> tuple[_Net, int]:
    net = _Net()
    x = net.conv(net.value(_t(1, 3, 32, 32), False), STEM_CHANNELS, 32, 3, relu=False)
    for s, (c, size) in enumerate(NB201_STAGES):
        if s:
            x = _reduction(net, x, c, NB201_STAGES[s - 1][1])
        for _ in range(CELLS_PER_STAGE):
            x = _cell(net, x, ops, c, size)
    c, _ = NB201_STAGES[-1]
    x = net.op("BatchNormalization", (x,), net.sigs[x], _BN, (_t(c),) * 4)
    x = net.op("Relu", (x,), net.sigs[x])
    x = net.op("ReduceMean", (x,), _t(1, c, 1, 1), _MEAN, (_t(2, dtype="int64"),))
    x = net.op("Reshape", (x,), _t(1, c), _RESHAPE, (_t(2, dtype="int64"),))
    return net, net.op("Gemm", (x,), _t(1, NUM_CLASSES), _GEMM, (_t(NUM_CLASSES, c), _t(NUM_CLASSES)))


def _live(net: _Net, output: int) -> list[_Node]:
    """The nodes the output depends on, in graph order, with the head's BatchNorm folded into a
    conv that only it reads."""
    live, todo = set(), [output]
    while todo:
        n = net.producer.get(todo.pop())
        if n is not None and n not in live:
            live.add(n)
            todo.extend(net.nodes[n].inputs)
    nodes = [net.nodes[i] for i in sorted(live)]
    for bn in nodes:
        if bn.op != "BatchNormalization":
            continue
        src = net.producer.get(bn.inputs[0])
        readers = [n for n in nodes if bn.inputs[0] in n.inputs]
        if src is not None and net.nodes[src].op == "Conv" and readers == [bn]:
            net.nodes[src].out = bn.out
            net.producer[bn.out] = src
            nodes.remove(bn)
        break
    return nodes


def _fuse(net: _Net, nodes: list[_Node], output: int) -> list[KernelKey]:
    """`hwlat.graph.fuse` on this graph: the conv rule (residual or bias Add, then Relu), the
    matmul rule (nothing follows the Gemm: it is the output), one-op kernels for the rest."""
    uses: dict[int, list[_Node]] = {}
    for n in nodes:
        for i in n.inputs:
            uses.setdefault(i, []).append(n)
    claimed: set[int] = set()
    groups: list[list[_Node]] = []

    def free_sole_user(v: int) -> _Node | None:
        users = uses.get(v, [])
        if v == output or len(users) != 1 or id(users[0]) in claimed:
            return None
        return users[0]

    for conv in (n for n in nodes if n.op == "Conv"):
        taken, out = [conv], conv.out
        u = free_sole_user(out)
        if u is not None and u.op == "Add":
            other = u.inputs[1] if u.inputs[0] == out else u.inputs[0]
            if net.const[other] or net.sigs[other].shape == net.sigs[out].shape:
                taken.append(u)
                out = u.out
        readers = list({id(n): n for n in uses.get(out, [])}.values())
        if out != output and len(readers) == 1 and readers[0].op == "Relu" \
                and id(readers[0]) not in claimed:
            taken.append(readers[0])
        claimed.update(id(n) for n in taken)
        groups.append(taken)
    groups += [[n] for n in nodes if id(n) not in claimed]
    return [_key(net, g, uses, output) for g in groups]


def _key(net: _Net, group: list[_Node], uses: dict[int, list[_Node]], output: int) -> KernelKey:
    inside = {n.out for n in group}
    members = {id(n) for n in group}
    ext = list(dict.fromkeys(i for n in group for i in n.inputs if i not in inside))
    exits = [n.out for n in group
             if n.out == output or any(id(u) not in members for u in uses.get(n.out, []))]
    anchor = group[0]
    return KernelKey(
        kind=KernelKind.CONV if anchor.op == "Conv" else _SINGLE_KIND[anchor.op],
        ops=tuple(n.op for n in group),
        inputs=tuple(net.sigs[i] for i in ext if not net.const[i]),
        outputs=tuple(net.sigs[o] for o in exits),
        params=tuple(net.sigs[i] for i in ext if net.const[i]),
        attrs=tuple(sorted(anchor.attrs)),
    )


@cache
def _kernels(ops: tuple[str, ...]) -> tuple[KernelKey, ...]:
    net, output = _network(ops)
    return tuple(_fuse(net, _live(net, output), output))


def nb201_kernels(arch: str) -> list[KernelKey]:
    """The kernel keys `fuse(load(...))` cuts from the exported cell's network; empty for a cell
    with no path from its input to its output (the export folds the network into a constant)."""
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
    from hwlat.nas.spaces import nb201_arch

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
            "profile cells that contain them, or fit the device's table with `hwlat lut fit`"
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


def read_archs(path: Path | str) -> list[str]:
    """Cell strings from a CSV with an `arch` column (other columns ignored), or from a file with
    one cell string per line; each checked, a bad one named by its line."""
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
            parse_nb201(arch)
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
