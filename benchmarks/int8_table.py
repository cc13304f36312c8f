"""INT8 against FP32 detection, Table 1 totals: `python benchmarks/int8_table.py [--results DIR]`.

Reads ``<results>/<dataset>/<run>/table.json`` as ``rpdetect evaluate --out`` writes it, for the
runs ``fp32`` (the FP32 detector), ``int8`` (``--precision int8``: the head float32, the
default), ``int8-head-int8`` where present (``--quantize-head int8``: every layer quantized, as
rpdetect exported INT8 before), ``int8-stem`` / ``fp32-stem-both`` / ``int8-stem-both`` where
present (``--quantize-stem float``), ``int8-deployed`` (``--precision int8 --positives deployed``)
``fp32-both`` / ``int8-both`` (``--positives both``: the examples both classifiers
misclassify, the same positives for the two detectors), and ``fp32-deployed`` /
``int8-target-int8`` (each detector under attacks on its own classifier: ``--positives
deployed``, the INT8 run with ``--attack-target int8``; where present also
``int8-stem-target-int8`` with ``--quantize-stem float``, ``int8-refine-target-int8`` with
``--quantize-refine-steps 300``, ``fp32-deployed-n500`` / ``int8-target-int8-n500`` /
``int8-refine-target-int8-n500`` with ``--n 500``, and ``fp32-deployed-n200`` /
``int8-refine-target-int8-n200`` with ``--n 200``), and writes
``<results>/summary.md``:
each rule's combined F2 of the Total row with the clean false-positive rate it was measured at
(FP / clean images of the Total row), and INT8 - FP32 on the same positives.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from rpdetect._atomic import atomic_write_text  # noqa: E402

RUNS = {"fp32": "FP32", "int8": "INT8 (head float32)", "int8-head-int8": "INT8, head int8 too",
        "int8-stem": "INT8, stem float32 too", "int8-deployed": "INT8, deployed positives",
        "fp32-both": "FP32, positives both", "int8-both": "INT8, positives both",
        "fp32-stem-both": "FP32, positives both (stem run)",
        "int8-stem-both": "INT8 stem float32, positives both",
        "fp32-deployed": "FP32, attacks on FP32, deployed positives",
        "int8-target-int8": "INT8, attacks on INT8, deployed positives",
        "int8-stem-target-int8": "INT8 stem float32, attacks on it, deployed positives",
        "int8-refine-target-int8": "INT8 refined 300 steps, attacks on it, deployed positives",
        "fp32-deployed-n500": "FP32, attacks on FP32, deployed positives, n = 500",
        "int8-target-int8-n500": "INT8, attacks on INT8, deployed positives, n = 500",
        "int8-refine-target-int8-n500":
            "INT8 refined 300 steps, attacks on it, deployed positives, n = 500",
        "fp32-deployed-n200": "FP32, attacks on FP32, deployed positives, n = 200",
        "int8-refine-target-int8-n200":
            "INT8 refined 300 steps, attacks on it, deployed positives, n = 200"}
BASE = {"int8": "fp32", "int8-head-int8": "fp32", "int8-stem": "fp32", "int8-both": "fp32-both",
        "int8-stem-both": "fp32-stem-both",
        "int8-target-int8": "fp32-deployed", "int8-stem-target-int8": "fp32-deployed",
        "int8-refine-target-int8": "fp32-deployed",
        "int8-target-int8-n500": "fp32-deployed-n500",
        "int8-refine-target-int8-n500": "fp32-deployed-n500",
        "int8-refine-target-int8-n200": "fp32-deployed-n200"}  # INT8 - FP32 (same positives, or same protocol)


def _total(doc: dict, rule: str) -> tuple[float, float, int]:
    """Combined F2, the clean false-positive rate and the positives used, of a rule's Total."""
    m = doc["totals"][rule]["combined"]
    return m["f2"], m["fp"] / (m["fp"] + m["tn"]), m["tp"] + m["fn"]


def _shown(path: Path) -> str:
    """The path relative to the repository where it is inside it (no home folder in results)."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def summary(results: Path) -> str:
    lines = ["# INT8 against FP32: combined F2 of the Table 1 Total (clean false-positive rate)",
             "", f"Written by `python benchmarks/int8_table.py --results {_shown(results)}` from the "
             "`table.json` of each run; each run's command is in its `table.md`.", ""]
    for dataset in sorted(p.name for p in results.iterdir() if (p / "fp32").is_dir()):
        docs = {run: json.loads((results / dataset / run / "table.json").read_text())
                for run in RUNS if (results / dataset / run / "table.json").is_file()}
        runs = [r for r in RUNS if r in docs]
        lines += [f"## {dataset}", "", "| rule | " + " | ".join(
            RUNS[r] + (" (- FP32)" if r in BASE else "") for r in runs) + " |",
            "|---" * (len(runs) + 1) + "|"]
        for rule in docs["fp32"]["totals"]:
            cells = []
            for run in runs:
                if rule not in docs[run]["totals"]:
                    cells.append("-")
                    continue
                f2, fpr, used = _total(docs[run], rule)
                cell = f"{f2:.3f} ({fpr:.3f})"
                if run in BASE and BASE[run] in docs:
                    cell += f" {f2 - _total(docs[BASE[run]], rule)[0]:+.3f}"
                if "deployed" in run or "both" in run or "target" in run:
                    cell += f", {used} used"
                cells.append(cell)
            lines.append(f"| {rule} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "int8")
    args = p.parse_args(argv)
    text = summary(args.results)
    atomic_write_text(args.results / "summary.md", text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
