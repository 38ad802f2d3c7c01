"""The candidate builder that MetaSchedule's worker processes run (tuning itself takes minutes
here and is not run by the tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm.script import ir as I
from tvm.script import tirx as T

from hwlat.lowering.targets import make_target
from hwlat.lowering.tuning import build_candidate

pytestmark = pytest.mark.tvm

ROOT = Path(__file__).resolve().parents[2]

@I.ir_module
class AddOne:
    @T.prim_func(s_tir=True)
    def main(a: T.Buffer((8,), "float32"), b: T.Buffer((8,), "float32")):
        for i in range(8):
            with T.sblock("b"):
                vi = T.axis.spatial(8, i)
                b[vi] = a[vi] + T.float32(1)


def test_candidate_builds_and_runs():
    lib = build_candidate(AddOne, make_target("host"), None)
    a = tvm.runtime.tensor(np.arange(8, dtype="float32"))
    b = tvm.runtime.tensor(np.zeros(8, dtype="float32"))
    lib["main"](a, b)
    np.testing.assert_array_equal(b.numpy(), np.arange(8, dtype="float32") + 1)


# in a fresh interpreter: whether an earlier test in this process imported the intrinsics does
# not matter, and the build is checked to leave them unregistered
_NO_INTRINSICS = """
import sys

from tvm.script import ir as I
from tvm.script import tirx as T

from hwlat.lowering.targets import make_target
from hwlat.lowering.tuning import build_candidate


@I.ir_module
class AddOne:
    @T.prim_func(s_tir=True)
    def main(a: T.Buffer((8,), "float32"), b: T.Buffer((8,), "float32")):
        for i in range(8):
            with T.sblock("b"):
                vi = T.axis.spatial(8, i)
                b[vi] = a[vi] + T.float32(1)


