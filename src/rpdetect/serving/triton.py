"""A Triton Inference Server model repository for one detector file.

``write_repository(detector, repo)`` writes ``REPO/NAME/1/model.onnx`` (the detector, byte for
byte) and ``REPO/NAME/config.pbtxt``: platform ``onnxruntime_onnx``, ``max_batch_size: 0`` (the
graph's batch is fixed and the batch of n + 1 is inside it, so Triton must not add a batch
dimension), every input and output of the file with its data type and full dims, the threshold
inputs ``optional`` (they are initializers a request may override), an ``instance_group``, and,
when asked, ONNX Runtime's TensorRT execution accelerator (FP16 only when asked for).

The IO is read from the ONNX file itself (graph inputs, outputs, initializers), so the config
says what the file declares. Nothing here needs Triton or ``tritonclient``.
"""

from __future__ import annotations

import errno
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import onnx
from onnx import TensorProto

from .._atomic import atomic_paths, check_output, check_output_dir
from ..contract import load_model
from ..engine import Detector
from ..errors import ModelError, OutputError

__all__ = ["ACCELERATORS", "Accelerator", "RepositoryFiles", "TensorConfig", "check_model_name",
           "check_options", "config_text", "detector_tensors", "other_versions",
           "write_repository"]

Accelerator = Literal["none", "cuda", "tensorrt"]
ACCELERATORS: tuple[str, ...] = ("none", "cuda", "tensorrt")
PLATFORM = "onnxruntime_onnx"
MODEL_FILENAME = "model.onnx"
VERSION = "1"
# ONNX element type -> Triton's model_config.proto DataType name
TRITON_TYPES: dict[int, str] = {
    TensorProto.FLOAT: "TYPE_FP32", TensorProto.FLOAT16: "TYPE_FP16",
    TensorProto.DOUBLE: "TYPE_FP64", TensorProto.UINT8: "TYPE_UINT8",
    TensorProto.INT8: "TYPE_INT8", TensorProto.INT32: "TYPE_INT32",
    TensorProto.INT64: "TYPE_INT64", TensorProto.BOOL: "TYPE_BOOL",
}
# Triton model names are folder names; keep them to what every file system and URL takes
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class TensorConfig:
    """One ``input`` / ``output`` entry: ``dims`` as Triton takes them (-1: variable). A scalar
    in the graph is ``dims: [1]`` with ``reshape: { shape: [] }`` (Triton's way for 0-d)."""

    name: str
    data_type: str
    dims: tuple[int, ...]
    scalar: bool = False
    optional: bool = False


@dataclass(frozen=True)
class RepositoryFiles:
    """What ``write_repository`` wrote."""

    model_dir: Path
    model: Path
    config: Path
    name: str


def _tensor(value: onnx.ValueInfoProto, *, optional: bool) -> TensorConfig:
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        raise ModelError(f"{value.name}: a {kind} value; Triton's ONNX backend takes tensors")
    elem = value.type.tensor_type.elem_type
    if elem not in TRITON_TYPES:
        known = sorted(TensorProto.DataType.Name(t) for t in TRITON_TYPES)
        raise ModelError(f"{value.name}: element type {TensorProto.DataType.Name(elem)} has no "
                         f"Triton data type here (expected one of {known})")
    shape = value.type.tensor_type.shape
    dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in shape.dim)
    scalar = len(dims) == 0
    return TensorConfig(value.name, TRITON_TYPES[elem], (1,) if scalar else dims,
                        scalar=scalar, optional=optional)


def detector_tensors(model: onnx.ModelProto) -> tuple[list[TensorConfig], list[TensorConfig]]:
    """The config's inputs and outputs for a detector graph, in the file's order. Graph inputs
    backed by an initializer (the thresholds) are optional: Triton's ONNX Runtime backend then
    uses the stored value when a request leaves them out."""
    initializers = {i.name for i in model.graph.initializer}
    inputs = [_tensor(v, optional=v.name in initializers) for v in model.graph.input]
    outputs = [_tensor(v, optional=False) for v in model.graph.output]
    return inputs, outputs


def _check_single_file(model: onnx.ModelProto, path: Path) -> None:
    external = [i.name for i in model.graph.initializer
                if i.data_location == TensorProto.EXTERNAL]
    if external:
        raise ModelError(f"{path}: keeps {len(external)} initializer(s) in external data files "
                         f"(e.g. {external[0]!r}); a Triton model.onnx is copied alone: save the "
                         f"detector with its weights inside (`rpdetect export` does)")


def _dims(values: Sequence[int]) -> str:
    return "[ " + ", ".join(str(v) for v in values) + " ]"


def _tensor_text(t: TensorConfig) -> str:
    lines = [f'    name: "{t.name}"', f"    data_type: {t.data_type}", f"    dims: {_dims(t.dims)}"]
    if t.scalar:
        lines.append("    reshape: { shape: [ ] }")
    if t.optional:
        lines.append("    optional: true")
    return "  {\n" + "\n".join(lines) + "\n  }"


