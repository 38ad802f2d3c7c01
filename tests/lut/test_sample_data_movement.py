"""The kernel sampler's data-movement configurations: channel-split Slices, window-shift strips,
channel-shuffle and window-partition Transposes, Splits and explicit constant Pads."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import numpy_helper

from hwlat.graph import fuse, load
from hwlat.lut.sample import KINDS, config_of, cut, draw
from tests.helpers.onnx_builders import const, model, node, save, tensor


def _i64(name, values):
    return numpy_helper.from_array(np.asarray(values, np.int64), name)


def _slice(shape, axis, start, end, steps=False):
    inits = [_i64("s", [start]), _i64("e", [end]), _i64("a", [axis])] + ([_i64("st", [1])] if steps else [])
    out = list(shape)
    out[axis] = end - start
    return model([node("Slice", ["x", "s", "e", "a"] + (["st"] if steps else []), ["y"])],
                 [tensor("x", shape)], [tensor("y", out)], inits, opset=17)


def _transpose(shape, perm):
    return model([node("Transpose", ["x"], ["y"], perm=perm)], [tensor("x", shape)],
                 [tensor("y", [shape[p] for p in perm])], opset=17)


def _split(shape, axis, parts):
    outs = []
    for i, p in enumerate(parts):
        s = list(shape)
        s[axis] = p
        outs.append(tensor(f"y{i}", s))
    return model([node("Split", ["x", "sp"], [f"y{i}" for i in range(len(parts))], axis=axis)],
                 [tensor("x", shape)], outs, [_i64("sp", parts)], opset=17)


def _pad(shape, pads, value=True, mode="constant"):
    out = [d + pads[i] + pads[i + len(shape)] for i, d in enumerate(shape)]
    inits = [_i64("p", pads)] + ([const("v", np.float32(0.0))] if value else [])
    return model([node("Pad", ["x", "p"] + (["v"] if value else []), ["y"], mode=mode)],
                 [tensor("x", shape)], [tensor("y", out)], inits, opset=17)


CASES = {
    "channel split": lambda: _slice([1, 116, 28, 28], 1, 58, 116),
    "window-shift strip": lambda: _slice([1, 28, 28, 96], 2, 0, 25),
    "shuffle transpose 5-d": lambda: _transpose([1, 2, 58, 28, 28], [0, 2, 1, 3, 4]),
    "window partition 6-d": lambda: _transpose([1, 8, 7, 8, 7, 96], [0, 1, 3, 2, 4, 5]),
    "qkv split": lambda: _split([1, 49, 288], 2, [96, 96, 96]),
    "tf same pad": lambda: _pad([1, 16, 112, 112], [0, 0, 0, 0, 0, 0, 1, 1]),
    "zero pad, no value": lambda: _pad([1, 14, 14, 384], [0] * 8, value=False),
}


def _kernel(tmp_path, m):
    ks = [k for k in fuse(load(save(m, tmp_path / "k.onnx"))) if k.kind.value != "view"]
    assert len(ks) == 1, [k.key.text() for k in ks]
    return ks[0]


def test_data_movement_is_a_sampled_kind():
    assert "data_movement" in KINDS


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_data_movement_key_builds_back_into_exactly_that_key(case, tmp_path):
    k = _kernel(tmp_path, CASES[case]())
    assert k.kind.value == "data_movement"
    cfg = config_of(k.key.text())
    assert cfg is not None and cfg["kind"] == "data_movement"
    s = cut(cfg, tmp_path)
    assert s is not None
    assert s.kernel.key.text() == k.key.text()


def _shape_in(key: str, which: str) -> list[list[int]]:
    part = next(p for p in key.split("|") if p.startswith(which + ":"))
    return [[int(d) for d in t.split("[")[1].rstrip("]").split("x")] for t in part[len(which) + 1:].split("],")]


@pytest.mark.parametrize("case", sorted(CASES))
def test_draws_keep_the_structure_of_the_kernel(case, tmp_path):
    k = _kernel(tmp_path, CASES[case]())
    cfg = config_of(k.key.text())
    rng = np.random.default_rng(3)
    keys = set()
    for _ in range(8):
        new = draw(cfg, rng)
        assert new is not None
        s = cut(new, tmp_path)
        assert s is not None and s.kernel.kind.value == "data_movement"
        assert s.kernel.key.ops == k.key.ops
        key = s.kernel.key.text()
        keys.add(key)
        (x,), outs = _shape_in(key, "in"), _shape_in(key, "out")
        if case == "channel split":  # still a half of the channels, the map untouched in shape
            assert outs[0][1] * 2 in (x[1] - 1, x[1], x[1] + 1) and outs[0][2:] == x[2:] and x[2] == x[3]
        if case == "qkv split":  # three parts that add up to the axis
            assert len(outs) == 3 and sum(o[2] for o in outs) == x[2]
        if case == "tf same pad":  # one more row and column, at the end
            assert outs[0] == [x[0], x[1], x[2] + 1, x[3] + 1]
        if case == "shuffle transpose 5-d":  # the groups (2) stay, the perm too
            assert x[1] == 2 and outs[0] == [x[0], x[2], x[1], x[3], x[4]]
    assert len(keys) > 3  # the draws move sizes


@pytest.mark.parametrize("m", [
    lambda: _slice([1, 16, 28, 28], 1, 0, 8, steps=True),  # steps: a strided Slice is not built
    lambda: _pad([1, 8, 16, 16], [0, 0, 1, 1, 0, 0, 1, 1], mode="reflect"),
])
def test_data_movement_without_a_builder_gives_no_configuration(m, tmp_path):
    k = _kernel(tmp_path, m())
    assert config_of(k.key.text()) is None
