"""``rpdetect evaluate`` on a user's own classifier and images: an ONNX file (black-box attacks
through ONNX Runtime; white-box and adaptive ones on its graph interpreted in torch) and a
torch module (white-box Foolbox attacks), end to end on a synthetic ImageFolder tree, and every
bad input named through the CLI.

The classifier (``rpdetect.testing.channel_mean_classifier``) labels an image by its brightest
colour channel, so minimal attacks stop just across a known boundary: their noisy copies flip
label, the clean images' (4x further away than the noise moves them) do not.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from rpdetect.cli import main
from rpdetect.testing import channel_mean_onnx, channel_tint_images

pytest.importorskip("foolbox")

N = 8  # adversarial examples per attack
FPR = 0.1


def _write(folder: Path, images: np.ndarray, prefix: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, rgb in enumerate(images):
        cv2.imwrite(str(folder / f"{prefix}{i:03d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("own")
    for label in range(3):
        # calibration: clean images in any layout (one flat folder here, no labels needed)
        _write(root / "calibration", channel_tint_images(30, label, seed=1), f"c{label}_")
        _write(root / "images" / str(label), channel_tint_images(12, label, seed=2), "e")
    onnx.save(channel_mean_onnx(), str(root / "clf.onnx"))
    return root


def _table(out: Path) -> dict:
    return json.loads((out / "table.json").read_text())


def _check_detection(doc: dict, attacks: list[str]) -> None:
    rows = {r["attack"]: r for r in doc["rows"]}
    assert sorted(rows) == sorted(attacks)
    for rule in doc["rules"]:
        total = doc["totals"][rule]["combined"]
        clean_rate = total["fp"] / (total["fp"] + total["tn"])
        assert clean_rate <= FPR + 0.15, (rule, clean_rate)  # near --fpr on 3 x 8 clean images
        for name, row in rows.items():
            assert row["used"] == N, (name, row["used"], row["attempted"])
            m = row["rules"][rule]["combined"]
            adv_rate = m["tp"] / N
            assert adv_rate > clean_rate, (rule, name, adv_rate, clean_rate)
    # the successful attacks are caught by the combined rule at 10% of the clean images
    combined = doc["totals"]["combined @ 0.1"]["combined"]
    assert combined["recall"] >= 0.5


def _odd_onnx(tmp_path: Path) -> Path:
    """The channel-mean classifier with an operator the torch interpreter lacks (node 'odd':
    logits = Softplus(mean)); ONNX Runtime runs it."""
    odd = channel_mean_onnx()
    node = odd.graph.node[2]
    node.op_type, node.name = "Softplus", "odd"
    del node.input[1:]
    path = tmp_path / "odd.onnx"
    onnx.save(odd, str(path))
    return path


def _evaluate(tree: Path, tmp_path: Path, model: list[str], attacks: list[str]) -> Path:
    out = tmp_path / "out"
    assert main(["evaluate", *model, "--calibration-images", str(tree / "calibration"),
                 "--images", str(tree / "images"), "--n", str(N), "--fpr", str(FPR),
                 "--attacks", *attacks, "--cache", str(tmp_path / "cache"),
                 "--out", str(out), "--no-figures", "--no-progress"]) == 0
    return out


def test_onnx_classifier_black_box(tree: Path, tmp_path: Path) -> None:
    attacks = ["square-linf-u", "hsj-l2-u"]
    out = _evaluate(tree, tmp_path, ["--classifier", str(tree / "clf.onnx")], attacks)
    doc = _table(out)
    _check_detection(doc, attacks)
    for row in doc["rows"]:  # the query budget each image used is reported
        budget = doc["attacks"][row["attack"]]["queries"]
        assert 0 < row["mean_queries"] <= budget
    assert "queries / image" in (out / "table.md").read_text()


def test_torch_module_white_box(tree: Path, tmp_path: Path) -> None:
    attacks = ["ddn-t", "cw-l2-u"]
    out = _evaluate(tree, tmp_path, ["--torch", "rpdetect.testing:channel_mean_classifier",
                                     "--input-shape", "3,16,16"], attacks)
    doc = _table(out)
    _check_detection(doc, attacks)
    assert all(row["mean_queries"] is None for row in doc["rows"])  # white-box: null


def test_torch_module_adaptive_attacks(tree: Path, tmp_path: Path) -> None:
    # the user's own torch model, a Table 1 attack and two adaptive ones in one command
    out = tmp_path / "out"
    assert main(["evaluate", "--torch", "rpdetect.testing:channel_mean_classifier",
                 "--input-shape", "3,16,16", "--calibration-images", str(tree / "calibration"),
                 "--images", str(tree / "images"), "--n", "6", "--fpr", str(FPR),
                 "--attacks", "ddn-t", "adaptive-pgd-linf", "logit-match-l2", "--eot", "1",
                 "--adaptive-steps", "3", "--cache", str(tmp_path / "cache"),
                 "--out", str(out), "--no-figures", "--no-progress"]) == 0
    assert [r["attack"] for r in _table(out)["rows"]] == ["ddn-t"]
    doc = json.loads((out / "adaptive.json").read_text())
    assert set(doc["attacks"]) == {"adaptive-pgd-linf", "logit-match-l2"}
    assert doc["attacks"]["adaptive-pgd-linf"]["eot"] == 1
    assert doc["attacks"]["logit-match-l2"]["steps"] == 3
    assert set(doc["rules"]) == {"paper", "joint", "combined", "per-kappa"}
    # 4 budgets x 4 rules per attack, each over the 6 attacked images
    assert len(doc["rows"]) == 2 * 4 * 4 and {r["attacked"] for r in doc["rows"]} == {6}
    for r in doc["rows"]:
        assert r["adaptive_success"] <= r["adaptive_fooled"] <= 6
        assert r["baseline_success"] <= r["classifier_success"] <= 6
    text = (out / "adaptive.md").read_text()
    assert "## The budget an attacker needs" in text and "## Rule: per-kappa" in text


def test_adaptive_attacks_on_an_onnx_file(tree: Path, tmp_path: Path) -> None:
    # attacks that know the detector differentiate the file's graph interpreted in torch
    out = tmp_path / "out"
    assert _run(tree, tmp_path, tree / "images", "--attacks", "adaptive-pgd-linf", "--eot", "1",
                "--adaptive-steps", "3", "--out", str(out)) == 0
    doc = json.loads((out / "adaptive.json").read_text())
    assert set(doc["attacks"]) == {"adaptive-pgd-linf"}
    rows = doc["rows"]
    assert rows and all(r["attacked"] == 2 for r in rows)
    # the largest budget fools the classifier on every attacked image (its margin is small)
    assert max(r["classifier_success"] for r in rows) == 2


def test_adaptive_attacks_are_refused_where_they_cannot_run(tree: Path, tmp_path: Path,
                                                            capsys) -> None:
    assert main(["evaluate", "--classifier", str(_odd_onnx(tmp_path)), "--calibration-images",
                 str(tree / "calibration"), "--images", str(tree / "images"), "--n", "2",
                 "--attacks", "adaptive-pgd-linf", "--cache", str(tmp_path / "c2"), "--out",
                 str(tmp_path / "o2"), "--no-figures", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "operator Softplus is not interpreted" in err and "--torch" in err
    assert _run(tree, tmp_path, tree / "images", "--attacks", "adaptive-pgd-linf",
                "--precision", "int8") == 2
    assert "adaptive attacks are measured on the float32 detector" in capsys.readouterr().err
    assert _run(tree, tmp_path, tree / "images", "--attacks", "adaptive-pgd-l1") == 2
    assert "unknown adaptive attacks ['adaptive-pgd-l1']" in capsys.readouterr().err
    assert _run(tree, tmp_path, tree / "images", "--attacks", "adaptive-pgd-linf",
                "--eot", "0") == 2
    assert "--eot: expected >= 1" in capsys.readouterr().err
    assert _run(tree, tmp_path, tree / "images", "--attacks", "adaptive-pgd-linf",
                "adaptive-pgd-l2", "--adaptive-epsilons", "8/255") == 2
    assert "mix norms ['l2', 'linf']" in capsys.readouterr().err
    assert _run(tree, tmp_path, tree / "images", "--attacks", "adaptive-pgd-linf",
                "--adaptive-epsilons", "4") == 2
    assert "L-inf budgets are in [0, 1]" in capsys.readouterr().err
    assert _run(tree, tmp_path, tree / "images", "--attacks", "fgsm-linf",
                "--adaptive-epsilons", "0.5") == 2
    assert "no adaptive attack asked" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: a usage error naming the option
        _run(tree, tmp_path, tree / "images", "--attacks", "adaptive-pgd-linf",
             "--adaptive-epsilons", "8/0")
    assert "--adaptive-epsilons" in capsys.readouterr().err


def test_int8_detector_is_evaluated_on_the_float_models_attacks(tree: Path,
                                                                 tmp_path: Path) -> None:
    # --precision int8: the detector's classifier quantized (QDQ) on the calibration images,
    # thresholds from its own scores; the attack still queries the float ONNX classifier
    attacks = ["square-linf-u"]
    out = _evaluate(tree, tmp_path, ["--classifier", str(tree / "clf.onnx"), "--precision",
                                     "int8"], attacks)
    doc = _table(out)
    _check_detection(doc, attacks)
    assert "INT8 detector" in (out / "table.md").read_text()
    detectors = list((tmp_path / "cache").rglob("detector-*int8*-paper.onnx"))
    assert detectors
    from rpdetect.contract import read_spec

    assert read_spec(onnx.load(str(detectors[0]))).precision == "int8"
    # --positives deployed: only what the INT8 classifier gets wrong counts (the scores come
    # from the cache); the rest joins the failed attacks
    out2 = tmp_path / "deployed"
    assert main(["evaluate", "--classifier", str(tree / "clf.onnx"), "--precision", "int8",
                 "--positives", "deployed", "--calibration-images", str(tree / "calibration"),
                 "--images", str(tree / "images"), "--n", str(N), "--fpr", str(FPR),
                 "--attacks", *attacks, "--cache", str(tmp_path / "cache"), "--out", str(out2),
                 "--no-figures", "--no-progress"]) == 0
    row, row2 = doc["rows"][0], _table(out2)["rows"][0]
    assert row2["attempted"] == row["attempted"] and row2["used"] <= row["used"]
    assert row2["used"] + row2["failed"] == row2["attempted"]
    # --positives both: the FP32 and the INT8 run count the same examples (each run prepares
    # the other precision's detector for its labels)
    both = {}
    for precision in ("int8", "fp32"):
        both[precision] = tmp_path / f"both-{precision}"
        assert main(["evaluate", "--classifier", str(tree / "clf.onnx"), "--precision",
                     precision, "--positives", "both", "--calibration-images",
                     str(tree / "calibration"), "--images", str(tree / "images"), "--n", str(N),
                     "--fpr", str(FPR), "--attacks", *attacks, "--cache",
                     str(tmp_path / "cache"), "--out", str(both[precision]), "--no-figures",
                     "--no-progress"]) == 0
    rows = {p: _table(o)["rows"][0] for p, o in both.items()}
    assert rows["fp32"]["used"] == rows["int8"]["used"] <= row2["used"]
    assert rows["fp32"]["attempted"] == rows["int8"]["attempted"] == row["attempted"]
    assert "both the FP32 and the INT8" in (both["fp32"] / "table.md").read_text()


def test_int8_detector_under_attacks_on_its_own_classifier(tree: Path, tmp_path: Path,
                                                           capsys) -> None:
    # --attack-target int8: the white-box attack runs on the INT8 classifier's torch twin (its
    # cache is keyed by the INT8 detector, apart from the float model's attacks), and what
    # fooled the twin is checked on the INT8 classifier ONNX Runtime runs (--positives deployed)
    attacks = ["ddn-t"]
    torch_model = ["--torch", "rpdetect.testing:channel_mean_classifier", "--input-shape",
                   "3,16,16", "--precision", "int8", "--positives", "deployed"]
    fp32_target = _evaluate(tree, tmp_path, torch_model, attacks).rename(
        tmp_path / "fp32-target")
    before = set((tmp_path / "cache").rglob("ddn-t-*.npz"))
    out = _evaluate(tree, tmp_path, [*torch_model, "--attack-target", "int8"], attacks)
    new = set((tmp_path / "cache").rglob("ddn-t-*.npz")) - before
    assert any("scores" not in p.name for p in new)  # its own adversarial examples
    doc = _table(out)
    _check_detection(doc, attacks)
    assert "The attacks target the INT8 classifier itself" in (out / "table.md").read_text()
    assert "transfer to the INT8 one" in (fp32_target / "table.md").read_text()
    # refused where it has no meaning, with the flag named
    assert _run(tree, tmp_path, tree / "images", "--attack-target", "int8") == 2
    assert "--attack-target int8" in capsys.readouterr().err
    assert _run(tree, tmp_path, tree / "images", "--attack-target", "int8", "--precision",
                "int8", "--positives", "both") == 2
    assert "--positives both" in capsys.readouterr().err


def test_int8_detector_of_an_onnx_file_under_white_box_attacks(tree: Path, tmp_path: Path):
    # an ONNX file has no gradients of its own, but its INT8 classifier has a torch twin: with
    # --attack-target int8 the white-box attacks run on it (black-box ones otherwise)
    attacks = ["ddn-t"]
    model = ["--classifier", str(tree / "clf.onnx"), "--precision", "int8", "--positives",
             "deployed", "--attack-target", "int8"]
    doc = _table(_evaluate(tree, tmp_path, model, attacks))
    _check_detection(doc, attacks)
    assert doc["rows"][0]["mean_queries"] is None  # white-box: no queries counted


def test_int8_detector_with_7_bit_weights_is_evaluated_on_its_own(tree: Path, tmp_path: Path):
    # --quantize-reduce-range: the INT8 detector of rpdetect export --reduce-range (what CPUs
    # without VNNI compute exactly; its 7-bit range: tests/export/test_quantize.py)
    import onnx

    from rpdetect.contract import read_spec

    attacks = ["ddn-t"]
    model = ["--classifier", str(tree / "clf.onnx"), "--precision", "int8", "--positives",
             "deployed", "--attack-target", "int8", "--quantize-reduce-range"]
    out = _evaluate(tree, tmp_path, model, attacks)
    _check_detection(_table(out), attacks)
    assert "7-bit weights (--reduce-range)" in (out / "table.md").read_text()
    # the INT8 detector (the calibrated copies of it are named after it, plus the rule)
    files = [f for f in (tmp_path / "cache").rglob("detector-*-int8-*.onnx")
             if len(f.stem.split("-int8-")[1]) == 8]
    assert len(files) == 1, files
    assert read_spec(onnx.load(str(files[0]))).quantization["reduce_range"] is True


def test_onnx_classifier_under_white_box_attacks_asked_by_name(tree: Path, tmp_path: Path,
                                                               capsys) -> None:
    # the float file's graph interpreted in torch gives the white-box attacks their gradients
    attacks = ["ddn-t", "bim-l2-u"]
    doc = _table(_evaluate(tree, tmp_path, ["--classifier", str(tree / "clf.onnx")], attacks))
    _check_detection(doc, attacks)
    assert all(r["mean_queries"] is None for r in doc["rows"])
    # an operator the interpreter lacks is named before any work, with the way out
    assert main(["evaluate", "--classifier", str(_odd_onnx(tmp_path)), "--calibration-images",
                 str(tree / "calibration"), "--images", str(tree / "images"), "--n", "2",
                 "--attacks", "ddn-t", "--cache", str(tmp_path / "c2"), "--out",
                 str(tmp_path / "o2"), "--no-figures", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "node 'odd': operator Softplus is not interpreted" in err
    assert "choose black-box attacks" in err


def _run(tree: Path, tmp_path: Path, images: Path, *extra: str) -> int:
    return main(["evaluate", "--classifier", str(tree / "clf.onnx"),
                 "--calibration-images", str(tree / "calibration"), "--images", str(images),
                 "--n", "2", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "o"),
                 "--no-figures", "--no-progress", *extra])


def test_bad_inputs_are_named(tree: Path, tmp_path: Path, capsys) -> None:
    one = channel_tint_images(2, 0, seed=3)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _run(tree, tmp_path, empty) == 2
    assert "no images in class folders" in capsys.readouterr().err

    flat = tmp_path / "flat"
    _write(flat, one, "x")
    assert _run(tree, tmp_path, flat) == 2
    assert "lie directly in the folder" in capsys.readouterr().err

    named = tmp_path / "named"
    _write(named / "cat", one, "x")
    assert _run(tree, tmp_path, named) == 2
    assert "['cat'] map to no class index" in capsys.readouterr().err
    (tmp_path / "map.json").write_text(json.dumps({"dog": 1}))
    assert _run(tree, tmp_path, named, "--class-map", str(tmp_path / "map.json")) == 2
    assert "--class-map knows ['dog']" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("[1, 2]")
    assert _run(tree, tmp_path, named, "--class-map", str(tmp_path / "bad.json")) == 2
    assert "expected a JSON object folder name -> class index" in capsys.readouterr().err

    outside = tmp_path / "outside"
    _write(outside / "7", one, "x")
    assert _run(tree, tmp_path, outside) == 2
    assert "class index [7] is outside the classifier's 3 classes" in capsys.readouterr().err

    assert _run(tree, tmp_path, tree / "images", "--n", "1000") == 2
    err = capsys.readouterr().err
    assert "only 36 of 36 images are classified correctly" in err and "--n 1000" in err

    assert main(["evaluate", "--classifier", str(tree / "clf.onnx"),
                 "--images", str(tree / "images")]) == 2
    assert "--calibration-images" in capsys.readouterr().err
    assert main(["evaluate", "--dataset", "cifar10", "--images", str(tree / "images")]) == 2
    assert "not --dataset" in capsys.readouterr().err
    assert main(["evaluate", "--classifier", str(tree / "clf.onnx"),
                 "--calibration-images", str(tree / "calibration"),
                 "--images", str(tree / "images"), "--attacks", "ddn-x",
                 "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 2
    assert "unknown for this classifier: ['ddn-x']" in capsys.readouterr().err
    assert main(["evaluate", "--torch", "rpdetect.testing:channel_mean_classifier",
                 "--calibration-images", str(tree / "calibration"),
                 "--images", str(tree / "images")]) == 2
    assert "--torch needs --input-shape" in capsys.readouterr().err
    assert main(["evaluate", "--classifier", str(tree / "missing.onnx"),
                 "--calibration-images", str(tree / "calibration"),
                 "--images", str(tree / "images"), "--cache", str(tmp_path / "cache")]) == 2
    assert "missing.onnx" in capsys.readouterr().err
