"""The fused-attention rewrite: it fires on `relax.nn.attention` and on the decomposed
matmul -> scale -> softmax -> matmul that exported models hold (vit_tiny), leaves alone what it
cannot take, runs first in every pipeline unless turned off, and the built result matches."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import tvm
from tvm import relax

from hwlat.kernels.attention import KERNEL_NAME, AttentionSpec, attention_reference, fuse_attention
from hwlat.lowering.pipelines import PipelineOptions, make_pipeline
from hwlat.lowering.targets import make_target
from hwlat.lowering.tuning import open_tuning_db

pytestmark = [pytest.mark.tvm, pytest.mark.export]

TARGET = make_target(threads=1)


def _calls(mod: tvm.IRModule) -> list[str]:
    """Op names called in the Relax functions; call_tir as `call_tir:<callee>`."""
    names = []

    def visit(e):
        if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op):
            if e.op.name == "relax.call_tir":
                names.append(f"call_tir:{e.args[0].name_hint}")
            else:
                names.append(e.op.name)

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return names


def kernel_calls(mod: tvm.IRModule) -> int:
    return sum(n.startswith(f"call_tir:{KERNEL_NAME}") for n in _calls(mod))


def _function(params: dict[str, tuple], body) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    args = [relax.Var(n, relax.TensorType(s, "float32")) for n, s in params.items()]
    with bb.function("main", args):
        with bb.dataflow():
            out = bb.emit_output(body(bb, *args))
        bb.emit_func_output(out)
    return bb.get()


def attention_module(sq, sk, causal=None, scale=None, n=2, d=32) -> tvm.IRModule:
    shapes = {"q": (1, sq, n, d), "k": (1, sk, n, d), "v": (1, sk, n, d)}
    return _function(shapes, lambda bb, q, k, v: relax.op.nn.attention(
        q, k, v, scale=scale, causal_mask=causal))


def decomposed_module(form: str, rank: int = 4, sq: int = 21, sk: int = 37, d: int = 64):
    """matmul(q, kT) -> scale -> softmax -> matmul(., v) as ONNX imports write it."""
    lead = (1, 3) if rank == 4 else (3,)
    kt_given = form == "kT-input"
    shapes = {"q": (*lead, sq, d), "k": (*lead, d, sk) if kt_given else (*lead, sk, d),
              "v": (*lead, sk, d)}
    c = relax.const(0.125, "float32")
    swap = [*range(rank - 2), rank - 1, rank - 2]

    def body(bb, q, k, v):
        kt = k if kt_given else bb.emit(relax.op.permute_dims(k, swap))
        s = bb.emit(relax.op.matmul(q, kt))
        s = {"multiply": lambda: relax.op.multiply(s, c),
             "const-left": lambda: relax.op.multiply(c, s),
             "divide": lambda: relax.op.divide(s, relax.const(8.0, "float32")),
             "no-scale": lambda: s, "kT-input": lambda: relax.op.multiply(s, c)}[form]()
        p = bb.emit(relax.op.nn.softmax(bb.emit(s) if form != "no-scale" else s, axis=-1))
        return relax.op.matmul(p, v)

    return _function(shapes, body), shapes


def build_and_run(mod, shapes, fused=True, pipeline="default", seed=0):
    passes = make_pipeline(pipeline, PipelineOptions(TARGET, fused_attention=fused))
    ex = tvm.compile(mod, target=TARGET, relax_pipeline=passes)
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal(s).astype(np.float32) for s in shapes.values()]
    out = relax.VirtualMachine(ex, tvm.cpu())["main"](*(tvm.runtime.tensor(x) for x in xs))
    return xs, out.numpy()


@pytest.mark.parametrize(("sq", "sk", "causal"), [
    (197, 197, None), (13, 40, "TopLeft"), (40, 13, "BottomRight"), (13, 40, "BottomRight")])
def test_relax_attention_is_rewritten_and_matches(sq, sk, causal):
    mod = attention_module(sq, sk, causal)
    fused = fuse_attention(mod)
    assert kernel_calls(fused) == 1 and "relax.nn.attention" not in _calls(fused)
    # TVM's own convention: BottomRight is offset |Sq - Sk|
    offset = {None: None, "TopLeft": 0, "BottomRight": abs(sq - sk)}[causal]
    spec = AttentionSpec(1, 2, sq, sk, 32, 32, 1 / math.sqrt(32), offset, "BSNH")
    shapes = {"q": (1, sq, 2, 32), "k": (1, sk, 2, 32), "v": (1, sk, 2, 32)}
    (q, k, v), got = build_and_run(mod, shapes)
    np.testing.assert_allclose(got, attention_reference(q, k, v, spec), rtol=1e-4, atol=2e-5)


def test_rewrite_agrees_with_tvms_own_legalization():
    mod = attention_module(29, 13, "BottomRight", scale=0.3)
    shapes = {"q": (1, 29, 2, 32), "k": (1, 13, 2, 32), "v": (1, 13, 2, 32)}
    _, ours = build_and_run(mod, shapes, fused=True)
    _, tvms = build_and_run(mod, shapes, fused=False)
    np.testing.assert_allclose(ours, tvms, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize(("form", "rank"), [
    ("multiply", 4), ("const-left", 4), ("divide", 4), ("no-scale", 3), ("kT-input", 3)])
def test_decomposed_attention_is_rewritten_and_matches(form, rank):
    mod, shapes = decomposed_module(form, rank)
    fused = fuse_attention(mod)
    calls = _calls(fused)
    assert kernel_calls(fused) == 1
    assert "relax.nn.softmax" not in calls and "relax.matmul" not in calls
    # k^T written by permute_dims is read through; a k^T input is transposed back once
    assert calls.count("relax.permute_dims") == (1 if form == "kT-input" else 0)
    (q, k, v), got = build_and_run(mod, shapes)
    kt = k if form == "kT-input" else np.swapaxes(k, -1, -2)
    s = np.einsum("...id,...dj->...ij", q.astype(np.float64), kt.astype(np.float64))
    s = s if form == "no-scale" else s * 0.125
    p = np.exp(s - s.max(-1, keepdims=True))
    want = (p / p.sum(-1, keepdims=True)) @ v.astype(np.float64)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5)


def biased_module(bias_shape, const: bool, order: str, rank: int = 4, sq: int = 19,
                  sk: int = 19, d: int = 16, dv: int = 32):
    """torch's exported attention with an additive bias (LeViT's, Swin's relative position
    bias; a mask): matmul(q, kT) * c -> add(bias) -> softmax -> matmul(., v)."""
    lead = (2, 3) if rank == 4 else (6,)
    shapes = {"q": (*lead, sq, d), "k": (*lead, sk, d), "v": (*lead, sk, dv)}
    rng = np.random.default_rng(1)
    bias_value = (2 * rng.standard_normal(bias_shape)).astype(np.float32)
    if not const:
        shapes["bias"] = bias_shape
    swap = [*range(rank - 2), rank - 1, rank - 2]

    def body(bb, q, k, v, *rest):
        bias = rest[0] if rest else relax.const(bias_value)
        s = bb.emit(relax.op.matmul(q, bb.emit(relax.op.permute_dims(k, swap))))
        s = bb.emit(relax.op.multiply(s, relax.const(0.25, "float32")))
        s = bb.emit(relax.op.add(s, bias) if order == "right" else relax.op.add(bias, s))
        return relax.op.matmul(bb.emit(relax.op.nn.softmax(s, axis=-1)), v)

    return _function(shapes, body), shapes, bias_value


@pytest.mark.parametrize(("bias_shape", "const", "order", "rank"), [
    ((3, 19, 19), True, "right", 4),  # per-head position bias, broadcast over batch
    ((2, 1, 19, 19), False, "left", 4),  # a per-image mask, broadcast over heads
    ((19, 1), False, "right", 4),  # broadcast along the keys: expanded before the kernel
    ((6, 19, 19), True, "left", 3),
])
def test_attention_with_an_additive_bias_is_rewritten_and_matches(bias_shape, const, order, rank):
    mod, shapes, bias_value = biased_module(bias_shape, const, order, rank)
    fused = fuse_attention(mod)
    calls = _calls(fused)
    assert kernel_calls(fused) == 1
    assert "relax.nn.softmax" not in calls and "relax.matmul" not in calls
    (q, k, v, *rest), got = build_and_run(mod, shapes)
    bias = rest[0] if rest else bias_value
    s = np.einsum("...id,...jd->...ij", q.astype(np.float64), k.astype(np.float64)) * 0.25
    s = s + bias
    p = np.exp(s - s.max(-1, keepdims=True))
    want = (p / p.sum(-1, keepdims=True)) @ v.astype(np.float64)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5)


def test_swins_shifted_window_bias_and_mask_are_rewritten_and_match():
    # (scores + bias).view(B / nW, nW, N, S, S) + mask[:, None], viewed back: 2 images x 3
    # windows, a per-head bias and a per-window mask
    b, nw, n, s_len, d = 2, 3, 2, 13, 16
    shapes = {"q": (b * nw, n, s_len, d), "k": (b * nw, n, s_len, d), "v": (b * nw, n, s_len, d)}
    rng = np.random.default_rng(2)
    bias = rng.standard_normal((1, n, s_len, s_len)).astype(np.float32)
    mask = np.where(rng.random((nw, 1, s_len, s_len)) < 0.3, -100.0, 0.0).astype(np.float32)

    def body(bb, q, k, v):
        s = bb.emit(relax.op.matmul(q, bb.emit(relax.op.permute_dims(k, [0, 1, 3, 2]))))
        s = bb.emit(relax.op.add(s, relax.const(bias)))
        s = bb.emit(relax.op.reshape(s, (b, nw, n, s_len, s_len)))
        s = bb.emit(relax.op.add(s, relax.const(mask)))
        s = bb.emit(relax.op.reshape(s, (b * nw, n, s_len, s_len)))
        return relax.op.matmul(bb.emit(relax.op.nn.softmax(s, axis=-1)), v)

    mod = _function(shapes, body)
    fused = fuse_attention(mod)
    assert kernel_calls(fused) == 1 and "relax.nn.softmax" not in _calls(fused)
    (q, k, v), got = build_and_run(mod, shapes)
    sc = np.einsum("...id,...jd->...ij", q.astype(np.float64), k.astype(np.float64)) + bias
    sc = (sc.reshape(b, nw, n, s_len, s_len) + mask[None]).reshape(b * nw, n, s_len, s_len)
    p = np.exp(sc - sc.max(-1, keepdims=True))
    want = (p / p.sum(-1, keepdims=True)) @ v.astype(np.float64)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5)


def test_a_bias_that_widens_the_scores_is_left_alone():
    mod, _, _ = biased_module((4, 2, 3, 19, 19), True, "right")
    assert fuse_attention(mod).same_as(mod)


def test_what_the_kernel_cannot_take_is_left_alone():
    # softmax over the query axis, a per-element multiplier: not attention
    shapes = {"q": (1, 2, 8, 32), "k": (1, 2, 8, 32), "v": (1, 2, 8, 32)}

    def over_queries(bb, q, k, v):
        s = bb.emit(relax.op.matmul(q, bb.emit(relax.op.permute_dims(k, [0, 1, 3, 2]))))
        return relax.op.matmul(bb.emit(relax.op.nn.softmax(s, axis=-2)), v)

    def masked(bb, q, k, v):
        s = bb.emit(relax.op.matmul(q, bb.emit(relax.op.permute_dims(k, [0, 1, 3, 2]))))
        s = bb.emit(relax.op.multiply(s, relax.const(np.tril(np.ones((8, 8), np.float32)))))
        return relax.op.matmul(bb.emit(relax.op.nn.softmax(s)), v)

    for body in (over_queries, masked):
        mod = _function(shapes, body)
        assert fuse_attention(mod).same_as(mod) and "relax.nn.softmax" in _calls(mod)
    # float16 and a symbolic length stay with TVM's own lowering
    q16 = relax.Var("q", relax.TensorType((1, 8, 2, 32), "float16"))
    n = tvm.tirx.Var("n", "int64")
    qn = relax.Var("q", relax.TensorType((1, n, 2, 32), "float32"))
    for q in (q16, qn):
        bb = relax.BlockBuilder()
        with bb.function("main", [q]):
            with bb.dataflow():
                out = bb.emit_output(relax.op.nn.attention(q, q, q))
            bb.emit_func_output(out)
        mod = bb.get()
        assert fuse_attention(mod).same_as(mod) and "relax.nn.attention" in _calls(mod)


def test_kernels_are_shared_per_shape():
    shapes = {"q": (1, 9, 2, 32), "k": (1, 9, 2, 32), "v": (1, 9, 2, 32)}

    def three(bb, q, k, v):
        a = bb.emit(relax.op.nn.attention(q, k, v))
        b = bb.emit(relax.op.nn.attention(a, k, v))
        return relax.op.add(b, bb.emit(relax.op.nn.attention(q, k, v, causal_mask="TopLeft")))

    fused = fuse_attention(_function(shapes, three))
    assert kernel_calls(fused) == 3
    kernels = [g.name_hint for g in fused.get_global_vars() if g.name_hint.startswith(KERNEL_NAME)]
    assert len(kernels) == 2  # non-causal shared by two calls, causal its own


@pytest.mark.parametrize("pipeline", ["default", "zero", "static_shape_tuning"])
def test_every_pipeline_applies_it_unless_turned_off(pipeline, tmp_path):
    mod, _ = decomposed_module("multiply")
    db = open_tuning_db(tmp_path / "db", TARGET) if pipeline == "static_shape_tuning" else None
    for fused in (True, False):
        passes = make_pipeline(pipeline, PipelineOptions(TARGET, db, fused_attention=fused))
        with TARGET:
            lowered = passes(mod)
        names = [gv.name_hint for gv in lowered.get_global_vars()]
        assert any(n.startswith(KERNEL_NAME) for n in names) == fused
        assert any("softmax" in n for n in names) != fused


@pytest.fixture(scope="module")
def vit_onnx(tmp_path_factory):
    from hwlat import zoo
    from hwlat.onnx_export import export

    model, (image,) = zoo.build("vit_tiny", input_shape=(3, 32, 48))  # 6 patches + class token
    path = tmp_path_factory.mktemp("vit") / "vit_tiny.onnx"
    export(model, image, path, compare=False)
    return path


def test_vit_tiny_attention_is_rewritten(vit_onnx):
    from hwlat.lowering.custom import import_onnx

    mod = import_onnx(onnx.load(vit_onnx))
    before = _calls(mod)
    fused = fuse_attention(mod)
    after = _calls(fused)
    assert before.count("relax.nn.softmax") == 12 and kernel_calls(mod) == 0
    assert kernel_calls(fused) == 12 and "relax.nn.softmax" not in after
    assert before.count("relax.matmul") - after.count("relax.matmul") == 24
    kernels = [gv for gv in fused.get_global_vars() if gv.name_hint.startswith(KERNEL_NAME)]
    assert len(kernels) == 1  # the 12 blocks share one shape


def test_vit_tiny_compiles_with_the_kernel_and_matches_onnxruntime(vit_onnx, tmp_path):
    from hwlat.lowering.compile import compile_model

    report = compile_model(vit_onnx, "host", output=tmp_path / "vit.so")
    assert report.max_abs_diff is not None and report.max_abs_diff < 1e-4
    lib = tvm.runtime.load_module(str(report.output))
    assert any(m.implements_function(KERNEL_NAME) for m in [lib, *lib.imports])


def _l2_normalize(bb, x, eps: float, form: str):
    """torch's F.normalize(x, dim=-1) as its ONNX export imports: ReduceL2 -> Clip -> Expand ->
    Div; `form` "maximum" writes the clamp as a maximum and drops the broadcast_to."""
    norm = bb.emit(relax.op.sqrt(bb.emit(relax.op.sum(bb.emit(relax.op.multiply(x, x)),
                                                      axis=[-1], keepdims=True))))
    if form == "maximum":
        return bb.emit(relax.op.divide(x, bb.emit(relax.op.maximum(
            norm, relax.const(eps, "float32")))))
    clipped = bb.emit(relax.op.clip(norm, eps, float("inf")))
    return bb.emit(relax.op.divide(x, bb.emit(relax.op.broadcast_to(clipped, x.ty.shape))))


def cosine_module(b=2, nw=3, n=3, s_len=49, d=32, *, form="clip", rank=4, q_eps=1e-12,
                  k_eps=1e-12, scale_input=False, mask=True):
    """Swin-V2's attention as torch exports it: q and k L2-normalised (F.normalize), their
    scores times a per-head exp(logit scale), plus a relative position bias, plus the shifted
    windows' mask (viewed to (B, nW, N, S, S) and back), softmax, times v."""
    lead = (b * nw, n) if rank == 4 else (b * nw * n,)
    shapes = {"q": (*lead, s_len, d), "k": (*lead, s_len, d), "v": (*lead, s_len, d)}
    rng = np.random.default_rng(5)
    hs_shape = (1, n, 1, 1) if rank == 4 else (b * nw * n, 1, 1)
    head_scale = np.exp(rng.uniform(0.0, np.log(100.0), hs_shape)).astype(np.float32)
    bias = (16 * rng.random((n, s_len, s_len)) - 8).astype(np.float32)  # 16 * sigmoid(mlp)
    bias_full = np.broadcast_to(bias, (b * nw, n, s_len, s_len)).reshape(*lead, s_len, s_len)
    masks = np.where(rng.random((nw, 1, s_len, s_len)) < 0.3, -100.0, 0.0).astype(np.float32)
    if scale_input:
        shapes["head_scale"] = hs_shape
    swap = [*range(rank - 2), rank - 1, rank - 2]

    def body(bb, q, k, v, *rest):
        hs = rest[0] if rest else relax.const(head_scale)
        qn = _l2_normalize(bb, q, q_eps, form) if q_eps else q
        kn = _l2_normalize(bb, k, k_eps, form) if k_eps else k
        s = bb.emit(relax.op.matmul(qn, bb.emit(relax.op.permute_dims(kn, swap))))
        s = bb.emit(relax.op.multiply(s, hs))
        s = bb.emit(relax.op.add(s, relax.const(bias if rank == 4 else bias_full)))
        if mask:
            s = bb.emit(relax.op.reshape(s, (b, nw, n, s_len, s_len)))
            s = bb.emit(relax.op.add(s, relax.const(masks)))
            s = bb.emit(relax.op.reshape(s, (*lead, s_len, s_len)))
        return relax.op.matmul(bb.emit(relax.op.nn.softmax(s, axis=-1)), v)

    def reference(q, k, v, hs=None):
        hs = head_scale if hs is None else hs
        q, k = q.astype(np.float64), k.astype(np.float64)
        if q_eps:
            q = q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), q_eps)
        if k_eps:
            k = k / np.maximum(np.linalg.norm(k, axis=-1, keepdims=True), k_eps)
        sc = np.einsum("...id,...jd->...ij", q, k) * hs + bias_full
        if mask:
            sc = (sc.reshape(b, nw, n, s_len, s_len) + masks[None]).reshape(*lead, s_len, s_len)
        p = np.exp(sc - sc.max(-1, keepdims=True))
        return (p / p.sum(-1, keepdims=True)) @ v.astype(np.float64)

    return _function(shapes, body), shapes, reference


