"""The embedded detector: a trained model artifact scored in-process (the ingest Lambda)."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

from pipeline.detector import artifact, heatmap, imageio
from pipeline.detector.base import (
    DEFAULT_THRESHOLD,
    DetectionResult,
    DetectorError,
    check_threshold,
    verdict,
)

log = logging.getLogger(__name__)


def min_longest(expected_longest: int | None, input_size: int) -> int:
    """The longest side under which detection refuses an image as too_small: half the
    training resolution, or of the method's input size if that is smaller. Training leaves
    such images out by the same rule.

    >>> min_longest(2000, 250), min_longest(None, 96), min_longest(40, 256)
    (125, 48, 20)
    """
    trained = expected_longest or input_size
    return max(imageio.MIN_SIDE, min(trained, input_size) // 2)


class EmbeddedDetector:
    """Scores images with a model artifact loaded into this process."""

    def __init__(self, model: artifact.TrainedModel, *, with_heatmap: bool = True) -> None:
        self.model = model
        self.model_version = model.model_version
        self.threshold = DEFAULT_THRESHOLD  # the trained threshold, on the normalised scale
        self.with_heatmap = with_heatmap
        self._min_longest = min_longest(model.expected_longest, model.method.input_size)

    @classmethod
    def from_dir(cls, model_dir: Path | str) -> EmbeddedDetector:
        return cls(artifact.load(Path(model_dir)))

    def detect(self, image_bytes: bytes, content_type: str, *,
               threshold: float | None = None) -> DetectionResult:
        started = time.perf_counter()
        applied = check_threshold(threshold)
        decoded = imageio.decode(image_bytes, content_type,
                                 longest_side=self.model.method.input_size,
                                 expected_aspect=self.model.expected_aspect,
                                 min_longest=self._min_longest, roi=self.model.roi,
                                 require_colour=self.model.colour is True,
                                 to_grey=self.model.greyscale)
        if decoded.notes:
            log.info("image accepted with notes: %s", ", ".join(decoded.notes))
        raw, anomaly_map = self.model.method.score(decoded.rgb)
        if not math.isfinite(raw):  # no verdict, and a record DynamoDB could not store
            raise DetectorError(f"model {self.model_version} ({self.model.method_name}) "
                                f"scored the image {raw}, not a finite number")
        score = self.model.calibration.normalise(raw)
        is_anomalous, confidence = verdict(score, applied)
        mask = heatmap.anomaly_mask(anomaly_map, self.model.pixel_threshold, is_anomalous)
        png = (heatmap.overlay_png(decoded.rgb, anomaly_map, self.model.pixel_threshold)
               if self.with_heatmap else None)
        return DetectionResult(
            is_anomalous=is_anomalous,
            confidence=confidence,
            score=score,
            threshold=applied,
            model_version=self.model_version,
            raw_score=raw,
            anomalies=heatmap.lookout_anomalies(mask),
            heatmap_png=png,
            inference_ms=(time.perf_counter() - started) * 1000.0,
            notes=decoded.notes,
        )
