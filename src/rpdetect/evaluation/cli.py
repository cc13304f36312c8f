"""``rpdetect evaluate``: the paper's Table 1 for a preset dataset, or for your own classifier
(an ONNX file or a torch module) on your own images."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from .._cli_util import budget_list, finite_float, float_list, shape

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "evaluate",
        help="attack, detect and tabulate (paper Table 1): a preset dataset or your own model",
        description="Build the detector around a classifier, calibrate it on clean images, "
        "attack evaluation images, detect, and write table.md/.csv/.json, figures and ROC "
        "curves. The classifier is a preset (--dataset), an ONNX file (--classifier: black-box "
        "attacks through ONNX Runtime) or a torch module (--torch: white-box Foolbox attacks "
        "too). Everything intermediate is cached by the model's hash and the attack settings, "
        "so an interrupted run resumes.",
    )
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--dataset", choices=["imagenette", "dogscats", "cifar10"],
                       help="one of the paper's datasets (its zoo classifier and tar)")
    model.add_argument("--classifier", type=Path, metavar="CLF.onnx",
                       help="your classifier: [N, C, H, W] pixels in [0, 1] -> [N, K] logits")
    model.add_argument("--torch", metavar="PKG.MODULE:FACTORY",
                       help="your classifier as a factory returning a torch.nn.Module on "
                       "normalised input (with --input-shape, --weights, --mean, --std)")
    p.add_argument("--calibration-images", type=Path, metavar="DIR",
                   help="clean images, any folder layout: the thresholds come from these")
    p.add_argument("--images", type=Path, metavar="DIR",
                   help="evaluation images as an ImageFolder tree DIR/<class>/<image>; class "
                   "folders are class indices, or names mapped by --class-map")
    p.add_argument("--class-map", type=Path, metavar="MAP.json",
                   help="JSON object: class folder name -> class index")
    p.add_argument("--weights", type=Path, help="--torch: state_dict (weights_only=True)")
    p.add_argument("--input-shape", type=shape, metavar="C,H,W",
                   help="--torch: the image shape (required); --classifier: only if symbolic")
    p.add_argument("--mean", type=float_list, help="--torch: per-channel mean it expects")
    p.add_argument("--std", type=float_list, help="--torch: per-channel std it expects")
    p.add_argument("--kappas", type=float_list, help="noise scales (default: the preset's, "
                   "else the paper's linspace(0.01, 0.1, 10))")
    p.add_argument("--n", type=int, default=100, help="adversarial examples per attack (100)")
    p.add_argument("--fpr", type=finite_float, default=0.05,
                   help="false-positive budget the rules are calibrated for (0.05)")
    p.add_argument("--attacks", nargs="+", metavar="NAME",
                   help="attack names (default: the white-box table for --dataset/--torch "
                   "and for --attack-target int8, the black-box one for --classifier, whose "
                   "white-box attacks, when named, run on its graph interpreted in torch)")
    p.add_argument("--cache", type=Path,
                   help="cache folder (default $XDG_CACHE_HOME/rpdetect/evaluate)")
    p.add_argument("--out", type=Path, help="results folder (default <cache>/results/<name>)")
    p.add_argument("--data", type=Path,
                   help="--dataset: folder of the dataset tars (default $RPDETECT_DATA, else "
                   "../shared/data)")
    p.add_argument("--calib-limit", type=int, help="use only the first N calibration images")
    p.add_argument("--quick", action="store_true", help="smoke run: 5 examples, few steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch threads for the attacks (default: all cores)")
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--precision", choices=("fp32", "int8"), default="fp32",
                   help="int8: the detector's classifier quantized by ONNX Runtime "
                   "(rpdetect export --quantize int8) on a random 100 of the calibration "
                   "images, then calibrated on its own scores; the attacks still target the "
                   "float model")
    p.add_argument("--quantize-method", choices=("minmax", "entropy", "percentile"),
                   default="minmax", help="--precision int8: ONNX Runtime's range method")
    p.add_argument("--quantize-head", choices=("float", "int8"), default="float",
                   help="--precision int8: keep the classifier's head (its last weighted layer "
                   "to the logits) in float32 (default), or quantize it too")
    p.add_argument("--quantize-stem", choices=("float", "int8"), default="int8",
                   help="--precision int8: quantize the layer that reads the image (default), "
                   "or keep it in float32")
    p.add_argument("--quantize-reduce-range", action="store_true",
                   help="--precision int8: 7-bit weights (rpdetect export --reduce-range), "
                   "which ONNX Runtime computes exactly on x86 CPUs without VNNI")
    p.add_argument("--quantize-refine-steps", type=int, default=0, metavar="N",
                   help="--precision int8: N steps of quantization-aware refinement toward "
                   "the FP32 classifier on the quantization images (rpdetect export "
                   "--refine-steps; default 0: none)")
    p.add_argument("--attack-target", choices=("fp32", "int8"), default="fp32",
                   help="the classifier the attacks run on: fp32 (default; with --precision "
                   "int8 the examples transfer to the INT8 detector), or int8: the INT8 "
                   "detector's own classifier (white-box through its torch twin with "
                   "straight-through rounding, also for a --classifier ONNX file, black-box "
                   "through ONNX Runtime); needs --precision int8")
    p.add_argument("--positives", choices=("attack", "deployed", "both"), default="attack",
                   help="attack (default): every successful attack on the float model is a "
                   "positive; deployed: only those the detector's own classifier (the quantized "
                   "one for --precision int8) misclassifies too; both: only those the FP32 and "
                   "the INT8 classifiers both misclassify (the same positives for --precision "
                   "fp32 and int8: the two detectors compared on the same examples)")
    adaptive = p.add_argument_group(
        "adaptive attacks", "attacks that know the detector (--attacks adaptive-pgd-linf "
        "adaptive-pgd-l2 logit-match-linf logit-match-l2, -t for targeted): each at four "
        "budgets, against the detector calibrated with every rule; writes adaptive.md/.csv/.json")
    adaptive.add_argument("--eot", type=int, metavar="K",
                          help="noise draws (of the n copies each) per attack step (16)")
    adaptive.add_argument("--adaptive-steps", type=int, metavar="N",
                          help="PGD steps of the adaptive attacks (100)")
    adaptive.add_argument("--adaptive-epsilons", type=budget_list, metavar="LIST",
                          help="budgets of the adaptive attacks, e.g. 4/255,8/255 or 0.5,1 "
                          "(default: four per norm, scaled to the image size); one norm at a "
                          "time")
    adaptive.add_argument("--adaptive-keep", choices=("last", "best"), default="last",
                          help="adaptive PGD's answer for an image that never passes its own "
                          "check: the last iterate (default) or the misclassifying one with the "
                          "lowest detector penalty (best: stronger where the penalty pushes "
                          "iterates back over the decision boundary)")
    adaptive.add_argument("--adaptive-target", default="strictest",
                          choices=("strictest", "paper", "joint", "combined", "per-kappa"),
                          help="the thresholds adaptive PGD evades: the lowest of every rule "
                          "per statistic (strictest, default: one run measured under every "
                          "rule) or one rule's")
    p.set_defaults(func=run)


def _command_line() -> str:
    """How this run was started, for the table's header."""
    program = Path(sys.argv[0])
    head = f"python benchmarks/{program.name}" if program.suffix == ".py" else "rpdetect"
    return " ".join([head, shlex.join(sys.argv[1:])])


