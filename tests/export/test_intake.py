"""Issue 11, item 3-4: the classifiers users really have become detectors equal to the numpy
reference, or are refused with the option that fixes them; and item 9's export checks."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from rpdetect.cli import main
from rpdetect.errors import ModelError
from rpdetect.export import DetectorConfig, build_detector
from rpdetect.export.intake import IntakeOptions
from rpdetect.reference import reference_detect
from rpdetect.testing import classifier_fn, plain_classifier, run

KAPPAS = (0.01, 0.04, 0.07, 0.1)
# the bounds of tests/export/test_graph.py (relative to each output's scale); score2 of these
# random classifiers stays near 0.01, where float32 softmax rounding is ~2e-5 of the scale
TOL = {"logits": 1e-5, "score1": 1e-4, "score1_max": 1e-4, "score2": 1e-4, "score2_max": 1e-4}


def one_at_a_time(fn):
    """A batch-1 classifier as a function of any batch."""
    return lambda x: np.concatenate([fn(x[i:i + 1]) for i in range(len(x))])


def assert_matches_reference(det: onnx.ModelProto, clf, *, batch: int, seed: int,
                             shape=(3, 32, 32)) -> None:
    rng = np.random.default_rng(seed)
    images = rng.random((batch, *shape), dtype=np.float32)
    noise = rng.standard_normal((batch, len(KAPPAS), *shape)).astype(np.float32)
    out = run(det, {"image": images, "noise": noise})
    ref = reference_detect(clf, images, noise, np.asarray(KAPPAS))
    for name, bound in TOL.items():
        want = getattr(ref, name)
        err = np.abs(out[name] - want).max() / max(np.abs(want).max(), 1e-12)
        assert err <= bound, f"{name}: relative error {err:.2e} > {bound:.0e}"
    np.testing.assert_array_equal(out["label"], ref.label)


def intake_notes(det: onnx.ModelProto) -> str:
    return {p.key: p.value for p in det.metadata_props}["rpdetect.classifier_intake"]


def _view_net():
    import torch

    class ViewNet(torch.nn.Module):  # x.view(1, -1): the batch written into a Reshape
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(3)
            self.conv = torch.nn.Conv2d(3, 4, 3, stride=4)
            self.fc = torch.nn.Linear(4 * 8 * 8, 10)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).view(1, -1))

    return ViewNet().eval()


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
@pytest.mark.parametrize("net", ["cnn", "view"])
def test_plain_torch_onnx_export_becomes_a_detector(tmp_path, dynamo, net):
    torch = pytest.importorskip("torch")
    from rpdetect.testing import torch_cnn

    module = torch_cnn(3, 10, seed=5) if net == "cnn" else _view_net()
    path = tmp_path / "clf.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.rand(1, 3, 32, 32),), str(path), dynamo=dynamo)
    clf = onnx.load(str(path))
    assert clf.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1  # fixed batch 1
    reference = one_at_a_time(classifier_fn(clf))
    for batch in (1, 3):
        det = build_detector(path, DetectorConfig(noise="input", batch=batch, kappas=KAPPAS))
        assert "fixed batch 1 made symbolic" in intake_notes(det)
        assert_matches_reference(det, reference, batch=batch, seed=batch)
    assert main(["export", str(path), "-o", str(tmp_path / "det.onnx"), "--noise", "input"]) == 0


def nhwc_classifier() -> onnx.ModelProto:
    """plain_classifier behind a Transpose: input [N, 32, 32, 3], as Keras / tf2onnx give."""
    model = plain_classifier()
    g = model.graph
    g.node.insert(0, helper.make_node("Transpose", ["pixels_nhwc"], ["input"], perm=[0, 3, 1, 2]))
    del g.input[:]
    g.input.append(helper.make_tensor_value_info("pixels_nhwc", TensorProto.FLOAT,
                                                 ["N", 32, 32, 3]))
    return model


def test_nhwc_input_is_transposed_in_the_graph(tmp_path, capsys):
    clf = nhwc_classifier()
    det = build_detector(clf, DetectorConfig(noise="input", kappas=KAPPAS))
    assert "looks NHWC" in intake_notes(det)
    assert [d.dim_value for d in det.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 32, 32]
    fn = classifier_fn(clf)
    assert_matches_reference(det, lambda x: fn(np.transpose(x, (0, 2, 3, 1))), batch=1, seed=2)
    path = tmp_path / "nhwc.onnx"
    onnx.save(clf, str(path))
    assert main(["export", str(path), "-o", str(tmp_path / "d.onnx")]) == 0
    assert "looks NHWC (channels last)" in capsys.readouterr().err
    forced = build_detector(clf, DetectorConfig(kappas=KAPPAS),
                            intake=IntakeOptions(input_layout="nchw"))
    assert [d.dim_value for d in forced.graph.input[0].type.tensor_type.shape.dim][1] == 32


def with_outputs(*extra: str) -> onnx.ModelProto:
    """plain_classifier's logits "output" plus "probs" (Softmax) and/or "top" (ArgMax)."""
    model = plain_classifier()
    g = model.graph
    logits = g.output[0]
    del g.output[:]
    for name in extra:
        if name == "probs":
            g.node.append(helper.make_node("Softmax", ["output"], ["probs"], axis=1))
            g.output.append(helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 10]))
        elif name == "top":
            g.node.append(helper.make_node("ArgMax", ["output"], ["top"], axis=1, keepdims=0))
            g.output.append(helper.make_tensor_value_info("top", TensorProto.INT64, ["N"]))
        else:
            g.output.append(logits)
    return model


