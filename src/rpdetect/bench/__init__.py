"""Latency benchmark: the fused detector against its batch-(n+1) floor and the naive way.

``run_benchmark(detector, ...) -> Report`` (``suite.py``); ``rpdetect bench`` (``cli.py``);
configurations (``cases.py``) timed in worker processes (``worker.py``) interleaved in rounds
(``runner.py``); an ONNX Runtime profile grouped by what the nodes do (``profile.py``).
"""

from .cases import Case, SessionSettings, TorchModel
from .profile import ProfileBreakdown
from .providers import ProviderVariant, SkippedVariant, plan_variants
from .report import Ratio, Report, Targets
from .runner import QUICK, CaseOutcome, Timing, run_cases
from .stats import Stats, summarise
from .suite import run_benchmark

__all__ = [
    "Case", "CaseOutcome", "ProfileBreakdown", "ProviderVariant", "QUICK", "Ratio", "Report",
    "SessionSettings", "SkippedVariant", "Stats", "Targets", "Timing", "TorchModel",
    "plan_variants", "run_benchmark", "run_cases", "summarise",
]
