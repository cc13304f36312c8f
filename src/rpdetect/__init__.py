"""rpdetect: adversarial-example detection by random pixel-space perturbation (Griveau, Jiang,
Melnyk), fused into one ONNX graph and run on ONNX Runtime."""

from ._version import __version__
from .engine import BatchReport, DetectionResult, Detector, Failure
from .errors import InputError, ModelError, ProviderError, RpdetectError

__all__ = [
    "__version__",
    "BatchReport",
    "DetectionResult",
    "Detector",
    "Failure",
    "InputError",
    "ModelError",
    "ProviderError",
    "RpdetectError",
]
