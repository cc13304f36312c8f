"""benchmarks/default_path_paired.py: the floor, its twin and the default path called in turn in
one process; it refuses detectors whose sessions keep spinning (small images)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from rpdetect.export.graph import DetectorConfig, build_detector, save_onnx
from rpdetect.testing import plain_classifier

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "default_path_paired.py"


@pytest.fixture(scope="module")
def paired():
    spec = importlib.util.spec_from_file_location("default_path_paired", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _files(tmp_path: Path, size: int) -> tuple[Path, Path]:
    clf = plain_classifier(size=size)
    det = build_detector(clf, DetectorConfig(kappas=tuple(np.linspace(0.01, 0.1, 10))))
    return save_onnx(det, tmp_path / "det.onnx"), save_onnx(clf, tmp_path / "clf.onnx")


def test_paired_times_calls_each_role_in_turn_and_reports_ratios(paired, tmp_path):
    # 10 x 3 x 96 x 96 noise values: drawn on two threads, so the Detector stops spinning
    det, clf = _files(tmp_path, 96)
    times = paired.paired_times(det, clf, 12, warmup=1, threads=2)
    assert set(times) == set(paired.ROLES)
    assert all(t.shape == (12,) and (t > 0).all() for t in times.values())
    lines = paired.report(times)
    assert lines[2].startswith("| floor |") and lines[2].endswith("| - |")
    assert lines[3].startswith("| twin |") and lines[4].startswith("| detector |")


def test_a_detector_that_keeps_spinning_is_refused(paired, tmp_path, capsys):
    det, clf = _files(tmp_path, 16)
    with pytest.raises(ValueError, match="spinning"):
        paired.paired_times(det, clf, 12)
    with pytest.raises(SystemExit):
        paired.main(["--detector", str(det), "--classifier", str(clf), "--triples", "12"])
    assert "rpdetect bench" in capsys.readouterr().err
