"""Calibration life cycle: ``Calibrator(detector).collect(reader)`` (repeatable) then
``.compute(fpr=..., mode=...)`` -> ``CalibrationResult``; ``calibrate_file`` does it all for a
detector file and writes the calibrated copy, a JSON report and a histogram."""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol, Sequence

import numpy as np
from tqdm import tqdm

from .._version import __version__
from ..errors import InputError, ModelError, ProviderError
from ..contract import Provenance
from ..engine.detector import Failure
from ..rule import Thresholds
from .reader import ImageReader, as_reader
from .thresholds import (
    CalibrationMode,
    Rates,
    Summary,
    check_fpr,
    rule_rates,
    rule_thresholds,
    summarize,
)

__all__ = ["CalibrationResult", "Calibrator", "DEFAULT_MODE", "Failure", "SupportsDetect",
           "calibrate_file"]

DEFAULT_MODE = CalibrationMode.COMBINED
QUANTILE_RULE = {
    CalibrationMode.PER_SCORE: (
        "each threshold = the (n - floor(fpr*n))-th smallest clean score "
        "(np.quantile(s, 1 - fpr, method='inverted_cdf')); at most fpr of the set lies strictly above"
    ),
    CalibrationMode.JOINT: (
        "per-score allowances (k1, k2) grown in turn (0,0),(1,0),(1,1),...; last step whose union "
        "s1 > t1 OR s2 > t2 flags at most floor(fpr*n) clean images"
    ),
    CalibrationMode.COMBINED: (
        "score1_max, score2_max and flips each at its (n - j)-th smallest clean value, for the "
        "largest shared j whose union flags at most floor(fpr*n) clean images"
    ),
    CalibrationMode.PER_KAPPA: (
        "every copy's score1 and score2 at its kappa, and flips, each at its (n - j)-th smallest "
        "clean value, for the largest shared j whose union flags at most floor(fpr*n) clean images"
    ),
}


class SupportsDetect(Protocol):
    """What the calibrator needs from a detector (``rpdetect.Detector`` has it): ``detect(image)``
    returning a result with ``score1``/``score2`` (one value per kappa; ``score1_max`` and
    ``score2_max`` alone are taken as one copy) and, for the rules that use it, ``flips``."""

    def detect(self, image: Any) -> Any: ...


