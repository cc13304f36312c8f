"""``rpdetect serve``: a KServe ``ModelServer`` hosting one ``rpdetect.Detector`` over the Open
Inference Protocol (KServe v2), REST and gRPC.

KServe's own server listens on every interface and answers a malformed REST body with 422 or
500; this one binds the host it is given (127.0.0.1 by default), checks both ports before it
starts, and answers every request it cannot serve with 400 (gRPC: INVALID_ARGUMENT) and a
message naming what was wrong, then goes on serving. Inference runs on the event loop's thread
pool (``Detector`` is thread-safe), so slow requests do not stall health checks.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import sys
import uuid
from concurrent import futures
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ..engine import Detector
from ..errors import RpdetectError
from .protocol import (
    DATATYPES,
    DEFAULT_MAX_IMAGES,
    DEFAULT_MAX_REQUEST_BYTES,
    RequestError,
    detect,
    input_metadata,
    output_arrays,
    output_metadata,
    parse_inputs,
)

# kserve.model_server parses sys.argv when it is imported (its own --http_port, --workers, ...):
# hide rpdetect's command line from it so its defaults apply and our options stay ours.
_argv, sys.argv = sys.argv, sys.argv[:1]
try:
    import kserve
    from grpc import aio
    from kserve.constants.constants import (
        FASTAPI_APP_IMPORT_STRING,
        INFERENCE_CONTENT_LENGTH_HEADER,
        PredictorProtocol,
    )
    from kserve.errors import InvalidInput
    from kserve.model_server import app as _kserve_app
    from kserve.protocol.dataplane import DataPlane
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
    from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor
    from kserve.protocol.grpc.server import GRPCServer
    from kserve.protocol.grpc.servicer import InferenceServicer
    from kserve.protocol.infer_type import (
        InferInput,
        InferOutput,
        InferRequest,
        InferResponse,
        RequestedOutput,
    )
    from kserve.protocol.rest.server import RESTServer
finally:
    sys.argv = _argv

__all__ = ["DetectorModel", "DetectorServer", "ServeOptions", "serve"]



class DetectorModel(kserve.Model):
    """One detector file as a KServe model: metadata from the file, inference through
    ``Detector.detect_many`` (see ``protocol.py`` for what a request holds)."""

    def __init__(self, name: str, detector: Detector, *,
                 max_images: int = DEFAULT_MAX_IMAGES) -> None:
        super().__init__(name)
        self.detector = detector
        self.max_images = max_images
        self.ready = True  # the Detector is loaded: its session is open

    def load(self) -> bool:
        self.ready = True
        return self.ready

    def get_input_types(self) -> list[dict[str, Any]]:
        return input_metadata(self.detector)

    def get_output_types(self) -> list[dict[str, Any]]:
        return output_metadata(self.detector)

    def infer(self, request: InferRequest) -> InferResponse:
        """Blocking inference on one decoded request (InvalidInput for a bad request)."""
        try:
            wanted = [o.name for o in request.request_outputs or ()]
            known = [s.name for s in self.detector.outputs]
            unknown = [name for name in wanted if name not in known]
            if unknown:
                raise RequestError(f"unknown output {unknown[0]!r}; this model gives "
                                   f"{', '.join(known)}")
            feeds = parse_inputs(request.inputs, self.detector, max_images=self.max_images)
            arrays = output_arrays(self.detector, detect(self.detector, feeds))
        except RequestError as exc:
            raise InvalidInput(str(exc)) from exc
        outputs = [_output(name, a) for name, a in arrays.items() if not wanted or name in wanted]
        return InferResponse(response_id=request.id or str(uuid.uuid4()), model_name=self.name,
                             infer_outputs=outputs, use_binary_outputs=request.use_binary_outputs,
                             requested_outputs=request.request_outputs)

    async def predict(self, payload: InferRequest, headers: dict[str, str] | None = None
                      ) -> InferResponse:
        if not isinstance(payload, InferRequest):
            raise InvalidInput("expected an Open Inference Protocol (v2) request: POST "
                               f"/v2/models/{self.name}/infer")
        return await asyncio.get_running_loop().run_in_executor(None, self.infer, payload)

    def stop(self) -> None:
        self.detector.close()
        super().stop()


def _output(name: str, array: Any) -> InferOutput:
    """An output holding its bytes: KServe turns them into JSON for REST clients that asked for
    JSON, and sends them as raw contents over gRPC (its ``to_grpc`` cannot take arrays)."""
    output = InferOutput(name, list(array.shape), DATATYPES[array.dtype.name])
    output.set_data_from_numpy(array, binary_data=True)
    return output


class _DataPlane(DataPlane):
    """KServe's data plane, with a REST body it cannot decode (no ``inputs``, a binary part
    shorter than its ``binary_data_size``, a bad ``Inference-Header-Content-Length``) being
    the client's error (InvalidInput, 400), not the server's (500), and binary BYTES tensors
    (encoded images) kept as bytes: KServe's own reader turns them into UTF-8 text and fails
    on anything that is not."""

    def decode(self, body: Any, headers: Any,
               protocol_version: str = PredictorProtocol.REST_V1.value,
               model_name: str | None = None) -> Any:
        try:
            length = (headers or {}).get(INFERENCE_CONTENT_LENGTH_HEADER)
            if (isinstance(body, bytes) and length is not None
                    and protocol_version.lower() == PredictorProtocol.REST_V2.value):
                return _request_from_bytes(body, length, model_name or ""), {}
            return super().decode(body, headers, protocol_version=protocol_version,
                                  model_name=model_name)
        except InvalidInput:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise InvalidInput(f"malformed inference request: {_describe(exc)}") from exc


def _request_from_bytes(body: bytes, header_length: str, model_name: str) -> InferRequest:
    """A REST request of the binary tensor extension: a JSON header of ``header_length`` bytes,
    then each binary input's ``binary_data_size`` bytes in order."""
    if not header_length.isdigit() or int(header_length) > len(body):
        raise InvalidInput(f"malformed inference request: {INFERENCE_CONTENT_LENGTH_HEADER} "
                           f"{header_length!r} is not a length within the {len(body)}-byte body")
    start = int(header_length)
    header = orjson.loads(body[:start])
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise InvalidInput("malformed inference request: the JSON header needs an 'inputs' list")
    inputs = []
    for item in header["inputs"]:
        params = item.get("parameters") or {}
        tensor = InferInput(name=item["name"], shape=item["shape"], datatype=item["datatype"],
                            parameters=params)
        if item.get("data") is not None:
            tensor.data = item["data"]
        elif "binary_data_size" in params:
            end = start + int(params["binary_data_size"])
            if end > len(body) or end < start:
                raise InvalidInput(f"malformed inference request: input {tensor.name!r} says "
                                   f"binary_data_size {params['binary_data_size']}, the body "
                                   f"holds {len(body) - start} more bytes")
            tensor._raw_data = body[start:end]  # as KServe's own reader does
            start = end
        else:
            raise InvalidInput(f"malformed inference request: input {tensor.name!r} has neither "
                               f"'data' nor a binary_data_size")
        inputs.append(tensor)
    outputs = [RequestedOutput(name=o["name"], parameters=o.get("parameters"))
               for o in header.get("outputs") or ()]
    return InferRequest(model_name=model_name, infer_inputs=inputs,
                        request_id=header.get("id"), parameters=header.get("parameters"),
                        request_outputs=outputs or None)


