"""What importing hwlat's light packages pulls in: a NAS loop that queries a table starts fast."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parents[1]


def _fresh(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120)


def test_importing_nas_does_not_load_onnx():
    r = _fresh("import hwlat.nas, sys; assert 'onnx' not in sys.modules")
    assert r.returncode == 0, r.stderr[-2000:]


def test_load_imports_onnx_when_it_reads_a_file(tmp_path):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    m = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                          opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 10
    onnx.save(m, str(tmp_path / "m.onnx"))
    r = _fresh("import sys; from hwlat.graph import fuse, load; assert 'onnx' not in sys.modules; "
               f"g = load({str(tmp_path / 'm.onnx')!r}); assert 'onnx' in sys.modules; "
               "print([k.key.ops for k in fuse(g)])")
    assert r.returncode == 0 and r.stdout.strip() == "[('Relu',)]", r.stderr[-2000:]


def test_attribute_types_match_onnx():
    from hwlat.graph.load import AttributeProto

    for name, value in vars(AttributeProto).items():
        assert getattr(onnx.AttributeProto, name) == value, name
