"""What the numbers were measured on: CPU, cores, memory, library versions, date."""

from __future__ import annotations

import datetime as _dt
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from ..engine.noise import generator_description

__all__ = ["cpu_description", "cpu_flags", "cpu_isa", "machine_info"]


def _cpu_model(cpuinfo: Path) -> str:
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "Processor") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags (``avx2``, ``avx512f``, ...), empty where ``cpuinfo`` has none."""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "flags":
                return set(value.split())
    except OSError:
        pass
    return set()


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


def _cpu_family_model(cpuinfo: Path) -> str | None:
    """"family F, model M" of the first CPU in ``cpuinfo`` (x86), else None."""
    found: dict[str, str] = {}
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("cpu family", "model") and key not in found:
                found[key] = value.strip()
            if not line.strip() and found:
                break
    except OSError:
        return None
    if "cpu family" not in found or "model" not in found:
        return None
    return f"family {found['cpu family']}, model {found['model']}"


def cpu_description(info: dict[str, Any]) -> str:
    """The CPU as a report names it: its model name, then, where :func:`machine_info` recorded
    them, its family and model and :func:`cpu_isa`, e.g. "AMD EPYC (family 25, model 1; AVX2;
    no AVX-512, no VNNI, no BF16, no AMX)"."""
    details = "; ".join(d for d in (info.get("cpu_family_model"), info.get("cpu_isa")) if d)
    model = info.get("cpu_model") or "unknown CPU"
    return f"{model} ({details})" if details else str(model)


def _mem_total_gib(meminfo: Path) -> float | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info(*, proc: Path = Path("/proc")) -> dict[str, Any]:
    """JSON-ready facts about this machine and the libraries that ran the benchmark.

    torch's version is read from its package metadata, so torch is not imported here."""
    import onnxruntime as ort

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    return {
        "cpu_model": _cpu_model(proc / "cpuinfo"),
        "cpu_family_model": _cpu_family_model(proc / "cpuinfo"),
        "cpu_isa": cpu_isa(cpu_flags(proc / "cpuinfo")),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gib": _mem_total_gib(proc / "meminfo"),
        "load_average_at_start": load,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "onnxruntime_providers": list(ort.get_available_providers()),
        "onnx": _version("onnx"),
        "numpy": _version("numpy"),
        "torch": _version("torch"),
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        # the engine's default noise generator and the instruction set it runs with here
        "noise_generator": generator_description(),
    }
