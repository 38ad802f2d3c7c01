"""hwlat.SparseConv3d is checked where the graph is loaded: every broken attribute, input, rank,
element type or oversized declaration is one InvalidModelError naming it, before any work."""

from __future__ import annotations

import time

import numpy as np
import pytest
from onnx import TensorProto, helper

from hwlat.errors import InvalidInputError, InvalidModelError
from hwlat.graph import fuse, load
from hwlat.graph.sparse import MAX_MAP_LOOKUPS, MAX_POINTS, kernel_map_size
from hwlat.graph.summary import summarize
from tests.helpers.onnx_builders import const, model, rand, save, tensor

N, CIN, COUT = 10, 4, 8
GOOD_ATTRS = {"subm": 1, "kernel_size": [3, 3, 3], "stride": [1, 1, 1], "padding": [1, 1, 1]}


def sparse_model(*, attrs=None, inputs=("f", "coords", "w"), n=N, f_dtype=TensorProto.FLOAT,
                 coords_shape=None, weight=None, raw_attrs=()):
    attrs = dict(GOOD_ATTRS) if attrs is None else attrs
    conv = helper.make_node("SparseConv3d", list(inputs), ["y"], name="sc", domain="hwlat", **attrs)
    conv.attribute.extend(raw_attrs)
    w = rand(27, CIN, COUT) if weight is None else weight
    return model([conv],
                 [tensor("f", [n, CIN], f_dtype),
                  tensor("coords", coords_shape or [n, 4], TensorProto.INT32)],
                 [tensor("y", [n, COUT])], [const("w", w)], extra_opsets=[("hwlat", 1)])


def kernels(path):
    g = load(path)
    return summarize(g, fuse(g))


def test_a_well_formed_sparse_conv_loads(tmp_path):
    s = kernels(save(sparse_model(), tmp_path / "ok.onnx"))
    assert s.totals()["by_kind"] == {"sparse_conv": 1}


def test_stride_and_padding_default_as_the_lowering_reads_them(tmp_path):
    m = sparse_model(attrs={"kernel_size": [1, 1, 1]}, weight=rand(1, CIN, COUT))
    s = kernels(save(m, tmp_path / "d.onnx"))
    # a 1x1x1 submanifold conv pairs each voxel with itself only
    assert s.rows[0].cost.macs == N * CIN * COUT


def _without(name):
    return {k: v for k, v in GOOD_ATTRS.items() if k != name}


BROKEN = {
    "missing kernel_size": (dict(attrs=_without("kernel_size")), "'kernel_size'.*missing"),
    "huge kernel_size": (dict(attrs={**GOOD_ATTRS, "kernel_size": [1000000] * 3}), "kernel_size"),
    "zero kernel_size": (dict(attrs={**GOOD_ATTRS, "kernel_size": [0, 3, 3]}), "kernel_size"),
    "two-axis kernel": (dict(attrs={**GOOD_ATTRS, "kernel_size": [3, 3]}), "3 integers"),
    "float kernel_size": (dict(attrs={**GOOD_ATTRS, "kernel_size": [3.0, 3.0, 3.0]}), "must be INTS, got FLOATS"),
    "string subm": (dict(attrs={**GOOD_ATTRS, "subm": "yes"}), "'subm' must be INT, got STRING"),
    "subm 2": (dict(attrs={**GOOD_ATTRS, "subm": 2}), "0 or 1"),
    "strided submanifold": (dict(attrs={**GOOD_ATTRS, "stride": [2, 2, 2]}), "stride 1"),
    "negative padding": (dict(attrs={**GOOD_ATTRS, "padding": [-1, 1, 1]}), "padding"),
    "unknown attribute": (dict(attrs={**GOOD_ATTRS, "dilation": [2, 2, 2]}), "unknown attribute 'dilation'"),
    "deleted weight": (dict(inputs=("f", "coords")), "takes 3 inputs"),
    "empty weight name": (dict(inputs=("f", "coords", "")), "takes 3 inputs"),
    "double features": (dict(f_dtype=TensorProto.DOUBLE), "must be float32, got float64"),
    "coords of 3 columns": (dict(coords_shape=[N, 3]), r"\[N, 4\]"),
    "coords of rank 3": (dict(coords_shape=[N, 4, 1]), "rank 2"),
    "negative N": (dict(n=-5), "negative dimension"),
    "rows disagree": (dict(coords_shape=[N + 1, 4]), "feature rows for"),
    "weight offsets": (dict(weight=rand(26, CIN, COUT)), "27 kernel offsets"),
    "weight channels": (dict(weight=rand(27, CIN + 1, COUT)), "input channels"),
    "3e7 points": (dict(n=30_000_000), f"at most {MAX_POINTS}"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_sparse_conv_is_one_clear_refusal(tmp_path, case):
    kwargs, message = BROKEN[case]
    path = save(sparse_model(**kwargs), tmp_path / "bad.onnx")
    start = time.perf_counter()
    with pytest.raises(InvalidModelError, match=message) as e:
        kernels(path)
    assert "\n" not in str(e.value) and "hwlat.SparseConv3d 'sc'" in str(e.value)
    assert time.perf_counter() - start < 30  # refused before any work its sizes ask for


def test_a_duplicated_attribute_is_refused(tmp_path):
    dup = helper.make_attribute("subm", 1)
    path = save(sparse_model(raw_attrs=[dup]), tmp_path / "dup.onnx")
    with pytest.raises(InvalidModelError, match="given twice"):
        kernels(path)


def test_many_convs_sharing_no_map_are_bounded_in_total(tmp_path):
    # each conv alone is within bounds; the kernel maps of all of them together are not
    n = MAX_MAP_LOOKUPS // 27 // 2 + 1
    convs = [helper.make_node("SparseConv3d", [f"f{i}", "coords", "w"], [f"y{i}"], name=f"sc{i}",
                              domain="hwlat", **{**GOOD_ATTRS, "padding": [i % 3, 1, 1]})
             for i in range(3)]
    m = model(convs, [*(tensor(f"f{i}", [n, CIN]) for i in range(3)),
                      tensor("coords", [n, 4], TensorProto.INT32)],
              [tensor(f"y{i}", [n, COUT]) for i in range(3)], [const("w", rand(27, CIN, COUT))],
              extra_opsets=[("hwlat", 1)])
    with pytest.raises(InvalidModelError, match="lookups in all"):
        load(save(m, tmp_path / "many.onnx"))


def test_kernel_map_work_is_bounded_before_it_starts():
    coords = np.zeros((MAX_MAP_LOOKUPS // 27 + 1, 4), np.int64)
    with pytest.raises(InvalidInputError, match="lookups"):
        kernel_map_size(coords, (3, 3, 3), (1, 1, 1), (1, 1, 1), True)
