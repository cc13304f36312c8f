"""Tiny classifiers and ONNX Runtime shortcuts for tests and smoke checks (like numpy.testing).

A torch CNN for the dynamo exporter (needs torch), and plain ONNX classifiers written with
onnx.helper, as a TensorFlow or other exporter would hand them to us."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Union

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from .engine.session import SessionBuilder

if TYPE_CHECKING:
    import torch

ModelOrPath = Union[onnx.ModelProto, str, Path]


def torch_cnn(channels: int, classes: int, seed: int) -> "torch.nn.Module":
    """A random CNN (Conv, BatchNorm, ReLU, AdaptiveAvgPool, Linear) in eval mode."""
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(channels, 8, 3, stride=2, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(64, classes),
    ).eval()


def plain_classifier(
    *, channels: int = 3, size: int = 32, classes: int = 10, seed: int = 0, opset: int = 17,
    batch: int | str = "N", input_name: str = "input", output_name: str = "output",
) -> onnx.ModelProto:
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm, random weights, by onnx.helper."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.5, (16, channels, 3, 3)).astype(np.float32)
    b = rng.normal(0, 0.1, (16,)).astype(np.float32)
    fc = rng.normal(0, 1.0, (classes, 16)).astype(np.float32)
    fcb = rng.normal(0, 0.1, (classes,)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", [input_name, "w", "b"], ["c"], pads=[1, 1, 1, 1],
                             strides=[2, 2]),
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("GlobalAveragePool", ["r"], ["g"]),
            helper.make_node("Flatten", ["g"], ["f"]),
            helper.make_node("Gemm", ["f", "fc", "fcb"], [output_name], transB=1),
        ],
        "plain",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT,
                                       [batch, channels, size, size])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [batch, classes])],
        initializer=[numpy_helper.from_array(a, n)
                     for a, n in ((w, "w"), (b, "b"), (fc, "fc"), (fcb, "fcb"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def flatten_classifier(channels: int = 3, size: int = 32, opset: int = 17) -> onnx.ModelProto:
    """'Logits' = the pixels themselves, so d = Z(x) - Z(x~_i) is minus the scaled noise."""
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["y"], axis=1)],
        "flatten",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", channels, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", channels * size * size])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def session(model_or_path: ModelOrPath) -> ort.InferenceSession:
    """A CPU session as ``rpdetect.Detector`` opens it (``rpdetect.engine.session``)."""
    return SessionBuilder.cpu().build(model_or_path).session


def run(model_or_path: ModelOrPath, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every output of one CPU run, by name."""
    s = session(model_or_path)
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, feed)))


def classifier_fn(model_or_path: ModelOrPath) -> Callable[[np.ndarray], np.ndarray]:
    """The classifier as a function [N, C, H, W] -> [N, K] (first input, first output)."""
    s = session(model_or_path)
    name = s.get_inputs()[0].name
    return lambda x: s.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]


def tiny_torch_cnn() -> "torch.nn.Module":
    """Factory for ``rpdetect export-classifier --model rpdetect.testing:tiny_torch_cnn``:
    a random 3-channel, 10-class CNN (fixed seed)."""
    return torch_cnn(3, 10, seed=0)


CHANNEL_MEAN_SCALE = 100.0


def channel_mean_classifier() -> "torch.nn.Module":
    """Factory for evaluation tests (``--torch rpdetect.testing:channel_mean_classifier``): a
    3-class classifier whose logits are ``CHANNEL_MEAN_SCALE`` x the mean of each colour
    channel, so class c is "channel c is the brightest on average" and its decision boundary is
    known exactly (no training)."""
    import torch

    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(3, 3))
    with torch.no_grad():
        model[2].weight.copy_(torch.eye(3) * CHANNEL_MEAN_SCALE)
        model[2].bias.zero_()
    return model.eval()


