"""Argument types and option groups shared by the units' ``cli`` modules.

The argument types raise ``argparse.ArgumentTypeError``, so argparse reports a bad value as a
usage error naming the option (exit 2) before any model is loaded.
"""

from __future__ import annotations

import argparse
import math
from typing import Any, Callable, TypeVar

__all__ = [
    "add_session_args",
    "budget_list",
    "finite_float",
    "seed",
    "float_list",
    "int_list",
    "name_list",
    "port",
    "positive_float",
    "positive_int",
    "provider_option",
    "providers",
    "session_kwargs",
    "shape",
]

_T = TypeVar("_T")


def _parse_list(text: str, kind: Callable[[str], _T], *, separators: str, expected: str
                ) -> tuple[_T, ...]:
    for sep in separators[1:]:
        text = text.replace(sep, separators[0])
    try:
        values = tuple(kind(v) for v in text.replace(" ", "").split(separators[0]) if v)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from exc
    if not values:
        raise argparse.ArgumentTypeError(f"expected {expected}, got nothing")
    return values


def float_list(text: str) -> tuple[float, ...]:
    """``"0.485, 0.456,0.406"`` -> ``(0.485, 0.456, 0.406)``."""
    return _parse_list(text, float, separators=",", expected="comma-separated numbers")


def _budget(text: str) -> float:
    num, slash, den = text.partition("/")
    divisor = float(den) if slash else 1.0
    value = float(num) / divisor if divisor else math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(text)
    return value


def budget_list(text: str) -> tuple[float, ...]:
    """``"2/255,8/255"`` or ``"0.5,1"`` -> positive floats (``k/255`` for pixel levels)."""
    return _parse_list(text, _budget, separators=",",
                       expected="comma-separated positive budgets (0.5 or 8/255)")


def int_list(text: str) -> tuple[int, ...]:
    """``"1,4,16"`` -> ``(1, 4, 16)``."""
    return _parse_list(text, int, separators=",", expected="comma-separated integers")


def _number(text: str, kind: Callable[[str], _T], ok: Callable[[_T], bool],
            expected: str) -> _T:
    """``kind(text)`` if it converts and ``ok`` holds, else ArgumentTypeError naming
    ``expected``."""
    try:
        value = kind(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from exc
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def finite_float(text: str) -> float:
    """A finite number (``nan``, ``inf`` are refused)."""
    value = _number(text, float, lambda v: True, "a number")
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    return _number(text, float, lambda v: math.isfinite(v) and v > 0, "a positive number")


def seed(text: str) -> int:
    """A noise seed: an integer >= 0."""
    return _number(text, int, lambda v: v >= 0, "an integer >= 0")


def positive_int(text: str) -> int:
    """An integer >= 1 (a count)."""
    return _number(text, int, lambda v: v >= 1, "an integer >= 1")


def port(text: str) -> int:
    """A TCP port number, 1 to 65535."""
    return _number(text, int, lambda v: 0 < v < 65536, "a port number from 1 to 65535")


def name_list(text: str) -> tuple[str, ...]:
    """``"cpu, cuda"`` -> ``("cpu", "cuda")``."""
    return _parse_list(text, str, separators=",", expected="comma-separated names")


def shape(text: str) -> tuple[int, ...]:
    """``"3,224,224"`` or ``"3x224x224"`` -> ``(3, 224, 224)``."""
    return _parse_list(text, int, separators=",x", expected="integers like 3,224,224")


def providers(text: str) -> str | list[str]:
    """``"auto"`` or comma-separated execution-provider names in priority order."""
    names = [p for p in text.replace(" ", "").split(",") if p]
    if not names:
        raise argparse.ArgumentTypeError("expected 'auto' or comma-separated provider names")
    return "auto" if names == ["auto"] else names


def provider_option(text: str) -> tuple[str, str]:
    """``"NAME=VALUE"`` -> ``("NAME", "VALUE")`` (the engine converts and checks the value)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return key.strip(), value.strip()


def add_session_args(parser: argparse.ArgumentParser) -> None:
    """``--providers``, ``--provider-option`` (repeatable) and ``--threads``: how the ONNX Runtime
    session of ``rpdetect.Detector`` is built. Read them back with ``session_kwargs``."""
    parser.add_argument("--providers", type=providers, default="auto", metavar="LIST",
                        help="'auto' (TensorRT > CUDA > CPU, default) or comma-separated names "
                             "in priority order, e.g. cuda,cpu")
    parser.add_argument("--provider-option", type=provider_option, action="append", default=[],
                        metavar="NAME=VALUE", dest="provider_option",
                        help="execution-provider option under ONNX Runtime's name, routed to the "
                             "provider that knows it (e.g. trt_fp16_enable=1, device_id=0); "
                             "repeatable")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="ONNX Runtime intra-op threads (default: ORT's choice)")


def session_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of ``rpdetect.Detector`` given by ``add_session_args``' options:
    ``providers``, ``threads`` and the provider options (flat, under ONNX Runtime's names)."""
    options: dict[str, str] = {}
    for name, value in args.provider_option:
        if name in options or name in ("providers", "threads"):
            raise ValueError(f"--provider-option {name}={value}: {name!r} is given twice (or is "
                             f"--{name}); give each provider option once")
        options[name] = value
    return {"providers": args.providers, "threads": args.threads, **options}


def add_decode_limit_args(parser: argparse.ArgumentParser, *, what: str = "images") -> None:
    """``--max-megapixels`` and ``--max-file-mb``: the engine's decode limits
    (``rpdetect.engine.image_header``), for every command that decodes image files."""
    from .engine.image_header import DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_PIXELS

    parser.add_argument("--max-megapixels", type=positive_float,
                        default=DEFAULT_MAX_PIXELS / 1e6, metavar="MP",
                        help=f"refuse {what} whose header announces more pixels "
                        f"(default {DEFAULT_MAX_PIXELS / 1e6:g}), before decoding them")
    parser.add_argument("--max-file-mb", type=positive_float,
                        default=DEFAULT_MAX_FILE_BYTES / 2**20, metavar="MB",
                        help=f"refuse {what} larger than this, before reading them "
                        f"(default {DEFAULT_MAX_FILE_BYTES / 2**20:g} MiB)")


def decode_limit_kwargs(args: argparse.Namespace) -> dict[str, int]:
    """``max_pixels`` / ``max_file_bytes`` for ``rpdetect.Detector`` from those options."""
    return {"max_pixels": max(1, int(args.max_megapixels * 1e6)),
            "max_file_bytes": max(1, int(args.max_file_mb * 2**20))}
