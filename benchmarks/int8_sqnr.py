"""Where INT8 quantization loses signal, layer by layer, on clean images: `python
benchmarks/int8_sqnr.py --dataset imagenette [--images 6]`.

ONNX Runtime's ``qdq_loss_debug``: the FP32 and the INT8 detector's classifiers (as ``rpdetect
evaluate --precision int8`` prepares them, default options) each run with every intermediate
tensor as an output on the same clean held-out calibration images with their noisy copies
(``InnerBatchReader``), and the signal-to-quantization-noise ratio (dB) of each INT8 activation
against its FP32 twin is printed, in graph order and lowest first. No adversarial example and no
evaluation image is read. Memory grows with ``--images`` (every activation of every feed is
kept: about 0.5 GiB an image at 224x224).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from _preset import open_preset  # noqa: E402  (benchmarks/, the script's folder)
from rpdetect.contract import read_spec  # noqa: E402
from rpdetect.evaluation.presets import PRESETS  # noqa: E402
from rpdetect.evaluation.protocol import prepare_detector, quantization_sample  # noqa: E402
from rpdetect.export.graph import extract_classifier  # noqa: E402
from rpdetect.export.quantize import InnerBatchReader, QuantizeOptions  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    from onnxruntime.quantization import qdq_loss_debug as qdq

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, choices=sorted(PRESETS))
    p.add_argument("--images", type=int, default=6)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--cache", type=Path, default=None, help="rpdetect evaluate's --cache")
    args = p.parse_args(argv)
    with open_preset(args.dataset, args.data, args.cache) as inputs, \
            tempfile.TemporaryDirectory(prefix="rpdetect-sqnr-") as tmp:
        fp32 = prepare_detector(inputs.classifier, **inputs.common)
        int8 = prepare_detector(inputs.classifier, precision="int8", quantize=QuantizeOptions(),
                                **inputs.common)
        used = set(quantization_sample(len(inputs.calibration), QuantizeOptions().max_images))
        held = [i for i in range(len(inputs.calibration)) if i not in used][:args.images]
        images = list(inputs.calibration.images(held))
        spec = read_spec(onnx.load(fp32.path, load_external_data=False))
        activations, order = {}, []
        for name, prepared in (("fp32", fp32), ("int8", int8)):
            clf = extract_classifier(onnx.load(prepared.path))
            plain, augmented = Path(tmp) / f"{name}.onnx", Path(tmp) / f"{name}_aug.onnx"
            onnx.save(clf, plain)
            if name == "fp32":
                order = [out for node in clf.graph.node for out in node.output]
            qdq.modify_model_output_intermediate_tensors(str(plain), str(augmented))
            reader = InnerBatchReader(images, spec, clf.graph.input[0].name,
                                      max_images=len(images), seed=1)
            activations[name] = qdq.collect_activations(str(augmented),
                                                        list(iter(reader.get_next, None)))
    errors = qdq.compute_activation_error(
        qdq.create_activation_matching(activations["int8"], activations["fp32"]))
    sqnr = {k: v["xmodel_err"] for k, v in errors.items() if "xmodel_err" in v}
    print(f"# {args.dataset}: SQNR (dB) of the INT8 activations against FP32, "
          f"{len(images)} held-out calibration images with their copies")
    print("\nin graph order:")
    for k in (k for k in order if k in sqnr):
        print(f"{sqnr[k]:7.2f}  {k}")
    print("\nlowest first:")
    for k in sorted(sqnr, key=sqnr.get)[:15]:
        print(f"{sqnr[k]:7.2f}  {k}")
    print(f"\nmedian {np.median(list(sqnr.values())):.2f} dB over {len(sqnr)} tensors")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
