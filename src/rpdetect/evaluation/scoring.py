"""Run the detector ONNX (and the bare classifier ONNX) on arrays of images with ONNX Runtime,
with results cached on disk by a key the caller chooses."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .metrics import ScoreSet

__all__ = ["DetectorRunner", "ClassifierRunner", "cached_scores", "label_consistency"]


def _session(path: Path, threads: int | None) -> object:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class DetectorRunner:
    """A detector file on ONNX Runtime's CPU provider; ``score`` pads the last batch."""

    def __init__(self, path: Path, *, threads: int | None = None) -> None:
        self.session = _session(path, threads)
        self.batch = int(self.session.get_inputs()[0].shape[0])  # type: ignore[attr-defined]

    def score(self, images: np.ndarray, *, progress: bool = False, desc: str = "detect"
              ) -> ScoreSet:
        from tqdm import tqdm

        s1, s2, label = [], [], []
        names = ["score1_max", "score2_max", "label"]
        for start in tqdm(range(0, len(images), self.batch), desc=desc, disable=not progress,
                          unit="batch"):
            x = np.ascontiguousarray(images[start:start + self.batch], dtype=np.float32)
            k = len(x)
            if k < self.batch:
                x = np.concatenate([x, np.repeat(x[-1:], self.batch - k, axis=0)])
            a, b, c = self.session.run(names, {"image": x})  # type: ignore[attr-defined]
            s1.append(a[:k]), s2.append(b[:k]), label.append(c[:k])
        if not s1:
            return ScoreSet(np.zeros(0, np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
        return ScoreSet(np.concatenate(s1), np.concatenate(s2), np.concatenate(label))


class ClassifierRunner:
    """A pixel-space classifier ONNX ([N, C, H, W] in [0, 1] -> logits [N, K])."""

    def __init__(self, path: Path, *, threads: int | None = None) -> None:
        self.session = _session(path, threads)
        self.input = self.session.get_inputs()[0].name  # type: ignore[attr-defined]

    def logits(self, images: np.ndarray, *, batch: int = 32) -> np.ndarray:
        out = [self.session.run(None, {self.input: np.ascontiguousarray(  # type: ignore[attr-defined]
            images[i:i + batch], dtype=np.float32)})[0] for i in range(0, len(images), batch)]
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


def cached_scores(path: Path | None, key: str, compute: Callable[[], ScoreSet]) -> ScoreSet:
    """``compute()`` once; with a ``path`` the result is kept there (reused when ``key`` matches)."""
    if path is not None and path.is_file():
        with np.load(path) as z:
            if str(z["key"]) == key:
                return ScoreSet(z["score1_max"], z["score2_max"], z["label"])
    scores = compute()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, key=np.array(key), score1_max=scores.score1_max,
                 score2_max=scores.score2_max, label=scores.label)
        os.replace(tmp, path)
    return scores
