"""Where a detector run's time goes, from an ONNX Runtime profile (``enable_profiling``).

The worker runs the detector with profiling on and returns the median kernel time per node; here
nodes are grouped by what they do. rpdetect names every node it adds ``rpdetect/<what>_node``
(``export/graph.py``), so the groups follow those names; every other node is the classifier's
(ONNX Runtime's own layout nodes included).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

__all__ = ["GROUPS", "ProfileBreakdown", "group_of", "breakdown"]

GROUPS: tuple[str, ...] = ("noise", "input", "normalisation", "classifier", "scores")
_P = "rpdetect/"
_NOISE = {"noise_shape", "noise", "scaled_noise", "noisy", "noisy_clipped"}
_INPUT = {"image_u", "stacked", "inner_batch", "image_float", "image_rgb", "image_nchw", "pixels"}
_NORMALISATION = {"centred", "normalised"}
_SUFFIX = re.compile(r"_node(_\d+)?$")


def group_of(node_name: str) -> str:
    """``noise`` (random op, its shape, kappa scaling, x + noise), ``input`` (cast, layout,
    stacking the copies), ``normalisation`` (the folded (x - mean) / std), ``scores`` (all
    after the classifier) or ``classifier``."""
    if not node_name.startswith(_P):
        return "classifier"
    # ORT names a node it fused after the first one ("rpdetect/z_noisy_node/...Fusion")
    base = _SUFFIX.sub("", node_name[len(_P):].split("/")[0])
    if base in _NOISE or base.startswith("noise_"):
        return "noise"
    if base in _INPUT:
        return "input"
    if base in _NORMALISATION:
        return "normalisation"
    return "scores"


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
