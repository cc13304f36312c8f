"""Calibration on real JPEGs (a few CIFAR-10 files from ../shared/data), through the engine."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from rpdetect.calibration import FolderReader, calibrate_file
from rpdetect.export.graph import build_detector, save_onnx
from rpdetect.testing import plain_classifier

pytest.importorskip("rpdetect.engine")

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
N_FILES = 40


@pytest.mark.data
def test_calibrate_on_real_cifar_jpegs(tmp_path: Path) -> None:
    tar_path = DATA / "cifar10-train.tar"
    if not tar_path.is_file():
        pytest.skip(f"{tar_path} is absent (see ../shared/data/README.md)")
    with tarfile.open(tar_path) as tar:
        members = []
        for member in tar:  # the first files only: no need to read the whole tar
            if member.isfile() and member.name.lower().endswith((".jpg", ".jpeg", ".png")):
                members.append(member)
                if len(members) == N_FILES:
                    break
        tar.extractall(tmp_path, members=members, filter="data")
    root = tmp_path / members[0].name.split("/")[0]
    detector = save_onnx(build_detector(plain_classifier(size=32)), tmp_path / "det.onnx")
    out = tmp_path / "cal.onnx"
    result = calibrate_file(detector, FolderReader(root), out, fpr=0.05, mode="paper")
    assert (result.n_images, result.n_failed) == (N_FILES, 0)
    assert result.rates.score1 == result.rates.score2 == 2 / N_FILES  # floor(0.05 * 40) = 2
    assert 0 < result.threshold1 < float("inf") and 0 < result.threshold2 < 2
