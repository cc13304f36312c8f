"""Quantization-aware refinement of a QDQ classifier: its integer weights and biases nudged so
that its logits follow the FP32 classifier's on clean calibration images and their noisy copies.

Post-training quantization rounds every weight to the nearest integer step and takes the
activation ranges as measured; the rounding errors of 4 M weights add up, and on ImageNette's
EfficientNet-Lite0 5.6% of clean labels differ between the INT8 and the FP32 classifier (README,
section INT8). ``refine_quantized`` is the short quantization-aware fine-tuning step that
follows post-training quantization in AdaRound (Nagel et al. 2020) or BRECQ (Li et al. 2021),
here as distillation on the images the ranges came from:

- the student is the QDQ graph interpreted in torch (``rpdetect.evaluation.quantized_twin``):
  ONNX Runtime's integer arithmetic forward, straight-through rounding backward;
- trained: each fused integer convolution's weights (in integer steps, rounded
  straight-through and clamped to int8, or to the reduced range the weights were quantized
  to, in the forward pass) and biases (in steps of the layer's output scale), and the float32
  layers' weights and biases (the head rpdetect keeps float32), each in units of its own mean
  magnitude; the scales and zero points stay as ONNX Runtime calibrated them, so the file
  keeps its structure, its speed and its ranges;
- the teacher is the FP32 classifier in ONNX Runtime, fed the same batches: one clean image and
  its n noisy copies (``InnerBatchReader.batch``: the detector's kappas, fresh noise each
  step);
- the loss: the mean squared difference of the logits plus that of the logit differences
  Z(x) - Z(x~_i) (what score1 and score2 are made of); Adam, the learning rate falling as a
  cosine to 0: ``lr`` for the integer weights (in integer steps: 0.02 moves a weight across a
  rounding boundary only when the gradient keeps pushing it there for tens of steps), ``lr *
  other_lr`` for the biases and float layers. Chosen on ImageNette's EfficientNet-Lite0 by
  ``python benchmarks/int8_refine_lr.py 300 LR OTHER_LR`` (300 steps on the 100 quantization
  images, logits compared on 120 other clean calibration images; ``300 0.02 0.25``: median
  squared logit error to FP32 0.0153 -> 0.0068, labels agreeing 113 -> 117 of 120, re-run at
  15:12 UTC): weights at 0.04, or biases and float layers at 0.05, made the logits
  worse than no refinement; 0.02 and 0.005 more than halved the held-out squared error, and
  nearly all of that came from the biases and the float head (weights at 0.01 moved 53 of
  3.3 M integers and did as well).

Only clean images are used, the ones the ranges came from; nothing adversarial.
``benchmarks/int8_fidelity.py`` measures the result on held-out clean images.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import ModelError
from .quantize import WEIGHTED_OPS

__all__ = ["RefineReport", "refine_quantized"]

@dataclass(frozen=True)
class RefineReport:
    """What a refinement did: ``loss_first`` / ``loss_last``: the mean loss of the first and
    last tenth of the steps; ``changed``: integer weights moved off their post-training value
    (of ``weights``)."""

    steps: int
    seconds: float
    loss_first: float
    loss_last: float
    changed: int
    weights: int
    float_params: int

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "seconds": round(self.seconds, 1),
                "loss_first": round(self.loss_first, 6), "loss_last": round(self.loss_last, 6),
                "changed": self.changed, "weights": self.weights,
                "float_params": self.float_params}


def _float_weights(model: onnx.ModelProto, twin: Any) -> list[str]:
    """Float32 initializers read as the weight or bias of a weighted layer (the float head)."""
    inits = {t.name: t for t in model.graph.initializer}
    names: list[str] = []
    for node in model.graph.node:
        if node.op_type not in WEIGHTED_OPS:
            continue
        for name in node.input[1:3]:
            t = inits.get(name)
            if t is not None and t.data_type == onnx.TensorProto.FLOAT \
                    and name not in twin.folded and name not in names:
                names.append(name)
    return names


def refine_quantized(
    quantized: onnx.ModelProto,
    teacher: onnx.ModelProto,
    images: Sequence[np.ndarray],
    batch: Callable[[np.ndarray], np.ndarray],
    *,
    steps: int,
    lr: float = 0.01,
    images_per_step: int = 1,
    seed: int = 0,
    threads: int = 0,
    other_lr: float = 0.25,
    weight_range: tuple[int, int] = (-128, 127),
) -> tuple[onnx.ModelProto, RefineReport]:
    """``quantized`` (a QDQ classifier) with its integer weights and biases and its float32
    layers refined toward ``teacher`` (the FP32 classifier it came from, same input) over
    ``steps`` steps of ``images_per_step`` images from ``images``, each fed as ``batch(image)``
    (the image and its noisy copies, normalised as the classifier takes them). The integer
    weights stay within ``weight_range`` (ONNX Runtime's ``reduce_range``: (-64, 64), which
    u8 x s8 kernels without VNNI multiply without saturating; their learning rate is then
    ``lr * 64 / 127``, the same step in float). Module doc.
    ModelError when the graph has no integer convolution to refine."""
    import onnxruntime as ort
    import torch

    from ..evaluation.quantized_twin import quantized_twin

    if steps < 1 or not images:
        raise ValueError("refine_quantized: needs steps >= 1 and at least one image")
    low, high = weight_range
    if not -128 <= low < 0 < high <= 127:
        raise ValueError(f"refine_quantized: weight_range {weight_range} is not within int8's "
                         "(-128, 127) around 0")
    twin = quantized_twin(quantized)
    layers = twin.quantized_layers
    if not layers:
        raise ModelError("refine: the classifier has no fused integer convolution")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(teacher.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name

    def ste(v: Any) -> Any:
        return v + (torch.round(v) - v).detach()

    weights: list[Any] = []
    others: list[Any] = []
    trained: list[tuple[dict, Any, Any]] = []  # (layer, weight param, bias param or None)
    for layer in layers.values():
        pw = torch.nn.Parameter(layer["w"].detach().clone())
        pb = None
        if layer["b"] is not None:  # in steps of the output scale: b_int * mult
            pb = torch.nn.Parameter((layer["b"] * layer["mult"]).detach().clone())
        trained.append((layer, pw, pb))
        weights.append(pw)
        others += [pb] if pb is not None else []
    floats = _float_weights(quantized, twin)
    float_units = {n: float(np.mean(np.abs(twin.consts[n].numpy()))) or 1.0 for n in floats}
    float_params = {n: torch.nn.Parameter(twin.consts[n].detach().clone() / float_units[n])
                    for n in floats}
    others += list(float_params.values())

    # lr is in integer steps of a full-range weight; a reduced range's steps are twice as
    # coarse, so the same float-space step is half as many (at lr 0.05 a 7-bit refinement
    # doubled the held-out error of tests/export/test_refine.py's CNN; at 0.025 it cut it 3.5x)
    weight_lr = lr * high / 127.0
    optimizer = torch.optim.Adam([{"params": weights, "lr": weight_lr},
                                  {"params": others, "lr": lr * other_lr}])
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1.0 + math.cos(math.pi * s / steps)))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))
    losses: list[float] = []
    start = time.perf_counter()
    # the twin is this function's own: its layers are swapped for the trained tensors for good
    for step in range(steps):
        picks = [order[(step * images_per_step + j) % len(order)]
                 for j in range(images_per_step)]
        xs = [batch(images[i]) for i in picks]
        target = torch.from_numpy(np.stack([session.run(None, {feed: x})[0] for x in xs]))
        for layer, pw, pb in trained:
            layer["w"] = torch.clamp(ste(pw), float(low), float(high))
            if pb is not None:
                layer["b"] = ste(pb / layer["mult"])
        for n, p in float_params.items():
            twin.consts[n] = p * float_units[n]
        z = twin(torch.from_numpy(np.concatenate(xs))).reshape(target.shape)
        diff_z = z[:, :1] - z[:, 1:]
        diff_t = target[:, :1] - target[:, 1:]
        loss = torch.mean((z - target) ** 2) + torch.mean((diff_z - diff_t) ** 2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))

    refined = onnx.ModelProto.FromString(quantized.SerializeToString())
    inits = {t.name: t for t in refined.graph.initializer}
    changed = total = 0
    with torch.no_grad():
        for layer, pw, pb in trained:
            old = numpy_helper.to_array(inits[layer["weight"]])
            new = np.clip(np.round(pw.numpy()), low, high).astype(np.int8).reshape(old.shape)
            changed += int(np.count_nonzero(new != old))
            total += new.size
            inits[layer["weight"]].CopyFrom(numpy_helper.from_array(new, layer["weight"]))
            if pb is not None:
                old_b = numpy_helper.to_array(inits[layer["bias"]])
                new_b = np.round((pb / layer["mult"]).numpy().reshape(-1)).astype(
                    np.int64).clip(-2**31, 2**31 - 1).astype(old_b.dtype).reshape(old_b.shape)
                inits[layer["bias"]].CopyFrom(numpy_helper.from_array(new_b, layer["bias"]))
        for n, p in float_params.items():
            value = (p * float_units[n]).numpy().astype(np.float32)
            inits[n].CopyFrom(numpy_helper.from_array(value.reshape(
                numpy_helper.to_array(inits[n]).shape), n))
    tenth = max(1, steps // 10)
    report = RefineReport(steps=steps, seconds=time.perf_counter() - start,
                          loss_first=float(np.mean(losses[:tenth])),
                          loss_last=float(np.mean(losses[-tenth:])), changed=changed,
                          weights=total, float_params=sum(int(p.numel())
                                                          for p in float_params.values()))
    return refined, report
