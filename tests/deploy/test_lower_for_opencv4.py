"""clients/cpp/lower_for_opencv4.py: the rewritten detector computes what the exported one does
(checked on ONNX Runtime), keeps the contract and metadata, and uses only the forms OpenCV 4.6
imports."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from rpdetect.export.graph import DetectorConfig, build_detector, load_onnx
from rpdetect.contract import node_name, read_spec
from rpdetect.testing import run

pytestmark = pytest.mark.slow


def _feeds(fmt, image_hwc, image_float, noise):
    image = {"float-nchw": image_float, "uint8-nhwc-rgb": image_hwc[None],
             "uint8-nhwc-bgr": np.ascontiguousarray(image_hwc[None, :, :, ::-1])}[fmt]
    return {"image": image, "noise": noise}


@pytest.mark.parametrize("fmt", ["float-nchw", "uint8-nhwc-rgb", "uint8-nhwc-bgr"])
def test_lowered_graph_computes_the_same(fmt, make_detector, lowering, image_hwc, image_float,
                                         noise):
    original = load_onnx(make_detector(f"input-{fmt}", noise="input", input_format=fmt))
    lowered = lowering.lower_for_opencv4(original)
    onnx.checker.check_model(lowered, full_check=True)
    feeds = _feeds(fmt, image_hwc, image_float, noise)
    want, got = run(original, feeds), run(lowered, feeds)
    assert list(got) == list(want)
    for name in want:
        assert got[name].dtype == want[name].dtype and got[name].shape == want[name].shape
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=0, err_msg=name)

    assert [i.name for i in lowered.graph.input][:2] == ["image", "noise"]
    assert read_spec(lowered) == read_spec(original)
    opsets = {o.domain: o.version for o in lowered.opset_import}
    assert opsets[""] == lowering.TARGET_OPSET
    ops = [n for n in lowered.graph.node]
    assert not any(n.op_type == "Or" for n in ops)
    assert not any(n.op_type == "Squeeze" and len(n.input) == 2 for n in ops)
    assert not any(n.op_type.startswith("Reduce") and len(n.input) == 2 for n in ops)


def test_folded_normalisation_becomes_a_1x1_conv(classifier_path, lowering, image_float, noise):
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    original = build_detector(classifier_path, DetectorConfig(noise="input", mean=mean, std=std))
    lowered = lowering.lower_for_opencv4(original)
    feeds = {"image": image_float, "noise": noise}
    want, got = run(original, feeds), run(lowered, feeds)
    # x / std becomes x * (1 / std), an ulp off the input: 8 random images, elementwise relative
    # error measured <= 4.3e-6 on logits and <= 5.2e-5 on score2 (float32 cancellation)
    for name in ("logits", "score1", "score2", "score1_max", "score2_max"):
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-7, err_msg=name)
    assert got["label"] == want["label"]
    norm_inputs = {node_name("normalisation", "centred"), node_name("input", "inner_batch")}
    convs = [n for n in lowered.graph.node if n.op_type == "Conv" and n.input[0] in norm_inputs]
    assert len(convs) == 2
    assert not any(n.op_type in ("Sub", "Div") and n.input[0] in norm_inputs
                   for n in lowered.graph.node)


def test_relu6_and_mean_pooling_are_rewritten(relu6_classifier, lowering, image_float, noise):
    """Clip with input bounds -> Relu(x) - Relu(x - 6); opset-20 ReduceMean -> opset 17 with
    axes as an attribute (and no opset-18 attribute left behind)."""
    original = build_detector(relu6_classifier, DetectorConfig(noise="input"))
    lowered = lowering.lower_for_opencv4(original)
    onnx.checker.check_model(lowered, full_check=True)
    feeds = {"image": image_float, "noise": noise}
    want, got = run(original, feeds), run(lowered, feeds)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-7, err_msg=name)
    ops = {n.op_type for n in lowered.graph.node}
    assert "Clip" not in ops and "Relu" in ops
    means = [n for n in lowered.graph.node if n.op_type == "ReduceMean"]
    assert means and all(len(n.input) == 1 for n in means)
    assert not any(a.name == "noop_with_empty_axes" for n in means for a in n.attribute)


def test_graph_noise_is_refused_with_the_fix(make_detector, lowering):
    model = load_onnx(make_detector("graph-float-nchw", noise="graph"))
    with pytest.raises(ValueError, match="noise='input'"):
        lowering.lower_for_opencv4(model)


def test_command_line(make_detector, lowering, deploy_dir, capsys):
    exported = make_detector("input-float-nchw", noise="input")
    out = deploy_dir / "cli" / "opencv4.onnx"
    assert lowering.main([str(exported), str(out)]) == 0
    assert read_spec(onnx.load(str(out))).noise == "input"
    assert lowering.main([str(make_detector("graph-float-nchw", noise="graph")),
                          str(deploy_dir / "cli" / "no.onnx")]) == 2
    assert "RandomNormalLike" in capsys.readouterr().err
    assert not (deploy_dir / "cli" / "no.onnx").exists()
