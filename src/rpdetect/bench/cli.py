"""``rpdetect bench``: latency of a detector against its batch-(n+1) floor and the naive way."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from .._atomic import check_output, check_output_dir
from .._cli_util import float_list, int_list, name_list, shape
from ..engine.noise import NOISE_GENERATORS
from .cases import SessionSettings, TorchModel
from .providers import DEFAULT_VARIANTS
from .report import Targets
from .runner import QUICK, Timing
from .suite import DEFAULT_BATCHES, run_benchmark


def register(sub: Any) -> None:
    p = sub.add_parser(
        "bench",
        help="latency: detector vs. its batch-(n+1) floor and the naive PyTorch way",
        description="Time the fused detector, the classifier alone at batch 1 and at the "
        "detector's inner batch (the floor), graph- and input-noise detectors at several B, and "
        "(with --torch) the naive eager PyTorch way; each configuration in its own process, "
        "interleaved in rounds. Prints a Markdown table; --out DIR also writes JSON + Markdown.",
    )
    p.add_argument("detector", help="detector .onnx (rpdetect export)")
    p.add_argument("--classifier", help="classifier .onnx for the classifier-alone configurations "
                   "(default: the classifier inside the detector)")
    p.add_argument("--torch", metavar="PKG.MODULE:FACTORY",
                   help="torch module (normalised input -> logits) for the naive configurations, "
                   "e.g. rpdetect.zoo.efficientnet_lite0:build")
    p.add_argument("--weights", help="state_dict for --torch (torch.load weights_only=True)")
    p.add_argument("--mean", type=float_list, help="normalisation --torch expects")
    p.add_argument("--std", type=float_list)
    p.add_argument("--input-shape", type=shape, metavar="C,H,W",
                   help="default: the detector's")
    p.add_argument("--int8", metavar="DET_INT8.onnx",
                   help="an INT8 detector of the same classifier (rpdetect export --quantize "
                   "int8): timed the same way, its ratios taken to the FP32 floor")
    p.add_argument("--target-int8", type=float,
                   help="report whether INT8 detector / FP32 floor <= this")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    p.add_argument("--providers", type=name_list, default=DEFAULT_VARIANTS,
                   help=f"provider variants (default {','.join(DEFAULT_VARIANTS)}; missing ones "
                   "are listed as skipped)")
    p.add_argument("--batches", type=int_list, default=DEFAULT_BATCHES,
                   help="images per detector run (default 1,4,16; 1 is always included)")
    p.add_argument("--graph-optimization", choices=("disable", "basic", "extended", "all"),
                   default="all")
    p.add_argument("--no-spinning", action="store_true",
                   help="session.intra_op.allow_spinning=0 (idle threads sleep instead of spin)")
    p.add_argument("--noise-generator", choices=NOISE_GENERATORS, default=None,
                   help="how input-noise configurations draw their noise, as rpdetect.Detector "
                   "(default: rpdetect.Detector's, xoshiro where built)")
    p.add_argument("--noise-threads", type=int, metavar="N",
                   help="threads drawing one noise array (default: 2 where there are 2 cores)")
    p.add_argument("--rounds", type=int, help=f"interleaved rounds (default {Timing().rounds})")
    p.add_argument("--round-time", type=float, metavar="S",
                   help=f"seconds per configuration per round (default {Timing().round_time_s})")
    p.add_argument("--gap-ms", type=float, default=0.0, metavar="MS",
                   help="idle time after every timed run, every configuration alike (default 0: "
                   "back to back)")
    p.add_argument("--aa", action="store_true",
                   help="time the floor twice, in two worker processes: their ratio (the "
                   "floor's A/A twin / floor) is the measurement's own noise")
    p.add_argument("--restart-every", type=int, default=0, metavar="K",
                   help="a fresh worker process per configuration every K rounds, so a "
                   "process's own speed becomes round-to-round noise (default 0: one process "
                   "per configuration for the whole run)")
    p.add_argument("--quick", action="store_true", help="a few runs only (smoke test)")
    p.add_argument("--no-profile", action="store_true", help="skip the ONNX Runtime profile")
    p.add_argument("--in-process", action="store_true",
                   help="run configurations in this process (debugging; peak RSS is shared)")
    p.add_argument("--target-floor", type=float, help="report whether detector/floor <= this")
    p.add_argument("--target-naive", type=float, help="report whether naive/detector >= this")
    p.add_argument("--out", type=Path, help="folder for <stem>.json and <stem>.md")
    p.add_argument("--stem", help="file name stem (default: latency-<detector name>)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    detector = Path(args.detector)
    if not detector.is_file():
        raise FileNotFoundError(f"{detector}: no such detector file")
    if args.threads < 1:
        raise ValueError(f"--threads: expected >= 1, got {args.threads}")
    torch_model = None
    if args.torch:
        from ..contract import load

        _, info = load(detector, weights=False)
        shape = tuple(args.input_shape or info.input_shape)
        if len(shape) != 3:
            raise ValueError(f"--input-shape: expected C,H,W, got {shape}")
        torch_model = TorchModel(spec=args.torch, input_shape=shape,  # type: ignore[arg-type]
                                 weights=args.weights, mean=args.mean, std=args.std)
        from ..export.torch_export import load_module

        load_module(args.torch, args.weights)  # bad weights: refused here, not in a worker
    elif args.weights or args.mean or args.std:
        raise ValueError("--weights/--mean/--std describe the --torch model; give --torch too")
    timing = QUICK if args.quick else Timing()
    if args.rounds is not None:
        if args.rounds < 1:
            raise ValueError(f"--rounds: expected >= 1, got {args.rounds}")
        timing = replace(timing, rounds=args.rounds)
    if args.round_time is not None:
        timing = replace(timing, round_time_s=args.round_time)
    if args.noise_threads is not None and args.noise_threads < 1:
        raise ValueError(f"--noise-threads: expected >= 1, got {args.noise_threads}")
    if args.gap_ms < 0:
        raise ValueError(f"--gap-ms: expected >= 0, got {args.gap_ms}")
    if args.restart_every < 0:
        raise ValueError(f"--restart-every: expected >= 0, got {args.restart_every}")
    timing = replace(timing, gap_s=args.gap_ms / 1000.0, restart_every=args.restart_every)
    stem = args.stem or f"latency-{detector.stem}"
    if args.out is not None:  # before minutes of timing, not after
        check_output_dir(args.out, what="--out")
        for suffix in (".json", ".md"):
            check_output(args.out / f"{stem}{suffix}", what="--out file")
    report = run_benchmark(
        detector,
        classifier=args.classifier,
        torch_model=torch_model,
        providers=args.providers,
        batches=args.batches,
        settings=SessionSettings(threads=args.threads, graph_optimization=args.graph_optimization,
                                 spinning=not args.no_spinning,
                                 noise_generator=args.noise_generator,
                                 noise_threads=args.noise_threads),
        timing=timing,
        isolate=not args.in_process,
        floor_twin=args.aa,
        profile_runs=0 if args.no_profile else (3 if args.quick else 10),
        targets=Targets(args.target_floor, args.target_naive, args.target_int8),
        log=lambda msg: print(msg, file=sys.stderr),
        int8_detector=args.int8,
    )
    report.settings["command"] = "rpdetect bench " + " ".join(sys.argv[2:])
    print(report.to_markdown())
    if args.out is not None:
        js, md = report.write(args.out, stem)
        print(f"wrote {js} and {md}", file=sys.stderr)
    failed = [o for o in report.outcomes if o.status == "failed"]
    for o in failed:
        print(f"rpdetect bench: error: {o.case.name} failed: {o.reason}", file=sys.stderr)
    return 1 if failed else 0
