"""``rpdetect`` command line: a thin layer over the library.

Each unit registers its own subcommands (``register(subparsers)`` in its ``cli`` module), so the
folder layout shows where each command lives.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from ._version import __version__
from .errors import RpdetectError

# (module, what it adds) in the order shown by --help
_UNITS: tuple[str, ...] = (
    "rpdetect.export.cli",  # export-classifier, export
    "rpdetect.engine.cli",  # detect, info
    "rpdetect.calibration.cli",  # calibrate
    "rpdetect.evaluation.cli",  # evaluate
    "rpdetect.bench.cli",  # bench
    "rpdetect.serving.cli",  # export-triton, serve
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rpdetect",
        description="Adversarial-example detection by random pixel-space perturbation, "
        "fused into one ONNX graph.",
    )
    parser.add_argument("--version", action="version", version=f"rpdetect {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _UNITS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that unit is not there (yet); the others still work
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (RpdetectError, ValueError, FileNotFoundError) as exc:
        print(f"rpdetect {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a write that failed outside rpdetect's own checks
        name = f"{exc.filename}: " if exc.filename else ""
        print(f"rpdetect {args.command}: error: {name}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rpdetect {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
