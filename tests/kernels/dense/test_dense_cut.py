"""cpu-tvm's table cut of a DenseNet block (the "tvm-cpu" rules: hwlat/graph/dense_block.py)
against what hwlat's dense rewrite calls: a cut-out layer (BN, ReLU, 1x1 conv, ReLU) is one conv
kernel call with its prologue, a cut-out transition (BN, ReLU, 1x1 conv, 2x2 average pool) the
pool first and the conv, both built and run by the cpu-tvm runner as onnxruntime computes them;
and the whole block calls as many conv kernels as the cut holds, with no concat but the copy of
its first input."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tvm
from tvm import relax

from hwlat.devices import load_device
from hwlat.graph import fuse, load
from hwlat.graph.extract import extract_kernel
from hwlat.lowering.custom import import_onnx
from hwlat.lowering.pipelines import PipelineOptions, _kernel_rewrites
from hwlat.lowering.targets import resolve_target
from hwlat.runners import get_runner
from hwlat.runners.tvm import random_inputs
from tests.helpers.dense_block import dense_block

pytestmark = pytest.mark.tvm


def _kernel_calls(proto: onnx.ModelProto, spec) -> collections.Counter:
    """hwlat's kernel calls (call_tir and call_tir_inplace) of the model after the kernel
    rewrites for the device's target, by kernel name (digits stripped); other ops by op name."""
    with resolve_target(device=spec) as target:
        mod = import_onnx(proto)
        mod = tvm.transform.Sequential(_kernel_rewrites(PipelineOptions(target)))(mod)
    calls = collections.Counter()
    for block in mod["main"].body.blocks:
        for b in block.bindings:
            v = b.value
            if isinstance(v, relax.Call):
                name = getattr(v.op, "name", "")
                if name in ("relax.call_tir", "relax.call_tir_inplace"):
                    name = v.args[0].name_hint.rstrip("0123456789").removesuffix("_")
                calls[name] += 1
    return calls


def test_cut_out_dense_kernels_are_the_calls_the_lowering_makes_and_run_on_cpu_tvm(tmp_path):
    spec = load_device("cpu-tvm")
    path = dense_block(tmp_path, cin=16, hw=8, growth=8, layers=2)
    g = load(path)
    ks = fuse(g, spec.fusion)
    layer = next(k for k in ks if k.rule == "prologue_conv" and "AveragePool" not in k.key.ops)
    trans = next(k for k in ks if "AveragePool" in k.key.ops)
    runner = get_runner(spec)
    for k, want in ((layer, {"hwlat_conv2d": 1}),
                    (trans, {"hwlat_prologue_pool": 1, "hwlat_conv2d": 1})):
        proto = extract_kernel(g, k)
        calls = _kernel_calls(proto, spec)
        assert {n: c for n, c in calls.items() if n.startswith("hwlat_")} == want, k.key.ops
        assert not [n for n in calls if "batch_norm" in n or n.endswith("relu") or "pool" in n
                    and not n.startswith("hwlat_")], calls
        vm = runner._build(proto)  # as `hwlat profile --device cpu-tvm` builds it
        vm.invoke_stateful("main")
        got = vm.get_outputs("main").numpy()
        feeds = dict(zip([i.name for i in proto.graph.input], random_inputs(proto), strict=True))
        (ref,) = ort.InferenceSession(proto.SerializeToString()).run(None, feeds)
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    # the whole block: one conv kernel call per conv kernel of the cut; of the concats only
    # x's copy into the buffer (a graph input has no producer to write it in place)
    calls = _kernel_calls(onnx.load(path), spec)
    convs = [k for k in ks if k.kind.value == "conv"]
    assert sum(c for n, c in calls.items() if n.startswith("hwlat_conv2d")) == len(convs)
    assert calls["hwlat_concat_copy"] == 1 and calls["relax.concat"] == 0
    assert not any(k.key.ops == ("Concat",) for k in ks)
