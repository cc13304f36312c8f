"""Classifier ONNX -> detector ONNX: the paper's method fused into the graph by plain ONNX ops.

No torch is needed here, so a classifier from any exporter (PyTorch, TensorFlow/Keras via
tf2onnx, ...) can be turned into a detector. The detector graph::

    image [B, C, H, W] float32 in [0, 1]          (or [B, H, W, 3] uint8, see ``input_format``)
      -> x~_i = x + eps_i * kappa_i                 eps ~ N(0, 1): RandomNormalLike, or input ``noise``
      -> classifier on [B * (n + 1), C, H, W]        (original + n noisy copies per image)
      -> logits [B, K], label [B], score1 [B, n], score2 [B, n], score1_max [B], score2_max [B],
         flipped [B, n] (label of copy i != label), flips [B] (their count),
         is_adversarial [B] = any_i score1_i > threshold1_i OR any_i score2_i > threshold2_i
                              OR flips > threshold3                    (``rpdetect.rule``)

``threshold1`` / ``threshold2`` ([n], one per kappa) and ``threshold3`` ([]) are graph inputs
backed by initializers: the calibrated values live in the file and can still be overridden at run
time. An uncalibrated graph carries +inf and never flags. Files from rpdetect <= 0.1 have scalar
threshold1/threshold2 and no threshold3 or flips; the engine reads both.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .._atomic import check_output
from .._version import __version__
from ..contract import (
    CLASSIFIER_INPUT_KEY,
    CLASSIFIER_OUTPUT_KEY,
    METADATA_PREFIX,
    PUBLIC_NAMES,
    DetectorConfig,
    DetectorSpec,
    NodeGroup,
    load_model,
    node_name,
    save,
    set_metadata,
    with_thresholds,
)
from ..engine.front import nodes_between
from ..errors import ModelError
from ..rule import Thresholds
from .intake import IntakeOptions, prepare_classifier

__all__ = [
    "DetectorConfig",
    "build_detector",
    "export_detector",
    "with_thresholds",
    "extract_classifier",
    "load_onnx",
    "save_onnx",
]

MIN_OPSET = 13
MAX_GRAPH_NOISE_OPSET = 21  # opset >= 22 makes RandomNormalLike-22, which ONNX Runtime cannot run


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """Load an ONNX model with its external data, or raise ModelError naming the file."""
    return load_model(path, weights=True)


save_onnx = save  # the contract's atomic save, under the name export has always had


def _dims(vi: onnx.ValueInfoProto) -> list[int | str | None]:
    out: list[int | str | None] = []
    for d in vi.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def _opset(model: onnx.ModelProto) -> int:
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if not versions:
        raise ModelError("classifier: no default-domain opset import")
    return max(versions)


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    subs: list[onnx.GraphProto] = []
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            subs.append(attr.g)
        elif attr.type == onnx.AttributeProto.GRAPHS:
            subs.extend(attr.graphs)
    return subs


def _all_tensor_names(graph: onnx.GraphProto) -> set[str]:
    names = {i.name for i in graph.input} | {o.name for o in graph.output}
    names |= {i.name for i in graph.initializer} | {v.name for v in graph.value_info}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
        for sub in _subgraphs(node):
            names |= _all_tensor_names(sub)
    names.discard("")
    return names


def _rename_tensors(graph: onnx.GraphProto, mapping: dict[str, str]) -> None:
    """Rename tensors everywhere in ``graph`` (subgraphs included, which may read outer names)."""

    def sub(name: str) -> str:
        return mapping.get(name, name)

    for node in graph.node:
        node.input[:] = [sub(n) for n in node.input]
        node.output[:] = [sub(n) for n in node.output]
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _rename_tensors(attr.g, mapping)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    _rename_tensors(g, mapping)
    for coll in (graph.input, graph.output, graph.value_info, graph.initializer):
        for item in coll:
            item.name = sub(item.name)
    for sp in graph.sparse_initializer:
        sp.values.name = sub(sp.values.name)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Builder:
    """Collects nodes and initializers with unique, prefixed names, opset-aware."""

    def __init__(self, opset: int, taken: set[str]) -> None:
        self.opset = opset
        self.taken = taken
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[TensorProto] = []
        self.group: NodeGroup = "input"  # the contract's node group of what is added next

    def name(self, base: str) -> str:
        cand, i = node_name(self.group, base), 0
        while cand in self.taken:
            i += 1
            cand = node_name(self.group, f"{base}_{i}")
        self.taken.add(cand)
        return cand

    def const(self, base: str, value: np.ndarray) -> str:
        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], base: str, *, out: str | None = None,
           **attrs: object) -> str:
        output = out if out is not None else self.name(base)
        self.nodes.append(
            helper.make_node(op_type, list(inputs), [output], name=self.name(base + "_node"), **attrs)
        )
        return output

    def reduce(self, op_type: str, x: str, base: str, *, keepdims: int, out: str | None = None) -> str:
        """Reduce over the last axis. Axes are an input from opset 18 (ReduceSum: 13)."""
        axes_as_input = self.opset >= (13 if op_type == "ReduceSum" else 18)
        if axes_as_input:
            axes = self.const(base + "_axes", np.array([-1], dtype=np.int64))
            return self.op(op_type, [x, axes], base, out=out, keepdims=keepdims)
        return self.op(op_type, [x], base, out=out, axes=[-1], keepdims=keepdims)


def build_detector(
    classifier: onnx.ModelProto | str | Path,
    config: DetectorConfig | None = None,
    *,
    classifier_output: str | None = None,
    input_shape: Sequence[int] | None = None,
    intake: IntakeOptions | None = None,
) -> onnx.ModelProto:
    """Fuse the paper's detector around ``classifier`` and return the detector model.

    ``classifier``: an ONNX model (or its path) with one float32 input [N, C, H, W] whose batch
    axis is dynamic (or equals B * (n + 1)) and a logits output [N, K]; ``classifier_output``
    names it when there are several outputs. ``input_shape`` (C, H, W) is needed only when the
    model leaves them dynamic. The returned model passes ``onnx.checker`` full check.

    Before surgery the classifier goes through ``rpdetect.export.intake.prepare_classifier``
    (old opsets converted, an NHWC input transposed, a fixed batch axis made symbolic and
    proven, the logits output chosen, probabilities and single logits refused or converted as
    ``intake`` says); what it did is in the ``rpdetect.classifier_intake`` metadata.
    """
    config = config or DetectorConfig()
    model, source_sha, source_name = _load_classifier(classifier)
    prepared = prepare_classifier(
        model, inner_batch=config.batch * (len(config.kappas) + 1),
        classifier_output=classifier_output, input_shape=input_shape,
        options=intake or IntakeOptions())
    model, classifier_output = prepared.model, prepared.output
    opset = _check_opset(model, config)
    io = _classifier_io(model.graph, config, classifier_output=classifier_output,
                        input_shape=input_shape)

    # Free the public names: a classifier tensor called "image" or "logits" gets a prefix.
    graph = model.graph
    taken = _all_tensor_names(graph)
    clash = {name: f"classifier/{name}" for name in PUBLIC_NAMES if name in taken}
    if clash:
        _rename_tensors(graph, clash)
        taken = _all_tensor_names(graph)
    x_name = clash.get(io.x_name, io.x_name)
    y_name = clash.get(io.y_name, io.y_name)

    bld = _Builder(opset, taken | set(PUBLIC_NAMES))
    inputs = _add_front(bld, config, io.chw, x_name)
    pre_nodes, bld.nodes = bld.nodes, []
    _add_scores(bld, config.batch, len(config.kappas), y_name)
    thresholds = _threshold_tensors(config.thresholds())
    _splice(model, pre_nodes=pre_nodes, post_nodes=bld.nodes,
            # threshold1/2 take [1] (one value for every kappa) or [n] (one per kappa) at run time
            inputs=inputs + [helper.make_tensor_value_info(
                t.name, TensorProto.FLOAT, [f"{t.name}_values"] if t.dims else [])
                for t in thresholds],
            outputs=_outputs(config.batch, len(config.kappas), io.num_classes),
            initializers=bld.inits + thresholds, stale=(x_name, y_name))

    spec = DetectorSpec.of(config, input_shape=io.chw, num_classes=io.num_classes,
                           classifier_sha256=source_sha, classifier_source=source_name)
    meta = {
        **spec.to_metadata(),
        "classifier_input": x_name,
        "classifier_output": y_name,
        "opset": str(opset),
        "classifier_intake": json.dumps(list(prepared.notes)),
        **config.extra_metadata,
    }
    set_metadata(model, meta)
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise ModelError(f"the fused detector graph failed onnx.checker: {exc}") from exc
    return model


def _load_classifier(classifier: onnx.ModelProto | str | Path) -> tuple[onnx.ModelProto, str, str]:
    """A copy of the classifier to operate on, its SHA-256 and the name it came under."""
    if isinstance(classifier, (str, Path)):
        source = Path(classifier)
        return load_onnx(source), _sha256(source.read_bytes()), source.name
    model = onnx.ModelProto()
    model.CopyFrom(classifier)
    return (model, _sha256(classifier.SerializeToString()),
            model.graph.name or "<in-memory model>")


def _check_opset(model: onnx.ModelProto, config: DetectorConfig) -> int:
    opset = _opset(model)
    if opset < MIN_OPSET:
        raise ModelError(
            f"classifier: opset {opset} is too old (need >= {MIN_OPSET}); convert it first with "
            f"onnx.version_converter.convert_version(model, 17)"
        )
    if config.noise == "graph" and opset > MAX_GRAPH_NOISE_OPSET:
        raise ModelError(
            f"classifier: opset {opset} would make RandomNormalLike-{opset}, which ONNX Runtime "
            f"cannot run; export the classifier at opset <= {MAX_GRAPH_NOISE_OPSET} (20 is a good "
            f"default) or build with noise='input'"
        )
    return opset


@dataclass(frozen=True)
class _ClassifierIO:
    x_name: str  # the image input
    y_name: str  # the logits output
    chw: tuple[int, int, int]
    num_classes: int | None


def _classifier_io(
    graph: onnx.GraphProto,
    config: DetectorConfig,
    *,
    classifier_output: str | None,
    input_shape: Sequence[int] | None,
) -> _ClassifierIO:
    """The classifier's image input and logits output, checked against ``config``."""
    init_names = {i.name for i in graph.initializer}
    real_inputs = [i for i in graph.input if i.name not in init_names]
    if len(real_inputs) != 1:
        raise ModelError(
            f"classifier: expected exactly one image input, found {len(real_inputs)}: "
            f"{[i.name for i in real_inputs]}"
        )
    x_info = real_inputs[0]
    elem = x_info.type.tensor_type.elem_type
    if elem != TensorProto.FLOAT:
        raise ModelError(
            f"classifier input {x_info.name!r}: dtype {TensorProto.DataType.Name(elem)}, "
            f"rpdetect needs float32"
        )
    x_dims = _dims(x_info)
    if len(x_dims) != 4:
        raise ModelError(
            f"classifier input {x_info.name!r}: rank {len(x_dims)} {x_dims}, expected 4 "
            f"[N, C, H, W]"
        )
    chw = _image_shape(x_info.name, x_dims, input_shape)
    config.validate(chw[0])
    n = len(config.kappas)
    inner = config.batch * (n + 1)
    if isinstance(x_dims[0], int) and x_dims[0] != inner:
        raise ModelError(
            f"classifier input {x_info.name!r}: batch axis is fixed at {x_dims[0]}, but the "
            f"detector runs {inner} images at once (B={config.batch} x (1 + {n} copies)); "
            f"re-export the classifier with a dynamic batch axis (torch.onnx.export "
            f"dynamic_shapes/dynamic_axes)"
        )
    y_info = _logits_output(graph, classifier_output)
    y_dims = _dims(y_info)
    if y_dims and len(y_dims) != 2:
        raise ModelError(
            f"classifier output {y_info.name!r}: rank {len(y_dims)} {y_dims}, expected 2 "
            f"[N, classes]"
        )
    num_classes = y_dims[1] if len(y_dims) == 2 and isinstance(y_dims[1], int) else None
    return _ClassifierIO(x_info.name, y_info.name, chw, num_classes)