def channel_mean_onnx(size: int = 16, opset: int = 17) -> onnx.ModelProto:
    """``channel_mean_classifier`` as an ONNX file written by onnx.helper: GlobalAveragePool ->
    Flatten -> x * scale, [N, 3, size, size] -> [N, 3]."""
    scale = numpy_helper.from_array(np.array(CHANNEL_MEAN_SCALE, np.float32), "scale")
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["x"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
         helper.make_node("Mul", ["flat", "scale"], ["logits"])],
        "channel_mean",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        initializer=[scale],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def channel_tint_images(count: int, label: int, *, size: int = 16, tint: float = 0.04,
                        seed: int = 0) -> np.ndarray:
    """uint8 RGB images [count, size, size, 3] that ``channel_mean_classifier`` labels
    ``label``: grey 0.45 plus ``tint`` in channel ``label`` plus per-pixel texture (std 0.08)."""
    rng = np.random.default_rng([seed, label])
    x = 0.45 + rng.normal(0.0, 0.08, (count, size, size, 3))
    x[..., label] += tint
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def assert_standard_normal(x: np.ndarray) -> None:
    """AssertionError unless ``x`` looks i.i.d. N(0, 1): mean within 5 standard errors of 0,
    std within 1% of 1, and the empirical CDF within 5 standard errors of N(0, 1)'s at
    -2 ... 2."""
    import math

    x = np.asarray(x, dtype=np.float64).ravel()
    assert abs(x.mean()) < 5 / np.sqrt(x.size), f"mean {x.mean():.5f}"
    assert abs(x.std() - 1.0) < 0.01, f"std {x.std():.5f}"
    for q in (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0):
        phi = 0.5 * (1 + math.erf(q / math.sqrt(2)))
        got = float((x < q).mean())
        assert abs(got - phi) < 5 * math.sqrt(phi * (1 - phi) / x.size), f"P(x < {q}) {got:.5f}"


# setup.py's flags for rpdetect.engine._normal (ISO C: no FMA contraction, so every build rounds
# alike)
NORMAL_CFLAGS: tuple[str, ...] = ("-O3", "-fno-math-errno", "-std=c99")

# the ISAs the C noise generator is built for (target_clones in rpdetect/engine/_normal.c), as
# GCC flags, and the /proc/cpuinfo flag a CPU needs to run each
NORMAL_ISAS: dict[str, tuple[tuple[str, ...], str]] = {
    "sse2": ((), "sse2"),
    "avx2": (("-mavx2",), "avx2"),
    "avx512f": (("-mavx512f",), "avx512f"),
}


def build_normal(isa: str, workdir: Union[str, Path], source: Union[str, Path, None] = None,
                 compiler: str = "gcc") -> object:
    """Build ``rpdetect.engine._normal`` (or another version of it, ``source``) for one x86 ISA of
    :data:`NORMAL_ISAS`, with no runtime dispatch (``-DRP_NO_CLONES``), into ``workdir``, and
    import it. RuntimeError where it does not compile (no compiler, no Python headers)."""
    import subprocess
    import sysconfig

    flags, _ = NORMAL_ISAS[isa]
    src = Path(source) if source is not None else \
        Path(__file__).resolve().parent / "engine" / "_normal.c"
    if not src.is_file():
        raise RuntimeError(f"{src}: no such source file (an installed wheel has no C sources: "
                           "use a source checkout)")
    out = Path(workdir) / isa / f"_normal{sysconfig.get_config_var('EXT_SUFFIX')}"
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [compiler, "-shared", "-fPIC", *NORMAL_CFLAGS, "-DRP_NO_CLONES", *flags,
           f"-I{sysconfig.get_paths()['include']}", str(src), "-o", str(out)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except OSError as exc:
        raise RuntimeError(f"{compiler}: {exc}") from exc
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return load_normal(out)


def load_normal(path: Union[str, Path]) -> object:
    """Import a build of ``rpdetect.engine._normal`` from its file (one :func:`build_normal`
    made), beside the installed one."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_normal", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"{path}: not an extension module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