assert "tvm.s_tir.tensor_intrin" not in sys.modules, "imported before the build"
build_candidate(AddOne, make_target("host"), None)
assert "tvm.s_tir.tensor_intrin" not in sys.modules, "the build registered every tensor intrinsic"
print("ok")
"""


def test_candidate_builds_without_registering_every_tensor_intrinsic(tmp_path):
    script = tmp_path / "no_intrinsics.py"  # a file: TVMScript reads its source back
    script.write_text(_NO_INTRINSICS)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def _matmul_relu(path):
    import onnx
    from onnx import TensorProto
    from onnx import helper as h

    # both operands are inputs: a constant weight would go to hwlat's hand-scheduled dense
    # kernel, which MetaSchedule does not tune
    g = h.make_graph([h.make_node("MatMul", ["x", "w"], ["m"]), h.make_node("Relu", ["m"], ["y"])],
                     "g", [h.make_tensor_value_info("x", TensorProto.FLOAT, [16, 32]),
                           h.make_tensor_value_info("w", TensorProto.FLOAT, [32, 32])],
                     [h.make_tensor_value_info("y", TensorProto.FLOAT, [16, 32])])
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), path)
    return path


def test_tuning_records_fill_the_table_of_the_device_that_builds_with_them(tmp_path, monkeypatch):
    """A record in cpu-tvm-tuned's database (written here as MetaSchedule writes one, since real
    tuning takes minutes on this machine) becomes the kernel's table entry at compile time, and
    predict reads it; a kernel without records is left to `hwlat profile`."""
    import json

    from tvm.s_tir import meta_schedule as ms
    from typer.testing import CliRunner

    from hwlat.cli import app
    from hwlat.devices import load_device
    from hwlat.lowering.custom import import_onnx
    from hwlat.lowering.pipelines import PipelineOptions, tuning_prefix
    from hwlat.lowering.targets import resolve_target
    from hwlat.lowering.tuning import open_tuning_db
    from hwlat.lut import TableStore
    from hwlat.runners.profile import PIPELINE

    monkeypatch.setenv("HWLAT_HOME", str(tmp_path / "home"))
    spec = load_device("cpu-tvm-tuned")
    target = resolve_target(device=spec)
    model = _matmul_relu(tmp_path / "m.onnx")
    import onnx

    db_dir = open_tuning_db(spec.tuning_db_path(), target)
    with target:
        mod = tuning_prefix(PipelineOptions(target))(import_onnx(onnx.load(model)))
        [task] = ms.relax_integration.extract_tasks(mod, target)
    db = ms.database.JSONDatabase(work_dir=str(db_dir))
    workload = db.commit_workload(task.dispatched[0])
    func = task.dispatched[0]["main"]
    sch = tvm.s_tir.Schedule(task.dispatched[0])
    sch.get_sblock("matmul")  # a record needs a trace of at least one step to count
    db.commit_tuning_record(ms.database.TuningRecord(
        sch.trace, workload, [2e-5, 3e-5, 2.5e-5], target, ms.arg_info.ArgInfo.from_prim_func(func)))

    table = tmp_path / "t.sqlite"
    r = CliRunner().invoke(app, ["compile", str(model), "--device", "cpu-tvm-tuned",
                                 "-o", str(tmp_path / "m.so"), "--table", str(table)])
    assert r.exit_code == 0, r.output
    assert "1 kernels' latencies from the tuning records; 0 without records" in r.output
    with TableStore(table, readonly=True) as store:
        [e] = store.entries("cpu-tvm-tuned")
    assert e.pipeline == PIPELINE and e.repeats == 3 and e.median_ms == pytest.approx(0.025)
    r = CliRunner().invoke(app, ["predict", str(model), "--device", "cpu-tvm-tuned", "--table",
                                 str(table), "--json"])
    assert json.loads(r.stdout)["latency_ms"] == pytest.approx(0.025)
    # the plain cpu-tvm device builds without the database: its table is not filled from it
    r = CliRunner().invoke(app, ["compile", str(model), "--device", "cpu-tvm", "--tuning-db",
                                 str(db_dir), "-o", str(tmp_path / "m2.so"), "--table", str(table)])
    assert r.exit_code == 0, r.output
    with TableStore(table, readonly=True) as store:
        assert store.entries("cpu-tvm") == []


def test_a_small_budget_reaches_every_task():
    from hwlat.lowering.tuning import trials_per_iter

    assert trials_per_iter(48, 33) == 1  # not 48 trials for the first task and none for the rest
    assert trials_per_iter(330, 33) == 10
    assert trials_per_iter(10_000, 3) == 64
    assert trials_per_iter(5, 0) == 5


def test_tuning_skips_hwlats_hand_scheduled_kernels():
    """A conv with a constant weight becomes hwlat's dense kernel, which tuning leaves alone;
    the max pool next to it is still a task."""
    from onnx import TensorProto, numpy_helper
    from onnx import helper as h
    from tvm.s_tir import meta_schedule as ms

    from hwlat.lowering.custom import import_onnx
    from hwlat.lowering.pipelines import PipelineOptions, tuning_prefix
    from hwlat.lowering.targets import make_target
    from hwlat.lowering.tuning import hand_scheduled, tunable_tasks

    w = numpy_helper.from_array(np.random.default_rng(0).random((8, 3, 3, 3), dtype=np.float32), "w")
    g = h.make_graph([h.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                      h.make_node("MaxPool", ["c"], ["y"], kernel_shape=[2, 2], strides=[2, 2])],
                     "g", [h.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                     [h.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 4, 4])], [w])
    model = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    target = make_target(threads=1)
    with target:
        mod = tuning_prefix(PipelineOptions(target))(import_onnx(model))
        tasks = ms.relax_integration.extract_tasks(mod, target)
    assert sorted(t.task_name.rstrip("0123456789") for t in tasks) == ["hwlat_conv2d", "max_pool2d"]
    assert [t.task_name for t in tunable_tasks(tasks)] == ["max_pool2d"]
    assert [hand_scheduled(t) for t in tasks if t.task_name.startswith("hwlat")] == [True]
