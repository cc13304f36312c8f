"""The paper's evaluation (Table 1, Figures 2 and 3): white-box Foolbox attacks on a torch
classifier and black-box, query-based attacks on an ONNX file (``blackbox.py``), detection
metrics, the image sources (the shared datasets' presets, a user's folders), and the one
pipeline behind ``rpdetect evaluate`` and ``benchmarks/paper_*.py``. Needs the ``eval`` extra
(torch, foolbox, matplotlib)."""

from .metrics import AttackMetrics, DetectionMetrics, attack_metrics, detection_metrics, roc_auc

__all__ = ["AttackMetrics", "DetectionMetrics", "attack_metrics", "detection_metrics", "roc_auc"]
