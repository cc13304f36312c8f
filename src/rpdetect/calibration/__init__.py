"""Calibration: thresholds from clean images (``Calibrator``: ``collect`` then ``compute``), the
image sources it reads (``reader``), the threshold rules (``thresholds``), and ``calibrate_file``
which writes a calibrated detector with its report."""

from .calibrate import CalibrationResult, Calibrator, Failure, calibrate_file
from .reader import ArrayReader, FolderReader, ImageReader, IterableReader, as_reader
from .thresholds import CalibrationMode, Rates, Summary, joint_thresholds, per_score_thresholds

__all__ = [
    "ArrayReader",
    "CalibrationMode",
    "CalibrationResult",
    "Calibrator",
    "Failure",
    "FolderReader",
    "ImageReader",
    "IterableReader",
    "Rates",
    "Summary",
    "as_reader",
    "calibrate_file",
    "joint_thresholds",
    "per_score_thresholds",
]