@dataclass(frozen=True)
class CalibrationResult:
    """Thresholds chosen on clean images, with what they do on that same set."""

    thresholds: Thresholds
    fpr: float
    mode: CalibrationMode
    n_images: int  # images scored (the calibration set)
    n_failed: int  # images that could not be scored
    rates: Rates  # fraction of the calibration set flagged: by each statistic alone, by the rule
    score1: Summary  # clean score1_max distribution
    score2: Summary  # clean score2_max distribution
    source: str  # where the images came from (folder name)
    date: str  # ISO 8601, UTC
    failures: tuple[Failure, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        check_fpr(self.fpr)
        if self.n_images < 1 or self.n_failed < 0 or len(self.failures) not in (0, self.n_failed):
            raise ValueError(f"CalibrationResult: inconsistent counts n_images={self.n_images}, "
                             f"n_failed={self.n_failed}, failures={len(self.failures)}")

    @property
    def threshold1(self) -> float | tuple[float, ...]:
        """score1's threshold: one number when it is the same for every kappa."""
        return _common(self.thresholds.threshold1)

    @property
    def threshold2(self) -> float | tuple[float, ...]:
        return _common(self.thresholds.threshold2)

    @property
    def threshold3(self) -> float:
        return self.thresholds.threshold3

    def provenance(self) -> Provenance:
        """What goes into the detector's ``rpdetect.thresholds_provenance`` metadata."""
        return Provenance(
            calibrated=True, fpr=self.fpr, mode=self.mode.value, rule=QUANTILE_RULE[self.mode],
            verdict=self.thresholds.describe(), n_images=self.n_images, n_failed=self.n_failed,
            source=self.source, date=self.date, rpdetect_version=__version__,
            achieved_rates=self.rates._asdict())

    def to_dict(self) -> dict[str, object]:
        """Everything, JSON-able (the calibration report)."""
        return {
            **self.thresholds.to_json(),
            "verdict": self.thresholds.describe(),
            "fpr": self.fpr,
            "mode": self.mode.value,
            "rule": QUANTILE_RULE[self.mode],
            "n_images": self.n_images,
            "n_failed": self.n_failed,
            "achieved_rates": self.rates._asdict(),
            "score1_max": self.score1._asdict(),
            "score2_max": self.score2._asdict(),
            "source": self.source,
            "date": self.date,
            "rpdetect_version": __version__,
            "failures": [f.to_dict() for f in self.failures],
        }


class Calibrator:
    """Runs a detector over clean images and turns their scores into thresholds.

    ``collect`` may be called several times (several folders, or a stream in chunks); each image's
    ``score1_max`` and ``score2_max`` are kept. Images the detector cannot read (a ``Failure`` from
    ``detect_many``; an ``InputError``/``ValueError`` or ``OSError`` from ``detect``; non-finite
    scores) are counted and listed, not fatal; a ``ModelError`` or ``ProviderError`` is about the
    detector and is raised. ``detector``: ``rpdetect.Detector`` (scored ``batch`` images per run
    through ``detect_many``) or anything with ``detect(image)``.
    """

    def __init__(self, detector: SupportsDetect) -> None:
        self.detector = detector
        self._score1: list[np.ndarray] = []  # per image: one value per kappa
        self._score2: list[np.ndarray] = []
        self._flips: list[int | None] = []
        self._failures: list[Failure] = []
        self._seen = 0  # images recorded so far: a Failure's index
        self._sources: list[str] = []
        self._locations: list[str] = []

    @property
    def scores(self) -> tuple[np.ndarray, np.ndarray]:
        """The clean ``score1_max`` and ``score2_max`` collected so far (float64 copies)."""
        s1, s2, _ = self.statistics
        return s1.max(axis=1), s2.max(axis=1)

    @property
    def statistics(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """score1 and score2 [N, n] per copy, and the flip counts [N] (None when the detector
        does not report them), collected so far."""
        if not self._score1:
            return np.zeros((0, 1)), np.zeros((0, 1)), None
        flips = (None if any(f is None for f in self._flips)
                 else np.array(self._flips, dtype=np.float64))
        return np.stack(self._score1), np.stack(self._score2), flips

    @property
    def failures(self) -> tuple[Failure, ...]:
        return tuple(self._failures)

    def collect(
        self,
        reader: ImageReader | str | Path | np.ndarray | Iterable[Any],
        *,
        limit: int | None = None,
        progress: bool = False,
    ) -> int:
        """Score every image of ``reader`` (at most ``limit``); return how many were scored.
        ``progress``: a tqdm bar on stderr when stderr is a terminal."""
        if limit is not None and limit < 1:
            raise ValueError(f"limit: expected a positive number of images, got {limit}")
        reader = as_reader(reader)
        if reader.source not in self._sources:
            self._sources.append(reader.source)
        location = reader.location or reader.source
        if location not in self._locations:
            self._locations.append(location)
        items = islice(reader, limit)
        total = len(reader) if hasattr(reader, "__len__") else None  # type: ignore[arg-type]
        if total is not None and limit is not None:
            total = min(total, limit)
        # Whole static batches per session run when the detector can (rpdetect.Detector's
        # detect_many); one detect() per image otherwise.
        chunk = max(int(getattr(self.detector, "batch", 1)), 1) * 16
        scored = 0
        with tqdm(total=total, desc="calibrate", unit="img", file=sys.stderr, leave=False,
                  disable=not (progress and sys.stderr.isatty())) as bar:
            while block := list(islice(items, chunk)):
                for name, outcome in zip((str(n) for n, _ in block), self._score(block)):
                    scored += self._record(name, outcome)
                bar.update(len(block))
        return scored

    def _score(self, block: list[tuple[str, Any]]) -> list[Any]:
        """One outcome per item: an object with score1_max/score2_max, or an error message."""
        images = [image for _, image in block]
        detect_many = getattr(self.detector, "detect_many", None)
        if detect_many is not None:
            report = detect_many(images, progress=False)
            failed = {f.index: f.error for f in report.failures}
            results = iter(report.results)  # the good inputs, in input order
            return [failed[i] if i in failed else next(results) for i in range(len(images))]
        outcomes: list[Any] = []
        for image in images:
            try:
                outcomes.append(self.detector.detect(image))
            except (ModelError, ProviderError):
                raise
            except (ValueError, OSError) as exc:
                outcomes.append(f"{type(exc).__name__}: {exc}")
        return outcomes

    def _record(self, name: str, outcome: Any) -> int:
        self._seen += 1
        if isinstance(outcome, str):
            self._failures.append(Failure(self._seen - 1, name, outcome))
            return 0
        s1 = _vector(getattr(outcome, "score1", None), outcome.score1_max)
        s2 = _vector(getattr(outcome, "score2", None), outcome.score2_max)
        if not (np.all(np.isfinite(s1)) and np.all(np.isfinite(s2))):
            self._failures.append(
                Failure(self._seen - 1, name,
                        f"non-finite scores score1_max={s1.max()}, score2_max={s2.max()}")
            )
            return 0
        if self._score1 and s1.shape != self._score1[0].shape:
            raise ModelError(f"{name}: {s1.size} scores per image, earlier images had "
                             f"{self._score1[0].size}")
        flips = getattr(outcome, "flips", None)
        self._score1.append(s1)
        self._score2.append(s2)
        self._flips.append(None if flips is None else int(flips))
        return 1

    def compute(
        self, *, fpr: float = 0.05, mode: CalibrationMode | str = DEFAULT_MODE
    ) -> CalibrationResult:
        """Thresholds for ``fpr`` by ``mode`` (see ``rpdetect.calibration.thresholds``): the
        default ``combined`` (score1_max, score2_max and flips together flag ``fpr``), ``paper``
        (alias ``per-score``: ``fpr`` per score, the paper's rule), ``joint``, ``per-kappa``."""
        mode = CalibrationMode.parse(mode)
        source = ", ".join(self._sources) or "nothing"
        if not self._score1:
            where = ", ".join(self._locations) or "nothing (collect() was never called)"
            detail = (
                f"all {len(self._failures)} images failed, first: {self._failures[0].source}: "
                f"{self._failures[0].error}" if self._failures else "no images were collected"
            )
            raise InputError(
                f"calibration images from {where}: no readable clean image ({detail}); "
                f"give a folder of images the detector can decode"
            )
        s1, s2, flips = self.statistics
        thresholds = rule_thresholds(mode, s1, s2, flips, fpr=fpr)
        return CalibrationResult(
            thresholds=thresholds,
            fpr=float(fpr),
            mode=mode,
            n_images=len(s1),
            n_failed=len(self._failures),
            rates=rule_rates(thresholds, s1, s2, flips),
            score1=summarize(s1.max(axis=1)),
            score2=summarize(s2.max(axis=1)),
            source=source,
            date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            failures=tuple(self._failures),
        )


def _vector(per_copy: Any, maximum: Any) -> np.ndarray:
    """One image's per-copy scores, or its maximum alone as one copy."""
    if per_copy is not None:
        return np.asarray(per_copy, dtype=np.float64).ravel()
    arr = np.asarray(maximum, dtype=np.float64).ravel()
    if arr.size != 1:
        raise ModelError(f"detector returned {arr.size} values for one image's max score")
    return arr


def _common(values: tuple[float, ...]) -> float | tuple[float, ...]:
    return values[0] if len(set(values)) == 1 else values


def calibrate_file(
    detector_path: str | Path,
    reader: ImageReader | str | Path | np.ndarray | Iterable[Any],
    out_path: str | Path,
    *,
    fpr: float = 0.05,
    mode: CalibrationMode | str = DEFAULT_MODE,
    limit: int | None = None,
    providers: str | Sequence[str] = "auto",
    threads: int | None = None,
    provider_options: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int | None = None,
    report_path: str | Path | None = None,
    histogram_path: str | Path | None = None,
    progress: bool = False,
    **options: Any,
) -> CalibrationResult:
    """Calibrate the detector at ``detector_path`` on the clean images of ``reader`` and save the
    calibrated copy to ``out_path`` (thresholds as initializer defaults, provenance in metadata).

    Also writes a JSON report and a PNG histogram, by default next to ``out_path``
    (``OUT.calibration.json`` / ``OUT.calibration.png``). The histogram needs matplotlib (the
    ``eval`` extra); without it, it is skipped with a warning. ``providers``, ``threads``,
    ``provider_options``, ``**options`` (execution-provider options under ONNX Runtime's names)
    and ``seed`` (the noise generator of detectors built with noise="input") go to
    ``rpdetect.Detector``.
    """
    from ..engine import Detector
    from ..contract import load, with_thresholds
    from .report import check_report_paths, default_paths, save_calibrated

    detector_path, out_path = Path(detector_path), Path(out_path)
    mode = CalibrationMode.parse(mode)
    check_fpr(fpr)  # before any image is run
    default_report, default_histogram = default_paths(out_path)
    report_path, histogram_path = check_report_paths(
        detector_path, out_path, report_path or default_report,
        histogram_path or default_histogram)
    model, info = load(detector_path)  # ModelError now, before any image is run
    if mode in (CalibrationMode.COMBINED, CalibrationMode.PER_KAPPA) and not info.has_flips:
        raise ModelError(
            f"{detector_path}: mode {mode.value!r} needs the flip count, which this detector "
            f"file does not compute (rpdetect <= 0.1): re-export it with `rpdetect export`, or "
            f"calibrate with --mode paper or joint")
    calibrator = Calibrator(
        Detector(detector_path, providers=providers, threads=threads,
                 provider_options=provider_options,
                 seed=seed if info.noise == "input" else None, **options)
    )
    calibrator.collect(reader, limit=limit, progress=progress)
    result = calibrator.compute(fpr=fpr, mode=mode)

    t = result.thresholds
    if t.n != info.n and not t.per_kappa:  # scored through score*_max alone
        t = Thresholds.of(t.threshold1[0], t.threshold2[0], t.threshold3, n=info.n)
    calibrated = with_thresholds(model, t.threshold1, t.threshold2, result.provenance(),
                                 threshold3=t.threshold3)
    report = result.to_dict()
    report["detector"] = str(detector_path)
    report["output"] = str(out_path)
    report["kappas"] = list(info.kappas)
    report["noise"] = info.noise
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        warnings.warn(
            "histogram skipped: matplotlib is not installed (pip install 'rpdetect[eval]')",
            stacklevel=2,
        )
        histogram_path = None
    s1, s2 = calibrator.scores
    title = (f"{detector_path.name} on {result.n_images} clean images from {result.source}: "
             f"fpr {result.fpr:g}, mode {result.mode.value}, "
             f"combined rate {result.rates.combined:.2%}")
    save_calibrated(calibrated, out_path, report, report_path, histogram_path=histogram_path,
                    scores=(s1, s2), thresholds=(max(t.threshold1), max(t.threshold2)),
                    title=title)
    return result
