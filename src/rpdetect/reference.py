"""The paper's equations in plain numpy: the readable statement of the method and the test oracle.

Griveau, Jiang, Melnyk, *Adversarial Examples Detection Using Random Pixel-Space Perturbation*.
For an image x in pixel space and noise scales kappa_1..kappa_n:

    x~_i      = x + N(0, 1) * kappa_i                                   (noisy copies)
    d_i       = Z(x) - Z(x~_i)                                          (logit differences)
    score1_i  = std_k(d_i)          population std over the K classes   (Eq. 5)
    score2_i  = || softmax Z(x) - softmax Z(x~_i) ||_1                   (Eq. 6)
    flipped_i = argmax Z(x~_i) != argmax Z(x)                          (beyond the paper)
    flips     = sum_i flipped_i
    adversarial  <=>  any_i score1_i > t1_i  or  any_i score2_i > t2_i  or  flips > t3

The paper's rule is the case of equal t1_i (max_i score1_i > t1), equal t2_i and t3 = +inf;
``rpdetect.rule`` states the verdict for the graph, calibration and evaluation alike.

Everything here is computed in float64 and is independent of ONNX, so tests can compare the fused
detector graph against it.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

__all__ = [
    "default_kappas",
    "softmax",
    "noisy_copies",
    "score1",
    "score2",
    "flipped",
    "ReferenceResult",
    "reference_scores",
    "reference_detect",
]


# The paper's noise scales (Section 4): n = 10 copies, kappa = linspace(0.01, 0.1). Every default
# in rpdetect (export, its CLI, the evaluation presets) comes from these three numbers.
PAPER_N = 10
PAPER_KAPPA_MIN = 0.01
PAPER_KAPPA_MAX = 0.1


def default_kappas(n: int = PAPER_N, low: float = PAPER_KAPPA_MIN,
                   high: float = PAPER_KAPPA_MAX) -> np.ndarray:
    """The paper's noise scales: n values linearly spaced from ``low`` to ``high``."""
    return np.linspace(low, high, n, dtype=np.float64)


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def noisy_copies(
    image: np.ndarray, noise: np.ndarray, kappas: np.ndarray, *, clip: bool = False
) -> np.ndarray:
    """x~_i = x + noise_i * kappa_i for image [C, H, W] and noise [n, C, H, W] -> [n, C, H, W]."""
    kappas = np.asarray(kappas, dtype=np.float64).reshape(-1, 1, 1, 1)
    out = np.asarray(image, dtype=np.float64)[None] + np.asarray(noise, dtype=np.float64) * kappas
    return np.clip(out, 0.0, 1.0) if clip else out


def score1(z_clean: np.ndarray, z_noisy: np.ndarray) -> np.ndarray:
    """Eq. 5: population std over classes of Z(x) - Z(x~_i). z_clean [K], z_noisy [n, K] -> [n]."""
    d = np.asarray(z_clean, dtype=np.float64)[None, :] - np.asarray(z_noisy, dtype=np.float64)
    return d.std(axis=-1, ddof=0)


def score2(z_clean: np.ndarray, z_noisy: np.ndarray) -> np.ndarray:
    """Eq. 6: L1 norm of softmax Z(x) - softmax Z(x~_i). z_clean [K], z_noisy [n, K] -> [n]."""
    return np.abs(softmax(z_clean)[None, :] - softmax(z_noisy)).sum(axis=-1)


def flipped(z_clean: np.ndarray, z_noisy: np.ndarray) -> np.ndarray:
    """Copies whose label differs from the clean label. z_clean [K], z_noisy [n, K] -> bool [n].
    Labels are the first maximum, as ONNX ArgMax and numpy argmax pick."""
    return np.asarray(z_noisy).argmax(axis=-1) != np.asarray(z_clean).argmax(axis=-1)


class ReferenceResult(NamedTuple):
    logits: np.ndarray  # [B, K] logits of the clean images
    label: np.ndarray  # [B]
    score1: np.ndarray  # [B, n]
    score2: np.ndarray  # [B, n]
    score1_max: np.ndarray  # [B]
    score2_max: np.ndarray  # [B]
    flipped: np.ndarray  # [B, n] bool
    flips: np.ndarray  # [B] int64
    is_adversarial: np.ndarray  # [B] bool


def reference_scores(
    z_clean: np.ndarray,
    z_noisy: np.ndarray,
    *,
    threshold1: float | np.ndarray = np.inf,
    threshold2: float | np.ndarray = np.inf,
    threshold3: float = np.inf,
) -> ReferenceResult:
    """Scores and verdicts from logits: z_clean [B, K], z_noisy [B, n, K]; thresholds one value
    or one per kappa ([n]), compared in float64 here."""
    z_clean = np.asarray(z_clean, dtype=np.float64)
    z_noisy = np.asarray(z_noisy, dtype=np.float64)
    s1 = np.stack([score1(zc, zn) for zc, zn in zip(z_clean, z_noisy)])
    s2 = np.stack([score2(zc, zn) for zc, zn in zip(z_clean, z_noisy)])
    s1_max, s2_max = s1.max(axis=1), s2.max(axis=1)
    fl = np.stack([flipped(zc, zn) for zc, zn in zip(z_clean, z_noisy)])
    flips = fl.sum(axis=1).astype(np.int64)
    t1 = np.broadcast_to(np.asarray(threshold1, dtype=np.float64), s1.shape[1:])
    t2 = np.broadcast_to(np.asarray(threshold2, dtype=np.float64), s2.shape[1:])
    return ReferenceResult(
        logits=z_clean,
        label=z_clean.argmax(axis=1),
        score1=s1,
        score2=s2,
        score1_max=s1_max,
        score2_max=s2_max,
        flipped=fl,
        flips=flips,
        is_adversarial=(s1 > t1).any(axis=1) | (s2 > t2).any(axis=1) | (flips > threshold3),
    )


def reference_detect(
    classifier: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    noise: np.ndarray,
    kappas: np.ndarray,
    *,
    threshold1: float | np.ndarray = np.inf,
    threshold2: float | np.ndarray = np.inf,
    threshold3: float = np.inf,
    clip: bool = False,
) -> ReferenceResult:
    """The whole method for images [B, C, H, W] and noise [B, n, C, H, W].

    ``classifier`` maps a batch of pixel-space images [N, C, H, W] to logits [N, K]; it is
    called once on the clean images and once per image on its noisy copies.
    """
    images = np.asarray(images)
    z_clean = np.asarray(classifier(images), dtype=np.float64)
    z_noisy = np.stack(
        [
            np.asarray(classifier(noisy_copies(img, nz, kappas, clip=clip)), dtype=np.float64)
            for img, nz in zip(images, noise)
        ]
    )
    return reference_scores(z_clean, z_noisy, threshold1=threshold1, threshold2=threshold2,
                            threshold3=threshold3)
