"""The zoo's graphs as torch's dynamo exporter writes them: the contract graph/ pattern-matches."""

import onnx
import pytest
import torch

import hwlat.zoo as zoo
from hwlat.zoo.spiking import TIME_STEPS

pytestmark = pytest.mark.export


def export(model, inputs, path, input_names, dynamic_shapes=None) -> onnx.ModelProto:
    torch.onnx.export(
        model,
        inputs,
        path,
        dynamo=True,
        input_names=input_names,
        dynamic_shapes=dynamic_shapes,
        custom_translation_table=zoo.onnx_translations(),
    )
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    return proto


def attributes(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def test_sparse_net_exports_hwlat_sparse_conv_nodes(tmp_path):
    model, inputs = zoo.build("sparse_convnet")
    voxels = torch.export.Dim("num_voxels")
    dynamic = {"features": {0: voxels}, "coords": {0: voxels}}
    proto = export(model, inputs, tmp_path / "sparse.onnx", ["features", "coords"], dynamic)
    assert ("hwlat", 1) in {(o.domain, o.version) for o in proto.opset_import}
    sparse = [n for n in proto.graph.node if n.domain == "hwlat"]
    assert [n.op_type for n in sparse] == ["SparseConv3d"] * 3
    assert attributes(sparse[0]) == {
        "subm": 1,
        "kernel_size": [3, 3, 3],
        "stride": [1, 1, 1],
        "padding": [1, 1, 1],
    }
    assert list(sparse[0].input[:2]) == ["features", "coords"]
    weights = {i.name: list(i.dims) for i in proto.graph.initializer}
    assert [weights[n.input[2]] for n in sparse] == [[27, 4, 16], [27, 16, 32], [27, 32, 32]]
    for value in proto.graph.input:
        assert value.type.tensor_type.shape.dim[0].dim_param  # N stays symbolic


def test_strided_sparse_conv_exports_with_a_data_dependent_size(tmp_path):
    class Strided(torch.nn.Module):
        def forward(self, features, coords):
            weight = torch.ones(8, 4, 2)
            return torch.ops.hwlat.sparse_conv3d(
                features, coords, weight, 0, [2] * 3, [2] * 3, [0] * 3
            )

    inputs = zoo.build("sparse_convnet")[1]
    proto = export(Strided(), inputs, tmp_path / "strided.onnx", ["features", "coords"])
    (node,) = proto.graph.node
    assert (node.domain, node.op_type) == ("hwlat", "SparseConv3d")
    assert attributes(node)["subm"] == 0 and attributes(node)["stride"] == [2, 2, 2]
    rows = proto.graph.output[0].type.tensor_type.shape.dim[0]
    assert rows.dim_param and not rows.HasField("dim_value")


def test_spiking_net_unrolls_lif_steps(tmp_path):
    model, inputs = zoo.build("spiking_convnet")
    proto = export(model, inputs, tmp_path / "spiking.onnx", ["input"])
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("GreaterOrEqual") == 3 * TIME_STEPS
    # One step; the exporter drops the last step's reset, whose membrane value nothing reads.
    step = ["Sub", "Div", "Add", "GreaterOrEqual", "Cast", "Sub", "Mul", "Mul", "Add"]
    assert sum(ops[i : i + len(step)] == step for i in range(len(ops))) == 3 * (TIME_STEPS - 1)
