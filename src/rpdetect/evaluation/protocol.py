"""The paper's evaluation, end to end, for one classifier:

classifier (torch) -> classifier ONNX -> detector ONNX -> thresholds from clean calibration
images, for every rule: the paper's (fpr 0.05 per score) and the default combined rule at two
operating points (the paper rule's own combined rate on the calibration images, and ``fpr``) ->
attacks on evaluation images -> detector on the adversarial examples and on the SAME clean
images -> one row of Table 1 per attack and rule (:mod:`.metrics`), and ROC curves.

:func:`evaluate` is the core and takes arrays (any pools of images); :mod:`.pipeline`
wires it to the shared datasets and the zoo models.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence, Union

import numpy as np

from ..calibration.thresholds import CalibrationMode, Rates, rule_rates, rule_thresholds
from .._atomic import atomic_path
from ..contract import DetectorConfig, Provenance, with_thresholds
from ..export.graph import build_detector, load_onnx, save_onnx
from ..export.quantize import QuantizeOptions
from ..rule import Thresholds
from ..errors import InputError, ModelError
from .attacks import BLACKBOX_ATTACKS, AdversarialSet, AttackSpec, ImagePool, generate
from .metrics import AttackMetrics, ScoreSet, attack_metrics, detection_metrics
from .scoring import (ClassifierRunner, DetectorRunner, cached_prefix_scores, cached_scores,
                      label_consistency)

__all__ = ["ArrayPool", "Classifier", "ClassifierFile", "EvaluationResult", "FigureData",
           "PreparedDetector", "RuleCalibration", "calibrate_modes", "calibration_scores",
           "evaluate", "prepare_detector", "roc_curve", "table_rules"]

PAPER_RULE = "paper"

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
    """A torch classifier on NORMALISED input and how to normalise (what the zoo provides): the
    white-box attacks get its gradients, the detector gets its ONNX export."""

    module: Any
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_shape: tuple[int, int, int]
    classes: tuple[int, ...]  # the dataset's class indices (targets are drawn from these)

    def fingerprint(self) -> str:
        from ..export.torch_export import state_dict_digest

        h = hashlib.sha256(json.dumps([self.mean, self.std, self.input_shape]).encode())
        return state_dict_digest(self.module, h).hexdigest()[:12]

    def onnx(self, work_dir: Path) -> Path:
        """Its pixel-space ONNX export (cached in ``work_dir`` by fingerprint)."""
        from ..export.torch_export import torch_to_onnx

        path = work_dir / f"classifier-{self.fingerprint()}.onnx"
        if not path.is_file():
            torch_to_onnx(self.module, path, input_shape=self.input_shape, mean=self.mean,
                          std=self.std)
        return path

    def whitebox_model(self) -> Any:
        """The Foolbox model the white-box attacks run on (pixel space, normalisation inside)."""
        import foolbox as fb

        return fb.PyTorchModel(_attack_module(self.module), bounds=(0, 1), preprocessing=dict(
            mean=list(self.mean), std=list(self.std), axis=-3))

    def gradient_module(self) -> tuple[Any, tuple[float, ...], tuple[float, ...]]:
        """(module, mean, std): the torch module attacks that know the detector differentiate,
        on input normalised by mean and std."""
        return _attack_module(self.module), self.mean, self.std


@dataclass(frozen=True)
class ClassifierFile:
    """A classifier known only as an ONNX file ([N, C, H, W] pixels in [0, 1] -> [N, K]
    logits): black-box attacks query it through ONNX Runtime; white-box ones run on its graph
    interpreted in torch (or, with ``attack_target="int8"``, its INT8 detector's classifier's)."""

    path: Path
    input_shape: tuple[int, int, int]
    classes: tuple[int, ...]

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        with Path(self.path).open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()[:12]

    def onnx(self, work_dir: Path) -> Path:
        return Path(self.path)

    def whitebox_model(self) -> Any:
        """The Foolbox model white-box attacks run on: the file's graph interpreted in torch
        (:func:`.quantized_twin.twin_from_onnx`); InputError naming an operator it lacks."""
        import foolbox as fb

        return fb.PyTorchModel(self._twin, bounds=(0, 1))

    def gradient_module(self) -> tuple[Any, tuple[float, ...], tuple[float, ...]]:
        """(module, mean, std) as :meth:`Classifier.gradient_module`: the file's graph
        interpreted in torch on pixels (mean 0, std 1); InputError naming an operator it
        lacks."""
        c = self.input_shape[0]
        return self._twin, (0.0,) * c, (1.0,) * c

    @functools.cached_property
    def _twin(self) -> Any:
        """The file read and interpreted once (it has no parameters to share state through)."""
        from .quantized_twin import twin_from_onnx

        try:
            return twin_from_onnx(self.path)
        except ModelError as exc:
            raise InputError(
                f"{self.path}: white-box attacks run on the file's graph interpreted in torch, "
                f"and {exc}; give the classifier as a torch module (--torch pkg.module:factory) "
                f"or choose black-box attacks ({', '.join(BLACKBOX_ATTACKS)})") from exc


TargetClassifier = Union[Classifier, ClassifierFile]


def _attack_model(classifier: TargetClassifier, spec: AttackSpec, classifier_path: Path,
                  models: dict[str, Any], *, int8_detector: Path | None = None) -> Any:
    """The model ``spec`` attacks: the Foolbox model (white-box) or the ONNX file run by ONNX
    Runtime (black-box), each made once. ``int8_detector``: attack that detector's INT8
    classifier instead, white-box through its torch twin (:mod:`.quantized_twin`), black-box
    through ONNX Runtime."""
    kind = "blackbox" if spec.blackbox else "whitebox"
    if kind not in models:
        if spec.blackbox:
            from ..engine.session import SessionBuilder
            from .blackbox import OnnxClassifier

            path = classifier_path
            if int8_detector is not None:
                from ..export.graph import extract_classifier

                path = int8_detector.with_name(int8_detector.stem + "-classifier.onnx")
                if not path.is_file():
                    save_onnx(extract_classifier(load_onnx(int8_detector)), path)
            models[kind] = OnnxClassifier(SessionBuilder.cpu().build(path).session,
                                          input_shape=classifier.input_shape)
        elif int8_detector is not None:
            import foolbox as fb

            from .quantized_twin import twin_from_detector

            models[kind] = fb.PyTorchModel(twin_from_detector(int8_detector), bounds=(0, 1))
        else:
            models[kind] = classifier.whitebox_model()
    return models[kind]


class FigureData(NamedTuple):
    kappas: np.ndarray  # [k] noise scales of Figure 2
    consistency: dict[str, np.ndarray]  # "clean" and each attack -> [k]
    epsilons: dict[str, float | None]  # attack -> epsilon (BIM budgets for Figure 2b)
    logits: dict[str, np.ndarray]  # Figure 3: clean, clean_noisy, adversarial, adversarial_noisy
    logit_kappa: float


class RuleCalibration(NamedTuple):
    """One rule's thresholds from the clean calibration images, and the file that holds them."""

    mode: CalibrationMode
    fpr: float  # the target rate it was calibrated for
    thresholds: Thresholds
    rates: Rates  # what it flags on the calibration images
    detector_path: Path


