"""Exporting results as a training set: which images, which label, which layout, and that
`linesight train`'s loader accepts both the folders and the manifest."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from pipeline.detector.training import TrainingError, find_training_set, manifest_label
from pipeline.export import ExportError, label_of, manifest_entry, plan_export, write_dataset
from pipeline.records import ResultRecord

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def result(index: int, *, anomalous: bool = False, review: str = "", status: str = "OK",
           key: str | None = None, **changes: Any) -> ResultRecord:
    image_id = f"{index:032x}"
    return ResultRecord(
        image_id=image_id, line_id="line-1", camera_id="cam-1",
        s3_uri=f"s3://images/{key or f'line-1/cam-1/2026/11/23/{image_id}.jpg'}",
        captured_at=T0 + timedelta(minutes=index), processed_at=T0 + timedelta(minutes=index),
        status=status, is_anomalous=anomalous, confidence=0.87, score=0.7 if anomalous else 0.1,
        threshold=0.5, model_version="m-1",
        review={"label": review, "note": ""} if review else {}, **changes)


def png(shade: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (shade, shade, shade)).save(out, "JPEG")
    return out.getvalue()


@pytest.mark.parametrize("record, reviewed, expected", [
    # the model's verdict when nobody reviewed, only without --reviewed
    (result(1, anomalous=True), False, ("anomaly", False)),
    (result(1, anomalous=True), True, None),
    # a person's label wins over the model's either way
    (result(1, anomalous=True, review="normal"), False, ("normal", True)),
    (result(1, review="anomaly"), True, ("anomaly", True)),
    # an invalid upload has no usable image, reviewed or not
    (result(1, status="INVALID", review="normal"), True, None),
    (result(1, status="INVALID"), False, None),
    # a label other than the two is ignored
    (result(1, review="unsure"), True, None),
])
def test_label_of(record: ResultRecord, reviewed: bool,
                  expected: tuple[str, bool] | None) -> None:
    assert label_of(record, reviewed) == expected


def test_plan_puts_images_under_their_label_with_the_object_name() -> None:
    records = [result(2, anomalous=True), result(1), result(3, review="anomaly")]

    items = plan_export(records, reviewed=False)

    assert [item.path for item in items] == [
        f"train/normal/{1:032x}.jpg", f"train/anomaly/{2:032x}.jpg",
        f"train/anomaly/{3:032x}.jpg"]
    assert [item.human for item in items] == [False, False, True]


def test_plan_keeps_file_names_unique() -> None:
    records = [result(1, key="a/x.jpg"), result(2, key="b/x.jpg")]

    paths = [item.path for item in plan_export(records, reviewed=False)]

    assert paths[0] == "train/normal/x.jpg"
    assert paths[1] == f"train/normal/{2:032x}-x.jpg"


def test_manifest_entry_is_lookout_style() -> None:
    [item] = plan_export([result(1, anomalous=True, review="anomaly")], reviewed=True)

    entry = manifest_entry(item, "2026-11-23T09:00:00.000+00:00")

    assert entry["source-ref"] == item.record.s3_uri
    assert entry["anomaly-label"] == 1
    assert entry["anomaly-label-metadata"]["class-name"] == "anomaly"
    assert entry["anomaly-label-metadata"]["human-annotated"] == "yes"
    assert manifest_label(entry) is True  # what training checks


def test_written_dataset_is_accepted_by_training_both_ways(tmp_path: Path) -> None:
    records = [result(i) for i in range(1, 5)] + [result(5, anomalous=True),
                                                   result(6, anomalous=True, review="normal")]
    blobs = {r.s3_uri: png(40 * i) for i, r in enumerate(records)}
    fetched: list[str] = []

    def fetch(record: ResultRecord) -> bytes:
        fetched.append(record.s3_uri)
        return blobs[record.s3_uri]

    summary = write_dataset(plan_export(records, reviewed=False), tmp_path, fetch)

    assert (summary.normal, summary.anomaly, summary.skipped) == (5, 1, ())
    assert sorted(fetched) == sorted(blobs)
    folder = find_training_set(tmp_path)
    assert (len(folder.normal), len(folder.anomaly)) == (5, 1)
    manifest = find_training_set(tmp_path, tmp_path / "manifest.jsonl")
    assert sorted(manifest.normal) == sorted(folder.normal)
    assert manifest.anomaly == folder.anomaly
    entries = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text()
               .splitlines()]
    assert [e["anomaly-label"] for e in entries] == [0, 0, 0, 0, 1, 0]
    assert (tmp_path / "train" / "anomaly" / f"{5:032x}.jpg").read_bytes() == \
        blobs[records[4].s3_uri]


def test_gone_images_are_skipped_and_left_out_of_the_manifest(tmp_path: Path) -> None:
    records = [result(1), result(2), result(3)]

    def fetch(record: ResultRecord) -> bytes:
        if record.s3_uri == records[1].s3_uri:
            raise KeyError(record.s3_uri)
        return png(100)

    summary = write_dataset(plan_export(records, reviewed=False), tmp_path, fetch)

    assert summary.skipped == (records[1].image_id,)
    assert summary.total == 2
    assert len((tmp_path / "manifest.jsonl").read_text().splitlines()) == 2


def test_existing_dataset_is_kept_unless_overwrite(tmp_path: Path) -> None:
    items = plan_export([result(1)], reviewed=False)
    write_dataset(items, tmp_path, lambda record: png(1))

    with pytest.raises(ExportError, match="already holds a data set"):
        write_dataset(items, tmp_path, lambda record: png(1))
    stale = tmp_path / "train" / "anomaly" / "stale.jpg"
    stale.write_bytes(png(2))

    write_dataset(items, tmp_path, lambda record: png(1), overwrite=True)

    assert not stale.exists()
    assert len(list((tmp_path / "train").rglob("*.jpg"))) == 1


def test_nothing_to_export_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="no results to export"):
        write_dataset(plan_export([result(1)], reviewed=True), tmp_path, lambda record: b"")


def test_training_refuses_an_export_without_normals(tmp_path: Path) -> None:
    # only anomalies reviewed: the export is written, but training says what is missing
    write_dataset(plan_export([result(1, review="anomaly")], reviewed=True), tmp_path,
                  lambda record: png(1))
    with pytest.raises(TrainingError, match="no normal images"):
        find_training_set(tmp_path)


def test_two_photos_through_one_upload_form_train_under_their_own_labels(
        tmp_path: Path) -> None:
    """Both records name one S3 key (the second photo replaced the first's object, and was
    judged under an id of its own): by file name, training took the first photo for both
    manifest lines, under both labels, and never read the second."""
    key = f"line-1/cam-1/2026/11/23/{1:032x}.jpg"
    first = result(1, key=key, review="normal")
    second = result(2, key=key, review="anomaly")
    others = [result(i, review="normal") for i in range(3, 6)]
    blobs = {first.image_id: png(40), second.image_id: png(200)}

    write_dataset(plan_export([first, second, *others], reviewed=True), tmp_path,
                  lambda record: blobs.get(record.image_id, png(90)))
    manifest = find_training_set(tmp_path, tmp_path / "manifest.jsonl")

    [anomaly] = manifest.anomaly
    assert anomaly.read_bytes() == blobs[second.image_id]
    assert anomaly not in manifest.normal and len(set(manifest.normal)) == 4
    assert blobs[first.image_id] in [path.read_bytes() for path in manifest.normal]
