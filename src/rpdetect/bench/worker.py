"""The process that times one configuration: ``python -m rpdetect.bench.worker``.

Protocol: one JSON object per line on stdin, one JSON reply per line on stdout (the worker
moves anything else written to its stdout, by C libraries too, to stderr). Requests:

* ``{"op": "setup", "workload": {...}}`` -> ``{"ok": true, "setup_s", "providers"}``: builds
  the session or torch model (see ``rpdetect.bench.cases`` for workload fields);
* ``{"op": "run", "min_time_s": t, "min_runs": k, "gap_s": g}`` -> ``{"ok": true,
  "times_s": [...]}``: runs until both ``t`` seconds and ``k`` runs are reached, each run timed
  with ``time.perf_counter``, sleeping ``g`` seconds (default 0, not timed) after each;
* ``{"op": "profile", "runs": k, "dir": d}`` -> ``{"ok": true, "nodes": {name: {"op", "us"}},
  "run_us"}``: an ONNX Runtime profile of k runs (median kernel time per node);
* ``{"op": "peak"}`` -> ``{"ok": true, "peak_rss_bytes"}``: the process's RSS high-water mark;
* ``{"op": "exit"}``.

Errors come back as ``{"ok": false, "error": "...", "skip": bool}``; ``skip`` marks a provider
that ONNX Runtime did not start (the configuration is reported as skipped, not failed).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .cases import DetectorWorkload, OnnxWorkload, TorchWorkload, Workload, workload_from_dict
from .profile import node_times

__all__ = ["Worker", "floor_run", "fresh_process_rounds", "main", "peak_rss_bytes",
           "timed_median_ms"]

Run = Callable[[], object]


class SkipCase(Exception):
    """The configuration cannot run here for a reason that is not a bug (provider missing)."""


def floor_run(classifier: str | Path, inner_batch: int, *, seed: int = 0) -> Run:
    """The floor for the ad-hoc benchmarks that start a process per configuration and round
    (``benchmarks/noise_isa.py``, ``noise_placement.py``): the classifier alone at
    ``inner_batch`` on a fixed random feed, in the session ``rpdetect.Detector`` opens by
    default."""
    from ..engine.session import SessionBuilder

    session = SessionBuilder().build(classifier).session
    arg = session.get_inputs()[0]
    shape = [int(d) for d in arg.shape[1:]]
    feed = {arg.name: np.random.default_rng(seed).random((inner_batch, *shape),
                                                          dtype=np.float32)}
    return lambda: session.run(None, feed)


def timed_median_ms(run: Run, seconds: float, *, min_runs: int = 5, warmup: int = 3
                    ) -> dict[str, float]:
    """``run`` called ``warmup`` times, then timed for ``seconds`` (and ``min_runs`` calls):
    ``{"ms": median, "calls": count}``."""
    for _ in range(warmup):
        run()
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < min_runs:
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return {"ms": 1e3 * float(np.median(times)), "calls": len(times)}


def fresh_process_rounds(script: str | Path, configs: dict[str, dict[str, Any]], *, rounds: int,
                         round_time_s: float, rotate: bool = False) -> dict[str, list[float]]:
    """Median ms per configuration and round, each configuration timed in a fresh process of
    ``script --worker JSON`` every round (the script prints ``timed_median_ms``'s JSON last);
    ``rotate`` turns the order by one each round. Progress goes to stderr."""
    import subprocess

    ms: dict[str, list[float]] = {name: [] for name in configs}
    names = list(configs)
    for r in range(rounds):
        shift = r % len(names) if rotate else 0
        for name in names[shift:] + names[:shift]:
            config = {**configs[name], "seconds": round_time_s}
            done = subprocess.run([sys.executable, str(script), "--worker", json.dumps(config)],
                                  check=True, capture_output=True, text=True)
            ms[name].append(json.loads(done.stdout.strip().splitlines()[-1])["ms"])
        print(f"round {r + 1}/{rounds}: " + ", ".join(
            f"{name} {v[-1]:.2f}" for name, v in ms.items()), file=sys.stderr)
    return ms


def peak_rss_bytes(*, status: Path = Path("/proc/self/status")) -> int:
    """RSS high-water mark of this process: ``VmHWM`` on Linux, else ``getrusage``.

    Linux's ``getrusage(RUSAGE_SELF).ru_maxrss`` carries the parent's high-water mark across
    fork + exec, so a worker started by a big parent would report the parent's peak; VmHWM
    belongs to the worker's own address space."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # macOS: bytes, Linux: KiB


def _ort_session(w: OnnxWorkload, *, profile_prefix: str | None = None) -> Any:
    """The session ``rpdetect.Detector`` would open (``rpdetect.engine.session``); a provider
    the session did not start is a skipped configuration, not a failure."""
    from ..engine.session import ProviderNotStarted

    try:
        return w.session_builder().build(w.model, profile_prefix=profile_prefix).session
    except ProviderNotStarted as exc:
        raise SkipCase(str(exc)) from exc


def _ort_run(w: OnnxWorkload, session: Any) -> Run:
    """One run = session.run on a fixed image feed; inputs named in ``fresh_normal`` (the
    ``noise`` input of noise='input' detectors) are drawn anew for every run, as a user must."""
    rng = np.random.default_rng(0)
    fresh = set(w.fresh_normal)
    feed: dict[str, np.ndarray] = {}
    fresh_shapes: dict[str, tuple[int, ...]] = {}
    for arg in session.get_inputs():
        shape = tuple(d if isinstance(d, int) else w.batch for d in arg.shape)
        if arg.name in fresh:
            fresh_shapes[arg.name] = shape
        elif arg.type == "tensor(float)":
            feed[arg.name] = rng.random(shape, dtype=np.float32)
        elif arg.type == "tensor(uint8)":
            feed[arg.name] = rng.integers(0, 256, shape, dtype=np.uint8)
        else:
            raise ValueError(f"input {arg.name!r}: cannot make a feed of {arg.type}")

    # the noise input is drawn inside every timed run as rpdetect.Detector draws it: a
    # NoiseSource (its generator and threads from the workload), optionally prefetched one run
    # ahead on a background thread as Detector(prefetch_noise=...) does (fresh arrays), else
    # drawn in place into one buffer kept for the worker's life, as the engine fills its own
    # (a fresh array per run would make every run page-fault in new memory: at 16 images of
    # 224x224 its 96 MB cost 2.8 ms per image against 1.15 ms for a refill in place)
    from ..engine.noise import NoiseSource

    sources = {name: NoiseSource(shape, seed=0, prefetch=w.prefetch,
                                 threads=w.settings.noise_threads,
                                 generator=w.settings.noise_generator)  # type: ignore[arg-type]
               for name, shape in fresh_shapes.items()}
    buffers = {} if w.prefetch else {name: np.empty(shape, np.float32)
                                     for name, shape in fresh_shapes.items()}

    def run() -> object:
        for name, source in sources.items():
            if name in buffers:
                source.fill(buffers[name])
                feed[name] = buffers[name]
            else:
                feed[name] = source.draw()
        out = session.run(None, feed)
        for source in sources.values():
            source.refill()  # a prefetched next draw starts once this run is done
        return out

    return run


def _detector_run(w: DetectorWorkload) -> tuple[Run, list[str]]:
    """One run = ``rpdetect.Detector.detect`` on one float CHW image (``detect_many`` on B of
    them), as a user calls it: image checks, the engine's front where it builds it, the
    session, the results."""
    from ..engine import Detector
    from ..engine.session import ProviderNotStarted

    s = w.settings
    try:
        det = Detector(w.model, session_builder=w.session_builder(), engine_noise=w.engine_noise,
                       prefetch_noise=w.prefetch, noise_generator=s.noise_generator,  # type: ignore[arg-type]
                       noise_threads=s.noise_threads)
    except ProviderNotStarted as exc:
        raise SkipCase(str(exc)) from exc
    rng = np.random.default_rng(0)
    images = rng.random((w.batch, *det.input_shape), dtype=np.float32)
    if w.batch == 1:
        return (lambda: det.detect(images[0])), list(det.providers)
    return (lambda: det.detect_many(images, progress=False)), list(det.providers)


def _torch_run(w: TorchWorkload) -> Run:
    """What a user would write without rpdetect: the torch module in eager mode."""
    import torch

    from ..export.torch_export import load_module
    from ..reference import noisy_copies, reference_scores

    torch.set_num_threads(w.threads)
    model = load_module(w.model.spec, w.model.weights)
    c, h, w_ = w.model.input_shape
    mean = torch.tensor(w.model.mean or [0.0], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(w.model.std or [1.0], dtype=torch.float32).view(1, -1, 1, 1)
    kappas = np.asarray(w.kappas, dtype=np.float64)
    n = kappas.size
    rng = np.random.default_rng(0)
    image = rng.random((1, c, h, w_), dtype=np.float32)

    if w.kind == "torch-naive":
        def classify(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return model((torch.from_numpy(x) - mean) / std).numpy()

        def naive() -> object:
            # 1 + n separate forward passes at batch 1, scores by the numpy reference
            noise = rng.standard_normal((n, c, h, w_), dtype=np.float32)
            copies = noisy_copies(image[0], noise, kappas).astype(np.float32)
            z_clean = classify(image)
            z_noisy = np.concatenate([classify(copies[i:i + 1]) for i in range(n)])
            return reference_scores(z_clean, z_noisy[None])

        return naive

    from ..reference_torch import noisy_copies as torch_copies, scores

    x = torch.from_numpy(image)
    k = torch.tensor(kappas, dtype=torch.float32)

    def batched() -> object:
        # one forward pass at batch 1 + n, scores by rpdetect.reference_torch
        with torch.inference_mode():
            copies = torch_copies(x, torch.randn(1, n, c, h, w_), k)[0]
            z = model((torch.cat([x, copies]) - mean) / std)
            s = scores(z[:1], z[None, 1:])
            return (s.label, s.score1_max, s.score2_max)

    return batched


class Worker:
    """Handles protocol requests; usable in-process (``handle``) or as the subprocess main."""

    def __init__(self) -> None:
        self.workload: Workload | None = None
        self.run: Run | None = None

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        try:
            if op == "setup":
                return self._setup(request["workload"])
            if op == "run":
                return self._run(float(request["min_time_s"]), int(request["min_runs"]),
                                 float(request.get("gap_s", 0.0)))
            if op == "profile":
                return self._profile(int(request["runs"]), Path(request["dir"]))
            if op == "peak":
                return {"ok": True, "peak_rss_bytes": peak_rss_bytes()}
            raise ValueError(f"unknown op {op!r}")
        except SkipCase as exc:
            return {"ok": False, "skip": True, "error": str(exc)}
        except Exception as exc:  # reported to the parent, which names the configuration
            return {"ok": False, "skip": False, "error": f"{type(exc).__name__}: {exc}"}

    def _setup(self, doc: dict[str, Any]) -> dict[str, Any]:
        start = time.perf_counter()
        workload = workload_from_dict(doc)
        if isinstance(workload, DetectorWorkload):
            self.run, providers = _detector_run(workload)
        elif isinstance(workload, OnnxWorkload):
            session = _ort_session(workload)
            self.run = _ort_run(workload, session)
            providers = list(session.get_providers())
        else:
            self.run = _torch_run(workload)
            providers = ["torch-eager-cpu"]
        self.workload = workload
        return {"ok": True, "setup_s": time.perf_counter() - start, "providers": providers}

    def _run(self, min_time_s: float, min_runs: int, gap_s: float = 0.0) -> dict[str, Any]:
        if self.run is None:
            raise ValueError("run before setup")
        run, times = self.run, []
        clock = time.perf_counter
        begin = clock()
        while len(times) < min_runs or clock() - begin < min_time_s:
            t0 = clock()
            run()
            times.append(clock() - t0)
            if gap_s > 0:
                time.sleep(gap_s)
        return {"ok": True, "times_s": times}

    def _profile(self, runs: int, directory: Path) -> dict[str, Any]:
        w = self.workload
        if not isinstance(w, OnnxWorkload):
            raise ValueError("profile needs an ONNX workload set up first")
        directory.mkdir(parents=True, exist_ok=True)
        session = _ort_session(w, profile_prefix=str(directory / "ort_profile"))
        run = _ort_run(w, session)
        run()  # the first run allocates; its events are dropped below
        for _ in range(runs):
            run()
        nodes, run_us = node_times(json.loads(Path(session.end_profiling()).read_text()))
        return {"ok": True, "nodes": nodes, "run_us": run_us}


def main() -> int:
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints must not break the protocol
    sys.stdout = sys.stderr
    worker = Worker()
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        if request.get("op") == "exit":
            break
        protocol.write(json.dumps(worker.handle(request)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
