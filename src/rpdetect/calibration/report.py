"""What a calibration leaves next to the calibrated model: a JSON report and a histogram of the
two clean score distributions with the thresholds marked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_path, atomic_paths, atomic_write_text, check_distinct, check_output

__all__ = ["check_report_paths", "default_paths", "save_calibrated", "write_histogram",
           "write_json"]


def default_paths(out_path: str | Path) -> tuple[Path, Path]:
    """``OUT.onnx`` -> (``OUT.calibration.json``, ``OUT.calibration.png``), next to the model."""
    out = Path(out_path)
    return out.with_suffix(".calibration.json"), out.with_suffix(".calibration.png")


def check_report_paths(detector: Path, out: Path, report: str | Path, histogram: str | Path
                       ) -> tuple[Path, Path]:
    """The report and histogram paths, after checking that the calibrated model, the report and
    the histogram can all be written (``check_output``), differ from each other and from the
    input detector: ``OutputError`` before any image is scored otherwise."""
    check_output(out, what="output", inputs=[detector])
    report = check_output(report, what="report", inputs=[detector])
    histogram = check_output(histogram, what="histogram", inputs=[detector])
    check_distinct([("output", out), ("report", report), ("histogram", histogram)])
    return report, histogram


def save_calibrated(model: Any, out: Path, report: dict[str, Any], report_path: Path, *,
                    histogram_path: Path | None, scores: tuple[np.ndarray, np.ndarray],
                    thresholds: tuple[float, float], title: str) -> None:
    """The calibrated model, its JSON report and (unless ``histogram_path`` is None) the
    histogram, all written to temporary files first and moved into place together: an
    interruption leaves either the old files or the new set, never a model without its report."""
    import onnx

    paths = [out, report_path] + ([histogram_path] if histogram_path is not None else [])
    text = json.dumps(report, indent=2, allow_nan=False) + "\n"
    with atomic_paths(*paths) as temps:
        onnx.save(model, str(temps[0]))
        temps[1].write_text(text, encoding="utf-8")
        if histogram_path is not None:
            figure = _histogram_figure(scores[0], scores[1], threshold1=thresholds[0],
                                       threshold2=thresholds[1], title=title)
            figure.savefig(str(temps[2]), dpi=100, format="png")


def write_json(report: dict[str, Any], path: str | Path) -> Path:
    """Strict JSON (no NaN/Infinity tokens), written atomically; the folder must exist."""
    return atomic_write_text(path, json.dumps(report, indent=2, allow_nan=False) + "\n")


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
    Uses matplotlib's object API (no pyplot state), rendered by Agg; written atomically."""
    fig = _histogram_figure(score1_max, score2_max, threshold1=threshold1,
                            threshold2=threshold2, title=title)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(str(tmp), dpi=100, format="png")
    return path


def _histogram_figure(score1_max: np.ndarray, score2_max: np.ndarray, *, threshold1: float,
                      threshold2: float, title: str) -> Any:
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
    return fig
