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

from rpdetect.cpu import u8s8_saturates
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
    # where ONNX Runtime's u8 x s8 kernels saturate on full-range weights (AVX2 without VNNI),
    # the twin is ONNX Runtime's arithmetic only for 7-bit weights, what rpdetect tells users of
    # such CPUs to export (test_full_range_weights_saturate_on_a_cpu_without_vnni below)
    int8 = quantize_classifier(fp32, _Feeds(fp32.graph.input[0].name, images),
                               QuantizeOptions(reduce_range=u8s8_saturates()))
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


@pytest.mark.skipif(not u8s8_saturates(), reason="ONNX Runtime's u8 x s8 kernels are exact on "
                    "this CPU (VNNI, AMX, or not x86)")
def test_full_range_weights_saturate_on_a_cpu_without_vnni(quantized, tiny_cifar):
    """AVX2's vpmaddubsw adds u8 x s8 products in pairs into int16: with full-range int8
    weights ONNX Runtime's logits leave the integer arithmetic the twin computes (as a CPU with
    VNNI computes it); with 7-bit weights (reduce_range) they do not."""
    fp32, reduced, images, _ = quantized
    full = quantize_classifier(fp32, _Feeds(fp32.graph.input[0].name, images))
    x = _inputs(images)
    with torch.no_grad():
        full_err = np.abs(quantized_twin(full)(torch.from_numpy(x)).numpy() - _ort(full, x))
        reduced_err = np.abs(quantized_twin(reduced)(torch.from_numpy(x)).numpy()
                             - _ort(reduced, x))
    assert np.median(full_err.max(axis=1)) > 1e-3, full_err.max(axis=1)
    assert np.mean(reduced_err.max(axis=1) <= 1e-4) >= 0.9, reduced_err.max(axis=1)


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


