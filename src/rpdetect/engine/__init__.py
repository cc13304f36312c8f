"""Engine: run a detector ONNX file on ONNX Runtime (providers, image decoding, batching)."""

from .detector import BatchReport, DetectionResult, Detector, Failure, TensorSpec
from .images import load_image
from .providers import PROVIDERS, ProviderPlan, resolve_providers

__all__ = [
    "BatchReport",
    "DetectionResult",
    "Detector",
    "Failure",
    "PROVIDERS",
    "ProviderPlan",
    "TensorSpec",
    "load_image",
    "resolve_providers",
]
