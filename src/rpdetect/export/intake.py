"""Classifier intake: the classifiers users really have, made fit for surgery, or refused with
the option that fixes it (issue 11).

``prepare_classifier`` runs on the loaded classifier before ``build_detector``'s surgery:

* **old opsets** (< 13) are converted with ``onnx.version_converter`` (to 17) when it succeeds;
* **NHWC inputs** (``[N, H, W, 3]``, as Keras / tf2onnx export) get a ``Transpose`` in front, so
  the detector feeds NCHW (``input_layout="auto"`` detects it and says so; "nhwc"/"nchw" force);
* **a fixed batch axis** (plain ``torch.onnx.export(model, x, path)`` with a batch of 1) is made
  symbolic: the input/output dims, and ``Reshape`` shapes that start with that batch. It is then
  PROVEN by running the detector's inner batch against one image at a time on random input with
  ONNX Runtime and comparing; if the graph does not allow it, the error names the nodes that
  hard-code the batch;
* **the logits output**: with several outputs, ``classifier_output`` names it unless exactly one
  output is a float ``[N, K]``;
* **probabilities** (rows of the probe outputs non-negative and summing to 1) are refused unless
  ``probabilities="log"`` inserts ``Log``: log-probabilities are the logits minus a per-image
  constant, so score1 (a standard deviation over classes, blind to that constant) and score2
  (softmax of them = the probabilities) are what the logits would give, up to float32 rounding
  and probabilities that underflowed to 0 (clamped to 1e-38, log -87.5);
* **a single logit** (K = 1) is refused (both scores would always be 0) unless
  ``single_logit="two-class"`` turns z into the two-class logits ``[0, z]`` (softmax: 1 - sigmoid
  z, sigmoid z).

What was done is returned as notes (``build_detector`` stores them in the
``rpdetect.classifier_intake`` metadata; ``rpdetect export`` prints them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import ModelError

__all__ = ["INPUT_LAYOUTS", "IntakeOptions", "IntakeResult", "prepare_classifier"]

InputLayout = Literal["auto", "nchw", "nhwc"]
INPUT_LAYOUTS: tuple[str, ...] = ("auto", "nchw", "nhwc")
CONVERT_TO_OPSET = 17
_MIN_OPSET = 13
_LOG_FLOOR = 1e-38  # probabilities are clamped here before Log: log(1e-38) = -87.5
_P = "rpdetect_intake/"


@dataclass(frozen=True)
class IntakeOptions:
    """The choices a classifier may need, each off unless asked for (see the module doc)."""

    probabilities: Literal["refuse", "log"] = "refuse"
    single_logit: Literal["refuse", "two-class"] = "refuse"
    input_layout: InputLayout = "auto"

    def __post_init__(self) -> None:
        for name, allowed in (("probabilities", ("refuse", "log")),
                              ("single_logit", ("refuse", "two-class")),
                              ("input_layout", INPUT_LAYOUTS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: expected one of {allowed}, got "
                                 f"{getattr(self, name)!r}")


@dataclass(frozen=True)
class IntakeResult:
    model: onnx.ModelProto
    output: str  # the classifier output that holds the logits now
    notes: tuple[str, ...]


def _dims(vi: onnx.ValueInfoProto) -> list[int | str | None]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in vi.type.tensor_type.shape.dim]


def _image_input(graph: onnx.GraphProto) -> onnx.ValueInfoProto | None:
    inits = {i.name for i in graph.initializer}
    real = [i for i in graph.input if i.name not in inits]
    return real[0] if len(real) == 1 else None  # build_detector names the problem otherwise


def _opset(model: onnx.ModelProto) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def _convert_opset(model: onnx.ModelProto, notes: list[str]) -> onnx.ModelProto:
    old = _opset(model)
    if old == 0 or old >= _MIN_OPSET:
        return model
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(model, CONVERT_TO_OPSET)
        onnx.checker.check_model(converted)
    except Exception as exc:
        raise ModelError(
            f"classifier: opset {old} is too old (need >= {_MIN_OPSET}) and "
            f"onnx.version_converter could not convert it ({type(exc).__name__}: {exc}); "
            f"re-export the classifier at opset 17 or later") from exc
    notes.append(f"opset {old} converted to {CONVERT_TO_OPSET} with onnx.version_converter")
    return converted


def _layout(dims: list[int | str | None], choice: str, name: str, notes: list[str]) -> str:
    if len(dims) != 4 or choice == "nchw":
        return "nchw"
    if choice == "nhwc":
        return "nhwc"
    if dims[3] in (1, 3) and dims[1] not in (1, 3, 4):
        notes.append(f"input {name!r} {dims} looks NHWC (channels last): a Transpose in front "
                     f"makes the detector take NCHW; pass input_layout='nchw' "
                     f"(--input-layout nchw) if this is wrong")
        return "nhwc"
    return "nchw"


def _transpose_front(graph: onnx.GraphProto, x: onnx.ValueInfoProto) -> None:
    """New NCHW input in place of the NHWC one; Transpose(perm 0,2,3,1) writes the old name."""
    n, h, w, c = _dims(x)
    new_name = _P + x.name + "_nchw"
    new = helper.make_tensor_value_info(new_name, x.type.tensor_type.elem_type, [n, c, h, w])
    index = list(graph.input).index(x)
    graph.input.remove(x)
    graph.input.insert(index, new)
    graph.node.insert(0, helper.make_node("Transpose", [new_name], [x.name],
                                          name=_P + "nchw_to_nhwc", perm=[0, 2, 3, 1]))


def _constant(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type == "Constant" and name in node.output:
            for attr in node.attribute:
                if attr.name == "value":
                    return numpy_helper.to_array(attr.t)
    return None


_SHAPE_INPUTS = {"Reshape": 1, "Expand": 1, "ConstantOfShape": 0, "Resize": 3}


def _batch_constants(graph: onnx.GraphProto, batch: int) -> list[tuple[onnx.NodeProto, np.ndarray]]:
    """Nodes whose constant shape input starts with ``batch``."""
    found = []
    for node in graph.node:
        slot = _SHAPE_INPUTS.get(node.op_type)
        if slot is None or len(node.input) <= slot or not node.input[slot]:
            continue
        value = _constant(graph, node.input[slot])
        if value is not None and value.ndim == 1 and value.size and int(value[0]) == batch:
            found.append((node, value))
    return found


def _free_batch(graph: onnx.GraphProto, x: onnx.ValueInfoProto, batch: int) -> list[str]:
    """Make the fixed batch axis symbolic; return the Reshape nodes rewritten."""
    x.type.tensor_type.shape.dim[0].Clear()
    x.type.tensor_type.shape.dim[0].dim_param = "N"
    for out in graph.output:
        dims = out.type.tensor_type.shape.dim
        if len(dims) and dims[0].HasField("dim_value") and dims[0].dim_value == batch:
            dims[0].Clear()
            dims[0].dim_param = "N"
    del graph.value_info[:]  # intermediate shapes carry the old batch; ORT infers them again
    rewritten = []
    for node, value in _batch_constants(graph, batch):
        if node.op_type == "Reshape":
            _batch_from_data(graph, node, value.astype(np.int64))
            rewritten.append(f"{node.name or node.output[0]} {value.tolist()} -> "
                             f"[batch of its input, *{value[1:].tolist()}]")
    return rewritten


def _batch_from_data(graph: onnx.GraphProto, node: onnx.NodeProto, shape: np.ndarray) -> None:
    """Reshape(data, [b, *rest]) -> Reshape(data, Concat(Shape(data)[0:1], rest)), the nodes put
    just before the Reshape (a 0 in place of b would be the same by the spec, but ONNX
    Runtime's shape inference refuses 0 next to -1)."""
    base = _P + (node.name or node.output[0])
    consts = {"_start": [0], "_end": [1], "_rest": shape[1:].tolist()}
    for suffix, values in consts.items():
        graph.initializer.append(numpy_helper.from_array(np.array(values, np.int64),
                                                         base + suffix))
    new = [
        helper.make_node("Shape", [node.input[0]], [base + "_in_shape"], name=base + "_shape"),
        helper.make_node("Slice", [base + "_in_shape", base + "_start", base + "_end"],
                         [base + "_batch"], name=base + "_batch_dim"),
        helper.make_node("Concat", [base + "_batch", base + "_rest"], [base + "_new_shape"],
                         name=base + "_new_shape", axis=0),
    ]
    index = list(graph.node).index(node)
    for offset, extra in enumerate(new):
        graph.node.insert(index + offset, extra)
    node.input[1] = base + "_new_shape"


def _session(model: onnx.ModelProto):  # type: ignore[no-untyped-def]
    from ..engine.session import SessionBuilder

    return SessionBuilder.cpu(threads=1).build(model, name="classifier").session


def _with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    keep = [o for o in probe.graph.output if o.name in names]
    del probe.graph.output[:]
    probe.graph.output.extend(keep)
    return probe


def _probe_shape(x: onnx.ValueInfoProto, input_shape: Sequence[int] | None
                 ) -> tuple[int, int, int] | None:
    dims = _dims(x)
    if len(dims) != 4:
        return None
    chw = [d if isinstance(d, int) and d > 0 else None for d in dims[1:]]
    if input_shape is not None and len(input_shape) == 3:
        chw = [c if c is not None else int(s) for c, s in zip(chw, input_shape)]
    return tuple(chw) if all(c is not None for c in chw) else None  # type: ignore[return-value]


def _prove_batch(model: onnx.ModelProto, x_name: str, y_name: str, chw: tuple[int, int, int],
                 inner: int, batch: int, graph: onnx.GraphProto) -> None:
    """Batch ``inner`` against one image at a time on the same random input: equal, or
    ModelError naming the nodes that hard-code the batch."""
    images = np.random.default_rng(0).random((inner, *chw), dtype=np.float32)
    try:
        session = _session(_with_outputs(model, [y_name]))
        together = session.run(None, {x_name: images})[0]
        alone = np.concatenate([session.run(None, {x_name: images[i:i + 1]})[0]
                                for i in range(inner)])
        scale = max(float(np.abs(alone).max()), 1e-12)
        ok = together.shape == alone.shape and float(np.abs(together - alone).max()) <= 1e-4 * scale
        detail = "" if ok else f"batch {inner} gave other outputs than {inner} runs at batch 1"
    except Exception as exc:  # ORT: shape mismatch in some node
        ok, detail = False, f"ONNX Runtime: {str(exc).splitlines()[0][:300]}"
    if ok:
        return
    culprits = [f"{n.op_type} {n.name or n.output[0]!r} (constant shape {v.tolist()})"
                for n, v in _batch_constants(graph, batch) if n.op_type != "Reshape"]
    where = ("; the batch is hard-coded in " + ", ".join(culprits)) if culprits else (
        "; no constant shape starting with the batch was found, so the batch is fixed some "
        "other way (a Shape-free computation, a Flatten of the whole tensor, ...)")
    raise ModelError(
        f"classifier input {x_name!r}: its batch axis was fixed at {batch}; rpdetect made it "
        f"symbolic but the graph does not allow another batch ({detail}){where}. Re-export the "
        f"classifier with a dynamic batch axis (torch.onnx.export(..., dynamic_shapes=...) or "
        f"dynamic_axes={{'input': {{0: 'N'}}}})")


def _choose_output(graph: onnx.GraphProto, wanted: str | None, notes: list[str]) -> str:
    outputs = list(graph.output)
    if wanted is not None:
        if wanted not in {o.name for o in outputs}:
            raise ModelError(f"classifier: no output named {wanted!r}; outputs are "
                             f"{[o.name for o in outputs]}")
        return wanted
    if len(outputs) == 1:
        return outputs[0].name
    logits = [o for o in outputs if o.type.tensor_type.elem_type == TensorProto.FLOAT
              and len(o.type.tensor_type.shape.dim) == 2]
    described = ", ".join(f"{o.name!r} {_dims(o)}" for o in outputs)
    if len(logits) == 1:
        notes.append(f"classifier has {len(outputs)} outputs ({described}); the only float "
                     f"[N, K] one, {logits[0].name!r}, is taken as the logits")
        return logits[0].name
    raise ModelError(f"classifier has {len(outputs)} outputs ({described}); say which holds the "
                     f"logits with classifier_output= (CLI: --classifier-output NAME)")


def _replace_output(graph: onnx.GraphProto, old: str, new: str, k: int | str | None) -> None:
    vi = next(o for o in graph.output if o.name == old)
    n = _dims(vi)[0] if _dims(vi) else "N"
    graph.output.remove(vi)
    graph.output.append(helper.make_tensor_value_info(new, TensorProto.FLOAT, [n, k]))


def _insert_log(graph: onnx.GraphProto, y: str) -> str:
    floor = _P + "prob_floor"
    graph.initializer.append(numpy_helper.from_array(np.array(_LOG_FLOOR, np.float32), floor))
    clamped, out = _P + "prob_clamped", _P + "log_prob"
    graph.node.append(helper.make_node("Max", [y, floor], [clamped], name=_P + "clamp"))
    graph.node.append(helper.make_node("Log", [clamped], [out], name=_P + "log"))
    k = _dims(next(o for o in graph.output if o.name == y))[1]
    _replace_output(graph, y, out, k)
    return out


def _insert_two_class(graph: onnx.GraphProto, y: str) -> str:
    zero, out = _P + "zero_logit", _P + "two_class_logits"
    graph.node.append(helper.make_node("Sub", [y, y], [zero], name=_P + "zero"))
    graph.node.append(helper.make_node("Concat", [zero, y], [out], name=_P + "two_class",
                                       axis=1))
    _replace_output(graph, y, out, 2)
    return out


def _looks_like_probabilities(values: np.ndarray) -> bool:
    return bool(values.ndim == 2 and values.shape[1] > 1 and (values >= 0).all()
                and np.allclose(values.sum(axis=1), 1.0, atol=1e-3))


def prepare_classifier(
    model: onnx.ModelProto,
    *,
    inner_batch: int,
    classifier_output: str | None = None,
    input_shape: Sequence[int] | None = None,
    options: IntakeOptions = IntakeOptions(),
) -> IntakeResult:
    """``model`` (modified in place) made fit for ``build_detector``'s surgery, the name of its
    logits output and notes on what was done; ModelError naming the option otherwise.
    ``inner_batch``: the batch the detector runs the classifier at, B * (n + 1)."""
    notes: list[str] = []
    model = _convert_opset(model, notes)
    graph = model.graph
    x = _image_input(graph)
    y = _choose_output(graph, classifier_output, notes)
    if x is None:
        return IntakeResult(model, y, tuple(notes))
    dims = _dims(x)
    if _layout(dims, options.input_layout, x.name, notes) == "nhwc":
        if len(dims) != 4:
            raise ModelError(f"classifier input {x.name!r}: input_layout 'nhwc' needs rank 4, "
                             f"got {dims}")
        if options.input_layout == "nhwc":
            notes.append(f"input {x.name!r} {dims} read as NHWC (input_layout='nhwc'): a "
                         f"Transpose in front makes the detector take NCHW")
        _transpose_front(graph, x)
        x = graph.input[[i.name for i in graph.input].index(_P + x.name + "_nchw")]
        dims = _dims(x)
    fixed = dims[0] if dims and isinstance(dims[0], int) and dims[0] not in (0, inner_batch) \
        else None
    if fixed is not None:
        rewritten = _free_batch(graph, x, fixed)
        notes.append(f"input {x.name!r}: fixed batch {fixed} made symbolic"
                     + (f" (Reshape shapes {'; '.join(rewritten)})" if rewritten else "")
                     + f", proven by batch {inner_batch} against batch 1 on random input")
    chw = _probe_shape(x, input_shape)
    if chw is None or x.type.tensor_type.elem_type != TensorProto.FLOAT:
        return IntakeResult(model, y, tuple(notes))
    if fixed is not None:
        _prove_batch(model, x.name, y, chw, inner_batch, fixed, graph)
    return IntakeResult(model, _check_output_kind(model, x.name, y, chw, options, notes),
                        tuple(notes))


def _check_output_kind(model: onnx.ModelProto, x: str, y: str, chw: tuple[int, int, int],
                       options: IntakeOptions, notes: list[str]) -> str:
    """Probe the classifier on random images: refuse or convert probabilities and single
    logits. Returns the logits output name."""
    try:
        probe = np.random.default_rng(1).random((4, *chw), dtype=np.float32)
        values = _session(_with_outputs(model, [y])).run(None, {x: probe})[0]
    except Exception as exc:
        notes.append(f"output {y!r} not probed (ONNX Runtime cannot run the classifier alone: "
                     f"{str(exc).splitlines()[0][:200]})")
        return y
    graph = model.graph
    if values.ndim == 2 and values.shape[1] == 1:
        if options.single_logit != "two-class":
            raise ModelError(
                f"classifier output {y!r} has a single logit (K = 1): both scores would always "
                f"be 0 and calibration would set thresholds to 0. Pass "
                f"single_logit='two-class' (CLI: --single-logit-as-two-class) to use the "
                f"two-class logits [0, z], or name another output with --classifier-output")
        notes.append(f"output {y!r} has one logit z: turned into two-class logits [0, z] "
                     f"(softmax: 1 - sigmoid(z), sigmoid(z))")
        return _insert_two_class(graph, y)
    if _looks_like_probabilities(values):
        if options.probabilities != "log":
            raise ModelError(
                f"classifier output {y!r} looks like probabilities (on random probe images every "
                f"row is >= 0 and sums to 1), not logits: score1 would be about ten times "
                f"smaller and mean something else. Name the logits output with "
                f"classifier_output= (CLI: --classifier-output NAME), or pass "
                f"probabilities='log' (CLI: --probabilities-to-log) to insert Log: "
                f"log-probabilities are the logits minus a per-image constant, so score1 and "
                f"score2 are then what the logits give (up to float32 rounding; probabilities "
                f"that underflowed to 0 are clamped to 1e-38)")
        notes.append(f"output {y!r} holds probabilities: Log inserted (clamped at 1e-38), so "
                     f"score1 and score2 are those of the logits up to float32 rounding")
        return _insert_log(graph, y)
    return y
