"""Threshold rules: clean statistics -> the detector's thresholds (``rpdetect.rule``).

The detector flags an image when any copy's score1 exceeds its kappa's threshold1, any copy's
score2 its threshold2, or the flip count exceeds threshold3 (strictly greater). Every rule here
works on the calibration set's order statistics, so the rates it promises hold exactly on that
set:

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

``combined`` (the default, beyond the paper): score1_max, score2_max and the flip count (the
    label-consistency statistic), thresholds set together (``shared_level_thresholds``): in
    turn, each threshold is lowered to its next lower clean value unless the union would then
    flag more than ``k = floor(fpr * n)`` clean images, in which case it stays and the others go
    on. The flip count is an integer with many ties (most clean images flip no copy): its
    threshold moves a whole tie at a time (it never splits one), so the rule flags at most ``k``;
    the rate reached is reported (without ties in the scores it is exactly ``k / n``).

``per-kappa`` (beyond the paper, offered for study): the same search over every copy's score1
    and score2 at its own kappa (2n statistics) and the flip count.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import NamedTuple

import numpy as np

from ..rule import Thresholds

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
    "rule_rates",
    "rule_thresholds",
    "shared_level_thresholds",
    "summarize",
]


class CalibrationMode(str, Enum):
    """How the two thresholds are chosen from the clean scores."""

    PER_SCORE = "per-score"  # the paper: fpr of the clean set flagged by each score alone
    JOINT = "joint"  # fpr of the clean set flagged by score1 OR score2 (max scores only)
    COMBINED = "combined"  # fpr flagged by score1 OR score2 OR flips (the default)
    PER_KAPPA = "per-kappa"  # fpr flagged by any copy at its kappa's threshold OR flips

    @classmethod
    def parse(cls, value: "CalibrationMode | str") -> "CalibrationMode":
        if value == "paper":
            return cls.PER_SCORE
        try:
            return cls(value)
        except ValueError:
            choices = ", ".join(["paper"] + [m.value for m in cls])
            raise ValueError(f"mode: expected one of {choices}, got {value!r}") from None


class Rates(NamedTuple):
    """Fractions of the calibration set flagged, by each statistic alone and by the whole rule."""

    score1: float
    score2: float
    combined: float
    flips: float = 0.0


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


def shared_level_thresholds(statistics: np.ndarray, *, fpr: float) -> np.ndarray:
    """Thresholds for the rows of ``statistics`` [m, n] (m statistics of n clean images, larger
    = more suspicious) whose union ``any_row(value > threshold)`` flags at most
    ``floor(fpr * n)`` of the images. Every threshold starts at its row's maximum; in turn
    (row 0, 1, ..., m-1, 0, ...) each is lowered to its row's next lower value, crossing a whole
    tie at once, unless that would take the union past the target: then that row stops where it
    is and the others go on, until no row can move. Without ties the union grows by at most one
    image a step, so it reaches the target exactly; with ties (the flip count) it stops at most
    one tie short of it."""
    stats = np.asarray(statistics, dtype=np.float64)
    if stats.ndim != 2 or stats.shape[1] == 0:
        raise ValueError(f"statistics: expected [m, n] with n >= 1, got {stats.shape}")
    if not np.all(np.isfinite(stats)):
        raise ValueError("statistics: must be finite (got NaN or inf)")
    rows = np.sort(stats, axis=1)
    m, n = stats.shape
    target = allowed_count(fpr, n)
    thresholds = rows[:, -1].copy()
    over = np.zeros((m, n), dtype=bool)
    count = np.zeros(n, dtype=np.int64)  # how many rows flag each image
    active = list(range(m))
    while active:
        for r in list(active):
            below = int(np.searchsorted(rows[r], thresholds[r], side="left")) - 1
            if below < 0:  # at the row's minimum: nothing left to lower
                active.remove(r)
                continue
            candidate = rows[r, below]
            new_over = stats[r] > candidate
            union = int(np.count_nonzero((count - over[r] > 0) | new_over))
            if union > target:
                active.remove(r)
                continue
            count += new_over.astype(np.int64) - over[r]
            over[r], thresholds[r] = new_over, candidate
    return thresholds


def rule_thresholds(
    mode: CalibrationMode | str,
    score1: np.ndarray,
    score2: np.ndarray,
    flips: np.ndarray | None,
    *,
    fpr: float,
) -> Thresholds:
    """The thresholds of ``mode`` from clean per-copy scores score1/score2 [N, n] and flip
    counts [N] (None for detector files without the flip count: only per-score and joint)."""
    mode = CalibrationMode.parse(mode)
    s1 = np.asarray(score1, dtype=np.float64)
    s2 = np.asarray(score2, dtype=np.float64)
    if s1.ndim != 2 or s1.shape != s2.shape:
        raise ValueError(f"score1/score2: expected [N, n] each, got {s1.shape} and {s2.shape}")
    n = s1.shape[1]
    if mode in (CalibrationMode.PER_SCORE, CalibrationMode.JOINT):
        rule = per_score_thresholds if mode is CalibrationMode.PER_SCORE else joint_thresholds
        t1, t2 = rule(s1.max(axis=1), s2.max(axis=1), fpr=fpr)
        return Thresholds.of(t1, t2, math.inf, n=n)
    if flips is None:
        raise ValueError(f"mode {mode.value!r} needs the flip count, which this detector file "
                         f"does not compute (rpdetect <= 0.1): re-export it with `rpdetect "
                         f"export`, or use mode 'paper' or 'joint'")
    f = np.asarray(flips, dtype=np.float64).reshape(1, -1)
    if mode is CalibrationMode.COMBINED:
        t = shared_level_thresholds(np.concatenate([s1.max(axis=1)[None], s2.max(axis=1)[None],
                                                    f]), fpr=fpr)
        return Thresholds.of(t[0], t[1], t[2], n=n)
    t = shared_level_thresholds(np.concatenate([s1.T, s2.T, f]), fpr=fpr)
    return Thresholds.of(t[:n], t[n:2 * n], t[-1], n=n)


def rule_rates(thresholds: Thresholds, score1: np.ndarray, score2: np.ndarray,
               flips: np.ndarray | None) -> Rates:
    """Fractions of a set flagged by each statistic alone and by the whole rule."""
    f = np.zeros(len(score1)) if flips is None else np.asarray(flips)
    by = thresholds.statistic_flags(score1, score2, f)
    return Rates(score1=float(by[0].mean()), score2=float(by[1].mean()),
                 combined=float(by.any(axis=0).mean()), flips=float(by[2].mean()))
