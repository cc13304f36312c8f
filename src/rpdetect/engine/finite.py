"""Non-finite outputs are an error for that input, never a verdict.

A classifier whose logits become NaN or +-inf on some input (``Log`` of a zero, an overflow)
gives NaN scores, and ``NaN > threshold`` is false: the graph would call that input clean. The
engine checks every result and turns such an input into an error naming it and the outputs
that are not finite.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError

__all__ = ["NonFiniteError", "check_finite", "nonfinite_message"]

# the outputs of a DetectionResult that must be finite for its verdict to mean anything
_CHECKED: tuple[str, ...] = ("logits", "score1", "score2", "score1_max", "score2_max")


class NonFiniteError(InputError):
    """The classifier gave NaN or infinite logits or scores for this input: no verdict."""


def _describe(name: str, values: Any) -> str | None:
    arr = np.asarray(values, dtype=np.float64).ravel()
    bad = ~np.isfinite(arr)
    if not bad.any():
        return None
    kinds = [k for k, m in (("NaN", np.isnan(arr)), ("+inf", arr == np.inf),
                            ("-inf", arr == -np.inf)) if m.any()]
    return f"{name} {int(bad.sum())} of {arr.size} {'/'.join(kinds)}"


def nonfinite_message(result: Any) -> str | None:
    """None if ``result``'s logits and scores are all finite, else what is not."""
    parts = [d for name in _CHECKED if (d := _describe(name, getattr(result, name))) is not None]
    if not parts:
        return None
    return (f"{result.source}: the classifier gave non-finite values ({'; '.join(parts)}), so "
            f"there is no verdict for this input; the classifier overflows or takes a log of 0 "
            f"on it (check the model on this image)")


def check_finite(result: Any) -> Any:
    """``result`` unchanged, or ``NonFiniteError`` naming the input and the bad outputs."""
    message = nonfinite_message(result)
    if message is not None:
        raise NonFiniteError(message)
    return result
