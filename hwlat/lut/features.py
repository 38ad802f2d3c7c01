"""Numeric features of a fused kernel, for the learned latency predictors (`hwlat.lut.learned`).

Everything is read from the kernel key's canonical text (`KernelKey.text()`), so a kernel seen
in a model, a kernel in a table (which stores only the key text) and a sampled kernel all get
the same vector. A dimension the key does not know (a symbolic size) is NaN, which the trees
route on their own; nothing is guessed.

Per kernel: activation shapes read as N, C, H, W (rank 4), B, S, C (rank 3) or M, K (rank 2),
the output's channels and map, kernel size, stride, groups, dilation, padding, the fused ops
(one-hot over the epilogues runtimes fuse), MACs, bytes read and written, parameters,
arithmetic intensity, and the layout facts (ranks, a rank change, depthwise, 1x1, pointwise).
Sizes enter as log1p: latency is fitted in log space.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from math import prod

import numpy as np

FEATURE_VERSION = 1

_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int64": 8, "int32": 4,
                "int8": 1, "uint8": 1, "bool": 1, "int16": 2}
# the ops runtimes fuse into a kernel's epilogue (or that make up an exported activation)
EPILOGUE_OPS = ("BatchNormalization", "Add", "Relu", "Clip", "HardSigmoid", "HardSwish", "Sigmoid",
                "Mul", "Div", "Erf", "Tanh", "Sub", "Softmax", "Transpose", "Gelu", "LeakyRelu",
                "Pow", "Sqrt", "ReduceMean")
_SIZES = ("n", "c", "h", "w", "cout", "hout", "wout", "kh", "kw", "stride", "groups",
          "cin_per_group", "dilation", "pad", "m", "k", "nn", "batch",
          "macs", "bytes_read", "bytes_written", "params", "numel_in", "numel_out")
_FLAGS = ("in_rank", "out_rank", "rank_change", "n_inputs", "n_params", "n_ops", "depthwise",
          "pointwise", "unknown_dims", "intensity")
FEATURE_NAMES: tuple[str, ...] = (*_SIZES, *_FLAGS, *(f"op_{o}" for o in EPILOGUE_OPS))


@dataclass(frozen=True)
class Sig:
    dtype: str
    shape: tuple[int | None, ...] | None  # None: rank unknown; None dims: symbolic

    def numel(self) -> int | None:
        if self.shape is None or any(d is None for d in self.shape):
            return None
        return prod(self.shape)

    def nbytes(self) -> int | None:
        n = self.numel()
        size = _DTYPE_BYTES.get(self.dtype)
        return None if n is None or size is None else n * size


@dataclass(frozen=True)
class ParsedKey:
    kind: str
    ops: tuple[str, ...]
    inputs: tuple[Sig, ...]
    outputs: tuple[Sig, ...]
    params: tuple[Sig, ...]
    attrs: dict[str, str]


_SIG = re.compile(r"([A-Za-z0-9_]+)\[([^\]]*)\]")


def _sigs(text: str) -> tuple[Sig, ...]:
    out = []
    for dtype, dims in _SIG.findall(text):
        if dims == "?":
            out.append(Sig(dtype, None))
        elif dims == "":
            out.append(Sig(dtype, ()))
        else:
            out.append(Sig(dtype, tuple(int(d) if d.isdigit() else None for d in dims.split("x"))))
    return tuple(out)


def parse_key(text: str) -> ParsedKey:
    """The parts of `KernelKey.text()`; a text that is not a key raises ValueError."""
    parts = text.split("|", 5)
    if len(parts) != 6 or not parts[2].startswith("in:") or not parts[3].startswith("out:") \
            or not parts[4].startswith("w:"):
        raise ValueError(f"not a kernel key: {text[:80]!r}")
    attrs = {}
    for item in parts[5].split(","):
        if "=" in item:
            k, v = item.split("=", 1)
            attrs[k] = v
    return ParsedKey(parts[0], tuple(o for o in parts[1].split("+") if o), _sigs(parts[2][3:]),
                     _sigs(parts[3][4:]), _sigs(parts[4][2:]), attrs)


def _ints(v: str | None) -> tuple[int, ...]:
    if not v:
        return ()
    try:
        return tuple(int(x) for x in v.split("x"))
    except ValueError:
        return ()


def _log(x: float | None) -> float:
    return math.nan if x is None or x < 0 else math.log1p(x)


def _conv_macs(p: ParsedKey) -> int | None:
    if not p.outputs or not p.params:
        return None
    if p.ops.count("Conv") > 1:  # a MobileNet block's convs as one kernel
        from hwlat.graph.cost import block_macs

        weights = [s.shape for s in p.params if s.shape is not None and len(s.shape) == 4]
        group = p.attrs.get("group", "1")
        return block_macs(p.inputs[0].shape if p.inputs else None, p.outputs[0].shape, weights,
                          int(group) if group.isdigit() else 1)
    out, w = p.outputs[0].numel(), p.params[0].numel()
    if out is None or w is None or not p.params[0].shape:
        return None
    return out * (w // p.params[0].shape[0])


def _matmul_macs(p: ParsedKey) -> int | None:
    if not p.inputs or not p.outputs or not p.inputs[0].shape:
        return None
    k, out = p.inputs[0].shape[-1], p.outputs[0].numel()
    return None if k is None or out is None else out * k


def _sum(xs) -> int | None:
    vals = list(xs)
    return None if any(v is None for v in vals) else sum(vals)


def key_features(text: str, macs: int | None = None) -> np.ndarray:
    """The feature vector (aligned with FEATURE_NAMES) of one kernel key's text; `macs` from
    hwlat.graph.cost where known (else derived from the shapes for convs and matmuls)."""
    p = parse_key(text)
    f = dict.fromkeys(FEATURE_NAMES, math.nan)
    x = p.inputs[0].shape if p.inputs else None
    y = p.outputs[0].shape if p.outputs else None
    w = p.params[0].shape if p.params else None
    if x is not None and len(x) == 4:
        f.update(n=_log(x[0]), c=_log(x[1]), h=_log(x[2]), w=_log(x[3]))
    elif x is not None and len(x) == 3:
        f.update(batch=_log(x[0]), h=_log(x[1]), c=_log(x[2]))
    elif x is not None and len(x) == 2:
        f.update(n=_log(x[0]), c=_log(x[1]))
    if y is not None and len(y) == 4:
        f.update(cout=_log(y[1]), hout=_log(y[2]), wout=_log(y[3]))
    elif y is not None and len(y) >= 1:
        f.update(cout=_log(y[-1]))
    ks = _ints(p.attrs.get("kernel_shape"))
    if p.kind == "conv" or ks:
        kh, kw = (ks + (1, 1))[:2] if ks else ((w[2], w[3]) if w is not None and len(w) == 4 else (None, None))
        groups = int(p.attrs.get("group", "1") or 1)
        strides = _ints(p.attrs.get("strides")) or (1,)
        dil = _ints(p.attrs.get("dilations")) or (1,)
        pads = _ints(p.attrs.get("pads"))
        cin = x[1] if x is not None and len(x) == 4 else None
        f.update(kh=_log(kh), kw=_log(kw), stride=_log(max(strides)), groups=_log(groups),
                 cin_per_group=_log(None if cin is None else cin // max(groups, 1)),
                 dilation=_log(max(dil)), pad=_log(sum(pads)))
        f["depthwise"] = float(cin is not None and groups == cin and groups > 1)
        f["pointwise"] = float(kh == 1 and kw == 1)
    if p.kind in ("matmul", "attention") and x:
        k = x[-1]
        nn = y[-1] if y else None
        out = p.outputs[0].numel() if p.outputs else None
        m = None if out is None or not nn else out // nn
        f.update(m=_log(m), k=_log(k), nn=_log(nn))
        if len(x) >= 3:
            f["batch"] = _log(None if any(d is None for d in x[:-2]) else prod(x[:-2]))
    if macs is None:
        macs = _conv_macs(p) if p.kind == "conv" else _matmul_macs(p) if p.kind == "matmul" else None
        if macs is None and p.kind not in ("conv", "matmul", "attention", "sparse_conv"):
            macs = 0
    read = _sum(s.nbytes() for s in (*p.inputs, *p.params))
    written = _sum(s.nbytes() for s in p.outputs)
    params = _sum(s.numel() for s in p.params if s.dtype.startswith(("float", "bfloat")))
    f.update(macs=_log(macs), bytes_read=_log(read), bytes_written=_log(written), params=_log(params),
             numel_in=_log(p.inputs[0].numel() if p.inputs else 0),
             numel_out=_log(p.outputs[0].numel() if p.outputs else 0))
    moved = None if read is None or written is None else read + written
    f["intensity"] = math.nan if macs is None or not moved else math.log1p(macs / moved)
    f["in_rank"] = math.nan if x is None else float(len(x))
    f["out_rank"] = math.nan if y is None else float(len(y))
    f["rank_change"] = math.nan if x is None or y is None else float(len(x) != len(y))
    f["n_inputs"], f["n_params"], f["n_ops"] = float(len(p.inputs)), float(len(p.params)), float(len(p.ops))
    f["unknown_dims"] = float(any(s.numel() is None for s in (*p.inputs, *p.outputs)))
    for o in EPILOGUE_OPS:
        f[f"op_{o}"] = float(p.ops[1:].count(o)) if p.kind in ("conv", "matmul") else float(o in p.ops)
    return np.array([f[k] for k in FEATURE_NAMES], dtype=np.float64)


def kernel_features(key, cost=None) -> np.ndarray:
    """The feature vector of an hwlat.graph KernelKey (and its hwlat.graph.cost Cost, if known)."""
    return key_features(key.text(), None if cost is None else cost.macs)
