"""Training: find the images, pick a scoring method and a threshold by cross-validation on
the training split only, and write the model artifact.

How the method is chosen. Every registered method (`methods.METHODS`, except those marked
`auto_select = False` unless asked for) is cross-validated on the training images:

- with labelled anomalies (at least 2): stratified k-fold, k = min(10, #normal, #anomaly)
  (5 instead of 10 from `LARGE_SET` images on); each fold fits on the other folds' normals
  and anomalies and scores the held-out images;
- normal-only: k-fold over the normals, k = min(10, #normal) (5 the same way); each
  held-out normal is also copied with one synthetic defect (cut-paste, scratch or blob;
  `synthetic.py`), and those copies play the anomalies when comparing methods.

A method that cannot be trained on the set (the `cnn` without enough labelled anomalies
in each fold's training part, or without torch; `align` and `shape` with fewer than two
normals there) is listed in the report as not tried; if
it was asked for by name, training stops with the reason instead. A method at another size
(`cnn_coarse`) is listed as not tried too, unless it was asked for or the method it varies
came within `VARIANT_REACH` of the best.
All candidates share one fold assignment. The method with the best out-of-fold AUROC wins
(ties: best F1, then the fastest, by the median time to score one held-out image); an
ensemble of the best two (mean robust z-score; never one method at two sizes) replaces it
only if it gains `ENSEMBLE_MARGIN` AUROC and more than the best method's AUROC could move
by chance on this many images (its standard error). The winner is refit on all training images.

How the threshold is chosen, from the winner's out-of-fold scores only: with labelled
anomalies, the cut with the best F1, placed halfway between the two scores it separates;
normal-only, above the highest held-out normal score by a quarter of its distance from the
median (`calibration.normal_only_threshold`); synthetic defects never set the threshold.
The pixel threshold (heatmap midpoint, anomaly area) is the one whose out-of-fold maps best
match the anomaly masks (mean Dice) when masks exist, else the median of the held-out
normal images' map maxima.
Raw scores are normalised by a logistic that puts the threshold at 0.5 and the median
held-out normal at 0.1 (`calibration.py`).

Input is a folder (`train/normal`, optional `train/anomaly` and defect-type folders beside
it, optional `masks/`; or directly `normal/` and `anomaly/`) or a Lookout for Vision / Ground
Truth manifest; see `find_training_set` for how a manifest's `s3://` references become
local files.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import CancelledError, ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote, unquote_plus

import numpy as np
from PIL import Image

from pipeline.detector import artifact, imageio
from pipeline.detector.base import InvalidImageError
from pipeline.detector.calibration import (
    Calibration,
    best_f1_threshold,
    normal_only_threshold,
    spread_scale,
)
from pipeline.detector.embedded import min_longest
from pipeline.detector.methods import METHODS, Method
from pipeline.detector.methods.ensemble import ScoreEnsemble, robust_scale
from pipeline.detector.metrics import auroc, auroc_standard_error, confusion
from pipeline.detector.synthetic import synthetic_anomaly
from pipeline.detector.threads import blas_threads

log = logging.getLogger(__name__)

# Files taken for images: JPEG and PNG, which detection accepts, and the other formats that
# cameras and tools write, which decoding refuses (unsupported_format), so that they are
# listed with the images left out of training instead of passed over without a word.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff",
                  ".webp")
# Ten folds below `LARGE_SET` images: each fold model learns from at least 90 % of them,
# so out-of-fold scores, and the threshold taken from them, sit on nearly the same scale
# as the model refit on all of them (with five, on a small set, a method whose scores
# shrink as it sees more normals ends up with a threshold too high for the refit model).
MAX_FOLDS = 10
# From this many training images on, five folds: each fold model still learns from 80 %
# of them (160 images or more), where one more or less image barely moves a method's
# scores, and the folds' fitting costs 4/9 of what ten folds' does (on 400 images, ten
# folds of every method took 10 minutes, and a chosen `cnn` would run its twice more).
LARGE_SET = 200
LARGE_SET_FOLDS = 5
MIN_NORMALS = 3
MASK_FOLDERS = ("masks", "ground_truth")  # ground_truth/: the MVTec AD layout
LABEL_FOLDERS = ("normal", "good", "anomaly")  # good/: the MVTec AD layout
# A data set's splits: beside normal/, never a folder of one defect type's anomalies.
SPLIT_FOLDERS = ("train", "test", "val", "validation")
# An ensemble costs the time of both members at inference: it must earn that.
ENSEMBLE_MARGIN = 0.02
SEED = 20240601
# The chosen method is cross-validated again on this many other fold assignments (the same
# folds, shuffled differently). On 20 + 20 photos, which images happen to be held out
# together moved one method's out-of-fold AUROC from 0.917 to 0.978: the report shows how
# much the figure training went by depends on that.
OTHER_ASSIGNMENTS = 2
# A method at another size (`variant_of`) is cross-validated only when the method it is a
# variant of came within this much of the best out-of-fold AUROC: the two sizes of `cnn`
# scored within 0.06 of each other on every set measured (circuitboard 0.730 and 0.762,
# the samples 0.583 and 0.523, 400 generated images 0.933 and 0.890, cookies 1.000 both),
# and the variant's folds cost as much again as a second network (about 10 s on
# circuitboard, 15 s on the samples).
VARIANT_REACH = 0.1
# Folds cross-validated at once, in threads: one per core, at most this many (each fold
# being fitted holds its own model, and the threads share one interpreter lock). On this
# 2-core machine two took training from 148 to 85 s on cookies and from 38 to 30 s on
# circuitboard, whose `align_patch` folds are short and mostly Python; the models were the
# same to the bit.
MAX_WORKERS = 4
# progress(description, completed, total): called as training moves on.
Progress = Callable[[str, int, int], None]


class TrainingError(ValueError):
    """The training input is unusable; the message says what to fix."""


@dataclass(frozen=True)
class TrainingSet:
    """The labelled training images (and anomaly masks, when any) found in the input."""

    normal: tuple[Path, ...]
    anomaly: tuple[Path, ...]
    masks: Mapping[Path, Path] = field(default_factory=dict)  # anomaly image -> its mask
    source: str = ""


@dataclass(frozen=True)
class CandidateResult:
    """One method's cross-validation on the training split."""

    method: str
    auroc: float | None
    f1: float | None
    folds: int
    fit_seconds: float
    ms_per_image: float  # median over the held-out images, detect only
    error: str = ""


@dataclass(frozen=True)
class TrainReport:
    """What training learned and how it decided."""

    method: str
    model_dir: str
    model_version: str
    n_normal: int
    n_anomaly: int
    n_synthetic: int
    n_masks: int
    cv_folds: int
    cv_auroc: float | None
    cv_f1: float | None
    raw_threshold: float
    threshold_rule: str
    selection_rule: str
    candidates: tuple[CandidateResult, ...]
    artifact_bytes: int
    train_seconds: float
    skipped: tuple[str, ...] = ()
    source: str = ""
    pixel_threshold_rule: str = ""
    created_at: str = ""
    # The chosen method's out-of-fold AUROC on other fold assignments (none for an ensemble)
    cv_auroc_other_assignments: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Fold:
    """Out-of-fold scores collected while cross-validating one method."""

    normal: list[float] = field(default_factory=list)
    anomalous: list[float] = field(default_factory=list)
    normal_map_peaks: list[float] = field(default_factory=list)
    # Which image each score above belongs to (index into the normal images; for
    # anomalies, into the anomalies, or the normal image a synthetic defect was drawn on).
    normal_index: list[int] = field(default_factory=list)
    anomalous_index: list[int] = field(default_factory=list)
    # (anomaly map, mask path) of held-out labelled anomalies that have a mask.
    masked_maps: list[tuple[np.ndarray, Path]] = field(default_factory=list)
    # seconds each score took; their median is the candidate's ms/image, which breaks
    # ties: a mean let one stall (a page fault, the other core busy) outweigh the rest
    score_seconds: list[float] = field(default_factory=list)
    fit_seconds: float = 0.0  # CPU time of every fold's fitting, added up

    @classmethod
    def joined(cls, parts: Sequence[_Fold]) -> _Fold:
        """One method's folds, each cross-validated on its own, in the order given."""
        whole = cls()
        lists = [item.name for item in fields(cls) if isinstance(getattr(whole, item.name), list)]
        for part in parts:
            for name in lists:
                getattr(whole, name).extend(getattr(part, name))
            whole.fit_seconds += part.fit_seconds
        return whole


