"""The detector file's contract: what an rpdetect ``.onnx`` file holds and how it is read and
written. Export writes through this module, the engine reads through it (without the graph
surgery in ``rpdetect.export.graph``), bench groups profiled nodes by its tags, and the C++ and
Node clients follow the metadata keys documented here.

A detector file has

* graph inputs ``image`` (and ``noise`` for noise="input" files) and the overridable
  initializers ``threshold1`` / ``threshold2`` ([n], one per kappa; scalars in files from
  rpdetect <= 0.1) and ``threshold3`` ([], the flip count; absent before 0.2);
* graph outputs :data:`OUTPUTS` (``flipped`` / ``flips`` absent before 0.2);
* string metadata ``rpdetect.<key>`` (:data:`METADATA_KEYS`); every value is text: numbers in
  Python ``repr`` (``inf`` for +inf, as C's ``strtof`` reads it), lists and objects as JSON;
* node names ``rpdetect/<group>/<what>`` for the nodes rpdetect adds (:data:`NODE_GROUPS`);
  every other node is the classifier's. Files from before 0.3 named them ``rpdetect/<what>``
  without a group; :func:`node_group` still places those.

The thresholds the graph compares against are its initializers: :func:`read_thresholds` reads
them, and the ``threshold*`` metadata mirror them for readers without an ONNX library.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from ._atomic import atomic_path, check_output
from ._version import __version__
from .errors import ModelError
from .reference import default_kappas
from .rule import Thresholds

__all__ = [
    "CLASSIFIER_INPUT_KEY",
    "CLASSIFIER_OUTPUT_KEY",
    "DetectorConfig",
    "DetectorSpec",
    "FLIP_OUTPUTS",
    "INPUT_FORMATS",
    "METADATA_KEYS",
    "METADATA_PREFIX",
    "NODE_GROUPS",
    "NODE_PREFIX",
    "NOISE_MODES",
    "OUTPUTS",
    "PRECISIONS",
    "PUBLIC_NAMES",
    "Provenance",
    "REQUIRED_INPUTS",
    "REQUIRED_OUTPUTS",
    "THRESHOLD_NAMES",
    "check_detector_io",
    "check_normalisation",
    "load",
    "node_group",
    "node_name",
    "read_spec",
    "read_thresholds",
    "save",
    "with_thresholds",
]

# --- tensor names ------------------------------------------------------------------------
NoiseMode = Literal["graph", "input"]
InputFormat = Literal["float-nchw", "uint8-nhwc-rgb", "uint8-nhwc-bgr"]
INPUT_FORMATS: tuple[str, ...] = ("float-nchw", "uint8-nhwc-rgb", "uint8-nhwc-bgr")
NOISE_MODES: tuple[str, ...] = ("graph", "input")

THRESHOLD_NAMES: tuple[str, ...] = ("threshold1", "threshold2", "threshold3")
REQUIRED_INPUTS: tuple[str, ...] = ("image", "threshold1", "threshold2")
REQUIRED_OUTPUTS: tuple[str, ...] = (
    "logits", "label", "score1", "score2", "score1_max", "score2_max", "is_adversarial",
)
FLIP_OUTPUTS: tuple[str, ...] = ("flipped", "flips")  # files from rpdetect >= 0.2
OUTPUTS: tuple[str, ...] = (*REQUIRED_OUTPUTS[:-1], *FLIP_OUTPUTS, "is_adversarial")
# Every public input and output; a classifier tensor with one of these names is renamed
# (prefixed "classifier/") during surgery.
PUBLIC_NAMES: tuple[str, ...] = ("image", "noise", *THRESHOLD_NAMES, *OUTPUTS)

# --- node names --------------------------------------------------------------------------
NODE_PREFIX = "rpdetect/"
NodeGroup = Literal["input", "noise", "normalisation", "scores"]
# what each group of added nodes does (bench/profile.py reports time per group; the rest is
# "classifier")
NODE_GROUPS: dict[str, str] = {
    "input": "cast, layout, stacking the clean image and its copies into the inner batch",
    "noise": "the random op (or the noise input), kappa scaling, x + noise, clipping",
    "normalisation": "the folded (x - mean) / std",
    "scores": "everything after the classifier: Eq. 5/6, flips, the verdict",
}
# nodes of files from before 0.3 (no group in the name), by what they were called
_LEGACY_GROUPS: dict[str, str] = {
    **dict.fromkeys(("noise_shape", "noise", "scaled_noise", "noisy", "noisy_clipped"), "noise"),
    **dict.fromkeys(("image_u", "stacked", "inner_batch", "image_float", "image_rgb",
                     "image_nchw", "pixels"), "input"),
    **dict.fromkeys(("centred", "normalised"), "normalisation"),
}
_SUFFIX = re.compile(r"_node(_\d+)?$")


def node_name(group: NodeGroup, base: str) -> str:
    """The name rpdetect gives a node or tensor it adds: ``rpdetect/<group>/<base>``."""
    if group not in NODE_GROUPS:
        raise ValueError(f"node group: expected one of {list(NODE_GROUPS)}, got {group!r}")
    return f"{NODE_PREFIX}{group}/{base}"


def node_group(name: str) -> str:
    """The group of a node in a detector file (:data:`NODE_GROUPS`), or "classifier" for the
    classifier's own nodes (ONNX Runtime's layout nodes included). ORT names a node it fused
    after the first one ("rpdetect/scores/z_noisy_node/...Fusion"), which stays in its group."""
    if not name.startswith(NODE_PREFIX):
        return "classifier"
    parts = name[len(NODE_PREFIX):].split("/")
    if parts[0] in NODE_GROUPS and len(parts) > 1:
        return parts[0]
    base = _SUFFIX.sub("", parts[0])  # a file from before 0.3
    if base.startswith("noise_") and base not in _LEGACY_GROUPS:
        return "noise"
    return _LEGACY_GROUPS.get(base, "scores")


# --- metadata ----------------------------------------------------------------------------
METADATA_PREFIX = "rpdetect."
CLASSIFIER_INPUT_KEY = METADATA_PREFIX + "classifier_input"
CLASSIFIER_OUTPUT_KEY = METADATA_PREFIX + "classifier_output"
# key (after the prefix) -> what its value says; all are written by export
METADATA_KEYS: dict[str, str] = {
    "version": "rpdetect version that wrote the file",
    "kappas": "JSON list of the n noise scales",
    "noise": '"graph" (RandomNormalLike inside) or "input" (a noise input [B, n, C, H, W])',
    "seed": 'the random op\'s seed attribute, or "none"',
    "batch": "B, the images per run",
    "clip": '"true" when the noisy copies are clipped to [0, 1]',
    "input_format": "one of " + ", ".join(INPUT_FORMATS),
    "input_shape": "JSON [C, H, W]",
    "mean": 'JSON list folded in before the classifier, or "none"',
    "std": 'JSON list, or "none"',
    "num_classes": 'K, or "unknown"',
    "threshold1": "JSON-like list of n floats (repr; inf for +inf), mirror of the initializer",
    "threshold2": "the same for score2",
    "threshold3": "one float: the flip count's threshold (inf: unused)",
    "rule": "the verdict in words",
    "calibrated": '"true" when any threshold is finite',
    "thresholds_provenance": "JSON object: where the thresholds came from (Provenance)",
    "classifier_sha256": "SHA-256 of the classifier file (or serialised model) it was built from",
    "classifier_source": "the classifier's file name",
    "classifier_input": "the classifier's input tensor inside the graph",
    "classifier_output": "its logits tensor inside the graph",
    "classifier_intake": "JSON list: what export did to the classifier before surgery",
    "opset": "the default-domain opset of the graph",
    "precision": '"fp32", or "int8": the classifier quantized by ONNX Runtime (QDQ); noise, '
                 'scores and verdict are float32 either way',
    "quantization": 'JSON object: how the classifier was quantized (rpdetect.export.quantize), '
                    'or "none"',
}
PRECISIONS: tuple[str, ...] = ("fp32", "int8")


def _float_nodes_text(quantization: Mapping[str, Any]) -> str:
    """How much of an int8 classifier stayed float32, in words (older files do not say)."""
    nodes = quantization.get("float_nodes")
    if nodes is None:
        return ""
    head = "head float32" if quantization.get("float_head") else "head int8"
    if quantization.get("float_stem"):
        head += ", stem float32"
    return f", {head}; float32 nodes: {', '.join(nodes) if nodes else 'none'}"


def _refine_text(quantization: Mapping[str, Any]) -> str:
    """Whether the integer weights were refined toward FP32 (rpdetect.export.refine)."""
    refine = quantization.get("refine")
    if not isinstance(refine, Mapping):
        return ""
    return (f"; weights refined toward the FP32 classifier in {refine.get('steps', '?')} steps "
            f"({refine.get('changed', '?')} of {refine.get('weights', '?')} integer weights "
            "moved)")


def check_normalisation(
    mean: Sequence[float] | None, std: Sequence[float] | None, channels: int
) -> None:
    """ValueError unless mean/std are both absent, or both 1 or ``channels`` values (std
    non-zero)."""
    if (mean is None) != (std is None):
        raise ValueError("mean and std go together: give both or neither")
    for name, vec in (("mean", mean), ("std", std)):
        if vec is not None and len(vec) not in (1, channels):
            raise ValueError(f"{name}: expected 1 or {channels} values, got {len(vec)}")
    if std is not None and any(v == 0 for v in std):
        raise ValueError(f"std: values must be non-zero, got {tuple(std)}")


@dataclass(frozen=True)
class DetectorConfig:
    """How a detector is built (the choices of ``rpdetect export``). Names follow the paper
    where they are the paper's. A built file's :class:`DetectorSpec` gives back its config
    (``spec.config()``), so a file can be rebuilt with other choices (bench does)."""

    kappas: tuple[float, ...] = tuple(float(k) for k in default_kappas())
    noise: NoiseMode = "graph"
    seed: float | None = None
    batch: int = 1
    clip: bool = False
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    input_format: InputFormat = "float-nchw"
    threshold1: float | tuple[float, ...] = math.inf  # one value, or one per kappa
    threshold2: float | tuple[float, ...] = math.inf
    threshold3: float = math.inf  # on the flip count; +inf: unused
    extra_metadata: dict[str, str] = field(default_factory=dict)

    def validate(self, channels: int) -> None:
        if len(self.kappas) < 1:
            raise ValueError("kappas: need at least one noise scale")
        if not all(math.isfinite(k) and k >= 0 for k in self.kappas):
            raise ValueError(f"kappas: every scale must be finite and >= 0, got {self.kappas}")
        if self.noise not in NOISE_MODES:
            raise ValueError(f"noise: expected one of {NOISE_MODES}, got {self.noise!r}")
        if self.input_format not in INPUT_FORMATS:
            raise ValueError(
                f"input_format: expected one of {INPUT_FORMATS}, got {self.input_format!r}"
            )
        if self.seed is not None and not math.isfinite(self.seed):
            raise ValueError(f"seed: must be a finite number, got {self.seed!r}")
        if not isinstance(self.batch, int) or self.batch < 1:
            raise ValueError(f"batch: expected an integer >= 1, got {self.batch!r}")
        if self.input_format != "float-nchw" and channels != 3:
            raise ValueError(
                f"input_format {self.input_format!r} needs a 3-channel classifier, got {channels}"
            )
        check_normalisation(self.mean, self.std, channels)
        self.thresholds()

    def thresholds(self) -> Thresholds:
        """The thresholds as the file will hold them (ValueError for NaN, -inf, wrong length)."""
        return Thresholds.of(self.threshold1, self.threshold2, self.threshold3,
                             n=len(self.kappas))


@dataclass(frozen=True)
class Provenance:
    """Where a file's thresholds came from: the one schema of the ``thresholds_provenance``
    metadata, written by ``rpdetect calibrate``, by the evaluation protocol and by
    ``with_thresholds`` for values set by hand. Unknown keys of other writers are kept in
    ``extra``; files written before 0.3 by the evaluation said ``images`` for ``n_images``."""

    calibrated: bool | None = None
    source: str | None = None  # the calibration images (a folder name), or "set by hand"
    mode: str | None = None  # the calibration rule (``rpdetect calibrate --mode``)
    fpr: float | None = None  # the false-positive rate it was set for
    n_images: int | None = None  # clean images scored
    n_failed: int | None = None  # images that could not be read
    rule: str | None = None  # how each threshold was picked, in words
    verdict: str | None = None  # the rule the thresholds make, in words
    date: str | None = None  # ISO 8601, UTC
    rpdetect_version: str | None = None
    achieved_rates: dict[str, float] | None = None  # fraction of the calibration set flagged
    note: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def uncalibrated(cls) -> "Provenance":
        return cls(False, note="uncalibrated: thresholds are +inf, the graph never flags")

    @classmethod
    def by_hand(cls) -> "Provenance":
        return cls(True, source="set by hand")

    def to_json(self) -> dict[str, Any]:
        """The JSON object stored in the file (fields that are None left out)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**self.extra, **{k: v for k, v in out.items() if v is not None}}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> "Provenance":
        """Read any file's provenance (ModelError for something that is not a JSON object)."""
        if not isinstance(doc, Mapping):
            raise ModelError(f"thresholds_provenance: expected a JSON object, got {doc!r}")
        doc = dict(doc)
        if "images" in doc and "n_images" not in doc:  # evaluation files from before 0.3
            doc["n_images"] = doc.pop("images")
        names = {f.name for f in fields(cls)} - {"extra"}
        known = {k: v for k, v in doc.items() if k in names}
        return cls(**known, extra={k: v for k, v in doc.items() if k not in names})


