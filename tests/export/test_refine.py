"""Quantization-aware refinement of an INT8 classifier (``rpdetect.export.refine``,
``rpdetect export --quantize int8 --refine-steps N``): the refined file keeps ONNX Runtime's
structure and ranges, computes what the refinement trained (its torch twin equals ONNX Runtime
on it), and follows the FP32 classifier more closely than post-training quantization alone on
images it was not refined on."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("torch")
import onnxruntime as ort  # noqa: E402

from rpdetect.cli import main  # noqa: E402
from rpdetect.contract import read_spec  # noqa: E402
from rpdetect.cpu import u8s8_saturates  # noqa: E402
from rpdetect.export.quantize import (  # noqa: E402
    QuantizeOptions,
    quantize_classifier,
    weight_range,
)
from rpdetect.export.refine import refine_quantized  # noqa: E402

SIZE = 12
KAPPAS = np.array([0.01, 0.05, 0.1], np.float32)


def _cnn() -> onnx.ModelProto:
    """Three random 3x3 convolutions with ReLU, global pooling and a Gemm to 5 logits: wide
    random weights, so rounding them to int8 and the activations to uint8 moves the logits."""
    rng = np.random.default_rng(1)
    inits, nodes, cin, x = [], [], 3, "x"
    for i, cout in enumerate((8, 8, 8)):
        inits += [numpy_helper.from_array(rng.normal(0, 0.6, (cout, cin, 3, 3)).astype(
            np.float32), f"w{i}"), numpy_helper.from_array(rng.normal(0, 0.3, cout).astype(
                np.float32), f"b{i}")]
        nodes += [helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1] * 4),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        x, cin = f"r{i}", cout
    inits += [numpy_helper.from_array(rng.normal(0, 1.0, (5, 8)).astype(np.float32), "fc"),
              numpy_helper.from_array(np.zeros(5, np.float32), "fcb")]
    nodes += [helper.make_node("GlobalAveragePool", [x], ["g"]),
              helper.make_node("Flatten", ["g"], ["f"]),
              helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"], transB=1)]
    graph = helper.make_graph(
        nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                     ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _images(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(0, 1, (3, SIZE, SIZE)).astype(np.float32) for _ in range(n)]


def _batch(rng: np.random.Generator):
    def batch(x: np.ndarray) -> np.ndarray:
        noisy = x[None] + rng.standard_normal((len(KAPPAS), *x.shape), dtype=np.float32) \
            * KAPPAS.reshape(-1, 1, 1, 1)
        return np.concatenate([x[None], noisy]).astype(np.float32)
    return batch


class _Reader:
    def __init__(self, images: list[np.ndarray]) -> None:
        batch = _batch(np.random.default_rng(0))
        self.it = iter([{"x": batch(x)} for x in images])

    def get_next(self):
        return next(self.it, None)


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.fixture(scope="module")
def refined():
    fp32 = _cnn()
    train = _images(12, seed=2)
    # 7-bit weights where ONNX Runtime's u8 x s8 kernels saturate on full-range ones (AVX2
    # without VNNI), so that ONNX Runtime computes the twin's integer arithmetic here too
    options = QuantizeOptions(float_head=True, reduce_range=u8s8_saturates())
    int8 = quantize_classifier(fp32, _Reader(train), options)
    model, report = refine_quantized(int8, fp32, train, _batch(np.random.default_rng(5)),
                                     steps=200, lr=0.05, other_lr=5.0,
                                     weight_range=weight_range(options))
    return fp32, int8, model, report


def test_refinement_brings_held_out_logits_closer_to_fp32(refined):
    fp32, int8, model, report = refined
    held = np.concatenate([_batch(np.random.default_rng(7))(x) for x in _images(20, seed=3)])
    z = _run(fp32, held)
    before = float(np.mean((_run(int8, held) - z) ** 2))
    after = float(np.mean((_run(model, held) - z) ** 2))
    assert after < 0.8 * before, (before, after)  # images it was not refined on
    assert report.loss_last < report.loss_first and report.steps == 200
    assert 0 < report.changed < report.weights


def test_refined_file_keeps_structure_and_ranges(refined):
    _, int8, model, _ = refined
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node] == [n.op_type for n in int8.graph.node]
    old = {t.name: numpy_helper.to_array(t) for t in int8.graph.initializer}
    new = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert old.keys() == new.keys()
    moved = [k for k in old if not np.array_equal(old[k], new[k])]
    assert moved
    for k in moved:  # integer weights and biases, and the float head; never a scale or zero point
        assert new[k].dtype == old[k].dtype and new[k].shape == old[k].shape
        assert "scale" not in k and "zero_point" not in k, k
    assert any(old[k].dtype == np.int8 for k in moved)


def test_refined_file_computes_what_was_trained(refined):
    """The twin that was trained, rebuilt from the written file, equals ONNX Runtime on it."""
    import torch

    from rpdetect.evaluation.quantized_twin import quantized_twin

    _, _, model, _ = refined
    x = np.concatenate(_images(4, seed=11)).reshape(4, 3, SIZE, SIZE)
    with torch.no_grad():
        twin = quantized_twin(model)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(twin, _run(model, x), atol=1e-4)


def test_refined_weights_keep_the_reduced_range_they_were_quantized_to():
    """--reduce-range quantizes weights to [-64, 64], which u8 x s8 kernels without VNNI do not
    saturate on; a refinement that pushes them hard must not leave that range."""
    fp32 = _cnn()
    train = _images(6, seed=2)
    options = QuantizeOptions(float_head=True, reduce_range=True)
    assert weight_range(options) == (-64, 64)
    assert weight_range(QuantizeOptions()) == (-128, 127)
    int8 = quantize_classifier(fp32, _Reader(train), options)
    model, _ = refine_quantized(int8, fp32, train, _batch(np.random.default_rng(5)), steps=40,
                                lr=20.0, weight_range=(-64, 64))  # steps of 20 integer levels
    weights = [numpy_helper.to_array(t) for t in model.graph.initializer
               if t.data_type == TensorProto.INT8]
    assert weights and max(int(np.abs(w).max()) for w in weights) == 64  # pushed to the edge
    for bad in ((-129, 127), (0, 127), (-64, 0)):
        with pytest.raises(ValueError, match="weight_range"):
            refine_quantized(int8, fp32, train, _batch(np.random.default_rng(5)), steps=1,
                             weight_range=bad)


def test_refine_options_are_checked():
    with pytest.raises(ValueError, match="refine_steps"):
        QuantizeOptions(refine_steps=-1)
    with pytest.raises(ValueError, match="refine_lr"):
        QuantizeOptions(refine_lr=0.0)
    with pytest.raises(ValueError, match="QDQ"):
        QuantizeOptions(refine_steps=10, quant_format="qoperator")
    # the cache key of an unrefined quantization is what it was before refinement existed
    assert QuantizeOptions().cache_key() == repr(QuantizeOptions())
    assert QuantizeOptions(refine_steps=5).cache_key() != QuantizeOptions().cache_key()


def test_export_refine_steps_says_so(tmp_path, capsys):
    import cv2

    cls = tmp_path / "cls.onnx"
    onnx.save(_cnn(), str(cls))
    calib = tmp_path / "calibration"
    calib.mkdir()
    for i, x in enumerate(_images(6, seed=4)):
        cv2.imwrite(str(calib / f"{i}.png"), (x.transpose(1, 2, 0) * 255).astype(np.uint8))
    out = tmp_path / "int8.onnx"
    common = ["--kappas", "0.01,0.05,0.1", "--calibration-images", str(calib)]
    assert main(["export", str(cls), "-o", str(out), "--refine-steps", "3"]) == 2
    assert "--quantize int8" in capsys.readouterr().err
    assert main(["export", str(cls), "-o", str(out), "--quantize", "int8", *common,
                 "--refine-steps", "4"]) == 0
    q = read_spec(onnx.load(str(out))).quantization
    assert q["refine_steps"] == 4 and q["refine"]["steps"] == 4
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    assert "refined toward the FP32 classifier in 4 steps" in capsys.readouterr().out
    assert main(["info", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["quantization"]["refine"]["weights"] > 0