class _Servicer(InferenceServicer):
    """KServe's gRPC servicer; a request whose parts do not line up (more raw contents than
    inputs, unknown content types) is INVALID_ARGUMENT, not INTERNAL."""

    async def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802 (gRPC name)
        try:
            InferRequest.from_grpc(request)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise InvalidInput(f"malformed inference request: {_describe(exc)}") from exc
        return await super().ModelInfer(request, context)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"field {exc.args[0]!r} is missing"
    return f"{type(exc).__name__}: {exc}"


class _GRPCServer(GRPCServer):
    """KServe's gRPC server bound to one host instead of every interface."""

    def __init__(self, host: str, port: int, *args: Any, max_message_bytes: int,
                 **kwargs: Any) -> None:
        super().__init__(port, *args, **kwargs)
        self._host = host
        self._max_message_bytes = max_message_bytes

    async def start(self, max_workers: int) -> None:
        servicer = _Servicer(self._data_plane, self._model_repository_extension)
        self._server = aio.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=(ExceptionToStatusInterceptor(),),
            options=[("grpc.max_send_message_length", self._max_message_bytes),
                     ("grpc.max_receive_message_length", self._max_message_bytes)],
        )
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer,
                                                                             self._server)
        self._server.add_insecure_port(_address(self._host, self._port))
        await self._server.start()
        await self._server.wait_for_termination()


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI answers a body it cannot parse (malformed JSON, missing fields) with 422; the
    Open Inference Protocol says 400, with the problem in ``error``."""
    problems = []
    for item in exc.errors():
        loc = [str(p) for p in item.get("loc", ()) if p not in ("body", "InferenceRequest")]
        if loc[:1] == ["bytes"]:  # the other arm of KServe's Union[InferenceRequest, bytes]
            continue
        if item.get("type") == "json_invalid":
            problems.append(f"the body is not valid JSON ({item.get('ctx', {}).get('error', '')}"
                            f" near character {loc[0] if loc else '?'})")
        else:
            problems.append(f"{'.'.join(loc) or 'body'}: {item.get('msg', 'invalid')}")
    return JSONResponse(status_code=400, content={
        "error": "malformed inference request: " + "; ".join(problems[:5] or ["unreadable"])})


def _body_limit(max_bytes: int) -> Any:
    async def limit(request: Request, call_next: Any) -> Any:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_bytes):
            return JSONResponse(status_code=400 if not length.isdigit() else 413, content={
                "error": f"request body of {length} bytes is over the limit of {max_bytes} "
                         f"(rpdetect serve --max-request-mb)"})
        return await call_next(request)
    return limit


@dataclass(frozen=True)
class ServeOptions:
    """Where and how ``serve`` listens."""

    host: str = "127.0.0.1"
    http_port: int = 8080
    grpc_port: int = 8081
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    grpc_threads: int = 4
    grace_period_s: int = 5


def check_port(host: str, port: int, option: str) -> None:
    """RpdetectError if ``host:port`` cannot be bound now (in use, no such address)."""
    if not 0 < port < 65536:
        raise RpdetectError(f"{option} {port}: expected a port number from 1 to 65535")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            hint = (f"; choose another with {option}" if exc.errno == errno.EADDRINUSE else "")
            raise RpdetectError(f"{option} {port}: cannot listen on {host}:{port} "
                                f"({exc.strerror or exc}){hint}") from exc


class DetectorServer(kserve.ModelServer):
    """``kserve.ModelServer`` on one host, one REST worker and a gRPC server, with the
    400-for-bad-requests handling above."""

    def __init__(self, options: ServeOptions,
                 announce: Callable[[str], None] | None = None) -> None:
        super().__init__(http_port=options.http_port, grpc_port=options.grpc_port, workers=1,
                         max_threads=options.grpc_threads, enable_grpc=True,
                         enable_docs_url=False, enable_latency_logging=False,
                         grace_period=options.grace_period_s)
        self.options = options
        self.announce = announce  # told where it listens, once both ports are checked
        self.dataplane = _DataPlane(model_registry=self.registered_models)

    def start(self, models: Sequence[kserve.Model]) -> None:
        options = self.options
        check_port(options.host, options.http_port, "--http-port")
        check_port(options.host, options.grpc_port, "--grpc-port")
        if options.http_port == options.grpc_port:
            raise RpdetectError(f"--http-port and --grpc-port are both {options.http_port}; "
                                f"give each its own port")
        self._register_and_check_atleast_one_model_is_ready(list(models))
        _kserve_app.add_exception_handler(RequestValidationError, _validation_error)
        _kserve_app.middleware("http")(_body_limit(options.max_request_bytes))
        self._rest_server = RESTServer(
            FASTAPI_APP_IMPORT_STRING, self.dataplane, self.model_repository_extension,
            options.http_port, workers=1, grace_period=self.grace_period,
            event_loop=self.event_loop, timeout_keep_alive=self.timeout_keep_alive)
        self._rest_server.config.host = options.host
        self._grpc_server = _GRPCServer(
            options.host, options.grpc_port, self.dataplane, self.model_repository_extension,
            kwargs={}, grace_period=self.grace_period,
            max_message_bytes=options.max_request_bytes)
        self.servers = [self._rest_server.start(), self._grpc_server.start(self.max_threads)]
        self.setup_event_loop()
        self.register_signal_handler()
        if self.announce is not None:
            self.announce(f"model {', '.join(repr(m.name) for m in models)} on "
                          f"http://{_address(options.host, options.http_port)} (REST) and "
                          f"{_address(options.host, options.grpc_port)} (gRPC)")
        asyncio.run(self._serve())


def serve(detector: Detector, name: str, options: ServeOptions = ServeOptions(), *,
          max_images: int = DEFAULT_MAX_IMAGES,
          announce: Callable[[str], None] | None = None) -> None:
    """Serve ``detector`` as model ``name`` until SIGINT/SIGTERM; ``announce`` is called with
    where it listens once the ports are known to be free."""
    model = DetectorModel(name, detector, max_images=max_images)
    DetectorServer(options, announce).start([model])
