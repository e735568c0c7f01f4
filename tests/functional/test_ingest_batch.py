"""One ingest batch reads its images' records once (BatchGetItem), processes an upload
delivered twice within the batch once, and still works when that read fails."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import MotoStack
from tests.functional.conftest import (
    count_calls,
    emf_metrics,
    records,
    sqs_message,
    wait_until_idle,
)


def _images(samples_dir: Path, count: int) -> list[bytes]:
    return [p.read_bytes() for p in sorted((samples_dir / "test").rglob("*.jpg"))[:count]]


def test_a_batch_reads_the_records_of_its_images_in_one_call(moto_stack: MotoStack,
                                                            samples_dir: Path) -> None:
    import app

    keys = [moto_stack.upload(image) for image in _images(samples_dir, 3)]
    dynamodb = count_calls("dynamodb")

    result = app.ingest({"Records": [sqs_message(moto_stack, k, f"m-{i}")
                                     for i, k in enumerate(keys)]}, None)

    assert result == {"batchItemFailures": []}
    assert dynamodb == {"BatchGetItem": 1}  # not a GetItem per image
    wait_until_idle(moto_stack)
    assert len(records(moto_stack)) == 3


def test_an_upload_delivered_twice_in_one_batch_is_processed_once(
        moto_stack: MotoStack, samples_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import app

    [key] = [moto_stack.upload(image) for image in _images(samples_dir, 1)]
    stepfunctions = count_calls("stepfunctions")

    result = app.ingest({"Records": [sqs_message(moto_stack, key, "m-1"),
                                     sqs_message(moto_stack, key, "m-2")]}, None)

    assert result == {"batchItemFailures": []}
    assert stepfunctions == {"StartExecution": 1}
    processed = [p for p in emf_metrics(capsys.readouterr().out)
                 if p["MetricName"] == "ProcessedImageCount"
                 and not p["Dimensions"]]  # the stack-wide data point, one per image
    assert len(processed) == 1  # the second delivery is a duplicate, not counted again
    wait_until_idle(moto_stack)
    assert len(records(moto_stack)) == 1


def test_when_the_batch_read_fails_each_image_is_looked_up_alone(
        moto_stack: MotoStack, samples_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import app

    from pipeline import aws

    [key] = [moto_stack.upload(image) for image in _images(samples_dir, 1)]
    assert app.ingest({"Records": [sqs_message(moto_stack, key)]}, None) == {
        "batchItemFailures": []}
    wait_until_idle(moto_stack)

    def throttled(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"}},
                          "BatchGetItem")

    monkeypatch.setattr(aws.client("dynamodb"), "batch_get_item", throttled)
    dynamodb, stepfunctions = count_calls("dynamodb"), count_calls("stepfunctions")

    assert app.ingest({"Records": [sqs_message(moto_stack, key)]}, None) == {
        "batchItemFailures": []}
    assert dynamodb == {"GetItem": 1}
    assert stepfunctions == {}  # found recorded: no second execution


def test_a_batch_near_its_timeout_leaves_the_rest_for_a_retry(
        moto_stack: MotoStack, samples_dir: Path) -> None:
    """With less than TIME_MARGIN_MS left, no further image is started: those messages are
    reported failed (SQS delivers them again), and the ones done stay done."""
    import app

    from pipeline.ingest import TIME_MARGIN_MS

    keys = [moto_stack.upload(image) for image in _images(samples_dir, 3)]
    remaining = iter([60_000, TIME_MARGIN_MS - 1, TIME_MARGIN_MS - 1])

    class Context:
        def get_remaining_time_in_millis(self) -> int:
            return next(remaining)

    result = app.ingest({"Records": [sqs_message(moto_stack, k, f"m-{i}")
                                     for i, k in enumerate(keys)]}, Context())

    assert result == {"batchItemFailures": [{"itemIdentifier": "m-1"},
                                            {"itemIdentifier": "m-2"}]}
    wait_until_idle(moto_stack)
    [done] = records(moto_stack)
    assert keys[0].endswith(f"{done['image_id']['S']}.jpg")
