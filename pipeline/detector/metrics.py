"""Image-level metrics: AUROC, ROC and precision-recall curves, and the confusion matrix.
Anomalous is the positive class; higher scores mean more anomalous."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

# The normal distribution's two-sided 95 % point: intervals are this many standard errors
Z_95 = 1.959964


@dataclass(frozen=True)
class Confusion:
    true_positive: int
    false_positive: int
    true_negative: int
    false_negative: int

    @property
    def precision(self) -> float:
        flagged = self.true_positive + self.false_positive
        return self.true_positive / flagged if flagged else 0.0

    @property
    def recall(self) -> float:
        actual = self.true_positive + self.false_negative
        return self.true_positive / actual if actual else 0.0

    @property
    def f1(self) -> float:
        total = self.precision + self.recall
        return 2 * self.precision * self.recall / total if total else 0.0


def auroc(normal: Sequence[float], anomalous: Sequence[float]) -> float | None:
    """Probability that an anomalous image outscores a normal one (ties count half).
    None when either class is empty.

    >>> auroc([0.1, 0.2], [0.3, 0.4])
    1.0
    >>> auroc([0.1, 0.5], [0.5, 0.2])
    0.625
    >>> auroc([0.1], []) is None
    True
    """
    if not len(normal) or not len(anomalous):
        return None
    neg = np.asarray(normal, float)[None, :]
    pos = np.asarray(anomalous, float)[:, None]
    return float(((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size))


def auroc_standard_error(value: float, n_normal: int, n_anomalous: int) -> float:
    """The standard error of an AUROC measured on this many images (Hanley and McNeil,
    1982): how far it could move by chance with other images of the same kind.

    >>> round(auroc_standard_error(0.65, 31, 31), 3)
    0.07
    >>> round(auroc_standard_error(0.97, 20, 20), 3)
    0.028
    >>> auroc_standard_error(1.0, 14, 8)
    0.0
    """
    q1, q2 = value / (2.0 - value), 2.0 * value * value / (1.0 + value)
    variance = (value * (1.0 - value) + (n_anomalous - 1) * (q1 - value * value)
                + (n_normal - 1) * (q2 - value * value)) / max(n_normal * n_anomalous, 1)
    return float(np.sqrt(max(variance, 0.0)))


def proportion_interval(count: int, out_of: int, z: float = Z_95
                        ) -> tuple[float, float] | None:
    """The Wilson score interval of a share, `count` of `out_of` (95 % by default): where
    the share could lie, given what these images showed. Unlike the share's own standard
    error it does not shrink to nothing at 0 or at all of them: finding 8 of 8 defects is
    consistent with missing one in three. None when there is nothing to count.

    >>> [round(x, 3) for x in proportion_interval(17, 20)]
    [0.64, 0.948]
    >>> [round(x, 3) for x in proportion_interval(8, 8)]
    [0.676, 1.0]
    >>> [proportion_interval(n, n)[1] for n in (4, 10)], proportion_interval(0, 69)[0]
    ([1.0, 1.0], 0.0)
    >>> proportion_interval(0, 0) is None
    True
    """
    if out_of <= 0:
        return None
    share, n = count / out_of, float(out_of)
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # at none and at all of them a bound is exactly 0 or 1, which rounding can miss
    low = 0.0 if count <= 0 else max(0.0, centre - half)
    high = 1.0 if count >= out_of else min(1.0, centre + half)
    return float(low), float(high)


def confusion(normal: Sequence[float], anomalous: Sequence[float],
              threshold: float) -> Confusion:
    """Counts when scores at or above `threshold` are called anomalous.

    >>> c = confusion([0.1, 0.6], [0.7, 0.4], 0.5)
    >>> c.true_positive, c.false_positive, c.true_negative, c.false_negative, c.f1
    (1, 1, 1, 1, 0.5)
    """
    neg = np.asarray(normal, float)
    pos = np.asarray(anomalous, float)
    tp = int((pos >= threshold).sum())
    fp = int((neg >= threshold).sum())
    return Confusion(tp, fp, len(neg) - fp, len(pos) - tp)


def roc_curve(normal: Sequence[float], anomalous: Sequence[float]
              ) -> tuple[list[float], list[float]]:
    """(false-positive rates, true-positive rates) from (0, 0) to (1, 1).

    >>> roc_curve([0.1, 0.2], [0.3])
    ([0.0, 0.0, 0.5, 1.0], [0.0, 1.0, 1.0, 1.0])
    """
    fpr, tpr = [0.0], [0.0]
    for cut in sorted(set(normal) | set(anomalous), reverse=True):
        counts = confusion(normal, anomalous, cut)
        fpr.append(counts.false_positive / max(len(normal), 1))
        tpr.append(counts.true_positive / max(len(anomalous), 1))
    return fpr, tpr


def pr_curve(normal: Sequence[float], anomalous: Sequence[float]
             ) -> tuple[list[float], list[float]]:
    """(recalls, precisions), one point per distinct score cut, highest cut first.

    >>> pr_curve([0.1, 0.2], [0.3])
    ([1.0, 1.0, 1.0], [1.0, 0.5, 0.3333333333333333])
    """
    recalls, precisions = [], []
    for cut in sorted(set(normal) | set(anomalous), reverse=True):
        counts = confusion(normal, anomalous, cut)
        recalls.append(counts.recall)
        precisions.append(counts.precision)
    return recalls, precisions


def listed(aurocs: Iterable[float]) -> str:
    """AUROCs as the CLI, the HTML report and the benchmark list them.

    >>> listed([0.968, 0.98])
    '0.968, 0.980'
    """
    return ", ".join(f"{value:.3f}" for value in aurocs)
