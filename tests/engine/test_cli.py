"""``rpdetect detect`` / ``rpdetect info`` through the CLI entry point."""

from __future__ import annotations

import json

import cv2
import numpy as np
import onnx
import pytest

from rpdetect.cli import main
from rpdetect.engine.noise import ort_cpu_graph_noise_runs
from rpdetect.export import save_onnx, with_thresholds


@pytest.fixture
def images(tmp_path, tools):
    """A folder of good images (RGB, gray, RGBA, 16-bit, other sizes) and a folder of bad ones."""
    good = tmp_path / "good"
    (good / "sub").mkdir(parents=True)
    rgb = tools.rgb_image(0)
    tools.write_png(good / "a_rgb.png", rgb)
    tools.write_png(good / "b_gray.png", rgb[:, :, 0])
    tools.write_png(good / "sub" / "c_rgba.png", np.dstack([rgb, np.full((32, 32), 9, np.uint8)]))
    tools.write_png(good / "d_deep.png", rgb.astype(np.uint16) * 257)
    tools.write_png(good / "e_wide.png", tools.rgb_image(1, (40, 64)))
    (good / "notes.txt").write_text("not an image, and not an image suffix: skipped")
    (good / ".hidden.png").write_bytes(b"")  # hidden: skipped
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.png").write_bytes(b"")
    (bad / "text.jpg").write_text("hello")
    ok, jpg = cv2.imencode(".jpg", rgb)
    (bad / "cut.jpg").write_bytes(jpg.tobytes()[:-2])
    png = (good / "a_rgb.png").read_bytes()
    (bad / "cut.png").write_bytes(png[: len(png) // 2])
    nan = np.full((32, 32, 3), 0.5, np.float32)
    nan[3, 4, 1] = np.nan
    assert cv2.imwrite(str(bad / "nan.tiff"), nan)
    assert cv2.imwrite(str(bad / "range.tiff"), np.full((32, 32, 3), 2.0, np.float32))
    assert cv2.imwrite(str(bad / "signed.tiff"), np.ones((32, 32, 3), np.int16))
    (tmp_path / "empty_dir").mkdir()
    return tmp_path


GOOD = ["a_rgb.png", "b_gray.png", "d_deep.png", "e_wide.png", "sub/c_rgba.png"]
BAD = {"cut.jpg": "truncated JPEG", "cut.png": "truncated PNG", "empty.png": "empty file",
       "nan.tiff": "NaN/Inf", "range.tiff": r"observed range [2, 2]",
       "signed.tiff": "decoded as int16",
       "text.jpg": "not an image OpenCV can decode"}


def test_detect_prints_a_line_per_image(det_input, images, capsys):
    rc = main(["detect", str(det_input), str(images / "good"), "--no-progress", "--seed", "0"])
    out, err = capsys.readouterr()
    assert rc == 0
    lines = out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(images / "good" / g) for g in GOOD]
    for line in lines:
        path, label, s1, s2, flips, verdict = line.split("\t")
        assert label.startswith("label=") and s1.startswith("score1_max=")
        assert s2.startswith("score2_max=") and verdict == "clean"
        assert flips.startswith("flips=") and 0 <= int(flips[6:]) <= 4
    assert "uncalibrated" in err and "never flags" in err


def test_detect_images_per_run_changes_the_runs_not_the_answers(det_input, images, capsys):
    args = ["detect", str(det_input), str(images / "good"), "--no-progress", "--seed", "0"]
    assert main(args) == 0
    default = capsys.readouterr().out
    assert main(args + ["--images-per-run", "3"]) == 0
    assert capsys.readouterr().out == default
    with pytest.raises(SystemExit):
        main(args + ["--images-per-run", "0"])
    assert "--images-per-run" in capsys.readouterr().err


def test_detect_threshold_override_flags(det_input, images, capsys):
    rc = main(["detect", str(det_input), str(images / "good" / "a_rgb.png"), "--threshold1", "0",
               "--threshold2", "1e9", "--providers", "cpu", "--threads", "1"])
    out, err = capsys.readouterr()
    assert rc == 0 and out.strip().endswith("ADVERSARIAL") and "never flags" not in err


def test_detect_reports_every_bad_file_and_exits_1(det_input, images, capsys):
    missing = images / "missing.png"
    rc = main(["detect", str(det_input), str(images / "good" / "a_rgb.png"), str(images / "bad"),
               str(missing), str(images / "empty_dir"), "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 1
    assert out.count("\n") == 1 and "a_rgb.png" in out  # the good one still ran
    for name, message in BAD.items():
        line = next(e for e in err.splitlines() if f"{images / 'bad' / name}:" in e)
        assert message in line
    assert f"{missing}: no such file" in err
    assert "empty_dir: directory holds no image files" in err
    assert "9 input(s) failed, 1 done" in err


def test_detect_json(det_input, images, capsys):
    rc = main(["detect", str(det_input), str(images / "good"), str(images / "bad" / "cut.png"),
               "--json", "--seed", "1"])
    out, err = capsys.readouterr()
    assert rc == 1
    doc = json.loads(out)
    assert doc["providers"] == ["CPUExecutionProvider"]
    assert doc["thresholds"]["threshold1"] == [None] * 4 and doc["thresholds"]["threshold3"] is None
    assert "never flags" in doc["thresholds"]["rule"] and "+inf" in doc["thresholds"]["note"]
    assert doc["results"][0]["flips"] == sum(doc["results"][0]["flipped"])
    assert [r["source"] for r in doc["results"]] == [str(images / "good" / g) for g in GOOD]
    assert "logits" not in doc["results"][0] and len(doc["results"][0]["score1"]) == 4
    (failure,) = doc["failures"]
    assert failure["index"] == 5 and "truncated PNG" in failure["error"]
    assert "truncated PNG" in err


def test_detect_resize_none_rejects_other_sizes(det_input, images, capsys):
    rc = main(["detect", str(det_input), str(images / "good" / "e_wide.png"), "--resize", "none"])
    assert rc == 1 and "size 40x64 (HxW), the detector needs 32x32" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--providers", "tensorrt"], "not available in this onnxruntime; available: "),
        (["--providers", "cdua"], "unknown execution provider 'cdua'"),
        (["--provider-option", "trt_fp16=1"], "unknown provider option 'trt_fp16'"),
    ],
)
def test_detect_provider_errors_exit_2(det_input, images, capsys, args, message):
    rc = main(["detect", str(det_input), str(images / "good" / "a_rgb.png"), *args])
    assert rc == 2 and message in capsys.readouterr().err


def test_models_that_are_not_detectors_exit_2(tmp_path, plain_classifier_file, images, capsys):
    image = str(images / "good" / "a_rgb.png")
    text = tmp_path / "notes.onnx"
    text.write_text("no protobuf here\n")
    assert main(["detect", str(text), image]) == 2
    assert f"{text}: not a readable ONNX model" in capsys.readouterr().err
    assert main(["detect", str(plain_classifier_file), image]) == 2
    err = capsys.readouterr().err
    assert "not an rpdetect detector: missing inputs" in err and "rpdetect export" in err
    assert main(["info", str(tmp_path / "missing.onnx")]) == 2
    assert "no such model file" in capsys.readouterr().err
    assert main(["info", str(text)]) == 2
    assert f"{text}: not a readable ONNX model" in capsys.readouterr().err


def test_detector_whose_metadata_does_not_fit_exits_2(det_input, images, tmp_path, capsys):
    model = onnx.load(str(det_input))
    for prop in model.metadata_props:
        if prop.key == "rpdetect.input_shape":
            prop.value = "[3, 16, 16]"
    bad = tmp_path / "bad_meta.onnx"
    onnx.save(model, str(bad))
    for argv in (["detect", str(bad), str(images / "good" / "a_rgb.png")], ["info", str(bad)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"{bad}: input 'image' has shape" in err and "re-export the detector" in err


def test_info_text(det_input_b3, capsys):
    assert main(["info", str(det_input_b3), "--providers", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "uncalibrated: never flags" in out
    assert "kappas       n=4: 0.01, 0.04, 0.07, 0.1" in out
    assert "float-nchw 3x32x32, batch 3" in out and "noise        input" in out
    assert "noise          float32  [3, 4, 3, 32, 32]" in out
    assert "threshold1     float32  ['threshold1_values']" in out
    assert "threshold3     float32  []" in out and "is_adversarial bool     [3]" in out
    assert "flips          int64    [3]" in out and "flipped        bool     [3, 4]" in out
    assert "statistics   score1, score2 (Eq. 5/6 per kappa), flips" in out
    assert "providers    CPUExecutionProvider  (requested: cpu; available:" in out
    assert "sha256 " in out


def test_info_json(det_calibrated, capsys):
    assert main(["info", str(det_calibrated), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["calibrated"] is True
    assert doc["thresholds"]["threshold1"] == pytest.approx([0.05] * 4)
    assert doc["thresholds"]["threshold2"] == pytest.approx([0.01] * 4)
    assert doc["thresholds"]["threshold3"] is None and doc["rule"] == "max score1 OR max score2"
    assert doc["statistics"] == ["score1", "score2", "flips"]
    assert doc["thresholds_provenance"] == {"calibrated": True, "source": "set by hand"}
    assert doc["providers"] == ["CPUExecutionProvider"] and doc["providers_requested"] == ["auto"]
    assert [i["name"] for i in doc["inputs"]] == ["image", "noise", "threshold1", "threshold2",
                                                  "threshold3"]
    assert len(doc["classifier_sha256"]) == 64 and doc["kappas"][0] == pytest.approx(0.01)


def test_info_text_of_calibrated_detectors(det_calibrated, tmp_path, capsys):
    assert main(["info", str(det_calibrated)]) == 0
    out = capsys.readouterr().out
    assert ("verdict      max score1 OR max score2\n"
            "thresholds   threshold1=0.05  threshold2=0.01  threshold3=inf\n"
            "provenance   set by hand\n") in out
    provenance = {"calibrated": True, "n_images": 40, "n_failed": 1, "source": "clean",
                  "fpr": 0.05, "mode": "per-score", "date": "2026-01-02T03:04:05+00:00",
                  "achieved_rates": {"combined": 0.075, "score1": 0.05, "score2": 0.05},
                  "rule": "the rule"}
    path = save_onnx(with_thresholds(onnx.load(str(det_calibrated)), 0.5, 0.25, provenance),
                     tmp_path / "cal.onnx")
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert ("calibrated   on 40 clean images from clean (1 unreadable), fpr 0.05, mode per-score, "
            "2026-01-02T03:04:05+00:00\n"
            "flagged      score1 5.00%, score2 5.00%, combined 7.50% of those images\n"
            "rule         the rule\n") in out
    assert "never flags" not in out


def test_info_says_when_cpu_graph_noise_repeats(det_graph, det_calibrated, capsys):
    # det_graph: B=1, n=4 kappas, 3x32x32 -> 12,288 normal values a run; ORT's CPU generator
    # (minstd_rand0, period 2**31 - 2, 4/pi uniforms per normal) goes round in 137,258 runs
    # only where the graph's own random op runs (--graph-noise): by default on the CPU the
    # engine builds the front and draws the noise with its own generator
    assert main(["info", str(det_graph), "--providers", "cpu", "--graph-noise"]) == 0
    out = capsys.readouterr().out
    assert "repeats after 2^31-2 draws: about 137,258 runs of this detector" in out
    assert "front        the graph's own nodes" in out
    assert main(["info", str(det_graph), "--json", "--graph-noise"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["cpu_graph_noise_repeats_after_runs"] == 137258 and doc["front"] == "graph"
    assert main(["info", str(det_graph), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["cpu_graph_noise_repeats_after_runs"] is None and doc["front"] == "engine"
    assert doc["precision"] == "fp32" and doc["quantization"] is None
    assert main(["info", str(det_calibrated), "--json"]) == 0  # noise='input': no such limit
    assert json.loads(capsys.readouterr().out)["cpu_graph_noise_repeats_after_runs"] is None


def test_ort_cpu_graph_noise_runs_at_224():
    # the README's figure: 1.5 M values a run at 224x224, n = 10 -> about 1,100 runs
    assert ort_cpu_graph_noise_runs(10 * 3 * 224 * 224) == 1120
    with pytest.raises(ValueError, match="values_per_run"):
        ort_cpu_graph_noise_runs(0)


def test_detect_threshold3_override_and_refusal(det_input, images, capsys):
    good = str(images / "good" / "a_rgb.png")
    rc = main(["detect", str(det_input), good, "--threshold3", "-1", "--json", "--seed", "0"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and doc["results"][0]["is_adversarial"]  # flips >= 0 > -1
    assert doc["thresholds"]["threshold3"] == -1 and "flips > -1" in doc["thresholds"]["rule"]
    assert main(["detect", str(det_input), good, "--threshold3", "nan"]) == 2
    assert "threshold3: nan is not a usable threshold" in capsys.readouterr().err


def test_minus_inf_and_nan_thresholds_are_refused_at_export_and_detect(det_input, images,
                                                                       plain_classifier_file,
                                                                       tmp_path, capsys):
    good = str(images / "good" / "a_rgb.png")
    assert main(["detect", str(det_input), good, "--threshold1=-inf"]) == 2
    assert "threshold1: -inf is not a usable threshold" in capsys.readouterr().err
    out = tmp_path / "d.onnx"
    for flag in ("--threshold1=nan", "--threshold2=-inf"):
        assert main(["export", str(plain_classifier_file), "-o", str(out), flag]) == 2
        assert "not a usable threshold" in capsys.readouterr().err
        assert not out.exists()
