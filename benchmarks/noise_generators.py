"""How fast each N(0, 1) generator of ``rpdetect.engine.noise`` writes one 224x224 image's noisy
copies (``NoiseSource.fill_scaled``: 10 x 3 x 224 x 224 = 1.5 M values, ``x + kappa * eps``),
on 1 and 2 threads, with nothing else running. Medians of ``--runs`` calls, in one process.

    python benchmarks/noise_generators.py [--runs 50]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from rpdetect.bench.machine import cpu_description, machine_info
from rpdetect.engine.noise import NOISE_GENERATORS, NoiseSource, default_generator


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=50)
    args = p.parse_args(argv)
    shape = (10, 3, 224, 224)
    base = np.random.default_rng(0).random(shape[1:], dtype=np.float32)
    out = np.empty(shape, np.float32)
    kappas = list(np.linspace(0.01, 0.1, 10))
    m = machine_info()
    print(f"{cpu_description(m)}, {m['usable_cores']} usable cores; default generator "
          f"{default_generator()}; 1.5 M values per call\n")
    print("| generator | threads | median ms | ns a value |\n|---|---|---|---|")
    for generator in NOISE_GENERATORS:
        if generator == "xoshiro" and default_generator() != "xoshiro":
            continue  # the C extension is not built here
        for threads in (1, 2):
            with NoiseSource(shape, seed=0, generator=generator, threads=threads) as source:
                source.fill_scaled(out, base, kappas)
                times = []
                for _ in range(args.runs):
                    t = time.perf_counter()
                    source.fill_scaled(out, base, kappas)
                    times.append(time.perf_counter() - t)
            ms = 1e3 * float(np.median(times))
            print(f"| {generator} | {threads} | {ms:.2f} | {ms * 1e6 / out.size:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
