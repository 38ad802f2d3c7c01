"""hwlat's own ONNX ops in TVM: converters that TVM's ONNX frontend calls like its own, and
rewrites that turn a recognised subgraph into one such op before the import.

Both are entries of hwlat.kernels.registry (CustomOp, OnnxRewrite), read here on each use, for
the target of the build where it is known (None: every entry).

TVM's frontend keys converters by op type alone and has none for a custom domain. A CustomOp
names the domain and op type it lowers; while `custom_converters()` is active, the frontend's
converter map is extended with every listed op (nothing changes outside that block). A
converter receives the frontend's BlockBuilder, the Relax inputs and the node's attributes
(ints as int, int lists as tuples, strings as str) and returns the Relax expression of the
node's output, typically a `R.call_tir` to a PrimFunc of hwlat/kernels added with `bb.add_func`.

A rewrite takes the ONNX model and returns a new one (never mutating its argument); rewrites run
in the registry's order before support checking and import.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import onnx
from tvm.relax.frontend.onnx import onnx_frontend

if TYPE_CHECKING:
    import tvm

    from hwlat.kernels.registry import CustomOp


def custom_ops(target: tvm.target.Target | None = None) -> dict[str, CustomOp]:
    """The registry's converters for `target` (None: all), by hwlat's name of the op; an op type
    that TVM already converts (unless the entry replaces it) or that two entries claim is an
    error of the registry."""
    from hwlat.kernels import registry

    ops: dict[str, CustomOp] = {}
    for op in registry.custom_ops(target):
        taken = {o.op_type for o in ops.values() if o.key != op.key}
        if op.op_type in taken or (op.op_type in onnx_frontend._get_convert_map() and not op.replaces):
            raise ValueError(f"op type {op.op_type} is already converted by another converter")
        ops[op.key] = op
    return ops


def apply_rewrites(model: onnx.ModelProto, target: tvm.target.Target | None = None) -> onnx.ModelProto:
    from hwlat.kernels import registry

    for entry in registry.onnx_rewrites(target):
        model = entry.rewrite(model)
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
def custom_converters(target: tvm.target.Target | None = None) -> Iterator[None]:
    """Within the block, TVM's ONNX frontend also converts the registry's CustomOps for
    `target` (None: all)."""
    ops = custom_ops(target)
    original = onnx_frontend._get_convert_map

    def extended():
        table = dict(original())
        table.update({op.op_type: _FrontendConverter(op) for op in ops.values()})
        return table

    onnx_frontend._get_convert_map = extended
    try:
        yield
    finally:
        onnx_frontend._get_convert_map = original


def import_onnx(model: onnx.ModelProto, *, rewrite: bool = True,
                target: tvm.target.Target | None = None, **kwargs):
    """TVM's `from_onnx` with hwlat's rewrites applied (unless the caller did) and its custom
    ops converted: those for `target` (None: all; the target in scope still picks the
    kernels' schedules)."""
    from tvm.relax.frontend.onnx import from_onnx

    if rewrite:
        model = apply_rewrites(model, target)
    with custom_converters(target):
        return from_onnx(model, keep_params_in_input=False, **kwargs)