NORM_OPS = ("relax.sqrt", "relax.sum", "relax.divide")


@pytest.mark.parametrize(("form", "rank", "scale_input", "mask"), [
    ("clip", 4, False, True),  # Swin-V2's shifted window, as torch exports it
    ("maximum", 4, True, False),  # a logit scale that is an input, not a constant
    ("clip", 3, False, False),  # heads folded into the batch: a (B * N, 1, 1) head scale
])
def test_swinv2_cosine_attention_is_rewritten_and_matches(form, rank, scale_input, mask):
    mod, shapes, reference = cosine_module(form=form, rank=rank, scale_input=scale_input,
                                           mask=mask, n=3 if rank == 4 else 1)
    fused = fuse_attention(mod)
    calls = _calls(fused)
    assert kernel_calls(fused) == 1
    # the normalisation, the scale and the softmax all run in the kernel
    assert not set(calls) & {*NORM_OPS, "relax.nn.softmax", "relax.matmul", "relax.multiply"}
    (q, k, v, *rest), got = build_and_run(mod, shapes)
    np.testing.assert_allclose(got, reference(q, k, v, *rest), rtol=1e-4, atol=5e-5)


@pytest.mark.parametrize(("q_eps", "k_eps"), [(1e-12, None), (1e-12, 1e-6)])
def test_q_and_k_normalised_unalike_keep_their_normalisation(q_eps, k_eps):
    # only q normalised, or with another eps than k: the kernel takes the scores as given
    mod, shapes, reference = cosine_module(b=1, nw=2, n=5, s_len=16, q_eps=q_eps, k_eps=k_eps)
    fused = fuse_attention(mod)
    calls = _calls(fused)
    assert kernel_calls(fused) == 1 and set(NORM_OPS) <= set(calls)
    (q, k, v), got = build_and_run(mod, shapes)
    np.testing.assert_allclose(got, reference(q, k, v), rtol=1e-4, atol=5e-5)


