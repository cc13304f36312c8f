"""Tiny detectors for the engine tests, built once per session.

* a linear classifier written with onnx.helper (Flatten -> MatMul -> Add), whose float64 numpy
  twin is the independent reference;
* a small random torch CNN exported with ``torch_to_onnx`` (normalisation folded in), whose
  float64 torch twin is the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from rpdetect.export import DetectorConfig, build_detector, save_onnx

SIZE = 32
CLASSES = 5
KAPPAS = tuple(float(k) for k in np.linspace(0.01, 0.1, 4))  # n = 4 keeps feeds small


@dataclass(frozen=True)
class Classifier:
    model: onnx.ModelProto
    fn: Callable[[np.ndarray], np.ndarray]  # float64 reference: [N, C, H, W] -> [N, K]
    channels: int


def linear_classifier(*, channels: int = 3, seed: int = 0) -> Classifier:
    rng = np.random.default_rng(seed)
    features = channels * SIZE * SIZE
    # Weights large enough that the noisy logits move by O(0.1..1): scores far from float32 eps.
    w = rng.normal(0.0, 0.1, (features, CLASSES)).astype(np.float32)
    b = rng.normal(0.0, 0.5, (CLASSES,)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["x"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "w"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["y"]),
        ],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", channels, SIZE, SIZE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", CLASSES])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    w64, b64 = w.astype(np.float64), b.astype(np.float64)

    def fn(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return x.reshape(len(x), -1) @ w64 + b64

    return Classifier(model, fn, channels)


@pytest.fixture(scope="session")
def linear() -> Classifier:
    return linear_classifier()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("engine_models")


def write_detector(classifier: Classifier, path: Path, **config: object) -> Path:
    config.setdefault("kappas", KAPPAS)
    model = build_detector(classifier.model, DetectorConfig(**config))  # type: ignore[arg-type]
    onnx.checker.check_model(model, full_check=True)
    return save_onnx(model, path)


@pytest.fixture(scope="session")
def det_input(linear: Classifier, model_dir: Path) -> Path:
    """noise='input', batch 1: the workhorse."""
    return write_detector(linear, model_dir / "input_b1.onnx", noise="input")


@pytest.fixture(scope="session")
def det_input_b3(linear: Classifier, model_dir: Path) -> Path:
    return write_detector(linear, model_dir / "input_b3.onnx", noise="input", batch=3)


@pytest.fixture(scope="session")
def det_graph(linear: Classifier, model_dir: Path) -> Path:
    return write_detector(linear, model_dir / "graph_b1.onnx", noise="graph")


@pytest.fixture(scope="session")
def det_bgr(linear: Classifier, model_dir: Path) -> Path:
    """uint8 BGR NHWC graph input (what OpenCV hands over), noise as input, batch 2."""
    return write_detector(linear, model_dir / "bgr_b2.onnx", noise="input", batch=2,
                          input_format="uint8-nhwc-bgr")


@pytest.fixture(scope="session")
def gray_classifier() -> Classifier:
    return linear_classifier(channels=1, seed=1)


@pytest.fixture(scope="session")
def det_gray(gray_classifier: Classifier, model_dir: Path) -> Path:
    return write_detector(gray_classifier, model_dir / "gray_b1.onnx", noise="input")


@pytest.fixture(scope="session")
def det_calibrated(linear: Classifier, model_dir: Path) -> Path:
    return write_detector(linear, model_dir / "calibrated.onnx", noise="input",
                          threshold1=0.05, threshold2=0.01)


@pytest.fixture(scope="session")
def plain_classifier_file(linear: Classifier, model_dir: Path) -> Path:
    path = model_dir / "classifier.onnx"
    onnx.save(linear.model, str(path))
    return path


@pytest.fixture(scope="session")
def torch_detector(model_dir: Path) -> tuple[Path, Callable[[np.ndarray], np.ndarray]]:
    """A random torch CNN -> torch_to_onnx (mean/std folded) -> detector; float64 torch twin."""
    torch = pytest.importorskip("torch")
    from rpdetect.export.torch_export import torch_to_onnx

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 8 * 8, CLASSES),
    ).eval()
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    classifier = torch_to_onnx(net, model_dir / "cnn.onnx", input_shape=(3, SIZE, SIZE),
                               mean=mean, std=std)
    model = build_detector(classifier, DetectorConfig(kappas=KAPPAS, noise="input"))
    onnx.checker.check_model(model, full_check=True)
    path = save_onnx(model, model_dir / "cnn_detector.onnx")
    net64 = net.double()
    m = torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float64).view(1, 3, 1, 1)

    def fn(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net64((torch.from_numpy(np.asarray(x, dtype=np.float64)) - m) / s).numpy()

    return path, fn


def rgb_image(seed: int, size: tuple[int, int] = (SIZE, SIZE)) -> np.ndarray:
    """A uint8 HWC RGB test image."""
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def write_png(path: Path, rgb: np.ndarray) -> Path:
    """Lossless PNG of an RGB (or gray / RGBA) uint8/uint16 array, via OpenCV (BGR on disk)."""
    if rgb.ndim == 3 and rgb.shape[2] == 3:
        rgb = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    elif rgb.ndim == 3 and rgb.shape[2] == 4:
        rgb = cv2.cvtColor(rgb, cv2.COLOR_RGBA2BGRA)
    assert cv2.imwrite(str(path), rgb), path
    return path


def noise_for(seed: int, n: int = len(KAPPAS), channels: int = 3) -> np.ndarray:
    return np.random.default_rng(1000 + seed).standard_normal(
        (n, channels, SIZE, SIZE)).astype(np.float32)


@pytest.fixture(scope="session")
def tools() -> SimpleNamespace:
    """The helpers above, for test modules (importlib mode: no ``from conftest import``)."""
    return SimpleNamespace(SIZE=SIZE, CLASSES=CLASSES, KAPPAS=KAPPAS, rgb_image=rgb_image,
                           write_png=write_png, noise_for=noise_for, write_detector=write_detector,
                           linear_classifier=linear_classifier)
