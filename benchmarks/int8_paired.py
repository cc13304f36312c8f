"""INT8 - FP32 Table 1 Total F2, with a paired bootstrap interval:
`python benchmarks/int8_paired.py --dataset cifar10 [--fp32-run fp32-both --int8-run int8-both]
[--quantize-stem float] [--reduce-range] [--attack-target int8]`.

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

``--attack-target int8`` compares the two detectors each under attacks on its own classifier
(``rpdetect evaluate --positives deployed``, the INT8 run with ``--attack-target int8``; default
runs ``fp32-deployed`` and ``int8-target-int8``): the adversarial examples differ between the
runs, so the pairing is by evaluation image only (the same images are attacked in both).

``--extra-calibration K`` recalibrates both detectors on K more clean images as well: the last K
of the evaluation pool, which no evaluation reaches (refused where one of them was evaluated),
scored by both detectors. Where INT8 and FP32 differ mainly by the thresholds' sampling error
on 1000 images, the difference shrinks there; where INT8 itself detects worse, it stays.
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
from rpdetect.calibration.thresholds import CalibrationMode  # noqa: E402
from rpdetect.evaluation.protocol import (  # noqa: E402
    _attack_model,
    _attack_scores,
    _PositionScores,
    calibration_scores,
    prepare_detector,
    table_rules,
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


STATISTICS = ("score1", "score2", "flips")


def weighted_auc(stat: np.ndarray, is_pos: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC-AUC of ``stat`` (positives against the rest, ties counted half) with example
    ``weights`` [resamples, examples] (or [examples]): one AUC per row."""
    order = np.argsort(stat, kind="stable")
    s, p = stat[order], is_pos[order]
    w = np.atleast_2d(weights)[:, order].astype(np.float64)
    wn, wp = np.where(p, 0.0, w), np.where(p, w, 0.0)
    _, start = np.unique(s, return_index=True)
    below = np.concatenate([np.zeros((len(w), 1)), np.cumsum(wn, axis=1)], axis=1)[:, start]
    group_neg = np.add.reduceat(wn, start, axis=1)
    group_pos = np.add.reduceat(wp, start, axis=1)
    return (group_pos * (below + 0.5 * group_neg)).sum(1) / (wp.sum(1) * wn.sum(1))


def _calibration_target(doc: dict) -> tuple[float, CalibrationMode]:
    """The target rate and the combined rules' mode a run's ``table.json`` was calibrated for."""
    rules = doc["rules"]
    return (float(rules["paper"]["fpr"]),
            CalibrationMode(next(r["mode"] for name, r in rules.items() if name != "paper")))


def _with_calibration(out: dict, docs: dict, rules: dict, calibration: dict, raw: dict,
                      is_pos_of: dict, entry_units: dict, unit_weights: np.ndarray,
                      resamples: int, int8_run: str, fp32_run: str) -> None:
    """Adds to each rule of ``out`` the 90% interval of INT8 F2 - FP32 F2 when the calibration
    images are resampled too (paired: the same draw for both runs, whose calibration scores are
    of the same images), every rule recalibrated on each draw by ``table_rules`` as ``rpdetect
    evaluate`` calibrates it; the evaluation images are resampled as before."""
    setup = {}
    for run in rules:
        fpr, mode = _calibration_target(docs[run])
        cal = calibration[run]
        # the recorded thresholds come back from the whole calibration set, or the caches differ
        again = table_rules(cal.score1, cal.score2, cal.flips, fpr=fpr, mode=mode)
        for name, t in rules[run].items():
            got = again[name][2]
            if not (np.array_equal(np.float32(got.threshold1), np.float32(t.threshold1))
                    and np.array_equal(np.float32(got.threshold2), np.float32(t.threshold2))
                    and np.float32(got.threshold3) == np.float32(t.threshold3)):
                raise SystemExit(f"{run} {name}: the calibration cache does not give the "
                                 "thresholds in table.json")
        setup[run] = (fpr, mode, cal, {k: np.concatenate(v) for k, v in raw[run].items()})
    sizes = {len(cal.flips) for _, _, cal, _ in setup.values()}
    if len(sizes) != 1:
        raise SystemExit(f"the two runs' calibration sets differ in size: {sorted(sizes)}")
    n = sizes.pop()
    rng = np.random.default_rng(1)
    diffs: dict[str, list[float]] = {rule: [] for rule in out}
    for b in range(resamples):
        idx = rng.integers(0, n, n)
        w_units = unit_weights[b % len(unit_weights)]
        f2: dict[str, dict[str, float]] = {}
        for run, (fpr, mode, cal, r) in setup.items():
            t_b = table_rules(cal.score1[idx], cal.score2[idx], cal.flips[idx], fpr=fpr,
                              mode=mode)
            w = w_units[entry_units[run]]
            is_pos = is_pos_of[run]
            f2[run] = {}
            for rule in out:
                flag = t_b[rule][2].flags(r["score1"], r["score2"], r["flips"])
                f2[run][rule] = float(_f2(w @ (is_pos & flag), w @ (~is_pos & flag),
                                          w @ (is_pos & ~flag)))
        for rule in out:
            diffs[rule].append(f2[int8_run][rule] - f2[fp32_run][rule])
    for rule, d in diffs.items():
        out[rule]["ci90_with_calibration"] = [float(x) for x in np.quantile(d, [0.05, 0.95])]
        out[rule]["calibration_resamples"] = resamples


