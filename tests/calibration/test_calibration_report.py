"""Report files: default paths next to the model, JSON, histogram (linear and log axes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rpdetect.calibration.report import default_paths, write_histogram


def test_default_paths_sit_next_to_the_model(tmp_path: Path) -> None:
    assert default_paths(tmp_path / "a" / "det.onnx") == (
        tmp_path / "a" / "det.calibration.json", tmp_path / "a" / "det.calibration.png")


@pytest.mark.parametrize("spread", [2.0, 1e6])  # linear axis; decades apart -> log axis
def test_histogram_is_a_png(tmp_path: Path, spread: float) -> None:
    rng = np.random.default_rng(0)
    s1 = rng.gamma(2.0, 1.0, 50)
    s2 = np.exp(rng.uniform(0, np.log(spread), 50)) * 1e-7
    path = write_histogram(s1, s2, threshold1=float(np.quantile(s1, 0.95)),
                           threshold2=float(np.quantile(s2, 0.95)), title="t",
                           path=tmp_path / "x.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
