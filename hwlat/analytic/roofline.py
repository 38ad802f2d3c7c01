"""An analytic device: each kernel's latency from the roofline model, for hardware not at hand.

    latency = max(2 * MACs / peak FLOP/s, bytes moved / memory bandwidth) + launch overhead

MACs and bytes come from `graph.cost.kernel_cost`; the figures from the device file's [target]
table (kind = "roofline"), published peaks with their sources. Peaks are never reached, so the
model is a lower bound; it is a prior for devices nobody has profiled yet, and every value it
gives is recorded as an estimate: one sample, pipeline "roofline".
"""

from __future__ import annotations

import math
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx

from hwlat.devices.measure import Timing
from hwlat.devices.spec import DeviceSpec, load_device
from hwlat.errors import InvalidInputError, InvalidModelError
from hwlat.graph import Graph, Kernel, KernelKind, fuse, load
from hwlat.graph.cost import kernel_cost, key_cost
from hwlat.runners.base import Environment, Runner


@dataclass(frozen=True)
class Roofline:
    peak_gflops: float  # arithmetic peak, GFLOP/s (an FMA is 2 FLOP)
    bandwidth_gbs: float  # memory bandwidth, GB/s (1e9 bytes)
    launch_us: float = 0.0  # fixed cost per kernel: launch, dispatch, synchronization

    @classmethod
    def from_spec(cls, spec: DeviceSpec) -> Roofline:
        t = dict(spec.target)
        if t.pop("kind", None) != "roofline":
            raise InvalidInputError(f"device '{spec.name}': a roofline device needs [target] kind = \"roofline\"")
        names = {"peak_gflops", "bandwidth_gbs", "launch_us"}
        if set(t) - names or not {"peak_gflops", "bandwidth_gbs"} <= set(t):
            raise InvalidInputError(f"device '{spec.name}': [target] of a roofline device takes "
                                    f"peak_gflops, bandwidth_gbs and optionally launch_us; got {', '.join(sorted(t))}")
        for name, v in t.items():
            positive = name != "launch_us"
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) \
                    or v < 0 or (positive and v == 0):
                raise InvalidInputError(f"device '{spec.name}': {name} must be a "
                                        f"{'positive' if positive else 'non-negative'} number, got {v!r}")
        return cls(**{k: float(v) for k, v in t.items()})

    def kernel_ms(self, g: Graph, k: Kernel) -> float:
        if k.kind is KernelKind.VIEW:  # runtimes alias the buffer: no work, no launch
            return 0.0
        c = kernel_cost(g, k)
        if c.macs is None or c.bytes_read is None or c.bytes_written is None:
            raise InvalidModelError(f"roofline: the work of kernel {k.key.text()} is unknown "
                                    "(a dimension is not fixed); export with fixed shapes")
        return self.work_ms(c.macs, c.bytes_read + c.bytes_written)

    def work_ms(self, macs: float, bytes_moved: float) -> float:
        """The roofline latency of a (non-view) kernel doing `macs` and moving `bytes_moved`."""
        compute_s = 2 * macs / (self.peak_gflops * 1e9)
        memory_s = bytes_moved / (self.bandwidth_gbs * 1e9)
        return max(compute_s, memory_s) * 1e3 + self.launch_us * 1e-3


class RooflineEstimator:
    """Table misses estimated by a roofline device: its latency for the kernel's work, scaled by
    the median measured / roofline ratio of the target device's entries of the same kind (all
    kinds when none; unscaled when the table has none of the device's kernels with known work).
    The scale turns a lower bound into the device's typical efficiency; every value says so."""

    def __init__(self, roof: Roofline, name: str, store, device: str):
        self.roof, self.name = roof, name
        feats = store.features()
        ratios: dict[str, list[float]] = {}
        for e in store.entries(device):
            f = feats.get(e.key)
            if f is None or e.kind == KernelKind.VIEW.value or e.median_ms <= 0:
                continue
            ratios.setdefault(e.kind, []).append(
                e.median_ms / self.roof.work_ms(float(f[1] or 0), float(f[2] or 0)))
        self.scales = {kind: (statistics.median(r), len(r)) for kind, r in ratios.items()}
        every = [x for r in ratios.values() for x in r]
        self.overall = (statistics.median(every), len(every)) if every else None

    def estimate(self, kind: str, cost) -> tuple[float, str]:
        if kind == KernelKind.VIEW.value:
            return 0.0, f"estimate: {self.name} (a view moves nothing)"
        if cost.macs is None or cost.bytes_read is None:
            raise InvalidModelError(f"{self.name}: a kernel's work is unknown (a dimension is "
                                    "not fixed); export with fixed shapes")
        ms = self.roof.work_ms(cost.macs, cost.bytes_read + (cost.bytes_written or 0))
        scale, scope = self.scales.get(kind, self.overall), kind
        if kind not in self.scales:
            scope = "all kinds"
        if scale is None:
            return ms, f"estimate: {self.name} roofline, unscaled (no measured kernels)"
        return ms * scale[0], (f"estimate: {self.name} roofline x{scale[0]:.3g} (median of "
                               f"{scale[1]} measured {scope} kernels)")


class RooflineRunner(Runner):
    pipeline = "roofline"

    def __init__(self, spec: DeviceSpec):
        self.spec = spec
        self.roof = Roofline.from_spec(spec)

    def environment(self) -> Environment:
        r = self.roof
        return Environment(self.spec.description, self.spec.threads,
                           {"model": "roofline", "peak_gflops": r.peak_gflops,
                            "bandwidth_gbs": r.bandwidth_gbs, "launch_us": r.launch_us})

    def unsupported(self, ops: set[str]) -> set[str]:
        return set()  # any op with a known shape has a cost: one without a MAC formula moves bytes

    def time_kernel(self, proto: onnx.ModelProto) -> Timing:
        with tempfile.TemporaryDirectory(prefix="hwlat-roofline-") as tmp:
            path = Path(tmp) / "kernel.onnx"
            onnx.save(proto, str(path))
            return self.time_model(str(path))

    def time_model(self, path: str) -> Timing:
        g = load(path)
        return Timing((sum(self.roof.kernel_ms(g, k) for k in fuse(g, self.spec.fusion)),))


def roofline_of(name: str) -> Roofline:
    """The Roofline of the device named `name`, which must be an analytic roofline device."""
    spec = load_device(name)
    if spec.runtime != "roofline":
        raise InvalidInputError(f"device '{name}' is not a roofline device (runtime "
                                f"'{spec.runtime}'); name one of kind roofline, e.g. roofline-sd855")
    return Roofline.from_spec(spec)


def fallback_estimator(spec: DeviceSpec, store, override: str | None = None
                       ) -> RooflineEstimator | None:
    """The estimator of table misses that the device file names (`fallback = "roofline-..."`)
    or `override` names; None when neither does (misses then use the measured-entry fits)."""
    name = override or spec.fallback
    if name is None:
        return None
    return RooflineEstimator(roofline_of(name), name, store, spec.name)


def roofline_reference(name: str, keys) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """A roofline device's latency of each kernel key (text -> KernelKey), and each key's
    (MACs, bytes moved): a reference table for a few-shot fit where nothing was profiled."""
    roof = roofline_of(name)
    reference, features = {}, {}
    for text, key in keys.items():
        c = key_cost(key)
        moved = c.bytes_read + c.bytes_written
        reference[text] = 0.0 if key.kind is KernelKind.VIEW else roof.work_ms(c.macs, moved)
        features[text] = (float(c.macs), float(moved))
    return reference, features