def _image_shape(
    name: str, x_dims: list[int | str | None], input_shape: Sequence[int] | None
) -> tuple[int, int, int]:
    """(C, H, W) from the classifier input, or from ``input_shape`` where it leaves them open."""
    if input_shape is None:
        if not all(isinstance(v, int) for v in x_dims[1:]):
            raise ModelError(
                f"classifier input {name!r}: shape {x_dims} leaves C/H/W dynamic; "
                f"pass input_shape=(C, H, W)"
            )
        c, h, w = (int(v) for v in x_dims[1:])  # type: ignore[arg-type]
        return c, h, w
    if len(input_shape) != 3:
        raise ValueError(f"input_shape: expected (C, H, W), got {tuple(input_shape)}")
    for axis, (have, want) in enumerate(zip(x_dims[1:], input_shape), start=1):
        if isinstance(have, int) and have != want:
            raise ModelError(
                f"classifier input {name!r}: axis {axis} is {have}, input_shape says {want}"
            )
    c, h, w = (int(v) for v in input_shape)
    return c, h, w


def _logits_output(graph: onnx.GraphProto, classifier_output: str | None) -> onnx.ValueInfoProto:
    outputs = list(graph.output)
    if classifier_output is None:
        return outputs[0]
    for o in outputs:
        if o.name == classifier_output:
            return o
    raise ModelError(
        f"classifier: no output named {classifier_output!r}; outputs are "
        f"{[o.name for o in outputs]}"
    )


