"""kernels/cpu.py: the CPU description derived from llvm targets (ISA, vector width, registers)
and the cache sizes read from sysfs for this machine's target only."""

from __future__ import annotations

import pytest
import tvm

from hwlat.kernels import cpu
from hwlat.lowering.targets import make_target


def target(**attrs) -> tvm.target.Target:
    return tvm.target.Target({"kind": "llvm", **attrs})


@pytest.mark.parametrize("mcpu", ["haswell", "skylake", "znver3"])
def test_avx2_cpus(mcpu):
    c = cpu.cpu_of(target(mcpu=mcpu))
    assert (c.isa, c.vector_bits, c.fp32_lanes, c.vector_registers) == ("avx2", 256, 8, 16)
    assert not c.avx512


@pytest.mark.parametrize("mcpu", ["skylake-avx512", "icelake-server", "sapphirerapids", "znver4"])
def test_avx512_cpus(mcpu):
    c = cpu.cpu_of(target(mcpu=mcpu))
    assert (c.isa, c.vector_bits, c.fp32_lanes, c.vector_registers) == ("avx512", 512, 16, 32)
    assert c.avx512


def test_mattr_turns_avx512_off():
    c = cpu.cpu_of(target(mcpu="skylake-avx512", mattr=["-avx512f"]))
    assert c.isa == "avx2" and c.fp32_lanes == 8


def test_neon_and_others():
    c = cpu.cpu_of(make_target("aarch64"))
    assert (c.isa, c.vector_bits, c.fp32_lanes, c.vector_registers) == ("neon", 128, 4, 32)
    assert cpu.cpu_of(None) == cpu.AVX2
    assert cpu.cpu_of(make_target("cuda")) == cpu.AVX2  # not an llvm target: the default
    assert cpu.cpu_of({"kind": "llvm", "mcpu": "haswell"}).isa == "avx2"  # a dict


def test_caches_only_for_this_machine():
    here = make_target("host", threads=1)
    assert cpu.is_host(here)
    assert (cpu.cpu_of(here).l1d_bytes, cpu.cpu_of(here).l2_bytes) == cpu.host_caches()
    other = target(mcpu="haswell" if tvm.target.codegen.llvm_get_system_cpu() != "haswell"
                   else "skylake")
    assert not cpu.is_host(other) and not cpu.is_host(make_target("aarch64"))
    assert (cpu.cpu_of(other).l1d_bytes, cpu.cpu_of(other).l2_bytes) == \
        (cpu.DEFAULT_L1D, cpu.DEFAULT_L2)


def test_current_is_the_target_in_scope():
    assert cpu.current() == cpu.AVX2
    with target(mcpu="skylake-avx512"):
        assert cpu.current().avx512
    with target(mcpu="haswell"):
        assert cpu.current().isa == "avx2"


def test_host_caches_from_sysfs(tmp_path):
    for i, (level, kind, size) in enumerate([(1, "Data", "48K"), (1, "Instruction", "32K"),
                                             (2, "Unified", "2048K"), (3, "Unified", "32M")]):
        d = tmp_path / f"index{i}"
        d.mkdir()
        (d / "level").write_text(f"{level}\n")
        (d / "type").write_text(f"{kind}\n")
        (d / "size").write_text(f"{size}\n")
    assert cpu.host_caches.__wrapped__(str(tmp_path)) == (48 * 1024, 2048 * 1024)
    assert cpu.host_caches.__wrapped__(str(tmp_path / "missing")) == \
        (cpu.DEFAULT_L1D, cpu.DEFAULT_L2)


def test_bad_descriptions_refused():
    with pytest.raises(ValueError):
        cpu.CpuInfo("avx2", 200, 16)
    with pytest.raises(ValueError):
        cpu.CpuInfo("avx2", 256, 16, l1d_bytes=64 * 1024, l2_bytes=32 * 1024)
