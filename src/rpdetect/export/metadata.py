"""Read back what a detector file says about itself: ``metadata_props`` written at export, and the
thresholds the graph really compares against (its initializers)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import ModelError
from ..rule import Thresholds
from .graph import METADATA_PREFIX


@dataclass(frozen=True)
class DetectorInfo:
    kappas: tuple[float, ...]
    noise: str
    seed: float | None
    batch: int
    clip: bool
    input_format: str
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    num_classes: int | None
    thresholds: Thresholds  # read from the graph's initializers, not the metadata
    has_flips: bool  # False for files from rpdetect <= 0.1 (paper rule only)
    calibrated: bool
    thresholds_provenance: dict[str, Any]
    classifier_sha256: str
    classifier_source: str
    version: str
    raw: dict[str, str]

    @property
    def n(self) -> int:
        return len(self.kappas)

    @property
    def threshold1(self) -> float | tuple[float, ...]:
        """score1's threshold: one number when it is the same at every kappa."""
        t = self.thresholds.threshold1
        return t[0] if len(set(t)) == 1 else t

    @property
    def threshold2(self) -> float | tuple[float, ...]:
        t = self.thresholds.threshold2
        return t[0] if len(set(t)) == 1 else t

    @property
    def threshold3(self) -> float:
        return self.thresholds.threshold3


def read_thresholds(model: onnx.ModelProto, n: int) -> tuple[Thresholds, bool]:
    """The thresholds the graph compares against (its initializers) and whether the file has
    the flip count (threshold3); ModelError for missing, misshapen, NaN or -inf values."""
    inits = {i.name: i for i in model.graph.initializer
             if i.name in ("threshold1", "threshold2", "threshold3")}
    missing = {"threshold1", "threshold2"} - set(inits)
    if missing:
        raise ModelError(f"not an rpdetect detector: no {sorted(missing)} initializer")
    values = {}
    for name, init in inits.items():
        v = numpy_helper.to_array(init).astype(np.float64)
        want = [(), (n,)] if name != "threshold3" else [()]
        if v.shape not in want:
            raise ModelError(f"{name}: the graph holds shape {list(v.shape)}; expected "
                             f"{' or '.join(str(list(w)) for w in want)} for its {n} kappas "
                             f"(the metadata's kappas and the graph disagree: re-export)")
        values[name] = v
    try:
        thresholds = Thresholds.of(values["threshold1"], values["threshold2"],
                                   float(values.get("threshold3", math.inf)), n=n)
    except ValueError as exc:
        raise ModelError(f"the graph's thresholds: {exc}") from exc
    return thresholds, "threshold3" in inits


def read_info(model: onnx.ModelProto) -> DetectorInfo:
    """Parse rpdetect's metadata; ModelError if the model is not an rpdetect detector."""
    raw = {p.key[len(METADATA_PREFIX):]: p.value for p in model.metadata_props
           if p.key.startswith(METADATA_PREFIX)}
    try:
        kappas = tuple(float(k) for k in json.loads(raw["kappas"]))
        thresholds, has_flips = read_thresholds(model, len(kappas))
        seed = None if raw["seed"] == "none" else float(raw["seed"])
        mean = None if raw["mean"] == "none" else tuple(json.loads(raw["mean"]))
        std = None if raw["std"] == "none" else tuple(json.loads(raw["std"]))
        info = DetectorInfo(
            kappas=kappas,
            noise=raw["noise"],
            seed=seed,
            batch=int(raw["batch"]),
            clip=raw["clip"] == "true",
            input_format=raw["input_format"],
            input_shape=tuple(json.loads(raw["input_shape"])),  # type: ignore[arg-type]
            mean=mean,
            std=std,
            num_classes=None if raw["num_classes"] == "unknown" else int(raw["num_classes"]),
            thresholds=thresholds,
            has_flips=has_flips,
            calibrated=thresholds.calibrated,
            thresholds_provenance=json.loads(raw["thresholds_provenance"]),
            classifier_sha256=raw["classifier_sha256"],
            classifier_source=raw["classifier_source"],
            version=raw["version"],
            raw=raw,
        )
    except KeyError as exc:
        raise ModelError(
            f"not an rpdetect detector: metadata key {METADATA_PREFIX}{exc.args[0]} is missing "
            f"(build it with `rpdetect export`)"
        ) from exc
    except (ValueError, TypeError) as exc:
        raise ModelError(f"rpdetect metadata is malformed: {exc}") from exc
    if len(info.input_shape) != 3 or not info.kappas or info.batch < 1:
        raise ModelError(
            f"rpdetect metadata is malformed: input_shape {list(info.input_shape)} (expected "
            f"[C, H, W]), {len(info.kappas)} kappas, batch {info.batch}; re-export the detector"
        )
    return info


def is_uncalibrated(info: DetectorInfo) -> bool:
    """Every threshold +inf: the detector never flags."""
    return not info.thresholds.calibrated
