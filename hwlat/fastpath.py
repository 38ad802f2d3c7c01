"""torch.nn.Module -> hwlat's graph IR without writing ONNX: the fast path of `hwlat.predict`.

A module is walked call by call: a `Sequential` child by child, any other container traced
with `torch.fx` (its own code only; every child is called, not inlined) and the trace
interpreted, each leaf module and function mapped to the ONNX-level nodes that
`torch.onnx.export` (dynamo, opset 20, with its optimizer) writes for it:

- Conv2d -> Conv (a BatchNorm2d right after it folded into the conv's bias, as the exporter
  folds it in eval mode; a bias of zeros left out, as the exporter drops it);
- Linear -> Gemm (transB=1) on 2-D input, MatMul + Add on more dims;
- ReLU / ReLU6 (Clip) / Hardswish / Hardsigmoid / Sigmoid / SiLU (Sigmoid, Mul) / GELU / Tanh;
- Add / Mul, pooling, adaptive average pooling to 1x1 (ReduceMean), mean, flatten / view /
  reshape (Reshape; dropped where the shape does not change), cat, transpose / permute,
  LayerNorm, softmax, BatchNorm2d alone (BatchNormalization); Identity and Dropout vanish;
- matmul, unbind, scaled_dot_product_attention (no dropout; `is_causal`, a float mask or a
  constant boolean one: the mask the exporter folds to a constant, added before the softmax).

Shapes come from running each call on meta tensors: an input that does not fit a module fails
there with the module's own error. Anything else (a module or function without a mapping,
data-dependent control flow, indexing a tensor, which the exporter writes in several ways)
raises `Unmappable`, naming the submodule: the caller then exports the whole model instead,
never a guess.

Each converted call is cached by (module type, hyper-parameters, the value facts the export
depends on, input shapes), so the identical blocks of a search loop's candidates are traced
and mapped once.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from hwlat.errors import HwlatError, InvalidInputError
from hwlat.graph.ir import SMALL_CONSTANT_ELEMENTS, Graph, Node, TensorSig, Value
from hwlat.graph.ops import NON_DETERMINISTIC, Op

OPSET = 20  # torch.onnx.export's (dynamo) default opset


class Unmappable(HwlatError):
    """The fast path cannot map a call exactly; `where` is the submodule's qualified name."""

    def __init__(self, where: str, why: str):
        self.where, self.why = where or "(the model)", why
        super().__init__(f"submodule '{self.where}': {why}")


# --- values during conversion ------------------------------------------------------------

@dataclass(frozen=True)
class TV:
    """A tensor value: its IR name and a meta tensor of its shape and dtype."""

    name: str
    meta: torch.Tensor
    const: torch.Tensor | None = None  # the real tensor of a constant (parameter, literal)


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


class _Rec:
    """A node as recorded: op, input/output value names, attributes (names starting with `_`
    are the fast path's notes, not ONNX attributes). `sig` is (op, inputs, sorted attributes),
    what tells the same node twice apart; `ir_attrs` the sorted ONNX attributes the graph IR
    keeps. Both are worked out once for a node and kept with a cached fragment's records."""

    __slots__ = ("op", "inputs", "outputs", "attrs", "sig", "ir_attrs")

    def __init__(self, op: Op, inputs: list[str], outputs: list[str], attrs: dict[str, Any],
                 akey: tuple | None = None, ir_attrs: tuple | None = None):
        self.op, self.inputs, self.outputs, self.attrs = op, inputs, outputs, attrs
        if akey is None:
            akey = tuple(sorted(attrs.items()))
        self.sig = (op, tuple(inputs), akey)
        self.ir_attrs = ir_attrs if ir_attrs is not None else \
            tuple(kv for kv in akey if not kv[0].startswith("_"))


@dataclass
class Builder:
    nodes: list[_Rec] = field(default_factory=list)
    sigs: dict[str, TensorSig] = field(default_factory=dict)
    consts: set[str] = field(default_factory=set)
    data: dict[str, np.ndarray] = field(default_factory=dict)
    interned: dict[tuple, str] = field(default_factory=dict)
    literals: dict[str, np.ndarray] = field(default_factory=dict)  # interned name -> value
    params: dict[int, tuple[torch.Tensor, str]] = field(default_factory=dict)
    seen: set[tuple] = field(default_factory=set)  # (op, inputs, attrs) of the nodes made
    counter: int = 0

    def add(self, rec: _Rec) -> None:
        """A node; the same op on the same inputs twice is refused: the exporter keeps one."""
        sig = rec.sig
        if sig in self.seen:
            raise Unmappable("", f"the same {rec.op.op_type} twice on the same inputs (the "
                                 "exporter merges them)")
        self.seen.add(sig)
        self.nodes.append(rec)

    def fresh(self, stem: str) -> str:
        self.counter += 1
        return f"{stem}_{self.counter}"

    def value(self, stem: str, meta: torch.Tensor) -> TV:
        name = self.fresh(stem)
        self.sigs[name] = TensorSig(tuple(int(d) for d in meta.shape), _dtype(meta))
        return TV(name, meta)

    def param(self, t: torch.Tensor, stem: str = "w") -> TV:
        """A weight: shape and dtype only (large), or its data (small); one name per tensor."""
        seen = self.params.get(id(t))
        if seen is not None and seen[0] is t:
            return TV(seen[1], t.detach().to("meta"), t.detach())
        name = self.fresh(stem)
        self.params[id(t)] = (t, name)
        self.sigs[name] = TensorSig(tuple(int(d) for d in t.shape), _dtype(t))
        self.consts.add(name)
        return TV(name, t.detach().to("meta"), t.detach())

    def literal(self, arr: np.ndarray) -> TV:
        """A small constant of the kind the exporter writes once and shares (axes, shapes,
        clip bounds, scales): interned by value."""
        arr = np.array(arr, copy=True, order="C")
        arr.flags.writeable = False  # kept by the graph and by cached fragments
        name = self.literal_name(arr)
        t = torch.from_numpy(arr.copy())
        return TV(name, t.to("meta"), t)

    def literal_name(self, arr: np.ndarray, key: tuple | None = None) -> str:
        """The interned name of a literal (a C-ordered array this builder may keep); `key`:
        its `_literal_key`, where known."""
        if key is None:
            key = _literal_key(arr)
        name = self.interned.get(key)
        if name is None:
            name = self.interned[key] = self.fresh("c")
            self.sigs[name] = TensorSig(tuple(int(d) for d in arr.shape), str(arr.dtype))
            self.consts.add(name)
            self.literals[name] = arr
            if arr.size <= SMALL_CONSTANT_ELEMENTS:
                self.data[name] = arr
        return name

    def emit(self, op: Op, inputs: list[TV], meta: torch.Tensor, attrs: dict | None = None,
             stem: str | None = None) -> TV:
        out = self.value(stem or op.op_type.lower(), meta)
        self.add(_Rec(op, [i.name for i in inputs], [out.name], dict(attrs or {})))
        return out


def _literal_key(arr: np.ndarray) -> tuple:
    return (str(arr.dtype), arr.shape, arr.tobytes())


# --- the cache of converted calls ---------------------------------------------------------