def _accelerator_text(accelerator: Accelerator, fp16: bool) -> list[str]:
    if accelerator != "tensorrt":
        return []
    precision = "FP16" if fp16 else "FP32"
    return [
        "optimization {",
        "  execution_accelerators {",
        "    gpu_execution_accelerator: [",
        "      {",
        '        name: "tensorrt"',
        f'        parameters {{ key: "precision_mode" value: "{precision}" }}',
        '        parameters { key: "max_workspace_size_bytes" value: "1073741824" }',
        "      }",
        "    ]",
        "  }",
        "}",
    ]


def config_text(name: str, inputs: Sequence[TensorConfig], outputs: Sequence[TensorConfig], *,
                instances: int = 1, accelerator: Accelerator = "none", fp16: bool = False) -> str:
    """``config.pbtxt`` in protobuf text format (Triton's ``inference.ModelConfig``)."""
    kind = "KIND_CPU" if accelerator == "none" else "KIND_GPU"
    lines = [
        f'name: "{name}"',
        f'platform: "{PLATFORM}"',
        "max_batch_size: 0",
        "input [\n" + ",\n".join(_tensor_text(t) for t in inputs) + "\n]",
        "output [\n" + ",\n".join(_tensor_text(t) for t in outputs) + "\n]",
        f"instance_group [ {{ count: {instances} kind: {kind} }} ]",
        *_accelerator_text(accelerator, fp16),
    ]
    return "\n".join(lines) + "\n"


def check_model_name(name: str) -> str:
    """A Triton model name: one folder name of letters, digits, ``_ . -`` (ValueError else)."""
    if not _NAME.fullmatch(name) or name in (".", ".."):
        raise ValueError(f"model name {name!r}: expected letters, digits, '_', '.' or '-' "
                         f"(it becomes a folder of the repository and part of the URL), not "
                         f"starting with '.' or '-'")
    return name


def check_options(instances: int, accelerator: str, fp16: bool) -> None:
    """ValueError naming the option that is wrong."""
    if isinstance(instances, bool) or not isinstance(instances, int) or instances < 1:
        raise ValueError(f"instances: expected an integer >= 1, got {instances!r}")
    if accelerator not in ACCELERATORS:
        raise ValueError(f"accelerator: expected one of {ACCELERATORS}, got {accelerator!r}")
    if fp16 and accelerator != "tensorrt":
        raise ValueError("fp16: only TensorRT's accelerator takes a precision; ask for "
                         "accelerator 'tensorrt' with it")


def _model_dir(repo: Path, name: str) -> Path:
    model_dir = repo / name
    for folder in (model_dir, model_dir / VERSION):
        if folder.exists() and not folder.is_dir():
            raise OutputError(errno.ENOTDIR, f"{folder}: exists and is not a folder; remove it "
                                             f"or choose another --name")
        folder.mkdir(exist_ok=True)
    return model_dir


def write_repository(detector: str | Path, repo: str | Path, *, name: str | None = None,
                     instances: int = 1, accelerator: Accelerator = "none",
                     fp16: bool = False) -> RepositoryFiles:
    """Write ``repo/name/1/model.onnx`` and ``repo/name/config.pbtxt`` for a detector file
    (``name`` defaults to the file's stem). ``repo`` is created if its parent exists. The two
    files are written together atomically: on any failure the previous ones, if any, are left
    as they were. The detector is checked first by opening it as ``rpdetect.Detector`` on the
    CPU (ModelError for a file that is not an rpdetect detector)."""
    source = Path(detector)
    check_options(instances, accelerator, fp16)
    name = check_model_name(name if name is not None else source.stem)
    Detector(source, providers=["cpu"]).close()  # the engine's own checks, same messages
    model = load_model(source, weights=False)
    _check_single_file(model, source)
    inputs, outputs = detector_tensors(model)
    del model
    text = config_text(name, inputs, outputs, instances=instances, accelerator=accelerator,
                       fp16=fp16)
    root = check_output_dir(repo, what="model repository")
    model_dir = _model_dir(root, name)
    model_path = check_output(model_dir / VERSION / MODEL_FILENAME, what="model",
                              inputs=[source])
    config_path = check_output(model_dir / "config.pbtxt", what="config")
    with atomic_paths(model_path, config_path) as (tmp_model, tmp_config):
        shutil.copyfile(source, tmp_model)
        tmp_config.write_text(text, encoding="utf-8")
    return RepositoryFiles(model_dir, model_path, config_path, name)


def other_versions(files: RepositoryFiles) -> list[str]:
    """Version folders beside ours: Triton's default policy serves the highest number."""
    return sorted(p.name for p in files.model_dir.iterdir()
                  if p.is_dir() and p.name.isdigit() and p.name != VERSION)

