"""hwlat's own ONNX ops in TVM: converters that TVM's ONNX frontend calls like its own, and
rewrites that turn a recognised subgraph into one such op before the import.

TVM's frontend keys converters by op type alone and has none for a custom domain. A CustomOp
names the domain and op type it lowers; while `custom_converters()` is active, the frontend's
converter map is extended with every registered op (nothing changes outside that block). A
converter receives the frontend's BlockBuilder, the Relax inputs and the node's attributes
(ints as int, int lists as tuples, strings as str) and returns the Relax expression of the
node's output, typically a `R.call_tir` to a PrimFunc of hwlat/kernels added with `bb.add_func`.

A rewrite takes the ONNX model and returns a new one (never mutating its argument); rewrites run
in registration order before support checking and import.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import onnx
from tvm.relax.frontend.onnx import onnx_frontend

Converter = Callable[[Any, list, dict], Any]  # (BlockBuilder, inputs, attrs) -> relax.Expr
Rewrite = Callable[[onnx.ModelProto], onnx.ModelProto]


@dataclass(frozen=True)
class CustomOp:
    domain: str
    op_type: str
    convert: Converter
    summary: str  # what the op lowers to, for messages and docs
    # node -> why this node cannot be lowered, or None; asked before any conversion starts
    refuse: Callable[[onnx.NodeProto], str | None] | None = None
    # a standard op TVM's frontend converts wrongly (hwlat.lowering.support.MISCONVERTED): this
    # converter replaces TVM's during hwlat's imports
    replaces: bool = False

    @property
    def key(self) -> str:
        """How hwlat names the op: `op_type` in the standard domain, else `domain.op_type`."""
        return self.op_type if self.domain in ("", "ai.onnx") else f"{self.domain}.{self.op_type}"


CUSTOM_OPS: dict[str, CustomOp] = {}
REWRITES: dict[str, Rewrite] = {}


def register_op(op: CustomOp) -> CustomOp:
    taken = {o.op_type for o in CUSTOM_OPS.values() if o.key != op.key}
    if op.op_type in taken or (op.op_type in onnx_frontend._get_convert_map() and not op.replaces):
        raise ValueError(f"op type {op.op_type} is already converted by another converter")
    CUSTOM_OPS[op.key] = op
    return op


def register_rewrite(name: str, rewrite: Rewrite) -> Rewrite:
    REWRITES[name] = rewrite
    return rewrite


def load_kernels() -> None:
    """Import hwlat.kernels' lowering modules, which register their ops and rewrites."""
    import hwlat.kernels  # noqa: F401  (registers on import)


def apply_rewrites(model: onnx.ModelProto) -> onnx.ModelProto:
    load_kernels()
    for rewrite in REWRITES.values():
        model = rewrite(model)
    return model


class _FrontendConverter:
    """The shape TVM's frontend expects of a converter class: `get_converter(opset)`."""

    def __init__(self, op: CustomOp):
        self.op = op

    def get_converter(self, opset: int):
        def convert(bb, inputs, attrs, params):
            attrs = {k: v for k, v in attrs.items() if k != "tvm_custom"}  # the frontend's own
            return self.op.convert(bb, list(inputs), attrs)

        return convert


@contextmanager
def custom_converters() -> Iterator[None]:
    """Within the block, TVM's ONNX frontend also converts every registered CustomOp."""
    load_kernels()
    original = onnx_frontend._get_convert_map

    def extended():
        table = dict(original())
        table.update({op.op_type: _FrontendConverter(op) for op in CUSTOM_OPS.values()})
        return table

    onnx_frontend._get_convert_map = extended
    try:
        yield
    finally:
        onnx_frontend._get_convert_map = original


def import_onnx(model: onnx.ModelProto, *, rewrite: bool = True, **kwargs):
    """TVM's `from_onnx` with hwlat's rewrites applied (unless the caller did) and its custom
    ops converted."""
    from tvm.relax.frontend.onnx import from_onnx

    if rewrite:
        model = apply_rewrites(model)
    with custom_converters():
        return from_onnx(model, keep_params_in_input=False, **kwargs)