@dataclass(frozen=True)
class _Fragment:
    """A converted call, relocatable: records over local names; `$i` are the call's inputs.
    Kept as flat tuples, in the order a replay needs them, everything it would otherwise work
    out again (literal keys, name stems, attribute keys) worked out once."""

    nodes: tuple[tuple, ...]  # (op, inputs, outputs, attrs, sorted attrs, IR attrs), local names
    fresh: tuple[tuple[str, str, TensorSig, bool], ...]  # (local, stem, sig, constant)
    literals: tuple[tuple[str, tuple, np.ndarray], ...]  # (local, _literal_key, the value)
    outputs: Any  # the result's structure, local names in place of tensors
    out_meta: Any


_CACHE: dict[tuple, _Fragment] = {}
_CACHE_LIMIT = 4096
_FRAGMENT_NODES = 64  # larger calls (a stage, the model) are not kept


def clear_cache() -> None:
    _CACHE.clear()


# --- leaf modules ---------------------------------------------------------------------------

def _bias_state(b: torch.Tensor | None) -> str:
    if b is None:
        return "none"
    return "set" if b.detach().cpu().numpy().any() else "zero"


def _leaf_facts(m: nn.Module) -> tuple:
    """The value facts an export depends on, beyond shapes: which biases are zeros."""
    if isinstance(m, _WITH_BIAS):
        return (_bias_state(m._parameters.get("bias")),)
    if isinstance(m, nn.BatchNorm2d):
        p, buf = m._parameters, m._buffers
        stats = (p.get("weight"), p.get("bias"), buf.get("running_mean"), buf.get("running_var"))
        if any(t is None for t in stats):
            return (None,)  # not mapped (training statistics off, or not affine)
        shape, dtype = stats[0].shape, stats[0].dtype
        if any(t.shape != shape or t.dtype != dtype for t in stats):
            return (None,)
        return _bn_facts(stats)
    return ()


_WITH_BIAS = (nn.Conv2d, nn.Conv1d, nn.Linear)


def _bn_facts(stats) -> tuple:
    """(running mean all zeros, bias state, equal groups) of a BatchNorm's (weight, bias, mean,
    var)."""
    arrs = [_array(t) for t in stats]  # each tensor converted once
    raw = [a.tobytes() for a in arrs]  # one shape and dtype (checked): the bytes decide
    return (not arrs[2].any(), "set" if arrs[1].any() else "zero", tuple(raw.index(r) for r in raw))


def _array(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    return (t if t.is_cpu else t.cpu()).numpy()


def _equal_groups(ts, arrs=None) -> tuple[int, ...]:
    """For each tensor, the index of the first one equal to it (same dtype, shape and bytes):
    the exporter stores equal weights once, so a kernel reading two of them lists one."""
    if arrs is None:
        arrs = [t.detach().cpu().numpy() for t in ts]
    raw = [(t.dtype, tuple(t.shape), a.tobytes()) for t, a in zip(ts, arrs, strict=True)]
    return tuple(raw.index(r) for r in raw)


def _bn_inputs(b: Builder, x: TV, stats) -> list[TV]:
    """BatchNormalization's inputs: x, scale, bias, mean, var; equal ones shared."""
    groups = _equal_groups([t.detach() for t in stats])
    made: list[TV] = []
    for i, t in enumerate(stats):
        made.append(made[groups[i]] if groups[i] != i else b.param(t))
    return [x, *made]


_PRIMITIVE = (int, float, str, bool, type(None))


def _hyper(m: nn.Module) -> tuple:
    """A module's plain attributes (numbers, strings, flags, classes, tuples of numbers)."""
    fixed = _HYPER_GETTERS.get(type(m))
    if fixed is not None:
        return fixed(m)
    out = []
    for k, v in m.__dict__.items():
        if k[0] == "_" or k == "training":
            continue
        if isinstance(v, _PRIMITIVE) or isinstance(v, type):
            out.append((k, v))
        elif callable(v) and not isinstance(v, nn.Module | torch.Tensor):
            out.append((k, v))  # a function the forward calls: by identity
        elif isinstance(v, tuple | list) and all(isinstance(x, _PRIMITIVE) for x in v):
            out.append((k, tuple(v)))
    return tuple(out)


def _structure(m: nn.Module, memo: dict | None = None) -> tuple:
    """What decides a module's export besides its inputs: type, hyper-parameters, parameter
    shapes, value facts, and its children's structure."""
    if memo is not None:
        hit = memo.get(id(m))
        if hit is not None:
            return hit
    t = type(m)
    if t in _SHAPED_BY_HYPER:  # its hyper-parameters fix its parameters' shapes
        names = tuple([n for n, p in m._parameters.items() if p is not None])
        params = (names, m._parameters[names[0]].dtype if names else None)
        buffers = ()
    else:
        params = tuple([(n, p.shape, p.dtype) for n, p in m._parameters.items() if p is not None])
        buffers = tuple([(n, b.shape, b.dtype) for n, b in m._buffers.items() if b is not None])
    kids = tuple([(n, _structure(c, memo)) for n, c in m._modules.items() if c is not None]) \
        if m._modules else ()
    flat = (t, m.training, _hyper(m), params, buffers, _leaf_facts(m), kids)
    # interned: a module's key holds its children's ids, so hashing and comparing a stage's or
    # a model's key does not walk its whole tree (TypeError where something is unhashable)
    key = _STRUCTS.get(flat)
    if key is None:
        if len(_STRUCTS) >= _STRUCTS_LIMIT:
            _STRUCTS.clear()  # ids are never reused: a key made before stays distinct
        key = _STRUCTS[flat] = (next(_STRUCT_IDS),)
    if memo is not None:
        memo[id(m)] = key
    return key


_STRUCTS: dict[tuple, tuple[int]] = {}  # a module's structure -> its id
_STRUCT_IDS = itertools.count()
_STRUCTS_LIMIT = 1 << 16


# the attributes that decide a common leaf's export (the rest of its __dict__ is bookkeeping)
_LEAF_HYPER: dict[type, tuple[str, ...]] = {
    nn.Conv2d: ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
                "groups", "padding_mode", "transposed", "output_padding"),
    nn.BatchNorm2d: ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    nn.Linear: ("in_features", "out_features"),
    nn.ReLU: ("inplace",), nn.ReLU6: ("inplace", "min_val", "max_val"), nn.Identity: (),
    nn.Hardswish: ("inplace",), nn.Hardsigmoid: ("inplace",), nn.SiLU: ("inplace",),
    nn.Sigmoid: (), nn.Tanh: (), nn.GELU: ("approximate",),
}

# the same, as one C call a module: a tuple of the values in that order
_HYPER_GETTERS: dict[type, Callable[[nn.Module], tuple]] = {
    t: (operator.attrgetter(*ks) if len(ks) > 1 else
        (lambda m, k=ks[0]: (getattr(m, k),)) if ks else (lambda m: ()))
    for t, ks in _LEAF_HYPER.items()}

# parameter shapes follow from (in/out channels or features, kernel size, groups)
_SHAPED_BY_HYPER = frozenset({nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.LayerNorm})


