"""Fuzz hwlat's readers: mutated models through load -> fuse -> summarize, damaged tables through
every command that opens a table.

    PYTHONPATH=. .venv/bin/python benchmarks/fuzz.py [--mutants 10000] [--seed 0] \
        [--zoo mobilenet_v2,resnet18,sparse_convnet,nb201] [--seeds-dir build/fuzz-seeds] [--no-tables]

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

Goal: 0 traceback, 0 abort, 0 hang, 0 memory, peak RSS under 2 GiB, 0 changed, 0 silent.
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
MEMORY_LIMIT = 4 << 30  # address space of a worker; RSS is what the goal bounds
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


def run_limited(fn: Callable[[], object], timeout_s: float, memory: int = MEMORY_LIMIT) -> Result:
    """fn() in a forked child with an address-space limit and a timeout."""
    r, w = os.pipe()
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the worker
        os.close(r)
        outcome, detail = "ok", ""
        try:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
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


# --- main ---------------------------------------------------------------------------------------

def _report(title: str, c: Campaign, seconds: float, extra: tuple[str, ...] = ()) -> None:
    total = sum(c.counts.values())
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
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    seeds = builtin_seeds()
    if args.zoo:
        seeds |= zoo_seeds(args.seeds_dir, args.zoo.split(","))
    args.keep_dir.mkdir(parents=True, exist_ok=True)
    print(f"hwlat fuzz, {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"seeds: {', '.join(sorted(seeds))}", flush=True)
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
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
