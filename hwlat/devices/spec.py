"""Device descriptions: TOML files validated into frozen dataclasses.

A device names its runner by import path ("package.module:Class"); `hwlat.runners` loads it only
when something is timed, so listing devices or querying a table never imports onnxruntime or tvm.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from hwlat import home
from hwlat.errors import InvalidInputError

DEVICE_DIR = Path(__file__).parent
RPC_RUNNER = "hwlat.runners.tvm_rpc:TvmRpcRunner"
# how `hwlat predict` estimates a model, by the device's runtime: spiking hardware from the spikes a
# sample input fires; an analytic (roofline) device from its formulas; every other device from
# its latency table
PREDICTION_ROUTES = {"neuromorphic": "spikes", "roofline": "analytic"}


@dataclass(frozen=True)
class MeasureSpec:
    warmup: int = 5
    repeats: int = 25
    max_cv: float = 0.10
    max_rounds: int = 3

    def __post_init__(self):
        if self.warmup < 0 or self.repeats < 3 or self.max_rounds < 1 or not 0 < self.max_cv < 10:
            raise InvalidInputError(f"measure settings out of range: {self}")


@dataclass(frozen=True)
class DeviceSpec:
    name: str
    description: str
    runtime: str
    runner: str  # "package.module:Class"
    threads: int = 1
    pipeline: str | None = None
    target: dict[str, Any] = field(default_factory=dict)
    measure: MeasureSpec = field(default_factory=MeasureSpec)
    fallback: str | None = None  # an analytic (roofline) device that estimates table misses
    # a TVM device's MetaSchedule database: absolute, or relative to $HWLAT_HOME
    tuning_db: str | None = None
    source: str = ""  # the file it came from

    def __hash__(self) -> int:
        return hash(self.name)

    @property
    def prediction_route(self) -> str:
        """How the device predicts a model: "spikes", "analytic" or "table" (PREDICTION_ROUTES)."""
        return PREDICTION_ROUTES.get(self.runtime, "table")

    @property
    def timed_over_rpc(self) -> bool:
        """Its kernels are built here and timed on servers registered with a TVM RPC tracker."""
        return self.runner == RPC_RUNNER

    def tuning_db_path(self) -> Path | None:
        if self.tuning_db is None:
            return None
        path = Path(os.path.expandvars(self.tuning_db)).expanduser()
        return path if path.is_absolute() else home() / path


def parse_device(path: Path) -> DeviceSpec:
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise InvalidInputError(f"{path}: not a readable device file ({e})") from e
    allowed = {f.name for f in fields(DeviceSpec)} - {"source"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise InvalidInputError(f"{path}: unknown keys {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    for key in ("name", "description", "runtime", "runner"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise InvalidInputError(f"{path}: '{key}' must be a non-empty string")
    if "tuning_db" in raw and (not isinstance(raw["tuning_db"], str) or not raw["tuning_db"]):
        raise InvalidInputError(f"{path}: 'tuning_db' must be a directory path, got {raw['tuning_db']!r}")
    if "fallback" in raw and (not isinstance(raw["fallback"], str) or not raw["fallback"]):
        raise InvalidInputError(f"{path}: 'fallback' must name a device, got {raw['fallback']!r}")
    if not isinstance(raw.get("threads", 1), int) or raw.get("threads", 1) < 1:
        raise InvalidInputError(f"{path}: 'threads' must be a positive integer, got {raw.get('threads')!r}")
    measure = raw.pop("measure", {})
    m_allowed = {f.name for f in fields(MeasureSpec)}
    if not isinstance(measure, dict) or set(measure) - m_allowed:
        raise InvalidInputError(f"{path}: [measure] takes {', '.join(sorted(m_allowed))}")
    return DeviceSpec(**raw, measure=MeasureSpec(**measure), source=str(path))


LINT_CONFIG = "ruff.toml"  # the package's import rules, beside the device files: not a device


def list_devices(directory: Path = DEVICE_DIR) -> list[DeviceSpec]:
    return [parse_device(p) for p in sorted(directory.glob("*.toml")) if p.name != LINT_CONFIG]


def load_device(name: str, directory: Path = DEVICE_DIR) -> DeviceSpec:
    for spec in list_devices(directory):
        if spec.name == name:
            return spec
    known = ", ".join(s.name for s in list_devices(directory))
    raise InvalidInputError(f"unknown device '{name}'; known: {known}")
