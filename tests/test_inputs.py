"""hwlat.inputs: the one generator of made-up inputs, and the callers that draw through it."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from hwlat.analytic.neuromorphic import seeded_sample
from hwlat.graph import load
from hwlat.inputs import random_arrays, random_feeds
from hwlat.runners.ort import random_feeds as ort_feeds

SPECS = [("a", (2, 3), "float32"), ("i", (4,), "int64"), ("b", (5,), np.float16),
         ("m", (2, 2), np.bool_), ("c", (3, 1), "float64")]


def _expected(specs, seed):
    """Written out: one generator, floats drawn in input order, zeros otherwise."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(dtype) if np.issubdtype(np.dtype(dtype), np.floating)
            else np.zeros(shape, dtype) for _, shape, dtype in specs]


def test_values_dtypes_and_seeds():
    for seed in (0, 1, 7):
        got = random_arrays(SPECS, seed)
        want = _expected(SPECS, seed)
        for g, w, (_, shape, dtype) in zip(got, want, SPECS, strict=True):
            assert g.dtype == np.dtype(dtype) and g.shape == shape
            np.testing.assert_array_equal(g, w)
    assert not np.array_equal(random_arrays(SPECS, 0)[0], random_arrays(SPECS, 1)[0])
    feeds = random_feeds(SPECS, 3)
    assert list(feeds) == [n for n, _, _ in SPECS]
    np.testing.assert_array_equal(feeds["c"], _expected(SPECS, 3)[4])


def test_coords_where_named():
    specs = [("x", (6, 2), "float32"), ("coords", (50, 4), "int32")]
    plain = random_arrays(specs)
    assert not plain[1].any()
    feats, coords = random_arrays(specs, is_coords=lambda name, shape, dtype: name == "coords")
    np.testing.assert_array_equal(feats, plain[0])  # coordinates draw nothing from the generator
    assert coords.dtype == np.int32 and len({tuple(r) for r in coords}) == 50


def _two_input_model(path) -> str:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 3, 4])
    graph = helper.make_graph([helper.make_node("Add", ["x", "y"], ["z"])], "two", [x, y], [z])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 10
    onnx.save(m, str(path))
    return str(path)


def test_callers_draw_the_same_data(tmp_path):
    path = _two_input_model(tmp_path / "two.onnx")
    want = _expected([("x", (1, 3, 4), "float32"), ("y", (1, 3, 4), "float32")], 5)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for feeds in (ort_feeds(sess, 5), seeded_sample(load(path), 5)):
        assert list(feeds) == ["x", "y"]
        np.testing.assert_array_equal(feeds["x"], want[0])
        np.testing.assert_array_equal(feeds["y"], want[1])