def train_model(data_dir: Path | str, out_dir: Path | str, *,
                manifest: Path | str | None = None, progress: Progress | None = None,
                methods: Sequence[str] | None = None, backbone: Path | str | None = None,
                roi: imageio.Roi | None = None, seed: int = SEED,
                workers: int | None = None) -> TrainReport:
    """Train on `data_dir` (or the images `manifest` names) and write the model to `out_dir`.

    `methods` limits the candidates to those names; `backbone` is an ONNX feature extractor
    for the `onnx_patchcore` method (which is then a candidate too). `roi` is a region of
    interest (x0, y0, x1, y1 as fractions of width and height) that training and every
    later detection crop to first. `workers` is how many folds are cross-validated at once
    (default `default_workers()`); the model does not depend on it.
    """
    started = time.perf_counter()
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise TrainingError(f"workers must be 1 or more, not {workers}")
    notify = progress or (lambda description, completed, total: None)
    candidates = _candidates(methods, backbone)
    training_set = find_training_set(Path(data_dir), Path(manifest) if manifest else None)
    _check_masks(training_set.masks)
    rng = np.random.default_rng(seed)

    images = _ImageCache(training_set, notify, roi, [method for _, method in candidates])
    sizes = sorted({method.input_size for _, method in candidates}, reverse=True)
    for size in sizes:
        images.at(size)
    normal_count, anomaly_count = len(images.normal_paths), len(images.anomaly_paths)
    if normal_count < MIN_NORMALS:
        why = (f"; skipped {len(images.skipped)}: " + "; ".join(images.skipped[:3])
               + ("; ..." if len(images.skipped) > 3 else "")) if images.skipped else ""
        raise TrainingError(f"need at least {MIN_NORMALS} usable normal images, "
                            f"found {normal_count}{why}")
    if anomaly_count == 1:  # no fold could hold it out and train on another
        images.set_aside_anomalies("the only labelled anomaly; judging methods by labelled "
                                   "anomalies needs 2 or more, so training is normal-only")
        anomaly_count = 0
    labelled = anomaly_count >= 2
    folds = fold_count(normal_count, anomaly_count if labelled else 0)
    split = _Split.drawn(folds, labelled, normal_count, anomaly_count, rng, seed)

    results: list[tuple[CandidateResult, _Fold | None]] = []
    listed_order = [name for name, _ in candidates]  # the report lists them in this order
    for name, reason in _unavailable(candidates, split, asked=bool(methods)):
        if methods:
            raise TrainingError(f"method {name} {reason}")
        results.append((CandidateResult(name, None, None, 0, 0.0, 0.0,
                                        error=f"not tried: {reason}"), None))
        candidates = [(other, method) for other, method in candidates if other != name]
    # variants last, so that the method each is a variant of has been judged first
    ordered = sorted(candidates, key=lambda pair: _family(pair[0]) != pair[0])
    tried = 0
    for index, (name, method) in enumerate(ordered):
        notify("cross-validating methods", index, len(candidates))
        why_not = None if methods else _out_of_reach(name, results)
        if why_not:
            results.append((CandidateResult(name, None, None, 0, 0.0, 0.0,
                                            error=f"not tried: {why_not}"), None))
        else:
            results.append(_cross_validate(name, method, images, split, notify, workers))
            tried += 1
    notify("cross-validating methods", len(candidates), len(candidates))
    results.sort(key=lambda pair: listed_order.index(pair[0].method))

    usable = [(result, fold) for result, fold in results if fold is not None]
    if not usable:
        errors = "; ".join(f"{result.method}: {result.error}" for result, _ in results)
        raise TrainingError(f"every method failed during cross-validation: {errors}")
    best, best_fold = max(usable, key=lambda pair: _rank(pair[0]))
    assert best_fold is not None
    ensemble = _ensemble_candidate(results, split)
    if ensemble is not None:
        results.append((ensemble.result, None))
        if (ensemble.result.auroc or 0.0) >= (best.auroc or 0.0) + _ensemble_margin(best_fold):
            best, best_fold = ensemble.result, ensemble.fold
        else:
            ensemble = None

    others: tuple[float, ...] = ()
    if ensemble is None:
        others = _other_assignments(best.method, dict(candidates)[best.method], images,
                                    split, notify, workers)
    raw_threshold, threshold_rule = _image_threshold(best_fold, labelled)
    calibration = Calibration(raw_threshold,
                              spread_scale(float(np.median(best_fold.normal)), raw_threshold))
    pixel_threshold, pixel_rule = _pixel_threshold(best_fold, roi)

    notify(f"fitting {best.method} on all images", 0, 1)
    final: Method
    if ensemble is not None:
        final = ScoreEnsemble([_fresh(name, candidates) for name in ensemble.members],
                              ensemble.scales)
    else:
        final = _fresh(best.method, candidates)
    size = final.input_size
    final.fit(images.at(size).normal, images.at(size).anomaly, rng)
    notify(f"fitting {best.method} on all images", 1, 1)

    out = Path(out_dir)
    selection_rule = (
        f"best out-of-fold AUROC over {tried} method(s), {folds}-fold "
        + ("stratified CV on labelled normals and anomalies" if labelled else
           "CV on normals, held-out normals with synthetic defects as anomalies")
        + f"; a method at another size only if the one it varies came within {VARIANT_REACH} "
        + "of the best"
        + "; an ensemble of the best two (never one method at two sizes) is chosen only if "
        + f"it gains {ENSEMBLE_MARGIN} AUROC "
        + "and more than the best method's standard error")
    info = {
        "method": best.method,
        "selection_rule": selection_rule,
        "threshold_rule": threshold_rule,
        "pixel_threshold_rule": pixel_rule,
        "cv_auroc": best.auroc,
        "cv_f1": best.f1,
        "cv_folds": folds,
        "cv_auroc_other_assignments": list(others),
        "n_normal": normal_count,
        "n_anomaly": anomaly_count,
        "candidates": [asdict(result) for result, _ in results],
        "source": training_set.source,
        "roi": None if roi is None else list(roi),
        "seed": seed,
        "created_at": datetime.now(UTC).isoformat(),
    }
    saved = artifact.save(artifact.TrainedModel(final, calibration, pixel_threshold,
                                                images.aspect, info=info,
                                                expected_longest=images.longest, roi=roi,
                                                colour=images.colour,
                                                greyscale=images.greyscale),
                          out)
    report = TrainReport(
        method=best.method,
        model_dir=str(out),
        model_version=saved.model_version,
        n_normal=normal_count,
        n_anomaly=anomaly_count,
        n_synthetic=0 if labelled else normal_count,
        n_masks=len(training_set.masks),
        cv_folds=folds,
        cv_auroc=best.auroc,
        cv_f1=best.f1,
        raw_threshold=raw_threshold,
        threshold_rule=threshold_rule,
        selection_rule=selection_rule,
        candidates=tuple(result for result, _ in results),
        artifact_bytes=artifact.size_bytes(out),
        train_seconds=time.perf_counter() - started,
        skipped=tuple(images.skipped),
        source=training_set.source,
        pixel_threshold_rule=pixel_rule,
        created_at=str(info["created_at"]),
        cv_auroc_other_assignments=others,
    )
    (out / "train_report.json").write_text(json.dumps(report.to_dict(), indent=2))
    log.info("trained %s (%s): cv auroc %s, threshold %.4g", report.method,
             report.model_version, report.cv_auroc, raw_threshold)
    return report


