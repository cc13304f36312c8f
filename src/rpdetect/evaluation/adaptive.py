"""Attacks that know the detector (Carlini & Wagner 2017; Tramer, Carlini, Brendel & Madry 2020),
and the measure that answers whether rpdetect survives them.

**The measure.** An attack succeeds on an image when the classifier is fooled (the detector's
own label differs from the true one) AND the calibrated detector, run as shipped (the
:class:`rpdetect.Detector` on the calibrated ONNX file, drawing its own fresh noise from a
stream the attacker never sees), does not flag it. Each attack is run at several budgets
(epsilons); every calibration rule the detector offers is measured on the same examples.

**The attacks** (:data:`ADAPTIVE_KINDS`; each is PGD in the L-inf or L2 ball, projected to
[0, 1], step ``2.5 * eps / steps`` as in Tramer et al.'s code, random start in the L-inf ball):

``adaptive-pgd``: minimise ``relu(margin + c) + weight * penalty``. ``margin`` is the clean
    logit of the true class minus the best other (targeted: the best other minus the target);
    ``penalty`` is, averaged over ``eot`` fresh draws of the detector's own noise (the n copies
    x + N(0, 1) * kappa_i of each draw), the hinge (or softplus) of every copy's score1 and score2
    over its threshold (as ratios ``score / t - (1 - slack)``) plus the soft flip count
    (:func:`rpdetect.reference_torch.soft_flips`) over threshold3. The scores are the torch
    statement of Eq. 5/6 (:mod:`rpdetect.reference_torch`), on the same weights as the ONNX
    file. Thresholds: the calibrated ones of the rule attacked (default: the strictest of all
    rules per statistic, so that one run is measured under every rule). An image stops as soon
    as an iterate is misclassified and passes the rule under each of the step's own ``eot``
    draws and ``check_draws`` fresh ones, with score thresholds lowered by ``slack`` (the verdict that counts is the shipped detector's,
    with its own fresh noise, afterwards). The detector term counts only where the
    classification goal is reached (C&W's per-image hinge), so that it never pulls an iterate
    back across the boundary.
``logit-match``: Tramer et al.'s attack on "The Odds are Odd": minimise the squared distance of
    the logits to those of a clean image of another class, for the image itself and for its
    noisy copies (each matched to the target image under the same noise draw), with the same
    EOT. It needs no thresholds.

The **non-adaptive** twin of each (``adaptive=False``) is the same attack without the detector:
``adaptive-pgd`` -> plain PGD on cross-entropy for all its steps (Madry et al.); ``logit-match``
-> matching the clean logits only. Its examples give two rows: success against the detector,
and against the classifier alone (fooled, no detector).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, Sequence

import numpy as np

from .._atomic import atomic_path
from ..rule import Thresholds

__all__ = [
    "ADAPTIVE_KINDS",
    "AdaptiveResult",
    "AdaptiveSpec",
    "adaptive_attacks",
    "is_adaptive",
    "run_adaptive",
    "strictest",
]

AdaptiveKind = Literal["adaptive-pgd", "logit-match"]
Norm = Literal["linf", "l2"]
ADAPTIVE_KINDS: tuple[str, ...] = ("adaptive-pgd", "logit-match")
CACHE_VERSION = "a1"  # bump when the attack's code changes what a cached run would hold


@dataclass(frozen=True)
class AdaptiveSpec:
    """One adaptive attack at its budgets. ``eot``: noise draws per step (each draw is the
    detector's n copies); ``weight``, ``confidence``, ``slack``: the adaptive PGD's loss (see the
    module docstring); ``penalty``: "hinge" or "softplus"."""

    name: str
    kind: AdaptiveKind
    norm: Norm
    epsilons: tuple[float, ...]
    targeted: bool = False
    steps: int = 100
    eot: int = 16
    weight: float = 10.0
    confidence: float = 3.0
    slack: float = 0.1
    penalty: Literal["hinge", "softplus"] = "hinge"
    random_start: bool = True
    check_draws: int = 4  # fresh draws an iterate must also pass before the image stops
    # adaptive PGD's answer for an image that never passes its check: the last iterate, or the
    # misclassifying iterate with the lowest detector penalty seen on its draws ("best")
    keep: Literal["last", "best"] = "last"

    def __post_init__(self) -> None:
        if self.kind not in ADAPTIVE_KINDS:
            raise ValueError(f"{self.name}: kind {self.kind!r} not one of {ADAPTIVE_KINDS}")
        if self.norm not in ("linf", "l2"):
            raise ValueError(f"{self.name}: norm {self.norm!r} not linf or l2")
        if not self.epsilons or any(not (e > 0 and math.isfinite(e)) for e in self.epsilons):
            raise ValueError(f"{self.name}: epsilons must be finite and > 0, got {self.epsilons}")
        if self.steps < 1 or self.eot < 1:
            raise ValueError(f"{self.name}: steps and eot must be >= 1, got {self.steps}, "
                             f"{self.eot}")
        if self.penalty not in ("hinge", "softplus"):
            raise ValueError(f"{self.name}: penalty {self.penalty!r} not hinge or softplus")
        if self.keep not in ("last", "best"):
            raise ValueError(f"{self.name}: keep {self.keep!r} not last or best")

    @property
    def step_factor(self) -> float:
        return 2.5 / self.steps

    def params_hash(self, *extra: str) -> str:
        fields = dataclasses.asdict(self)
        if fields["keep"] == "last":  # the default before ``keep`` existed: same caches
            del fields["keep"]
        blob = json.dumps([fields, list(extra)], sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def describe(self) -> str:
        goal = "targeted" if self.targeted else "untargeted"
        return (f"{self.kind} {self.norm} {goal}, {self.steps} steps, EOT {self.eot} draws of "
                f"the n copies" + (f", weight {self.weight:g}, {self.penalty}"
                                   if self.kind == "adaptive-pgd" else "")
                + (", keeps the best iterate" if self.keep == "best" else ""))

    def quick(self) -> "AdaptiveSpec":
        """A smoke-run variant: 5 steps, 2 draws, the first two budgets."""
        return dataclasses.replace(self, steps=min(self.steps, 5), eot=min(self.eot, 2),
                                   epsilons=self.epsilons[:2])


def _pair(side_small: bool) -> dict[str, tuple[float, ...]]:
    # L-inf: 8/255 is the usual CIFAR-10 budget (Tramer et al.'s on The Odds are Odd), 4/255 and
    # below the usual ImageNet ones. L2: the paper's Table 1 mean L2 values (CIFAR-10 0.6, 0.75,
    # 1.0; ImageNette and Dogs vs Cats 0.85, 1, 1.4, 2, 3) bracketed by these.
    if side_small:
        return {"linf": (2 / 255, 4 / 255, 8 / 255, 16 / 255), "l2": (0.25, 0.5, 0.75, 1.0)}
    return {"linf": (1 / 255, 2 / 255, 4 / 255, 8 / 255), "l2": (0.5, 1.0, 2.0, 3.0)}


def adaptive_attacks(input_shape: Sequence[int]) -> dict[str, AdaptiveSpec]:
    """Every adaptive attack for images of ``input_shape`` (C, H, W), by name: CIFAR-sized
    budgets below 112 pixels a side, ImageNet-sized ones from it."""
    budgets = _pair(min(int(d) for d in tuple(input_shape)[-2:]) < 112)
    out: dict[str, AdaptiveSpec] = {}
    for kind in ADAPTIVE_KINDS:
        for norm in ("linf", "l2"):
            for targeted in (False, True):
                name = f"{kind}-{norm}" + ("-t" if targeted else "")
                out[name] = AdaptiveSpec(name, kind, norm, budgets[norm],  # type: ignore[arg-type]
                                         targeted=targeted)
    return out


def is_adaptive(name: str) -> bool:
    return any(name.startswith(k + "-") for k in ADAPTIVE_KINDS)


def strictest(rules: Sequence[Thresholds]) -> Thresholds:
    """Per statistic and kappa, the lowest threshold of ``rules``: an image that passes it
    passes every one of them."""
    t1 = np.min([r.threshold1 for r in rules], axis=0)
    t2 = np.min([r.threshold2 for r in rules], axis=0)
    return Thresholds.of(t1, t2, min(r.threshold3 for r in rules), n=rules[0].n)


# --- the attack in torch --------------------------------------------------------------------


class _TorchDetector:
    """The classifier in pixel space and the detector's statistics, in torch."""

    def __init__(self, module: Any, mean: Sequence[float], std: Sequence[float],
                 kappas: Sequence[float], thresholds: Thresholds | None) -> None:
        import torch

        self.module = module
        c = len(mean)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, c, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, c, 1, 1)
        self.kappas = torch.tensor(kappas, dtype=torch.float32)
        self.n = len(kappas)
        if thresholds is not None:
            self.t1 = torch.tensor(thresholds.threshold1, dtype=torch.float32)
            self.t2 = torch.tensor(thresholds.threshold2, dtype=torch.float32)
            self.t3 = float(thresholds.threshold3)

    def logits(self, x: Any) -> Any:
        import torch

        x = ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        return self.module(x)

    def with_copies(self, x: Any, draws: int, gen: Any) -> tuple[Any, Any, Any]:
        """Logits of x [B, C, H, W] and of ``draws`` sets of its n noisy copies:
        z_clean [B, K], z_noisy [B, draws * n, K], and the noise [B, draws * n, C, H, W]."""
        import torch

        from .. import reference_torch as rt

        b = x.shape[0]
        noise = torch.randn((b, draws * self.n, *x.shape[1:]), generator=gen)
        kappas = self.kappas.repeat(draws)
        noisy = rt.noisy_copies(x, noise, kappas)
        z = self.logits(torch.cat([x, noisy.reshape(-1, *x.shape[1:])]))
        return z[:b], z[b:].reshape(b, draws * self.n, -1), noise

    def flagged(self, z_clean: Any, z_noisy: Any, draws: int, *, scale: float = 1.0) -> Any:
        """The rule's verdict under each draw: [B, draws] bool (strictly greater, float32),
        with score1/score2 thresholds multiplied by ``scale``."""
        from .. import reference_torch as rt

        b = z_clean.shape[0]
        s = rt.scores(z_clean, z_noisy)
        s1 = s.score1.reshape(b, draws, self.n)
        s2 = s.score2.reshape(b, draws, self.n)
        flips = s.flipped.reshape(b, draws, self.n).sum(-1)
        return ((s1 > self.t1 * scale).any(-1) | (s2 > self.t2 * scale).any(-1)
                | (flips > self.t3))

    def penalty(self, z_clean: Any, z_noisy: Any, draws: int, spec: AdaptiveSpec) -> Any:
        """The detector term of the adaptive loss, per image [B], averaged over draws."""
        import torch

        from .. import reference_torch as rt

        b = z_clean.shape[0]
        act = (torch.relu if spec.penalty == "hinge"
               else lambda v: torch.nn.functional.softplus(v * 10.0) / 10.0)
        total = torch.zeros(b)
        for t, s in ((self.t1, rt.score1(z_clean, z_noisy)), (self.t2, rt.score2(z_clean,
                                                                                  z_noisy))):
            finite = torch.isfinite(t)
            if finite.any():
                ratio = s.reshape(b, draws, self.n)[..., finite] / t[finite]
                total = total + act(ratio - (1.0 - spec.slack)).sum(-1).mean(-1)
        if math.isfinite(self.t3):
            soft = rt.soft_flips(z_clean.repeat_interleave(draws, 0),
                                 z_noisy.reshape(b * draws, self.n, -1)).reshape(b, draws)
            total = total + act(soft - (self.t3 + 0.5 - spec.slack * 2.5)).mean(-1)
        return total


