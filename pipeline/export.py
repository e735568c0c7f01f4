"""Export results as a training set that `linesight train` accepts: closing the loop.

The folder holds `train/normal/` and `train/anomaly/` (the layout training reads without a
manifest) and `manifest.jsonl`, one Lookout for Vision / Ground Truth line per image with
`source-ref` (the image's S3 URI) and `anomaly-label` (1 anomalous, 0 normal), so
`linesight train OUT_DIR --manifest OUT_DIR/manifest.jsonl` works too: training reads the
copy each line names in `linesight.local_path`, since two photos sent through one upload
form share one S3 key (and so one `source-ref`); a manifest without it is matched to local
copies by file name, which is why the copy keeps the object's name (the server-chosen keys
end in a unique upload id). Tools that fetch `source-ref` from S3 get the key's current
version: for such a pair, the later photo.

The label is a person's review (`review.label`) when `reviewed` is asked for, otherwise the
model's verdict. Invalid results have no usable image and are never exported.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline.records import STATUS_INVALID, ResultRecord, iso, utc_now
from pipeline.reviews import LABELS  # a data set's classes are the review labels

MANIFEST = "manifest.jsonl"
JOB_NAME = "linesight-export"


class ExportError(ValueError):
    """The export cannot be written as asked (the message says why)."""


@dataclass(frozen=True)
class ExportItem:
    """One image of the data set: where it comes from, its label and where it goes."""

    record: ResultRecord
    label: str  # "normal" or "anomaly"
    path: str  # relative to the output folder, e.g. "train/anomaly/<upload id>.jpg"
    human: bool  # labelled by a person (True) or by the model's verdict (False)

    @property
    def is_anomaly(self) -> bool:
        return self.label == "anomaly"


@dataclass(frozen=True)
class ExportSummary:
    out_dir: Path
    normal: int
    anomaly: int
    skipped: tuple[str, ...] = ()  # image ids whose object could not be read

    @property
    def total(self) -> int:
        return self.normal + self.anomaly


def label_of(record: ResultRecord, reviewed: bool) -> tuple[str, bool] | None:
    """(label, by a person) for an exportable record, or None when it is not exported.

    >>> from datetime import UTC, datetime
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> r = ResultRecord("i", "L", "C", "s3://b/k.jpg", t, t, "OK", is_anomalous=True)
    >>> label_of(r, reviewed=False), label_of(r, reviewed=True)
    (('anomaly', False), None)
    >>> label_of(r.with_changes(review={"label": "normal"}), reviewed=True)
    ('normal', True)
    >>> [label_of(r.with_changes(s3_uri=uri), reviewed=False)  # no key, or no bucket
    ...  for uri in ("s3://b", "s3://b/", "s3:///k.jpg")]
    [None, None, None]
    """
    if record.status == STATUS_INVALID:
        return None
    try:
        if not all(split_s3_uri(record.s3_uri)):  # s3://bucket/ or s3:///key
            return None
    except ValueError:
        return None
    human = (record.review or {}).get("label")
    if human in LABELS:
        return str(human), True
    if reviewed:
        return None
    return ("anomaly" if record.is_anomalous else "normal"), False


def plan_export(records: Iterable[ResultRecord], *, reviewed: bool) -> list[ExportItem]:
    """Which images go where, oldest first. A person's label wins over the model's when
    there is one; with `reviewed`, only reviewed images are exported."""
    items: list[ExportItem] = []
    used: set[str] = set()
    for record in sorted(records, key=lambda r: (r.captured_at, r.image_id)):
        labelled = label_of(record, reviewed)
        if labelled is None:
            continue
        label, human = labelled
        name = _file_name(record)
        if name.lower() in used:  # keep names unique; training matches by file name
            name = f"{_safe(record.image_id)}-{name}"
        used.add(name.lower())
        items.append(ExportItem(record, label, f"train/{label}/{name}", human))
    return items


def manifest_entry(item: ExportItem, created: str) -> dict[str, Any]:
    """One Lookout for Vision / Ground Truth manifest line."""
    record = item.record
    return {
        "source-ref": record.s3_uri,
        "anomaly-label": 1 if item.is_anomaly else 0,
        "anomaly-label-metadata": {
            "class-name": item.label,
            "confidence": 1.0 if item.human else round(record.confidence, 4),
            "human-annotated": "yes" if item.human else "no",
            "creation-date": created,
            "type": "groundtruth/image-classification",
            "job-name": JOB_NAME,
        },
        "linesight": {"image_id": record.image_id, "line_id": record.line_id,
                      "camera_id": record.camera_id, "captured_at": iso(record.captured_at),
                      "model_verdict": ("anomaly" if record.is_anomalous else "normal"),
                      "model_version": record.model_version, "local_path": item.path},
    }


def write_dataset(items: list[ExportItem], out_dir: Path,
                  fetch: Callable[[ResultRecord], bytes], *,
                  overwrite: bool = False,
                  advance: Callable[[], None] | None = None) -> ExportSummary:
    """Download each image with `fetch(record)` (the version it judged) into `out_dir` and
    write the manifest.

    An image whose version cannot be read (deleted for good since: a plain delete in the
    versioned bucket leaves it readable) is skipped and reported; the manifest lists only
    the images written. The images are downloaded beside the data set first: an
    `overwrite` replaces it only once the new one is complete, so a failed download, or
    one in which no image could be read, leaves the old one as it was.
    """
    if not items:
        raise ExportError("no results to export (with --reviewed, only reviewed images "
                          "count: review some with `linesight review`)")
    existing = [out_dir / "train", out_dir / MANIFEST]
    if any(path.exists() for path in existing) and not overwrite:
        raise ExportError(f"{out_dir} already holds a data set; choose an empty folder "
                          "or pass --overwrite")
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir))
    try:
        for label in LABELS:
            (staging / "train" / label).mkdir(parents=True)
        created = iso(utc_now())
        written: list[ExportItem] = []
        skipped: list[str] = []
        for item in items:
            try:
                data = fetch(item.record)
            except KeyError:
                skipped.append(item.record.image_id)
            else:
                (staging / item.path).write_bytes(data)
                written.append(item)
            if advance:
                advance()
        if not written:
            kept = " (the data set already there is kept)" if overwrite else ""
            raise ExportError(f"none of the {len(items)} images could be read: each is gone "
                              f"from its bucket{kept}")
        with (staging / MANIFEST).open("w") as manifest:
            for item in written:
                manifest.write(json.dumps(manifest_entry(item, created), sort_keys=True)
                               + "\n")
        shutil.rmtree(out_dir / "train", ignore_errors=True)
        (out_dir / MANIFEST).unlink(missing_ok=True)
        (staging / "train").rename(out_dir / "train")
        (staging / MANIFEST).rename(out_dir / MANIFEST)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    anomalies = sum(item.is_anomaly for item in written)
    return ExportSummary(out_dir, len(written) - anomalies, anomalies, tuple(skipped))


def split_s3_uri(uri: str) -> tuple[str, str]:
    """
    >>> split_s3_uri("s3://bucket/a/b.jpg")
    ('bucket', 'a/b.jpg')
    """
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise ValueError(f"not an s3://bucket/key URI: {uri!r}")
    bucket, key = uri[5:].split("/", 1)
    return bucket, key


def object_params(uri: str, version: str = "") -> dict[str, str]:
    """GetObject's (and HeadObject's) parameters for `uri`, at `version` when a record names
    one: the version that was judged, though the key may have been written again since.

    >>> object_params("s3://b/k.jpg", "v1")
    {'Bucket': 'b', 'Key': 'k.jpg', 'VersionId': 'v1'}
    """
    bucket, key = split_s3_uri(uri)
    return {"Bucket": bucket, "Key": key, **({"VersionId": version} if version else {})}


def _file_name(record: ResultRecord) -> str:
    name = PurePosixPath(split_s3_uri(record.s3_uri)[1]).name
    return _safe(name) or f"{_safe(record.image_id)}.jpg"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text).strip(".")[:120]
