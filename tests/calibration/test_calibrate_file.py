"""calibrate_file and ``rpdetect calibrate`` end to end on a tiny detector and PNGs in tmp_path,
through the real engine (rpdetect.Detector)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import onnx
import pytest

from rpdetect.calibration import CalibrationMode, FolderReader, calibrate_file
from rpdetect.cli import main
from rpdetect.errors import InputError, ModelError
from rpdetect.export.graph import save_onnx
from rpdetect.export.metadata import read_info

Detector = pytest.importorskip("rpdetect.engine").Detector

N_IMAGES = 24


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ImageFolder tree of random 8x8 PNGs (two classes) plus one file that is no image."""
    root = tmp_path_factory.mktemp("clean")
    rng = np.random.default_rng(11)
    for i in range(N_IMAGES):
        folder = root / ("cat" if i % 2 else "dog")
        folder.mkdir(exist_ok=True)
        pixels = (rng.random((8, 8, 3)) * 255).astype(np.uint8)
        assert cv2.imwrite(str(folder / f"{i:02d}.png"), pixels)
    (root / "dog" / "broken.png").write_bytes(b"this is not a png")
    return root


def _png_ok(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("mode", list(CalibrationMode))
def test_calibrate_file_writes_model_report_and_histogram(
    mode: CalibrationMode, graph_noise_detector: Path, image_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out" / "calibrated.onnx"
    out.parent.mkdir()  # output folders are not created (issue 11): a typo must not go unseen
    result = calibrate_file(graph_noise_detector, FolderReader(image_dir), out, fpr=0.1,
                            mode=mode, providers=["cpu"])
    assert (result.n_images, result.n_failed) == (N_IMAGES, 1)
    assert result.failures[0].source == "dog/broken.png"
    assert result.source == image_dir.name
    k = 2  # floor(0.1 * 24)
    if mode is CalibrationMode.PER_SCORE:
        assert result.rates.score1 == result.rates.score2 == k / N_IMAGES
    else:
        assert result.rates.combined == k / N_IMAGES

    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    info = read_info(model)
    assert (info.threshold1, info.threshold2) == (result.threshold1, result.threshold2)
    assert info.thresholds_provenance["source"] == image_dir.name
    assert info.thresholds_provenance["n_images"] == N_IMAGES

    report = json.loads(out.with_suffix(".calibration.json").read_text())
    assert report["threshold1"] == result.threshold1 and report["mode"] == mode.value
    assert report["n_failed"] == 1 and report["failures"][0]["source"] == "dog/broken.png"
    assert set(report["score1_max"]) == {"min", "mean", "median", "p90", "p95", "p99", "max"}
    assert _png_ok(out.with_suffix(".calibration.png"))

    # The calibrated file in a new session: its verdicts follow its own thresholds.
    fresh = Detector(out, providers=["cpu"])
    for path in sorted(image_dir.rglob("0*.png"))[:4]:
        r = fresh.detect(path)
        assert bool(r.is_adversarial) == (
            float(r.score1_max) > result.threshold1 or float(r.score2_max) > result.threshold2
        )


@pytest.mark.parametrize("batch", [1, 4])
def test_saved_thresholds_flag_exactly_the_promised_images_in_a_new_session(
    batch: int, image_dir: Path, tmp_path: Path, make_detector: Callable[..., onnx.ModelProto]
) -> None:
    """noise='input' detector and a seeded engine: a fresh Detector with the same seed draws the
    same noise for each image, so the saved file flags exactly floor(fpr * n) of the set."""
    detector = save_onnx(make_detector(noise="input", batch=batch), tmp_path / "input_noise.onnx")
    out = tmp_path / "calibrated.onnx"
    result = calibrate_file(detector, FolderReader(image_dir), out, fpr=0.125, seed=5)
    assert result.n_images == N_IMAGES and result.rates.score1 == 3 / N_IMAGES
    paths = [path for _, path in FolderReader(image_dir)]  # the same order, broken file included
    report = Detector(out, seed=5).detect_many(paths, progress=False)
    flagged = [r.is_adversarial for r in report.results]
    assert len(flagged) == N_IMAGES and len(report.failures) == 1
    assert sum(flagged) == round(result.rates.combined * N_IMAGES)
    assert sum(r.score1_max > result.threshold1 for r in report.results) == 3
    assert sum(r.score2_max > result.threshold2 for r in report.results) == 3


def test_report_and_histogram_paths_can_be_chosen(graph_noise_detector: Path, image_dir: Path,
                                                  tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    (tmp_path / "h").mkdir()
    calibrate_file(graph_noise_detector, image_dir, tmp_path / "m.onnx", limit=6,
                   report_path=tmp_path / "r" / "report.json",
                   histogram_path=tmp_path / "h" / "hist.png")
    assert json.loads((tmp_path / "r" / "report.json").read_text())["n_images"] == 6
    assert _png_ok(tmp_path / "h" / "hist.png")
    assert not (tmp_path / "m.calibration.json").exists()


def test_folder_of_unreadable_files_is_a_clear_error(graph_noise_detector: Path,
                                                     tmp_path: Path) -> None:
    bad = tmp_path / "bad_images"
    bad.mkdir()
    for name in ("a.png", "b.jpg"):
        (bad / name).write_bytes(b"\x00garbage")
    with pytest.raises(InputError, match=rf"{bad}.*no readable clean image.*all 2 images failed"):
        calibrate_file(graph_noise_detector, FolderReader(bad), tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_cli_end_to_end(graph_noise_detector: Path, image_dir: Path, tmp_path: Path,
                        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    out = tmp_path / "cli" / "det.onnx"
    out.parent.mkdir()
    code = main(["calibrate", str(graph_noise_detector), "--images", str(image_dir),
                 "--fpr", "0.1", "--mode", "joint", "--limit", "20", "--seed", "3",
                 "--providers", "cpu", "--threads", "1", "-o", str(out), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    info = read_info(onnx.load(str(out)))
    assert f"threshold1 = {info.threshold1:.9g}" in captured.out
    assert f"threshold2 = {info.threshold2:.9g}" in captured.out
    assert "combined 10.00%" in captured.out  # joint: floor(0.1 * 20) = 2 of 20 images
    n = info.thresholds_provenance["n_images"] + info.thresholds_provenance["n_failed"]
    assert n == 20 and info.thresholds_provenance["mode"] == "joint"
    assert out.with_suffix(".calibration.json").is_file()
    assert _png_ok(out.with_suffix(".calibration.png"))
    assert list(cwd.iterdir()) == []  # nothing written into the current directory


def test_cli_empty_folder_exits_2_naming_it(graph_noise_detector: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(["calibrate", str(graph_noise_detector), "--images", str(empty),
                 "-o", str(tmp_path / "o.onnx")])
    assert code == 2
    assert f"{empty}: no image files found" in capsys.readouterr().err


def test_cli_refuses_a_plain_classifier_and_a_bad_fpr_before_running(
    tmp_path: Path, image_dir: Path, graph_noise_detector: Path, tiny_classifier: onnx.ModelProto,
    capsys: pytest.CaptureFixture[str],
) -> None:
    plain = tmp_path / "classifier.onnx"
    onnx.save(tiny_classifier, str(plain))
    out = tmp_path / "o.onnx"
    assert main(["calibrate", str(plain), "--images", str(image_dir), "-o", str(out)]) == 2
    assert "not an rpdetect detector" in capsys.readouterr().err
    assert main(["calibrate", str(graph_noise_detector), "--images", str(image_dir),
                 "--fpr", "5", "-o", str(out)]) == 2
    assert "fpr: expected a false-positive rate in [0, 1), got 5.0" in capsys.readouterr().err
    assert not out.exists()


def test_cli_provider_options_reach_the_detector(
    graph_noise_detector: Path, image_dir: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "o.onnx"
    code = main(["calibrate", str(graph_noise_detector), "--images", str(image_dir),
                 "--provider-option", "trt_fp16=1", "-o", str(out)])
    assert code == 2 and "unknown provider option 'trt_fp16'" in capsys.readouterr().err
    assert not out.exists()


def test_a_file_that_is_not_onnx_is_refused_naming_it(
    image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    text = tmp_path / "notes.onnx"
    text.write_text("no protobuf here\n")
    out = tmp_path / "o.onnx"
    with pytest.raises(ModelError, match="not a readable ONNX model") as err:
        calibrate_file(text, image_dir, out)
    assert str(text) in str(err.value)
    assert main(["calibrate", str(text), "--images", str(image_dir), "-o", str(out)]) == 2
    assert f"{text}: not a readable ONNX model" in capsys.readouterr().err
    assert not out.exists()
