"""The paper's evaluation (Table 1, Figures 2 and 3): Foolbox attacks, detection metrics, the
shared datasets, and the pipeline behind ``rpdetect evaluate`` and ``benchmarks/paper_*.py``.
Needs the ``eval`` extra (torch, foolbox, matplotlib)."""

from .metrics import AttackMetrics, DetectionMetrics, attack_metrics, detection_metrics, roc_auc

__all__ = ["AttackMetrics", "DetectionMetrics", "attack_metrics", "detection_metrics", "roc_auc"]
