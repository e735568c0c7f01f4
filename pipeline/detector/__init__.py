"""LineSight's detector: the interface, the embedded model and other backends."""

from pipeline.detector.base import (
    DEFAULT_THRESHOLD,
    DetectionResult,
    Detector,
    InvalidImageError,
    verdict,
)

__all__ = ["DEFAULT_THRESHOLD", "DetectionResult", "Detector", "InvalidImageError", "verdict"]
