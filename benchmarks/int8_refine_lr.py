"""The learning rates of the INT8 refinement (``rpdetect.export.refine``), chosen on clean
images: `python benchmarks/int8_refine_lr.py STEPS LR OTHER_LR [--dataset imagenette]`.

Takes the INT8 detector ``rpdetect evaluate --precision int8`` prepares (post-training only; same
cache), refines its classifier for STEPS steps with Adam step LR on the integer weights and LR *
OTHER_LR on the biases and float layers, on the 100 images its ranges came from, and compares
the logits of the FP32, the post-training and the refined classifiers (ONNX Runtime) on the first
120 other clean images of the calibration split, each with its noisy copies: the median and
mean over images of the squared logit difference to FP32, and how many labels agree with FP32.
No adversarial example and no evaluation image is read. Prints one block; the runs behind the
choice in ``refine.py``'s module doc (ImageNette, 300 steps) were made with this script's logic
(before it was a file here, as /tmp/refine/proto.py) on 2026-12-07 13:00-13:30 UTC.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from _preset import open_preset  # noqa: E402  (benchmarks/, the script's folder)
from rpdetect.contract import read_spec  # noqa: E402
from rpdetect.evaluation.presets import PRESETS  # noqa: E402
from rpdetect.evaluation.protocol import prepare_detector, quantization_sample  # noqa: E402
from rpdetect.export.graph import extract_classifier, load_onnx  # noqa: E402
from rpdetect.export.quantize import InnerBatchReader, QuantizeOptions  # noqa: E402
from rpdetect.export.refine import refine_quantized  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    import onnxruntime as ort

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("steps", type=int)
    p.add_argument("lr", type=float)
    p.add_argument("other_lr", type=float)
    p.add_argument("--dataset", default="imagenette", choices=sorted(PRESETS))
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--cache", type=Path, default=ROOT / "cache" / "eval")
    p.add_argument("--held", type=int, default=120)
    args = p.parse_args(argv)
    with open_preset(args.dataset, args.data, args.cache) as run:
        fp32_det = prepare_detector(run.classifier, **run.common)
        int8_det = prepare_detector(run.classifier, precision="int8",
                                    quantize=QuantizeOptions(), **run.common)
        sample = quantization_sample(len(run.calibration), QuantizeOptions().max_images)
        taken = set(sample)
        held = [i for i in range(len(run.calibration)) if i not in taken][:args.held]
        images, held_images = run.calibration.images(sample), run.calibration.images(held)
    fp32_model = load_onnx(fp32_det.path)
    spec = read_spec(fp32_model)
    teacher, int8 = extract_classifier(fp32_model), extract_classifier(load_onnx(int8_det.path))
    name = teacher.graph.input[0].name
    reader = InnerBatchReader([], spec, name, seed=1)
    refined, report = refine_quantized(int8, teacher, list(images), reader.batch,
                                       steps=args.steps, lr=args.lr, other_lr=args.other_lr)
    print(report, flush=True)
    sessions = {k: ort.InferenceSession(m.SerializeToString(),
                                        providers=["CPUExecutionProvider"])
                for k, m in (("fp32", teacher), ("int8", int8), ("refined", refined))}
    held_reader = InnerBatchReader([], spec, name, seed=99)
    mse: dict[str, list[float]] = {"int8": [], "refined": []}
    agree = {k: 0 for k in mse}
    for x in held_images:
        b = held_reader.batch(x)
        z = {k: s.run(None, {name: b})[0] for k, s in sessions.items()}
        for k in mse:
            mse[k].append(float(np.mean((z[k] - z["fp32"]) ** 2)))
            agree[k] += int(z[k][0].argmax() == z["fp32"][0].argmax())
    for k in mse:
        print(f"{k}: held-out logit MSE to FP32 median {np.median(mse[k]):.4f} mean "
              f"{np.mean(mse[k]):.4f}; labels agree {agree[k]} / {len(held_images)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