def test_probabilities_are_refused_or_logged(tmp_path, capsys):
    probs = with_outputs("probs")
    with pytest.raises(ModelError, match="looks like probabilities.*--probabilities-to-log"):
        build_detector(probs)
    det = build_detector(probs, DetectorConfig(noise="input", kappas=KAPPAS),
                         intake=IntakeOptions(probabilities="log"))
    assert "Log inserted" in intake_notes(det)
    fn = classifier_fn(plain_classifier())  # the logits under the Softmax

    def log_softmax(x):
        z = fn(x).astype(np.float64)
        return z - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)) \
            - z.max(1, keepdims=True)

    assert_matches_reference(det, log_softmax, batch=1, seed=3)
    # log-probabilities = logits - a per-image constant: both scores are the logits' ones
    rng = np.random.default_rng(3)
    x = rng.random((1, 3, 32, 32), dtype=np.float32)
    eps = rng.standard_normal((1, 4, 3, 32, 32)).astype(np.float32)
    a, b = (reference_detect(f, x, eps, np.asarray(KAPPAS)) for f in (fn, log_softmax))
    np.testing.assert_allclose(a.score1, b.score1, rtol=1e-9)
    np.testing.assert_allclose(a.score2, b.score2, rtol=1e-9)
    path = tmp_path / "probs.onnx"
    onnx.save(probs, str(path))
    assert main(["export", str(path), "-o", str(tmp_path / "d.onnx")]) == 2
    err = capsys.readouterr().err
    assert "looks like probabilities" in err and "score1 would be about ten times smaller" in err
    assert main(["export", str(path), "-o", str(tmp_path / "d.onnx"),
                 "--probabilities-to-log"]) == 0


def test_several_outputs_need_a_name_unless_one_is_float_nk(tmp_path, capsys):
    both = with_outputs("probs", "output")
    with pytest.raises(ModelError, match=r"2 outputs \('probs' \['N', 10\], 'output'.*"
                                         r"--classifier-output"):
        build_detector(both)
    det = build_detector(both, DetectorConfig(noise="input", kappas=KAPPAS),
                         classifier_output="output")
    assert_matches_reference(det, classifier_fn(plain_classifier()), batch=1, seed=4)
    with pytest.raises(ModelError, match="'probs' looks like probabilities"):
        build_detector(both, classifier_output="probs")
    det = build_detector(with_outputs("top", "output"))
    assert "the only float [N, K] one, 'output', is taken" in intake_notes(det)
    path = tmp_path / "both.onnx"
    onnx.save(both, str(path))
    assert main(["export", str(path), "-o", str(tmp_path / "d.onnx")]) == 2
    assert "--classifier-output NAME" in capsys.readouterr().err
    assert main(["export", str(path), "-o", str(tmp_path / "d.onnx"),
                 "--classifier-output", "output"]) == 0


def test_single_logit_refused_or_two_class(tmp_path, capsys):
    single = plain_classifier(classes=1)
    with pytest.raises(ModelError, match=r"single logit \(K = 1\).*--single-logit-as-two-class"):
        build_detector(single)
    det = build_detector(single, DetectorConfig(noise="input", kappas=KAPPAS),
                         intake=IntakeOptions(single_logit="two-class"))
    fn = classifier_fn(single)
    two_class = lambda x: np.concatenate([np.zeros_like(fn(x)), fn(x)], axis=1)  # noqa: E731
    assert_matches_reference(det, two_class, batch=1, seed=5)
    path = tmp_path / "one.onnx"
    onnx.save(single, str(path))
    assert main(["export", str(path), "-o", str(tmp_path / "d.onnx")]) == 2
    assert "both scores would always be 0" in capsys.readouterr().err
    assert main(["export", str(path), "-o", str(tmp_path / "d.onnx"),
                 "--single-logit-as-two-class"]) == 0


def test_old_opset_is_converted(tmp_path, capsys):
    old = plain_classifier(opset=11)
    det = build_detector(old, DetectorConfig(noise="input", kappas=KAPPAS))
    assert "opset 11 converted to 17" in intake_notes(det)
    assert_matches_reference(det, classifier_fn(old), batch=1, seed=6)
    path = tmp_path / "old.onnx"
    onnx.save(old, str(path))
    assert main(["export", str(path), "-o", str(tmp_path / "d.onnx")]) == 0
    assert "opset 11 converted" in capsys.readouterr().err


def test_kappa_range_and_seed_are_checked(tmp_path, capsys):
    path = tmp_path / "c.onnx"
    onnx.save(plain_classifier(), str(path))
    out = str(tmp_path / "d.onnx")
    assert main(["export", str(path), "-o", out, "--kappa-min", "0.2", "--kappa-max", "0.1"]) == 2
    assert "--kappa-min 0.2 is above --kappa-max 0.1" in capsys.readouterr().err
    for bad in ("nan", "inf"):
        with pytest.raises(SystemExit):
            main(["export", str(path), "-o", out, "--seed", bad])
        assert "expected a finite number" in capsys.readouterr().err
    with pytest.raises(ValueError, match="seed: must be a finite number"):
        build_detector(plain_classifier(), DetectorConfig(seed=math.nan))
    assert not Path(out).exists()


def test_intake_options_are_checked():
    with pytest.raises(ValueError, match="input_layout"):
        IntakeOptions(input_layout="hwc")  # type: ignore[arg-type]
    assert json.loads(intake_notes(build_detector(plain_classifier()))) == []
