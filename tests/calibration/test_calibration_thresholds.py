"""Threshold rules on known synthetic score distributions (no model involved)."""

from __future__ import annotations

import numpy as np
import pytest

from rpdetect.calibration.thresholds import (
    CalibrationMode,
    achieved_rates,
    allowed_count,
    joint_thresholds,
    per_score_thresholds,
    summarize,
)


def test_per_score_is_the_order_statistic_on_a_known_distribution() -> None:
    # 100 distinct scores 0.01 .. 1.00 in shuffled order; fpr 0.05 -> k = 5 may be flagged, so the
    # threshold is the 95th smallest value, 0.95, and exactly 0.96 .. 1.00 lie strictly above.
    rng = np.random.default_rng(0)
    s1 = rng.permutation(np.arange(1, 101) / 100.0)
    s2 = rng.permutation(np.arange(1, 101) * 3.0)
    t1, t2 = per_score_thresholds(s1, s2, fpr=0.05)
    assert t1 == 0.95
    assert t2 == 285.0
    assert np.count_nonzero(s1 > t1) == 5 and np.count_nonzero(s2 > t2) == 5


@pytest.mark.parametrize("n", [1, 7, 19, 20, 21, 100, 1000, 1237])
@pytest.mark.parametrize("fpr", [0.0, 0.01, 0.05, 0.1, 0.29, 0.5])
def test_per_score_flags_at_most_fpr_and_exactly_floor_fpr_n(n: int, fpr: float) -> None:
    rng = np.random.default_rng(n)
    s1, s2 = rng.gamma(2.0, 1.0, n), rng.random(n)
    t1, t2 = per_score_thresholds(s1, s2, fpr=fpr)
    k = int(np.floor(round(fpr * n, 9)))
    for s, t in ((s1, t1), (s2, t2)):
        flagged = np.count_nonzero(s > t)
        assert flagged == k  # continuous scores: no ties, so exactly floor(fpr * n)
        assert flagged <= fpr * n + 1e-9
        # the same value as numpy's inverted-CDF quantile, the documented definition
        assert t == np.quantile(s, 1 - fpr, method="inverted_cdf")
        assert t in s  # an observed score, so float32 scores give float32-exact thresholds


def test_per_score_with_ties_never_exceeds_fpr() -> None:
    s = np.array([0.1] * 10 + [0.5] * 85 + [0.9] * 5)  # 5 above 0.5, but 90 at or below 0.5
    t1, _ = per_score_thresholds(s, s, fpr=0.07)  # k = 7: 0.9 would flag 0, 0.5 flags 5
    assert t1 == 0.5
    assert np.count_nonzero(s > t1) == 5


def test_allowed_count_is_robust_to_float_products() -> None:
    assert 0.29 * 100 < 29  # the trap
    assert allowed_count(0.29, 100) == 29
    assert allowed_count(0.05, 19) == 0 and allowed_count(0.05, 20) == 1


@pytest.mark.parametrize("fpr", [-0.1, 1.0, float("nan"), float("inf")])
def test_bad_fpr_is_refused(fpr: float) -> None:
    with pytest.raises(ValueError, match="fpr"):
        per_score_thresholds(np.arange(10.0), np.arange(10.0), fpr=fpr)


def test_non_finite_scores_are_refused() -> None:
    with pytest.raises(ValueError, match="score2_max.*finite"):
        per_score_thresholds(np.arange(3.0), np.array([0.0, np.nan, 1.0]), fpr=0.1)


@pytest.mark.parametrize("n", [50, 200, 1001])
@pytest.mark.parametrize("fpr", [0.01, 0.05, 0.1, 0.25])
@pytest.mark.parametrize("correlation", [0.0, 0.9, 1.0])
def test_joint_hits_the_target_rate(n: int, fpr: float, correlation: float) -> None:
    rng = np.random.default_rng(n + int(100 * fpr))
    a = rng.standard_normal(n)
    b = correlation * a + np.sqrt(1 - correlation**2) * rng.standard_normal(n)
    s1, s2 = np.exp(a), 2.0 / (1.0 + np.exp(-b))  # different scales, monotone in a and b
    t1, t2 = joint_thresholds(s1, s2, fpr=fpr)
    k = allowed_count(fpr, n)
    rates = achieved_rates(s1, s2, t1, t2)
    assert rates.combined * n == pytest.approx(k)  # exactly the target count: no ties
    assert abs(rates.combined - fpr) <= 1.0 / n
    # equal per-score rates to within one image, each at most the combined rate
    assert abs(rates.score1 - rates.score2) * n <= 1 + 1e-9
    assert max(rates.score1, rates.score2) <= rates.combined
    if correlation == 1.0:  # the same ranking: the union is just one score's flagged set
        assert rates.score1 == pytest.approx(rates.combined)


