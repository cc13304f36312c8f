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
``xoshiro``, 0.9 ns a value, period 2**128 - 1 per lane; see ``noise.py``), the copies shared
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

from ..contract import CLASSIFIER_INPUT_KEY, CLASSIFIER_OUTPUT_KEY, METADATA_PREFIX, DetectorSpec
from .noise import NoiseSource, scale_add

__all__ = ["BatchBuffer", "CutModel", "images_per_run", "nodes_between", "split_front"]

MAX_PROTO_BYTES = 2**31 - 2**26  # a cut model is passed to ONNX Runtime as one protobuf
RUN_TOGETHER_BYTES = 2**20  # one image's inner batch up to this: a file's B images per run


def images_per_run(spec: DetectorSpec) -> int:
    """How many images the engine puts in one run of a cut graph whose batch axis is free: the
    file's B where one image's inner batch ((n + 1) x C x H x W float32) is at most 1 MiB, else
    one. Small images gain from a larger batch (ResNet-9 at 32x32, 135 KB an image: 16 images
    in one run of the graph-noise file cost 0.95 of B = 1 per image, `benchmarks/bench_latency.py`
    on a 2-core AMD EPYC). Large ones run one at a time, which answers each image at once and
    keeps memory small: for EfficientNet-Lite0 at 224x224 (6.6 MB an image) 16 images in one
    run cost 0.91 [0.90, 0.96] of one at a time per image, but the process peaks at 3.5 GB
    against 0.35 GB, and the first answer waits for all 16 (`benchmarks/images_per_run.py`,
    same machine); ``Detector(images_per_run=k)`` chooses throughput instead."""
    c, h, w = spec.input_shape
    one = (spec.n + 1) * c * h * w * 4
    return spec.batch if one <= RUN_TOGETHER_BYTES else 1


@dataclass(frozen=True)
class CutModel:
    """The detector after its front: ``model`` takes ``batch_input`` [images * (n + 1), C, H, W]
    float32 pixels in [0, 1] (the thresholds stay overridable inputs). ``images``: the images
    it answers for per run: 0 for any number (its batch axis freed), else that many (the file's
    B, where the graph could not be changed)."""

    model: onnx.ModelProto
    batch_input: str
    images: int


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


def nodes_between(graph: onnx.GraphProto, outputs: list[str], stop: str
                  ) -> tuple[list[onnx.NodeProto], set[str]]:
    """The nodes ``outputs`` depend on, walking back until ``stop`` (not included), in graph
    order, and every tensor name they read (subgraphs' outer names included)."""
    producers = _producers(graph)
    needed: set[int] = set()
    stack = list(outputs)
    while stack:
        tensor = stack.pop()
        node = producers.get(tensor)
        if tensor == stop or node is None or id(node) in needed:
            continue
        needed.add(id(node))
        stack.extend(node.input)
        stack.extend(_subgraph_names(node))
    nodes = [node for node in graph.node if id(node) in needed]
    used = {name for node in nodes for name in node.input}
    for node in nodes:
        used |= _subgraph_names(node)
    return nodes, used


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


def _free_batch(graph: onnx.GraphProto, spec: DetectorSpec) -> bool:
    """Free the cut graph's batch axis: the scores' Reshape of the logits to [B, n + 1, K]
    reshapes to [-1, n + 1, K] instead, K read from the logits' shape at run time (so any
    number of images per run), and the outputs' batch axis becomes symbolic. False (nothing
    changed) when the graph is not shaped that way."""
    y_name = spec.raw.get(CLASSIFIER_OUTPUT_KEY[len(METADATA_PREFIX):])
    reshape = next((nd for nd in graph.node if nd.op_type == "Reshape" and nd.input
                    and nd.input[0] == y_name), None)
    inits = {t.name: t for t in graph.initializer}
    if reshape is None or len(reshape.input) < 2 or reshape.input[1] not in inits:
        return False
    shape = onnx.numpy_helper.to_array(inits[reshape.input[1]])
    if shape.tolist() != [spec.batch, spec.n + 1, -1]:
        return False
    if sum(1 for nd in graph.node if reshape.input[1] in nd.input) != 1:
        return False  # the constant is shared: leave the graph alone
    p = "rpdetect/engine/free_batch/"
    graph.initializer.remove(inits[reshape.input[1]])  # read by that Reshape alone
    graph.initializer.extend([
        onnx.numpy_helper.from_array(np.array([-1, spec.n + 1], np.int64), p + "lead"),
        onnx.numpy_helper.from_array(np.array([1], np.int64), p + "one"),
        onnx.numpy_helper.from_array(np.array([2], np.int64), p + "two")])
    at = list(graph.node).index(reshape)
    new = [helper.make_node("Shape", [y_name], [p + "y_shape"], name=p + "Shape"),
           helper.make_node("Slice", [p + "y_shape", p + "one", p + "two"], [p + "k"],
                            name=p + "Slice"),
           helper.make_node("Concat", [p + "lead", p + "k"], [p + "shape"], axis=0,
                            name=p + "Concat")]
    for offset, node in enumerate(new):
        graph.node.insert(at + offset, node)
    reshape.input[1] = p + "shape"
    for out in graph.output:
        dims = out.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "images"
    return True


