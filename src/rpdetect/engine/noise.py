"""Where the N(0, 1) noise of ``noise="input"`` detectors comes from.

The paper's noise is i.i.d. N(0, 1) per pixel and per copy, ``n * C * H * W`` values per image
(1.5 M at 224x224, n = 10). How fast they are drawn decides how close the detector gets to its
floor (the classifier alone at batch n + 1) on a CPU. Measured with
``python benchmarks/noise_generators.py`` (``fill_scaled`` of 1.5 M float32 values, an Intel
Xeon with AVX-512, 2026-12-03), one thread / two: rpdetect's own ``xoshiro`` 1.32 / 0.90 ms
(0.9 ns a value on one thread), OpenCV's ``cv2.randn`` 3.6 / 3.2 ms, numpy's
``Generator.standard_normal`` 15 / 7.6 ms; ONNX Runtime's ``RandomNormalLike`` kernel (graph
noise) takes about 20 ms.

:class:`NoiseSource` draws those values with one of three generators:

* ``"xoshiro"`` (default where it is built): the C extension ``rpdetect.engine._normal`` (see
  ``_normal.c``): 16 xoshiro128+ lanes (period 2**128 - 1 each) and Box-Muller with Cephes'
  float32 polynomials, vectorised with or without mask registers (AVX-512, AVX2 or SSE2 picked
  at load time; NEON on aarch64), the same values from every build: one thread, 1.5 M values,
  1.25 ms with AVX-512, 1.85 ms with AVX2, 5.1 ms with SSE2 on an AMD EPYC (``python
  benchmarks/noise_isa.py``; before 2026-12-07 GCC left the AVX2, SSE2 and NEON builds scalar,
  14-15 ms, slower than OpenCV on every CPU without AVX-512). Each part of a source
  has its own 16 lanes, seeded from a ``numpy.random.SeedSequence`` child (64 words). It is
  built by ``pip install`` (``setup.py``, optional): where it did not compile, the default is
  ``"opencv"``.
* ``"opencv"``: ``cv2.randn`` (Ziggurat on OpenCV's 64-bit multiply-with-carry
  generator, period about 2**63). OpenCV keeps one generator state per thread and starts every
  new thread from the same state, so the source draws on threads of its own, each seeded once
  from a ``numpy.random.SeedSequence`` (32 bits of seed per thread: all that
  ``cv2.setRNGSeed`` takes) and run 64 values in before use.
* ``"numpy"``: ``numpy.random.Generator.standard_normal`` (PCG64, 128-bit seed); with one
  thread it is exactly ``numpy.random.default_rng(seed)``'s sequence.

``threads`` splits every draw into that many contiguous parts drawn at once, each by its own
generator (fixed part -> generator, so a seed still gives one sequence for a given ``threads``);
the first part of an xoshiro or numpy source runs on the calling thread, the others on threads
of their own (one wake-up fewer per draw: 0.44 ms less per 224x224 detection, paired in one
process on a 2-core AMD EPYC, ``python benchmarks/noise_placement.py``; where a part runs does
not change its values).

With ``prefetch > 0`` a background thread keeps that many draws ready: :meth:`refill`, called
once a run is done, starts the next draws, so they happen between runs (or during the next one
when runs come back to back). Every draw is still fresh and used once, and a seeded source
yields the same sequence with or without prefetch. What prefetching buys depends on spare CPU:
requests that leave a core idle get their noise for free; back-to-back runs that keep every
core busy only move the cost to another thread (``rpdetect bench`` measures both).
"""

from __future__ import annotations

import math
import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, Literal, Sequence

import numpy as np

__all__ = ["NOISE_GENERATORS", "NoiseGenerator", "NoiseSource", "check_seed",
           "default_generator", "default_noise_threads", "generator_description",
           "ort_cpu_graph_noise_runs"]

NoiseGenerator = Literal["xoshiro", "opencv", "numpy"]
NOISE_GENERATORS: tuple[str, ...] = ("xoshiro", "opencv", "numpy")
_BURN_IN = 64  # values drawn and dropped after seeding an OpenCV thread generator


def _fast_module() -> Any:
    """``rpdetect.engine._normal``, or None where the C extension was not built."""
    try:
        from . import _normal
    except ImportError:
        return None
    return _normal


def generator_description(generator: str | None = None) -> str:
    """``generator`` (None: the default) as a report states it: the C generator with the
    instruction set it runs with on this CPU, e.g. "xoshiro (avx512f)"; a CPU without AVX-512
    runs the AVX2 build, about 1.5x slower (``benchmarks/noise_isa.py``)."""
    name = generator or default_generator()
    module = _fast_module() if name == "xoshiro" else None
    isa = getattr(module, "isa", None)
    return f"{name} ({isa()})" if isa is not None else name


