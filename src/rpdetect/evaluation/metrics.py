"""The paper's detection metrics for one attack: clean images are negatives, adversarial
examples positives.

Zero-division conventions (stated, and tested):

* precision = TP / (TP + FP), and 0 when nothing is flagged (TP + FP = 0);
* recall = TP / (TP + FN), and 0 when there are no adversarial examples;
* F_beta = (1 + beta^2) P R / (beta^2 P + R), and 0 when P = R = 0;
* ROC-AUC (beyond the paper) is the Mann-Whitney probability that an adversarial score exceeds a
  clean one, ties counting one half (average ranks); NaN when either set is empty.
"""

from __future__ import annotations

import math
from typing import Mapping, NamedTuple, Sequence

import numpy as np

from ..rule import Thresholds

__all__ = [
    "DetectionMetrics",
    "ScoreSet",
    "AttackMetrics",
    "RuleMetrics",
    "attack_metrics",
    "rule_metrics",
    "total_metrics",
    "detection_metrics",
    "f_beta",
    "precision",
    "recall",
    "roc_auc",
]

BETA = 2.0  # the paper reports F2: recall weighs more than precision


def precision(tp: int, fp: int) -> float:
    return tp / (tp + fp) if tp + fp > 0 else 0.0


def recall(tp: int, fn: int) -> float:
    return tp / (tp + fn) if tp + fn > 0 else 0.0


def f_beta(p: float, r: float, beta: float = BETA) -> float:
    b2 = beta * beta
    denom = b2 * p + r
    return (1.0 + b2) * p * r / denom if denom > 0 else 0.0


class DetectionMetrics(NamedTuple):
    tp: int  # adversarial examples flagged
    fp: int  # clean images flagged
    fn: int  # adversarial examples missed
    tn: int  # clean images passed
    precision: float
    recall: float
    f2: float


def detection_metrics(clean_flags: np.ndarray, adversarial_flags: np.ndarray) -> DetectionMetrics:
    """Counts and rates from the verdicts on the clean set and on the adversarial set."""
    clean = np.asarray(clean_flags, dtype=bool).ravel()
    adv = np.asarray(adversarial_flags, dtype=bool).ravel()
    tp, fp = int(adv.sum()), int(clean.sum())
    fn, tn = int(adv.size - tp), int(clean.size - fp)
    p, r = precision(tp, fp), recall(tp, fn)
    return DetectionMetrics(tp, fp, fn, tn, p, r, f_beta(p, r))


def roc_auc(clean_scores: np.ndarray, adversarial_scores: np.ndarray) -> float:
    """Rank-based ROC-AUC with average ranks for ties (adversarial = positive class)."""
    neg = np.asarray(clean_scores, dtype=np.float64).ravel()
    pos = np.asarray(adversarial_scores, dtype=np.float64).ravel()
    if neg.size == 0 or pos.size == 0:
        return math.nan
    values = np.concatenate([pos, neg])
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(values.size, dtype=np.float64)
    sorted_vals = values[order]
    # average rank (1-based) over each run of equal values
    starts = np.flatnonzero(np.r_[True, sorted_vals[1:] != sorted_vals[:-1]])
    ends = np.r_[starts[1:], values.size]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + 1 + e) / 2.0
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))


class ScoreSet(NamedTuple):
    """Detector outputs on a set of images: per copy (one column per kappa) and per image."""

    score1: np.ndarray  # [N, n]
    score2: np.ndarray  # [N, n]
    flips: np.ndarray  # [N] copies whose label differs from the clean label
    label: np.ndarray  # [N] the classifier's label of the (unperturbed) input

    @property
    def score1_max(self) -> np.ndarray:
        return np.asarray(self.score1).max(axis=1)

    @property
    def score2_max(self) -> np.ndarray:
        return np.asarray(self.score2).max(axis=1)

    def __len__(self) -> int:  # type: ignore[override]
        return len(self.label)

    def take(self, rows: np.ndarray) -> "ScoreSet":
        return ScoreSet(*(np.asarray(v)[rows] for v in self))


class RuleMetrics(NamedTuple):
    """One rule's verdicts on one attack: each statistic alone and the whole rule."""

    thresholds: Thresholds
    score1: DetectionMetrics
    score2: DetectionMetrics
    flips: DetectionMetrics
    combined: DetectionMetrics


class AttackMetrics(NamedTuple):
    attack: str
    attempted: int  # correctly classified images the attack was run on
    failed: int  # attacks that did not reach their criterion (excluded)
    used: int  # adversarial examples (and clean images) in the table
    mean_l2: float  # mean L2 of the used adversarial examples, [0, 1] pixel units
    rules: dict[str, RuleMetrics]  # rule name (e.g. "paper") -> its verdicts
    auc1: float  # ROC-AUC of score1_max, score2_max and flips (beyond the paper)
    auc2: float
    auc_flips: float
    mean_queries: float = math.nan  # black-box attacks: mean queries of the used examples


def rule_metrics(thresholds: Thresholds, clean: ScoreSet, adversarial: ScoreSet) -> RuleMetrics:
    c = thresholds.statistic_flags(clean.score1, clean.score2, clean.flips)
    a = thresholds.statistic_flags(adversarial.score1, adversarial.score2, adversarial.flips)
    by = [detection_metrics(c[i], a[i]) for i in range(3)]
    return RuleMetrics(thresholds, *by, detection_metrics(c.any(axis=0), a.any(axis=0)))


def attack_metrics(
    attack: str,
    *,
    clean: ScoreSet,
    adversarial: ScoreSet,
    rules: Mapping[str, Thresholds],
    attempted: int,
    failed: int,
    l2: np.ndarray,
    queries: np.ndarray | None = None,
) -> AttackMetrics:
    """One row of Table 1 for every rule: verdicts by each statistic alone and combined (OR,
    strictly greater; ``rpdetect.rule``). ``queries``: the queries each used example took (a
    black-box attack; NaN where not counted)."""
    q = np.asarray(queries, dtype=np.float64) if queries is not None else np.zeros(0)
    q = q[np.isfinite(q)]
    return AttackMetrics(
        attack=attack,
        attempted=attempted,
        failed=failed,
        used=len(adversarial),
        mean_l2=float(np.mean(l2)) if np.size(l2) else math.nan,
        rules={name: rule_metrics(t, clean, adversarial) for name, t in rules.items()},
        auc1=roc_auc(clean.score1_max, adversarial.score1_max),
        auc2=roc_auc(clean.score2_max, adversarial.score2_max),
        auc_flips=roc_auc(clean.flips, adversarial.flips),
        mean_queries=float(q.mean()) if len(q) else math.nan,
    )


def total_metrics(rows: Sequence[AttackMetrics], rule: str) -> RuleMetrics:
    """The paper's Total row for one rule: counts summed over the attacks."""
    def total(stat: str) -> DetectionMetrics:
        ms = [getattr(r.rules[rule], stat) for r in rows]
        tp, fp = sum(m.tp for m in ms), sum(m.fp for m in ms)
        fn, tn = sum(m.fn for m in ms), sum(m.tn for m in ms)
        p, r = precision(tp, fp), recall(tp, fn)
        return DetectionMetrics(tp, fp, fn, tn, p, r, f_beta(p, r))
    return RuleMetrics(rows[0].rules[rule].thresholds, *(total(s) for s in
                                                         ("score1", "score2", "flips",
                                                          "combined")))
