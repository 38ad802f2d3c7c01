"""The custom lowerings hwlat's kernels provide, as one declarative list that hwlat.lowering
reads: nothing registers on import, and kernels import nothing of hwlat.lowering.

Three kinds of entry, each saying which targets it applies to (`Targets`):

- `CustomOp`: a converter that TVM's ONNX frontend calls like its own while hwlat imports a
  model (hwlat.lowering.custom), for a custom-domain op or a standard op TVM converts wrongly;
- `OnnxRewrite`: a rewrite of the ONNX model before the import (never mutating its argument);
- `RelaxRewrite`: Relax passes that put hwlat's kernels in place of high-level ops; each
  pipeline of hwlat.lowering runs them first, before legalization, in this order, where the
  entry applies to the target and the pipeline's options keep it (`switch`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import onnx
import tvm

from hwlat.kernels.attention import lowering as attention
from hwlat.kernels.attention import onnx_op as attention_op
from hwlat.kernels.dense import lowering as dense
from hwlat.kernels.sparse_conv import lowering as sparse_conv
from hwlat.kernels.spiking import lowering as spiking
from hwlat.kernels.spiking import rewrite as spiking_rewrite
from hwlat.kernels.target import TargetInfo

Converter = Callable[[Any, list, dict], Any]  # (BlockBuilder, inputs, attrs) -> relax.Expr


@dataclass(frozen=True)
class Targets:
    """The targets an entry applies to: TVM target kinds (None: every kind) and, for CPU (llvm)
    targets, the architectures of their triples (None: every architecture)."""

    kinds: frozenset[str] | None = None
    arches: frozenset[str] | None = None

    def applies(self, target: TargetInfo | tvm.target.Target | dict[str, Any]) -> bool:
        info = target if isinstance(target, TargetInfo) else TargetInfo.of(target)
        if self.kinds is not None and info.kind not in self.kinds:
            return False
        return self.arches is None or not info.is_cpu or info.arch in self.arches

    def __str__(self) -> str:
        if self.kinds is None:
            return "every target"
        kinds = "/".join(sorted(self.kinds))
        return kinds if self.arches is None else f"{'/'.join(sorted(self.arches))} {kinds}"


EVERY_TARGET = Targets()
LLVM = Targets(frozenset({"llvm"}))  # every CPU target
X86_64_LLVM = Targets(frozenset({"llvm"}), frozenset({"x86_64"}))


@dataclass(frozen=True)
class CustomOp:
    domain: str
    op_type: str
    convert: Converter
    summary: str  # what the op lowers to, for messages and docs
    # node -> why this node cannot be lowered, or None; asked before any conversion starts
    refuse: Callable[[onnx.NodeProto], str | None] | None = None
    # a standard op TVM's frontend converts wrongly (hwlat.lowering.support.MISCONVERTED) or
    # worse than hwlat needs: this converter replaces TVM's during hwlat's imports
    replaces: bool = False
    targets: Targets = EVERY_TARGET

    @property
    def key(self) -> str:
        """How hwlat names the op: `op_type` in the standard domain, else `domain.op_type`."""
        return self.op_type if self.domain in ("", "ai.onnx") else f"{self.domain}.{self.op_type}"


@dataclass(frozen=True)
class OnnxRewrite:
    name: str
    rewrite: Callable[[onnx.ModelProto], onnx.ModelProto]
    summary: str
    targets: Targets = EVERY_TARGET


@dataclass(frozen=True)
class RelaxRewrite:
    name: str
    passes: Callable[[], list[tvm.transform.Pass]]
    summary: str
    targets: Targets
    # the hwlat.lowering.pipelines.PipelineOptions flag that turns the entry off when False
    switch: str


def _attention_passes() -> list[tvm.transform.Pass]:
    return [attention.fuse_attention_pass()]


def _dense_passes() -> list[tvm.transform.Pass]:
    # after constant folding, which makes ONNX's reshaped biases constants
    return [tvm.relax.transform.FoldConstant(), dense.fuse_dense_pass()]


CUSTOM_OPS: tuple[CustomOp, ...] = (
    # every target: the op has no other lowering (the CPU kernel, or a thread per neuron on GPU)
    CustomOp(spiking_rewrite.DOMAIN, spiking_rewrite.OP_TYPE, spiking.convert_lif_neuron,
             "multi-step LIF/IF neuron: x [T, ...] -> spikes [T, ...] in one pass "
             "(hwlat/kernels/spiking)"),
    # every target: the op has no other lowering; its kernels are generic TIR scheduled for a CPU
    CustomOp("hwlat", "SparseConv3d", sparse_conv.convert,
             "submanifold sparse conv: TIR hash kernel map + gather-GEMM-scatter "
             "(hwlat/kernels/sparse_conv)", refuse=sparse_conv.refuse),
    # every target: Relax's own op, which TVM legalizes anywhere (the fused kernel is a RelaxRewrite)
    CustomOp("", "Attention", attention_op.convert,
             "ONNX opset-23 Attention -> relax.nn.attention -> hwlat's fused attention kernel",
             refuse=attention_op.refuse, replaces=True),
    # every target: relax.clip, which TVM legalizes anywhere
    CustomOp("", "Clip", dense.convert_clip,
             "Clip with constant bounds -> relax.clip (fusable into a dense kernel's store); "
             "other bounds as TVM converts them", replaces=True),
)

ONNX_REWRITES: tuple[OnnxRewrite, ...] = (
    OnnxRewrite("spiking_neuron", spiking_rewrite.rewrite_spiking_neurons,
                "a LIF/IF neuron's T unrolled steps -> one hwlat.LIFNeuron node"),
)

RELAX_REWRITES: tuple[RelaxRewrite, ...] = (
    # every CPU target: generic TIR (hand-written loops; tiles sized for x86's vector registers,
    # which LLVM compiles for any CPU)
    RelaxRewrite("attention", _attention_passes,
                 "attention -> hwlat's fused attention kernel (hwlat/kernels/attention)",
                 LLVM, switch="fused_attention"),
    # x86-64 only: the register and cache tiling is AVX2/AVX-512's; an aarch64 build keeps
    # TVM's own lowering of convs and matmuls
    RelaxRewrite("dense", _dense_passes,
                 "convs and matmuls with constant weights (+ bias, residual, activation) -> "
                 "hwlat's dense kernels (hwlat/kernels/dense)",
                 X86_64_LLVM, switch="dense_kernels"),
)


def custom_ops(target: TargetInfo | tvm.target.Target | None = None) -> tuple[CustomOp, ...]:
    """The converters that apply to `target` (None: every entry)."""
    return tuple(e for e in CUSTOM_OPS if target is None or e.targets.applies(target))


def onnx_rewrites(target: TargetInfo | tvm.target.Target | None = None) -> tuple[OnnxRewrite, ...]:
    """The ONNX rewrites that apply to `target` (None: every entry), in order."""
    return tuple(e for e in ONNX_REWRITES if target is None or e.targets.applies(target))


def relax_rewrites(target: TargetInfo | tvm.target.Target) -> tuple[RelaxRewrite, ...]:
    """The Relax kernel rewrites that apply to `target`, in order."""
    return tuple(e for e in RELAX_REWRITES if e.targets.applies(target))
