"""An analytic neuromorphic device: energy and latency of a spiking net from its measured spikes.

The model runs once on a sample input (onnxruntime, CPU) with every synaptic layer's input and
every spiking-neuron kernel's spikes added as outputs. From those tensors, exactly:

- A synaptic layer is a Conv, or a Gemm/MatMul whose second operand is a constant weight. Its
  input is *spikes* when every element of the measured input is 0 or 1 (a neuron's output, moved
  through views, slices and concats, always is). That is SpikingJelly's rule too, and it decides
  how a pooled spike average counts: average-pooling k of n spikes gives k/n, a real value, so the
  layer it feeds (the zoo net's classifier) costs dense MACs. BatchNorm is taken as folded into
  the weights, as export does; bias adds are free.
- SOPs of a spike-fed layer: each spike times its actual fan-out, borders included; for a conv
  that is `conv(spikes, ones_like(W)).sum()`, for a Gemm/MatMul each spike reaches every output
  column. MACs of a layer fed by real values: the dense count, output elements x fan-in.
- Energy = SOPs x E_AC + MACs x E_MAC, with the precision's preset (device file, [target.energy]).
  Memory traffic and neuron updates are not priced.
- Latency, Loihi-style. Each layer's neurons (one per output element of one time step, C-order)
  fill ceil(neurons / neurons_per_core) cores of its own, in order. Per time step each core does
      max(synaptic ops x t_sop (or MACs x t_mac), neurons x t_neuron,
          ceil(synaptic ops / synapses_per_read) x t_read, spikes its neurons fire x t_spike)
  where a core's synaptic ops are those landing on its own neurons. A layer's latency is its
  busiest core summed over the steps. Layers run one after another within a step (a serial
  schedule; a pipelined one would take the max over layers instead), and each step ends with a
  barrier: total = sum of the layers' latencies + steps x barrier_ns. A step is one row of the
  leading [T*B] axis, so B samples run one after another, T steps each.

A layer's neurons are those of the first spiking-neuron kernel downstream of it (none for a
readout layer); its T spike outputs, stacked time-major, must line up with the layer's output.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper

from hwlat.devices.measure import Timing
from hwlat.devices.spec import DeviceSpec
from hwlat.errors import InvalidInputError, InvalidModelError
from hwlat.graph import Graph, Kernel, KernelKind, Node, Op, fuse, load
from hwlat.graph.ops import SPIKE_THRESHOLD
from hwlat.inputs import random_feeds
from hwlat.runners.base import Environment, Runner

RUNTIME = "neuromorphic"
TERMS = ("synaptic", "neuron", "memory", "spikes")  # which per-core term bounds the busiest core
_COUNTS = ("cores", "neurons_per_core", "synapses_per_read")
_TIMES = ("t_sop_ns", "t_mac_ns", "t_neuron_ns", "t_read_ns", "t_spike_ns", "barrier_ns")


@dataclass(frozen=True)
class EnergyPreset:
    e_mac_pj: float  # one multiply-accumulate
    e_ac_pj: float  # one accumulate: a synaptic op


@dataclass(frozen=True)
class Neuromorphic:
    """The constants of the device file's [target] table (kind = "neuromorphic")."""

    precision: str
    energy: EnergyPreset
    presets: tuple[str, ...]
    cores: int
    neurons_per_core: int
    synapses_per_read: int
    t_sop_ns: float
    t_mac_ns: float
    t_neuron_ns: float
    t_read_ns: float
    t_spike_ns: float
    barrier_ns: float

    @classmethod
    def from_spec(cls, spec: DeviceSpec, precision: str | None = None) -> Neuromorphic:
        where = f"device '{spec.name}' ({spec.source or 'in memory'})"
        t = dict(spec.target)
        if t.pop("kind", None) != "neuromorphic":
            raise InvalidInputError(
                f'{where}: a neuromorphic device needs [target] kind = "neuromorphic"'
            )
        names = {"precision", "energy", *_COUNTS, *_TIMES}
        if set(t) != names:
            raise InvalidInputError(
                f"{where}: [target] of a neuromorphic device takes exactly "
                f"{', '.join(sorted(names))}; missing: "
                f"{', '.join(sorted(names - set(t))) or 'none'}; unknown: "
                f"{', '.join(sorted(set(t) - names)) or 'none'}"
            )
        for name in _COUNTS:
            v = t[name]
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InvalidInputError(f"{where}: {name} must be a positive integer, got {v!r}")
        for name in _TIMES:
            _check_number(where, name, t[name], positive=name != "barrier_ns")
        energy = t.pop("energy")
        if not isinstance(energy, dict) or not energy:
            raise InvalidInputError(
                f"{where}: [target.energy] must hold presets, "
                "e.g. [target.energy.fp32] e_mac_pj = 4.6, e_ac_pj = 0.9"
            )
        presets = {}
        for preset, table in energy.items():
            if not isinstance(table, dict) or set(table) != {"e_mac_pj", "e_ac_pj"}:
                raise InvalidInputError(
                    f"{where}: [target.energy.{preset}] takes exactly e_mac_pj and e_ac_pj"
                )
            for name, v in table.items():
                _check_number(where, f"energy.{preset}.{name}", v, positive=False)
            presets[preset] = EnergyPreset(float(table["e_mac_pj"]), float(table["e_ac_pj"]))
        chosen = precision or t["precision"]
        if not isinstance(chosen, str) or chosen not in presets:
            raise InvalidInputError(
                f"{where}: no energy preset '{chosen}'; presets: {', '.join(presets)}"
            )
        return cls(
            precision=chosen,
            energy=presets[chosen],
            presets=tuple(presets),
            **{k: int(t[k]) for k in _COUNTS},
            **{k: float(t[k]) for k in _TIMES},
        )


