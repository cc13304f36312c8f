"""benchmarks/int8_paired.py's recalibration on extra clean images, on synthetic scores: which
images it may take, and that its F2 figures are those of thresholds from the larger set."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from rpdetect.calibration.thresholds import CalibrationMode
from rpdetect.evaluation.metrics import f_beta, precision, recall
from rpdetect.evaluation.protocol import table_rules

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def paired():
    sys.path.insert(0, str(BENCHMARKS))  # the script imports its folder's _preset
    try:
        spec = importlib.util.spec_from_file_location("int8_paired", BENCHMARKS / "int8_paired.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_extra_positions_are_the_pools_tail_and_never_an_evaluated_image(paired):
    assert paired.extra_positions(100, 10, np.arange(60)).tolist() == list(range(90, 100))
    with pytest.raises(SystemExit, match=r"\[95\].*1 in all"):
        paired.extra_positions(100, 10, np.array([3, 95]))
    for k in (0, 100):
        with pytest.raises(SystemExit, match="expected 1..99"):
            paired.extra_positions(100, k, np.arange(5))


def _scores(rng, n, shift):
    return {"score1": rng.gamma(2.0, 1.0, (n, 3)) + shift, "score2": rng.gamma(2.0, 0.5, (n, 3))
            + shift, "flips": rng.integers(0, 3, n) + (3 if shift else 0)}


def test_recalibrated_thresholds_come_from_the_given_calibration_scores(paired):
    rng = np.random.default_rng(0)
    docs = {run: {"rules": {"paper": {"fpr": 0.1, "mode": "per-score"},
                            "combined @ 0.1": {"mode": "combined"}}} for run in ("f", "i")}
    cal = _scores(rng, 400, 0.0)
    neg, pos = _scores(rng, 80, 0.0), _scores(rng, 80, 1.5)
    raw = {run: {k: [pos[k], neg[k]] for k in cal} for run in ("f", "i")}
    is_pos = np.r_[np.ones(80, bool), np.zeros(80, bool)]
    units = np.r_[np.arange(80), np.arange(80)]  # an image: its adversarial and clean entries
    weights = np.random.default_rng(1).multinomial(80, np.full(80, 1 / 80), size=200)
    # the same scores in both runs: no difference, whatever the resample
    same = paired.recalibrated(docs, {"f": cal, "i": cal}, raw, {"f": is_pos, "i": is_pos},
                               {"f": units, "i": units}, weights, "i", "f")
    assert set(same) == {"paper", "combined @ paper's rate", "combined @ 0.1"}
    for r in same.values():
        assert r["difference"] == 0.0 and r["ci90"] == [0.0, 0.0]
    # INT8 calibrated on the first half only: its figures are those of table_rules on that half
    half = {k: v[:200] for k, v in cal.items()}
    got = paired.recalibrated(docs, {"f": cal, "i": half}, raw, {"f": is_pos, "i": is_pos},
                              {"f": units, "i": units}, weights, "i", "f")
    flat = {k: np.concatenate(v) for k, v in raw["i"].items()}
    for rule, (_, rate, t) in table_rules(half["score1"], half["score2"], half["flips"],
                                          fpr=0.1, mode=CalibrationMode.COMBINED).items():
        flag = t.flags(flat["score1"], flat["score2"], flat["flips"])
        tp, fp, fn = (int(v.sum()) for v in (is_pos & flag, ~is_pos & flag, is_pos & ~flag))
        assert got[rule]["i_f2"] == pytest.approx(f_beta(precision(tp, fp), recall(tp, fn)))
        assert got[rule]["i_clean_fpr"] == pytest.approx(fp / 80)
        assert got[rule]["i_target_rate"] == pytest.approx(rate)
        assert got[rule]["difference"] == pytest.approx(got[rule]["i_f2"] - got[rule]["f_f2"])
