"""Guard for the apache-tvm-ffi pin: newer ffi releases segfault in save_json on any module
holding a PrimFunc (and so in every MetaSchedule run). Runs in a subprocess so a crash fails
this test instead of killing the suite."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.tvm

SCRIPT = """
import tvm
from tvm.script import ir as I, tirx as T

@I.ir_module
class Mod:
    @T.prim_func(s_tir=True)
    def add_one(a: T.Buffer((8,), "float32"), b: T.Buffer((8,), "float32")):
        for i in range(8):
            with T.sblock("b"):
                vi = T.axis.spatial(8, i)
                b[vi] = a[vi] + T.float32(1)

text = tvm.ir.save_json(Mod)
back = tvm.ir.load_json(text)
tvm.ir.assert_structural_equal(Mod, back)
print("roundtrip ok")
"""


def test_save_json_roundtrip_of_a_primfunc_module(tmp_path):
    script = tmp_path / "roundtrip.py"  # TVMScript parses its own source: it must be a file
    script.write_text(SCRIPT)
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr[-2000:]}"
    assert "roundtrip ok" in r.stdout
