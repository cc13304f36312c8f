"""Tiny detectors for the calibration tests: a random CNN written with onnx.helper (no torch),
fused by build_detector, and a stand-in detector that runs the graph with ONNX Runtime and fixed
noise. Tests get them through fixtures."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from rpdetect.export.graph import DetectorConfig, build_detector, save_onnx

SHAPE = (3, 8, 8)
CLASSES = 5
KAPPAS = (0.02, 0.05, 0.1)


def tiny_cnn(seed: int = 0) -> onnx.ModelProto:
    """pixels [N, 3, 8, 8] -> Conv 3x3 (4) -> Relu -> GlobalAveragePool -> Gemm -> logits [N, 5]."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(0, 1.0, (4, 3, 3, 3)).astype(np.float32), "w_conv"),
        numpy_helper.from_array(rng.normal(0, 0.1, (4,)).astype(np.float32), "b_conv"),
        numpy_helper.from_array(rng.normal(0, 3.0, (4, CLASSES)).astype(np.float32), "w_fc"),
        numpy_helper.from_array(rng.normal(0, 0.1, (CLASSES,)).astype(np.float32), "b_fc"),
    ]
    nodes = [
        helper.make_node("Conv", ["pixels", "w_conv", "b_conv"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w_fc", "b_fc"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_cnn",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", *SHAPE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    onnx.checker.check_model(model, full_check=True)
    return model


def tiny_detector(*, noise: str = "graph", seed: float | None = None) -> onnx.ModelProto:
    model = build_detector(tiny_cnn(), DetectorConfig(kappas=KAPPAS, noise=noise, seed=seed))  # type: ignore[arg-type]
    onnx.checker.check_model(model, full_check=True)
    return model


class Scores(NamedTuple):
    score1_max: float
    score2_max: float
    is_adversarial: bool


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
            ["score1_max", "score2_max", "is_adversarial"], {"image": x[None], "noise": self.noise}
        )
        return Scores(float(out[0][0]), float(out[1][0]), bool(out[2][0]))

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
