"""Fuzz hwlat's readers: mutated models through load -> fuse -> summarize, damaged tables through
every command that opens a table.

    PYTHONPATH=. .venv/bin/python benchmarks/fuzz.py [--mutants 10000] [--seed 0] \
        [--zoo mobilenet_v2,resnet18,sparse_convnet,nb201] [--seeds-dir build/fuzz-seeds] [--no-tables] \
        [--cli-mutants 300] [--no-cli-tables] [--cli-subprocess-every 10] [--cli-timeout 60]

Each case runs in a forked worker with an address-space limit (resource.setrlimit) and a wall
clock timeout, and is classified:

    ok         loaded, fused and summarized
    refused    an HwlatError: what hwlat promises for bad input
    traceback  any other exception (a bug)
    memory     MemoryError under the limit (a bug: work was not bounded by what was declared)
    abort      the worker died by a signal (a bug, in hwlat or a library it calls)
    hang       the timeout passed (a bug)

Model seeds: hand-built graphs covering every kernel kind (conv+bn+relu+residual, gemm, attention,
layer norm, a LIF neuron, hwlat.SparseConv3d), plus zoo models exported once into --seeds-dir.
Mutations: byte-level (flips, truncation, inserted and zeroed spans) and protobuf-aware (op types
and domains, attributes deleted or given other types and values, dims set to 0 / negative / huge,
ranks and element types changed, node inputs and outputs deleted, graph outputs duplicated or
deleted, initializers deleted, nodes duplicated, custom-domain ops inserted).

Tables: a small table with entries, kernels, calibration rows and OFA entries; each page in turn
damaged (b-tree header overwritten, or the page filled with noise), then every command run on a
fresh copy. A refusal must leave the file's bytes unchanged ("changed" counts the ones that did
not); a command that does not refuse must leave a file that passes `PRAGMA integrity_check`
("silent" counts the ones that did not).

Through the `hwlat` command (what a user runs): --cli-mutants mutants of the built-in seeds, one
of `inspect`, `predict --device roofline-sd855` and `profile --device cpu-ort` each in turn, and
every damaged page (both variants) through each of 21 CLI commands that open a table (devices,
lut show/delete/export/import/sample/train/fit/prior import, predict, profile, calibrate,
validate, nas predict, search), after a control run of each on the intact table. The check is the
README's promise: exit code 2 with exactly one stderr line starting `error:` ("lines" counts the
ones that were not), no traceback, no signal, within the timeout and the memory limit, the table's
bytes unchanged. Every --cli-subprocess-every-th case is a real `hwlat` subprocess (its address
space limited in preexec_fn); the others run the same entry point (`hwlat.cli.entry`) in a forked
worker, which saves the interpreter's start-up (1-2 s a case).

Goal: 0 traceback, 0 abort, 0 hang, 0 memory, 0 lines, peak RSS under 2 GiB, 0 changed, 0 silent.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import resource
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from hwlat.errors import HwlatError

OUTCOMES = ("ok", "refused", "traceback", "memory", "abort", "hang")
BAD = ("traceback", "memory", "abort", "hang")
MEMORY_LIMIT = 4 << 30  # address space a worker may add (a subprocess: in all); RSS is what the goal bounds
RSS_GOAL = 2 << 30


# --- seeds ------------------------------------------------------------------------------------

def _vi(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def _w(name, *shape, seed=0):
    return numpy_helper.from_array(np.random.default_rng(seed).standard_normal(shape).astype(np.float32), name)


def _model(nodes, inputs, outputs, inits, extra=()):
    g = helper.make_graph(nodes, "seed", inputs, outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18), *extra])
    m.ir_version = 10
    return m


def builtin_seeds() -> dict[str, bytes]:
    """Small graphs with the kernels the zoo's models have, built without torch."""
    mk = helper.make_node
    seeds = {}
    # a ResNet block: conv+bn+relu, conv+bn, residual add, relu, global pool, gemm
    bn = [_w(f"bn_{p}", 8, seed=i) for i, p in enumerate("sbmv")]
    bn[3] = numpy_helper.from_array(np.abs(numpy_helper.to_array(bn[3])) + 1, "bn_v")
    seeds["resnet_block"] = _model(
        [mk("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
         mk("BatchNormalization", ["c1", "bn_s", "bn_b", "bn_m", "bn_v"], ["b1"]),
         mk("Relu", ["b1"], ["r1"]),
         mk("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], group=8),
         mk("Add", ["c2", "x"], ["a"]), mk("Relu", ["a"], ["r2"]),
         mk("GlobalAveragePool", ["r2"], ["p"]), mk("Flatten", ["p"], ["f"]),
         mk("Gemm", ["f", "fc_w", "fc_b"], ["y"], transB=1)],
        [_vi("x", [1, 8, 8, 8])], [_vi("y", [1, 10])],
        [_w("w1", 8, 8, 3, 3), _w("w2", 8, 1, 3, 3), *bn, _w("fc_w", 10, 8), _w("fc_b", 10)])
    # attention with a scale and a mask, then layer norm
    seeds["attention"] = _model(
        [mk("MatMul", ["q", "kt"], ["s"]), mk("Mul", ["s", "scale"], ["ss"]),
         mk("Add", ["ss", "mask"], ["sm"]), mk("Softmax", ["sm"], ["p"], axis=-1),
         mk("MatMul", ["p", "v"], ["o"]),
         mk("LayerNormalization", ["o", "ln_g", "ln_b"], ["y"], axis=-1)],
        [_vi("q", [1, 2, 16, 8]), _vi("kt", [1, 2, 8, 16]), _vi("v", [1, 2, 16, 8])],
        [_vi("y", [1, 2, 16, 8])],
        [numpy_helper.from_array(np.array(0.35, np.float32), "scale"), _w("mask", 16, 16),
         _w("ln_g", 8), _w("ln_b", 8)])
    # two LIF steps: v = v + (x - v) / tau; spike = v >= th; v = v * (1 - spike)
    nodes, v = [], "v0"
    for t in range(2):
        nodes += [mk("Sub", [f"x{t}", v], [f"d{t}"]), mk("Div", [f"d{t}", "tau"], [f"q{t}"]),
                  mk("Add", [v, f"q{t}"], [f"h{t}"]), mk("GreaterOrEqual", [f"h{t}", "th"], [f"g{t}"]),
                  mk("Cast", [f"g{t}"], [f"s{t}"], to=TensorProto.FLOAT),
                  mk("Mul", [f"h{t}", f"s{t}"], [f"m{t}"]), mk("Sub", [f"h{t}", f"m{t}"], [f"v{t + 1}"])]
        v = f"v{t + 1}"
    seeds["lif"] = _model(
        nodes, [_vi("x0", [1, 4, 8, 8]), _vi("x1", [1, 4, 8, 8]), _vi("v0", [1, 4, 8, 8])],
        [_vi("s1", [1, 4, 8, 8]), _vi(v, [1, 4, 8, 8])],
        [numpy_helper.from_array(np.array(2.0, np.float32), "tau"),
         numpy_helper.from_array(np.array(1.0, np.float32), "th")])
    # two submanifold sparse convs (+bn+relu) on one cloud, then a mean and a linear layer
    n = 64
    sbn = [_w(f"sbn_{p}", 8, seed=i) for i, p in enumerate("sbmv")]
    sbn[3] = numpy_helper.from_array(np.abs(numpy_helper.to_array(sbn[3])) + 1, "sbn_v")
    attrs = dict(subm=1, kernel_size=[3, 3, 3], stride=[1, 1, 1], padding=[1, 1, 1])
    seeds["sparse"] = _model(
        [mk("SparseConv3d", ["f", "coords", "sw1"], ["c1"], domain="hwlat", **attrs),
         mk("BatchNormalization", ["c1", "sbn_s", "sbn_b", "sbn_m", "sbn_v"], ["b1"]),
         mk("Relu", ["b1"], ["r1"]),
         mk("SparseConv3d", ["r1", "coords", "sw2"], ["c2"], domain="hwlat", **attrs),
         mk("ReduceMean", ["c2", "axes"], ["m"], keepdims=1),
         mk("MatMul", ["m", "fc"], ["y"])],
        [_vi("f", [n, 4]), _vi("coords", [n, 4], TensorProto.INT32)], [_vi("y", [1, 10])],
        [_w("sw1", 27, 4, 8), _w("sw2", 27, 8, 8), *sbn,
         numpy_helper.from_array(np.array([0], np.int64), "axes"), _w("fc", 8, 10)],
        extra=[helper.make_opsetid("hwlat", 1)])
    return {k: m.SerializeToString() for k, m in seeds.items()}


def zoo_seeds(folder: Path, names: list[str]) -> dict[str, bytes]:
    """Zoo models exported once into `folder` (torch is imported only to export a missing one)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in names:
        path = folder / f"{name}.onnx"
        if not path.exists():
            from hwlat import zoo
            from hwlat.onnx_export import export

            if name == "nb201":
                built = zoo.from_nb201("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|"
                                       "+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")
            elif name == "sparse_convnet":
                built = zoo.build(name, input_shape=(2000, 32))
            else:
                built = zoo.build(name)
            export(*built, path, compare=False)
        out[f"zoo:{name}"] = path.read_bytes()
    return out


# --- mutations ---------------------------------------------------------------------------------

OPS = ["Conv", "Relu", "Add", "MatMul", "Gemm", "Softmax", "BatchNormalization", "Reshape", "Concat",
       "Slice", "Transpose", "GlobalAveragePool", "MaxPool", "LayerNormalization", "Attention", "Cast",
       "Clip", "Sigmoid", "Mul", "Div", "ReduceMean", "Gather", "Pad", "Resize", "Identity"]
HUGE = [0, -1, -7, 2**31 - 1, 2**31, 2**40, 2**62, 10**6, 30_000_000, 3]


class Mutator:
    def __init__(self, rng: random.Random):
        self.rng = rng
        self.proto = [m for name, m in vars(Mutator).items() if name.startswith("p_")]
        self.raw = [m for name, m in vars(Mutator).items() if name.startswith("b_")]

    def mutate(self, data: bytes) -> tuple[str, bytes]:
        rng = self.rng
        if rng.random() < 0.2:
            fn = rng.choice(self.raw)
            return fn.__name__, fn(self, bytearray(data))
        m = onnx.ModelProto()
        m.ParseFromString(data)
        names = []
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            fn = rng.choice(self.proto)
            with contextlib.suppress(IndexError, ValueError, TypeError):
                fn(self, m)
                names.append(fn.__name__)
        return "+".join(names) or "none", m.SerializeToString()

    # byte level
    def b_flip(self, d: bytearray) -> bytes:
        for _ in range(self.rng.randint(1, 8)):
            i = self.rng.randrange(len(d))
            d[i] ^= 1 << self.rng.randrange(8)
        return bytes(d)

    def b_truncate(self, d: bytearray) -> bytes:
        return bytes(d[: self.rng.randrange(len(d))])

    def b_insert(self, d: bytearray) -> bytes:
        i = self.rng.randrange(len(d))
        return bytes(d[:i] + self.rng.randbytes(self.rng.randint(1, 64)) + d[i:])

    def b_zero(self, d: bytearray) -> bytes:
        i = self.rng.randrange(len(d))
        n = self.rng.randint(1, 256)
        d[i:i + n] = bytes(len(d[i:i + n]))
        return bytes(d)

    # protobuf aware
    def _node(self, m):
        return self.rng.choice(m.graph.node)

    def _value_infos(self, m):
        return [*m.graph.input, *m.graph.output, *m.graph.value_info]

    def p_op_type(self, m):
        n = self._node(m)
        n.op_type = self.rng.choice([*OPS, "Bogus", "SparseConv3d", ""])

    def p_domain(self, m):
        self._node(m).domain = self.rng.choice(["hwlat", "com.microsoft", "ai.onnx", "x.y", "hwlat.x"])

    def p_attr_delete(self, m):
        n = self._node(m)
        del n.attribute[self.rng.randrange(len(n.attribute))]

    def p_attr_retype(self, m):
        n = self._node(m)
        i = self.rng.randrange(len(n.attribute))
        name = n.attribute[i].name
        value = self.rng.choice([self.rng.choice(HUGE), 2.5, float("nan"), "text", b"\xff\xfe",
                                 [self.rng.choice(HUGE)] * self.rng.choice((0, 1, 2, 3, 4)),
                                 [1.5, 2.5, 3.5], ["a", "b"],
                                 numpy_helper.from_array(np.zeros(3, np.int64))])
        n.attribute[i].CopyFrom(helper.make_attribute(name, value))

    def p_attr_value(self, m):
        n = self._node(m)
        a = self.rng.choice(n.attribute)
        if a.type == AttributeProto.INT:
            a.i = self.rng.choice(HUGE)
        elif a.type == AttributeProto.INTS:
            length = self.rng.choice((0, 1, 2, 3, 4, len(a.ints)))
            del a.ints[:]
            a.ints.extend(self.rng.choice(HUGE) for _ in range(length))
        elif a.type == AttributeProto.FLOAT:
            a.f = self.rng.choice([0.0, -1.0, 1e38, float("inf"), float("nan")])
        elif a.type == AttributeProto.STRING:
            a.s = self.rng.choice([b"", b"\xff", b"x" * 1000, b"NOTSET"])

    def p_attr_add(self, m):
        n = self._node(m)
        name = self.rng.choice(["kernel_size", "stride", "padding", "subm", "axis", "group", "pads",
                                "perm", "to", "dilations", "bogus"])
        n.attribute.append(helper.make_attribute(name, self.rng.choice(
            [self.rng.choice(HUGE), [self.rng.choice(HUGE)] * 3, [1000000] * 3, 1.0])))

    def p_dim(self, m):
        vis = [v for v in self._value_infos(m) if v.type.tensor_type.shape.dim]
        v = self.rng.choice(vis)
        d = self.rng.choice(v.type.tensor_type.shape.dim)
        choice = self.rng.random()
        if choice < 0.15:
            d.dim_param = self.rng.choice(["N", "", "batch"])
        else:
            d.dim_value = self.rng.choice(HUGE)

    def p_rank(self, m):
        v = self.rng.choice(self._value_infos(m))
        dims = v.type.tensor_type.shape.dim
        if dims and self.rng.random() < 0.5:
            del dims[self.rng.randrange(len(dims))]
        else:
            dims.add().dim_value = self.rng.choice((1, 3, 0))

    def p_elem_type(self, m):
        v = self.rng.choice(self._value_infos(m))
        v.type.tensor_type.elem_type = self.rng.choice([0, 2, 6, 7, 8, 9, 10, 11, 16, 999])

    def p_init_dims(self, m):
        t = self.rng.choice(m.graph.initializer)
        if t.dims:
            t.dims[self.rng.randrange(len(t.dims))] = self.rng.choice(HUGE)

    def p_init_dtype(self, m):
        t = self.rng.choice(m.graph.initializer)
        t.data_type = self.rng.choice([0, 2, 6, 7, 8, 11, 16, 999])

    def p_init_delete(self, m):
        del m.graph.initializer[self.rng.randrange(len(m.graph.initializer))]

    def p_input_delete(self, m):
        n = self._node(m)
        if self.rng.random() < 0.3:
            n.input[self.rng.randrange(len(n.input))] = ""
        else:
            del n.input[self.rng.randrange(len(n.input))]

    def p_input_rewire(self, m):
        values = [o for n in m.graph.node for o in n.output] + [i.name for i in m.graph.input]
        n = self._node(m)
        n.input[self.rng.randrange(len(n.input))] = self.rng.choice(values)

    def p_output_delete(self, m):
        n = self._node(m)
        del n.output[self.rng.randrange(len(n.output))]

    def p_graph_output(self, m):
        outs = m.graph.output
        if self.rng.random() < 0.5:
            outs.append(self.rng.choice(list(outs)))  # a duplicated output
        else:
            del outs[self.rng.randrange(len(outs))]

    def p_graph_input_delete(self, m):
        del m.graph.input[self.rng.randrange(len(m.graph.input))]

    def p_node_duplicate(self, m):
        n = self._node(m)
        m.graph.node.insert(self.rng.randrange(len(m.graph.node) + 1), n)

    def p_node_delete(self, m):
        del m.graph.node[self.rng.randrange(len(m.graph.node))]

    def p_sparse_conv(self, m):
        """An hwlat.SparseConv3d with random attributes over values the graph has."""
        if not any(o.domain == "hwlat" for o in m.opset_import):
            m.opset_import.append(helper.make_opsetid("hwlat", 1))
        values = [o for n in m.graph.node for o in n.output] + [i.name for i in m.graph.input] + \
            [t.name for t in m.graph.initializer]
        inputs = [self.rng.choice(values) for _ in range(self.rng.choice((2, 3, 3, 3, 4)))]
        attrs = {}
        for name in ("subm", "kernel_size", "stride", "padding"):
            if self.rng.random() < 0.85:
                attrs[name] = self.rng.choice(HUGE) if name == "subm" else \
                    [self.rng.choice((1, 3, 3, 0, 1000000, -1)) for _ in range(self.rng.choice((3, 3, 2)))]
        n = helper.make_node("SparseConv3d", inputs, [f"fz{self.rng.randrange(1 << 30)}"], domain="hwlat",
                             **attrs)
        at = self.rng.randrange(len(m.graph.node) + 1)
        m.graph.node.insert(at, n)
        if self.rng.random() < 0.5:
            m.graph.output.append(helper.make_tensor_value_info(n.output[0], TensorProto.FLOAT, None))

    def p_opset(self, m):
        m.opset_import[0].version = self.rng.choice([1, 7, 13, 18, 23, 99, 0])


# --- running one case in a limited worker ---------------------------------------------------------

@dataclass
class Result:
    outcome: str
    detail: str
    seconds: float
    rss_bytes: int


def _limit_forked(memory: int) -> None:
    """In a forked worker: an address-space limit of what the parent had already mapped plus
    `memory`. A parent that imported torch maps several GiB of address space (most never
    touched); an absolute limit below that fails the worker's first new mapping (a lazy import's
    shared library), which is the parent's size, not the case's."""
    mapped = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mapped = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    limit = mapped + memory
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def run_limited(fn: Callable[[], object], timeout_s: float, memory: int = MEMORY_LIMIT) -> Result:
    """fn() in a forked child with an address-space limit and a timeout."""
    r, w = os.pipe()
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the worker
        os.close(r)
        outcome, detail = "ok", ""
        try:
            _limit_forked(memory)
            fn()
        except HwlatError as e:
            outcome, detail = "refused", str(e)
        except MemoryError:
            outcome, detail = "memory", traceback.format_exc(limit=-4)
        except BaseException as e:  # noqa: BLE001 - classifying every other exception is the point
            outcome, detail = "traceback", f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=-4)}"
        with contextlib.suppress(BaseException):
            os.write(w, json.dumps({"outcome": outcome, "detail": detail[:3000]}).encode()[:60000])
        os._exit(0)
    os.close(w)
    chunks = []
    status = rusage = None
    deadline = t0 + timeout_s
    while True:
        ready, _, _ = select.select([r], [], [], max(0.0, min(0.05, deadline - time.perf_counter())))
        if ready:
            chunk = os.read(r, 65536)
            if chunk:
                chunks.append(chunk)
        done, status, rusage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        if time.perf_counter() > deadline:
            os.kill(pid, signal.SIGKILL)
            _, status, rusage = os.wait4(pid, 0)
            os.close(r)
            return Result("hang", f"over {timeout_s} s", time.perf_counter() - t0, rusage.ru_maxrss * 1024)
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    seconds = time.perf_counter() - t0
    rss = rusage.ru_maxrss * 1024
    if os.WIFSIGNALED(status):
        return Result("abort", f"signal {signal.Signals(os.WTERMSIG(status)).name}", seconds, rss)
    try:
        got = json.loads(b"".join(chunks))
    except ValueError:
        return Result("abort", f"no report, exit status {status}", seconds, rss)
    return Result(got["outcome"], got["detail"], seconds, rss)


def check_model(path: str) -> None:
    """What `hwlat inspect` does."""
    from hwlat.graph import fuse, load
    from hwlat.graph.summary import summarize

    g = load(path)
    summarize(g, fuse(g)).to_json()


@dataclass
class Campaign:
    counts: Counter
    examples: dict  # outcome -> [(what, detail)]
    peak_rss: int
    slowest: float


def model_campaign(seeds: dict[str, bytes], mutants: int, seed: int = 0, timeout_s: float = 10.0,
                   folder: Path | None = None, progress: Callable[[int, Counter], None] | None = None
                   ) -> Campaign:
    from hwlat.graph import fuse, load  # noqa: F401 - imported once, before the workers fork

    rng = random.Random(seed)
    mut = Mutator(rng)
    names = sorted(seeds)
    counts, examples, peak, slowest = Counter(), {}, 0, 0.0
    with tempfile.TemporaryDirectory(prefix="hwlat-fuzz-", dir=folder) as tmp:
        path = Path(tmp) / "mutant.onnx"
        for i in range(mutants):
            name = names[i % len(names)]
            how, data = mut.mutate(seeds[name])
            path.write_bytes(data)
            res = run_limited(lambda p=str(path): check_model(p), timeout_s)
            counts[res.outcome] += 1
            peak, slowest = max(peak, res.rss_bytes), max(slowest, res.seconds)
            if res.outcome in BAD:
                examples.setdefault(res.outcome, []).append((f"#{i} {name} {how}", res.detail))
                keep = Path(folder or ".") / f"fuzz-{res.outcome}-{i}.onnx"
                if folder is not None:
                    shutil.copy(path, keep)
            if progress and (i + 1) % 500 == 0:
                progress(i + 1, counts)
    return Campaign(counts, examples, peak, slowest)


# --- damaged tables -----------------------------------------------------------------------------

OFA_ROWS = {
    "Conv-input:224x224x3-output:112x112x24": (500, 0.994418, 0.01726798413249215),
    "Logits-input:1x1x1536-output:1000": (500, 0.669412, 1e-05),
}


def build_table(folder: Path) -> tuple[Path, dict]:
    """A small table (entries of two devices, kernels, calibration, OFA entries) and the files
    the commands read: a JSON and a CSV export, an OFA folder."""
    from hwlat.lut import Entry, TableStore, export_csv, export_json
    from hwlat.lut.ofa import import_ofa_dir, write_ofa_yaml

    path = folder / "good.sqlite"
    ofa = folder / "ofa"
    ofa.mkdir()
    write_ofa_yaml(ofa / "224_lookup_table.yaml", OFA_ROWS)

    def entry(device, i):
        return Entry(device, f"conv|k{i:04d}", "conv", 1.0 + i, 0.5 + i, 1.5 + i, 0.05, 20, 1,
                     "fuzz CPU", '{"onnxruntime": "1"}', "ort-profiler", "2026-01-01T00:00:00+00:00")

    with TableStore(path) as store:
        store.put_many([entry(d, i) for d in ("cpu-ort", "pixel") for i in range(60)],
                       [(f"conv|k{i:04d}", "conv", 1000 * (i + 1), 100 * (i + 1)) for i in range(60)])
        for m in range(3):
            store.put_calibration("cpu-ort", f"m{m}", {"kernel_sum_ms": 1.0 + m, "estimated_ms": 0.1 * m},
                                  2.0 + m)
        import_ofa_dir(store, ofa, "note10")
        export_json(store, folder / "rows.json", "pixel")
        export_csv(store, folder / "rows.csv", "pixel")
    return path, {"ofa": ofa, "json": folder / "rows.json", "csv": folder / "rows.csv", "out": folder}


def table_commands(files: dict) -> dict[str, Callable[[Path], object]]:
    """Every command that opens a table, as the CLI calls the package."""
    from hwlat.graph import fuse, load
    from hwlat.lut import Entry, TableStore, export_csv, export_json, import_csv, import_json
    from hwlat.lut.ofa import export_ofa_dir, import_ofa_dir
    from hwlat.lut.predict import predict

    seed = Path(files["out"]) / "seed.onnx"
    seed.write_bytes(builtin_seeds()["resnet_block"])
    g = load(seed)
    kernels = fuse(g)
    out = Path(files["out"])
    new = Entry("cpu-ort", "conv|new", "conv", 1.0, 1.0, 1.0, 0.0, 5, 1, "c", "{}", "p",
                "2026-01-01T00:00:00+00:00")

    def ro(p):
        return TableStore(p, readonly=True)

    def rw(p):
        return TableStore(p)

    def with_store(opener, fn):
        def run(p):
            with opener(p) as s:
                return fn(s)
        return run

    return {
        "lut show": with_store(ro, lambda s: s.devices()),
        "lut show --device": with_store(ro, lambda s: s.entries("cpu-ort")),
        "lut export json": with_store(ro, lambda s: export_json(s, out / "e.json")),
        "lut export csv": with_store(ro, lambda s: export_csv(s, out / "e.csv", "cpu-ort")),
        "lut export ofa": with_store(ro, lambda s: export_ofa_dir(s, out / "ofa-out", "note10")),
        "lut import json": with_store(rw, lambda s: import_json(s, files["json"])),
        "lut import csv": with_store(rw, lambda s: import_csv(s, files["csv"])),
        "lut import ofa": with_store(rw, lambda s: import_ofa_dir(s, files["ofa"], "note10")),
        "predict": with_store(ro, lambda s: predict(g, kernels, s, "cpu-ort").latency_ms),
        "nas predict": with_store(ro, lambda s: s.get_many("note10", ["ofa:224:x"])),
        "profile (write)": with_store(rw, lambda s: s.put_many([new], [("conv|new", "conv", 1, 1)])),
        "calibrate (write)": with_store(rw, lambda s: s.put_calibration("cpu-ort", "mx", {"a": 1.0}, 1.0)),
        "lut fit (write)": with_store(rw, lambda s: s.replace_device("cpu-ort", [new])),
        "delete device": with_store(rw, lambda s: s.delete_device("pixel")),
    }


def damaged_pages(good: bytes, variants=("btree-header", "noise")):
    """(label, bytes) for each page in turn: its b-tree header overwritten, or its bytes noise."""
    size = int.from_bytes(good[16:18], "big")
    size = 65536 if size == 1 else size
    rng = random.Random(0)
    for page in range(1, len(good) // size + 1):
        start = (page - 1) * size + (100 if page == 1 else 0)
        for variant in variants:
            d = bytearray(good)
            if variant == "btree-header":
                d[start:start + 12] = b"\x0d\xff\xff\xff\xff\x7f\xff\xff\xff\xff\xff\xff"
            else:
                end = page * size
                d[start:end] = rng.randbytes(end - start)
            yield f"page {page} {variant}", bytes(d)


def table_campaign(folder: Path, timeout_s: float = 10.0,
                   variants=("btree-header", "noise")) -> Campaign:
    good, files = build_table(folder)
    commands = table_commands(files)
    counts, examples, peak, slowest = Counter(), {}, 0, 0.0
    case = folder / "case.sqlite"
    for label, data in damaged_pages(good.read_bytes(), variants):
        for name, fn in commands.items():
            for side in (Path(f"{case}-wal"), Path(f"{case}-shm")):
                side.unlink(missing_ok=True)
            case.write_bytes(data)
            res = run_limited(lambda f=fn: f(case), timeout_s)
            after = case.read_bytes()
            outcome = res.outcome
            if outcome == "refused" and (after != data or Path(f"{case}-wal").exists()):
                outcome = "changed"
            elif outcome == "ok" and after != data and not _intact(case):
                outcome = "silent"
            counts[outcome] += 1
            peak, slowest = max(peak, res.rss_bytes), max(slowest, res.seconds)
            if outcome not in ("ok", "refused"):
                examples.setdefault(outcome, []).append((f"{label}: {name}", res.detail))
    return Campaign(counts, examples, peak, slowest)


def _intact(path: Path) -> bool:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            db.close()
    except sqlite3.Error:
        return False


# --- through the real `hwlat` command ------------------------------------------------------------
#
# The README's promise, checked on the process a user runs: exit code 2, exactly one stderr line
# starting with `error:`, no traceback, no signal, within the time and memory limits; a refused
# table keeps its bytes. A case runs as a real `hwlat` subprocess (`python -m hwlat.cli`, its
# address space limited in preexec_fn), or, for bulk in the tests, as the same entry point in a
# forked worker (no interpreter start-up; the same exit path).

CLI_OUTCOMES = ("ok", "refused", "traceback", "memory", "abort", "hang", "lines")
CLI_BAD = ("traceback", "memory", "abort", "hang", "lines")  # lines: exit 2 without one error line
ROOT = Path(__file__).resolve().parents[1]


def _limit_memory(memory: int) -> Callable[[], None]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    return limit


def cli_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HWLAT_DEBUG", "PYTHONPATH")}
    env.update(HWLAT_HOME=str(home), PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", NO_COLOR="1",
               COLUMNS="200")
    return env


def run_cli(args: list[str], home: Path, timeout_s: float, memory: int = MEMORY_LIMIT,
            fork: bool = False) -> Result:
    """`hwlat ARGS` with HWLAT_HOME=home under a timeout and an address-space limit, classified."""
    args = [str(a) for a in args]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        if fork:
            pid = _fork_cli(args, home, memory, out, err)
        else:
            proc = subprocess.Popen([sys.executable, "-m", "hwlat.cli", *args], stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=err, env=cli_env(home), cwd=home,
                                    preexec_fn=_limit_memory(memory))
            pid = proc.pid
        deadline = t0 + timeout_s
        while True:
            done, status, rusage = os.wait4(pid, os.WNOHANG)
            if done:
                break
            if time.perf_counter() > deadline:
                os.kill(pid, signal.SIGKILL)
                _, status, rusage = os.wait4(pid, 0)
                break
            time.sleep(0.01)
        if not fork:
            proc.returncode = -1  # reaped here: Popen must not wait for it again
        seconds = time.perf_counter() - t0
        rss = rusage.ru_maxrss * 1024
        err.seek(0)
        stderr = err.read(1 << 20).decode("utf-8", "replace")
    if seconds > timeout_s:
        return Result("hang", f"over {timeout_s} s", seconds, rss)
    if os.WIFSIGNALED(status):
        return Result("abort", f"signal {signal.Signals(os.WTERMSIG(status)).name}: {stderr[-2000:]}",
                      seconds, rss)
    code = os.WEXITSTATUS(status)
    lines = stderr.splitlines()
    if "MemoryError" in stderr:
        return Result("memory", stderr[-3000:], seconds, rss)
    if "Traceback (most recent call last)" in stderr:
        return Result("traceback", stderr[-3000:], seconds, rss)
    if code == 0:
        return Result("ok", "", seconds, rss)
    if code == 2 and len(lines) == 1 and lines[0].startswith("error: "):
        return Result("refused", lines[0], seconds, rss)
    return Result("lines", f"exit {code}, {len(lines)} stderr lines: {stderr[-2000:]}", seconds, rss)


def _fork_cli(args: list[str], home: Path, memory: int, out, err) -> int:
    pid = os.fork()
    if pid:
        return pid
    try:  # the worker: what `python -m hwlat.cli ARGS` runs, in this already started interpreter
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        # the process's own streams on those descriptors (a test runner may have replaced them)
        sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
        sys.stdin = open(os.devnull)  # noqa: SIM115
        os.environ.pop("HWLAT_DEBUG", None)
        os.environ.update(cli_env(home))
        os.chdir(home)
        _limit_forked(memory)
        sys.argv = ["hwlat", *args]
        import hwlat.cli

        if _CLICK:  # the click command typer builds on every call (a second on a busy machine)
            hwlat.cli.app = _CLICK[0]
        hwlat.cli.entry()
        sys.stdout.flush()
        os._exit(0)
    except SystemExit as e:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
        os._exit(e.code if isinstance(e.code, int) else (0 if e.code is None else 1))
    except BaseException:  # noqa: BLE001 - what the interpreter would print
        with contextlib.suppress(BaseException):
            traceback.print_exc()
            sys.stderr.flush()
        os._exit(1)


MODEL_COMMANDS: dict[str, Callable[[Path, Path], list]] = {
    "inspect": lambda m, d: ["inspect", m],
    "predict": lambda m, d: ["predict", m, "--device", "roofline-sd855"],
    "profile": lambda m, d: ["profile", m, "--device", "cpu-ort", "--table", d / "t.sqlite"],
    "compile": lambda m, d: ["compile", m, "--device", "cpu-tvm", "-o", d / "m.so"],
}


def _real(i: int, every: int) -> bool:
    return every > 0 and i % every == 0


def cli_model_campaign(seeds: dict[str, bytes], mutants: int, seed: int = 0, timeout_s: float = 60.0,
                       commands: tuple[str, ...] = ("inspect", "predict", "profile"),
                       folder: Path | None = None, subprocess_every: int = 1,
                       progress: Callable[[int, Counter], None] | None = None) -> Campaign:
    """Mutants through the CLI commands that take a model, one command a mutant, in turn; every
    `subprocess_every`-th case a real `hwlat` subprocess, the others forked workers (0: none)."""
    rng = random.Random(seed)
    mut = Mutator(rng)
    names = sorted(seeds)
    counts, examples, peak, slowest = Counter(), {}, 0, 0.0
    if subprocess_every != 1:
        _preimport()
    with tempfile.TemporaryDirectory(prefix="hwlat-fuzz-cli-", dir=folder) as tmp:
        for i in range(mutants):
            name, command = names[i % len(names)], commands[i % len(commands)]
            how, data = mut.mutate(seeds[name])
            # absolute: the command runs in `case`, and --keep-dir may be a relative folder
            case = Path(tmp).resolve() / f"case{i}"
            case.mkdir()
            model = case / "mutant.onnx"
            model.write_bytes(data)
            real = _real(i, subprocess_every)
            res = run_cli(MODEL_COMMANDS[command](model, case), case, timeout_s, fork=not real)
            counts[res.outcome] += 1
            counts["subprocesses"] += real
            peak, slowest = max(peak, res.rss_bytes), max(slowest, res.seconds)
            if res.outcome in CLI_BAD:
                examples.setdefault(res.outcome, []).append((f"#{i} {name} {how}: {command}", res.detail))
                if folder is not None:
                    shutil.copy(model, Path(folder) / f"fuzz-cli-{res.outcome}-{i}.onnx")
            shutil.rmtree(case, ignore_errors=True)
            if progress and (i + 1) % 50 == 0:
                progress(i + 1, counts)
    return Campaign(counts, examples, peak, slowest)


def cli_table_files(folder: Path) -> tuple[Path, dict]:
    """The small table of `build_table` and every file the table commands read."""
    from hwlat.nas.spaces import NB201_SIZE, nb201_arch

    good, files = build_table(folder)
    seed = folder / "seed.onnx"
    seed.write_bytes(builtin_seeds()["resnet_block"])
    corpus = folder / "corpus"
    corpus.mkdir()
    shutil.copy(seed, corpus / "seed.onnx")
    archs = [nb201_arch(i) for i in range(0, NB201_SIZE, 1500)]
    (folder / "archs.csv").write_text("arch\n" + "\n".join(archs) + "\n")
    (folder / "measured.csv").write_text(
        "arch,latency_ms\n" + "\n".join(f"{a},{1 + i / 10}" for i, a in enumerate(archs)) + "\n")
    rng = random.Random(0)
    (folder / "prior.csv").write_text("arch,dev_a,dev_b\n" + "\n".join(
        f"{nb201_arch(i)},{1 + rng.random():.4f},{2 + rng.random():.4f}" for i in range(NB201_SIZE)) + "\n")
    return good, {**files, "seed": seed, "corpus": corpus, "archs": folder / "archs.csv",
                  "measured": folder / "measured.csv", "prior": folder / "prior.csv"}


def cli_table_commands(files: dict, table: Path) -> dict[str, list]:
    """Every CLI command that opens a table, with arguments that reach the table (`compile` opens
    one only after building and tuning a model, minutes, and is left out)."""
    f, out, t = files, Path(files["out"]), ["--table", table]
    return {
        "devices": ["devices", *t],
        "lut show": ["lut", "show", *t],
        "lut show --device": ["lut", "show", "--device", "cpu-ort", "--json", *t],
        "lut delete": ["lut", "delete", "--device", "pixel", *t],
        "lut export json": ["lut", "export", out / "e.json", *t],
        "lut export csv": ["lut", "export", out / "e.csv", "--device", "pixel", *t],
        "lut export ofa": ["lut", "export", "--format", "ofa", out / "ofa-out", "--device", "note10", *t],
        "lut import json": ["lut", "import", f["json"], *t],
        "lut import csv": ["lut", "import", f["csv"], *t],
        "lut import ofa": ["lut", "import", "--format", "ofa", f["ofa"], "--device", "note10", *t],
        "lut sample": ["lut", "sample", "--device", "cpu-ort", "--kinds", "conv", "--n", "1", "--no-zoo",
                       "--corpus", f["corpus"], "--no-adaptive", *t],
        "lut train": ["lut", "train", "--device", "pixel", *t],
        "lut fit": ["lut", "fit", "--space", "nb201", "--measurements", f["measured"], "--device", "ph",
                    "--reference-device", "roofline-sd855", *t],
        "lut fit --propose": ["lut", "fit", "--space", "nb201", "--propose", "3", "--stored-prior", *t],
        "lut prior import": ["lut", "prior", "import", f["prior"], "--space", "nb201", *t],
        "predict": ["predict", f["seed"], "--device", "cpu-ort", "--estimate", *t],
        "profile": ["profile", f["seed"], "--device", "cpu-ort", *t],
        "calibrate": ["calibrate", f["seed"], "--device", "cpu-ort", *t],
        "validate": ["validate", f["seed"], "--device", "cpu-ort", *t],
        "nas predict": ["nas", "predict", "--space", "nb201", "--device", "pixel", "--archs", f["archs"],
                        "--estimate", *t],
        "search": ["search", "--space", "nb201", "--device", "pixel", "--latency-ms", "3", "--estimate",
                   "--generations", "1", *t],
    }


# on an intact table: `search` builds the NB201 latency table of all 15,625 cells (minutes on
# a busy machine); it opens the table first, as every query does
_SLOW_CONTROLS = ("search",)


_CLICK: list = []


def _preimport() -> None:
    """What the commands import, imported once before the forked workers (fork mode), and the
    click command typer builds from hwlat's app."""
    import typer

    import hwlat.cli
    import hwlat.graph  # noqa: F401
    import hwlat.lut.predict  # noqa: F401
    import hwlat.nas  # noqa: F401
    import hwlat.runners.profile  # noqa: F401

    if not _CLICK:
        _CLICK.append(typer.main.get_command(hwlat.cli.app))


def cli_table_campaign(folder: Path, timeout_s: float = 60.0, variants=("btree-header", "noise"),
                       pages: Callable[[int], bool] = lambda page: True, commands: tuple[str, ...] | None = None,
                       subprocess_every: int = 1, control: bool = True,
                       progress: Callable[[int, Counter], None] | None = None) -> Campaign:
    """Every damaged page (each variant) through every table command, each on a fresh copy.
    `control`: first run every command on the intact table once (its outcomes counted under
    "control ..."; a control refused before the table was read would mean the command never
    reached it). Every `subprocess_every`-th case is a real `hwlat` subprocess, the others forked
    workers (0: none)."""
    good, files = cli_table_files(folder)
    case = folder / "case.sqlite"
    home = folder / "home"
    home.mkdir()
    table_cmds = cli_table_commands(files, case)
    if commands is not None:
        table_cmds = {k: v for k, v in table_cmds.items() if k in commands}
    counts, examples, peak, slowest = Counter(), {}, 0, 0.0
    data_good = good.read_bytes()
    cases = [("intact", data_good)] if control else []
    if subprocess_every != 1:
        _preimport()
    cases += [(label, d) for label, d in damaged_pages(data_good, variants)
              if pages(int(label.split()[1]))]
    n = 0
    for label, data in cases:
        for name, args in table_cmds.items():
            for side in (Path(f"{case}-wal"), Path(f"{case}-shm")):
                side.unlink(missing_ok=True)
            case.write_bytes(data)
            if label == "intact" and name in _SLOW_CONTROLS:
                continue
            real = _real(n, subprocess_every)
            res = run_cli(args, home, timeout_s, fork=not real)
            counts["subprocesses"] += real
            after = case.read_bytes()
            outcome = res.outcome
            if label == "intact":
                outcome = f"control {outcome}"
            elif outcome == "refused" and (after != data or Path(f"{case}-wal").exists()):
                outcome = "changed"
            elif outcome == "ok" and after != data and not _intact(case):
                outcome = "silent"
            counts[outcome] += 1
            peak, slowest = max(peak, res.rss_bytes), max(slowest, res.seconds)
            if outcome not in ("ok", "control ok"):  # refusals too: what each command said
                examples.setdefault(outcome, []).append((f"{label}: {name}", res.detail))
            n += 1
            if progress and n % 100 == 0:
                progress(n, counts)
    return Campaign(counts, examples, peak, slowest)


# --- main ---------------------------------------------------------------------------------------

def _report(title: str, c: Campaign, seconds: float, extra: tuple[str, ...] = ()) -> None:
    total = sum(v for k, v in c.counts.items() if k != "subprocesses")
    print(f"{title}: {total} cases in {seconds:.0f} s; " +
          ", ".join(f"{k} {c.counts.get(k, 0)}" for k in (*OUTCOMES, *extra)))
    print(f"  peak RSS of a worker {c.peak_rss / 2**20:.0f} MiB, slowest case {c.slowest:.2f} s")
    for outcome, cases in c.examples.items():
        print(f"  {outcome}: {len(cases)}")
        for what, detail in cases[:5]:
            print(f"    {what}: {' '.join(detail.split())[:400]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mutants", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--zoo", default="mobilenet_v2,resnet18,sparse_convnet,nb201",
                    help="zoo models to mutate besides the built-in seeds ('' for none)")
    ap.add_argument("--seeds-dir", type=Path, default=Path("build/fuzz-seeds"))
    ap.add_argument("--keep-dir", type=Path, default=Path("build/fuzz-found"),
                    help="where mutants that broke a goal are kept")
    ap.add_argument("--no-tables", action="store_true")
    ap.add_argument("--cli-mutants", type=int, default=300,
                    help="mutants through `hwlat inspect`, `predict` and `profile` (0 for none)")
    ap.add_argument("--no-cli-tables", action="store_true",
                    help="skip every damaged table through every CLI command that opens a table")
    ap.add_argument("--cli-subprocess-every", type=int, default=10,
                    help="every Nth CLI case a real `hwlat` subprocess, the others the same entry point "
                         "in a forked worker (1: all subprocesses)")
    ap.add_argument("--cli-timeout", type=float, default=60.0,
                    help="seconds a CLI case may take (a subprocess starts the interpreter and its imports)")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    seeds = builtin_seeds()
    if args.zoo:
        seeds |= zoo_seeds(args.seeds_dir, args.zoo.split(","))
    args.keep_dir.mkdir(parents=True, exist_ok=True)
    print(f"hwlat fuzz, {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"seeds: {', '.join(sorted(seeds))}", flush=True)
    bad = False
    if args.mutants:
        t0 = time.perf_counter()
        c = model_campaign(seeds, args.mutants, args.seed, args.timeout, args.keep_dir,
                           progress=lambda n, k: print(f"  {n} mutants: {dict(k)}", flush=True))
        _report("models", c, time.perf_counter() - t0)
        bad = sum(c.counts.get(k, 0) for k in BAD) or c.peak_rss > RSS_GOAL
    if not args.no_tables:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="hwlat-fuzz-tables-") as tmp:
            t = table_campaign(Path(tmp), args.timeout)
        _report("tables", t, time.perf_counter() - t0, extra=("changed", "silent"))
        bad = bad or any(t.counts.get(k, 0) for k in (*BAD, "changed", "silent"))
    every = args.cli_subprocess_every
    if args.cli_mutants:
        # the built-in seeds only: `profile` times every kernel of a valid mutant, minutes for a
        # zoo model
        t0 = time.perf_counter()
        c = cli_model_campaign(builtin_seeds(), args.cli_mutants, args.seed + 1, args.cli_timeout, folder=args.keep_dir,
                               subprocess_every=every,
                               progress=lambda n, k: print(f"  {n} CLI mutants: {dict(k)}", flush=True))
        _report("models through the CLI (inspect, predict, profile)", c, time.perf_counter() - t0,
                extra=("lines", "subprocesses"))
        bad = bad or any(c.counts.get(k, 0) for k in CLI_BAD) or c.peak_rss > RSS_GOAL
    if not args.no_cli_tables:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="hwlat-fuzz-cli-tables-") as tmp:
            t = cli_table_campaign(Path(tmp), args.cli_timeout, subprocess_every=every,
                                   progress=lambda n, k: print(f"  {n} CLI table cases: {dict(k)}", flush=True))
        _report(f"damaged tables through the CLI ({len(cli_table_commands({'out': '.'} | _NAMES, Path('t')))}"
                " commands)", t, time.perf_counter() - t0,
                extra=("lines", "changed", "silent", "subprocesses", "control ok", "control refused"))
        bad = bad or any(t.counts.get(k, 0) for k in (*CLI_BAD, "changed", "silent")) or \
            t.peak_rss > RSS_GOAL
    sys.exit(1 if bad else 0)


_NAMES = dict.fromkeys(("json", "csv", "ofa", "corpus", "measured", "prior", "seed", "archs"), "x")


if __name__ == "__main__":
    main()