def _add_front(
    bld: _Builder, config: DetectorConfig, chw: tuple[int, int, int], x_name: str
) -> list[onnx.ValueInfoProto]:
    """image (and noise) -> [B * (n + 1), C, H, W] written to the classifier input ``x_name``:
    the original and its n noisy copies per image, normalised if mean/std are folded in.
    Returns the new graph inputs."""
    c, h, w = chw
    b, n = config.batch, len(config.kappas)
    new_inputs: list[onnx.ValueInfoProto] = []
    bld.group = "input"
    if config.input_format == "float-nchw":
        new_inputs.append(helper.make_tensor_value_info("image", TensorProto.FLOAT, [b, c, h, w]))
        x = "image"
    else:
        new_inputs.append(helper.make_tensor_value_info("image", TensorProto.UINT8, [b, h, w, 3]))
        xf = bld.op("Cast", ["image"], "image_float", to=TensorProto.FLOAT)
        if config.input_format == "uint8-nhwc-bgr":
            order = bld.const("bgr_to_rgb", np.array([2, 1, 0], dtype=np.int64))
            xf = bld.op("Gather", [xf, order], "image_rgb", axis=3)
        xf = bld.op("Transpose", [xf], "image_nchw", perm=[0, 3, 1, 2])
        x = bld.op("Div", [xf, bld.const("uint8_scale", np.array(255.0, dtype=np.float32))],
                   "pixels")

    axis1 = bld.const("axis1", np.array([1], dtype=np.int64))
    x_u = bld.op("Unsqueeze", [x, axis1], "image_u")  # [B, 1, C, H, W]
    bld.group = "noise"
    if config.noise == "graph":
        # The random op's input must be a run-time tensor (TensorRT rejects an initializer
        # there), so its shape comes from the image itself.
        reps = bld.const("copies_shape", np.array([1, n, 1, 1, 1], dtype=np.int64))
        like = bld.op("Expand", [x_u, reps], "noise_shape")
        rattrs: dict[str, object] = {"dtype": TensorProto.FLOAT, "mean": 0.0, "scale": 1.0}
        if config.seed is not None:
            rattrs["seed"] = float(config.seed)
        eps = bld.op("RandomNormalLike", [like], "noise", **rattrs)
    else:
        new_inputs.append(
            helper.make_tensor_value_info("noise", TensorProto.FLOAT, [b, n, c, h, w])
        )
        eps = "noise"
    kappas = np.asarray(config.kappas, dtype=np.float32).reshape(1, n, 1, 1, 1)
    noisy = bld.op("Add", [x_u, bld.op("Mul", [eps, bld.const("kappas", kappas)], "scaled_noise")],
                   "noisy")
    if config.clip:
        lo = bld.const("clip_min", np.array(0.0, dtype=np.float32))
        hi = bld.const("clip_max", np.array(1.0, dtype=np.float32))
        noisy = bld.op("Clip", [noisy, lo, hi], "noisy_clipped")
    bld.group = "input"
    stacked = bld.op("Concat", [x_u, noisy], "stacked", axis=1)  # [B, n+1, C, H, W]
    flat_shape = bld.const("inner_shape", np.array([b * (n + 1), c, h, w], dtype=np.int64))
    if config.mean is not None and config.std is not None:
        flat = bld.op("Reshape", [stacked, flat_shape], "inner_batch")
        bld.group = "normalisation"
        mean = np.asarray(config.mean, dtype=np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(config.std, dtype=np.float32).reshape(1, -1, 1, 1)
        centred = bld.op("Sub", [flat, bld.const("mean", mean)], "centred")
        bld.op("Div", [centred, bld.const("std", std)], "normalised", out=x_name)
    else:
        bld.op("Reshape", [stacked, flat_shape], "inner_batch", out=x_name)
    return new_inputs


def _add_scores(bld: _Builder, b: int, n: int, y_name: str) -> None:
    """Classifier logits ``y_name`` [B * (n + 1), K] -> the detector's public outputs."""
    bld.group = "scores"
    z = bld.op("Reshape", [y_name, bld.const("z_shape", np.array([b, n + 1, -1], np.int64))], "z")
    zero = bld.const("zero", np.array([0], dtype=np.int64))
    one = bld.const("one", np.array([1], dtype=np.int64))  # also the axis of the copies
    end = bld.const("end", np.array([np.iinfo(np.int64).max], dtype=np.int64))
    z_clean = bld.op("Slice", [z, zero, one, one], "z_clean")  # [B, 1, K]
    z_noisy = bld.op("Slice", [z, one, end, one], "z_noisy")  # [B, n, K]
    bld.op("Squeeze", [z_clean, one], "logits", out="logits")
    bld.op("ArgMax", ["logits"], "label", out="label", axis=1, keepdims=0)
    # Eq. 5: population std over classes of d = Z(x) - Z(x~_i)
    d = bld.op("Sub", [z_clean, z_noisy], "d")
    d_mean = bld.reduce("ReduceMean", d, "d_mean", keepdims=1)
    d_c = bld.op("Sub", [d, d_mean], "d_centred")
    var = bld.reduce("ReduceMean", bld.op("Mul", [d_c, d_c], "d_sq"), "d_var", keepdims=0)
    bld.op("Sqrt", [var], "score1", out="score1")
    # Eq. 6: L1 norm of softmax Z(x) - softmax Z(x~_i)
    p = bld.op("Softmax", [z], "p", axis=-1)
    p_diff = bld.op(
        "Sub",
        [bld.op("Slice", [p, zero, one, one], "p_clean"),
         bld.op("Slice", [p, one, end, one], "p_noisy")],
        "p_diff",
    )
    bld.reduce("ReduceL1", p_diff, "score2", keepdims=0, out="score2")
    bld.reduce("ReduceMax", "score1", "score1_max", keepdims=0, out="score1_max")
    bld.reduce("ReduceMax", "score2", "score2_max", keepdims=0, out="score2_max")
    # Label consistency: copies whose label differs from the clean label, and their count
    noisy_label = bld.op("ArgMax", [z_noisy], "noisy_label", axis=2, keepdims=0)  # [B, n]
    same = bld.op("Equal", [noisy_label, bld.op("Unsqueeze", ["label", one], "label_u")],
                  "same_label")
    bld.op("Not", [same], "flipped", out="flipped")
    # ReduceL1 of 0/1 values: the exact count (ReduceSum's axes are an input since opset 13,
    # which OpenCV 4.x misreads; ReduceL1 lowers to an axes attribute at opset 17)
    flip_count = bld.reduce("ReduceL1", bld.op("Cast", ["flipped"], "flipped_f",
                                               to=TensorProto.FLOAT), "flip_count", keepdims=0)
    bld.op("Cast", [flip_count], "flips", out="flips", to=TensorProto.INT64)
    # The verdict (rpdetect.rule): any copy over its kappa's threshold, or too many flips
    over = []
    for score, threshold in (("score1", "threshold1"), ("score2", "threshold2")):
        above = bld.op("Cast", [bld.op("Greater", [score, threshold], f"{score}_above")],
                       f"{score}_above_f", to=TensorProto.FLOAT)
        any_above = bld.reduce("ReduceMax", above, f"{score}_any_above", keepdims=0)
        over.append(bld.op("Cast", [any_above], f"over_{threshold}", to=TensorProto.BOOL))
    over.append(bld.op("Greater", [flip_count, "threshold3"], "over_threshold3"))
    either = bld.op("Or", over[:2], "over_scores")
    bld.op("Or", [either, over[2]], "is_adversarial", out="is_adversarial")


def _outputs(b: int, n: int, num_classes: int | None) -> list[onnx.ValueInfoProto]:
    k_dim: int | str = num_classes if num_classes is not None else "classes"
    return [
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, [b, k_dim]),
        helper.make_tensor_value_info("label", TensorProto.INT64, [b]),
        helper.make_tensor_value_info("score1", TensorProto.FLOAT, [b, n]),
        helper.make_tensor_value_info("score2", TensorProto.FLOAT, [b, n]),
        helper.make_tensor_value_info("score1_max", TensorProto.FLOAT, [b]),
        helper.make_tensor_value_info("score2_max", TensorProto.FLOAT, [b]),
        helper.make_tensor_value_info("flipped", TensorProto.BOOL, [b, n]),
        helper.make_tensor_value_info("flips", TensorProto.INT64, [b]),
        helper.make_tensor_value_info("is_adversarial", TensorProto.BOOL, [b]),
    ]


