"""Robust latency statistics of one configuration's timed runs."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

__all__ = ["Stats", "median_interval", "summarise"]


@dataclass(frozen=True)
class Stats:
    """Times in milliseconds over ``runs`` timed runs; ``images_per_s`` from the median."""

    runs: int
    median_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    mean_ms: float
    images_per_s: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def summarise(times_s: Sequence[float], *, images_per_run: int) -> Stats:
    """Median, p90, p99 (linear interpolation), min and mean of ``times_s`` (seconds)."""
    if len(times_s) == 0:
        raise ValueError("summarise: no timed runs")
    t = np.asarray(times_s, dtype=np.float64) * 1e3
    median = float(np.median(t))
    return Stats(
        runs=int(t.size),
        median_ms=median,
        p90_ms=float(np.percentile(t, 90)),
        p99_ms=float(np.percentile(t, 99)),
        min_ms=float(t.min()),
        mean_ms=float(t.mean()),
        images_per_s=images_per_run / (median / 1e3),
    )


def median_interval(values: Sequence[float], *, level: float = 0.9, resamples: int = 4000,
                    seed: int = 0) -> tuple[float, float]:
    """A percentile-bootstrap confidence interval (``level``, seeded) of the median of
    ``values``, e.g. a ratio measured once per round: how far the median could move with other
    rounds of the same noise. (nan, nan) for fewer than 3 values."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < 3:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    medians = np.median(v[rng.integers(0, v.size, size=(resamples, v.size))], axis=1)
    tail = (1.0 - level) / 2.0
    return float(np.quantile(medians, tail)), float(np.quantile(medians, 1.0 - tail))
