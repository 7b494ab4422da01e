"""Statistics of scored items: accuracy with its Wilson interval, macro-F1, the argmax lm-eval uses."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["Z95", "wilson_interval", "macro_f1", "argmax"]

#: the two-sided 95 % quantile of the standard normal distribution
Z95 = 1.959963984540054


def wilson_interval(correct: int, total: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``correct / total`` (95 % by default).

    ``center = (p + z²/2n) / (1 + z²/n)``, ``half = z / (1 + z²/n) · sqrt(p(1 - p)/n + z²/4n²)``.
    Unlike the normal approximation it stays inside [0, 1] and is sensible at p = 0 or 1 and small n.
    ``(0, 1)`` when there is nothing to count.
    """
    if total <= 0:
        return 0.0, 1.0
    if not 0 <= correct <= total:
        raise ValueError("correct must be between 0 and total")
    p = correct / total
    z2 = z * z
    denominator = 1 + z2 / total
    center = (p + z2 / (2 * total)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / total + z2 / (4 * total * total))
    return max(0.0, center - half), min(1.0, center + half)


def macro_f1(gold: Sequence[int], predicted: Sequence[int]) -> float:
    """The unweighted mean over classes of ``F1 = 2·TP / (2·TP + FP + FN)``.

    The classes are those that occur in ``gold`` or ``predicted`` (scikit-learn's ``f1_score(average="macro")``);
    a class never predicted and never gold cannot occur. 0.0 for no items.
    """
    if len(gold) != len(predicted):
        raise ValueError("gold and predicted differ in length")
    classes = sorted(set(gold) | set(predicted))
    if not classes:
        return 0.0
    scores = []
    for c in classes:
        tp = sum(1 for g, p in zip(gold, predicted, strict=True) if g == c and p == c)
        fp = sum(1 for g, p in zip(gold, predicted, strict=True) if g != c and p == c)
        fn = sum(1 for g, p in zip(gold, predicted, strict=True) if g == c and p != c)
        scores.append(2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores)


def argmax(values: Sequence[float]) -> int:
    """The index of the largest value, the first one on ties (``numpy.argmax``, as lm-eval picks)."""
    best = 0
    for i, value in enumerate(values):
        if value > values[best]:
            best = i
    return best