def test_joint_is_stricter_than_per_score_when_scores_disagree() -> None:
    rng = np.random.default_rng(5)
    s1, s2 = rng.random(400), rng.random(400)  # independent: union of two 5% sets ~ 10%
    p1, p2 = per_score_thresholds(s1, s2, fpr=0.05)
    j1, j2 = joint_thresholds(s1, s2, fpr=0.05)
    assert j1 >= p1 and j2 >= p2
    assert achieved_rates(s1, s2, p1, p2).combined > 0.05
    assert achieved_rates(s1, s2, j1, j2).combined == 0.05


def test_fpr_zero_gives_the_maxima() -> None:
    s1, s2 = np.array([3.0, 1.0, 2.0]), np.array([0.2, 0.7, 0.1])
    assert per_score_thresholds(s1, s2, fpr=0.0) == (3.0, 0.7)
    assert joint_thresholds(s1, s2, fpr=0.0) == (3.0, 0.7)


def test_mode_parse_names_the_choices() -> None:
    assert CalibrationMode.parse("joint") is CalibrationMode.JOINT
    with pytest.raises(ValueError, match="per-score, joint"):
        CalibrationMode.parse("union")


def test_summary_of_a_known_distribution() -> None:
    s = summarize(np.arange(0, 101, dtype=np.float64))
    assert (s.min, s.mean, s.median, s.p90, s.p95, s.p99, s.max) == (0, 50, 50, 90, 95, 99, 100)


# --- the combined rule: several statistics, one target, ties in the flip count ------------

def test_shared_level_hits_the_target_with_tied_flip_counts() -> None:
    """Two continuous scores and an integer flip count (mostly 0: many ties): the union flags
    at most floor(fpr * n) images, and within a few images of it (a tie is never split)."""
    from rpdetect.calibration.thresholds import shared_level_thresholds

    rng = np.random.default_rng(5)
    n = 1000
    flips = rng.choice([0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 10], size=n).astype(float)
    stats = np.stack([rng.random(n), rng.random(n), flips])
    for fpr in (0.01, 0.05, 0.1, 0.2):
        t = shared_level_thresholds(stats, fpr=fpr)
        over = stats > t[:, None]
        flagged = int(over.any(axis=0).sum())
        k = int(fpr * n)
        assert k - 3 <= flagged <= k, (fpr, flagged)
        # the flip threshold sits between counts: every image with that count is on one side
        assert t[2] in set(flips) and over[2].sum() == int((flips > t[2]).sum())
    # without ties the union is exact
    t = shared_level_thresholds(stats[:2], fpr=0.05)
    assert int((stats[:2] > t[:, None]).any(axis=0).sum()) == 50


def test_rule_thresholds_paper_mode_reproduces_the_per_score_rule() -> None:
    from rpdetect.calibration.thresholds import rule_thresholds

    rng = np.random.default_rng(6)
    s1, s2 = rng.random((200, 4)), rng.random((200, 4))
    t = rule_thresholds("paper", s1, s2, None, fpr=0.05)
    assert (t.threshold1[0], t.threshold2[0]) == per_score_thresholds(s1.max(1), s2.max(1),
                                                                      fpr=0.05)
    assert not t.per_kappa and not t.uses_flips
    with pytest.raises(ValueError, match="re-export"):
        rule_thresholds("combined", s1, s2, None, fpr=0.05)
    flips = rng.integers(0, 3, 200)
    c = rule_thresholds("combined", s1, s2, flips, fpr=0.1)
    assert c.uses_flips and int(c.flags(s1, s2, flips).sum()) <= 20
    k = rule_thresholds("per-kappa", s1, s2, flips, fpr=0.1)
    assert k.per_kappa and int(k.flags(s1, s2, flips).sum()) <= 20
