"""Foolbox attacks on the torch classifier in pixel space, and their on-disk cache.

An attack is a row of a table (:data:`ATTACKS`): which Foolbox attack, targeted or not, its
epsilon and steps. The epsilons were chosen on a handful of images so that the mean L2 of the
successful examples lands near the paper's column (``paper_l2``); the achieved mean L2 is
reported with every table. L2 is measured in [0, 1] pixel units over all C*H*W values.

Only correctly classified images are attacked; a targeted attack draws its target uniformly
from the dataset's other classes with a generator seeded by (seed, position), so the target of
an image does not depend on chunking or resumption. Failed attacks are excluded and counted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol, Sequence

import numpy as np

from .._atomic import atomic_path

__all__ = [
    "ATTACKS",
    "AdversarialSet",
    "AttackSpec",
    "ImagePool",
    "draw_targets",
    "generate",
    "run_attack",
]

AttackKind = Literal["bim-l2", "bim-linf", "ddn", "cw-l2"]


@dataclass(frozen=True)
class AttackSpec:
    """One attack as the paper's table names it; ``epsilon`` is None for minimisation attacks
    (DDN, CW), whose size comes out of the optimisation."""

    name: str
    kind: AttackKind
    targeted: bool
    epsilon: float | None = None
    steps: int = 10
    rel_stepsize: float = 0.2  # BIM: step = rel_stepsize * epsilon
    binary_search_steps: int = 3  # CW
    initial_const: float = 1e-2  # CW
    stepsize: float = 0.01  # CW (Adam learning rate)
    init_epsilon: float = 1.0  # DDN
    gamma: float = 0.05  # DDN
    paper_l2: float | None = None  # the mean L2 of the paper's column, for the report

    def params(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def params_hash(self, *extra: str) -> str:
        blob = json.dumps([self.params(), list(extra)], sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def quick(self) -> "AttackSpec":
        """A cheap variant for smoke runs: at most 3 steps (CW: 5 steps, one search step)."""
        if self.kind == "cw-l2":
            return dataclasses.replace(self, steps=min(self.steps, 5), binary_search_steps=1,
                                       initial_const=max(self.initial_const, 1.0))
        if self.kind == "ddn":
            return dataclasses.replace(self, steps=min(self.steps, 5))
        return dataclasses.replace(self, steps=min(self.steps, 3), rel_stepsize=0.4)

    def describe(self) -> str:
        size = f"eps={self.epsilon:g}" if self.epsilon is not None else "minimal"
        extra = (f", {self.binary_search_steps} search steps, c0={self.initial_const:g}"
                 if self.kind == "cw-l2" else "")
        goal = "targeted" if self.targeted else "untargeted"
        return f"{self.kind} {goal}, {size}, {self.steps} steps{extra}"


def _bim(name: str, kind: AttackKind, eps: float, *, targeted: bool, paper: float,
         steps: int = 10) -> AttackSpec:
    return AttackSpec(name, kind, targeted, epsilon=eps, steps=steps, paper_l2=paper)


# Epsilons: BIM-L2 takes 10 steps of 0.2*eps inside the eps-ball, yet the mean L2 it ends at is
# below eps. Measured on ImageNette (first 20 successes): targeted BIM-L2 eps 1 / 2 / 3 -> mean
# L2 0.93 / 1.53 / 2.10, hence eps 2.6 and 4.3 for the paper's 2 and 3 (n=100: eps 2.6 -> 1.89);
# BIM-Linf's L2 is ~0.9 * eps * sqrt(C*H*W) (sqrt(150528) = 388, sqrt(3072) = 55.4): eps 0.004 ->
# 1.12, hence 0.005 for the paper's 1.4. Dogs vs Cats, untargeted, eps 2 / 3 -> 1.57 / 2.12 (20
# images), hence the same 2.6 and 4.3. DDN minimises the L2, so its steps set its size: on 8
# ImageNette images, targeted DDN with 10 / 15 / 20 steps ended at mean L2 1.01 / 0.90 / 0.75
# (10 steps left 1 of 8 failed), hence 15 steps for the paper's 0.85; on 48 CIFAR-10 images
# (the 10-epoch ResNet-9) 10 / 20 / 30 / 100 steps -> 0.82 / 0.57 / 0.52 / 0.50, hence 20 for
# the paper's 0.6 (BIM-L2 eps 0.75 -> 0.75, BIM-Linf eps 0.02 -> 0.96 there). CW-L2: 100 steps and 3
# binary-search steps as the paper; c0 = 1 on the 224x224 sets (it succeeds on nearly every
# image, and the binary search then shrinks the perturbation).
ATTACKS: dict[str, tuple[AttackSpec, ...]] = {
    "imagenette": (
        _bim("bim-l2-t1", "bim-l2", 1.0, targeted=True, paper=1.0),
        _bim("bim-l2-t2", "bim-l2", 2.6, targeted=True, paper=2.0),
        _bim("bim-l2-t3", "bim-l2", 4.3, targeted=True, paper=3.0),
        _bim("bim-l2-u1", "bim-l2", 1.0, targeted=False, paper=1.0),
        _bim("bim-linf-u", "bim-linf", 0.005, targeted=False, paper=1.4),
        AttackSpec("ddn-t", "ddn", True, steps=15, paper_l2=0.85),
        AttackSpec("cw-l2-u", "cw-l2", False, steps=100, binary_search_steps=3,
                   initial_const=1.0, stepsize=0.01),
        AttackSpec("cw-l2-t", "cw-l2", True, steps=100, binary_search_steps=3,
                   initial_const=1.0, stepsize=0.01),
    ),
    "dogscats": (
        _bim("bim-l2-1", "bim-l2", 1.0, targeted=False, paper=1.0),
        _bim("bim-l2-2", "bim-l2", 2.6, targeted=False, paper=2.0),
        _bim("bim-l2-3", "bim-l2", 4.3, targeted=False, paper=3.0),
        AttackSpec("ddn-t", "ddn", True, steps=15),
        AttackSpec("cw-l2", "cw-l2", False, steps=100, binary_search_steps=3,
                   initial_const=1.0, stepsize=0.01),
    ),
    "cifar10": (
        _bim("bim-l2-t", "bim-l2", 0.75, targeted=True, paper=0.75),
        _bim("bim-l2-u", "bim-l2", 0.75, targeted=False, paper=0.75),
        _bim("bim-linf-u", "bim-linf", 0.02, targeted=False, paper=1.0),
        AttackSpec("ddn-t", "ddn", True, steps=20, paper_l2=0.6),
        AttackSpec("cw-l2-u", "cw-l2", False, steps=100, binary_search_steps=3,
                   initial_const=0.1, stepsize=0.01),
        AttackSpec("cw-l2-t", "cw-l2", True, steps=100, binary_search_steps=3,
                   initial_const=0.1, stepsize=0.01),
    ),
}


def draw_targets(labels: np.ndarray, positions: np.ndarray, classes: Sequence[int], seed: int
                 ) -> np.ndarray:
    """A target per image, uniform over ``classes`` minus its label, seeded by (seed, position)."""
    out = np.empty(len(labels), dtype=np.int64)
    for i, (label, pos) in enumerate(zip(labels, positions)):
        others = [c for c in classes if c != int(label)]
        out[i] = others[int(np.random.default_rng([seed, int(pos)]).integers(len(others)))]
    return out


def _foolbox_attack(spec: AttackSpec) -> Any:
    import foolbox as fb

    if spec.kind == "bim-l2":
        return fb.attacks.L2BasicIterativeAttack(steps=spec.steps, rel_stepsize=spec.rel_stepsize)
    if spec.kind == "bim-linf":
        return fb.attacks.LinfBasicIterativeAttack(steps=spec.steps, rel_stepsize=spec.rel_stepsize)
    if spec.kind == "ddn":
        return fb.attacks.DDNAttack(init_epsilon=spec.init_epsilon, steps=spec.steps,
                                    gamma=spec.gamma)
    if spec.kind == "cw-l2":
        return fb.attacks.L2CarliniWagnerAttack(
            binary_search_steps=spec.binary_search_steps, steps=spec.steps,
            stepsize=spec.stepsize, initial_const=spec.initial_const, abort_early=True,
        )
    raise ValueError(f"attack {spec.name!r}: unknown kind {spec.kind!r}")


class AttackBatch(NamedTuple):
    adversarial: np.ndarray  # [N, C, H, W] float32 (meaningless where not success)
    success: np.ndarray  # [N] bool
    l2: np.ndarray  # [N] float64


def run_attack(fmodel: Any, images: np.ndarray, labels: np.ndarray, spec: AttackSpec, *,
               targets: np.ndarray | None = None) -> AttackBatch:
    """Run one Foolbox attack on a batch; success is re-checked on the returned images."""
    import foolbox as fb
    import torch

    x = torch.as_tensor(np.ascontiguousarray(images, dtype=np.float32))
    if spec.targeted:
        if targets is None:
            raise ValueError(f"attack {spec.name!r} is targeted: pass targets")
        criterion = fb.criteria.TargetedMisclassification(torch.as_tensor(targets))
    else:
        criterion = fb.criteria.Misclassification(torch.as_tensor(labels))
    _, clipped, success = _foolbox_attack(spec)(fmodel, x, criterion, epsilons=spec.epsilon)
    adv = clipped.detach().numpy().astype(np.float32)
    l2 = np.sqrt(((adv.astype(np.float64) - images) ** 2).reshape(len(adv), -1).sum(axis=1))
    return AttackBatch(adv, success.detach().numpy().astype(bool), l2)


class ImagePool(Protocol):
    """The evaluation images in attack order."""

    labels: np.ndarray  # [N] int

    def __len__(self) -> int: ...

    def images(self, positions: Sequence[int]) -> np.ndarray: ...  # [k, C, H, W] float32


class AdversarialSet(NamedTuple):
    positions: np.ndarray  # [m] pool positions of the attacked (correctly classified) images
    success: np.ndarray  # [m] bool
    l2: np.ndarray  # [m] L2 of each result (NaN where failed)
    targets: np.ndarray  # [m] target class, -1 when untargeted
    adversarial: np.ndarray  # [s, C, H, W] the successful examples, in position order
    next_position: int  # where a resumed run continues
    skipped: int  # pool images passed over because the classifier got them wrong

    @property
    def successful_positions(self) -> np.ndarray:
        return self.positions[self.success]


def _empty(shape: tuple[int, ...]) -> AdversarialSet:
    return AdversarialSet(np.zeros(0, np.int64), np.zeros(0, bool), np.zeros(0),
                          np.zeros(0, np.int64), np.zeros((0, *shape), np.float32), 0, 0)


def _load(path: Path, params: str) -> AdversarialSet | None:
    if not path.is_file():
        return None
    with np.load(path) as z:
        if str(z["params"]) != params:
            return None
        return AdversarialSet(z["positions"], z["success"], z["l2"], z["targets"],
                              z["adversarial"], int(z["next_position"]), int(z["skipped"]))


def _save(path: Path, params: str, s: AdversarialSet) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        np.savez(tmp, params=np.array(params), positions=s.positions, success=s.success,
                 l2=s.l2, targets=s.targets, adversarial=s.adversarial,
                 next_position=np.array(s.next_position), skipped=np.array(s.skipped))


def generate(
    fmodel: Any,
    pool: ImagePool,
    spec: AttackSpec,
    *,
    n: int,
    classes: Sequence[int],
    seed: int,
    cache_file: Path | None,
    cache_key: str = "",
    chunk: int = 16,
    progress: bool = True,
) -> AdversarialSet:
    """Attack pool images in order until ``n`` attacks succeeded (or the pool ends). With a
    ``cache_file`` every chunk is saved, and a run that was killed resumes where it stopped."""
    import torch
    from tqdm import tqdm

    params = json.dumps([spec.params(), seed, cache_key], sort_keys=True)  # n may grow
    shape = tuple(pool.images([0]).shape[1:])
    state = (_load(cache_file, params) if cache_file is not None else None) or _empty(shape)
    bar = tqdm(total=n, desc=spec.name, unit="adv", disable=not progress,
               initial=min(int(state.success.sum()), n))
    while int(state.success.sum()) < n and state.next_position < len(pool):
        end = min(state.next_position + chunk, len(pool))
        pos = np.arange(state.next_position, end)
        x = pool.images(pos)
        y = pool.labels[pos]
        with torch.no_grad():
            pred = fmodel(torch.as_tensor(x)).argmax(dim=1).numpy()
        ok = pred == y
        pos, x, y = pos[ok], x[ok], y[ok]
        targets = (draw_targets(y, pos, classes, seed) if spec.targeted
                   else np.full(len(y), -1, np.int64))
        if len(pos):
            batch = run_attack(fmodel, x, y, spec, targets=targets if spec.targeted else None)
            state = state._replace(
                positions=np.r_[state.positions, pos],
                success=np.r_[state.success, batch.success],
                l2=np.r_[state.l2, np.where(batch.success, batch.l2, np.nan)],
                targets=np.r_[state.targets, targets],
                adversarial=np.concatenate([state.adversarial, batch.adversarial[batch.success]]),
            )
            bar.update(max(0, min(int(state.success.sum()), n) - bar.n))
        state = state._replace(next_position=end, skipped=state.skipped + int((~ok).sum()))
        if cache_file is not None:
            _save(cache_file, params, state)
    bar.close()
    return state
