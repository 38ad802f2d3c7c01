"""The graph IR: small frozen dataclasses, built once by `graph.load` and never mutated.

A Value knows its producer and its uses. Small constants (scalars, shape vectors) keep their
data so rules can read thresholds and scales; large initializers keep only their shape.
Pass-local notes go in `Graph.meta`, which is not part of equality or serialization.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from hwlat.graph.ops import Op

# a dimension is a known size, a symbolic name, or None when nothing is known
Dim = int | str | None
Shape = tuple[Dim, ...]
AttrValue = int | float | str | tuple[int, ...] | tuple[float, ...] | tuple[str, ...]

SMALL_CONSTANT_ELEMENTS = 64


@dataclass(frozen=True)
class TensorSig:
    """What a kernel key says about a tensor: shape and element type."""

    shape: Shape | None
    dtype: str

    def numel(self) -> int | None:
        if self.shape is None or not all(isinstance(d, int) for d in self.shape):
            return None
        return int(np.prod(self.shape, dtype=np.int64))

    def nbytes(self) -> int | None:
        n = self.numel()
        try:
            itemsize = np.dtype(self.dtype).itemsize
        except TypeError:  # "undefined": the file did not say
            return None
        return None if n is None else n * itemsize

    def text(self) -> str:
        dims = "?" if self.shape is None else "x".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.dtype}[{dims}]"


@dataclass(frozen=True)
class Value:
    name: str
    sig: TensorSig
    producer: str | None  # node name; None for graph inputs and initializers
    uses: tuple[str, ...]  # names of consuming nodes, in graph order (repeats if used twice)
    is_const: bool  # an initializer, or computed from initializers alone
    data: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def shape(self) -> Shape | None:
        return self.sig.shape

    def scalar(self) -> float | None:
        """The value as a float when it is a known one-element constant."""
        if self.data is None or self.data.size != 1:
            return None
        return float(self.data.reshape(()))


@dataclass(frozen=True)
class Node:
    name: str
    op: Op
    inputs: tuple[str, ...]  # value names; "" marks an omitted optional input
    outputs: tuple[str, ...]
    attrs: tuple[tuple[str, AttrValue], ...] = ()
    index: int = -1  # position in the ONNX file's node list

    def attr(self, key: str, default: Any = None) -> Any:
        for k, v in self.attrs:
            if k == key:
                return v
        return default


@dataclass(frozen=True)
class Graph:
    name: str
    nodes: tuple[Node, ...]  # topological order
    values: dict[str, Value] = field(repr=False)
    inputs: tuple[str, ...]  # runtime inputs (initializers excluded)
    outputs: tuple[str, ...]
    opset: int
    # pass-local notes, not part of equality; `load` leaves the shape-inferred ModelProto
    # under "onnx" for the stages that cut kernels out of the file
    meta: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __hash__(self) -> int:
        return hash((self.name, self.nodes, self.inputs, self.outputs))

    @cached_property
    def node_by_name(self) -> dict[str, Node]:
        return {n.name: n for n in self.nodes}

    def node(self, name: str) -> Node:
        return self.node_by_name[name]

    def producer(self, value: str) -> Node | None:
        v = self.values.get(value)
        return None if v is None or v.producer is None else self.node_by_name[v.producer]

    def users(self, value: str) -> list[Node]:
        v = self.values.get(value)
        return [] if v is None else [self.node_by_name[u] for u in dict.fromkeys(v.uses)]

    def sole_user(self, value: str) -> Node | None:
        """The only consumer of a value that is not also a graph output, else None."""
        v = self.values.get(value)
        if v is None or value in self.outputs or len(v.uses) != 1:
            return None
        return self.node_by_name[v.uses[0]]

    def is_const(self, value: str) -> bool:
        v = self.values.get(value)
        return v is not None and v.is_const

    def is_foldable(self, node: Node) -> bool:
        """Computed from constants alone: a runtime folds it before the first run."""
        return all(self.is_const(o) for o in node.outputs if o)
