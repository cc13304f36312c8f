"""How many images the engine puts in one run: ``rpdetect.Detector(DET, images_per_run=k)``
for each k, ``detect_many`` on B images a call, back to back.

    python benchmarks/images_per_run.py --detector DET.onnx [--images 16] [--k 1,16]
        [--rounds 10] [--calls 3] [--out DIR]

Two measurements, in one run:

* **per-image cost, paired in one process**: one Detector per k on the same file, each round
  ``--calls`` calls of each (the order swapped every round); per round, the median call of each
  k over the first k's: the median of the rounds' ratios and its 90% bootstrap interval.
* **memory**: each k in a fresh process (three calls), its peak RSS.

The answers do not depend on k (``tests/engine/test_front.py``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from rpdetect._atomic import atomic_write_text
from rpdetect.bench.machine import cpu_description, machine_info
from rpdetect.bench.stats import median_interval
from rpdetect.bench.worker import peak_rss_bytes


def _images(det, count: int) -> np.ndarray:  # det: rpdetect.Detector
    return np.random.default_rng(0).random((count, *det.info.input_shape), dtype=np.float32)


def paired(args: argparse.Namespace, ks: list[int]) -> tuple[list[str], dict]:
    import rpdetect

    dets = {k: rpdetect.Detector(args.detector, images_per_run=k) for k in ks}
    images = _images(dets[ks[0]], args.images)
    for det in dets.values():  # ONNX Runtime plans its memory on the 1st run, takes it on the 2nd
        for _ in range(3):
            det.detect_many(images, progress=False)
    ms: dict[int, list[float]] = {k: [] for k in ks}
    for r in range(args.rounds):
        for k in (ks if r % 2 == 0 else ks[::-1]):
            times = []
            for _ in range(args.calls):
                t = time.perf_counter()
                dets[k].detect_many(images, progress=False)
                times.append(time.perf_counter() - t)
            ms[k].append(1e3 * float(np.median(times)) / args.images)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"k={k} {v[-1]:.2f} ms/image" for k, v in ms.items()), file=sys.stderr)
    for det in dets.values():
        det.close()
    base = np.asarray(ms[ks[0]])
    lines = ["", f"Per-image cost, paired in one process: {args.images} images a call, "
             f"{args.rounds} rounds of {args.calls} calls of each k.", "",
             f"| images_per_run | ms per image (median over rounds) | / k = {ks[0]}, median of "
             "the rounds' ratios [90% interval] |", "|---|---|---|"]
    out = {}
    for k, values in ms.items():
        ratio = np.asarray(values) / base
        lo, hi = median_interval(ratio)
        out[k] = {"ms_per_image": values, "ratio_median": float(np.median(ratio)),
                  "ratio_ci90": [lo, hi]}
        lines.append(f"| {k} | {np.median(values):.2f} | " + (
            "-" if k == ks[0] else f"**{np.median(ratio):.3f}** [{lo:.3f}, {hi:.3f}]") + " |")
    return lines, out


def worker(config: dict) -> dict:
    """``--worker JSON``: three calls with one k in this process, then its peak RSS."""
    import rpdetect

    det = rpdetect.Detector(config["detector"], images_per_run=config["k"])
    images = _images(det, config["images"])
    for _ in range(3):
        det.detect_many(images, progress=False)
    return {"peak_rss_mib": peak_rss_bytes() / 2**20}


def memory(args: argparse.Namespace, ks: list[int]) -> tuple[list[str], dict]:
    rss = {}
    for k in ks:
        config = {"detector": str(args.detector), "k": k, "images": args.images}
        done = subprocess.run([sys.executable, __file__, "--worker", json.dumps(config)],
                              check=True, capture_output=True, text=True)
        rss[k] = json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_mib"]
    return (["", "Peak RSS, each k in a fresh process (three calls):", "",
             "| images_per_run | peak RSS MiB |", "|---|---|"]
            + [f"| {k} | {v:.0f} |" for k, v in rss.items()], rss)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--detector", type=Path, help="a detector file")
    p.add_argument("--images", type=int, default=16, help="images per detect_many call")
    p.add_argument("--k", default="1,16", help="comma-separated images_per_run values (the "
                   "first is the reference)")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--calls", type=int, default=3)
    p.add_argument("--out", type=Path, help="folder for README.md and results.json "
                   "(default: print only)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    if args.detector is None:
        p.error("--detector is needed")
    try:
        ks = [int(v) for v in args.k.split(",")]
    except ValueError:
        p.error(f"--k: expected comma-separated integers, got {args.k!r}")
    if len(ks) < 2 or min(ks) < 1 or args.images < 1 or args.rounds < 1 or args.calls < 1:
        p.error("--k needs two or more values >= 1; --images, --rounds, --calls >= 1")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    m = machine_info()
    command = f"python benchmarks/images_per_run.py {' '.join(argv or sys.argv[1:])}"
    lines = [f"{cpu_description(m)}, {m['usable_cores']} usable cores; "
             f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}",
             f"Command: `{command}`"]
    timing, cost = paired(args, ks)
    mem, rss = memory(args, ks)
    text = "\n".join(lines + timing + mem) + "\n"
    print(text)
    if args.out:
        atomic_write_text(args.out / "README.md", "# Images per run of the engine\n\n" + text)
        atomic_write_text(args.out / "results.json", json.dumps(
            {"command": command, "machine": m, "cost": cost, "peak_rss_mib": rss},
            indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
