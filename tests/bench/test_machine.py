"""What a benchmark report says it ran on: a VM's CPU is often named only "AMD EPYC", so the
report adds the family, model and the instruction sets that decide the numbers."""

from __future__ import annotations

from pathlib import Path

from rpdetect.bench.machine import cpu_description, cpu_isa, machine_info

ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx fma avx2 bmi2

processor\t: 1
cpu family\t: 99
model\t\t: 99
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx fma avx2 bmi2
"""

ZEN4 = ZEN3.replace("model\t\t: 1\n", "model\t\t: 17\n").replace(
    "avx2 bmi2", "avx2 bmi2 avx512f avx512_vnni avx512_bf16")


def _proc(tmp_path: Path, name: str, cpuinfo: str) -> Path:
    proc = tmp_path / name
    proc.mkdir()
    (proc / "cpuinfo").write_text(cpuinfo)
    return proc


def test_two_cpus_of_one_name_are_told_apart_by_family_model_and_isa(tmp_path):
    zen3 = machine_info(proc=_proc(tmp_path, "zen3", ZEN3))
    zen4 = machine_info(proc=_proc(tmp_path, "zen4", ZEN4))
    assert zen3["cpu_model"] == zen4["cpu_model"] == "AMD EPYC"
    assert zen3["cpu_family_model"] == "family 25, model 1"  # the first CPU's, not the last
    assert zen4["cpu_family_model"] == "family 25, model 17"
    assert cpu_description(zen3) == \
        "AMD EPYC (family 25, model 1; AVX2; no AVX-512, no VNNI, no BF16, no AMX)"
    assert cpu_description(zen4) == \
        "AMD EPYC (family 25, model 17; AVX2, AVX-512, VNNI, BF16; no AMX)"


def test_a_cpu_without_x86_flags_is_described_by_its_name_alone(tmp_path):
    arm = machine_info(proc=_proc(tmp_path, "arm", "processor\t: 0\nHardware\t: BCM2835\n"))
    assert arm["cpu_family_model"] is None and arm["cpu_isa"] == ""
    assert cpu_description(arm) == "BCM2835"
    assert cpu_isa({"avx_vnni", "avx2", "amx_int8"}) == "AVX2, VNNI, AMX; no AVX-512, no BF16"
    # a report written before these keys existed still reads
    assert cpu_description({"cpu_model": "Intel Xeon"}) == "Intel Xeon"
