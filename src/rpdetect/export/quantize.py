"""INT8 detectors for edge CPUs: the classifier inside a detector quantized with ONNX Runtime's
static quantization; the noise, the scores and the verdict stay float32.

``build_int8_detector(classifier, config, calibration)``:

1. the FP32 detector is built as ``rpdetect export`` builds it (classifier intake included), and
   the classifier is taken back out of it (``extract_classifier``), so what is quantized is
   exactly what the detector runs;
2. ``onnxruntime.quantization.quant_pre_process`` (shape inference, graph optimisation), then
   ``quantize_static``: QDQ format, weights int8 per output channel, activations uint8 (the
   u8 x s8 products that AVX-512 VNNI and AMX run natively; measured on an Intel Xeon:
   QOperator runs as fast as QDQ, s8 activations twice as slow; ``reduce_range``, 7-bit
   weights, is for CPUs without VNNI: there ONNX Runtime's u8 x s8 kernels saturate on
   full-range weights, see ``rpdetect.cpu.u8s8_saturates``), activation ranges calibrated
   (MinMax by default) through a :class:`InnerBatchReader`, an ONNX Runtime
   ``CalibrationDataReader`` that feeds the classifier what the detector feeds it: each clean
   calibration image together with its n noisy copies x + kappa_i * N(0, 1) (normalised where
   the detector folds normalisation in); with ``refine_steps``, the quantized classifier is
   then refined toward the FP32 one on the same images (``rpdetect.export.refine``: its integer
   weights, biases and float head; scales and graph unchanged);
3. the detector is rebuilt around the quantized classifier with the same config; its metadata
   says ``precision = int8`` and how it was quantized (``rpdetect info`` prints it), and keeps
   the SHA-256 and name of the FP32 classifier it came from.

Thresholds do not carry over from FP32 to INT8: the scores move, so an INT8 detector is
calibrated on its own scores (``rpdetect calibrate``).
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

import numpy as np
import onnx

from ..calibration.reader import ImageReader, as_reader
from ..contract import DetectorConfig, DetectorSpec, read_spec, set_metadata
from ..engine.images import prepare_image
from ..errors import InputError, ModelError
from .intake import IntakeOptions

__all__ = ["QuantizeOptions", "InnerBatchReader", "build_int8_detector", "classifier_head",
           "classifier_stem", "quantize_classifier", "weight_range"]

CalibrateMethod = Literal["minmax", "entropy", "percentile"]


@dataclass(frozen=True)
class QuantizeOptions:
    """ONNX Runtime static-quantization choices, under its names where it has them."""

    quant_format: Literal["qdq", "qoperator"] = "qdq"
    activation_type: Literal["uint8", "int8"] = "uint8"
    weight_type: Literal["int8", "uint8"] = "int8"
    per_channel: bool = True
    reduce_range: bool = False
    calibrate_method: CalibrateMethod = "minmax"
    max_images: int = 100  # calibration images used (each with its n noisy copies)
    seed: int = 0  # of the calibration copies' noise
    float_head: bool = True  # keep the classifier's head in float32 (see classifier_head)
    float_stem: bool = False  # keep the layer that reads the image in float32 (classifier_stem)
    nodes_to_exclude: tuple[str, ...] = ()  # further nodes kept in float32, by name
    # quantization-aware refinement toward the FP32 classifier on the calibration images
    # (rpdetect.export.refine); 0: none. Not in the repr, which keys rpdetect evaluate's caches
    # (cache_key() adds them when set)
    refine_steps: int = field(default=0, repr=False)
    refine_lr: float = field(default=0.02, repr=False)

    def __post_init__(self) -> None:
        choices = {"quant_format": ("qdq", "qoperator"), "activation_type": ("uint8", "int8"),
                   "weight_type": ("int8", "uint8"),
                   "calibrate_method": ("minmax", "entropy", "percentile")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: expected one of {allowed}, got {getattr(self, name)!r}")
        if isinstance(self.max_images, bool) or not isinstance(self.max_images, int) \
                or self.max_images < 1:
            raise ValueError(f"max_images: expected an integer >= 1, got {self.max_images!r}")
        if isinstance(self.nodes_to_exclude, str) or not all(
                isinstance(n, str) and n for n in self.nodes_to_exclude):
            raise ValueError("nodes_to_exclude: expected a tuple of node names, got "
                             f"{self.nodes_to_exclude!r}")
        if isinstance(self.refine_steps, bool) or not isinstance(self.refine_steps, int) \
                or self.refine_steps < 0:
            raise ValueError(f"refine_steps: expected an integer >= 0, got {self.refine_steps!r}")
        if self.refine_steps and self.quant_format != "qdq":
            raise ValueError("refine_steps: refinement reads the QDQ format (quant_format qdq)")
        if not (isinstance(self.refine_lr, (int, float)) and 0 < self.refine_lr < 1):
            raise ValueError(f"refine_lr: expected a number in (0, 1), got {self.refine_lr!r}")

    def cache_key(self) -> str:
        """What tells two quantizations apart (the repr, plus the refinement when set)."""
        refine = f"refine({self.refine_steps}, {self.refine_lr})" if self.refine_steps else ""
        return repr(self) + refine


class InnerBatchReader:
    """ONNX Runtime's ``CalibrationDataReader`` protocol (``get_next()`` -> feed dict or None)
    over clean images: one feed per image, ``{input: [n + 1, C, H, W]}`` = the image and its n
    noisy copies, as the detector's front builds them. Images that cannot be read are skipped
    and listed in ``failures``; ``count`` says how many were fed."""

    def __init__(self, images: ImageReader | Iterable[Any], spec: DetectorSpec, input_name: str,
                 *, max_images: int = 100, seed: int = 0, keep: bool = False) -> None:
        self.reader = as_reader(images)
        self.spec = spec
        self.input_name = input_name
        self.max_images = max_images
        self.rng = np.random.default_rng(seed)
        self.count = 0
        self.failures: list[tuple[str, str]] = []
        self.keep = keep
        self.images: list[np.ndarray] = []  # the images fed, with keep (for refinement)
        c, _, _ = spec.input_shape
        self._mean = None if spec.mean is None else np.asarray(spec.mean, np.float32).reshape(
            -1, 1, 1) * np.ones((c, 1, 1), np.float32)
        self._std = None if spec.std is None else np.asarray(spec.std, np.float32).reshape(
            -1, 1, 1) * np.ones((c, 1, 1), np.float32)

    def get_next(self) -> dict[str, np.ndarray] | None:
        c, h, w = self.spec.input_shape
        while self.count < self.max_images:
            item = self.reader.get_next()
            if item is None:
                return None
            name, image = item
            try:
                x = prepare_image(image, (h, w), channels=c, source=name)
            except InputError as exc:
                self.failures.append((name, str(exc)))
                continue
            self.count += 1
            if self.keep:
                self.images.append(x)
            return {self.input_name: self.batch(x)}
        return None

    def batch(self, x: np.ndarray) -> np.ndarray:
        """[n + 1, C, H, W]: x and x + kappa_i * N(0, 1), clipped and normalised as the
        detector does."""
        kappas = np.asarray(self.spec.kappas, np.float32).reshape(-1, 1, 1, 1)
        eps = self.rng.standard_normal((len(kappas), *x.shape), dtype=np.float32)
        noisy = x[None] + eps * kappas
        if self.spec.clip:
            np.clip(noisy, 0.0, 1.0, out=noisy)
        out = np.concatenate([x[None], noisy]).astype(np.float32)
        if self._mean is not None and self._std is not None:
            out = (out - self._mean) / self._std
        return np.ascontiguousarray(out, dtype=np.float32)


def _ort_enums(options: QuantizeOptions) -> dict[str, Any]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    return {"quant_format": QuantFormat.QDQ if options.quant_format == "qdq"
            else QuantFormat.QOperator,
            "activation_type": types[options.activation_type],
            "weight_type": types[options.weight_type],
            "calibrate_method": methods[options.calibrate_method]}


WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _weighted_end(graph: onnx.GraphProto, start: str, *, forward: bool) -> list[str]:
    """The nodes met walking from tensor ``start`` (forward to its consumers, or back to its
    producers) up to and including the first weighted layer (``WEIGHTED_OPS`` with a constant
    weight) on every path, in graph order; [] when no path reaches one."""
    constants = {t.name for t in graph.initializer}
    constants |= {o for nd in graph.node if nd.op_type == "Constant" for o in nd.output}
    nextnodes: dict[str, list[onnx.NodeProto]] = {}
    for nd in graph.node:
        for name in (nd.input if forward else nd.output):
            nextnodes.setdefault(name, []).append(nd)
    seen: set[int] = set()
    found = False
    stack = [start]
    while stack:
        for node in nextnodes.get(stack.pop(), []):
            if id(node) in seen:
                continue
            seen.add(id(node))
            if node.op_type in WEIGHTED_OPS and any(i in constants for i in node.input[1:]):
                found = True  # the quantized body lies beyond it
                continue
            stack.extend(node.output if forward else
                         (i for i in node.input if i and i not in constants))
    return [nd.name for nd in graph.node if id(nd) in seen] if found else []


def classifier_head(classifier: onnx.ModelProto) -> list[str]:
    """The names of the classifier's *head*, in graph order: the last weighted layer(s) (Conv,
    ConvTranspose, Gemm, MatMul with a constant weight) on every path to the first output, and
    every node after them (a logit scale, a bias, a Flatten). [] when no path to the output
    passes a weighted layer (the whole model would be "head": nothing is kept in float).

    Why it stays float32: both scores are differences between the logits of an image and of its
    noisy copies. Quantized to uint8, logits move in steps of (their calibrated range) / 255
    (0.033 on our CIFAR-10 classifier) and, worse, are clipped at the range seen on clean
    images, which is where adversarial examples put theirs (measured in the README, section
    INT8). The head is one small matrix product (0.3 % of EfficientNet-Lite0's multiply-adds)."""
    return _weighted_end(classifier.graph, classifier.graph.output[0].name, forward=False)


def classifier_stem(classifier: onnx.ModelProto) -> list[str]:
    """The names of the classifier's *stem*, in graph order: the first weighted layer(s) (as in
    :func:`classifier_head`) on every path from the image input, and the nodes before them (a
    folded normalisation). [] when no path from the input reaches a weighted layer.

    Kept float32 (``float_stem``), the image and its noisy copies are not rounded to uint8
    before the first convolution: at kappa = 0.01 the noise is about one uint8 step of a [0, 1]
    image. On ImageNette this raised the INT8 detector's score2 AUC on DDN examples from 0.907 to
    0.947 (FP32: 0.985) for 1.4-2.3 ms of EfficientNet-Lite0's ~30 ms (README, sections INT8 and
    Latency)."""
    return _weighted_end(classifier.graph, classifier.graph.input[0].name, forward=True)


def _name_nodes(model: onnx.ModelProto) -> None:
    """ONNX Runtime excludes nodes by name: give every unnamed node one."""
    taken = {nd.name for nd in model.graph.node}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"rpdetect_quantize_{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)


def quantize_classifier(classifier: onnx.ModelProto, reader: Any,
                        options: QuantizeOptions = QuantizeOptions()) -> onnx.ModelProto:
    """``classifier`` ([N, C, H, W] -> [N, K]) statically quantized by ONNX Runtime with the
    activation ranges ``reader`` (a ``CalibrationDataReader``) gives; with
    ``options.float_head`` its :func:`classifier_head` stays float32, with ``options.float_stem``
    its :func:`classifier_stem`, and so do ``options.nodes_to_exclude``. ModelError when ONNX
    Runtime cannot quantize it."""
    return _quantize(classifier, reader, options)[0]


def _quantize(classifier: onnx.ModelProto, reader: Any, options: QuantizeOptions
              ) -> tuple[onnx.ModelProto, list[str]]:
    """:func:`quantize_classifier`, and the names of the nodes it kept in float32."""
    from onnxruntime.quantization import quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="rpdetect-quantize-") as tmp:
        src, pre, out = (Path(tmp) / f for f in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        classifier = onnx.ModelProto.FromString(classifier.SerializeToString())
        _name_nodes(classifier)
        onnx.save(classifier, str(src))
        try:
            quant_pre_process(str(src), str(pre))
            prepared = onnx.load(str(pre))
            _name_nodes(prepared)
            onnx.save(prepared, str(pre))
        except Exception:  # noqa: BLE001 - optional step: quantize the model as it is
            pre, prepared = src, classifier
        names = {nd.name for nd in prepared.graph.node}
        unknown = [n for n in options.nodes_to_exclude if n not in names]
        if unknown:
            raise ModelError(f"nodes_to_exclude: no node named {unknown[0]!r} in the classifier "
                             "(names as `quant_pre_process` leaves them)")
        exclude = list(options.nodes_to_exclude)
        if options.float_head:
            exclude += [n for n in classifier_head(prepared) if n not in exclude]
        if options.float_stem:
            exclude += [n for n in classifier_stem(prepared) if n not in exclude]
        try:
            quantize_static(str(pre), str(out), reader, per_channel=options.per_channel,
                            reduce_range=options.reduce_range, nodes_to_exclude=exclude,
                            **_ort_enums(options))
        except Exception as exc:
            raise ModelError(f"ONNX Runtime could not quantize the classifier: {exc}") from exc
        return onnx.load(str(out)), exclude


def weight_range(options: QuantizeOptions) -> tuple[int, int]:
    """The integer range ONNX Runtime quantizes int8 weights to under ``options``: (-128, 127),
    or (-64, 64) with ``reduce_range`` (``quant_utils.get_qmin_qmax_for_qType``)."""
    from onnxruntime.quantization.quant_utils import get_qmin_qmax_for_qType

    low, high = get_qmin_qmax_for_qType(onnx.TensorProto.INT8, reduce_range=options.reduce_range)
    return int(low), int(high)


def build_int8_detector(
    classifier: onnx.ModelProto | str | Path,
    config: DetectorConfig,
    calibration: ImageReader | Iterable[Any],
    *,
    options: QuantizeOptions = QuantizeOptions(),
    classifier_output: str | None = None,
    input_shape: Sequence[int] | None = None,
    intake: IntakeOptions | None = None,
) -> onnx.ModelProto:
    """The detector of ``config`` around ``classifier`` quantized to INT8 (module doc).
    InputError when no calibration image could be read."""
    from .graph import build_detector, extract_classifier

    fp32 = build_detector(classifier, config, classifier_output=classifier_output,
                          input_shape=input_shape, intake=intake)
    spec = read_spec(fp32)
    inner = extract_classifier(fp32)
    if spec.num_classes is not None:
        inner.graph.output[0].type.tensor_type.shape.dim[1].dim_value = spec.num_classes
    reader = InnerBatchReader(calibration, spec, inner.graph.input[0].name,
                              max_images=options.max_images, seed=options.seed,
                              keep=options.refine_steps > 0)
    quantized, float_nodes = _quantize(inner, reader, options)
    if reader.count == 0:
        detail = f": {reader.failures[0][0]}: {reader.failures[0][1]}" if reader.failures else ""
        raise InputError(f"quantization: no calibration image could be read{detail}")
    refined: dict[str, Any] = {}
    if options.refine_steps:
        from .refine import refine_quantized

        quantized, report = refine_quantized(quantized, inner, reader.images, reader.batch,
                                             steps=options.refine_steps, lr=options.refine_lr,
                                             seed=options.seed,
                                             weight_range=weight_range(options))
        refined = {"refine": report.to_dict()}
    meta = {p.key: p.value for p in fp32.metadata_props}
    # the folded normalisation is in front of the extracted classifier: fold it again
    model = build_detector(quantized, replace(config, extra_metadata={}),
                           input_shape=spec.input_shape)
    import onnxruntime

    record = {**asdict(options), "float_nodes": float_nodes,
              "images": reader.count, "failed": len(reader.failures),
              "source": getattr(reader.reader, "source", "images"),
              "onnxruntime": onnxruntime.__version__,
              "inputs": "each image with its n noisy copies, as the detector feeds them",
              **refined}
    set_metadata(model, {
        **{k: v for k, v in read_spec(model).with_precision("int8", record).to_metadata().items()
           if k in ("precision", "quantization")},
        "classifier_sha256": spec.classifier_sha256,
        "classifier_source": spec.classifier_source,
        "classifier_intake": meta.get("rpdetect.classifier_intake", "[]"),
        **config.extra_metadata,
    })
    return model
