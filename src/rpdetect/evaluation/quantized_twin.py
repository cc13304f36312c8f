"""The INT8 classifier of a detector as a differentiable torch module, for white-box attacks on
the model that is actually deployed.

ONNX Runtime runs a QDQ classifier with integer kernels (``QuantizeLinear`` -> ``Conv`` ->
``QuantizeLinear`` fused into ``QLinearConv`` ...) and gives no gradients. :func:`quantized_twin`
interprets the same graph in torch: weights and biases are the file's int8 / int32 values
dequantized, and every activation ``QuantizeLinear`` rounds and saturates exactly as ONNX
Runtime does (round half to even, clamp to the zero point type's range), so its forward pass
is the INT8 model's up to float summation order. Its backward pass treats the rounding as the
identity (the straight-through estimator, as quantization-aware training does) and the
saturation as a clamp (zero gradient outside the range, as ReLU6 has). This is the gradient an
adaptive attacker of the INT8 model uses (BPDA, Athalye et al. 2018); attacks on the FP32 model
instead *transfer* to the INT8 one, and minimal ones (DDN, CW) then stop at the FP32 decision
boundary, which quantization has moved.

``twin_from_onnx(path)`` interprets a classifier file (float32 or QDQ) the same way, for
white-box attacks on a classifier known only as ONNX. ``twin_from_detector(path)`` builds it from an rpdetect INT8 detector file: the classifier is
taken out of the file (``extract_classifier``), with the detector's own normalisation in front
when the detector folds one in, so the module maps pixels in [0, 1] to the classifier's logits.
Only the operators image classifiers are commonly made of are interpreted (convolutions,
Gemm/MatMul, batch norm, the usual activations, pooling, softmax, Pad, Slice, Cast, Dropout,
the reshapes of a flatten,
``DequantizeLinear -> AveragePool -> QuantizeLinear`` fused as ONNX Runtime's
``QLinearAveragePool`` rounds it); others raise ModelError naming the node. With no QDQ nodes
the same interpreter runs a float32 graph as it is.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from ..errors import ModelError

__all__ = ["quantized_twin", "twin_from_detector", "twin_from_onnx"]

_QRANGE = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127),
           np.dtype(np.uint16): (0, 65535), np.dtype(np.int16): (-32768, 32767)}


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _text(attrs: dict[str, Any], name: str, default: str) -> str:
    """A string attribute (ONNX stores them as bytes)."""
    value = attrs.get(name, default)
    return value.decode() if isinstance(value, bytes) else value


@functools.cache
def _module_class() -> type:
    """The module class, made once on first use (torch is imported lazily)."""
    import torch
    import torch.nn.functional as F

    class _Twin(torch.nn.Module):
        """A QDQ ONNX classifier interpreted in torch (module doc)."""

        def __init__(self, model: onnx.ModelProto, mean: Any = None, std: Any = None) -> None:
            super().__init__()
            g = model.graph
            if len(g.input) != 1 or len(g.output) < 1:
                raise ModelError("quantized twin: expected a classifier with one input")
            self.input_name = g.input[0].name
            self.output_name = g.output[0].name
            consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t)
                                             for t in g.initializer}
            folded: dict[str, onnx.NodeProto] = {}  # constant DequantizeLinear outputs
            nodes: list[onnx.NodeProto] = []
            for node in g.node:
                if node.op_type == "Constant":
                    consts[node.output[0]] = numpy_helper.to_array(_attrs(node)["value"])
                elif node.op_type == "DequantizeLinear" and all(
                        i in consts for i in node.input if i):
                    consts[node.output[0]] = _dequantize_np(node, consts)
                    folded[node.output[0]] = node
                elif node.op_type not in ops:
                    raise ModelError(f"quantized twin: node {node.name!r}: operator "
                                     f"{node.op_type} is not interpreted")
                else:
                    nodes.append(node)
            self._np_consts = consts
            self.folded = frozenset(folded)  # consts that are dequantized initializers
            # every fused integer convolution, by node name: its integer weight "w" and bias
            # "b" (int32 units) as the forward pass reads them (rpdetect.export.refine swaps
            # them for trainable tensors), the initializer names they came from, and "mult"
            # (input scale x weight scale / output scale, per output channel)
            self.quantized_layers: dict[str, dict[str, Any]] = {}
            self.consts: dict[str, Any] = {
                k: torch.from_numpy(np.array(v, np.float32 if v.dtype.kind == "f" else v.dtype))
                for k, v in consts.items() if v.dtype.kind in "fiu"}
            self.steps = _plan(nodes, folded, consts, self.output_name, self.quantized_layers)
            self.mean = None if mean is None else torch.tensor(
                np.asarray(mean, np.float32).reshape(1, -1, 1, 1))
            self.std = None if std is None else torch.tensor(
                np.asarray(std, np.float32).reshape(1, -1, 1, 1))

        def forward(self, x: Any) -> Any:
            if self.mean is not None and self.std is not None:
                x = (x - self.mean) / self.std
            if x.ndim == 4:  # oneDNN's NHWC convolutions: faster forward and backward on CPU
                x = x.contiguous(memory_format=torch.channels_last)
            env: dict[str, Any] = {self.input_name: x}
            for fn, inputs, output in self.steps:
                env[output] = fn([(env[i] if i in env else self.consts[i]) if i else None
                                  for i in inputs])
            return env[self.output_name]

    def _plan(nodes: list[onnx.NodeProto], folded: dict[str, onnx.NodeProto],
              consts: dict[str, np.ndarray], output: str, layers: dict[str, dict[str, Any]]
              ) -> list[tuple[Callable, list, str]]:
        """The steps that compute ``output``: ``DequantizeLinear -> Conv / AveragePool ->
        QuantizeLinear`` and ``DequantizeLinear x2 -> Add -> QuantizeLinear`` fused as ONNX
        Runtime fuses them (QLinearConv, QLinearAveragePool, QLinearAdd: one rounding each,
        in ONNX Runtime's order), the other nodes one by one."""
        producer = {o: nd for nd in nodes for o in nd.output}
        consumers: dict[str, list[onnx.NodeProto]] = {}
        for nd in nodes:
            for i in nd.input:
                consumers.setdefault(i, []).append(nd)
        steps: dict[str, tuple[Callable, list, str]] = {}
        for nd in nodes:
            fused = _fuse(nd, producer, consumers, folded, consts, output, layers)
            if fused is not None:
                steps[fused[2]] = fused
            elif nd.output[0] not in steps:
                a = _attrs(nd)
                steps[nd.output[0]] = (
                    lambda ins, nd=nd, a=a: ops[nd.op_type](ins, a, consts, nd),
                    list(nd.input), nd.output[0])
        # keep what the output needs, in graph order
        order = [o for nd in nodes for o in nd.output if o in steps]
        need, stack = set(), [output]
        while stack:
            name = stack.pop()
            if name in steps and name not in need:
                need.add(name)
                stack.extend(i for i in steps[name][1] if i)
        return [steps[o] for o in order if o in need]

    def _qparams(dq: onnx.NodeProto, consts: dict[str, np.ndarray]) -> tuple[Any, Any] | None:
        """(scale, zero point) of a per-tensor DequantizeLinear with constant parameters."""
        if dq.input[1] not in consts or (len(dq.input) > 2 and dq.input[2]
                                         and dq.input[2] not in consts):
            return None
        scale = np.asarray(consts[dq.input[1]], np.float32)
        zp = consts[dq.input[2]] if len(dq.input) > 2 and dq.input[2] else np.zeros((), np.uint8)
        return (scale, zp) if scale.size == 1 else None

    def _fuse(nd: onnx.NodeProto, producer: dict, consumers: dict, folded: dict,
              consts: dict, output: str, layers: dict[str, dict[str, Any]]
              ) -> tuple[Callable, list, str] | None:
        users = consumers.get(nd.output[0], [])
        if nd.op_type not in ("Conv", "Add", "AveragePool") or len(users) != 1 \
                or users[0].op_type != "QuantizeLinear" or nd.output[0] == output:
            return None
        q_out = users[0]
        out_q = _qparams(q_out, consts)
        sources = [producer.get(i) for i in nd.input[:2]]
        if out_q is None or any(s is None or s.op_type != "DequantizeLinear"
                                for s in sources[:2 if nd.op_type == "Add" else 1]):
            return None
        s_y, zp_y = out_q
        lo, hi = _QRANGE[zp_y.dtype]
        zp_y = float(zp_y)
        if nd.op_type == "AveragePool":  # QLinearAveragePool: float average, then
            x_q = _qparams(sources[0], consts)  # nearbyint(y / y_scale + y_zero_point)
            if x_q is None:
                return None
            s_x, zp_x = float(x_q[0]), float(x_q[1])
            s_y_f, a_pool = float(s_y), _attrs(nd)

            def qavg(ins: list) -> Any:
                v = avgpool([(ins[0] - zp_x) * s_x], a_pool, consts, nd)
                return torch.clamp(_round_ste(v / s_y_f + zp_y), lo, hi)
            return qavg, [sources[0].input[0]], q_out.output[0]
        if nd.op_type == "Add":
            params = [_qparams(s, consts) for s in sources]
            if any(p is None for p in params):
                return None
            (s_a, zp_a), (s_b, zp_b) = params
            # MLAS's AVX2 QLinearAdd: fma(a, ra, fma(b, rb, fixed)) in float32, with
            # fixed = zp_y - fma(ra, zp_a, rb * zp_b) as its compiler contracts it; a fused
            # multiply-add rounds once, which float64 products and sums then one rounding to
            # float32 reproduce (8-bit integers times float32 ratios); another order rounds
            # some ties the other way (the ImageNette and Dogs vs Cats classifiers' residual
            # adds: benchmarks/int8_twin_fidelity.py)
            ra, rb = np.float32(np.float32(s_a) / np.float32(s_y)), \
                np.float32(np.float32(s_b) / np.float32(s_y))
            rb_zb = np.float32(rb * np.float32(zp_b))
            fixed = np.float32(np.float32(zp_y) - np.float32(
                np.float64(ra) * float(zp_a) + np.float64(rb_zb)))
            ra_d, rb_d, fixed_d = float(ra), float(rb), float(fixed)

            def add(ins: list) -> Any:
                t = (ins[1].double() * rb_d + fixed_d).float()
                v = (ins[0].double() * ra_d + t.double()).float()
                return torch.clamp(_round_ste(v), lo, hi)
            return add, [sources[0].input[0], sources[1].input[0]], q_out.output[0]
        x_q = _qparams(sources[0], consts)
        w_dq = folded.get(nd.input[1])
        b_dq = folded.get(nd.input[2]) if len(nd.input) > 2 and nd.input[2] else None
        if x_q is None or w_dq is None or (len(nd.input) > 2 and nd.input[2] and b_dq is None):
            return None
        s_x, zp_x = x_q
        w_int = consts[w_dq.input[0]]
        w_zp = consts[w_dq.input[2]] if len(w_dq.input) > 2 and w_dq.input[2] else None
        if w_int.dtype != np.int8 or (w_zp is not None and np.any(w_zp != 0)):
            return None
        s_w = np.asarray(consts[w_dq.input[1]], np.float32).reshape(-1)
        mult = torch.from_numpy(((np.float32(s_x) * s_w) / np.float32(s_y)).astype(
            np.float32).reshape(1, -1, 1, 1))
        w = torch.from_numpy(w_int.astype(np.float32))
        if w.ndim == 4:
            w = w.contiguous(memory_format=torch.channels_last)
        bias = None if b_dq is None else torch.from_numpy(
            consts[b_dq.input[0]].astype(np.float32).reshape(1, -1, 1, 1))
        a = _attrs(nd)
        zp_x = float(zp_x)
        layer = {"w": w, "b": bias, "mult": mult, "weight": w_dq.input[0],
                 "bias": None if b_dq is None else b_dq.input[0]}
        layers[nd.name or q_out.output[0]] = layer

        def qconv(ins: list) -> Any:
            acc = conv([ins[0] - zp_x, layer["w"]], a, consts, nd)
            if layer["b"] is not None:
                acc = acc + layer["b"]
            return torch.clamp(_round_ste(acc * mult) + zp_y, lo, hi)
        return qconv, [sources[0].input[0]], q_out.output[0]

    def _round_ste(v: Any) -> Any:
        return v + (torch.round(v) - v).detach()

    def _per_axis(x: Any, scale: Any, zp: Any, axis: int) -> tuple[Any, Any]:
        """``scale`` and ``zp`` shaped to broadcast along ``axis`` of ``x`` (per-channel)."""
        if scale.ndim == 1 and scale.numel() > 1:
            shape = [1] * x.ndim
            shape[axis] = -1
            scale = scale.reshape(shape)
            zp = zp.reshape(shape) if isinstance(zp, torch.Tensor) else zp
        return scale, zp

    def quantize(ins: list, attrs: dict, consts: dict, node: onnx.NodeProto) -> Any:
        zp_np = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        lo, hi = _QRANGE[np.dtype(np.uint8) if zp_np is None else zp_np.dtype]
        zp = 0.0 if zp_np is None else torch.from_numpy(np.array(zp_np, np.float32))
        scale, zp = _per_axis(ins[0], ins[1], zp, attrs.get("axis", 1))
        return torch.clamp(_round_ste(ins[0] / scale) + zp, lo, hi)

    def dequantize(ins: list, attrs: dict, consts: dict, node: onnx.NodeProto) -> Any:
        q = ins[0].float()
        zp = ins[2].float() if len(ins) > 2 and ins[2] is not None else 0.0
        scale, zp = _per_axis(q, ins[1], zp, attrs.get("axis", 1))
        return (q - zp) * scale

    def _auto_pads(x: Any, kernel: Any, attrs: dict) -> tuple[list[int], list[int]]:
        """The explicit (begin, end) pads of ``auto_pad`` SAME_UPPER / SAME_LOWER / VALID."""
        auto = _text(attrs, "auto_pad", "NOTSET")
        spatial = list(x.shape[2:])
        strides = list(attrs.get("strides", [1] * len(spatial)))
        dilations = list(attrs.get("dilations", [1] * len(spatial)))
        begin, end = [], []
        for n, k, s, d in zip(spatial, kernel, strides, dilations):
            total = 0 if auto == "VALID" else max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
            small, large = total // 2, total - total // 2
            begin.append(large if auto == "SAME_LOWER" else small)
            end.append(small if auto == "SAME_LOWER" else large)
        return begin, end

    def conv(ins: list, attrs: dict, consts: dict, node: onnx.NodeProto) -> Any:
        x, w = ins[0], ins[1]
        b = ins[2] if len(ins) > 2 else None
        if _text(attrs, "auto_pad", "NOTSET") != "NOTSET":
            begin, end = _auto_pads(x, list(w.shape[2:]), attrs)
        else:
            pads = list(attrs.get("pads", [0] * 4))
            half = len(pads) // 2
            begin, end = pads[:half], pads[half:]
        if begin != end:
            x = F.pad(x, [p for pair in zip(reversed(begin), reversed(end)) for p in pair])
            padding: Any = 0
        else:
            padding = tuple(begin)
        return F.conv2d(x, w, b, stride=tuple(attrs.get("strides", [1, 1])), padding=padding,
                        dilation=tuple(attrs.get("dilations", [1, 1])),
                        groups=int(attrs.get("group", 1)))

    def gemm(ins: list, attrs: dict, consts: dict, node: onnx.NodeProto) -> Any:
        a, b = ins[0], ins[1]
        if attrs.get("transA", 0):
            a = a.t()
        if attrs.get("transB", 0):
            b = b.t()
        y = attrs.get("alpha", 1.0) * (a @ b)
        if len(ins) > 2 and ins[2] is not None:
            y = y + attrs.get("beta", 1.0) * ins[2]
        return y

    def _axes(ins: list, attrs: dict) -> list[int] | None:
        if len(ins) > 1 and ins[1] is not None:
            return [int(a) for a in ins[1].tolist()]
        return attrs.get("axes")

    def reduce(fn: Callable) -> Callable:
        def run(ins: list, attrs: dict, consts: dict, node: onnx.NodeProto) -> Any:
            axes = _axes(ins, attrs)
            keep = bool(attrs.get("keepdims", 1))
            x = ins[0]
            if not axes:
                axes = list(range(x.ndim))
            return fn(x, axes, keep)
        return run

    def reduce_max(x: Any, axes: list[int], keep: bool) -> Any:
        for a in sorted((a % x.ndim for a in axes), reverse=True):
            x = x.amax(dim=a, keepdim=keep)
        return x

    def reshape(ins: list, attrs: dict, consts: dict, node: onnx.NodeProto) -> Any:
        x, shape = ins[0], [int(s) for s in ins[1].tolist()]
        shape = [x.shape[i] if s == 0 and not attrs.get("allowzero", 0) else s
                 for i, s in enumerate(shape)]
        return x.reshape(shape)

    def maxpool(ins: list, attrs: dict, consts: dict, node: onnx.NodeProto) -> Any:
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        if pads[:2] != pads[2:] or attrs.get("ceil_mode", 0):
            raise ModelError(f"quantized twin: node {node.name!r}: asymmetric or ceil-mode "
                             "pooling is not interpreted")
        return F.max_pool2d(ins[0], tuple(attrs["kernel_shape"]),
                            stride=tuple(attrs.get("strides", attrs["kernel_shape"])),
                            padding=tuple(pads[:2]),
                            dilation=tuple(attrs.get("dilations", [1, 1])))

    def clip(ins: list, attrs: dict, consts: dict, node: onnx.NodeProto) -> Any:
        lo = ins[1] if len(ins) > 1 and ins[1] is not None else attrs.get("min")
        hi = ins[2] if len(ins) > 2 and ins[2] is not None else attrs.get("max")
        return torch.clamp(ins[0], None if lo is None else float(lo),
                           None if hi is None else float(hi))

    def avgpool(ins: list, attrs: dict, consts: dict, node: onnx.NodeProto) -> Any:
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        if pads[:2] != pads[2:] or _text(attrs, "auto_pad", "NOTSET") != "NOTSET":
            raise ModelError(f"quantized twin: node {node.name!r}: asymmetric or automatic "
                             "padding of AveragePool is not interpreted")
        return F.avg_pool2d(ins[0], tuple(attrs["kernel_shape"]),
                            stride=tuple(attrs.get("strides", attrs["kernel_shape"])),
                            padding=tuple(pads[:2]), ceil_mode=bool(attrs.get("ceil_mode", 0)),
                            count_include_pad=bool(attrs.get("count_include_pad", 0)))

    def batchnorm(ins: list, attrs: dict, consts: dict, node: onnx.NodeProto) -> Any:
        x, scale, bias, mean, var = ins[:5]
        return F.batch_norm(x, mean, var, scale, bias, training=False,
                            eps=float(attrs.get("epsilon", 1e-5)))

    def squeeze(ins: list, attrs: dict, consts: dict, node: onnx.NodeProto) -> Any:
        axes = _axes(ins, attrs)
        x = ins[0]
        if axes is None:
            return x.squeeze()
        for a in sorted((a % x.ndim for a in axes), reverse=True):
            x = x.squeeze(a)
        return x

    def unsqueeze(ins: list, attrs: dict, consts: dict, node: onnx.NodeProto) -> Any:
        axes = _axes(ins, attrs) or []
        x = ins[0]
        rank = x.ndim + len(axes)
        for a in sorted(a % rank for a in axes):
            x = x.unsqueeze(a)
        return x

    def shape(ins: list, attrs: dict, consts: dict, node: onnx.NodeProto) -> Any:
        dims = list(ins[0].shape)[attrs.get("start", 0):attrs.get("end", None)]
        return torch.tensor(dims, dtype=torch.int64)

    def gather(ins: list, attrs: dict, consts: dict, node: onnx.NodeProto) -> Any:
        x, idx = ins[0], ins[1].long()
        axis = attrs.get("axis", 0) % x.ndim
        idx = torch.where(idx < 0, idx + x.shape[axis], idx)
        return x[(slice(None),) * axis + (idx,)]

    def pad(ins: list, attrs: dict, consts: dict, node: onnx.NodeProto) -> Any:
        x = ins[0]
        pads = [int(p) for p in (ins[1].tolist() if len(ins) > 1 and ins[1] is not None
                                 else attrs.get("pads", []))]
        value = float(ins[2]) if len(ins) > 2 and ins[2] is not None \
            else float(attrs.get("value", 0.0))
        axes = [int(a) % x.ndim for a in ins[3].tolist()] if len(ins) > 3 and ins[3] is not None \
            else list(range(x.ndim))
        begin, end = [0] * x.ndim, [0] * x.ndim
        for i, a in enumerate(axes):
            begin[a], end[a] = pads[i], pads[len(axes) + i]
        mode = _text(attrs, "mode", "constant")
        torch_mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}.get(mode)
        if torch_mode is None or (torch_mode != "constant" and any(begin[:2] + end[:2])):
            raise ModelError(f"quantized twin: node {node.name!r}: Pad mode {mode!r} on these "
                             "axes is not interpreted")
        flat = [p for a in reversed(range(x.ndim)) for p in (begin[a], end[a])]
        if torch_mode != "constant":
            return F.pad(x, flat[:2 * (x.ndim - 2)], mode=torch_mode)
        return F.pad(x, flat, value=value)

    def slice_(ins: list, attrs: dict, consts: dict, node: onnx.NodeProto) -> Any:
        x = ins[0]
        starts, ends = ins[1].tolist(), ins[2].tolist()
        axes = ins[3].tolist() if len(ins) > 3 and ins[3] is not None else range(len(starts))
        steps = ins[4].tolist() if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
        index = [slice(None)] * x.ndim
        for start, stop, axis, step in zip(starts, ends, axes, steps):
            if step < 1:
                raise ModelError(f"quantized twin: node {node.name!r}: Slice with step {step} "
                                 "is not interpreted")
            index[axis] = slice(int(start), int(stop), int(step))  # clamped as ONNX clamps
        return x[tuple(index)]

    def cast(ins: list, attrs: dict, consts: dict, node: onnx.NodeProto) -> Any:
        to = {TensorProto.FLOAT: torch.float32, TensorProto.INT64: torch.int64,
              TensorProto.INT32: torch.int32}.get(attrs["to"])
        if to is None:
            raise ModelError(f"quantized twin: node {node.name!r}: Cast to "
                             f"{TensorProto.DataType.Name(attrs['to'])} is not interpreted")
        return ins[0].to(to)

    def _hard_sigmoid(x: Any, alpha: float, beta: float) -> Any:
        return torch.clamp(alpha * x + beta, 0.0, 1.0)

    ops: dict[str, Callable] = {
        "QuantizeLinear": quantize,
        "DequantizeLinear": dequantize,
        "Conv": conv,
        "Gemm": gemm,
        "MatMul": lambda i, a, c, n: i[0] @ i[1],
        "Add": lambda i, a, c, n: i[0] + i[1],
        "Sub": lambda i, a, c, n: i[0] - i[1],
        "Mul": lambda i, a, c, n: i[0] * i[1],
        "Div": lambda i, a, c, n: i[0] / i[1],
        "Relu": lambda i, a, c, n: torch.relu(i[0]),
        "Clip": clip,
        "Identity": lambda i, a, c, n: i[0],
        "Flatten": lambda i, a, c, n: i[0].flatten(a.get("axis", 1)),
        "ReduceMean": reduce(lambda x, axes, keep: x.mean(dim=axes, keepdim=keep)),
        "ReduceMax": reduce(reduce_max),
        "GlobalAveragePool": lambda i, a, c, n: i[0].mean(dim=(2, 3), keepdim=True),
        "Reshape": reshape,
        "MaxPool": maxpool,
        "Concat": lambda i, a, c, n: torch.cat(i, dim=a["axis"]),
        "Sigmoid": lambda i, a, c, n: torch.sigmoid(i[0]),
        "Tanh": lambda i, a, c, n: torch.tanh(i[0]),
        "LeakyRelu": lambda i, a, c, n: F.leaky_relu(i[0], a.get("alpha", 0.01)),
        "HardSigmoid": lambda i, a, c, n: _hard_sigmoid(i[0], a.get("alpha", 0.2),
                                                         a.get("beta", 0.5)),
        "HardSwish": lambda i, a, c, n: i[0] * _hard_sigmoid(i[0], 1.0 / 6.0, 0.5),
        "Softmax": lambda i, a, c, n: torch.softmax(i[0], dim=a.get("axis", -1)),
        "Transpose": lambda i, a, c, n: i[0].permute(
            *a.get("perm", range(i[0].ndim - 1, -1, -1))),
        "AveragePool": avgpool,
        "BatchNormalization": batchnorm,
        "Squeeze": squeeze,
        "Unsqueeze": unsqueeze,
        "Shape": shape,
        "Gather": gather,
        "Pad": pad,
        "Slice": slice_,
        "Cast": cast,
        "Dropout": lambda i, a, c, n: i[0],  # inference: the identity
        "GlobalMaxPool": lambda i, a, c, n: i[0].amax(dim=(2, 3), keepdim=True),
    }
    return _Twin


