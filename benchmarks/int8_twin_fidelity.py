"""How exactly the INT8 classifier's torch twin computes ONNX Runtime's INT8 logits: `python
benchmarks/int8_twin_fidelity.py --dataset imagenette [--images 40] [--quantize-stem float]`.

``rpdetect evaluate --precision int8 --attack-target int8`` runs its white-box attacks on
``rpdetect.evaluation.quantized_twin`` (the INT8 classifier interpreted in torch). This prepares
the INT8 detector exactly as that run does (same cache), takes ``--images`` of the split's clean
calibration images (evenly spaced, no adversarial example and no evaluation image), and compares,
per image, the largest |logit difference| between the twin and the INT8 classifier run by ONNX
Runtime (CPU provider, default graph optimisations, so its integer kernels), and for scale the
same between the FP32 classifier and the INT8 one. Writes ``<out>/<dataset>.md`` (default
``benchmarks/results/int8/twin``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from _preset import open_preset  # noqa: E402  (benchmarks/, the script's folder)
from rpdetect._atomic import atomic_write_text  # noqa: E402
from rpdetect.bench.machine import cpu_description, machine_info  # noqa: E402
from rpdetect.evaluation.presets import PRESETS  # noqa: E402
from rpdetect.evaluation.protocol import prepare_detector  # noqa: E402
from rpdetect.export.quantize import QuantizeOptions  # noqa: E402


def _logits(model_or_path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    source = model_or_path if isinstance(model_or_path, str) else \
        model_or_path.SerializeToString()
    s = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def _stats(v: np.ndarray) -> str:
    return f"{np.median(v):.3f} / {np.quantile(v, 0.9):.3f} / {v.max():.3f}"


def main(argv: list[str] | None = None) -> int:
    import torch

    from rpdetect.evaluation.quantized_twin import twin_from_detector
    from rpdetect.export.graph import extract_classifier, load_onnx

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, choices=sorted(PRESETS))
    p.add_argument("--images", type=int, default=40)
    p.add_argument("--quantize-stem", choices=("int8", "float"), default="int8")
    p.add_argument("--reduce-range", action="store_true",
                   help="7-bit weights (rpdetect export --reduce-range), which ONNX Runtime's u8s8 "
                   "kernels without VNNI multiply without saturating")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--cache", type=Path, default=None, help="rpdetect evaluate's --cache")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "int8" / "twin")
    args = p.parse_args(argv)
    with open_preset(args.dataset, args.data, args.cache) as inputs:
        int8 = prepare_detector(inputs.classifier, precision="int8", quantize=QuantizeOptions(
            float_stem=args.quantize_stem == "float", reduce_range=args.reduce_range),
            **inputs.common)
        calibration = inputs.calibration
        step = max(1, len(calibration) // args.images)
        x = calibration.images(list(range(0, len(calibration), step))[:args.images])
        fp32_path = str(inputs.common["classifier_onnx"])
    z_int8 = _logits(extract_classifier(load_onnx(int8.path)), x)
    z_fp32 = _logits(fp32_path, x)
    with torch.no_grad():
        z_twin = twin_from_detector(int8.path)(torch.from_numpy(x)).numpy()
    twin = np.abs(z_twin - z_int8).max(axis=1)
    fp32 = np.abs(z_fp32 - z_int8).max(axis=1)
    command = "python benchmarks/int8_twin_fidelity.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    lines = [f"# The INT8 classifier's torch twin against ONNX Runtime: {args.dataset}", "",
             f"Command: `{command}`; {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}; "
             f"INT8 detector `{int8.path.name}`; {len(x)} clean calibration images; "
             f"{cpu_description(machine_info())}, onnxruntime {ort.__version__}.", "",
             "Per image, the largest |logit difference| to the INT8 classifier run by ONNX "
             "Runtime (median / 90th percentile / max over the images):", "",
             "| model | max abs logit difference | images equal (< 1e-4) | same label |",
             "|---|---|---|---|",
             f"| twin (quantized_twin) | {_stats(twin)} | {np.mean(twin < 1e-4):.2f} | "
             f"{np.mean(z_twin.argmax(1) == z_int8.argmax(1)):.2f} |",
             f"| FP32 classifier | {_stats(fp32)} | {np.mean(fp32 < 1e-4):.2f} | "
             f"{np.mean(z_fp32.argmax(1) == z_int8.argmax(1)):.2f} |",
             "", f"Logit scale: median largest |logit| {np.median(np.abs(z_int8).max(1)):.2f}."]
    name = args.dataset + ("-stem-float" if args.quantize_stem == "float" else "") + (
        "-reduce-range" if args.reduce_range else "")
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / f"{name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
