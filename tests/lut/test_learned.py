"""Kernel features, the kernel sampler's graphs, and the learned per-kind predictors."""

from __future__ import annotations

import hashlib
import math
import sqlite3

import numpy as np
import pytest
from onnx import TensorProto, helper

from hwlat.graph import fuse, load
from hwlat.graph.cost import kernel_cost
from hwlat.lut import TableError, TableStore
from hwlat.lut.features import FEATURE_NAMES, kernel_features, key_features
from hwlat.lut.learned import LearnedEstimator, load_models, train
from hwlat.lut.sample import build, config_of, cut, draw
from tests.helpers.cli import run_hwlat
from tests.helpers.entries import entry
from tests.helpers.onnx_builders import const, model, node, rand, save, tensor

F = {name: i for i, name in enumerate(FEATURE_NAMES)}


def _one_kernel(tmp_path, m, name="k.onnx"):
    g = load(save(m, tmp_path / name))
    ks = [k for k in fuse(g) if k.kind.value != "view"]
    assert len(ks) == 1, [k.key.text() for k in ks]
    return g, ks[0]


def _conv_model(cin=8, cout=8, k=3, stride=1, group=1, act=("Relu",), residual=False, hw=16):
    pad = (k - 1) // 2
    oh = (hw + 2 * pad - k) // stride + 1
    nodes = [node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[k, k], pads=[pad] * 4,
                  strides=[stride, stride], group=group, dilations=[1, 1])]
    inputs, last = [tensor("x", [1, cin, hw, hw])], "c"
    if residual:
        inputs.append(tensor("r", [1, cout, oh, oh]))
        nodes.append(node("Add", [last, "r"], ["a"]))
        last = "a"
    inits = [const("w", rand(cout, cin // group, k, k)), const("b", rand(cout))]
    for i, op in enumerate(act):
        if op == "Clip":
            inits += [const("lo", np.float32(0)), const("hi", np.float32(6))]
            nodes.append(node("Clip", [last, "lo", "hi"], [f"y{i}"]))
        else:
            nodes.append(node(op, [last], [f"y{i}"]))
        last = f"y{i}"
    return model(nodes, inputs, [tensor(last, [1, cout, oh, oh])], inits, opset=17)


def _gelu_matmul(tokens=10, k=16, n=32):
    inits = [const("w", rand(k, n)), const("b", rand(n)), const("s2", np.float32(1.4142135)),
             const("one", np.float32(1.0)), const("half", np.float32(0.5))]
    nodes = [node("MatMul", ["x", "w"], ["m"]), node("Add", ["m", "b"], ["a"]), node("Div", ["a", "s2"], ["d"]),
             node("Erf", ["d"], ["e"]), node("Add", ["e", "one"], ["p"]), node("Mul", ["a", "p"], ["q"]),
             node("Mul", ["q", "half"], ["y"])]
    return model(nodes, [tensor("x", [1, tokens, k])], [tensor("y", [1, tokens, n])], inits, opset=17)


# --- features


def test_conv_features_read_kernel_size_stride_groups_epilogue_and_work(tmp_path):
    g, k = _one_kernel(tmp_path, _conv_model(cin=16, cout=16, k=5, stride=2, group=16, act=("Clip",)))
    cost = kernel_cost(g, k)
    f = kernel_features(k.key, cost)
    assert f[F["kh"]] == pytest.approx(math.log1p(5)) and f[F["kw"]] == pytest.approx(math.log1p(5))
    assert f[F["stride"]] == pytest.approx(math.log1p(2))
    assert f[F["groups"]] == pytest.approx(math.log1p(16))
    assert f[F["cin_per_group"]] == pytest.approx(math.log1p(1))
    assert f[F["depthwise"]] == 1 and f[F["pointwise"]] == 0
    assert f[F["hout"]] == pytest.approx(math.log1p(8)) and f[F["cout"]] == pytest.approx(math.log1p(16))
    assert f[F["macs"]] == pytest.approx(math.log1p(cost.macs))
    assert f[F["bytes_read"]] == pytest.approx(math.log1p(cost.bytes_read))
    assert f[F["op_Clip"]] == 1 and f[F["op_Relu"]] == 0
    # the MACs derived from the key alone agree with hwlat.graph.cost
    assert key_features(k.key.text())[F["macs"]] == pytest.approx(math.log1p(cost.macs))


def test_dense_and_residual_conv_features_differ_where_the_kernels_do(tmp_path):
    _, plain = _one_kernel(tmp_path, _conv_model(k=1), "a.onnx")
    _, res = _one_kernel(tmp_path, _conv_model(k=1, residual=True), "b.onnx")
    a, b = kernel_features(plain.key), kernel_features(res.key)
    assert a[F["pointwise"]] == 1 and a[F["depthwise"]] == 0
    assert a[F["op_Add"]] == 0 and b[F["op_Add"]] == 1 and b[F["n_inputs"]] == 2


def test_matmul_features_and_unknown_sizes(tmp_path):
    _, k = _one_kernel(tmp_path, _gelu_matmul(tokens=10, k=16, n=32))
    f = kernel_features(k.key)
    assert f[F["m"]] == pytest.approx(math.log1p(10)) and f[F["k"]] == pytest.approx(math.log1p(16))
    assert f[F["nn"]] == pytest.approx(math.log1p(32)) and f[F["op_Gelu"]] == 1  # one Gelu (graph.canon)
    sym = "matmul|MatMul|in:float32[unk__1x49x96]|out:float32[unk__1x49x288]|w:float32[96x288]|"
    g = key_features(sym)
    assert math.isnan(g[F["macs"]]) and g[F["unknown_dims"]] == 1 and g[F["k"]] == pytest.approx(math.log1p(96))


# --- the sampler's graphs


def _attention():
    inits = [const("scale", np.float32(0.125)), const("mask", rand(1, 2, 6, 6))]
    nodes = [node("Mul", ["q", "scale"], ["qs"]), node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
             node("MatMul", ["qs", "kt"], ["s"]), node("Add", ["s", "mask"], ["sm"]),
             node("Softmax", ["sm"], ["p"], axis=-1), node("MatMul", ["p", "v"], ["y"])]
    ins = [tensor(n, [1, 2, 6, 8]) for n in "qkv"]
    return model(nodes, ins, [tensor("y", [1, 2, 6, 8])], inits, opset=17)


def _layer_norm():
    return model([node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1, epsilon=1e-6)],
                 [tensor("x", [1, 10, 24])], [tensor("y", [1, 10, 24])], [const("g", rand(24)), const("b", rand(24))],
                 opset=17)


def _gemm():
    return model([node("Gemm", ["x", "w", "b"], ["y"], alpha=1.0, beta=1.0, transB=1)],
                 [tensor("x", [1, 64])], [tensor("y", [1, 10])], [const("w", rand(10, 64)), const("b", rand(10))],
                 opset=17)


CASES = {
    "conv+relu": lambda: _conv_model(),
    "conv+residual+relu": lambda: _conv_model(residual=True),
    "depthwise+clip": lambda: _conv_model(cin=16, cout=16, group=16, act=("Clip",)),
    "grouped+hardswish": lambda: _conv_model(cin=16, cout=32, group=4, act=("HardSwish",)),
    "matmul+bias+gelu": _gelu_matmul,
    "gemm": _gemm,
    "layer_norm": _layer_norm,
    "attention": _attention,
    "maxpool": lambda: model([node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4)],
                             [tensor("x", [1, 8, 16, 16])], [tensor("y", [1, 8, 8, 8])], opset=17),
    "mul": lambda: model([node("Mul", ["x", "s"], ["y"])], [tensor("x", [1, 8, 16, 16]), tensor("s", [1, 8, 1, 1])],
                         [tensor("y", [1, 8, 16, 16])], opset=17),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_configuration_read_from_a_key_builds_back_into_exactly_that_key(case, tmp_path):
    _, k = _one_kernel(tmp_path, CASES[case]())
    cfg = config_of(k.key.text())
    assert cfg is not None and cfg["kind"] == k.kind.value
    s = cut(cfg, tmp_path)
    assert s is not None
    assert s.kernel.key.text() == k.key.text()


@pytest.mark.parametrize("case", ["conv+residual+relu", "depthwise+clip", "matmul+bias+gelu", "attention"])
def test_drawn_configurations_fuse_into_one_kernel_of_the_intended_kind_and_ops(case, tmp_path):
    _, k = _one_kernel(tmp_path, CASES[case]())
    cfg = config_of(k.key.text())
    rng = np.random.default_rng(1)
    keys = set()
    for _ in range(6):
        new = draw(cfg, rng)
        assert new is not None
        s = cut(new, tmp_path)
        assert s is not None, new
        assert s.kernel.kind is k.kind and s.kernel.key.ops == k.key.ops
        back = config_of(s.kernel.key.text())
        assert back is not None and {x: back[x] for x in new if x != "out_hw"} == new
        keys.add(s.kernel.key.text())
    assert len(keys) > 1  # the draws move the sizes
    if case == "depthwise+clip":  # equal sizes stay equal: still depthwise
        for key in keys:
            f = key_features(key)
            assert f[F["depthwise"]] == 1


def test_build_writes_exporter_style_graphs():
    m = build({"kind": "layer_norm", "x": [1, 4, 8], "axis": -1, "epsilon": 1e-5})
    assert [n.op_type for n in m.graph.node] == ["LayerNormalization"]
    assert m.graph.output[0].type.tensor_type.shape.dim[2].dim_value == 8


# --- learned predictors


def _conv_key(c, co, hw, k, stride=1):
    o = (hw + 2 * (k // 2) - k) // stride + 1
    return (f"conv|Conv+Relu|in:float32[1x{c}x{hw}x{hw}]|out:float32[1x{co}x{o}x{o}]|w:float32[{co}x{c}x{k}x{k}],"
            f"float32[{co}]|dilations=1x1,group=1,kernel_shape={k}x{k},pads={k // 2}x{k // 2}x{k // 2}x{k // 2},"
            f"strides={stride}x{stride}")


def _synthetic_table(path, n=40, seed=0):
    rng = np.random.default_rng(seed)
    entries = []
    for _ in range(n):
        c, co = (int(x) for x in rng.choice([8, 16, 32, 64, 128], 2))
        hw, k, s = int(rng.choice([7, 14, 28, 56])), int(rng.choice([1, 3, 5])), int(rng.choice([1, 2]))
        key = _conv_key(c, co, hw, k, s)
        macs = math.exp(key_features(key)[F["macs"]]) - 1
        ms = 1e-3 + macs / 2e9 * (1.3 if k == 1 else 1.0)  # 1x1 convs run at a lower rate
        entries.append(entry(key, kind="conv", median_ms=ms, q1_ms=ms, q3_ms=ms))
    store = TableStore(path)
    unique = {e.key: e for e in entries}
    work = []
    for key in unique:
        f = key_features(key)
        work.append((key, "conv", round(math.expm1(f[F["macs"]])),
                     round(math.expm1(f[F["bytes_read"]]) + math.expm1(f[F["bytes_written"]]))))
    store.put_many(unique.values(), work)
    return store


def test_train_store_reload_gives_the_same_predictions(tmp_path):
    with _synthetic_table(tmp_path / "t.sqlite") as store:
        reports = train(store, "cpu-ort")
        assert [r.kind for r in reports] == ["conv"] and reports[0].n_train > 20
        assert reports[0].cv_rmse < 0.5  # a smooth latency law is learned from 40 points
        first = load_models(store, "cpu-ort")
    with TableStore(tmp_path / "t.sqlite", readonly=True) as again:
        second = load_models(again, "cpu-ort")
    probe = np.array([key_features(_conv_key(48, 96, 20, 3)), key_features(_conv_key(24, 24, 40, 1))])
    from hwlat.lut.learned import _predict

    a, b = _predict(first["conv"].booster, probe), _predict(second["conv"].booster, probe)
    assert np.array_equal(a, b)
    unseen = _conv_key(48, 96, 20, 3)
    true_ms = 1e-3 + (math.exp(key_features(unseen)[F["macs"]]) - 1) / 2e9
    ms, source, unc = LearnedEstimator(second, None).estimate_key(unseen, "conv", _Cost(None))
    assert source.startswith("estimate: gbt conv,") and unc is not None and unc > 0
    assert abs(ms / true_ms - 1) < 0.5


class _Cost:
    def __init__(self, macs):
        self.macs, self.bytes_read, self.bytes_written = macs, None, None


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("damage", [
    "UPDATE predictors SET version = version + 1",
    "UPDATE predictors SET model = x'00ff00ff'",
    "UPDATE predictors SET model = substr(model, 1, length(model) / 2)",
    "UPDATE predictors SET features = '[\"macs\"]'",
])
def test_a_stored_model_of_another_version_or_damaged_is_refused_and_the_table_left_alone(tmp_path, damage):
    path = tmp_path / "t.sqlite"
    with _synthetic_table(path) as store:
        train(store, "cpu-ort")
    db = sqlite3.connect(path)
    db.execute(damage)
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    before = _digest(path)
    with TableStore(path, readonly=True) as store, pytest.raises(TableError, match="predictor for 'cpu-ort'"):
        load_models(store, "cpu-ort")
    assert _digest(path) == before


def test_predict_labels_estimates_with_their_source_and_uncertainty(tmp_path):
    from hwlat.lut.predict import predict

    g = load(save(_conv_model(cin=32, cout=64, k=3, hw=20), tmp_path / "m.onnx"))
    with _synthetic_table(tmp_path / "t.sqlite") as store:
        before = predict(g, fuse(g), store, "cpu-ort")
        assert all("power law" in r.source for r in before.rows if r.estimated)
        train(store, "cpu-ort")
        p = predict(g, fuse(g), store, "cpu-ort")
        conv = [r for r in p.rows if r.kernel.kind.value == "conv"]
        assert conv and all(r.estimated and r.source.startswith("estimate: gbt conv, ") for r in conv)
        assert all(r.uncertainty is not None and r.uncertainty > 0 for r in conv)
        assert p.to_json()["kernels"][0]["uncertainty"] is not None
        assert p.uncertainty_ms == pytest.approx(sum(r.total_ms * r.uncertainty for r in conv))
        assert before.uncertainty_ms == 0
        plain = predict(g, fuse(g), store, "cpu-ort", learned=False)
        assert all("gbt" not in r.source for r in plain.rows)


def test_cli_train_then_predict_and_refusal_of_a_damaged_model(tmp_path):
    path = tmp_path / "t.sqlite"
    _synthetic_table(path).close()
    m = save(_conv_model(cin=32, cout=64, k=3, hw=20), tmp_path / "m.onnx")
    r = _hwlat("lut", "train", "--device", "cpu-ort", "--table", str(path), tmp=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "conv: " in r.stdout and "entries, cross-validated error" in r.stdout
    r = _hwlat("predict", str(m), "--device", "cpu-ort", "--table", str(path), "--json", tmp=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "estimate: gbt conv" in r.stdout
    db = sqlite3.connect(path)
    db.execute("UPDATE predictors SET version = 99")
    db.commit()
    db.close()
    r = _hwlat("predict", str(m), "--device", "cpu-ort", "--table", str(path), tmp=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "version 99" in lines[0]


def test_cli_sample_times_drawn_kernels_into_the_table_and_resumes(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    save(_conv_model(cin=8, cout=16, k=3, hw=12), corpus / "a.onnx")
    path = tmp_path / "t.sqlite"
    args = ("lut", "sample", "--device", "cpu-ort", "--kinds", "conv", "--n", "3", "--corpus", str(corpus),
            "--no-zoo", "--no-adaptive", "--table", str(path))
    r = _hwlat(*args, tmp=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "conv: 3 sampled kernels timed now, 3 in the table" in r.stdout
    with TableStore(path, readonly=True) as store:
        entries = store.entries("cpu-ort")
        assert len(entries) == 3 and all(e.kind == "conv" and e.median_ms > 0 for e in entries)
        rows = store._db.execute("SELECT key, features FROM sampled").fetchall()
        assert {k for k, _ in rows} == {e.key for e in entries}
    r = _hwlat(*args, tmp=tmp_path)  # resumed: nothing left to do
    assert r.returncode == 0, r.stderr
    assert "conv: 0 sampled kernels timed now, 3 in the table" in r.stdout
    r = _hwlat("lut", "sample", "--device", "cpu-ort", "--kinds", "conv,spline", "--table", str(path), tmp=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("error: unknown kernel kinds ['spline']")



def test_draws_stay_under_the_sampler_size_caps():
    from hwlat.lut.sample import MAX_MACS, _macs

    big = {"kind": "conv", "x": [1, 256, 112, 112], "cout": 256, "k": [3, 3], "epilogue": ["Relu"], "group": 1,
           "strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1]}
    assert _macs(big) > MAX_MACS
    rng = np.random.default_rng(0)
    drawn = [draw(big, rng, tries=50) for _ in range(20)]
    assert any(d is not None for d in drawn)
    assert all(_macs(d) <= MAX_MACS for d in drawn if d is not None)


def test_training_leaves_out_entries_whose_runs_spread_too_wide(tmp_path):
    from hwlat.lut.learned import MAX_TRAIN_CV, training_set

    with _synthetic_table(tmp_path / "t.sqlite") as store:
        keys, _, _ = training_set(store, "cpu-ort")["conv"]
        noisy = store.get("cpu-ort", keys[0])
        store.put_many([entry(noisy.key, kind="conv", median_ms=noisy.median_ms, q1_ms=noisy.q1_ms / 3,
                              q3_ms=noisy.q3_ms * 3, cv=MAX_TRAIN_CV * 2)])
        again, _, _ = training_set(store, "cpu-ort")["conv"]
    assert keys[0] not in again and len(again) == len(keys) - 1


def test_fuse_reads_a_softmax_fed_by_a_constant_node(tmp_path):
    # Softmax(Add(x, Constant)): the attention rule walks back to a node without inputs
    m = model([helper.make_node("Constant", [], ["c"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.5])),
               node("Add", ["c", "x"], ["a"]), node("Softmax", ["a"], ["y"], axis=-1)],
              [tensor("x", [2, 4])], [tensor("y", [2, 4])], opset=17)
    g = load(save(m, tmp_path / "sm.onnx"))
    assert [k.kind.value for k in fuse(g)] == ["elementwise", "softmax"]


def _hwlat(*args, tmp):
    return run_hwlat(*args, home=tmp)
