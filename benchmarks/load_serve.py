"""Load test of ``rpdetect serve`` (issue 15): throughput and p50/p99 latency over REST and gRPC
at concurrency 1, 4 and 16 on loopback, next to the in-process ``rpdetect.Detector`` driven by
the same number of threads on the same machine.

perf_analyzer (Triton's load generator) is not usable here: the only ``perf-analyzer`` on PyPI
(0.1.0) is an empty placeholder without the binary. This script does what its concurrency mode
does: C closed-loop workers, each sending its next request when the previous one is answered
(one tritonclient client per worker), for a fixed time after a warm-up, every latency recorded.

The detector: the zoo's CIFAR-10 ResNet-9 (trained weights, 32x32) with the paper's kappas and
input noise (the fast mode on CPUs; the server's Detector draws the noise), exported once to
``cache/load-serve/`` (needs torch), or any detector given with ``--model``. Each request is one
FP32 [1, 3, 32, 32] image, every output returned.

    .venv/bin/python benchmarks/load_serve.py [--model DETECTOR.onnx] [--duration 10]
        [--rounds 4] [--concurrency 1,4,16] [--threads 1] [--out benchmarks/results/serving]

Writes ``load.json`` and ``load.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "serving"
DEFAULT_CACHE = ROOT / "cache" / "load-serve"
START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Cell:
    mode: str  # "in-process", "REST", "gRPC"
    concurrency: int
    requests: int
    errors: int
    seconds: float
    throughput: float  # requests (= images) per second
    p50_ms: float
    p99_ms: float


def zoo_detector(cache: Path) -> Path:
    """The CIFAR-10 ResNet-9 detector with input noise, exported once."""
    from rpdetect.export import DetectorConfig, build_detector, load_onnx, save_onnx
    from rpdetect.export.torch_export import torch_to_onnx
    from rpdetect.zoo import cifar10_cnn

    cache.mkdir(parents=True, exist_ok=True)
    detector = cache / "cifar10_cnn-input-noise.onnx"
    if detector.exists():
        return detector
    if not cifar10_cnn.WEIGHTS.exists():
        sys.exit(f"{cifar10_cnn.WEIGHTS} is missing; pass --model DETECTOR.onnx")
    classifier = torch_to_onnx(cifar10_cnn.build(), cache / "cifar10_cnn.onnx",
                               input_shape=cifar10_cnn.INPUT_SHAPE, mean=cifar10_cnn.MEAN,
                               std=cifar10_cnn.STD)
    save_onnx(build_detector(load_onnx(classifier), DetectorConfig(noise="input")), detector)
    return detector


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(model: Path, threads: int, log: Path) -> tuple[subprocess.Popen, int, int]:
    import tritonclient.http as httpclient

    http_port, grpc_port = free_port(), free_port()
    with open(log, "wb") as fh:
        process = subprocess.Popen(
            [sys.executable, "-m", "rpdetect", "serve", str(model), "--name", "det",
             "--http-port", str(http_port), "--grpc-port", str(grpc_port),
             "--threads", str(threads)],
            stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    client = httpclient.InferenceServerClient(f"127.0.0.1:{http_port}")
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"rpdetect serve exited with {process.returncode}; see {log}")
        try:
            if client.is_model_ready("det"):
                return process, http_port, grpc_port
        except Exception:
            pass
        time.sleep(0.25)
    process.kill()
    sys.exit(f"rpdetect serve not ready after {START_TIMEOUT_S:g} s; see {log}")


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)


def closed_loop(make_call: Callable[[], Callable[[], None]], concurrency: int,
                warmup: float, duration: float) -> tuple[list[float], int, float]:
    """``concurrency`` workers, each calling its own ``make_call()`` back to back; latencies
    (s) of the calls that started inside the measured window, the errors, the window (s)."""
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    ready = threading.Barrier(concurrency + 1)
    window: dict[str, float] = {}

    def worker(i: int) -> None:
        call = make_call()
        ready.wait()
        while True:
            t0 = time.perf_counter()
            if t0 >= window["end"]:
                return
            try:
                call()
            except Exception:
                errors[i] += 1
                continue
            if t0 >= window["start"]:
                latencies[i].append(time.perf_counter() - t0)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True)
               for i in range(concurrency)]
    for t in threads:
        t.start()
    now = time.perf_counter()
    window.update(start=now + warmup, end=now + warmup + duration)
    ready.wait()
    for t in threads:
        t.join(timeout=warmup + duration + 60)
    return [x for per in latencies for x in per], sum(errors), duration


def cell(mode: str, concurrency: int, latencies: list[float], errors: int,
         seconds: float) -> Cell:
    ms = np.asarray(latencies) * 1e3
    return Cell(mode, concurrency, len(latencies), errors, seconds,
                len(latencies) / seconds, float(np.percentile(ms, 50)),
                float(np.percentile(ms, 99)))


def in_process_calls(model: Path, threads: int, image: np.ndarray
                     ) -> tuple[Callable[[], Callable[[], None]], Callable[[], None]]:
    from rpdetect import Detector

    detector = Detector(model, providers=["cpu"], threads=threads)
    return (lambda: lambda: detector.detect(image)), detector.close


def http_calls(port: int, image: np.ndarray) -> Callable[[], Callable[[], None]]:
    import tritonclient.http as httpclient

    def make() -> Callable[[], None]:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}", network_timeout=60)
        tensor = httpclient.InferInput("image", list(image.shape), "FP32")
        tensor.set_data_from_numpy(image, binary_data=True)
        return lambda: client.infer("det", [tensor]).as_numpy("label")
    return make


def grpc_calls(port: int, image: np.ndarray) -> Callable[[], Callable[[], None]]:
    import tritonclient.grpc as grpcclient

    def make() -> Callable[[], None]:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        tensor = grpcclient.InferInput("image", list(image.shape), "FP32")
        tensor.set_data_from_numpy(image)
        return lambda: client.infer("det", [tensor], client_timeout=60).as_numpy("label")
    return make


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def markdown(cells: list[Cell], meta: dict[str, object]) -> str:
    lines = [
        "# `rpdetect serve` under load",
        "",
        f"`{meta['command']}`",
        "",
        f"{meta['date']}, {meta['cpu']}, {meta['cores']} cores, model `{meta['model']}`, "
        f"ORT intra-op threads {meta['threads']} (server and in-process alike), one FP32 "
        f"[1, 3, 32, 32] image per request, {meta['duration']:g} s measured per cell in "
        f"{meta['rounds']} rounds that alternate the modes (each after {meta['warmup']:g} s "
        f"warm-up); clients, server and in-process runs share the same cores; load average "
        f"(1, 5, 15 min) {meta['loadavg_before']} before, {meta['loadavg_after']} after.",
        "",
        "| concurrency | mode | requests/s | p50 ms | p99 ms | requests | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        lines.append(f"| {c.concurrency} | {c.mode} | {c.throughput:.1f} | {c.p50_ms:.2f} | "
                     f"{c.p99_ms:.2f} | {c.requests} | {c.errors} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="detector .onnx (default: the zoo's CIFAR-10 "
                        "ResNet-9 with input noise, exported to cache/load-serve)")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per cell")
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="seconds of warm-up before each round of a cell")
    parser.add_argument("--rounds", type=int, default=4,
                        help="rounds per concurrency; each runs every mode duration/rounds s")
    parser.add_argument("--threads", type=int, default=1, help="ORT intra-op threads")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    model = args.model or zoo_detector(DEFAULT_CACHE)
    args.out.mkdir(parents=True, exist_ok=True)

    from rpdetect import Detector

    c, h, w = Detector(model, providers=["cpu"]).input_shape
    image = np.random.default_rng(0).random((1, c, h, w), dtype=np.float32)
    cells: list[Cell] = []
    make_local, close_local = in_process_calls(model, args.threads, image[0])
    DEFAULT_CACHE.mkdir(parents=True, exist_ok=True)
    log = DEFAULT_CACHE / "serve.log"
    process, http_port, grpc_port = start_server(model, args.threads, log)
    modes = (("in-process", make_local), ("REST", http_calls(http_port, image)),
             ("gRPC", grpc_calls(grpc_port, image)))
    load_before = os.getloadavg()
    try:
        for concurrency in concurrencies:
            # the modes alternate in rounds, so a neighbour's load falls on all of them alike
            runs: dict[str, tuple[list[float], int, float]] = {m: ([], 0, 0.0) for m, _ in modes}
            for _ in range(args.rounds):
                for mode, make in modes:
                    lat, err, sec = closed_loop(make, concurrency, args.warmup,
                                                args.duration / args.rounds)
                    old = runs[mode]
                    runs[mode] = (old[0] + lat, old[1] + err, old[2] + sec)
            for mode, _ in modes:
                cells.append(cell(mode, concurrency, *runs[mode]))
                print(f"{mode:>10} c={concurrency:<3} {cells[-1].throughput:8.1f} req/s  p50 "
                      f"{cells[-1].p50_ms:7.2f} ms  p99 {cells[-1].p99_ms:7.2f} ms  errors "
                      f"{cells[-1].errors}", flush=True)
    finally:
        stop_server(process)
        close_local()
    meta = {
        "command": "python benchmarks/load_serve.py " + shlex.join(argv or sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu_model(), "cores": os.cpu_count(), "threads": args.threads,
        "model": str(model.relative_to(ROOT) if model.is_relative_to(ROOT) else model),
        "duration": args.duration, "warmup": args.warmup, "rounds": args.rounds,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }
    (args.out / "load.json").write_text(json.dumps(
        {"meta": meta, "cells": [asdict(x) for x in cells]}, indent=2) + "\n")
    (args.out / "load.md").write_text(markdown(cells, meta))
    print(markdown(cells, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
