"""Evaluating a trained model on a labelled test folder (`normal/` and `anomaly/`).

Every image is scored exactly as the pipeline would (`EmbeddedDetector.detect`: decode,
score, heatmap), timed one image at a time on the calling thread with BLAS limited to one
thread. Images the detector
refuses as invalid are listed and left out of the metrics.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.detector.base import InvalidImageError, check_threshold
from pipeline.detector.embedded import EmbeddedDetector
from pipeline.detector.metrics import Confusion, auroc, confusion
from pipeline.detector.threads import blas_threads
from pipeline.detector.training import TrainingError, labelled_images

Progress = Callable[[str, int, int], None]
_CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}


class EvaluationError(ValueError):
    """The test folder is unusable; the message says what to fix."""


@dataclass(frozen=True)
class ScoredImage:
    path: str
    label: str
    score: float
    raw_score: float
    is_anomalous: bool
    confidence: float
    ms: float
    anomaly_area: float
    cpu_ms: float = 0.0
    heatmap_png: bytes | None = field(default=None, repr=False)

    @property
    def correct(self) -> bool:
        return self.is_anomalous == (self.label == "anomaly")


@dataclass(frozen=True)
class Evaluation:
    model_dir: str
    test_dir: str
    method: str
    model_version: str
    threshold: float
    raw_threshold: float
    images: tuple[ScoredImage, ...]
    invalid: tuple[dict[str, str], ...] = ()

    def shown(self, path: str) -> str:
        """An image's name on screen and in the report: its path under the test folder, so
        that `crack/000.png` and `scratch/000.png` are told apart."""
        return os.path.relpath(path, self.test_dir)

    def scores(self, label: str) -> list[float]:
        return [image.score for image in self.images if image.label == label]

    @property
    def confusion(self) -> Confusion:
        return confusion(self.scores("normal"), self.scores("anomaly"), self.threshold)

    @property
    def auroc(self) -> float:
        return auroc(self.scores("normal"), self.scores("anomaly")) or 0.0

    @property
    def ms_per_image(self) -> float:
        """Mean wall-clock ms of decode + detect."""
        return sum(image.ms for image in self.images) / max(len(self.images), 1)

    @property
    def cpu_ms_per_image(self) -> float:
        """Mean CPU ms of the scoring thread: steadier than wall time on a busy machine."""
        return sum(image.cpu_ms for image in self.images) / max(len(self.images), 1)

    def to_json(self) -> dict[str, Any]:
        """The OUT.json document of `linesight evaluate`."""
        counts = self.confusion
        return {
            "auroc": self.auroc,
            "f1": counts.f1,
            "precision": counts.precision,
            "recall": counts.recall,
            "threshold": self.threshold,
            "raw_threshold": self.raw_threshold,
            "n_normal": len(self.scores("normal")),
            "n_anomaly": len(self.scores("anomaly")),
            "ms_per_image": self.ms_per_image,
            "cpu_ms_per_image": self.cpu_ms_per_image,
            "confusion": {"true_positive": counts.true_positive,
                          "false_positive": counts.false_positive,
                          "true_negative": counts.true_negative,
                          "false_negative": counts.false_negative},
            "method": self.method,
            "model_version": self.model_version,
            "model_dir": self.model_dir,
            "test_dir": self.test_dir,
            "images": [{"path": image.path, "label": image.label, "score": image.score,
                        "raw_score": image.raw_score, "is_anomalous": image.is_anomalous,
                        "confidence": image.confidence, "anomaly_area": image.anomaly_area,
                        "ms": image.ms, "cpu_ms": image.cpu_ms} for image in self.images],
            "invalid": list(self.invalid),
        }


def test_root(test_dir: Path) -> Path:
    """The folder whose images are scored: `test_dir` itself, or, when it is a data set's
    top folder (no `normal/` or `good/`, but a `test/`), its `test/`."""
    labelled_here = (test_dir / "normal").is_dir() or (test_dir / "good").is_dir()
    return test_dir / "test" if not labelled_here and (test_dir / "test").is_dir() else test_dir


def test_images(test_dir: Path) -> dict[str, list[Path]]:
    """The labelled images of a test folder: `normal/` and `anomaly/` (or `test/normal/`...),
    subfolders included; or, as in MVTec AD, `good/` and one folder per defect type
    (`training.labelled_images`)."""
    if not test_dir.is_dir():
        raise EvaluationError(f"{test_dir} is not a directory")
    root = test_root(test_dir)
    try:
        normal, anomaly, _ = labelled_images(root)
    except TrainingError as exc:
        raise EvaluationError(str(exc)) from None
    found = {"normal": normal, "anomaly": anomaly}
    where = {"normal": "normal/ (or good/)",
             "anomaly": "anomaly/ (or, beside good/, one folder per defect type)"}
    for label, paths in found.items():
        if not paths:
            raise EvaluationError(f"no {label} images: expected JPEG/PNG files in "
                                  f"{root}/{where[label]}")
    return found


def evaluate(model_dir: Path | str, test_dir: Path | str, *, threshold: float | None = None,
             progress: Progress | None = None, keep_heatmaps: bool = True) -> Evaluation:
    """Score every test image with the model in `model_dir`."""
    notify = progress or (lambda description, completed, total: None)
    labelled = test_images(Path(test_dir))
    detector = EmbeddedDetector.from_dir(model_dir)
    applied = check_threshold(threshold)
    total = sum(len(paths) for paths in labelled.values())
    scored: list[ScoredImage] = []
    invalid: list[dict[str, str]] = []
    with blas_threads(1):
        for label, paths in labelled.items():
            for path in paths:
                data = path.read_bytes()
                content_type = _CONTENT_TYPES.get(path.suffix.lower(), "")
                started = time.perf_counter()
                cpu_started = time.thread_time()
                try:
                    result = detector.detect(data, content_type, threshold=applied)
                except InvalidImageError as exc:
                    invalid.append({"path": str(path), "reason": exc.reason,
                                    "message": str(exc)})
                    continue
                finally:
                    notify("scoring test images", len(scored) + len(invalid) + 1, total)
                elapsed = (time.perf_counter() - started) * 1000.0
                cpu = (time.thread_time() - cpu_started) * 1000.0
                area = sum(item["PixelAnomaly"]["TotalPercentageArea"]
                           for item in result.anomalies if item["Name"] != "background")
                scored.append(ScoredImage(
                    path=str(path), label=label, score=result.score,
                    raw_score=result.raw_score, is_anomalous=result.is_anomalous,
                    confidence=result.confidence, ms=elapsed, anomaly_area=area, cpu_ms=cpu,
                    heatmap_png=result.heatmap_png if keep_heatmaps else None))
    calibration = detector.model.calibration
    return Evaluation(
        model_dir=str(model_dir), test_dir=str(test_dir), method=detector.model.method_name,
        model_version=detector.model_version, threshold=applied,
        raw_threshold=calibration.raw(applied), images=tuple(scored), invalid=tuple(invalid))
