"""``rpdetect evaluate``: the paper's Table 1 for one dataset."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "evaluate",
        help="attack, detect and tabulate (paper Table 1) on a shared dataset",
        description="Export the zoo classifier, calibrate on clean images, attack evaluation "
        "images with Foolbox, detect, and write table.md/.csv/.json and figures. Everything "
        "intermediate is cached, so an interrupted run resumes.",
    )
    p.add_argument("--dataset", required=True, choices=["imagenette", "dogscats", "cifar10"])
    p.add_argument("--n", type=int, default=100, help="adversarial examples per attack (100)")
    p.add_argument("--attacks", nargs="+", metavar="NAME", help="attack names (default: all)")
    p.add_argument("--cache", type=Path, help="cache folder (default <repo>/cache/eval)")
    p.add_argument("--out", type=Path, help="results folder (default benchmarks/results/DATASET)")
    p.add_argument("--data", type=Path, help="folder of the dataset tars (../shared/data)")
    p.add_argument("--calib-limit", type=int, help="use only the first N calibration images")
    p.add_argument("--quick", action="store_true", help="smoke run: 5 examples, few steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch threads for the attacks (default: all cores)")
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def _command_line() -> str:
    """How this run was started, for the table's header."""
    program = Path(sys.argv[0])
    head = f"python benchmarks/{program.name}" if program.suffix == ".py" else "rpdetect"
    return " ".join([head, shlex.join(sys.argv[1:])])


def run(args: argparse.Namespace) -> int:
    from .pipeline import EvaluationConfig, run_dataset, select_attacks
    from .report import markdown_table

    if args.n < 1:
        raise ValueError(f"--n: expected >= 1, got {args.n}")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads: expected >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    config = EvaluationConfig(
        dataset=args.dataset, n=args.n, attacks=tuple(args.attacks) if args.attacks else None,
        cache_dir=args.cache, out_dir=args.out, data_dir=args.data, calib_limit=args.calib_limit,
        quick=args.quick, seed=args.seed, figures=not args.no_figures,
        progress=not args.no_progress, command=_command_line(),
    )
    result, written = run_dataset(config)
    specs = select_attacks(args.dataset, config.attacks, quick=args.quick)
    for name in result.rules:
        print(f"rule {name}: {result.rules[name].thresholds.describe()}")
        print(markdown_table(result.rows, {s.name: s for s in specs}, name))
    for path in written:
        print(f"wrote {path}")
    return 0
