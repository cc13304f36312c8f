"""Our Table 1 in one page: the per-dataset results of ``rpdetect evaluate`` side by side.

    python benchmarks/table1.py [--results benchmarks/results] [--out benchmarks/results/table1.md]

Reads ``<results>/<dataset>/table.json`` for imagenette, dogscats and cifar10 (a missing one is
listed as not run) and writes one Markdown table: per attack the mean L2 of the successful
examples next to the paper's column, how many attacks were needed, and TP / FP / precision /
recall / F2 of the combined rule with the recall of each score and both ROC-AUCs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASETS = (
    ("imagenette", "ImageNette, EfficientNet-Lite0 (ImageNet weights; paper: VGG-11)"),
    ("dogscats", "Dogs vs Cats, EfficientNet-Lite0 + our linear head"),
    ("cifar10", "CIFAR-10, our ResNet-9 (paper: GoogLeNet)"),
)


def _f(v: float | None, digits: int = 2) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _setting(p: dict) -> str:
    goal = "targeted" if p["targeted"] else "untargeted"
    if p["kind"] in ("bim-l2", "bim-linf"):
        name = {"bim-l2": "BIM-L2", "bim-linf": "BIM-Linf"}[p["kind"]]
        return f"{name} {goal}, eps {p['epsilon']:g}, {p['steps']} steps"
    if p["kind"] == "ddn":
        return f"DDN {goal}, {p['steps']} steps"
    return (f"CW-L2 {goal}, {p['steps']} steps, {p['binary_search_steps']} search steps, "
            f"c0 {p['initial_const']:g}")


def table(results: Path) -> str:
    lines = [
        "| dataset | attack | mean L2 (paper) | used / attempted | score1 R | score2 R "
        "| combined TP FP | combined P / R / F2 | AUC score1 / score2 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for key, title in DATASETS:
        path = results / key / "table.json"
        if not path.is_file():
            lines.append(f"| {title} | not run | | | | | | | |")
            continue
        doc = json.loads(path.read_text())
        rates = doc["calibration_rates"]
        notes.append(
            f"- {title}: `{doc['command']}`; thresholds from {doc['calibration_images']} clean "
            f"calibration images, t1 = {doc['threshold1']:.4g}, t2 = {doc['threshold2']:.4g} "
            f"(calibration set flagged: score1 {rates['score1']:.3f}, score2 "
            f"{rates['score2']:.3f}, either {rates['combined']:.3f}).")
        first = True
        for row in doc["rows"]:
            p = doc["attacks"][row["attack"]]
            paper = f" ({p['paper_l2']:g})" if p.get("paper_l2") is not None else ""
            c = row["combined"]
            lines.append(
                f"| {title if first else ''} | {_setting(p)} | {_f(row['mean_l2'])}{paper} | "
                f"{row['used']} / {row['attempted']} | {_f(row['score1']['recall'])} | "
                f"{_f(row['score2']['recall'])} | {c['tp']} {c['fp']} | "
                f"{_f(c['precision'])} / {_f(c['recall'])} / {_f(c['f2'])} | "
                f"{_f(row['auc1'], 3)} / {_f(row['auc2'], 3)} |")
            first = False
    return "\n".join(lines + [""] + notes + [""])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "table1.md")
    args = p.parse_args(argv)
    text = "# Table 1, our reproduction (per-dataset details in each folder's table.md)\n\n"
    text += table(args.results)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