class EvaluationResult(NamedTuple):
    rules: dict[str, RuleCalibration]  # "paper", then the default rule at two operating points
    calibration_images: int
    rows: list[AttackMetrics]
    figures: FigureData | None
    roc: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]  # family -> attack -> (fpr, tpr)

    @property
    def detector_path(self) -> Path:
        """The detector calibrated with the paper's rule."""
        return self.rules[PAPER_RULE].detector_path


class _PositionScores:
    """Detector scores of pool images, computed once per position and kept in one npz."""

    def __init__(self, path: Path, key: str) -> None:
        self.path, self.key = path, f"v2-{key}"
        self.data: dict[int, tuple[np.ndarray, ...]] = {}
        if path.is_file():
            with np.load(path) as z:
                if str(z["key"]) == self.key:
                    for i, p in enumerate(z["positions"]):
                        self.data[int(p)] = tuple(z[f][i] for f in ScoreSet._fields)

    def get(self, positions: np.ndarray, pool: ImagePool, runner: DetectorRunner,
            progress: bool) -> ScoreSet:
        missing = [int(p) for p in positions if int(p) not in self.data]
        for start in range(0, len(missing), 32):
            part = missing[start:start + 32]
            s = runner.score(pool.images(part), progress=progress, desc="detect clean")
            for i, p in enumerate(part):
                self.data[p] = tuple(v[i] for v in s)
            self._save()
        rows = [self.data[int(p)] for p in positions]
        if not rows:
            n = len(runner.detector.kappas)
            return ScoreSet(np.zeros((0, n)), np.zeros((0, n)), np.zeros(0, np.int64),
                            np.zeros(0, np.int64))
        return ScoreSet(*(np.stack(v) for v in zip(*rows)))

    def _save(self) -> None:
        keys = sorted(self.data)
        cols = {f: np.stack([self.data[k][i] for k in keys])
                for i, f in enumerate(ScoreSet._fields)}
        with atomic_path(self.path) as tmp:
            np.savez(tmp, key=np.array(self.key), positions=np.array(keys, np.int64), **cols)


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