def default_generator() -> str:
    """"xoshiro" where its C extension is built, else "opencv"."""
    return "xoshiro" if _fast_module() is not None else "opencv"


def _xoshiro_state(seed_seq: np.random.SeedSequence) -> np.ndarray:
    """64 words: 4 per lane for 16 lanes, no lane all zero (xoshiro's one bad state)."""
    state = seed_seq.generate_state(64, dtype=np.uint32).reshape(4, 16)
    state[0, ~state.any(axis=0)] = 1
    return np.ascontiguousarray(state.reshape(-1))


def check_seed(seed: object) -> None:
    """ValueError unless ``seed`` is None or an integer >= 0 (what ``numpy.random.SeedSequence``
    takes), so a bad seed fails at once, whatever the detector's noise mode."""
    if seed is None:
        return
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected an integer >= 0 or None, got {seed!r}")


SMALL_DRAW = 1 << 18  # values: below this one thread draws faster than two hand over


def default_noise_threads(values: int | None = None) -> int:
    """Threads that draw one noise array at once by default: 2 where there are 2 cores or more
    (the draw happens while the session's threads wait for it), 1 for a draw of fewer than
    ``SMALL_DRAW`` values (a 32x32 image's 30 k take about 20 us: handing them to threads costs
    more)."""
    if values is not None and values < SMALL_DRAW:
        return 1
    return min(2, os.cpu_count() or 1)


# ONNX Runtime's CPU RandomNormalLike: std::minstd_rand0 (period 2**31 - 2 engine calls) feeding
# std::normal_distribution (Marsaglia's polar method: 2 uniforms per try, accepted with
# probability pi/4, 2 normals per accepted try, so 4/pi uniforms per normal value). Checked by
# benchmarks/noise_sources.py.
MINSTD_RAND0_PERIOD = 2**31 - 2
POLAR_UNIFORMS_PER_NORMAL = 4 / math.pi


def ort_cpu_graph_noise_runs(values_per_run: int) -> int:
    """Runs of a graph-noise detector after which ONNX Runtime's CPU generator has gone round
    its whole period, i.e. the noise stream of one session starts to repeat."""
    if values_per_run < 1:
        raise ValueError(f"values_per_run: expected >= 1, got {values_per_run}")
    return int(MINSTD_RAND0_PERIOD // (POLAR_UNIFORMS_PER_NORMAL * values_per_run))


def _seed_opencv_thread(seed_seq: np.random.SeedSequence) -> None:
    """Seed the calling thread's OpenCV generator (a C int) and run it in."""
    import cv2

    word = int(seed_seq.generate_state(1, dtype=np.uint32)[0])
    cv2.setRNGSeed(word - (1 << 31))  # the whole int32 range
    cv2.randn(np.empty((_BURN_IN, 1), np.float32), 0.0, 1.0)


def _fill_opencv(out: np.ndarray) -> None:
    import cv2

    cv2.randn(out.reshape(-1, 1), 0.0, 1.0)  # a column view: no copy, any length


def scale_add(row: np.ndarray, scale: float, base: np.ndarray) -> None:
    """``row = base + float32(scale) * row`` in place, rounded as the graph's Mul then Add."""
    np.multiply(row, np.float32(scale), out=row)
    np.add(row, base, out=row)


class _Part:
    """One contiguous slice of every draw and the generator that fills it.

    numpy: a ``Generator`` object, usable from any thread; with ``own_thread`` it fills on a
    thread of its own (so parts run at once). opencv: the state lives in the part's thread, so
    that thread is seeded from ``seed_seq`` when it starts; after :meth:`close` a restart takes
    a fresh child of ``seed_seq`` (never the old seed again)."""

    def __init__(self, generator: str, seed_seq: np.random.SeedSequence, *, own_thread: bool,
                 rng: np.random.Generator | None = None) -> None:
        self.generator = generator
        self.seed_seq = seed_seq
        self.own_thread = own_thread or generator == "opencv"
        self.rng = None
        self.state = None
        if generator == "numpy":
            self.rng = rng if rng is not None else np.random.default_rng(seed_seq)
        elif generator == "xoshiro":
            self.fast = _fast_module()
            self.state = _xoshiro_state(seed_seq)
        self.pool: ThreadPoolExecutor | None = None
        self.restarted = False  # a thread was seeded from seed_seq already
        # a part without a thread of its own runs on its caller's thread: one caller at a time
        self._inline = threading.Lock()

    def fill(self, rows: np.ndarray) -> None:
        """Fill ``rows`` ([k, m], C-contiguous) with N(0, 1) values, one row per call."""
        for row in rows:
            if self.state is not None:
                self.fast.fill(self.state, row)
            elif self.rng is not None:
                self.rng.standard_normal(out=row, dtype=np.float32)
            else:
                _fill_opencv(row)

    def fill_scaled(self, rows: np.ndarray, base: np.ndarray, scales: Sequence[float]) -> None:
        """rows[i] = base + scales[i] * N(0, 1) (the product rounded, then the sum, as the
        graph's Mul and Add do), row by row: in one pass where the generator takes a base,
        else a draw then the scaling while the row is in cache."""
        for row, scale in zip(rows, scales):
            if self.state is not None:
                self.fast.fill(self.state, row, base, float(scale))
                continue
            self.fill(row.reshape(1, -1))
            scale_add(row, scale, base)

    def start(self, fn: Any, *args: Any) -> Future[None]:
        """``fn(*args)`` handed to this part's own thread (``own_thread``)."""
        return self._pool().submit(fn, *args)

    def call_here(self, fn: Any, *args: Any) -> None:
        """``fn(*args)`` on the calling thread, one caller at a time (no ``own_thread``)."""
        with self._inline:
            fn(*args)

    def _pool(self) -> ThreadPoolExecutor:
        if self.pool is None:
            init: tuple = (None, ())
            if self.generator == "opencv":
                seq = self.seed_seq.spawn(1)[0] if self.restarted else self.seed_seq
                init = (_seed_opencv_thread, (seq,))
            self.restarted = True
            self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rpdetect-noise-part",
                                           initializer=init[0], initargs=init[1])
        return self.pool

    def close(self) -> None:
        pool, self.pool = self.pool, None
        if pool is not None:
            pool.shutdown(wait=True)


