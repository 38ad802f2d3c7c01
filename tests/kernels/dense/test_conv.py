"""hwlat.kernels.dense.conv against the numpy reference: every epilogue, both micro-kernels
(cout rows / pixel rows), direct / scratch / dense-scratch input paths, tails, blocking, batch 2."""

from __future__ import annotations

import os

os.environ.setdefault("TVM_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import pytest

from hwlat.kernels.cpu import AVX2, AVX512  # noqa: E402
from hwlat.kernels.dense import conv  # noqa: E402
from hwlat.kernels.dense.spec import Conv2dSpec, Epilogue  # noqa: E402
from hwlat.lowering.targets import make_target  # noqa: E402
from tests.helpers.conv_check import EPILOGUES, check_conv, epilogue_id  # noqa: E402

pytestmark = pytest.mark.tvm

TARGET = make_target(threads=2)
P = conv.Plan


def run(spec: Conv2dSpec, plan: conv.Plan | None = None, seed: int = 0, cpu=None) -> None:
    assert conv.supports(spec) is None

    def pack(w):
        wp = conv.pack_weight(spec, w, plan, cpu)
        assert wp.shape == conv.packed_weight_shape(spec, plan, cpu)
        return wp

    check_conv(spec, pack, lambda: conv.primfunc(spec, plan, cpu), TARGET, seed)


@pytest.mark.parametrize("ep", EPILOGUES, ids=epilogue_id)
def test_epilogues(ep):
    # 3x3 pad 1 through the scratch (cout rows) and a 1x1 read in place, odd sizes, batch 2
    run(Conv2dSpec(2, 5, 9, 11, 7, (3, 3), (1, 1), (1, 1, 1, 1), epilogue=ep))


@pytest.mark.parametrize("ep", EPILOGUES[::5], ids=lambda e: f"b{int(e.bias)}r{int(e.residual)}{e.activation}")
def test_epilogues_other_paths(ep):
    run(Conv2dSpec(2, 6, 5, 7, 13, (1, 1), epilogue=ep))  # direct, pixel tail
    run(Conv2dSpec(2, 20, 5, 5, 40, (1, 1), epilogue=ep), P("pixels", 4, 2, kc=8))  # pixel rows
    run(Conv2dSpec(1, 31, 1, 1, 70, (1, 1), epilogue=ep))  # a GEMV: odd cin, ragged last panel


EP = Epilogue(bias=True, residual=True, activation="relu")


def test_one_pixel_convs_of_one_image_run_as_the_gemv():
    gemv = Conv2dSpec(1, 1152, 1, 1, 1536, (1, 1), epilogue=EP)
    assert conv.is_gemv(gemv) and conv.default_plan(gemv) == P("pixels", 1, 2)
    # a batch, a padded 3x3 on a 1x1 map (not read in place) or wider channel blocks: not a GEMV
    assert not conv.is_gemv(Conv2dSpec(2, 30, 1, 1, 70, (1, 1)))
    assert not conv.is_gemv(Conv2dSpec(1, 30, 1, 1, 70, (3, 3), padding=(1, 1, 1, 1)))
    assert not conv.is_gemv(gemv, P("pixels", 1, 8))
    for cin in (1, 2, 3, 64):  # fewer input channels than streams, and k tails
        run(Conv2dSpec(1, cin, 1, 1, 40, (1, 1), epilogue=EP))
    run(gemv, P("pixels", 1, 8))  # the 64-channel pixel rows still serve one pixel


GEOMETRIES = [
    # (spec, plan or None for the default)
    (Conv2dSpec(2, 7, 10, 10, 17, (1, 1), epilogue=EP), None),  # direct, 100 px: 6 tiles + tail
    (Conv2dSpec(1, 5, 4, 4, 9, (1, 1), epilogue=EP), None),  # direct, no full pixel tile
    (Conv2dSpec(1, 7, 9, 9, 11, (1, 1), epilogue=EP), P("cout", 6, 2, chunk=2, co_outer=True)),
    (Conv2dSpec(2, 6, 12, 11, 10, (1, 1), (2, 2), epilogue=EP), None),  # 1x1 s2: dense scratch
    (Conv2dSpec(1, 3, 20, 20, 12, (4, 4), (4, 4), epilogue=EP), None),  # patch embed
    (Conv2dSpec(1, 3, 23, 21, 16, (7, 7), (2, 2), (3, 3, 3, 3), epilogue=EP), None),  # stem
    (Conv2dSpec(2, 9, 13, 12, 20, (3, 3), (2, 2), (1, 0, 2, 1), epilogue=EP), None),  # asym pads
    (Conv2dSpec(1, 4, 13, 12, 9, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), epilogue=EP), None),
    (Conv2dSpec(1, 4, 13, 12, 9, (3, 2), (3, 2), (0, 2, 1, 0), (1, 3), epilogue=EP), None),
    (Conv2dSpec(1, 4, 11, 11, 9, (5, 5), (1, 1), (2, 2, 2, 2), epilogue=EP), None),
    (Conv2dSpec(1, 4, 8, 8, 9, (2, 2), (1, 1), (0, 0, 1, 1), epilogue=EP), None),  # even kernel
    # cout rows through the scratch with reduction and channel blocks, tasks of 3 rows
    (Conv2dSpec(2, 21, 9, 10, 26, (3, 3), (1, 1), (1, 1, 1, 1), epilogue=EP),
     P("cout", 6, 2, chunk=3, kc=8, mb=2)),
    (Conv2dSpec(1, 21, 9, 10, 26, (3, 3), (2, 2), (1, 1, 1, 1), epilogue=EP),
     P("cout", 4, 2, chunk=2, kc=8)),
    # pixel rows: small maps, the default (with reduction blocks), tails in q and cout
    (Conv2dSpec(2, 150, 7, 7, 40, (1, 1), epilogue=EP), None),
    (Conv2dSpec(1, 40, 7, 7, 40, (3, 3), (1, 1), (1, 1, 1, 1), epilogue=EP), None),
    (Conv2dSpec(1, 40, 14, 14, 48, (3, 3), (2, 2), (1, 1, 1, 1), epilogue=EP), P("pixels", 5, 2, kc=16, mb=2)),
    (Conv2dSpec(2, 30, 1, 1, 70, (1, 1), epilogue=EP), None),  # squeeze-excite: one pixel
    (Conv2dSpec(1, 30, 6, 5, 35, (3, 3), (2, 2), (1, 1, 1, 1), epilogue=EP), P("pixels", 3, 4)),
]


