"""Read back what a detector file says about itself (``metadata_props`` written at export)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import onnx

from ..errors import ModelError
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
    threshold1: float
    threshold2: float
    calibrated: bool
    thresholds_provenance: dict[str, Any]
    classifier_sha256: str
    classifier_source: str
    version: str
    raw: dict[str, str]

    @property
    def n(self) -> int:
        return len(self.kappas)


def read_info(model: onnx.ModelProto) -> DetectorInfo:
    """Parse rpdetect's metadata; ModelError if the model is not an rpdetect detector."""
    raw = {p.key[len(METADATA_PREFIX):]: p.value for p in model.metadata_props
           if p.key.startswith(METADATA_PREFIX)}
    try:
        seed = None if raw["seed"] == "none" else float(raw["seed"])
        mean = None if raw["mean"] == "none" else tuple(json.loads(raw["mean"]))
        std = None if raw["std"] == "none" else tuple(json.loads(raw["std"]))
        info = DetectorInfo(
            kappas=tuple(float(k) for k in json.loads(raw["kappas"])),
            noise=raw["noise"],
            seed=seed,
            batch=int(raw["batch"]),
            clip=raw["clip"] == "true",
            input_format=raw["input_format"],
            input_shape=tuple(json.loads(raw["input_shape"])),  # type: ignore[arg-type]
            mean=mean,
            std=std,
            num_classes=None if raw["num_classes"] == "unknown" else int(raw["num_classes"]),
            threshold1=float(raw["threshold1"]),
            threshold2=float(raw["threshold2"]),
            calibrated=raw["calibrated"] == "true",
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
    """Both thresholds +inf: the detector never flags."""
    return math.isinf(info.threshold1) and math.isinf(info.threshold2)
