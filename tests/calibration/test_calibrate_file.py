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
from rpdetect.contract import read_spec

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
    elif mode is CalibrationMode.PER_KAPPA:  # 2n + 1 statistics on 24 images: at most k
        assert result.rates.combined <= k / N_IMAGES
    else:
        assert result.rates.combined == k / N_IMAGES

    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    info = read_spec(model)
    assert info.thresholds == result.thresholds  # read back from the graph's initializers
    assert info.thresholds_provenance["source"] == image_dir.name
    assert info.thresholds_provenance["n_images"] == N_IMAGES

    report = json.loads(out.with_suffix(".calibration.json").read_text())
    assert report["threshold1"] == list(result.thresholds.threshold1)
    assert report["mode"] == mode.value
    assert report["n_failed"] == 1 and report["failures"][0]["source"] == "dog/broken.png"
    assert set(report["score1_max"]) == {"min", "mean", "median", "p90", "p95", "p99", "max"}
    assert _png_ok(out.with_suffix(".calibration.png"))

    # The calibrated file in a new session: its verdicts follow its own thresholds.
    fresh = Detector(out, providers=["cpu"])
    for path in sorted(image_dir.rglob("0*.png"))[:4]:
        r = fresh.detect(path)
        want = result.thresholds.flags(r.score1[None], r.score2[None], np.array([r.flips]))
        assert bool(r.is_adversarial) == bool(want[0])


@pytest.mark.parametrize("batch", [1, 4])
def test_saved_thresholds_flag_exactly_the_promised_images_in_a_new_session(
    batch: int, image_dir: Path, tmp_path: Path, make_detector: Callable[..., onnx.ModelProto]
) -> None:
    """noise='input' detector and a seeded engine: a fresh Detector with the same seed draws the
    same noise for each image, so the saved file flags exactly floor(fpr * n) of the set."""
    detector = save_onnx(make_detector(noise="input", batch=batch), tmp_path / "input_noise.onnx")
    out = tmp_path / "calibrated.onnx"
    result = calibrate_file(detector, FolderReader(image_dir), out, fpr=0.125, seed=5,
                            mode="paper")
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
    info = read_spec(onnx.load(str(out)))
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


@pytest.mark.parametrize("fpr", [0.125, 0.25])
def test_default_rule_flags_what_it_promised_in_a_new_session(
    fpr: float, image_dir: Path, tmp_path: Path, make_detector: Callable[..., onnx.ModelProto]
) -> None:
    """The default (combined) rule: run over its own calibration images again, the saved file
    flags exactly the rate the calibration reported, and at most fpr."""
    detector = save_onnx(make_detector(noise="input", batch=2), tmp_path / "input_noise.onnx")
    out = tmp_path / "calibrated.onnx"
    result = calibrate_file(detector, FolderReader(image_dir), out, fpr=fpr, seed=5)
    assert result.mode is CalibrationMode.COMBINED and result.thresholds.uses_flips
    assert result.rates.combined <= fpr
    paths = [path for _, path in FolderReader(image_dir)]
    report = Detector(out, seed=5).detect_many(paths, progress=False)
    flagged = sum(r.is_adversarial for r in report.results)
    assert flagged == round(result.rates.combined * N_IMAGES)
    assert flagged >= int(fpr * N_IMAGES) - 1  # no ties among these scores: within one image


