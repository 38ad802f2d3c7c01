"""Random input for models with sparse convs: their `coords` must be unique voxels of a grid, so
the all-zero integers other integer inputs get would be rejected as duplicates. They get
`hwlat.graph.sparse.default_coords(N)`, the cloud sparse conv keys are measured on."""

from __future__ import annotations

COORDS_NAME = "coords"  # what the zoo's sparse_convnet (and torch export) names its coordinates


def is_sparse_coords(name: str, shape, dtype) -> bool:
    """An input that looks like sparse coordinates: int32 [N, 4] named `coords`."""
    return name == COORDS_NAME and str(dtype) == "int32" and len(shape) == 2 and shape[1] == 4


def sparse_coords_inputs(model) -> set[str]:
    """Names of the graph inputs an ONNX model feeds to a `hwlat.SparseConv3d` as coordinates."""
    inputs = {i.name for i in model.graph.input}
    return {node.input[1] for node in model.graph.node
            if node.domain == "hwlat" and node.op_type == "SparseConv3d"
            and len(node.input) > 1 and node.input[1] in inputs}
