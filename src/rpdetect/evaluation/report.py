"""Table 1 as Markdown, CSV and JSON."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Sequence

from .._atomic import atomic_path, atomic_write_text
from .attacks import AttackSpec
from .metrics import AttackMetrics, DetectionMetrics, total_metrics
from .protocol import EvaluationResult, RuleCalibration

__all__ = ["write_report", "markdown_table"]


def _f(v: float, digits: int = 3) -> str:
    return "nan" if math.isnan(v) else f"{v:.{digits}f}"


def _cell(m: DetectionMetrics) -> str:
    return f"{m.tp} {m.fp} {_f(m.precision, 2)} {_f(m.recall, 2)} {_f(m.f2, 2)}"


def markdown_table(rows: Sequence[AttackMetrics], specs: dict[str, AttackSpec],
                   rule: str | None = None) -> str:
    """Table 1 for one rule (default: the first, the paper's), with its Total row."""
    if not rows:
        return "(no attack run)"
    rule = rule or next(iter(rows[0].rules))
    head = ("| attack | setting | mean L2 (paper) | used / attempted (failed) | queries / image | "
            "score1 TP FP P R F2 | score2 TP FP P R F2 | flips TP FP P R F2 | "
            "combined TP FP P R F2 | AUC1 | AUC2 | AUC flips |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        spec = specs.get(r.attack)
        paper = f" ({spec.paper_l2:g})" if spec is not None and spec.paper_l2 is not None else ""
        m = r.rules[rule]
        cells = [
            r.attack,
            spec.describe() if spec is not None else "",
            f"{_f(r.mean_l2)}{paper}",
            f"{r.used} / {r.attempted} ({r.failed})",
            "white-box" if math.isnan(r.mean_queries) else f"{r.mean_queries:.0f}",
            *(_cell(x) for x in (m.score1, m.score2, m.flips, m.combined)),
            _f(r.auc1), _f(r.auc2), _f(r.auc_flips),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    t = total_metrics(rows, rule)
    lines.append("| **Total** | | | | | " + " | ".join(
        _cell(x) for x in (t.score1, t.score2, t.flips, t.combined)) + " | | | |")
    return "\n".join(lines)


def _metrics_dict(m: Any) -> dict[str, Any]:
    return {name: (m.thresholds.to_json() if name == "thresholds" else getattr(m, name)._asdict())
            for name in m._fields}


def _row_dict(r: AttackMetrics) -> dict[str, Any]:
    """One row as JSON: a measure that does not apply (the queries of a white-box attack, the
    AUC of an empty set) is null, so the file stays strict JSON."""
    d: dict[str, Any] = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                         for k, v in r._asdict().items() if k != "rules"}
    d["rules"] = {name: _metrics_dict(m) for name, m in r.rules.items()}
    return d


def _rule_line(name: str, r: RuleCalibration, n: int) -> str:
    rates = r.rates
    return (f"- **{name}** ({r.mode.value}, calibrated for {r.fpr:.3f} of {n} clean "
            f"calibration images): {r.thresholds.describe()}; calibration images flagged: "
            f"score1 {rates.score1:.3f}, score2 {rates.score2:.3f}, flips {rates.flips:.3f}, "
            f"combined {rates.combined:.3f}.")


def write_report(result: EvaluationResult, out_dir: Path, *, dataset: str, command: str,
                 specs: Sequence[AttackSpec], notes: Sequence[str] = ()) -> list[Path]:
    """``table.md``, ``table.csv`` and ``table.json`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    by_name = {s.name: s for s in specs}
    header = [
        f"# {dataset}: detection of adversarial examples (paper Table 1 protocol)",
        "",
        f"Command: `{command}`",
        "",
        "Rules, all calibrated on clean images only (`rpdetect.calibration.thresholds`):",
        *(_rule_line(name, r, result.calibration_images) for name, r in result.rules.items()),
        "",
        "Each row: the adversarial examples (positives) and the SAME clean images (negatives) "
        "from the evaluation split. P = precision (0 when nothing is flagged), R = recall, "
        "F2 = F-beta with beta 2; Total sums the counts over the attacks (the paper's Total "
        "row); AUC = rank ROC-AUC of score1_max / score2_max / flips (beyond the paper). The "
        "clean false-positive rate a rule had on the evaluation images is FP / (number of "
        "clean images) of its Total.",
        *(f"\n{n}" for n in notes),
        "",
    ]
    for name in result.rules:
        header += [f"## Rule: {name}", "", markdown_table(result.rows, by_name, name), ""]
    md = out_dir / "table.md"
    atomic_write_text(md, "\n".join(header))
    csv_path = out_dir / "table.csv"
    stats = ("score1", "score2", "flips", "combined")
    with atomic_path(csv_path) as tmp, tmp.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["rule", "attack", "setting", "mean_l2", "paper_l2", "used", "attempted",
                    "failed", "mean_queries", *(f"{s}_{m}" for s in stats
                                for m in ("tp", "fp", "precision", "recall", "f2")),
                    "auc1", "auc2", "auc_flips"])
        for name in result.rules:
            for r in result.rows:
                spec = by_name.get(r.attack)
                m = r.rules[name]
                w.writerow([name, r.attack, spec.describe() if spec else "", r.mean_l2,
                            spec.paper_l2 if spec else "", r.used, r.attempted, r.failed,
                            r.mean_queries,
                            *(v for x in (getattr(m, s) for s in stats)
                              for v in (x.tp, x.fp, x.precision, x.recall, x.f2)),
                            r.auc1, r.auc2, r.auc_flips])
    js = out_dir / "table.json"
    atomic_write_text(js, json.dumps({
        "dataset": dataset, "command": command,
        "calibration_images": result.calibration_images,
        "rules": {name: {"mode": r.mode.value, "fpr": r.fpr, "verdict": r.thresholds.describe(),
                         **r.thresholds.to_json(), "calibration_rates": r.rates._asdict()}
                  for name, r in result.rules.items()},
        "totals": {name: _metrics_dict(total_metrics(result.rows, name))
                   for name in result.rules} if result.rows else {},
        "attacks": {s.name: s.params() for s in specs},
        "rows": [_row_dict(r) for r in result.rows], "notes": list(notes),
        "roc": {fam: {a: {"fpr": list(map(float, f)), "tpr": list(map(float, t))}
                      for a, (f, t) in curves.items()} for fam, curves in result.roc.items()},
    }, indent=2, default=float, allow_nan=False))
    return [md, csv_path, js]
