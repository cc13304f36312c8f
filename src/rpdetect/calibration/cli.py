"""``rpdetect calibrate``: thresholds from a folder of clean images, written into a copy of the
detector."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .._cli_util import add_session_args, seed, session_kwargs
from .calibrate import calibrate_file
from .reader import FolderReader
from .report import default_paths
from .calibrate import DEFAULT_MODE
from .thresholds import CalibrationMode, allowed_count

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "calibrate",
        help="set the detector's thresholds from clean images",
        description="Run the detector over clean images and set its thresholds so that a "
        "chosen fraction of them is flagged (combined, the default: score1_max, score2_max and "
        "the flip count together flag fpr; paper: fpr per score, the paper's rule; joint: fpr "
        "for score1 OR score2; per-kappa). Writes OUT.onnx, OUT.calibration.json and "
        "OUT.calibration.png.",
    )
    p.add_argument("detector", type=Path, metavar="DETECTOR.onnx", help="detector to calibrate")
    p.add_argument("--images", type=Path, required=True, metavar="DIR",
                   help="folder of clean images (ImageFolder tree or flat, searched recursively)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.onnx",
                   help="where to write the calibrated detector")
    p.add_argument("--fpr", type=float, default=0.05,
                   help="fraction of clean images to flag (default 0.05, as in the paper)")
    p.add_argument("--mode", choices=["paper", *(m.value for m in CalibrationMode)],
                   default=DEFAULT_MODE.value,
                   help="combined (default): score1_max, score2_max and flips together flag "
                   "fpr; paper (= per-score): fpr for each score alone; joint: score1 OR score2 "
                   "flag fpr; per-kappa: every copy at its kappa, and flips, flag fpr")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="use at most N images")
    p.add_argument("--seed", type=seed, default=None, metavar="S",
                   help="seeds the noise of detectors built with noise='input' (graph-noise "
                   "detectors carry their own seed) and, with --limit, the random choice of the "
                   "N images (default: fresh noise; the first N in sorted order)")
    p.add_argument("--report", type=Path, default=None, metavar="PATH",
                   help="JSON report path (default OUT.calibration.json)")
    p.add_argument("--histogram", type=Path, default=None, metavar="PATH",
                   help="PNG histogram path (default OUT.calibration.png)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_session_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    reader = FolderReader(args.images, limit=args.limit,
                          shuffle_seed=args.seed if args.limit is not None else None)
    report, histogram = default_paths(args.output)
    report, histogram = args.report or report, args.histogram or histogram
    result = calibrate_file(
        args.detector, reader, args.output,
        fpr=args.fpr, mode=args.mode, seed=args.seed, report_path=report,
        histogram_path=histogram, progress=not args.no_progress, **session_kwargs(args),
    )
    r = result.rates
    print(f"calibrated on {result.n_images} clean images from {result.source} "
          f"({result.n_failed} unreadable), fpr {result.fpr:g}, mode {result.mode.value}")
    t = result.thresholds
    for name, what in (("threshold1", "score1, Eq. 5"), ("threshold2", "score2, Eq. 6")):
        values = getattr(t, name)
        text = (f"{values[0]:.9g}" if len(set(values)) == 1
                else "[" + ", ".join(f"{v:.6g}" for v in values) + "] (per kappa)")
        print(f"{name} = {text}   ({what})")
    print(f"threshold3 = {t.threshold3:.9g}   (flips: copies whose label changed)")
    print(f"verdict: {t.describe()}")
    print(f"flagged on the calibration set: score1 {r.score1:.2%}, score2 {r.score2:.2%}, "
          f"flips {r.flips:.2%}, combined {r.combined:.2%}")
    if allowed_count(result.fpr, result.n_images) == 0 and result.fpr > 0:
        print(f"warning: {result.n_images} images are too few for fpr {result.fpr:g} "
              f"(fewer than 1/fpr): the thresholds are the maxima and flag none of them",
              file=sys.stderr)
    for f in result.failures[:5]:
        print(f"unreadable: {f.error if f.source in f.error else f'{f.source}: {f.error}'}",
              file=sys.stderr)
    if result.n_failed > 5:
        print(f"... and {result.n_failed - 5} more (see {report})", file=sys.stderr)
    written = [args.output, report] + ([histogram] if histogram.is_file() else [])
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
