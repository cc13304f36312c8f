"""Which detection rule? Per-copy statistics of clean and adversarial images, and candidate rules
whose thresholds come from the clean calibration split only.

    python benchmarks/rule_study.py collect --dataset cifar10 --cache DIR   # after `rpdetect evaluate`
    python benchmarks/rule_study.py analyse --cache DIR [--out FILE.md]

``collect`` reads the adversarial examples that ``rpdetect evaluate --dataset D --n 100`` cached
under DIR/D, runs the classifier ONNX on every image and its n noisy copies (the dataset's
kappas, one N(0,1) draw per copy, seeded) and keeps, per copy, score1, score2 and whether the
label flipped, plus the clean margin. ``analyse`` calibrates every candidate rule on the
calibration images at two operating points (the paper rule's own combined rate on the
calibration split, and 5%) and tabulates total F2 / precision / recall over all attacks, the
CW recall, and the clean flag rate each rule really had on the evaluation images.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from rpdetect.calibration.thresholds import (
    allowed_count,
    order_threshold,
    shared_level_thresholds,
)
from rpdetect.evaluation.attacks import ATTACKS
from rpdetect.evaluation.datasets import TarImages, default_data_dir
from rpdetect.evaluation.metrics import detection_metrics
from rpdetect.evaluation.datasets import TarPool
from rpdetect.evaluation.pipeline import preset_split
from rpdetect.evaluation.presets import PRESETS as DATASETS
from rpdetect.reference import softmax

N_ADV = 100


class Stats(NamedTuple):
    score1: np.ndarray  # [N, n]
    score2: np.ndarray  # [N, n]
    flipped: np.ndarray  # [N, n] bool
    margin: np.ndarray  # [N] top-1 minus top-2 logit of the clean image


def _stats(session, images: np.ndarray, kappas: np.ndarray, rng: np.random.Generator) -> Stats:
    name = session.get_inputs()[0].name
    n = len(kappas)
    out = []
    for x in images:
        noise = rng.standard_normal((n, *x.shape), dtype=np.float32)
        batch = np.concatenate([x[None], x[None] + noise * kappas.reshape(-1, 1, 1, 1)])
        z = session.run(None, {name: batch.astype(np.float32)})[0].astype(np.float64)
        zc, zn = z[0], z[1:]
        d = zc[None] - zn
        p = softmax(z)
        top = np.sort(zc)[-2:]
        out.append((d.std(axis=1), np.abs(p[0][None] - p[1:]).sum(axis=1),
                    zn.argmax(axis=1) != zc.argmax(), top[1] - top[0]))
    s1, s2, fl, m = (np.stack(v) for v in zip(*out))
    return Stats(s1, s2, fl, m)


def collect(dataset: str, cache: Path, data: Path, seed: int,
            kappas_spec: str | None = None) -> Path:
    import onnxruntime as ort
    from tqdm import tqdm

    setup = DATASETS[dataset]
    work = cache / dataset / "full"
    clf = sorted(work.glob("classifier-*.onnx"))
    if len(clf) != 1:
        raise SystemExit(f"{work}: expected one classifier-*.onnx, found {clf}")
    fp = clf[0].stem.split("-", 1)[1]
    opts = ort.SessionOptions()
    session = ort.InferenceSession(str(clf[0]), opts, providers=["CPUExecutionProvider"])
    kappas = np.asarray(setup.kappas, dtype=np.float32)
    tag = ""
    if kappas_spec:  # "LOW,HIGH,N,lin|log": another set of noise scales, for study
        lo, hi, count, spacing = kappas_spec.split(",")
        space = np.geomspace if spacing == "log" else np.linspace
        kappas = space(float(lo), float(hi), int(count)).astype(np.float32)
        tag = "-" + kappas_spec.replace(",", "_")
    split = preset_split(setup, data / setup.tar, 0)
    arrays: dict[str, np.ndarray] = {"kappas": kappas}

    def put(prefix: str, images: np.ndarray, tag: int) -> None:
        rng = np.random.default_rng([seed, tag])
        st = [_stats(session, images[i:i + 16], kappas, rng) for i in
              tqdm(range(0, len(images), 16), desc=prefix, leave=False)]
        for field in Stats._fields:
            arrays[f"{prefix}/{field}"] = np.concatenate([getattr(s, field) for s in st])

    import importlib

    shape = importlib.import_module(f"rpdetect.zoo.{setup.zoo}").INPUT_SHAPE
    with TarImages(data / setup.tar, shape) as tar:
        calib = TarPool(tar, split.calibration)
        put("calibration", calib.images(range(len(calib))), 0)
        pool = TarPool(tar, split.evaluation)
        for i, spec in enumerate(ATTACKS[dataset]):
            f = work / f"{spec.name}-{spec.params_hash(fp)}.npz"
            if not f.is_file():
                print(f"skip {spec.name}: {f} not cached")
                continue
            with np.load(f) as z:
                pos = z["positions"][z["success"]][:N_ADV]
                adv = z["adversarial"][:N_ADV]
            put(f"adv/{spec.name}", adv, 100 + i)
            put(f"clean/{spec.name}", pool.images(pos), 200 + i)
    out = work / f"rule-study-{seed}{tag}.npz"
    from rpdetect._atomic import atomic_path

    with atomic_path(out) as tmp:
        np.savez(tmp, **arrays)
    return out


# --- rules -------------------------------------------------------------------------------
# A rule maps Stats to [m, N] statistics (larger = more adversarial); their thresholds are set
# together on the calibration statistics by the library's search (allowances grown in turn, the
# last step whose union flags at most the target: rpdetect.calibration.thresholds).

def joint_level(cal: np.ndarray, target_rate: float) -> np.ndarray:
    return shared_level_thresholds(cal, fpr=target_rate)


def _window(cal: Stats, kappas: np.ndarray, agree: float) -> np.ndarray:
    """Copies whose kappa keeps the clean label on at least ``agree`` of calibration copies."""
    keep = 1.0 - cal.flipped.mean(axis=0) >= agree
    return keep if keep.any() else np.eye(len(kappas), dtype=bool)[0]


Rule = Callable[[Stats, Stats, np.ndarray], np.ndarray]  # (stats, calibration, kappas) -> [m, N]


def r_max(s: Stats, c: Stats, k: np.ndarray) -> np.ndarray:
    return np.stack([s.score1.max(1), s.score2.max(1)])


def r_flips(s: Stats, c: Stats, k: np.ndarray) -> np.ndarray:
    return s.flipped.sum(1)[None].astype(float)


def r_perkappa(s: Stats, c: Stats, k: np.ndarray) -> np.ndarray:
    return np.concatenate([s.score1.T, s.score2.T])


def r_max_flips(s: Stats, c: Stats, k: np.ndarray) -> np.ndarray:
    return np.concatenate([r_max(s, c, k), r_flips(s, c, k)])


def r_perkappa_flips(s: Stats, c: Stats, k: np.ndarray) -> np.ndarray:
    return np.concatenate([r_perkappa(s, c, k), r_flips(s, c, k)])


def r_all(s: Stats, c: Stats, k: np.ndarray) -> np.ndarray:
    return np.concatenate([r_max(s, c, k), r_perkappa(s, c, k), r_flips(s, c, k)])


def _windowed_flips(agree: float) -> Rule:
    def rule(s: Stats, c: Stats, k: np.ndarray) -> np.ndarray:
        w = _window(c, k, agree)
        return s.flipped[:, w].sum(1)[None].astype(float)
    return rule


def _perkappa_wflips(agree: float) -> Rule:
    wf = _windowed_flips(agree)

    def rule(s: Stats, c: Stats, k: np.ndarray) -> np.ndarray:
        return np.concatenate([r_perkappa(s, c, k), wf(s, c, k)])
    return rule


def _max_wflips(agree: float) -> Rule:
    wf = _windowed_flips(agree)

    def rule(s: Stats, c: Stats, k: np.ndarray) -> np.ndarray:
        return np.concatenate([r_max(s, c, k), wf(s, c, k)])
    return rule


def _all_wflips(agree: float) -> Rule:
    wf = _windowed_flips(agree)

    def rule(s: Stats, c: Stats, k: np.ndarray) -> np.ndarray:
        return np.concatenate([r_max(s, c, k), r_perkappa(s, c, k), wf(s, c, k)])
    return rule


def r_margin(s: Stats, c: Stats, k: np.ndarray) -> np.ndarray:
    return -s.margin[None]


RULES: dict[str, Rule] = {
    "max scores (joint)": r_max,
    "flips": r_flips,
    "per-kappa": r_perkappa,
    "max + flips": r_max_flips,
    "per-kappa + flips": r_perkappa_flips,
    "max + per-kappa + flips": r_all,
    "flips, window 0.99": _windowed_flips(0.99),
    "max + flips window 0.99": _max_wflips(0.99),
    "per-kappa + flips window 0.99": _perkappa_wflips(0.99),
    "per-kappa + flips window 0.95": _perkappa_wflips(0.95),
    "all + flips window 0.99": _all_wflips(0.99),
    "(margin alone, not noise)": r_margin,
}


def _load(path: Path) -> tuple[np.ndarray, Stats, dict[str, tuple[Stats, Stats]]]:
    z = dict(np.load(path))
    get = lambda p: Stats(*(z[f"{p}/{f}"] for f in Stats._fields))  # noqa: E731
    attacks = sorted({k.split("/")[1] for k in z if k.startswith("adv/")})
    return z["kappas"], get("calibration"), {a: (get(f"clean/{a}"), get(f"adv/{a}"))
                                              for a in attacks}


def _paper_flags(cal: Stats, s: Stats, fpr: float) -> np.ndarray:
    k = allowed_count(fpr, len(cal.margin))
    t1 = order_threshold(np.sort(cal.score1.max(1)), k)
    t2 = order_threshold(np.sort(cal.score2.max(1)), k)
    return (s.score1.max(1) > t1) | (s.score2.max(1) > t2)


def evaluate_rule(flag: Callable[[Stats], np.ndarray], attacks: dict[str, tuple[Stats, Stats]]
                  ) -> tuple[str, float, float]:
    tp = fp = fn = tn = 0
    cw = []
    for name, (clean, adv) in attacks.items():
        m = detection_metrics(flag(clean), flag(adv))
        tp, fp, fn, tn = tp + m.tp, fp + m.fp, fn + m.fn, tn + m.tn
        if name.startswith("cw"):
            cw.append(m.recall)
    total = detection_metrics(np.r_[np.ones(fp, bool), np.zeros(tn, bool)],
                              np.r_[np.ones(tp, bool), np.zeros(fn, bool)])
    cell = f"{total.f2:.3f} ({total.precision:.2f} / {total.recall:.2f}; fpr {fp / (fp + tn):.3f})"
    return cell, min(cw) if cw else math.nan, total.f2


def analyse(cache: Path, seed: int, tag: str = "") -> str:
    lines = []
    for dataset in DATASETS:
        path = cache / dataset / f"rule-study-{seed}{tag}.npz"
        if not path.is_file():
            continue
        kappas, cal, attacks = _load(path)
        paper_rate = float(_paper_flags(cal, cal, 0.05).mean())
        lines += [f"### {dataset} ({len(cal.margin)} calibration images, "
                  f"{len(attacks)} attacks; paper rule flags {paper_rate:.3f} of calibration)",
                  "", "| rule | at the paper's rate: F2 (P / R; eval fpr) | min CW recall "
                  "| at 5%: F2 (P / R; eval fpr) | min CW recall |", "|---|---|---|---|---|"]
        cell, cw, _ = evaluate_rule(lambda s: _paper_flags(cal, s, 0.05), attacks)
        lines.append(f"| paper (5% per score) | {cell} | {cw:.2f} | | |")
        for name, rule in RULES.items():
            cells = []
            for target_rate in (paper_rate, 0.05):
                c_stat = rule(cal, cal, kappas)
                t = joint_level(c_stat, target_rate)
                cell, cw, _ = evaluate_rule(
                    lambda s: (rule(s, cal, kappas) > t[:, None]).any(axis=0), attacks)
                cells += [cell, f"{cw:.2f}"]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["collect", "analyse"])
    ap.add_argument("--dataset", choices=list(DATASETS))
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--kappas", help="LOW,HIGH,N,lin|log: study other noise scales")
    args = ap.parse_args()
    if args.command == "collect":
        print(collect(args.dataset, args.cache, args.data or default_data_dir(), args.seed,
                      args.kappas))
    else:
        tag = "-" + args.kappas.replace(",", "_") if args.kappas else ""
        text = analyse(args.cache, args.seed, tag)
        print(text)
        if args.out:
            from rpdetect._atomic import atomic_write_text

            atomic_write_text(args.out, text + "\n")


if __name__ == "__main__":
    main()