def _image_threshold(fold: _Fold, labelled: bool) -> tuple[float, str]:
    """The raw image threshold from out-of-fold scores, and how it was chosen."""
    if labelled:
        return (best_f1_threshold(fold.normal, fold.anomalous),
                "best F1 on out-of-fold scores of the labelled training images, halfway "
                "between the two scores it separates")
    return (normal_only_threshold(fold.normal),
            "normal-only: highest out-of-fold normal score plus 0.25 x its distance from "
            "the median normal score")


def _pixel_threshold(fold: _Fold, roi: imageio.Roi | None) -> tuple[float, str]:
    """The anomaly-map threshold for the heatmap and anomaly area, and how it was chosen."""
    from_masks = pixel_threshold_from_masks(
        [(values, _load_mask(path, values.shape, roi)) for values, path in fold.masked_maps])
    if from_masks is not None:
        return from_masks, (f"best mean Dice against {len(fold.masked_maps)} anomaly masks "
                            "on out-of-fold maps")
    return (float(np.median(fold.normal_map_peaks)),
            "median of the held-out normal images' map maxima")


def find_training_set(data_dir: Path, manifest: Path | None = None) -> TrainingSet:
    """The labelled images in `data_dir`, or those a manifest names.

    Folder layout: `train/normal/`, `train/anomaly/` (optional) and `masks/` (optional);
    a folder with `normal/` and `anomaly/` directly works too (`train/` is read only when
    it holds `normal/`, `good/` or `anomaly/`). Images may sit in subfolders of `normal/`
    and `anomaly/` (one per defect type or camera, say; `images_in` says which files
    count), and any other folder beside `normal/` holds one defect type's anomalies
    (`labelled_images`). A mask belongs to the anomaly at the same path under `masks/` as
    under `anomaly/` (`crack/007.png` for `anomaly/crack/007.jpg` or `crack/007.jpg`), or
    else to the anomaly with its file stem, when only one anomaly has that stem. The MVTec
    AD layout works too: `train/good/`, with masks as `ground_truth/<defect>/<name>_mask.png`.

    Manifest (JSON lines, Lookout for Vision / Ground Truth): `source-ref` is the image and
    `anomaly-label` is 1 for anomalous, 0 for normal (checked against the label metadata's
    `class-name` when present). Each reference is resolved to a local file (`_resolve`): a
    relative path is tried against the manifest's folder and then `data_dir`; an `s3://`
    URI (or a relative path not found) is matched by file name anywhere under `data_dir`,
    except under its `test/`. When the name exists more than once, the copy whose folders
    match the reference's furthest back wins; anything still ambiguous or missing is an
    error. An `anomaly-mask-ref` is resolved the same way.
    """
    if not data_dir.is_dir():
        raise TrainingError(f"{data_dir} is not a directory")
    if manifest is not None:
        return _from_manifest(manifest, data_dir)
    train = folder_named(data_dir, "train")
    root = train if _holds_labels(train) else data_dir
    normal, anomaly, places = labelled_images(root)
    if not normal:
        passed_over = (f"; {train}/ was not read: it holds no normal/, good/ or anomaly/ folder"
                       if train.is_dir() and root == data_dir else "")
        raise TrainingError(f"no normal images in {root}: expected JPEG/PNG files in "
                            f"{data_dir}/train/normal/ (or {data_dir}/normal/, or good/ "
                            f"as in MVTec AD){passed_over}")
    by_place: dict[Path, Path] = {}
    by_stem: dict[str, Path] = {}
    for mask_root in (folder_named(folder, name) for folder in (data_dir, root)
                      for name in MASK_FOLDERS):
        for path in images_in(mask_root):
            for key in _mask_keys(path.relative_to(mask_root)):
                by_place.setdefault(key, path)
                by_stem.setdefault(key.name, path)
    stems = Counter(path.stem for path in anomaly)
    masks: dict[Path, Path] = {}
    for path in anomaly:
        mask = by_place.get(places[path])
        if mask is None and stems[path.stem] == 1:
            mask = by_stem.get(path.stem)
        if mask is not None:
            masks[path] = mask
    return TrainingSet(tuple(normal), tuple(anomaly), masks,
                       source=f"folder {data_dir}: {_layout(data_dir, root, normal, anomaly)}")


def _layout(data_dir: Path, root: Path, normal: Sequence[Path], anomaly: Sequence[Path]
            ) -> str:
    """Which label folders (under `root`, named from `data_dir`) training read, for the
    report.

    >>> _layout(Path("d"), Path("d/train"), [Path("d/train/normal/a/0.png")],
    ...         [Path("d/train/blob/1.png"), Path("d/train/scratch/2.png")])
    'normal images from train/normal/; anomalies from train/blob/, train/scratch/'
    """
    depth = len(root.relative_to(data_dir).parts) + 1  # a label folder's parts

    def folders(paths: Sequence[Path]) -> str:
        return ", ".join(sorted({f"{Path(*path.relative_to(data_dir).parts[:depth])}/"
                                 for path in paths}))

    return (f"normal images from {folders(normal)}; "
            + (f"anomalies from {folders(anomaly)}" if anomaly else "no anomalies"))


