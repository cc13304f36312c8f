"""The detector's verdict, stated once: three statistics and their thresholds.

For an image with n noisy copies (``rpdetect.reference`` computes the statistics)::

    is_adversarial = any_i(score1_i > t1_i) OR any_i(score2_i > t2_i) OR flips > t3

* ``threshold1`` / ``threshold2`` hold one value per noise scale kappa_i. The paper's rule
  (``score1_max > t1 or score2_max > t2``) is the case of n equal values; per-kappa values rank
  each copy against clean copies at its own kappa.
* ``flips`` is the number of the n copies whose label differs from the clean image's label;
  ``threshold3 = +inf`` leaves it unused (the paper's rule).

Thresholds are compared strictly (``>``), in float32 as in the graph (the file holds them as
float32; calibrated thresholds are clean float32 scores, so nothing is lost). +inf never flags; NaN and
-inf are refused (a NaN never flags and -inf always does, neither is a calibrated threshold).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

__all__ = ["Thresholds", "check_threshold"]


def check_threshold(name: str, value: float) -> float:
    """``value`` as a float, or ValueError if it is NaN or -inf (or not a number)."""
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: expected a number, got {value!r}") from exc
    if math.isnan(v) or v == -math.inf:
        raise ValueError(f"{name}: {v} is not a usable threshold (NaN never flags, -inf always "
                         f"does); use a finite value, or +inf to leave the statistic unused")
    return v


def _vector(name: str, value: float | Sequence[float], n: int) -> tuple[float, ...]:
    values = np.asarray(value, dtype=np.float64).reshape(-1)
    if values.size == 1:
        values = np.full(n, float(values[0]))
    if values.shape != (n,):
        raise ValueError(f"{name}: expected one value or {n} (one per kappa), got "
                         f"{values.size}")
    return tuple(check_threshold(f"{name}[{i}]", float(v)) for i, v in enumerate(values))


@dataclass(frozen=True)
class Thresholds:
    """The thresholds of one detector: ``threshold1``/``threshold2`` per kappa (length n),
    ``threshold3`` on the flip count."""

    threshold1: tuple[float, ...]
    threshold2: tuple[float, ...]
    threshold3: float = math.inf

    @classmethod
    def of(cls, threshold1: float | Sequence[float], threshold2: float | Sequence[float],
           threshold3: float = math.inf, *, n: int) -> "Thresholds":
        """From scalars (broadcast to the n kappas) or per-kappa sequences, validated."""
        return cls(_vector("threshold1", threshold1, n), _vector("threshold2", threshold2, n),
                   check_threshold("threshold3", threshold3))

    @property
    def n(self) -> int:
        return len(self.threshold1)

    @property
    def per_kappa(self) -> bool:
        """True when some threshold differs between kappas."""
        return len(set(self.threshold1)) > 1 or len(set(self.threshold2)) > 1

    @property
    def uses_flips(self) -> bool:
        return math.isfinite(self.threshold3)

    @property
    def calibrated(self) -> bool:
        """False when every threshold is +inf: the detector never flags."""
        return any(math.isfinite(t) for t in (*self.threshold1, *self.threshold2,
                                              self.threshold3))

    def describe(self) -> str:
        """The rule in words: which statistics it uses and how."""
        if not self.calibrated:
            return "uncalibrated: every threshold is +inf, never flags"
        parts = []
        for name, t in (("score1", self.threshold1), ("score2", self.threshold2)):
            if any(math.isfinite(v) for v in t):
                parts.append(f"{name} per kappa" if len(set(t)) > 1 else f"max {name}")
        if self.uses_flips:
            parts.append(f"flips > {self.threshold3:g}")
        return " OR ".join(parts)

    def flags(self, score1: np.ndarray, score2: np.ndarray, flips: np.ndarray) -> np.ndarray:
        """The verdict for score1/score2 [N, n] and flips [N] (float32 comparisons, as in the
        graph) -> bool [N]."""
        return np.any(self.statistic_flags(score1, score2, flips), axis=0)

    def statistic_flags(self, score1: np.ndarray, score2: np.ndarray, flips: np.ndarray
                        ) -> np.ndarray:
        """[3, N] bool: flagged by score1, by score2, by flips alone."""
        s1 = np.asarray(score1, dtype=np.float32)
        s2 = np.asarray(score2, dtype=np.float32)
        f = np.asarray(flips, dtype=np.float32).reshape(-1)
        t1 = np.asarray(self.threshold1, dtype=np.float32)
        t2 = np.asarray(self.threshold2, dtype=np.float32)
        if s1.ndim != 2 or s1.shape[1] != self.n or s2.shape != s1.shape:
            raise ValueError(f"scores: expected [N, {self.n}] each, got {s1.shape} and "
                             f"{s2.shape}")
        return np.stack([(s1 > t1).any(axis=1), (s2 > t2).any(axis=1),
                         f > np.float32(self.threshold3)])

    def to_json(self) -> dict[str, Any]:
        """JSON-ready; +inf (unused) is null, since strict JSON has no infinity."""
        def enc(v: float) -> float | None:
            return v if math.isfinite(v) else None
        return {"threshold1": [enc(v) for v in self.threshold1],
                "threshold2": [enc(v) for v in self.threshold2],
                "threshold3": enc(self.threshold3)}