def _margin(z: Any, y: Any, targeted: bool) -> Any:
    """Untargeted: z_y - max_{j != y} z_j; targeted (y = target): max_{j != y} z_j - z_y.
    Positive while the attack has not reached its goal."""
    import torch

    zy = z.gather(1, y.view(-1, 1))[:, 0]
    other = z.masked_fill(torch.nn.functional.one_hot(y, z.shape[1]).bool(), -torch.inf)
    best = other.amax(1)
    return best - zy if targeted else zy - best


def _project(x_adv: Any, x: Any, eps: float, norm: Norm) -> Any:
    import torch

    d = x_adv - x
    if norm == "linf":
        d = d.clamp(-eps, eps)
    else:
        n = d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        d = d * torch.clamp(eps / n, max=1.0)
    return (x + d).clamp(0.0, 1.0)


def _step(x_adv: Any, grad: Any, alpha: float, norm: Norm) -> Any:
    """A descent step of size ``alpha`` (L-inf: sign; L2: normalised gradient)."""
    if norm == "linf":
        return x_adv - alpha * grad.sign()
    n = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return x_adv - alpha * grad / n


def attack_batch(det: _TorchDetector, x: Any, y: Any, spec: AdaptiveSpec, eps: float, *,
                 adaptive: bool, gen: Any, goal: Any = None, target_images: Any = None
                 ) -> tuple[Any, Any]:
    """One attack on a batch x [B, C, H, W] with true labels y at budget ``eps``. ``goal``: the
    target classes (targeted attacks); ``target_images``: the clean images whose logits
    logit-match copies. Returns the adversarial examples and the step each image stopped at
    (``spec.steps`` when it ran them all; only the adaptive PGD stops early)."""
    import torch

    alpha = spec.step_factor * eps
    want = goal if spec.targeted else y
    x_adv = x.clone()
    if spec.random_start and spec.norm == "linf":
        x_adv = _project(x + (torch.rand(x.shape, generator=gen) * 2 - 1) * eps, x, eps, "linf")
    stopped = torch.full((len(x),), spec.steps, dtype=torch.int64)
    active = torch.ones(len(x), dtype=torch.bool)
    keep_best = spec.keep == "best" and spec.kind == "adaptive-pgd" and adaptive
    best = x_adv.clone() if keep_best else x_adv  # the lowest-penalty misclassifying iterate
    best_penalty = torch.full((len(x),), math.inf)
    draws = spec.eot
    for step in range(spec.steps):
        idx = active.nonzero()[:, 0]
        if not len(idx):
            break
        xa = x_adv[idx].detach().requires_grad_(True)
        if spec.kind == "logit-match":
            if adaptive:
                z_clean, z_noisy, noise = det.with_copies(xa, draws, gen)
            else:
                z_clean = det.logits(xa)
            with torch.no_grad():
                xt = target_images[idx]
                zt_clean = det.logits(xt)
                if adaptive:
                    from .. import reference_torch as rt

                    kap = det.kappas.repeat(draws)
                    zt_noisy = det.logits(rt.noisy_copies(xt, noise, kap).reshape(
                        -1, *xt.shape[1:])).reshape(len(idx), draws * det.n, -1)
            loss = ((z_clean - zt_clean) ** 2).sum(-1)
            if adaptive:
                loss = loss + ((z_noisy - zt_noisy) ** 2).sum(-1).mean(-1)
        elif adaptive:
            z_clean, z_noisy, _ = det.with_copies(xa, draws, gen)
            with torch.no_grad():  # the stopping check: this step's draws, then fresh ones
                scale = 1.0 - spec.slack
                done = (_margin(z_clean, want[idx], spec.targeted) < 0) & ~det.flagged(
                    z_clean, z_noisy, draws, scale=scale).any(-1)
                if done.any() and spec.check_draws:
                    zc, zn, _ = det.with_copies(xa[done], spec.check_draws, gen)
                    done[done.clone()] = ~det.flagged(zc, zn, spec.check_draws,
                                                      scale=scale).any(-1)
            if done.any():
                stopped[idx[done]] = step
                active[idx[done]] = False
            margin = _margin(z_clean, want[idx], spec.targeted)
            penalty = det.penalty(z_clean, z_noisy, draws, spec)
            if keep_best:
                with torch.no_grad():
                    better = (margin < 0) & (penalty < best_penalty[idx])
                    best[idx[better]] = xa.detach()[better]
                    best_penalty[idx[better]] = penalty.detach()[better]
            # the detector term only where the goal is reached, so that it never pulls an
            # iterate back across the boundary (C&W's hinge, per image)
            loss = (torch.relu(margin + spec.confidence) + spec.weight * (margin < 0).float()
                    * penalty)
        else:
            z_clean = det.logits(xa)
            ce = torch.nn.functional.cross_entropy(z_clean, want[idx], reduction="none")
            loss = ce if spec.targeted else -ce
        (grad,) = torch.autograd.grad(loss.sum(), xa)
        with torch.no_grad():
            keep = active[idx]  # images that passed this step's check keep that iterate
            new = _project(_step(xa, grad, alpha, spec.norm), x[idx], eps, spec.norm)
            x_adv[idx[keep]] = new[keep]
    if keep_best:
        # images still running end on their best iterate (the last one is unchecked anyway)
        use = active & torch.isfinite(best_penalty)
        x_adv[use] = best[use]
    return x_adv.detach(), stopped


