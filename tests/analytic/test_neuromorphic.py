"""The neuromorphic device: a hand-computed tiny net, exact synaptic-op counts, SpikingJelly's op
counter on the zoo's spiking net, the shipped device file, and `hwlat predict` with bad input."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace

import numpy as np
import pytest

from hwlat.analytic.neuromorphic import (
    Neuromorphic,
    NeuromorphicRunner,
    conv_occupancy,
    estimate,
    load_sample,
    seeded_sample,
    synaptic_inflow,
)
from hwlat.devices import list_devices, load_device
from hwlat.devices.spec import DeviceSpec
from hwlat.errors import InvalidInputError, InvalidModelError
from hwlat.graph import load
from tests.helpers.cli import invoke_hwlat
from tests.helpers.onnx_builders import const, lif_steps, model, node, rand, save, tensor

DEVICE = "neuromorphic-45nm"

TARGET = {
    "kind": "neuromorphic",
    "precision": "fp32",
    "cores": 6,
    "neurons_per_core": 8,
    "synapses_per_read": 4,
    "t_sop_ns": 1.0,
    "t_mac_ns": 2.0,
    "t_neuron_ns": 1.0,
    "t_read_ns": 1.0,
    "t_spike_ns": 10.0,
    "barrier_ns": 100.0,
    "energy": {
        "fp32": {"e_mac_pj": 4.6, "e_ac_pj": 0.9},
        "int8": {"e_mac_pj": 0.23, "e_ac_pj": 0.03},
    },
}


def spec(**target) -> DeviceSpec:
    return DeviceSpec(
        name="nm",
        description="test neuromorphic",
        runtime="neuromorphic",
        runner="hwlat.analytic.neuromorphic:NeuromorphicRunner",
        target={**TARGET, **target},
    )


def tiny_net(tmp_path) -> str:
    """x [2,1,4,4] (T=2 steps x B=1) -> conv A 1x1 (weight 1) -> LIF (tau 2, threshold 1) over the
    two steps -> spikes [2,1,4,4] -> conv B 1->2 channels, 3x3, pad 1 -> y. With x in {0, 4} the
    membrane is x/2: a neuron fires exactly where x = 4, every step."""
    lif, inits = lif_steps(2, [1, 1, 4, 4])
    nodes = [
        node("Conv", ["x", "wa"], ["a"]),
        node("Split", ["a"], ["x0", "x1"], axis=0, num_outputs=2),
        *lif,
        node("Concat", ["s0", "s1"], ["s"], axis=0),
        node("Conv", ["s", "wb"], ["y"], pads=[1, 1, 1, 1]),
    ]
    m = model(
        nodes,
        [tensor("x", [2, 1, 4, 4])],
        [tensor("y", [2, 2, 4, 4])],
        [const("wa", np.ones((1, 1, 1, 1))), const("wb", rand(2, 1, 3, 3)), *inits],
    )
    return save(m, tmp_path / "tiny.onnx")


def tiny_input() -> np.ndarray:
    x = np.zeros((2, 1, 4, 4), np.float32)
    for t, (i, j) in [(0, (0, 0)), (0, (1, 1)), (0, (0, 2)), (1, (3, 3))]:
        x[t, 0, i, j] = 4.0  # step 0: a corner, an interior pixel, a top edge; step 1: a corner
    return x


def test_tiny_net_by_hand(tmp_path):
    g = load(tiny_net(tmp_path))
    est = estimate(g, {"x": tiny_input()}, Neuromorphic.from_spec(spec()), device="nm")
    a, b = est.layers
    # conv A is fed x in {0, 4}: real values, 32 outputs x fan-in 1 = 32 MACs
    assert (a.input, a.sops, a.macs, a.neurons, a.cores) == ("real", 0, 32, 16, 2)
    assert a.fire_rate == 4 / 32 and a.in_rate is None
    # conv B is fed spikes. Per output channel a pixel's fan-out is (outputs covering its row) x
    # (its column): 2 at a border, 3 inside. Corner 2x2=4, interior 3x3=9, top edge 2x3=6; step 1
    # corner 4: (4 + 9 + 6 + 4) x 2 channels = 46 SOPs
    assert (b.input, b.sops, b.macs, b.neurons, b.cores) == ("spikes", 46, 0, 32, 4)
    assert b.in_rate == 4 / 32 and b.fire_rate is None  # a readout layer: no neurons downstream
    assert (est.sops, est.macs, est.cores, est.time_steps, est.batch) == (46, 32, 6, 2, 1)
    assert est.firing_rate == 4 / 32
    assert a.energy_pj == pytest.approx(32 * 4.6) and b.energy_pj == pytest.approx(46 * 0.9)
    assert est.energy_pj == pytest.approx(188.6)
    # latency, 8 neurons a core. Conv A, 2 cores (map rows 0-1, 2-3), per core and step:
    #   8 MACs x 2 = 16, 8 neurons x 1 = 8, ceil(8/4) reads x 1 = 2, spikes sent x 10.
    #   step 0: core 0 fires 3 -> 30; step 1: core 1 fires 1 -> max(16, 10) = 16. 30 + 16 = 46.
    # Conv B, 4 cores (channel 0 rows 0-1, 2-3, channel 1 likewise). Step 0 occupancy per channel
    #   rows 0-1: 2,3,2,1 | 2,3,2,1 = 16 on core 0 and 2 -> max(16, 8, 4, 0) = 16; step 1 the
    #   corner lands 4 ops on cores 1 and 3 -> max(4, 8, 1, 0) = 8 (neuron bound). 16 + 8 = 24.
    assert (a.latency_ns, b.latency_ns) == (46.0, 24.0)
    assert est.latency_ns == 46 + 24 + 2 * 100  # + one barrier a step
    assert (a.bound, b.bound) == ("spikes", "synaptic")  # the term behind most of its latency
    # fewer cores than the mapping needs: a clear error
    with pytest.raises(
        InvalidModelError, match="need 6 cores at 8 neurons per core; device 'nm' has 5"
    ):
        estimate(g, {"x": tiny_input()}, Neuromorphic.from_spec(spec(cores=5)), device="nm")


def test_presets_price_the_same_counts(tmp_path):
    g = load(tiny_net(tmp_path))
    shipped = load_device(DEVICE)
    energies = {
        p: estimate(g, {"x": tiny_input()}, Neuromorphic.from_spec(shipped, p)).energy_pj
        for p in ("fp32", "fp16", "int8")
    }
    assert energies == pytest.approx(
        {"fp32": 46 * 0.9 + 32 * 4.6, "fp16": 46 * 0.4 + 32 * 1.5, "int8": 46 * 0.03 + 32 * 0.23}
    )
    chip = Neuromorphic.from_spec(shipped)
    assert (chip.precision, chip.energy.e_mac_pj, chip.energy.e_ac_pj) == ("fp32", 4.6, 0.9)
    assert DEVICE in [d.name for d in list_devices()]


def _brute_occupancy(x, w_shape, strides, pads, dilations, group):
    n, c, h, w = x.shape
    cout, cin_g, kh, kw = w_shape
    oh = (h + pads[0] + pads[2] - dilations[0] * (kh - 1) - 1) // strides[0] + 1
    ow = (w + pads[1] + pads[3] - dilations[1] * (kw - 1) - 1) // strides[1] + 1
    out = np.zeros((n, cout, oh, ow), np.int64)
    for b, co, i, j, ci, p, q in itertools.product(
        range(n), range(cout), range(oh), range(ow), range(cin_g), range(kh), range(kw)
    ):
        y = i * strides[0] - pads[0] + p * dilations[0]
        z = j * strides[1] - pads[1] + q * dilations[1]
        if 0 <= y < h and 0 <= z < w:
            out[b, co, i, j] += int(x[b, (co // (cout // group)) * cin_g + ci, y, z])
    return out


@pytest.mark.parametrize(
    "strides, pads, dilations, group",
    [
        ((1, 1), (1, 1, 1, 1), (1, 1), 1),
        ((2, 2), (1, 0, 2, 1), (1, 1), 1),  # asymmetric pads, stride 2
        ((1, 2), (2, 2, 2, 2), (2, 1), 2),  # dilation, groups
    ],
)
def test_occupancy_is_conv_with_ones(strides, pads, dilations, group):
    x = (np.random.default_rng(1).random((2, 4, 7, 6)) < 0.3).astype(np.float32)
    w_shape = (6, 4 // group, 3, 3)
    got = conv_occupancy(x, w_shape, strides, pads, dilations, group)
    assert np.array_equal(got, _brute_occupancy(x, w_shape, strides, pads, dilations, group))


def test_gemm_and_matmul_count_each_spike_times_its_columns(tmp_path):
    m = model(
        [node("Gemm", ["x", "w"], ["y"], transB=1), node("MatMul", ["y", "v"], ["z"])],
        [tensor("x", [3, 5])],
        [tensor("z", [3, 2])],
        [const("w", rand(4, 5)), const("v", rand(4, 2))],
    )
    g = load(save(m, tmp_path / "fc.onnx"))
    gemm, matmul = g.nodes
    x = np.array([[1, 0, 1, 1, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], np.float32)
    flow, spikes = synaptic_inflow(g, gemm, x)
    assert spikes and flow.shape == (3, 4) and flow.sum() == (3 + 0 + 5) * 4
    flow, spikes = synaptic_inflow(g, matmul, x[:, :4] * 0.5)  # real values: dense MACs
    assert not spikes and flow.sum() == 3 * 2 * 4


@pytest.mark.parametrize(
    "target, message",
    [
        ({"t_sop_ns": -1.0}, "t_sop_ns must be a positive number"),
        ({"neurons_per_core": 0}, "neurons_per_core must be a positive integer"),
        ({"precision": "fp64"}, "no energy preset 'fp64'; presets: fp32, int8"),
        (
            {"energy": {"fp32": {"e_mac_pj": 4.6}}},
            r"\[target.energy.fp32\] takes exactly e_mac_pj and e_ac_pj",
        ),
        (
            {"energy": {"fp32": {"e_mac_pj": float("nan"), "e_ac_pj": 0.9}}},
            "energy.fp32.e_mac_pj must be",
        ),
        ({"t_noc_ns": 1.0}, "unknown: t_noc_ns"),
    ],
)
def test_bad_device_constants(target, message):
    with pytest.raises(InvalidInputError, match=message):
        Neuromorphic.from_spec(spec(**target))


def test_bad_samples(tmp_path):
    g = load(tiny_net(tmp_path))
    np.save(tmp_path / "shape.npy", np.zeros((1, 1, 4, 4), np.float32))
    np.save(tmp_path / "dtype.npy", tiny_input().astype(np.float64))
    np.savez(tmp_path / "names.npz", input=tiny_input())
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    cases = [
        ("missing.npy", "no such sample input file"),
        ("shape.npy", "input 'x' has shape 1x1x4x4; the model takes 2x1x4x4"),
        ("dtype.npy", r"input 'x' is float64; the model takes float32 \(convert with"),
        ("names.npz", "arrays input; the model's inputs are x"),
        ("junk.npy", "not a readable .npy or .npz file"),
    ]
    for name, message in cases:
        with pytest.raises(InvalidInputError, match=message):
            load_sample(tmp_path / name, g)


def test_runner_times_whole_models_on_a_seeded_input(tmp_path):
    path = tiny_net(tmp_path)
    r = NeuromorphicRunner(replace(load_device(DEVICE), target={**TARGET, "cores": 128}))
    g = load(path)
    expected = estimate(g, seeded_sample(g), r.chip).latency_ns * 1e-6
    assert r.time_model(path).samples_ms == (expected,) and expected > 0
    with pytest.raises(InvalidInputError, match="not kernels: use `hwlat predict"):
        r.time_kernel(g.meta["onnx"])


def _cli(*args):
    """In process: (exit code, the `error:` line or stdout)."""
    r = invoke_hwlat(*args)
    return r.exit_code, r.output if r.error else r.stdout


def test_cli_errors(tmp_path):
    path = tiny_net(tmp_path)
    np.save(tmp_path / "x.npy", tiny_input())
    code, text = _cli("predict", path, "--device", DEVICE)
    assert code == 2 and "give a sample input with --input sample.npy (x 2x1x4x4 float32)" in text
    code, text = _cli("predict", path, "--device", DEVICE, "--input", tmp_path / "nope.npy")
    assert code == 2 and "no such sample input file" in text
    code, text = _cli(
        "predict", path, "--device", DEVICE, "--input", tmp_path / "x.npy", "--precision", "fp8"
    )
    assert code == 2 and "no energy preset 'fp8'" in text
    code, text = _cli("predict", path, "--device", "cpu-ort", "--input", tmp_path / "x.npy")
    assert code == 2 and "--input applies to neuromorphic devices and to models with sparse" in text
    code, text = _cli("predict", path, "--device", "cpu-ort", "--precision", "fp16")
    assert code == 2 and "--precision applies to neuromorphic devices" in text
    plain = model(
        [node("Conv", ["x", "w"], ["y"])],
        [tensor("x", [1, 1, 4, 4])],
        [tensor("y", [1, 1, 4, 4])],
        [const("w", np.ones((1, 1, 1, 1)))],
    )
    np.save(tmp_path / "p.npy", np.ones((1, 1, 4, 4), np.float32))
    code, text = _cli(
        "predict",
        save(plain, tmp_path / "plain.onnx"),
        "--device",
        DEVICE,
        "--input",
        tmp_path / "p.npy",
    )
    assert code == 2 and "no spiking-neuron layer" in text


# --- the zoo's spiking net: SpikingJelly's op counter, and the CLI --------------------------------


@pytest.fixture(scope="module")
def zoo_net(tmp_path_factory):
    from hwlat import zoo
    from hwlat.onnx_export import export

    folder = tmp_path_factory.mktemp("zoo")
    net, (x,) = zoo.build("spiking_convnet")
    export(net, (x,), folder / "snn.onnx", compare=False)
    np.save(folder / "x.npy", x.numpy())
    return net, x, folder / "snn.onnx", folder / "x.npy"


@pytest.mark.export
def test_zoo_net_matches_spikingjelly_op_counter(zoo_net):
    """SOPs and MACs per layer equal SpikingJelly's SynOpCounter and MACCounter (BatchNorm left out:
    the export folds it into the conv) on the same weights and input."""
    counters = pytest.importorskip(
        "spikingjelly.activation_based.op_counter",
        reason="spikingjelly is an optional test dependency (`make test` installs it: pip "
        "install --no-deps spikingjelly==2.0.0 loguru): the cross-check against its op counter "
        "needs it",
    )
    import torch

    net, x, path, sample = zoo_net
    synops = counters.SynOpCounter()
    macs = counters.MACCounter(extra_ignore_modules=[torch.nn.BatchNorm2d])
    with torch.no_grad(), counters.DispatchCounterMode([synops, macs]):
        net(x)
    records = {
        scope: {op.__name__.split(".")[0]: n for op, n in ops.items()}
        for scope, ops in synops.get_counts().items()
    }
    mac_records = {
        scope: {op.__name__.split(".")[0]: n for op, n in ops.items()}
        for scope, ops in macs.get_counts().items()
    }
    scopes = ["features.0.conv", "features.1.conv", "features.2.conv", "fc"]
    theirs = [
        (
            records[f"SpikingConvNet.{s}"].popitem()[1],
            mac_records[f"SpikingConvNet.{s}"].popitem()[1],
        )
        for s in scopes
    ]
    est = estimate(
        load(path), load_sample(sample, load(path)), Neuromorphic.from_spec(load_device(DEVICE))
    )
    ours = [(r.sops, r.macs) for r in est.layers]
    assert ours == theirs
    assert (est.sops, est.macs) == (synops.get_total(), macs.get_total())
    assert est.sops > 0 and est.macs > 0  # both kinds of layer present: the check can fail


@pytest.mark.export
def test_cli_predict_on_the_zoo_net(zoo_net):
    _, _, path, sample = zoo_net
    code, text = _cli("predict", path, "--device", DEVICE, "--input", sample, "--json")
    assert code == 0, text
    data = json.loads(text)
    layers, totals = data["layers"], data["totals"]
    assert [r["input"] for r in layers] == [
        "real",
        "spikes",
        "spikes",
        "real",
    ]  # pooled spikes: real
    assert totals["sops"] == sum(r["sops"] for r in layers) > 0
    assert totals["energy_pj"] == pytest.approx(totals["sops"] * 0.9 + totals["macs"] * 4.6)
    assert totals["latency_ns"] == pytest.approx(sum(r["latency_ns"] for r in layers) + 4 * 500.0)
    assert 0 < totals["firing_rate"] < 1 and data["time_steps"] == 4
    code, text = _cli("predict", path, "--device", DEVICE, "--input", sample)
    assert code == 0, text
    assert (
        "fire rate" in text and "total" in text and "snn.onnx on neuromorphic-45nm (fp32)" in text
    )
