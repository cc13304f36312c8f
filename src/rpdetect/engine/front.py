"""The detector's front built by the engine: the n + 1 batch in one pass into a preallocated
buffer, fed to the rest of the graph through ONNX Runtime's I/O binding.

Every detector file starts with a *front* (``rpdetect/input/*`` and ``rpdetect/noise/*`` nodes):
image -> [optional cast/layout] -> x + kappa_i * eps_i (eps from ``RandomNormalLike`` or the
``noise`` input) -> Concat -> Reshape to the inner batch [B * (n + 1), C, H, W] in pixel space.
On ONNX Runtime's CPU provider that front is expensive: the ``RandomNormalLike`` kernel draws
with a serial ``minstd_rand0`` (about 20 ms for the 1.5 M values of one 224x224 image, n = 10),
and Expand/Mul/Add/Concat stream the 6.6 MB batch three more times.

:func:`split_front` cuts the file *in memory* just after the front (the file on disk is not
touched and stays portable): the cut model takes the inner batch as its input and keeps
everything after it, the folded normalisation, the classifier, the scores and the verdict.
:class:`BatchBuffer` fills that input for each run: row ``b * (n + 1)`` is image b, rows after
it are ``x + kappa_i * eps_i`` with eps drawn by :class:`rpdetect.engine.noise.NoiseSource`
straight into the buffer, ``x + kappa_i * eps`` in the same pass (the default generator
``xoshiro``, 0.6 ns a value, period 2**128 - 1 per lane; see ``noise.py``), the copies shared
out among the noise threads.

``rpdetect.Detector`` uses this on the CPU provider unless ``engine_noise=False`` (then the
graph's own random op runs, as every other runtime runs the file).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from ..contract import CLASSIFIER_INPUT_KEY, METADATA_PREFIX, DetectorSpec
from .noise import NoiseSource, scale_add

__all__ = ["BatchBuffer", "CutModel", "split_front"]

MAX_PROTO_BYTES = 2**31 - 2**26  # a cut model is passed to ONNX Runtime as one protobuf


@dataclass(frozen=True)
class CutModel:
    """The detector after its front: ``model`` takes ``batch_input`` [B * (n + 1), C, H, W]
    float32 pixels in [0, 1] (the thresholds stay overridable inputs)."""

    model: onnx.ModelProto
    batch_input: str


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output}


def _subgraph_names(node: onnx.NodeProto) -> set[str]:
    names: set[str] = set()
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for g in graphs:
            for inner in g.node:
                names.update(inner.input)
                names |= _subgraph_names(inner)
    return names


def _walk_to_reshape(producers: dict[str, onnx.NodeProto], spec: DetectorSpec) -> str | None:
    x_name = spec.raw.get(CLASSIFIER_INPUT_KEY[len(METADATA_PREFIX):])
    if not x_name:
        return None
    tensor = x_name
    node = producers.get(tensor)
    if spec.mean is not None and spec.std is not None:
        # Div(Sub(inner_batch, mean), std)
        if node is None or node.op_type != "Div":
            return None
        sub = producers.get(node.input[0])
        if sub is None or sub.op_type != "Sub":
            return None
        tensor = sub.input[0]
        node = producers.get(tensor)
    if node is None or node.op_type != "Reshape":
        return None
    concat = producers.get(node.input[0])
    if concat is None or concat.op_type != "Concat":
        return None
    return tensor


def split_front(model: onnx.ModelProto, spec: DetectorSpec) -> CutModel | None:
    """``model`` (a detector with its weights) without its front, or None when its graph does
    not have the front rpdetect's export writes (the caller then runs the file as it is)."""
    graph = model.graph
    cut = _walk_to_reshape(_producers(graph), spec)
    if cut is None:
        return None
    producers = _producers(graph)
    needed: set[int] = set()
    stack = [o.name for o in graph.output]
    while stack:
        tensor = stack.pop()
        if tensor == cut:
            continue
        node = producers.get(tensor)
        if node is None or id(node) in needed:
            continue
        needed.add(id(node))
        stack.extend(node.input)
        stack.extend(_subgraph_names(node))
    nodes = [node for node in graph.node if id(node) in needed]
    used = {name for node in nodes for name in node.input} | {
        name for node in nodes for name in _subgraph_names(node)}
    if "image" in used or "noise" in used:
        return None  # something after the front reads the raw inputs: not our layout
    c, h, w = spec.input_shape
    inner = spec.batch * (spec.n + 1)
    inputs = [helper.make_tensor_value_info(cut, TensorProto.FLOAT, [inner, c, h, w])]
    inputs += [i for i in graph.input if i.name in used and i.name not in ("image", "noise")]
    cut_graph = helper.make_graph(
        nodes, graph.name, inputs, list(graph.output),
        initializer=[t for t in graph.initializer if t.name in used],
        value_info=[v for v in graph.value_info if v.name in used])
    out = helper.make_model(cut_graph, opset_imports=list(model.opset_import),
                            ir_version=model.ir_version)
    out.functions.extend(model.functions)
    out.metadata_props.extend(model.metadata_props)
    if out.ByteSize() > MAX_PROTO_BYTES:
        return None
    return CutModel(out, cut)


class BatchBuffer:
    """The inner batch of one detector, preallocated once per thread, and how to fill it.

    ``fill(images, noises)``: images [C, H, W] float32 pixels (at most ``batch``); ``noises``
    per image: an [n, C, H, W] N(0, 1) array to use, or None to draw it from ``source``
    straight into the buffer. Rows of the batch not filled (padding) keep old, finite values;
    their results are dropped by the caller."""

    def __init__(self, spec: DetectorSpec, source: NoiseSource) -> None:
        self.n = spec.n
        self.batch = spec.batch
        self.clip = spec.clip
        self.kappas = tuple(float(k) for k in spec.kappas)
        self.shape = (spec.batch * (spec.n + 1), *spec.input_shape)
        self.source = source
        self._local = threading.local()

    def array(self) -> np.ndarray:
        """This thread's buffer (zeros on first use)."""
        buf = getattr(self._local, "buf", None)
        if buf is None:
            buf = self._local.buf = np.zeros(self.shape, dtype=np.float32)
        return buf

    def fill(self, images: list[np.ndarray], noises: list[np.ndarray | None]) -> np.ndarray:
        buf = self.array()
        n = self.n
        for b, (image, noise) in enumerate(zip(images, noises)):
            rows = buf[b * (n + 1):(b + 1) * (n + 1)]
            rows[0] = image
            copies = rows[1:]
            if noise is None and not self.source.prefetch:
                # drawn straight into the buffer, scaled and added in the same pass
                self.source.fill_scaled(copies, rows[0], self.kappas)
            else:  # given, or drawn ahead in the background: scaled across, row by row
                src = noise if noise is not None else self.source.draw()
                base = rows[0]
                for i, kappa in enumerate(self.kappas):
                    copies[i] = src[i]
                    scale_add(copies[i], kappa, base)
            if self.clip:
                np.clip(copies, 0.0, 1.0, out=copies)
        return buf