# --- the measure ----------------------------------------------------------------------------


class AdaptiveRow(NamedTuple):
    """One budget of one attack under one rule (``rule``), over ``attacked`` images."""

    attack: str
    epsilon: float
    rule: str
    attacked: int
    adaptive_success: int  # fooled and not flagged (the adaptive attack)
    baseline_success: int  # fooled and not flagged (its non-adaptive twin)
    classifier_success: int  # the non-adaptive twin fools the classifier (no detector)
    adaptive_fooled: int  # the adaptive attack fools the classifier (flagged or not)
    adaptive_l2: float  # mean L2 / L-inf of the adaptive attack's successes
    adaptive_linf: float
    baseline_l2: float  # of the non-adaptive twin's successes against the detector
    baseline_linf: float
    classifier_l2: float  # of the non-adaptive twin's successes against the classifier
    classifier_linf: float
    mean_steps: float  # the adaptive attack's mean gradient steps per image (early stops)

    def rate(self, field: str) -> float:
        return getattr(self, field) / self.attacked if self.attacked else math.nan


class AdaptiveResult(NamedTuple):
    spec: AdaptiveSpec
    rows: list[AdaptiveRow]
    target_rule: str  # the thresholds the adaptive PGD attacked ("strictest" or a rule name)


class _AttackCache(NamedTuple):
    positions: np.ndarray  # [m] pool positions attacked
    adaptive: np.ndarray  # [m, C, H, W]
    baseline: np.ndarray  # [m, C, H, W]
    steps: np.ndarray  # [m] the adaptive attack's stopping step


