"""The ONNX rewrite: every spiking-neuron kernel the graph finds becomes one hwlat.LIFNeuron
node whose TVM lowering (the fused kernel) gives spikes identical to the unrolled graph."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

from hwlat import zoo
from hwlat.errors import InvalidModelError
from hwlat.graph import KernelKind, fuse, load
from hwlat.kernels.spiking import NeuronSpec, neuron_reference
from hwlat.kernels.spiking.rewrite import find_neurons, rewrite_spiking_neurons
from hwlat.lowering import custom
from hwlat.lowering.targets import make_target
from hwlat.onnx_export import export
from tests.helpers import onnx_neurons as on

pytestmark = [pytest.mark.tvm, pytest.mark.export]

TARGET = make_target("host")


def lif_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if (n.domain, n.op_type) == ("hwlat", "LIFNeuron")]


def attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def run_tvm(model: onnx.ModelProto, feeds: dict, rewrite: bool = True) -> list[np.ndarray]:
    mod = custom.import_onnx(model, rewrite=rewrite)
    vm = relax.VirtualMachine(tvm.compile(mod, target=TARGET), tvm.cpu())
    names = [i.name for i in model.graph.input]
    out = vm["main"](*[tvm.runtime.tensor(feeds[n]) for n in names])
    if isinstance(out, tvm.runtime.Tensor):
        return [out.numpy()]
    return [o.numpy() for o in out]


def run_ort(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


# --- hand-written unrolled neurons (SpikingJelly and zoo forms) ---------------------------------

P = {"tau": 3.0, "thr": 0.5, "vr": -0.25}
CASES = {
    # step, T, shape, graph options, expected spec, expected node list after the rewrite
    "sj_lif_gather_outputs": (
        on.sj_lif_hard, 4, (2, 3, 5, 7), dict(inputs="gather", outputs="separate", v0="expand",
                                               v_init=-0.25),
        NeuronSpec(4, "lif_reset", "ge", "hard", 3.0, 0.5, -0.25, -0.25),
        ["LIFNeuron", "Gather", "Gather", "Gather", "Gather"]),
    "sj_if_one_step": (  # one step and no reset: the first reset form is taken, unobservable
        on.sj_if_soft, 1, (70,), dict(inputs="separate", outputs="concat", v0="scalar"),
        NeuronSpec(1, "if", "sub_ge", "hard", v_threshold=0.5),
        ["Unsqueeze", "LIFNeuron"]),
    "sj_lif_no_decay_split": (
        on.sj_lif_no_decay_gt, 3, (1, 4, 9, 9), dict(inputs="split", v0="fill", v_init=0.125,
                                                      last_reset=True),
        NeuronSpec(3, "lif_no_decay_input", "gt", "hard", 3.0, 0.5, -0.25, 0.125),
        ["LIFNeuron"]),
    "simple_lif_separate_inputs": (
        on.sj_simple_lif_soft, 5, (3, 33), dict(inputs="separate", outputs="separate"),
        NeuronSpec(5, "lif_simple", "sub_gt", "soft", 3.0, 0.5, -0.25, 0.0),
        ["Unsqueeze"] * 5 + ["Concat", "LIFNeuron"] + ["Gather"] * 5),
}


@pytest.mark.parametrize("case", list(CASES))
def test_handwritten_neuron_is_fused_with_identical_spikes(case):
    step, steps, shape, options, spec, ops = CASES[case]
    model = on.unrolled(step, steps, shape, P, **options)
    before = model.SerializeToString()
    out = rewrite_spiking_neurons(model)
    assert model.SerializeToString() == before  # the input is not touched
    assert [n.op_type for n in out.graph.node] == ops
    (lif,) = lif_nodes(out)
    assert NeuronSpec.from_attrs(attrs(lif)) == spec
    read = {i for n in out.graph.node for i in n.input}
    assert all(t.name in read for t in out.graph.initializer)  # the neuron's constants are gone

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((steps, *shape)) * 1.5).astype(np.float32)
    x.reshape(steps, -1)[0, :3] = [0.5, np.inf, np.nan]  # at threshold (IF), inf, NaN
    names = [i.name for i in model.graph.input]
    feeds = {"X": x} if names == ["X"] else {f"x{t}": x[t] for t in range(steps)}
    want = run_ort(model, feeds)
    got = run_tvm(out, feeds, rewrite=False)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
    spikes = np.concatenate([w.reshape(-1) for w in want])  # step-major, as [T, ...]
    np.testing.assert_array_equal(spikes, neuron_reference(x, spec).reshape(-1))
    assert 0 < spikes.mean() < 1


def test_import_applies_the_rewrite():
    model = on.unrolled(on.zoo_lif, 2, (4, 5), {"tau": 2.0, "thr": 1.0, "vr": 0.0})
    mod = custom.import_onnx(model)
    lif = [gv.name_hint for gv in mod.get_global_vars() if "lif" in gv.name_hint]
    assert lif == ["hwlat_lif_neuron"]


def test_graph_without_neurons_is_left_alone():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 5, 5])
    w = numpy_helper.from_array(np.ones((3, 2, 3, 3), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w]))
    assert rewrite_spiking_neurons(model) is model
    assert custom.apply_rewrites(model).SerializeToString() == model.SerializeToString()


def _neuron_kernels(model: onnx.ModelProto, tmp_path) -> int:
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    return sum(k.kind is KernelKind.SPIKING_NEURON for k in fuse(load(path)))


def test_a_neuron_no_form_describes_stays_unrolled(tmp_path):
    # the second step divides by another tau: the graph sees one neuron, the rewrite no form
    params = iter([{"tau": 2.0, "thr": 1.0, "vr": 0.0}, {"tau": 4.0, "thr": 1.0, "vr": 0.0}])
    model = on.unrolled(lambda e, x, v, p: on.zoo_lif(e, x, v, next(params)), 2, (3, 4), {})
    assert _neuron_kernels(model, tmp_path) == 1
    assert find_neurons(model)[1] == []
    assert rewrite_spiking_neurons(model) is model


def test_per_element_threshold_stays_unrolled(tmp_path):
    def step(e, x, v, p):
        thr = e.const(np.linspace(0.5, 1.5, 12).reshape(3, 4))
        return on.zoo_lif(e, x, v, {"tau": 2.0, "thr": thr, "vr": 0.0})

    model = on.unrolled(step, 2, (3, 4), {})
    assert rewrite_spiking_neurons(model) is model


def test_recurrent_input_is_not_fused(tmp_path):
    """Step 1's input is computed from step 0's spikes: one pass over T cannot run it."""
    def step(e, x, v, p, seen=[]):  # noqa: B006  (the spikes of earlier steps)
        if seen:
            x = e.op("Relu", seen[-1])
        s, v = on.zoo_lif(e, x, v, {"tau": 2.0, "thr": 1.0, "vr": 0.0})
        seen.append(s)
        return s, v

    model = on.unrolled(step, 2, (3, 4), {}, inputs="separate")
    assert _neuron_kernels(model, tmp_path) == 1
    assert len(find_neurons(model)[1]) == 1  # it is a neuron ...
    assert rewrite_spiking_neurons(model) is model  # ... whose fusion would make a cycle


def test_converter_refuses_a_shape_without_the_steps():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 8])
    node = helper.make_node("LIFNeuron", ["x"], ["y"], domain="hwlat", **NeuronSpec(4).attrs())
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("hwlat", 1)]
    model = helper.make_model(helper.make_graph([node], "g", [x], [y]), opset_imports=opsets)
    with pytest.raises(InvalidModelError, match=r"static shape \[T=4"):
        custom.import_onnx(model)


# --- the zoo's spiking_convnet ---------------------------------------------------------------

@pytest.fixture(scope="module")
def convnet(tmp_path_factory):
    model, inputs = zoo.build("spiking_convnet")
    path = tmp_path_factory.mktemp("snn") / "spiking_convnet.onnx"
    export(model, inputs, path, compare=False)
    return path, inputs[0].numpy()


def test_every_convnet_neuron_is_replaced(convnet):
    path, _ = convnet
    g = load(path)
    kernels = [k for k in fuse(g) if k.kind is KernelKind.SPIKING_NEURON]
    assert len(kernels) == 3
    model = g.meta["onnx"]
    out = rewrite_spiking_neurons(model)
    lifs = lif_nodes(out)
    assert len(lifs) == len(kernels)
    for node in lifs:
        assert NeuronSpec.from_attrs(attrs(node)) == NeuronSpec(4, "lif", "ge", "hard", 2.0, 1.0)
    ops = [n.op_type for n in out.graph.node]
    assert not {"GreaterOrEqual", "Cast", "Div", "Slice", "Squeeze", "Concat"} & set(ops)
    assert len(ops) == len(model.graph.node) - 3 * (32 + 8 + 5) + 3  # steps, slicing, stacking


def test_convnet_spikes_and_logits_match_the_unrolled_graph(convnet):
    path, x = convnet
    model = onnx.load(str(path))
    # the three neurons' spike tensors become outputs too (the Concat after each neuron)
    shapes = {"stack": [4, 1, 32, 32, 32], "stack_1": [4, 1, 64, 16, 16],
              "stack_2": [4, 1, 128, 8, 8]}
    model.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
                              for n, s in shapes.items())
    feeds = {model.graph.input[0].name: x * 4}  # stronger drive: more spikes in the deep layers
    want = run_ort(model, feeds)
    unrolled = run_tvm(model, feeds, rewrite=False)
    fused = run_tvm(model, feeds, rewrite=True)
    for spikes_ort, spikes_unrolled, spikes_fused in zip(want[1:], unrolled[1:], fused[1:],
                                                         strict=True):
        assert 0.01 < spikes_ort.mean() < 0.9
        np.testing.assert_array_equal(spikes_fused, spikes_ort)
        np.testing.assert_array_equal(spikes_fused, spikes_unrolled)
    np.testing.assert_allclose(fused[0], want[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fused[0], unrolled[0], rtol=1e-5, atol=1e-5)


def test_cuda_compiles_take_the_gpu_kernel(tmp_path):
    """`hwlat compile` for cuda imports under the cuda target, so the neuron's converter emits
    the thread-per-neuron kernel (threads bound: the CUDA source has the kernel)."""
    from hwlat.lowering.compile import device_source, lower

    path = tmp_path / "lif.onnx"
    onnx.save(on.unrolled(on.zoo_lif, 4, (2, 8, 5, 5), {"tau": 2.0, "thr": 1.0, "vr": 0.0}), path)
    source = device_source(lower(path, "cuda").executable, "cuda")
    assert "hwlat_lif_neuron" in source and "threadIdx.x" in source
