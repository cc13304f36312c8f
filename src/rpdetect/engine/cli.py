"""``rpdetect detect`` and ``rpdetect info``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import onnxruntime as ort

from .._cli_util import (
    add_decode_limit_args,
    add_session_args,
    decode_limit_kwargs,
    positive_int,
    seed,
    session_kwargs,
)
from ..contract import DetectorSpec
from .detector import Detector, Failure, TensorSpec
from .images import IMAGE_SUFFIXES, RESIZE_POLICIES, find_images
from .noise import NOISE_GENERATORS, ort_cpu_graph_noise_runs
from .stream import JsonStream, display_name, escape_controls


def register(sub: Any) -> None:
    d = sub.add_parser(
        "detect",
        help="run a detector on image files",
        description="Run a detector .onnx on images (files, or directories: every image file "
                    "below them, sorted, hidden ones skipped). One line per image: path, label, "
                    "score1_max, score2_max, verdict. Exit 1 if any image failed.",
    )
    d.add_argument("model", help="detector .onnx (from `rpdetect export`)")
    d.add_argument("images", nargs="+", help="image files or directories")
    d.add_argument("--json", action="store_true", help="print one JSON document instead")
    d.add_argument("--logits", action="store_true", help="include logits in --json output")
    d.add_argument("--threshold1", type=float,
                   help="override the file's threshold1 (one value for every kappa)")
    d.add_argument("--threshold2", type=float,
                   help="override the file's threshold2 (one value for every kappa)")
    d.add_argument("--threshold3", type=float,
                   help="override the file's threshold3 (on the flip count; inf: unused)")
    d.add_argument("--resize", choices=RESIZE_POLICIES, default="shorter-crop",
                   help="fit images to the detector's size (default: shorter-crop)")
    d.add_argument("--seed", type=seed, help="seed (integer >= 0) of the noise the engine "
                   "draws (noise='input' detectors, and graph-noise detectors on the CPU "
                   "unless --graph-noise)")
    add_decode_limit_args(d, what="image files")
    d.add_argument("--noise-generator", choices=NOISE_GENERATORS, default=None,
                   help="generator of that noise (default: xoshiro, rpdetect's C generator, "
                   "where it is built, else opencv, cv2.randn; numpy: PCG64)")
    d.add_argument("--graph-noise", action="store_true",
                   help="run the file's own front (its RandomNormalLike) even on the CPU, where "
                   "the engine otherwise builds the noisy copies itself")
    d.add_argument("--images-per-run", type=positive_int, default=None, metavar="K",
                   help="images per run of the engine's graph (default: the file's batch for "
                   "small images, 1 for large ones; more: throughput for memory)")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_session_args(d)
    d.set_defaults(func=_detect)

    i = sub.add_parser(
        "info",
        help="describe a detector file",
        description="Inputs/outputs, kappas, noise mode, batch, thresholds and their provenance, "
                    "classifier hash, and the providers a session gets (it opens a real session: "
                    "with TensorRT that builds the engines, so enable trt_engine_cache_enable).",
    )
    i.add_argument("model", help="detector .onnx")
    i.add_argument("--json", action="store_true")
    i.add_argument("--graph-noise", action="store_true",
                   help="describe the session that runs the file's own front, as --graph-noise "
                   "of detect does")
    add_session_args(i)
    i.set_defaults(func=_info)


def _detector(args: argparse.Namespace, **kwargs: Any) -> Detector:
    if getattr(args, "graph_noise", False):
        kwargs["engine_noise"] = False
    return Detector(args.model, **session_kwargs(args), **kwargs)


def _expand(paths: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Files to run on (directories expanded, sorted) and (directory, error) for empty ones."""
    files: list[str] = []
    errors: list[tuple[str, str]] = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            found = find_images(path)
            if found:
                files += [str(f) for f in found]
            else:
                errors.append((text, f"{path}: directory holds no image files "
                                     f"({', '.join(IMAGE_SUFFIXES[:8])}, ...)"))
        else:
            files.append(text)  # a missing or bad file becomes a failure of detect_many
    return files, errors


