"""Open Inference Protocol (KServe v2) requests in, ``rpdetect.Detector`` calls out, and back.

What a request may hold (the names and types are the detector file's, so a client written for
the Triton repository of ``rpdetect export-triton`` works here too):

* ``image`` (required): the file's type and layout with any number N >= 1 of images in front,
  ``FP32 [N, C, H, W]`` in [0, 1] (``float-nchw`` files) or ``UINT8 [N, H, W, 3]`` in the file's
  channel order (``uint8-nhwc-rgb`` / ``-bgr``); or ``BYTES [N]``: encoded image files (PNG,
  JPEG, ...) decoded and resized with the engine's policy and limits
  (``rpdetect.engine.images``, ``image_header``).
* ``noise`` (only files built with ``noise="input"``, optional): ``FP32 [N, n, C, H, W]``;
  when left out the server's Detector draws it.
* ``threshold1``, ``threshold2`` (``FP32 [n]`` or ``[1]``) and ``threshold3`` (``FP32 []`` or
  ``[1]``), optional: override the file's thresholds for this request.

Every output of the file comes back (or those the request names), ``[N, ...]``, in the file's
data types. Anything wrong with a request raises ``RequestError`` with a message naming the
input and what was wrong; the server turns it into HTTP 400 / gRPC INVALID_ARGUMENT.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np

from ..contract import THRESHOLD_NAMES
from ..engine import Detector
from ..engine.detector import BatchReport, TensorSpec
from ..engine.images import decode_image
from ..errors import InputError

__all__ = ["DATATYPES", "Feeds", "RequestError", "TensorLike", "detect", "input_metadata",
           "output_arrays", "output_metadata", "parse_inputs"]

# numpy dtype name (as rpdetect.Detector reports it) -> Open Inference Protocol datatype
DATATYPES: dict[str, str] = {
    "float32": "FP32", "float16": "FP16", "float64": "FP64", "uint8": "UINT8",
    "int8": "INT8", "int32": "INT32", "int64": "INT64", "bool": "BOOL",
}
DEFAULT_MAX_IMAGES = 64
DEFAULT_MAX_REQUEST_BYTES = 256 * 2**20  # a REST body or gRPC message
_SHOWN_FAILURES = 5


class RequestError(ValueError):
    """A request the detector cannot answer; the message names the input and the problem."""


class TensorLike(Protocol):
    """What a decoded request input offers (``kserve.InferInput``)."""

    @property
    def name(self) -> str: ...

    @property
    def datatype(self) -> str: ...

    @property
    def shape(self) -> list[int]: ...

    def as_numpy(self) -> np.ndarray: ...


@dataclass
class Feeds:
    """A request as ``Detector.detect_many`` takes it."""

    images: list[np.ndarray]
    noise: np.ndarray | None = None
    thresholds: dict[str, Any] = field(default_factory=dict)


def _datatype(spec: TensorSpec) -> str:
    return DATATYPES.get(spec.dtype, spec.dtype.upper())


def _dims(shape: Sequence[Any]) -> list[int]:
    return [d if isinstance(d, int) else -1 for d in shape]


def input_metadata(detector: Detector) -> list[dict[str, Any]]:
    """The inputs as the model metadata endpoint lists them (-1: any size)."""
    out = []
    for spec in detector.inputs:
        shape = _dims(spec.shape)
        if spec.name in ("image", "noise"):
            shape[0] = -1  # any number of images per request
        out.append({"name": spec.name, "datatype": _datatype(spec), "shape": shape})
    return out


def output_metadata(detector: Detector) -> list[dict[str, Any]]:
    """The outputs as the model metadata endpoint lists them (first dim: the N images)."""
    return [{"name": s.name, "datatype": _datatype(s), "shape": [-1, *_dims(s.shape)[1:]]}
            for s in detector.outputs]


def _shape_text(shape: Sequence[int | str]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _check_shape(tensor: TensorLike) -> None:
    """RequestError unless the tensor's shape is a list of integers >= 0."""
    shape = tensor.shape
    if not isinstance(shape, (list, tuple)) or not all(
            isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise RequestError(f"input {tensor.name!r}: shape {shape!r} is not a list of integers")
    if any(d < 0 for d in shape):
        raise RequestError(f"input {tensor.name!r}: shape {_shape_text(shape)} has a negative "
                           f"dimension")


def _array(tensor: TensorLike, want: str) -> np.ndarray:
    """The tensor's data as numpy (RequestError when its data and shape disagree)."""
    if tensor.datatype != want:
        raise RequestError(f"input {tensor.name!r}: datatype {tensor.datatype}, expected {want}")
    shape = list(tensor.shape)
    try:
        array = tensor.as_numpy()
    except (ValueError, TypeError, OverflowError, IndexError, struct.error) as exc:
        raise RequestError(f"input {tensor.name!r}: its data does not fit datatype {want} and "
                           f"shape {_shape_text(shape)} ({exc})") from exc
    if list(array.shape) != shape:
        raise RequestError(f"input {tensor.name!r}: data of shape {_shape_text(array.shape)}, "
                           f"the request says {_shape_text(shape)}")
    return array


def _image_arrays(tensor: TensorLike, detector: Detector, max_images: int) -> list[np.ndarray]:
    spec = next(s for s in detector.inputs if s.name == "image")
    per_image = tuple(spec.shape[1:])
    raw = _datatype(spec)
    layout = (f"{raw} [N, {', '.join(str(d) for d in per_image)}] (N images"
              + (", float in [0, 1])" if raw == "FP32" else
                 f", {detector.info.input_format.rsplit('-', 1)[-1].upper()})"))
    if tensor.datatype not in (raw, "BYTES"):
        raise RequestError(f"input 'image': datatype {tensor.datatype}; this model takes {layout}, "
                           f"or BYTES [N] (encoded PNG/JPEG files)")
    if tensor.datatype == "BYTES":
        if len(tensor.shape) != 1:
            raise RequestError(f"input 'image': BYTES of shape {_shape_text(tensor.shape)}; "
                               f"expected [N], one encoded image file per element")
        _check_count(int(tensor.shape[0]), max_images)
        array = _array(tensor, "BYTES")
        return [decode_image(item, source=f"image[{i}]", limits=detector.limits)
                for i, item in enumerate(array)]
    if len(tensor.shape) != len(spec.shape) or tuple(tensor.shape[1:]) != per_image:
        raise RequestError(f"input 'image': shape {_shape_text(tensor.shape)}; this model takes "
                           f"{layout}")
    _check_count(int(tensor.shape[0]), max_images)
    array = _array(tensor, raw)
    if detector.info.input_format == "uint8-nhwc-bgr":
        # as the file declares it (BGR); the Detector takes RGB arrays and turns them back
        array = array[..., ::-1]
    return list(array)


def _check_count(count: int, max_images: int) -> None:
    if not 1 <= count <= max_images:
        raise RequestError(f"input 'image': {count} images; a request holds 1 to {max_images}")


def _noise(tensor: TensorLike, detector: Detector, count: int) -> np.ndarray:
    spec = next(s for s in detector.inputs if s.name == "noise")
    want = (count, *spec.shape[1:])
    if tuple(tensor.shape) != want:
        raise RequestError(f"input 'noise': shape {_shape_text(tensor.shape)}, expected "
                           f"{_shape_text(want)} (one [n, C, H, W] draw per image)")
    return _array(tensor, _datatype(spec))


def _threshold(tensor: TensorLike, detector: Detector) -> Any:
    n = detector.info.n
    values = _array(tensor, "FP32").reshape(-1)
    if tensor.name == "threshold3" or not detector.info.has_flips:
        if values.size != 1:
            raise RequestError(f"input {tensor.name!r}: {values.size} values; expected one "
                               f"(shape [] or [1])")
        return float(values[0])
    if values.size not in (1, n) or len(tensor.shape) != 1:
        raise RequestError(f"input {tensor.name!r}: shape {_shape_text(tensor.shape)}; expected "
                           f"[{n}] (one per kappa) or [1] (one for every kappa)")
    return float(values[0]) if values.size == 1 else [float(v) for v in values]


def parse_inputs(inputs: Sequence[TensorLike], detector: Detector, *,
                 max_images: int = DEFAULT_MAX_IMAGES) -> Feeds:
    """A request's inputs as ``Detector.detect_many`` arguments (RequestError naming what is
    wrong: an unknown or repeated input, a missing image, a wrong datatype or shape, data that
    does not fit its shape, bytes that do not decode, an image over the decode limits)."""
    allowed = [s.name for s in detector.inputs]
    by_name: dict[str, TensorLike] = {}
    for tensor in inputs:
        if not isinstance(tensor.name, str) or tensor.name not in allowed:
            raise RequestError(f"unknown input {tensor.name!r}; this model takes "
                               f"{', '.join(allowed)}")
        if tensor.name in by_name:
            raise RequestError(f"input {tensor.name!r} is given twice")
        _check_shape(tensor)
        by_name[tensor.name] = tensor
    if "image" not in by_name:
        raise RequestError(f"input 'image' is missing; this model takes {', '.join(allowed)}")
    try:
        images = _image_arrays(by_name["image"], detector, max_images)
        feeds = Feeds(images)
        if "noise" in by_name:
            feeds.noise = _noise(by_name["noise"], detector, len(images))
        for name in THRESHOLD_NAMES:
            if name in by_name:
                feeds.thresholds[name] = _threshold(by_name[name], detector)
    except InputError as exc:  # decoding: the message already names image[i]
        raise RequestError(str(exc)) from exc
    return feeds


def _failure_text(report: BatchReport) -> str:
    parts = []
    for failure in report.failures[:_SHOWN_FAILURES]:
        message = failure.error
        prefix = f"{failure.source}: "
        if message.startswith(prefix):
            message = message[len(prefix):]
        parts.append(f"image[{failure.index}]: {message}")
    more = len(report.failures) - _SHOWN_FAILURES
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def detect(detector: Detector, feeds: Feeds) -> BatchReport:
    """Run the feeds; RequestError when any image gets no verdict (none is dropped silently)."""
    try:
        report = detector.detect_many(feeds.images, noise=feeds.noise, progress=False,
                                      **feeds.thresholds)
    except InputError as exc:  # a threshold override the engine refuses
        raise RequestError(str(exc)) from exc
    if report.failures:
        raise RequestError(_failure_text(report))
    return report


def output_arrays(detector: Detector, report: BatchReport) -> dict[str, np.ndarray]:
    """Every output of the file, [N, ...] in the file's dtype, from the results in order."""
    results = report.results
    values: dict[str, Any] = {
        "logits": [r.logits for r in results],
        "label": [r.label for r in results],
        "score1": [r.score1 for r in results],
        "score2": [r.score2 for r in results],
        "score1_max": [r.score1_max for r in results],
        "score2_max": [r.score2_max for r in results],
        "is_adversarial": [r.is_adversarial for r in results],
        "flipped": [r.flipped for r in results],
        "flips": [r.flips for r in results],
    }
    return {spec.name: np.asarray(values[spec.name], dtype=spec.dtype)
            for spec in detector.outputs if spec.name in values}
