"""Table 1 as Markdown, CSV and JSON."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Sequence

from .._atomic import atomic_path, atomic_write_text
from .attacks import AttackSpec
from .metrics import AttackMetrics
from .protocol import EvaluationResult

__all__ = ["write_report", "markdown_table"]


def _f(v: float, digits: int = 3) -> str:
    return "nan" if math.isnan(v) else f"{v:.{digits}f}"


def markdown_table(rows: Sequence[AttackMetrics], specs: dict[str, AttackSpec]) -> str:
    head = ("| attack | setting | mean L2 (paper) | used / attempted (failed) | "
            "score1 TP FP P R F2 | score2 TP FP P R F2 | combined TP FP P R F2 | "
            "AUC1 | AUC2 |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        spec = specs.get(r.attack)
        paper = f" ({spec.paper_l2:g})" if spec is not None and spec.paper_l2 is not None else ""
        cells = [
            r.attack,
            spec.describe() if spec is not None else "",
            f"{_f(r.mean_l2)}{paper}",
            f"{r.used} / {r.attempted} ({r.failed})",
            *(f"{m.tp} {m.fp} {_f(m.precision, 2)} {_f(m.recall, 2)} {_f(m.f2, 2)}"
              for m in (r.score1, r.score2, r.combined)),
            _f(r.auc1), _f(r.auc2),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _row_dict(r: AttackMetrics) -> dict[str, Any]:
    d: dict[str, Any] = {k: v for k, v in r._asdict().items()
                         if k not in ("score1", "score2", "combined")}
    for name in ("score1", "score2", "combined"):
        d[name] = getattr(r, name)._asdict()
    return d


def write_report(result: EvaluationResult, out_dir: Path, *, dataset: str, command: str,
                 specs: Sequence[AttackSpec], notes: Sequence[str] = ()) -> list[Path]:
    """``table.md``, ``table.csv`` and ``table.json`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    by_name = {s.name: s for s in specs}
    r1, r2, rc = result.calibration_rates
    header = [
        f"# {dataset}: detection of adversarial examples (paper Table 1 protocol)",
        "",
        f"Command: `{command}`",
        "",
        f"Thresholds from {result.calibration_images} clean calibration images (per-score, "
        f"fpr 0.05): threshold1 = {result.threshold1:.6g}, threshold2 = {result.threshold2:.6g}; "
        f"calibration set flagged: score1 {r1:.3f}, score2 {r2:.3f}, either {rc:.3f}.",
        "Each row: the adversarial examples (positives) and the SAME clean images (negatives) "
        "from the evaluation split. P = precision (0 when nothing is flagged), R = recall, "
        "F2 = F-beta with beta 2; AUC = rank ROC-AUC of score1_max / score2_max "
        "(beyond the paper).",
        *(f"\n{n}" for n in notes),
        "",
        markdown_table(result.rows, by_name),
        "",
    ]
    md = out_dir / "table.md"
    atomic_write_text(md, "\n".join(header))
    csv_path = out_dir / "table.csv"
    with atomic_path(csv_path) as tmp, tmp.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["attack", "setting", "mean_l2", "paper_l2", "used", "attempted", "failed",
                    *(f"{s}_{m}" for s in ("score1", "score2", "combined")
                      for m in ("tp", "fp", "precision", "recall", "f2")), "auc1", "auc2"])
        for r in result.rows:
            spec = by_name.get(r.attack)
            w.writerow([r.attack, spec.describe() if spec else "", r.mean_l2,
                        spec.paper_l2 if spec else "", r.used, r.attempted, r.failed,
                        *(v for m in (r.score1, r.score2, r.combined)
                          for v in (m.tp, m.fp, m.precision, m.recall, m.f2)), r.auc1, r.auc2])
    js = out_dir / "table.json"
    atomic_write_text(js, json.dumps({
        "dataset": dataset, "command": command, "threshold1": result.threshold1,
        "threshold2": result.threshold2, "calibration_images": result.calibration_images,
        "calibration_rates": {"score1": r1, "score2": r2, "combined": rc},
        "attacks": {s.name: s.params() for s in specs},
        "rows": [_row_dict(r) for r in result.rows], "notes": list(notes),
    }, indent=2, default=float))
    return [md, csv_path, js]
