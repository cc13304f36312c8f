"""INT8 detectors (``rpdetect export --quantize int8``, ``rpdetect.export.quantize``): the file
passes onnx.checker, its classifier is quantized (QDQ) while noise and scores stay float32, its
metadata and ``rpdetect info`` say INT8, and its labels agree with the FP32 detector's on most
images. Speed is the benchmark's business (benchmarks/bench_latency.py), not a test's."""

from __future__ import annotations

import json

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from rpdetect import Detector
from rpdetect.cli import main
from rpdetect.contract import read_spec
from rpdetect.export.quantize import InnerBatchReader, QuantizeOptions
from rpdetect.testing import channel_tint_images

SIZE = 16


def _tint_cnn() -> onnx.ModelProto:
    """Conv (3 -> 8, 3x3; channels 0-2 pass colour c through, 3-7 random texture) -> Relu ->
    GlobalAveragePool -> Gemm (x 100 on channels 0-2): class c = the brightest colour, with a
    margin of about 4 logits on channel_tint_images, so quantization must keep the labels."""
    rng = np.random.default_rng(0)
    w = rng.normal(0.0, 0.05, (8, 3, 3, 3)).astype(np.float32)
    for c in range(3):
        w[c] = 0.0
        w[c, c, 1, 1] = 1.0
    fc = np.zeros((3, 8), np.float32)
    fc[np.arange(3), np.arange(3)] = 100.0
    fc[:, 3:] = rng.normal(0.0, 0.5, (3, 5)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("GlobalAveragePool", ["r"], ["g"]),
         helper.make_node("Flatten", ["g"], ["f"]),
         helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"], transB=1)],
        "tint_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        initializer=[numpy_helper.from_array(w, "w"),
                     numpy_helper.from_array(np.zeros(8, np.float32), "b"),
                     numpy_helper.from_array(fc, "fc"),
                     numpy_helper.from_array(np.zeros(3, np.float32), "fcb")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.fixture(scope="module")
def int8_setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("int8")
    cls = d / "cls.onnx"
    onnx.save(_tint_cnn(), str(cls))
    calib = d / "calibration"
    for label in range(3):
        (calib / str(label)).mkdir(parents=True)
        for i, im in enumerate(channel_tint_images(6, label, size=SIZE, seed=1)):
            cv2.imwrite(str(calib / str(label) / f"{i}.png"), im[:, :, ::-1])
    fp32, int8 = d / "fp32.onnx", d / "int8.onnx"
    common = ["--kappas", "0.01,0.03,0.05,0.1", "--mean", "0.45,0.45,0.45",
              "--std", "0.25,0.25,0.25"]
    assert main(["export", str(cls), "-o", str(fp32), *common]) == 0
    assert main(["export", str(cls), "-o", str(int8), *common, "--quantize", "int8",
                 "--calibration-images", str(calib)]) == 0
    return cls, calib, fp32, int8


def test_int8_file_is_checked_quantized_and_says_so(int8_setup, capsys):
    cls, calib, fp32, int8 = int8_setup
    model = onnx.load(str(int8))
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    # noise, copies and scores are the float32 graph of the FP32 detector
    for op in ("RandomNormalLike", "Softmax", "ReduceL1"):
        assert op in ops
    spec = read_spec(model)
    assert spec.precision == "int8" and read_spec(onnx.load(str(fp32))).precision == "fp32"
    q = spec.quantization
    assert q["quant_format"] == "qdq" and q["per_channel"] and q["images"] == 18
    assert q["activation_type"] == "uint8" and q["weight_type"] == "int8"
    assert spec.classifier_source == "cls.onnx"  # the FP32 classifier it came from
    assert spec.mean == (0.45, 0.45, 0.45)
    capsys.readouterr()
    assert main(["info", str(int8)]) == 0
    text = capsys.readouterr().out
    assert "precision    int8 (QDQ" in text
    assert main(["info", str(int8), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["precision"] == "int8" and doc["quantization"]["images"] == 18


@pytest.mark.parametrize("engine_noise", [None, False])
def test_int8_labels_agree_with_fp32(int8_setup, engine_noise):
    _, _, fp32, int8 = int8_setup
    a = Detector(fp32, seed=0, engine_noise=engine_noise)
    b = Detector(int8, seed=0, engine_noise=engine_noise)
    agree = total = 0
    for label in range(3):
        for im in channel_tint_images(8, label, size=SIZE, seed=9):
            ra, rb = a.detect(im), b.detect(im)
            assert ra.label == label  # the FP32 classifier is right by construction
            agree += ra.label == rb.label
            total += 1
            assert np.all(np.isfinite(rb.score1)) and np.all(np.isfinite(rb.score2))
    assert agree >= 0.9 * total, f"{agree}/{total}"


def test_calibration_feeds_are_the_detectors_inner_batch(int8_setup):
    _, calib, fp32, _ = int8_setup
    spec = read_spec(onnx.load(str(fp32)))
    im = channel_tint_images(1, 0, size=SIZE, seed=1)[0]
    reader = InnerBatchReader([im], spec, "x", seed=3)
    feed = reader.get_next()
    assert reader.get_next() is None and reader.count == 1
    batch = feed["x"]
    assert batch.shape == (spec.n + 1, 3, SIZE, SIZE) and batch.dtype == np.float32
    clean = batch[0] * 0.25 + 0.45  # normalised as the detector folds it
    np.testing.assert_allclose(clean, im.transpose(2, 0, 1) / 255.0, atol=1e-6)
    for i, kappa in enumerate(spec.kappas):
        eps = (batch[1 + i] * 0.25 + 0.45 - clean) / kappa
        assert abs(eps.std() - 1) < 0.15 and abs(eps.mean()) < 0.15


def test_int8_export_errors_name_the_problem(int8_setup, tmp_path, capsys):
    cls, calib, _, _ = int8_setup
    out = tmp_path / "x.onnx"
    assert main(["export", str(cls), "-o", str(out), "--quantize", "int8"]) == 2
    assert "--calibration-images" in capsys.readouterr().err
    assert main(["export", str(cls), "-o", str(out), "--calibration-images", str(calib)]) == 2
    assert "--quantize int8" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["export", str(cls), "-o", str(out), "--quantize", "int8",
                 "--calibration-images", str(empty)]) == 2
    assert "no image files" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(ValueError, match="calibrate_method"):
        QuantizeOptions(calibrate_method="kl")
