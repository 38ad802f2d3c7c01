"""Kernel sampling: time kernels no model in the table has, drawn from what real models use.

nn-Meter's recipe for predicting models that were never profiled: sample kernel configurations
from the distribution real networks use, time them, and learn per kind from them. Here:

* the prior is the set of kernel configurations (`config_of`) found in a model corpus (the zoo's
  models and any ONNX files given); a draw picks one of them at random and moves its sizes
  (channels, map, tokens) by up to a factor of 2 either way (values up to 4, such as an image's
  3 channels, stay), and sometimes its kernel size; equal sizes stay equal (a depthwise conv
  stays depthwise, a square map square), so the draw keeps the structure of real kernels; a
  draw above MAX_MACS or MAX_ELEMENTS is drawn again (a kernel that runs longer than a
  scheduler time slice is timed with other processes' time in it on a shared machine);
* adaptive: after a first round, a cross-validated predictor of the kind (`hwlat.lut.learned`)
  finds the table's configurations it predicts worst, and the next round draws around them with
  a smaller spread;
* each configuration is built as a small ONNX graph (onnx.helper) in the form exporters write it
  in (a conv with its folded bias, residual Add and activation, GELU written out; a matmul with
  its bias; LayerNormalization; attention as MatMul -> scale -> Softmax -> MatMul; data movement
  as one Slice, Split, Transpose or constant Pad with its constants), then cut by
  hwlat's own `load` + `fuse`: the stored key is the key a real model with that kernel produces;
  a graph that does not fuse into one kernel of the intended kind is dropped;
* timed like any kernel by the profile machinery (cut out and timed alone) and committed in small
  batches: a killed run loses at most the batch in flight, and a rerun with the same seed draws
  the same configurations and skips those already timed.

Each sampled key is recorded in the table's `sampled` table with its round and feature vector.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from hwlat.errors import InvalidInputError
from hwlat.lut.features import FEATURE_VERSION, key_features, parse_key

KINDS = ("conv", "matmul", "layer_norm", "attention", "pool", "elementwise", "data_movement")
MAX_MACS = 4e8  # ~5 ms on one core at 80 GMAC/s
MAX_ELEMENTS = 8e6  # activations of a sample, inputs and outputs together
OPSET = 17
_UNARY = {"Relu", "Sigmoid", "Tanh", "HardSwish", "HardSigmoid", "LeakyRelu"}
_BINARY = {"Add", "Mul", "Sub", "Div"}
_SCHEMA = ("CREATE TABLE IF NOT EXISTS sampled (device TEXT NOT NULL, key TEXT NOT NULL, "
           "kind TEXT NOT NULL, round INTEGER NOT NULL, config TEXT NOT NULL, feature_version INTEGER NOT NULL, "
           "features TEXT NOT NULL, PRIMARY KEY (device, key)) WITHOUT ROWID")


# --- configurations: what a kernel is, read from its key


def config_of(key: str) -> dict | None:
    """A buildable configuration of a kernel key, or None where the sampler has no builder for it."""
    try:
        p = parse_key(key)
    except ValueError:
        return None
    shapes = [s.shape for s in (*p.inputs, *p.outputs, *p.params)]
    if any(s is None or any(d is None for d in s) for s in shapes) or not p.inputs or not p.outputs:
        return None
    if any(s.dtype != "float32" for s in (*p.inputs, *p.outputs)):
        return None
    ins = [list(s.shape) for s in p.inputs]
    a = p.attrs
    if p.kind == "conv" and p.ops[0] == "Conv" and len(ins) <= 2 and len(ins[0]) == 4:
        epi = _epilogue(p.ops[1:], residual=len(ins) == 2)
        w = p.params[0].shape
        if epi is None or len(w) != 4 or len(p.params) < 2 or p.params[1].shape != (w[0],):
            return None
        return {"kind": "conv", "x": ins[0], "cout": w[0], "k": [w[2], w[3]], "epilogue": epi,
                "group": int(a.get("group", 1)), "strides": _ints(a.get("strides")),
                "pads": _ints(a.get("pads")), "dilations": _ints(a.get("dilations")),
                "out_hw": list(p.outputs[0].shape[2:])}
    if p.kind == "matmul" and p.ops[0] in ("MatMul", "Gemm") and len(ins) == 1:
        w = p.params[0].shape
        if len(w) != 2:
            return None
        if p.ops[0] == "Gemm":
            if len(ins[0]) != 2 or a.get("transA", "0") != "0" or p.ops[1:]:
                return None
            trans = a.get("transB", "0") == "1"
            n = w[0] if trans else w[1]
            return {"kind": "matmul", "op": "Gemm", "x": ins[0], "n": n, "trans_b": trans,
                    "bias": len(p.params) == 2, "epilogue": []}
        epi = _epilogue(p.ops[1:], residual=False, bias=True)
        if epi is None:
            return None
        return {"kind": "matmul", "op": "MatMul", "x": ins[0], "n": w[1], "epilogue": epi}
    if p.kind == "layer_norm" and p.ops == ("LayerNormalization",) and len(ins) == 1:
        return {"kind": "layer_norm", "x": ins[0], "axis": int(a.get("axis", -1)),
                "epsilon": float(a.get("epsilon", 1e-5))}
    if p.kind == "attention" and len(ins) == 3 and "Softmax" in p.ops and len(ins[0]) == 4:
        ops = set(p.ops)
        if not ops <= {"Mul", "Transpose", "MatMul", "Add", "Softmax"} or p.ops.count("MatMul") != 2:
            return None
        mask = "Add" in ops
        if mask and not (len(p.params) == 2 and len(p.params[1].shape) == 4):
            return None
        # the exporter's form: q scaled, k transposed inside the kernel (k enters as b, h, s, d)
        if ins[1] != ins[0] or "Transpose" not in ops or "Mul" not in ops:
            return None
        return {"kind": "attention", "q": ins[0], "v": ins[2], "mask": mask,
                "mask_heads": p.params[1].shape[1] if mask else 0}
    if p.kind == "pool" and p.ops in (("GlobalAveragePool",), ("MaxPool",), ("AveragePool",)) and len(ins[0]) == 4:
        cfg = {"kind": "pool", "op": p.ops[0], "x": ins[0]}
        if p.ops[0] != "GlobalAveragePool":
            cfg.update(k=_ints(a.get("kernel_shape")), strides=_ints(a.get("strides")),
                       pads=_ints(a.get("pads")), dilations=_ints(a.get("dilations")),
                       ceil_mode=None if "ceil_mode" not in a else int(a["ceil_mode"]))
            if not cfg["k"] or set(a) - {"kernel_shape", "strides", "pads", "ceil_mode", "dilations", "auto_pad",
                                         "storage_order"} or a.get("storage_order", "0") != "0":
                return None
        return cfg
    if p.kind == "elementwise" and len(p.ops) == 1 and not p.params and not a:
        op = p.ops[0]
        if op in _BINARY and len(ins) == 2 and len(ins[0]) == len(ins[1]):
            return {"kind": "elementwise", "op": op, "x": ins[0], "y": ins[1]}
        if op in _UNARY - {"LeakyRelu"} and len(ins) == 1:
            return {"kind": "elementwise", "op": op, "x": ins[0], "y": None}
    if p.kind == "data_movement" and len(p.ops) == 1 and len(ins) == 1:
        return _data_movement_config(p.ops[0], ins[0], [list(o.shape) for o in p.outputs],
                                     [s.shape for s in p.params], a)
    return None


def _data_movement_config(op: str, x: list[int], outs: list[list[int]], params, a) -> dict | None:
    """Slice along one axis (a channel split, a window shift's strip), Split, Transpose and
    constant Pad; a cut's sizes are kept as shares of the axis so that a draw keeps them."""
    if op == "Transpose" and len(outs) == 1:
        perm = _ints(a.get("perm"))
        if sorted(perm) != list(range(len(x))):
            return None
        return {"kind": "data_movement", "op": "Transpose", "x": x, "perm": perm}
    if op == "Slice" and len(outs) == 1 and len(params) == 3 and len(outs[0]) == len(x):
        axes = [i for i, (d, o) in enumerate(zip(x, outs[0], strict=True)) if d != o]
        if len(axes) != 1 or not 0 < outs[0][axes[0]] < x[axes[0]]:
            return None
        return {"kind": "data_movement", "op": "Slice", "x": x, "axis": axes[0],
                "share": outs[0][axes[0]] / x[axes[0]]}
    if op == "Split" and len(outs) >= 2 and len(params) == 1:
        axis = int(a.get("axis", 0)) % len(x)
        if any(len(o) != len(x) for o in outs) or sum(o[axis] for o in outs) != x[axis]:
            return None
        return {"kind": "data_movement", "op": "Split", "x": x, "axis": axis,
                "shares": [o[axis] / x[axis] for o in outs]}
    if op == "Pad" and len(outs) == 1 and a.get("mode", "constant") == "constant" and len(outs[0]) == len(x) \
            and params and params[0] == (2 * len(x),) and len(params) <= 2:
        grow = [o - d for d, o in zip(x, outs[0], strict=True)]
        if any(g < 0 or g > 4 for g in grow):
            return None
        # the begin/end split is not in the key: TF-style "same" pads put the odd one at the end
        return {"kind": "data_movement", "op": "Pad", "x": x, "grow": grow, "value": len(params) == 2}
    return None


def _ints(v) -> list[int]:
    if v is None or v == "":
        return []
    return [int(x) for x in str(v).split("x")]


def _epilogue(ops: tuple[str, ...], *, residual: bool, bias: bool = False) -> list[str] | None:
    """The ops after the anchor as the blocks `_emit_epilogue` writes; None if one is unknown."""
    out, i, used_res = [], 0, False
    while i < len(ops):
        rest = ops[i:]
        if rest[:5] == ("Div", "Erf", "Add", "Mul", "Mul"):  # keys from before graph.canon
            out.append("gelu")
            i += 5
        elif rest[0] == "Gelu":  # a written-out GELU loads as one Gelu (graph.canon)
            out.append("gelu")
            i += 1
        elif rest[:2] == ("Sigmoid", "Mul"):
            out.append("silu")
            i += 2
        elif rest[0] == "Add" and bias and not out:
            out.append("bias")
            i += 1
        elif rest[0] == "Add" and residual and not used_res:
            out.append("residual")
            used_res = True
            i += 1
        elif rest[0] in ("Relu", "Sigmoid", "HardSwish", "HardSigmoid", "Tanh", "Clip"):
            out.append(rest[0])
            i += 1
        else:
            return None
    return out if used_res == residual else None


# --- drawing configurations


def draw(cfg: dict, rng: np.random.Generator, spread: float = 1.0, tries: int = 20) -> dict | None:
    """A configuration near `cfg`: every size > 4 moved by a factor 2**U(-spread, spread), equal
    sizes to equal sizes; for convs sometimes another kernel size. None if no valid one is found."""
    for _ in range(tries):
        out = _moved(cfg, rng, spread)
        if out is not None:
            return out
    return None


def _sizes(cfg: dict) -> list[int]:
    vals = []
    for k in ("x", "y", "q", "v"):
        if cfg.get(k):
            vals += cfg[k]
    for k in ("cout", "n", "group", "mask_heads"):
        if cfg.get(k):
            vals.append(cfg[k])
    return vals


def _moved(cfg: dict, rng: np.random.Generator, spread: float) -> dict | None:
    mapping = {}
    for v in sorted(set(_sizes(cfg))):
        if v <= 4:
            mapping[v] = v
            continue
        new = v * 2.0 ** rng.uniform(-spread, spread)
        step = 8 if v % 8 == 0 and new >= 16 else 1
        mapping[v] = max(step, int(round(new / step)) * step, 2)
    m = lambda xs: None if xs is None else [mapping.get(d, d) for d in xs]  # noqa: E731
    out = dict(cfg)
    for k in ("x", "y", "q", "v"):
        if k in cfg:
            out[k] = m(cfg[k])
    for k in ("cout", "n", "group", "mask_heads"):
        if cfg.get(k):
            out[k] = mapping[cfg[k]]
    if cfg["kind"] == "conv":
        k = list(cfg["k"])
        if rng.random() < 0.3 and k[0] == k[1] and k[0] in (1, 3, 5, 7):
            new_k = int(rng.choice([1, 3, 5, 7]))
            dil = (cfg["dilations"] or [1])[0]
            same = cfg["pads"] and all(p == (k[0] - 1) // 2 * dil for p in cfg["pads"])
            if same or new_k >= k[0]:
                out["k"] = [new_k, new_k]
                out["pads"] = [(new_k - 1) // 2 * dil] * 4 if same else cfg["pads"]
        cin, g = out["x"][1], out["group"]
        if cin % g or out["cout"] % g:
            return None
        out.pop("out_hw", None)
    if cfg["kind"] == "attention" and cfg["mask"] and out["mask_heads"] not in (1, out["q"][1]):
        return None
    if cfg["kind"] == "data_movement" and not _cuts(out):
        return None
    if cfg["kind"] == "elementwise" and cfg.get("y") is not None:
        if any(a != b and 1 not in (a, b) for a, b in zip(out["x"], out["y"], strict=True)):
            return None
    # a sample a CPU runs in a few milliseconds: a kernel that runs longer than a scheduler
    # time slice is timed with other processes' slices in it on a shared machine
    if _numel(out) > MAX_ELEMENTS or _macs(out) > MAX_MACS:
        return None
    return out


def _cuts(cfg: dict) -> list[int] | None:
    """The sizes along the axis a Slice keeps or a Split cuts into (None where the axis is too
    short for a cut of every part)."""
    if cfg["op"] not in ("Slice", "Split"):
        return [0]
    n = cfg["x"][cfg["axis"]]
    if cfg["op"] == "Slice":
        k = int(round(n * cfg["share"]))
        return [k] if 0 < k < n else None
    parts = [max(1, int(round(n * f))) for f in cfg["shares"][:-1]]
    last = n - sum(parts)
    return [*parts, last] if last >= 1 else None


def _macs(cfg: dict) -> float:
    """Multiply-accumulates of a configuration (0 for kinds without products)."""
    kind = cfg["kind"]
    if kind == "conv":
        n, cin, h, w = cfg["x"]
        sh, sw = (cfg["strides"] or [1, 1])[:2]
        return float(n * cfg["cout"] * (h // sh) * (w // sw) * (cin // cfg["group"]) * cfg["k"][0] * cfg["k"][1])
    if kind == "matmul":
        return float(np.prod(cfg["x"]) * cfg["n"])
    if kind == "attention":
        b, heads, s, d = cfg["q"]
        return float(2 * b * heads * s * s * d)
    return 0.0


def _numel(cfg: dict) -> float:
    total = 0.0
    for k in ("x", "y", "q", "v"):
        if cfg.get(k):
            total += float(np.prod(cfg[k]))
    return total


# --- building graphs


class _B:
    """A tiny graph under construction: nodes, constants, fresh names."""

    def __init__(self, seed: int = 0):
        self.nodes, self.inits, self.inputs, self.n = [], [], [], 0
        self.rng = np.random.default_rng(seed)

    def name(self, p: str) -> str:
        self.n += 1
        return f"{p}{self.n}"

    def input(self, shape) -> str:
        n = self.name("x")
        self.inputs.append(helper.make_tensor_value_info(n, TensorProto.FLOAT, list(shape)))
        return n

    def const(self, value) -> str:
        n = self.name("c")
        self.inits.append(numpy_helper.from_array(np.asarray(value, np.float32), n))
        return n

    def rand(self, *shape) -> str:
        return self.const(self.rng.standard_normal(shape).astype(np.float32) * 0.1)

    def node(self, op: str, inputs, **attrs) -> str:
        out = self.name("t")
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=self.name(op), **attrs))
        return out

    def model(self, output: str) -> onnx.ModelProto:
        g = helper.make_graph(self.nodes, "hwlat-sample", self.inputs, [], self.inits)
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 8
        inferred = onnx.shape_inference.infer_shapes(model)
        y = next(v for v in inferred.graph.value_info if v.name == output)
        model.graph.output.append(y)
        return model


def _emit_epilogue(b: _B, x: str, epi: list[str], channels: int, residual: str | None, per_channel) -> str:
    for e in epi:
        if e == "gelu":
            h = b.node("Div", [x, b.const(np.float32(1.4142135))])
            h = b.node("Erf", [h])
            h = b.node("Add", [h, b.const(np.float32(1.0))])
            h = b.node("Mul", [x, h])
            x = b.node("Mul", [h, b.const(np.float32(0.5))])
        elif e == "silu":
            x = b.node("Mul", [x, b.node("Sigmoid", [x])])
        elif e == "bias":
            x = b.node("Add", [x, b.rand(*per_channel(channels))])
        elif e == "residual":
            x = b.node("Add", [x, residual])
        elif e == "Clip":
            x = b.node("Clip", [x, b.const(np.float32(0.0)), b.const(np.float32(6.0))])
        elif e == "HardSigmoid":
            x = b.node("HardSigmoid", [x], alpha=1.0 / 6, beta=0.5)
        else:
            x = b.node(e, [x])
    return x


def build(cfg: dict, seed: int = 0) -> onnx.ModelProto:
    """The ONNX graph of one configuration, in the form exporters write it."""
    b = _B(seed)
    kind = cfg["kind"]
    if kind == "conv":
        x = b.input(cfg["x"])
        cin, cout, g = cfg["x"][1], cfg["cout"], cfg["group"]
        kh, kw = cfg["k"]
        attrs = {"group": g, "kernel_shape": [kh, kw]}
        for name in ("strides", "pads", "dilations"):
            if cfg[name]:
                attrs[name] = cfg[name]
        y = b.node("Conv", [x, b.rand(cout, cin // g, kh, kw), b.rand(cout)], **attrs)
        res = None
        if "residual" in cfg["epilogue"]:
            n, _, h, w = cfg["x"]
            sh, sw = (cfg["strides"] or [1, 1])[:2]
            ph = sum((cfg["pads"] or [0, 0, 0, 0])[0::2])
            pw = sum((cfg["pads"] or [0, 0, 0, 0])[1::2])
            dh = (cfg["dilations"] or [1, 1])[0]
            oh = (h + ph - dh * (kh - 1) - 1) // sh + 1
            ow = (w + pw - dh * (kw - 1) - 1) // sw + 1
            res = b.input([n, cout, oh, ow])
        return b.model(_emit_epilogue(b, y, cfg["epilogue"], cout, res, lambda c: (c, 1, 1)))
    if kind == "matmul":
        x = b.input(cfg["x"])
        k, n = cfg["x"][-1], cfg["n"]
        if cfg["op"] == "Gemm":
            w = b.rand(n, k) if cfg["trans_b"] else b.rand(k, n)
            ins = [x, w] + ([b.rand(n)] if cfg["bias"] else [])
            return b.model(b.node("Gemm", ins, alpha=1.0, beta=1.0, transB=int(cfg["trans_b"])))
        y = b.node("MatMul", [x, b.rand(k, n)])
        return b.model(_emit_epilogue(b, y, cfg["epilogue"], n, None, lambda c: (c,)))
    if kind == "layer_norm":
        x = b.input(cfg["x"])
        c = cfg["x"][cfg["axis"]]
        return b.model(b.node("LayerNormalization", [x, b.rand(c), b.rand(c)], axis=cfg["axis"],
                              epsilon=cfg["epsilon"]))
    if kind == "attention":
        q, k, v = b.input(cfg["q"]), b.input(cfg["q"]), b.input(cfg["v"])
        bsz, heads, s, d = cfg["q"]
        qs = b.node("Mul", [q, b.const(np.float32(d ** -0.5))])
        kt = b.node("Transpose", [k], perm=[0, 1, 3, 2])
        scores = b.node("MatMul", [qs, kt])
        if cfg["mask"]:
            scores = b.node("Add", [scores, b.rand(1, cfg["mask_heads"], s, s)])
        p = b.node("Softmax", [scores], axis=-1)
        return b.model(b.node("MatMul", [p, v]))
    if kind == "pool":
        x = b.input(cfg["x"])
        if cfg["op"] == "GlobalAveragePool":
            return b.model(b.node("GlobalAveragePool", [x]))
        attrs = {"kernel_shape": cfg["k"]}
        for name in ("strides", "pads", "dilations"):
            if cfg.get(name):
                attrs[name] = cfg[name]
        if cfg.get("ceil_mode") is not None:
            attrs["ceil_mode"] = cfg["ceil_mode"]
        return b.model(b.node(cfg["op"], [x], **attrs))
    if kind == "elementwise":
        x = b.input(cfg["x"])
        if cfg["y"] is None:
            if cfg["op"] == "HardSigmoid":
                return b.model(b.node("HardSigmoid", [x], alpha=1.0 / 6, beta=0.5))
            return b.model(b.node(cfg["op"], [x]))
        return b.model(b.node(cfg["op"], [x, b.input(cfg["y"])]))
    if kind == "data_movement":
        return _build_data_movement(b, cfg)
    raise InvalidInputError(f"no sampler for kernel kind '{kind}'")


def _int64(b: _B, values) -> str:
    n = b.name("c")
    b.inits.append(numpy_helper.from_array(np.asarray(values, np.int64), n))
    return n


def _build_data_movement(b: _B, cfg: dict) -> onnx.ModelProto:
    x = b.input(cfg["x"])
    op, rank = cfg["op"], len(cfg["x"])
    cuts = _cuts(cfg)
    if cuts is None:
        raise InvalidInputError(f"a {op} of {cfg['x']} along axis {cfg['axis']} has no valid cut")
    if op == "Transpose":
        return b.model(b.node("Transpose", [x], perm=cfg["perm"]))
    if op == "Slice":  # the exporter's form: starts, ends, axes as constants
        ax = cfg["axis"]
        return b.model(b.node("Slice", [x, _int64(b, [0]), _int64(b, [cuts[0]]), _int64(b, [ax])]))
    if op == "Split":
        outs = [b.name("t") for _ in cuts]
        b.nodes.append(helper.make_node("Split", [x, _int64(b, cuts)], outs, name=b.name("Split"),
                                        axis=cfg["axis"]))
        model = b.model(outs[0])
        inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
        model.graph.output.extend(inferred[o] for o in outs[1:])
        return model
    if op == "Pad":
        grow = cfg["grow"]
        pads = [0] * rank + list(grow)  # begins, then ends
        ins = [x, _int64(b, pads)] + ([b.const(np.float32(0.0))] if cfg["value"] else [])
        return b.model(b.node("Pad", ins, mode="constant"))
    raise InvalidInputError(f"no sampler for data-movement op '{op}'")


@dataclass(frozen=True)
class Sample:
    config: dict
    path: Path  # the ONNX file it was built into
    graph: object  # hwlat.graph Graph
    kernel: object  # the one kernel it fused into


def cut(cfg: dict, folder: Path, seed: int = 0) -> Sample | None:
    """Build, save, load and fuse one configuration; None unless it fuses into exactly one
    kernel (views and folded constants aside) of the configuration's kind."""
    from hwlat.graph import fuse, load

    path = folder / f"s{abs(hash(json.dumps(cfg, sort_keys=True))) % 10**12}.onnx"
    onnx.save(build(cfg, seed), path)
    g = load(path)
    ks = [k for k in fuse(g) if k.kind.value != "view"]
    if len(ks) != 1 or ks[0].kind.value != cfg["kind"]:
        return None
    return Sample(cfg, path, g, ks[0])


# --- the prior and the sampling loop


def corpus_configs(keys: Iterable[str], kinds: Iterable[str]) -> dict[str, list[dict]]:
    """The prior: every buildable configuration among these kernel keys, by kind (with repeats:
    a configuration used in many places is drawn more often)."""
    want = set(kinds)
    out: dict[str, list[dict]] = {k: [] for k in want}
    for key in keys:
        cfg = config_of(key)
        if cfg is not None and cfg["kind"] in want:
            out[cfg["kind"]].append(cfg)
    return out


def model_keys(paths: Iterable[Path]) -> list[str]:
    """Kernel keys of every occurrence in these models (the corpus the prior is fitted to)."""
    from hwlat.errors import HwlatError
    from hwlat.graph import fuse, load

    keys = []
    for p in paths:
        try:
            keys += [k.key.text() for k in fuse(load(p))]
        except HwlatError:  # a model hwlat cannot read adds nothing to the prior
            continue
    return keys


def ensure_schema(store) -> None:
    if not store.readonly:
        with store._write():
            store._db.execute(_SCHEMA)


def sampled_keys(store, device: str) -> dict[str, tuple[str, int]]:
    """key -> (kind, round) of the sampled kernels the table holds an entry for."""
    have = store._db.execute("SELECT name FROM sqlite_master WHERE name = 'sampled'").fetchone()
    if have is None:
        return {}
    rows = store._db.execute(
        "SELECT s.key, s.kind, s.round FROM sampled s JOIN entries e ON e.device = s.device AND e.key = s.key"
        " WHERE s.device = ?", (device,))
    return {k: (kind, r) for k, kind, r in rows}


@dataclass(frozen=True)
class SampleReport:
    timed: dict[str, int]  # kind -> kernels timed now
    total: dict[str, int]  # kind -> sampled kernels in the table now
    dropped: int  # drawn configurations that did not fuse as intended


def sample(store, spec, timer: Callable[[dict], int], prior: dict[str, list[dict]], n: int, *,
           seed: int = 0, adaptive: bool = True) -> SampleReport:
    """Time sampled kernels of each kind in `prior` until the table holds `n` of that kind for the
    device: half drawn from the prior, the rest (with `adaptive`) around the configurations the
    kind's cross-validated predictor gets most wrong. `timer(todo)` times {key: (graph, kernel)}
    into the table and returns how many it measured (the profiling loop of hwlat.runners: lut/
    never imports the runners)."""
    ensure_schema(store)
    timed = dict.fromkeys(prior, 0)
    dropped = 0
    rng = np.random.default_rng(seed)
    for rnd in (0, 1):
        have = sampled_keys(store, spec.name)
        for kind, cfgs in prior.items():
            count = sum(1 for k, _ in have.values() if k == kind)
            target = n if (rnd == 1 or not adaptive) else (n + 1) // 2
            if count >= target or not cfgs:
                continue
            centres, spread = cfgs, 1.0
            if rnd == 1:
                centres = _worst(store, spec.name, kind) or cfgs
                spread = 0.5
            with tempfile.TemporaryDirectory(prefix="hwlat-sample-") as tmp:
                todo, rows = {}, []
                table_keys = store.keys(spec.name)
                attempts = 0
                while len(todo) < target - count and attempts < 20 * (target - count):
                    attempts += 1
                    cfg = draw(centres[int(rng.integers(len(centres)))], rng, spread)
                    s = None if cfg is None else cut(cfg, Path(tmp), seed=int(rng.integers(2**31)))
                    if s is None:
                        dropped += 1
                        continue
                    key = s.kernel.key.text()
                    if key in todo or key in table_keys:
                        continue
                    todo[key] = (s.graph, s.kernel)
                    feats = key_features(key)
                    rows.append((spec.name, key, kind, rnd, json.dumps(cfg, sort_keys=True), FEATURE_VERSION,
                                 json.dumps([None if np.isnan(v) else float(v) for v in feats])))
                with store._write():
                    store._db.executemany("INSERT OR REPLACE INTO sampled VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
                timed[kind] += timer(todo)
        if not adaptive:
            break
    have = sampled_keys(store, spec.name)
    total = {kind: sum(1 for k, _ in have.values() if k == kind) for kind in prior}
    return SampleReport(timed, total, dropped)


def _worst(store, device: str, kind: str, share: float = 0.2) -> list[dict]:
    """Configurations of the table's entries of `kind` with the largest cross-validated error."""
    from hwlat.lut.learned import cv_errors

    errs = cv_errors(store, device, kind)
    if not errs:
        return []
    ranked = sorted(errs.items(), key=lambda kv: -kv[1])
    out = []
    for key, _ in ranked[: max(1, int(len(ranked) * share))]:
        cfg = config_of(key)
        if cfg is not None:
            out.append(cfg)
    return out
