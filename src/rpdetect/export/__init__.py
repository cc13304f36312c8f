"""Export: PyTorch -> classifier ONNX (``torch_export``, needs torch) and any classifier ONNX ->
detector ONNX (``graph``, needs only onnx)."""

from .graph import (
    DetectorConfig,
    build_detector,
    export_detector,
    extract_classifier,
    load_onnx,
    save_onnx,
    with_thresholds,
)
from .metadata import DetectorInfo, read_info

__all__ = [
    "DetectorConfig",
    "DetectorInfo",
    "build_detector",
    "export_detector",
    "extract_classifier",
    "load_onnx",
    "read_info",
    "save_onnx",
    "with_thresholds",
]
