"""Evaluating a trained model on a labelled test folder (`normal/` and `anomaly/`).

Every image is scored exactly as the pipeline would (`EmbeddedDetector.detect`: decode,
score, heatmap), timed one image at a time on the calling thread with BLAS limited to one
thread. A file on disk declares no content type, so its bytes decide its format, as in
training. Images the detector refuses as invalid are listed and left out of the metrics.

A figure that cannot be computed is None (null in the JSON), and `Evaluation.gaps` says
why: AUROC needs both classes, recall and F1 need anomalous images, precision an image
called anomalous (where anomalous images were scored and none was called so, precision is
0, as scikit-learn has it: every figure of the contract is then a number). A test folder
with one class only is refused unless `allow_one_class` (known-good parts scored for their
false-positive rate, say). Label folders are found in any case (`Normal/`, as in VisA).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pipeline.detector.base import DetectorError, InvalidImageError, check_threshold
from pipeline.detector.embedded import EmbeddedDetector
from pipeline.detector.metrics import (
    Confusion,
    auroc,
    auroc_standard_error,
    confusion,
    proportion_interval,
)
from pipeline.detector.threads import blas_threads
from pipeline.detector.training import (
    TrainingError,
    folder_named,
    labelled_images,
    readable,
)

Progress = Callable[[str, int, int], None]
LABELS = ("normal", "anomaly")
_WHERE = {"normal": "normal/ (or good/)",
          "anomaly": "anomaly/ (or, beside good/, one folder per defect type)"}
_REFUSED_NAMED = 3  # refused images a gap's sentence names; all are in `invalid`
_NOUNS = {"normal": ("normal image", "normal images"), "anomaly": ("anomaly", "anomalies"),
          "": ("image", "images")}


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
    # What decoding accepted but changed, e.g. "converted_from_l" (`DetectionResult.notes`).
    notes: tuple[str, ...] = ()

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
    # the refused images: path, label, reason, message
    invalid: tuple[dict[str, str], ...] = ()
    # whether a test folder with one class only was asked for (`allow_one_class`)
    one_class: bool = False

    def shown(self, path: str) -> str:
        """An image's name on screen and in the report: its path under the test folder, so
        that `crack/000.png` and `scratch/000.png` are told apart (`readable`: printable
        and writable even where the name is not UTF-8)."""
        return readable(os.path.relpath(path, self.test_dir))

    def scores(self, label: str) -> list[float]:
        return [image.score for image in self.images if image.label == label]

    @property
    def confusion(self) -> Confusion:
        return confusion(self.scores("normal"), self.scores("anomaly"), self.threshold)

    @property
    def auroc(self) -> float | None:
        """None unless both normal and anomalous images were scored."""
        return auroc(self.scores("normal"), self.scores("anomaly"))

    @property
    def precision(self) -> float | None:
        """The share of the images called anomalous that are. When none was, 0 if
        anomalous images were scored (scikit-learn's convention: every one was missed, and
        the contract's figures are numbers wherever both classes were scored; `gaps` says
        so), else None."""
        counts = self.confusion
        if counts.true_positive + counts.false_positive:
            return counts.precision
        return 0.0 if self.scores("anomaly") else None

    @property
    def recall(self) -> float | None:
        """None when no anomalous image was scored."""
        return self.confusion.recall if self.scores("anomaly") else None

    @property
    def f1(self) -> float | None:
        """None when no anomalous image was scored; 0 when none was found."""
        return self.confusion.f1 if self.scores("anomaly") else None

    @property
    def false_positive_rate(self) -> float | None:
        """The share of normal images called anomalous; None when none was scored."""
        normal = len(self.scores("normal"))
        return self.confusion.false_positive / normal if normal else None

    @property
    def miss_rate(self) -> float | None:
        """The share of anomalous images called normal; None when none was scored."""
        anomalous = len(self.scores("anomaly"))
        return self.confusion.false_negative / anomalous if anomalous else None

    @property
    def auroc_standard_error(self) -> float | None:
        """How far the AUROC could move by chance with other images of the same kind
        (Hanley and McNeil); None with the AUROC. It is 0 at a perfect separation, where
        `intervals` still say how little a few images prove."""
        value = self.auroc
        if value is None:
            return None
        return auroc_standard_error(value, len(self.scores("normal")),
                                    len(self.scores("anomaly")))

    # The shares `intervals` gives, as a person reads their names (report, command line)
    SHARE_LABELS: ClassVar[dict[str, str]] = {"precision": "precision", "recall": "recall",
                                              "false_positive_rate": "false-positive rate",
                                              "miss_rate": "miss rate"}

    @property
    def intervals(self) -> dict[str, tuple[float, float] | None]:
        """95 % intervals (Wilson) of the shares the threshold gives: where precision,
        recall and the false-positive and miss rates could lie on other images of the same
        kind. With 20 anomalies one image moves recall by 0.05, and 17 of 20 found is
        consistent with anything from 64 % to 95 %. None where the share is."""
        counts = self.confusion
        normal, anomalous = len(self.scores("normal")), len(self.scores("anomaly"))
        return {
            "precision": proportion_interval(counts.true_positive,
                                             counts.true_positive + counts.false_positive),
            "recall": proportion_interval(counts.true_positive, anomalous),
            "false_positive_rate": proportion_interval(counts.false_positive, normal),
            "miss_rate": proportion_interval(counts.false_negative, anomalous),
        }

    @property
    def ms_per_image(self) -> float:
        """Mean wall-clock ms of decode + detect."""
        return sum(image.ms for image in self.images) / max(len(self.images), 1)

    @property
    def cpu_ms_per_image(self) -> float:
        """Mean CPU ms of the scoring thread: steadier than wall time on a busy machine."""
        return sum(image.cpu_ms for image in self.images) / max(len(self.images), 1)

    def refused(self, label: str) -> list[dict[str, str]]:
        return [item for item in self.invalid if item.get("label") == label]

    def gaps(self) -> list[str]:
        """Why each figure that is None could not be computed, one sentence each."""
        if not self.images:
            return [f"no figure could be computed: {self._refusals(list(self.invalid))}"]
        found = []
        for label, figures in (("normal", "AUROC needs"),
                               ("anomaly", "AUROC, recall and F1 need")):
            if not self.scores(label):
                refused = self.refused(label)
                why = (self._refusals(refused, label) if refused
                       else f"the test folder has no {_NOUNS[label][1]}")
                found.append(f"{figures} both normal and anomalous images; {why}")
        counts = self.confusion
        if not counts.true_positive + counts.false_positive:
            found.append("precision needs an image called anomalous; none was" + (
                " (0, by convention, since every anomaly was missed)"
                if self.precision is not None else ""))
        return found

    def failure(self) -> str:
        """Why the evaluation does not answer what it was asked ('' if it does): no image
        could be scored, or refusals left a class empty that the test folder had."""
        if not self.images:
            return "no image could be scored"
        empty = [label for label in LABELS if not self.scores(label)]
        if empty and not self.one_class:
            return (f"every one of the {_NOUNS[empty[0]][1]} was refused, so the figures that "
                    "compare the two classes are missing (to accept figures for one class "
                    "alone: --allow-one-class)")
        return ""

    def _refusals(self, refused: list[dict[str, str]], label: str = "") -> str:
        """
        >>> evaluation = Evaluation("m", "t", "x", "v", 0.5, 0.0, (), invalid=(
        ...     {"path": "t/anomaly/a.jpg", "label": "anomaly", "reason": "corrupt"},))
        >>> evaluation._refusals(list(evaluation.invalid), "anomaly")
        '1 anomaly was refused: anomaly/a.jpg (corrupt)'
        """
        one, many = _NOUNS[label]
        named = ", ".join(f"{self.shown(item['path'])} ({item['reason']})"
                          for item in refused[:_REFUSED_NAMED])
        more = (f" and {len(refused) - _REFUSED_NAMED} more"
                if len(refused) > _REFUSED_NAMED else "")
        counted = f"1 {one} was" if len(refused) == 1 else f"{len(refused)} {many} were"
        return f"{counted} refused: {named}{more}"

    def to_json(self) -> dict[str, Any]:
        """The OUT.json document of `linesight evaluate`."""
        counts = self.confusion
        return {
            "auroc": self.auroc,
            "f1": self.f1,
            "precision": self.precision,
            "recall": self.recall,
            "threshold": self.threshold,
            "raw_threshold": self.raw_threshold,
            "n_normal": len(self.scores("normal")),
            "n_anomaly": len(self.scores("anomaly")),
            "false_positive_rate": self.false_positive_rate,
            "miss_rate": self.miss_rate,
            "auroc_standard_error": self.auroc_standard_error,
            "intervals": {name: list(bounds) if bounds else None
                          for name, bounds in self.intervals.items()},
            "ms_per_image": self.ms_per_image,
            "cpu_ms_per_image": self.cpu_ms_per_image,
            "confusion": {"true_positive": counts.true_positive,
                          "false_positive": counts.false_positive,
                          "true_negative": counts.true_negative,
                          "false_negative": counts.false_negative},
            "gaps": self.gaps(),
            "one_class": self.one_class,
            "method": self.method,
            "model_version": self.model_version,
            "model_dir": self.model_dir,
            "test_dir": self.test_dir,
            "images": [{"path": image.path, "label": image.label, "score": image.score,
                        "raw_score": image.raw_score, "is_anomalous": image.is_anomalous,
                        "confidence": image.confidence, "anomaly_area": image.anomaly_area,
                        "ms": image.ms, "cpu_ms": image.cpu_ms, "notes": list(image.notes)}
                       for image in self.images],
            "invalid": list(self.invalid),
        }


def test_root(test_dir: Path) -> Path:
    """The folder whose images are scored: `test_dir` itself, or, when it is a data set's
    top folder (no `normal/` or `good/`, but a `test/`), its `test/`."""
    try:
        labelled_here = any(folder_named(test_dir, name).is_dir() for name in ("normal", "good"))
        test = folder_named(test_dir, "test")
    except TrainingError as exc:  # two folders whose names differ only in case
        raise EvaluationError(str(exc)) from None
    return test if not labelled_here and test.is_dir() else test_dir


def test_images(test_dir: Path, *, allow_one_class: bool = False) -> dict[str, list[Path]]:
    """The labelled images of a test folder: `normal/` and `anomaly/` (or `test/normal/`...),
    subfolders included; or, as in MVTec AD, `good/` and one folder per defect type
    (`training.labelled_images`). Both classes are needed, unless `allow_one_class`."""
    if not test_dir.is_dir():
        raise EvaluationError(f"{test_dir} is not a directory")
    try:
        root = test_root(test_dir)
        normal, anomaly, _ = labelled_images(root)
    except TrainingError as exc:
        raise EvaluationError(str(exc)) from None
    found = {"normal": normal, "anomaly": anomaly}
    for label, other in zip(LABELS, reversed(LABELS), strict=True):
        if found[label] or (allow_one_class and found[other]):
            continue
        hint = (" (to score one class alone, e.g. known-good parts for the false-positive "
                "rate: --allow-one-class)" if found[other] else "")
        raise EvaluationError(f"no {label} images: expected JPEG/PNG files in "
                              f"{root}/{_WHERE[label]}{hint}")
    return found


def evaluate(model_dir: Path | str, test_dir: Path | str, *, threshold: float | None = None,
             progress: Progress | None = None, keep_heatmaps: bool = True,
             allow_one_class: bool = False) -> Evaluation:
    """Score every test image with the model in `model_dir`. `allow_one_class` scores a
    test folder that holds normal or anomalous images only."""
    notify = progress or (lambda description, completed, total: None)
    labelled = test_images(Path(test_dir), allow_one_class=allow_one_class)
    detector = EmbeddedDetector.from_dir(model_dir)
    applied = check_threshold(threshold)
    total = sum(len(paths) for paths in labelled.values())
    scored: list[ScoredImage] = []
    invalid: list[dict[str, str]] = []

    def refused(path: Path, label: str, reason: str, message: str) -> None:
        invalid.append({"path": str(path), "label": label, "reason": reason,
                        "message": message})
        notify("scoring test images", len(scored) + len(invalid), total)

    with blas_threads(1):
        for label, paths in labelled.items():
            for path in paths:
                try:
                    data = path.read_bytes()
                except OSError as exc:  # e.g. no permission: refused like a bad image
                    refused(path, label, "unreadable", f"cannot be read: {exc.strerror or exc}")
                    continue
                started = time.perf_counter()
                cpu_started = time.thread_time()
                try:
                    # no content type: a file's name is not a declaration, its bytes decide
                    result = detector.detect(data, "", threshold=applied)
                except InvalidImageError as exc:
                    refused(path, label, exc.reason, str(exc))
                    continue
                except DetectorError as exc:
                    refused(path, label, "detector_error", str(exc))
                    continue
                notify("scoring test images", len(scored) + len(invalid) + 1, total)
                elapsed = (time.perf_counter() - started) * 1000.0
                cpu = (time.thread_time() - cpu_started) * 1000.0
                area = sum(item["PixelAnomaly"]["TotalPercentageArea"]
                           for item in result.anomalies if item["Name"] != "background")
                scored.append(ScoredImage(
                    path=str(path), label=label, score=result.score,
                    raw_score=result.raw_score, is_anomalous=result.is_anomalous,
                    confidence=result.confidence, ms=elapsed, anomaly_area=area, cpu_ms=cpu,
                    heatmap_png=result.heatmap_png if keep_heatmaps else None,
                    notes=result.notes))
    calibration = detector.model.calibration
    return Evaluation(
        model_dir=str(model_dir), test_dir=str(test_dir), method=detector.model.method_name,
        model_version=detector.model_version, threshold=applied,
        raw_threshold=calibration.raw(applied), images=tuple(scored), invalid=tuple(invalid),
        one_class=allow_one_class)
