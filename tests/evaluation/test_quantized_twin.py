"""The INT8 classifier's torch twin (``rpdetect.evaluation.quantized_twin``), the model white-box
attacks on an INT8 detector run on: its forward pass is ONNX Runtime's integer arithmetic (the
same logits, not the FP32 model's), its gradients are usable, and a minimal attack on it lands
across the boundary of the INT8 model that is deployed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from rpdetect.errors import ModelError
from rpdetect.export.quantize import QuantizeOptions, quantize_classifier

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from rpdetect.evaluation.quantized_twin import quantized_twin  # noqa: E402


class _Feeds:
    """CalibrationDataReader over arrays, one feed per image with noisy copies."""

    def __init__(self, name: str, images: np.ndarray) -> None:
        rng = np.random.default_rng(1)
        self.feeds = [{name: np.concatenate([x[None], np.clip(
            x[None] + rng.normal(0, 0.05, (4, *x.shape)), 0, 1)]).astype(np.float32)}
            for x in images]

    def get_next(self):
        return self.feeds.pop() if self.feeds else None


@pytest.fixture(scope="module")
def quantized(tiny_cifar, tmp_path_factory) -> tuple[onnx.ModelProto, onnx.ModelProto,
                                                      np.ndarray, np.ndarray]:
    """The tiny CNN as a pixel-space FP32 ONNX, its INT8 (QDQ, head float) version, and the
    20 images with their labels."""
    from rpdetect.export.torch_export import torch_to_onnx

    images, labels, model = tiny_cifar
    path = tmp_path_factory.mktemp("twin") / "clf.onnx"
    torch_to_onnx(model, path, input_shape=(3, 32, 32), mean=(0.5,) * 3, std=(0.25,) * 3)
    fp32 = onnx.load(str(path))
    int8 = quantize_classifier(fp32, _Feeds(fp32.graph.input[0].name, images))
    return fp32, int8, images, labels


def _ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def _inputs(images: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(5)
    noisy = np.clip(images + rng.normal(0, 0.03, images.shape), 0, 1)
    return np.concatenate([images, noisy]).astype(np.float32)


def test_twin_computes_onnx_runtimes_int8_logits(quantized):
    fp32, int8, images, _ = quantized
    x = _inputs(images)
    z_int8, z_fp32 = _ort(int8, x), _ort(fp32, x)
    with torch.no_grad():
        z_twin = quantized_twin(int8)(torch.from_numpy(x)).numpy()
    twin_err = np.abs(z_twin - z_int8).max(axis=1)
    fp32_err = np.abs(z_fp32 - z_int8).max(axis=1)
    # integer products and one float requantization per layer, as QLinearConv: equal up to a
    # rare tie rounded the other way (tolerance: 1e-4 logits on 90% of the 40 inputs)
    assert np.mean(twin_err <= 1e-4) >= 0.9, twin_err
    assert np.median(fp32_err) > 10 * max(np.median(twin_err), 1e-5)  # quantization is real
    assert (z_twin.argmax(1) == z_int8.argmax(1)).all()


def test_twin_gradients_follow_the_models_gradients(quantized):
    fp32, int8, images, labels = quantized
    twin_of = quantized_twin
    x = torch.from_numpy(images[:8]).requires_grad_()
    y = torch.as_tensor(labels[:8])
    torch.nn.functional.cross_entropy(twin_of(int8)(x), y).backward()
    g_twin = x.grad.reshape(8, -1).numpy()
    # the straight-through twin of the FP32 file (no QDQ: the plain model) for reference
    x2 = torch.from_numpy(images[:8]).requires_grad_()
    torch.nn.functional.cross_entropy(twin_of(fp32)(x2), y).backward()
    g_fp32 = x2.grad.reshape(8, -1).numpy()
    assert np.isfinite(g_twin).all() and (np.abs(g_twin).sum(axis=1) > 0).all()
    cos = (g_twin * g_fp32).sum(1) / (np.linalg.norm(g_twin, axis=1)
                                      * np.linalg.norm(g_fp32, axis=1))
    assert np.median(cos) > 0.5, cos


def test_a_minimal_attack_on_the_twin_crosses_the_int8_boundary(quantized):
    fb = pytest.importorskip("foolbox")
    _, int8, images, labels = quantized
    twin = quantized_twin(int8)
    x, y = torch.from_numpy(images), torch.as_tensor(labels)
    correct = (_ort(int8, images).argmax(1) == labels)
    model = fb.PyTorchModel(twin, bounds=(0, 1))
    _, adv, success = fb.attacks.DDNAttack(steps=30)(model, x[correct], y[correct],
                                                    epsilons=None)
    adv = adv.numpy()[success.numpy()]
    assert len(adv) >= 0.8 * correct.sum()
    # the deployed INT8 model (ONNX Runtime) misclassifies what fooled its twin
    fooled = _ort(int8, adv).argmax(1) != labels[correct][success.numpy()]
    assert fooled.mean() >= 0.9


def test_operators_it_cannot_interpret_are_named():
    graph = helper.make_graph(
        [helper.make_node("Softplus", ["x"], ["y"], name="odd")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])])
    with pytest.raises(ModelError, match="node 'odd': operator Softplus"):
        quantized_twin(helper.make_model(graph))


def test_twin_from_a_detector_file_reads_pixels(quantized, tmp_path: Path):
    from rpdetect.contract import DetectorConfig
    from rpdetect.evaluation.quantized_twin import twin_from_detector
    from rpdetect.export.graph import extract_classifier, save_onnx
    from rpdetect.export.quantize import build_int8_detector

    fp32, _, images, _ = quantized
    det = build_int8_detector(fp32, DetectorConfig(kappas=(0.01, 0.05)), list(images),
                              options=QuantizeOptions(max_images=20))
    path = tmp_path / "det.onnx"
    save_onnx(det, path)
    inner = extract_classifier(det)
    with torch.no_grad():
        z = twin_from_detector(path)(torch.from_numpy(images)).numpy()
    assert (z.argmax(1) == _ort(inner, images).argmax(1)).all()