def _detect(args: argparse.Namespace) -> int:
    """Each result is printed (and flushed) as soon as its batch has run; Ctrl-C keeps what was
    printed and exits 130 (the JSON document is closed first). See ``stream.py``."""
    detector = _detector(args, resize=args.resize, seed=args.seed,
                         noise_generator=args.noise_generator,
                         images_per_run=args.images_per_run, **decode_limit_kwargs(args))
    files, dir_errors = _expand(args.images)
    overrides = {"threshold1": args.threshold1, "threshold2": args.threshold2,
                 "threshold3": args.threshold3}
    rule = detector.thresholds(**overrides)
    never = not rule.calibrated
    failures = [{"index": None, "source": src, "error": msg} for src, msg in dir_errors]
    stream = None
    if args.json:
        stream = JsonStream(sys.stdout, {
            "model": str(detector.path),
            "providers": list(detector.providers),
            "thresholds": {**rule.to_json(), "rule": rule.describe(),
                           "note": "null means +inf (unused)"},
        })
    elif never:
        print(f"rpdetect detect: note: {escape_controls(detector.path.name)} is uncalibrated "
              f"(thresholds +inf): it never flags; run `rpdetect calibrate` or pass "
              f"--threshold1/2/3", file=sys.stderr, flush=True)
    for f in failures:
        _print_error(f["error"])
    done, interrupted = 0, False
    try:
        for outcome in detector.detect_iter(files, **overrides,
                                            progress=not args.no_progress and not args.json):
            if isinstance(outcome, Failure):
                failures.append({"index": outcome.index, "source": outcome.source,
                                 "error": outcome.error})
                _print_error(outcome.error)
            elif stream is not None:
                stream.result(outcome.to_dict(logits=args.logits))
                done += 1
            else:
                verdict = "ADVERSARIAL" if outcome.is_adversarial else "clean"
                flips = "" if outcome.flips is None else f"\tflips={outcome.flips}"
                print(f"{display_name(outcome.source)}\tlabel={outcome.label}\t"
                      f"score1_max={outcome.score1_max:.6g}\t"
                      f"score2_max={outcome.score2_max:.6g}{flips}\t{verdict}", flush=True)
                done += 1
    except KeyboardInterrupt:
        interrupted = True
    if stream is not None:
        stream.close(failures, interrupted=interrupted)
    if failures:
        print(f"rpdetect detect: {len(failures)} input(s) failed, {done} done", file=sys.stderr)
    if interrupted:
        print(f"rpdetect detect: interrupted after {done} result(s); those printed are kept",
              file=sys.stderr)
        return 130
    return 1 if failures else 0


def _print_error(message: str) -> None:
    print(f"rpdetect detect: error: {escape_controls(message)}", file=sys.stderr, flush=True)


def _info_doc(detector: Detector) -> dict[str, Any]:
    info = detector.info
    return {
        "model": str(detector.path),
        "rpdetect_version": info.version,
        "classifier_sha256": info.classifier_sha256,
        "classifier_source": info.classifier_source,
        "inputs": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype}
                   for t in detector.inputs],
        "outputs": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype}
                    for t in detector.outputs],
        "input_format": info.input_format,
        "input_shape": list(info.input_shape),
        "batch": info.batch,
        "n": info.n,
        "kappas": list(info.kappas),
        "noise": info.noise,
        "seed": info.seed,
        "cpu_graph_noise_repeats_after_runs": _cpu_noise_runs(detector),
        "front": detector.front,
        "precision": info.precision,
        "quantization": info.quantization,
        "clip": info.clip,
        "mean": None if info.mean is None else list(info.mean),
        "std": None if info.std is None else list(info.std),
        "num_classes": info.num_classes,
        "thresholds": info.thresholds.to_json(),  # what the graph compares against
        "rule": info.thresholds.describe(),
        "statistics": ["score1", "score2"] + (["flips"] if info.has_flips else []),
        "calibrated": info.calibrated,
        "thresholds_provenance": info.thresholds_provenance,
        "providers": list(detector.providers),
        "providers_requested": list(detector.plan.requested),
        "available_providers": list(ort.get_available_providers()),
    }


def _cpu_noise_runs(detector: Detector) -> int | None:
    """For a graph-noise detector on ONNX Runtime's CPU provider: runs until its noise stream
    repeats (serial minstd_rand0, period 2**31 - 2); None otherwise."""
    info = detector.info
    if info.noise != "graph" or detector.providers[0] != "CPUExecutionProvider" \
            or detector.front == "engine":
        return None
    c, h, w = info.input_shape
    return ort_cpu_graph_noise_runs(info.batch * info.n * c * h * w)


