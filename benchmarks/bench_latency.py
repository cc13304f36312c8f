"""Latency of the fused detector on the standard models (issue 4): ``rpdetect bench`` for

* EfficientNet-Lite0 at 224x224 (``rpdetect.zoo.efficientnet_lite0``, ImageNet weights);
* the CIFAR-10 CNN at 32x32 (``rpdetect.zoo.cifar10_cnn``) when its weights are committed,
  otherwise a RANDOM-weight VGG-11-style CNN at 32x32 (``rpdetect.bench.models``), and the
  report says which.

Each model: classifier exported with ``torch_to_onnx`` (cached under ``cache/bench-latency``),
a graph-noise detector with the paper's kappas and its INT8 twin (``rpdetect export --quantize
int8``: activation ranges from a random 100 of the calibration images of the dataset's split when
``--data`` holds its tar, else from random images, which changes nothing about speed), then the
suite (classifier alone at B=1 and at the floor B=11; each detector through
``rpdetect.Detector``'s default path, with the file's own graph noise and with fed noise, at
B = 1, 4, 16; the naive eager PyTorch way) with the design's targets. Writes ``<model>.json`` / ``<model>.md`` and ``README.md`` (the
headline ratios of all models) to ``benchmarks/results/latency/`` unless ``--out`` says else.

    nice -n 10 .venv/bin/python benchmarks/bench_latency.py [--quick] [--models effnet,cifar]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from rpdetect._atomic import atomic_write_text
from rpdetect.bench import QUICK, SessionSettings, Targets, Timing, TorchModel, run_benchmark
from rpdetect.bench.machine import cpu_description
from rpdetect.engine.noise import NOISE_GENERATORS
from rpdetect.export.graph import DetectorConfig, build_detector, save_onnx
from rpdetect.export.torch_export import load_module, state_dict_digest, torch_to_onnx

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "latency"
DEFAULT_CACHE = ROOT / "cache" / "bench-latency"


@dataclass(frozen=True)
class Standard:
    key: str
    title: str
    torch: TorchModel
    targets: Targets
    preset: str  # the evaluation preset whose calibration images calibrate the INT8 ranges


def standard_models() -> dict[str, Standard]:
    from rpdetect.zoo import cifar10_cnn, efficientnet_lite0

    effnet = Standard(
        "efficientnet_lite0-224", "EfficientNet-Lite0, 224x224, ImageNet weights",
        TorchModel("rpdetect.zoo.efficientnet_lite0:build", efficientnet_lite0.INPUT_SHAPE,
                   mean=efficientnet_lite0.MEAN, std=efficientnet_lite0.STD),
        Targets(detector_over_floor=1.03, naive_over_detector=2.0, int8_over_floor=0.5),
        "imagenette")
    targets32 = Targets(detector_over_floor=1.05, naive_over_detector=5.0)
    if cifar10_cnn.WEIGHTS.exists():
        cifar = Standard(
            "cifar10_cnn-32", "CIFAR-10 ResNet-9 (half width), 32x32, trained weights",
            TorchModel("rpdetect.zoo.cifar10_cnn:build", cifar10_cnn.INPUT_SHAPE,
                       mean=cifar10_cnn.MEAN, std=cifar10_cnn.STD), targets32, "cifar10")
    else:
        cifar = Standard(
            "vgg11_random-32",
            "VGG-11-style CNN, 32x32, RANDOM weights (the CIFAR-10 CNN's weights are not "
            "committed yet)",
            TorchModel("rpdetect.bench.models:vgg11_cifar", (3, 32, 32),
                       mean=cifar10_cnn.MEAN, std=cifar10_cnn.STD), targets32, "cifar10")
    return {"effnet": effnet, "cifar": cifar}


def detector_for(model: Standard, cache: Path) -> Path:
    """Export the classifier and build the B=1 graph-noise detector, once per cache."""
    module = load_module(model.torch.spec, model.torch.weights)
    # keyed by the weights, so retrained weights never meet a stale export
    tag = f"{model.key}-{state_dict_digest(module).hexdigest()[:10]}"
    det_path = cache / f"{tag}-detector.onnx"
    if det_path.is_file():
        return det_path
    cls_path = torch_to_onnx(module, cache / f"{tag}-classifier.onnx",
                             input_shape=model.torch.input_shape, mean=model.torch.mean,
                             std=model.torch.std)
    return save_onnx(build_detector(cls_path, DetectorConfig()), det_path)


def calibration_images(model: Standard, data: Path, count: int = 100) -> tuple[object, str]:
    """A random ``count`` of the calibration images of the model's dataset split (never its
    evaluation images; the sample the evaluation's INT8 detector is quantized on), or random
    images where the tar is absent; and what they were."""
    import numpy as np

    from rpdetect.evaluation.datasets import TarImages, TarPool
    from rpdetect.evaluation.pipeline import preset_split
    from rpdetect.evaluation.presets import PRESETS
    from rpdetect.evaluation.protocol import quantization_sample

    preset = PRESETS[model.preset]
    tar_path = data / preset.tar
    if not tar_path.is_file():
        rng = np.random.default_rng(0)
        return (rng.random((count, *model.torch.input_shape), dtype=np.float32),
                f"{count} random images ({tar_path} absent: the ranges are for speed only)")
    split = preset_split(preset, tar_path, 0)
    with TarImages(tar_path, model.torch.input_shape) as tar:
        positions = quantization_sample(len(split.calibration), count)
        images = TarPool(tar, split.calibration).images(positions)
    return images, f"a random {count} of the calibration images of the {preset.name} split"


def int8_detector_for(model: Standard, detector: Path, data: Path) -> tuple[Path, str]:
    """The INT8 twin of ``detector`` (cached next to it, keyed by the calibration source and the
    quantization options)."""
    import hashlib

    from rpdetect.contract import read_spec
    from rpdetect.export.graph import extract_classifier, load_onnx
    from rpdetect.export.quantize import QuantizeOptions, build_int8_detector

    images, source = calibration_images(model, data)
    options = QuantizeOptions()  # what `rpdetect export --quantize int8` does by default
    tag = hashlib.sha256((source + repr(options)).encode()).hexdigest()[:8]
    path = detector.with_name(f"{detector.stem}-int8-{tag}.onnx")
    if not path.is_file():
        fp32 = load_onnx(detector)
        save_onnx(build_int8_detector(extract_classifier(fp32), read_spec(fp32).config(), images,
                                      options=options), path)
    return path, source


def headline(reports: dict[str, dict]) -> str:
    """The summary table over every standard model's latest JSON report (``Report.to_dict``),
    so a run of one model keeps the other's row; each row names the command and date."""
    lines = ["# Latency of the fused detector (rpdetect bench)", "",
             "| model | provider | rpdetect.Detector (default) / floor | target "
             "| graph noise (file as is) / floor | input noise / floor "
             "| INT8 detector / FP32 floor | target | INT8 floor / FP32 floor "
             "| naive / detector | target | torch B=11 / detector |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, rep in reports.items():
        by = {(r["provider"], r["name"]): r for r in rep["ratios"]}
        for provider in dict.fromkeys(r["provider"] for r in rep["ratios"]):
            def cell(name: str, with_target: bool = False) -> str:
                r = by.get((provider, name))
                if r is None:
                    return "- | -" if with_target else "-"
                value = f"{r['value']:.3f}"
                meets = r.get("meets")
                mark = "" if meets is None else (" (met)" if meets else " (**missed**)")
                if not with_target:
                    return value + mark
                sign = "<=" if r["target_kind"] == "max" else ">="
                return f"{value}{mark} | {sign} {r['target']:g}" if r["target"] else f"{value} | -"
            lines.append(f"| [{key}]({key}.md) | {provider} | "
                         f"{cell('detector (rpdetect.Detector, default) / floor', True)} | "
                         f"{cell('detector / floor')} | "
                         f"{cell('detector (input noise) / floor')} | "
                         f"{cell('INT8 detector (rpdetect.Detector) / floor', True)} | "
                         f"{cell('INT8 floor / floor')} | "
                         f"{cell('naive / detector', True)} | "
                         f"{cell('torch batch / detector')} |")
    lines.append("")
    for key, rep in reports.items():
        m = rep["machine"]
        lines.append(f"- {key}: `{rep['settings'].get('command', '?')}`, {m['date_utc']}, "
                     f"{cpu_description(m)}, {m['usable_cores']} usable cores, onnxruntime "
                     f"{m['onnxruntime']}, torch {m['torch']}.")
    lines += ["", "GPU providers: see each model's report (skipped where onnxruntime has none).",
              ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="effnet,cifar", help="comma-separated: effnet, cifar")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--providers", default="cpu,cuda,tensorrt,tensorrt-fp16")
    p.add_argument("--batches", default="1,4,16")
    p.add_argument("--rounds", type=int)
    p.add_argument("--round-time", type=float)
    p.add_argument("--gap-ms", type=float, default=0.0,
                   help="idle time after every timed run (default 0: back to back)")
    p.add_argument("--aa", action="store_true",
                   help="the floor twice, in two workers (an A/A check of the noise)")
    p.add_argument("--restart-every", type=int, default=0, metavar="K",
                   help="a fresh worker process per configuration every K rounds (default 0)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--no-spinning", action="store_true")
    p.add_argument("--noise-generator", choices=NOISE_GENERATORS, default=None)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data",
                   help="folder of the dataset tars (INT8 calibration images)")
    p.add_argument("--no-int8", action="store_true", help="skip the INT8 detector")
    args = p.parse_args(argv)
    command = " ".join(["python benchmarks/bench_latency.py",
                        *(shlex.quote(a) for a in (argv or sys.argv[1:]))])
    models = standard_models()
    keys = [k.strip() for k in args.models.split(",") if k.strip()]
    unknown = [k for k in keys if k not in models]
    if unknown:
        p.error(f"--models: unknown {unknown}; known: {list(models)}")
    timing = QUICK if args.quick else Timing()
    if args.rounds:
        timing = replace(timing, rounds=args.rounds)
    if args.round_time:
        timing = replace(timing, round_time_s=args.round_time)
    if args.gap_ms < 0:
        p.error(f"--gap-ms: expected >= 0, got {args.gap_ms}")
    if args.restart_every < 0:
        p.error(f"--restart-every: expected >= 0, got {args.restart_every}")
    timing = replace(timing, gap_s=args.gap_ms / 1000.0, restart_every=args.restart_every)
    args.cache.mkdir(parents=True, exist_ok=True)
    for key in keys:
        model = models[key]
        print(f"== {model.title}", file=sys.stderr)
        detector = detector_for(model, args.cache)
        int8, int8_source = (None, None) if args.no_int8 else int8_detector_for(
            model, detector, args.data)
        report = run_benchmark(
            detector,
            int8_detector=int8,
            torch_model=model.torch,
            providers=args.providers.split(","),
            batches=[int(b) for b in args.batches.split(",")],
            settings=SessionSettings(threads=args.threads, spinning=not args.no_spinning,
                                     noise_generator=args.noise_generator),
            timing=timing,
            floor_twin=args.aa,
            profile_runs=3 if args.quick else 20,
            targets=model.targets,
            title=model.title,
            log=lambda msg: print("  " + msg, file=sys.stderr),
        )
        report.settings["command"] = command
        if int8_source is not None:
            report.notes.append(f"INT8 detector: QDQ, per-channel int8 weights, uint8 "
                                f"activations; ranges from {int8_source} with their noisy "
                                f"copies")
        js, _ = report.write(args.out, model.key)
        print(report.to_markdown())
        print(f"wrote {js}", file=sys.stderr)
    latest = {m.key: json.loads(path.read_text()) for m in models.values()
              if (path := args.out / f"{m.key}.json").is_file()}
    atomic_write_text(args.out / "README.md", headline(latest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
