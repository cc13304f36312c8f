"""The paper's evaluation, end to end, for one classifier:

classifier (torch) -> classifier ONNX -> detector ONNX -> thresholds from clean calibration
images (fpr 0.05 per score) -> attacks on evaluation images -> detector on the adversarial
examples and on the SAME clean images -> one row of Table 1 per attack (:mod:`.metrics`).

:func:`evaluate` is the core and takes arrays (any pools of images); :mod:`.pipeline`
wires it to the shared datasets and the zoo models.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from .._atomic import atomic_path
from ..export.graph import DetectorConfig, build_detector, load_onnx, save_onnx, with_thresholds
from .attacks import AdversarialSet, AttackSpec, ImagePool, generate
from .metrics import AttackMetrics, ScoreSet, attack_metrics
from .scoring import ClassifierRunner, DetectorRunner, cached_scores, label_consistency

__all__ = ["ArrayPool", "Classifier", "EvaluationResult", "FigureData", "evaluate"]

DETECTOR_BATCH = 4


class ArrayPool:
    """An :class:`ImagePool` over arrays already in memory."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self._images = np.ascontiguousarray(images, dtype=np.float32)
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def images(self, positions: Sequence[int]) -> np.ndarray:
        return self._images[np.asarray(positions, dtype=np.int64)]


@dataclass(frozen=True)
class Classifier:
    """A torch classifier on NORMALISED input and how to normalise: what the zoo provides."""

    module: Any
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_shape: tuple[int, int, int]
    classes: tuple[int, ...]  # the dataset's class indices (targets are drawn from these)

    def fingerprint(self) -> str:
        from ..export.torch_export import state_dict_digest

        h = hashlib.sha256(json.dumps([self.mean, self.std, self.input_shape]).encode())
        return state_dict_digest(self.module, h).hexdigest()[:12]


class FigureData(NamedTuple):
    kappas: np.ndarray  # [k] noise scales of Figure 2
    consistency: dict[str, np.ndarray]  # "clean" and each attack -> [k]
    epsilons: dict[str, float | None]  # attack -> epsilon (BIM budgets for Figure 2b)
    logits: dict[str, np.ndarray]  # Figure 3: clean, clean_noisy, adversarial, adversarial_noisy
    logit_kappa: float


class EvaluationResult(NamedTuple):
    threshold1: float
    threshold2: float
    calibration_images: int
    calibration_rates: tuple[float, float, float]  # flagged by score1, score2, either
    rows: list[AttackMetrics]
    detector_path: Path  # the calibrated detector
    figures: FigureData | None


class _PositionScores:
    """Detector scores of pool images, computed once per position and kept in one npz."""

    def __init__(self, path: Path, key: str) -> None:
        self.path, self.key = path, key
        self.data: dict[int, tuple[float, float, int]] = {}
        if path.is_file():
            with np.load(path) as z:
                if str(z["key"]) == key:
                    for p, a, b, c in zip(z["positions"], z["score1_max"], z["score2_max"],
                                          z["label"]):
                        self.data[int(p)] = (float(a), float(b), int(c))

    def get(self, positions: np.ndarray, pool: ImagePool, runner: DetectorRunner,
            progress: bool) -> ScoreSet:
        missing = [int(p) for p in positions if int(p) not in self.data]
        for start in range(0, len(missing), 32):
            part = missing[start:start + 32]
            s = runner.score(pool.images(part), progress=progress, desc="detect clean")
            for p, a, b, c in zip(part, s.score1_max, s.score2_max, s.label):
                self.data[p] = (float(a), float(b), int(c))
            self._save()
        rows = np.array([self.data[int(p)] for p in positions], dtype=np.float64).reshape(-1, 3)
        return ScoreSet(rows[:, 0], rows[:, 1], rows[:, 2].astype(np.int64))

    def _save(self) -> None:
        keys = sorted(self.data)
        vals = np.array([self.data[k] for k in keys], dtype=np.float64).reshape(-1, 3)
        with atomic_path(self.path) as tmp:
            np.savez(tmp, key=np.array(self.key), positions=np.array(keys, np.int64),
                     score1_max=vals[:, 0], score2_max=vals[:, 1],
                     label=vals[:, 2].astype(np.int64))


def _score_pool(runner: DetectorRunner, pool: ImagePool, *, chunk: int, progress: bool,
                desc: str) -> ScoreSet:
    parts = [runner.score(pool.images(range(s, min(s + chunk, len(pool)))))
             for s in _progress(range(0, len(pool), chunk), progress, desc)]
    return ScoreSet(*(np.concatenate(v) for v in zip(*parts)))


def _attack_module(module: Any) -> Any:
    """A channels-last copy of ``module`` for the attacks' forward and backward passes: oneDNN's
    NHWC convolutions make EfficientNet-Lite0's backward pass about 1.5x faster on CPU (measured
    at batch 16, 224x224). Same weights, so the cached ONNX export and fingerprints still hold."""
    import copy

    import torch

    return copy.deepcopy(module).to(memory_format=torch.channels_last).eval()


