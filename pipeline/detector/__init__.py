"""LineSight's detector: the interface, the embedded model and other backends.

The pipeline needs only `load_detector(backend, model_uri, sagemaker_endpoint)` and the
`Detector.detect(image_bytes, content_type, threshold=...)` it returns. Training and
evaluation live in `pipeline.detector.training` and `pipeline.detector.evaluation`.
"""

from pipeline.detector.base import (
    DEFAULT_THRESHOLD,
    DetectionResult,
    Detector,
    DetectorError,
    InvalidImageError,
    verdict,
)
from pipeline.detector.loader import clear_cache, load_detector

__all__ = [
    "DEFAULT_THRESHOLD",
    "DetectionResult",
    "Detector",
    "DetectorError",
    "InvalidImageError",
    "clear_cache",
    "load_detector",
    "verdict",
]
