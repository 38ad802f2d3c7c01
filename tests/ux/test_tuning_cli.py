"""`hwlat compile --tune-trials N` says how many trials ran, on which tasks, and why so few:
hwlat's hand-scheduled kernels take most ops."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.tvm


def _conv_pool(path):
    import onnx
    from onnx import TensorProto, numpy_helper
    from onnx import helper as h

    w = numpy_helper.from_array(np.random.default_rng(0).random((8, 3, 3, 3), dtype=np.float32), "w")
    g = h.make_graph([h.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                      h.make_node("MaxPool", ["c"], ["y"], kernel_shape=[2, 2], strides=[2, 2])],
                     "g", [h.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                     [h.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 4, 4])], [w])
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), path)
    return path


def test_the_summary_says_what_ran_and_why():
    from hwlat.lowering.tuning import TuningSummary

    s = TuningSummary(trials_asked=64, tasks=12, hand_scheduled=11, tuned=["reshape"], trials_run=1)
    line = s.describe()
    assert "1 of 64 trials ran, on 1 task(s): reshape" in line
    assert "11 of 12 tasks are hwlat's hand-scheduled kernels" in line
    assert "fewer trials than asked" in line
    assert s.to_json()["trials_run"] == 1


@pytest.mark.heavy  # MetaSchedule's tuning run takes minutes even for 2 trials
def test_compile_reports_the_tuning_it_did(tmp_path, hwlat_invoke):
    model = _conv_pool(tmp_path / "m.onnx")
    r = hwlat_invoke("compile", model, "-d", "cpu-tvm-tuned", "--tune-trials", "2",
                     "-o", tmp_path / "m.so", "--table", tmp_path / "t.sqlite", "--json")
    assert r.exit_code == 0, r.output
    tuning = json.loads(r.stdout)["tuning"]
    assert tuning["trials_asked"] == 2 and tuning["hand_scheduled"] == 1
    assert [t.rstrip("0123456789_") for t in tuning["tuned"]] == ["max_pool2d"]
    assert 1 <= tuning["trials_run"] <= 2
