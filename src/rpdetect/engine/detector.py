"""``Detector``: one rpdetect detector ONNX file on an ONNX Runtime session.

The graph does all the work (noisy copies, classifier, score1/score2, thresholds); this wrapper
chooses providers, validates the model and the inputs, turns images into feeds (see
``images.py`` for the policy), chunks them into the graph's static batch and reads the results
back. It holds no mutable state besides its thread-safe noise source, so one Detector may be
shared by threads (``InferenceSession.run`` is thread-safe).
"""

from __future__ import annotations

import logging
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import onnx
from tqdm import tqdm

from ..contract import FLIP_OUTPUTS, REQUIRED_OUTPUTS, THRESHOLD_NAMES, DetectorSpec, load
from ..cpu import u8s8_saturates
from ..errors import InputError, ModelError, RpdetectError
from ..rule import Thresholds, check_threshold
from .finite import check_finite, nonfinite_message
from .front import BatchBuffer, split_front
from .front import images_per_run as default_images_per_run  # the default of the option
from .image_header import DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_PIXELS, DecodeLimits
from .images import (
    CHANNEL_ORDERS,
    RESIZE_POLICIES,
    ChannelOrder,
    ImageLike,
    ResizePolicy,
    prepare_image,
)
from .noise import NoiseGenerator, NoiseSource, check_seed, default_noise_threads
from .providers import ProviderPlan
from .session import SessionBuilder

__all__ = ["BatchReport", "DetectionResult", "Detector", "Failure", "TensorSpec"]

_log = logging.getLogger("rpdetect.engine")


INT8_SATURATION_WARNING = (
    "%s: an INT8 detector with full-range int8 weights, on a CPU with AVX2 but no VNNI: ONNX "
    "Runtime's u8 x s8 kernels saturate here, so its logits and scores are not the INT8 "
    "model's exact ones, nor those its thresholds were calibrated on where VNNI computes them "
    "(measured: 6 of 40 clean ImageNette images change label); export it with --reduce-range "
    "for this CPU, or calibrate it on this CPU")


def _int8_saturates(spec: DetectorSpec, providers: Sequence[str]) -> bool:
    """Whether ``spec``'s classifier is INT8 with u8 activations and full-range s8 weights and
    runs on ONNX Runtime's CPU provider on a CPU whose u8 x s8 kernels saturate
    (:func:`rpdetect.cpu.u8s8_saturates`)."""
    return (spec.int8_full_range() and providers[:1] == ("CPUExecutionProvider",)
            and u8s8_saturates())


def _stack(arrays: Sequence[np.ndarray], pad: int, filler: np.ndarray) -> np.ndarray:
    """[len(arrays) + pad, ...]; a single array becomes a view (no copy of 6 MB of noise)."""
    if len(arrays) == 1 and pad == 0:
        return np.ascontiguousarray(arrays[0])[None]
    return np.stack(list(arrays) + [filler] * pad)


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class DetectionResult:
    """The verdict on one image. ``score1``/``score2`` hold one value per noise scale kappa_i
    (read-only float32 arrays of length n); ``flipped`` [n] says which copies changed label and
    ``flips`` counts them (None for detector files from rpdetect <= 0.1); ``logits`` are the
    clean image's [K] logits; ``source`` is the file path, or "array" / "array[i]" for arrays."""

    label: int
    is_adversarial: bool
    score1: np.ndarray
    score2: np.ndarray
    score1_max: float
    score2_max: float
    logits: np.ndarray
    source: str
    flipped: np.ndarray | None = None
    flips: int | None = None

    def to_dict(self, *, logits: bool = True) -> dict[str, Any]:
        """JSON-ready: plain ints, floats, bools and lists."""
        out: dict[str, Any] = {
            "source": self.source,
            "label": self.label,
            "is_adversarial": self.is_adversarial,
            "score1_max": self.score1_max,
            "score2_max": self.score2_max,
            "score1": [float(v) for v in self.score1],
            "score2": [float(v) for v in self.score2],
        }
        if self.flips is not None and self.flipped is not None:
            out["flips"] = self.flips
            out["flipped"] = [bool(v) for v in self.flipped]
        if logits:
            out["logits"] = [float(v) for v in self.logits]
        return out