@dataclass(frozen=True)
class DetectorSpec:
    """Everything a detector file says about itself: its metadata, and the thresholds the
    graph holds (read from its initializers, which are the truth)."""

    kappas: tuple[float, ...]
    noise: str
    seed: float | None
    batch: int
    clip: bool
    input_format: str
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    num_classes: int | None
    thresholds: Thresholds
    has_flips: bool  # False for files from rpdetect <= 0.1 (paper rule only)
    provenance: Provenance
    classifier_sha256: str
    classifier_source: str
    version: str
    raw: dict[str, str]  # every rpdetect.* metadata value, by key without the prefix
    precision: str = "fp32"  # files from before 0.3 say nothing: fp32
    quantization: dict[str, Any] | None = None  # how an int8 classifier was quantized

    @property
    def n(self) -> int:
        return len(self.kappas)

    @property
    def calibrated(self) -> bool:
        return self.thresholds.calibrated

    @property
    def thresholds_provenance(self) -> dict[str, Any]:
        """The provenance as the file's JSON holds it."""
        return self.provenance.to_json()

    @property
    def threshold1(self) -> float | tuple[float, ...]:
        """score1's threshold: one number when it is the same at every kappa."""
        t = self.thresholds.threshold1
        return t[0] if len(set(t)) == 1 else t

    @property
    def threshold2(self) -> float | tuple[float, ...]:
        t = self.thresholds.threshold2
        return t[0] if len(set(t)) == 1 else t

    @property
    def threshold3(self) -> float:
        return self.thresholds.threshold3

    def config(self, **changes: Any) -> DetectorConfig:
        """The build choices that made this file, with ``changes`` (``noise="input"``,
        ``batch=4``, ...) in their place: ``build_detector(classifier, spec.config(...))``."""
        t = self.thresholds
        base = DetectorConfig(
            kappas=self.kappas, noise=self.noise, seed=self.seed,  # type: ignore[arg-type]
            batch=self.batch, clip=self.clip, mean=self.mean, std=self.std,
            input_format=self.input_format,  # type: ignore[arg-type]
            threshold1=t.threshold1, threshold2=t.threshold2, threshold3=t.threshold3)
        return DetectorConfig(**{**asdict(base), **changes})

    @classmethod
    def of(cls, config: DetectorConfig, *, input_shape: tuple[int, int, int],
           num_classes: int | None, classifier_sha256: str, classifier_source: str,
           provenance: Provenance | None = None) -> "DetectorSpec":
        """The spec of a file being built from ``config``."""
        thresholds = config.thresholds()
        return cls(
            kappas=tuple(float(k) for k in config.kappas), noise=config.noise, seed=config.seed,
            batch=config.batch, clip=config.clip, input_format=config.input_format,
            input_shape=tuple(input_shape), mean=config.mean, std=config.std,  # type: ignore
            num_classes=num_classes, thresholds=thresholds, has_flips=True,
            provenance=provenance or _default_provenance(thresholds),
            classifier_sha256=classifier_sha256, classifier_source=classifier_source,
            version=__version__, raw=dict(config.extra_metadata))

    def int8_full_range(self) -> bool:
        """An INT8 classifier with uint8 activations and full-range int8 weights (no
        ``reduce_range``): what ONNX Runtime computes exactly with VNNI, AMX or on ARM, and
        saturates on x86 CPUs with AVX2 and no VNNI (``rpdetect.cpu.u8s8_saturates``)."""
        if self.precision != "int8":
            return False
        q = self.quantization or {}
        return (q.get("activation_type", "uint8") == "uint8"
                and q.get("weight_type", "int8") == "int8" and not q.get("reduce_range", False))

    def precision_text(self) -> str:
        """The classifier's precision in words (``rpdetect info``)."""
        if self.precision != "int8":
            return self.precision
        q = self.quantization or {}
        return (f"int8 ({str(q.get('quant_format', '?')).upper()}, activations "
                f"{q.get('activation_type', '?')}, weights {q.get('weight_type', '?')}"
                f"{' per channel' if q.get('per_channel') else ''}, "
                f"{q.get('calibrate_method', '?')} ranges from {q.get('images', '?')} images of "
                f"{q.get('source', '?')} with their noisy copies, onnxruntime "
                f"{q.get('onnxruntime', '?')}{_float_nodes_text(q)}{_refine_text(q)}); noise, "
                "scores and verdict float32")

    def with_precision(self, precision: str, quantization: Mapping[str, Any] | None
                       ) -> "DetectorSpec":
        """This spec with the classifier's precision (and how it was quantized)."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
        return replace(self, precision=precision,
                       quantization=None if quantization is None else dict(quantization))

    def to_metadata(self) -> dict[str, str]:
        """The ``rpdetect.*`` metadata values (keys without the prefix) this spec writes."""
        return {
            "version": self.version,
            "kappas": json.dumps([float(k) for k in self.kappas]),
            "noise": self.noise,
            "seed": "none" if self.seed is None else repr(float(self.seed)),
            "batch": str(self.batch),
            "clip": "true" if self.clip else "false",
            "input_format": self.input_format,
            "input_shape": json.dumps(list(self.input_shape)),
            "mean": json.dumps(list(self.mean)) if self.mean is not None else "none",
            "std": json.dumps(list(self.std)) if self.std is not None else "none",
            "num_classes": str(self.num_classes) if self.num_classes is not None else "unknown",
            "classifier_sha256": self.classifier_sha256,
            "classifier_source": self.classifier_source,
            "precision": self.precision,
            "quantization": "none" if self.quantization is None
            else json.dumps(self.quantization, sort_keys=True),
            **_threshold_metadata(self.thresholds, self.provenance, legacy=not self.has_flips),
        }

    @classmethod
    def from_metadata(cls, raw: Mapping[str, str], thresholds: Thresholds, *,
                      has_flips: bool) -> "DetectorSpec":
        """Parse the ``rpdetect.*`` metadata (keys without the prefix); ModelError naming the
        key that is missing or malformed."""
        try:
            kappas = tuple(float(k) for k in json.loads(raw["kappas"]))
            spec = cls(
                kappas=kappas,
                noise=raw["noise"],
                seed=None if raw["seed"] == "none" else float(raw["seed"]),
                batch=int(raw["batch"]),
                clip=raw["clip"] == "true",
                input_format=raw["input_format"],
                input_shape=tuple(json.loads(raw["input_shape"])),  # type: ignore[arg-type]
                mean=None if raw["mean"] == "none" else tuple(json.loads(raw["mean"])),
                std=None if raw["std"] == "none" else tuple(json.loads(raw["std"])),
                num_classes=None if raw["num_classes"] == "unknown" else int(raw["num_classes"]),
                thresholds=thresholds,
                has_flips=has_flips,
                provenance=Provenance.from_json(json.loads(raw["thresholds_provenance"])),
                classifier_sha256=raw["classifier_sha256"],
                classifier_source=raw["classifier_source"],
                version=raw["version"],
                raw=dict(raw),
                precision=raw.get("precision", "fp32"),
                quantization=None if raw.get("quantization", "none") == "none"
                else json.loads(raw["quantization"]),
            )
        except KeyError as exc:
            raise ModelError(
                f"not an rpdetect detector: metadata key {METADATA_PREFIX}{exc.args[0]} is "
                f"missing (build it with `rpdetect export`)") from exc
        except (ValueError, TypeError) as exc:
            raise ModelError(f"rpdetect metadata is malformed: {exc}") from exc
        if (len(spec.input_shape) != 3 or not spec.kappas or spec.batch < 1
                or spec.noise not in NOISE_MODES or spec.input_format not in INPUT_FORMATS
                or spec.precision not in PRECISIONS):
            raise ModelError(
                f"rpdetect metadata is malformed: input_shape {list(spec.input_shape)} (expected "
                f"[C, H, W]), {len(spec.kappas)} kappas, batch {spec.batch}, noise "
                f"{spec.noise!r}, input_format {spec.input_format!r}, precision "
                f"{spec.precision!r}; re-export the detector")
        return spec


def _default_provenance(thresholds: Thresholds) -> Provenance:
    return Provenance.by_hand() if thresholds.calibrated else Provenance.uncalibrated()


def _floats(values: Sequence[float]) -> str:
    """repr floats: "inf" for +inf, as C's strtof reads it."""
    return "[" + ", ".join(repr(float(v)) for v in values) + "]"


