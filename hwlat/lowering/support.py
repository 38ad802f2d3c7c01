"""Which ONNX ops TVM's Relax ONNX frontend can lower, checked before any conversion starts.

The frontend keys its converters by op type alone, so a custom-domain op is never one of them,
and a standard op whose converter implements a different op must be refused by name.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import onnx
from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

from hwlat.errors import UnsupportedOpError
from hwlat.lowering.custom import custom_ops

if TYPE_CHECKING:
    import tvm

STANDARD_DOMAINS = ("", "ai.onnx")
# standard op type -> why TVM's converter of that name must not be used for it
MISCONVERTED = {
    "Attention": "TVM's 'Attention' converter is com.microsoft Attention, not ONNX opset-23 Attention",
}
CUSTOM_OP_REASON = "hwlat's own op; no TVM lowering is written for it yet"
FRONTEND_DIRECT = {"Constant", "If"}  # handled by the importer itself, not the converter map


class LoweringUnsupportedError(UnsupportedOpError):
    """Every op the TVM lowering cannot take, with the reason for each."""

    def __init__(self, ops: dict[str, int], reasons: dict[str, str]):
        super().__init__(ops)
        self.reasons = dict(reasons)
        listing = "; ".join(f"{op} (x{n}): {reasons[op]}" for op, n in sorted(ops.items()))
        self.args = (f"TVM cannot lower {len(ops)} op type(s): {listing}",)


def unsupported_ops(model: onnx.ModelProto, target: tvm.target.Target | None = None
                    ) -> tuple[dict[str, int], dict[str, str]]:
    """Counts and reasons of the ops TVM cannot lower (for `target`; None: with every converter
    of hwlat.kernels.registry), keyed as hwlat names ops (`op_type`, or `domain.op_type` outside
    the standard domain)."""
    ops = custom_ops(target)
    converters = _get_convert_map()
    counts: Counter[str] = Counter()
    reasons: dict[str, str] = {}
    for node in _all_nodes(model.graph):
        if node.domain not in STANDARD_DOMAINS:
            key, why = f"{node.domain}.{node.op_type}", CUSTOM_OP_REASON
            op = ops.get(key)
            if op is not None:
                why = op.refuse(node) if op.refuse is not None else None
                if why is None:
                    continue
        elif node.op_type in MISCONVERTED:
            key, why = node.op_type, MISCONVERTED[node.op_type]
            op = ops.get(key)
            if op is not None and op.replaces:
                why = op.refuse(node) if op.refuse is not None else None
                if why is None:
                    continue
        elif node.op_type not in converters and node.op_type not in FRONTEND_DIRECT:
            key, why = node.op_type, "TVM's ONNX frontend has no converter for it"
        else:
            continue
        counts[key] += 1
        reasons[key] = why
    return dict(counts), reasons


def check_support(model: onnx.ModelProto, target: tvm.target.Target | None = None) -> None:
    ops, reasons = unsupported_ops(model, target)
    if ops:
        raise LoweringUnsupportedError(ops, reasons)


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for a in node.attribute:  # branch and loop bodies
            if a.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(a.g)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for g in a.graphs:
                    yield from _all_nodes(g)
