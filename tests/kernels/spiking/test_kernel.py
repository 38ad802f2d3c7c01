"""The fused spiking-neuron kernel against its numpy reference, and the reference against the
zoo's PyTorch neuron and hand-computed spikes."""

import numpy as np
import pytest
import tvm

from hwlat.errors import InvalidInputError
from hwlat.kernels.spiking import (
    CHARGES,
    FIRES,
    RESETS,
    NeuronSpec,
    neuron_primfunc,
    neuron_reference,
)
from hwlat.lowering.targets import make_target

pytestmark = pytest.mark.tvm


@pytest.fixture(scope="module")
def target():
    return make_target("host")


def run_kernel(spec: NeuronSpec, x: np.ndarray, target) -> np.ndarray:
    lib = tvm.compile(tvm.IRModule({"main": neuron_primfunc(spec, x.shape[1:])}), target=target)
    y = tvm.runtime.tensor(np.full_like(x, 7.0), tvm.cpu())  # stale data must be overwritten
    lib["main"](tvm.runtime.tensor(x, tvm.cpu()), y)
    return y.numpy()


def inputs(steps: int, shape, spec: NeuronSpec, seed: int = 0) -> np.ndarray:
    """Random drive with special values: an input exactly at threshold (h == threshold for
    IF at the first step), infinities and a NaN."""
    x = (np.random.default_rng(seed).standard_normal((steps, *shape)) * 1.5).astype(np.float32)
    flat = x.reshape(steps, -1)
    if flat.shape[1] >= 4:
        flat[0, 0] = spec.v_threshold - spec.v_init
        flat[0, 1] = np.inf
        flat[min(1, steps - 1), 2] = np.nan
        flat[0, 3] = -np.inf
    return x


# (steps, per-step shape): 64-neuron blocks only, a remainder only, both, one step
SHAPES = [(4, (2, 64)), (1, (5, 7)), (3, (3, 70)), (6, (1, 4, 9, 9))]


@pytest.mark.parametrize("steps,shape", SHAPES)
@pytest.mark.parametrize("form", [("lif", "ge", "hard"), ("if", "ge", "soft"),
                                  ("lif_reset", "sub_ge", "hard"), ("if", "gt", "hard")])
def test_kernel_matches_reference(steps, shape, form, target):
    spec = NeuronSpec(steps, *form, tau=3.0, v_threshold=0.75, v_reset=-0.25, v_init=0.125)
    x = inputs(steps, shape, spec)
    got = run_kernel(spec, x, target)
    want = neuron_reference(x, spec)
    np.testing.assert_array_equal(got, want)
    assert set(np.unique(got)) <= {0.0, 1.0} and 0 < got.mean() < 1


def test_every_form_matches_reference(target):
    """Each charge, fire and reset form twice, in different company (the three are independent
    parts of a step), in one module; 130 neurons: two blocks and a remainder."""
    steps, shape = 5, (130,)
    forms = [(c, FIRES[(i + k) % len(FIRES)], RESETS[(i + k) % len(RESETS)])
             for k in (0, 1) for i, c in enumerate(CHARGES)]
    specs = [NeuronSpec(steps, *f, tau=1.7, v_threshold=0.5, v_reset=0.0625, v_init=-0.5)
             for f in forms]
    mod = tvm.IRModule({f"f{i}": neuron_primfunc(s, shape).with_attr("global_symbol", f"f{i}")
                        for i, s in enumerate(specs)})
    lib = tvm.compile(mod, target=target)
    for i, spec in enumerate(specs):
        x = inputs(steps, shape, spec, seed=i)
        y = tvm.runtime.tensor(np.zeros_like(x), tvm.cpu())
        lib[f"f{i}"](tvm.runtime.tensor(x, tvm.cpu()), y)
        np.testing.assert_array_equal(y.numpy(), neuron_reference(x, spec), err_msg=str(spec))


def test_division_by_tau_is_not_a_multiplication(target):
    """The graph divides by tau = 3; x * (1/3) rounds below x / 3 for some x. A threshold set
    exactly at such an x / 3 fires only if the kernel divides."""
    x = np.random.default_rng(3).uniform(-1, 1, (1, 4096)).astype(np.float32)
    div, mul = x / np.float32(3.0), x * np.float32(1.0 / 3.0)
    i = int(np.flatnonzero(mul < div)[0])
    spec = NeuronSpec(1, "lif", "ge", "hard", tau=3.0, v_threshold=float(div[0, i]))
    got = run_kernel(spec, x, target)
    assert got[0, i] == 1.0
    np.testing.assert_array_equal(got, neuron_reference(x, spec))


def test_reference_hand_computed():
    # v: 0.75 (no spike), 1.125 (spike, reset to 0), 0.75, 1.125 (spike)
    spec = NeuronSpec(4, "lif", "ge", "hard", tau=2.0, v_threshold=1.0, v_reset=0.0)
    x = np.full((4, 1), 1.5, np.float32)
    assert neuron_reference(x, spec).ravel().tolist() == [0.0, 1.0, 0.0, 1.0]
    # IF, soft reset: v 0.6, 1.2 -> spike, 0.2 + 0.6 = 0.8, 1.4 -> spike
    spec = NeuronSpec(4, "if", "ge", "soft", v_threshold=1.0)
    x = np.full((4, 1), 0.6, np.float32)
    assert neuron_reference(x, spec).ravel().tolist() == [0.0, 1.0, 0.0, 1.0]


def test_reference_equals_zoo_torch_neuron():
    import torch

    from hwlat.zoo.spiking import LIFNeuron

    x = np.random.default_rng(1).standard_normal((4, 2, 3, 5, 5)).astype(np.float32) * 2
    want = LIFNeuron(tau=2.0, v_threshold=1.0, v_reset=0.25)(torch.from_numpy(x)).numpy()
    got = neuron_reference(x, NeuronSpec(4, "lif", "ge", "hard", 2.0, 1.0, 0.25))
    np.testing.assert_array_equal(got, want)


def test_gpu_variant_binds_a_thread_per_neuron():
    """The GPU kernel builds to CUDA source: one kernel, a thread per neuron, the time loop
    inside (run on a GPU only where one is present)."""
    spec = NeuronSpec(4)
    func = neuron_primfunc(spec, (3, 100), "gpu")
    target = tvm.target.Target({"kind": "cuda", "arch": "sm_90", "host": {"kind": "llvm"}})
    lib = tvm.compile(tvm.IRModule({"main": func}), target=target)
    src = next(m for m in lib.mod.imports if m.kind == "cuda").inspect_source()
    assert src.count("__global__") == 2  # declaration and definition of the one kernel
    assert "threadIdx.x" in src and "for (int t = 0; t < 4; ++t)" in src


def test_spec_validation():
    with pytest.raises(InvalidInputError, match="charge 'leaky'"):
        NeuronSpec(4, charge="leaky")
    with pytest.raises(InvalidInputError, match="steps"):
        NeuronSpec(0)
    with pytest.raises(InvalidInputError, match="tau must not be 0"):
        NeuronSpec(2, tau=0.0)
    spec = NeuronSpec(3, "lif_reset", "sub_gt", "soft", 1.5, 0.5, -0.25, 0.125)
    assert NeuronSpec.from_attrs(spec.attrs()) == spec
    with pytest.raises(InvalidInputError, match="unknown attributes: alpha"):
        NeuronSpec.from_attrs({**spec.attrs(), "alpha": 1.0})
    with pytest.raises(InvalidInputError, match="static, non-empty shape"):
        neuron_primfunc(spec, (0, 3))