class PreparedDetector(NamedTuple):
    """The uncalibrated detector of one classifier and its clean calibration scores."""

    path: Path
    key: str  # names its files (classifier fingerprint, detector config, precision)
    fingerprint: str  # the classifier's
    classifier_path: Path
    runner: DetectorRunner
    calibration: ScoreSet


def quantization_sample(size: int, count: int, *, seed: int = 0) -> list[int]:
    """``count`` positions of a pool of ``size`` calibration images, a seeded random sample in
    increasing order: the INT8 activation ranges come from these. (A split's calibration part
    is stored in tar order, which is class order: its first 100 images are one or two classes,
    and ranges taken from them clip the activations of the other classes.)"""
    if count >= size:
        return list(range(size))
    return sorted(int(i) for i in np.random.default_rng(seed).choice(size, count, replace=False))


def _attack_scores(work_dir: Path, spec: AttackSpec, fingerprint: str, used_pos: np.ndarray,
                   images: np.ndarray, detector: PreparedDetector, progress: bool) -> ScoreSet:
    """``detector``'s scores of one attack's adversarial examples, cached by both (the first n
    of a larger run's: one file for every ``--n``)."""
    return cached_prefix_scores(
        work_dir / f"{spec.name}-{spec.params_hash(fingerprint)}-scores-{detector.key}.npz",
        detector.key, images[:len(used_pos)],
        lambda x: detector.runner.score(x, progress=progress, desc=f"detect {spec.name}"))


def prepare_detector(
    classifier: TargetClassifier,
    *,
    calibration: ImagePool,
    work_dir: Path,
    kappas: Sequence[float],
    seed: int = 0,
    progress: bool = True,
    classifier_onnx: Path | None = None,
    precision: str = "fp32",
    quantize: QuantizeOptions = QuantizeOptions(),
) -> PreparedDetector:
    """Export (or reuse) the detector of ``classifier`` and score the calibration images with
    it; both cached in ``work_dir``. The rest of :func:`evaluate`'s arguments."""
    work_dir.mkdir(parents=True, exist_ok=True)
    fp = classifier.fingerprint()
    classifier_path = classifier_onnx or classifier.onnx(work_dir)
    config = DetectorConfig(kappas=tuple(float(k) for k in kappas), noise="graph",
                            seed=float(seed), batch=DETECTOR_BATCH)
    det_key = f"{fp}-{hashlib.sha256(repr(config).encode()).hexdigest()[:8]}"
    sample = quantization_sample(len(calibration), quantize.max_images)
    if precision == "int8":  # keyed by how and on which images it is quantized
        det_key += "-int8-" + hashlib.sha256(
            f"{quantize.cache_key()}{sample!r}".encode()).hexdigest()[:8]
    detector_path = work_dir / f"detector-{det_key}.onnx"
    if not detector_path.is_file():
        if precision == "int8":
            from ..export.quantize import build_int8_detector

            images = calibration.images(sample)
            save_onnx(build_int8_detector(classifier_path, config, images, options=quantize),
                      detector_path)
        else:
            save_onnx(build_detector(classifier_path, config), detector_path)
    runner = DetectorRunner(detector_path)
    calib = calibration_scores(runner, calibration, work_dir, det_key, progress=progress)
    return PreparedDetector(detector_path, det_key, fp, classifier_path, runner, calib)


def calibration_scores(runner: DetectorRunner, calibration: ImagePool, work_dir: Path,
                       det_key: str, *, progress: bool = False) -> ScoreSet:
    """The detector's (``runner``, keyed ``det_key``) scores of the calibration images, cached
    in ``work_dir`` as :func:`prepare_detector` caches them."""
    n = len(calibration)
    return cached_scores(work_dir / f"calibration-scores-{det_key}-{n}.npz", f"{det_key}-{n}",
                         lambda: _score_pool(runner, calibration, chunk=32, progress=progress,
                                             desc="calibration"))