def _threshold_metadata(thresholds: Thresholds, provenance: Provenance, *, legacy: bool
                        ) -> dict[str, str]:
    meta = {
        # for readers without an ONNX library (clients/cpp); the initializers are the truth
        "threshold1": _floats(thresholds.threshold1),
        "threshold2": _floats(thresholds.threshold2),
        "threshold3": repr(float(thresholds.threshold3)),
        "rule": thresholds.describe(),
        "calibrated": "true" if thresholds.calibrated else "false",
        "thresholds_provenance": json.dumps(provenance.to_json(), sort_keys=True),
    }
    if legacy:  # the scalar keys, as rpdetect <= 0.1 wrote them
        meta.update(threshold1=repr(thresholds.threshold1[0]),
                    threshold2=repr(thresholds.threshold2[0]))
        del meta["threshold3"]
    return meta


def set_metadata(model: onnx.ModelProto, values: Mapping[str, str]) -> None:
    """Write ``rpdetect.<key>`` = value for each item, replacing what was there."""
    keys = {METADATA_PREFIX + k: v for k, v in values.items()}
    kept = [p for p in model.metadata_props if p.key not in keys]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for k, v in keys.items():
        model.metadata_props.add(key=k, value=str(v))


def read_metadata(model: onnx.ModelProto) -> dict[str, str]:
    """The ``rpdetect.*`` metadata, keys without the prefix."""
    return {p.key[len(METADATA_PREFIX):]: p.value for p in model.metadata_props
            if p.key.startswith(METADATA_PREFIX)}


