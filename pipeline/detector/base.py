"""The detector interface: every backend (embedded model, SageMaker endpoint, ...) is an
adapter behind `Detector.detect(image_bytes, content_type) -> DetectionResult`.

`DetectionResult` keeps Amazon Lookout for Vision's DetectAnomalyResult shape
(`IsAnomalous`, `Confidence`, `Anomalies`, an anomaly mask) and adds the raw `Score`, the
`Threshold` used and the `ModelVersion`.

Scores are normalised so that the trained threshold sits at 0.5 on a [0, 1] scale; a
per-line threshold override is a number in [0, 1] on that same scale, so it can be changed
without retraining.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

DEFAULT_THRESHOLD = 0.5
# The `Color` of Lookout for Vision's `Anomalies` entries, as the embedded detector names them
BACKGROUND_COLOR = "#FFFFFF"
ANOMALY_COLOR = "#FF0000"


def check_threshold(threshold: float | None) -> float:
    """The threshold to apply: the override if given (must be in [0, 1]), else 0.5.

    >>> check_threshold(None)
    0.5
    >>> check_threshold(0.7)
    0.7
    >>> check_threshold(1.5)
    Traceback (most recent call last):
    ...
    ValueError: threshold must be in [0, 1] (normalised scale), got 1.5
    """
    if threshold is None:
        return DEFAULT_THRESHOLD
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1] (normalised scale), got {threshold}")
    return float(threshold)


class InvalidImageError(ValueError):
    """The bytes are not a usable image. The pipeline records the result as INVALID with
    `reason` (a short machine-friendly code) and `str(error)` (a human sentence)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class DetectorError(RuntimeError):
    """The backend could not score the image (endpoint down, model missing, a malformed
    response). Unlike `InvalidImageError` this says nothing about the image: retry later."""


@dataclass(frozen=True)
class DetectionResult:
    is_anomalous: bool
    confidence: float
    score: float
    threshold: float
    model_version: str
    raw_score: float = 0.0
    anomalies: list[dict[str, Any]] = field(default_factory=list)
    heatmap_png: bytes | None = None
    inference_ms: float = 0.0
    # What decoding accepted but changed, e.g. "converted_from_l", "exif_orientation_6".
    notes: tuple[str, ...] = ()

    def to_lookout(self) -> dict[str, Any]:
        """The Lookout for Vision DetectAnomalyResult shape, plus our extra fields."""
        return {
            "IsAnomalous": self.is_anomalous,
            "Confidence": self.confidence,
            "Anomalies": self.anomalies,
            "Score": self.score,
            "RawScore": self.raw_score,
            "Threshold": self.threshold,
            "ModelVersion": self.model_version,
        }


@runtime_checkable
class Detector(Protocol):
    model_version: str

    def detect(self, image_bytes: bytes, content_type: str, *,
               threshold: float | None = None) -> DetectionResult:
        """Score one image. `threshold` overrides the model's (per-line override)."""
        ...


def verdict(score: float, threshold: float = DEFAULT_THRESHOLD,
            sharpness: float = 12.0) -> tuple[bool, float]:
    """The verdict and its calibrated confidence for a normalised score.

    Confidence is the probability that the verdict is right: exactly 0.5 at the
    threshold, rising towards 1.0 as the score moves away from it.

    >>> verdict(0.5)
    (True, 0.5)
    >>> anomalous, confidence = verdict(0.9)
    >>> anomalous, round(confidence, 3)
    (True, 0.992)
    >>> anomalous, confidence = verdict(0.2)
    >>> anomalous, round(confidence, 3)
    (False, 0.973)
    """
    p_anomalous = 1.0 / (1.0 + math.exp(-sharpness * (score - threshold)))
    is_anomalous = score >= threshold
    return is_anomalous, (p_anomalous if is_anomalous else 1.0 - p_anomalous)
