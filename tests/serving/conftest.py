"""Tiny detectors, and ``rpdetect serve`` started on loopback at free ports for the tests.

Two servers for the whole session: a float-NCHW detector with input noise at batch 2 (outputs
must equal the in-process Detector's), and a uint8-NHWC-BGR detector with graph noise (same
label and logits). Each runs in its own process, as a user starts it, with a bounded start
and a bounded stop.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from rpdetect.export import DetectorConfig, build_detector, save_onnx
from rpdetect.testing import plain_classifier

KAPPAS = (0.01, 0.04, 0.07, 0.1)
SIZE = 32
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 15.0
CALL_TIMEOUT_S = 20.0


def write_detector(path: Path, **config: object) -> Path:
    classifier = plain_classifier(size=SIZE, classes=5, seed=3)
    return save_onnx(build_detector(classifier, DetectorConfig(kappas=KAPPAS, **config)),
                     path)


@pytest.fixture(scope="session")
def serving_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serving")


@pytest.fixture(scope="session")
def input_noise_detector(serving_dir: Path) -> Path:
    """float-nchw, noise='input', batch 2, per-kappa thresholds that flag some images."""
    return write_detector(serving_dir / "noisein.onnx", noise="input", batch=2,
                          threshold1=(0.02, 0.03, 0.04, 0.05), threshold2=0.05)


@pytest.fixture(scope="session")
def graph_noise_detector(serving_dir: Path) -> Path:
    """uint8-nhwc-bgr, noise='graph', batch 1."""
    return write_detector(serving_dir / "graphbgr.onnx", input_format="uint8-nhwc-bgr")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    name: str
    model: Path
    http_port: int
    grpc_port: int
    process: subprocess.Popen
    log: Path

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


def start_server(model: Path, log_dir: Path, *extra: str, name: str | None = None) -> Server:
    """``python -m rpdetect serve MODEL`` on free loopback ports; ready or a failed test."""
    import tritonclient.http as httpclient

    http_port, grpc_port = free_port(), free_port()
    log = log_dir / f"serve-{model.stem}-{http_port}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as fh:
        process = subprocess.Popen(
            [sys.executable, "-m", "rpdetect", "serve", str(model), "--http-port",
             str(http_port), "--grpc-port", str(grpc_port), "--threads", "1",
             *(["--name", name] if name else []), *extra],
            stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    server = Server(name or model.stem, model, http_port, grpc_port, process, log)
    client = httpclient.InferenceServerClient(server.http_url, connection_timeout=2.0,
                                              network_timeout=2.0)
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"rpdetect serve exited with {process.returncode}:\n"
                            f"{server.log_tail()}")
            try:
                if client.is_server_ready() and client.is_model_ready(server.name):
                    return server
            except Exception:  # not listening yet
                pass
            time.sleep(0.25)
    finally:
        client.close()
    stop_server(server)
    pytest.fail(f"rpdetect serve not ready after {START_TIMEOUT_S:g} s:\n{server.log_tail()}")


def stop_server(server: Server) -> int | None:
    """SIGTERM, then SIGKILL if it has not stopped within STOP_TIMEOUT_S; its exit code."""
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=STOP_TIMEOUT_S)
    return server.process.returncode


@pytest.fixture(scope="session")
def tritonclient_modules():
    http = pytest.importorskip("tritonclient.http", reason="needs the serve extra: "
                               "pip install -e '.[serve]'")
    grpc = pytest.importorskip("tritonclient.grpc", reason="needs tritonclient[grpc]")
    # not imported here: kserve and tritonclient.grpc register the same protobuf messages
    # ("inference.*") and cannot share a process; the servers run in their own
    if importlib.util.find_spec("kserve") is None:
        pytest.skip("needs the serve extra (kserve): pip install -e '.[serve]'")
    return http, grpc


@pytest.fixture(scope="session")
def noise_server(tritonclient_modules, input_noise_detector: Path, serving_dir: Path
                 ) -> Iterator[Server]:
    server = start_server(input_noise_detector, serving_dir)
    yield server
    stop_server(server)


@pytest.fixture(scope="session")
def graph_server(tritonclient_modules, graph_noise_detector: Path, serving_dir: Path
                 ) -> Iterator[Server]:
    server = start_server(graph_noise_detector, serving_dir, "--max-megapixels", "0.01",
                          name="bgr")
    yield server
    stop_server(server)