def _single_op(op: str, x_shape: tuple, y_shape: tuple, inits: dict | None = None,
               extra_inputs: tuple = (), **attrs) -> onnx.ModelProto:
    inits = inits or {}
    graph = helper.make_graph(
        [helper.make_node(op, ["x", *extra_inputs], ["y"], name=op.lower(), **attrs)], op,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        [onnx.numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


_W = np.random.default_rng(7).normal(0, 1, (3, 4, 3, 3)).astype(np.float32)


@pytest.mark.parametrize("op, y_shape, inits, extra, attrs", [
    ("Sigmoid", (2, 4, 6, 6), None, (), {}),
    ("Tanh", (2, 4, 6, 6), None, (), {}),
    ("LeakyRelu", (2, 4, 6, 6), None, (), {"alpha": 0.2}),
    ("HardSigmoid", (2, 4, 6, 6), None, (), {"alpha": 0.3, "beta": 0.4}),
    ("HardSwish", (2, 4, 6, 6), None, (), {}),
    ("Softmax", (2, 4, 6, 6), None, (), {"axis": 1}),
    ("Transpose", (6, 4, 2, 6), None, (), {"perm": [2, 1, 0, 3]}),
    ("AveragePool", (2, 4, 3, 3), None, (), {"kernel_shape": [3, 3], "strides": [2, 2],
                                             "pads": [1, 1, 1, 1]}),
    ("AveragePool", (2, 4, 3, 3), None, (), {"kernel_shape": [2, 2], "strides": [2, 2],
                                             "ceil_mode": 1}),
    ("BatchNormalization", (2, 4, 6, 6),
     {"s": np.array([1.5, 0.5, 2.0, 1.0], np.float32), "b": np.arange(4, dtype=np.float32),
      "m": np.array([0.1, -0.2, 0.3, 0.0], np.float32),
      "v": np.array([0.5, 2.0, 1.0, 0.1], np.float32)}, ("s", "b", "m", "v"), {}),
    ("Squeeze", (2, 4, 6, 6), {"a": np.array([4], np.int64)}, ("a",), {}),
    ("Unsqueeze", (2, 4, 6, 6), {"a": np.array([-1], np.int64)}, ("a",), {}),
    ("Conv", (2, 3, 3, 3), {"w": _W}, ("w",), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ("Conv", (2, 3, 3, 3), {"w": _W}, ("w",), {"auto_pad": "SAME_LOWER", "strides": [2, 2]}),
    ("Conv", (2, 3, 4, 4), {"w": _W}, ("w",), {"auto_pad": "VALID"}),
    ("Pad", (2, 4, 9, 7), {"p": np.array([0, 0, 1, 0, 0, 0, 2, 1], np.int64),
                           "v": np.array(0.5, np.float32)}, ("p", "v"), {}),
    ("Pad", (2, 4, 8, 8), {"p": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)}, ("p",),
     {"mode": "reflect"}),
    ("Pad", (2, 4, 8, 7), {"p": np.array([0, 0, 2, 0, 0, 0, 0, 1], np.int64)}, ("p",),
     {"mode": "edge"}),
    ("Slice", (2, 2, 5, 2), {"s": np.array([1, -5, 1], np.int64),
                             "e": np.array([3, 2 ** 40, -1], np.int64),
                             "a": np.array([1, 2, -1], np.int64),
                             "t": np.array([1, 1, 2], np.int64)}, ("s", "e", "a", "t"), {}),
    ("Cast", (2, 4, 6, 6), None, (), {"to": TensorProto.FLOAT}),
    ("Dropout", (2, 4, 6, 6), None, (), {}),
    ("GlobalMaxPool", (2, 4, 1, 1), None, (), {}),
])
def test_each_further_operator_computes_what_onnx_runtime_computes(op, y_shape, inits, extra,
                                                                   attrs):
    # what classifiers other than rpdetect's zoo are made of (SE blocks, MobileNetV3's hard
    # activations, average pooling, unfolded batch norm, flatten by view), one node each
    x_shape = (2, 4, 6, 6, 1) if op == "Squeeze" else (2, 4, 6, 6)
    out_shape = {"Squeeze": (2, 4, 6, 6), "Unsqueeze": (2, 4, 6, 6, 1)}.get(op, y_shape)
    model = _single_op(op, x_shape, out_shape, inits, extra, **attrs)
    x = np.random.default_rng(0).normal(0, 2, x_shape).astype(np.float32)
    with torch.no_grad():
        got = quantized_twin(model)(torch.from_numpy(x)).contiguous().numpy()
    want = _ort(model, x)
    assert got.shape == want.shape == out_shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_a_flatten_by_view_runs_through_shape_and_gather():
    # torch's x.view(x.size(0), -1) as exporters write it: Shape -> Gather -> Unsqueeze ->
    # Concat with -1 -> Reshape
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus_one"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["y"])]
    inits = [onnx.numpy_helper.from_array(np.array(0, np.int64), "zero"),
             onnx.numpy_helper.from_array(np.array([0], np.int64), "axes"),
             onnx.numpy_helper.from_array(np.array([-1], np.int64), "minus_one")]
    graph = helper.make_graph(nodes, "view", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["N", 3, 4, 4])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, ["N", 48])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(1).random((5, 3, 4, 4), dtype=np.float32)
    with torch.no_grad():
        np.testing.assert_array_equal(quantized_twin(model)(torch.from_numpy(x)).numpy(),
                                      _ort(model, x))


def test_twin_of_an_int8_mobilenet_style_classifier(tmp_path: Path):
    # conv + batch norm, hard-swish, a squeeze-excitation gate (average, 1x1 convs, sigmoid,
    # multiply), leaky ReLU, average pooling and a linear head, exported by torch and quantized
    # by rpdetect: the twin gives ONNX Runtime's INT8 logits
    from rpdetect.export.torch_export import torch_to_onnx

    nn = torch.nn

    class SE(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.pool, self.fc1, self.fc2 = nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, 4, 1), \
                nn.Conv2d(4, c, 1)

        def forward(self, x):
            return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(self.pool(x)))))

    class Residual(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.conv = nn.Conv2d(c, c, 3, padding=1)

        def forward(self, x):
            return x + self.conv(x)

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.Hardswish(), SE(16),
        Residual(16), Residual(16),
        nn.Conv2d(16, 24, 3, stride=2, padding=1), nn.LeakyReLU(0.1), nn.AvgPool2d(2),
        nn.Conv2d(24, 24, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(24, 5)).eval()
    with torch.no_grad():  # a batch norm that does something, logits of a few units
        model[1].running_mean.uniform_(-0.2, 0.2)
        model[1].running_var.uniform_(0.5, 2.0)
        model[-1].weight.mul_(40.0)
    path = tmp_path / "mb.onnx"
    torch_to_onnx(model, path, input_shape=(3, 16, 16), mean=(0.5,) * 3, std=(0.25,) * 3)
    fp32 = onnx.load(str(path))
    images = np.random.default_rng(3).random((24, 3, 16, 16), dtype=np.float32)
    int8 = quantize_classifier(fp32, _Feeds(fp32.graph.input[0].name, images[:16]),
                               QuantizeOptions(reduce_range=u8s8_saturates()))
    x = _inputs(images)
    z_int8, z_fp32 = _ort(int8, x), _ort(fp32, x)
    with torch.no_grad():
        z_twin = quantized_twin(int8)(torch.from_numpy(x)).numpy()
        z_twin_fp32 = quantized_twin(fp32)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(z_twin_fp32, z_fp32, atol=1e-4)  # the float graph, interpreted
    twin_err = np.abs(z_twin - z_int8).max(axis=1)
    fp32_err = np.abs(z_fp32 - z_int8).max(axis=1)
    # ONNX Runtime fuses DequantizeLinear -> AveragePool -> QuantizeLinear into
    # QLinearAveragePool, which rounds y / scale + zero point, and the residual adds into
    # QLinearAdd (fused multiply-adds in float32): the twin computes both in that order, or
    # exact ties (a quarter of the averages of 4 integers) round the other way
    assert np.mean(twin_err <= 1e-4) >= 0.9, twin_err
    assert np.median(fp32_err) > 10 * max(np.median(twin_err), 1e-5), (fp32_err, twin_err)
    assert (z_twin.argmax(1) == z_int8.argmax(1)).all()


def _qdq_add_model(sa: float, za: int, sb: float, zb: int, sy: float, zy: int) -> onnx.ModelProto:
    """x [2, N] (integers 0-255 as float) -> uint8 a = x[0], b = x[1] -> DequantizeLinear ->
    Add -> QuantizeLinear: what ONNX Runtime runs as QLinearAdd."""
    init = onnx.numpy_helper.from_array
    nodes = [helper.make_node("QuantizeLinear", ["x", "one", "zero"], ["q"]),
             helper.make_node("Gather", ["q", "i0"], ["qa"], axis=0),
             helper.make_node("Gather", ["q", "i1"], ["qb"], axis=0),
             helper.make_node("DequantizeLinear", ["qa", "sa", "za"], ["fa"]),
             helper.make_node("DequantizeLinear", ["qb", "sb", "zb"], ["fb"]),
             helper.make_node("Add", ["fa", "fb"], ["s"]),
             helper.make_node("QuantizeLinear", ["s", "sy", "zy"], ["y"])]
    inits = [init(np.array(1.0, np.float32), "one"), init(np.array(0, np.uint8), "zero"),
             init(np.array(0, np.int64), "i0"), init(np.array(1, np.int64), "i1"),
             init(np.array(sa, np.float32), "sa"), init(np.array(za, np.uint8), "za"),
             init(np.array(sb, np.float32), "sb"), init(np.array(zb, np.uint8), "zb"),
             init(np.array(sy, np.float32), "sy"), init(np.array(zy, np.uint8), "zy")]
    graph = helper.make_graph(nodes, "qadd", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [2, 65536])], [helper.make_tensor_value_info(
            "y", TensorProto.UINT8, [65536])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("seed", range(4))
def test_a_quantized_residual_add_rounds_as_onnx_runtime_does(seed):
    # every pair of 8-bit inputs: ONNX Runtime's QLinearAdd (its AVX2 kernel: fused multiply-
    # adds in float32) lands some results on exact ties, which another order of the same float
    # arithmetic rounds the other way; the twin must give the same integers
    rng = np.random.default_rng(seed)
    sy = float(rng.uniform(0.01, 0.1))
    model = _qdq_add_model(sy * float(rng.uniform(0.3, 1.2)), int(rng.integers(0, 256)),
                           sy * float(rng.uniform(0.3, 1.2)), int(rng.integers(0, 256)),
                           sy, int(rng.integers(0, 256)))
    a, b = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    x = np.stack([a.ravel(), b.ravel()]).astype(np.float32)
    want = _ort(model, x).astype(np.float32)
    with torch.no_grad():
        got = quantized_twin(model)(torch.from_numpy(x)).numpy()
    assert np.array_equal(got, want), np.flatnonzero(got != want)[:10]


def test_a_float_classifier_file_interpreted_has_the_modules_logits_and_gradients(
        quantized, tiny_cifar, tmp_path: Path):
    # white-box attacks on a classifier known only as ONNX run on its graph interpreted in
    # torch: the logits are ONNX Runtime's and the gradients are the torch module's it was
    # exported from (pixels in [0, 1], the normalisation folded into the file)
    from rpdetect.evaluation.quantized_twin import twin_from_onnx

    fp32, _, images, labels = quantized
    _, _, module = tiny_cifar
    path = tmp_path / "clf.onnx"
    onnx.save(fp32, str(path))
    twin = twin_from_onnx(path)
    x = torch.from_numpy(images[:8]).requires_grad_()
    y = torch.as_tensor(labels[:8])
    z = twin(x)
    np.testing.assert_allclose(z.detach().numpy(), _ort(fp32, images[:8]), atol=1e-4)
    torch.nn.functional.cross_entropy(z, y).backward()
    x_ref = torch.from_numpy(images[:8]).requires_grad_()
    torch.nn.functional.cross_entropy(module((x_ref - 0.5) / 0.25), y).backward()
    np.testing.assert_allclose(x.grad.numpy(), x_ref.grad.numpy(), rtol=1e-3,
                               atol=1e-4 * float(x_ref.grad.abs().max()))
