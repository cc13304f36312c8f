"""The configurations one benchmark compares, for one detector and its inner classifier.

Roles (``Case.role``), per provider variant:

* ``classifier-b1``: the classifier alone on one image;
* ``floor``: the classifier alone at the detector's inner batch B * (n + 1) = 11 for B=1, n=10,
  i.e. the n + 1 forward passes the method cannot avoid;
* ``floor-twin`` (``floor_twin=True``): the very same configuration in a worker of its own, an
  A/A check: its ratio to the floor is the measurement's own noise (two processes of one
  configuration differ by up to 2.3% on the project's 2-core VM);
* ``detector-graph`` / ``detector-input``: the fused detector, noise drawn in the graph or fed as
  the ``noise`` input (drawn inside the timed run by ``rpdetect.engine.noise.NoiseSource``, as
  ``rpdetect.Detector`` draws it: ``SessionSettings.noise_generator`` and ``noise_threads``),
  B images per run;
* ``detector-input-prefetch``: the same noise='input' detector with its noise drawn one run
  ahead by a background thread (``rpdetect.engine.noise.NoiseSource(prefetch=1)``, what
  ``Detector(prefetch_noise=1)`` does), so the draw overlaps the previous run;
* ``detector``: the graph-noise file through ``rpdetect.Detector`` with its default options,
  ``detect`` on a float CHW array (``detect_many`` of B arrays for B > 1): on the CPU provider
  the engine builds the front itself (``rpdetect.engine.front``); what a user's code costs;
* ``floor-int8``, ``detector-int8`` (``rpdetect.Detector`` defaults), ``detector-graph-int8``,
  ``detector-input-int8``: the same for the INT8 detector (``rpdetect export --quantize
  int8``), whose ratios are taken to the FP32 floor;
* ``naive`` (CPU, torch model given): 1 + n eager forward passes at batch 1 and numpy scores
  by ``rpdetect.reference``; ``torch-batch``: one eager forward pass at batch 1 + n and torch
  scores: what a user would write without rpdetect.

A workload is a typed record (:class:`OnnxWorkload` or :class:`TorchWorkload`); it crosses to
the worker process as the flat JSON object of ``to_dict()`` and comes back with
:func:`workload_from_dict` (see ``worker.py``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, Mapping, Sequence, Union

from ..engine.session import SessionBuilder
from .providers import ProviderVariant

__all__ = ["Case", "DETECTOR_MODES", "DetectorFiles", "DetectorWorkload", "OnnxWorkload",
           "SessionSettings", "TorchModel", "TorchWorkload", "Workload", "ROLES", "plan_cases",
           "workload_from_dict"]

ROLES: tuple[str, ...] = (
    "classifier-b1", "floor", "floor-twin", "detector-graph", "detector-input",
    "detector-input-prefetch", "detector", "naive", "torch-batch", "floor-int8", "detector-int8",
    "detector-graph-int8", "detector-input-int8",
)
# the detector roles by (noise mode, precision): "graph" runs the file's own random op,
# "input" feeds the noise input, "engine" is rpdetect.Detector's default front on the CPU
DETECTOR_MODES: dict[str, tuple[str, str]] = {
    "detector-graph": ("graph", "fp32"), "detector-input": ("input", "fp32"),
    "detector": ("engine", "fp32"), "detector-graph-int8": ("graph", "int8"),
    "detector-input-int8": ("input", "int8"), "detector-int8": ("engine", "int8"),
}


@dataclass(frozen=True)
class SessionSettings:
    """ONNX Runtime session options every ONNX configuration of one benchmark shares."""

    threads: int = 2
    graph_optimization: str = "all"  # disable | basic | extended | all
    spinning: bool = True  # session.intra_op.allow_spinning
    noise_generator: str | None = None  # how runs draw their noise (NoiseSource; None: default)
    noise_threads: int | None = None  # None: rpdetect.engine.noise.default_noise_threads()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TorchModel:
    """``spec`` is ``package.module:factory`` returning an nn.Module on NORMALISED input."""

    spec: str
    input_shape: tuple[int, int, int]
    weights: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


@dataclass(frozen=True)
class OnnxWorkload:
    """One ONNX model on one provider variant, ``batch`` images per run. Inputs named in
    ``fresh_normal`` (the ``noise`` input) are drawn anew for every run, as
    ``rpdetect.Detector`` draws them, ``prefetch`` runs ahead."""

    model: str
    providers: tuple[str, ...]
    provider_options: tuple[dict[str, str], ...]
    batch: int
    settings: SessionSettings = SessionSettings()
    fresh_normal: tuple[str, ...] = ()
    prefetch: int = 0
    kind: Literal["onnx"] = "onnx"

    def session_builder(self) -> SessionBuilder:
        """The session every rpdetect path opens (``rpdetect.engine.session``), with this
        benchmark's settings: one inter-op thread, sequential execution."""
        s = self.settings
        return SessionBuilder(
            providers=self.providers,
            provider_options={p: o for p, o in zip(self.providers, self.provider_options) if o},
            threads=s.threads, inter_op_threads=1, sequential=True,
            graph_optimization=s.graph_optimization,  # type: ignore[arg-type]
            spinning=s.spinning)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.model, "providers": list(self.providers),
                "provider_options": [dict(o) for o in self.provider_options],
                "batch": self.batch, "fresh_normal": list(self.fresh_normal),
                "prefetch": self.prefetch, **self.settings.to_dict()}


