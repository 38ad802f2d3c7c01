"""What every runner offers: the `Runner` protocol and the `Environment` an entry records.

A runner times kernels (small ONNX models cut out of a network) and whole models on one device.
Two capabilities are optional, and a runner states whether it has them instead of being probed:

- `supports_in_model`: the runner can attribute a whole-model run to its kernels
  (`time_in_model`), so a kernel is timed inside its network; entries so measured carry
  `in_model_pipeline`. Such a runner is also an `InModelRunner`.
- `time_kernels`: many kernels at once, yielded as they finish. The default times them one after
  another with `time_kernel`; a runner with several devices (RPC) times them in parallel.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from hwlat.devices.measure import Timing
from hwlat.devices.spec import DeviceSpec

if TYPE_CHECKING:  # `hwlat rpc` and table queries import the runners package without onnx
    import onnx


@dataclass(frozen=True)
class Environment:
    """Where a runner measures: what every table entry it writes records (cpu, threads and the
    versions, stored as the JSON of `versions` with sorted keys)."""

    cpu: str
    threads: int
    versions: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"cpu": self.cpu, "threads": self.threads, "versions": dict(self.versions)}


@runtime_checkable
class Runner(Protocol):
    """Times kernels and models on the device `spec` describes."""

    spec: DeviceSpec
    pipeline: str  # recorded with every kernel timed alone
    supports_in_model: ClassVar[bool] = False

    def environment(self) -> Environment:
        """The machine and software versions the runner measures with."""
        ...

    def unsupported(self, ops: set[str]) -> set[str]:
        """The ops (qualnames) among `ops` the device cannot run."""
        ...

    def time_kernel(self, proto: onnx.ModelProto) -> Timing:
        ...

    def time_model(self, path: str) -> Timing:
        ...

    def time_kernels(self, protos: Sequence[onnx.ModelProto]) -> Iterator[tuple[int, Timing]]:
        """(index, timing) of every kernel, in the order they finish: one after another here."""
        return ((i, self.time_kernel(protos[i])) for i in range(len(protos)))


@runtime_checkable
class InModelRunner(Runner, Protocol):
    """A runner that times kernels inside whole-model runs (`supports_in_model` is True)."""

    in_model_pipeline: str  # recorded with every kernel timed inside its model

    def time_in_model(self, path: str, g, kernels) -> dict[int, list[float]]:
        """Per kernel (by index in `kernels`), its time in each run of the whole model at
        `path`; kernels that cannot be attributed are absent."""
        ...
