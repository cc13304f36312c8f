"""``rpdetect serve`` against tritonclient (HTTP and gRPC): the Detector's results, bad requests
answered with 400 / INVALID_ARGUMENT and a message naming the problem, and a server that keeps
serving after 1,000 of them. Loopback only; every call and the whole module are time-bounded."""

from __future__ import annotations

import http.client
import itertools
import json
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import pytest

from rpdetect import Detector

from .conftest import CALL_TIMEOUT_S, KAPPAS, SIZE, Server

pytestmark = pytest.mark.timeout(240)

OUTPUTS = ("logits", "label", "score1", "score2", "score1_max", "score2_max", "flipped",
           "flips", "is_adversarial")
N = len(KAPPAS)


@pytest.fixture(scope="module")
def clients(tritonclient_modules):
    return tritonclient_modules


def _http(clients, server: Server):
    return clients[0].InferenceServerClient(server.http_url, connection_timeout=CALL_TIMEOUT_S,
                                            network_timeout=CALL_TIMEOUT_S)


def _grpc(clients, server: Server):
    return clients[1].InferenceServerClient(server.grpc_url)


def _inputs(module, arrays: dict[str, np.ndarray], datatypes: dict[str, str] | None = None,
            *, binary: bool = True) -> list[Any]:
    out = []
    for name, array in arrays.items():
        datatype = (datatypes or {}).get(name) or {
            np.dtype("float32"): "FP32", np.dtype("uint8"): "UINT8",
            np.dtype("object"): "BYTES", np.dtype("int32"): "INT32"}[array.dtype]
        tensor = module.InferInput(name, list(array.shape), datatype)
        if module.__name__.endswith("http"):
            tensor.set_data_from_numpy(array, binary_data=binary)
        else:
            tensor.set_data_from_numpy(array)
        out.append(tensor)
    return out


def _infer(clients, server: Server, protocol: str, arrays: dict[str, np.ndarray]
           ) -> dict[str, np.ndarray]:
    module = clients[0] if protocol == "http" else clients[1]
    client = _http(clients, server) if protocol == "http" else _grpc(clients, server)
    try:
        kwargs = {} if protocol == "http" else {"client_timeout": CALL_TIMEOUT_S}
        result = client.infer(server.name, _inputs(module, arrays), **kwargs)
        return {name: result.as_numpy(name) for name in OUTPUTS}
    finally:
        client.close()


def _expected(report) -> dict[str, np.ndarray]:
    rows = [r.to_dict() for r in report.results]
    return {
        "logits": np.array([r.logits for r in report.results], np.float32),
        "label": np.array([r.label for r in report.results], np.int64),
        "score1": np.array([r.score1 for r in report.results], np.float32),
        "score2": np.array([r.score2 for r in report.results], np.float32),
        "score1_max": np.array([d["score1_max"] for d in rows], np.float32),
        "score2_max": np.array([d["score2_max"] for d in rows], np.float32),
        "flipped": np.array([r.flipped for r in report.results], bool),
        "flips": np.array([r.flips for r in report.results], np.int64),
        "is_adversarial": np.array([r.is_adversarial for r in report.results], bool),
    }


