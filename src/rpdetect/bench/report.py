"""Ratios, the JSON record and the Markdown table of one benchmark."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .._atomic import atomic_write_text
from ..engine.noise import default_generator
from .cases import DETECTOR_MODES, OnnxWorkload
from .machine import cpu_description
from .profile import GROUPS, ProfileBreakdown
from .runner import CaseOutcome
from .stats import median_interval, summarise

__all__ = ["PROFILED_RATIO", "SCHEMA", "Ratio", "Targets", "Report", "compute_ratios"]

SCHEMA = "rpdetect.bench.latency/1"
PROFILED_RATIO = "detector / floor (profiled kernels)"


@dataclass(frozen=True)
class Targets:
    """Design targets the report checks (none is asserted anywhere)."""

    detector_over_floor: float | None = None  # at most
    naive_over_detector: float | None = None  # at least
    int8_over_floor: float | None = None  # at most: INT8 detector / FP32 floor

    def to_dict(self) -> dict[str, float | None]:
        return {"detector_over_floor_max": self.detector_over_floor,
                "naive_over_detector_min": self.naive_over_detector,
                "int8_over_floor_max": self.int8_over_floor}


@dataclass(frozen=True)
class Ratio:
    """median(numerator) / median(denominator) over all timed runs; ``per_round`` the same
    ratio within each round (both measured back to back), whose spread shows the noise."""

    name: str
    provider: str
    numerator: str
    denominator: str
    value: float
    per_round: list[float]
    target: float | None = None
    target_kind: str | None = None  # "max" or "min"

    @property
    def meets(self) -> bool | None:
        if self.target is None:
            return None
        return self.value <= self.target if self.target_kind == "max" else self.value >= self.target

    @property
    def interval(self) -> tuple[float, float]:
        """90% bootstrap interval of the median of the per-round ratios."""
        return median_interval(self.per_round)

    @property
    def interval_vs_target(self) -> str | None:
        """Where the per-round interval lies against the target: "meets" (wholly on the
        target's side), "misses" (wholly on the other) or "spans" (the noise cannot tell)."""
        lo, hi = self.interval
        if self.target is None or not np.isfinite(lo):
            return None
        good = (hi <= self.target, lo <= self.target) if self.target_kind == "max" else \
            (lo >= self.target, hi >= self.target)
        return "meets" if good[0] else ("spans" if good[1] else "misses")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "provider": self.provider, "numerator": self.numerator,
                "denominator": self.denominator, "value": self.value,
                "per_round": self.per_round,
                "per_round_median": float(np.median(self.per_round)) if self.per_round else None,
                "per_round_min": min(self.per_round) if self.per_round else None,
                "per_round_max": max(self.per_round) if self.per_round else None,
                "per_round_median_ci90": list(self.interval),
                "ci90_vs_target": self.interval_vs_target,
                "target": self.target, "target_kind": self.target_kind, "meets": self.meets}


# (ratio name, numerator role, denominator role, which target applies)
_RATIOS: tuple[tuple[str, str, str, str | None], ...] = (
    ("detector (rpdetect.Detector, default) / floor", "detector", "floor",
     "detector_over_floor"),
    ("detector / floor", "detector-graph", "floor", "detector_over_floor"),
    ("detector (input noise) / floor", "detector-input", "floor", "detector_over_floor"),
    ("detector (input noise, prefetched) / floor", "detector-input-prefetch", "floor",
     "detector_over_floor"),
    ("naive / detector", "naive", "detector-graph", "naive_over_detector"),
    ("naive / detector (input noise)", "naive", "detector-input", "naive_over_detector"),
    ("torch batch / detector", "torch-batch", "detector-graph", None),
    ("floor / classifier B=1", "floor", "classifier-b1", None),
    # A/A: the same configuration in two processes; how far from 1 the measurement itself is
    ("floor's A/A twin / floor (the measurement's own noise)", "floor-twin", "floor", None),
    # detector >= floor, so naive / floor bounds naive / detector from above
    ("naive / floor (upper bound of naive / detector)", "naive", "floor", None),
    ("INT8 detector (rpdetect.Detector) / floor", "detector-int8", "floor", "int8_over_floor"),
    ("INT8 detector graph noise / floor", "detector-graph-int8", "floor", None),
    ("INT8 floor / floor", "floor-int8", "floor", None),
    ("INT8 detector (rpdetect.Detector) / INT8 floor", "detector-int8", "floor-int8", None),
)
_MAX_TARGETS = ("detector_over_floor", "int8_over_floor")