# --- reading -----------------------------------------------------------------------------
def read_thresholds(model: onnx.ModelProto, n: int) -> tuple[Thresholds, bool]:
    """The thresholds the graph compares against (its initializers) and whether the file has
    the flip count (threshold3); ModelError for missing, misshapen, NaN or -inf values."""
    inits = {i.name: i for i in model.graph.initializer if i.name in THRESHOLD_NAMES}
    missing = {"threshold1", "threshold2"} - set(inits)
    if missing:
        raise ModelError(f"not an rpdetect detector: no {sorted(missing)} initializer")
    values = {}
    for name, init in inits.items():
        v = numpy_helper.to_array(init).astype(np.float64)
        want = [(), (n,)] if name != "threshold3" else [()]
        if v.shape not in want:
            raise ModelError(f"{name}: the graph holds shape {list(v.shape)}; expected "
                             f"{' or '.join(str(list(w)) for w in want)} for its {n} kappas "
                             f"(the metadata's kappas and the graph disagree: re-export)")
        values[name] = v
    try:
        thresholds = Thresholds.of(values["threshold1"], values["threshold2"],
                                   float(values.get("threshold3", math.inf)), n=n)
    except ValueError as exc:
        raise ModelError(f"the graph's thresholds: {exc}") from exc
    return thresholds, "threshold3" in inits


