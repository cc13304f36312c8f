"""How fast the C noise generator (``rpdetect.engine._normal``) is when built for each x86 ISA
it has a clone for (baseline SSE2, AVX2, AVX-512), one thread, one 224x224 image's noisy copies
per call (10 rows of 3 x 224 x 224 = 1.5 M values, ``x + kappa * eps``, as ``fill_scaled``
writes them); each build also checked to give the installed module's values. The installed
module runs the clone this CPU picks; a CPU without AVX-512 (AMD Zen 2/3, most Intel desktop
parts, many cloud instances) runs the AVX2 clone, so its speed there is this table's AVX2 row.

    python benchmarks/noise_isa.py [--runs 40] [--rev GIT_REV | --source OTHER/_normal.c]
        [--isas sse2,avx2,avx512f] [--detector DET.onnx --classifier CLF.onnx [--rounds 6]
        [--round-time 2]] [--out DIR]

``--rev`` / ``--source``: time another version of the file too (``--rev``: the one at that git
revision), beside the current one, in the same run; a version from before the file had its
``RP_NO_CLONES`` switch gets it added to its ``target_clones`` condition, nothing else.

``--detector`` / ``--classifier``: also what each build costs the default path, as a CPU with
only that ISA would run it: ``rpdetect.Detector(DET)`` (defaults; the engine draws the noise)
with its noise parts' module swapped for the build (a private attribute: a benchmark's liberty),
B = 1 back to back, over the floor (the classifier alone at batch n + 1, the session
``rpdetect.Detector`` would open); each configuration in its own process, configurations
alternating in ``--rounds`` rounds of ``--round-time`` seconds; median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from rpdetect._atomic import atomic_write_text
from rpdetect.bench.machine import cpu_description, cpu_flags, machine_info
from rpdetect.bench.worker import floor_run, fresh_process_rounds, timed_median_ms
from rpdetect.engine import noise
from rpdetect.testing import NORMAL_ISAS, build_normal, load_normal

ROWS, ROW = 10, 3 * 224 * 224
ROOT = Path(__file__).resolve().parent.parent
CLONES_IF = re.compile(
    r"^(#if defined\(__x86_64__\)[^\n]*?)\s*$(?=\n#define RP_CLONES __attribute__)", re.MULTILINE)


def other_version(text: str, folder: Path) -> Path:
    """``text`` (a version of _normal.c) written into ``folder``, with the RP_NO_CLONES switch
    added where it has none."""
    if "RP_NO_CLONES" not in text:
        text, count = CLONES_IF.subn(r"\1 && !defined(RP_NO_CLONES)", text)
        if count != 1:
            raise SystemExit("that _normal.c has no target_clones line to switch off")
    path = folder / "_normal.c"
    path.write_text(text)
    return path


def time_fill(module: object, runs: int) -> tuple[float, np.ndarray]:
    """Median ms of one image's 10 rows, and the first call's values."""
    state = np.random.default_rng(0).integers(1, 2**32, 64, dtype=np.uint64).astype(np.uint32)
    base = np.random.default_rng(1).random(ROW, dtype=np.float32)
    out = np.empty((ROWS, ROW), np.float32)
    kappas = np.linspace(0.01, 0.1, ROWS)

    def once() -> None:
        for i in range(ROWS):
            module.fill(state, out[i], base, float(kappas[i]))  # type: ignore[attr-defined]

    once()
    first = out.copy()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        once()
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times)), first


def worker(config: dict) -> dict:
    """One configuration's timed calls in this process (``--worker JSON``): median ms."""
    import rpdetect

    if config["what"] == "floor":
        return timed_median_ms(floor_run(config["classifier"], config["inner_batch"]),
                               config["seconds"])
    det = rpdetect.Detector(config["detector"])
    if det.front != "engine" or det.noise_source.generator != "xoshiro":
        raise SystemExit(f"{config['detector']}: the engine does not draw this file's noise "
                         "with the C generator here")
    if config.get("build"):  # the file main() built and timed
        module = load_normal(config["build"])
        for part in det.noise_source._parts:
            part.fast = module
    image = np.random.default_rng(0).random(det.info.input_shape, dtype=np.float32)
    return timed_median_ms(lambda: det.detect(image), config["seconds"])