class NoiseSource:
    """Draws ``shape``-shaped float32 N(0, 1) arrays, optionally ``prefetch`` draws ahead.

    ``generator``: "xoshiro" (the default where it is built), "opencv" or "numpy" (see the
    module docstring);
    ``threads``: parts drawn at once per draw (None: :func:`default_noise_threads`). Thread-safe: concurrent ``draw`` calls each get a
    distinct draw. ``close`` (or use as a context manager) stops the background threads; a later
    draw starts new ones (an OpenCV part with a fresh child seed), so no value is ever handed
    out twice."""

    def __init__(self, shape: tuple[int, ...], *, seed: int | None = None, prefetch: int = 0,
                 generator: NoiseGenerator | None = None, threads: int | None = 1) -> None:
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0:
            raise ValueError(f"prefetch: expected an integer >= 0, got {prefetch!r}")
        if generator is None:
            generator = default_generator()  # type: ignore[assignment]
        if generator not in NOISE_GENERATORS:
            raise ValueError(f"generator: expected one of {NOISE_GENERATORS}, got {generator!r}")
        if generator == "xoshiro" and _fast_module() is None:
            raise ValueError("generator: 'xoshiro' needs the C extension rpdetect.engine._normal, "
                             "which this installation did not build (no C compiler at install "
                             "time?); use 'opencv' or reinstall with a compiler")
        check_seed(seed)
        if threads is None:
            threads = default_noise_threads(int(np.prod(shape, dtype=np.int64)))
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads: expected an integer >= 1 or None, got {threads!r}")
        self.shape = tuple(int(s) for s in shape)
        self.prefetch = prefetch
        self.generator: str = generator
        # every draw is [rows, row] with rows the leading axes that give each thread a share
        # (the n copies of one image, usually); a part fills its rows one row per call, so a
        # draw and fill_scaled give the same values, prefetched or not
        # (a 1-D draw, or one with too few rows, is split flat into one call per thread)
        lead = next((k for k in range(1, len(self.shape))
                     if int(np.prod(self.shape[:k], dtype=np.int64)) >= threads), None)
        size = int(np.prod(self.shape, dtype=np.int64))
        self._rows = size if lead is None else int(np.prod(self.shape[:lead], dtype=np.int64))
        self._row_width = 1 if lead is None else size // self._rows
        self.threads = max(1, min(threads, self._rows))
        bounds = np.linspace(0, self._rows, self.threads + 1).round().astype(np.int64)
        self._slices = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
        children = np.random.SeedSequence(seed).spawn(self.threads)
        if generator == "numpy" and self.threads == 1:
            # one part: exactly numpy.random.default_rng(seed)'s sequence, on the caller's thread
            self._parts = [_Part("numpy", children[0], own_thread=False,
                                 rng=np.random.default_rng(seed))]
        elif generator == "xoshiro" and self.threads == 1:
            self._parts = [_Part("xoshiro", children[0], own_thread=False)]
        else:
            # the first part on the caller's thread, where its generator allows (not OpenCV's,
            # whose state belongs to a thread)
            self._parts = [_Part(generator, c, own_thread=i > 0)
                           for i, c in enumerate(children)]
        self._lock = threading.Lock()
        self._pending: deque[Future[np.ndarray]] = deque()
        self._pool: ThreadPoolExecutor | None = None
        if prefetch:
            # one worker: draws happen in submission order, so a seed gives one sequence
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rpdetect-noise")
            self.refill()

    def _draw_now(self) -> np.ndarray:
        out = np.empty(self.shape, dtype=np.float32)
        self._fill_now(out)
        return out

    def _fill_now(self, out: np.ndarray) -> None:
        if self._row_width == 1:  # flat: one call per part
            flat = out.reshape(-1)
            self._run_parts([(part.fill, (flat[s][None],))
                             for part, s in zip(self._parts, self._slices)])
        else:
            rows = out.reshape(self._rows, -1)
            self._run_parts([(part.fill, (rows[s],))
                             for part, s in zip(self._parts, self._slices)])

    def _run_parts(self, calls: list[tuple[Any, tuple]]) -> None:
        """Each part's call at once: those with threads of their own handed over first, then
        the others on this thread, then wait for all (the first part of a threaded xoshiro or
        numpy source runs here, which saves a thread's wake-up; see the module doc)."""
        futures = [part.start(fn, *args) for part, (fn, args) in zip(self._parts, calls)
                   if part.own_thread]
        try:
            for part, (fn, args) in zip(self._parts, calls):
                if not part.own_thread:
                    part.call_here(fn, *args)
        finally:  # never return (or raise) while a thread still writes into the caller's array
            wait(futures)
        for f in futures:
            f.result()

    def fill_scaled(self, out: np.ndarray, base: np.ndarray, scales: Sequence[float]) -> None:
        """``out[i] = base + scales[i] * eps_i`` with fresh N(0, 1) ``eps`` (``out`` a
        C-contiguous float32 array of ``shape``, ``base`` float32 of ``shape[1:]``): the noisy
        copies of one image written in one pass, rows shared out among the parts' threads.
        Never prefetched."""
        if out.shape != self.shape or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ValueError(f"fill_scaled: expected a C-contiguous float32 array of shape "
                             f"{self.shape}, got {out.dtype} {out.shape}")
        if base.shape != self.shape[1:] or base.dtype != np.float32 \
                or not base.flags.c_contiguous:
            raise ValueError(f"fill_scaled: base must be C-contiguous float32 of shape "
                             f"{self.shape[1:]}, got {base.dtype} {base.shape}")
        if len(scales) != self.shape[0]:
            raise ValueError(f"fill_scaled: {len(scales)} scales for {self.shape[0]} rows")
        rows = out.reshape(self._rows, -1) if self._rows == len(scales) \
            and self._row_width > 1 else None
        if rows is None:  # fewer copies than threads: one part
            self._parts[0].fill_scaled(out.reshape(len(scales), -1), base.reshape(-1), scales)
            return
        flat_base = base.reshape(-1)
        with self._lock:
            self._run_parts([(part.fill_scaled, (rows[sl], flat_base, scales[sl]))
                             for part, sl in zip(self._parts, self._slices)])

    def fill(self, out: np.ndarray) -> None:
        """Draw fresh values into ``out`` (a C-contiguous float32 array of ``shape``) in place,
        with no copy: the engine draws a detector's noise straight into its batch buffer this
        way. Draws are never prefetched here (use :meth:`draw` for that)."""
        if out.shape != self.shape or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ValueError(f"fill: expected a C-contiguous float32 array of shape "
                             f"{self.shape}, got {out.dtype} {out.shape}")
        with self._lock:
            self._fill_now(out)

    def draw(self) -> np.ndarray:
        """A fresh [*shape] float32 array of N(0, 1) values (never handed out twice): a
        prefetched one when ready, else drawn now. Call :meth:`refill` once the work that uses
        it is done, so the next draws happen while the CPU would otherwise be idle."""
        with self._lock:
            if self._pool is None:
                return self._draw_now()
            # through the one worker even when nothing is ready, so draws keep their order
            ready = self._pending.popleft() if self._pending else self._pool.submit(self._draw_now)
        return ready.result()

    def refill(self) -> None:
        """Start drawing in the background until ``prefetch`` draws are ready or pending."""
        with self._lock:
            if self._pool is None:
                return
            while len(self._pending) < self.prefetch:
                self._pending.append(self._pool.submit(self._draw_now))

    def close(self) -> None:
        """Stop the background threads; later draws start new ones (fresh child seeds)."""
        with self._lock:
            pool, self._pool = self._pool, None
            pending = list(self._pending)
            self._pending.clear()
        if pool is not None:
            for f in pending:
                f.cancel()
            pool.shutdown(wait=True)
        with self._lock:  # no draw can be using the part threads now
            for part in self._parts:
                part.close()

    def __enter__(self) -> "NoiseSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