@pytest.mark.parametrize("spec,plan", GEOMETRIES, ids=[
    f"{s.cin}x{s.height}x{s.width}-{s.cout}-k{s.kernel}-s{s.stride}-p{s.padding}-d{s.dilation}"
    f"-{p.rows if p else 'default'}" for s, p in GEOMETRIES])
def test_geometries(spec, plan):
    run(spec, plan)


# stems: each task copies the input rows it reads into its own scratch (conv.task_scratch)
TASK_SCRATCH = [
    (Conv2dSpec(1, 3, 224, 224, 24, (3, 3), (2, 2), (1, 1, 1, 1), epilogue=EP), None),
    (Conv2dSpec(2, 3, 150, 161, 10, (3, 3), (2, 2), (1, 0, 2, 1), epilogue=EP), None),
    (Conv2dSpec(1, 3, 160, 160, 8, (3, 3), (2, 2), (1, 1, 1, 1), epilogue=EP),
     P("cout", 4, 2, chunk=5)),
]


@pytest.mark.parametrize("spec,plan", TASK_SCRATCH, ids=["stem-224", "batch2-asym", "chunk5"])
def test_stems_copy_their_rows_per_task_and_match_numpy(spec, plan):
    assert conv.task_scratch(spec, plan)
    run(spec, plan)


def test_task_scratch_only_where_the_whole_image_one_outgrows_l2():
    assert not conv.task_scratch(Conv2dSpec(1, 3, 23, 21, 16, (7, 7), (2, 2), (3, 3, 3, 3)))
    assert not conv.task_scratch(Conv2dSpec(1, 64, 56, 56, 128, (3, 3), (2, 2), (1, 1, 1, 1)))
    assert not conv.task_scratch(Conv2dSpec(1, 64, 56, 56, 64, (1, 1)))  # read in place


def test_default_plans_of_model_shapes():
    # the shape classes of the models: the plans are valid and the scratch stays modest
    for cin, hw, cout, k, s, p in [(3, 224, 64, 7, 2, 3), (64, 56, 64, 3, 1, 1), (64, 56, 128, 1, 2, 0),
                                   (512, 7, 512, 3, 1, 1), (960, 7, 160, 1, 1, 0),
                                   (1152, 1, 1536, 1, 1, 0), (3, 224, 192, 16, 16, 0)]:
        spec = Conv2dSpec(1, cin, hw, hw, cout, (k, k), (s, s), (p,) * 4)
        plan = conv.default_plan(spec)
        assert plan.mr * plan.nv <= conv.ACC_REGISTERS
        assert conv.packed_weight_shape(spec)[0] * plan.block >= cout


