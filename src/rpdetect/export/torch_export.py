"""PyTorch module -> classifier ONNX whose input is RGB pixel space in [0, 1].

The paper adds noise in pixel space, so the normalisation the model expects is folded into the
exported graph: the ONNX input is x in [0, 1] and the graph computes model((x - mean) / std).
Needs the ``export`` extra (torch, onnxscript, onnx-ir).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

from .._atomic import atomic_path, check_output
from ..errors import ModelError
from ..contract import check_normalisation
from .graph import MAX_GRAPH_NOISE_OPSET

DEFAULT_OPSET = 20  # 18-21 work; >= 22 exports RandomNormalLike-22, which ORT cannot run
MIN_EXPORT_OPSET = 18  # the dynamo exporter's oldest

__all__ = ["DEFAULT_OPSET", "load_factory", "load_module", "state_dict_digest", "torch_to_onnx"]


def state_dict_digest(module: Any, h: "hashlib._Hash | None" = None) -> "hashlib._Hash":
    """SHA-256 over a module's state_dict (names and raw values, in name order), continuing
    ``h`` when given: the key under which exports of these weights are cached."""
    h = h if h is not None else hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h


def load_factory(spec: str) -> Callable[..., Any]:
    """Resolve ``package.module:factory`` to a callable."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"model factory {spec!r}: expected the form package.module:factory")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"model factory {spec!r}: cannot import {module_name!r} ({exc})") from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"model factory {spec!r}: {module_name!r} has no attribute {part!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"model factory {spec!r}: {attr!r} is not callable")
    return obj


def load_module(spec: str, weights: str | Path | None = None) -> Any:
    """Build the module from its factory and, if given, load a state_dict with weights_only=True."""
    import torch

    module = load_factory(spec)()
    if not isinstance(module, torch.nn.Module):
        raise ValueError(f"model factory {spec!r} returned {type(module).__name__}, not an nn.Module")
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise ModelError(f"{path}: no such weights file")
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ModelError(
                f"{path}: cannot load as a state_dict with weights_only=True ({exc})"
            ) from exc
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        try:
            module.load_state_dict(state)
        except Exception as exc:
            raise ModelError(f"{path}: weights do not fit {spec!r}: {exc}") from exc
    return module.eval()


def _normalised(module: Any, mean: Sequence[float] | None, std: Sequence[float] | None,
                channels: int) -> Any:
    import torch

    check_normalisation(mean, std, channels)
    if mean is None or std is None:
        return module

    class PixelSpace(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = module
            for name, vec in (("mean", mean), ("std", std)):
                self.register_buffer(
                    name, torch.tensor(list(vec), dtype=torch.float32).view(1, -1, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner((x - self.mean) / self.std)

    return PixelSpace().eval()


@contextlib.contextmanager
def _quiet_exporter():
    """The dynamo exporter logs a line per torchvision op it cannot find and a pytree
    FutureWarning; neither concerns a classifier export, so keep them off the user's screen."""
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            yield
    finally:
        logger.setLevel(level)


def torch_to_onnx(
    module: Any,
    output: str | Path,
    *,
    input_shape: Sequence[int],
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Export ``module`` (normalised input -> logits) as a pixel-space classifier ONNX with a
    dynamic batch axis, input ``pixels`` [N, C, H, W], output ``logits`` [N, K], weights inside
    the one file. Uses the dynamo exporter."""
    import onnx
    import torch

    if len(input_shape) != 3 or any(int(v) < 1 for v in input_shape):
        raise ValueError(f"input_shape: expected C, H, W > 0, got {tuple(input_shape)}")
    if not MIN_EXPORT_OPSET <= opset <= MAX_GRAPH_NOISE_OPSET:
        raise ValueError(
            f"opset {opset}: use {MIN_EXPORT_OPSET}-{MAX_GRAPH_NOISE_OPSET} (the dynamo exporter "
            f"starts at {MIN_EXPORT_OPSET}; ONNX Runtime cannot run RandomNormalLike from opset "
            f"22); default {DEFAULT_OPSET}"
        )
    c, h, w = (int(v) for v in input_shape)
    wrapped = _normalised(module.eval(), mean, std, c)
    example = (torch.rand(2, c, h, w),)
    output = check_output(output, what="classifier")
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad(), _quiet_exporter():
        tmp_path = Path(tmp) / "classifier.onnx"
        program = torch.onnx.export(
            wrapped,
            example,
            dynamo=True,
            opset_version=opset,
            input_names=["pixels"],
            output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            external_data=False,
            verbose=False,
        )
        program.save(str(tmp_path), external_data=False)
        model = onnx.load(str(tmp_path), load_external_data=True)
    model.graph.name = "classifier"
    onnx.checker.check_model(model, full_check=True)
    with atomic_path(output) as tmp:
        onnx.save(model, str(tmp))
    return output
