#!/usr/bin/env python3
"""Rewrite an rpdetect detector .onnx into ops that OpenCV 4.x's DNN importer (4.6, Debian 12 /
Ubuntu 22.04+ ``libopencv-dev``) can run; same inputs, outputs and results.

    python clients/cpp/lower_for_opencv4.py detector.onnx detector-opencv4.onnx

OpenCV >= 5 and ONNX Runtime run the detector as exported: use this only for OpenCV 4.x. The
rewrites (measured with OpenCV 4.6.0):

* opset > 17 is converted down to 17 (``onnx.version_converter``): OpenCV 4.6 misreads Reduce*
  ops whose axes are an input (opset 18+) and reduces over the wrong axes;
* Squeeze with its axes as an input becomes a Reshape to the (static) output shape;
* a binary elementwise op (Add, Sub, Mul, Div) whose two run-time inputs broadcast along an axis
  other than the last gets an Expand of the smaller one first: OpenCV 4.6 does not broadcast two
  non-constant tensors there;
* Gather of several constant indices (the BGR -> RGB reorder of ``uint8-nhwc-bgr``) becomes one
  Slice per index and a Concat: OpenCV 4.6 gathers a single index only;
* Clip with its bounds as inputs (ReLU6) becomes Relu(x - lo) - Relu(x - hi) + lo: OpenCV 4.6
  reads the bounds only as attributes and has no Min/Max with a constant;
* Conv without ``kernel_shape`` (optional in ONNX, required by OpenCV 4.6) gets it from its weight;
* x (Add|Sub|Mul|Div) c with a [1, C, 1, 1] constant c (a normalisation folded into the
  classifier, or ``DetectorConfig(mean=..., std=...)``) becomes a 1x1 Conv with a diagonal weight:
  OpenCV 4.6 fails on the former once the batch is > 1 (Div becomes a multiplication by 1/c,
  within 1 ulp);
* Or (not implemented in OpenCV 4.6) becomes Greater(Max(float(a), float(b)), 0), on [.., 1];
* threshold inputs declared with a symbolic length ([1] or [n] at run time) get their
  initializer's static shape.

Not fixable here: RandomNormalLike (build the detector with ``noise="input"``); classifier ops
that OpenCV 4.x does not implement (the error names the node).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto, helper, numpy_helper, shape_inference, version_converter

TARGET_OPSET = 17
_ELEMENTWISE = ("Add", "Sub", "Mul", "Div")

__all__ = ["TARGET_OPSET", "lower_for_opencv4"]


def _drop_stale_reduce_attributes(model: onnx.ModelProto) -> None:
    """onnx's 18 -> 17 Reduce adapter moves axes into an attribute but keeps
    ``noop_with_empty_axes``, which opset 17 does not know (ReduceSum had it since 13). With
    explicit axes it has no effect, so it goes."""
    for nd in model.graph.node:
        if nd.op_type.startswith("Reduce") and nd.op_type != "ReduceSum":
            has_axes = any(a.name == "axes" for a in nd.attribute)
            kept = [a for a in nd.attribute if not (a.name == "noop_with_empty_axes"
                                                    and (has_axes or a.i == 0))]
            del nd.attribute[:]
            nd.attribute.extend(kept)


def _static_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    inferred = shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    g = inferred.graph
    shapes: dict[str, tuple[int, ...]] = {}
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        dims = vi.type.tensor_type.shape.dim
        if vi.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = tuple(int(d.dim_value) for d in dims)
    for init in g.initializer:
        shapes[init.name] = tuple(init.dims)
    return shapes


def _broadcasts_before_last_axis(have: tuple[int, ...], want: tuple[int, ...]) -> bool:
    """OpenCV 4.6 broadcasts a run-time tensor along the last axis ([.., K] - [.., 1]) but not
    along an earlier one ([1, 1, K] - [1, n, K]), and its Expand only handles the latter."""
    if len(have) != len(want):
        return True
    return any(h != w for h, w in zip(have[:-1], want[:-1]))


def _is_channel_affine(nd: onnx.NodeProto, shapes: dict[str, tuple[int, ...]],
                       init_values: dict[str, np.ndarray]) -> bool:
    """x (Add|Sub|Mul|Div) c with x [N, C, H, W] at run time and c a [1, C, 1, 1] constant."""
    if nd.op_type not in _ELEMENTWISE or len(nd.input) != 2:
        return False
    x, c = nd.input
    if x in init_values or c not in init_values or len(shapes.get(x, ())) != 4:
        return False
    const_shape = init_values[c].shape
    return len(const_shape) == 4 and const_shape[0] == 1 and const_shape[2:] == (1, 1) and (
        const_shape[1] in (1, shapes[x][1])
    )


def _clip_as_relus(nd: onnx.NodeProto, init_values: dict[str, np.ndarray], node, const,
                   ) -> onnx.NodeProto:
    x, out = nd.input[0], nd.output[0]
    lo_name = nd.input[1] if len(nd.input) > 1 else ""
    hi_name = nd.input[2] if len(nd.input) > 2 else ""
    for bound in (lo_name, hi_name):
        if bound and bound not in init_values:
            raise ValueError(f"Clip {nd.name!r}: bound {bound!r} is not a constant, cannot lower")
    lo = float(init_values[lo_name]) if lo_name else None
    hi = float(init_values[hi_name]) if hi_name else None

    def shifted_relu(value: float) -> str:  # Relu(x - value)
        if value == 0.0:
            return node("Relu", [x], f"{out}/relu")
        c = const(f"{out}/shift", np.array(value, dtype=np.float32))
        return node("Relu", [node("Sub", [x, c], f"{out}/shifted")], f"{out}/relu")

    if hi is None:  # Clip(x, lo) = Relu(x - lo) + lo
        c = const(f"{out}/lo", np.array(lo, dtype=np.float32))
        return helper.make_node("Add", [shifted_relu(lo), c], [out], name=nd.name)
    if lo is None:  # Clip(x, None, hi) = x - Relu(x - hi)
        return helper.make_node("Sub", [x, shifted_relu(hi)], [out], name=nd.name)
    low_part = shifted_relu(lo)
    band = shifted_relu(hi)
    if lo == 0.0:
        return helper.make_node("Sub", [low_part, band], [out], name=nd.name)
    diff = node("Sub", [low_part, band], f"{out}/band")
    c = const(f"{out}/lo", np.array(lo, dtype=np.float32))
    return helper.make_node("Add", [diff, c], [out], name=nd.name)


def _unique(base: str, taken: set[str]) -> str:
    name, i = base, 0
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    taken.add(name)
    return name


def lower_for_opencv4(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a copy of ``model`` that OpenCV 4.6's ONNX importer runs (see the module doc)."""
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if any(n.op_type.startswith("RandomNormal") for n in model.graph.node):
        raise ValueError(
            "the detector draws its noise in the graph (RandomNormalLike), which OpenCV 4.x does "
            "not implement: export it with noise='input' (`rpdetect export --noise input`)"
        )
    out = version_converter.convert_version(model, TARGET_OPSET) if opset > TARGET_OPSET else (
        onnx.ModelProto.FromString(model.SerializeToString())
    )
    _drop_stale_reduce_attributes(out)
    # convert_version drops metadata_props on some versions: keep the file's own.
    del out.metadata_props[:]
    out.metadata_props.extend(model.metadata_props)
    g = out.graph
    # An initializer-backed input with a symbolic length (threshold1/2: [1] or [n] at run time)
    # gets its initializer's static shape: OpenCV 4.6 mis-sizes the graph around a symbolic input
    # dim, and it reads those inputs as constants anyway.
    init_dims = {i.name: list(i.dims) for i in g.initializer}
    for vi in g.input:
        dims = vi.type.tensor_type.shape.dim
        if vi.name in init_dims and any(d.HasField("dim_param") for d in dims):
            vi.CopyFrom(helper.make_tensor_value_info(vi.name, vi.type.tensor_type.elem_type,
                                                      init_dims[vi.name]))
    shapes = _static_shapes(out)
    init_values = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    constants = {i.name for i in g.initializer} | {
        n.output[0] for n in g.node if n.op_type == "Constant"
    }
    taken = {i.name for i in g.initializer} | {t for n in g.node for t in (*n.input, *n.output)}
    taken |= {n.name for n in g.node}
    nodes: list[onnx.NodeProto] = []

    def const(base: str, value: np.ndarray) -> str:
        name = _unique(base, taken)
        g.initializer.append(numpy_helper.from_array(value, name))
        return name

    def node(op: str, inputs: list[str], base: str, **attrs: object) -> str:
        name = _unique(base, taken)
        nodes.append(helper.make_node(op, inputs, [name], name=_unique(base + "_node", taken),
                                      **attrs))
        return name

    for nd in g.node:
        if nd.op_type == "Squeeze" and len(nd.input) == 2:
            shape = shapes.get(nd.output[0])
            if shape is None:
                raise ValueError(f"Squeeze {nd.name!r}: output shape is not static, cannot lower")
            target = const(nd.output[0] + "/shape", np.array(shape, dtype=np.int64))
            nd = helper.make_node("Reshape", [nd.input[0], target], list(nd.output), name=nd.name)
        elif _is_channel_affine(nd, shapes, init_values):
            # OpenCV 4.6 fails on x (op) c with c [1, C, 1, 1] constant once the batch is > 1
            # (a folded normalisation): the same per-channel affine map as a 1x1 Conv.
            c = init_values[nd.input[1]].astype(np.float32).reshape(-1)
            channels = shapes[nd.input[0]][1]
            c = np.broadcast_to(c, (channels,))
            scale = {"Add": np.ones_like(c), "Sub": np.ones_like(c), "Mul": c,
                     "Div": (1.0 / c).astype(np.float32)}[nd.op_type]
            bias = {"Add": c, "Sub": -c}.get(nd.op_type, np.zeros_like(c))
            weight = np.zeros((channels, channels, 1, 1), dtype=np.float32)
            weight[np.arange(channels), np.arange(channels), 0, 0] = scale
            nd = helper.make_node(
                "Conv",
                [nd.input[0], const(nd.output[0] + "/weight", weight),
                 const(nd.output[0] + "/bias", bias.astype(np.float32))],
                list(nd.output), name=nd.name, kernel_shape=[1, 1],
            )
        elif nd.op_type in _ELEMENTWISE and not (set(nd.input) & constants):
            a, b = (shapes.get(t) for t in nd.input)
            want = shapes.get(nd.output[0])
            if a is not None and b is not None and want is not None and a != b:
                inputs = list(nd.input)
                for i, have in enumerate((a, b)):
                    if _broadcasts_before_last_axis(have, want):
                        reps = const(inputs[i] + "/expand_shape", np.array(want, dtype=np.int64))
                        inputs[i] = node("Expand", [inputs[i], reps], inputs[i] + "/expanded")
                nd = helper.make_node(nd.op_type, inputs, list(nd.output), name=nd.name)
        elif nd.op_type == "Gather" and nd.input[1] in init_values:
            # A channel reorder (BGR -> RGB): OpenCV 4.6 gathers one index only; use one Slice
            # per index and a Concat.
            indices = init_values[nd.input[1]]
            axis = next((a.i for a in nd.attribute if a.name == "axis"), 0)
            if indices.ndim == 1:
                ax = const(nd.output[0] + "/axis", np.array([axis], dtype=np.int64))
                parts = [
                    node("Slice", [nd.input[0],
                                   const(f"{nd.output[0]}/start{i}", np.array([i], np.int64)),
                                   const(f"{nd.output[0]}/end{i}", np.array([i + 1], np.int64)),
                                   ax], f"{nd.output[0]}/part{i}")
                    for i in (int(v) for v in indices)
                ]
                nd = helper.make_node("Concat", parts, list(nd.output), name=nd.name, axis=axis)
        elif (nd.op_type == "Conv" and nd.input[1] in init_values
              and not any(a.name == "kernel_shape" for a in nd.attribute)):
            # optional in ONNX (the weight's shape), required by OpenCV 4.6
            nd.attribute.append(helper.make_attribute(
                "kernel_shape", [int(d) for d in init_values[nd.input[1]].shape[2:]]))
        elif nd.op_type == "Clip" and len(nd.input) > 1:
            # OpenCV 4.6 reads Clip's bounds only as attributes (opset <= 6), and has no Min/Max
            # with a constant: Clip(x, lo, hi) = Relu(x - lo) - Relu(x - hi) + lo (exact for
            # x <= 2 hi, within an ulp of x above).
            nd = _clip_as_relus(nd, init_values, node, const)
        elif nd.op_type == "Or":
            # OpenCV 4.6's Max needs rank >= 2: compute on [.., 1] and reshape back.
            shape = shapes.get(nd.output[0])
            if shape is None:
                raise ValueError(f"Or {nd.name!r}: output shape is not static, cannot lower")
            col = const(nd.output[0] + "/col_shape", np.array((*shape, 1), dtype=np.int64))
            back = const(nd.output[0] + "/shape", np.array(shape, dtype=np.int64))
            fa, fb = (
                node("Reshape", [node("Cast", [t], t + "/float", to=TensorProto.FLOAT), col],
                     t + "/col")
                for t in nd.input
            )
            either = node("Reshape", [node("Max", [fa, fb], nd.output[0] + "/max"), back],
                          nd.output[0] + "/either")
            zero = const(nd.output[0] + "/zero", np.array(0.0, dtype=np.float32))
            nd = helper.make_node("Greater", [either, zero], list(nd.output), name=nd.name)
        nodes.append(nd)
    del g.node[:]
    g.node.extend(nodes)
    onnx.checker.check_model(out, full_check=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("detector", type=Path, help="rpdetect detector .onnx (noise='input')")
    parser.add_argument("output", type=Path, help="where to write the OpenCV 4.x version")
    args = parser.parse_args(argv)
    try:
        lowered = lower_for_opencv4(onnx.load(str(args.detector)))
    except (OSError, DecodeError, ValueError, onnx.checker.ValidationError) as exc:
        print(f"lower_for_opencv4: {args.detector}: {exc}", file=sys.stderr)
        return 2
    args.output.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(lowered, str(args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