def _provenance_lines(info: DetectorSpec) -> list[str]:
    """Where the thresholds came from, in words (the JSON is in ``info --json``)."""
    prov = info.provenance
    if not info.calibrated:
        return []
    if prov.n_images is None:
        return [f"provenance   {prov.source or json.dumps(prov.to_json(), sort_keys=True)}"]
    unknown = "?"
    lines = [
        f"calibrated   on {prov.n_images} clean images from {prov.source or unknown} "
        f"({prov.n_failed or 0} unreadable), fpr {unknown if prov.fpr is None else prov.fpr}, "
        f"mode {prov.mode or unknown}, {prov.date or 'date unknown'}",
    ]
    rates = prov.achieved_rates or {}
    if rates:
        order = sorted(rates, key=lambda k: (k != "score1", k != "score2", k))
        lines.append("flagged      " + ", ".join(f"{k} {rates[k]:.2%}" for k in order)
                     + " of those images")
    if prov.rule:
        lines.append(f"rule         {prov.rule}")
    return lines


def _tensor_lines(title: str, tensors: tuple[TensorSpec, ...]) -> list[str]:
    return [title, *(f"  {t.name:<14} {t.dtype:<8} {list(t.shape)}" for t in tensors)]


def _info_text(detector: Detector) -> str:
    info = detector.info
    c, h, w = info.input_shape
    t = info.thresholds
    thresholds = "  ".join(f"{name}={_values(getattr(t, name))}"
                           for name in ("threshold1", "threshold2")) + (
        f"  threshold3={t.threshold3:.6g}" if info.has_flips else "")
    if not info.calibrated:
        thresholds += "  (uncalibrated: never flags; run `rpdetect calibrate`)"
    statistics = ("score1, score2 (Eq. 5/6 per kappa), flips (copies whose label changed)"
                  if info.has_flips else "score1, score2 (a file from rpdetect <= 0.1: no flips)")
    kappas = ", ".join(f"{k:.4g}" for k in info.kappas)
    normalisation = ("" if info.mean is None
                     else f", mean {list(info.mean)} std {list(info.std or ())} folded in")
    lines = [
        f"model        {detector.path}",
        f"rpdetect     {info.version}",
        f"classifier   {info.classifier_source}  sha256 {info.classifier_sha256}",
        f"input        {info.input_format} {c}x{h}x{w}, batch {info.batch}{normalisation}",
        f"classes      {info.num_classes if info.num_classes is not None else 'unknown'}",
        f"precision    {info.precision_text()}",
        *(["             on this CPU (AVX2, no VNNI) ONNX Runtime's u8 x s8 kernels saturate "
           "with full-range int8 weights: the logits are not the INT8 model's exact ones "
           "(export with --reduce-range for CPUs without VNNI)"]
          if detector.int8_saturates else []),
        "front        "
        + ("built by the engine (noise drawn by rpdetect, not the graph's random op)"
           if detector.front == "engine" else "the graph's own nodes"),
        f"noise        {info.noise}"
        + (f" (seed {info.seed:g})" if info.seed is not None else "")
        + (", noisy copies clipped to [0, 1]" if info.clip else ""),
        *([f"             on the CPU provider ONNX Runtime draws it serially with minstd_rand0, "
           f"whose stream repeats after 2^31-2 draws: about {runs:,} runs of this detector "
           f"(export with --noise input to draw it yourself)"]
          if (runs := _cpu_noise_runs(detector)) is not None else []),
        f"kappas       n={info.n}: {kappas}",
        f"statistics   {statistics}",
        f"verdict      {t.describe()}",
        f"thresholds   {thresholds}",
        *_provenance_lines(info),
        *_tensor_lines("inputs", detector.inputs),
        *_tensor_lines("outputs", detector.outputs),
        f"providers    {', '.join(detector.providers)}  (requested: "
        f"{', '.join(detector.plan.requested)}; available: "
        f"{', '.join(ort.get_available_providers())})",
    ]
    return "\n".join(lines)


def _values(values: tuple[float, ...]) -> str:
    """One number when every kappa has the same threshold, else the list."""
    if len(set(values)) == 1:
        return f"{values[0]:.6g}"
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "] (per kappa)"


def _info(args: argparse.Namespace) -> int:
    detector = _detector(args)
    print(json.dumps(_info_doc(detector), indent=2) if args.json else _info_text(detector))
    return 0