@dataclass(frozen=True)
class TorchWorkload:
    """The torch baselines: ``torch-naive`` (1 + n eager passes at batch 1, numpy scores) or
    ``torch-batch`` (one eager pass at batch 1 + n, torch scores)."""

    kind: Literal["torch-naive", "torch-batch"]
    model: TorchModel
    kappas: tuple[float, ...]
    threads: int

    def to_dict(self) -> dict[str, Any]:
        m = self.model
        return {"kind": self.kind, "spec": m.spec, "weights": m.weights,
                "mean": list(m.mean) if m.mean else None, "std": list(m.std) if m.std else None,
                "input_shape": list(m.input_shape), "kappas": [float(k) for k in self.kappas],
                "threads": self.threads}


@dataclass(frozen=True)
class DetectorWorkload(OnnxWorkload):
    """``rpdetect.Detector`` on ``model`` with this benchmark's session settings and the
    Detector's own defaults otherwise (``engine_noise`` None: the engine builds the front on
    the CPU provider), ``batch`` float CHW images per call."""

    engine_noise: bool | None = None
    kind: Literal["detector"] = "detector"  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "engine_noise": self.engine_noise}


Workload = Union[OnnxWorkload, DetectorWorkload, TorchWorkload]
_SETTINGS = {f.name for f in fields(SessionSettings)}


def workload_from_dict(d: Mapping[str, Any]) -> Workload:
    """The record of a workload's JSON object (ValueError naming what is missing or unknown)."""
    kind = d.get("kind")
    try:
        if kind in ("onnx", "detector"):
            settings = SessionSettings(**{k: d[k] for k in _SETTINGS if k in d})
            common = dict(
                model=str(d["model"]), providers=tuple(d["providers"]),
                provider_options=tuple(dict(o) for o in d.get(
                    "provider_options", [{}] * len(d["providers"]))),
                batch=int(d["batch"]), settings=settings,
                fresh_normal=tuple(d.get("fresh_normal", ())), prefetch=int(d.get("prefetch", 0)))
            if kind == "detector":
                return DetectorWorkload(**common, engine_noise=d.get("engine_noise"))
            return OnnxWorkload(**common)
        if kind in ("torch-naive", "torch-batch"):
            model = TorchModel(
                spec=d["spec"], input_shape=tuple(int(v) for v in d["input_shape"]),  # type: ignore
                weights=d.get("weights"),
                mean=tuple(d["mean"]) if d.get("mean") else None,
                std=tuple(d["std"]) if d.get("std") else None)
            return TorchWorkload(kind, model, tuple(float(k) for k in d["kappas"]),
                                 int(d["threads"]))
    except KeyError as exc:
        raise ValueError(f"workload {kind!r}: missing field {exc.args[0]!r}") from exc
    raise ValueError(f"unknown workload kind {kind!r}")


@dataclass(frozen=True)
class Case:
    name: str
    role: str
    variant: str  # provider variant name ("cpu", "cuda", ...)
    batch: int  # B: images per detector run (1 for the classifier and torch cases)
    inner_batch: int  # images the classifier sees per run
    images_per_run: int  # images that get a verdict (or logits) per run
    workload: Workload = field(hash=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "provider": self.variant,
                "batch": self.batch, "inner_batch": self.inner_batch,
                "images_per_run": self.images_per_run}


