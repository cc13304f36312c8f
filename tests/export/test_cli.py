"""``rpdetect export-classifier`` / ``rpdetect export`` through the CLI entry point."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from rpdetect.cli import main
from rpdetect.contract import read_spec
from rpdetect.testing import plain_classifier


def test_export_cli_builds_a_checked_detector(tmp_path, capsys):
    cls = tmp_path / "cls.onnx"
    onnx.save(plain_classifier(), str(cls))
    out = tmp_path / "det.onnx"
    rc = main(["export", str(cls), "-o", str(out), "--n", "30", "--kappa-min", "1e-4",
               "--kappa-max", "0.1", "--kappa-spacing", "log", "--batch", "2", "--noise", "input",
               "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25", "--clip"])
    assert rc == 0 and "uncalibrated" in capsys.readouterr().out
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    info = read_spec(model)
    assert info.kappas == pytest.approx(tuple(np.geomspace(1e-4, 0.1, 30)))
    assert (info.batch, info.noise, info.clip, info.mean) == (2, "input", True, (0.5, 0.5, 0.5))


def test_export_cli_explicit_kappas_and_uint8(tmp_path):
    cls = tmp_path / "cls.onnx"
    onnx.save(plain_classifier(), str(cls))
    out = tmp_path / "det.onnx"
    assert main(["export", str(cls), "-o", str(out), "--kappas", "0.01,0.02",
                 "--input-format", "uint8-nhwc-bgr", "--seed", "7"]) == 0
    info = read_spec(onnx.load(str(out)))
    assert info.kappas == (0.01, 0.02) and info.input_format == "uint8-nhwc-bgr" and info.seed == 7.0


def test_export_cli_errors_name_the_problem(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_text("not onnx")
    assert main(["export", str(bad), "-o", str(tmp_path / "o.onnx")]) == 2
    assert "bad.onnx: not a readable ONNX model" in capsys.readouterr().err
    cls = tmp_path / "fixed.onnx"
    onnx.save(hard_coded_batch_classifier(), str(cls))
    assert main(["export", str(cls), "-o", str(tmp_path / "o.onnx")]) == 2
    err = capsys.readouterr().err
    assert "batch axis was fixed at 1" in err and "hard-coded in ConstantOfShape 'extra'" in err
    assert not (tmp_path / "o.onnx").exists()


def hard_coded_batch_classifier() -> onnx.ModelProto:
    """A batch-1 classifier whose extra logit column is ConstantOfShape([1, 1]): no other batch
    can run, whatever the input dims say."""
    model = plain_classifier(batch=1, classes=9)
    g = model.graph
    g.node[-1].output[0] = "nine"
    g.initializer.append(numpy_helper.from_array(np.array([1, 1], np.int64), "extra_shape"))
    g.node.extend([helper.make_node("ConstantOfShape", ["extra_shape"], ["col"], name="extra"),
                   helper.make_node("Concat", ["nine", "col"], ["output"], axis=1)])
    g.output[0].type.tensor_type.shape.dim[1].dim_value = 10
    onnx.checker.check_model(model, full_check=True)
    return model


def test_export_classifier_cli_from_a_factory(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "c.onnx"
    assert main(["export-classifier", "--model", "rpdetect.testing:tiny_torch_cnn",
                 "--input-shape", "3,32,32", "--mean", "0.5", "--std", "0.25", "-o", str(out)]) == 0
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    assert [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim][1:] == [3, 32, 32]


def test_export_classifier_cli_bad_factory(tmp_path, capsys):
    pytest.importorskip("torch")
    assert main(["export-classifier", "--model", "no_such_pkg:build", "--input-shape", "3,8,8",
                 "-o", str(tmp_path / "c.onnx")]) == 2
    assert "cannot import 'no_such_pkg'" in capsys.readouterr().err
    assert main(["export-classifier", "--model", "rpdetect.testing", "--input-shape", "3,8,8",
                 "-o", str(tmp_path / "c.onnx")]) == 2
    assert "package.module:factory" in capsys.readouterr().err


def test_export_classifier_weights_loaded_safely(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from rpdetect.testing import tiny_torch_cnn

    net = tiny_torch_cnn()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    good = tmp_path / "w.pt"
    torch.save(net.state_dict(), good)
    out = tmp_path / "c.onnx"
    assert main(["export-classifier", "--model", "rpdetect.testing:tiny_torch_cnn", "--weights",
                 str(good), "--input-shape", "3,32,32", "-o", str(out)]) == 0
    from rpdetect.testing import classifier_fn

    x = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    np.testing.assert_allclose(classifier_fn(out)(x), net(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-4, atol=1e-5)

    class Evil:  # a pickle that is not a plain state_dict must be refused, not executed
        def __reduce__(self):
            return (print, ("executed",))

    evil = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, evil)
    assert main(["export-classifier", "--model", "rpdetect.testing:tiny_torch_cnn", "--weights",
                 str(evil), "--input-shape", "3,32,32", "-o", str(out)]) == 2
    captured = capsys.readouterr()
    assert "weights_only=True" in captured.err and "executed" not in captured.out
    wrong = tmp_path / "wrong.pt"
    torch.save({"foo": torch.zeros(1)}, wrong)
    assert main(["export-classifier", "--model", "rpdetect.testing:tiny_torch_cnn", "--weights",
                 str(wrong), "--input-shape", "3,32,32", "-o", str(out)]) == 2
    assert "weights do not fit" in capsys.readouterr().err
