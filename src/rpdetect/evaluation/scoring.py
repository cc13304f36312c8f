"""Run the detector ONNX (and the bare classifier ONNX) on arrays of images with ONNX Runtime,
with results cached on disk by a key the caller chooses."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .._atomic import atomic_path
from ..errors import InputError
from .metrics import ScoreSet

__all__ = ["DetectorRunner", "ClassifierRunner", "cached_scores", "label_consistency"]

SCORES_FORMAT = "v2"  # per-copy scores and flips (v1 held the maxima only)


class DetectorRunner:
    """The engine's :class:`rpdetect.Detector` on ONNX Runtime's CPU provider, fed float CHW
    arrays in [0, 1]; returns the per-copy scores, flip counts and labels as arrays. The graph
    runs its own seeded random op (``engine_noise=False``), so a re-run of the evaluation draws
    the very same noise and reproduces every count."""

    def __init__(self, path: Path, *, threads: int | None = None) -> None:
        from ..engine import Detector

        from ..engine.session import SessionBuilder

        self.detector = Detector(path, session_builder=SessionBuilder.cpu(threads),
                                 engine_noise=False)

    def score(self, images: np.ndarray, *, progress: bool = False, desc: str = "detect"
              ) -> ScoreSet:
        from tqdm import tqdm

        s1, s2, flips, label = [], [], [], []
        step = 8 * self.detector.batch
        for start in tqdm(range(0, len(images), step), desc=desc, disable=not progress,
                          unit="chunk"):
            report = self.detector.detect_many(
                np.ascontiguousarray(images[start:start + step], dtype=np.float32),
                progress=False)
            if report.failures:
                raise InputError(f"{desc}: the detector rejected {report.failures[0]}")
            for r in report.results:
                s1.append(r.score1), s2.append(r.score2), label.append(r.label)
                flips.append(r.flips)
        n = len(self.detector.kappas)
        return ScoreSet(np.asarray(s1, np.float64).reshape(-1, n),
                        np.asarray(s2, np.float64).reshape(-1, n),
                        np.asarray(flips, np.int64), np.asarray(label, np.int64))


class ClassifierRunner:
    """A pixel-space classifier ONNX ([N, C, H, W] in [0, 1] -> logits [N, K])."""

    def __init__(self, path: Path, *, threads: int | None = None) -> None:
        from ..engine.session import SessionBuilder

        self.session = SessionBuilder.cpu(threads).build(path).session
        self.input = self.session.get_inputs()[0].name

    def logits(self, images: np.ndarray, *, batch: int = 32) -> np.ndarray:
        run = self.session.run
        out = [run(None, {self.input: np.ascontiguousarray(images[i:i + batch], np.float32)})[0]
               for i in range(0, len(images), batch)]
        return np.concatenate(out)


def label_consistency(classifier: ClassifierRunner, images: np.ndarray, kappas: Sequence[float],
                      *, copies: int, seed: int) -> np.ndarray:
    """Figure 2: for each kappa, the fraction of noisy copies x + N(0,1) * kappa whose label is
    the label of x itself (averaged over images and copies). Returns [len(kappas)]."""
    rng = np.random.default_rng(seed)
    clean = classifier.logits(images).argmax(axis=1)
    out = []
    for kappa in kappas:
        noisy = images[:, None] + rng.standard_normal((len(images), copies, *images.shape[1:]),
                                                     dtype=np.float32) * np.float32(kappa)
        labels = classifier.logits(noisy.reshape(-1, *images.shape[1:])).argmax(axis=1)
        out.append(float(np.mean(labels.reshape(len(images), copies) == clean[:, None])))
    return np.asarray(out)


def cached_prefix_scores(path: Path, key: str, images: np.ndarray,
                         score: Callable[[np.ndarray], ScoreSet]) -> ScoreSet:
    """``score(images)`` kept at ``path`` for a sequence whose shorter runs are prefixes of the
    longer ones (an attack's first n examples): a file holding more entries serves the first
    ``len(images)``, one holding fewer is extended by scoring only the rest, so runs with
    different ``--n`` share one file and never re-draw each other's (random) scores."""
    n = len(images)
    prefix = f"{SCORES_FORMAT}-{key}-"
    have: ScoreSet | None = None
    if path.is_file():
        with np.load(path) as z:
            stored = str(z["key"])
            if stored.startswith(prefix) and stored[len(prefix):].isdigit():
                have = ScoreSet(*(z[f] for f in ScoreSet._fields))
    count = 0 if have is None else len(have.flips)
    if have is not None and count >= n:
        return ScoreSet(*(np.asarray(a)[:n] for a in have))
    rest = score(images[count:])
    scores = rest if have is None else ScoreSet(
        *(np.concatenate([a, b]) for a, b in zip(have, rest)))
    _save_scores(path, f"{prefix}{n}", scores)
    return scores


def _save_scores(path: Path, key: str, scores: ScoreSet) -> None:
    """``scores`` and their ``key`` in one npz, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        np.savez(tmp, key=np.array(key), **scores._asdict())


def cached_scores(path: Path | None, key: str, compute: Callable[[], ScoreSet]) -> ScoreSet:
    """``compute()`` once; with a ``path`` the result is kept there, reused when ``key``
    matches."""
    key = f"{SCORES_FORMAT}-{key}"
    if path is not None and path.is_file():
        with np.load(path) as z:
            if str(z["key"]) == key:
                return ScoreSet(*(z[f] for f in ScoreSet._fields))
    scores = compute()
    if path is not None:
        _save_scores(path, key, scores)
    return scores
