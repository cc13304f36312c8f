"""Where a detector run's time goes, from an ONNX Runtime profile (``enable_profiling``).

The worker runs the detector with profiling on and returns the median kernel time per node; here
nodes are grouped by what they do, by the node groups of the detector file's contract
(``rpdetect.contract.NODE_GROUPS``: rpdetect names every node it adds
``rpdetect/<group>/<what>``); every other node is the classifier's (ONNX Runtime's own layout
nodes included).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from ..contract import NODE_GROUPS, node_group

__all__ = ["GROUPS", "ProfileBreakdown", "group_of", "breakdown", "node_times"]

GROUPS: tuple[str, ...] = (*NODE_GROUPS, "classifier")
group_of = node_group  # the contract's rule, under the name bench has always used


def node_times(trace: Iterable[Mapping[str, Any]]) -> tuple[dict[str, dict[str, Any]], float]:
    """``({node name: {"op", "us"}}, run_us)`` from the events of an ONNX Runtime profile (the
    JSON list ``InferenceSession.end_profiling`` writes): each node's median kernel time and the
    median ``model_run`` time, in microseconds, the first occurrence of each dropped (the run
    that allocates). Medians, as a descheduled thread on a shared machine makes single kernel
    times jump."""
    nodes: dict[str, dict[str, Any]] = {}
    run_us: list[float] = []
    for event in trace:
        if event.get("cat") == "Session" and event.get("name") == "model_run":
            run_us.append(float(event["dur"]))
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        name = event["name"][: -len("_kernel_time")]
        entry = nodes.setdefault(name, {"op": event.get("args", {}).get("op_name", "?"),
                                        "us": []})
        entry["us"].append(float(event["dur"]))
    out = {name: {"op": e["op"], "us": float(np.median(e["us"][1:] or e["us"]))}
           for name, e in nodes.items()}
    return out, float(np.median(run_us[1:] or run_us)) if run_us else 0.0


@dataclass(frozen=True)
class ProfileBreakdown:
    runs: int
    run_ms: float  # median model_run time while profiling (profiling itself adds a little)
    kernel_ms: float  # sum of the median node kernel times
    groups_ms: dict[str, float]
    top_nodes: list[dict[str, Any]]  # the slowest non-classifier nodes

    def share(self, group: str) -> float:
        return self.groups_ms.get(group, 0.0) / self.kernel_ms if self.kernel_ms else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"runs": self.runs, "run_ms": self.run_ms, "kernel_ms": self.kernel_ms,
                "groups_ms": self.groups_ms,
                "groups_share": {g: self.share(g) for g in self.groups_ms},
                "top_non_classifier_nodes": self.top_nodes}


def breakdown(nodes: Mapping[str, Mapping[str, Any]], *, run_us: float, runs: int,
              top: int = 8) -> ProfileBreakdown:
    """Group ``{node name: {"op", "us"}}`` (median kernel microseconds per run)."""
    groups = {g: 0.0 for g in GROUPS}
    rest: list[dict[str, Any]] = []
    for name, entry in nodes.items():
        g = group_of(name)
        groups[g] += float(entry["us"]) / 1e3
        if g != "classifier":
            rest.append({"node": name, "op": entry["op"], "group": g,
                         "ms": float(entry["us"]) / 1e3})
    rest.sort(key=lambda e: -e["ms"])
    return ProfileBreakdown(runs=runs, run_ms=run_us / 1e3, kernel_ms=sum(groups.values()),
                            groups_ms=groups, top_nodes=rest[:top])