def _from_manifest(manifest: Path, data_dir: Path) -> TrainingSet:
    _real_folders.cache_clear()  # the folders as they are now
    if not manifest.is_file():
        raise TrainingError(f"manifest {manifest} does not exist")
    try:  # utf-8-sig: a manifest saved by a Windows editor starts with a byte-order mark
        text = manifest.read_text(encoding="utf-8-sig")
        # JSON lines end at "\n" (or "\r\n") only: splitlines() also splits at U+2028 and
        # the like, which JSON strings may hold as they are
        lines = [line.removesuffix("\r") for line in text.split("\n")]
    except UnicodeDecodeError as exc:
        raise TrainingError(f"manifest {manifest} is not UTF-8 text: {exc}") from None
    index: dict[str, list[Path]] = {}
    for path in _files_under(data_dir):
        index.setdefault(path.name, []).append(path)
    normal: list[Path] = []
    anomaly: list[Path] = []
    masks: dict[Path, Path] = {}
    missing: list[str] = []
    listed: dict[Path, tuple[int, bool]] = {}  # image (resolved) -> its first line, label
    repeats = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{manifest}:{number}"
        try:
            entry = json.loads(line)
            ref = str(entry["source-ref"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise TrainingError(f"{where} is not a manifest line with a source-ref") from None
        is_anomaly = manifest_label(entry, where)
        image = _exported_copy(entry, manifest.parent, data_dir) or _resolve(
            ref, manifest.parent, data_dir, index, where)
        if image is None:
            missing.append(f"line {number} source-ref {ref}")
            continue
        first = listed.setdefault(image.resolve(), (number, is_anomaly))
        if first[0] != number:  # manifests joined, say: one photo, one place in training
            if first[1] != is_anomaly:
                raise TrainingError(
                    f"{where}: {ref} is {image}, which line {first[0]} labels "
                    f"{'anomalous' if first[1] else 'normal'}: one photo cannot be trained "
                    "under both labels; keep the line with the right one")
            repeats += 1
            continue
        (anomaly if is_anomaly else normal).append(image)
        mask_ref = entry.get("anomaly-mask-ref")
        if is_anomaly and mask_ref:
            mask = _resolve(str(mask_ref), manifest.parent, data_dir, index, where, mask=True)
            if mask is None or mask == image:  # a mask named as its image, not copied
                missing.append(f"line {number} anomaly-mask-ref {mask_ref}")
            else:
                masks[image] = mask
    if missing:
        shown = "; ".join(missing[:3]) + ("; ..." if len(missing) > 3 else "")
        raise TrainingError(f"{len(missing)} file(s) named in {manifest.name} not found under "
                            f"{data_dir} by path or file name: {shown}")
    if not normal:
        raise TrainingError(f"{manifest} lists no normal images (anomaly-label 0)")
    repeated = (f"; {repeats} line(s) naming an image an earlier line names with the same "
                "label read once" if repeats else "")
    return TrainingSet(tuple(normal), tuple(anomaly), masks,
                       source=f"manifest {manifest} resolved under {data_dir}{repeated}")


def manifest_label(entry: Mapping[str, Any], where: str = "manifest") -> bool:
    """Whether a manifest entry is labelled anomalous (anomaly-label 1).

    >>> manifest_label({"anomaly-label": 1,
    ...                 "anomaly-label-metadata": {"class-name": "anomaly"}})
    True
    >>> manifest_label({"anomaly-label": 0})
    False
    >>> manifest_label({"anomaly-label": 0.9})
    Traceback (most recent call last):
    ...
    pipeline.detector.training.TrainingError: manifest: anomaly-label must be 0 or 1, got 0.9
    """
    if "anomaly-label" not in entry:
        raise TrainingError(f"{where} has no anomaly-label")
    label = entry["anomaly-label"]
    # 0 or 1 as JSON writes them (0, 1.0, true, "1"); int() would read 0.9 as 0, normal
    value = next((value for value in (0, 1)
                  if label == value or (isinstance(label, str) and label.strip() == str(value))),
                 None)
    if value is None:
        raise TrainingError(f"{where}: anomaly-label must be 0 or 1, got {label!r}")
    metadata = entry.get("anomaly-label-metadata")
    class_name = metadata.get("class-name") if isinstance(metadata, Mapping) else None
    said = class_name.strip().lower() if isinstance(class_name, str) else None
    if said in ("normal", "anomaly") and (said == "anomaly") != bool(value):
        raise TrainingError(f"{where}: anomaly-label {value} contradicts class-name "
                            f"{class_name!r}")
    return bool(value)


def _resolve(ref: str, manifest_dir: Path, data_dir: Path, index: Mapping[str, list[Path]],
             where: str, *, mask: bool = False) -> Path | None:
    """The local file a manifest reference names (an image's, or a `mask`'s), or None.

    The reference is tried as written, URL-decoded (`normal%200.jpg`, as S3 keys are
    quoted) and with Windows separators turned. A file under `data_dir`'s `test/` is never
    the answer: training on test images would make every later evaluation flatter. Among
    files of the same name, an image is not one in `masks/` or `ground_truth/`, and the one
    whose folders match the reference's furthest back wins; a tie is refused, naming the
    files, rather than guessed.
    """
    variants = list(dict.fromkeys(text.replace("\\", "/")
                                  for text in (ref, unquote(ref), unquote_plus(ref))))
    for variant in variants:
        if variant.startswith("s3://"):
            continue
        for base in (manifest_dir, data_dir):
            candidate = base / variant
            if candidate.is_file():
                if _inside(candidate, data_dir, ["test"]):
                    raise TrainingError(f"{where}: {ref} is {candidate}, under {data_dir}/test/: "
                                        "training never learns from test images")
                return candidate
    for variant in variants:
        parts = [part for part in variant.removeprefix("s3://").split("/") if part]
        found = index.get(parts[-1], []) if parts else []
        if found:
            break
    else:
        return None
    usable = [path for path in found if not _inside(path, data_dir, ["test"])]
    if not usable:
        raise TrainingError(f"{where}: {ref} matches only {found[0]}, under {data_dir}/test/: "
                            "training never learns from test images")
    if not mask:
        usable = [path for path in usable if not _inside(path, data_dir, MASK_FOLDERS)] or usable
    furthest = max(_shared_tail(path.parts, parts) for path in usable)
    closest = [path for path in usable if _shared_tail(path.parts, parts) == furthest]
    if len(closest) > 1:
        raise TrainingError(f"{where}: {ref} matches several files under {data_dir}: "
                            + ", ".join(str(path) for path in closest[:3])
                            + (", ..." if len(closest) > 3 else "")
                            + "; name the file by its path relative to the manifest")
    return closest[0]


def _exported_copy(entry: Mapping[str, Any], manifest_dir: Path, data_dir: Path
                   ) -> Path | None:
    """The file `linesight export-dataset` wrote for this line (`linesight.local_path`,
    beside the manifest), when it is there. Its `source-ref` names an S3 key, and two photos
    sent through one upload form share one: by file name both lines found the first photo,
    trained under both labels, and the second was never read."""
    extra = entry.get("linesight")
    local = extra.get("local_path") if isinstance(extra, Mapping) else None
    if not isinstance(local, str) or not local:
        return None
    candidate = manifest_dir / local
    if not candidate.is_file() or _inside(candidate, data_dir, ["test"]):
        return None
    return candidate


def _inside(path: Path, data_dir: Path, folders: Sequence[str]) -> bool:
    """Whether `path` lies in a folder under `data_dir` named one of `folders`.

    >>> [_inside(Path(name), Path("d"), ["test"]) for name in ("d/test/anomaly/1.jpg", "d/1.jpg")]
    [True, False]

    By the path as written and by the real one, links followed and `..` taken out: a
    `data_dir` reached through a link, or a reference climbing out and back in with `..`,
    still finds its `test/`, and so does a `test/` that is itself a link elsewhere."""
    def by_text(absolute: Path, top: Path) -> bool:
        return (absolute.is_relative_to(top) and any(
            part.lower() in folders for part in absolute.relative_to(top).parts[:-1]))

    if by_text(path.absolute(), data_dir.absolute()):
        return True
    real = path.resolve()
    top, linked = _real_folders(data_dir, tuple(folders))
    return by_text(real, top) or any(real.is_relative_to(folder) for folder in linked)


@lru_cache(maxsize=8)
def _real_folders(data_dir: Path, folders: tuple[str, ...]) -> tuple[Path, tuple[Path, ...]]:
    """`data_dir`'s real path, and those of its top-level `folders` that are links, read
    once per manifest (`_from_manifest` clears this): once per reference, listing a folder
    of thousands of images made an import quadratic."""
    try:
        linked = tuple(child.resolve() for child in data_dir.iterdir()
                       if child.name.lower() in folders and child.is_symlink())
    except OSError:  # no such folder: nothing is inside it
        linked = ()
    return data_dir.resolve(), linked


def _shared_tail(first: Sequence[str], second: Sequence[str]) -> int:
    """How many path parts `first` and `second` share, counted from the end.

    >>> _shared_tail(("d", "train", "anomaly", "1.jpg"), ("bucket", "anomaly", "1.jpg"))
    2
    """
    count = 0
    for one, other in zip(reversed(first), reversed(second), strict=False):
        if one != other:
            break
        count += 1
    return count


def _holds_labels(folder: Path) -> bool:
    """Whether `folder` holds a label folder (`normal/`, `good/` or `anomaly/`): a data
    set's split such as `train/`, not a folder of one defect type's images. In any case,
    as `folder_named` finds them."""
    try:
        return any(child.name.lower() in LABEL_FOLDERS and child.is_dir()
                   for child in folder.iterdir())
    except OSError:  # no such folder, or not a folder
        return False


def folder_named(root: Path, name: str) -> Path:
    """`root / name`, or the folder of that name in another case where that is the one
    there: VisA keeps its images in `Normal/` and `Anomaly/`, which were read as a defect
    type's anomalies (every normal image scored as a miss). Two folders whose names differ
    only in case are refused (TrainingError), since which one is meant is unclear.

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> (root / "Normal").mkdir()
    >>> folder_named(root, "normal").name, folder_named(root, "anomaly").name
    ('Normal', 'anomaly')
    """
    try:
        variants = sorted(folder for folder in root.iterdir()
                          if folder.name.lower() == name and folder.is_dir())
    except OSError:  # no such folder, or not a folder: nothing inside it is a label
        return root / name
    if len(variants) > 1:
        raise TrainingError(f"{root} has {' and '.join(f'{v.name}/' for v in variants)}, "
                            f"whose names differ only in case: keep one")
    return variants[0] if variants else root / name


def labelled_images(root: Path) -> tuple[list[Path], list[Path], dict[Path, Path]]:
    """The normal and the anomalous images under `root`, and each anomaly's place: its path,
    without suffix, under its label folder, which is where its mask sits under `masks/`
    (`crack/007` for `anomaly/crack/007.jpg` and for `crack/007.jpg`).

    The normal images are in `normal/` (Lookout for Vision) or `good/` (MVTec AD); both
    holding images is refused (TrainingError), since which one is meant is unclear. The
    anomalous ones are in `anomaly/` and in every other folder beside the normal one, each
    a defect type (`crack/`, `scratch/`) as in MVTec AD, in training and in `evaluate`
    alike. Not images: `masks/` and `ground_truth/`, hidden folders, and a data set's
    splits (`train/`, `test/`, or any folder holding `normal/`, `good/` or `anomaly/`).
    Defect folders beside `normal/` or `anomaly/` are named in a warning: there, a stray
    folder is easily taken for anomalies.

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> for name in ("good/0.png", "crack/0.png", "scratch/1.png", "ground_truth/crack/0_mask.png"):
    ...     (root / name).parent.mkdir(parents=True, exist_ok=True)
    ...     _ = (root / name).write_bytes(b"")
    >>> normal, anomalous, places = labelled_images(root)
    >>> [str(path.relative_to(root)) for path in normal + anomalous]
    ['good/0.png', 'crack/0.png', 'scratch/1.png']
    >>> [str(places[path]) for path in anomalous]
    ['crack/0', 'scratch/1']
    """
    normal, good, anomaly = (folder_named(root, name) for name in ("normal", "good", "anomaly"))
    if normal.is_dir() and images_in(good):
        raise TrainingError(f"{root} has both {normal.name}/ and {good.name}/: keep the normal "
                            "images in one of them")
    places = {path: path.relative_to(anomaly).with_suffix("") for path in images_in(anomaly)}
    defect_folders = sorted(folder for folder in (root.iterdir() if root.is_dir() else ())
                            if folder.is_dir() and _is_defect_folder(folder))
    read = []
    for folder in defect_folders:
        found = images_in(folder)
        places.update((path, path.relative_to(root).with_suffix("")) for path in found)
        read += [f"{folder.name}/"] if found else []
    if read and (normal.is_dir() or anomaly.is_dir()):
        log.warning("%s: reading %s as anomalous images, one folder per defect type (any "
                    "folder beside %s is, but masks/, ground_truth/ and a data set's splits)",
                    root, ", ".join(read), "normal/" if normal.is_dir() else "good/")
    return images_in(normal if normal.is_dir() else good), list(places), places


def _is_defect_folder(folder: Path) -> bool:
    """Whether `folder`, beside the normal images, holds one defect type's anomalies."""
    return (not folder.name.startswith(".")
            and folder.name.lower() not in (*LABEL_FOLDERS, *MASK_FOLDERS, *SPLIT_FOLDERS)
            and not _holds_labels(folder))


def _mask_keys(relative: Path) -> list[Path]:
    """The paths, without suffix, of the images a mask at `relative` may belong to: the
    same name, or the name without MVTec AD's `_mask` ending.

    >>> [str(key) for key in _mask_keys(Path("crack/000_mask.png"))]
    ['crack/000_mask', 'crack/000']
    >>> [str(key) for key in _mask_keys(Path("007.png"))]
    ['007']
    """
    plain = relative.with_suffix("")
    short = plain.name.removesuffix("_mask")
    return [plain, plain.with_name(short)] if short and short != plain.name else [plain]


def readable(name: str) -> str:
    """A file name as it can be printed and written: a name that is not UTF-8 (from a zip
    made on Windows, say) reaches Python as lone surrogates, which no UTF-8 terminal or file
    takes (UnicodeEncodeError); each undecodable byte becomes a replacement mark.

    >>> readable(os.fsdecode(b"Pr\\xfcf.png")), readable("Prüf.png")
    ('Pr\\ufffdf.png', 'Prüf.png')
    """
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def images_in(folder: Path) -> list[Path]:
    """The image files (`IMAGE_SUFFIXES`) under `folder`, in subfolders too, symlinked ones
    included, sorted; hidden files and folders (`.DS_Store`, `._x.jpg` from a zip made on a
    Mac) and any `masks/` or `ground_truth/` subfolder are left out.

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> for name in ("b.jpg", "crack/a.PNG", "c.webp", "notes.txt", "._b.jpg", "masks/a.png"):
    ...     (root / name).parent.mkdir(parents=True, exist_ok=True)
    ...     _ = (root / name).write_bytes(b"")
    >>> [str(path.relative_to(root)) for path in images_in(root)]
    ['b.jpg', 'c.webp', 'crack/a.PNG']
    """
    return sorted(path for path in _files_under(folder, _left_out)
                  if path.suffix.lower() in IMAGE_SUFFIXES)


def _left_out(name: str) -> bool:
    """Whether a file or folder of this name is no training image, nor holds any."""
    return name.startswith(".") or name.lower() in MASK_FOLDERS


def _files_under(folder: Path, skip: Callable[[str], bool] | None = None) -> Iterator[Path]:
    """The files under `folder`, except those and the folders whose name `skip` says,
    following symlinked folders (which `Path.rglob` does not) but entering each real folder
    once, so that a link back up the tree ends."""
    entered: set[Path] = set()
    for current, folders, files in os.walk(folder, followlinks=True):
        real = Path(current).resolve()
        if real in entered:
            folders.clear()
            continue
        entered.add(real)
        folders[:] = sorted(name for name in folders if not (skip and skip(name)))
        for name in files:
            path = Path(current) / name
            if not (skip and skip(name)) and path.is_file():
                yield path


def _candidates(methods: Sequence[str] | None, backbone: Path | str | None
                ) -> list[tuple[str, Method]]:
    names = list(methods) if methods else [
        name for name, cls in METHODS.items()
        if getattr(cls, "auto_select", True) or (backbone and name == "onnx_patchcore")]
    if ScoreEnsemble.name in names:
        raise TrainingError("the ensemble is built by training from the best two methods; "
                            "name its members instead")
    unknown = [name for name in names if name not in METHODS]
    if unknown:
        raise TrainingError(f"unknown method(s) {', '.join(unknown)}; "
                            f"known: {', '.join(sorted(set(METHODS) - {ScoreEnsemble.name}))}")
    chosen: list[tuple[str, Method]] = []
    for name in names:
        cls: Any = METHODS[name]
        if name == "onnx_patchcore":
            if not backbone:
                raise TrainingError("onnx_patchcore needs --backbone model.onnx")
            chosen.append((name, cls(backbone=Path(backbone).read_bytes())))
        else:
            chosen.append((name, cls()))
    return chosen


def _unavailable(candidates: Sequence[tuple[str, Method]], split: _Split,
                 asked: bool = False) -> list[tuple[str, str]]:
    """(name, reason) of each candidate that cannot be trained on this set (a method says
    so with an `unavailable(normal_count, anomaly_count)` class method). It is asked about
    the smallest training part of a cross-validation fold, which every fold model must
    learn from. Normal-only, a method that synthetic defects would judge unfairly
    (`fair_on_synthetic = False`) is left out unless it was `asked` for by name."""
    normal = len(split.normal_fold) - int(np.bincount(split.normal_fold).max())
    anomalous = (len(split.anomaly_fold) - int(np.bincount(split.anomaly_fold).max())
                 if split.labelled else 0)
    found = []
    for name, method in candidates:
        check = getattr(type(method), "unavailable", None)
        reason = check(normal, anomalous) if check else None
        if not (split.labelled or asked or getattr(type(method), "fair_on_synthetic", True)):
            reason = ("normal-only training judges methods by synthetic defects, which "
                      f"favour this one whatever the real defects are; ask for it by name "
                      f"(--method {name}) to use it")
        if reason:
            if split.labelled:
                reason += (f" (in each cross-validation fold's training part; "
                           f"{len(split.normal_fold)} normal and {len(split.anomaly_fold)} "
                           f"anomalous in all, {split.folds} folds)")
            found.append((name, reason))
    return found


def _fresh(name: str, candidates: Iterable[tuple[str, Method]]) -> Method:
    """A new, unfitted copy of the candidate called `name` (options included)."""
    for candidate_name, method in candidates:
        if candidate_name == name:
            return copy.deepcopy(method)
    raise KeyError(name)


def _ensemble_margin(best: _Fold) -> float:
    """What an ensemble must gain over the best method's out-of-fold AUROC: a clear
    `ENSEMBLE_MARGIN`, and more than that AUROC's standard error on these images (with
    synthetic defects, an AUROC of 0.65 on 31 + 31 images could be 0.58 or 0.72 by chance;
    doubling the inference time on such a difference would be a coin toss)."""
    value = auroc(best.normal, best.anomalous) or 0.0
    return max(ENSEMBLE_MARGIN,
               auroc_standard_error(value, len(best.normal), len(best.anomalous)))


def default_workers() -> int:
    """Folds to cross-validate at once: one per core this process may use, at most
    `MAX_WORKERS`."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(MAX_WORKERS, cores or 1))


def fold_count(normals: int, anomalies: int) -> int:
    """How many folds cross-validation uses: ten, five from `LARGE_SET` images on, and
    never more than either class has images (normals alone when `anomalies` is 0).

    >>> fold_count(20, 20), fold_count(16, 8), fold_count(20, 0), fold_count(150, 49)
    (10, 8, 10, 10)
    >>> fold_count(150, 50), fold_count(300, 100), fold_count(400, 0), fold_count(400, 3)
    (5, 5, 5, 3)
    """
    most = MAX_FOLDS if normals + anomalies < LARGE_SET else LARGE_SET_FOLDS
    return min(most, normals, anomalies) if anomalies else min(most, normals)


def _other_assignments(name: str, template: Method, images: _ImageCache, split: _Split,
                       notify: Progress, workers: int) -> tuple[float, ...]:
    """The out-of-fold AUROC of `name` on `OTHER_ASSIGNMENTS` other fold assignments (none
    when training is leave-one-out over normals alone: every shuffle groups alike)."""
    if not split.labelled and split.folds >= len(split.normal_fold):
        return ()
    values = []
    for number in range(1, OTHER_ASSIGNMENTS + 1):
        notify(f"{name} on other fold assignments", number - 1, OTHER_ASSIGNMENTS)
        other = _Split.drawn(split.folds, split.labelled, len(split.normal_fold),
                             len(split.anomaly_fold),
                             np.random.default_rng([split.seed, 101, number]), split.seed)
        result, _ = _cross_validate(name, template, images, other, workers=workers)
        if result.auroc is not None:
            values.append(result.auroc)
    notify(f"{name} on other fold assignments", OTHER_ASSIGNMENTS, OTHER_ASSIGNMENTS)
    return tuple(values)


def _rank(result: CandidateResult) -> tuple[float, float, float]:
    return (result.auroc or 0.0, result.f1 or 0.0, -result.ms_per_image)


class _ImageCache:
    """Training images decoded once per input size (JPEG draft decode, two threads)."""

    def __init__(self, training_set: TrainingSet, notify: Progress,
                 roi: imageio.Roi | None = None, methods: Sequence[Method] = ()) -> None:
        self.training_set = training_set
        self.roi = roi
        self.methods = methods  # the candidates: what detection refuses depends on the method
        self.notify = notify
        self.skipped: list[str] = []
        self.masks = training_set.masks
        self.normal_paths = list(training_set.normal)
        self.anomaly_paths = list(training_set.anomaly)
        paths = self.normal_paths + self.anomaly_paths
        # what lists name an image by: its path under the folder all of them share, so
        # that normal/camA/bad.jpg and normal/camB/bad.jpg are told apart
        self._common = (Path(os.path.commonpath([p.absolute().parent for p in paths]))
                        if paths else None)
        self.aspect: float | None = None
        self.longest: int | None = None
        self.colour: bool | None = None  # whether every image kept was a colour one
        self.greyscale = False  # whether every image kept was a greyscale one
        self._by_size: dict[int, _Decoded] = {}

    def shown(self, path: Path) -> str:
        """How lists name a training image: its path under the folder all of them share."""
        return readable(str(path.absolute().relative_to(self._common)) if self._common
                        else path.name)

    def mask_for(self, anomaly_index: int) -> Path | None:
        """The mask file of the n-th (usable) anomaly image, if it has one."""
        return self.masks.get(self.anomaly_paths[anomaly_index])

    def at(self, size: int) -> _Decoded:
        if size not in self._by_size:
            self._by_size[size] = self._decode(size)
        return self._by_size[size]

    def set_aside_anomalies(self, reason: str) -> None:
        """Train without the labelled anomalies; each is listed as skipped, with `reason`."""
        self.skipped.extend(f"{self.shown(path)}: {reason}" for path in self.anomaly_paths)
        self.anomaly_paths = []
        self._by_size = {size: _Decoded(data.normal, []) for size, data in self._by_size.items()}

    def _decode(self, size: int) -> _Decoded:
        paths = self.normal_paths + self.anomaly_paths
        done = 0

        def one(path: Path) -> imageio.DecodedImage | str:
            try:
                data = path.read_bytes()
            except OSError as exc:  # e.g. no read permission: left out, and listed
                return f"{self.shown(path)}: unreadable ({exc.strerror or exc})"
            try:
                return imageio.decode(data, longest_side=size, roi=self.roi)
            except InvalidImageError as exc:
                return f"{self.shown(path)}: {exc.reason} ({exc})"

        decoded: list[imageio.DecodedImage | str] = []
        with ThreadPoolExecutor(max_workers=2) as pool:
            for item in pool.map(one, paths):
                decoded.append(item)
                done += 1
                self.notify(f"decoding images at {size} px", done, len(paths))
        if self.aspect is None:
            decoded = self._leave_out_what_detection_refuses(paths, decoded)
        bad = {path for path, item in zip(paths, decoded, strict=True) if isinstance(item, str)}
        if bad:
            self.skipped.extend(item for item in decoded if isinstance(item, str))
            log.info("skipped %d training image(s): %s", len(bad),
                     "; ".join(item for item in decoded if isinstance(item, str)))
            self.normal_paths = [path for path in self.normal_paths if path not in bad]
            self.anomaly_paths = [path for path in self.anomaly_paths if path not in bad]
        good = [item for item in decoded if not isinstance(item, str)]
        n_normal = len(self.normal_paths)
        return _Decoded([item.rgb for item in good[:n_normal]],
                        [item.rgb for item in good[n_normal:]])

    def _leave_out_what_detection_refuses(self, paths: Sequence[Path],
                                          decoded: list[imageio.DecodedImage | str]
                                          ) -> list[imageio.DecodedImage | str]:
        """`decoded`, with each image that the trained model's detection would refuse
        replaced by why: another aspect ratio than the one training keeps (`off_size`), or
        too small for any candidate method (`too_small`). Sets `aspect`, `longest` and
        `colour` and `greyscale`, which the model keeps for detection, from the first
        decode."""
        usable = [(path, item) for path, item in zip(paths, decoded, strict=True)
                  if not isinstance(item, str)]
        if not usable:
            return decoded
        normal = set(self.normal_paths)
        voters = [item.original_size for path, item in usable if path in normal]
        voted = "normal images" if voters else "images"
        voters = voters or [item.original_size for _, item in usable]
        self.aspect = _reference_aspect(voters)
        sharing = sum(not imageio.aspect_is_off(size, self.aspect) for size in voters)
        others = sum(imageio.aspect_is_off(item.original_size, self.aspect)
                     for _, item in usable)
        kept = (f"training keeps aspect ratio {self.aspect:.2f}, that of {sharing} of the "
                f"{len(voters)} {voted}; {others} image(s) have another")
        decoded = [_off_size(self.shown(path), item, self.aspect, kept)
                   for path, item in zip(paths, decoded, strict=True)]
        self.longest = int(np.median([max(item.original_size) for item in decoded
                                      if not isinstance(item, str)]))
        if self.methods:
            smallest = max(min_longest(self.longest, method.input_size)
                           for method in self.methods)
            decoded = [_too_small(self.shown(path), item, smallest)
                       for path, item in zip(paths, decoded, strict=True)]
        self.colour = imageio.in_colour(item for item in decoded if not isinstance(item, str))
        self.greyscale = imageio.in_grey(item for item in decoded if not isinstance(item, str))
        return decoded


def _reference_aspect(sizes: Sequence[tuple[int, int]]) -> float:
    """The aspect ratio (width/height) the model expects: that of one of these images, the
    one most of them match within detection's tolerance (`imageio.aspect_is_off`); then
    the one most share exactly; then landscape; then the wider. A median of ratios could
    be one that no image has, and so refuse them all (six landscape, six portrait).

    >>> _reference_aspect([(160, 120)] * 6 + [(120, 160)] * 6)
    1.3333333333333333
    >>> _reference_aspect([(160, 120)] * 5 + [(120, 160)] * 7)
    0.75
    """
    counts = Counter(sizes)
    ratios = sorted({width / height for width, height in counts})

    def preference(ratio: float) -> tuple[int, int, bool, float]:
        matching = sum(count for size, count in counts.items()
                       if not imageio.aspect_is_off(size, ratio))
        same = sum(count for (width, height), count in counts.items()
                   if round(width / height, 2) == round(ratio, 2))
        return matching, same, ratio >= 1.0, ratio

    return max(ratios, key=preference)


def _off_size(shown: str, item: imageio.DecodedImage | str, aspect: float, kept: str
              ) -> imageio.DecodedImage | str:
    """`item`, or why it is skipped when its aspect ratio is one detection would refuse;
    `kept` says which aspect ratio training keeps, and why.

    >>> from types import SimpleNamespace
    >>> _off_size("cam2.jpg", SimpleNamespace(original_size=(1920, 1080)), 1.333, "...")
    'cam2.jpg: off_size (1920x1080, aspect ratio 1.78; ...)'
    """
    if isinstance(item, str) or not imageio.aspect_is_off(item.original_size, aspect):
        return item
    width, height = item.original_size
    return f"{shown}: off_size ({width}x{height}, aspect ratio {width / height:.2f}; {kept})"


def _too_small(shown: str, item: imageio.DecodedImage | str, smallest: int
               ) -> imageio.DecodedImage | str:
    """`item`, or why it is skipped when its longest side is under `smallest`, where
    detection would refuse it (in the words of `imageio.decode`).

    >>> from types import SimpleNamespace
    >>> _too_small("far.jpg", SimpleNamespace(original_size=(60, 45)), 80)
    'far.jpg: too_small (60x45 is too small: the model needs at least 80 px)'
    """
    if isinstance(item, str) or max(item.original_size) >= smallest:
        return item
    width, height = item.original_size
    return (f"{shown}: too_small ({width}x{height} is too small: the model needs at least "
            f"{smallest} px)")


@dataclass(frozen=True)
class _Decoded:
    normal: list[np.ndarray]
    anomaly: list[np.ndarray]


def _fold_ids(count: int, folds: int, rng: np.random.Generator) -> np.ndarray:
    """A fold number for each of `count` items, shuffled, as even as possible."""
    return rng.permutation(np.arange(count) % folds)


@dataclass(frozen=True)
class _Split:
    """One fold assignment shared by every candidate, so their out-of-fold scores line up
    image by image (which the ensemble needs)."""

    folds: int
    labelled: bool
    normal_fold: np.ndarray
    anomaly_fold: np.ndarray
    seed: int

    @classmethod
    def drawn(cls, folds: int, labelled: bool, normal_count: int, anomaly_count: int,
              rng: np.random.Generator, seed: int) -> _Split:
        """A fold assignment shuffled with `rng` (anomalies only when labelled)."""
        return cls(folds, labelled, _fold_ids(normal_count, folds, rng),
                   _fold_ids(anomaly_count, folds, rng) if labelled else np.zeros(0, int),
                   seed)


def _cross_validate(name: str, template: Method, images: _ImageCache, split: _Split,
                    notify: Progress | None = None, workers: int = 1
                    ) -> tuple[CandidateResult, _Fold | None]:
    """Fit `name` on each fold's training part and score its held-out images, `workers`
    folds at a time (threads: numpy and torch do their work outside the interpreter lock,
    and every thread reads the same decoded images)."""
    data = images.at(template.input_size)
    stop = threading.Event()  # a fold has failed, or training was interrupted

    def go_on() -> None:
        if stop.is_set():
            raise _Stopped

    def one(fold: int) -> _Fold:
        go_on()
        collected = _Fold()
        method = _fresh(name, [(name, template)])
        train_normal = [img for img, f in zip(data.normal, split.normal_fold, strict=True)
                        if f != fold]
        train_anomaly = [img for img, f in zip(data.anomaly, split.anomaly_fold, strict=True)
                         if f != fold]
        started = time.thread_time()
        method.fit(train_normal, train_anomaly, np.random.default_rng([split.seed, fold]))
        collected.fit_seconds += time.thread_time() - started
        held_normal = [index for index, f in enumerate(split.normal_fold) if f == fold]
        if split.labelled:
            held = [(index, data.anomaly[index], images.mask_for(index))
                    for index, f in enumerate(split.anomaly_fold) if f == fold]
        else:
            # The same synthetic defect on the same image for every candidate.
            held = [(index, synthetic_anomaly(
                data.normal[index], np.random.default_rng([split.seed, 7, index])), None)
                for index in held_normal]
        for index in held_normal:
            go_on()
            score, anomaly_map = _score(method, data.normal[index], collected)
            collected.normal.append(score)
            collected.normal_index.append(index)
            collected.normal_map_peaks.append(float(np.max(anomaly_map)))
        for index, image, mask in held:
            go_on()
            score, anomaly_map = _score(method, image, collected)
            collected.anomalous.append(score)
            collected.anomalous_index.append(index)
            if mask is not None:
                collected.masked_maps.append((anomaly_map, mask))
        return collected

    parts: dict[int, _Fold] = {}
    failure: Exception | None = None  # the first fold's to fail: the others then stop

    def finished(fold: int, part: _Fold) -> None:
        parts[fold] = part
        if notify:
            notify(f"  {name}: folds", len(parts), split.folds)

    # One BLAS thread per fold whatever the number side by side, so that no score depends
    # on it (OpenBLAS may split a sum differently on two threads), and every held-out image
    # is scored as the pipeline scores it.
    with blas_threads(1):
        if workers == 1:  # here, on this thread, so that Ctrl-C stops it at once
            for fold in range(split.folds):
                try:
                    finished(fold, one(fold))
                except Exception as exc:  # noqa: BLE001 (recorded below)
                    failure = exc
                    break
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name) as pool:
                futures = {pool.submit(one, fold): fold for fold in range(split.folds)}
                try:
                    for future in as_completed(futures):
                        try:
                            finished(futures[future], future.result())
                        except (_Stopped, CancelledError):
                            continue
                        except Exception as exc:  # noqa: BLE001 (recorded below)
                            failure = exc
                            break
                finally:  # on a failure or Ctrl-C, the other folds stop at their next image
                    stop.set()
                    for future in futures:
                        future.cancel()
    if failure is not None:  # a research method may fail on some data; others go on
        log.warning("method %s failed during cross-validation: %s", name, failure)
        fit_seconds = sum(part.fit_seconds for part in parts.values())
        return CandidateResult(name, None, None, split.folds, fit_seconds, 0.0,
                               error=f"{type(failure).__name__}: {failure}"), None
    collected = _Fold.joined([parts[fold] for fold in range(split.folds)])
    if not all(np.isfinite(collected.normal + collected.anomalous)):
        return CandidateResult(name, None, None, split.folds, collected.fit_seconds, 0.0,
                               error="non-finite scores"), None
    ms = float(np.median(collected.score_seconds)) * 1000.0 if collected.score_seconds else 0.0
    return _result(name, collected, split, ms), collected


class _Stopped(Exception):
    """A fold left off because another failed or training was interrupted."""


def _result(name: str, collected: _Fold, split: _Split, ms: float) -> CandidateResult:
    area = auroc(collected.normal, collected.anomalous)
    f1 = None
    if split.labelled:
        threshold = best_f1_threshold(collected.normal, collected.anomalous)
        f1 = confusion(collected.normal, collected.anomalous, threshold).f1
    return CandidateResult(name, area, f1, split.folds, collected.fit_seconds, ms)


def _ensemble_candidate(results: Sequence[tuple[CandidateResult, _Fold | None]],
                        split: _Split) -> _Ensemble | None:
    """The cross-validated ensemble of the best method and the best of another family
(`_family`), or None if there is no such pair.

    Out-of-fold scores line up image by image (one shared split), so the ensemble's score
    for an image is the mean of its members' robust z-scores for that image.
    """
    ranked = sorted(((result, fold) for result, fold in results if fold is not None),
                    key=lambda pair: _rank(pair[0]), reverse=True)
    if not ranked:
        return None
    best_family = _family(ranked[0][0].method)
    usable = ranked[:1] + [pair for pair in ranked[1:]
                           if _family(pair[0].method) != best_family][:1]
    if len(usable) < 2:
        return None
    folds = [fold for _, fold in usable]
    scales = [robust_scale(fold.normal) for fold in folds]

    def combine(kind: str) -> tuple[list[float], list[int]]:
        per_member = []
        for fold, (centre, spread) in zip(folds, scales, strict=True):
            scores = fold.normal if kind == "normal" else fold.anomalous
            indices = fold.normal_index if kind == "normal" else fold.anomalous_index
            per_member.append({i: (s - centre) / spread for i, s in zip(indices, scores,
                                                                        strict=True)})
        order = sorted(per_member[0])
        return [float(np.mean([member[i] for member in per_member])) for i in order], order

    combined = _Fold()
    combined.normal, combined.normal_index = combine("normal")
    combined.anomalous, combined.anomalous_index = combine("anomalous")
    peaks = [dict(zip(fold.normal_index, fold.normal_map_peaks, strict=True))
             for fold in folds]
    combined.normal_map_peaks = [
        float(np.mean([(peak[i] - c) / s for peak, (c, s) in zip(peaks, scales, strict=True)]))
        for i in combined.normal_index]
    combined.fit_seconds = sum(fold.fit_seconds for fold in folds)
    ms = sum(result.ms_per_image for result, _ in usable)
    names = [result.method for result, _ in usable]
    return _Ensemble(_result(f"ensemble({'+'.join(names)})", combined, split, ms), combined,
                     names, scales)


def _out_of_reach(name: str, results: Sequence[tuple[CandidateResult, _Fold | None]]
                  ) -> str | None:
    """Why the variant `name` is not worth cross-validating (the method it is a variant of
    scored more than `VARIANT_REACH` below the best so far), or None to try it.

    >>> seen = [(CandidateResult("align_patch", 0.995, 0.97, 10, 1.0, 5.0), _Fold()),
    ...         (CandidateResult("cnn", 0.730, 0.74, 10, 1.0, 1.0), _Fold())]
    >>> print(_out_of_reach("cnn_coarse", seen))
    cnn, the same method at another size, scored 0.730 out of fold, 0.265 below align_patch
    >>> print(_out_of_reach("cnn_coarse", seen[1:]), _out_of_reach("align", seen))
    None None
    """
    base = _family(name)
    scored = {result.method: result for result, fold in results
              if fold is not None and result.auroc is not None}
    if base == name or base not in scored:
        return None
    best = max(scored.values(), key=_rank)
    gap = (best.auroc or 0.0) - (scored[base].auroc or 0.0)
    if gap <= VARIANT_REACH:
        return None
    return (f"{base}, the same method at another size, scored {scored[base].auroc:.3f} "
            f"out of fold, {gap:.3f} below {best.method}")


def _family(name: str) -> str:
    """The method that `name` is a variant of (`variant_of`: the same method at another
    size), or `name` itself. An ensemble pairs the best method with the best of another
    family: `cnn` and `cnn_coarse` tie where either does well, and together they would
    take the place of a second opinion."""
    return str(getattr(METHODS.get(name), "variant_of", name))


@dataclass(frozen=True)
class _Ensemble:
    result: CandidateResult
    fold: _Fold
    members: list[str]
    scales: list[tuple[float, float]]


def _score(method: Method, image: np.ndarray, collected: _Fold) -> tuple[float, np.ndarray]:
    """Score one held-out image (on the one BLAS thread `_cross_validate` allows, as the
    pipeline does) and time it by the CPU time of the thread that scores it.

    On two threads the timing swung with whatever else the cores were doing (torch's
    threads, just done training a network, among them): in one benchmark run `cnn` at
    128 px timed faster than at 96 px, though it does nearly twice the work, and won
    their tie. Folds run side by side, so wall-clock time would also count the time
    this thread waits while another fold holds the interpreter or the core."""
    started = time.thread_time()
    raw, anomaly_map = method.score(image)
    collected.score_seconds.append(time.thread_time() - started)
    return float(raw), np.asarray(anomaly_map, np.float32)


def pixel_threshold_from_masks(maps_and_masks: Sequence[tuple[np.ndarray, np.ndarray]]
                               ) -> float | None:
    """The map value that best reproduces the masks (best mean Dice), or None.

    >>> spot = np.zeros((8, 8), np.float32); spot[2:4, 2:4] = 5.0; spot[6, 6] = 1.0
    >>> threshold = pixel_threshold_from_masks([(spot, spot > 2)])
    >>> 1.0 < threshold <= 5.0
    True
    """
    pairs = [(values, mask) for values, mask in maps_and_masks if mask.any()]
    if not pairs:
        return None
    pooled = np.concatenate([values.ravel() for values, _ in pairs])
    candidates = np.unique(np.quantile(pooled, np.linspace(0.5, 0.999, 60)))
    best, best_dice = None, -1.0
    for candidate in candidates:
        dice = np.mean([2.0 * np.logical_and(values >= candidate, mask).sum()
                        / ((values >= candidate).sum() + mask.sum())
                        for values, mask in pairs])
        if dice > best_dice:
            best, best_dice = float(candidate), float(dice)
    return best


def _check_masks(masks: Mapping[Path, Path]) -> None:
    """Every mask can be read, checked before cross-validation rather than after it: the
    masks are read only to set the pixel threshold, when the methods have been judged."""
    unreadable = []
    for image, mask in masks.items():
        try:
            with Image.open(mask) as opened:
                opened.load()
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            unreadable.append(f"{mask} (the mask of {image.name}): {exc}")
    if unreadable:
        raise TrainingError(f"{len(unreadable)} mask(s) cannot be read: "
                            + "; ".join(unreadable[:3]) + ("; ..." if len(unreadable) > 3 else ""))


def _load_mask(path: Path, shape: tuple[int, int], roi: imageio.Roi | None) -> np.ndarray:
    """A boolean HxW mask at a map's resolution: a cell is anomalous when any pixel in it
    is marked, so that a scratch a few pixels wide in a large mask is not averaged away.

    A pixel is marked when it is brighter than half the mask's brightest pixel: 0/1 masks
    count (1 against 0.5), and so do 0/255 ones, while the near-black ringing that JPEG
    leaves around a 0/255 mask's edges does not mark the cells beside it."""
    with Image.open(path) as image:
        rgb = image.convert("RGBA").convert("RGB")
    if roi is not None:
        rgb = rgb.crop(imageio.roi_box(rgb.size, roi))
    brightness = np.asarray(rgb).max(axis=2)  # an all-black mask marks nothing: 0 > 0
    marked = Image.fromarray((brightness > brightness.max() / 2).astype(np.float32))
    # BOX averages the pixels each cell covers: above zero wherever one of them is marked
    small = marked.resize((shape[1], shape[0]), Image.Resampling.BOX)
    return np.asarray(small) > 0