def extra_positions(pool_size: int, k: int, evaluated: np.ndarray) -> np.ndarray:
    """The last ``k`` positions of an evaluation pool of ``pool_size`` images (the images an
    evaluation reaches last), refused (SystemExit) where ``k`` does not fit or one of them is
    among the ``evaluated`` positions."""
    if not 0 < k < pool_size:
        raise SystemExit(f"--extra-calibration: expected 1..{pool_size - 1}, got {k}")
    extra = np.arange(pool_size - k, pool_size)
    overlap = np.intersect1d(extra, evaluated)
    if overlap.size:
        raise SystemExit(f"--extra-calibration {k}: pool positions {overlap[:5].tolist()} ... "
                         f"({overlap.size} in all) were evaluated; the extra images must not be")
    return extra


def recalibrated(docs: dict, calibration: dict, raw: dict, is_pos_of: dict, entry_units: dict,
                 unit_weights: np.ndarray, int8_run: str, fp32_run: str) -> dict[str, dict]:
    """Each rule recalibrated per run on ``calibration[run]`` (score arrays, by name) as
    ``rpdetect evaluate`` calibrates it (``table_rules``, the run's target rate and mode), then
    INT8 F2 - FP32 F2 on the runs' evaluation examples, with its 90% interval over the
    evaluation images' resamples ``unit_weights``."""
    f2s: dict[str, dict[str, np.ndarray]] = {}
    out: dict[str, dict] = {}
    for run in (fp32_run, int8_run):
        fpr, mode = _calibration_target(docs[run])
        cal = calibration[run]
        rules = table_rules(cal["score1"], cal["score2"], cal["flips"], fpr=fpr, mode=mode)
        r = {k: np.concatenate(v) for k, v in raw[run].items()}
        is_pos = is_pos_of[run]
        w = unit_weights[:, entry_units[run]]
        f2s[run] = {}
        for rule, (_, rate, t) in rules.items():
            flag = t.flags(r["score1"], r["score2"], r["flips"])
            tp, fp_, fn = is_pos & flag, ~is_pos & flag, is_pos & ~flag
            f2s[run][rule] = _f2(w @ tp, w @ fp_, w @ fn)
            entry = out.setdefault(rule, {})
            entry[f"{run}_target_rate"] = float(rate)
            entry[f"{run}_f2"] = float(_f2(tp.sum(), fp_.sum(), fn.sum()))
            entry[f"{run}_clean_fpr"] = float(fp_.sum() / (~is_pos).sum())
    for rule, entry in out.items():
        diff = f2s[int8_run][rule] - f2s[fp32_run][rule]
        entry["difference"] = entry[f"{int8_run}_f2"] - entry[f"{fp32_run}_f2"]
        entry["ci90"] = [float(x) for x in np.quantile(diff, [0.05, 0.95])]
        entry["share_within_0.01"] = float(np.mean(diff >= -0.01))
    return out


