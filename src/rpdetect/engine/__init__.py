"""Engine: run a detector ONNX file on ONNX Runtime (providers, image decoding, batching)."""

from .detector import BatchReport, DetectionResult, Detector, Failure, TensorSpec
from .images import load_image
from .providers import PROVIDERS, ProviderPlan, resolve_providers
from .session import BuiltSession, ProviderNotStarted, SessionBuilder

__all__ = [
    "BatchReport",
    "BuiltSession",
    "DetectionResult",
    "Detector",
    "Failure",
    "PROVIDERS",
    "ProviderNotStarted",
    "ProviderPlan",
    "SessionBuilder",
    "TensorSpec",
    "load_image",
    "resolve_providers",
]
