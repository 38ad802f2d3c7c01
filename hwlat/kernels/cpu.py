"""The CPU a build targets, as the hand-scheduled kernels size their tiles by it: vector width,
vector registers, and the L1d / L2 cache of one core.

Derived from a TVM llvm target (its mtriple, mcpu and mattr, through the features LLVM gives
that CPU): AVX-512 (avx512f) 512-bit vectors and 32 zmm registers, AVX2 256 bits and 16 ymm,
NEON 128 bits and 32 registers, other x86 (SSE) 128 bits and 16. Cache sizes are read from
/sys/devices/system/cpu/cpu0/cache where the target is this machine's CPU (the llvm target
`make_target("host")` gives: no other triple, mcpu the CPU LLVM detects here); elsewhere they
are conservative defaults (32 KB L1d, 512 KB L2).

A leaf module: it imports TVM only, no other part of hwlat. `AVX2` is the description the
kernels were tuned for (an AMD EPYC znver3); kernels built without a description use it.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass

import tvm

DEFAULT_L1D = 32 * 1024  # bytes, where the target is not this machine
DEFAULT_L2 = 512 * 1024
_CACHE_DIR = "/sys/devices/system/cpu/cpu0/cache"


@dataclass(frozen=True)
class CpuInfo:
    """What a kernel's schedule needs to know of the CPU it runs on."""

    isa: str  # "avx512", "avx2", "sse", "neon", "generic"
    vector_bits: int  # width of one vector register
    vector_registers: int  # architectural vector registers
    l1d_bytes: int = DEFAULT_L1D  # per core
    l2_bytes: int = DEFAULT_L2  # per core

    def __post_init__(self):
        if self.vector_bits not in (128, 256, 512) or self.vector_registers < 8:
            raise ValueError(f"bad CPU description {self}")
        if self.l1d_bytes < 1024 or self.l2_bytes < self.l1d_bytes:
            raise ValueError(f"bad cache sizes in {self}")

    @property
    def fp32_lanes(self) -> int:
        """float32 values in one vector register."""
        return self.vector_bits // 32

    @property
    def avx512(self) -> bool:
        return self.isa == "avx512"


AVX2 = CpuInfo("avx2", 256, 16)  # the kernels' reference (znver3: 32 KB L1d, 512 KB L2)
AVX512 = CpuInfo("avx512", 512, 32)


def _host_arch() -> str:
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def _size(text: str) -> int:
    """'48K' / '2048K' / '1M' -> bytes."""
    text = text.strip().upper()
    scale = {"K": 1024, "M": 1024 * 1024, "G": 1024 ** 3}.get(text[-1:], 1)
    return int(text.rstrip("KMG")) * scale


@functools.lru_cache(maxsize=1)
def host_caches(cache_dir: str = _CACHE_DIR) -> tuple[int, int]:
    """(L1d, L2) bytes of this machine's first core, from sysfs; the defaults where it does not
    say (another OS, a container hiding it)."""
    l1d, l2 = DEFAULT_L1D, DEFAULT_L2
    try:
        entries = sorted(os.listdir(cache_dir))
    except OSError:
        return l1d, l2
    for name in entries:
        if not name.startswith("index"):
            continue
        try:
            with open(os.path.join(cache_dir, name, "level")) as f:
                level = int(f.read())
            with open(os.path.join(cache_dir, name, "type")) as f:
                kind = f.read().strip()
            with open(os.path.join(cache_dir, name, "size")) as f:
                size = _size(f.read())
        except (OSError, ValueError):
            continue
        if level == 1 and kind in ("Data", "Unified"):
            l1d = size
        elif level == 2 and kind in ("Data", "Unified"):
            l2 = size
    return l1d, l2


def _attrs(target: tvm.target.Target) -> dict:
    return {k: target.attrs[k] for k in ("mtriple", "mcpu") if k in target.attrs}


def is_host(target: tvm.target.Target) -> bool:
    """Whether the llvm target is this machine's CPU (its caches are the ones sysfs lists)."""
    if target.kind.name != "llvm":
        return False
    a = _attrs(target)
    arch = str(a.get("mtriple", "")).split("-")[0]
    if arch and arch != _host_arch():
        return False
    mcpu = str(a.get("mcpu", ""))
    return mcpu == str(tvm.target.codegen.llvm_get_system_cpu())


def _from_features(target: tvm.target.Target) -> tuple[str, int, int]:
    features = set(tvm.target.codegen.llvm_get_cpu_features(target))
    arch = str(target.attrs.get("mtriple", "") or _host_arch()).split("-")[0]
    if arch.startswith(("aarch64", "arm64")) or "neon" in features:
        return "neon", 128, 32
    if "avx512f" in features:
        return "avx512", 512, 32
    if "avx2" in features or "avx" in features:
        return "avx2", 256, 16
    if arch in ("x86_64", "i386", "i686"):
        return "sse", 128, 16
    return "generic", 128, 16


def cpu_of(target: tvm.target.Target | dict | None) -> CpuInfo:
    """The CPU description of an llvm target (a Target or its dict); AVX2 for None and for
    targets that are not llvm (a GPU target's host is asked for by its caller)."""
    if target is None:
        return AVX2
    if isinstance(target, dict):
        target = tvm.target.Target(target)
    if target.kind.name != "llvm":
        return AVX2
    key = str(target)
    if key not in _DESCRIBED:
        isa, bits, regs = _from_features(target)
        l1d, l2 = host_caches() if is_host(target) else (DEFAULT_L1D, DEFAULT_L2)
        _DESCRIBED[key] = CpuInfo(isa, bits, regs, l1d, l2)
    return _DESCRIBED[key]


_DESCRIBED: dict[str, CpuInfo] = {}  # target text -> its description


def current() -> CpuInfo:
    """The description of the target being built for (`with target:`), AVX2 when none."""
    return cpu_of(tvm.target.Target.current(allow_none=True))
