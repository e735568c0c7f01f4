"""Score normalisation and threshold choice: small pure functions.

A method's raw score has no fixed scale. Training picks a raw threshold from
cross-validated scores and a spread from the held-out normal images; `normalise` maps raw
scores through a logistic so that

- the raw threshold maps to exactly 0.5 (so `base.verdict` gives confidence 0.5 there),
- a typical (median) held-out normal image maps to `NORMAL_ANCHOR` (0.1),
- the result is monotonic in the raw score and always inside (0, 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

NORMAL_ANCHOR = 0.1


@dataclass(frozen=True)
class Calibration:
    """How raw scores of one trained model map onto the normalised [0, 1] scale."""

    raw_threshold: float
    scale: float

    def normalise(self, raw: float) -> float:
        return normalise(raw, self.raw_threshold, self.scale)

    def raw(self, normalised: float) -> float:
        return denormalise(normalised, self.raw_threshold, self.scale)


def normalise(raw: float, raw_threshold: float, scale: float) -> float:
    """The normalised score of `raw`: 0.5 at `raw_threshold`, logistic with width `scale`.

    >>> normalise(3.0, 3.0, 1.0)
    0.5
    >>> round(normalise(1.0, 3.0, spread_scale(1.0, 3.0)), 3)
    0.1
    >>> normalise(1e9, 3.0, 1.0)
    1.0
    """
    z = (raw - raw_threshold) / scale
    if z < -700:
        return 0.0
    if z > 700:
        return 1.0
    return 1.0 / (1.0 + math.exp(-z))


def denormalise(score: float, raw_threshold: float, scale: float) -> float:
    """The raw score whose normalised score is `score` (the inverse of `normalise`).

    >>> round(denormalise(normalise(2.0, 3.0, 0.5), 3.0, 0.5), 6)
    2.0
    """
    score = min(max(score, 1e-12), 1.0 - 1e-12)
    return raw_threshold + scale * math.log(score / (1.0 - score))


def spread_scale(normal_median: float, raw_threshold: float,
                 anchor: float = NORMAL_ANCHOR) -> float:
    """The logistic width that maps `normal_median` to `anchor` and the threshold to 0.5.

    >>> round(spread_scale(1.0, 3.0), 4)
    0.9102
    >>> spread_scale(3.0, 3.0) > 0
    True
    """
    gap = raw_threshold - normal_median
    if gap <= 0:
        gap = max(abs(raw_threshold) * 0.05, 1e-6)
    return gap / math.log((1.0 - anchor) / anchor)


def best_f1_threshold(normal: Sequence[float], anomalous: Sequence[float]) -> float:
    """The raw threshold with the best F1 on labelled scores (anomalous = positive).

    The cut sits halfway between the two neighbouring scores it separates, so it is not
    glued to one training image; ties on F1 go to the higher threshold (fewer alarms).

    >>> best_f1_threshold([0.1, 0.2, 0.3], [0.7, 0.8])
    0.5
    >>> round(best_f1_threshold([0.1, 0.5, 0.2], [0.4, 0.9, 0.8]), 6)
    0.3
    """
    scores = np.concatenate([np.asarray(normal, float), np.asarray(anomalous, float)])
    labels = np.concatenate([np.zeros(len(normal)), np.ones(len(anomalous))])
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    true_pos = np.cumsum(labels)
    predicted = np.arange(1, len(scores) + 1)
    f1 = 2 * true_pos / (predicted + labels.sum())
    distinct = np.append(scores[1:] < scores[:-1], True)
    f1 = np.where(distinct, f1, -1.0)
    best = float(f1.max())
    k = int(np.flatnonzero(f1 >= best - 1e-12)[0])
    below = scores[k + 1] if k + 1 < len(scores) else scores[k] - abs(scores[k]) * 0.1 - 1e-6
    return float((scores[k] + below) / 2.0)


def normal_only_threshold(normal: Sequence[float], margin: float = 0.25) -> float:
    """The raw threshold when only normal images exist: above every held-out normal.

    It sits at the highest held-out normal score plus `margin` times that score's distance
    from the median, so a normal image as odd as the oddest seen in cross-validation still
    passes.

    >>> normal_only_threshold([1.0, 2.0, 3.0, 5.0])
    5.625
    """
    values = np.asarray(normal, float)
    top = float(values.max())
    return top + margin * (top - float(np.median(values)))
