"""What a calibration leaves next to the calibrated model: a JSON report and a histogram of the
two clean score distributions with the thresholds marked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["default_paths", "write_histogram", "write_json"]


def default_paths(out_path: str | Path) -> tuple[Path, Path]:
    """``OUT.onnx`` -> (``OUT.calibration.json``, ``OUT.calibration.png``), next to the model."""
    out = Path(out_path)
    return out.with_suffix(".calibration.json"), out.with_suffix(".calibration.png")


def write_json(report: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def write_histogram(
    score1_max: np.ndarray,
    score2_max: np.ndarray,
    *,
    threshold1: float,
    threshold2: float,
    title: str,
    path: str | Path,
) -> Path:
    """Two panels (score1_max, score2_max): histogram of the clean scores, threshold as a line.
    Uses matplotlib's object API (no pyplot state), rendered by Agg."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(fig)
    panels = (
        ("score1_max", "std over classes of Z(x) - Z(x~_i) (Eq. 5)", score1_max, threshold1),
        ("score2_max", "L1 of softmax Z(x) - softmax Z(x~_i) (Eq. 6)", score2_max, threshold2),
    )
    for ax, (name, what, scores, threshold) in zip(fig.subplots(1, 2), panels):
        s = np.asarray(scores, dtype=np.float64)
        n_bins = int(np.clip(len(s) // 5, 10, 60))
        # Softmax differences of confident classifiers span decades: log axis when they do.
        log = bool(s.min() > 0 and s.max() / s.min() > 1e3)
        bins = np.geomspace(s.min(), s.max(), n_bins + 1) if log else n_bins
        ax.hist(s, bins=bins, color="tab:blue", alpha=0.8, label=f"clean (n={len(s)})")
        if log:
            ax.set_xscale("log")
        flagged = float(np.mean(s > threshold))
        ax.axvline(threshold, color="tab:red", linestyle="--",
                   label=f"threshold {threshold:.4g} ({flagged:.1%} above)")
        ax.set_title(f"{name}\n{what}", fontsize=9)
        ax.set_xlabel(name)
        ax.set_ylabel("images")
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(path), dpi=100)
    return path