def test_a_multiplier_that_varies_by_query_is_left_alone():
    shapes = {"q": (2, 3, 8, 32), "k": (2, 3, 8, 32), "v": (2, 3, 8, 32)}
    per_query = relax.const(np.linspace(0.5, 2.0, 8, dtype=np.float32).reshape(1, 1, 8, 1))

    def body(bb, q, k, v):
        s = bb.emit(relax.op.matmul(q, bb.emit(relax.op.permute_dims(k, [0, 1, 3, 2]))))
        s = bb.emit(relax.op.multiply(s, per_query))
        return relax.op.matmul(bb.emit(relax.op.nn.softmax(s)), v)

    mod = _function(shapes, body)
    assert fuse_attention(mod).same_as(mod)


@pytest.fixture(scope="module")
def swinv2_onnx(tmp_path_factory):
    """A two-stage timm Swin-V2-CR at 56 x 56 (7 x 7 windows, 3 and 5 heads of 20 and 24
    channels; the second block of stage 1 shifted, with the mask), random weights, exported by
    torch's TorchScript exporter as the corpus's torch route does."""
    torch = pytest.importorskip("torch")
    from timm.models.swin_transformer_v2_cr import SwinTransformerV2Cr

    torch.manual_seed(0)
    model = SwinTransformerV2Cr(img_size=(56, 56), window_size=7, embed_dim=60, depths=(2, 2),
                                num_heads=(3, 5), num_classes=10).eval()
    with torch.no_grad():  # logit scales of their own per head (timm starts all at log 10)
        for blk in model.modules():
            if hasattr(blk, "logit_scale"):
                blk.logit_scale.uniform_(0.0, 5.0)
    path = tmp_path_factory.mktemp("swinv2") / "swinv2.onnx"
    torch.onnx.export(model, torch.randn(1, 3, 56, 56), path, opset_version=17, dynamo=False,
                      input_names=["input"])
    return path


