"""rpdetect: adversarial-example detection by random pixel-space perturbation (Griveau, Jiang,
Melnyk), fused into one ONNX graph and run on ONNX Runtime."""

from ._version import __version__
from .errors import InputError, ModelError, ProviderError, RpdetectError

__all__ = ["__version__", "InputError", "ModelError", "ProviderError", "RpdetectError"]

try:  # the engine is optional while it is being built; export works without it
    from .engine import Detector, DetectionResult  # noqa: F401

    __all__ += ["Detector", "DetectionResult"]
except ImportError:  # pragma: no cover
    pass
