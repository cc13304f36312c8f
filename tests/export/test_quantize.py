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
from rpdetect.errors import ModelError
from rpdetect.export.quantize import (
    InnerBatchReader,
    QuantizeOptions,
    classifier_head,
    classifier_stem,
    quantize_classifier,
)
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
    assert q["float_head"] is True and len(q["float_nodes"]) == 1  # the Gemm
    producers = {o: n for n in model.graph.node for o in n.output}
    logits = producers[spec.raw["classifier_output"]]
    assert logits.op_type == "Gemm" and logits.name in q["float_nodes"]
    assert not [n for n in model.graph.node if n.op_type == "QuantizeLinear"
                and logits.output[0] in n.input], "the logits must not be quantized"
    assert spec.classifier_source == "cls.onnx"  # the FP32 classifier it came from
    assert spec.mean == (0.45, 0.45, 0.45)
    capsys.readouterr()
    assert main(["info", str(int8)]) == 0
    text = capsys.readouterr().out
    assert "precision    int8 (QDQ" in text and "head float32" in text
    assert main(["info", str(int8), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["precision"] == "int8" and doc["quantization"]["images"] == 18


@pytest.mark.parametrize("saturates", [True, False])
def test_an_int8_file_warns_where_the_cpus_int8_kernels_saturate(int8_setup, tmp_path, capsys,
                                                                 caplog, monkeypatch, saturates):
    """On a CPU with AVX2 and no VNNI (rpdetect.cpu.u8s8_saturates, faked here either way)
    ONNX Runtime's u8 x s8 kernels saturate on full-range weights: the engine warns and
    ``rpdetect info`` says so, for the default export; a --reduce-range export, whose 7-bit
    weights do not saturate, and an FP32 file get neither."""
    import logging

    import rpdetect.engine.detector as detector_module

    cls, calib, fp32, int8 = int8_setup
    monkeypatch.setattr(detector_module, "u8s8_saturates", lambda: saturates)
    reduced = tmp_path / "int8-reduced.onnx"
    capsys.readouterr()
    assert main(["export", str(cls), "-o", str(reduced), "--kappas", "0.01,0.03,0.05,0.1",
                 "--quantize", "int8", "--calibration-images", str(calib),
                 "--reduce-range"]) == 0
    assert "saturates" not in capsys.readouterr().err
    # a full-range export says, whatever the CPU it runs on, where its weights saturate
    assert main(["export", str(cls), "-o", str(tmp_path / "full.onnx"), "--kappas",
                 "0.01,0.03,0.05,0.1", "--quantize", "int8", "--calibration-images",
                 str(calib)]) == 0
    assert "export with --reduce-range for those" in capsys.readouterr().err
    # so does a Triton repository of it, for the server's CPUs
    for path, noted in ((int8, True), (reduced, False)):
        assert main(["export-triton", str(path), "--repo", str(tmp_path / f"repo-{noted}")]) == 0
        assert ("export with --reduce-range for those" in capsys.readouterr().err) is noted
    weights = [numpy_helper.to_array(t) for t in onnx.load(str(reduced)).graph.initializer
               if t.data_type == TensorProto.INT8]
    assert weights and all(-64 <= w.min() and w.max() <= 64 for w in weights)
    assert read_spec(onnx.load(str(reduced))).quantization["reduce_range"] is True
    for path, warned in ((int8, saturates), (reduced, False), (fp32, False)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="rpdetect.engine"):
            det = Detector(path, providers=["cpu"])
        assert det.int8_saturates is warned, path
        assert any("--reduce-range" in r.getMessage() for r in caplog.records) is warned, path
        capsys.readouterr()
        assert main(["info", str(path)]) == 0
        assert ("u8 x s8 kernels saturate" in capsys.readouterr().out) is warned, path


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


def _named(model: onnx.ModelProto) -> onnx.ModelProto:
    for i, node in enumerate(model.graph.node):
        node.name = f"{node.op_type.lower()}{i}"
    return model


def _with_logit_scale(model: onnx.ModelProto) -> onnx.ModelProto:
    """The tint CNN with its logits multiplied by 0.5 after the Gemm (a temperature)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    g.node[-1].output[0] = "raw"
    g.node.append(helper.make_node("Mul", ["raw", "half"], ["logits"]))
    g.initializer.append(numpy_helper.from_array(np.array(0.5, np.float32), "half"))
    return model


def test_the_head_is_the_last_weighted_layer_and_what_follows():
    assert classifier_head(_named(_tint_cnn())) == ["gemm4"]
    assert classifier_head(_named(_with_logit_scale(_tint_cnn()))) == ["gemm4", "mul5"]
    # no weighted layer on the way to the output: there is no head to keep apart
    pool = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["x"], ["g"], name="gap"),
         helper.make_node("Flatten", ["g"], ["logits"], name="flat")], "pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])])
    assert classifier_head(helper.make_model(pool)) == []


def _tint_reader(count: int = 6):
    feeds = []
    for label in range(3):
        for im in channel_tint_images(count, label, size=SIZE, seed=1):
            feeds.append({"x": (im.transpose(2, 0, 1)[None] / 255.0).astype(np.float32)})
    return iter(feeds)


class _Feeds:
    def __init__(self) -> None:
        self.it = _tint_reader()

    def get_next(self):
        return next(self.it, None)


def _logits(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _sum_cnn() -> onnx.ModelProto:
    """x -> 1x1 Conv (identity) -> Relu -> GlobalAveragePool -> Flatten -> Gemm -> Mul(0.5):
    logit k = 0.5 * (100 * (f0 + f1 + f2) + 10 * f_k), f_c the mean of colour c."""
    fc = np.full((3, 3), 100.0, np.float32) + 10.0 * np.eye(3, dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"]),
         helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("GlobalAveragePool", ["r"], ["g"]),
         helper.make_node("Flatten", ["g"], ["f"]),
         helper.make_node("Gemm", ["f", "fc", "fcb"], ["raw"], transB=1),
         helper.make_node("Mul", ["raw", "half"], ["logits"])],
        "sum_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        initializer=[numpy_helper.from_array(np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1), "w"),
                     numpy_helper.from_array(np.zeros(3, np.float32), "b"),
                     numpy_helper.from_array(fc, "fc"),
                     numpy_helper.from_array(np.zeros(3, np.float32), "fcb"),
                     numpy_helper.from_array(np.array(0.5, np.float32), "half")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_a_float_head_keeps_logits_beyond_the_calibrated_range():
    """Calibration images are grey 0.45 with one colour 0.04 brighter, so each colour mean f_c
    is at most about 0.49 and the logits at most about 0.5 * (139 + 4.9) = 72. An image of
    0.485 in every colour keeps each f_c inside its calibrated range, but its logits (about
    75.2) lie beyond the logits' range: a uint8 head clips them at the calibrated maximum, the
    float32 head follows the FP32 classifier within the body's rounding."""
    fp32 = _sum_cnn()
    x = np.full((1, 3, SIZE, SIZE), 0.485, np.float32)
    want = _logits(fp32, x)[0]
    assert want[0] == pytest.approx(0.5 * (100 * 3 * 0.485 + 10 * 0.485), abs=0.01)
    head_model = quantize_classifier(fp32, _Feeds())
    head = _logits(head_model, x)[0]
    clipped = _logits(quantize_classifier(fp32, _Feeds(), QuantizeOptions(float_head=False)), x)[0]
    assert np.abs(head - want).max() < 1.0, (want, head)
    assert (want - clipped).min() > 2.0, (want, clipped)
    ops = [n.op_type for n in head_model.graph.node]
    assert ops[-2:] == ["Gemm", "Mul"], ops  # no QuantizeLinear after the logits


def test_nodes_to_exclude_are_checked_by_name():
    with pytest.raises(ModelError, match="no node named 'nope'"):
        quantize_classifier(_tint_cnn(), _Feeds(), QuantizeOptions(nodes_to_exclude=("nope",)))
    with pytest.raises(ValueError, match="nodes_to_exclude"):
        QuantizeOptions(nodes_to_exclude="gemm4")  # type: ignore[arg-type]


def _normalised(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` behind a folded normalisation: x -> Sub(0.45) -> Div(0.25) -> the model."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    for node in g.node:
        node.input[:] = ["xn" if i == "x" else i for i in node.input]
    g.node.insert(0, helper.make_node("Div", ["xs", "std"], ["xn"]))
    g.node.insert(0, helper.make_node("Sub", ["x", "mean"], ["xs"]))
    g.initializer.extend([numpy_helper.from_array(np.array(0.45, np.float32), "mean"),
                          numpy_helper.from_array(np.array(0.25, np.float32), "std")])
    return model


def test_the_stem_is_the_first_weighted_layer_and_what_precedes_it():
    assert classifier_stem(_named(_tint_cnn())) == ["conv0"]
    assert classifier_stem(_named(_normalised(_tint_cnn()))) == ["sub0", "div1", "conv2"]
    pool = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["x"], ["logits"], name="gap")], "pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3, 1, 1])])
    assert classifier_stem(helper.make_model(pool)) == []


def test_a_float_stem_reads_the_image_unrounded():
    """With ``float_stem`` no QuantizeLinear reads the image or its normalised form (the noisy
    copies reach the first convolution unrounded), the first convolution stays a float Conv, and
    the logits still follow the FP32 classifier; without it the input is quantized."""
    fp32 = _named(_normalised(_tint_cnn()))
    stem = quantize_classifier(fp32, _Feeds(), QuantizeOptions(float_stem=True))
    plain = quantize_classifier(fp32, _Feeds())
    def reads_input_quantized(m: onnx.ModelProto) -> bool:
        return any(n.op_type == "QuantizeLinear" and n.input[0] in ("x", "xs", "xn")
                   for n in m.graph.node)
    assert reads_input_quantized(plain) and not reads_input_quantized(stem)
    names = {n.name for n in stem.graph.node if n.op_type == "Conv"}
    assert "conv2" in names  # the float convolution kept its name (not fused into QLinearConv)
    x = (channel_tint_images(1, 1, size=SIZE, seed=4).transpose(0, 3, 1, 2) / 255.0
         ).astype(np.float32)
    np.testing.assert_allclose(_logits(stem, x), _logits(fp32, x), atol=1.0)