def test_cli_default_rule_flags_about_fpr_when_run_again(
    image_dir: Path, tmp_path: Path, make_detector: Callable[..., onnx.ModelProto], capsys
) -> None:
    """`rpdetect calibrate --fpr 0.1` (default rule) then the calibrated file over the same
    images: about 10% flagged (the same noise: a seeded noise-input detector)."""
    detector = save_onnx(make_detector(noise="input"), tmp_path / "input_noise.onnx")
    out = tmp_path / "cal.onnx"
    assert main(["calibrate", str(detector), "--images", str(image_dir), "--fpr", "0.1",
                 "-o", str(out), "--seed", "5", "--no-progress", "--providers", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "verdict: max score1 OR max score2 OR flips" in text or "flips >" in text
    report = Detector(out, seed=5).detect_many([p for _, p in FolderReader(image_dir)],
                                                progress=False)
    rate = sum(r.is_adversarial for r in report.results) / len(report.results)
    assert 0.05 <= rate <= 0.1, rate
    info = read_spec(onnx.load(str(out)))
    assert info.thresholds_provenance["mode"] == "combined" and info.thresholds.uses_flips


def legacy_detector(model: onnx.ModelProto) -> onnx.ModelProto:
    """The file rpdetect 0.1 wrote for the same classifier: scalar threshold1/threshold2, no
    threshold3, no flipped/flips, verdict score1_max > t1 OR score2_max > t2 (nodes after
    score2_max are the flip count and the verdict, rebuilt here the 0.1 way)."""
    from onnx import TensorProto, helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    end = next(i for i, nd in enumerate(g.node) if "score2_max" in nd.output)
    nodes = list(g.node)[:end + 1] + [
        helper.make_node("Greater", ["score1_max", "threshold1"], ["over1"]),
        helper.make_node("Greater", ["score2_max", "threshold2"], ["over2"]),
        helper.make_node("Or", ["over1", "over2"], ["is_adversarial"])]
    del g.node[:]
    g.node.extend(nodes)
    keep_out = [o for o in g.output if o.name not in ("flipped", "flips")]
    del g.output[:]
    g.output.extend(keep_out)
    inits = [i for i in g.initializer if i.name != "threshold3"]
    for i in inits:
        if i.name in ("threshold1", "threshold2"):
            i.CopyFrom(numpy_helper.from_array(np.array(np.inf, np.float32), i.name))
    del g.initializer[:]
    g.initializer.extend(inits)
    ins = [helper.make_tensor_value_info(i.name, TensorProto.FLOAT, [])
           if i.name in ("threshold1", "threshold2") else i
           for i in g.input if i.name != "threshold3"]
    del g.input[:]
    g.input.extend(ins)
    meta = [p for p in out.metadata_props if p.key not in (
        "rpdetect.threshold1", "rpdetect.threshold2", "rpdetect.threshold3", "rpdetect.rule")]
    del out.metadata_props[:]
    out.metadata_props.extend(meta)
    out.metadata_props.add(key="rpdetect.threshold1", value="inf")
    out.metadata_props.add(key="rpdetect.threshold2", value="inf")
    onnx.checker.check_model(out, full_check=True)
    return out


def test_legacy_detector_loads_runs_and_takes_the_paper_rule(
    image_dir: Path, tmp_path: Path, make_detector: Callable[..., onnx.ModelProto]
) -> None:
    """A file from rpdetect 0.1 loads and runs; the default rule asks for a re-export before
    any image is scored; the paper's rule calibrates it and its verdicts follow."""
    from rpdetect.errors import InputError, ModelError

    path = save_onnx(legacy_detector(make_detector(noise="input")), tmp_path / "old.onnx")
    det = Detector(path, seed=1)
    assert not det.info.has_flips and det.info.thresholds.n == len(det.kappas)
    r = det.detect(image_dir / "dog" / "00.png")
    assert r.flips is None and r.flipped is None and not r.is_adversarial
    assert det.detect(image_dir / "dog" / "00.png", threshold1=0.0).is_adversarial
    with pytest.raises(InputError, match="threshold3"):
        det.detect(image_dir / "dog" / "00.png", threshold3=1.0)
    with pytest.raises(ModelError, match="re-export"):
        calibrate_file(path, FolderReader(image_dir), tmp_path / "c.onnx", fpr=0.1)
    assert not (tmp_path / "c.onnx").exists()
    result = calibrate_file(path, FolderReader(image_dir), tmp_path / "p.onnx", fpr=0.125,
                            mode="paper", seed=5)
    info = read_spec(onnx.load(str(tmp_path / "p.onnx")))
    assert info.thresholds == result.thresholds and not info.has_flips
    inits = {i.name: i for i in onnx.load(str(tmp_path / "p.onnx")).graph.initializer}
    assert list(inits["threshold1"].dims) == [] and "threshold3" not in inits
    report = Detector(tmp_path / "p.onnx", seed=5).detect_many(
        [p for _, p in FolderReader(image_dir)], progress=False)
    assert sum(r.score1_max > result.threshold1 for r in report.results) == 3
