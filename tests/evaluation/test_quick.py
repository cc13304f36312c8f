"""End to end on Foolbox's bundled CIFAR-10 samples with a tiny CNN trained in the test:
export -> detector -> calibration -> BIM attack -> detection -> table and figures.

The claim checked is the paper's: adversarial examples are less stable under pixel noise than
clean images, so their score maxima rank higher (ROC-AUC well above 0.5) and the calibrated
detector flags more of them than of the clean images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
fb = pytest.importorskip("foolbox")
pytest.importorskip("matplotlib")

from rpdetect.evaluation.attacks import AttackSpec  # noqa: E402
from rpdetect.evaluation.figures import write_figures  # noqa: E402
from rpdetect.evaluation.protocol import ArrayPool, Classifier, evaluate  # noqa: E402
from rpdetect.evaluation.report import write_report  # noqa: E402
from rpdetect.contract import read_spec  # noqa: E402

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)  # the tiny CNN's (conftest.py)


@pytest.mark.slow
def test_quick_end_to_end(tmp_path: Path, tiny_cifar) -> None:
    images, labels, model = tiny_cifar
    with torch.no_grad():
        accuracy = (model((torch.as_tensor(images) - 0.5) / 0.25).argmax(1).numpy() == labels)
    assert accuracy.mean() >= 0.9, "the tiny CNN should fit its 20 training images"
    classifier = Classifier(model, MEAN, STD, (3, 32, 32), tuple(range(10)))
    calibration = ArrayPool(images[:10], labels[:10])
    pool = ArrayPool(images[10:], labels[10:])
    spec = AttackSpec("bim-l2", "bim-l2", False, epsilon=1.0, steps=10)
    result = evaluate(classifier, calibration=calibration, pool=pool, attacks=[spec],
                      work_dir=tmp_path / "work", kappas=np.linspace(0.01, 0.1, 10), n=10,
                      figure_images=3, figure_copies=3, progress=False)

    detector = onnx.load(str(result.detector_path))
    onnx.checker.check_model(detector, full_check=True)
    info = read_spec(detector)
    assert info.calibrated and info.thresholds_provenance["fpr"] == 0.05
    assert info.thresholds == result.rules["paper"].thresholds
    assert result.calibration_images == 10
    # 10 images at fpr 0.05: every rule flags none of them (and the paper's rate is 0)
    assert set(result.rules) == {"paper", "combined @ paper's rate", "combined @ 0.05"}
    for rule in result.rules.values():
        assert rule.rates.combined == 0.0
        assert read_spec(onnx.load(str(rule.detector_path))).thresholds == rule.thresholds
    assert result.rules["combined @ 0.05"].thresholds.uses_flips

    (row,) = result.rows
    assert row.used >= 5 and row.used + row.failed == row.attempted
    assert 0.0 < row.mean_l2 <= 1.0 + 1e-4
    # the paper's effect: adversarial examples move more under noise than clean images
    assert row.auc2 > 0.7, row
    for rule in row.rules.values():
        assert rule.combined.tp > rule.combined.fp, row
    fpr, tpr = result.roc["combined"]["bim-l2"]
    assert fpr[0] == 0.0 and (tpr >= 0).all() and tpr[-1] >= tpr[0]

    out = tmp_path / "out"
    written = write_report(result, out, dataset="foolbox-cifar10", command="test", specs=[spec])
    written += write_figures(result.figures, out, dataset="foolbox-cifar10")
    from rpdetect.evaluation.figures import roc_figure
    written.append(roc_figure(result.roc, out / "roc.png", title="test"))
    assert {p.name for p in written} >= {"table.md", "table.csv", "table.json", "roc.png",
                                        "figure2_consistency.png", "figure3_logits.png"}
    assert all(p.stat().st_size > 0 for p in written)
    assert "| bim-l2 |" in (out / "table.md").read_text()
    consistency = result.figures.consistency
    assert set(consistency) == {"clean", "bim-l2"}
    # at the smallest kappa nearly every noisy copy keeps its label, clean or not
    assert consistency["clean"][0] == pytest.approx(1.0)