def split_front(model: onnx.ModelProto, spec: DetectorSpec, *, free_batch: bool | None = None
                ) -> CutModel | None:
    """``model`` (a detector with its weights) without its front, or None when its graph does
    not have the front rpdetect's export writes (the caller then runs the file as it is).
    ``free_batch``: the cut graph takes any number of images per run, where the graph allows
    it, so a call on fewer images than the file's B computes no padding and the engine chooses
    how many images go in one run. None (default): for a file built for B > 1 images (a B = 1
    file keeps its graph's shapes, the default path's); True: for any B."""
    graph = model.graph
    cut = _walk_to_reshape(_producers(graph), spec)
    if cut is None:
        return None
    nodes, used = nodes_between(graph, [o.name for o in graph.output], cut)
    if "image" in used or "noise" in used:
        return None  # something after the front reads the raw inputs: not our layout
    c, h, w = spec.input_shape
    images = spec.batch
    # copies of the outputs and initializers the cut graph gets, so the file's model is intact
    scratch = onnx.GraphProto()
    scratch.output.extend(graph.output)
    scratch.initializer.extend(t for t in graph.initializer if t.name in used)
    scratch.node.extend(nodes)
    if (spec.batch > 1 if free_batch is None else free_batch) and _free_batch(scratch, spec):
        images = 0
    inner: int | str = images * (spec.n + 1) if images else "images_x_copies"
    inputs = [helper.make_tensor_value_info(cut, TensorProto.FLOAT, [inner, c, h, w])]
    inputs += [i for i in graph.input if i.name in used and i.name not in ("image", "noise")]
    cut_graph = helper.make_graph(
        list(scratch.node), graph.name, inputs, list(scratch.output),
        initializer=list(scratch.initializer),
        # shapes inferred for the file's B would contradict a freed batch axis
        value_info=[] if images != spec.batch else
        [v for v in graph.value_info if v.name in used])
    out = helper.make_model(cut_graph, opset_imports=list(model.opset_import),
                            ir_version=model.ir_version)
    out.functions.extend(model.functions)
    out.metadata_props.extend(model.metadata_props)
    if out.ByteSize() > MAX_PROTO_BYTES:
        return None
    return CutModel(out, cut, images)


class BatchBuffer:
    """The inner batch of one detector, preallocated once per thread, and how to fill it.

    ``fill(images, noises)``: images [C, H, W] float32 pixels (at most ``images``, the images
    one run takes); ``noises`` per image: an [n, C, H, W] N(0, 1) array to use, or None to draw
    it from ``source`` straight into the buffer. With ``trim`` (a cut graph whose batch axis is
    free) it returns the filled rows only, a view of the buffer; else the whole buffer, whose
    rows not filled (padding) keep old, finite values, their results dropped by the caller."""

    def __init__(self, spec: DetectorSpec, source: NoiseSource, *, images: int | None = None,
                 trim: bool = False) -> None:
        self.n = spec.n
        self.batch = spec.batch if images is None else images
        self.trim = trim
        self.clip = spec.clip
        self.kappas = tuple(float(k) for k in spec.kappas)
        self.shape = (self.batch * (spec.n + 1), *spec.input_shape)
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
        return buf[:len(images) * (n + 1)] if self.trim else buf
