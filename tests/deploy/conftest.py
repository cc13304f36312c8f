"""Detectors built from a tiny random CNN (torch -> torch_to_onnx -> build_detector, 32x32),
images and noise on disk, the Python engine's answers, and the tolerance check shared by the
deploy tests (Node.js, C++, OpenCV DNN)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import onnx
import pytest

from rpdetect.export.graph import DetectorConfig, build_detector, save_onnx

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = ROOT / "clients"
SIZE = 32
KAPPAS = tuple(float(k) for k in np.linspace(0.01, 0.1, 10))
SCORE_OUTPUTS = ("logits", "score1", "score2", "score1_max", "score2_max")


def _load_lowering():
    spec = importlib.util.spec_from_file_location(
        "lower_for_opencv4", CLIENTS / "cpp" / "lower_for_opencv4.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.fixture(scope="session")
def lowering():
    """clients/cpp/lower_for_opencv4.py as a module."""
    return _load_lowering()


@pytest.fixture(scope="session")
def deploy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("deploy")


@pytest.fixture(scope="session")
def classifier_path(deploy_dir: Path) -> Path:
    """rpdetect.testing's random CNN (BatchNorm, AdaptiveAvgPool, Linear), exported by the
    dynamo exporter at the default opset, pixel space, no normalisation."""
    pytest.importorskip("torch")
    from rpdetect.export.torch_export import torch_to_onnx
    from rpdetect.testing import torch_cnn

    path = deploy_dir / "classifier.onnx"
    torch_to_onnx(torch_cnn(3, 10, seed=0), path, input_shape=(3, SIZE, SIZE))
    return path


@pytest.fixture(scope="session")
def relu6_classifier() -> onnx.ModelProto:
    """EfficientNet-Lite's op forms at opset 20, by onnx.helper: Conv -> Clip(0, 6) (ReLU6, bounds
    as inputs) -> ReduceMean over H, W (axes as an input) -> Gemm; random weights, dynamic N."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    arrays = {
        "w": rng.normal(0, 0.5, (16, 3, 3, 3)).astype(np.float32),
        "b": rng.normal(0, 0.5, (16,)).astype(np.float32),
        "lo": np.array(0.0, dtype=np.float32),
        "hi": np.array(6.0, dtype=np.float32),
        "axes": np.array([2, 3], dtype=np.int64),
        "fc": rng.normal(0, 1.0, (10, 16)).astype(np.float32),
        "fcb": rng.normal(0, 0.1, (10,)).astype(np.float32),
    }
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Clip", ["c", "lo", "hi"], ["r"]),
            helper.make_node("ReduceMean", ["r", "axes"], ["m"], keepdims=0,
                             noop_with_empty_axes=0),
            helper.make_node("Gemm", ["m", "fc", "fcb"], ["y"], transB=1),
        ],
        "relu6",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        initializer=[numpy_helper.from_array(a, n) for n, a in arrays.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.fixture(scope="session")
def make_detector(classifier_path: Path, deploy_dir: Path) -> Callable[..., Path]:
    """make_detector(name, **DetectorConfig fields) -> path of a checked detector file."""
    made: dict[str, Path] = {}

    def make(name: str, **config: object) -> Path:
        if name not in made:
            model = build_detector(classifier_path, DetectorConfig(kappas=KAPPAS, **config))
            onnx.checker.check_model(model, full_check=True)
            made[name] = save_onnx(model, deploy_dir / f"{name}.onnx")
        return made[name]

    return make


@pytest.fixture(scope="session")
def image_hwc() -> np.ndarray:
    """A random 32x32 RGB picture, uint8 HWC."""
    return np.random.default_rng(7).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="session")
def png_path(image_hwc: np.ndarray, deploy_dir: Path) -> Path:
    path = deploy_dir / "picture.png"
    assert cv2.imwrite(str(path), image_hwc[:, :, ::-1])  # OpenCV writes BGR
    return path


@pytest.fixture(scope="session")
def image_float(image_hwc: np.ndarray) -> np.ndarray:
    """The same picture as the float graph takes it: [1, 3, H, W] in [0, 1] (x / 255)."""
    return (image_hwc.transpose(2, 0, 1)[None].astype(np.float32) / np.float32(255.0))


@pytest.fixture(scope="session")
def noise() -> np.ndarray:
    """N(0, 1) draws [1, n, 3, H, W] for noise="input" detectors."""
    rng = np.random.default_rng(11)
    return rng.standard_normal((1, len(KAPPAS), 3, SIZE, SIZE), dtype=np.float32)


@pytest.fixture(scope="session")
def noise_npy(noise: np.ndarray, deploy_dir: Path) -> Path:
    path = deploy_dir / "noise.npy"
    np.save(path, noise)
    return path


@pytest.fixture(scope="session")
def engine_result() -> Callable[..., dict[str, np.ndarray]]:
    """engine_result(detector_path, image, noise=None, threshold1=None, threshold2=None): the
    Python engine's (rpdetect.Detector on ONNX Runtime, CPU) outputs as arrays."""
    from rpdetect import Detector

    def run(path: Path, image: object, *, noise: np.ndarray | None = None,
            threshold1: float | None = None, threshold2: float | None = None,
            threshold3: float | None = None) -> dict[str, np.ndarray]:
        detector = Detector(path, providers="cpu", threads=1)
        r = detector.detect(image, noise=None if noise is None else noise[0],
                            threshold1=threshold1, threshold2=threshold2, threshold3=threshold3)
        return {
            "logits": r.logits, "label": np.int64(r.label), "score1": r.score1,
            "score2": r.score2, "score1_max": np.float32(r.score1_max),
            "score2_max": np.float32(r.score2_max), "is_adversarial": np.bool_(r.is_adversarial),
            "flipped": r.flipped, "flips": np.int64(r.flips),
        }

    return run


def relative_error(got: object, want: object) -> float:
    """max |got - want| / max |want| over one output (the output's scale, so scores of 1e-3 are
    not judged on their last digits alone)."""
    g = np.asarray(got, dtype=np.float64).reshape(-1)
    w = np.asarray(want, dtype=np.float64).reshape(-1)
    assert g.shape == w.shape, f"shape {g.shape} != {w.shape}"
    scale = max(float(np.max(np.abs(w))), np.finfo(np.float32).tiny)
    return float(np.max(np.abs(g - w)) / scale)


@pytest.fixture(scope="session")
def assert_same() -> Callable[..., dict[str, float]]:
    """assert_same(got, want, rtol, where): each float output within its rtol (relative_error;
    one number for all, or a dict per output), label and verdict equal; returns the errors."""

    def check(got: dict, want: dict, *, rtol: float | dict[str, float], where: str,
              ) -> dict[str, float]:
        tol = rtol if isinstance(rtol, dict) else dict.fromkeys(SCORE_OUTPUTS, rtol)
        errors = {name: relative_error(got[name], want[name]) for name in SCORE_OUTPUTS}
        bad = {k: (v, tol[k]) for k, v in errors.items() if not v <= tol[k]}
        assert not bad, f"{where}: relative error (measured, allowed): {bad}"
        assert int(np.asarray(got["label"]).reshape(-1)[0]) == int(want["label"]), where
        assert bool(np.asarray(got["is_adversarial"]).reshape(-1)[0]) == bool(
            want["is_adversarial"]), where
        if "flips" in got:  # the label-consistency statistic: an exact count
            assert int(np.asarray(got["flips"]).reshape(-1)[0]) == int(want["flips"]), where
        return errors

    return check
