"""A provisioned in-process moto stack for the query, review and report tests.

Like `tests/conftest.py`'s `moto_stack`, but these tests never run the detector, so the
model is a placeholder file and no training is needed: results are written straight to
the table, the way the workflow's putItem writes them.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from PIL import Image, ImageDraw

from pipeline.export import split_s3_uri
from pipeline.ingest import ObjectRef
from pipeline.records import ResultRecord
from tests.conftest import REGION, _reset_caches

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


class ResultsStack:
    def __init__(self, info: Any) -> None:
        self.info = info

    def client(self, service: str) -> Any:
        return boto3.client(service, region_name=REGION)

    def put(self, record: ResultRecord, image: bytes = b"") -> ResultRecord:
        """Store the record (and its image under its s3_uri, when given: the record then
        names the version stored, as ingest's would)."""
        if image:
            bucket, key = record.s3_uri[5:].split("/", 1)
            stored = self.client("s3").put_object(Bucket=bucket, Key=key, Body=image,
                                                  ContentType="image/jpeg")
            record = record.with_changes(image_version=stored.get("VersionId", ""))
        self.client("dynamodb").put_item(TableName=self.info.table, Item=record.to_item())
        return record


def jpeg(shade: int = 150, size: int = 96, defect: bool = False) -> bytes:
    image = Image.new("RGB", (size, size), (60, 60, 66))
    draw = ImageDraw.Draw(image)
    draw.ellipse((10, 10, size - 10, size - 10), fill=(shade, shade, shade))
    if defect:
        draw.line((20, 30, 60, 50), fill=(20, 20, 20), width=4)
    out = io.BytesIO()
    image.save(out, "JPEG")
    return out.getvalue()


def record(info: Any, index: int, *, line: str = "line-1", camera: str = "cam-1",
           anomalous: bool = False, status: str = "OK", minutes: float | None = None,
           **changes: Any) -> ResultRecord:
    """A result as the pipeline would store it; image ids are 32 hex digits like uploads'."""
    image_id = f"{index:032x}"
    captured = T0 + timedelta(minutes=index if minutes is None else minutes)
    key = f"{line}/{camera}/{captured:%Y/%m/%d}/{image_id}.jpg"
    base = ResultRecord(
        image_id=image_id, line_id=line, camera_id=camera,
        s3_uri=f"s3://{info.images_bucket}/{key}", captured_at=captured,
        processed_at=captured + timedelta(seconds=2), status=status,
        is_anomalous=anomalous, confidence=0.9 if status == "OK" else 0.0,
        score=(0.8 if anomalous else 0.2) if status == "OK" else 0.0, threshold=0.5,
        model_version="m-test", alert_reason="anomalous" if anomalous else "",
        reason="" if status == "OK" else "not_an_image: the file is HTML")
    return base.with_changes(idempotency_key=upload_ref(base).idempotency_key, **changes)


def upload_ref(record: ResultRecord) -> ObjectRef:
    """The S3 object `record` judged, as its notification names it (the etag made up)."""
    bucket, key = split_s3_uri(record.s3_uri)
    return ObjectRef(bucket, key, f"etag-{record.image_id}", 1000, record.captured_at)


@contextmanager
def results_stack(tmp_path: Path) -> Iterator[ResultsStack]:
    """The provisioned stack and the handlers' environment, for as long as the block runs.
    It sets its own environment (fake credentials, as `aws_env` does), so a module-scoped
    fixture can share one stack between read-only tests."""
    from moto import mock_aws

    from scripts.local_stack import LocalStack

    model = tmp_path / "placeholder-model"
    model.mkdir(exist_ok=True)
    (model / "model.json").write_text("{}")  # provisioning only copies it to S3
    with pytest.MonkeyPatch.context() as env:
        for key in list(os.environ):
            if key.startswith(("LINESIGHT_", "AWS_", "POWERTOOLS_")):
                env.delenv(key)
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", REGION)
        env.setenv("AWS_REGION", REGION)
        _reset_caches()
        with mock_aws():
            local = LocalStack(model, write_state=False)
            info = local.provision(
                client=lambda service: boto3.client(service, region_name=REGION))
            info.environment = local.handler_environment(info)  # as `start` keeps it
            for key, value in info.environment.items():
                env.setenv(key, value)
            _reset_caches()
            yield ResultsStack(info)
    _reset_caches()