def _check_number(where: str, name: str, v: Any, *, positive: bool) -> None:
    if (
        isinstance(v, bool)
        or not isinstance(v, int | float)
        or not math.isfinite(v)
        or v < 0
        or (positive and v == 0)
    ):
        raise InvalidInputError(
            f"{where}: {name} must be a {'positive' if positive else 'non-negative'}"
            f" number, got {v!r}"
        )


# --- the model's structure: synaptic layers and the neurons they drive ------------------------


@dataclass(frozen=True)
class Layer:
    node: Node  # Conv, or Gemm/MatMul with a constant weight
    population: Kernel | None  # the spiking-neuron kernel it drives; None for a readout layer


def is_synaptic(g: Graph, n: Node) -> bool:
    if n.op not in (Op.Conv, Op.Gemm, Op.MatMul) or len(n.inputs) < 2:
        return False
    return not g.is_const(n.inputs[0]) and g.is_const(n.inputs[1])


def spike_values(g: Graph, k: Kernel) -> list[str]:
    """A neuron kernel's spike tensors, one per time step: each threshold's Cast, else the
    threshold's own boolean output."""
    inside = set(k.nodes)
    out = []
    for name in k.nodes:
        n = g.node(name)
        if n.op in SPIKE_THRESHOLD:
            cast = next(
                (u for u in g.users(n.outputs[0]) if u.name in inside and u.op is Op.Cast), None
            )
            out.append(cast.outputs[0] if cast is not None else n.outputs[0])
    return out


def find_layers(g: Graph, kernels: list[Kernel]) -> tuple[list[Layer], list[Kernel]]:
    neurons = [k for k in kernels if k.kind is KernelKind.SPIKING_NEURON]
    if not neurons:
        raise InvalidModelError(
            f"{g.name}: no spiking-neuron layer (the unrolled LIF/IF pattern "
            "`hwlat inspect` shows as spiking_neuron); the neuromorphic device "
            "estimates spiking nets only"
        )
    neuron_of = {name: k for k in neurons for name in k.nodes}
    layers = [Layer(n, _population(g, n, neuron_of)) for n in g.nodes if is_synaptic(g, n)]
    return layers, neurons