def _onnx(model: str, variant: ProviderVariant, settings: SessionSettings, *, batch: int,
          fresh_normal: Sequence[str] = (), prefetch: int = 0) -> OnnxWorkload:
    return OnnxWorkload(model, tuple(variant.providers),
                        tuple(dict(o) for o in variant.provider_options), batch, settings,
                        tuple(fresh_normal), prefetch)


@dataclass(frozen=True)
class DetectorFiles:
    """One precision's files: its classifier and its detectors by B, graph and input noise."""

    classifier: str
    graph: dict[int, str]
    input: dict[int, str]


def _detector_cases(files: DetectorFiles, v: ProviderVariant, settings: SessionSettings, *,
                    n: int, int8: bool) -> list[Case]:
    p, tag, suffix = v.name, " INT8" if int8 else "", "-int8" if int8 else ""
    cases = []
    for b in sorted(files.graph):
        inner = b * (n + 1)
        cases.append(Case(f"detector{tag} graph noise B={b} [{p}]", f"detector-graph{suffix}", p,
                          b, inner, b, _onnx(files.graph[b], v, settings, batch=b)))
        cases.append(Case(f"detector{tag} rpdetect.Detector (default) B={b} [{p}]",
                          f"detector{suffix}", p, b, inner, b,
                          DetectorWorkload(files.graph[b], tuple(v.providers),
                                           tuple(dict(o) for o in v.provider_options), b,
                                           settings)))
        if b in files.input:
            cases.append(Case(f"detector{tag} input noise B={b} [{p}]", f"detector-input{suffix}",
                              p, b, inner, b, _onnx(files.input[b], v, settings, batch=b,
                                                    fresh_normal=("noise",))))
        if b == 1 and not int8:
            cases.append(Case(f"detector input noise, prefetched B=1 [{p}]",
                              "detector-input-prefetch", p, 1, n + 1, 1,
                              _onnx(files.input[1], v, settings, batch=1,
                                    fresh_normal=("noise",), prefetch=1)))
    return cases


def plan_cases(
    *,
    variants: Sequence[ProviderVariant],
    fp32: DetectorFiles,
    n: int,
    kappas: Sequence[float],
    settings: SessionSettings,
    torch_model: TorchModel | None = None,
    int8: DetectorFiles | None = None,
    floor_twin: bool = False,
) -> list[Case]:
    """Every configuration for every provider variant: for each precision, the classifier at
    the floor batch and the detectors at every B of ``files.graph`` (B=1 must be there), in
    each noise mode; with ``floor_twin`` the floor twice (an A/A check)."""
    for files in (fp32, int8):
        if files is not None and (1 not in files.graph or 1 not in files.input):
            raise ValueError("detector files: the B=1 detectors are needed for the ratios")
    cases: list[Case] = []
    for v in variants:
        p = v.name
        cases.append(Case(f"classifier B=1 [{p}]", "classifier-b1", p, 1, 1, 1,
                          _onnx(fp32.classifier, v, settings, batch=1)))
        cases.append(Case(f"classifier B={n + 1} (floor) [{p}]", "floor", p, 1, n + 1, 1,
                          _onnx(fp32.classifier, v, settings, batch=n + 1)))
        if floor_twin:
            cases.append(Case(f"classifier B={n + 1} (the floor's A/A twin) [{p}]",
                              "floor-twin", p, 1, n + 1, 1,
                              _onnx(fp32.classifier, v, settings, batch=n + 1)))
        cases += _detector_cases(fp32, v, settings, n=n, int8=False)
        if int8 is not None:
            cases.append(Case(f"classifier INT8 B={n + 1} (INT8 floor) [{p}]", "floor-int8", p,
                              1, n + 1, 1, _onnx(int8.classifier, v, settings, batch=n + 1)))
            cases += _detector_cases(int8, v, settings, n=n, int8=True)
        if torch_model is not None and p == "cpu":
            ks = tuple(float(k) for k in kappas)
            cases.append(Case(f"naive: {n + 1} x torch eager B=1 + numpy scores [{p}]", "naive",
                              p, 1, 1, 1, TorchWorkload("torch-naive", torch_model, ks,
                                                        settings.threads)))
            cases.append(Case(f"torch eager B={n + 1} + torch scores [{p}]", "torch-batch", p,
                              1, n + 1, 1, TorchWorkload("torch-batch", torch_model, ks,
                                                         settings.threads)))
    return cases
