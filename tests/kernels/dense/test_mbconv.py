"""The fused MobileNet-block kernel (expand 1x1 -> depthwise -> project 1x1, the 1x1 convs each
optional) against the numpy reference of the separate convs: depthwise kernel sizes 1..7,
strides 1..3, symmetric, asymmetric and no padding, widths that leave column tails, heights that
leave a partial row tile, mid and output channels that leave partial blocks, a residual, batch
2, several tasks an image, explicit tiles; what `supports` refuses, the packing, and where the
rewrite prefers it."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import tvm

from hwlat.kernels.cpu import AVX2, AVX512
from hwlat.kernels.dense import depthwise, mbconv
from hwlat.kernels.dense.reference import conv2d_reference
from hwlat.kernels.dense.spec import Conv2dSpec, Epilogue
from hwlat.lowering.targets import make_target

pytestmark = pytest.mark.tvm

TARGET = make_target(threads=1)


def block(cin: int, h: int, w: int, cm: int, k=(3, 3), stride=(1, 1), pad=(1, 1, 1, 1),
          acts=("relu", "hardswish", "none"), expand: bool = True, cout: int | None = None,
          residual: bool = False, batch: int = 1, tasks: int = 1) -> mbconv.MBConvSpec:
    """x (cin channels) -> [1x1 to cm] -> depthwise k -> [1x1 to cout (+ residual)]."""
    e = Conv2dSpec(batch, cin, h, w, cm, (1, 1), epilogue=Epilogue(True, False, acts[0])) \
        if expand else None
    d = Conv2dSpec(batch, cm, h, w, cm, k, stride, pad, groups=cm,
                   epilogue=Epilogue(True, False, acts[1], -0.5, 1.5))
    p = Conv2dSpec(batch, cm, d.out_height, d.out_width, cout, (1, 1),
                   epilogue=Epilogue(True, residual, acts[2])) if cout else None
    return mbconv.MBConvSpec(e, d, p, tasks)


CASES = {
    # name: (spec, depthwise tile or None)
    "3x3-s1-tails": (block(5, 13, 11, 7), None),
    "3x3-s2-odd": (block(4, 15, 21, 13, stride=(2, 2)), None),
    "3x3-s2-even-wide": (block(3, 16, 70, 12, stride=(2, 2), acts=("clip", "relu", "none")), None),
    "5x5-s1": (block(6, 14, 14, 6, (5, 5), pad=(2, 2, 2, 2), acts=("hardswish", "none", "none")),
               None),
    "5x5-s2-batch2-tasks2": (block(3, 17, 23, 12, (5, 5), (2, 2), (2, 2, 2, 2), batch=2, tasks=2),
                             None),
    "7x7-s1": (block(2, 12, 40, 6, (7, 7), pad=(3, 3, 3, 3), acts=("none", "clip", "none")), None),
    "7x7-s2-tasks3": (block(3, 15, 15, 20, (7, 7), (2, 2), (3, 3, 3, 3), tasks=3), None),
    "no-pad": (block(3, 10, 26, 6, pad=(0, 0, 0, 0)), None),
    "asymmetric-pad": (block(3, 11, 12, 6, pad=(0, 2, 1, 0)), None),
    "tf-same-s2": (block(3, 12, 12, 6, stride=(2, 2), pad=(0, 0, 1, 1)), None),
    "mixed-stride": (block(3, 13, 18, 6, (3, 5), (2, 1), (1, 2, 1, 2)), None),
    "stride-3": (block(2, 20, 25, 6, stride=(3, 3)), None),
    "1x1-depthwise": (block(4, 5, 9, 6, (1, 1), pad=(0, 0, 0, 0)), None),
    "tall-tile": (block(4, 19, 30, 6, stride=(2, 2)), depthwise.Tile(6, 8)),
    "wide-tile": (block(4, 9, 37, 6, (5, 5), pad=(2, 2, 2, 2)), depthwise.Tile(2, 16)),
    # 16-lane depthwise tiles with the taps held in registers (a 30-column output: one whole
    # tile of 16 and 14 columns stored as 8 lanes, then single ones), and held taps on 8 lanes
    "held-16-lanes": (block(4, 11, 30, 6, (5, 5), pad=(2, 2, 2, 2), cout=5),
                      depthwise.Tile(3, 16, 16, True)),
    "held-8-lanes-s2": (block(3, 13, 17, 6, (7, 7), (2, 2), (3, 3, 3, 3)),
                        depthwise.Tile(2, 8, 8, True)),
    # with a project conv
    "full-s1-residual": (block(8, 13, 11, 20, cout=8, residual=True, acts=("relu", "relu", "none")),
                         None),
    "full-s2-odd-cout": (block(4, 15, 21, 13, stride=(2, 2), cout=7, acts=("hardswish",) * 3),
                         None),
    "full-5x5-tasks2-batch2": (block(3, 17, 23, 12, (5, 5), (1, 1), (2, 2, 2, 2), cout=5,
                                     residual=False, batch=2, tasks=2), None),
    "full-row-tail-tasks3": (block(6, 23, 9, 18, cout=6, residual=True, tasks=3), None),
    # without an expand conv: depthwise -> project
    "dw-project-residual": (block(12, 14, 19, 12, expand=False, cout=12, residual=True), None),
    "dw-project-s2": (block(7, 16, 16, 7, stride=(2, 2), expand=False, cout=9,
                            acts=("none", "clip", "relu")), None),
}


@functools.cache
def _library(cpu=AVX2):
    """Every case's kernel scheduled for `cpu`, compiled as one module (one compile is faster;
    16-float vectors compile for any x86 target, so the AVX-512 tiles run here either way)."""
    mod = tvm.IRModule({f"f{i}": mbconv.primfunc(spec, tile, cpu).with_attr("global_symbol",
                                                                            f"f{i}")
                        for i, (spec, tile) in enumerate(CASES.values())})
    ex = tvm.compile(mod, target=TARGET)
    return {name: ex[f"f{i}"] for i, name in enumerate(CASES)}


def weights(spec: mbconv.MBConvSpec, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    e, d, p = spec.expand, spec.dw, spec.project
    out = {"x": rng.standard_normal(spec.x_shape).astype(np.float32),
           "w2": rng.standard_normal(d.w_shape).astype(np.float32),
           "b2": rng.standard_normal(d.cout).astype(np.float32)}
    if e:
        out["w1"] = (rng.standard_normal(e.w_shape) / np.sqrt(e.cin)).astype(np.float32)
        out["b1"] = rng.standard_normal(e.cout).astype(np.float32)
    if p:
        out["w3"] = (rng.standard_normal(p.w_shape) / np.sqrt(p.cin)).astype(np.float32)
        out["b3"] = rng.standard_normal(p.cout).astype(np.float32)
        out["r"] = rng.standard_normal(p.y_shape).astype(np.float32)
    return out


def reference(spec: mbconv.MBConvSpec, a: dict) -> np.ndarray:
    m = conv2d_reference(spec.expand, a["x"], a["w1"], a["b1"]) if spec.expand else a["x"]
    y = conv2d_reference(spec.dw, m, a["w2"], a["b2"])
    return conv2d_reference(spec.project, y, a["w3"], a["b3"], a.get("r")) if spec.project else y


def run(spec: mbconv.MBConvSpec, fn, a: dict) -> np.ndarray:
    packed = mbconv.pack(spec, a.get("w1"), a.get("b1"), a["w2"], a["b2"], a.get("w3"), a.get("b3"))
    assert tuple(p.shape for p in packed) == mbconv.packed_shapes(spec)
    args = [a["x"], *packed] + ([a["r"]] if spec.project and spec.project.epilogue.residual else [])
    out = tvm.runtime.tensor(np.full(spec.y_shape, np.nan, np.float32))
    fn(*(tvm.runtime.tensor(v) for v in args), out)
    return out.numpy()


@pytest.mark.parametrize("name", CASES)
def test_matches_the_separate_convs(name):
    spec, _ = CASES[name]
    assert mbconv.supports(spec) is None
    a = weights(spec)
    want = reference(spec, a)
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(run(spec, _library()[name], a), want, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("name", CASES)
def test_avx512_tiles_match_the_separate_convs(name):
    """1x1 tiles of two 16-float vectors (32 columns): every column tail of CASES is shorter
    than a tile, many shorter than one vector."""
    spec, _ = CASES[name]
    a = weights(spec)
    want = reference(spec, a)
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(run(spec, _library(AVX512)[name], a), want, rtol=1e-4,
                               atol=1e-4 * scale)


def test_pack_pads_the_last_block_with_zero_channels():
    spec = block(3, 8, 8, 7, cout=8)  # blocks of 6: the second holds 1 mid, 2 output channels
    a = weights(spec)
    pw1, pb1, pw2, pb2, pw3, pb3 = mbconv.pack(spec, a["w1"], a["b1"], a["w2"], a["b2"], a["w3"],
                                               a["b3"])
    assert pw1.shape == (2, 3, mbconv.G) and pb1.shape == pw2.shape[:1] == pb2.shape == (12,)
    assert pw3.shape == (2, 7, mbconv.G) and pb3.shape == (8,)
    assert pw1[1, :, 0].tolist() == a["w1"][6, :, 0, 0].tolist()
    assert not pw1[1, :, 1:].any() and not pb1[7:].any() and not pw2[7:].any() and not pb2[7:].any()
    assert pw3[1, :, 1].tolist() == a["w3"][7, :, 0, 0].tolist() and not pw3[1, :, 2:].any()
    np.testing.assert_array_equal(pw2[:7], a["w2"].reshape(7, 9))
    with pytest.raises(ValueError, match="weight of shape"):
        mbconv.pack(spec, a["w1"][:, :2], a["b1"], a["w2"], a["b2"], a["w3"], a["b3"])
    with pytest.raises(ValueError, match="weight of shape"):
        mbconv.pack(spec, a["w1"], a["b1"], a["w2"], a["b2"])  # the project's weight missing


def _with(spec: mbconv.MBConvSpec, **kw) -> mbconv.MBConvSpec:
    fields = {"expand": spec.expand, "dw": spec.dw, "project": spec.project, "tasks": spec.tasks}
    return mbconv.MBConvSpec(**{**fields, **kw})


@pytest.mark.parametrize("change, reason", [
    (lambda s: _with(s, expand=Conv2dSpec(1, 4, 10, 10, 6, (3, 3), padding=(1, 1, 1, 1))),
     "expand conv must be 1x1"),
    (lambda s: _with(s, project=Conv2dSpec(1, 6, 10, 10, 4, (1, 1), (2, 2))),
     "project conv must be 1x1"),
    (lambda s: _with(s, expand=Conv2dSpec(1, 4, 10, 10, 6, (1, 1), epilogue=Epilogue(False))),
     "needs a bias"),
    (lambda s: _with(s, expand=Conv2dSpec(1, 4, 10, 10, 6, (1, 1), epilogue=Epilogue(True, True))),
     "only the project conv may have a residual"),
    (lambda s: _with(s, dw=Conv2dSpec(1, 6, 9, 10, 6, (3, 3), padding=(1, 1, 1, 1), groups=6)),
     "is not the expand output"),
    (lambda s: _with(s, project=Conv2dSpec(1, 5, 10, 10, 4, (1, 1))), "is not the depthwise output"),
    (lambda s: _with(s, dw=Conv2dSpec(1, 6, 10, 10, 6, (3, 3), padding=(1, 1, 1, 1))),
     "not a depthwise conv"),
    (lambda s: _with(s, expand=None, project=None), "nothing to fuse"),
    (lambda s: _with(s, tasks=0), "tasks must be"),
])
def test_supports_refuses(change, reason):
    spec = change(block(4, 10, 10, 6, cout=4))
    assert reason in mbconv.supports(spec)
    with pytest.raises(ValueError, match=reason):
        mbconv.primfunc(spec)


def test_preferred_where_the_tensors_between_are_large():
    assert mbconv.preferred(block(24, 112, 112, 72, stride=(2, 2)))  # OFA's first stage: 3.6 MB
    assert mbconv.preferred(block(16, 112, 112, 96, stride=(2, 2)))  # MobileNetV2's: 4.8 MB
    assert not mbconv.preferred(block(24, 56, 56, 144))  # 1.8 MB: the two kernels are faster
    assert not mbconv.preferred(block(136, 14, 14, 816))
