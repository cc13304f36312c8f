"""Black-box, query-based attacks on a classifier known only by its logits (an ONNX file run
through ONNX Runtime, or any function [B, C, H, W] float32 in [0, 1] -> [B, K] logits).

Two attacks, both counting the queries (images evaluated) each image used:

- ``square-linf``: Square Attack L-inf (Andriushchenko et al. 2020, "Square Attack: a
  query-efficient black-box adversarial attack via random search", arXiv:1912.00049), written
  here after the authors' reference ``square_attack_linf`` (github.com/max-andr/square-attack):
  vertical-stripe initialisation, one random square per image and iteration whose side follows
  the paper's piecewise-constant schedule of ``p``, margin loss (untargeted) or cross-entropy
  loss on the target (targeted), one query per iteration per image not yet fooled, stop at the
  first success. Not ART's ``SquareAttack``: that one queries each image three times per
  iteration (so its query counts are not the paper's), draws one square for the whole batch,
  has no targeted mode, and draws from NumPy's global generator.
- ``hsj-l2``: Foolbox 3.3.4's ``HopSkipJumpAttack`` (L2, decision-based) on a
  ``fb.models.NumPyModel`` over the logits function, one image at a time so that its queries
  are counted exactly and capped at the budget. Targeted runs start from a clean image the
  classifier assigns to the target class (as in the HopSkipJump paper).

Randomness is drawn per image from (seed, position), so a result does not depend on chunking or
on resumption. Foolbox draws from NumPy's global generator; it is seeded for the one image and
restored afterwards.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, NamedTuple, Sequence

import numpy as np

if TYPE_CHECKING:
    import onnxruntime as ort

    from .attacks import AttackSpec

__all__ = [
    "BudgetExhausted",
    "LogitsClassifier",
    "OnnxClassifier",
    "QueryResult",
    "hop_skip_jump_l2",
    "image_rng",
    "p_selection",
    "run_blackbox",
    "square_attack_linf",
    "target_examples",
]

LogitsFn = Callable[[np.ndarray], np.ndarray]


class LogitsClassifier:
    """A classifier given only as a logits function ``[B, C, H, W] float32 in [0, 1] -> [B, K]``.

    ``logits`` evaluates any number of images in chunks of ``batch_size`` and counts them in
    ``queries`` (the images evaluated since construction, or since :meth:`reset_queries`)."""

    def __init__(self, logits_fn: LogitsFn, *, input_shape: Sequence[int], nb_classes: int,
                 batch_size: int = 64) -> None:
        shape = tuple(int(d) for d in input_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"input_shape: expected (C, H, W) with positive sizes, got "
                             f"{tuple(input_shape)}")
        if nb_classes < 2:
            raise ValueError(f"nb_classes: a classifier needs at least 2 classes, got {nb_classes}")
        if batch_size < 1:
            raise ValueError(f"batch_size: expected a positive number, got {batch_size}")
        self._fn = logits_fn
        self.input_shape: tuple[int, int, int] = shape  # type: ignore[assignment]
        self.nb_classes = int(nb_classes)
        self.batch_size = int(batch_size)
        self.queries = 0

    def reset_queries(self) -> None:
        self.queries = 0

    def logits(self, x: np.ndarray) -> np.ndarray:
        """[N, K] float32 logits of the images ``x`` ([N, C, H, W]); counts N queries."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 4 or x.shape[1:] != self.input_shape:
            raise ValueError(f"images: expected shape [N, {', '.join(map(str, self.input_shape))}]"
                             f", got {list(x.shape)}")
        parts = [self._chunk_logits(x[i:i + self.batch_size])
                 for i in range(0, len(x), self.batch_size)]
        self.queries += len(x)
        return (np.concatenate(parts) if parts
                else np.zeros((0, self.nb_classes), np.float32))

    def _chunk_logits(self, x: np.ndarray) -> np.ndarray:
        z = np.asarray(self._fn(x), dtype=np.float32)
        if z.shape != (len(x), self.nb_classes):
            raise ValueError(f"the classifier returned logits of shape {list(z.shape)} for "
                             f"{len(x)} images; expected [{len(x)}, {self.nb_classes}]")
        return z

    def predict(self, x: np.ndarray) -> np.ndarray:
        """[N] int64 predicted classes; counts N queries."""
        return self.logits(x).argmax(axis=1).astype(np.int64)

    __call__ = logits