def read_spec(model: onnx.ModelProto) -> DetectorSpec:
    """The spec of a detector model; ModelError if it is not an rpdetect detector."""
    raw = read_metadata(model)
    if "kappas" not in raw:
        raise ModelError(f"not an rpdetect detector: metadata key {METADATA_PREFIX}kappas is "
                         f"missing (build it with `rpdetect export`)")
    try:
        n = len(json.loads(raw["kappas"]))
    except (ValueError, TypeError) as exc:
        raise ModelError(f"rpdetect metadata is malformed: kappas {raw['kappas']!r}") from exc
    thresholds, has_flips = read_thresholds(model, n)
    return DetectorSpec.from_metadata(raw, thresholds, has_flips=has_flips)


def check_detector_io(model: onnx.ModelProto, path: str | Path) -> None:
    """ModelError, with what to do, unless the model has the detector's inputs and outputs."""
    inputs = {i.name for i in model.graph.input}
    outputs = {o.name for o in model.graph.output}
    missing_in = [n for n in REQUIRED_INPUTS if n not in inputs]
    missing_out = [n for n in REQUIRED_OUTPUTS if n not in outputs]
    if missing_in or missing_out:
        name = Path(path).name
        raise ModelError(
            f"{path}: not an rpdetect detector: missing inputs {missing_in}, missing outputs "
            f"{missing_out} (it has inputs {sorted(inputs)[:8]}, outputs {sorted(outputs)[:8]}). "
            f"If it is a classifier, build a detector from it first: "
            f"`rpdetect export {name} -o detector.onnx` (Python: rpdetect.export.export_detector)"
        )


