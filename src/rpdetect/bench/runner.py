"""Run configurations in worker processes, interleaved in rounds.

Every configuration gets its own worker process (``python -m rpdetect.bench.worker``), so
one's memory, threads and allocator state cannot disturb another's and the RSS high-water mark
is its own. All workers are set up first, then warmed up, then timed in ``rounds``: each round
runs every configuration once for ``round_time_s`` (and at least ``min_runs`` runs), in an order
rotated by one each round. On a shared machine, load that comes and goes then hits every
configuration alike, which is what makes the ratios of one benchmark comparable.

A process has a speed of its own too (where its memory landed, its threads' cores: on the
project's 2-core VM two identical floor workers timed in the same rounds differ by up to 2.3%),
which rounds alone cannot average out. ``Timing.restart_every`` = k > 0 replaces every worker
by a fresh one (set up and warmed up again) every k rounds, so that a process's luck becomes
round-to-round noise that the per-round intervals show.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from .cases import Case
from .worker import Worker

__all__ = ["CaseOutcome", "Timing", "run_cases", "WorkerProcess", "InProcessWorker"]


@dataclass(frozen=True)
class Timing:
    """How long to measure: warm-up, then ``rounds`` x (``round_time_s``, >= ``min_runs``).

    ``gap_s``: idle time after every timed run (not timed), the same for every configuration:
    0 measures back-to-back runs that keep every core busy; a gap models requests that leave
    the CPU idle in between (where background work such as noise prefetch can hide).
    ``restart_every``: k > 0 gives every configuration a fresh worker process every k rounds
    (0: one process for the whole run; see the module doc).
    ``warmup_runs``: at least 2, because ONNX Runtime plans a session's memory pattern on its
    first run and allocates (first-touches) that block on the second: at 16 images of 224x224
    the second run took 2.8 s against 1.2-1.4 s for the next ones (one warm-up run left it in
    the timed rounds, once per fresh worker)."""

    rounds: int = 7
    round_time_s: float = 1.0
    min_runs: int = 1
    warmup_runs: int = 2
    warmup_time_s: float = 0.5
    gap_s: float = 0.0
    restart_every: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.restart_every, bool) or not isinstance(self.restart_every, int) \
                or self.restart_every < 0:
            raise ValueError(f"restart_every: expected an integer >= 0, got "
                             f"{self.restart_every!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"rounds": self.rounds, "round_time_s": self.round_time_s,
                "min_runs_per_round": self.min_runs, "warmup_runs": self.warmup_runs,
                "warmup_time_s": self.warmup_time_s, "gap_s": self.gap_s,
                "restart_every": self.restart_every}


QUICK = Timing(rounds=2, round_time_s=0.05, min_runs=2, warmup_runs=2, warmup_time_s=0.0)


@dataclass
class CaseOutcome:
    case: Case
    status: str = "ok"  # ok | skipped | failed
    reason: str = ""
    providers: list[str] = field(default_factory=list)
    setup_s: float | None = None
    times_s: list[float] = field(default_factory=list)
    round_times_s: list[list[float]] = field(default_factory=list)
    peak_rss_bytes: int | None = None

    @property
    def round_medians_s(self) -> list[float]:
        return [float(np.median(r)) for r in self.round_times_s if r]


class Channel(Protocol):
    def request(self, message: dict[str, Any]) -> dict[str, Any]: ...
    def close(self) -> None: ...


class WorkerProcess:
    """A worker subprocess speaking the JSON-lines protocol of ``worker.py``. A request not
    answered within ``timeout_s`` (a hung provider, say) kills the worker and fails the case."""

    def __init__(self, label: str, *, timeout_s: float = 1800.0) -> None:
        self.label = label
        self.timeout_s = timeout_s
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "rpdetect.bench.worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
            text=True, bufsize=1,
        )

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        try:
            self._proc.stdin.write(json.dumps(message) + "\n")
            self._proc.stdin.flush()
            ready, _, _ = select.select([self._proc.stdout], [], [], self.timeout_s)
            if not ready:
                self._proc.kill()
                self._proc.wait()
                return {"ok": False, "skip": False,
                        "error": f"worker for {self.label!r} gave no answer to {message['op']!r} "
                                 f"within {self.timeout_s:g} s and was killed"}
            line = self._proc.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        if not line:
            self._proc.wait(timeout=30)
            self._stderr.seek(0)
            tail = self._stderr.read()[-2000:]
            return {"ok": False, "skip": False,
                    "error": f"worker for {self.label!r} died (exit code {self._proc.returncode})"
                             f": {tail.strip() or 'no stderr'}"}
        return json.loads(line)

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.write(json.dumps({"op": "exit"}) + "\n")
                self._proc.stdin.close()
                self._proc.wait(timeout=30)
            except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        self._stderr.close()


class InProcessWorker:
    """The same protocol without a process (debugging; peak RSS is then the parent's)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._worker = Worker()

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        return self._worker.handle(message)

    def close(self) -> None:
        self._worker = Worker()


def _fail(outcome: CaseOutcome, reply: dict[str, Any], what: str) -> None:
    outcome.status = "skipped" if reply.get("skip") else "failed"
    outcome.reason = f"{what}: {reply.get('error', 'no reply')}"


def run_cases(
    cases: Sequence[Case],
    *,
    timing: Timing = Timing(),
    isolate: bool = True,
    log: Callable[[str], None] = lambda _msg: None,
) -> list[CaseOutcome]:
    """Set up, warm up and time every case, interleaved in rounds (see module doc)."""
    outcomes = [CaseOutcome(case) for case in cases]
    make = WorkerProcess if isolate else InProcessWorker
    channels: dict[int, Channel] = {}

    def start(i: int, what: str) -> None:
        """Case i's worker set up into ``channels`` (else marked failed, ``what`` failed)."""
        case, outcome = cases[i], outcomes[i]
        log(f"{what:6} {case.name}")
        channel = make(case.name)
        reply = channel.request({"op": "setup", "workload": case.workload.to_dict()})
        if not reply.get("ok"):
            _fail(outcome, reply, what)
            channel.close()
            log(f"  {outcome.status}: {outcome.reason}")
            return
        outcome.providers = reply["providers"]
        if outcome.setup_s is None:
            outcome.setup_s = reply["setup_s"]
        channels[i] = channel

    def warm_up(i: int) -> None:
        reply = channels[i].request({"op": "run", "min_time_s": timing.warmup_time_s,
                                     "min_runs": timing.warmup_runs, "gap_s": timing.gap_s})
        if not reply.get("ok"):
            _fail(outcomes[i], reply, "warm-up")
            channels.pop(i).close()

    try:
        for i in range(len(cases)):
            start(i, "setup")
        for i in list(channels):
            warm_up(i)
        for r in range(timing.rounds):
            if timing.restart_every and r and r % timing.restart_every == 0:
                for i in sorted(channels):
                    channels.pop(i).close()
                    start(i, f"round {r + 1}: fresh worker's setup")
                    if i in channels:
                        warm_up(i)
            active = sorted(channels)
            shift = r % len(active) if active else 0
            for i in active[shift:] + active[:shift]:
                reply = channels[i].request({"op": "run", "min_time_s": timing.round_time_s,
                                             "min_runs": timing.min_runs,
                                             "gap_s": timing.gap_s})
                if not reply.get("ok"):
                    _fail(outcomes[i], reply, f"round {r + 1}")
                    channels.pop(i).close()
                    continue
                outcomes[i].round_times_s.append(reply["times_s"])
                outcomes[i].times_s.extend(reply["times_s"])
            log(f"round {r + 1}/{timing.rounds} done")
        for i, channel in channels.items():
            reply = channel.request({"op": "peak"})
            if reply.get("ok"):
                outcomes[i].peak_rss_bytes = int(reply["peak_rss_bytes"])
    finally:
        for channel in channels.values():
            channel.close()
    return outcomes
