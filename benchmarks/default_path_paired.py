"""The default path against its floor, paired call by call in one process (issue 14).

    python benchmarks/default_path_paired.py --detector DET.onnx --classifier CLF.onnx
        [--triples 400] [--out DIR]

``rpdetect bench`` times each configuration in a worker process of its own, in rounds of at
least half a second; on a shared machine the load moves between the rounds, and its per-round
ratios scatter by +-20%. Here three things run in turn in one process, one call each, the order
rotated every triple: the floor (the classifier alone at batch n + 1 on a fixed feed), the
floor's twin (a second session of the same file: the A/A check), and ``rpdetect.Detector(DET)
.detect(image)`` with default options. Each triple's ratios (detector / floor, twin / floor)
come from calls a few hundred milliseconds apart; the report gives their medians with 90%
bootstrap intervals. This needs the Detector's session to stop its workers' spinning after each
run (``session.force_spinning_stop``, which ``rpdetect.Detector`` sets where it draws the noise
on threads of its own: large images), set in the floor's sessions too; otherwise the three
sessions' idle workers spin on the cores the next call runs on (a 32x32 floor took about 3x
its time in ``rpdetect bench`` that way), and the script refuses: ``rpdetect bench``, a process
per configuration, is the measurement there.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from datetime import datetime, timezone
from itertools import permutations
from pathlib import Path

import numpy as np

from rpdetect._atomic import atomic_write_text
from rpdetect.bench.machine import cpu_description, machine_info
from rpdetect.bench.stats import median_interval
from rpdetect.engine.session import SessionBuilder

ROLES = ("floor", "twin", "detector")
SPIN_STOP = "session.force_spinning_stop"


def paired_times(detector: Path, classifier: Path, triples: int, *, warmup: int = 5,
                 threads: int | None = None) -> dict[str, np.ndarray]:
    """Milliseconds of each role's calls, ``triples`` of each, called in turn (the order
    rotated through all six every six triples). ValueError where the Detector keeps its
    workers spinning (see the module doc)."""
    import rpdetect

    det = rpdetect.Detector(detector, providers="cpu", threads=threads)
    image = np.random.default_rng(0).random(det.info.input_shape, dtype=np.float32)
    feed_x = np.random.default_rng(1).random((det.info.n + 1, *det.info.input_shape),
                                             dtype=np.float32)
    runs = {"detector": lambda: det.detect(image)}
    try:
        stop = det.session.get_session_options().get_session_config_entry(SPIN_STOP)
    except Exception:  # onnxruntime raises where the entry was never set
        stop = None
    if stop != "1":
        det.close()
        raise ValueError(f"{detector}: rpdetect.Detector leaves its workers spinning after a run "
                         f"here (small images: the noise is drawn on the caller's thread), so "
                         f"sessions in one process would spin on each other's cores; measure "
                         f"it with rpdetect bench (a process per configuration)")
    config = {SPIN_STOP: stop}
    for role in ("floor", "twin"):
        session = SessionBuilder.cpu(threads, config=config).build(classifier).session
        feed = {session.get_inputs()[0].name: feed_x}
        runs[role] = (lambda s, f: lambda: s.run(None, f))(session, feed)
    orders = list(permutations(ROLES))
    try:
        for _ in range(warmup):
            for run in runs.values():
                run()
        times: dict[str, list[float]] = {r: [] for r in ROLES}
        for i in range(triples):
            for role in orders[i % len(orders)]:
                t = time.perf_counter()
                runs[role]()
                times[role].append(time.perf_counter() - t)
    finally:
        det.close()
    return {r: 1e3 * np.asarray(v) for r, v in times.items()}


def report(times: dict[str, np.ndarray]) -> list[str]:
    """The table of medians and the per-triple ratios with their 90% intervals."""
    floor = times["floor"]
    lines = ["| call | median ms | p90 ms | / floor, median of the per-triple ratios [90% "
             "interval] |", "|---|---|---|---|"]
    for role in ROLES:
        t = times[role]
        cell = "-"
        if role != "floor":
            ratio = t / floor
            lo, hi = median_interval(ratio)
            cell = f"**{np.median(ratio):.4f}** [{lo:.4f}, {hi:.4f}]"
        lines.append(f"| {role} | {np.median(t):.2f} | {np.percentile(t, 90):.2f} | {cell} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--detector", type=Path, required=True, help="a detector file")
    p.add_argument("--classifier", type=Path, required=True,
                   help="the classifier inside it (the floor)")
    p.add_argument("--triples", type=int, default=400, help="calls of each, in turn")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads (default: ONNX Runtime's, one per core)")
    p.add_argument("--out", type=Path, help="folder for README.md (default: print only)")
    args = p.parse_args(argv)
    for name in ("detector", "classifier"):
        if not getattr(args, name).is_file():
            p.error(f"--{name}: no file {getattr(args, name)}")
    if args.triples < 10:
        p.error("--triples: at least 10")
    m = machine_info()
    start = datetime.now(timezone.utc).isoformat(timespec="seconds")
    try:
        times = paired_times(args.detector, args.classifier, args.triples, threads=args.threads)
    except ValueError as exc:
        p.error(str(exc))
    command = shlex.join(["python", "benchmarks/default_path_paired.py",
                          *(argv if argv is not None else sys.argv[1:])])
    lines = [f"{cpu_description(m)}, {m['usable_cores']} usable cores; {start}; "
             f"{args.triples} triples (floor, the floor's twin, rpdetect.Detector default) "
             f"called in turn in one process, the order rotated; every session with "
             f"{SPIN_STOP}=1.", "",
             f"Command: `{command}`", "", *report(times)]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out / "README.md",
                          "# The default path against its floor, paired call by call\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
