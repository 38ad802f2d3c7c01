"""Loading: a valid model becomes the IR; every kind of bad file is one InvalidModelError."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, external_data_helper

from hwlat.errors import InvalidModelError, UnsupportedOpError
from hwlat.graph import Op, load
from tests.helpers.cli import run_hwlat
from tests.helpers.onnx_builders import const, conv_weights, model, node, rand, save, tensor


def small_model():
    return model([node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), node("Relu", ["c"], ["y"])],
                 [tensor("x", [1, 4, 8, 8])], [tensor("y", [1, 4, 8, 8])], conv_weights(4, 4, 3))


def test_valid_model_becomes_ir(tmp_path):
    g = load(save(small_model(), tmp_path / "m.onnx"))
    assert [n.op for n in g.nodes] == [Op.Conv, Op.Relu]
    assert g.inputs == ("x",) and g.outputs == ("y",)
    c = g.values["c"]
    assert c.shape == (1, 4, 8, 8) and c.sig.dtype == "float32"  # from shape inference
    assert c.producer == g.nodes[0].name and c.uses == (g.nodes[1].name,)
    assert g.values["w"].is_const and not c.is_const
    assert g.nodes[0].attr("pads") == (1, 1, 1, 1)


def test_missing_file(tmp_path):
    with pytest.raises(InvalidModelError, match="no such file"):
        load(tmp_path / "absent.onnx")


def test_directory(tmp_path):
    with pytest.raises(InvalidModelError, match="not a regular file"):
        load(tmp_path)


def test_truncated_file(tmp_path):
    data = small_model().SerializeToString()
    p = tmp_path / "t.onnx"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidModelError):
        load(p)


def test_random_bytes(tmp_path):
    p = tmp_path / "r.onnx"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(InvalidModelError):
        load(p)


# the op_type field of the Relu node (NodeProto field 4) and the graph's name (GraphProto field 2)
@pytest.mark.parametrize("field", [b"\x22\x04Relu", b"\x12\x04tiny"])
def test_invalid_utf8_in_names_is_an_invalid_model(tmp_path, field):
    # a byte that is not UTF-8 in a string field: protobuf only notices when it is first read
    data = small_model().SerializeToString()
    assert data.count(field) == 1
    p = tmp_path / "u.onnx"
    p.write_bytes(data.replace(field, field[:2] + b"\x80" + field[3:]))
    with pytest.raises(InvalidModelError):
        load(p)


def test_cycle_is_named(tmp_path):
    m = model([node("Relu", ["x", ], ["a"]), node("Add", ["a", "c"], ["b"]), node("Relu", ["b"], ["c"])],
              [tensor("x", [3])], [tensor("c", [3])])
    with pytest.raises(InvalidModelError, match="cycle"):
        load(save(m, tmp_path / "c.onnx"))


def test_every_unknown_op_is_listed_at_once(tmp_path):
    m = model([node("Frobnicate", ["x"], ["a"]), node("Relu", ["a"], ["b"]),
               node("Frobnicate", ["b"], ["c"]), node("Warp", ["c"], ["y"], domain="acme")],
              [tensor("x", [3])], [tensor("y", [3])], extra_opsets=[("acme", 1)])
    with pytest.raises(UnsupportedOpError) as info:
        load(save(m, tmp_path / "u.onnx"))
    assert info.value.ops == {"Frobnicate": 2, "acme.Warp": 1}
    assert "Frobnicate (x2)" in str(info.value) and "acme.Warp (x1)" in str(info.value)


def test_undefined_input_is_named(tmp_path):
    m = model([node("Relu", ["ghost"], ["y"])], [tensor("x", [3])], [tensor("y", [3])])
    with pytest.raises(InvalidModelError, match="ghost"):
        load(save(m, tmp_path / "g.onnx"))


def _with_external_weight(tmp_path, location: str) -> str:
    m = model([node("Add", ["x", "w"], ["y"])], [tensor("x", [4])], [tensor("y", [4])], [const("w", rand(4))])
    w = m.graph.initializer[0]
    external_data_helper.set_external_data(w, location=location, offset=0, length=16)
    w.data_location = TensorProto.EXTERNAL
    w.ClearField("raw_data")
    d = tmp_path / "models"
    d.mkdir()
    p = d / "m.onnx"
    p.write_bytes(m.SerializeToString())
    return str(p)


def test_external_data_outside_the_model_folder_is_refused(tmp_path):
    (tmp_path / "secret.bin").write_bytes(b"\0" * 16)
    with pytest.raises(InvalidModelError, match="not a readable ONNX model"):
        load(_with_external_weight(tmp_path, "../secret.bin"))


def test_external_data_through_a_symlink_is_refused(tmp_path):
    (tmp_path / "secret.bin").write_bytes(b"\0" * 16)
    p = _with_external_weight(tmp_path, "w.bin")
    os.symlink(tmp_path / "secret.bin", tmp_path / "models" / "w.bin")
    with pytest.raises(InvalidModelError):
        load(p)


def test_external_data_inside_the_folder_loads(tmp_path):
    p = _with_external_weight(tmp_path, "w.bin")
    (tmp_path / "models" / "w.bin").write_bytes(np.ones(4, np.float32).tobytes())
    g = load(p)
    assert [n.op for n in g.nodes] == [Op.Add]


VALID = small_model().SerializeToString()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(edits=[(26, 128), (68, 1)], cut=16)  # an op type that is not UTF-8: protobuf gives bytes
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=8),
       st.integers(0, len(VALID)))
def test_mutated_bytes_never_escape_as_anything_but_invalid_model(tmp_path, edits, cut):
    data = bytearray(VALID)
    for pos, byte in edits:
        data[pos] = byte
    p = tmp_path / "fuzz.onnx"
    p.write_bytes(bytes(data[:cut]) if cut < 16 else bytes(data))
    try:
        load(p)
    except InvalidModelError:
        pass


def run_cli(*args, cwd=None):
    return run_hwlat(*args, cwd=cwd, timeout=120)


@pytest.mark.parametrize("make", ["missing", "garbage", "unknown_op", "cycle", "external_escape"])
def test_cli_bad_model_is_one_line_and_exit_2(tmp_path, make):
    p = tmp_path / "bad.onnx"
    if make == "garbage":
        p.write_bytes(b"\x08\x07garbage" * 10)
    elif make == "unknown_op":
        save(model([node("Frobnicate", ["x"], ["y"])], [tensor("x", [3])], [tensor("y", [3])]), p)
    elif make == "cycle":
        save(model([node("Relu", ["x"], ["a"]), node("Add", ["a", "c"], ["b"]), node("Relu", ["b"], ["c"])],
                   [tensor("x", [3])], [tensor("c", [3])]), p)
    elif make == "external_escape":
        (tmp_path / "secret.bin").write_bytes(b"\0" * 16)
        p = _with_external_weight(tmp_path, "../secret.bin")
    r = run_cli("inspect", str(p))
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr


def test_onnx_roundtrip_keeps_model(tmp_path):
    # the IR never writes the model: loading leaves the file byte-identical
    p = save(small_model(), tmp_path / "m.onnx")
    before = open(p, "rb").read()
    load(p)
    assert open(p, "rb").read() == before
    assert onnx.load(p).graph.node[0].op_type == "Conv"


def _negative_dim_slice(path):
    from onnx import TensorProto, helper
    ints = [helper.make_tensor(n, TensorProto.INT64, [1], [v]) for n, v in (("st", 0), ("en", 2), ("ax", 1))]
    g = helper.make_graph([helper.make_node("Slice", ["x", "st", "en", "ax"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, -1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 2])], ints)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)
    return path


def test_negative_declared_dim_is_refused_before_shape_inference(tmp_path):
    # onnx's shape inference hits a C++ assertion (SIGABRT) on this model: it must never be reached
    with pytest.raises(InvalidModelError, match=r"value 'x' declares a negative dim \[4, -1\]"):
        load(_negative_dim_slice(tmp_path / "slice.onnx"))


@pytest.mark.parametrize("command", [["inspect"], ["predict", "--device", "cpu-ort"],
                                     ["profile", "--device", "cpu-ort"], ["compile"]])
def test_cli_negative_declared_dim_is_one_line_not_an_abort(tmp_path, command):
    p = _negative_dim_slice(tmp_path / "slice.onnx")
    extra = {"profile": ["--table", str(tmp_path / "t.sqlite")],
             "compile": ["-o", str(tmp_path / "s.so")]}.get(command[0], [])
    r = run_cli(command[0], str(p), *command[1:], *extra)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "negative dim" in lines[0], r.stderr
    assert not (tmp_path / "s.so").exists()