@dataclass(frozen=True)
class Failure:
    """An input of ``detect_many`` that could not be read: its position, name and why."""

    index: int
    source: str
    error: str

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "source": self.source, "error": self.error}


@dataclass(frozen=True)
class BatchReport:
    """``detect_many``'s answer: results of the good inputs in input order, and the failures."""

    results: tuple[DetectionResult, ...]
    failures: tuple[Failure, ...]

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self, *, logits: bool = True) -> dict[str, Any]:
        return {
            "results": [r.to_dict(logits=logits) for r in self.results],
            "failures": [f.to_dict() for f in self.failures],
        }


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output as the session sees it."""

    name: str
    shape: tuple[int | str | None, ...]
    dtype: str


def _tensor_specs(values: Iterable[onnx.ValueInfoProto]) -> tuple[TensorSpec, ...]:
    specs = []
    for vi in values:
        t = vi.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else
                      (d.dim_param if d.HasField("dim_param") else None) for d in t.shape.dim)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name if t.elem_type else "?"
        specs.append(TensorSpec(vi.name, shape, "bool" if dtype == "bool" else dtype))
    return tuple(specs)


def _file_inputs(model: onnx.ModelProto) -> tuple[TensorSpec, ...]:
    """The inputs a detector FILE declares, as ONNX Runtime lists them: the graph inputs that
    are not initializers, then the threshold initializers a run may override."""
    g = model.graph
    inits = {t.name for t in g.initializer}
    return _tensor_specs([*(i for i in g.input if i.name not in inits),
                          *(i for i in g.input if i.name in inits and i.name in THRESHOLD_NAMES)])


def _threshold_feed(name: str, value: float | Sequence[float] | None,
                    shape: tuple[int, ...]) -> np.ndarray | None:
    """An override as the graph declares the threshold: one value broadcast to ``shape``, or
    one value per kappa where the graph holds one per kappa."""
    if value is None:
        return None
    try:
        values = np.asarray(value, dtype=np.float64).reshape(-1)
        for i, v in enumerate(values):
            check_threshold(name if values.size == 1 else f"{name}[{i}]", float(v))
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}: {exc}") from exc
    if values.size == 1:
        return np.full(shape, values[0], dtype=np.float32)
    if values.shape != shape:
        raise InputError(f"{name}: {values.size} values given; this detector takes one value"
                         f"{f' or {shape[0]} (one per kappa)' if shape else ''}")
    return values.astype(np.float32)


class Detector:
    """Run an rpdetect detector ONNX file with ONNX Runtime.

    ``Detector(path, *, providers="auto", threads=None, provider_options=None, seed=None,
    prefetch_noise=0, noise_generator=None, noise_threads=None, engine_noise=None,
    channel_order="rgb", resize="shorter-crop", max_pixels=100_000_000,
    max_file_bytes=256 * 2**20, **options)``
    (options are keyword-only)

    * ``providers``: "auto" (TensorRT, then CUDA, then CPU, all that are available, in that
      order) or a name / list of names in priority order ("tensorrt"/"trt", "cuda", "cpu" or
      ONNX Runtime's names). ``detector.providers`` is what the session really uses.
    * ``threads``: ONNX Runtime intra-op threads (None: ORT's default, one per core).
    * ``**options`` / ``provider_options``: execution-provider options under ONNX Runtime's
      names, e.g. ``Detector(p, trt_fp16_enable=True, device_id=1)`` or
      ``provider_options={"cuda": {"gpu_mem_limit": 2 << 30}}`` (see ``providers.py``).
    * ``seed``: seeds the generator that draws the N(0, 1) noise for detectors built with
      ``noise="input"`` when ``detect`` is given none, and for graph-noise files whose front
      the engine builds (``engine_noise``). ``noise_generator``: None (default: "xoshiro",
      rpdetect's vectorised C generator, about 0.9 ns a value, where it is built, else
      "opencv"), "opencv" (``cv2.randn``, about 2 ns) or "numpy" (PCG64, about 9 ns);
      ``noise_threads``: threads that draw one image's noise at once (None: 2 where there are
      2 cores or more). See ``noise.py``.
    * ``prefetch_noise``: for ``noise="input"`` detectors, keep that many noise draws ready in a
      background thread, so drawing the next image's noise overlaps the current run (see
      ``noise.py``; same draws for a given seed). ``close()`` stops the thread.
    * ``channel_order``: the order of 3/4-channel integer arrays you pass ("rgb"; "bgr" for
      OpenCV frames). ``resize``: "shorter-crop", "stretch" or "none" (see ``images.py``).
    * ``max_pixels`` (default 100 megapixels) and ``max_file_bytes`` (default 256 MiB): image
      files over them are refused from their header, before they are read or decoded (see
      ``image_header.py``).
    * ``seed``: an integer >= 0 or None (anything else is a ValueError, whatever the noise mode).
    * ``engine_noise``: None (default): on the CPU provider the engine builds the n + 1 batch
      itself (``front.py``: the noise drawn by ``noise_generator`` straight into a preallocated
      buffer, fed by I/O binding; the graph's ``RandomNormalLike`` and Expand/Mul/Add/Concat
      are cut off in memory, the file is not changed); elsewhere the graph does it. True: the
      engine does it on any provider; False: the graph always does (its own random op for
      noise='graph' files). ``detector.front`` says which ("engine" or "graph"). With the
      engine's noise a graph-noise file is seeded by ``seed``, else by its own seed attribute.
      For a file exported with B > 1 the engine's graph takes any number of images per run:
      ``detect`` runs one image, ``detect_many`` the file's B together for small images and
      one at a time for large ones (``front.images_per_run``), never computing padding.
    * ``images_per_run``: None (default: as just said) or k >= 1, the images ``detect_many``
      puts in one run of the engine's graph, whatever the file's B. Larger runs trade memory
      and the first answer's wait for throughput (see ``front.images_per_run``). A ValueError
      where the engine could not free the graph's batch axis and k is not its B; ignored,
      with a warning, where the file's own graph runs (``front == "graph"``).
    * ``session_builder``: a ``rpdetect.engine.SessionBuilder`` instead of ``providers``,
      ``threads``, ``provider_options`` and ``**options`` (which must then be left out): how
      the session is opened, and the rule for "did the provider start" (``session.py``).

    Raises ModelError for a file that is not an rpdetect detector, ProviderError for providers
    or options ONNX Runtime cannot honour.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        providers: str | Sequence[str] = "auto",
        threads: int | None = None,
        provider_options: Mapping[str, Mapping[str, Any]] | None = None,
        seed: int | None = None,
        prefetch_noise: int = 0,
        noise_generator: NoiseGenerator | None = None,
        noise_threads: int | None = None,
        channel_order: ChannelOrder = "rgb",
        resize: ResizePolicy = "shorter-crop",
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        session_builder: SessionBuilder | None = None,
        engine_noise: bool | None = None,
        images_per_run: int | None = None,
        **options: Any,
    ) -> None:
        if images_per_run is not None and (isinstance(images_per_run, bool) or not isinstance(
                images_per_run, int) or images_per_run < 1):
            raise ValueError(f"images_per_run: expected None or an integer >= 1, got "
                             f"{images_per_run!r}")
        if channel_order not in CHANNEL_ORDERS:
            raise ValueError(
                f"channel_order: expected one of {CHANNEL_ORDERS}, got {channel_order!r}")
        if resize not in RESIZE_POLICIES:
            raise ValueError(f"resize: expected one of {RESIZE_POLICIES}, got {resize!r}")
        if session_builder is None:
            session_builder = SessionBuilder(
                providers=providers if isinstance(providers, str) else tuple(providers),
                provider_options=provider_options, options=options, threads=threads)
        elif providers != "auto" or threads is not None or provider_options or options:
            raise ValueError("session_builder: give either a SessionBuilder or providers/"
                             "threads/provider_options/options, not both")
        if isinstance(prefetch_noise, bool) or not isinstance(prefetch_noise, int) \
                or prefetch_noise < 0:
            raise ValueError(f"prefetch_noise: expected an integer >= 0, got {prefetch_noise!r}")
        check_seed(seed)
        self.limits = DecodeLimits(max_pixels=max_pixels, max_file_bytes=max_file_bytes)
        self.path = Path(path)
        self.channel_order: str = channel_order
        self.resize: str = resize
        if engine_noise not in (None, True, False):
            raise ValueError(f"engine_noise: expected None, True or False, got {engine_noise!r}")
        if engine_noise is None:
            engine_noise = session_builder.plan().names[:1] == ("CPUExecutionProvider",)
        # read once; the weights only where the engine cuts the graph (else ONNX Runtime reads
        # them itself)
        file_model, spec = load(self.path, weights=bool(engine_noise))
        self.info: DetectorSpec = spec
        # the file's inputs (image, noise, thresholds), whichever front runs
        self.inputs: tuple[TensorSpec, ...] = _file_inputs(file_model)
        self._check_file_io()
        cut = None
        if engine_noise:
            cut = split_front(file_model, spec, free_batch=None if images_per_run in (
                None, spec.batch) else True)
            if cut is None:
                _log.warning("%s: its graph does not start with rpdetect's front (or is too big "
                             "to cut in memory); the graph builds the noisy copies itself",
                             self.path)
        self.front: str = "graph" if cut is None else "engine"
        if cut is None:
            built = session_builder.build(
                self.path,
                reseed_graph_noise=self.info.noise == "graph" and self.info.seed is None)
        else:
            # Where the noise is drawn on threads of its own (a large image), ORT's idle workers
            # would otherwise spin after each run on the cores it is drawn on; for a small one
            # (drawn on the caller's thread in microseconds) waking them would cost more
            c, h, w = spec.input_shape
            drawing = noise_threads or default_noise_threads(spec.n * c * h * w)
            config = dict(session_builder.config)
            if drawing > 1:
                config.setdefault("session.force_spinning_stop", "1")
            built = session_builder.build(cut.model, name=str(self.path), config=config)
        self.session_builder = session_builder
        self.plan: ProviderPlan = built.plan
        self.session = built.session
        self.providers: tuple[str, ...] = built.providers
        _log.info("%s: running on %s, front built by the %s", self.path, list(self.providers),
                  self.front)
        # an INT8 classifier whose logits this CPU's ONNX Runtime kernels do not compute exactly
        self.int8_saturates: bool = _int8_saturates(spec, self.providers)
        if self.int8_saturates:
            _log.warning(INT8_SATURATION_WARNING, self.path)
        # the file's outputs too: a graph cut per image answers [1, ...] per run
        self.outputs: tuple[TensorSpec, ...] = _tensor_specs(file_model.graph.output)
        self._batch_input = None if cut is None else cut.batch_input
        output_names = {t.name for t in self.outputs}
        self._outputs: tuple[str, ...] = REQUIRED_OUTPUTS + tuple(
            n for n in FLIP_OUTPUTS if n in output_names)
        # as the file holds them: [n] per kappa in files from rpdetect >= 0.2, scalars before
        legacy = not self.info.has_flips
        self._threshold_shapes: dict[str, tuple[int, ...]] = {
            "threshold1": () if legacy else (self.info.n,),
            "threshold2": () if legacy else (self.info.n,), "threshold3": ()}
        graph_draws = self.info.noise == "graph" and self.front == "graph"
        if seed is None and self.info.noise == "graph" and self.front == "engine" \
                and self.info.seed is not None:
            seed = int(self.info.seed)  # the file asks for reproducible noise
        if seed is not None and graph_draws:
            _log.warning("%s: seed=%r is ignored: this detector draws its noise inside the graph "
                         "(noise='graph', seed attribute %s); seed applies to noise='input' "
                         "detectors", self.path, seed,
                         "none" if self.info.seed is None else f"{self.info.seed:g}")
        if prefetch_noise and graph_draws:
            _log.warning("%s: prefetch_noise=%r is ignored: this detector draws its noise inside "
                         "the graph (noise='graph')", self.path, prefetch_noise)
        c, h, w = self.info.input_shape
        self.noise_source = NoiseSource(
            (self.info.n, c, h, w), seed=seed,
            prefetch=0 if graph_draws else prefetch_noise,
            generator=noise_generator,
            threads=noise_threads)
        per_run = None
        if cut is not None:
            per_run = cut.images or images_per_run or default_images_per_run(self.info)
            if images_per_run is not None and images_per_run != per_run:
                raise ValueError(f"images_per_run={images_per_run}: the engine could not free "
                                 f"the batch axis of {self.path.name}'s graph, which runs "
                                 f"{per_run} images per run")
        elif images_per_run is not None and images_per_run != self.info.batch:
            _log.warning("%s: images_per_run=%r is ignored: the file's own graph runs (front "
                         "'graph'), %d images per run", self.path, images_per_run,
                         self.info.batch)
        self._buffer = None if cut is None else BatchBuffer(
            self.info, self.noise_source, images=per_run, trim=cut.images == 0)
        self._bindings = threading.local()  # each thread's I/O binding of its buffer

    def close(self) -> None:
        """Stop the noise threads (prefetch and drawing, if any). The session is released with
        the object."""
        self.noise_source.close()

    def __enter__(self) -> "Detector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- construction checks ------------------------------------------------------------
    def _check_file_io(self) -> None:
        info = self.info
        c, h, w = info.input_shape
        want_image = ((info.batch, c, h, w) if info.input_format == "float-nchw"
                      else (info.batch, h, w, 3))
        by_name = {t.name: t for t in self.inputs}
        expected = {"image": want_image}
        if info.noise == "input":
            expected["noise"] = (info.batch, info.n, c, h, w)
        for name, shape in expected.items():
            got = by_name.get(name)
            if got is None or tuple(got.shape) != shape:
                raise ModelError(
                    f"{self.path}: input {name!r} has shape {None if got is None else got.shape}, "
                    f"but the rpdetect metadata says {shape}; re-export the detector"
                )

    # --- properties ---------------------------------------------------------------------
    @property
    def batch(self) -> int:
        return self.info.batch

    @property
    def kappas(self) -> tuple[float, ...]:
        return self.info.kappas

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images the detector takes."""
        return self.info.input_shape

    def __repr__(self) -> str:
        c, h, w = self.info.input_shape
        return (f"Detector({str(self.path)!r}, providers={list(self.providers)}, "
                f"batch={self.batch}, n={self.info.n}, input={self.info.input_format} "
                f"{c}x{h}x{w}, noise={self.info.noise!r})")

    # --- feeds --------------------------------------------------------------------------
    def _image_feed(self, image: ImageLike, source: str) -> np.ndarray:
        c, h, w = self.info.input_shape
        fmt = self.info.input_format
        if fmt == "float-nchw":
            return prepare_image(image, (h, w), channels=c, channel_order=self.channel_order,
                                 resize=self.resize, source=source, limits=self.limits)
        hwc = prepare_image(image, (h, w), channels=3, channel_order=self.channel_order,
                            resize=self.resize, layout="uint8-hwc", source=source,
                            limits=self.limits)
        if fmt == "uint8-nhwc-bgr" and self.front == "graph":  # the engine's front takes RGB
            return np.ascontiguousarray(hwc[:, :, ::-1])
        return hwc

    def _pixels(self, feed: np.ndarray) -> np.ndarray:
        """An image feed (RGB on the engine's front) as float [C, H, W] pixels: what the
        graph's Cast/Gather/Transpose/Div make of a uint8 feed."""
        if self.info.input_format == "float-nchw":
            return feed
        return np.divide(feed.transpose(2, 0, 1), np.float32(255.0), dtype=np.float32)

    def _noise_feed(self, noise: np.ndarray | None, source: str) -> np.ndarray | None:
        c, h, w = self.info.input_shape
        shape = (self.info.n, c, h, w)
        if self.info.noise != "input":
            if noise is not None:
                raise InputError(
                    f"{source}: noise given, but {self.path.name} draws its noise inside the "
                    f"graph (noise='graph'); build the detector with noise='input' to feed it"
                )
            return None
        if noise is None:  # the engine's front draws into its buffer at run time
            return None if self.front == "engine" else self.noise_source.draw()
        noise = np.asarray(noise)
        if noise.shape == (1, *shape):
            noise = noise[0]
        if noise.shape != shape:
            raise InputError(f"{source}: noise has shape {noise.shape}, expected {shape} "
                             f"(n, C, H, W)")
        if not np.issubdtype(noise.dtype, np.floating):
            raise InputError(f"{source}: noise has dtype {noise.dtype}, expected float")
        if not np.isfinite(noise).all():
            raise InputError(f"{source}: noise contains NaN/Inf")
        return noise.astype(np.float32, copy=False)

    def _run(
        self,
        images: Sequence[np.ndarray],
        noises: Sequence[np.ndarray | None],
        sources: Sequence[str],
        thresholds: dict[str, np.ndarray],
    ) -> list[DetectionResult]:
        """One session run on up to ``batch`` prepared images (the rest of the batch is padding
        whose results are dropped)."""
        count, b = len(images), self.batch
        try:
            if self._buffer is not None:
                out = self._run_engine_front(images, noises, thresholds)
            else:
                pad = b - count
                feed: dict[str, np.ndarray] = {"image": _stack(images, pad, images[-1]),
                                               **thresholds}
                if self.info.noise == "input":
                    feed["noise"] = _stack(noises, pad,  # type: ignore[arg-type]
                                           np.zeros_like(noises[0]))  # type: ignore[arg-type]
                out = dict(zip(self._outputs, self.session.run(list(self._outputs), feed)))
        except Exception as exc:
            raise RpdetectError(
                f"{self.path}: ONNX Runtime failed running {list(sources)}: {exc}") from exc
        finally:
            self.noise_source.refill()  # prefetch the next noise now that the run is done
        return [
            DetectionResult(
                label=int(out["label"][i]),
                is_adversarial=bool(out["is_adversarial"][i]),
                score1=_frozen(np.array(out["score1"][i], dtype=np.float32)),
                score2=_frozen(np.array(out["score2"][i], dtype=np.float32)),
                score1_max=float(out["score1_max"][i]),
                score2_max=float(out["score2_max"][i]),
                logits=_frozen(np.array(out["logits"][i], dtype=np.float32)),
                source=sources[i],
                flipped=_frozen(np.array(out["flipped"][i], dtype=bool)) if "flips" in out
                else None,
                flips=int(out["flips"][i]) if "flips" in out else None,
            )
            for i in range(count)
        ]

    def _run_engine_front(self, images: Sequence[np.ndarray],
                          noises: Sequence[np.ndarray | None],
                          thresholds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One run on the cut graph: the inner batch built in this thread's buffer, bound
        without a copy (I/O binding; a plain run when thresholds are overridden), the outputs
        read back."""
        assert self._buffer is not None and self._batch_input is not None
        step = self._buffer.batch  # images per run of the cut graph (images_per_run)
        parts = []
        for start in range(0, len(images), step):
            buf = self._buffer.fill([self._pixels(i) for i in images[start:start + step]],
                                    list(noises[start:start + step]))
            if thresholds:  # I/O binding cannot bind an overridable initializer: a plain run
                feed = {self._batch_input: buf, **thresholds}
                parts.append(self.session.run(list(self._outputs), feed))
            else:
                io = self._binding(buf)
                self.session.run_with_iobinding(io)
                parts.append(io.copy_outputs_to_cpu())
            self.noise_source.refill()  # a prefetched draw for the next image starts now
        if len(parts) == 1:
            return dict(zip(self._outputs, parts[0]))
        return {name: np.concatenate([p[i] for p in parts])
                for i, name in enumerate(self._outputs)}

    def _binding(self, buf: np.ndarray) -> Any:
        """This thread's I/O binding of ``buf`` (its inner-batch buffer, or the first rows of
        it, bound without a copy: refilled in place, it needs no rebinding) and of the outputs,
        made once per thread and number of rows."""
        base = buf if buf.base is None else buf.base
        bound = getattr(self._bindings, "bound", None)
        if bound is None or bound[0] is not base:
            bound = self._bindings.bound = (base, {})
        io = bound[1].get(len(buf))
        if io is None:
            io = self.session.io_binding()
            io.bind_cpu_input(self._batch_input, buf)
            for name in self._outputs:
                io.bind_output(name)
            bound[1][len(buf)] = io
        return io

    def _thresholds(self, threshold1: float | Sequence[float] | None,
                    threshold2: float | Sequence[float] | None,
                    threshold3: float | None) -> dict[str, np.ndarray]:
        if threshold3 is not None and not self.info.has_flips:
            raise InputError(f"threshold3: {self.path.name} has no flip count (a file from "
                             f"rpdetect <= 0.1); re-export it with `rpdetect export`")
        given = {"threshold1": threshold1, "threshold2": threshold2, "threshold3": threshold3}
        feeds = {k: _threshold_feed(k, v, self._threshold_shapes[k]) for k, v in given.items()}
        return {k: v for k, v in feeds.items() if v is not None}

    # --- public API ---------------------------------------------------------------------
    def thresholds(self, threshold1: float | Sequence[float] | None = None,
                   threshold2: float | Sequence[float] | None = None,
                   threshold3: float | None = None) -> Thresholds:
        """The thresholds a run compares against: the file's (read from its initializers), with
        the given overrides in their place (InputError for NaN, -inf or a wrong length)."""
        t = self.info.thresholds
        feeds = self._thresholds(threshold1, threshold2, threshold3)
        values = {name: feeds[name] if name in feeds else getattr(t, name)
                  for name in THRESHOLD_NAMES}
        return Thresholds.of(values["threshold1"], values["threshold2"],
                             float(np.asarray(values["threshold3"])), n=self.info.n)

    def detect(
        self,
        image: ImageLike,
        *,
        noise: np.ndarray | None = None,
        threshold1: float | Sequence[float] | None = None,
        threshold2: float | Sequence[float] | None = None,
        threshold3: float | None = None,
    ) -> DetectionResult:
        """Detect on one image: a file path, a uint8/uint16 HWC array or a float CHW array in
        [0, 1] (policy in ``rpdetect.engine.images``).

        ``noise`` [n, C, H, W] N(0, 1) draws, only for detectors built with noise="input"
        (default: drawn from this Detector's seeded Generator). ``threshold1``/``threshold2``
        (one value, or one per kappa) and ``threshold3`` (the flip count) override the
        thresholds stored in the file for this call (``rpdetect.rule``; strictly greater).
        Raises InputError naming the image and what is wrong with it (``NonFiniteError``, an
        InputError, when the classifier gives NaN/inf logits or scores for it: no verdict)."""
        source = str(image) if isinstance(image, (str, Path)) else "array"
        thresholds = self._thresholds(threshold1, threshold2, threshold3)
        feed = self._image_feed(image, source)
        return check_finite(
            self._run([feed], [self._noise_feed(noise, source)], [source], thresholds)[0])

    def detect_many(
        self,
        items: Iterable[ImageLike],
        *,
        noise: np.ndarray | Sequence[np.ndarray] | None = None,
        threshold1: float | Sequence[float] | None = None,
        threshold2: float | Sequence[float] | None = None,
        threshold3: float | None = None,
        progress: bool = True,
    ) -> BatchReport:
        """Detect on many images, ``batch`` per session run. A bad input becomes a ``Failure``
        (index, source, message) and never costs the other results; so does an input whose
        logits or scores are not finite (no verdict). ``items``: paths and/or arrays (a 4-D
        array is a batch of CHW/HWC images); arrays are named "array[i]". ``noise``: optional
        [len(items), n, C, H, W]. The progress bar (tqdm, stderr) shows only when ``progress``
        and stderr is a terminal. ``detect_iter`` gives the same answers one by one."""
        results: list[DetectionResult] = []
        failures: list[Failure] = []
        for outcome in self.detect_iter(items, noise=noise, threshold1=threshold1,
                                        threshold2=threshold2, threshold3=threshold3,
                                        progress=progress):
            (failures if isinstance(outcome, Failure) else results).append(outcome)
        return BatchReport(tuple(results), tuple(failures))

    def detect_iter(
        self,
        items: Iterable[ImageLike],
        *,
        noise: np.ndarray | Sequence[np.ndarray] | None = None,
        threshold1: float | Sequence[float] | None = None,
        threshold2: float | Sequence[float] | None = None,
        threshold3: float | None = None,
        progress: bool = False,
    ) -> Iterator[DetectionResult | Failure]:
        """``detect_many`` as a stream: yields each input's ``DetectionResult`` or ``Failure`` in
        input order as soon as its batch has run, so a caller can print results while the
        rest are still being computed (``rpdetect detect`` does)."""
        if isinstance(items, (str, Path)) or (isinstance(items, np.ndarray) and items.ndim < 4):
            raise InputError("detect_many: expected a sequence of images (paths or arrays); "
                             "use detect() for one image")
        thresholds = self._thresholds(threshold1, threshold2, threshold3)
        total = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
        if noise is not None and total is not None and len(noise) != total:
            raise InputError(f"detect_many: noise holds {len(noise)} draws for {total} images")
        # images per run: the file's batch, or the engine front's (``images_per_run``: 1 for a
        # large image, which is then prepared, run and answered before the next is read, so a
        # large call streams its images through the caches one at a time)
        run_size = self.batch if self._buffer is None else self._buffer.batch
        pending: tuple[list[np.ndarray], list[np.ndarray | None], list[str]] = ([], [], [])
        waiting: list[Failure | int] = []  # outcomes in input order; an int: a pending image
        bar = tqdm(total=total, unit="img", file=sys.stderr, desc="rpdetect",
                   disable=not (progress and sys.stderr.isatty()))
        try:
            for index, item in enumerate(items):
                source = str(item) if isinstance(item, (str, Path)) else f"array[{index}]"
                try:
                    image = self._image_feed(item, source)
                    draw = self._noise_feed(None if noise is None else noise[index], source)
                except InputError as exc:
                    waiting.append(Failure(index, source, str(exc)))
                    bar.update(1)
                    if not pending[0]:
                        yield from waiting  # type: ignore[misc]
                        waiting = []
                    continue
                for bucket, value in zip(pending, (image, draw, source)):
                    bucket.append(value)  # type: ignore[arg-type]
                waiting.append(index)
                if len(pending[0]) == run_size:
                    yield from _in_order(waiting, self._run(*pending, thresholds))
                    bar.update(len(pending[0]))
                    pending, waiting = ([], [], []), []
            if pending[0] or waiting:
                ran = self._run(*pending, thresholds) if pending[0] else []
                yield from _in_order(waiting, ran)
                bar.update(len(pending[0]))
        finally:
            bar.close()


def _in_order(waiting: list[Failure | int], ran: list[DetectionResult]
              ) -> Iterator[DetectionResult | Failure]:
    """The outcomes of ``waiting`` in input order: failures as they are, each pending index
    replaced by its result from ``ran`` (a non-finite one becomes a Failure)."""
    results = iter(ran)
    for item in waiting:
        if isinstance(item, Failure):
            yield item
            continue
        result = next(results)
        message = nonfinite_message(result)
        yield result if message is None else Failure(item, result.source, message)
