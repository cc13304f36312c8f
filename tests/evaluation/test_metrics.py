"""Table 1 metrics against hand-computed cases, zero-division edges included."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rpdetect.rule import Thresholds
from rpdetect.evaluation.metrics import (
    ScoreSet,
    attack_metrics,
    total_metrics,
    detection_metrics,
    f_beta,
    precision,
    recall,
    roc_auc,
)


def test_detection_metrics_hand_computed() -> None:
    # 10 adversarial, 8 flagged; 10 clean, 2 flagged
    adv = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 0], bool)
    clean = np.array([1, 0, 0, 0, 1, 0, 0, 0, 0, 0], bool)
    m = detection_metrics(clean, adv)
    assert (m.tp, m.fp, m.fn, m.tn) == (8, 2, 2, 8)
    assert m.precision == pytest.approx(0.8)
    assert m.recall == pytest.approx(0.8)
    assert m.f2 == pytest.approx(0.8)  # P == R gives F_beta == P for every beta


def test_f2_weighs_recall() -> None:
    # P = 0.5, R = 1: F2 = 5 * 0.5 / (4 * 0.5 + 1) = 2.5 / 3
    assert f_beta(0.5, 1.0) == pytest.approx(2.5 / 3)
    assert f_beta(1.0, 0.5) == pytest.approx(2.5 / 4.5)
    assert f_beta(0.5, 1.0, beta=1.0) == pytest.approx(2 / 3)


def test_zero_division_edges() -> None:
    assert precision(0, 0) == 0.0  # nothing flagged
    assert recall(0, 0) == 0.0  # no adversarial examples
    assert f_beta(0.0, 0.0) == 0.0
    m = detection_metrics(np.zeros(5, bool), np.zeros(5, bool))
    assert (m.tp, m.fp, m.fn, m.tn) == (0, 0, 5, 5)
    assert (m.precision, m.recall, m.f2) == (0.0, 0.0, 0.0)
    m = detection_metrics(np.ones(3, bool), np.zeros(0, bool))
    assert (m.tp, m.fp, m.precision, m.recall) == (0, 3, 0.0, 0.0)


def test_roc_auc_hand_computed_with_ties() -> None:
    assert roc_auc([0.1, 0.2], [0.3, 0.4]) == 1.0
    assert roc_auc([0.3, 0.4], [0.1, 0.2]) == 0.0
    # pairs (pos, neg): (0.2,0.2) tie=0.5, (0.2,0.1)=1, (0.3,0.2)=1, (0.3,0.1)=1 -> 3.5/4
    assert roc_auc([0.2, 0.1], [0.2, 0.3]) == pytest.approx(0.875)
    assert roc_auc([1.0, 1.0, 1.0], [1.0, 1.0]) == pytest.approx(0.5)
    assert math.isnan(roc_auc([], [1.0]))


def test_roc_auc_matches_pairwise_definition() -> None:
    rng = np.random.default_rng(0)
    neg = rng.integers(0, 5, 40).astype(float)
    pos = rng.integers(1, 7, 30).astype(float)
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert roc_auc(neg, pos) == pytest.approx(pairs)


def test_attack_metrics_combined_is_or_and_strictly_greater() -> None:
    # n = 2 copies per image; the maxima are the first column
    clean = ScoreSet(np.array([[0.5, 0], [1.0, 0], [0.1, 0], [0.1, 0]]),
                     np.array([[0.1, 0], [0.1, 0], [0.3, 0], [0.1, 0]]),
                     np.array([0, 0, 0, 2]), np.zeros(4, np.int64))
    adv = ScoreSet(np.array([[2.0, 0], [0.2, 0], [0.2, 0], [1.0, 0]]),
                   np.array([[0.1, 0], [0.9, 0], [0.2, 0], [0.2, 0]]),
                   np.array([0, 0, 2, 1]), np.zeros(4, np.int64))
    rules = {"paper": Thresholds.of(1.0, 0.2, n=2), "flips": Thresholds.of(1.0, 0.2, 1, n=2),
             "per-kappa": Thresholds.of([1.0, 1.0], [math.inf, -0.5 + 0.5], n=2)}
    row = attack_metrics("x", clean=clean, adversarial=adv, rules=rules,
                         attempted=6, failed=2, l2=np.array([1.0, 2.0, 3.0, 4.0]))
    paper = row.rules["paper"]
    # score1 > 1.0: adv [1,0,0,0] (1.0 is not > 1.0), clean none
    assert (paper.score1.tp, paper.score1.fp) == (1, 0)
    # score2 > 0.2: adv [0,1,0,0], clean [0,0,1,0]
    assert (paper.score2.tp, paper.score2.fp) == (1, 1)
    assert (paper.combined.tp, paper.combined.fp) == (2, 1)
    assert paper.combined.precision == pytest.approx(2 / 3)
    assert paper.combined.recall == pytest.approx(0.5)
    assert (paper.flips.tp, paper.flips.fp) == (0, 0)  # threshold3 = +inf: unused
    flips = row.rules["flips"]  # flips > 1: adv [0,0,1,0], clean [0,0,0,1]
    assert (flips.flips.tp, flips.flips.fp) == (1, 1)
    assert (flips.combined.tp, flips.combined.fp) == (3, 2)
    # per kappa: score2's second copy (all 0) is never > 0, score2's first never tested
    assert (row.rules["per-kappa"].combined.tp, row.rules["per-kappa"].combined.fp) == (1, 0)
    total = total_metrics([row, row], "paper")
    assert (total.combined.tp, total.combined.fp, total.combined.tn) == (4, 2, 6)
    assert 0 <= row.auc_flips <= 1 and row.used == 4


def test_attack_scores_of_different_n_share_one_file_without_redrawing(tmp_path):
    # the detector is random: a run with --n 100 after one with --n 500 must reuse the first
    # 100 scores, and a larger run must keep the smaller one's and score only the rest
    from rpdetect.evaluation.scoring import cached_prefix_scores

    calls: list[int] = []
    rng = np.random.default_rng(0)

    def score(x: np.ndarray) -> ScoreSet:
        calls.append(len(x))
        k = len(x)
        return ScoreSet(rng.random((k, 3)), rng.random((k, 3)), rng.integers(0, 3, k),
                        rng.integers(0, 10, k))

    images = np.zeros((8, 3, 4, 4), np.float32)
    path = tmp_path / "a-scores.npz"
    five = cached_prefix_scores(path, "det", images[:5], score)
    three = cached_prefix_scores(path, "det", images[:3], score)
    eight = cached_prefix_scores(path, "det", images, score)
    again = cached_prefix_scores(path, "det", images[:5], score)
    assert calls == [5, 3]  # the 3 come from the file, the 8 add only 3 draws
    for a, b, c, d in zip(five, three, eight, again):
        np.testing.assert_array_equal(a[:3], b)
        np.testing.assert_array_equal(a, c[:5])
        np.testing.assert_array_equal(a, d)
    # another detector's key does not match: scored afresh
    cached_prefix_scores(path, "other", images[:2], score)
    assert calls == [5, 3, 2]