def _assert_equal(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    for name in OUTPUTS:
        assert got[name].dtype == want[name].dtype, name
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def _noise_case(seed: int, count: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.random((count, 3, SIZE, SIZE), dtype=np.float32)
    noise = rng.standard_normal((count, N, 3, SIZE, SIZE), dtype=np.float32)
    return images, noise


@pytest.fixture(scope="module")
def noise_detector(input_noise_detector: Path) -> Detector:
    return Detector(input_noise_detector, providers=["cpu"], threads=1)


@pytest.fixture(scope="module")
def graph_detector(graph_noise_detector: Path) -> Detector:
    return Detector(graph_noise_detector, providers=["cpu"], threads=1)


# --- health, metadata, binding --------------------------------------------------------------
def test_health_and_metadata_match_the_file(clients, noise_server: Server,
                                            noise_detector: Detector) -> None:
    http_client, grpc_client = _http(clients, noise_server), _grpc(clients, noise_server)
    try:
        assert http_client.is_server_live() and http_client.is_server_ready()
        assert grpc_client.is_server_live() and grpc_client.is_server_ready()
        assert grpc_client.is_model_ready("noisein")
        assert not http_client.is_model_ready("no-such-model")
        meta = http_client.get_model_metadata("noisein")
        grpc_meta = grpc_client.get_model_metadata("noisein", as_json=True)
    finally:
        http_client.close()
        grpc_client.close()
    types = {"float32": "FP32", "int64": "INT64", "bool": "BOOL"}
    for listed, specs in ((meta["inputs"], noise_detector.inputs),
                          (meta["outputs"], noise_detector.outputs)):
        assert [t["name"] for t in listed] == [s.name for s in specs]
        assert [t["datatype"] for t in listed] == [types[s.dtype] for s in specs]
    by_name = {t["name"]: t["shape"] for t in meta["inputs"]}
    assert by_name["image"] == [-1, 3, SIZE, SIZE]
    assert by_name["noise"] == [-1, N, 3, SIZE, SIZE]
    assert [t["name"] for t in grpc_meta["outputs"]] == [t["name"] for t in meta["outputs"]]


def test_listens_on_loopback_only(noise_server: Server) -> None:
    psutil = pytest.importorskip("psutil")
    process = psutil.Process(noise_server.process.pid)
    connections = getattr(process, "net_connections", None) or process.connections  # psutil 5
    listening = {c.laddr.port: c.laddr.ip for c in connections("inet")
                 if c.status == psutil.CONN_LISTEN}
    assert set(listening) == {noise_server.http_port, noise_server.grpc_port}
    assert all(ip in ("127.0.0.1", "::ffff:127.0.0.1") for ip in listening.values()), listening


# --- the Detector's results -----------------------------------------------------------------
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_input_noise_outputs_equal_the_detector(clients, noise_server: Server,
                                                noise_detector: Detector, protocol: str) -> None:
    images, noise = _noise_case(1)  # 3 images on a batch-2 graph: two runs, one padded
    got = _infer(clients, noise_server, protocol, {"image": images, "noise": noise})
    want = _expected(noise_detector.detect_many(list(images), noise=noise, progress=False))
    _assert_equal(got, want)
    assert got["logits"].shape == (3, 5) and got["score1"].shape == (3, N)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_threshold_overrides_equal_the_detector(clients, noise_server: Server,
                                                noise_detector: Detector, protocol: str) -> None:
    images, noise = _noise_case(2, count=2)
    t1 = np.array([0.001, 0.002, 0.003, 0.004], np.float32)
    t3 = np.array([0.0], np.float32)
    got = _infer(clients, noise_server, protocol,
                 {"image": images, "noise": noise, "threshold1": t1, "threshold3": t3})
    want = _expected(noise_detector.detect_many(list(images), noise=noise, threshold1=list(t1),
                                                threshold3=0.0, progress=False))
    _assert_equal(got, want)
    default = _expected(noise_detector.detect_many(list(images), noise=noise, progress=False))
    assert not np.array_equal(want["is_adversarial"], default["is_adversarial"]) or \
        want["is_adversarial"].all(), "the override should change something"


def _png(path: Path, h: int, w: int, seed: int) -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), rgb[:, :, ::-1])
    return path.read_bytes()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_encoded_bytes_equal_the_detector_on_the_file(clients, noise_server: Server,
                                                      noise_detector: Detector, tmp_path: Path,
                                                      protocol: str) -> None:
    # 40x48 PNGs: decoded and resized (shorter-crop) by the engine's policy, as from a file
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    data = [_png(p, 40, 48, seed) for seed, p in enumerate(paths)]
    noise = _noise_case(3, count=2)[1]
    got = _infer(clients, noise_server, protocol,
                 {"image": np.array(data, dtype=object), "noise": noise})
    want = _expected(noise_detector.detect_many(paths, noise=noise, progress=False))
    _assert_equal(got, want)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_graph_noise_uint8_bgr_same_label_and_logits(clients, graph_server: Server,
                                                     graph_detector: Detector,
                                                     protocol: str) -> None:
    bgr = np.random.default_rng(4).integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
    got = _infer(clients, graph_server, protocol, {"image": bgr})
    rgb = [np.ascontiguousarray(b[:, :, ::-1]) for b in bgr]  # the Detector takes RGB arrays
    report = graph_detector.detect_many(rgb, progress=False)
    np.testing.assert_array_equal(got["label"], [r.label for r in report.results])
    np.testing.assert_allclose(got["logits"], [r.logits for r in report.results],
                               rtol=1e-6, atol=1e-6)
    assert got["score1"].shape == (2, N) and np.isfinite(got["score1"]).all()


