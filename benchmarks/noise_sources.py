"""Where the noise of one detector run can come from, and what each way costs, against the floor
(the classifier alone at batch n + 1), in ONE process with short interleaved blocks:

* ``graph``: the fused detector, ONNX Runtime's RandomNormalLike inside the graph;
* ``input, no draw``: the noise='input' detector fed one fixed noise array (the glue alone:
  Mul, Add, Concat; a lower bound, not a valid way to run the method);
* ``input, <generator> x<threads>``: fresh noise every run from rpdetect's NoiseSource;
* ``input, opencv x2, prefetched``: drawn one run ahead on a background thread.

It also checks which engine ONNX Runtime's CPU random ops use: std::minstd_rand0 (the
libstdc++ default_random_engine) satisfies u[k+1] = 16807 * u[k] mod 1 up to float rounding, so
its stream repeats after 2**31 - 2 draws.

    python benchmarks/noise_sources.py CLASSIFIER.onnx [--rounds 8] [--block 0.5] [--threads 2]
    python benchmarks/noise_sources.py - --period-check   # when RandomNormalLike's stream repeats

CLASSIFIER.onnx: a pixel-space classifier with a dynamic batch axis (e.g. the export cached by
benchmarks/bench_latency.py under cache/bench-latency/).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from rpdetect.engine.noise import MINSTD_RAND0_PERIOD, POLAR_UNIFORMS_PER_NORMAL, NoiseSource
from rpdetect.export.graph import DetectorConfig, build_detector


def session(model: onnx.ModelProto, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def ort_engine_check(n: int = 100_000) -> tuple[float, float]:
    """Median |u[k+1] - 16807 u[k] mod 1| of ORT's RandomUniform (minstd_rand0 predicts ~1e-4,
    i.e. float rounding x 16807) and the same for minstd_rand's 48271 (unrelated: ~0.25)."""
    g = helper.make_graph(
        [helper.make_node("RandomUniform", [], ["u"], dtype=TensorProto.FLOAT, shape=[n],
                          seed=7.0)], "u", [], [helper.make_tensor_value_info(
                              "u", TensorProto.FLOAT, [n])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])
    u = session(model, 1).run(None, {})[0].astype(np.float64)

    def misfit(a: int) -> float:
        d = np.abs((a * u[:-1]) % 1.0 - u[1:])
        return float(np.median(np.minimum(d, 1 - d)))

    return misfit(16807), misfit(48271)


def ort_normal_repeat(values_per_run: int = 1 << 24, head: int = 64, max_runs: int = 120
                      ) -> tuple[int, int] | None:
    """Run a bare RandomNormalLike (fixed seed) until the first ``head`` values of run 0 come
    back; (run, offset) where they do, or None. A sequence may span two runs."""
    g = helper.make_graph(
        [helper.make_node("RandomNormalLike", ["x"], ["y"], dtype=TensorProto.FLOAT, seed=3.0)],
        "n", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [values_per_run])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [values_per_run])])
    s = session(helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)]), 1)
    x = np.zeros(values_per_run, np.float32)
    first = s.run(None, {"x": x})[0][:head].copy()
    prev = np.zeros(0, np.float32)
    for run in range(1, max_runs):
        cur = s.run(None, {"x": x})[0]
        window = np.concatenate([prev[-head:], cur])
        for i in np.flatnonzero(window == first[0]):
            if i + head <= len(window) and np.array_equal(window[i:i + head], first):
                return run, int(i) - len(prev[-head:])
        prev = cur
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("classifier")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--block", type=float, default=0.5, help="seconds per case per round")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--period-check", action="store_true",
                   help="only run RandomNormalLike until its first values come back (~30 s)")
    args = p.parse_args(argv)
    if args.period_check:
        n = 1 << 24
        found = ort_normal_repeat(n)
        predicted = MINSTD_RAND0_PERIOD / POLAR_UNIFORMS_PER_NORMAL
        if found is None:
            print(f"RandomNormalLike, {n} values a run: no repeat within 120 runs")
        else:
            after = found[0] * n + found[1]
            print(f"RandomNormalLike, {n} values a run: the first 64 values of run 0 come back "
                  f"in run {found[0]} at offset {found[1]}, after {after:,} values = "
                  f"{after / predicted:.6f} x (2^31 - 2) * pi / 4")
        return 0

    cls = onnx.load(args.classifier)
    graph_det = build_detector(cls, DetectorConfig())
    input_det = build_detector(cls, DetectorConfig(noise="input"))
    c, h, w = (d.dim_value for d in graph_det.graph.input[0].type.tensor_type.shape.dim[1:])
    n = len(DetectorConfig().kappas)
    shape = (1, n, c, h, w)
    rng = np.random.default_rng(0)
    image = rng.random((1, c, h, w), dtype=np.float32)
    batch = rng.random((n + 1, c, h, w), dtype=np.float32)
    fixed = rng.standard_normal(shape, dtype=np.float32)
    s_floor, s_graph, s_input = (session(m, args.threads) for m in (cls, graph_det, input_det))
    x_name = cls.graph.input[0].name

    sources = {
        "input, opencv x1": NoiseSource(shape, generator="opencv", threads=1),
        "input, opencv x2": NoiseSource(shape, generator="opencv", threads=2),
        "input, numpy x1": NoiseSource(shape, generator="numpy", threads=1),
        "input, opencv x2, prefetched": NoiseSource(shape, generator="opencv", threads=2,
                                                    prefetch=1),
    }
    cases: dict[str, Callable[[], object]] = {
        "floor": lambda: s_floor.run(None, {x_name: batch}),
        "graph": lambda: s_graph.run(None, {"image": image}),
        "input, no draw": lambda: s_input.run(None, {"image": image, "noise": fixed}),
    }
    for name, source in sources.items():
        def run(source: NoiseSource = source) -> object:
            out = s_input.run(None, {"image": image, "noise": source.draw()})
            source.refill()
            return out
        cases[name] = run

    for f in cases.values():  # warm-up
        for _ in range(3):
            f()
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.rounds):
        for name, f in cases.items():
            end = time.perf_counter() + args.block
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                f()
                times[name].append(time.perf_counter() - t0)
    for source in sources.values():
        source.close()

    floor = float(np.median(times["floor"]))
    print(f"{args.classifier}: {c}x{h}x{w}, n={n}, {args.threads} threads, {args.rounds} rounds "
          f"of {args.block} s blocks, onnxruntime {ort.__version__}")
    print("| way | median ms | / floor | runs |\n|---|---|---|---|")
    for name, v in times.items():
        med = float(np.median(v))
        print(f"| {name} | {med * 1e3:.2f} | {med / floor:.3f} | {len(v)} |")
    for label, src in (("opencv x1", NoiseSource(shape, threads=1)),
                       ("numpy x1", NoiseSource(shape, generator="numpy"))):
        with src:
            src.draw()
            t0 = time.perf_counter()
            for _ in range(10):
                src.draw()
        print(f"draw alone, {label}: {(time.perf_counter() - t0) / 10 * 1e3:.2f} ms "
              f"({int(np.prod(shape))} values)")
    fit0, fit = ort_engine_check()
    print(f"ORT RandomUniform vs minstd_rand0's recurrence: median misfit {fit0:.1e} "
          f"(minstd_rand's: {fit:.2f}); period 2**31 - 2 = {2**31 - 2} draws")
    return 0


if __name__ == "__main__":
    sys.exit(main())