def test_supports_refuses():
    assert "groups" in conv.supports(Conv2dSpec(1, 8, 8, 8, 8, (3, 3), groups=8))
    assert "groups" in conv.supports(Conv2dSpec(1, 8, 8, 8, 4, (3, 3), groups=2))
    assert "empty" in conv.supports(Conv2dSpec(1, 8, 2, 2, 4, (3, 3)))
    assert conv.supports(Conv2dSpec(1, 8, 2, 2, 4, (3, 3), padding=(1, 1, 1, 1))) is None
    with pytest.raises(ValueError, match="groups"):
        conv.primfunc(Conv2dSpec(1, 8, 8, 8, 8, (3, 3), groups=8))
    with pytest.raises(ValueError, match="weight shape"):
        conv.pack_weight(Conv2dSpec(1, 8, 8, 8, 4, (3, 3)), np.zeros((4, 8, 1, 1), np.float32))


def test_ragged_tail_one_row_stride2():
    # cout 7 = one 6-row block + a 1-row tail tile, stride 2 phases through the row-copy fill,
    # reduction blocks, batch 2
    run(Conv2dSpec(2, 10, 11, 9, 7, (3, 3), (2, 2), (1, 1, 1, 1), epilogue=EP), P("cout", 6, 2, chunk=2, kc=4))


# AVX-512 plans: vectors of 16 floats, tiles of up to 12 channels x 32 pixels; channel counts
# and pixel runs that are no multiple of 16 (tails). They compile for any x86 target.
AVX512_GEOMETRIES = [
    Conv2dSpec(2, 7, 10, 10, 17, (1, 1), epilogue=EP),  # direct: 100 px = 3 tiles of 32 + 4
    Conv2dSpec(1, 5, 5, 5, 25, (1, 1), epilogue=EP),  # direct, no full tile, tail < 16
    Conv2dSpec(1, 9, 24, 24, 30, (1, 1), epilogue=EP),  # direct: 576 px, 30 = 12 + 12 + 6
    Conv2dSpec(1, 6, 60, 60, 13, (1, 1), epilogue=EP),  # co_outer (>= 56x56), 3600 = 112 x 32 + 16
    Conv2dSpec(2, 6, 12, 11, 10, (1, 1), (2, 2), epilogue=EP),  # 1x1 s2: dense scratch
    Conv2dSpec(1, 3, 23, 21, 16, (7, 7), (2, 2), (3, 3, 3, 3), epilogue=EP),  # stem
    Conv2dSpec(2, 9, 13, 12, 20, (3, 3), (2, 2), (1, 0, 2, 1), epilogue=EP),  # asym pads
    Conv2dSpec(1, 21, 9, 19, 26, (3, 3), (1, 1), (1, 1, 1, 1), epilogue=EP),  # 3x3 s1 (not Winograd)
    Conv2dSpec(1, 100, 9, 13, 26, (3, 3), (1, 1), (1, 1, 1, 1), epilogue=EP),  # 3 blocks of 34
    Conv2dSpec(1, 4, 13, 12, 9, (3, 2), (3, 2), (0, 2, 1, 0), (1, 3), epilogue=EP),
    Conv2dSpec(2, 150, 7, 7, 40, (1, 1), epilogue=EP),  # pixel rows: 40 = 32 + 8 channels
    Conv2dSpec(1, 40, 7, 7, 45, (3, 3), (1, 1), (1, 1, 1, 1), epilogue=EP),
    Conv2dSpec(1, 40, 14, 14, 33, (3, 3), (2, 2), (1, 1, 1, 1), epilogue=EP),
    Conv2dSpec(1, 31, 1, 1, 70, (1, 1), epilogue=EP),  # a GEMV
    Conv2dSpec(1, 3, 224, 224, 24, (3, 3), (2, 2), (1, 1, 1, 1), epilogue=EP),  # task scratch
    Conv2dSpec(2, 3, 29, 27, 20, (7, 7), (2, 2), (3, 2, 3, 4), epilogue=EP),  # 8 x 48 stem tile
    # long pixel rows (cin >= 128 through the scratch): 7 pixels (7x6 map: 42 q positions)
    # x 32 channels, 70 = 32 + 32 + 6; 8 x 32 at stride 2 (7 x 8 q positions)
    Conv2dSpec(2, 130, 7, 6, 70, (3, 3), (1, 1), (1, 1, 1, 1), epilogue=EP),
    Conv2dSpec(1, 128, 13, 13, 96, (3, 3), (2, 2), (1, 1, 1, 1), epilogue=EP),
]


