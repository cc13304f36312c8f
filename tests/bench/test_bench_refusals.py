"""Issue 11, item 9: ``rpdetect bench`` refuses bad ``--weights`` before any timing, with a
non-zero exit, and checks ``--out`` before it starts."""

from __future__ import annotations

import time

import pytest

from rpdetect.cli import main
from rpdetect.export.graph import DetectorConfig, build_detector, save_onnx
from rpdetect.testing import plain_classifier


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    det = build_detector(plain_classifier(size=32), DetectorConfig(kappas=(0.01, 0.1)))
    return save_onnx(det, tmp_path_factory.mktemp("bench_refusals") / "tiny.onnx")


def test_bad_weights_exit_2_before_timing(detector, tmp_path, capsys):
    torch = pytest.importorskip("torch")

    class Evil:  # not a plain state_dict: torch.load(weights_only=True) refuses it
        def __reduce__(self):
            return (print, ("executed",))

    evil = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, evil)
    start = time.perf_counter()
    rc = main(["bench", str(detector), "--torch", "rpdetect.testing:tiny_torch_cnn",
               "--weights", str(evil), "--quick", "--in-process"])
    captured = capsys.readouterr()
    assert rc == 2 and "weights_only=True" in captured.err and "executed" not in captured.out
    assert "| cpu |" not in captured.out and time.perf_counter() - start < 30


def test_out_is_checked_before_timing(detector, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main(["bench", str(detector), "--quick", "--out", str(tmp_path / "file")]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
    assert main(["bench", str(detector), "--quick", "--out",
                 str(tmp_path / "no" / "such" / "dir")]) == 2
    assert "does not exist; create it first" in capsys.readouterr().err
