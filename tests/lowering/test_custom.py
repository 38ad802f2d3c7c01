"""hwlat's custom-op mechanism: a converter listed in hwlat.kernels.registry lowers a
custom-domain node inside TVM's ONNX import, only while the import runs, and a listed rewrite
runs before it."""

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto as TP
from onnx import helper as h
from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend
from tvm.script import tirx as T

from hwlat.kernels import registry
from hwlat.lowering import custom
from hwlat.lowering.support import unsupported_ops

pytestmark = pytest.mark.tvm


@T.prim_func(s_tir=True)
def _add_k(a: T.handle, b: T.handle):
    n = T.int64()
    A = T.match_buffer(a, (n,), "float32")
    B = T.match_buffer(b, (n,), "float32")
    for i in range(n):
        with T.sblock("b"):
            vi = T.axis.spatial(n, i)
            B[vi] = A[vi] + T.float32(3)


def _model(op_type: str = "AddThree") -> onnx.ModelProto:
    nodes = [h.make_node(op_type, ["x"], ["y"], domain="hwlat.test", k=3, ks=[1, 2]),
             h.make_node("Relu", ["y"], ["z"])]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", TP.FLOAT, [5])],
                     [h.make_tensor_value_info("z", TP.FLOAT, [5])])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("hwlat.test", 1)])


@pytest.fixture
def add_three(monkeypatch):
    seen = {}

    def convert(bb, inputs, attrs):
        seen.update(attrs)
        gv = bb.add_func(_add_k, "hwlat_test_add_three")
        return relax.call_tir(gv, inputs, relax.TensorType(inputs[0].ty.shape, "float32"))

    op = registry.CustomOp("hwlat.test", "AddThree", convert, "adds 3")
    monkeypatch.setattr(registry, "CUSTOM_OPS", (*registry.CUSTOM_OPS, op))
    return op, seen


def test_custom_op_lowers_and_runs(add_three):
    _, seen = add_three
    mod = custom.import_onnx(_model())
    assert seen == {"k": 3, "ks": (1, 2)}  # the frontend's own bookkeeping is not passed on
    ex = tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"}))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    x = np.arange(5, dtype="float32") - 4
    np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), np.maximum(x + 3, 0))


def test_converter_map_is_restored_after_import(add_three):
    custom.import_onnx(_model())
    assert "AddThree" not in onnx_frontend._get_convert_map()


def test_support_check_knows_registered_ops(add_three):
    assert unsupported_ops(_model())[0] == {}
    ops, reasons = unsupported_ops(_model("Other"))
    assert ops == {"hwlat.test.Other": 1}


def test_an_op_type_tvm_already_converts_is_refused(monkeypatch):
    clash = registry.CustomOp("hwlat.test", "Relu", lambda *a: None, "clash")
    monkeypatch.setattr(registry, "CUSTOM_OPS", (*registry.CUSTOM_OPS, clash))
    with pytest.raises(ValueError, match="already converted"):
        custom.custom_ops()


def test_converters_apply_to_their_targets(add_three, monkeypatch):
    gpu_only = registry.CustomOp("hwlat.test", "GpuOnly", lambda *a: None, "gpu",
                                 targets=registry.Targets(frozenset({"cuda"})))
    monkeypatch.setattr(registry, "CUSTOM_OPS", (*registry.CUSTOM_OPS, gpu_only))
    cpu = tvm.target.Target({"kind": "llvm"})
    assert "hwlat.test.GpuOnly" not in custom.custom_ops(cpu)
    assert "hwlat.test.GpuOnly" in custom.custom_ops()
    assert "hwlat.test.AddThree" in custom.custom_ops(cpu)
    ops, reasons = unsupported_ops(_model("GpuOnly"), cpu)
    assert ops == {"hwlat.test.GpuOnly": 1}


def test_rewrites_run_before_import(add_three, monkeypatch):
    def rename(model):
        out = onnx.ModelProto()
        out.CopyFrom(model)
        for node in out.graph.node:
            if node.op_type == "Other":
                node.op_type = "AddThree"
        return out

    monkeypatch.setattr(registry, "ONNX_REWRITES",
                        (*registry.ONNX_REWRITES, registry.OnnxRewrite("test-rename", rename, "")))
    mod = custom.import_onnx(_model("Other"))
    assert "hwlat_test_add_three" in [gv.name_hint for gv in mod.get_global_vars()]
