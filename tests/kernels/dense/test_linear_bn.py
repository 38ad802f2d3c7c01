"""BatchNorm after a constant-weight matmul folded into the weight (hwlat/kernels/dense/linear_bn.py),
checked against numpy through a build."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from hwlat.kernels.dense.linear_bn import fold_linear_bn
from hwlat.kernels.dense.lowering import fuse_dense
from hwlat.lowering.targets import make_target

pytestmark = [pytest.mark.tvm]

TARGET = make_target(threads=1)


def _ops(mod) -> list[str]:
    names = []

    def visit(e):
        if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op):
            names.append(e.op.name if e.op.name != "relax.call_tir" else e.args[0].name_hint)

    relax.analysis.post_order_visit(mod["main"], visit)
    return names


def linear_bn_module(rows: int, k: int, c: int, view: bool, axis: int = 1, seed: int = 0):
    """LeViT's Linear -> BatchNorm1d as torch exports it: matmul, (1, R, C) -> (R, C), batch_norm,
    back; `view` False: the norm straight on a 2-D matmul."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((k, c)).astype(np.float32) / np.sqrt(k)
    g, b, mu = (rng.standard_normal(c).astype(np.float32) for _ in range(3))
    var = rng.random(c).astype(np.float32) + 0.1
    shape = (1, rows, k) if view else (rows, k)
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.matmul(x, relax.const(w)))
            if view:
                y = bb.emit(relax.op.reshape(y, (rows, c)))
            n = bb.emit(relax.op.nn.batch_norm(y, *(relax.const(p) for p in (g, b, mu, var)),
                                               axis=axis, epsilon=1e-5, training=False))
            y = bb.emit(relax.TupleGetItem(n, 0))
            if view:
                y = bb.emit(relax.op.reshape(y, (1, rows, c)))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get(), shape, (w, g, b, mu, var)


@pytest.mark.parametrize(("rows", "k", "c", "view"), [(49, 40, 24, True), (7, 16, 56, False)])
def test_batch_norm_is_folded_and_matches(rows, k, c, view):
    mod, shape, (w, g, b, mu, var) = linear_bn_module(rows, k, c, view)
    folded = fold_linear_bn(mod)
    assert "relax.nn.batch_norm" in _ops(mod) and "relax.nn.batch_norm" not in _ops(folded)
    # the dense rewrite then takes matmul + shift as one kernel call with a bias
    dense = fuse_dense(mod)
    assert "relax.nn.batch_norm" not in _ops(dense)
    assert any(n.startswith("hwlat_matmul") for n in _ops(dense)) and "relax.add" not in _ops(dense)
    ex = tvm.compile(dense, target=TARGET)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    y = x.astype(np.float64) @ w
    want = (y - mu) / np.sqrt(var.astype(np.float64) + 1e-5) * g + b
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_a_norm_over_another_axis_is_left_alone():
    mod, _, _ = linear_bn_module(8, 16, 8, view=False, axis=0)
    assert fold_linear_bn(mod).same_as(mod)