def evaluate(
    classifier: TargetClassifier,
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
    mode: CalibrationMode | str = CalibrationMode.COMBINED,
    progress: bool = True,
    classifier_onnx: Path | None = None,
    on_row: Callable[[EvaluationResult], None] | None = None,
    precision: str = "fp32",
    quantize: QuantizeOptions = QuantizeOptions(),
    positives: str = "attack",
    attack_target: str = "fp32",
) -> EvaluationResult:
    """Run the whole protocol; every intermediate (ONNX files, adversarial sets, scores) is
    cached under ``work_dir`` so an interrupted run resumes. ``classifier``: a torch
    :class:`Classifier` (white-box and black-box attacks) or a :class:`ClassifierFile`
    (black-box attacks only). ``on_row`` is called with the partial result after every attack
    (to write the table as it grows). ``classifier_onnx``: an already exported pixel-space ONNX
    of the same torch classifier, used instead of exporting. ``mode``: the rule compared with
    the paper's (``rpdetect.calibration.thresholds``). ``precision="int8"``: the detector's
    classifier quantized (``rpdetect.export.quantize``) as ``quantize`` says, its ranges from
    ``quantize.max_images`` calibration images (:func:`quantization_sample`); the attacks
    (cached by the classifier, not the detector) are those of the float32 run.
    ``positives="deployed"``: an adversarial example counts only where the detector's own
    classifier (for int8, the quantized one) misclassifies it too; the others join the failed
    attacks (an FP32 minimal attack sits on the FP32 boundary, which the INT8 classifier has
    moved). ``positives="both"``: only where the FP32 *and* the INT8 detector's classifiers
    misclassify it, the same positives whichever ``precision`` is evaluated, so the two
    detectors are compared on the same examples (the other detector is prepared and its labels
    cached as its own run caches them). ``attack_target="int8"`` (with ``precision="int8"``):
    the attacks run on the INT8 detector's own classifier (:func:`_attack_model`), cached by
    that detector's key."""
    if attack_target not in ("fp32", "int8"):
        raise InputError(f"attack_target: expected fp32 or int8, got {attack_target!r}")
    if attack_target == "int8" and (precision != "int8" or positives == "both"):
        raise InputError("attack_target int8: needs precision int8 and positives attack or "
                         "deployed")
    prepared = prepare_detector(classifier, calibration=calibration, work_dir=work_dir,
                                kappas=kappas, seed=seed, progress=progress,
                                classifier_onnx=classifier_onnx, precision=precision,
                                quantize=quantize)
    twin = None  # positives="both": the detector of the other precision
    if positives == "both":
        twin = prepare_detector(classifier, calibration=calibration, work_dir=work_dir,
                                kappas=kappas, seed=seed, progress=progress,
                                classifier_onnx=classifier_onnx,
                                precision="int8" if precision == "fp32" else "fp32",
                                quantize=quantize)
    fp, det_key, runner, calib = (prepared.fingerprint, prepared.key, prepared.runner,
                                  prepared.calibration)
    classifier_path = prepared.classifier_path
    rules = calibrate_rules(calib, fpr=fpr, mode=CalibrationMode.parse(mode),
                            detector=load_onnx(prepared.path), work_dir=work_dir, key=det_key)

    models: dict[str, Any] = {}
    clean_scores = _PositionScores(work_dir / f"clean-scores-{det_key}.npz", det_key)
    rows: list[AttackMetrics] = []
    want_figures = figure_images > 0
    figure_runner = ClassifierRunner(classifier_path) if want_figures else None
    consistency: dict[str, np.ndarray] = {}
    fig_logits: dict[str, np.ndarray] = {}
    thresholds = {name: r.thresholds for name, r in rules.items()}
    families = {PAPER_RULE: CalibrationMode.PER_SCORE, CalibrationMode.parse(mode).value:
                CalibrationMode.parse(mode)}
    roc: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {f: {} for f in families}
    result = EvaluationResult(rules, len(calibration), rows, None, roc)
    int8_detector = prepared.path if attack_target == "int8" else None
    attack_fp = fp if int8_detector is None else det_key  # what the attacks are cached by
    for spec in attacks:
        adv = generate(_attack_model(classifier, spec, classifier_path, models,
                                     int8_detector=int8_detector),
                       pool, spec, n=n, classes=classifier.classes, seed=seed,
                       cache_file=work_dir / f"{spec.name}-{spec.params_hash(attack_fp)}.npz",
                       cache_key=attack_fp, progress=progress)
        used_pos = adv.successful_positions[:n]
        adv_images = adv.adversarial[:n]
        adv_scores = _attack_scores(work_dir, spec, attack_fp, used_pos, adv_images, prepared,
                                    progress)
        clean = clean_scores.get(used_pos, pool, runner, progress)
        attempted = _attempted_until(adv, n)
        l2, queries = adv.l2[adv.success][:n], adv.queries[adv.success][:n]
        if positives in ("deployed", "both"):
            truth = np.asarray(pool.labels)[used_pos]
            keep = adv_scores.label != truth
            if twin is not None:
                keep &= _attack_scores(work_dir, spec, fp, used_pos, adv_images, twin,
                                       progress).label != truth
            adv_scores = ScoreSet(*(np.asarray(v)[keep] for v in adv_scores))
            clean = ScoreSet(*(np.asarray(v)[keep] for v in clean))
            used_pos, l2, queries = used_pos[keep], l2[keep], queries[keep]
        rows.append(attack_metrics(
            spec.name, clean=clean, adversarial=adv_scores, rules=thresholds,
            attempted=attempted, failed=attempted - len(used_pos), l2=l2, queries=queries))
        for family, family_mode in families.items():
            if len(used_pos):
                roc[family][spec.name] = roc_curve(family_mode, calib, clean, adv_scores)
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


