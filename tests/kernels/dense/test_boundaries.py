"""The kernels cpu-tvm's table holds are the kernels its compiled models call: profiling the zoo's
mobilenet_v2 on cpu-tvm cuts it (the "tvm-cpu" rule set) into as many conv kernels, MobileNet
blocks among them, as hwlat's dense rewrite makes calls in the compiled module."""

from __future__ import annotations

import collections

import onnx
import pytest
import tvm
from tvm import relax

from hwlat import zoo
from hwlat.devices import load_device
from hwlat.graph import load
from hwlat.graph.extract import extract_kernel
from hwlat.lowering.custom import import_onnx
from hwlat.lowering.pipelines import PipelineOptions, _kernel_rewrites
from hwlat.lowering.targets import resolve_target
from hwlat.lut import TableStore
from hwlat.onnx_export import export
from hwlat.runners import get_runner
from hwlat.runners.profile import plan

# heavy (a zoo export and a TVM import, ~30 s): the lighter tests in tests/graph/test_mbconv.py
# and tests/devices/test_fusion.py check the same cut without TVM; `make test-all` runs this one
pytestmark = [pytest.mark.tvm, pytest.mark.export, pytest.mark.heavy]

CONV_KERNELS = ("hwlat_conv2d", "hwlat_depthwise_conv2d", "hwlat_mbconv")


def _kernel_calls(mod: tvm.IRModule) -> collections.Counter:
    """hwlat's kernel calls in main, by kernel name (digits stripped)."""
    calls = collections.Counter()
    for block in mod["main"].body.blocks:
        for b in block.bindings:
            v = b.value
            if isinstance(v, relax.Call) and getattr(v.op, "name", "") == "relax.call_tir":
                calls[v.args[0].name_hint.rstrip("0123456789").removesuffix("_winograd")] += 1
    return calls


def _rewritten(path, spec) -> tvm.IRModule:
    """The model after hwlat's kernel rewrites (every pipeline's first passes) for the device's
    target, before legalization: its kernel calls are the compiled model's."""
    target = resolve_target(device=spec)
    with target:
        mod = import_onnx(onnx.load(str(path)))
        return tvm.transform.Sequential(_kernel_rewrites(PipelineOptions(target)))(mod)


def test_cpu_tvm_profiles_mobilenet_v2_in_the_kernels_its_compiled_model_calls(tmp_path):
    path = tmp_path / "mobilenet_v2.onnx"
    export(*zoo.build("mobilenet_v2"), path, compare=False)
    spec = load_device("cpu-tvm")
    with TableStore(tmp_path / "t.sqlite") as store:
        (_, _, kernels), = plan([path], spec, get_runner(spec), store).models
    convs = [k for k in kernels if k.kind.value == "conv"]
    blocks = [k for k in convs if k.rule == "mbconv"]
    calls = _kernel_calls(_rewritten(path, spec))
    assert len(blocks) >= 5  # the blocks from 112x112 down to 28x28
    assert calls["hwlat_mbconv"] == len(blocks)
    assert sum(calls[n] for n in CONV_KERNELS) == len(convs)
    # the profiler times a block as it runs: cut out, it is one mbconv call too
    g = load(path)
    cut = tmp_path / "block.onnx"
    onnx.save(extract_kernel(g, blocks[1]), str(cut))
    assert _kernel_calls(_rewritten(cut, spec)) == {"hwlat_mbconv": 1}
    # under the default rules (onnxruntime, TVM's own lowering) each conv is a kernel of its own
    with TableStore(tmp_path / "t.sqlite") as store:
        (_, _, split), = plan([path], load_device("cpu-ort"), get_runner(load_device("cpu-ort")),
                              store).models
    assert sum(k.kind.value == "conv" for k in split) == len(convs) + sum(
        k.key.ops.count("Conv") - 1 for k in blocks)