def _splice(
    model: onnx.ModelProto,
    *,
    pre_nodes: list[onnx.NodeProto],
    post_nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: list[TensorProto],
    stale: tuple[str, ...],
) -> None:
    """Put the detector's nodes around the classifier's and its inputs/outputs in their place."""
    graph = model.graph
    # Initializers that are not graph inputs must not appear in graph.input (IR >= 4): drop the
    # classifier's old inputs and outputs and put ours in.
    init_names = {i.name for i in graph.initializer}
    old_init_inputs = [i for i in graph.input if i.name in init_names]
    classifier_nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(pre_nodes + classifier_nodes + post_nodes)
    del graph.input[:]
    graph.input.extend(inputs + old_init_inputs)
    del graph.output[:]
    graph.output.extend(outputs)
    graph.initializer.extend(initializers)
    graph.name = "rpdetect_detector"
    # A stale value_info for the old graph input/output would carry its old batch axis.
    keep = [v for v in graph.value_info if v.name not in stale]
    del graph.value_info[:]
    graph.value_info.extend(keep)

    # One default-domain opset import, and at least IR 4 (initializers as overridable inputs).
    seen: dict[str, int] = {}
    for o in model.opset_import:
        dom = "" if o.domain == "ai.onnx" else o.domain
        seen[dom] = max(seen.get(dom, 0), o.version)
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(dom, ver) for dom, ver in seen.items())
    model.ir_version = max(model.ir_version, 4)
    model.producer_name = "rpdetect"
    model.producer_version = __version__


