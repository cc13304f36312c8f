"""Which execution providers the benchmark runs, and why the others are skipped.

A benchmark *provider variant* is one column of results: ``cpu``, ``cuda``, ``tensorrt`` (FP32)
or ``tensorrt-fp16`` (ORT option ``trt_fp16_enable``). Names and options are resolved by the
engine's ``resolve_providers``, so the benchmark asks ONNX Runtime for exactly what
``rpdetect.Detector`` would. A variant whose provider this onnxruntime does not offer is skipped
with the reason; it never silently falls back to the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..engine.providers import resolve_providers
from ..errors import ProviderError

__all__ = ["DEFAULT_VARIANTS", "ProviderVariant", "SkippedVariant", "plan_variants"]

# variant -> (provider names in priority order, options routed by the engine)
_VARIANTS: Mapping[str, tuple[tuple[str, ...], Mapping[str, Any]]] = {
    "cpu": (("cpu",), {}),
    "cuda": (("cuda", "cpu"), {}),
    "tensorrt": (("tensorrt", "cuda", "cpu"), {"trt_fp16_enable": False}),
    "tensorrt-fp16": (("tensorrt", "cuda", "cpu"), {"trt_fp16_enable": True}),
}
_ALIASES = {"trt": "tensorrt", "trt-fp16": "tensorrt-fp16", "tensorrt_fp16": "tensorrt-fp16",
            "trt_fp16": "tensorrt-fp16", "gpu": "cuda"}
DEFAULT_VARIANTS: tuple[str, ...] = tuple(_VARIANTS)
_PRIMARY = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
            "tensorrt": "TensorrtExecutionProvider"}


@dataclass(frozen=True)
class ProviderVariant:
    """``providers``/``provider_options`` as ``onnxruntime.InferenceSession`` takes them;
    ``primary`` is the provider the variant is about (the session must really use it)."""

    name: str
    providers: tuple[str, ...]
    provider_options: tuple[dict[str, str], ...] = field(default_factory=tuple)

    @property
    def primary(self) -> str:
        return self.providers[0]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "providers": list(self.providers),
                "provider_options": [dict(o) for o in self.provider_options]}


@dataclass(frozen=True)
class SkippedVariant:
    name: str
    reason: str


def _canonical_variant(name: str) -> str:
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _VARIANTS:
        raise ProviderError(
            f"--providers: unknown provider variant {name!r}; known: {list(_VARIANTS)} "
            f"(aliases: {sorted(_ALIASES)})"
        )
    return key


def plan_variants(
    names: Sequence[str], *, available: Sequence[str]
) -> list[ProviderVariant | SkippedVariant]:
    """Resolve variant names against ``available`` (``onnxruntime.get_available_providers()``);
    a variant whose own provider is not there comes back as SkippedVariant with the reason."""
    out: list[ProviderVariant | SkippedVariant] = []
    seen: set[str] = set()
    for raw in names:
        name = _canonical_variant(raw)
        if name in seen:
            continue
        seen.add(name)
        wanted, options = _VARIANTS[name]
        primary = _PRIMARY[wanted[0]]
        if primary not in available:
            out.append(SkippedVariant(
                name,
                f"{primary} is not in onnxruntime.get_available_providers() = {list(available)}"
                + ("" if primary == _PRIMARY["cpu"] else
                   "; GPU providers need onnxruntime-gpu instead of onnxruntime (pip uninstall "
                   "onnxruntime && pip install 'rpdetect[gpu]'; TensorRT: 'rpdetect[tensorrt]')"),
            ))
            continue
        plan = resolve_providers(list(wanted), available=available, options=options)
        out.append(ProviderVariant(name, plan.names, plan.options))
    return out