def load_model(path: str | Path, *, weights: bool = True) -> onnx.ModelProto:
    """Any ONNX file, with (``weights``) or without its external data; ModelError naming the
    file when it is missing or not ONNX."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such model file")
    if not path.is_file():
        raise ModelError(f"{path}: not a file; expected an .onnx file")
    try:
        model = onnx.load(str(path), load_external_data=weights)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ModelError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})"
                         ) from exc
    if not model.graph.node and not model.graph.input:
        raise ModelError(f"{path}: not an ONNX model (no graph)")
    return model


def load(path: str | Path, *, weights: bool = True) -> tuple[onnx.ModelProto, DetectorSpec]:
    """A detector file and its spec: ModelError naming the file when it is missing, not ONNX,
    or not an rpdetect detector. ``weights=False`` leaves external data unread (ONNX Runtime
    reads it itself)."""
    try:
        model = load_model(path, weights=weights)
    except ModelError as exc:
        raise ModelError(f"{exc}; expected a detector .onnx file built with `rpdetect export`"
                         ) from exc
    check_detector_io(model, path)
    try:
        return model, read_spec(model)
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from exc


# --- writing -----------------------------------------------------------------------------
def save(model: onnx.ModelProto, output: str | Path) -> Path:
    """Save ``model`` as one self-contained file, atomically: a temporary file in the same
    folder, then ``os.replace``, so the previous file stays intact on any failure (full disk,
    Ctrl-C). The folder must exist (``rpdetect._atomic.check_output``)."""
    output = check_output(output, what="model")
    if model.ByteSize() > 2_000_000_000:
        raise ModelError(f"{output}: the model is over 2 GB, which one protobuf file cannot hold")
    with atomic_path(output) as tmp:
        onnx.save(model, str(tmp))
    return output


def with_thresholds(
    model: onnx.ModelProto,
    threshold1: float | Sequence[float],
    threshold2: float | Sequence[float],
    provenance: Provenance | Mapping[str, Any] | None = None,
    *,
    threshold3: float = math.inf,
) -> onnx.ModelProto:
    """Return a copy of a detector model whose default thresholds (initializers) and metadata
    are ``threshold1``/``threshold2`` (one value, or one per kappa) and ``threshold3`` (the flip
    count); ``provenance`` records where they came from (None: "set by hand", or uncalibrated
    for +inf). A file from rpdetect <= 0.1 (scalar threshold1/threshold2, no threshold3) takes
    only the paper's rule."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {i.name: i for i in out.graph.initializer if i.name in THRESHOLD_NAMES}
    if not {"threshold1", "threshold2"} <= set(inits):
        raise ModelError("not an rpdetect detector: no threshold1/threshold2 initializers")
    try:
        n = len(json.loads(read_metadata(out)["kappas"]))
    except (KeyError, ValueError) as exc:
        raise ModelError(f"not an rpdetect detector: metadata kappas unreadable ({exc})") from exc
    thresholds = Thresholds.of(threshold1, threshold2, threshold3, n=n)
    legacy = "threshold3" not in inits
    if legacy and (thresholds.per_kappa or thresholds.uses_flips):
        raise ModelError(
            "this detector file predates per-kappa thresholds and the flip count (rpdetect "
            "<= 0.1): it holds only the paper's rule; re-export it with `rpdetect export` to "
            "use this calibration rule")
    values = {"threshold1": np.array(thresholds.threshold1, dtype=np.float32),
              "threshold2": np.array(thresholds.threshold2, dtype=np.float32),
              "threshold3": np.array(thresholds.threshold3, dtype=np.float32)}
    for name, init in inits.items():
        value = values[name]
        shape = tuple(init.dims)
        if shape == () and value.ndim == 1:
            value = np.array(value[0], dtype=np.float32)  # legacy scalar: all values are equal
        if value.shape != shape:
            raise ModelError(f"{name}: the file holds shape {list(shape)}, the thresholds "
                             f"{list(value.shape)} (one per kappa)")
        init.CopyFrom(numpy_helper.from_array(value, name))
    if provenance is None:
        provenance = _default_provenance(thresholds)
    elif not isinstance(provenance, Provenance):
        provenance = Provenance.from_json(provenance)
    set_metadata(out, _threshold_metadata(thresholds, provenance, legacy=legacy))
    return out