def main(argv: list[str] | None = None) -> int:

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, choices=sorted(PRESETS))
    p.add_argument("--fp32-run", default=None, help="default: fp32-both (fp32-deployed with "
                   "--attack-target int8)")
    p.add_argument("--int8-run", default=None, help="default: int8-both (int8-target-int8)")
    p.add_argument("--attack-target", choices=("fp32", "int8"), default="fp32",
                   help="the INT8 run's --attack-target (module doc)")
    p.add_argument("--quantize-stem", choices=("int8", "float"), default="int8",
                   help="how the INT8 run was exported (its --quantize-stem)")
    p.add_argument("--refine-steps", type=int, default=0,
                   help="how the INT8 run was exported (its --quantize-refine-steps)")
    p.add_argument("--reduce-range", action="store_true",
                   help="how the INT8 run was exported (its --quantize-reduce-range)")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "int8")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--cache", type=Path, default=None, help="rpdetect evaluate's --cache")
    p.add_argument("--n", type=int, default=100, help="the runs' --n")
    p.add_argument("--int8-key", metavar="HEX",
                   help="the INT8 run's detector, by the 8 hex digits after '-int8-' in its "
                        "cached file name, where it was made by an earlier rpdetect (whose "
                        "options key differs from today's)")
    p.add_argument("--resamples", type=int, default=4000)
    p.add_argument("--calibration-resamples", type=int, default=1000,
                   help="resamples that redraw the calibration images too (thresholds "
                   "recalibrated on each, as rpdetect evaluate calibrates them); 0: none")
    p.add_argument("--extra-calibration", type=int, default=0, metavar="K",
                   help="also recalibrate both detectors on K more clean images, the last K of "
                        "the evaluation pool (never evaluated; module doc)")
    args = p.parse_args(argv)
    own = args.attack_target == "int8"
    args.fp32_run = args.fp32_run or ("fp32-deployed" if own else "fp32-both")
    args.int8_run = args.int8_run or ("int8-target-int8" if own else "int8-both")
    preset = PRESETS[args.dataset]
    docs = {run: json.loads((args.results / preset.name / run / "table.json").read_text())
            for run in (args.fp32_run, args.int8_run)}
    rules = {run: _thresholds(doc) for run, doc in docs.items()}
    names = [row["attack"] for row in docs[args.int8_run]["rows"]]
    n = args.n
    options = QuantizeOptions(float_stem=args.quantize_stem == "float",
                              reduce_range=args.reduce_range, refine_steps=args.refine_steps)
    # per run and example (an adversarial example or a clean image, once per attack that used
    # it): its evaluation-pool position, whether it is a positive, and the verdict per rule
    pos: dict[str, list[np.ndarray]] = {run: [] for run in rules}
    positive: dict[str, list[np.ndarray]] = {run: [] for run in rules}
    flags: dict[str, dict[str, list[np.ndarray]]] = {run: {r: [] for r in rules[run]}
                                                     for run in rules}
    stats: dict[str, dict[str, list[np.ndarray]]] = {run: {k: [] for k in STATISTICS}
                                                     for run in rules}
    raw: dict[str, dict[str, list[np.ndarray]]] = {run: {k: [] for k in ("score1", "score2",
                                                                          "flips")}
                                                   for run in rules}  # for recalibration
    with open_preset(args.dataset, args.data, args.cache) as inputs:
        classifier, pool, work = inputs.classifier, inputs.pool, inputs.work
        table = attack_table(classifier.input_shape, preset=preset)
        fp32 = prepare_detector(classifier, **inputs.common)
        if args.int8_key:
            key = f"{fp32.key}-int8-{args.int8_key}"
            path = work / f"detector-{key}.onnx"
            if not path.is_file():
                raise SystemExit(f"--int8-key: {path} not found")
            runner = DetectorRunner(path)
            int8 = fp32._replace(path=path, key=key, runner=runner, calibration=(
                calibration_scores(runner, inputs.calibration, work, key)))
        else:
            int8 = prepare_detector(classifier, precision="int8", quantize=options,
                                    **inputs.common)
        prepared = {args.fp32_run: fp32, args.int8_run: int8}
        calibration = {run: d.calibration for run, d in prepared.items()}
        # the detector whose classifier each run's attacks ran on, and what they are cached by
        attacked = {args.fp32_run: (None, fp32.fingerprint),
                    args.int8_run: (int8.path, int8.key) if own else (None, fp32.fingerprint)}
        models: dict[str, dict] = {run: {} for run in rules}
        for name in names:
            spec = table[name]
            scores, keep = {}, {}
            for run, d in prepared.items():
                target, afp = attacked[run]
                adv = generate(_attack_model(classifier, spec, fp32.classifier_path, models[run],
                                             int8_detector=target),
                               pool, spec, n=n, classes=classifier.classes, seed=0,
                               cache_file=work / f"{spec.name}-{spec.params_hash(afp)}.npz",
                               cache_key=afp, progress=False)
                used = adv.successful_positions[:n]
                truth = np.asarray(pool.labels)[used]
                scores[run] = (used, _attack_scores(work, spec, afp, used, adv.adversarial[:n],
                                                    d, False),
                               _PositionScores(work / f"clean-scores-{d.key}.npz", d.key).get(
                                   used, pool, d.runner, False))
                keep[run] = scores[run][1].label != truth
            if not own:  # the same examples: the positives both classifiers get wrong
                both = np.logical_and.reduce(list(keep.values()))
                keep = {run: both for run in keep}
            for run, (used, a, c) in scores.items():
                k = keep[run]
                pos[run] += [used[k], used[k]]
                positive[run] += [np.ones(k.sum(), bool), np.zeros(k.sum(), bool)]
                for stat, (va, vc) in zip(STATISTICS, (
                        (a.score1[k].max(1), c.score1[k].max(1)),
                        (a.score2[k].max(1), c.score2[k].max(1)), (a.flips[k], c.flips[k]))):
                    stats[run][stat] += [va, vc]
                for name in raw[run]:
                    raw[run][name] += [getattr(a, name)[k], getattr(c, name)[k]]
                for rule, t in rules[run].items():
                    flags[run][rule] += [
                        t.statistic_flags(a.score1[k], a.score2[k], a.flips[k]).any(0),
                        t.statistic_flags(c.score1[k], c.score2[k], c.flips[k]).any(0)]
        extra_scores = {}
        if args.extra_calibration:
            extra = extra_positions(len(pool), args.extra_calibration,
                                    np.concatenate([np.concatenate(v) for v in pos.values()]))
            extra_scores = {run: _PositionScores(work / f"clean-scores-{d.key}.npz", d.key).get(
                extra, pool, d.runner, False) for run, d in prepared.items()}
    positions = {run: np.concatenate(pos[run]) for run in rules}
    is_pos_of = {run: np.concatenate(positive[run]) for run in rules}
    units = np.unique(np.concatenate(list(positions.values())))
    rng = np.random.default_rng(0)
    unit_weights = rng.multinomial(len(units), np.full(len(units), 1 / len(units)),
                                   size=args.resamples)  # [resamples, images]
    out: dict[str, dict] = {}
    for rule in rules[args.int8_run]:
        f2s, point, fpr = {}, {}, {}
        for run in rules:
            is_pos = is_pos_of[run]
            weights = unit_weights[:, np.searchsorted(units, positions[run])]
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
    if args.calibration_resamples:
        _with_calibration(out, docs, rules, calibration, raw, is_pos_of,
                          {run: np.searchsorted(units, positions[run]) for run in rules},
                          unit_weights, args.calibration_resamples, args.int8_run,
                          args.fp32_run)
    extended = None
    if extra_scores:
        extended = recalibrated(
            docs, {run: {name: np.concatenate([getattr(calibration[run], name),
                                               getattr(extra_scores[run], name)])
                         for name in ("score1", "score2", "flips")} for run in rules},
            raw, is_pos_of, {run: np.searchsorted(units, positions[run]) for run in rules},
            unit_weights, args.int8_run, args.fp32_run)
    aucs: dict[str, dict] = {}
    for stat in STATISTICS:
        point_auc, boot = {}, {}
        for run in rules:
            v = np.concatenate(stats[run][stat]).astype(np.float64)
            idx = np.searchsorted(units, positions[run])
            point_auc[run] = float(weighted_auc(v, is_pos_of[run], np.ones(len(v)))[0])
            boot[run] = weighted_auc(v, is_pos_of[run], unit_weights[:, idx])
        d = boot[args.int8_run] - boot[args.fp32_run]
        aucs[stat] = {"fp32": point_auc[args.fp32_run], "int8": point_auc[args.int8_run],
                      "difference": point_auc[args.int8_run] - point_auc[args.fp32_run],
                      "ci90": [float(x) for x in np.quantile(d, [0.05, 0.95])]}
    command = "python benchmarks/int8_paired.py " + " ".join(argv if argv is not None
                                                              else sys.argv[1:])
    counts = {run: int(v.sum()) for run, v in is_pos_of.items()}
    how = ("each detector under attacks on its own classifier (positives: what that classifier "
           "misclassifies), paired by evaluation image" if own else "on the same positives")
    lines = [f"# INT8 - FP32, {how}, paired bootstrap: {preset.name}", "",
             f"Command: `{command}`; runs `{args.fp32_run}` ({counts[args.fp32_run]} positives) "
             f"and `{args.int8_run}` ({counts[args.int8_run]} positives), each with as many "
             f"clean-image entries, over {len(units)} evaluation images; {args.resamples} "
             "resamples of the images.", "",
             "F2 (clean false-positive rate of the Total row, FP / clean-image entries).", "",
             "| rule | FP32 F2 | INT8 F2 | INT8 - FP32 | 90% interval | resamples within 0.01 "
             "| 90% interval, calibration images resampled too |",
             "|---|---|---|---|---|---|---|"]
    for rule, r in out.items():
        cal = r.get("ci90_with_calibration")
        lines.append(f"| {rule} | {r['fp32_f2']:.3f} ({r['fp32_clean_fpr']:.3f}) | "
                     f"{r['int8_f2']:.3f} ({r['int8_clean_fpr']:.3f}) | "
                     f"{r['difference']:+.3f} | [{r['ci90'][0]:+.3f}, {r['ci90'][1]:+.3f}] | "
                     f"{r['share_within_0.01']:.2f} | "
                     + (f"[{cal[0]:+.3f}, {cal[1]:+.3f}] |" if cal else "- |"))
    if args.calibration_resamples:
        lines += ["", f"The last column: {args.calibration_resamples} resamples that also redraw "
                  "the calibration images (the same draw for both detectors, whose calibration "
                  "scores are of the same images) and recalibrate every rule on them as "
                  "`rpdetect evaluate` does (`protocol.table_rules`): the thresholds' own "
                  "sampling error, which a repeat of the evaluation on other calibration images "
                  "would show, comes in."]
    if extended is not None:
        n_cal = len(calibration[args.int8_run].flips)
        lines += ["", f"Thresholds from {n_cal} + {args.extra_calibration} clean images (the "
                  f"calibration images and the last {args.extra_calibration} of the evaluation "
                  "pool, none of them evaluated), every rule recalibrated as `rpdetect evaluate` "
                  "calibrates it; the same evaluation examples and resamples:", "",
                  "| rule | FP32 F2 (clean FPR) | INT8 F2 (clean FPR) | INT8 - FP32 | 90% interval "
                  "| resamples within 0.01 |", "|---|---|---|---|---|---|"]
        for rule, r in extended.items():
            lines.append(
                f"| {rule} | {r[args.fp32_run + '_f2']:.3f} ({r[args.fp32_run + '_clean_fpr']:.3f})"
                f" | {r[args.int8_run + '_f2']:.3f} ({r[args.int8_run + '_clean_fpr']:.3f}) | "
                f"{r['difference']:+.3f} | [{r['ci90'][0]:+.3f}, {r['ci90'][1]:+.3f}] | "
                f"{r['share_within_0.01']:.2f} |")
    lines += ["", "Without thresholds: ROC-AUC of each statistic (max score1, max score2, flips) "
              "over the Total's examples (every attack's positives against their clean-image "
              "entries), with the same resamples:", "",
              "| statistic | FP32 AUC | INT8 AUC | INT8 - FP32 | 90% interval |",
              "|---|---|---|---|---|"]
    for stat, r in aucs.items():
        lines.append(f"| {stat} | {r['fp32']:.3f} | {r['int8']:.3f} | {r['difference']:+.3f} | "
                     f"[{r['ci90'][0]:+.3f}, {r['ci90'][1]:+.3f}] |")
    target = args.results / preset.name / (
        f"paired-{args.int8_run}" + (f"-extra{args.extra_calibration}"
                                     if args.extra_calibration else ""))
    atomic_write_text(target.with_suffix(".md"), "\n".join(lines) + "\n")
    atomic_write_text(target.with_suffix(".json"), json.dumps(
        {"command": command, "rules": out, "auc": aucs,
         **({"extra_calibration": {"images": args.extra_calibration, "rules": extended}}
            if extended is not None else {})}, indent=1) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