@pytest.mark.parametrize("spec", AVX512_GEOMETRIES, ids=[
    f"{s.batch}x{s.cin}x{s.height}x{s.width}-{s.cout}-k{s.kernel}-s{s.stride}-p{s.padding}"
    for s in AVX512_GEOMETRIES])
def test_avx512_plans(spec):
    plan = conv.default_plan(spec, AVX512)
    assert plan.lanes == 16 or conv.is_gemv(spec, plan)
    run(spec, cpu=AVX512)


def test_avx512_stride1_reduction_blocks_are_equal_and_at_most_twice_the_l1_size():
    # AVX512 (32 KB L1d): 24 channels of a 3x3 stride-1 conv's rows in half of L1, blocks of up
    # to 48 of equal size; none up to 48 channels; stride 2 keeps the L1-sized blocks
    def kc(cin, stride=1):
        spec = Conv2dSpec(1, cin, 28, 28, 64, (3, 3), (stride, stride), (1, 1, 1, 1))
        return conv.default_plan(spec, AVX512).kc

    assert [kc(c) for c in (40, 48, 49, 100, 128, 256)] == [0, 0, 25, 34, 43, 43]
    assert kc(128, 2) == 8


def test_avx512_plans_of_model_shapes():
    for cin, hw, cout, k, s, p in [(3, 224, 64, 7, 2, 3), (64, 56, 64, 3, 1, 1), (64, 56, 128, 1, 2, 0),
                                   (512, 7, 512, 3, 1, 1), (960, 7, 160, 1, 1, 0),
                                   (1152, 1, 1536, 1, 1, 0), (3, 224, 192, 16, 16, 0)]:
        spec = Conv2dSpec(1, cin, hw, hw, cout, (k, k), (s, s), (p,) * 4)
        avx2, wide = conv.default_plan(spec), conv.default_plan(spec, AVX512)
        assert conv.default_plan(spec, AVX2) == avx2 and avx2.lanes == 8
        assert wide.mr * wide.nv <= conv.ACC_REGISTERS_512
        assert conv.packed_weight_shape(spec, cpu=AVX512)[0] * wide.block >= cout
        if not conv.is_gemv(spec):
            assert wide.lanes == 16 and wide.nr // avx2.nr in (2, 3, 4)
    with pytest.raises(ValueError, match="bad tile"):
        P("cout", 12, 2)  # 24 accumulators: AVX-512 only
    with pytest.raises(ValueError, match="lanes"):
        P("cout", 6, 2, lanes=4)



def test_avx512_large_stems_and_long_pixel_rows():
    def plan(cin, hw, cout, k, s, p, cpu=AVX512):
        return conv.default_plan(Conv2dSpec(1, cin, hw, hw, cout, (k, k), (s, s), (p,) * 4), cpu)

    # 7x7 stems: 8 (6 where fewer channels are wasted) x 3 vectors; 3x3 stems keep 2 vectors
    assert [(plan(3, 224, c, 7, 2, 3).mr, plan(3, 224, c, 7, 2, 3).nv) for c in (64, 20, 18)] \
        == [(8, 3), (8, 3), (6, 3)]
    assert plan(3, 224, 32, 3, 2, 1).nv == 2
    assert plan(16, 56, 64, 7, 1, 3).nv == 2  # not a stem: more input channels
    assert plan(3, 224, 64, 7, 2, 3, AVX2).nv == 2  # AVX2 plans unchanged
    # 3x3 convs on small maps with long reductions: pixel rows of 8 or 7 pixels (the fewer
    # padded q positions: 7 x 8 on 7x7, 6 x 7 on 6x6) x 32 channels (AVX2: 16 channels)
    p = plan(512, 7, 512, 3, 1, 1)
    assert (p.rows, p.mr, p.nr) == ("pixels", 8, 32)
    assert (plan(256, 6, 256, 3, 1, 1).mr, plan(256, 14, 512, 3, 2, 1).mr) == (7, 8)
    assert plan(512, 7, 512, 3, 1, 1, AVX2).nr == 16
    assert (plan(48, 7, 128, 3, 1, 1).mr, plan(48, 7, 128, 3, 1, 1).nr) == (4, 32)  # short
    assert plan(512, 7, 512, 1, 1, 0).nr == 32  # read in place
    # three vectors a row, ragged channel block (20 = 8 + 8 + 4), batch 2, asymmetric pads
    spec = Conv2dSpec(2, 3, 29, 27, 20, (7, 7), (2, 2), (3, 2, 3, 4), epilogue=EP)
    run(spec, P("cout", 8, 3, chunk=4, lanes=16), cpu=AVX512)