def _code_key(m: nn.Module) -> tuple:
    """What decides a module's fx trace: its code and plain attributes, and which children it
    has (each is called, not inlined)."""
    return (type(m), _hyper(m), tuple((n, type(c), _hyper(c)) for n, c in m._modules.items()
                                      if c is not None))


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _conv2d(b: Builder, m: nn.Conv2d | nn.Conv1d, x: TV, where: str) -> TV:
    """Conv2d and Conv1d: one Conv node (1-D attributes for a Conv1d)."""
    if isinstance(m.padding, str) or m.padding_mode != "zeros":
        raise Unmappable(where, f"{type(m).__name__} with padding={m.padding!r}, "
                                f"padding_mode={m.padding_mode!r}")
    meta = _conv_meta(m, x.meta)
    dims = len(m.kernel_size)
    pads = tuple(int(p) for p in _ntuple(m.padding, dims))
    inputs = [x, b.param(m.weight)]
    if _bias_state(m.bias) == "set":
        inputs.append(b.param(m.bias))
    return b.emit(Op.Conv, inputs, meta, {
        "auto_pad": "NOTSET", "dilations": _ntuple(m.dilation, dims), "group": int(m.groups),
        "kernel_shape": tuple(int(k) for k in m.kernel_size), "pads": pads + pads,
        "strides": _ntuple(m.stride, dims), "_bias": _bias_state(m.bias)})


def _ntuple(v, n: int) -> tuple[int, ...]:
    return tuple(int(x) for x in ((v,) * n if isinstance(v, int) else v))


