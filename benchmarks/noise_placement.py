"""Where the engine's noise parts run: the first part of a threaded source on the caller's
thread (rpdetect since 2026-12-07), or every part on a thread of its own (before), on the
default path ``rpdetect.Detector(DET).detect(image)``, B = 1, back to back.

    python benchmarks/noise_placement.py --detector DET.onnx --classifier CLF.onnx
        [--calls 400] [--rounds 12] [--round-time 2] [--out DIR]

Two measurements, in one run:

* **paired, in one process**: two Detectors on the same file, one per placement, called in
  turn (the order swapped every pair); the median of the per-pair differences of their call
  times and its 90% bootstrap interval. Both sessions stop their workers' spinning after each
  run, as ``rpdetect.Detector`` sets it where the noise has threads of its own, so the two do
  not steal each other's cores.
* **over the floor, one process per round**: the classifier alone at batch n + 1 (the session
  ``rpdetect.Detector`` would open) and the default path with each placement, each
  configuration in a fresh process every round, configurations alternating; the median of the
  per-round ratios and its 90% bootstrap interval.

Where a part runs does not change the values it draws (``tests/engine/test_xoshiro.py``). The
"threads" placement sets a private attribute of the noise parts: a benchmark's liberty.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from rpdetect._atomic import atomic_write_text
from rpdetect.bench.machine import cpu_description, machine_info
from rpdetect.bench.stats import median_interval
from rpdetect.bench.worker import floor_run, fresh_process_rounds, timed_median_ms

PLACEMENTS = ("caller", "threads")


def _detector(path: str, placement: str):  # -> rpdetect.Detector
    import rpdetect

    det = rpdetect.Detector(path)
    if det.front != "engine" or det.noise_source.threads < 2:
        raise SystemExit(f"{path}: the engine does not draw this file's noise on several "
                         "threads here (an image too small, or one core)")
    if placement == "threads":
        for part in det.noise_source._parts:
            part.own_thread = True
    return det


def paired(args: argparse.Namespace) -> list[str]:
    """Both placements in this process, called in turn: per-pair differences."""
    dets = {p: _detector(str(args.detector), p) for p in PLACEMENTS}
    image = np.random.default_rng(0).random(dets["caller"].info.input_shape, dtype=np.float32)
    for _ in range(5):
        for det in dets.values():
            det.detect(image)
    times: dict[str, list[float]] = {p: [] for p in PLACEMENTS}
    for i in range(args.calls):
        order = PLACEMENTS if i % 2 else PLACEMENTS[::-1]
        for p in order:
            t = time.perf_counter()
            dets[p].detect(image)
            times[p].append(time.perf_counter() - t)
    for det in dets.values():
        det.close()
    caller, threads = (1e3 * np.asarray(times[p]) for p in PLACEMENTS)
    diff = caller - threads
    lo, hi = median_interval(diff)
    return ["", f"Paired, in one process: {args.calls} calls of each placement, in turn.", "",
            "| placement | median ms |", "|---|---|",
            f"| caller (first part on the caller's thread) | {np.median(caller):.2f} |",
            f"| threads (every part on its own thread) | {np.median(threads):.2f} |", "",
            f"caller - threads, median of the per-pair differences: **{np.median(diff):+.3f} ms**"
            f" [90% interval {lo:+.3f}, {hi:+.3f}]"]


def worker(config: dict) -> dict:
    """One configuration's timed calls in this process (``--worker JSON``): median ms."""
    if config["what"] == "floor":
        return timed_median_ms(floor_run(config["classifier"], config["inner_batch"]),
                               config["seconds"])
    det = _detector(config["detector"], config["what"])
    image = np.random.default_rng(0).random(det.info.input_shape, dtype=np.float32)
    return timed_median_ms(lambda: det.detect(image), config["seconds"])


def rounds(args: argparse.Namespace) -> list[str]:
    import rpdetect

    with rpdetect.Detector(args.detector) as det:
        inner = det.info.n + 1
    configs = {"floor": {"what": "floor", "classifier": str(args.classifier),
                         "inner_batch": inner}}
    configs.update({p: {"what": p, "detector": str(args.detector)} for p in PLACEMENTS})
    ms = fresh_process_rounds(__file__, configs, rounds=args.rounds,
                              round_time_s=args.round_time, rotate=True)
    floor = np.asarray(ms["floor"])
    lines = ["", f"Over the floor (`{args.classifier.name}` at batch {inner}): {args.rounds} "
             f"rounds of {args.round_time:g} s per configuration, each in a fresh process:", "",
             "| configuration | median ms (over rounds) | / floor, median of the rounds' ratios "
             "[90% interval] |", "|---|---|---|"]
    for name, values in ms.items():
        ratio = np.asarray(values) / floor
        lo, hi = median_interval(ratio)
        lines.append(f"| {name} | {np.median(values):.2f} | " + (
            "-" if name == "floor" else f"{np.median(ratio):.3f} [{lo:.3f}, {hi:.3f}]") + " |")
    ratio = np.asarray(ms["caller"]) / np.asarray(ms["threads"])
    lo, hi = median_interval(ratio)
    lines += ["", f"caller / threads, median of the rounds' ratios: {np.median(ratio):.4f} "
              f"[{lo:.4f}, {hi:.4f}]"]
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--detector", type=Path, help="a detector file (graph or input noise)")
    p.add_argument("--classifier", type=Path, help="the classifier inside it (the floor)")
    p.add_argument("--calls", type=int, default=400, help="paired calls of each placement")
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--round-time", type=float, default=2.0)
    p.add_argument("--out", type=Path, help="folder for README.md (default: print only)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    if args.detector is None or args.classifier is None:
        p.error("--detector and --classifier are needed")
    m = machine_info()
    lines = [f"{cpu_description(m)}, {m['usable_cores']} usable cores; "
             f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}",
             f"Command: `python benchmarks/noise_placement.py {' '.join(argv or sys.argv[1:])}`"]
    lines += paired(args)
    lines += rounds(args)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out / "README.md",
                          "# Where the engine's noise parts run\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