def table_rules(score1: np.ndarray, score2: np.ndarray, flips: np.ndarray, *, fpr: float,
                mode: CalibrationMode) -> dict[str, tuple[CalibrationMode, float, Thresholds]]:
    """Table 1's rules from clean calibration scores, by name -> (mode, target rate,
    thresholds): the paper's rule at ``fpr`` per score, and ``mode`` at two operating points:
    the combined rate the paper's rule reached on these images (the same budget), and ``fpr``."""
    stats = (score1, score2, flips)
    paper = rule_thresholds(CalibrationMode.PER_SCORE, *stats, fpr=fpr)
    paper_rate = rule_rates(paper, *stats).combined
    return {PAPER_RULE: (CalibrationMode.PER_SCORE, fpr, paper),
            f"{mode.value} @ paper's rate": (mode, paper_rate,
                                             rule_thresholds(mode, *stats, fpr=paper_rate)),
            f"{mode.value} @ {fpr:g}": (mode, fpr, rule_thresholds(mode, *stats, fpr=fpr))}


def calibrate_rules(calib: ScoreSet, *, fpr: float, mode: CalibrationMode,
                    detector: Any, work_dir: Path, key: str) -> dict[str, RuleCalibration]:
    """:func:`table_rules` on ``calib``, each written into a calibrated copy of ``detector``."""
    return {name: _calibrated(name, m, rate, t, calib, detector, work_dir, key)
            for name, (m, rate, t) in table_rules(calib.score1, calib.score2, calib.flips,
                                                  fpr=fpr, mode=mode).items()}


def calibrate_modes(calib: ScoreSet, *, fpr: float, detector: Any, work_dir: Path, key: str
                    ) -> dict[str, RuleCalibration]:
    """Every rule the detector offers (:class:`CalibrationMode`; the paper's named "paper"),
    each calibrated at ``fpr`` and written into a calibrated copy of ``detector``."""
    stats = (calib.score1, calib.score2, calib.flips)
    out = {}
    for m in CalibrationMode:
        name = PAPER_RULE if m is CalibrationMode.PER_SCORE else m.value
        out[name] = _calibrated(f"{name} @ {fpr:g}", m, fpr,
                                rule_thresholds(m, *stats, fpr=fpr), calib, detector,
                                work_dir, key)
    return out


def _calibrated(name: str, mode: CalibrationMode, rate: float, t: Thresholds, calib: ScoreSet,
                detector: Any, work_dir: Path, key: str) -> RuleCalibration:
    stats = (calib.score1, calib.score2, calib.flips)
    slug = name.replace(" @ ", "-").replace("'", "").replace(" ", "-")
    path = work_dir / f"detector-{key}-{slug}.onnx"
    provenance = Provenance(calibrated=True, mode=mode.value, fpr=rate, n_images=len(calib),
                            source="rpdetect.evaluation (clean calibration split)")
    save_onnx(with_thresholds(detector, t.threshold1, t.threshold2, provenance,
                              threshold3=t.threshold3), path)
    return RuleCalibration(mode, rate, t, rule_rates(t, *stats), path)


def roc_curve(mode: CalibrationMode, calib: ScoreSet, clean: ScoreSet, adversarial: ScoreSet,
              *, points: int = 41, max_fpr: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """The rule family ``mode`` calibrated on ``calib`` at target rates from 0 to ``max_fpr``:
    (clean false-positive rate, detection rate) measured on ``clean`` / ``adversarial``."""
    fpr, tpr = [], []
    for target in np.linspace(0.0, max_fpr, points):
        t = rule_thresholds(mode, calib.score1, calib.score2, calib.flips, fpr=float(target))
        m = detection_metrics(t.flags(clean.score1, clean.score2, clean.flips),
                              t.flags(adversarial.score1, adversarial.score2, adversarial.flips))
        fpr.append(m.fp / max(m.fp + m.tn, 1))
        tpr.append(m.recall)
    return np.asarray(fpr), np.asarray(tpr)


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