class OnnxClassifier(LogitsClassifier):
    """An ONNX classifier (first input [B, C, H, W] float32 in [0, 1], first output [B, K]
    logits) run by ONNX Runtime. A symbolic batch dimension is fed chunks of ``batch_size``; a
    fixed one is fed exactly that many images, the last chunk padded with zeros (padding is not
    counted as queries). ``input_shape`` is needed only where C, H or W are symbolic.
    ``threads``: ONNX Runtime's intra-op threads for a session opened here (default: all cores;
    1 is faster for the one-image queries of HopSkipJump on a small model or a busy machine)."""

    def __init__(self, model: "str | Path | ort.InferenceSession", *, batch_size: int = 32,
                 input_shape: Sequence[int] | None = None, threads: int | None = None,
                 providers: Sequence[str] = ("CPUExecutionProvider",)) -> None:
        import onnxruntime as ort

        from ..engine.session import SessionBuilder

        if isinstance(model, ort.InferenceSession):
            sess, where = model, "the session"
        else:
            if not Path(model).is_file():
                raise FileNotFoundError(f"classifier {model}: no such file")
            sess = SessionBuilder(providers=tuple(providers), threads=threads).build(
                model, name=f"classifier {model}").session
            where = str(model)
        inp, out = sess.get_inputs()[0], sess.get_outputs()[0]
        if inp.type != "tensor(float)" or len(inp.shape) != 4:
            raise ValueError(f"classifier {where}: input {inp.name!r} is {inp.type} of shape "
                             f"{inp.shape}; expected a float32 [B, C, H, W] image batch")
        if len(out.shape) != 2:
            raise ValueError(f"classifier {where}: output {out.name!r} has shape {out.shape}; "
                             f"expected [B, K] logits")
        shape = _input_shape(inp.shape[1:], input_shape, where)
        fixed = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None
        self.session = sess
        self.input_name, self.output_name = inp.name, out.name
        self.fixed_batch = fixed
        classes = out.shape[1] if isinstance(out.shape[1], int) and out.shape[1] > 0 else None
        super().__init__(self._run, input_shape=shape, nb_classes=classes or 2,
                         batch_size=fixed or batch_size)
        if classes is None:  # symbolic K: learn it from one (uncounted) zero image
            self.nb_classes = int(self._run(np.zeros((1, *shape), np.float32)).shape[1])
            if self.nb_classes < 2:
                raise ValueError(f"classifier {where}: {self.nb_classes} output class; expected "
                                 f"[B, K] logits with K >= 2")

    def _run(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        if self.fixed_batch is not None and n < self.fixed_batch:
            x = np.concatenate([x, np.zeros((self.fixed_batch - n, *x.shape[1:]), x.dtype)])
        return self.session.run([self.output_name], {self.input_name: x})[0][:n]


def _input_shape(dims: Sequence[Any], given: Sequence[int] | None, where: str
                 ) -> tuple[int, int, int]:
    known = all(isinstance(d, int) and d > 0 for d in dims)
    if given is None:
        if not known:
            raise ValueError(f"classifier {where}: input dimensions {list(dims)} are symbolic; "
                             f"pass input_shape=(C, H, W)")
        return tuple(int(d) for d in dims)  # type: ignore[return-value]
    shape = tuple(int(d) for d in given)
    for d, g in zip(dims, shape):
        if isinstance(d, int) and d > 0 and d != g:
            raise ValueError(f"classifier {where}: input_shape {shape} does not match the "
                             f"model's input {list(dims)}")
    return shape  # type: ignore[return-value]


class QueryResult(NamedTuple):
    """What a black-box attack returns for a batch (success is re-checked by the caller)."""

    adversarial: np.ndarray  # [N, C, H, W] float32, in [0, 1]
    queries: np.ndarray  # [N] int64: the queries each image used


def image_rng(seed: int, position: int) -> np.random.Generator:
    """The generator of one image's attack, seeded by (seed, position)."""
    return np.random.default_rng([int(seed), int(position), 0x5A])


# --- Square Attack L-inf ------------------------------------------------------------------


_P_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)  # of 10000 iterations


