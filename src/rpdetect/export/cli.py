"""``rpdetect export-classifier`` and ``rpdetect export``."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any, Sequence

import numpy as np

from .._cli_util import finite_float, float_list, shape
from .._atomic import check_output
from ..contract import INPUT_FORMATS, METADATA_PREFIX, NOISE_MODES, DetectorConfig, read_spec, save
from ..cpu import FULL_RANGE_NOTE
from ..reference import PAPER_KAPPA_MAX, PAPER_KAPPA_MIN, PAPER_N
from .graph import build_detector
from .intake import INPUT_LAYOUTS, IntakeOptions
from .quantize import QuantizeOptions


def kappas_from_args(
    kappas: Sequence[float] | None, n: int, kappa_min: float, kappa_max: float, spacing: str
) -> tuple[float, ...]:
    """Explicit kappas, or ``n`` values from kappa_min to kappa_max (linear as the paper, or log)."""
    if kappas:
        return tuple(kappas)
    if n < 1:
        raise ValueError(f"--n: need at least one noise copy, got {n}")
    if kappa_min > kappa_max:
        raise ValueError(f"--kappa-min {kappa_min:g} is above --kappa-max {kappa_max:g}; swap "
                         f"them (kappas run from the smallest noise scale to the largest)")
    if spacing == "log":
        if kappa_min <= 0:
            raise ValueError("--kappa-spacing log needs --kappa-min > 0")
        return tuple(float(k) for k in np.geomspace(kappa_min, kappa_max, n))
    return tuple(float(k) for k in np.linspace(kappa_min, kappa_max, n))


def register(sub: Any) -> None:
    p = sub.add_parser(
        "export-classifier",
        help="PyTorch module -> classifier ONNX with pixel-space [0, 1] input",
        description="Export a PyTorch classifier to ONNX (dynamo exporter, dynamic batch, weights "
        "inside the file), folding its normalisation in so the ONNX input is RGB in [0, 1].",
    )
    p.add_argument("--model", required=True, metavar="PKG.MODULE:FACTORY",
                   help="factory returning the torch.nn.Module, e.g. rpdetect.zoo.efficientnet_lite0:build")
    p.add_argument("--weights", help="state_dict file (loaded with torch.load(weights_only=True))")
    p.add_argument("--input-shape", type=shape, required=True, metavar="C,H,W")
    p.add_argument("--mean", type=float_list, help="per-channel mean the model expects, e.g. 0.485,0.456,0.406")
    p.add_argument("--std", type=float_list, help="per-channel std the model expects")
    p.add_argument("--opset", type=int, default=20, help="ONNX opset (18-21; default 20)")
    p.add_argument("-o", "--output", required=True, help="classifier .onnx to write")
    p.set_defaults(func=_export_classifier)

    d = sub.add_parser(
        "export",
        help="classifier ONNX -> detector ONNX (noise, scores and verdict fused in the graph)",
        description="Fuse the paper's detector around any classifier ONNX ([N, C, H, W] or "
        "[N, H, W, 3] -> logits [N, K]; a fixed batch axis is made dynamic and checked). No "
        "torch needed. Notes on what was adapted go to stderr.",
    )
    d.add_argument("classifier", help="classifier .onnx")
    d.add_argument("-o", "--output", required=True, help="detector .onnx to write")
    d.add_argument("--mean", type=float_list, help="fold (x - mean) / std in front of the classifier")
    d.add_argument("--std", type=float_list)
    d.add_argument("--kappas", type=float_list, help="explicit noise scales, comma-separated")
    d.add_argument("--n", type=int, default=PAPER_N,
                   help=f"number of noisy copies (default {PAPER_N}, the paper's)")
    d.add_argument("--kappa-min", type=finite_float, default=PAPER_KAPPA_MIN)
    d.add_argument("--kappa-max", type=finite_float, default=PAPER_KAPPA_MAX)
    d.add_argument("--kappa-spacing", choices=("linear", "log"), default="linear")
    d.add_argument("--noise", choices=NOISE_MODES, default="graph",
                   help="graph: RandomNormalLike inside the graph; input: noise is a graph input")
    d.add_argument("--seed", type=finite_float,
                   help="seed attribute of the random op (graph noise); a finite number")
    d.add_argument("--batch", type=int, default=1, help="images per run B (inner batch B*(n+1))")
    d.add_argument("--clip", action="store_true", help="clip noisy copies to [0, 1] (paper: no)")
    d.add_argument("--input-format", choices=INPUT_FORMATS, default="float-nchw")
    d.add_argument("--input-shape", type=shape, metavar="C,H,W",
                   help="needed only when the classifier leaves C/H/W dynamic")
    d.add_argument("--classifier-output", metavar="NAME",
                   help="classifier output holding the logits (needed when there are several, "
                   "unless exactly one is a float [N, K])")
    d.add_argument("--input-layout", choices=INPUT_LAYOUTS, default="auto",
                   help="classifier input layout: auto (default; [N, H, W, 3] is read as NHWC, "
                   "with a message), nchw, nhwc (a Transpose in the graph makes the detector "
                   "take NCHW)")
    d.add_argument("--probabilities-to-log", action="store_true",
                   help="the classifier output is probabilities: insert Log (log-probabilities "
                   "are the logits minus a per-image constant, so score1 and score2 are those "
                   "of the logits); without it such an output is refused")
    d.add_argument("--single-logit-as-two-class", action="store_true",
                   help="a single-logit (K = 1) output z becomes the two-class logits [0, z]; "
                   "without it K = 1 is refused (both scores would always be 0)")
    d.add_argument("--threshold1", type=float, default=math.inf)
    d.add_argument("--threshold2", type=float, default=math.inf)
    q = d.add_argument_group(
        "INT8", "quantize the classifier inside the detector with ONNX Runtime's static "
        "quantization (rpdetect.export.quantize); noise, scores and verdict stay float32; "
        "calibrate the INT8 detector on its own scores afterwards")
    q.add_argument("--quantize", choices=("int8",), help="int8: QDQ, per-channel int8 weights, "
                   "uint8 activations calibrated on --calibration-images")
    q.add_argument("--calibration-images", metavar="DIR",
                   help="clean images (a folder, searched recursively) for the activation "
                   "ranges; each is fed with its n noisy copies, as the detector feeds it")
    q.add_argument("--calibration-limit", type=int, default=QuantizeOptions.max_images,
                   metavar="N", help=f"images used, a random sample when there are more "
                   f"(default {QuantizeOptions.max_images})")
    q.add_argument("--calibrate-method", choices=("minmax", "entropy", "percentile"),
                   default="minmax", help="ONNX Runtime's range method (default minmax; "
                   "entropy and percentile keep every activation in memory: use a small "
                   "--calibration-limit on large inputs)")
    q.add_argument("--quant-format", choices=("qdq", "qoperator"), default="qdq")
    q.add_argument("--reduce-range", action="store_true",
                   help="7-bit weights, for x86 CPUs without VNNI (AVX2, or AVX-512 without "
                   "VNNI): there ONNX Runtime's u8 x s8 kernels saturate on full-range weights "
                   "and do not compute the INT8 model's logits exactly")
    q.add_argument("--quantize-head", choices=("float", "int8"), default="float",
                   help="float (default): keep the classifier's head (its last weighted layer "
                   "and what follows it to the logits) in float32: uint8 logits round away "
                   "the logit differences both scores are made of and clip logits beyond the "
                   "calibrated range; int8: quantize it too")
    q.add_argument("--quantize-stem", choices=("float", "int8"), default="int8",
                   help="int8 (default): quantize the layer that reads the image too; float: "
                   "keep it (and a folded normalisation before it) in float32, so the noisy "
                   "copies are not rounded to uint8 first (better scores, a little slower)")
    q.add_argument("--refine-steps", type=int, default=0, metavar="N",
                   help="after ONNX Runtime's quantization, N steps of quantization-aware "
                   "refinement: the integer weights and biases (and the float head) nudged "
                   "toward the FP32 classifier's logits on the calibration images and their "
                   "noisy copies (rpdetect.export.refine; needs torch; ~1 s a step at "
                   "224x224 on 2 cores; default 0: none)")
    q.add_argument("--refine-lr", type=float, default=QuantizeOptions.refine_lr, metavar="LR",
                   help=f"the refinement's Adam step, in integer weight steps (default "
                   f"{QuantizeOptions.refine_lr})")
    q.add_argument("--nodes-to-exclude", type=lambda v: tuple(x for x in v.split(",") if x),
                   default=(), metavar="NAME[,NAME...]",
                   help="more classifier nodes to keep in float32, by name (ONNX Runtime's "
                   "nodes_to_exclude)")
    d.set_defaults(func=_export)


def _export_classifier(args: argparse.Namespace) -> int:
    from .torch_export import load_module, torch_to_onnx

    module = load_module(args.model, args.weights)
    out = torch_to_onnx(module, args.output, input_shape=args.input_shape, mean=args.mean,
                        std=args.std, opset=args.opset)
    print(f"wrote {out}")
    return 0


def _export(args: argparse.Namespace) -> int:
    config = DetectorConfig(
        kappas=kappas_from_args(args.kappas, args.n, args.kappa_min, args.kappa_max,
                                args.kappa_spacing),
        noise=args.noise,
        seed=args.seed,
        batch=args.batch,
        clip=args.clip,
        mean=args.mean,
        std=args.std,
        input_format=args.input_format,
        threshold1=args.threshold1,
        threshold2=args.threshold2,
    )
    intake = IntakeOptions(
        probabilities="log" if args.probabilities_to_log else "refuse",
        single_logit="two-class" if args.single_logit_as_two_class else "refuse",
        input_layout=args.input_layout)
    if args.quantize and not args.calibration_images:
        raise ValueError("--quantize int8 needs --calibration-images DIR (clean images for the "
                         "activation ranges)")
    if args.calibration_images and not args.quantize:
        raise ValueError("--calibration-images is for --quantize int8 (thresholds are "
                         "calibrated by `rpdetect calibrate`)")
    if args.refine_steps and not args.quantize:
        raise ValueError("--refine-steps is for --quantize int8")
    check_output(args.output, what="output", inputs=[args.classifier])  # before any work
    if args.quantize:
        from ..calibration.reader import FolderReader
        from .quantize import build_int8_detector

        options = QuantizeOptions(
            quant_format=args.quant_format, calibrate_method=args.calibrate_method,
            reduce_range=args.reduce_range, max_images=args.calibration_limit,
            float_head=args.quantize_head == "float", float_stem=args.quantize_stem == "float",
            nodes_to_exclude=args.nodes_to_exclude, refine_steps=args.refine_steps,
            refine_lr=args.refine_lr)
        reader = FolderReader(args.calibration_images, limit=args.calibration_limit,
                              shuffle_seed=0)
        model = build_int8_detector(args.classifier, config, reader, options=options,
                                    classifier_output=args.classifier_output,
                                    input_shape=args.input_shape, intake=intake)
    else:
        model = build_detector(args.classifier, config, classifier_output=args.classifier_output,
                               input_shape=args.input_shape, intake=intake)
    meta = {p.key: p.value for p in model.metadata_props}
    for note in json.loads(meta.get(METADATA_PREFIX + "classifier_intake", "[]")):
        print(f"rpdetect export: note: {note}", file=sys.stderr)
    if read_spec(model).int8_full_range():
        print(f"rpdetect export: note: {FULL_RANGE_NOTE}", file=sys.stderr)
    out = save(model, args.output)
    state = "calibrated" if math.isfinite(args.threshold1) or math.isfinite(args.threshold2) else \
        "uncalibrated (thresholds +inf: never flags; run `rpdetect calibrate`)"
    precision = ", int8 classifier" if args.quantize else ""
    print(f"wrote {out}: {len(config.kappas)} noisy copies, noise={config.noise}, "
          f"batch={config.batch}{precision}, {state}")
    return 0
