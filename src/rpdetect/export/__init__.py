"""Export: PyTorch -> classifier ONNX (``torch_export``, needs torch) and any classifier ONNX ->
detector ONNX (``graph``, needs only onnx). What a detector file holds is stated in
``rpdetect.contract``; the names below that come from there are re-exported for convenience."""

from ..contract import DetectorConfig, DetectorSpec, read_spec, with_thresholds
from .graph import build_detector, export_detector, extract_classifier, load_onnx, save_onnx

__all__ = [
    "DetectorConfig",
    "DetectorSpec",
    "build_detector",
    "export_detector",
    "extract_classifier",
    "load_onnx",
    "read_spec",
    "save_onnx",
    "with_thresholds",
]
