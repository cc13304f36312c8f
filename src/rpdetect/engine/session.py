"""The one way rpdetect opens an ONNX Runtime session, in the spirit of Polygraphy's
``SessionFromOnnx`` loader beside its runner: a :class:`SessionBuilder` holds the choices
(providers and their options, threads, optimisation level, spinning, profiling) and
``builder.build(model)`` returns the session with what it really runs on. ``rpdetect.Detector``,
the benchmark's worker, the evaluation and ``rpdetect.testing`` all open sessions here, so every
path runs exactly what ``rpdetect detect`` runs.

Two rules live here and nowhere else:

* **did the provider start**: with ``providers="auto"`` the session takes what starts (a warning
  names each provider of the plan that did not). With providers named explicitly, the first one
  named must be the one the session runs on, else ``ProviderNotStarted`` (a ProviderError);
  the others are ONNX Runtime's per-node fallbacks.
* **the seed**: a graph whose random op has no seed attribute draws from ONNX Runtime's
  process-wide default seed, so every session in one process would start the same noise
  stream; ``build(..., reseed_graph_noise=True)`` draws a fresh process seed first.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import onnx
import onnxruntime as ort

from ..errors import ModelError, ProviderError
from .providers import ProviderPlan, canonical_provider, resolve_providers

__all__ = ["GRAPH_OPTIMIZATION", "BuiltSession", "ProviderNotStarted", "SessionBuilder"]

_log = logging.getLogger("rpdetect.engine")

GraphOptimization = Literal["disable", "basic", "extended", "all"]
GRAPH_OPTIMIZATION: dict[str, Any] = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


class ProviderNotStarted(ProviderError):
    """The execution provider asked for first is not what the session runs on."""


@dataclass(frozen=True)
class BuiltSession:
    """A session and what it really runs on."""

    session: ort.InferenceSession
    plan: ProviderPlan
    providers: tuple[str, ...]  # session.get_providers()


@dataclass(frozen=True)
class SessionBuilder:
    """How to open a session. ``providers``: "auto" (TensorRT, then CUDA, then CPU, those that
    are available) or names in priority order ("tensorrt"/"trt", "cuda", "cpu" or ONNX Runtime's
    names); ``provider_options``: ``{provider: {option: value}}``; ``options``: flat
    ``option=value`` pairs routed to every selected provider that knows them (see
    ``providers.py``). ``threads``: intra-op threads (None: ONNX Runtime's default, one per
    core); ``inter_op_threads`` and ``sequential`` set ORT's inter-op pool and execution mode;
    ``graph_optimization``: ORT's level; ``spinning``: ``session.intra_op.allow_spinning``
    (None: ORT's default); ``log_severity``: 3 shows errors only (ORT warns that the threshold
    initializers are also graph inputs, which detectors do by design); ``config``: more
    session config entries under ORT's keys (``SessionOptions.add_session_config_entry``),
    e.g. ``{"session.force_spinning_stop": "1"}``."""

    providers: str | tuple[str, ...] = "auto"
    provider_options: Mapping[str, Mapping[str, Any]] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    threads: int | None = None
    inter_op_threads: int | None = None
    sequential: bool = False
    graph_optimization: GraphOptimization = "all"
    spinning: bool | None = None
    log_severity: int = 3
    config: Mapping[str, str] = field(default_factory=dict)  # add_session_config_entry pairs

    def __post_init__(self) -> None:
        for name in ("threads", "inter_op_threads"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ValueError(f"{name}: expected an integer >= 1 or None, got {value!r}")
        if self.graph_optimization not in GRAPH_OPTIMIZATION:
            raise ValueError(f"graph_optimization: expected one of {list(GRAPH_OPTIMIZATION)}, "
                             f"got {self.graph_optimization!r}")
        if not isinstance(self.providers, str):
            object.__setattr__(self, "providers", tuple(self.providers))

    @classmethod
    def cpu(cls, threads: int | None = None, **kwargs: Any) -> "SessionBuilder":
        """ONNX Runtime's CPU provider."""
        return cls(providers=("cpu",), threads=threads, **kwargs)

    @property
    def auto(self) -> bool:
        return isinstance(self.providers, str) and self.providers.strip().lower() == "auto"

    def plan(self) -> ProviderPlan:
        """The providers and options as ONNX Runtime takes them (ProviderError for names or
        options it cannot honour)."""
        return resolve_providers(self.providers if isinstance(self.providers, str)
                                 else list(self.providers),
                                 available=ort.get_available_providers(),
                                 provider_options=self.provider_options, options=self.options)

    def session_options(self, *, profile_prefix: str | None = None) -> ort.SessionOptions:
        so = ort.SessionOptions()
        so.log_severity_level = self.log_severity
        if self.threads is not None:
            so.intra_op_num_threads = self.threads
        if self.inter_op_threads is not None:
            so.inter_op_num_threads = self.inter_op_threads
        if self.sequential:
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = GRAPH_OPTIMIZATION[self.graph_optimization]
        if self.spinning is not None:
            so.add_session_config_entry("session.intra_op.allow_spinning",
                                        "1" if self.spinning else "0")
        for key, value in self.config.items():
            so.add_session_config_entry(str(key), str(value))
        if profile_prefix is not None:
            so.enable_profiling = True
            so.profile_file_prefix = profile_prefix
        return so

    def build(self, model: str | Path | bytes | onnx.ModelProto, *,
              reseed_graph_noise: bool = False, profile_prefix: str | None = None,
              name: str | None = None, config: Mapping[str, str] | None = None
              ) -> BuiltSession:
        """Open the session on ``model`` (a path, serialised bytes or a ModelProto).
        ModelError when ONNX Runtime cannot load it, ProviderNotStarted when an explicitly
        requested provider is not what it runs on. ``name`` labels messages (default: the
        path); ``config`` replaces this builder's session config entries for this session."""
        if config is not None:
            return replace(self, config=dict(config)).build(
                model, reseed_graph_noise=reseed_graph_noise, profile_prefix=profile_prefix,
                name=name)
        label = name or (str(model) if isinstance(model, (str, Path)) else "model")
        plan = self.plan()
        available = ort.get_available_providers()
        first = None if self.auto else canonical_provider(plan.requested[0], available)
        if first is not None and first in plan.skipped:
            raise ProviderNotStarted(
                f"{label}: ONNX Runtime did not start {first}: it is not available in this "
                f"onnxruntime ({list(available)}); ask for "
                f"providers='auto' or ['cpu'], or install onnxruntime-gpu")
        for skipped in plan.skipped:
            _log.warning("%s: %s is not available, falling back to %s", label, skipped,
                         list(plan.names))
        if reseed_graph_noise:
            ort.set_seed(secrets.randbits(31))
        source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else (
            model if isinstance(model, bytes) else str(model))
        try:
            session = ort.InferenceSession(source, self.session_options(
                profile_prefix=profile_prefix), **plan.session_kwargs())
        except Exception as exc:
            raise ModelError(f"{label}: ONNX Runtime cannot load it with providers "
                             f"{list(plan.names)}: {exc}") from exc
        used = tuple(session.get_providers())
        self._check_started(plan, used, label)
        return BuiltSession(session, plan, used)

    def _check_started(self, plan: ProviderPlan, used: Sequence[str], label: str) -> None:
        missing = [p for p in plan.names if p not in used]
        if not self.auto and used[:1] != plan.names[:1]:
            raise ProviderNotStarted(
                f"{label}: ONNX Runtime did not start {plan.names[0]} (the session runs on "
                f"{list(used)}); its libraries (CUDA, cuDNN, TensorRT) may be missing: check "
                f"the installation or ask for providers=['cpu']")
        for name in missing:
            _log.warning("%s: %s was requested but ONNX Runtime did not start it (its "
                         "libraries may be missing); the session uses %s", label, name, list(used))
