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


def test_threads_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--dataset", "cifar10", "--threads", "0"]) == 2
    assert "--threads: expected >= 1, got 0" in capsys.readouterr().err


def test_attacks_run_on_a_channels_last_copy() -> None:
    import torch

    from rpdetect.evaluation.protocol import _attack_module
    from rpdetect.testing import tiny_torch_cnn

    module = tiny_torch_cnn()
    copy = _attack_module(module)
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(copy(x), module(x), rtol=1e-5, atol=1e-5)
    weight = next(p for p in copy.parameters() if p.dim() == 4)
    assert weight.is_contiguous(memory_format=torch.channels_last)
    original = next(p for p in module.parameters() if p.dim() == 4)
    assert original.is_contiguous()  # the caller's module is untouched