def _progress(it: Any, progress: bool, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(it, desc=desc, disable=not progress)


def evaluate(
    classifier: Classifier,
    *,
    calibration: ImagePool,
    pool: ImagePool,
    attacks: Sequence[AttackSpec],
    work_dir: Path,
    kappas: Sequence[float],
    n: int = 100,
    fpr: float = 0.05,
    seed: int = 0,
    figure_images: int = 4,
    figure_copies: int = 3,
    figure_kappas: Sequence[float] = tuple(np.geomspace(0.003, 0.3, 8)),
    progress: bool = True,
    classifier_onnx: Path | None = None,
    on_row: Callable[[EvaluationResult], None] | None = None,
) -> EvaluationResult:
    """Run the whole protocol; every intermediate (ONNX files, adversarial sets, scores) is
    cached under ``work_dir`` so an interrupted run resumes. ``on_row`` is called with the
    partial result after every attack (to write the table as it grows). ``classifier_onnx``:
    an already exported pixel-space ONNX of the same classifier, used instead of exporting."""
    import foolbox as fb

    from ..calibration.thresholds import achieved_rates, per_score_thresholds
    from ..export.torch_export import torch_to_onnx

    work_dir.mkdir(parents=True, exist_ok=True)
    fp = classifier.fingerprint()
    classifier_path = classifier_onnx or work_dir / f"classifier-{fp}.onnx"
    if not classifier_path.is_file():
        torch_to_onnx(classifier.module, classifier_path, input_shape=classifier.input_shape,
                      mean=classifier.mean, std=classifier.std)
    config = DetectorConfig(kappas=tuple(float(k) for k in kappas), noise="graph",
                            seed=float(seed), batch=DETECTOR_BATCH)
    det_key = f"{fp}-{hashlib.sha256(repr(config).encode()).hexdigest()[:8]}"
    detector_path = work_dir / f"detector-{det_key}.onnx"
    if not detector_path.is_file():
        save_onnx(build_detector(classifier_path, config), detector_path)
    runner = DetectorRunner(detector_path)

    calib = cached_scores(work_dir / f"calibration-scores-{det_key}-{len(calibration)}.npz",
                          f"{det_key}-{len(calibration)}",
                          lambda: _score_pool(runner, calibration, chunk=32, progress=progress,
                                              desc="calibration"))
    t1, t2 = per_score_thresholds(calib.score1_max, calib.score2_max, fpr=fpr)
    rates = achieved_rates(calib.score1_max, calib.score2_max, t1, t2)
    calibrated_path = work_dir / f"detector-{det_key}-calibrated.onnx"
    save_onnx(with_thresholds(load_onnx(detector_path), t1, t2, {
        "calibrated": True, "mode": "per-score", "fpr": fpr, "images": len(calibration),
        "source": "rpdetect.evaluation (clean calibration split)"}), calibrated_path)

    fmodel = fb.PyTorchModel(_attack_module(classifier.module), bounds=(0, 1), preprocessing=dict(
        mean=list(classifier.mean), std=list(classifier.std), axis=-3))
    clean_scores = _PositionScores(work_dir / f"clean-scores-{det_key}.npz", det_key)
    rows: list[AttackMetrics] = []
    want_figures = figure_images > 0
    figure_runner = ClassifierRunner(classifier_path) if want_figures else None
    consistency: dict[str, np.ndarray] = {}
    fig_logits: dict[str, np.ndarray] = {}
    result = EvaluationResult(t1, t2, len(calibration), tuple(rates), rows, calibrated_path, None)
    for spec in attacks:
        adv = generate(fmodel, pool, spec, n=n, classes=classifier.classes, seed=seed,
                       cache_file=work_dir / f"{spec.name}-{spec.params_hash(fp)}.npz",
                       cache_key=fp, progress=progress)
        used_pos = adv.successful_positions[:n]
        adv_images = adv.adversarial[:n]
        adv_scores = cached_scores(
            work_dir / f"{spec.name}-{spec.params_hash(fp)}-scores-{det_key}.npz",
            f"{det_key}-{len(used_pos)}",
            lambda: runner.score(adv_images, progress=progress, desc=f"detect {spec.name}"))
        clean = clean_scores.get(used_pos, pool, runner, progress)
        attempted = _attempted_until(adv, n)
        rows.append(attack_metrics(
            spec.name, clean=clean, adversarial=adv_scores, threshold1=t1, threshold2=t2,
            attempted=attempted, failed=attempted - len(used_pos),
            l2=adv.l2[adv.success][:n]))
        if want_figures and figure_runner is not None and len(used_pos):
            m = min(figure_images, len(used_pos))
            if "clean" not in consistency:
                consistency["clean"] = label_consistency(
                    figure_runner, pool.images(used_pos[:m]), figure_kappas,
                    copies=figure_copies, seed=seed)
            consistency[spec.name] = label_consistency(
                figure_runner, adv_images[:m], figure_kappas, copies=figure_copies,
                seed=seed)
            if not fig_logits:
                fig_logits = _figure3_logits(figure_runner, pool.images(used_pos[:1])[0],
                                             adv_images[0], float(max(kappas)), seed)
        figures = FigureData(np.asarray(figure_kappas), dict(consistency),
                             {s.name: s.epsilon for s in attacks if s.kind == "bim-l2"},
                             fig_logits, float(max(kappas))) if want_figures else None
        result = result._replace(rows=list(rows), figures=figures)
        if on_row is not None:
            on_row(result)
    return result


def _attempted_until(adv: AdversarialSet, n: int) -> int:
    """Attacked images up to and including the n-th success (all of them if fewer succeeded)."""
    hits = np.flatnonzero(adv.success)
    return int(hits[n - 1] + 1) if len(hits) >= n else int(len(adv.success))


def _figure3_logits(runner: ClassifierRunner, clean: np.ndarray, adversarial: np.ndarray,
                    kappa: float, seed: int) -> dict[str, np.ndarray]:
    noise = np.random.default_rng(seed).standard_normal(clean.shape, dtype=np.float32)
    x = np.stack([clean, clean + noise * kappa, adversarial, adversarial + noise * kappa])
    z = runner.logits(x)
    return {"clean": z[0], "clean_noisy": z[1], "adversarial": z[2], "adversarial_noisy": z[3]}

