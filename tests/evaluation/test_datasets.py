"""Splits: calibration and evaluation images never overlap, and reading from the tars."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from rpdetect.evaluation.datasets import (
    IMAGENETTE_WNID_TO_INDEX,
    TarImages,
    heldaside_split,
    imagenette_split,
)

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"


def _fake_tar(path: Path, members: dict[str, np.ndarray]) -> Path:
    import cv2

    with tarfile.open(path, "w") as tar:
        for name, rgb in members.items():
            ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            assert ok
            info = tarfile.TarInfo(name)
            info.size = len(buf)
            tar.addfile(info, io.BytesIO(buf.tobytes()))
    return path


def test_imagenette_split_on_a_small_tar(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    wnids = list(IMAGENETTE_WNID_TO_INDEX)[:3]
    members = {f"imagenette-train/{w}/{i:03d}.JPEG": rng.integers(0, 256, (8, 8, 3), np.uint8)
               for w in wnids for i in range(6)}
    tar = _fake_tar(tmp_path / "imagenette-train.tar", members)
    split = imagenette_split(tar, n_calibration=5, seed=0)
    cal = {m.member for m in split.calibration}
    ev = {m.member for m in split.evaluation}
    assert len(cal) == 5 and len(ev) == 13 and not cal & ev and cal | ev == set(members)
    assert all(it.label == IMAGENETTE_WNID_TO_INDEX[it.member.split("/")[1]]
               for it in split.evaluation)
    assert imagenette_split(tar, n_calibration=5, seed=0) == split  # deterministic
    with TarImages(tar, (3, 8, 8)) as images:
        first = split.evaluation[0].member
        x = images.read([first])
        assert x.shape == (1, 3, 8, 8) and x.dtype == np.float32
        np.testing.assert_allclose(x[0].transpose(1, 2, 0), members[first] / 255.0, atol=1e-6)


def test_split_rejects_impossible_calibration_size(tmp_path: Path) -> None:
    tar = _fake_tar(tmp_path / "t.tar", {"s/n01440764/a.png": np.zeros((4, 4, 3), np.uint8)})
    with pytest.raises(ValueError, match="n_calibration"):
        imagenette_split(tar, n_calibration=1)


@pytest.mark.data
def test_imagenette_split_does_not_overlap() -> None:
    tar = DATA / "imagenette-train.tar"
    if not tar.is_file():
        pytest.skip(f"{tar} not present")
    split = imagenette_split(tar, n_calibration=1000, seed=0)
    cal = {m.member for m in split.calibration}
    ev = {m.member for m in split.evaluation}
    assert len(cal) == 1000 and len(ev) == 4000 and not cal & ev


@pytest.mark.data
@pytest.mark.parametrize("zoo", ["cifar10_cnn", "dogscats"])
def test_heldaside_split_does_not_overlap_training(zoo: str) -> None:
    import importlib

    module = importlib.import_module(f"rpdetect.zoo.{zoo}")
    if not module.SPLIT.is_file():
        pytest.skip(f"{module.SPLIT} not present yet")
    held = set(json.loads(module.SPLIT.read_text())["held_aside"])
    n_cal = len(held) // 4
    split = heldaside_split(module.SPLIT, module.CLASSES, n_calibration=n_cal, seed=0)
    cal = {m.member for m in split.calibration}
    ev = {m.member for m in split.evaluation}
    assert len(cal) == n_cal and not cal & ev and cal | ev == held
    assert {m.label for m in split.evaluation} == set(range(len(module.CLASSES)))


def test_int8_ranges_come_from_every_class_of_the_calibration_split(tmp_path: Path) -> None:
    """The calibration part of a split is in tar order, i.e. class by class: the INT8 sample
    (``quantization_sample``) must be spread over it, not its first images (the first 100
    calibration images of CIFAR-10 are two classes)."""
    from rpdetect.evaluation.protocol import quantization_sample

    rng = np.random.default_rng(0)
    wnids = list(IMAGENETTE_WNID_TO_INDEX)[:4]
    members = {f"imagenette-train/{w}/{i:03d}.JPEG": rng.integers(0, 256, (4, 4, 3), np.uint8)
               for w in wnids for i in range(30)}
    split = imagenette_split(_fake_tar(tmp_path / "t.tar", members), n_calibration=80, seed=0)
    labels = [it.label for it in split.calibration]
    assert labels == sorted(labels)  # class order: why the first images will not do
    sample = quantization_sample(len(split.calibration), 12)
    assert sample == sorted(set(sample)) and len(sample) == 12 and max(sample) < 80
    assert {labels[i] for i in sample} == set(labels)  # every class (seed 0)
    assert quantization_sample(80, 12) == sample  # deterministic
    assert quantization_sample(5, 12) == [0, 1, 2, 3, 4]
