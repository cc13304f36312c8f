"""Where the N(0, 1) noise of ``noise="input"`` detectors comes from.

The paper's noise is i.i.d. N(0, 1) per pixel and per copy, ``n * C * H * W`` values per image
(1.5 M at 224x224, n = 10). Drawing them costs about as much on one core as ONNX Runtime's own
``RandomNormalLike`` (both are serial samplers, 10-20 ns a value on the CPUs we measured), so on
the critical path it is ~20% of EfficientNet-Lite0's batch-11 forward pass at 224x224.

:class:`NoiseSource` draws those values with a numpy ``Generator``. With ``prefetch > 0`` a
background thread keeps that many draws ready: :meth:`NoiseSource.refill`, called once a run is
done, starts the next draws, so they happen between runs (or during the next one when runs come
back to back); numpy releases the GIL while it fills the array. Every draw is still fresh
and used once, and a seeded source yields exactly the same sequence with or without prefetch
(one thread draws, in order). What it buys depends on spare CPU: requests that leave a core idle
get their noise for free; back-to-back runs that keep every core busy only move the cost to
another thread (``rpdetect bench`` measures both the in-run and the prefetched way).
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

__all__ = ["NoiseSource"]


class NoiseSource:
    """Draws ``shape``-shaped float32 N(0, 1) arrays, optionally ``prefetch`` draws ahead.

    Thread-safe: concurrent ``draw`` calls each get a distinct draw. ``close`` (or use as a
    context manager) stops the background thread; an unclosed source stops it at exit."""

    def __init__(self, shape: tuple[int, ...], *, seed: int | None = None,
                 prefetch: int = 0) -> None:
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0:
            raise ValueError(f"prefetch: expected an integer >= 0, got {prefetch!r}")
        self.shape = tuple(int(s) for s in shape)
        self.prefetch = prefetch
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._pending: deque[Future[np.ndarray]] = deque()
        self._pool: ThreadPoolExecutor | None = None
        if prefetch:
            # one worker: draws happen in submission order, so a seed gives one sequence
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rpdetect-noise")
            self.refill()

    def _draw_now(self) -> np.ndarray:
        return self._rng.standard_normal(self.shape, dtype=np.float32)

    def draw(self) -> np.ndarray:
        """A fresh [*shape] float32 array of N(0, 1) values (never handed out twice): a
        prefetched one when ready, else drawn now. Call :meth:`refill` once the work that uses
        it is done, so the next draws happen while the CPU would otherwise be idle."""
        if self._pool is None:
            with self._lock:
                return self._draw_now()
        with self._lock:
            if self._pool is None:  # closed meanwhile
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
        """Stop the background thread; later draws happen on the caller's thread."""
        with self._lock:
            pool, self._pool = self._pool, None
            pending = list(self._pending)
            self._pending.clear()
        if pool is not None:
            for f in pending:
                f.cancel()
            pool.shutdown(wait=True)

    def __enter__(self) -> "NoiseSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
