"""``rpdetect evaluate`` fails early, with exit code 2 and a message naming the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from rpdetect.cli import main


def test_unknown_attack_is_named_with_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--dataset", "cifar10", "--attacks", "fgsm"]) == 2
    err = capsys.readouterr().err
    assert "fgsm" in err and "bim-l2-t" in err


def test_missing_dataset_tar_names_the_path(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--dataset", "imagenette", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "imagenette-train.tar") in err and "--data" in err


def test_n_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--dataset", "cifar10", "--n", "0"]) == 2
    assert "--n" in capsys.readouterr().err
