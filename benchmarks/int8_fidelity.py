"""How closely an INT8 detector follows the FP32 detector on CLEAN images: `python
benchmarks/int8_fidelity.py --dataset imagenette [--variants minmax,percentile,...]`.

The INT8 export has choices that cost nothing at run time (ONNX Runtime's range method, how many
calibration images) and some that do (layers kept float32). This picks among them without
looking at a single adversarial example or evaluation image: for each variant it prepares the
INT8 detector exactly as ``rpdetect evaluate --precision int8`` does (same cache, same
quantization sample), scores the split's *calibration* images with it, and compares those
scores image by image with the FP32 detector's, on the calibration images that were not in the
quantization sample (held out from the ranges). Per variant:

- ``label agree``: the INT8 classifier's label equals the FP32 one's;
- ``|log ratio| score1 / score2``: median over images of ``|log(max_i score_int8 / max_i
  score_fp32)|`` (0: the same score; 0.1: about 10% apart);
- ``rank corr``: Spearman correlation of max score1 (and score2) between the two;
- ``p95 ratio``: the 95th percentile of the INT8 clean scores over the FP32 one's (how far the
  INT8 threshold at 5% moves).

Writes ``<out>/<dataset>.md`` and ``.json`` (default ``benchmarks/results/int8/fidelity``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from _preset import open_preset  # noqa: E402  (benchmarks/, the script's folder)
from rpdetect._atomic import atomic_write_text  # noqa: E402
from rpdetect.evaluation.presets import PRESETS  # noqa: E402
from rpdetect.evaluation.protocol import prepare_detector, quantization_sample  # noqa: E402
from rpdetect.export.quantize import QuantizeOptions  # noqa: E402

VARIANTS = {
    "minmax": QuantizeOptions(),
    "minmax-300": QuantizeOptions(max_images=300),
    "minmax-stem-float": QuantizeOptions(float_stem=True),
    "minmax-int8-activations": QuantizeOptions(activation_type="int8"),
    "minmax-head-int8": QuantizeOptions(float_head=False),
    # ONNX Runtime's histogram calibrators keep every activation of every calibration feed in
    # memory before building the histograms: on EfficientNet-Lite0 at 224x224, 100 images with
    # their 10 noisy copies passed 24 GiB (killed); fine for small models
    "percentile": QuantizeOptions(calibrate_method="percentile"),
    "entropy": QuantizeOptions(calibrate_method="entropy"),
    # the same on 20 images (220 feeds), which fits the machine at 224x224
    "percentile-20": QuantizeOptions(calibrate_method="percentile", max_images=20),
    "entropy-20": QuantizeOptions(calibrate_method="entropy", max_images=20),
    "minmax-20": QuantizeOptions(max_images=20),
    # quantization-aware refinement toward FP32 on the same 100 images (rpdetect.export.refine)
    "minmax-refine-300": QuantizeOptions(refine_steps=300),
    "minmax-refine-600": QuantizeOptions(refine_steps=600),
}


def _rank(x: np.ndarray) -> np.ndarray:
    r = np.empty(len(x))
    r[np.argsort(x, kind="stable")] = np.arange(len(x))
    return r


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(_rank(a), _rank(b))[0, 1])


def compare(fp32, int8, held: np.ndarray) -> dict[str, float]:
    """INT8 against FP32 scores of the same clean images (``held`` positions)."""
    out: dict[str, float] = {"images": int(len(held)),
                             "label_agree": float(np.mean(fp32.label[held] == int8.label[held]))}
    tiny = 1e-12
    for name in ("score1_max", "score2_max"):
        a = getattr(fp32, name)[held].astype(np.float64)
        b = getattr(int8, name)[held].astype(np.float64)
        out[f"{name}_abs_log_ratio"] = float(np.median(np.abs(np.log((b + tiny) / (a + tiny)))))
        out[f"{name}_rank_corr"] = spearman(a, b)
        out[f"{name}_p95_ratio"] = float(np.quantile(b, 0.95) / np.quantile(a, 0.95))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, choices=sorted(PRESETS))
    p.add_argument("--variants", default="minmax,minmax-300,minmax-stem-float",
                   help=f"comma-separated, of {', '.join(VARIANTS)}")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--cache", type=Path, default=None, help="rpdetect evaluate's --cache")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "int8"
                   / "fidelity")
    args = p.parse_args(argv)
    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        p.error(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}")
    rows: dict[str, dict] = {}
    with open_preset(args.dataset, args.data, args.cache) as run:
        preset, classifier, calibration = run.preset, run.classifier, run.calibration
        fp32 = prepare_detector(classifier, **run.common).calibration
        # the same images for every variant: none in any variant's quantization sample
        used = {i for v in names
                for i in quantization_sample(len(calibration), VARIANTS[v].max_images)}
        held = np.array([i for i in range(len(calibration)) if i not in used])
        for name in names:
            options = VARIANTS[name]
            start = time.perf_counter()
            prepared = prepare_detector(classifier, precision="int8", quantize=options,
                                        **run.common)
            rows[name] = {"options": asdict(options), "detector": prepared.path.name,
                          "seconds": round(time.perf_counter() - start, 1),
                          **compare(fp32, prepared.calibration, held)}
            print(name, json.dumps({k: v for k, v in rows[name].items() if k != "options"}),
                  flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/int8_fidelity.py " + " ".join(argv if argv is not None
                                                                else sys.argv[1:])
    lines = [f"# INT8 fidelity to FP32 on clean calibration images: {preset.name}", "",
             f"Command: `{command}`; {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}.",
             "Clean images of the split's calibration part that no variant used for its "
             "ranges; no adversarial example and no evaluation image is read.", "",
             "| variant | images | label agree | abs log ratio score1 | score2 | rank corr score1 "
             "| score2 | p95 ratio score1 | score2 |", "|---" * 9 + "|"]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['images']} | {r['label_agree']:.3f} | "
            f"{r['score1_max_abs_log_ratio']:.3f} | {r['score2_max_abs_log_ratio']:.3f} | "
            f"{r['score1_max_rank_corr']:.3f} | {r['score2_max_rank_corr']:.3f} | "
            f"{r['score1_max_p95_ratio']:.3f} | {r['score2_max_p95_ratio']:.3f} |")
    atomic_write_text(args.out / f"{preset.name}.md", "\n".join(lines) + "\n")
    atomic_write_text(args.out / f"{preset.name}.json",
                      json.dumps({"command": command, "rows": rows}, indent=1) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