def detector_rounds(args: argparse.Namespace, builds: list[tuple[str, str, Path]]) -> list[str]:
    """The default path per build over the floor, each configuration in its own process."""
    import rpdetect

    with rpdetect.Detector(args.detector) as det:
        inner = det.info.n + 1
    configs = {"floor": {"what": "floor", "classifier": str(args.classifier),
                         "inner_batch": inner},
               "installed": {"what": "detector", "detector": str(args.detector)}}
    for label, isa, built in builds:
        configs[f"{label} {isa}"] = {"what": "detector", "detector": str(args.detector),
                                     "build": str(built)}
    ms = fresh_process_rounds(__file__, configs, rounds=args.rounds,
                              round_time_s=args.round_time)
    floor = np.asarray(ms["floor"])
    lines = ["", f"The default path, `rpdetect.Detector({args.detector.name})`, B = 1, per build "
             f"(floor: `{args.classifier.name}` at batch {inner}); {args.rounds} rounds of "
             f"{args.round_time:g} s per configuration, each in its own process:", "",
             "| configuration | median ms (median over rounds) | / floor, median of the rounds' "
             "ratios (min - max) |", "|---|---|---|"]
    for name, values in ms.items():
        ratio = np.asarray(values) / floor
        lines.append(f"| {name} | {np.median(values):.2f} | " + (
            "-" if name == "floor" else
            f"{np.median(ratio):.3f} ({ratio.min():.3f} - {ratio.max():.3f})") + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=40)
    other = p.add_mutually_exclusive_group()
    other.add_argument("--rev", help="time _normal.c at this git revision too")
    other.add_argument("--source", type=Path, help="another version of _normal.c to time too")
    p.add_argument("--out", type=Path, help="folder for README.md (default: print only)")
    p.add_argument("--detector", type=Path, help="a detector file: time its default path too")
    p.add_argument("--classifier", type=Path, help="the classifier inside it (the floor)")
    p.add_argument("--isas", default=",".join(NORMAL_ISAS),
                   help=f"comma-separated, of {', '.join(NORMAL_ISAS)} (default: all)")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--round-time", type=float, default=2.0)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        import json

        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    isas = [i for i in args.isas.split(",") if i]
    if not isas or set(isas) - set(NORMAL_ISAS):
        p.error(f"--isas: expected some of {', '.join(NORMAL_ISAS)}, got {args.isas!r}")
    if (args.detector is None) != (args.classifier is None):
        p.error("--detector and --classifier go together")
    installed = noise._fast_module()
    if installed is None:
        p.error("the C extension rpdetect.engine._normal is not built here")
    flags = cpu_flags()
    m = machine_info()
    lines = [f"{cpu_description(m)}, {m['usable_cores']} usable cores; "
             f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}; one thread; "
             f"{ROWS * ROW / 1e6:.2f} M values a call (one 224x224 image, n = 10); median of "
             f"{args.runs} calls",
             f"Command: `python benchmarks/noise_isa.py {' '.join(argv or sys.argv[1:])}`".rstrip(),
             "", "| build | ISA | median ms | ns a value | same values as installed |",
             "|---|---|---|---|---|"]
    ms, reference = time_fill(installed, args.runs)
    lines.append(f"| installed (clone picked at load) | - | {ms:.2f} | "
                 f"{ms * 1e6 / (ROWS * ROW):.2f} | - |")
    with tempfile.TemporaryDirectory() as tmp:
        sources: list[tuple[str, Path | None]] = [("current", None)]
        builds: list[tuple[str, str, Path]] = []  # label, ISA, the built file
        if args.rev:
            text = subprocess.run(["git", "show", f"{args.rev}:src/rpdetect/engine/_normal.c"],
                                  cwd=ROOT, check=True, capture_output=True, text=True).stdout
            sources.append((f"at {args.rev}", other_version(text, Path(tmp))))
        elif args.source:
            sources.append((str(args.source), other_version(args.source.read_text(), Path(tmp))))
        for label, source in sources:
            for isa in isas:
                need = NORMAL_ISAS[isa][1]
                if need not in flags:
                    lines.append(f"| {label} | {isa} | not run: this CPU lacks {need} | - | - |")
                    continue
                folder = Path(tmp) / re.sub(r"[^A-Za-z0-9_.-]", "_", label)
                module = build_normal(isa, folder, source)
                builds.append((label, isa, Path(module.__file__)))  # type: ignore[attr-defined]
                ms, values = time_fill(module, args.runs)
                same = "yes" if np.array_equal(values, reference) else "**no**"
                lines.append(f"| {label} | {isa} | {ms:.2f} | {ms * 1e6 / (ROWS * ROW):.2f} | "
                             f"{same} |")
        if args.detector:
            lines += detector_rounds(args, builds)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out / "README.md", "# The noise generator per ISA\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
