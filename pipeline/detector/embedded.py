"""The embedded detector: a trained model artifact scored in-process (the ingest Lambda)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from pipeline.detector import artifact, heatmap, imageio
from pipeline.detector.base import DEFAULT_THRESHOLD, DetectionResult, check_threshold, verdict

log = logging.getLogger(__name__)


class EmbeddedDetector:
    """Scores images with a model artifact loaded into this process."""

    def __init__(self, model: artifact.TrainedModel, *, with_heatmap: bool = True) -> None:
        self.model = model
        self.model_version = model.model_version
        self.threshold = DEFAULT_THRESHOLD  # the trained threshold, on the normalised scale
        self.with_heatmap = with_heatmap
        trained = model.expected_longest or model.method.input_size
        # Half the training resolution, or the method's input size if that is smaller.
        self._min_longest = max(imageio.MIN_SIDE, min(trained, model.method.input_size) // 2)

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
                                 min_longest=self._min_longest, roi=self.model.roi)
        if decoded.notes:
            log.info("image accepted with notes: %s", ", ".join(decoded.notes))
        raw, anomaly_map = self.model.method.score(decoded.rgb)
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
