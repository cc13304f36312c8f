"""Exceptions that name what was wrong and where."""

from __future__ import annotations


class RpdetectError(Exception):
    """Base class of rpdetect's errors."""


class ModelError(RpdetectError, ValueError):
    """A model file is not ONNX, or its inputs/outputs do not fit what rpdetect needs."""


class InputError(RpdetectError, ValueError):
    """An image or feed has the wrong rank, shape, channel count, dtype or values."""


class ProviderError(RpdetectError, ValueError):
    """An execution provider was requested that ONNX Runtime cannot give."""