def test_graph_noise_encoded_jpeg_same_label_and_logits(clients, graph_server: Server,
                                                        graph_detector: Detector,
                                                        tmp_path: Path) -> None:
    path = tmp_path / "c.jpg"
    rgb = np.random.default_rng(5).integers(0, 256, (SIZE, SIZE + 8, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), rgb[:, :, ::-1])
    got = _infer(clients, graph_server, "grpc",
                 {"image": np.array([path.read_bytes()], dtype=object)})
    want = graph_detector.detect(path)
    assert int(got["label"][0]) == want.label
    np.testing.assert_allclose(got["logits"][0], want.logits, rtol=1e-6, atol=1e-6)


def test_oversized_encoded_image_is_refused_from_its_header(clients, graph_server: Server,
                                                            tmp_path: Path) -> None:
    # the graph server runs with --max-megapixels 0.01: 200 x 100 = 0.02 megapixels
    data = _png(tmp_path / "big.png", 100, 200, seed=6)
    module = clients[0]
    client = _http(clients, graph_server)
    try:
        with pytest.raises(module.InferenceServerException) as info:
            client.infer("bgr", _inputs(module, {"image": np.array([data], dtype=object)}))
    finally:
        client.close()
    assert info.value.status() == "400"
    assert "image[0]" in info.value.message() and "megapixels" in info.value.message()