def _dequantize_np(node: onnx.NodeProto, consts: dict[str, np.ndarray]) -> np.ndarray:
    """A constant ``DequantizeLinear`` (weights, biases) folded once, in float32."""
    q = consts[node.input[0]].astype(np.float64)
    scale = consts[node.input[1]].astype(np.float64)
    zp = consts[node.input[2]].astype(np.float64) if len(node.input) > 2 and node.input[2] \
        else np.zeros(())
    axis = _attrs(node).get("axis", 1)
    if scale.ndim == 1 and scale.size > 1:
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zp = scale.reshape(shape), (zp.reshape(shape) if zp.ndim else zp)
    return ((q - zp) * scale).astype(np.float32)


def quantized_twin(classifier: onnx.ModelProto, *, mean: Any = None, std: Any = None) -> Any:
    """``classifier`` (a QDQ ONNX model, [N, C, H, W] -> [N, K]) as a torch module in eval
    mode; ``mean`` / ``std``: a normalisation applied first (per channel)."""
    return _module_class()(classifier, mean, std).eval()


def twin_from_onnx(path: str | Path) -> Any:
    """The classifier ONNX file at ``path`` (pixels in [0, 1] -> logits; float32 or QDQ) as a
    torch module: white-box attacks on a classifier known only as a file."""
    from ..export.graph import load_onnx

    return quantized_twin(load_onnx(path))


def twin_from_detector(path: str | Path) -> Any:
    """The classifier of the rpdetect detector at ``path`` (typically INT8) as a torch module on
    pixels in [0, 1] (module doc)."""
    from ..contract import read_spec
    from ..export.graph import extract_classifier, load_onnx

    model = load_onnx(path)
    spec = read_spec(model)
    return quantized_twin(extract_classifier(model), mean=spec.mean, std=spec.std)
