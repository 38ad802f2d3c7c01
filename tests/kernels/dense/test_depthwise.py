"""The depthwise conv2d kernel against the numpy reference: every epilogue, kernel sizes 1..7,
strides 1..3, symmetric and asymmetric padding, sizes that leave row and column tails, batch 2,
explicit tiles, the AVX-512 tiles (16 lanes, taps held in registers) on kernels 3/5/7, strides
1/2 and odd channel counts and widths, code built for an AVX2 target, and what `supports`
refuses."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import tvm

from hwlat.kernels.cpu import AVX2, AVX512
from hwlat.kernels.dense import depthwise
from hwlat.kernels.dense.reference import conv2d_reference
from hwlat.kernels.dense.spec import Conv2dSpec, Epilogue
from hwlat.lowering.targets import make_target

pytestmark = pytest.mark.tvm

TARGET = make_target(threads=1)
HASWELL = tvm.target.Target({"kind": "llvm", "mcpu": "haswell", "num-cores": 1})  # AVX2


def dw_spec(c: int, h: int, w: int, k=(3, 3), stride=(1, 1), pad=(1, 1, 1, 1), batch: int = 1,
            ep: Epilogue | None = None) -> Conv2dSpec:
    return Conv2dSpec(batch, c, h, w, c, k, stride, pad, groups=c, epilogue=ep or Epilogue())


def _build(funcs: dict[str, object], target=TARGET):
    mod = tvm.IRModule({name: f.with_attr("global_symbol", name) for name, f in funcs.items()})
    return tvm.compile(mod, target=target)


@functools.cache
def _library():
    """The kernels of every spec in CASES, compiled as one module (one compile is faster)."""
    ex = _build({f"dw{i}": depthwise.primfunc(spec, tile) for i, (spec, tile) in enumerate(CASES)})
    return {case: ex[f"dw{i}"] for i, case in enumerate(CASES)}


@functools.cache
def _compiled(spec: Conv2dSpec, tile: depthwise.Tile | None):
    if (spec, tile) in CASES:
        return _library()[(spec, tile)]
    return _build({"dw": depthwise.primfunc(spec, tile)})["dw"]


def check(spec: Conv2dSpec, tile: depthwise.Tile | None = None, seed: int = 0,
          kernel=None) -> None:
    assert depthwise.supports(spec) is None
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(spec.x_shape).astype(np.float32)
    w = rng.standard_normal(spec.w_shape).astype(np.float32)
    bias = rng.standard_normal(spec.cout).astype(np.float32)
    res = rng.standard_normal(spec.y_shape).astype(np.float32)
    packed = depthwise.pack_weight(spec, w)
    assert packed.shape == depthwise.packed_weight_shape(spec) and packed.flags.c_contiguous
    args = [x, packed] + ([bias] if spec.epilogue.bias else []) + \
        ([res] if spec.epilogue.residual else [])
    out = tvm.runtime.tensor(np.full(spec.y_shape, np.nan, np.float32))
    (kernel or _compiled(spec, tile))(*(tvm.runtime.tensor(a) for a in args), out)
    want = conv2d_reference(spec, x, w, bias, res)
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-4, atol=1e-4 * scale)


EPILOGUES = [Epilogue(bias, residual, act, -0.5, 1.5) for bias in (False, True)
             for residual in (False, True) for act in ("none", "relu", "clip")] + \
    [Epilogue(True, residual, act) for residual in (False, True) for act in ("hardswish", "gelu")]
GEOMETRIES = {
    # name: (channels, height, width, kernel, stride, padding (top, left, bottom, right))
    "3x3-s1-tails": (5, 13, 11, (3, 3), (1, 1), (1, 1, 1, 1)),
    "3x3-s2-odd": (4, 15, 21, (3, 3), (2, 2), (1, 1, 1, 1)),
    "3x3-s2-even": (3, 16, 34, (3, 3), (2, 2), (1, 1, 1, 1)),
    "5x5-s1": (3, 14, 14, (5, 5), (1, 1), (2, 2, 2, 2)),
    "5x5-s2": (3, 17, 23, (5, 5), (2, 2), (2, 2, 2, 2)),
    "7x7-s1": (2, 12, 40, (7, 7), (1, 1), (3, 3, 3, 3)),
    "7x7-s2": (2, 15, 15, (7, 7), (2, 2), (3, 3, 3, 3)),
    "3x3-no-pad": (3, 10, 26, (3, 3), (1, 1), (0, 0, 0, 0)),
    "asymmetric-pad": (3, 11, 12, (3, 3), (1, 1), (0, 2, 1, 0)),
    "tf-same-s2": (3, 12, 12, (3, 3), (2, 2), (0, 0, 1, 1)),
    "mixed-stride": (3, 13, 18, (3, 5), (2, 1), (1, 2, 1, 2)),
    "stride-3": (2, 20, 25, (3, 3), (3, 3), (1, 1, 1, 1)),
    "1x1": (6, 5, 9, (1, 1), (1, 1), (0, 0, 0, 0)),
    "1x3-wide-pad": (2, 4, 9, (1, 3), (1, 1), (2, 1, 0, 3)),
    "kernel-over-input": (3, 3, 3, (5, 5), (1, 1), (2, 2, 2, 2)),
    "single-pixel": (4, 1, 1, (3, 3), (1, 1), (1, 1, 1, 1)),
    "7x7-output": (40, 7, 7, (3, 3), (1, 1), (1, 1, 1, 1)),
}


def epilogue_spec(ep: Epilogue) -> Conv2dSpec:
    return dw_spec(3, 9, 19, ep=ep)  # 19 columns: two whole tiles of 8 and a tail of 3


def geometry_spec(name: str) -> Conv2dSpec:
    c, h, w, k, s, p = GEOMETRIES[name]
    return dw_spec(c, h, w, k, s, p, ep=Epilogue(bias=True, activation="clip"))


BATCH2 = [
    dw_spec(6, 10, 13, batch=2, ep=Epilogue(bias=True, residual=True, activation="relu")),
    dw_spec(3, 9, 9, (5, 5), (2, 2), (2, 2, 2, 2), batch=2),
    # 2 x 77 planes of 4 x 4 outputs: several planes per task, the last task short
    dw_spec(77, 8, 8, (3, 3), (2, 2), batch=2),
]
TILES = [depthwise.Tile(1, 8), depthwise.Tile(3, 24),
         # AVX-512 tiles and the taps-held order with 8 lanes; 16-lane vectors, a partial last
         # column tile stored as 8 lanes then single ones (29 columns: 16 + 8 + 5)
         depthwise.Tile(2, 8, 8, True), depthwise.Tile(3, 32, 16, True),
         depthwise.Tile(5, 16, 16, False)]
TILED = [dw_spec(3, 17, 30, ep=Epilogue(bias=True, residual=True)),
         dw_spec(2, 18, 29, (5, 5), (2, 2), (2, 2, 2, 2))]
# the AVX-512 default tiles: kernels 3/5/7, strides 1/2, channels no multiple of 16, widths
# that leave 1..15 columns of a last 16-lane tile, and outputs of at most 8 columns (8 lanes)
AVX512_SPECS = [
    dw_spec(5, 13, 37, (3, 3), (1, 1), (1, 1, 1, 1), ep=Epilogue(True, True, "relu")),
    dw_spec(3, 15, 45, (3, 3), (2, 2), (1, 1, 1, 1), ep=Epilogue(True, False, "clip", 0, 6)),
    dw_spec(6, 14, 30, (5, 5), (1, 1), (2, 2, 2, 2), ep=Epilogue(True, False, "hardswish")),
    dw_spec(3, 17, 35, (5, 5), (2, 2), (2, 2, 2, 2), ep=Epilogue(bias=True)),
    dw_spec(17, 12, 14, (7, 7), (1, 1), (3, 3, 3, 3), ep=Epilogue(True, True, "gelu")),
    dw_spec(2, 29, 57, (7, 7), (1, 1), (3, 3, 3, 3), ep=Epilogue(bias=True)),
    dw_spec(3, 15, 15, (7, 7), (2, 2), (3, 3, 3, 3), ep=Epilogue(True, False, "relu")),
    dw_spec(19, 7, 7, (7, 7), (1, 1), (3, 3, 3, 3), ep=Epilogue(True, True, "none")),
    dw_spec(3, 12, 12, (3, 3), (2, 2), (0, 0, 1, 1)),
]
CASES = ([(epilogue_spec(ep), None) for ep in EPILOGUES]
         + [(geometry_spec(name), None) for name in GEOMETRIES]
         + [(spec, None) for spec in BATCH2]
         + [(spec, tile) for tile in TILES for spec in TILED]
         + [(spec, depthwise.default_tile(spec, AVX512)) for spec in AVX512_SPECS])


@pytest.mark.parametrize("ep", EPILOGUES,
                         ids=lambda e: f"b{int(e.bias)}-r{int(e.residual)}-{e.activation}")
def test_epilogues(ep):
    check(epilogue_spec(ep))


@pytest.mark.parametrize("name", GEOMETRIES)
def test_geometry(name):
    check(geometry_spec(name))


def test_batch2():
    for spec in BATCH2:
        check(spec)


@pytest.mark.parametrize("tile", TILES, ids=str)
def test_tiles(tile):
    for spec in TILED:
        check(spec, tile)


@pytest.mark.parametrize("spec", AVX512_SPECS, ids=lambda s: f"k{s.kernel[0]}s{s.stride[0]}"
                         f"-c{s.cin}-{s.height}x{s.width}")
def test_avx512_tiles(spec):
    # built for this machine's target: 16-lane vectors are split where it has no AVX-512
    check(spec, depthwise.default_tile(spec, AVX512))


def test_default_tiles_follow_the_cpu():
    for spec in AVX512_SPECS + [geometry_spec(name) for name in GEOMETRIES]:
        avx2, wide = depthwise.default_tile(spec), depthwise.default_tile(spec, AVX512)
        assert depthwise.default_tile(spec, AVX2) == avx2
        assert avx2.lanes == 8 and not avx2.held_taps and avx2.rows * avx2.cols <= 64
        assert wide.held_taps and wide.cols % wide.lanes == 0
        assert wide.lanes == (8 if spec.out_width <= 8 else 16), (spec, wide)
        # accumulators, the held taps and the input vector fit in the 32 registers
        assert wide.rows * wide.cols // wide.lanes + spec.kernel[0] + 1 <= 32
        assert wide.rows <= spec.out_height and wide.cols < spec.out_width + wide.lanes


def test_avx2_target():
    """Code built for an AVX2 CPU (haswell): the AVX2 default tiles and the taps-held order with
    8 lanes, one module."""
    specs = [(geometry_spec("7x7-s1"), None), (geometry_spec("3x3-s2-odd"), None),
             (AVX512_SPECS[4], depthwise.Tile(2, 16, 8, True)),
             (AVX512_SPECS[3], depthwise.Tile(3, 8, 8, True))]
    ex = _build({f"dw{i}": depthwise.primfunc(s, t) for i, (s, t) in enumerate(specs)}, HASWELL)
    for i, (spec, tile) in enumerate(specs):
        check(spec, tile, kernel=ex[f"dw{i}"])


def test_supports_refuses():
    ok = dw_spec(8, 10, 10)
    assert depthwise.supports(ok) is None
    refused = {
        "dense": Conv2dSpec(1, 8, 10, 10, 8, (3, 3), padding=(1, 1, 1, 1)),
        "grouped": Conv2dSpec(1, 8, 10, 10, 8, (3, 3), padding=(1, 1, 1, 1), groups=4),
        "multiplier": Conv2dSpec(1, 8, 10, 10, 16, (3, 3), padding=(1, 1, 1, 1), groups=8),
        "dilation": Conv2dSpec(1, 8, 10, 10, 8, (3, 3), padding=(2, 2, 2, 2), dilation=(2, 2),
                               groups=8),
        "negative-pad": Conv2dSpec(1, 8, 10, 10, 8, (3, 3), padding=(-1, 0, 0, 0), groups=8),
        "empty-output": Conv2dSpec(1, 8, 2, 2, 8, (3, 3), groups=8),
    }
    for name, spec in refused.items():
        reason = depthwise.supports(spec)
        assert isinstance(reason, str) and reason, name
        with pytest.raises(ValueError):
            depthwise.primfunc(spec)
    for tile in (depthwise.Tile(2, 24, 16), depthwise.Tile(2, 12, 12), depthwise.Tile(0, 8)):
        with pytest.raises(ValueError, match="bad depthwise tile"):
            depthwise.primfunc(ok, tile)


def test_pack_weight():
    spec = dw_spec(4, 6, 6, (3, 5), pad=(1, 2, 1, 2))
    w = np.arange(4 * 15, dtype=np.float32).reshape(spec.w_shape)
    packed = depthwise.pack_weight(spec, w)
    assert packed.shape == (4, 15) and packed.dtype == np.float32
    np.testing.assert_array_equal(packed[2], w[2, 0].ravel())
    with pytest.raises(ValueError):
        depthwise.pack_weight(spec, w[:, :, :, :3])