# --- bad requests ---------------------------------------------------------------------------
def _post(server: Server, body: bytes, headers: dict[str, str] | None = None
          ) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=CALL_TIMEOUT_S)
    try:
        conn.request("POST", f"/v2/models/{server.name}/infer", body=body,
                     headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        conn.close()


def _json(inputs: list[dict[str, Any]], **extra: Any) -> bytes:
    return json.dumps({"inputs": inputs, **extra}).encode()


def _image_json(shape: list[int], datatype: str = "FP32", value: Any = 0.5,
                count: int | None = None) -> dict[str, Any]:
    size = int(np.prod(shape)) if count is None else count
    return {"name": "image", "shape": shape, "datatype": datatype, "data": [value] * size}


def _binary(header: dict[str, Any], payload: bytes) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + payload, {"Inference-Header-Content-Length": str(len(head)),
                            "Content-Type": "application/octet-stream"}


def _raw_cases() -> list[tuple[str, bytes, dict[str, str], str]]:
    """(what, body, headers, a substring the 400's message must hold)."""
    image = [1, 3, SIZE, SIZE]
    nan = np.full(image, np.nan, np.float32).tobytes()
    short, short_headers = _binary({"inputs": [{"name": "image", "shape": image,
                                               "datatype": "FP32",
                                               "parameters": {"binary_data_size": 12288}}]},
                                   b"\x00" * 100)
    nan_body, nan_headers = _binary({"inputs": [{"name": "image", "shape": image,
                                                "datatype": "FP32",
                                                "parameters": {"binary_data_size": len(nan)}}]},
                                    nan)
    bad_bytes = b"\xff\xff\xff\x00abc"  # a BYTES element announcing 16 MiB, holding 3
    bytes_body, bytes_headers = _binary({"inputs": [{"name": "image", "shape": [1],
                                                    "datatype": "BYTES",
                                                    "parameters": {"binary_data_size": 7}}]},
                                        bad_bytes)
    return [
        ("BYTES element longer than its data", bytes_body, bytes_headers, "does not fit"),
        ("shape of strings in a binary header", *_binary(
            {"inputs": [{"name": "image", "shape": ["one"], "datatype": "BYTES",
                         "parameters": {"binary_data_size": 7}}]}, bad_bytes),
         "is not a list of integers"),
        ("malformed JSON", b'{"inputs": [{"name": "image",', {}, "not valid JSON"),
        ("not JSON at all", b"\xff\xfe garbage", {}, "malformed inference request"),
        ("inputs not a list", b'{"inputs": 5}', {}, "inputs"),
        ("no inputs field", b'{"id": "x"}', {}, "inputs"),
        ("unknown input", _json([{"name": "picture", "shape": [1], "datatype": "FP32",
                                  "data": [0]}]), {}, "unknown input 'picture'"),
        ("wrong shape", _json([_image_json([1, 3, SIZE, SIZE - 1])]), {},
         f"shape [1, 3, {SIZE}, {SIZE - 1}]"),
        ("wrong datatype", _json([_image_json(image, "INT32", 0)]), {}, "datatype INT32"),
        ("data does not fit the shape", _json([_image_json(image, count=7)]), {},
         "does not fit"),
        ("values outside [0, 1]", _json([_image_json(image, value=2.0)]), {}, "[0, 1]"),
        ("strings as floats", _json([_image_json(image, value="x")]), {}, "image"),
        ("too many images", _json([_image_json([65, 3, SIZE, SIZE], count=1)]), {},
         "65 images"),
        ("no image", _json([{"name": "threshold3", "shape": [1], "datatype": "FP32",
                             "data": [1.0]}]), {}, "'image' is missing"),
        ("unknown output", _json([_image_json(image)], outputs=[{"name": "verdict"}]), {},
         "unknown output 'verdict'"),
        ("binary part shorter than declared", short, short_headers, "malformed"),
        ("bad header length", b'{"inputs": []}', {"Inference-Header-Content-Length": "x",
                                                   "Content-Type": "application/octet-stream"},
         "malformed"),
        ("NaN pixels", nan_body, nan_headers, "NaN"),
    ]


def _client_cases(clients, server: Server) -> list[tuple[str, Callable[[], Any], str]]:
    """(what, a call that must fail with INVALID_ARGUMENT / 400, a substring of its message)."""
    http_module, grpc_module = clients
    image, noise = _noise_case(7, count=1)

    def grpc_call(arrays: dict[str, np.ndarray]) -> Callable[[], Any]:
        def call() -> Any:
            client = _grpc(clients, server)
            try:
                return client.infer(server.name, _inputs(grpc_module, arrays),
                                    client_timeout=CALL_TIMEOUT_S)
            finally:
                client.close()
        return call

    def http_call(arrays: dict[str, np.ndarray]) -> Callable[[], Any]:
        def call() -> Any:
            client = _http(clients, server)
            try:
                return client.infer(server.name, _inputs(http_module, arrays))
            finally:
                client.close()
        return call

    def grpc_raw(request_fields: dict[str, Any]) -> Callable[[], Any]:
        """A ModelInferRequest tritonclient would never build, sent with its stub."""
        def call() -> Any:
            import grpc
            from tritonclient.grpc import service_pb2, service_pb2_grpc

            with grpc.insecure_channel(server.grpc_url) as channel:
                stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
                try:
                    return stub.ModelInfer(service_pb2.ModelInferRequest(
                        model_name=server.name, **request_fields), timeout=CALL_TIMEOUT_S)
                except grpc.RpcError as exc:
                    raise grpc_module.InferenceServerException(
                        msg=exc.details(), status=str(exc.code())) from None
        return call

    tensor = {"name": "image", "datatype": "FP32", "shape": [1, 3, SIZE, SIZE]}
    png = np.random.default_rng(8).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode(".png", png)
    assert ok
    truncated = encoded.tobytes()[:-20]
    return [
        ("undecodable bytes (HTTP)", http_call({"image": np.array([b"not an image"], object)}),
         "not an image OpenCV can decode"),
        ("truncated PNG (gRPC)", grpc_call({"image": np.array([truncated], object)}),
         "truncated PNG"),
        ("empty bytes (gRPC)", grpc_call({"image": np.array([b""], object)}), "empty"),
        ("noise of the wrong shape (gRPC)",
         grpc_call({"image": image, "noise": noise[:, :2]}), "input 'noise'"),
        ("three thresholds for four kappas (gRPC)",
         grpc_call({"image": image, "threshold1": np.ones(3, np.float32)}), "threshold1"),
        ("image as INT32 (gRPC)", grpc_call({"image": image.astype(np.int32)}),
         "datatype INT32"),
        ("more raw contents than inputs (gRPC)",
         grpc_raw({"inputs": [tensor], "raw_input_contents": [image.tobytes(), b"x"]}),
         "malformed inference request"),
        ("raw contents of the wrong size (gRPC)",
         grpc_raw({"inputs": [tensor], "raw_input_contents": [b"\x00" * 10]}),
         "input 'image'"),
    ]


def test_thousand_bad_requests_then_a_good_one(clients, noise_server: Server,
                                               noise_detector: Detector) -> None:
    raw = _raw_cases()
    calls = _client_cases(clients, noise_server)
    grpc_module = clients[1]
    kinds = [("raw", case) for case in raw] + [("client", case) for case in calls]
    started = time.monotonic()
    seen: dict[str, int] = {}
    for kind, case in itertools.islice(itertools.cycle(kinds), 1000):
        what = case[0]
        if kind == "raw":
            _, body, headers, needle = case
            status, text = _post(noise_server, body, headers)
            assert status == 400, (what, status, text)
            assert needle in json.loads(text)["error"], (what, text)
        else:
            _, call, needle = case
            with pytest.raises((clients[0].InferenceServerException,
                                grpc_module.InferenceServerException)) as info:
                call()
            assert info.value.status() in ("400", "StatusCode.INVALID_ARGUMENT"), \
                (what, info.value.status(), info.value.message())
            assert needle in info.value.message(), (what, info.value.message())
        seen[what] = seen.get(what, 0) + 1
    elapsed = time.monotonic() - started
    assert sum(seen.values()) == 1000 and len(seen) == len(kinds)
    assert noise_server.process.poll() is None, noise_server.log_tail()
    assert elapsed < 150, f"1,000 bad requests took {elapsed:.0f} s"
    # ... and it still answers correctly, on both protocols
    images, noise = _noise_case(9, count=2)
    want = _expected(noise_detector.detect_many(list(images), noise=noise, progress=False))
    for protocol in ("http", "grpc"):
        _assert_equal(_infer(clients, noise_server, protocol,
                             {"image": images, "noise": noise}), want)


def test_body_over_the_request_limit_is_refused(noise_server: Server) -> None:
    # the noise server runs with the default limit (256 MiB): announce more, send little
    conn = http.client.HTTPConnection("127.0.0.1", noise_server.http_port,
                                      timeout=CALL_TIMEOUT_S)
    try:
        conn.putrequest("POST", "/v2/models/noisein/infer")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(257 * 2**20))
        conn.endheaders()
        conn.send(b"{}")
        response = conn.getresponse()
        status, text = response.status, response.read().decode()
    finally:
        conn.close()
    assert status == 413 and "over the limit" in text


def test_grpc_message_over_the_limit_is_refused(clients, tmp_path: Path,
                                                input_noise_detector: Path) -> None:
    from .conftest import start_server, stop_server

    server = start_server(input_noise_detector, tmp_path, "--max-request-mb", "0.05")
    try:
        images, noise = _noise_case(10, count=2)  # ~200 KB of noise
        with pytest.raises(clients[1].InferenceServerException) as info:
            _infer(clients, server, "grpc", {"image": images, "noise": noise})
        assert "RESOURCE_EXHAUSTED" in info.value.status()
        small = _noise_case(11, count=1)
        assert _infer(clients, server, "grpc", {"image": small[0]})["label"].shape == (1,)
    finally:
        assert stop_server(server) is not None



def test_a_busy_port_is_a_clear_error(input_noise_detector: Path, tritonclient_modules) -> None:
    import socket
    import subprocess
    import sys

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "rpdetect", "serve", str(input_noise_detector),
             "--http-port", str(port), "--grpc-port", "1"],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"--http-port {port}: cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "choose another with --http-port" in done.stderr
