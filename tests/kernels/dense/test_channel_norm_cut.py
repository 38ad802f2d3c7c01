"""The "tvm-cpu" cut of ConvNeXt's LayerNorm2d is the kernel the lowering calls: the cut-out
Transpose -> LayerNormalization -> Transpose lowers to one channel-norm call and no transpose,
builds and runs on the cpu-tvm runner and matches onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from hwlat.devices import load_device
from hwlat.graph import fuse, load
from hwlat.graph.extract import extract_kernel
from hwlat.runners import get_runner
from hwlat.runners.tvm import random_inputs
from tests.helpers.convnext_block import convnext_block
from tests.kernels.dense.test_dense_cut import _kernel_calls

pytestmark = pytest.mark.tvm


def test_cut_out_channel_norm_is_one_call_and_runs_on_cpu_tvm(tmp_path):
    spec = load_device("cpu-tvm")
    path = convnext_block(tmp_path, c=16, hw=8)
    g = load(path)
    (norm,) = [k for k in fuse(g, spec.fusion) if k.rule == "channel_norm"]
    proto = extract_kernel(g, norm)
    calls = _kernel_calls(proto, spec)
    assert {n: c for n, c in calls.items() if n.startswith("hwlat_")} == {"hwlat_channel_norm": 1}
    assert calls["relax.permute_dims"] == 0 and calls["relax.nn.layer_norm"] == 0, calls
    vm = get_runner(spec)._build(proto)  # as `hwlat profile --device cpu-tvm` builds it
    vm.invoke_stateful("main")
    got = vm.get_outputs("main").numpy()
    feeds = dict(zip([i.name for i in proto.graph.input], random_inputs(proto), strict=True))
    (ref,) = ort.InferenceSession(proto.SerializeToString()).run(None, feeds)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    # and in the whole block too: one channel-norm call, no transpose
    whole = _kernel_calls(onnx.load(path), spec)
    assert whole["hwlat_channel_norm"] == 1 and whole["relax.permute_dims"] == 0, whole


def test_a_plane_the_kernel_refuses_keeps_its_transposes_in_the_lowering_and_the_cut(tmp_path):
    spec = load_device("cpu-tvm")
    path = convnext_block(tmp_path, c=16, hw=3)  # 9 pixels a plane
    ks = fuse(load(path), spec.fusion)
    assert not [k for k in ks if k.rule == "channel_norm"]
    assert sum(k.key.ops == ("Transpose",) for k in ks) == 2
    calls = _kernel_calls(onnx.load(path), spec)
    assert calls["hwlat_channel_norm"] == 0 and calls["relax.permute_dims"] == 2, calls