def _group_norm(b: Builder, m: nn.GroupNorm, x: TV, where: str) -> TV:
    """GroupNorm as the exporter writes it: Reshape to (N, groups, -1), InstanceNormalization
    with unit scale and zero bias, Reshape back, Mul by the weight and Add the bias as (C, 1, 1)
    constants (ones and zeros when it is not affine)."""
    shape = tuple(x.meta.shape)
    if len(shape) < 2 or shape[1] != m.num_channels:
        F.group_norm(x.meta, m.num_groups, None, None, m.eps)  # the module's own error
        raise Unmappable(where, f"GroupNorm on a {len(shape)}-d input")
    meta = F.group_norm(x.meta, m.num_groups, None, None, m.eps)
    grouped = torch.empty((shape[0], m.num_groups, int(np.prod(shape[2:], dtype=np.int64)) * (
        m.num_channels // m.num_groups)), dtype=x.meta.dtype, device="meta")
    y = b.emit(Op.Reshape, [x, b.literal(np.array([0, m.num_groups, -1], np.int64))], grouped,
               {"allowzero": 0})
    y = b.emit(Op.InstanceNormalization, [y, b.literal(np.ones(m.num_groups, np.float32)),
                                          b.literal(np.zeros(m.num_groups, np.float32))],
               grouped, {"epsilon": float(np.float32(m.eps))})
    y = b.emit(Op.Reshape, [y, b.literal(np.array(shape, np.int64))], meta, {"allowzero": 0})
    c = (m.num_channels,) + (1,) * (len(shape) - 2)
    if m.affine:
        scale = b.param(m.weight.detach().reshape(c))
        shift = b.param(m.bias.detach().reshape(c))
    else:
        scale = b.literal(np.ones(c, np.float32))
        shift = b.literal(np.zeros(c, np.float32))
    y = b.emit(Op.Mul, [y, scale], meta)
    return b.emit(Op.Add, [y, shift], meta)


def _conv_meta(m: nn.Conv2d | nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """The output of a zero-padded Conv2d or Conv1d on meta tensor `x`, by the output-size formula where
    the input fits (running the conv on meta tensors costs milliseconds); else F.conv2d, which
    raises the module's own error."""
    w, dims = m.weight, len(m.kernel_size)
    if x.dim() == dims + 2 and x.shape[1] == m.in_channels and x.dtype == w.dtype:
        size = [(n + 2 * p - d * (k - 1) - 1) // s + 1 for n, p, d, k, s in zip(
            x.shape[2:], _ntuple(m.padding, dims), _ntuple(m.dilation, dims), m.kernel_size,
            _ntuple(m.stride, dims), strict=True)]
        if all(n > 0 for n in size):
            return torch.empty((x.shape[0], m.out_channels, *size), dtype=x.dtype, device="meta")
    conv = F.conv2d if dims == 2 else F.conv1d
    return conv(x, w.to("meta"), None, m.stride, m.padding, m.dilation, m.groups)


def _batchnorm2d(b: Builder, m: nn.BatchNorm2d, x: TV, where: str) -> TV:
    if m.training or not m.track_running_stats or m.running_mean is None or not m.affine:
        raise Unmappable(where, "BatchNorm2d in training mode or without running statistics/affine")
    if m.momentum is None:
        raise Unmappable(where, "BatchNorm2d with momentum=None")
    meta = x.meta if x.meta.dim() == 4 and x.meta.shape[1] == m.num_features else \
        F.batch_norm(x.meta, m.running_mean.to("meta"), m.running_var.to("meta"),
                     m.weight.to("meta"), m.bias.to("meta"), False, 0.0, m.eps)  # its own error
    inputs = _bn_inputs(b, x, (m.weight, m.bias, m.running_mean, m.running_var))
    return b.emit(Op.BatchNormalization, inputs, meta, {
        "epsilon": float(np.float32(m.eps)), "momentum": float(np.float32(1 - m.momentum)),
        "_fold": (not bool(m.running_mean.detach().any()), _bias_state(m.bias))})


def _linear(b: Builder, m: nn.Linear, x: TV, where: str) -> TV:
    return _linear_of(b, x, m.weight, m.bias, where)


def _linear_of(b: Builder, x: TV, weight: torch.Tensor, bias: torch.Tensor | None, where: str) -> TV:
    meta = F.linear(x.meta, weight.to("meta"))
    if x.meta.dim() == 2:
        inputs = [x, b.param(weight)]
        if _bias_state(bias) == "set":
            inputs.append(b.param(bias))
        return b.emit(Op.Gemm, inputs, meta, {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 1})
    if x.meta.dim() < 2:
        raise Unmappable(where, "Linear on a 1-D input")
    y = b.emit(Op.MatMul, [x, b.param(weight.t())], meta)
    if bias is None:
        return y
    return b.emit(Op.Add, [y, b.param(bias)], meta)


def _f_linear(b: Builder, where: str, x: TV, weight, bias=None) -> TV:
    if not isinstance(weight, TV) or weight.const is None or (
            bias is not None and (not isinstance(bias, TV) or bias.const is None)):
        raise Unmappable(where, "linear with a computed weight")
    return _linear_of(b, x, weight.const, None if bias is None else bias.const, where)


def _clip(b: Builder, x: TV, lo: float, hi: float) -> TV:
    return b.emit(Op.Clip, [x, b.literal(np.array(lo, np.float32)), b.literal(np.array(hi, np.float32))],
                  x.meta)


def _silu(b: Builder, x: TV) -> TV:
    s = b.emit(Op.Sigmoid, [x], x.meta)
    return b.emit(Op.Mul, [x, s], x.meta)


def _gelu(b: Builder, x: TV, approximate: str) -> TV:
    return b.emit(Op.Gelu, [x], x.meta, {"approximate": approximate})


def _hardsigmoid(b: Builder, x: TV) -> TV:
    return b.emit(Op.HardSigmoid, [x], x.meta, {"alpha": float(np.float32(1 / 6)), "beta": 0.5})


def _pool_attrs(kernel, stride, padding) -> dict:
    kh, kw = _pair(kernel)
    sh, sw = _pair(stride if stride not in (None, ()) else kernel)
    ph, pw = _pair(padding)
    return {"auto_pad": "NOTSET", "kernel_shape": (kh, kw), "pads": (ph, pw, ph, pw), "strides": (sh, sw)}


def _maxpool(b: Builder, x: TV, where: str, kernel, stride, padding, dilation, ceil_mode) -> TV:
    if ceil_mode:
        raise Unmappable(where, "max pooling with ceil_mode=True")
    meta = F.max_pool2d(x.meta, kernel, stride, padding, dilation, ceil_mode)
    attrs = _pool_attrs(kernel, stride, padding)
    attrs.update(ceil_mode=0, dilations=tuple(_pair(dilation)), storage_order=0)
    return b.emit(Op.MaxPool, [x], meta, attrs)


def _avgpool(b: Builder, x: TV, where: str, kernel, stride, padding, ceil_mode, count_include_pad,
             divisor_override) -> TV:
    if ceil_mode or divisor_override is not None:
        raise Unmappable(where, "average pooling with ceil_mode=True or a divisor_override")
    meta = F.avg_pool2d(x.meta, kernel, stride, padding, ceil_mode, count_include_pad)
    attrs = _pool_attrs(kernel, stride, padding)
    attrs.update(ceil_mode=0, count_include_pad=int(bool(count_include_pad)))
    return b.emit(Op.AveragePool, [x], meta, attrs)


def _reduce_mean(b: Builder, x: TV, dims, keepdim: bool) -> TV:
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    meta = x.meta.mean(dims, keepdim=keepdim)
    axes = b.literal(np.array(dims, np.int64))
    return b.emit(Op.ReduceMean, [x, axes], meta, {"keepdims": int(keepdim), "noop_with_empty_axes": 0})


def _adaptive_avg(b: Builder, x: TV, where: str, size) -> TV:
    size = _pair(size) if not isinstance(size, int) else (size, size)
    if tuple(size) != (1, 1) or x.meta.dim() != 4:
        raise Unmappable(where, f"adaptive average pooling to {size} (only to 1x1)")
    return _reduce_mean(b, x, (-1, -2), True)


def _reshape(b: Builder, x: TV, meta: torch.Tensor) -> TV:
    if tuple(meta.shape) == tuple(x.meta.shape):
        return TV(x.name, meta, x.const)  # the exporter's optimizer drops a no-op reshape
    shape = b.literal(np.array(tuple(meta.shape), np.int64))
    return b.emit(Op.Reshape, [x, shape], meta, {"allowzero": 1})


def _layer_norm(b: Builder, x: TV, where: str, shape, weight, bias, eps) -> TV:
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if len(shape) != 1 or weight is None or bias is None:
        raise Unmappable(where, "LayerNorm over several dims or without an affine weight and bias")
    meta = F.layer_norm(x.meta, shape)
    return b.emit(Op.LayerNormalization, [x, b.param(weight), b.param(bias)], meta,
                  {"axis": -1, "epsilon": float(np.float32(eps)), "stash_type": 1})


def _act(op: Op) -> Callable:
    return lambda b, m, x, where: b.emit(op, [x], x.meta)


LEAVES: dict[type, Callable[[Builder, Any, TV, str], TV]] = {
    nn.Conv2d: _conv2d,
    nn.Conv1d: _conv2d,
    nn.GroupNorm: _group_norm,
    nn.BatchNorm2d: _batchnorm2d,
    nn.Linear: _linear,
    nn.ReLU: _act(Op.Relu),
    nn.Sigmoid: _act(Op.Sigmoid),
    nn.Tanh: _act(Op.Tanh),
    nn.Hardswish: _act(Op.HardSwish),
    nn.Hardsigmoid: lambda b, m, x, where: _hardsigmoid(b, x),
    nn.ReLU6: lambda b, m, x, where: _clip(b, x, 0.0, 6.0),
    nn.SiLU: lambda b, m, x, where: _silu(b, x),
    nn.GELU: lambda b, m, x, where: _gelu(b, x, m.approximate),
    nn.Identity: lambda b, m, x, where: x,
    nn.Dropout: lambda b, m, x, where: x,
    nn.MaxPool2d: lambda b, m, x, where: _maxpool(b, x, where, m.kernel_size, m.stride, m.padding,
                                                  m.dilation, m.ceil_mode),
    nn.AvgPool2d: lambda b, m, x, where: _avgpool(b, x, where, m.kernel_size, m.stride, m.padding,
                                                  m.ceil_mode, m.count_include_pad, m.divisor_override),
    nn.AdaptiveAvgPool2d: lambda b, m, x, where: _adaptive_avg(b, x, where, m.output_size),
    nn.Flatten: lambda b, m, x, where: _reshape(b, x, x.meta.flatten(m.start_dim, m.end_dim)),
    nn.LayerNorm: lambda b, m, x, where: _layer_norm(b, x, where, m.normalized_shape, m.weight,
                                                     m.bias, m.eps),
    nn.Softmax: lambda b, m, x, where: _softmax(b, where, x, m.dim),
}


_NO_NODE = frozenset({nn.Identity, nn.Dropout})  # they vanish: nothing for the exporter to merge


# --- functions and methods in traced code --------------------------------------------------

def _binary(op: Op, torch_fn):
    def run(b: Builder, where: str, a, c) -> Any:
        if not isinstance(a, TV) and not isinstance(c, TV):
            return torch_fn(a, c)
        if op is not Op.Mul and not (isinstance(a, TV) and isinstance(c, TV)):
            # seen written as Mul(x, scalar) only; other ops with a Python number: not guessed
            raise Unmappable(where, f"{op.op_type} with a Python number")
        ta, tc = (x if isinstance(x, TV) else _scalar(b, x, where) for x in (a, c))
        return b.emit(op, [ta, tc], _broadcast_meta(torch_fn, ta.meta, tc.meta))
    return run


def _broadcast_meta(torch_fn, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The result of an elementwise float op (Add, Sub, Mul, Div) on two meta tensors, from
    the broadcast shape and the promoted dtype: running the op on meta tensors goes through
    torch's Python reference kernels (milliseconds a call)."""
    dtype = torch.result_type(x, y)
    if not dtype.is_floating_point:  # integer division and the like: torch decides
        return torch_fn(x, y)
    return torch.empty(torch.broadcast_shapes(x.shape, y.shape), dtype=dtype, device="meta")


def _scalar(b: Builder, v, where: str) -> TV:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise Unmappable(where, f"an operand of type {type(v).__name__}")
    return b.literal(np.array(v, np.float32))


def _unary(fn):
    return lambda b, where, x, *a, **k: fn(b, x)


def _softmax(b: Builder, where: str, x: TV, dim=None, *a, **k) -> TV:
    if dim != -1:
        raise Unmappable(where, f"softmax over dim={dim} (mapped: the last dim, written -1)")
    return b.emit(Op.Softmax, [x], x.meta.softmax(dim), {"axis": int(dim)})


def _flatten(b: Builder, where: str, x: TV, start_dim: int = 0, end_dim: int = -1) -> TV:
    return _reshape(b, x, x.meta.flatten(start_dim, end_dim))


def _view(b: Builder, where: str, x: TV, *shape) -> TV:
    if len(shape) == 1 and isinstance(shape[0], tuple | list | torch.Size):
        shape = tuple(shape[0])
    return _reshape(b, x, x.meta.reshape(*shape))


def _mean(b: Builder, where: str, x: TV, dim=None, keepdim: bool = False, **kw) -> TV:
    if dim is None or kw.get("dtype") is not None:
        raise Unmappable(where, "mean over all dims or with a dtype")
    return _reduce_mean(b, x, dim, keepdim)


def _cat(b: Builder, where: str, xs, dim: int = 0) -> TV:
    if not all(isinstance(x, TV) for x in xs) or any(x.const is not None for x in xs):
        raise Unmappable(where, "cat of constants")
    if dim < 0:
        raise Unmappable(where, f"cat over dim={dim} (mapped: a dim counted from the front)")
    meta = torch.cat([x.meta for x in xs], dim)
    return b.emit(Op.Concat, list(xs), meta, {"axis": int(dim)})


def _transpose(b: Builder, where: str, x: TV, d0: int, d1: int) -> TV:
    n = x.meta.dim()
    perm = list(range(n))
    perm[d0 % n], perm[d1 % n] = perm[d1 % n], perm[d0 % n]
    return _permute(b, where, x, perm)


def _permute(b: Builder, where: str, x: TV, *dims) -> TV:
    if len(dims) == 1 and isinstance(dims[0], tuple | list):
        dims = tuple(dims[0])
    n = x.meta.dim()
    perm = tuple(int(d) % n for d in dims)
    if perm == tuple(range(n)):
        return x
    return b.emit(Op.Transpose, [x], x.meta.permute(perm), {"perm": perm})


def _passthrough(b: Builder, where: str, x, *a, **k):
    return x


def _relu6(b, where, x, *a, **k):
    return _clip(b, x, 0.0, 6.0)


def _hardtanh(b, where, x, min_val=-1.0, max_val=1.0, *a, **k):
    if (min_val, max_val) != (0.0, 6.0):
        raise Unmappable(where, f"hardtanh({min_val}, {max_val})")
    return _clip(b, x, 0.0, 6.0)


def _f_gelu(b, where, x, approximate="none"):
    return _gelu(b, x, approximate)


def _f_maxpool(b, where, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    if return_indices:
        raise Unmappable(where, "max pooling with indices")
    return _maxpool(b, x, where, kernel_size, stride, padding, dilation, ceil_mode)


def _f_avgpool(b, where, x, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    return _avgpool(b, x, where, kernel_size, stride, padding, ceil_mode, count_include_pad,
                    divisor_override)


def _f_adaptive_avg(b, where, x, output_size):
    return _adaptive_avg(b, x, where, output_size)


def _f_batch_norm(b: Builder, where: str, x: TV, running_mean, running_var, weight=None, bias=None,
                  training=False, momentum=0.1, eps=1e-5) -> TV:
    stats = (running_mean, running_var, weight, bias)
    if training or not all(isinstance(t, TV) and t.const is not None for t in stats):
        raise Unmappable(where, "batch_norm in training mode or without running statistics/affine")
    if momentum is None:
        raise Unmappable(where, "batch_norm with momentum=None")
    meta = x.meta if x.meta.dim() >= 2 and x.meta.shape[1] == running_mean.meta.shape[0] else \
        F.batch_norm(x.meta, running_mean.meta, running_var.meta, weight.meta, bias.meta, False,
                     0.0, eps)  # its own error
    inputs = _bn_inputs(b, x, tuple(t.const for t in (weight, bias, running_mean, running_var)))
    return b.emit(Op.BatchNormalization, inputs, meta, {
        "epsilon": float(np.float32(eps)), "momentum": float(np.float32(1 - momentum)),
        "_fold": (not bool(running_mean.const.any()), _bias_state(bias.const))})


def _matmul(b: Builder, where: str, a: TV, c: TV) -> TV:
    if not isinstance(a, TV) or not isinstance(c, TV) or a.const is not None:
        raise Unmappable(where, "matmul with a constant operand")
    if c.const is not None:
        raise Unmappable(where, "matmul by a constant")
    return b.emit(Op.MatMul, [a, c], torch.matmul(a.meta, c.meta))


def _unbind(b: Builder, where: str, x: TV, dim: int = 0) -> tuple[TV, ...]:
    """As the exporter writes it: a Slice of one index and a Squeeze of that axis per part."""
    if dim != 0:
        raise Unmappable(where, f"unbind over dim={dim} (mapped: dim 0)")
    n = int(x.meta.shape[0])
    axes = b.literal(np.array([0], np.int64))
    parts = []
    for i in range(n):
        start = b.literal(np.array([i], np.int64))
        end = b.literal(np.array([i + 1], np.int64))
        one = b.emit(Op.Slice, [x, start, end, axes], x.meta[i:i + 1])
        parts.append(b.emit(Op.Squeeze, [one, axes], x.meta[i]))
    return tuple(parts)


def _sdpa(b: Builder, where: str, q: TV, k: TV, v: TV, attn_mask=None, dropout_p: float = 0.0,
          is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False) -> TV:
    """scaled_dot_product_attention as the exporter writes it: K's last two dims transposed
    (Reshape to 3-D, Transpose, Reshape back), Q and K^T each scaled by sqrt(scale) (a [1]
    constant, a scalar where `scale=` is given), MatMul, [Add the mask,] Softmax, MatMul by V.
    The mask: `is_causal` adds a constant (L, S) float mask (0 on and below the diagonal, the
    dtype's lowest value above); a float `attn_mask` is added as it is; a constant boolean one
    is folded to such a float mask, and the softmax is followed by Where(IsNaN(p), 0, p) (rows
    masked whole give zeros, not NaN)."""
    if dropout_p or enable_gqa or (is_causal and attn_mask is not None):
        raise Unmappable(where, "scaled_dot_product_attention with dropout, enable_gqa, or both "
                                "a mask and is_causal (mapped: a mask or is_causal)")
    if not all(isinstance(t, TV) and t.const is None and t.meta.dim() == 4 for t in (q, k, v)):
        raise Unmappable(where, "scaled_dot_product_attention on other than three 4-D tensors")
    if q.meta.dtype != torch.float32 or k.meta.dtype != q.meta.dtype or v.meta.dtype != q.meta.dtype:
        raise Unmappable(where, "scaled_dot_product_attention on other than float32 tensors")
    lq, lk, e = int(q.meta.shape[-2]), int(k.meta.shape[-2]), int(k.meta.shape[-1])
    scores = torch.matmul(q.meta, k.meta.transpose(-2, -1))
    mask, nan_guard = None, False
    if is_causal:
        lowest = np.finfo(np.float32).min
        mask = b.literal(np.where(np.tril(np.ones((lq, lk), bool)), np.float32(0), lowest)
                         .astype(np.float32))
    elif attn_mask is not None:
        if not isinstance(attn_mask, TV):
            raise Unmappable(where, f"scaled_dot_product_attention with a {type(attn_mask).__name__} mask")
        if attn_mask.meta.dtype == torch.bool:
            if attn_mask.const is None:
                raise Unmappable(where, "scaled_dot_product_attention with a computed boolean "
                                        "mask (mapped: a constant one, or a float mask)")
            keep = attn_mask.const.detach().cpu().numpy()
            mask = b.literal(np.where(keep, np.float32(0), np.finfo(np.float32).min)
                             .astype(np.float32))
            nan_guard = True
        elif attn_mask.meta.dtype == q.meta.dtype:
            mask = attn_mask
        else:
            raise Unmappable(where, f"scaled_dot_product_attention with a {attn_mask.meta.dtype} mask")
        try:
            shape = torch.broadcast_shapes(scores.shape, mask.meta.shape)
        except RuntimeError as err:
            raise _shape_error(where, err) from err
        if tuple(shape) != tuple(scores.shape):
            raise Unmappable(where, "scaled_dot_product_attention with a mask larger than the "
                                    "attention scores")
    flat = torch.empty((int(np.prod(k.meta.shape[:-2])), lk, e), dtype=k.meta.dtype, device="meta")
    kt = b.emit(Op.Reshape, [k, b.literal(np.array([-1, lk, e], np.int64))], flat, {"allowzero": 0})
    kt = b.emit(Op.Transpose, [kt], flat.transpose(1, 2), {"perm": (0, 2, 1)})
    kt_meta = k.meta.transpose(-2, -1)
    kt = b.emit(Op.Reshape, [kt, b.literal(np.array(tuple(kt_meta.shape), np.int64))], kt_meta,
                {"allowzero": 0})
    factor = math.sqrt(scale if scale is not None else 1 / math.sqrt(int(q.meta.shape[-1])))
    root = b.literal(np.array(factor if scale is not None else [factor], np.float32))
    qs = b.emit(Op.Mul, [q, root], q.meta)
    kts = b.emit(Op.Mul, [kt, root], kt_meta)
    s = b.emit(Op.MatMul, [qs, kts], scores)
    if mask is not None:
        s = b.emit(Op.Add, [s, mask], scores)
    p = b.emit(Op.Softmax, [s], scores, {"axis": -1})
    if nan_guard:
        nan = b.emit(Op.IsNaN, [p], torch.empty(scores.shape, dtype=torch.bool, device="meta"))
        p = b.emit(Op.Where, [nan, b.literal(np.array(0, np.float32)), p], scores)
    return b.emit(Op.MatMul, [p, v], torch.matmul(scores, v.meta))


_ADD = _binary(Op.Add, operator.add)
_MUL = _binary(Op.Mul, operator.mul)
_SUB = _binary(Op.Sub, operator.sub)
_DIV = _binary(Op.Div, operator.truediv)

FUNCTIONS: dict[Any, Callable] = {
    operator.add: _ADD, operator.iadd: _ADD, torch.add: _ADD,
    operator.mul: _MUL, operator.imul: _MUL, torch.mul: _MUL,
    operator.sub: _SUB, torch.sub: _SUB,
    operator.truediv: _DIV, torch.div: _DIV,
    operator.matmul: _matmul, torch.matmul: _matmul,
    torch.relu: _unary(lambda b, x: b.emit(Op.Relu, [x], x.meta)),
    F.relu: _unary(lambda b, x: b.emit(Op.Relu, [x], x.meta)),
    torch.sigmoid: _unary(lambda b, x: b.emit(Op.Sigmoid, [x], x.meta)),
    F.sigmoid: _unary(lambda b, x: b.emit(Op.Sigmoid, [x], x.meta)),
    torch.tanh: _unary(lambda b, x: b.emit(Op.Tanh, [x], x.meta)),
    F.hardswish: _unary(lambda b, x: b.emit(Op.HardSwish, [x], x.meta)),
    F.hardsigmoid: _unary(_hardsigmoid),
    F.silu: _unary(_silu),
    F.relu6: _relu6,
    F.hardtanh: _hardtanh,
    F.gelu: _f_gelu,
    F.softmax: _softmax, torch.softmax: _softmax,
    torch.flatten: _flatten,
    torch.reshape: _view,
    torch.mean: _mean,
    torch.cat: _cat, torch.concat: _cat,
    torch.transpose: _transpose,
    torch.permute: _permute,
    F.max_pool2d: _f_maxpool,
    F.avg_pool2d: _f_avgpool,
    F.adaptive_avg_pool2d: _f_adaptive_avg,
    F.dropout: _passthrough,
    F.batch_norm: _f_batch_norm,
    F.linear: _f_linear,
    torch.unbind: _unbind,
    F.scaled_dot_product_attention: _sdpa,
}

METHODS: dict[str, Callable] = {
    "add": _ADD, "add_": _ADD, "mul": _MUL, "mul_": _MUL, "sub": _SUB, "div": _DIV,
    "matmul": _matmul,
    "relu": FUNCTIONS[torch.relu], "relu_": FUNCTIONS[torch.relu],
    "sigmoid": FUNCTIONS[torch.sigmoid], "tanh": FUNCTIONS[torch.tanh],
    "softmax": _softmax,
    "flatten": _flatten, "view": _view, "reshape": _view,
    "mean": _mean,
    "transpose": _transpose, "permute": _permute,
    "contiguous": _passthrough,
    "unbind": _unbind,
}
# evaluated on meta tensors / Python values: they make no node
_SHAPE_METHODS = frozenset({"size", "dim"})


# --- the walk -------------------------------------------------------------------------------

class _Tracer(fx.Tracer):
    """Traces one module's own forward: every child module is a call, not inlined."""

    def __init__(self, root: nn.Module):
        super().__init__()
        self.root_module = root

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return m is not self.root_module


_TRACES: dict[tuple, fx.Graph] = {}  # _code_key -> trace


class Converter:
    def __init__(self, builder: Builder):
        self.b = builder
        self.memo: dict[int, tuple] = {}
        self.calls: dict[tuple, nn.Module] = {}  # (module, input names) already converted

    # a call of module `m` (qualified name `where`) on converted args
    def call_module(self, m: nn.Module, where: str, args: tuple, kwargs: dict):
        if kwargs:
            raise Unmappable(where, f"{type(m).__name__} called with keyword arguments")
        tensors = [a for a in args if isinstance(a, TV)]
        if len(tensors) != len(args) or not tensors:
            raise Unmappable(where, f"{type(m).__name__} called with non-tensor arguments")
        if any(t.const is not None for t in tensors):
            raise Unmappable(where, f"{type(m).__name__} called on a constant")
        call = (id(m), tuple(t.name for t in tensors))
        if call in self.calls and type(m) not in _NO_NODE:
            raise Unmappable(where, "called twice on the same input (the exporter merges the "
                                    "two into one)")
        self.calls[call] = m
        try:
            key = (_structure(m, self.memo), tuple((tuple(t.meta.shape), t.meta.dtype) for t in tensors))
            hash(key)
        except TypeError:
            key = None
        hit = _CACHE.get(key) if key is not None else None
        if hit is not None:
            return self._replay(hit, tensors)
        start = len(self.b.nodes)
        out = self._convert(m, where, tensors)
        # blocks are what candidates share; a whole model or stage rarely recurs
        if key is not None and where and len(self.b.nodes) - start <= _FRAGMENT_NODES:
            frag = self._fragment(start, tensors, out)
            if frag is not None:
                if len(_CACHE) >= _CACHE_LIMIT:
                    _CACHE.clear()
                _CACHE[key] = frag
        return out

    def _convert(self, m: nn.Module, where: str, args: list[TV]):
        leaf = LEAVES.get(type(m))
        if leaf is not None:
            if len(args) != 1:
                raise Unmappable(where, f"{type(m).__name__} with {len(args)} inputs")
            try:
                return leaf(self.b, m, args[0], where)
            except (HwlatError, KeyboardInterrupt):
                raise
            except Exception as e:  # the module's own error on these shapes
                raise _shape_error(where, _own_error(m, args[0]) or e) from e
        if type(m) is nn.Sequential:
            x = args[0]
            if len(args) != 1:
                raise Unmappable(where, "Sequential with several inputs")
            for name, child in m.named_children():
                x = self.call_module(child, f"{where}.{name}" if where else name, (x,), {})
            return x
        if type(m).forward is nn.Module.forward:
            raise Unmappable(where, f"{type(m).__name__} has no forward")
        if type(m).__module__.startswith("torch.nn.") and type(m) is not nn.ModuleList:
            raise Unmappable(where, f"no mapping for {type(m).__module__}.{type(m).__name__}")
        return self._interpret(m, where, args)

    def _interpret(self, m: nn.Module, where: str, args: list[TV]):
        graph = self._trace(m, where)
        env: dict[fx.Node, Any] = {}
        it = iter(args)
        result = None
        for n in graph.nodes:
            here = where
            try:
                if n.op == "placeholder":
                    nxt = next(it, None)
                    if nxt is None:
                        if not n.args:
                            raise Unmappable(where, "called with fewer inputs than its forward takes")
                        nxt = n.args[0]  # the parameter's default
                    env[n] = nxt
                    continue
                a = fx.node.map_arg(n.args, lambda x: env[x])
                k = fx.node.map_arg(n.kwargs, lambda x: env[x])
                if n.op == "call_module":
                    here = f"{where}.{n.target}" if where else str(n.target)
                    env[n] = self.call_module(m.get_submodule(str(n.target)), here, a, k)
                elif n.op == "get_attr":
                    t = _get_attr(m, str(n.target))
                    env[n] = self.b.param(t) if isinstance(t, torch.Tensor) else t
                elif n.op == "call_function":
                    env[n] = self._function(n.target, where, a, k)
                elif n.op == "call_method":
                    env[n] = self._method(str(n.target), where, a, k)
                elif n.op == "output":
                    result = a[0]
            except (HwlatError, KeyboardInterrupt):
                raise
            except Exception as e:  # the module's own error on these shapes
                raise _shape_error(here, e) from e
        return result

    def _trace(self, m: nn.Module, where: str) -> fx.Graph:
        try:
            key = _code_key(m)
            hash(key)
        except TypeError:
            key = None
        g = _TRACES.get(key) if key is not None else None
        if g is None:
            try:
                g = _Tracer(m).trace(m)
            except Exception as e:
                raise Unmappable(where, f"{type(m).__name__} cannot be traced by torch.fx "
                                        f"({_one_line(e)})") from e
            if key is not None:
                _TRACES[key] = g
        return g

    def _function(self, fn, where: str, a: tuple, k: dict):
        if fn is getattr:
            return getattr(_metaof(a[0]), a[1])
        if fn is operator.getitem:
            if isinstance(a[0], TV):
                raise Unmappable(where, "indexing a tensor (the exporter writes Slice, Gather or "
                                        "Split depending on how)")
            return a[0][a[1]]
        handler = FUNCTIONS.get(fn)
        if handler is not None:
            tensors = [x for x in (*a, *k.values()) if isinstance(x, TV)]
            if tensors and all(t.const is not None for t in tensors) and fn not in (torch.cat, torch.concat):
                raise Unmappable(where, f"{getattr(fn, '__name__', fn)} of constants only")
            return handler(self.b, where, *a, **k)
        if not any(isinstance(x, TV) for x in (*a, *k.values())) and fn in _PY_FUNCTIONS:
            return fn(*a, **k)
        raise Unmappable(where, f"no mapping for function {getattr(fn, '__module__', '')}."
                                f"{getattr(fn, '__name__', fn)}")

    def _method(self, name: str, where: str, a: tuple, k: dict):
        self_ = a[0]
        if not isinstance(self_, TV):
            return getattr(self_, name)(*a[1:], **k)
        if name in _SHAPE_METHODS:
            return getattr(self_.meta, name)(*a[1:], **k)
        handler = METHODS.get(name)
        if handler is None:
            raise Unmappable(where, f"no mapping for Tensor.{name}")
        if self_.const is not None:
            raise Unmappable(where, f"Tensor.{name} of a constant")
        return handler(self.b, where, *a, **k)

    # --- the cache
    def _fragment(self, start: int, inputs: list[TV], out) -> _Fragment | None:
        recs = self.b.nodes[start:]
        local: dict[str, str] = {t.name: f"${i}" for i, t in enumerate(inputs)}
        for r in recs:
            for v in (*r.inputs, *r.outputs):
                if v not in local:
                    local[v] = f"%{v}"
        outs = _map_struct(out, lambda t: local.get(t.name) if isinstance(t, TV) else t)
        if _has_none(outs):
            return None  # an output not made here (a passthrough of a constant)
        nodes = tuple((r.op, tuple(local[i] for i in r.inputs), tuple(local[o] for o in r.outputs),
                       r.attrs, r.sig[2], r.ir_attrs) for r in recs)
        names = {v for r in recs for v in (*r.inputs, *r.outputs)} - {t.name for t in inputs}
        b = self.b
        literals = tuple((local[v], _literal_key(b.literals[v]), b.literals[v])
                         for v in names if v in b.literals)
        fresh = tuple((local[v], local[v][1:].rsplit("_", 1)[0], b.sigs[v], v in b.consts)
                      for v in names if v not in b.literals)
        return _Fragment(nodes, fresh, literals, outs,
                         _map_struct(out, lambda t: t.meta if isinstance(t, TV) else t))

    def _replay(self, f: _Fragment, inputs: list[TV]):
        b = self.b
        names: dict[str, str] = {f"${i}": t.name for i, t in enumerate(inputs)}
        for local, key, arr in f.literals:  # a fragment's literals are its own copies
            names[local] = b.literal_name(arr, key)
        sigs, consts = b.sigs, b.consts
        for local, stem, sig, const in f.fresh:
            b.counter += 1
            name = names[local] = f"{stem}_{b.counter}"
            sigs[name] = sig
            if const:
                consts.add(name)
        for op, ins, outs, attrs, akey, ir_attrs in f.nodes:
            b.add(_Rec(op, [names[i] for i in ins], [names[o] for o in outs], attrs, akey, ir_attrs))
        if type(f.outputs) is str:  # one tensor
            return TV(names[f.outputs], f.out_meta)
        meta = iter(_leaves(f.out_meta))
        return _map_struct(f.outputs, lambda s: TV(names[s], next(meta)) if isinstance(s, str)
                           and s in names else s)


_PY_FUNCTIONS = frozenset({operator.floordiv, operator.mul, operator.add, operator.sub,
                           operator.neg, operator.truediv, operator.getitem, operator.eq,
                           operator.ne, operator.lt, operator.le, operator.gt, operator.ge,
                           operator.not_, operator.and_, operator.or_, operator.is_,
                           operator.is_not, operator.mod, len, int, float, bool, torch._assert})


def _get_attr(m: nn.Module, target: str):
    obj: Any = m
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _metaof(x):
    return x.meta if isinstance(x, TV) else x


def _map_struct(x, fn):
    if isinstance(x, tuple | list):
        return type(x)(_map_struct(v, fn) for v in x)
    if isinstance(x, dict):
        return {k: _map_struct(v, fn) for k, v in x.items()}
    return fn(x)


def _leaves(x):
    if isinstance(x, tuple | list):
        for v in x:
            yield from _leaves(v)
    elif isinstance(x, dict):
        for v in x.values():
            yield from _leaves(v)
    elif isinstance(x, torch.Tensor):
        yield x


def _has_none(x) -> bool:
    if isinstance(x, tuple | list):
        return any(_has_none(v) for v in x)
    if isinstance(x, dict):
        return any(_has_none(v) for v in x.values())
    return x is None


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _own_error(m: nn.Module, x: TV) -> Exception | None:
    """The error the module itself raises on a real input of this shape (meta kernels word
    theirs differently)."""
    try:
        with torch.no_grad():
            m(torch.zeros(x.meta.shape, dtype=x.meta.dtype))
    except Exception as e:
        return e
    return None


def _shape_error(where: str, e: Exception) -> InvalidInputError:
    return InvalidInputError(f"submodule '{where or '(the model)'}' refuses the input: "
                             f"{_one_line(e)}")


# --- the whole model -------------------------------------------------------------------------

def _fold_batchnorm(b: Builder, outputs: set[str]) -> list[_Rec]:
    """Conv -> BatchNormalization (the conv's only reader) becomes one Conv with a bias, as the
    exporter folds it; the bias is left out when it folds to zeros (no conv bias, BN mean 0 and
    shift 0), as the exporter drops a zero bias."""
    uses: dict[str, int] = {}
    producer: dict[str, _Rec] = {}
    for r in b.nodes:
        for i in r.inputs:
            uses[i] = uses.get(i, 0) + 1
        for o in r.outputs:
            producer[o] = r
    drop: set[int] = set()
    for r in b.nodes:
        if r.op is not Op.BatchNormalization:
            continue
        conv = producer.get(r.inputs[0])
        x = r.inputs[0]
        if conv is None or conv.op is not Op.Conv or uses.get(x, 0) != 1 or x in outputs:
            continue
        conv_bias = conv.attrs.get("_bias", "set")
        mean_zero, bn_bias = r.attrs["_fold"]
        zero = conv_bias in ("none", "zero") and mean_zero and bn_bias in ("none", "zero")
        w = conv.inputs[1]
        cout = b.sigs[w].shape[0]
        conv.inputs = conv.inputs[:2]
        if not zero:
            name = b.fresh("bias")
            b.sigs[name] = TensorSig((cout,), b.sigs[w].dtype)
            b.consts.add(name)
            conv.inputs.append(name)
        conv.outputs = list(r.outputs)
        conv.attrs = {**conv.attrs, "_bias": "zero" if zero else "set"}
        drop.add(id(r))
    return [r for r in b.nodes if id(r) not in drop]


def to_graph(model: nn.Module, inputs: tuple[torch.Tensor, ...], name: str = "model") -> Graph:
    """The IR `hwlat.graph.load` builds from the model's ONNX export, built from the module;
    Unmappable where that cannot be done exactly."""
    b = Builder()
    args = []
    for i, x in enumerate(inputs):
        if not isinstance(x, torch.Tensor):
            raise InvalidInputError(f"input {i}: a tensor, not {type(x).__name__}")
        t = x.detach().to("meta")
        v = b.value(f"input_{i}", t)
        args.append(v)
    conv = Converter(b)
    with torch.no_grad():
        out = conv.call_module(model, "", tuple(args), {})
    outs = [t for t in _flat_tv(out)]
    if not outs:
        raise Unmappable("", "the model returns no tensor")
    if any(t.const is not None for t in outs) or any(t.name in {a.name for a in args} for t in outs):
        raise Unmappable("", "the model returns an input or a constant")
    out_names = [t.name for t in outs]
    recs = _fold_batchnorm(b, set(out_names))
    return _ir(b, recs, [a.name for a in args], out_names, name)


def _flat_tv(x):
    if isinstance(x, TV):
        yield x
    elif isinstance(x, tuple | list):
        for v in x:
            yield from _flat_tv(v)
    elif isinstance(x, dict):
        for v in x.values():
            yield from _flat_tv(v)
    else:
        raise Unmappable("", f"the model returns a {type(x).__name__}")


def _ir(b: Builder, recs: list[_Rec], inputs: list[str], outputs: list[str], name: str) -> Graph:
    nodes = []
    const = set(b.consts)
    for idx, r in enumerate(recs):
        n = Node(name=f"{r.op.op_type}#{idx}", op=r.op, inputs=tuple(r.inputs),
                 outputs=tuple(r.outputs), attrs=r.ir_attrs, index=idx)
        nodes.append(n)
        if n.op not in NON_DETERMINISTIC and all(not i or i in const for i in n.inputs):
            const.update(n.outputs)
    uses: dict[str, list[str]] = {}
    producers: dict[str, str] = {}
    for n in nodes:
        for i in n.inputs:
            uses.setdefault(i, []).append(n.name)
        for o in n.outputs:
            producers[o] = n.name
    names = set(inputs) | set(producers) | set(uses)
    values = {v: Value(name=v, sig=b.sigs.get(v, TensorSig(None, "undefined")),
                       producer=producers.get(v), uses=tuple(uses.get(v, ())),
                       is_const=v in const, data=b.data.get(v))
              for v in names}
    return Graph(name=name, nodes=tuple(nodes), values=values, inputs=tuple(inputs),
                 outputs=tuple(outputs), opset=OPSET)


def example_inputs(inputs=None, input_shape=None) -> tuple[torch.Tensor, ...]:
    """The example inputs of a module: given tensors, or zeros of `input_shape` (one shape, or a
    sequence of shapes for several inputs)."""
    if inputs is not None and input_shape is not None:
        raise InvalidInputError("give inputs= or input_shape=, not both")
    if inputs is not None:
        if isinstance(inputs, torch.Tensor):
            return (inputs,)
        if isinstance(inputs, tuple | list) and inputs and all(isinstance(x, torch.Tensor) for x in inputs):
            return tuple(inputs)
        raise InvalidInputError("inputs=: a tensor or a tuple of tensors")
    if input_shape is None:
        raise InvalidInputError("a torch module needs inputs= (example tensors) or input_shape= "
                                "(e.g. (1, 3, 224, 224))")
    shapes = [input_shape] if all(isinstance(d, int) for d in input_shape) else list(input_shape)
    out = []
    for s in shapes:
        if not isinstance(s, tuple | list) or not s or not all(
                isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in s):
            raise InvalidInputError(f"input_shape={input_shape!r}: positive integers, e.g. (1, 3, 224, 224)")
        out.append(torch.zeros(tuple(s)))
    return tuple(out)


__all__ = ["OPSET", "Unmappable", "clear_cache", "example_inputs", "to_graph"]
