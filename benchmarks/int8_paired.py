"""INT8 - FP32 Table 1 Total F2 on the same positives, with a paired bootstrap interval:
`python benchmarks/int8_paired.py --dataset cifar10 [--fp32-run fp32-both --int8-run int8-both]
[--quantize-stem float]`.

``rpdetect evaluate --positives both`` gives the INT8 and the FP32 detectors the same positives
(the adversarial examples both classifiers misclassify) and the same clean images; the F2 of
their Total rows differ by a few hundredths. How much of that is the sample? This script rebuilds
every example's verdict under each rule from the evaluation's caches (the scores of the
adversarial examples and of the clean evaluation images, cached by ``rpdetect evaluate --cache``)
and the thresholds recorded in the two runs' ``table.json``, checks that the counts reproduce
both Total rows exactly, and then resamples the evaluation images (an image with its
adversarial examples, across all attacks, is one unit; 4000 resamples, seeded) to give a 90%
interval of INT8 F2 - FP32 F2 for each rule. Writes ``<results>/<dataset>/paired-<int8 run>.md``
and ``.json``. Nothing is attacked or re-scored when the caches are complete.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from _preset import open_preset  # noqa: E402  (benchmarks/, the script's folder)
from rpdetect._atomic import atomic_write_text  # noqa: E402
from rpdetect.evaluation.attacks import generate  # noqa: E402
from rpdetect.evaluation.metrics import f_beta, precision, recall  # noqa: E402
from rpdetect.evaluation.pipeline import attack_table  # noqa: E402
from rpdetect.evaluation.presets import PRESETS  # noqa: E402
from rpdetect.evaluation.scoring import DetectorRunner  # noqa: E402
from rpdetect.evaluation.protocol import (  # noqa: E402
    _attack_model,
    _attack_scores,
    _PositionScores,
    prepare_detector,
)
from rpdetect.export.quantize import QuantizeOptions  # noqa: E402
from rpdetect.rule import Thresholds  # noqa: E402


def _thresholds(doc: dict) -> dict[str, Thresholds]:
    def value(v: float | None) -> float:  # table.json writes an infinite threshold as null
        return math.inf if v is None else float(v)

    return {name: Thresholds.of([value(v) for v in r["threshold1"]],
                                [value(v) for v in r["threshold2"]], value(r["threshold3"]),
                                n=len(r["threshold1"]))
            for name, r in doc["rules"].items()}


def _f2(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """F2 of (arrays of) counts, as ``rpdetect.evaluation.metrics`` computes it."""
    return np.vectorize(lambda a, b, c: f_beta(precision(a, b), recall(a, c)))(tp, fp, fn)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, choices=sorted(PRESETS))
    p.add_argument("--fp32-run", default="fp32-both")
    p.add_argument("--int8-run", default="int8-both")
    p.add_argument("--quantize-stem", choices=("int8", "float"), default="int8",
                   help="how the INT8 run was exported (its --quantize-stem)")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "int8")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--cache", type=Path, default=None, help="rpdetect evaluate's --cache")
    p.add_argument("--n", type=int, default=100, help="the runs' --n")
    p.add_argument("--int8-key", metavar="HEX",
                   help="the INT8 run's detector, by the 8 hex digits after '-int8-' in its "
                        "cached file name, where it was made by an earlier rpdetect (whose "
                        "options key differs from today's)")
    p.add_argument("--resamples", type=int, default=4000)
    args = p.parse_args(argv)
    preset = PRESETS[args.dataset]
    docs = {run: json.loads((args.results / preset.name / run / "table.json").read_text())
            for run in (args.fp32_run, args.int8_run)}
    rules = {run: _thresholds(doc) for run, doc in docs.items()}
    names = [row["attack"] for row in docs[args.int8_run]["rows"]]
    n = args.n
    options = QuantizeOptions(float_stem=args.quantize_stem == "float")
    # per example (an adversarial example or a clean image, once per attack that used it):
    # its evaluation-pool position, whether it is a positive, and each run's verdict per rule
    pos, positive = [], []
    flags: dict[str, dict[str, list[np.ndarray]]] = {run: {r: [] for r in rules[run]}
                                                     for run in rules}
    with open_preset(args.dataset, args.data, args.cache) as inputs:
        classifier, pool, work = inputs.classifier, inputs.pool, inputs.work
        table = attack_table(classifier.input_shape, whitebox=True, preset=preset)
        fp32 = prepare_detector(classifier, **inputs.common)
        if args.int8_key:
            key = f"{fp32.key}-int8-{args.int8_key}"
            path = work / f"detector-{key}.onnx"
            if not path.is_file():
                raise SystemExit(f"--int8-key: {path} not found")
            int8 = fp32._replace(path=path, key=key, runner=DetectorRunner(path))
        else:
            int8 = prepare_detector(classifier, precision="int8", quantize=options,
                                    **inputs.common)
        prepared = {args.fp32_run: fp32, args.int8_run: int8}
        fp = prepared[args.fp32_run].fingerprint
        models: dict = {}
        for name in names:
            spec = table[name]
            adv = generate(_attack_model(classifier, spec, prepared[args.fp32_run].classifier_path,
                                         models), pool, spec, n=n, classes=classifier.classes,
                           seed=0, cache_file=work / f"{spec.name}-{spec.params_hash(fp)}.npz",
                           cache_key=fp, progress=False)
            used = adv.successful_positions[:n]
            truth = np.asarray(pool.labels)[used]
            scores = {run: (_attack_scores(work, spec, fp, used, adv.adversarial[:n], d, False),
                            _PositionScores(work / f"clean-scores-{d.key}.npz", d.key).get(
                                used, pool, d.runner, False))
                      for run, d in prepared.items()}
            keep = np.ones(len(used), bool)
            for a, _ in scores.values():
                keep &= a.label != truth
            pos += [used[keep], used[keep]]
            positive += [np.ones(keep.sum(), bool), np.zeros(keep.sum(), bool)]
            for run, (a, c) in scores.items():
                for rule, t in rules[run].items():
                    flags[run][rule] += [
                        t.statistic_flags(a.score1[keep], a.score2[keep], a.flips[keep]).any(0),
                        t.statistic_flags(c.score1[keep], c.score2[keep], c.flips[keep]).any(0)]
    positions, is_pos = np.concatenate(pos), np.concatenate(positive)
    units, unit_of = np.unique(positions, return_inverse=True)
    rng = np.random.default_rng(0)
    weights = rng.multinomial(len(units), np.full(len(units), 1 / len(units)),
                              size=args.resamples)[:, unit_of]  # [resamples, examples]
    out: dict[str, dict] = {}
    for rule in rules[args.int8_run]:
        f2s, point, fpr = {}, {}, {}
        for run in rules:
            flag = np.concatenate(flags[run][rule])
            tp, fn = is_pos & flag, is_pos & ~flag
            fp_ = ~is_pos & flag
            counts = [int(v.sum()) for v in (tp, fp_, fn)]
            point[run] = float(_f2(*counts))
            fpr[run] = counts[1] / int((~is_pos).sum())
            recorded = docs[run]["totals"][rule]["combined"]
            if [recorded["tp"], recorded["fp"], recorded["fn"]] != counts:
                raise SystemExit(f"{run} {rule}: rebuilt counts {counts} differ from table.json "
                                 f"{[recorded['tp'], recorded['fp'], recorded['fn']]}: the caches "
                                 "are not those of the run")
            f2s[run] = _f2(weights @ tp, weights @ fp_, weights @ fn)
        diff = f2s[args.int8_run] - f2s[args.fp32_run]
        lo, hi = np.quantile(diff, [0.05, 0.95])
        out[rule] = {"fp32_f2": point[args.fp32_run], "int8_f2": point[args.int8_run],
                     "fp32_clean_fpr": fpr[args.fp32_run], "int8_clean_fpr": fpr[args.int8_run],
                     "difference": point[args.int8_run] - point[args.fp32_run],
                     "ci90": [float(lo), float(hi)],
                     "share_within_0.01": float(np.mean(diff >= -0.01))}
    command = "python benchmarks/int8_paired.py " + " ".join(argv if argv is not None
                                                              else sys.argv[1:])
    lines = [f"# INT8 - FP32 on the same positives, paired bootstrap: {preset.name}", "",
             f"Command: `{command}`; runs `{args.fp32_run}` and `{args.int8_run}`; "
             f"{int(is_pos.sum())} positives and as many clean-image entries over "
             f"{len(units)} evaluation images; {args.resamples} resamples of the images.", "",
             "F2 (clean false-positive rate of the Total row, FP / clean-image entries).", "",
             "| rule | FP32 F2 | INT8 F2 | INT8 - FP32 | 90% interval | resamples within 0.01 |",
             "|---|---|---|---|---|---|"]
    for rule, r in out.items():
        lines.append(f"| {rule} | {r['fp32_f2']:.3f} ({r['fp32_clean_fpr']:.3f}) | "
                     f"{r['int8_f2']:.3f} ({r['int8_clean_fpr']:.3f}) | "
                     f"{r['difference']:+.3f} | [{r['ci90'][0]:+.3f}, {r['ci90'][1]:+.3f}] | "
                     f"{r['share_within_0.01']:.2f} |")
    target = args.results / preset.name / f"paired-{args.int8_run}"
    atomic_write_text(target.with_suffix(".md"), "\n".join(lines) + "\n")
    atomic_write_text(target.with_suffix(".json"), json.dumps(
        {"command": command, "rules": out}, indent=1) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
