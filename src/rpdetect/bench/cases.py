"""The configurations one benchmark compares, for one detector and its inner classifier.

Roles (``Case.role``), per provider variant:

* ``classifier-b1``: the classifier alone on one image;
* ``floor``: the classifier alone at the detector's inner batch B * (n + 1) = 11 for B=1, n=10,
  i.e. the n + 1 forward passes the method cannot avoid;
* ``detector-graph`` / ``detector-input``: the fused detector, noise drawn in the graph or fed as
  the ``noise`` input (drawn inside the timed run by ``rpdetect.engine.noise.NoiseSource``, as
  ``rpdetect.Detector`` draws it: ``SessionSettings.noise_generator`` and ``noise_threads``),
  B images per run;
* ``detector-input-prefetch``: the same noise='input' detector with its noise drawn one run
  ahead by a background thread (``rpdetect.engine.noise.NoiseSource(prefetch=1)``, what
  ``Detector(prefetch_noise=1)`` does), so the draw overlaps the previous run;
* ``naive`` (CPU, torch model given): 1 + n eager forward passes at batch 1 and numpy scores
  by ``rpdetect.reference``; ``torch-batch``: one eager forward pass at batch 1 + n and torch
  scores: what a user would write without rpdetect.

A workload is a JSON-able dict the worker process understands (see ``worker.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from .providers import ProviderVariant

__all__ = ["Case", "SessionSettings", "TorchModel", "ROLES", "plan_cases"]

ROLES: tuple[str, ...] = (
    "classifier-b1", "floor", "detector-graph", "detector-input", "detector-input-prefetch",
    "naive", "torch-batch",
)


@dataclass(frozen=True)
class SessionSettings:
    """ONNX Runtime session options every ONNX configuration of one benchmark shares."""

    threads: int = 2
    graph_optimization: str = "all"  # disable | basic | extended | all
    spinning: bool = True  # session.intra_op.allow_spinning
    noise_generator: str = "opencv"  # how input-noise runs draw their noise (NoiseSource)
    noise_threads: int | None = None  # None: rpdetect.engine.noise.default_noise_threads()

    def to_dict(self) -> dict[str, Any]:
        return {"threads": self.threads, "graph_optimization": self.graph_optimization,
                "spinning": self.spinning, "noise_generator": self.noise_generator,
                "noise_threads": self.noise_threads}


@dataclass(frozen=True)
class TorchModel:
    """``spec`` is ``package.module:factory`` returning an nn.Module on NORMALISED input."""

    spec: str
    input_shape: tuple[int, int, int]
    weights: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


@dataclass(frozen=True)
class Case:
    name: str
    role: str
    variant: str  # provider variant name ("cpu", "cuda", ...)
    batch: int  # B: images per detector run (1 for the classifier and torch cases)
    inner_batch: int  # images the classifier sees per run
    images_per_run: int  # images that get a verdict (or logits) per run
    workload: dict[str, Any] = field(hash=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "provider": self.variant,
                "batch": self.batch, "inner_batch": self.inner_batch,
                "images_per_run": self.images_per_run}


def _onnx(model: str, variant: ProviderVariant, settings: SessionSettings, *, batch: int,
          fresh_normal: Sequence[str] = (), prefetch: int = 0) -> dict[str, Any]:
    return {"kind": "onnx", "model": model, "providers": list(variant.providers),
            "provider_options": [dict(o) for o in variant.provider_options],
            "batch": batch, "fresh_normal": list(fresh_normal), "prefetch": prefetch,
            **settings.to_dict()}


def plan_cases(
    *,
    variants: Sequence[ProviderVariant],
    classifier: str,
    detectors_graph: dict[int, str],
    detector_input: str,
    n: int,
    kappas: Sequence[float],
    settings: SessionSettings,
    torch_model: TorchModel | None = None,
) -> list[Case]:
    """Every configuration for every provider variant. ``detectors_graph`` maps B -> the path
    of the graph-noise detector built with batch=B (B=1 must be there); ``detector_input`` is
    the noise='input' detector at B=1."""
    if 1 not in detectors_graph:
        raise ValueError("detectors_graph: the B=1 detector is needed for the ratios")
    cases: list[Case] = []
    for v in variants:
        p = v.name
        cases.append(Case(f"classifier B=1 [{p}]", "classifier-b1", p, 1, 1, 1,
                          _onnx(classifier, v, settings, batch=1)))
        cases.append(Case(f"classifier B={n + 1} (floor) [{p}]", "floor", p, 1, n + 1, 1,
                          _onnx(classifier, v, settings, batch=n + 1)))
        for b in sorted(detectors_graph):
            cases.append(Case(f"detector graph noise B={b} [{p}]", "detector-graph", p, b,
                              b * (n + 1), b, _onnx(detectors_graph[b], v, settings, batch=b)))
            if b == 1:
                cases.append(Case(f"detector input noise B=1 [{p}]", "detector-input", p, 1,
                                  n + 1, 1, _onnx(detector_input, v, settings, batch=1,
                                                  fresh_normal=("noise",))))
                cases.append(Case(f"detector input noise, prefetched B=1 [{p}]",
                                  "detector-input-prefetch", p, 1, n + 1, 1,
                                  _onnx(detector_input, v, settings, batch=1,
                                        fresh_normal=("noise",), prefetch=1)))
        if torch_model is not None and p == "cpu":
            common = {"spec": torch_model.spec, "weights": torch_model.weights,
                      "mean": list(torch_model.mean) if torch_model.mean else None,
                      "std": list(torch_model.std) if torch_model.std else None,
                      "input_shape": list(torch_model.input_shape),
                      "kappas": [float(k) for k in kappas], "threads": settings.threads}
            cases.append(Case(f"naive: {n + 1} x torch eager B=1 + numpy scores [{p}]", "naive",
                              p, 1, 1, 1, {"kind": "torch-naive", **common}))
            cases.append(Case(f"torch eager B={n + 1} + torch scores [{p}]", "torch-batch", p,
                              1, n + 1, 1, {"kind": "torch-batch", **common}))
    return cases
