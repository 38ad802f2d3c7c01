"""Kernels: the units a runtime really executes, and their typed keys.

A KernelKey is what a latency table is indexed by: kind, the fused ops in order, activation
input/output signatures, weight signatures and the attributes that change the work done.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from hwlat.graph.ir import AttrValue, TensorSig


class KernelKind(Enum):
    CONV = "conv"
    SPARSE_CONV = "sparse_conv"
    MATMUL = "matmul"
    ATTENTION = "attention"
    LAYER_NORM = "layer_norm"
    SPIKING_NEURON = "spiking_neuron"
    NORMALIZATION = "normalization"
    POOL = "pool"
    SOFTMAX = "softmax"
    ELEMENTWISE = "elementwise"
    REDUCTION = "reduction"
    DATA_MOVEMENT = "data_movement"
    VIEW = "view"

    # members are singletons, equal only to themselves: hashed by identity in C (Enum's own
    # __hash__ is Python code, run at every hash of a KernelKey)
    __hash__ = object.__hash__


@dataclass(frozen=True)
class KernelKey:
    kind: KernelKind
    ops: tuple[str, ...]  # op qualnames in execution order
    inputs: tuple[TensorSig, ...]  # activations
    outputs: tuple[TensorSig, ...]
    params: tuple[TensorSig, ...]  # weights and other constants
    attrs: tuple[tuple[str, AttrValue], ...]

    def text(self) -> str:
        """Canonical one-line form: stable across runs, used as the table's key column."""
        sigs = lambda xs: ",".join(s.text() for s in xs)  # noqa: E731
        attrs = ",".join(f"{k}={_attr_text(v)}" for k, v in self.attrs)
        return (
            f"{self.kind.value}|{'+'.join(self.ops)}|in:{sigs(self.inputs)}"
            f"|out:{sigs(self.outputs)}|w:{sigs(self.params)}|{attrs}"
        )


@dataclass(frozen=True)
class Kernel:
    key: KernelKey
    nodes: tuple[str, ...]  # graph node names, in graph order
    rule: str  # the fusion rule that cut it, or "single" for a lone node

    @property
    def kind(self) -> KernelKind:
        return self.key.kind


def _attr_text(v: AttrValue) -> str:
    if isinstance(v, tuple):
        return "x".join(_attr_text(x) for x in v)
    if isinstance(v, float):
        return repr(round(v, 6))
    return str(v)
