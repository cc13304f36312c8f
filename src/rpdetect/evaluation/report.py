"""Table 1 as Markdown, CSV and JSON."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Sequence

from .._atomic import atomic_path, atomic_write_text
from .attacks import AttackSpec
from .metrics import AttackMetrics, DetectionMetrics, total_metrics
from .protocol import EvaluationResult, RuleCalibration

__all__ = ["adaptive_markdown", "budget_needed", "markdown_table", "write_adaptive_report",
           "write_report"]


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


def _eps_text(eps: float, norm: str) -> str:
    """L-inf budgets as k/255 where they are, L2 ones as they are."""
    k = eps * 255
    return f"{round(k):d}/255" if norm == "linf" and abs(k - round(k)) < 1e-6 else f"{eps:g}"


def _rate_cell(count: int, total: int, l2: float, linf: float) -> str:
    if not total:
        return "-"
    size = "" if not count else f" (L2 {_f(l2, 2)}, L-inf {_f(linf * 255, 1)}/255)"
    return f"{count}/{total} = {count / total:.2f}{size}"


def budget_needed(rows: Sequence[Any], field: str, *, level: float = 0.5) -> float:
    """The smallest budget of ``rows`` (one attack and rule, by epsilon) at which the success
    ``field`` reaches ``level`` of the images; inf where none does."""
    for r in sorted(rows, key=lambda r: r.epsilon):
        if r.attacked and getattr(r, field) / r.attacked >= level:
            return float(r.epsilon)
    return math.inf


def adaptive_markdown(results: Sequence[Any], rule: str) -> str:
    """The adaptive table of one rule: a row per attack and budget."""
    head = ("| attack | budget | images | adaptive: fooled & undetected | non-adaptive: fooled & "
            "undetected | no detector: fooled | adaptive: fooled (flagged or not) | adaptive "
            "steps / image |")
    lines = [head, "|" + "---|" * 8]
    for res in results:
        for r in (r for r in res.rows if r.rule == rule):
            lines.append("| " + " | ".join([
                f"{r.attack}", _eps_text(r.epsilon, res.spec.norm), str(r.attacked),
                _rate_cell(r.adaptive_success, r.attacked, r.adaptive_l2, r.adaptive_linf),
                _rate_cell(r.baseline_success, r.attacked, r.baseline_l2, r.baseline_linf),
                _rate_cell(r.classifier_success, r.attacked, r.classifier_l2, r.classifier_linf),
                f"{r.adaptive_fooled}/{r.attacked}", f"{r.mean_steps:.1f}"]) + " |")
    return "\n".join(lines)


def _needed_lines(results: Sequence[Any], rules: Sequence[str]) -> list[str]:
    out = ["| attack | rule | budget for 50% undetected: adaptive | non-adaptive | no detector |",
           "|---|---|---|---|---|"]
    for res in results:
        for rule in rules:
            rows = [r for r in res.rows if r.rule == rule]
            cells = []
            for field in ("adaptive_success", "baseline_success", "classifier_success"):
                b = budget_needed(rows, field)
                cells.append(f"> {_eps_text(max(r.epsilon for r in rows), res.spec.norm)}"
                             if math.isinf(b) else _eps_text(b, res.spec.norm))
            out.append(f"| {res.spec.name} | {rule} | " + " | ".join(cells) + " |")
    return out


def write_adaptive_report(evaluation: Any, out_dir: Path, *, dataset: str, command: str,
                          notes: Sequence[str] = ()) -> list[Path]:
    """``adaptive.md``, ``adaptive.csv`` and ``adaptive.json`` in ``out_dir``
    (:func:`rpdetect.evaluation.adaptive.evaluate_adaptive`'s result)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rules = list(evaluation.rules)
    lines = [
        f"# {dataset}: against an adaptive attacker",
        "",
        f"Command: `{command}`",
        "",
        "Rules, all calibrated on clean images only (`rpdetect.calibration.thresholds`):",
        *(_rule_line(name, r, evaluation.calibration_images)
          for name, r in evaluation.rules.items()),
        "",
        "Attacks (`rpdetect.evaluation.adaptive`):",
        *(f"- **{res.spec.name}**: {res.spec.describe()}; adaptive PGD's thresholds: "
          f"{res.target_rule}." for res in evaluation.results),
        "",
        "Success = the classifier is fooled (the detector's label is not the true one) AND the "
        "calibrated detector, run as shipped (`rpdetect.Detector` on the calibrated file, with "
        "fresh noise of its own), does not flag it. Each cell: successes / images attacked "
        "(correctly classified ones), and the mean L2 and L-inf of the successes ([0, 1] "
        "pixels). Non-adaptive: the same attack without the detector (PGD on cross-entropy; "
        "logit matching on the clean logits only); no detector: whether those same examples "
        "fool the classifier.",
        *(f"\n{n}" for n in notes),
        "",
        "## The budget an attacker needs",
        "",
        *_needed_lines(evaluation.results, rules),
        "",
    ]
    for rule in rules:
        lines += [f"## Rule: {rule}", "", adaptive_markdown(evaluation.results, rule), ""]
    md = out_dir / "adaptive.md"
    atomic_write_text(md, "\n".join(lines))
    csv_path = out_dir / "adaptive.csv"
    fields = None
    with atomic_path(csv_path) as tmp, tmp.open("w", newline="") as fh:
        w = csv.writer(fh)
        for res in evaluation.results:
            for r in res.rows:
                if fields is None:
                    fields = list(r._fields)
                    w.writerow(["norm", "target_rule", *fields])
                w.writerow([res.spec.norm, res.target_rule, *r])
    js = out_dir / "adaptive.json"

    def clean(v: Any) -> Any:
        return None if isinstance(v, float) and not math.isfinite(v) else v

    atomic_write_text(js, json.dumps({
        "dataset": dataset, "command": command,
        "calibration_images": evaluation.calibration_images,
        "rules": {name: {"mode": r.mode.value, "fpr": r.fpr, "verdict": r.thresholds.describe(),
                         **r.thresholds.to_json(), "calibration_rates": r.rates._asdict()}
                  for name, r in evaluation.rules.items()},
        "attacks": {res.spec.name: {**dataclasses.asdict(res.spec),
                                    "target_rule": res.target_rule}
                    for res in evaluation.results},
        "rows": [{k: clean(v) for k, v in r._asdict().items()}
                 for res in evaluation.results for r in res.rows],
        "notes": list(notes),
    }, indent=2, allow_nan=False))
    return [md, csv_path, js]