def _ratio_of(a: CaseOutcome, b: CaseOutcome) -> tuple[float, list[float]]:
    value = float(np.median(a.times_s) / np.median(b.times_s))
    rounds = [ra / rb for ra, rb in zip(a.round_medians_s, b.round_medians_s)]
    return value, rounds


def compute_ratios(outcomes: Sequence[CaseOutcome], targets: Targets) -> list[Ratio]:
    """The headline ratios per provider, from B=1 configurations that ran."""
    by_key = {(o.case.variant, o.case.role): o for o in outcomes
              if o.status == "ok" and o.times_s and o.case.batch == 1}
    ratios: list[Ratio] = []
    for provider in dict.fromkeys(o.case.variant for o in outcomes):
        for name, num, den, target_name in _RATIOS:
            a, b = by_key.get((provider, num)), by_key.get((provider, den))
            if a is None or b is None:
                continue
            value, rounds = _ratio_of(a, b)
            target = getattr(targets, target_name) if target_name else None
            kind = None if target is None else ("max" if target_name in _MAX_TARGETS
                                                  else "min")
            ratios.append(Ratio(name, provider, a.case.name, b.case.name, value, rounds,
                                target, kind))
    return ratios


def throughput(outcomes: Sequence[CaseOutcome]) -> list[dict[str, Any]]:
    """Sustained images per second (images / total time of the timed runs) of every detector
    configuration by provider, noise mode, precision and B, and the per-image cost at the
    largest B over that at B = 1 (<= 1: batching pays), over all runs and paired per round.
    Totals, not medians: B = 1 makes many short calls and B = 16 a few long ones, and the
    median of many calls leaves out the slow ones that a long call cannot, which would bias
    the comparison against the larger B."""
    rows: dict[tuple[str, str, str], dict[int, float]] = {}
    rounds: dict[tuple[str, str, str], dict[int, list[float]]] = {}
    for o in outcomes:
        mode = DETECTOR_MODES.get(o.case.role)
        if mode is None or o.status != "ok" or not o.times_s:
            continue
        per = o.case.images_per_run
        rows.setdefault((o.case.variant, *mode), {})[o.case.batch] = \
            per * len(o.times_s) / float(np.sum(o.times_s))
        rounds.setdefault((o.case.variant, *mode), {})[o.case.batch] = [
            float(np.sum(r)) / (per * len(r)) for r in o.round_times_s if r]
    out = []
    for key, by_b in rows.items():
        provider, mode, precision = key
        top = max(by_b)
        ratio = by_b[1] / by_b[top] if 1 in by_b and top != 1 else None
        # per round: the per-image cost at the top B over that at B = 1, measured in the same
        # round (paired, so load that comes and goes between rounds cancels)
        per = rounds[key]
        paired = [t / o for t, o in zip(per.get(top, []), per.get(1, []))] \
            if ratio is not None else []
        out.append({"provider": provider, "noise": mode, "precision": precision,
                    "images_per_s": {str(b): by_b[b] for b in sorted(by_b)},
                    "per_image_cost_top_b_over_b1": ratio, "top_b": top,
                    "per_round_cost_ratio": paired,
                    "per_round_cost_ratio_median": float(np.median(paired)) if paired else None,
                    "per_round_cost_ratio_ci90": list(median_interval(paired)) if paired
                    else None})
    return out


def _case_dict(o: CaseOutcome) -> dict[str, Any]:
    d = o.case.to_dict()
    d.update({"status": o.status, "reason": o.reason or None})
    if o.status == "ok" and o.times_s:
        d.update({
            "stats": summarise(o.times_s, images_per_run=o.case.images_per_run).to_dict(),
            "round_medians_ms": [t * 1e3 for t in o.round_medians_s],
            "times_ms": [t * 1e3 for t in o.times_s],
            "peak_rss_mib": None if o.peak_rss_bytes is None else o.peak_rss_bytes / 2**20,
            "session_providers": o.providers,
            "setup_s": o.setup_s,
            "threads": (o.case.workload.settings.threads
                        if isinstance(o.case.workload, OnnxWorkload) else o.case.workload.threads),
        })
    return d