def p_selection(p_init: float, it: int, n_iters: int) -> float:
    """The fraction of pixels a square covers at iteration ``it`` of ``n_iters``: the reference
    implementation's piecewise-constant schedule, ``p_init`` halved after each of
    :data:`_P_HALVINGS` (per 10000 iterations, rescaled to ``n_iters``), back to ``p_init``
    past the end."""
    it = int(it / n_iters * 10000)
    if it > 10000:
        return p_init
    return p_init / 2 ** sum(it > b for b in _P_HALVINGS)


def _margin(z: np.ndarray, cls: np.ndarray) -> np.ndarray:
    """z[cls] - max of the other logits."""
    rows = np.arange(len(z))
    other = z.copy()
    other[rows, cls] = -np.inf
    return z[rows, cls] - other.max(axis=1)


def _square_losses(z: np.ndarray, cls: np.ndarray, targeted: bool
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(loss to minimise, margin: > 0 while not yet adversarial) as in the reference: margin
    loss untargeted, cross-entropy on the target when targeted."""
    margin = _margin(z, cls)
    if not targeted:
        return margin, margin
    zs = z.astype(np.float64) - z.max(axis=1, keepdims=True)
    ce = np.log(np.exp(zs).sum(axis=1)) - zs[np.arange(len(z)), cls]
    return ce, -margin


def square_attack_linf(model: LogitsClassifier, x: np.ndarray, y: np.ndarray, *, eps: float,
                       queries: int, p_init: float = 0.05, targeted: bool = False,
                       rngs: Sequence[np.random.Generator]) -> QueryResult:
    """Square Attack L-inf on a batch. ``y``: the labels (untargeted) or the targets
    (targeted). At most ``queries`` queries per image (the initialisation counts one); each
    image stops at its first success. Returns the best image of each (within the eps-ball and
    [0, 1]) and the queries it used."""
    if not 0 < eps <= 1:
        raise ValueError(f"square-linf: epsilon must be in (0, 1], got {eps}")
    if queries < 1:
        raise ValueError(f"square-linf: queries must be at least 1, got {queries}")
    if len(rngs) != len(x):
        raise ValueError(f"square-linf: {len(rngs)} generators for {len(x)} images")
    x = np.asarray(x, dtype=np.float32)
    c, h, w = x.shape[1:]
    if min(h, w) < 2:
        raise ValueError(f"square-linf: images of {h}x{w} pixels; needs at least 2x2")
    init = np.stack([r.choice([-eps, eps], size=(c, 1, w)) for r in rngs]).astype(np.float32)
    x_best = np.clip(x + init, 0.0, 1.0)
    loss_min, margin_min = _square_losses(model.logits(x_best), y, targeted)
    n_queries = np.ones(len(x), np.int64)
    for i_iter in range(queries - 1):
        todo = np.flatnonzero(margin_min > 0)
        if not len(todo):
            break
        deltas = x_best[todo] - x[todo]
        p = p_selection(p_init, i_iter, queries)
        # the reference's side, at least 1 and at most h - 1 (min(h, w) - 1: it assumed h == w)
        s = min(max(int(round(math.sqrt(p * c * h * w / c))), 1), min(h, w) - 1)
        for j, i in enumerate(todo):
            _new_square(deltas[j], x[i], x_best[i], s, eps, rngs[i])
        x_new = np.clip(x[todo] + deltas, 0.0, 1.0)
        loss, margin = _square_losses(model.logits(x_new), y[todo], targeted)
        better = loss < loss_min[todo]
        loss_min[todo] = np.where(better, loss, loss_min[todo])
        margin_min[todo] = np.where(better, margin, margin_min[todo])
        x_best[todo[better]] = x_new[better]
        n_queries[todo] += 1
    return QueryResult(x_best, n_queries)


def _new_square(delta: np.ndarray, x: np.ndarray, x_best: np.ndarray, s: int, eps: float,
                rng: np.random.Generator) -> None:
    """Redraw ``delta`` (in place) on one random s x s square to +-eps per channel, redrawing
    while the square leaves the image as it is (the reference's guard against querying the
    same image twice; bounded here at 100 draws)."""
    c, h, w = x.shape
    ch, cw = int(rng.integers(0, h - s)), int(rng.integers(0, w - s))
    win = (slice(None), slice(ch, ch + s), slice(cw, cw + s))
    for _ in range(100):
        delta[win] = rng.choice([-eps, eps], size=(c, 1, 1))
        if np.any(np.abs(np.clip(x[win] + delta[win], 0, 1) - x_best[win]) >= 1e-7):
            return


# --- HopSkipJump L2 -----------------------------------------------------------------------


class BudgetExhausted(Exception):
    """Raised inside an attack when the next query would pass the image's budget."""


@dataclass
class _BudgetedImage:
    """The logits function for one image's attack: counts its queries, refuses the one past
    ``budget``, and remembers the closest adversarial image it was shown (the attack's result
    when the budget ends it)."""

    model: LogitsClassifier
    original: np.ndarray  # [C, H, W]
    cls: int
    targeted: bool
    budget: int
    used: int = 0
    best: np.ndarray | None = None
    best_l2: float = math.inf

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.used + len(x) > self.budget:
            raise BudgetExhausted
        x = np.asarray(x, dtype=np.float32)
        z = self.model.logits(x)
        self.used += len(x)
        pred = z.argmax(axis=1)
        hit = pred == self.cls if self.targeted else pred != self.cls
        for i in np.flatnonzero(hit):
            d = float(np.sqrt(((x[i].astype(np.float64) - self.original) ** 2).sum()))
            if d < self.best_l2:
                self.best, self.best_l2 = x[i].copy(), d
        return z


@contextlib.contextmanager
def _numpy_global_seed(rng: np.random.Generator) -> Iterator[None]:
    """Seed NumPy's global generator (Foolbox's NumPy tensors draw from it) from ``rng`` for
    the block, and put the caller's state back afterwards."""
    saved = np.random.get_state()
    np.random.seed(rng.integers(0, 2**32 - 1, size=4, dtype=np.uint64).astype(np.uint32))
    try:
        yield
    finally:
        np.random.set_state(saved)


def hop_skip_jump_l2(model: LogitsClassifier, x: np.ndarray, y: np.ndarray, *, queries: int,
                     steps: int, initial_gradient_eval_steps: int = 100,
                     max_gradient_eval_steps: int = 10000, gamma: float = 1.0,
                     targeted: bool = False, starting_points: np.ndarray | None = None,
                     rngs: Sequence[np.random.Generator]) -> QueryResult:
    """Foolbox's HopSkipJumpAttack (L2) image by image, at most ``queries`` queries each.
    ``y``: labels, or targets when ``targeted`` (then ``starting_points``, images classified as
    the targets, are required; NaN rows mark images without one, which fail). An image whose
    budget ends mid-attack gets the closest adversarial image queried so far. Failed images are
    returned unchanged."""
    import foolbox as fb

    if queries < 1 or steps < 1:
        raise ValueError(f"hsj-l2: queries and steps must be at least 1, got {queries}, {steps}")
    if targeted and starting_points is None:
        raise ValueError("hsj-l2 targeted: pass starting_points (images of the target classes)")
    if len(rngs) != len(x):
        raise ValueError(f"hsj-l2: {len(rngs)} generators for {len(x)} images")
    attack = fb.attacks.HopSkipJumpAttack(
        steps=steps, initial_gradient_eval_steps=initial_gradient_eval_steps,
        max_gradient_eval_steps=max_gradient_eval_steps, gamma=gamma, constraint="l2")
    x = np.asarray(x, dtype=np.float32)
    out, used = x.copy(), np.zeros(len(x), np.int64)
    for i in range(len(x)):
        start = None if starting_points is None else starting_points[i:i + 1]
        if start is not None and not np.isfinite(start).all():
            continue
        fn = _BudgetedImage(model, x[i].astype(np.float64), int(y[i]), targeted, queries)
        criterion = (fb.criteria.TargetedMisclassification(y[i:i + 1]) if targeted
                     else fb.criteria.Misclassification(y[i:i + 1]))
        result: np.ndarray | None = None
        with _numpy_global_seed(rngs[i]):
            try:
                result = np.asarray(attack.run(fb.models.NumPyModel(fn, bounds=(0, 1)),
                                               x[i:i + 1], criterion, starting_points=start),
                                    dtype=np.float32)[0]
            except BudgetExhausted:
                pass
            except ValueError as exc:  # Foolbox: no adversarial starting point was found
                if "init_attack failed" not in str(exc) and "not adversarial" not in str(exc):
                    raise
        used[i] = fn.used
        if result is None or fn.best_l2 < _l2(result, x[i]):
            result = fn.best
        if result is not None:
            out[i] = result
    return QueryResult(out, used)


def _l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(((a.astype(np.float64) - b) ** 2).sum()))


