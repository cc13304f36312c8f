"""Tiny detectors for the calibration tests: rpdetect.testing's random CNN (onnx.helper, no
torch) fused by build_detector, and a stand-in detector that runs the graph on ONNX Runtime with
fixed noise. Tests get them through fixtures."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from rpdetect.export.graph import DetectorConfig, build_detector, save_onnx
from rpdetect.testing import plain_classifier

SHAPE = (3, 8, 8)
CLASSES = 5
KAPPAS = (0.02, 0.05, 0.1)


def tiny_cnn() -> onnx.ModelProto:
    """pixels [N, 3, 8, 8] -> Conv -> Relu -> GlobalAveragePool -> Gemm -> logits [N, 5]."""
    return plain_classifier(size=SHAPE[1], classes=CLASSES, seed=1, input_name="pixels",
                            output_name="logits")


def tiny_detector(*, noise: str = "graph", batch: int = 1) -> onnx.ModelProto:
    config = DetectorConfig(kappas=KAPPAS, noise=noise, batch=batch)  # type: ignore[arg-type]
    model = build_detector(tiny_cnn(), config)
    onnx.checker.check_model(model, full_check=True)
    return model


class Scores(NamedTuple):
    score1_max: float
    score2_max: float
    is_adversarial: bool
    score1: np.ndarray
    score2: np.ndarray
    flips: int


class OrtStandIn:
    """Runs a noise='input' detector with the same fixed noise for every image, so an image's
    scores are the same on every run and in every session."""

    def __init__(self, path: Path, noise: np.ndarray) -> None:
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.noise = noise

    def detect(self, image: Any) -> Scores:
        x = np.asarray(image, dtype=np.float32)
        if x.shape != SHAPE:
            raise ValueError(f"image: expected shape {SHAPE}, got {x.shape}")
        out = self.session.run(
            ["score1_max", "score2_max", "is_adversarial", "score1", "score2", "flips"],
            {"image": x[None], "noise": self.noise})
        return Scores(float(out[0][0]), float(out[1][0]), bool(out[2][0]), out[3][0], out[4][0],
                      int(out[5][0]))

@pytest.fixture(scope="session")
def input_noise_detector(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_onnx(tiny_detector(noise="input"),
                     tmp_path_factory.mktemp("detector") / "tiny_input_noise.onnx")


@pytest.fixture(scope="session")
def graph_noise_detector(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_onnx(tiny_detector(), tmp_path_factory.mktemp("detector") / "tiny.onnx")


@pytest.fixture(scope="session")
def fixed_noise() -> np.ndarray:
    return np.random.default_rng(7).standard_normal((1, len(KAPPAS), *SHAPE)).astype(np.float32)


@pytest.fixture(scope="session")
def clean_images() -> np.ndarray:
    return np.random.default_rng(3).random((60, *SHAPE), dtype=np.float32)


@pytest.fixture(scope="session")
def stand_in() -> type[OrtStandIn]:
    return OrtStandIn


@pytest.fixture(scope="session")
def tiny_classifier() -> onnx.ModelProto:
    return tiny_cnn()


@pytest.fixture(scope="session")
def kappas() -> tuple[float, ...]:
    return KAPPAS


@pytest.fixture(scope="session")
def make_detector() -> Callable[..., onnx.ModelProto]:
    return tiny_detector
