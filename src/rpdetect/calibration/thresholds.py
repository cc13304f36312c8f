"""Threshold rules: clean score distributions -> (threshold1, threshold2).

The detector flags an image when ``score1_max > threshold1`` OR ``score2_max > threshold2``
(strictly greater). Every rule here works on the calibration set's order statistics, so the
rates it promises hold exactly on that set:

``per-score`` (the paper): each threshold on its own score. With ``n`` clean images and
    ``k = floor(fpr * n)``, the threshold is the ``(n - k)``-th smallest score (1-based order
    statistic), i.e. ``np.quantile(s, 1 - fpr, method="inverted_cdf")``: the smallest value ``t``
    with ``#(s <= t) >= (1 - fpr) n``. At most ``k`` scores lie strictly above it (exactly ``k``
    when the scores have no tie there), so at most ``fpr`` of the calibration set is flagged by
    each score alone. ``k = 0`` gives the maximum (nothing flagged).

``joint`` (beyond the paper): both thresholds chosen so that the combined rule flags ``k`` of the
    ``n`` clean images. The per-score allowances grow in turn, score1 first:
    ``(k1, k2) = (0, 0), (1, 0), (1, 1), (2, 1), ...`` (equal per-score rates to within one image),
    each step lowering one threshold by one order statistic, so the union count never decreases and
    grows by at most one image per step when there are no ties; the last step whose union count is
    ``<= k`` is taken (binary search). Without ties the combined rate is exactly ``k / n``.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import NamedTuple

import numpy as np

__all__ = [
    "CalibrationMode",
    "Rates",
    "Summary",
    "allowed_count",
    "check_fpr",
    "achieved_rates",
    "joint_thresholds",
    "order_threshold",
    "per_score_thresholds",
    "summarize",
]


class CalibrationMode(str, Enum):
    """How the two thresholds are chosen from the clean scores."""

    PER_SCORE = "per-score"  # the paper: fpr of the clean set flagged by each score alone
    JOINT = "joint"  # fpr of the clean set flagged by score1 OR score2

    @classmethod
    def parse(cls, value: "CalibrationMode | str") -> "CalibrationMode":
        try:
            return cls(value)
        except ValueError:
            choices = ", ".join(m.value for m in cls)
            raise ValueError(f"mode: expected one of {choices}, got {value!r}") from None


class Rates(NamedTuple):
    """Fractions of the calibration set flagged, by each score alone and by the combined rule."""

    score1: float
    score2: float
    combined: float


class Summary(NamedTuple):
    """A score distribution in seven numbers (percentiles: numpy's default linear method)."""

    min: float
    mean: float
    median: float
    p90: float
    p95: float
    p99: float
    max: float


def summarize(scores: np.ndarray) -> Summary:
    s = np.asarray(scores, dtype=np.float64)
    p = np.percentile(s, [50, 90, 95, 99])
    return Summary(
        min=float(s.min()), mean=float(s.mean()), median=float(p[0]), p90=float(p[1]),
        p95=float(p[2]), p99=float(p[3]), max=float(s.max()),
    )


def check_fpr(fpr: float) -> float:
    fpr = float(fpr)
    if not (math.isfinite(fpr) and 0.0 <= fpr < 1.0):
        raise ValueError(f"fpr: expected a false-positive rate in [0, 1), got {fpr!r}")
    return fpr


def allowed_count(fpr: float, n: int) -> int:
    """``k = floor(fpr * n)``: how many of ``n`` clean images may be flagged. The product is
    rounded to 9 decimals first so that e.g. 0.29 * 100 gives 29, not 28."""
    return int(math.floor(round(check_fpr(fpr) * n, 9)))


def order_threshold(sorted_scores: np.ndarray, k: int) -> float:
    """The threshold that leaves at most ``k`` of the (ascending) scores strictly above it:
    the ``(n - k)``-th smallest score. ``k`` is clamped to ``[0, n - 1]``."""
    n = len(sorted_scores)
    k = min(max(int(k), 0), n - 1)
    return float(sorted_scores[n - 1 - k])


def _sorted(scores: np.ndarray, name: str) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size == 0:
        raise ValueError(f"{name}: no scores to calibrate from")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{name}: scores must be finite (got NaN or inf)")
    return np.sort(s)


def per_score_thresholds(
    score1_max: np.ndarray, score2_max: np.ndarray, *, fpr: float
) -> tuple[float, float]:
    """The paper's rule: each threshold at the ``(1 - fpr)`` inverted-CDF quantile of its scores."""
    s1, s2 = _sorted(score1_max, "score1_max"), _sorted(score2_max, "score2_max")
    k = allowed_count(fpr, len(s1))
    return order_threshold(s1, k), order_threshold(s2, k)


def joint_thresholds(
    score1_max: np.ndarray, score2_max: np.ndarray, *, fpr: float
) -> tuple[float, float]:
    """Thresholds whose combined rule flags ``floor(fpr * n)`` of the clean images (at most that
    many with ties); see the module docstring for the search."""
    a = np.asarray(score1_max, dtype=np.float64).ravel()
    b = np.asarray(score2_max, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"score1_max and score2_max differ in length: {a.size} vs {b.size}")
    s1, s2 = _sorted(a, "score1_max"), _sorted(b, "score2_max")
    n = len(s1)
    target = allowed_count(fpr, n)

    def at(step: int) -> tuple[float, float]:
        return order_threshold(s1, (step + 1) // 2), order_threshold(s2, step // 2)

    def union(step: int) -> int:
        t1, t2 = at(step)
        return int(np.count_nonzero((a > t1) | (b > t2)))

    lo, hi = 0, 2 * (n - 1)  # union(0) == 0 <= target; find the last step with union <= target
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if union(mid) <= target:
            lo = mid
        else:
            hi = mid - 1
    return at(lo)


def achieved_rates(
    score1_max: np.ndarray, score2_max: np.ndarray, threshold1: float, threshold2: float
) -> Rates:
    a = np.asarray(score1_max, dtype=np.float64)
    b = np.asarray(score2_max, dtype=np.float64)
    over1, over2 = a > threshold1, b > threshold2
    return Rates(
        score1=float(over1.mean()), score2=float(over2.mean()), combined=float((over1 | over2).mean())
    )
