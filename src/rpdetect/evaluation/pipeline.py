"""One evaluation path for the paper's datasets and a user's own model: resolve the classifier
(a zoo preset, a torch module or an ONNX file), the calibration and evaluation images, the
kappas and the attacks, then :func:`.protocol.evaluate` and the report.

Nothing is written inside the repository or the installed package by default: caches go to
``--cache`` (default ``$XDG_CACHE_HOME/rpdetect/evaluate``, i.e. ``~/.cache/rpdetect/evaluate``),
results to ``--out`` (default ``<cache>/results/<name>``).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from ..errors import InputError
from ..export.quantize import QuantizeOptions
from ..calibration.thresholds import CalibrationMode
from .adaptive import AdaptiveEvaluation, AdaptiveSpec, adaptive_attacks, is_adaptive
from .attacks import ATTACKS, AttackSpec, blackbox_attacks
from .datasets import (
    FolderPool,
    Split,
    TarImages,
    TarPool,
    default_data_dir,
    heldaside_split,
    image_folder,
    imagenette_split,
    unlabelled_folder,
)
from .figures import roc_figure, write_figures
from .presets import PAPER_KAPPAS, PRESETS, Preset
from .protocol import Classifier, ClassifierFile, EvaluationResult, TargetClassifier, evaluate
from .report import write_adaptive_report, write_report

__all__ = ["EvaluationConfig", "EvaluationRun", "TorchSource", "attack_table",
           "default_cache_dir", "preset_split", "run_evaluation", "select_adaptive",
           "select_attacks"]

# White-box (Foolbox) attacks for a user's torch model, by image size: the CIFAR-10 settings
# below this side, the ImageNette ones (224x224) from it.
_WHITEBOX_TABLE_BY_SIDE = ((0, "cifar10"), (112, "imagenette"))


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/rpdetect/evaluate`` (``~/.cache/rpdetect/evaluate``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rpdetect" / "evaluate"


@dataclass(frozen=True)
class TorchSource:
    """A user's torch classifier: ``spec`` ``pkg.module:factory`` returning an nn.Module on
    NORMALISED input, its weights (a state_dict, loaded with ``weights_only=True``), the image
    shape and the normalisation it expects."""

    spec: str
    input_shape: tuple[int, int, int]
    weights: Path | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


@dataclass(frozen=True)
class EvaluationConfig:
    """What ``rpdetect evaluate`` was asked: either ``dataset`` (a preset) or a user's model
    (``classifier`` ONNX file or ``torch``) with ``calibration_images`` and ``images``."""

    dataset: str | None = None
    classifier: Path | None = None
    torch: TorchSource | None = None
    calibration_images: Path | None = None
    images: Path | None = None
    class_map: Path | None = None
    input_shape: tuple[int, int, int] | None = None  # ONNX files with symbolic C/H/W
    kappas: tuple[float, ...] | None = None  # default: the preset's, else the paper's
    n: int = 100
    attacks: tuple[str, ...] | None = None  # default: the table of the classifier's kind
    cache_dir: Path | None = None
    out_dir: Path | None = None
    data_dir: Path | None = None  # presets: the folder of the tars
    calib_limit: int | None = None  # use only the first N calibration images
    quick: bool = False  # a smoke run: n <= 5, 40 calibration images, few attack steps
    seed: int = 0
    fpr: float = 0.05
    figures: bool = True
    progress: bool = True
    command: str = ""
    precision: str = "fp32"  # "int8": the detector's classifier quantized (export.quantize)
    positives: str = "attack"  # "deployed": only examples the detector's classifier gets wrong;
    # "both": only those the FP32 and the INT8 classifiers both get wrong
    quantize_method: str = "minmax"  # int8: ONNX Runtime's range method
    quantize_head: str = "float"  # int8: the classifier's head kept float32, or "int8"
    quantize_stem: str = "int8"  # int8: the layer reading the image quantized, or "float"
    quantize_refine_steps: int = 0  # int8: quantization-aware refinement steps (export.refine)
    quantize_reduce_range: bool = False  # int8: 7-bit weights (export --reduce-range)
    attack_target: str = "fp32"  # the classifier the attacks run on: fp32, or (with
    # --precision int8) int8, the deployed INT8 classifier (evaluation.quantized_twin)
    eot: int | None = None  # adaptive attacks: noise draws per step (default: the spec's, 16)
    adaptive_steps: int | None = None  # adaptive attacks: steps (default: the spec's, 100)
    adaptive_target: str = "strictest"  # the thresholds adaptive PGD attacks, or a rule name
    adaptive_epsilons: tuple[float, ...] | None = None  # adaptive attacks' budgets (one norm)
    adaptive_keep: str = "last"  # adaptive PGD's answer where no iterate passed: last or best

    def __post_init__(self) -> None:
        models = [x for x in (self.dataset, self.classifier, self.torch) if x is not None]
        if len(models) != 1:
            raise InputError("evaluate: give exactly one of --dataset, --classifier, --torch")
        if self.dataset is not None:
            if self.dataset not in PRESETS:
                raise InputError(f"--dataset: expected one of {list(PRESETS)}, got "
                                 f"{self.dataset!r}")
            if self.images or self.calibration_images or self.class_map:
                raise InputError("--images/--calibration-images/--class-map are for your own "
                                 "model (--classifier or --torch), not --dataset")
        elif self.images is None or self.calibration_images is None:
            raise InputError("evaluate: your own model needs --calibration-images DIR (clean "
                             "images, any layout) and --images DIR (an ImageFolder tree)")
        if self.n < 1:
            raise InputError(f"--n: expected >= 1, got {self.n}")
        if self.precision not in ("fp32", "int8"):
            raise InputError(f"--precision: expected fp32 or int8, got {self.precision!r}")
        for flag, value in (("--quantize-head", self.quantize_head),
                            ("--quantize-stem", self.quantize_stem)):
            if value not in ("float", "int8"):
                raise InputError(f"{flag}: expected float or int8, got {value!r}")
        if self.quantize_refine_steps < 0:
            raise InputError(f"--quantize-refine-steps: expected >= 0, got "
                             f"{self.quantize_refine_steps}")
        if self.positives not in ("attack", "deployed", "both"):
            raise InputError(f"--positives: expected attack, deployed or both, got "
                             f"{self.positives!r}")
        if self.attack_target not in ("fp32", "int8"):
            raise InputError(f"--attack-target: expected fp32 or int8, got "
                             f"{self.attack_target!r}")
        if self.attack_target == "int8" and self.precision != "int8":
            raise InputError("--attack-target int8 attacks the INT8 detector's classifier: "
                             "add --precision int8")
        if self.attack_target == "int8" and self.positives == "both":
            raise InputError("--positives both compares the FP32 and INT8 detectors on the "
                             "FP32 attacks' examples; with --attack-target int8 use "
                             "--positives deployed (or attack)")
        if not 0 < self.fpr < 1:
            raise InputError(f"--fpr: expected a rate in (0, 1), got {self.fpr}")
        for flag, v in (("--eot", self.eot), ("--adaptive-steps", self.adaptive_steps)):
            if v is not None and v < 1:
                raise InputError(f"{flag}: expected >= 1, got {v}")
        if self.adaptive_epsilons is not None:
            bad = [e for e in self.adaptive_epsilons if not (math.isfinite(e) and e > 0)]
            if bad or not self.adaptive_epsilons:
                raise InputError(f"--adaptive-epsilons: expected positive budgets, got "
                                 f"{list(self.adaptive_epsilons)}")
            if not any(is_adaptive(a) for a in self.attacks or ()):
                raise InputError("--adaptive-epsilons: no adaptive attack asked in --attacks")
        if self.adaptive_keep not in ("last", "best"):
            raise InputError(f"--adaptive-keep: expected last or best, got "
                             f"{self.adaptive_keep!r}")
        if any(is_adaptive(a) for a in self.attacks or ()) and (
                self.precision != "fp32" or self.positives != "attack"):
            raise InputError("adaptive attacks are measured on the float32 detector; drop "
                             "--precision int8 / --positives deployed, or run them separately")
        rules = ("strictest", "paper", *(m.value for m in CalibrationMode
                                          if m is not CalibrationMode.PER_SCORE))
        if self.adaptive_target not in rules:
            raise InputError(f"--adaptive-target: expected one of {list(rules)}, got "
                             f"{self.adaptive_target!r}")


def attack_table(input_shape: Sequence[int], *, preset: Preset | None = None
                 ) -> dict[str, AttackSpec]:
    """Every attack a classifier of ``input_shape`` (C, H, W) can be evaluated with, by name:
    the preset's white-box attacks (for a user's model, the Table 1 settings for its image
    size; their gradients: the torch module's, or an ONNX file's graph interpreted in torch)
    and the black-box ones for its image size."""
    side = min(input_shape[1:])
    key = preset.name if preset is not None else [
        name for start, name in _WHITEBOX_TABLE_BY_SIDE if side >= start][-1]
    table: dict[str, AttackSpec] = {s.name: s for s in ATTACKS[key]}
    table.update(blackbox_attacks(input_shape))
    return table


def select_attacks(table: Mapping[str, AttackSpec], names: Sequence[str] | None, *,
                   whitebox: bool, quick: bool) -> list[AttackSpec]:
    """The attacks asked for (default: the white-box ones where ``whitebox``, else the
    black-box ones); InputError naming unknown ones and what is known."""
    if names:
        names = [n for n in names if not is_adaptive(n)]
        unknown = [n for n in names if n not in table]
        if unknown:
            raise InputError(f"--attacks: unknown for this classifier: {unknown}; known: "
                             f"{list(table)} and the adaptive ones {list(adaptive_attacks((3, 32, 32)))}")
        chosen = [table[n] for n in names]
        if not chosen:
            return []
    else:
        chosen = [s for s in table.values() if s.blackbox != whitebox]
    return [s.quick() if quick else s for s in chosen]


def select_adaptive(input_shape: Sequence[int], names: Sequence[str] | None, *,
                    quick: bool, eot: int | None = None, steps: int | None = None,
                    epsilons: Sequence[float] | None = None, keep: str = "last"
                    ) -> list[AdaptiveSpec]:
    """The adaptive attacks among ``names`` (:mod:`.adaptive`), with ``eot``, ``steps`` and
    ``epsilons`` where given and adaptive PGD's ``keep``; InputError for unknown ones (their
    gradients: the torch module's, or an ONNX file's graph interpreted in torch)."""
    asked = [n for n in names or () if is_adaptive(n)]
    if not asked:
        return []
    table = adaptive_attacks(input_shape)
    unknown = [n for n in asked if n not in table]
    if unknown:
        raise InputError(f"--attacks: unknown adaptive attacks {unknown}; known: {list(table)}")
    if epsilons is not None:
        norms = sorted({table[n].norm for n in asked})
        if len(norms) > 1:
            raise InputError(f"--adaptive-epsilons: {asked} mix norms {norms}; give the budgets "
                             "of one norm at a time")
        if norms == ["linf"] and max(epsilons) > 1:
            raise InputError(f"--adaptive-epsilons: L-inf budgets are in [0, 1] pixels "
                             f"(8/255 = 0.0314), got {max(epsilons)}")
    out = []
    for n in asked:
        spec = table[n]
        spec = dataclasses.replace(spec, eot=eot or spec.eot, steps=steps or spec.steps,
                                   epsilons=tuple(float(e) for e in epsilons or spec.epsilons),
                                   keep=keep if spec.kind == "adaptive-pgd" else spec.keep)
        out.append(spec.quick() if quick else spec)
    return out


class EvaluationRun(NamedTuple):
    """What :func:`run_evaluation` did: Table 1 (None when only adaptive attacks were asked),
    its attacks, the adaptive evaluation (None when none was asked) and the files written."""

    result: EvaluationResult | None
    specs: list[AttackSpec]
    adaptive: AdaptiveEvaluation | None
    written: list[Path]


def _zoo(name: str) -> Any:
    return importlib.import_module(f"rpdetect.zoo.{name}")


def preset_split(preset: Preset, tar: Path, seed: int) -> Split:
    if preset.split == "imagenette":
        return imagenette_split(tar, n_calibration=preset.n_calibration, seed=seed)
    module = _zoo(preset.zoo)
    return heldaside_split(module.SPLIT, module.CLASSES, n_calibration=preset.n_calibration,
                           seed=seed)


def _preset_classifier(preset: Preset) -> Classifier:
    zoo = _zoo(preset.zoo)
    weights = getattr(zoo, "WEIGHTS", None)
    if weights is not None and not Path(weights).is_file():
        raise FileNotFoundError(f"{weights}: trained weights of rpdetect.zoo.{preset.zoo} not "
                                f"found; evaluating an untrained classifier is meaningless")
    return Classifier(zoo.build(), tuple(zoo.MEAN), tuple(zoo.STD), tuple(zoo.INPUT_SHAPE),
                      preset.classes)


def _read_class_map(path: Path) -> dict[str, int]:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"--class-map {path}: not a readable JSON file ({exc})") from exc
    if not isinstance(doc, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in doc.values()):
        raise InputError(f"--class-map {path}: expected a JSON object folder name -> class "
                         f"index (an integer >= 0), e.g. {{\"cat\": 281, \"dog\": 207}}")
    return {str(k): int(v) for k, v in doc.items()}


def _user_classifier(config: EvaluationConfig, classes: tuple[int, ...]) -> TargetClassifier:
    if config.torch is not None:
        from ..export.torch_export import load_module

        t = config.torch
        module = load_module(t.spec, None if t.weights is None else str(t.weights))
        channels = t.input_shape[0]
        return Classifier(module.eval(), t.mean or (0.0,) * channels,
                          t.std or (1.0,) * channels, t.input_shape, classes)
    from .blackbox import OnnxClassifier

    path = Path(config.classifier)  # type: ignore[arg-type]
    shape = OnnxClassifier(path, input_shape=config.input_shape).input_shape
    return ClassifierFile(path, tuple(shape), classes)  # type: ignore[arg-type]


def _check_labels(items_labels: np.ndarray, num_classes: int, where: Path) -> None:
    bad = sorted({int(v) for v in items_labels if v >= num_classes})
    if bad:
        raise InputError(f"{where}: class index {bad[:5]} is outside the classifier's "
                         f"{num_classes} classes (0..{num_classes - 1})")


def _check_user_images(classifier_onnx: Path, pool: Any, n: int, where: Path) -> None:
    """InputError for a class index outside the classifier's classes, or unless at least ``n``
    evaluation images are classified correctly (only those are attacked; counting stops as
    soon as ``n`` are found). One classifier session for both checks."""
    from .scoring import ClassifierRunner

    runner = ClassifierRunner(classifier_onnx)
    num_classes = int(runner.logits(pool.images([0])).shape[1])
    _check_labels(pool.labels, num_classes, where)
    correct = 0
    for start in range(0, len(pool), 32):
        pos = np.arange(start, min(start + 32, len(pool)))
        correct += int((runner.logits(pool.images(pos)).argmax(1) == pool.labels[pos]).sum())
        if correct >= n:
            return
    raise InputError(f"{where}: only {correct} of {len(pool)} images are classified correctly, "
                     f"and attacks run on correctly classified images only: --n {n} needs at "
                     f"least {n} (lower --n or add images)")


def run_evaluation(config: EvaluationConfig) -> EvaluationRun:
    """Export, calibrate, attack, detect, and write table.{md,csv,json} and the figures (and
    adaptive.{md,csv,json} for adaptive attacks); what ran and the files written come back."""
    if config.quick:
        config = dataclasses.replace(config, n=min(config.n, 5),
                                     calib_limit=min(config.calib_limit or 40, 40))
    preset = PRESETS[config.dataset] if config.dataset is not None else None
    cache = config.cache_dir or default_cache_dir()
    with ExitStack() as stack:
        if preset is not None:
            # the attack names first: a typo is named before any data or weights are needed
            select_attacks(attack_table(_zoo(preset.zoo).INPUT_SHAPE, preset=preset),
                           config.attacks, whitebox=True,
                           quick=config.quick)
            select_adaptive(_zoo(preset.zoo).INPUT_SHAPE, config.attacks,
                            quick=config.quick)
            tar_path = (config.data_dir or default_data_dir()) / preset.tar
            if not tar_path.is_file():
                raise FileNotFoundError(f"{tar_path}: dataset tar not found (pass --data DIR, "
                                        f"the folder holding {preset.tar})")
            split = preset_split(preset, tar_path, config.seed)
            classifier: TargetClassifier = _preset_classifier(preset)
            tar = stack.enter_context(TarImages(tar_path, classifier.input_shape))
            calibration: Any = TarPool(tar, split.calibration[: config.calib_limit or None])
            pool: Any = TarPool(tar, split.evaluation)
            name, kappas, notes = preset.name, preset.kappas, [preset.note]
        else:
            class_map = None if config.class_map is None else _read_class_map(config.class_map)
            items = image_folder(config.images, class_map)  # type: ignore[arg-type]
            classes = tuple(sorted({it.label for it in items}))
            classifier = _user_classifier(config, classes)
            calibration = FolderPool(
                unlabelled_folder(config.calibration_images)[: config.calib_limit or None],  # type: ignore[arg-type]
                classifier.input_shape)
            pool = FolderPool(items, classifier.input_shape)
            name = (Path(config.classifier).stem if config.classifier is not None
                    else config.torch.spec.replace(":", ".").split(".")[-1])  # type: ignore[union-attr]
            kappas = PAPER_KAPPAS
            notes = [f"Classifier: {config.classifier or config.torch.spec}; "  # type: ignore[union-attr]
                     f"{len(calibration)} calibration images from {config.calibration_images}, "
                     f"{len(pool)} evaluation images in {len(classes)} classes from "
                     f"{config.images}, prepared as `rpdetect detect` prepares them."]
        kappas = config.kappas or kappas
        # gradients: the torch module's, or an ONNX file's graph interpreted in torch
        # (evaluation.quantized_twin): its INT8 classifier's with --attack-target int8, where the
        # white-box attacks are the default, and its float graph's when they are asked by name
        torch_module = isinstance(classifier, Classifier)
        specs = select_attacks(attack_table(classifier.input_shape, preset=preset),
                               config.attacks,
                               whitebox=torch_module or config.attack_target == "int8",
                               quick=config.quick)
        adaptive_specs = select_adaptive(
            classifier.input_shape, config.attacks, quick=config.quick,
            eot=config.eot, steps=config.adaptive_steps, epsilons=config.adaptive_epsilons,
            keep=config.adaptive_keep)
        if not torch_module and (adaptive_specs or (config.attack_target == "fp32" and any(
                not s.blackbox for s in specs))):
            classifier.gradient_module()  # an operator it cannot interpret is named now
        work = cache / name / ("quick" if config.quick else "full")
        out = config.out_dir or cache / "results" / (name + ("-quick" if config.quick else ""))
        work.mkdir(parents=True, exist_ok=True)
        classifier_onnx = classifier.onnx(work)
        if preset is None:
            _check_user_images(classifier_onnx, pool, config.n, config.images)  # type: ignore[arg-type]
        notes.append("Adversarial examples are kept as float32 (not re-quantised to 8 bits).")
        if config.precision == "int8":
            kept = ("its head (the last weighted layer to the logits) kept float32"
                    if config.quantize_head == "float" else "its head quantized too")
            if config.quantize_stem == "float":
                kept += ", its stem (the layer reading the image) kept float32"
            if config.quantize_reduce_range:
                kept += "; 7-bit weights (--reduce-range)"
            if config.quantize_refine_steps:
                kept += (f"; its integer weights then refined toward the FP32 classifier in "
                         f"{config.quantize_refine_steps} steps on the same images "
                         "(rpdetect.export.refine)")
            notes.append("INT8 detector: its classifier quantized by ONNX Runtime (QDQ, "
                         f"per-channel int8 weights, uint8 activations, "
                         f"{config.quantize_method} ranges from the "
                         f"random 100 of the calibration images with their noisy copies; {kept}); "
                         "thresholds from "
                         "its own scores on the calibration images. " + (
                             "The attacks target the INT8 classifier itself: white-box ones "
                             "through its torch twin (ONNX Runtime's integer arithmetic in the "
                             "forward pass, straight-through rounding in the backward pass; "
                             "rpdetect.evaluation.quantized_twin), black-box ones query it "
                             "through ONNX Runtime (--attack-target int8)."
                             if config.attack_target == "int8" else
                             "The attacks target the float32 model, so the adversarial "
                             "examples are the FP32 run's (they transfer to the INT8 one)."))
        if config.positives == "deployed":
            notes.append("Positives: only the adversarial examples that the detector's own "
                         "classifier misclassifies too; the others are counted as failed "
                         "attacks (--positives deployed).")
        elif config.positives == "both":
            notes.append("Positives: only the adversarial examples that both the FP32 and the "
                         "INT8 detector's classifiers misclassify, the same examples for "
                         "--precision fp32 and int8; the others are counted as failed attacks "
                         "(--positives both).")
        written: list[Path] = []

        def on_row(result: EvaluationResult) -> None:
            written[:] = write_report(result, out, dataset=name, command=config.command,
                                      specs=specs, notes=notes)
            if config.figures and result.figures is not None:
                written.extend(write_figures(result.figures, out, dataset=name))
            if config.figures and any(result.roc.values()):
                written.append(roc_figure(result.roc, out / "roc.png",
                                          title=f"{name}: ROC of each rule family"))

        result = None
        if specs or not adaptive_specs:
            result = evaluate(
                classifier, calibration=calibration, pool=pool, attacks=specs, work_dir=work,
                kappas=kappas, n=config.n, fpr=config.fpr, seed=config.seed,
                figure_images=16 if config.figures else 0, progress=config.progress,
                classifier_onnx=classifier_onnx, on_row=on_row, precision=config.precision,
                positives=config.positives, attack_target=config.attack_target,
                quantize=QuantizeOptions(
                    calibrate_method=config.quantize_method,  # type: ignore[arg-type]
                    float_head=config.quantize_head == "float",
                    float_stem=config.quantize_stem == "float",
                    reduce_range=config.quantize_reduce_range,
                    refine_steps=config.quantize_refine_steps))
        adaptive = None
        if adaptive_specs:
            from .adaptive import evaluate_adaptive

            table_files = list(written)

            def on_adaptive(ev: AdaptiveEvaluation) -> None:
                written[:] = table_files + write_adaptive_report(
                    ev, out, dataset=name, command=config.command, notes=notes)

            adaptive = evaluate_adaptive(
                classifier, calibration=calibration, pool=pool, specs=adaptive_specs,
                work_dir=work, kappas=kappas, n=config.n, fpr=config.fpr, seed=config.seed,
                target_rule=config.adaptive_target, progress=config.progress,
                classifier_onnx=classifier_onnx, on_result=on_adaptive)
    return EvaluationRun(result, specs, adaptive, written)