def _threshold_tensors(thresholds: Thresholds) -> list[TensorProto]:
    """The threshold initializers of a new detector: threshold1/threshold2 [n], threshold3 []."""
    return [
        numpy_helper.from_array(np.array(thresholds.threshold1, dtype=np.float32), "threshold1"),
        numpy_helper.from_array(np.array(thresholds.threshold2, dtype=np.float32), "threshold2"),
        numpy_helper.from_array(np.array(thresholds.threshold3, dtype=np.float32), "threshold3"),
    ]


def export_detector(
    classifier: onnx.ModelProto | str | Path,
    output: str | Path,
    config: DetectorConfig | None = None,
    *,
    classifier_output: str | None = None,
    input_shape: Sequence[int] | None = None,
    intake: IntakeOptions | None = None,
) -> Path:
    """Build the detector and save it as ONE self-contained .onnx file (weights inside), atomically.
    ``output`` is checked first (``check_output``): its folder must exist and be writable, and it
    must not be the classifier file itself."""
    check_output(output, what="output",
                 inputs=[classifier] if isinstance(classifier, (str, Path)) else [])
    model = build_detector(
        classifier, config, classifier_output=classifier_output, input_shape=input_shape,
        intake=intake,
    )
    return save_onnx(model, output)


def extract_classifier(model: onnx.ModelProto) -> onnx.ModelProto:
    """The classifier inside a detector, as a standalone model [N, C, H, W] -> [N, K] whose input
    is what the classifier sees (normalised, if the detector folds normalisation in)."""
    meta = {p.key: p.value for p in model.metadata_props}
    try:
        x_name, y_name = meta[CLASSIFIER_INPUT_KEY], meta[CLASSIFIER_OUTPUT_KEY]
        c, h, w = json.loads(meta[METADATA_PREFIX + "input_shape"])
    except KeyError as exc:
        raise ModelError(f"not an rpdetect detector: metadata {exc} is missing") from exc
    g = model.graph
    # Nodes the classifier output depends on, walking back to the classifier input.
    needed, used = nodes_between(g, [y_name], x_name)
    graph = helper.make_graph(
        needed,
        "rpdetect_classifier",
        [helper.make_tensor_value_info(x_name, TensorProto.FLOAT, ["N", c, h, w])],
        [helper.make_tensor_value_info(y_name, TensorProto.FLOAT, ["N", None])],
        initializer=[i for i in g.initializer if i.name in used],
    )
    out = helper.make_model(
        graph, opset_imports=list(model.opset_import), ir_version=model.ir_version
    )
    out.functions.extend(model.functions)
    return out
