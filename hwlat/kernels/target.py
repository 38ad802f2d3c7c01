"""The target a kernel is built for, as kernels see it: TVM target kind, CPU architecture and
thread count; and this machine's CPU target, which kernels built and run here use.

A leaf: it imports tvm and nothing of hwlat but errors, so both hwlat.kernels and
hwlat.lowering build on it (lowering turns device files and target kinds into targets).
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass
from typing import Any

import tvm


def system_cpu() -> str:
    """The CPU LLVM detects on this machine (an llvm target's `mcpu`)."""
    return str(tvm.target.codegen.llvm_get_system_cpu())


def host_arch() -> str:
    """This machine's CPU architecture as target triples name it (x86_64, aarch64, ...)."""
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def host_target_dict(base: dict[str, Any] | None = None, threads: int | None = None) -> dict[str, Any]:
    """This machine's CPU as an llvm target dict, `base` keys overriding the defaults."""
    target = {"kind": "llvm", **(base or {})}
    if target.get("mcpu", "host") == "host":  # without mcpu TVM emits generic x86-64 code
        target["mcpu"] = system_cpu()
    # the threads it will run with: MetaSchedule sizes parallel loops by it, `run` starts that many
    target.setdefault("num-cores", threads or os.cpu_count() or 1)
    return target


def host_target(threads: int | None = None) -> tvm.target.Target:
    """This machine's CPU target (what kernels compiled and run in-process are built for)."""
    return tvm.target.Target(host_target_dict(None, threads))


@dataclass(frozen=True)
class TargetInfo:
    """What a target is: TVM kind ("llvm" for CPU code, "cuda", ...), for CPU targets the
    architecture of its triple (this machine's when it names none), and its thread count."""

    kind: str
    arch: str | None  # x86_64, aarch64, ...; None for a non-CPU target
    threads: int | None

    @property
    def is_cpu(self) -> bool:
        return self.kind == "llvm"

    @staticmethod
    def of(target: tvm.target.Target | dict[str, Any]) -> TargetInfo:
        t = target if isinstance(target, dict) else target_dict(target)
        kind = str(t.get("kind"))
        arch = None
        if kind == "llvm":
            arch = str(t.get("mtriple", "")).split("-")[0] or host_arch()
        cores = t.get("num-cores")
        return TargetInfo(kind, arch, int(cores) if cores is not None else None)


def target_dict(target: tvm.target.Target) -> dict[str, Any]:
    """The target as plain JSON data (its text is JSON): compared by value, not key order."""
    return json.loads(str(target))
