"""The adaptive-attack table in one page, for the README:

    python benchmarks/adaptive_table.py [--results benchmarks/results/adaptive]
                                        [--out benchmarks/results/adaptive/summary.md]

Reads ``<results>/<dataset>/adaptive.json`` and every ``<results>/<dataset>-<run>/adaptive.json``
(written by ``rpdetect evaluate --attacks adaptive-...``: an L2 run, a stronger attack, another
detector) for cifar10, imagenette and dogscats (a missing one is listed as not run) and writes,
per dataset, run, attack and budget, the success rate (fooled AND not flagged by the shipped
detector) of the adaptive attack, of its non-adaptive twin, and of that twin against the
classifier alone, under the paper's rule and the default (combined) rule, with the smallest
budget at which each reaches 50%.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASETS = (("cifar10", "CIFAR-10, ResNet-9"), ("imagenette", "ImageNette, EfficientNet-Lite0"),
            ("dogscats", "Dogs vs Cats, EfficientNet-Lite0 + linear head"))
RULES = ("paper", "combined")


def _budget(eps: float, norm: str) -> str:
    k = eps * 255
    return f"{round(k)}/255" if norm == "linf" and abs(k - round(k)) < 1e-6 else f"{eps:g}"


def _rate(row: dict, field: str) -> str:
    return f"{row[field] / row['attacked']:.2f}"


def _needed(rows: list[dict], field: str, norm: str) -> str:
    for r in sorted(rows, key=lambda r: r["epsilon"]):
        if r[field] / r["attacked"] >= 0.5:
            return _budget(r["epsilon"], norm)
    return "> " + _budget(max(r["epsilon"] for r in rows), norm)


def _run_section(path: Path) -> list[str]:
    """One run's tables (``path``: its adaptive.json) under the paper and combined rules."""
    doc = json.loads(path.read_text())
    images = sorted({r["attacked"] for r in doc["rows"]})
    lines = [f"### {path.parent.name}", "", f"Command: `{doc['command']}`; images attacked: "
             f"{', '.join(map(str, images))}; calibration images: "
             f"{doc['calibration_images']}.", ""]
    for rule in RULES:
        r0 = doc["rules"][rule]
        rate = r0["calibration_rates"]["combined"]
        lines += [f"#### rule {rule} ({r0['verdict']}; flags {rate:.3f} of the calibration "
                  "images)", "", "| attack | budget | adaptive | non-adaptive | no detector |",
                  "|---|---|---|---|---|"]
        for attack, spec in doc["attacks"].items():
            rows = [r for r in doc["rows"] if r["attack"] == attack and r["rule"] == rule]
            for r in sorted(rows, key=lambda r: r["epsilon"]):
                lines.append(f"| {attack} | {_budget(r['epsilon'], spec['norm'])} | "
                             f"{_rate(r, 'adaptive_success')} | "
                             f"{_rate(r, 'baseline_success')} | "
                             f"{_rate(r, 'classifier_success')} |")
            lines.append(f"| {attack} | **budget for 50%** | "
                         f"{_needed(rows, 'adaptive_success', spec['norm'])} | "
                         f"{_needed(rows, 'baseline_success', spec['norm'])} | "
                         f"{_needed(rows, 'classifier_success', spec['norm'])} |")
        lines.append("")
    return lines


def summary(results: Path) -> str:
    where = results.relative_to(ROOT) if results.is_relative_to(ROOT) else results
    lines = ["# Against an adaptive attacker: summary", "",
             f"`python benchmarks/adaptive_table.py` from `{where}/<dataset>[-<run>]/adaptive.json` (one section per run). "
             "Success = fooled AND not flagged by the calibrated detector run as shipped (fresh "
             "noise). Cells: adaptive / non-adaptive / no detector (the non-adaptive examples "
             "against the classifier alone). Rules calibrated for 5% of the clean calibration "
             "images; the clean false-positive rate each had there is in the header of each "
             "dataset's adaptive.md.", ""]
    for name, title in DATASETS:
        runs = [results / name / "adaptive.json",
                *sorted(results.glob(f"{name}-*/adaptive.json"))]
        runs = [r for r in runs if r.is_file()]
        lines += [f"## {title}", ""]
        if not runs:
            lines += [f"not run (no `{results / name}[-*]/adaptive.json`)", ""]
        for path in runs:
            lines += _run_section(path)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "adaptive")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    from rpdetect._atomic import atomic_write_text

    out = args.out or args.results / "summary.md"
    atomic_write_text(out, summary(args.results.resolve()))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
