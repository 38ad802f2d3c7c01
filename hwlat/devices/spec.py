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

from hwlat.errors import InvalidInputError
from hwlat.paths import home

DEVICE_DIR = Path(__file__).parent
RPC_RUNNER = "hwlat.runners.tvm_rpc:TvmRpcRunner"
# how `hwlat predict` estimates a model, by the device's runtime: spiking hardware from the spikes a
# sample input fires; an analytic (roofline) device from its formulas; every other device from
# its latency table
PREDICTION_ROUTES = {"neuromorphic": "spikes", "roofline": "analytic"}
# where a device's kernel boundaries lie: the fusion rule sets a device file's `fusion` names
# (hwlat.graph.fuse.RULE_SETS holds their rules): "default", what onnxruntime and TVM's own
# lowering run as one kernel; "tvm-cpu", also a MobileNet block's convs as one kernel and
# DenseNet's BN + ReLU in its 1x1 convs (a dense block's concats no kernel), as hwlat's x86-64
# TVM lowering runs them
FUSION_RULE_SETS = ("default", "tvm-cpu")


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
    fusion: str = "default"  # the kernel boundaries of the device's runtime: FUSION_RULE_SETS
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
    if raw.get("fusion", "default") not in FUSION_RULE_SETS:
        raise InvalidInputError(f"{path}: 'fusion' must name a rule set ({', '.join(FUSION_RULE_SETS)}), "
                                f"got {raw['fusion']!r}")
    if not isinstance(raw.get("threads", 1), int) or raw.get("threads", 1) < 1:
        raise InvalidInputError(f"{path}: 'threads' must be a positive integer, got {raw.get('threads')!r}")
    measure = raw.pop("measure", {})
    m_allowed = {f.name for f in fields(MeasureSpec)}
    if not isinstance(measure, dict) or set(measure) - m_allowed:
        raise InvalidInputError(f"{path}: [measure] takes {', '.join(sorted(m_allowed))}")
    return DeviceSpec(**raw, measure=MeasureSpec(**measure), source=str(path))


LINT_CONFIG = "ruff.toml"  # the package's import rules, beside the device files: not a device
TABLE_ONLY = "table"  # the runtime of a device known only from the table's entries
_extra_files: list[Path] = []  # --device-file PATHs given to this command


def user_device_dir() -> Path:
    """$HWLAT_HOME/devices: the user's own device files, read beside the shipped ones."""
    return home() / "devices"


def add_device_file(path: Path) -> DeviceSpec:
    """Read `path` as a device file (validated as the shipped ones) for the rest of this command."""
    spec = parse_device(Path(path))
    _extra_files.append(Path(path))
    return spec


def clear_device_files() -> None:
    _extra_files.clear()


def list_devices(directory: Path | None = None) -> list[DeviceSpec]:
    """The device files of `directory`; by default the shipped ones, then $HWLAT_HOME/devices,
    then those given with --device-file. A name defined twice is refused, naming both files."""
    if directory is not None:
        return [parse_device(p) for p in sorted(directory.glob("*.toml")) if p.name != LINT_CONFIG]
    paths = [p for p in sorted(DEVICE_DIR.glob("*.toml")) if p.name != LINT_CONFIG]
    user = user_device_dir()
    if user.is_dir():
        paths += sorted(user.glob("*.toml"))
    paths += [p for p in _extra_files if p.resolve() not in {q.resolve() for q in paths}]
    specs: dict[str, DeviceSpec] = {}
    for p in paths:
        spec = parse_device(p)
        if spec.name in specs:
            raise InvalidInputError(f"device '{spec.name}' is defined twice: {specs[spec.name].source} "
                                    f"and {p}; rename one")
        specs[spec.name] = spec
    return list(specs.values())


def find_device(name: str, directory: Path | None = None) -> DeviceSpec | None:
    """The device file named `name`, or None."""
    return next((s for s in list_devices(directory) if s.name == name), None)


def table_only_device(name: str) -> DeviceSpec:
    """A device with no file, known from its table entries (`hwlat lut fit`, `lut import`): it
    answers queries (predict, search, nas predict) and cannot be profiled."""
    return DeviceSpec(name=name, runtime=TABLE_ONLY, runner="", source="table",
                      description="table-only: entries from `hwlat lut fit` or `lut import`")


def fusion_of(name: str) -> str:
    """The fusion rule set of the device named `name`; "default" for a device known only from
    its table (no file says where its kernels' boundaries lie)."""
    spec = find_device(name)
    return spec.fusion if spec is not None else "default"


def load_device(name: str, directory: Path | None = None) -> DeviceSpec:
    spec = find_device(name, directory)
    if spec is not None:
        return spec
    known = ", ".join(s.name for s in list_devices(directory))
    raise InvalidInputError(f"unknown device '{name}'; known: {known} (`hwlat devices`; add one "
                            f"with --device-file PATH or {user_device_dir()}/NAME.toml)")
