"""Output shapes of hwlat's custom-domain ops, which onnx's shape inference cannot see."""

from __future__ import annotations

from hwlat.graph.ir import Node, TensorSig
from hwlat.graph.ops import Op


def sparse_conv_output(features: TensorSig, weight: TensorSig, subm: int) -> TensorSig:
    """features [N, Cin], weight [K, Cin, Cout] -> [N_out, Cout]; N_out = N for submanifold."""
    n = features.shape[0] if features.shape and subm else None
    cout = weight.shape[-1] if weight.shape else None
    return TensorSig((n, cout), features.dtype)


def infer_custom_shapes(nodes: list[Node], sigs: dict[str, TensorSig]) -> None:
    """Fill in outputs of custom ops whose shapes the exporter did not record."""
    unknown = TensorSig(None, "undefined")
    for n in nodes:
        if n.op is not Op.SparseConv3d or not n.outputs:
            continue
        out = n.outputs[0]
        if sigs.get(out, unknown).shape is not None:
            continue
        feats = sigs.get(n.inputs[0], unknown) if n.inputs else unknown
        weight = sigs.get(n.inputs[2], unknown) if len(n.inputs) > 2 else unknown
        sigs[out] = sparse_conv_output(feats, weight, int(n.attr("subm", 1)))