@dataclass
class Report:
    title: str
    machine: dict[str, Any]
    settings: dict[str, Any]
    model: dict[str, Any]
    providers: list[dict[str, Any]]
    outcomes: list[CaseOutcome]
    targets: Targets = field(default_factory=Targets)
    profile: ProfileBreakdown | None = None
    profile_floor: ProfileBreakdown | None = None  # the floor, profiled the same way
    profile_note: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ratios(self) -> list[Ratio]:
        ratios = compute_ratios(self.outcomes, self.targets)
        if self.profile is not None and self.profile.groups_ms.get("classifier"):
            # From the detector's own profile: all its kernels over its classifier kernels,
            # which do the floor's work in the same runs. Per-node medians drop the runs in
            # which a thread was descheduled, so on a shared machine this is the steadier
            # estimate of detector / floor.
            detector = next((o for o in self.outcomes if o.case.role == "detector-graph"), None)
            ratios.append(Ratio(
                PROFILED_RATIO, detector.case.variant if detector else "?",
                "detector graph noise B=1: all kernels (profile)",
                "detector graph noise B=1: classifier kernels (profile)",
                self.profile.kernel_ms / self.profile.groups_ms["classifier"], [],
                self.targets.detector_over_floor,
                None if self.targets.detector_over_floor is None else "max"))
        return ratios

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "title": self.title,
            "machine": self.machine,
            "settings": self.settings,
            "model": self.model,
            "providers": self.providers,
            "targets": self.targets.to_dict(),
            "ratios": [r.to_dict() for r in self.ratios],
            "throughput": throughput(self.outcomes),
            "cases": [_case_dict(o) for o in self.outcomes],
            "profile": None if self.profile is None else self.profile.to_dict(),
            "profile_floor": None if self.profile_floor is None else self.profile_floor.to_dict(),
            "profile_note": self.profile_note,
            "notes": self.notes,
        }

    def to_markdown(self) -> str:
        m, s = self.machine, self.settings
        # as the run recorded it (with the build it ran on), else the default here
        noise_generator = (s["session"].get("noise_generator") or m.get("noise_generator")
                           or default_generator())
        lines = [
            f"# Latency: {self.title}",
            "",
            f"{cpu_description(m)}, {m.get('usable_cores')} usable cores, "
            f"{m.get('memory_gib')} GiB; onnxruntime {m.get('onnxruntime')}, torch "
            f"{m.get('torch')}; {m.get('date_utc')}; load average at start "
            f"{m.get('load_average_at_start')}, at end {m.get('load_average_at_end')}.",
            f"Threads {s['session']['threads']}, graph optimisation "
            f"{s['session']['graph_optimization']}, spinning {s['session']['spinning']}; "
            f"input noise drawn by {noise_generator}; "
            f"{s['timing']['rounds']} interleaved rounds of >= {s['timing']['round_time_s']} s "
            f"per configuration after {s['timing'].get('warmup_runs', 1)} warm-up run(s), "
            f"each in its own process: {s['isolate']}"
            + (f" (a fresh one every {s['timing']['restart_every']} rounds); "
               if s['timing'].get('restart_every') else "; ")
            + (f"{1000 * s['timing']['gap_s']:g} ms idle after every timed run (paced)."
               if s['timing'].get('gap_s') else "runs back to back."),
            *([f"Command: `{s['command']}`"] if s.get("command") else []),
            "",
            "## Ratios (same run)",
            "",
            "value: median / median over all runs; per round: the median of the ratios within "
            "each round (both measured in the same round), its 90% bootstrap interval, and "
            "(min - max) of the rounds; targets are checked on the value, and the last column "
            "says where the interval lies against the target (spans: this machine's noise "
            "cannot tell).",
            "",
            "| provider | ratio | value | per round [90% interval] (min - max) | target | meets "
            "| interval |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in self.ratios:
            lo, hi = r.interval
            rng = (f"{np.median(r.per_round):.3f} [{lo:.3f}, {hi:.3f}] ({min(r.per_round):.3f} "
                   f"- {max(r.per_round):.3f})" if r.per_round else "-")
            target = "-" if r.target is None else f"{'<=' if r.target_kind == 'max' else '>='} {r.target:g}"
            meets = "-" if r.meets is None else ("yes" if r.meets else "**no**")
            lines.append(f"| {r.provider} | {r.name} | {r.value:.3f} | {rng} | {target} | {meets} "
                         f"| {r.interval_vs_target or '-'} |")
        tp = throughput(self.outcomes)
        if tp:
            batches = sorted({int(b) for row in tp for b in row["images_per_s"]})
            lines += ["", "## Throughput (sustained images/s: images / total time; detector "
                      "roles)", "",
                      "noise: graph = the file's own random op (session.run), input = the noise "
                      "input fed, engine = rpdetect.Detector's default front. cost ratio: the "
                      "per-image cost at the largest B over that at B = 1 (<= 1: batching "
                      "pays), over all runs, then paired per round (each round's B = 1 and top B "
                      "runs): the median of the rounds' ratios [90% bootstrap interval].",
                      "", "| provider | noise | precision | "
                      + " | ".join(f"B={b}" for b in batches) + " | cost ratio | per round |",
                      "|---|---|---|" + "---|" * len(batches) + "---|---|"]
            for row in tp:
                cells = [f"{row['images_per_s'][str(b)]:.1f}" if str(b) in row["images_per_s"]
                         else "-" for b in batches]
                r = row["per_image_cost_top_b_over_b1"]
                pm, ci = row.get("per_round_cost_ratio_median"), row.get("per_round_cost_ratio_ci90")
                paired = "-" if pm is None else f"{pm:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
                lines.append(f"| {row['provider']} | {row['noise']} | {row['precision']} | "
                             + " | ".join(cells) + f" | {'-' if r is None else f'{r:.3f}'} | "
                             f"{paired} |")
        lines += [
            "",
            "## Configurations",
            "",
            "| configuration | B | inner batch | median ms | p90 ms | p99 ms | min ms | images/s "
            "| peak RSS MiB | runs |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        skipped = {p["name"]: p["reason"] for p in self.providers if p.get("status") == "skipped"}
        for o in self.outcomes:
            c = o.case
            if c.variant in skipped:  # one line per provider below, not one per configuration
                continue
            if o.status != "ok" or not o.times_s:
                lines.append(f"| {c.name} | {c.batch} | {c.inner_batch} | {o.status}: "
                             f"{o.reason} | | | | | | |")
                continue
            st = summarise(o.times_s, images_per_run=c.images_per_run)
            rss = "-" if o.peak_rss_bytes is None else f"{o.peak_rss_bytes / 2**20:.0f}"
            lines.append(
                f"| {c.name} | {c.batch} | {c.inner_batch} | {st.median_ms:.2f} | "
                f"{st.p90_ms:.2f} | {st.p99_ms:.2f} | {st.min_ms:.2f} | {st.images_per_s:.1f} | "
                f"{rss} | {st.runs} |")
        if skipped:
            lines += ["", "Skipped providers (every configuration above, on that provider):", ""]
            lines += [f"- {name}: {reason}" for name, reason in skipped.items()]
        if self.profile is not None:
            pr = self.profile
            lines += [
                "",
                f"## Where the detector's time goes (ONNX Runtime profile, {pr.runs} runs, "
                f"{self.profile_note or ''})",
                "",
                f"model_run median while profiling: {pr.run_ms:.2f} ms; sum of node kernel "
                f"times: {pr.kernel_ms:.2f} ms.",
                "",
                "| group | ms per run | share |",
                "|---|---|---|",
            ]
            lines += [f"| {g} | {pr.groups_ms.get(g, 0.0):.3f} | {100 * pr.share(g):.1f}% |"
                      for g in GROUPS]
            if self.profile_floor is not None:
                fl = self.profile_floor
                lines += ["", f"The floor, profiled in alternation with the detector: model_run "
                          f"{fl.run_ms:.2f} ms, kernel time {fl.kernel_ms:.2f} ms (the "
                          f"detector's classifier group: {pr.groups_ms.get('classifier', 0.0):.2f}"
                          f" ms)."]
            if pr.top_nodes:
                lines += ["", "Slowest nodes outside the classifier:", "",
                          "| node | op | group | ms |", "|---|---|---|---|"]
                lines += [f"| `{t['node']}` | {t['op']} | {t['group']} | {t['ms']:.3f} |"
                          for t in pr.top_nodes]
        if self.notes:
            lines += ["", "Notes:", ""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def write(self, out_dir: Path, stem: str) -> tuple[Path, Path]:
        """``<out_dir>/<stem>.json`` and ``<stem>.md``."""
        out_dir.mkdir(parents=True, exist_ok=True)
        js, md = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
        atomic_write_text(js, json.dumps(self.to_dict(), indent=1) + "\n")
        atomic_write_text(md, self.to_markdown())
        return js, md
