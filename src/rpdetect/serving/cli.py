"""``rpdetect export-triton`` and ``rpdetect serve``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .._cli_util import (
    add_decode_limit_args,
    add_session_args,
    decode_limit_kwargs,
    port,
    positive_float,
    positive_int,
    session_kwargs,
)
from ..contract import load
from ..cpu import FULL_RANGE_NOTE
from .protocol import DEFAULT_MAX_IMAGES, DEFAULT_MAX_REQUEST_BYTES
from .triton import ACCELERATORS, check_model_name, other_versions, write_repository

_DEFAULT_MAX_REQUEST_MB = DEFAULT_MAX_REQUEST_BYTES / 2**20


def _model_name(text: str) -> str:
    try:
        return check_model_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def register(sub: Any) -> None:
    t = sub.add_parser(
        "export-triton",
        help="write a Triton Inference Server model repository for a detector",
        description="Write REPO/NAME/1/model.onnx (the detector, as it is) and "
                    "REPO/NAME/config.pbtxt for Triton's ONNX Runtime backend: platform "
                    "onnxruntime_onnx, max_batch_size 0 with the file's full dims (the batch of "
                    "n+1 is inside the graph), every input and output, the thresholds optional. "
                    "Existing files are replaced atomically.",
    )
    t.add_argument("model", help="detector .onnx (from `rpdetect export`)")
    t.add_argument("--repo", required=True, metavar="DIR",
                   help="model repository folder (created if its parent exists)")
    t.add_argument("--name", type=_model_name, help="model name (default: the file's stem)")
    t.add_argument("--instances", type=positive_int, default=1, metavar="N",
                   help="model instances (instance_group count, default 1)")
    t.add_argument("--accelerator", choices=ACCELERATORS, default="none",
                   help="none: CPU instances (default); cuda: GPU instances (ONNX Runtime's "
                        "CUDA provider); tensorrt: GPU instances with ONNX Runtime's TensorRT "
                        "execution accelerator")
    t.add_argument("--fp16", action="store_true",
                   help="with --accelerator tensorrt: let TensorRT run in FP16 (check the "
                        "scores against FP32 first: score1/score2 are small differences)")
    t.set_defaults(func=_export_triton)

    s = sub.add_parser(
        "serve",
        help="serve a detector over the Open Inference Protocol (KServe v2, REST and gRPC)",
        description="Host a detector with KServe's ModelServer: /v2/health/ready, "
                    "/v2/models/NAME (metadata), /v2/models/NAME/infer over REST, and the same "
                    "over gRPC. A request's `image` is the file's tensor (FP32 NCHW or UINT8 "
                    "NHWC, any number of images) or BYTES (encoded PNG/JPEG files, decoded and "
                    "resized with the engine's policy); every detector output comes back. Bad "
                    "requests get HTTP 400 / gRPC INVALID_ARGUMENT naming what was wrong.",
    )
    s.add_argument("model", help="detector .onnx (from `rpdetect export`)")
    s.add_argument("--name", type=_model_name, help="model name (default: the file's stem)")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 "
                        "for every interface)")
    s.add_argument("--http-port", type=port, default=8080, help="REST port (default 8080)")
    s.add_argument("--grpc-port", type=port, default=8081, help="gRPC port (default 8081)")
    s.add_argument("--max-images", type=positive_int, default=DEFAULT_MAX_IMAGES, metavar="N",
                   help=f"most images in one request (default {DEFAULT_MAX_IMAGES})")
    s.add_argument("--max-request-mb", type=positive_float, default=_DEFAULT_MAX_REQUEST_MB,
                   metavar="MB", help="largest request body / gRPC message "
                   f"(default {_DEFAULT_MAX_REQUEST_MB:g} MiB)")
    add_decode_limit_args(s, what="encoded images")
    s.add_argument("--grpc-threads", type=positive_int, default=4, metavar="N",
                   help="gRPC server threads (default 4)")
    add_session_args(s)
    s.set_defaults(func=_serve)


def _export_triton(args: argparse.Namespace) -> int:
    files = write_repository(args.model, args.repo, name=args.name, instances=args.instances,
                             accelerator=args.accelerator, fp16=args.fp16)
    print(f"wrote {files.model}")
    print(f"wrote {files.config}")
    others = other_versions(files)
    if others:
        print(f"rpdetect export-triton: note: {files.model_dir} also holds version(s) "
              f"{', '.join(others)}; Triton's default version policy serves the highest",
              file=sys.stderr)
    if load(files.model, weights=False)[1].int8_full_range():
        print(f"rpdetect export-triton: note: {FULL_RANGE_NOTE}", file=sys.stderr)
    print(f"start Triton on it: tritonserver --model-repository={Path(args.repo).resolve()}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from ..engine import Detector
    from .server import ServeOptions, serve  # imports kserve (a second or two)

    detector = Detector(args.model, **session_kwargs(args),
                        **decode_limit_kwargs(args))
    options = ServeOptions(host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
                           max_request_bytes=int(args.max_request_mb * 2**20),
                           grpc_threads=args.grpc_threads)
    name = args.name or _model_name(Path(args.model).stem)
    try:
        serve(detector, name, options, max_images=args.max_images,
              announce=lambda where: print(f"rpdetect serve: {where}; Ctrl-C stops",
                                           file=sys.stderr, flush=True))
    finally:
        detector.close()
    return 0
