"""An analytic device: each kernel's latency from the roofline model, for hardware not at hand.

    latency = max(2 * MACs / peak FLOP/s, bytes moved / memory bandwidth) + launch overhead

MACs and bytes come from `graph.cost.kernel_cost`; the figures from the device file's [target]
table (kind = "roofline"), published peaks with their sources. Peaks are never reached, so the
model is a lower bound; it is a prior for devices nobody has profiled yet, and every value it
gives is recorded as an estimate: one sample, pipeline "roofline".
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx

from hwlat.devices.measure import Timing
from hwlat.devices.spec import DeviceSpec
from hwlat.errors import InvalidInputError, InvalidModelError
from hwlat.graph import Graph, Kernel, KernelKind, fuse, load
from hwlat.graph.cost import kernel_cost


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
        compute_s = 2 * c.macs / (self.peak_gflops * 1e9)
        memory_s = (c.bytes_read + c.bytes_written) / (self.bandwidth_gbs * 1e9)
        return max(compute_s, memory_s) * 1e3 + self.launch_us * 1e-3


class RooflineRunner:
    pipeline = "roofline"

    def __init__(self, spec: DeviceSpec):
        self.spec = spec
        self.roof = Roofline.from_spec(spec)

    def environment(self) -> dict:
        r = self.roof
        return {"cpu": self.spec.description, "threads": self.spec.threads,
                "versions": {"model": "roofline", "peak_gflops": r.peak_gflops,
                             "bandwidth_gbs": r.bandwidth_gbs, "launch_us": r.launch_us}}

    def unsupported(self, ops: set[str]) -> set[str]:
        return set()  # any op with a known shape has a cost: one without a MAC formula moves bytes

    def time_kernel(self, proto: onnx.ModelProto) -> Timing:
        with tempfile.TemporaryDirectory(prefix="hwlat-roofline-") as tmp:
            path = Path(tmp) / "kernel.onnx"
            onnx.save(proto, str(path))
            return self.time_model(str(path))

    def time_model(self, path: str) -> Timing:
        g = load(path)
        return Timing((sum(self.roof.kernel_ms(g, k) for k in fuse(g)),))