@pytest.mark.heavy  # a timm export and a TVM build of the whole net (~1 minute on two cores)
def test_swinv2_cr_compiles_with_cosine_attention_fused_and_matches_onnxruntime(swinv2_onnx,
                                                                                 tmp_path):
    from hwlat.graph.load import load
    from hwlat.lowering.compile import compile_model
    from hwlat.lowering.custom import import_onnx

    mod = import_onnx(load(swinv2_onnx).meta["onnx"])
    before, fused = _calls(mod), fuse_attention(mod)
    calls = _calls(fused)
    assert kernel_calls(fused) == 4
    # q's and k's normalisation (a sqrt, a sum and a divide each) went into the kernel; GELU's
    # divides stay
    assert before.count("relax.sqrt") == 8 and not {"relax.sqrt", "relax.sum"} & set(calls)
    assert before.count("relax.divide") - calls.count("relax.divide") == 8
    assert "relax.nn.softmax" not in calls
    report = compile_model(swinv2_onnx, "host", output=tmp_path / "swinv2.so")
    assert report.max_abs_diff is not None and report.max_abs_diff < 1e-4


def timm_qkv_module(b=1, s_len=23, n=3, d=32, *, q_scale=0.42, k_scale=0.42, cosine=False,
                    same_source=True):
    """timm's attention as torch exports it, from one fused qkv projection's output:
    qkv (B, S, 3 * N * D) -> reshape (B, S, 3, N, D) -> permute [2, 0, 3, 1, 4] -> split ->
    squeeze; q * sqrt(scale) and k^T * sqrt(scale) (SDPA's export) or q and k L2-normalised
    (cosine); softmax; times v; the output permuted back to (B, S, N, D)."""
    shapes = {"qkv": (b, s_len, 3 * n * d), "other": (b, s_len, 3 * n * d)}
    swap = [0, 1, 3, 2]

    def body(bb, qkv, other):
        def heads(x):
            x = bb.emit(relax.op.reshape(x, (b, s_len, 3, n, d)))
            x = bb.emit(relax.op.permute_dims(x, [2, 0, 3, 1, 4]))
            t = bb.emit(relax.op.split(x, [1, 2], axis=0))
            return [bb.emit(relax.op.squeeze(bb.emit(relax.TupleGetItem(t, i)), axis=[0]))
                    for i in range(3)]

        q, k, v = heads(qkv)
        if not same_source:
            v = heads(other)[2]
        if cosine:
            q, k = _l2_normalize(bb, q, 1e-12, "clip"), _l2_normalize(bb, k, 1e-12, "clip")
            kt = bb.emit(relax.op.permute_dims(k, swap))
        else:
            q = bb.emit(relax.op.multiply(q, relax.const(q_scale, "float32")))
            kt = bb.emit(relax.op.permute_dims(k, swap))
            kt = bb.emit(relax.op.multiply(kt, relax.const(k_scale, "float32")))
        p = bb.emit(relax.op.nn.softmax(bb.emit(relax.op.matmul(q, kt)), axis=-1))
        out = bb.emit(relax.op.permute_dims(bb.emit(relax.op.matmul(p, v)), [0, 2, 1, 3]))
        return relax.op.reshape(out, (b, s_len, n * d))

    def reference(qkv, other):
        def heads(x):
            return x.reshape(b, s_len, 3, n, d).transpose(2, 0, 3, 1, 4).astype(np.float64)

        q, k, v = heads(qkv)
        if not same_source:
            v = heads(other)[2]
        if cosine:
            q, k = (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
                    for x in (q, k))
            sc = q @ np.swapaxes(k, -1, -2)
        else:
            sc = (q * q_scale) @ (np.swapaxes(k, -1, -2) * k_scale)
        p = np.exp(sc - sc.max(-1, keepdims=True))
        out = (p / p.sum(-1, keepdims=True)) @ v
        return out.transpose(0, 2, 1, 3).reshape(b, s_len, n * d)

    return _function(shapes, body), shapes, reference


@pytest.mark.parametrize(("cosine", "same_source"), [(False, True), (True, True), (False, False)])
def test_a_fused_qkv_projection_is_read_in_place(cosine, same_source):
    mod, shapes, reference = timm_qkv_module(cosine=cosine, same_source=same_source)
    fused = fuse_attention(mod)
    calls = _calls(fused)
    assert kernel_calls(fused) == 1
    if same_source:  # no permute, split, squeeze or scale multiply left around the kernel
        assert not {"relax.permute_dims", "relax.split", "relax.squeeze", "relax.multiply",
                    *NORM_OPS} & set(calls)
    else:  # v from another tensor: the copies stay, the kernel reads BNSD
        assert "relax.split" in calls
    (qkv, other), got = build_and_run(mod, shapes)
    np.testing.assert_allclose(got, reference(qkv, other), rtol=1e-4, atol=5e-5)