# --- dispatch from attacks.py -------------------------------------------------------------


def target_examples(model: LogitsClassifier, images: Callable[[np.ndarray], np.ndarray],
                    labels: np.ndarray, classes: np.ndarray, *, chunk: int = 32) -> dict[int, int]:
    """For each class in ``classes``, the first pool position whose image is labelled and
    classified as that class (a targeted HopSkipJump's starting point); classes with none are
    missing from the answer. ``images`` maps positions to images."""
    wanted = {int(c) for c in classes}
    found: dict[int, int] = {}
    candidates = np.flatnonzero(np.isin(labels, list(wanted)))
    for s in range(0, len(candidates), chunk):
        pos = np.array([p for p in candidates[s:s + chunk] if int(labels[p]) not in found])
        if not len(pos):
            continue
        pred = model.predict(images(pos))
        for p, k in zip(pos, pred):
            if k == labels[p] and int(k) not in found:
                found[int(k)] = int(p)
        if wanted <= found.keys():
            break
    return found


def run_blackbox(model: LogitsClassifier, images: np.ndarray, labels: np.ndarray,
                 spec: "AttackSpec", *, targets: np.ndarray | None, positions: np.ndarray,
                 seed: int, starting_points: np.ndarray | None = None) -> QueryResult:
    """The black-box attack ``spec`` on a batch, images seeded by (seed, position)."""
    if spec.queries is None:
        raise ValueError(f"attack {spec.name!r} ({spec.kind}): set queries, the budget per image")
    cls = targets if spec.targeted else labels
    if cls is None:
        raise ValueError(f"attack {spec.name!r} is targeted: pass targets")
    rngs = [image_rng(seed, p) for p in positions]
    if spec.kind == "square-linf":
        if spec.epsilon is None:
            raise ValueError(f"attack {spec.name!r} (square-linf): set epsilon (L-inf)")
        return square_attack_linf(model, images, cls, eps=spec.epsilon, queries=spec.queries,
                                  p_init=spec.p_init, targeted=spec.targeted, rngs=rngs)
    if spec.kind == "hsj-l2":
        return hop_skip_jump_l2(model, images, cls, queries=spec.queries, steps=spec.steps,
                                initial_gradient_eval_steps=spec.initial_gradient_eval_steps,
                                max_gradient_eval_steps=spec.max_gradient_eval_steps,
                                gamma=spec.hsj_gamma, targeted=spec.targeted,
                                starting_points=starting_points, rngs=rngs)
    raise ValueError(f"attack {spec.name!r}: {spec.kind} is not a black-box attack")