def run(args: argparse.Namespace) -> int:
    from .pipeline import EvaluationConfig, TorchSource, run_evaluation
    from .report import adaptive_markdown, markdown_table

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads: expected >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    torch_source = None
    if args.torch is not None:
        if args.input_shape is None or len(args.input_shape) != 3:
            raise ValueError("--torch needs --input-shape C,H,W")
        torch_source = TorchSource(args.torch, tuple(args.input_shape), args.weights,
                                   args.mean, args.std)
    elif args.weights or args.mean or args.std:
        raise ValueError("--weights/--mean/--std describe a --torch model; give --torch too")
    config = EvaluationConfig(
        dataset=args.dataset, classifier=args.classifier, torch=torch_source,
        calibration_images=args.calibration_images, images=args.images,
        class_map=args.class_map,
        input_shape=tuple(args.input_shape) if args.input_shape and args.classifier else None,
        kappas=tuple(args.kappas) if args.kappas else None, n=args.n,
        attacks=tuple(args.attacks) if args.attacks else None, cache_dir=args.cache,
        out_dir=args.out, data_dir=args.data, calib_limit=args.calib_limit, quick=args.quick,
        seed=args.seed, fpr=args.fpr, figures=not args.no_figures,
        progress=not args.no_progress, command=_command_line(), precision=args.precision,
        positives=args.positives, attack_target=args.attack_target,
        quantize_method=args.quantize_method,
        quantize_head=args.quantize_head, quantize_stem=args.quantize_stem,
        quantize_refine_steps=args.quantize_refine_steps,
        quantize_reduce_range=args.quantize_reduce_range,
        eot=args.eot,
        adaptive_steps=args.adaptive_steps, adaptive_target=args.adaptive_target,
        adaptive_epsilons=args.adaptive_epsilons, adaptive_keep=args.adaptive_keep,
    )
    run_ = run_evaluation(config)
    result, specs = run_.result, run_.specs
    if result is not None:
        for name in result.rules:
            print(f"rule {name}: {result.rules[name].thresholds.describe()}")
            print(markdown_table(result.rows, {s.name: s for s in specs}, name))
    if run_.adaptive is not None:
        for name, r in run_.adaptive.rules.items():
            print(f"adaptive, rule {name}: {r.thresholds.describe()}")
            print(adaptive_markdown(run_.adaptive.results, name))
    for path in run_.written:
        print(f"wrote {path}")
    return 0
