"""Compilation targets by kind: this CPU, 64-bit Arm Linux (cross-compiled), NVIDIA GPUs.

TVM 0.27 takes targets only as dicts (`"llvm -mcpu=..."` strings are refused); a device
program's host code is the `"host"` key of its target.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import tvm

from hwlat.errors import InvalidInputError, one_line
from hwlat.kernels.target import TargetInfo, host_arch, host_target_dict, system_cpu, target_dict

if TYPE_CHECKING:
    from hwlat.devices.spec import DeviceSpec

__all__ = ["TARGET_KINDS", "describe_target", "find_linker", "kind_of", "linker_names",
           "make_target", "resolve_target", "runs_here", "system_cpu", "target_dict"]


def _host(base: dict[str, Any], threads: int | None) -> dict[str, Any]:
    return host_target_dict(base, threads)


def _aarch64(base: dict[str, Any], threads: int | None) -> dict[str, Any]:
    return {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"], **base}


def _cuda(base: dict[str, Any], threads: int | None) -> dict[str, Any]:
    return {"kind": "cuda", "arch": "sm_90", **base, "host": _host(base.get("host", {}), threads)}


# kind -> target dict; `base` is the device file's [target] table (host) or overrides
TARGET_KINDS: dict[str, Callable[[dict[str, Any], int | None], dict[str, Any]]] = {
    "host": _host,  # this machine's CPU, with the features LLVM detects here
    "aarch64": _aarch64,  # 64-bit Arm Linux with NEON, cross-compiled
    "cuda": _cuda,  # NVIDIA GPU (sm_90 unless "arch" says otherwise); host code for this CPU
}


def make_target(kind: str = "host", base: dict[str, Any] | None = None,
                threads: int | None = None) -> tvm.target.Target:
    """The target of a kind, `base` keys overriding the defaults."""
    if kind not in TARGET_KINDS:
        raise InvalidInputError(f"unknown target kind '{kind}'; known: {', '.join(TARGET_KINDS)}")
    target = TARGET_KINDS[kind](dict(base or {}), threads)
    try:
        return tvm.target.Target(target)
    except Exception as e:
        raise InvalidInputError(f"bad {kind} target {target} ({one_line(e, 200)})") from e


def resolve_target(target: str | dict[str, Any] | tvm.target.Target | None = None, *,
                   device: DeviceSpec | None = None, kind: str | None = None,
                   threads: int | None = None, as_written: bool = False) -> tvm.target.Target:
    """The one way hwlat turns what it is given into a TVM target:

    - `target`: a kind name from TARGET_KINDS (with `threads`), a target dict, or a Target;
    - `device`: a TVM device file's target (`kind` None or the device's own kind); another kind
      asked of it gets that kind's defaults, e.g. `--device cpu-tvm --target-kind aarch64`.
      `as_written=True` takes the file's [target] table as it stands (only mcpu "host" becomes
      this machine's CPU), as the RPC runner builds for a remote device;
    - neither: `kind` (default host) with `threads`."""
    if target is not None:
        if device is not None or kind is not None:
            raise ValueError("resolve_target: a target, or a device and/or a kind, not both")
        if isinstance(target, tvm.target.Target):
            return target
        if isinstance(target, str):
            return make_target(target, None, threads)
        try:
            return tvm.target.Target(dict(target))
        except Exception as e:
            raise InvalidInputError(f"bad target {target} ({one_line(e, 200)})") from e
    if device is None:
        return make_target(kind or "host", None, threads)
    if as_written:
        return _as_written(device)
    return _for_device(device, kind)


def _as_written(spec: DeviceSpec) -> tvm.target.Target:
    """The device file's target dict; mcpu "host" becomes the CPU LLVM detects here."""
    target = dict(spec.target or {"kind": "llvm"})
    if target.get("mcpu") == "host":
        target["mcpu"] = system_cpu()
    try:
        return tvm.target.Target(target)
    except Exception as e:
        raise InvalidInputError(f"device '{spec.name}': bad target {target} ({one_line(e, 200)})") from e


def _for_device(spec: DeviceSpec, kind: str | None = None) -> tvm.target.Target:
    if spec.runtime != "tvm":
        raise InvalidInputError(f"device '{spec.name}' runs {spec.runtime}; compiling needs a TVM "
                                "device (runtime = \"tvm\"), e.g. cpu-tvm")
    own = kind_of(spec.target or {"kind": "llvm"})
    if own not in TARGET_KINDS:
        raise InvalidInputError(f"device '{spec.name}': its {own} target is none of the kinds "
                                f"{', '.join(TARGET_KINDS)}")
    if kind is None or kind == own:
        return make_target(own, spec.target, spec.threads)
    return make_target(kind, None, spec.threads)


def runs_here(target: tvm.target.Target) -> bool:
    """Whether code for `target` runs on this machine (CPU code for another ISA does not)."""
    if target.kind.name == "cuda":
        return bool(tvm.cuda(0).exist)
    return kind_of(target) == "host"


def linker_names(target: tvm.target.Target) -> list[str]:
    """The compilers that could link a shared library for `target`, first choice first: none
    when the host's own does (TVM's default); else $HWLAT_CROSS_CC (as the TVM RPC runner
    takes it), or `<triple>-g++`, `<triple>-gcc`."""
    if target.kind.name != "llvm" or runs_here(target):
        return []
    if os.environ.get("HWLAT_CROSS_CC"):
        return [os.environ["HWLAT_CROSS_CC"]]
    triple = target.attrs["mtriple"]
    return [f"{triple}-g++", f"{triple}-gcc"]


def find_linker(names: list[str]) -> str | None:
    return next((p for p in map(shutil.which, names) if p), None)


def kind_of(target: tvm.target.Target | dict[str, Any]) -> str:
    """Its TARGET_KINDS name; for a target outside them, its CPU architecture or TVM kind."""
    info = TargetInfo.of(target)
    if not info.is_cpu:
        return info.kind
    return "host" if info.arch == host_arch() else str(info.arch)


def describe_target(t: dict[str, Any]) -> str:
    """kind and the keys a user sets (features are derived from them)."""
    keys = [k for k in sorted(t) if k not in ("kind", "tag", "keys", "host") and not k.startswith("feature.")]
    parts = [str(t.get("kind"))] + [f"{k}={_short(t[k])}" for k in keys]
    if "host" in t:
        parts.append(f"host=({describe_target(t['host'])})")
    return " ".join(parts)


def _short(v: Any) -> str:
    return ",".join(map(str, v)) if isinstance(v, list) else str(v)