def _population(g: Graph, node: Node, neuron_of: dict[str, Kernel]) -> Kernel | None:
    """The first spiking-neuron kernel reached forward from the layer, before any other layer."""
    seen: set[str] = set()
    frontier = [node.outputs[0]]
    while frontier:
        for u in g.users(frontier.pop(0)):
            if u.name in seen:
                continue
            seen.add(u.name)
            if u.name in neuron_of:
                return neuron_of[u.name]
            if not is_synaptic(g, u):
                frontier.extend(o for o in u.outputs if o)
    return None


# --- the sample input and the measuring run -----------------------------------------------------


def load_sample(path: Path, g: Graph) -> dict[str, np.ndarray]:
    """Arrays by input name from a .npy (one-input model) or .npz; shapes, dtypes as the model's."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"{path}: no such sample input file")
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                arrays = {k: data[k] for k in data.files}
        elif len(g.inputs) != 1:
            raise InvalidInputError(
                f"{path}: the model has {len(g.inputs)} inputs "
                f"({', '.join(g.inputs)}); give an .npz with one array per name"
            )
        else:
            arrays = {g.inputs[0]: data}
    except (OSError, ValueError, EOFError) as e:
        raise InvalidInputError(f"{path}: not a readable .npy or .npz file ({e})") from e
    if set(arrays) != set(g.inputs):
        raise InvalidInputError(
            f"{path}: arrays {', '.join(sorted(arrays)) or 'none'}; the model's "
            f"inputs are {', '.join(g.inputs)}"
        )
    for name in g.inputs:
        sig, a = g.values[name].sig, arrays[name]
        want = "x".join(str(d) for d in sig.shape) if sig.shape is not None else "?"
        if sig.shape is not None and (
            len(sig.shape) != a.ndim
            or any(isinstance(d, int) and d != s for d, s in zip(sig.shape, a.shape, strict=True))
        ):
            raise InvalidInputError(
                f"{path}: input '{name}' has shape {'x'.join(map(str, a.shape))}; "
                f"the model takes {want}"
            )
        if str(a.dtype) != sig.dtype:
            raise InvalidInputError(
                f"{path}: input '{name}' is {a.dtype}; the model takes {sig.dtype} "
                f"(convert with .astype('{sig.dtype}'))"
            )
    return arrays


def seeded_sample(g: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """Standard-normal floats (zeros for integer inputs) for each input: runs without a sample."""
    specs = []
    for name in g.inputs:
        sig = g.values[name].sig
        if sig.shape is None or not all(isinstance(d, int) for d in sig.shape):
            raise InvalidModelError(
                f"{g.name}: input '{name}' has an unknown dimension; give a sample"
            )
        specs.append((name, sig.shape, sig.dtype))
    return random_feeds(specs, seed)


def run_for(
    g: Graph, feeds: dict[str, np.ndarray], names: list[str], threads: int = 1
) -> dict[str, np.ndarray]:
    """The values `names` of one onnxruntime run on `feeds`, each added to the graph's outputs."""
    import onnxruntime as ort

    got = {n: feeds[n] for n in names if n in feeds}
    wanted = [n for n in dict.fromkeys(names) if n not in got]
    proto = onnx.ModelProto()
    proto.CopyFrom(g.meta["onnx"])
    present = {o.name for o in proto.graph.output}
    for name in wanted:
        if name not in present:
            elem = helper.np_dtype_to_tensor_dtype(np.dtype(g.values[name].sig.dtype))
            proto.graph.output.append(helper.make_tensor_value_info(name, elem, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(
            proto.SerializeToString(), opts, providers=["CPUExecutionProvider"]
        )
        values = session.run(wanted, feeds)
    except Exception as e:  # onnxruntime raises its own exception types
        raise InvalidModelError(
            f"{g.name}: onnxruntime could not run the model on the sample "
            f"({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})"
        ) from e
    got.update(zip(wanted, values, strict=True))
    return got


# --- counting -------------------------------------------------------------------------------------


def is_spikes(x: np.ndarray) -> bool:
    return x.dtype == np.bool_ or bool(np.all((x == 0) | (x == 1)))


def conv_occupancy(
    x: np.ndarray, w_shape: tuple[int, ...], strides, pads, dilations, group: int
) -> np.ndarray:
    """conv(x, ones_like(W)) for a 0/1 map x [N, C, *spatial], exactly, in int64: each output
    element's count of active inputs in its receptive field (its synaptic ops)."""
    n, c, *spatial = x.shape
    nd = len(spatial)
    k = w_shape[2:]
    xs = x.astype(np.int64).reshape(n, group, c // group, *spatial).sum(axis=2)
    xp = np.pad(xs, [(0, 0), (0, 0)] + [(pads[i], pads[i + nd]) for i in range(nd)])
    out_sp = [
        (spatial[i] + pads[i] + pads[i + nd] - dilations[i] * (k[i] - 1) - 1) // strides[i] + 1
        for i in range(nd)
    ]
    occ = np.zeros((n, group, *out_sp), np.int64)
    for taps in itertools.product(*(range(kk) for kk in k)):
        window = tuple(
            slice(t * d, t * d + (o - 1) * s + 1, s)
            for t, d, o, s in zip(taps, dilations, out_sp, strides, strict=True)
        )
        occ += xp[(slice(None), slice(None), *window)]
    return np.repeat(occ, w_shape[0] // group, axis=1)


def _conv_geometry(n: Node, x_shape, w_shape):
    nd = len(w_shape) - 2
    strides = list(n.attr("strides", (1,) * nd))
    dilations = list(n.attr("dilations", (1,) * nd))
    pads = list(n.attr("pads", (0,) * (2 * nd)))
    auto = n.attr("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = [0] * (2 * nd)
        for i in range(nd):
            size = x_shape[2 + i]
            out = -(-size // strides[i])
            total = max(0, (out - 1) * strides[i] + (w_shape[2 + i] - 1) * dilations[i] + 1 - size)
            small = total // 2
            pads[i], pads[i + nd] = (
                (small, total - small) if auto == "SAME_UPPER" else (total - small, small)
            )
    elif auto == "VALID":
        pads = [0] * (2 * nd)
    return strides, pads, dilations


def synaptic_inflow(g: Graph, n: Node, x: np.ndarray) -> tuple[np.ndarray, bool]:
    """([steps, neurons] ops landing on each output neuron, input is spikes). Each op is a
    synaptic op (SOP) when the input is spikes, a multiply-accumulate otherwise."""
    spikes = is_spikes(x)
    w_shape = g.values[n.inputs[1]].shape
    if n.op is Op.Conv:
        strides, pads, dilations = _conv_geometry(n, x.shape, w_shape)
        group = int(n.attr("group", 1))
        if spikes:
            occ = conv_occupancy(x, w_shape, strides, pads, dilations, group)
        else:  # dense: every output element meets its full fan-in, padded taps included
            occ = np.full(
                _conv_out_shape(x.shape, w_shape, strides, pads, dilations),
                math.prod(w_shape[1:]),
                np.int64,
            )
        return occ.reshape(occ.shape[0], -1), spikes
    if n.op is Op.Gemm:
        if n.attr("transA", 0):
            x = x.T
        cols = w_shape[0] if n.attr("transB", 0) else w_shape[1]
    else:  # MatMul: x [..., M, K] @ W [..., K, N]
        cols = w_shape[-1]
    x = x.reshape(1, -1) if x.ndim == 1 else x
    per_row = (
        (x != 0).sum(axis=-1, dtype=np.int64)
        if spikes
        else np.full(x.shape[:-1], x.shape[-1], np.int64)
    )
    flow = np.broadcast_to(per_row[..., None], (*per_row.shape, cols))
    return np.ascontiguousarray(flow).reshape(flow.shape[0], -1), spikes


def _conv_out_shape(x_shape, w_shape, strides, pads, dilations):
    nd = len(w_shape) - 2
    return (
        x_shape[0],
        w_shape[0],
        *(
            (x_shape[2 + i] + pads[i] + pads[i + nd] - dilations[i] * (w_shape[2 + i] - 1) - 1)
            // strides[i]
            + 1
            for i in range(nd)
        ),
    )


# --- the estimate ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerEstimate:
    name: str  # the layer's node
    op: str
    input: str  # "spikes" or "real"
    in_rate: float | None  # firing rate of the spikes it is fed
    fire_rate: float | None  # firing rate of the neurons it drives (None: a readout layer)
    neurons: int  # per step
    cores: int
    sops: int
    macs: int
    energy_pj: float
    latency_ns: float  # its busiest core, summed over the steps
    bound: str  # the term that bounds its busiest core for most of its latency


@dataclass(frozen=True)
class Estimate:
    model: str
    device: str
    precision: str
    time_steps: int
    batch: int
    layers: tuple[LayerEstimate, ...]
    firing_rate: float  # spikes over neuron updates, all spiking-neuron kernels
    barrier_ns: float  # per step

    @property
    def steps(self) -> int:
        return self.time_steps * self.batch

    @property
    def sops(self) -> int:
        return sum(r.sops for r in self.layers)

    @property
    def macs(self) -> int:
        return sum(r.macs for r in self.layers)

    @property
    def energy_pj(self) -> float:
        return sum(r.energy_pj for r in self.layers)

    @property
    def latency_ns(self) -> float:
        return sum(r.latency_ns for r in self.layers) + self.steps * self.barrier_ns

    @property
    def cores(self) -> int:
        return sum(r.cores for r in self.layers)

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "device": self.device,
            "precision": self.precision,
            "time_steps": self.time_steps,
            "batch": self.batch,
            "steps": self.steps,
            "layers": [asdict(r) for r in self.layers],
            "totals": {
                "sops": self.sops,
                "macs": self.macs,
                "energy_pj": self.energy_pj,
                "latency_ns": self.latency_ns,
                "barrier_ns": self.steps * self.barrier_ns,
                "cores": self.cores,
                "firing_rate": self.firing_rate,
            },
        }


def estimate(
    g: Graph,
    feeds: dict[str, np.ndarray],
    chip: Neuromorphic,
    *,
    device: str = "",
    threads: int = 1,
) -> Estimate:
    layers, neurons = find_layers(g, fuse(g))
    spikes_of = {k.nodes[0]: spike_values(g, k) for k in neurons}
    wanted = [L.node.inputs[0] for L in layers] + [v for vs in spikes_of.values() for v in vs]
    values = run_for(g, feeds, wanted, threads)
    stacked = {
        key: np.stack([values[v] for v in vs]) for key, vs in spikes_of.items()
    }  # [T, B, ...]
    time_steps = max(s.shape[0] for s in stacked.values())
    batch = max(s.shape[1] if s.ndim > 1 else 1 for s in stacked.values())
    fired = sum(int(np.count_nonzero(s)) for s in stacked.values())
    updates = sum(s.size for s in stacked.values())
    rows = tuple(_layer(g, L, values[L.node.inputs[0]], stacked, chip) for L in layers)
    used = sum(r.cores for r in rows)
    if used > chip.cores:
        raise InvalidModelError(
            f"{g.name}: its layers need {used} cores at {chip.neurons_per_core} "
            f"neurons per core; device '{device}' has {chip.cores}"
        )
    return Estimate(
        g.name,
        device,
        chip.precision,
        time_steps,
        batch,
        rows,
        fired / updates if updates else 0.0,
        chip.barrier_ns,
    )


def _layer(
    g: Graph, layer: Layer, x: np.ndarray, stacked: dict[str, np.ndarray], chip: Neuromorphic
) -> LayerEstimate:
    n = layer.node
    inflow, spikes = synaptic_inflow(g, n, x)
    steps, count = inflow.shape
    fired = None
    if layer.population is not None:
        s = stacked[layer.population.nodes[0]]
        if s.size != inflow.size:
            raise InvalidModelError(
                f"{g.name}: layer {n.name} has {steps} steps x {count} neurons but the neurons it "
                f"drives fire {'x'.join(map(str, s.shape))} spikes (T x B x ...); the layouts do "
                "not line up (a layer must run on all steps at once, [T*B, ...] time-major)"
            )
        fired = s.reshape(steps, count).astype(np.int64)
    cores = -(-count // chip.neurons_per_core)
    pad = cores * chip.neurons_per_core - count

    def per_core(a: np.ndarray) -> np.ndarray:  # [steps, neurons] -> [steps, cores]
        return np.pad(a, ((0, 0), (0, pad))).reshape(steps, cores, chip.neurons_per_core).sum(-1)

    ops = per_core(inflow)
    sent = per_core(fired) if fired is not None else np.zeros_like(ops)
    resident = np.full(cores, chip.neurons_per_core, np.int64)
    resident[-1] = count - (cores - 1) * chip.neurons_per_core
    reads = -(-ops // chip.synapses_per_read)
    terms = np.stack(
        [
            ops * (chip.t_sop_ns if spikes else chip.t_mac_ns),
            np.broadcast_to(resident * chip.t_neuron_ns, ops.shape),
            reads * chip.t_read_ns,
            sent * chip.t_spike_ns,
        ]
    )  # [4, steps, cores]
    core = terms.max(axis=0)
    step_ns = core.max(axis=1)
    which = terms[:, np.arange(steps), core.argmax(axis=1)].argmax(axis=0)  # bound of the busiest
    total = int(inflow.sum())
    sops, macs = (total, 0) if spikes else (0, total)
    return LayerEstimate(
        name=n.name,
        op=n.op.name,
        input="spikes" if spikes else "real",
        in_rate=float(np.count_nonzero(x)) / x.size if spikes else None,
        fire_rate=float(fired.mean()) if fired is not None else None,
        neurons=count,
        cores=cores,
        sops=sops,
        macs=macs,
        energy_pj=sops * chip.energy.e_ac_pj + macs * chip.energy.e_mac_pj,
        latency_ns=float(step_ns.sum()),
        bound=TERMS[int(np.bincount(which, weights=step_ns, minlength=len(TERMS)).argmax())],
    )


def predict_file(
    model: str | Path, spec: DeviceSpec, sample: str | Path | None, precision: str | None = None
) -> Estimate:
    """`hwlat predict` on a neuromorphic device: the model file, measured on the sample file."""
    chip = Neuromorphic.from_spec(spec, precision)
    g = load(model)
    if sample is None:
        shapes = ", ".join(
            f"{i} {'x'.join(map(str, g.values[i].shape or ('?',)))} {g.values[i].sig.dtype}"
            for i in g.inputs
        )
        raise InvalidInputError(
            f"device '{spec.name}' estimates from measured spikes: give a sample "
            f"input with --input sample.npy ({shapes})"
        )
    est = estimate(g, load_sample(Path(sample), g), chip, device=spec.name, threads=spec.threads)
    return replace(est, model=Path(model).name)


class NeuromorphicRunner(Runner):
    """The device as a runner: whole models on a seeded random input (no sample to hand)."""

    pipeline = "neuromorphic"

    def __init__(self, spec: DeviceSpec):
        self.spec = spec
        self.chip = Neuromorphic.from_spec(spec)

    def environment(self) -> Environment:
        c = self.chip
        return Environment(
            self.spec.description,
            self.spec.threads,
            {
                "model": "neuromorphic",
                "precision": c.precision,
                "cores": c.cores,
                "neurons_per_core": c.neurons_per_core,
            },
        )

    def unsupported(self, ops: set[str]) -> set[str]:
        return set()

    def time_kernel(self, proto: onnx.ModelProto) -> Timing:
        raise InvalidInputError(
            f"device '{self.spec.name}' estimates whole spiking models from their "
            f"spikes, not kernels: use `hwlat predict MODEL.onnx --device "
            f"{self.spec.name} --input sample.npy`"
        )

    def time_model(self, path: str) -> Timing:
        g = load(path)
        est = estimate(
            g, seeded_sample(g), self.chip, device=self.spec.name, threads=self.spec.threads
        )
        return Timing((est.latency_ns * 1e-6,))
