"""What this CPU can do, from /proc/cpuinfo (Linux; elsewhere nothing is known): the
instruction sets that decide rpdetect's CPU numbers, read by the benchmark's reports and by the
engine (an INT8 detector on a CPU whose ONNX Runtime kernels saturate, below)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["FULL_RANGE_NOTE", "VNNI_FLAGS", "cpu_flags", "cpu_isa", "cpuinfo_fields",
           "u8s8_saturates"]


def cpuinfo_fields(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, str]:
    """The ``key: value`` lines of the first CPU in ``cpuinfo`` (up to its first blank line),
    empty where it cannot be read."""
    fields: dict[str, str] = {}
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return fields
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags (``avx2``, ``avx512f``, ...), empty where ``cpuinfo`` has none."""
    return set(cpuinfo_fields(cpuinfo).get("flags", "").split())


# the instruction sets that decide this project's CPU numbers: the noise generator's build
# (AVX-512 or AVX2, rpdetect.engine._normal) and ONNX Runtime's INT8 kernels (VNNI, AMX); a VM
# often names its CPU only "AMD EPYC" or "Intel Xeon", so two runs on different silicon would
# otherwise read alike
_ISA_FLAGS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("AVX2", ("avx2",)),
    ("AVX-512", ("avx512f",)),
    ("VNNI", ("avx512_vnni", "avx_vnni")),
    ("BF16", ("avx512_bf16",)),
    ("AMX", ("amx_int8", "amx_bf16")),
)


def cpu_isa(flags: set[str]) -> str:
    """The instruction sets of :data:`_ISA_FLAGS` a CPU has and has not, e.g. "AVX2, AVX-512,
    VNNI, BF16; no AMX"; "" where ``flags`` is empty (no /proc/cpuinfo, or not x86)."""
    if not flags:
        return ""
    has = [name for name, keys in _ISA_FLAGS if any(k in flags for k in keys)]
    lacks = [f"no {name}" for name, keys in _ISA_FLAGS if not any(k in flags for k in keys)]
    return "; ".join(part for part in (", ".join(has), ", ".join(lacks)) if part)


# /proc/cpuinfo flags of the instructions that multiply u8 x s8 into int32 without an int16
# step (AVX512-VNNI, AVX-VNNI, AMX)
VNNI_FLAGS: tuple[str, ...] = ("avx512_vnni", "avx_vnni", "amx_int8")


def u8s8_saturates(flags: set[str] | None = None) -> bool:
    """True on an x86 CPU with AVX2 but neither VNNI nor AMX (AMD Zen 1-3, Intel before Ice Lake
    and Cascade Lake): there ONNX Runtime's u8 x s8 kernels (QLinearConv, QGemm) multiply with
    ``vpmaddubsw``, which adds the products in pairs into int16 and saturates where weights use
    the full int8 range, so the logits are not the INT8 model's exact ones (ONNX Runtime's
    quantization guide; ``benchmarks/int8_twin_fidelity.py`` measures it). 7-bit weights
    (``reduce_range``: 255 x 64 x 2 < 2**15) do not saturate. ``flags``: :func:`cpu_flags`
    by default."""
    flags = cpu_flags() if flags is None else flags
    return "avx2" in flags and not any(f in flags for f in VNNI_FLAGS)


# what rpdetect export and export-triton say of a file with full-range int8 weights
FULL_RANGE_NOTE = (
    "full-range int8 weights: ONNX Runtime computes them exactly on CPUs with VNNI or AMX and "
    "on ARM, but saturates them on x86 CPUs with AVX2 and no VNNI (AMD Zen 1-3, Intel before "
    "Ice Lake / Cascade Lake), where the detector then detects worse; export with "
    "--reduce-range for those (rpdetect.Detector warns when it runs there)")
