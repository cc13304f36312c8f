"""What the numbers were measured on: CPU, cores, memory, library versions, date."""

from __future__ import annotations

import datetime as _dt
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from ..cpu import cpu_flags, cpu_isa, cpuinfo_fields
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


def _cpu_family_model(cpuinfo: Path) -> str | None:
    """"family F, model M" of the first CPU in ``cpuinfo`` (x86), else None."""
    fields = cpuinfo_fields(cpuinfo)
    if "cpu family" not in fields or "model" not in fields:
        return None
    return f"family {fields['cpu family']}, model {fields['model']}"


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