def _load_cache(path: Path, key: str) -> _AttackCache | None:
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        if str(z["key"]) != key:
            return None
        return _AttackCache(z["positions"], z["adaptive"], z["baseline"], z["steps"])


def _save_cache(path: Path, key: str, c: _AttackCache) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        np.savez(tmp, key=np.array(key), **c._asdict())


def _distances(adv: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = (adv.astype(np.float64) - x).reshape(len(adv), -1)
    if not d.size:
        return np.zeros(len(adv)), np.zeros(len(adv))
    return np.sqrt((d ** 2).sum(1)), np.abs(d).max(1)


def _mean(v: np.ndarray, mask: np.ndarray) -> float:
    return float(v[mask].mean()) if mask.any() else math.nan


def _verdicts(path: Path, images: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The shipped detector on ``images``: (label [m], flagged [m]), fresh engine noise from a
    stream seeded by ``seed`` (never the attacker's)."""
    from ..engine import Detector
    from ..engine.session import SessionBuilder
    from ..errors import InputError

    if not len(images):
        return np.zeros(0, np.int64), np.zeros(0, bool)
    det = Detector(path, session_builder=SessionBuilder.cpu(), seed=seed)
    try:
        report = det.detect_many(np.ascontiguousarray(images, np.float32), progress=False)
    finally:
        det.close()
    if report.failures:
        raise InputError(f"{path}: the detector rejected {report.failures[0]}")
    return (np.array([r.label for r in report.results], np.int64),
            np.array([r.is_adversarial for r in report.results], bool))


def _cached_verdicts(path: Path, attack_key: str, state: _AttackCache,
                     rules: dict[str, tuple[Thresholds, Path]], seed: int
                     ) -> dict[str, tuple[np.ndarray, ...]]:
    """Per rule, the shipped detector's (label, flagged) on the adaptive and on the baseline
    examples of ``state``, each rule with a noise stream of its own (``seed`` + its index, and
    + 500 for the baseline); cached in ``path`` against the attack, the rules' thresholds and
    the seeds, since the detector runs cost as much as a short attack at 224x224."""
    key = json.dumps([attack_key, len(state.positions), seed,
                      {name: t.to_json() for name, (t, _) in rules.items()}])
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) == key:
                return {name: tuple(z[f"{name}__{part}"] for part in _VERDICT_PARTS)
                        for name in rules}
    out = {}
    for r, (name, (_, rule_path)) in enumerate(rules.items()):
        out[name] = (*_verdicts(rule_path, state.adaptive, seed + r),
                     *_verdicts(rule_path, state.baseline, seed + r + 500))
    with atomic_path(path) as tmp:
        np.savez(tmp, key=np.array(key), **{f"{name}__{part}": v for name, vs in out.items()
                                            for part, v in zip(_VERDICT_PARTS, vs)})
    return out


_VERDICT_PARTS = ("adaptive_label", "adaptive_flag", "baseline_label", "baseline_flag")


def run_adaptive(
    spec: AdaptiveSpec,
    *,
    module: Any,
    mean: Sequence[float],
    std: Sequence[float],
    kappas: Sequence[float],
    rules: dict[str, tuple[Thresholds, Path]],
    pool: Any,
    positions: np.ndarray,
    targets: np.ndarray,
    target_images: np.ndarray | None,
    work_dir: Path,
    cache_key: str,
    seed: int = 0,
    target_rule: str = "strictest",
    chunk: int = 8,
    progress: bool = True,
) -> AdaptiveResult:
    """Run ``spec`` and its non-adaptive twin at every budget on the pool images at
    ``positions`` (correctly classified ones; ``targets`` their target classes, or -1;
    ``target_images`` the clean images logit-match matches), then the shipped detector of every
    rule (``rules``: name -> its thresholds and calibrated file). Attacks are cached in
    ``work_dir`` per budget and chunk, so a killed run resumes."""
    import torch
    from tqdm import tqdm

    if target_rule == "strictest":
        attacked = strictest([t for t, _ in rules.values()])
    elif target_rule in rules:
        attacked = rules[target_rule][0]
    else:
        raise ValueError(f"target_rule: expected 'strictest' or one of {list(rules)}, got "
                         f"{target_rule!r}")
    det = _TorchDetector(module, mean, std, kappas, attacked)
    labels = np.asarray(pool.labels)[positions]
    rows: list[AdaptiveRow] = []
    clean = pool.images(positions)
    shape = tuple(clean.shape[1:])
    for eps in spec.epsilons:
        key = json.dumps([CACHE_VERSION, spec.params_hash(cache_key, str(eps)), target_rule,
                          attacked.to_json(), seed])
        path = work_dir / f"{spec.name}-{spec.params_hash(cache_key)}-eps{eps:.6g}.npz"
        state = _load_cache(path, key)
        if state is None or not np.array_equal(state.positions, positions[:len(state.positions)]):
            state = _AttackCache(np.zeros(0, np.int64), np.zeros((0, *shape), np.float32),
                                 np.zeros((0, *shape), np.float32), np.zeros(0, np.int64))
        bar = tqdm(total=len(positions), initial=len(state.positions), disable=not progress,
                   desc=f"{spec.name} eps={eps:.4g}", unit="img")
        while len(state.positions) < len(positions):
            start = len(state.positions)
            sel = np.arange(start, min(start + chunk, len(positions)))
            x = torch.as_tensor(pool.images(positions[sel]))
            y = torch.as_tensor(labels[sel])
            goal = torch.as_tensor(targets[sel]) if spec.targeted else None
            xt = (torch.as_tensor(target_images[sel]) if target_images is not None else None)
            gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(positions[sel[0]]))
            adv, steps = attack_batch(det, x, y, spec, eps, adaptive=True, gen=gen, goal=goal,
                                      target_images=xt)
            base, _ = attack_batch(det, x, y, spec, eps, adaptive=False, gen=gen, goal=goal,
                                   target_images=xt)
            state = _AttackCache(np.r_[state.positions, positions[sel]],
                                 np.concatenate([state.adaptive, adv.numpy()]),
                                 np.concatenate([state.baseline, base.numpy()]),
                                 np.r_[state.steps, steps.numpy()])
            _save_cache(path, key, state)
            bar.update(len(sel))
        bar.close()
        a_l2, a_inf = _distances(state.adaptive, clean)
        b_l2, b_inf = _distances(state.baseline, clean)
        verdicts = _cached_verdicts(path.with_name(path.stem + "-verdicts.npz"), key, state,
                                    rules, 7_919 + 1_000 * int(seed)
                                    + 10 * spec.epsilons.index(eps))
        for name, (a_label, a_flag, b_label, b_flag) in verdicts.items():
            a_ok, b_fooled = a_label != labels, b_label != labels
            a_pass, b_pass = a_ok & ~a_flag, b_fooled & ~b_flag
            rows.append(AdaptiveRow(
                spec.name, float(eps), name, len(positions), int(a_pass.sum()),
                int(b_pass.sum()), int(b_fooled.sum()), int(a_ok.sum()),
                _mean(a_l2, a_pass), _mean(a_inf, a_pass), _mean(b_l2, b_pass),
                _mean(b_inf, b_pass), _mean(b_l2, b_fooled), _mean(b_inf, b_fooled),
                float(state.steps.mean())))
    return AdaptiveResult(spec, rows, target_rule)


# --- the evaluation -------------------------------------------------------------------------


class AdaptiveEvaluation(NamedTuple):
    rules: dict[str, Any]  # rule name -> protocol.RuleCalibration
    calibration_images: int
    results: list[AdaptiveResult]


def _correct_positions(runner: Any, pool: Any, n: int, *, reverse: bool = False,
                       want: dict[int, int] | None = None) -> np.ndarray:
    """The first ``n`` pool positions (from the end with ``reverse``) the ONNX classifier gets
    right."""
    order = np.arange(len(pool))[::-1] if reverse else np.arange(len(pool))
    found: list[int] = []
    for start in range(0, len(order), 64):
        pos = order[start:start + 64]
        ok = runner.logits(pool.images(pos)).argmax(1) == np.asarray(pool.labels)[pos]
        found.extend(int(p) for p in pos[ok])
        if len(found) >= n:
            break
    return np.asarray(found[:n], np.int64)


def _target_images(runner: Any, pool: Any, targets: np.ndarray, avoid: set[int]) -> np.ndarray:
    """For each target class, a clean pool image of it that the classifier gets right (the
    last such one in the pool, never an attacked image); ValueError where there is none."""
    labels = np.asarray(pool.labels)
    chosen: dict[int, int] = {}
    for c in sorted({int(t) for t in targets}):
        cand = [int(p) for p in np.flatnonzero(labels == c)[::-1] if int(p) not in avoid]
        for start in range(0, len(cand), 16):
            part = np.asarray(cand[start:start + 16])
            ok = runner.logits(pool.images(part)).argmax(1) == c
            if ok.any():
                chosen[c] = int(part[ok][0])
                break
        else:
            raise ValueError(f"logit-match: no correctly classified image of class {c} in the "
                             f"evaluation images to match")
    return pool.images([chosen[int(t)] for t in targets])


def evaluate_adaptive(
    classifier: Any,
    *,
    calibration: Any,
    pool: Any,
    specs: Sequence[AdaptiveSpec],
    work_dir: Path,
    kappas: Sequence[float],
    n: int = 100,
    fpr: float = 0.05,
    seed: int = 0,
    target_rule: str = "strictest",
    chunk: int | None = None,
    progress: bool = True,
    classifier_onnx: Path | None = None,
    on_result: Any = None,
) -> AdaptiveEvaluation:
    """The detector of ``classifier`` (the attacks need its gradients: a torch
    :class:`~.protocol.Classifier`'s, or a :class:`~.protocol.ClassifierFile`'s graph
    interpreted in torch) calibrated at ``fpr`` with every rule it offers, then every spec on the
    first ``n`` correctly classified pool images. ``on_result`` is called with the partial
    evaluation after every attack."""
    from ..export.graph import load_onnx
    from .attacks import draw_targets
    from .protocol import calibrate_modes, prepare_detector
    from .scoring import ClassifierRunner

    prepared = prepare_detector(classifier, calibration=calibration, work_dir=work_dir,
                                kappas=kappas, seed=seed, progress=progress,
                                classifier_onnx=classifier_onnx)
    rules = calibrate_modes(prepared.calibration, fpr=fpr, detector=load_onnx(prepared.path),
                            work_dir=work_dir, key=prepared.key)
    runner = ClassifierRunner(prepared.classifier_path)
    positions = _correct_positions(runner, pool, n)
    if not len(positions):
        from ..errors import InputError

        raise InputError("adaptive attacks: the classifier gets none of the evaluation images "
                         "right, and only correctly classified images are attacked")
    labels = np.asarray(pool.labels)[positions]
    targets = draw_targets(labels, positions, classifier.classes, seed)
    module, mean, std = classifier.gradient_module()
    for p in module.parameters():
        p.requires_grad_(False)
    side = min(classifier.input_shape[1:])
    chunk = chunk or (16 if side < 112 else 2)
    results: list[AdaptiveResult] = []
    out = AdaptiveEvaluation(rules, len(calibration), results)
    for spec in specs:
        xt = (_target_images(runner, pool, targets, set(int(p) for p in positions))
              if spec.kind == "logit-match" else None)
        res = run_adaptive(
            spec, module=module, mean=mean, std=std, kappas=kappas,
            rules={k: (r.thresholds, r.detector_path) for k, r in rules.items()}, pool=pool,
            positions=positions, targets=targets, target_images=xt, work_dir=work_dir / "adaptive",
            cache_key=prepared.key, seed=seed, target_rule=target_rule, chunk=chunk,
            progress=progress)
        results.append(res)
        out = AdaptiveEvaluation(rules, len(calibration), list(results))
        if on_result is not None:
            on_result(out)
    return out
