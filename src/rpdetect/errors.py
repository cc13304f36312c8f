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


class OutputError(RpdetectError, OSError):
    """A file cannot be written where asked (folder missing or read-only, name too long, a folder
    in the way, the input itself), or its writing failed; the previous file is left intact."""

    def __str__(self) -> str:
        return self.strerror if self.strerror is not None else super().__str__()
