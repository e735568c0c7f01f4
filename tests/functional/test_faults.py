"""Injected faults, against in-process moto: the record is kept, the workflow retries with
backoff, an alert that cannot be sent is not lost, throttled DynamoDB calls are retried,
and a detector that raises sends its message through retries to the DLQ.

moto's Step Functions engine makes a fresh boto3 client (default session) for each task,
so a `before-call` handler on that session fails exactly the calls we choose."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest

from tests.conftest import MotoStack
from tests.functional.conftest import (
    alerts,
    history_states,
    queue_bodies,
    records,
    redrive_workflow,
    sqs_message,
    wait_until_idle,
)


def _anomaly(samples_dir: Path) -> bytes:
    return sorted((samples_dir / "test" / "anomaly").glob("*.jpg"))[0].read_bytes()


def _error(code: str, status: int = 400) -> tuple[Any, dict[str, Any]]:
    return (SimpleNamespace(status_code=status, headers={}),
            {"Error": {"Code": code, "Message": f"injected {code}"},
             "ResponseMetadata": {"HTTPStatusCode": status, "RequestId": "injected"}})


@pytest.fixture
def inject() -> Iterator[Callable[[str, Callable[[dict[str, Any]], Any]], None]]:
    """inject("dynamodb.PutItem", fault): `fault(body)` gets the JSON request body and
    returns an error response or None (let the call through)."""
    session = boto3._get_default_session()
    registered: list[tuple[str, Any]] = []

    def add(operation: str, fault: Callable[[dict[str, Any]], Any]) -> None:
        def handler(params: dict[str, Any], **_: Any) -> Any:
            raw = params.get("body") or b"{}"
            try:  # JSON protocols send a JSON body; query ones (SNS, SQS's old) a dict
                body = raw if isinstance(raw, dict) else json.loads(raw)
            except ValueError:
                body = {}
            return fault(body if isinstance(body, dict) else {})

        event = f"before-call.{operation}"
        session.events.register_first(event, handler)
        registered.append((event, handler))

    yield add
    for event, handler in registered:
        session.events.unregister(event, handler)


def _ingest(stack: MotoStack, samples_dir: Path) -> str:
    import app

    key = stack.upload(_anomaly(samples_dir))
    assert app.ingest({"Records": [sqs_message(stack, key)]}, None) == {
        "batchItemFailures": []}
    return key


def test_sns_down_keeps_the_record_retries_then_parks_the_alert(
        moto_stack: MotoStack, samples_dir: Path, fast_retries: list[float],
        inject: Any) -> None:

    inject("sns.Publish", lambda params: _error("InternalError", 500))
    _ingest(moto_stack, samples_dir)
    [execution] = wait_until_idle(moto_stack)

    states = history_states(moto_stack, execution["executionArn"])
    assert states.count("PublishAlert") == 1 and "SendToFailureQueue" in states
    assert fast_retries == [1, 2, 4, 8]  # Retry with backoff before giving up
    [item] = records(moto_stack)  # the record is kept
    assert item["status"]["S"] == "OK"
    assert alerts(moto_stack) == []
    [parked] = queue_bodies(moto_stack, moto_stack.info.failure_queue_url)
    assert parked["alert"]["send"] is True and "alert_error" in parked
    assert parked["record"]["image_id"] == item["image_id"]["S"]


def test_an_sns_error_no_retry_can_cure_parks_the_alert_at_once(
        moto_stack: MotoStack, samples_dir: Path, fast_retries: list[float]) -> None:
    # a real permanent error: the topic is gone, so Publish answers NotFound
    moto_stack.client("sns").delete_topic(TopicArn=moto_stack.info.topic_arn)
    _ingest(moto_stack, samples_dir)
    [execution] = wait_until_idle(moto_stack)

    assert "SendToFailureQueue" in history_states(moto_stack, execution["executionArn"])
    assert fast_retries == []  # no backoff for an error that cannot go away
    [parked] = queue_bodies(moto_stack, moto_stack.info.failure_queue_url)
    assert parked["alert_error"]["Error"] == "SNS.NotFoundException"
    assert [item["status"]["S"] for item in records(moto_stack)] == ["OK"]


def test_a_parked_alert_is_sent_once_by_the_redrive(
        moto_stack: MotoStack, samples_dir: Path, fast_retries: list[float]) -> None:

    session = boto3._get_default_session()

    def down(params: dict[str, Any], **_: Any) -> Any:
        return _error("InternalError", 500)

    session.events.register_first("before-call.sns.Publish", down)
    try:
        _ingest(moto_stack, samples_dir)
        wait_until_idle(moto_stack)
    finally:
        session.events.unregister("before-call.sns.Publish", down)

    info = moto_stack.info
    result = redrive_workflow(moto_stack)
    assert (result.moved, result.alerts_published, result.executions_started) == (1, 1, 0)
    [alert] = alerts(moto_stack)
    assert alert["line"] == "line-1" and "Defect" in alert["subject"]
    assert queue_bodies(moto_stack, info.failure_queue_url) == []
    assert len(records(moto_stack)) == 1


def test_an_alert_redriven_once_is_not_sent_again_when_its_message_stays(
        moto_stack: MotoStack, samples_dir: Path, fast_retries: list[float],
        inject: Any) -> None:
    """SQS will not delete the message after its alert went out: the redrive says so and
    keeps the message hidden from another redrive meanwhile; the next redrive finds the
    record marked and does not alert again."""
    from pipeline import dlq, workflow

    outage = {"on": True}
    inject("sns.Publish", lambda params: _error("InternalError", 500) if outage["on"]
           else None)
    _ingest(moto_stack, samples_dir)
    wait_until_idle(moto_stack)
    outage["on"] = False

    info = moto_stack.info
    sqs = moto_stack.client("sqs")
    held: list[str] = []

    def refuse_delete(params: dict[str, Any], **_: Any) -> Any:
        entries = json.loads(params["body"])["Entries"]
        held.extend(entry["ReceiptHandle"] for entry in entries)
        return (SimpleNamespace(status_code=200, headers={}), {"Successful": [], "Failed": [
            {"Id": entry["Id"], "SenderFault": False, "Code": "InternalError",
             "Message": "injected"} for entry in entries]})

    sqs.meta.events.register_first("before-call.sqs.DeleteMessageBatch", refuse_delete)
    hidden_for: list[int] = []
    sqs.meta.events.register("provide-client-params.sqs.ReceiveMessage",
                             lambda params, **_: hidden_for.append(params["VisibilityTimeout"]))
    targets = dlq.WorkflowTargets(info.state_machine_arn, info.table, info.topic_arn)
    clients = {"sfn": moto_stack.client("stepfunctions"),
               "ddb": moto_stack.client("dynamodb"), "sns": moto_stack.client("sns"),
               "s3": moto_stack.client("s3")}
    first = dlq.redrive_workflow(sqs, info.failure_queue_url, targets, **clients)
    assert (first.alerts_published, first.failed, len(first.undeleted)) == (1, [], 1)
    assert len(alerts(moto_stack)) == 1  # (drains the tap)
    [item] = records(moto_stack)
    assert workflow.ALERT_REDRIVEN in item
    # held from a second operator's redrive meanwhile: for 15 minutes, not a peek's 30 s
    assert set(hidden_for) == {dlq.REDRIVE_VISIBILITY_SECONDS} == {900}
    assert dlq.redrive_workflow(moto_stack.client("sqs"), info.failure_queue_url, targets,
                                **clients).moved == 0

    sqs.meta.events.unregister("before-call.sqs.DeleteMessageBatch", refuse_delete)
    sqs.change_message_visibility(QueueUrl=info.failure_queue_url, ReceiptHandle=held[0],
                                  VisibilityTimeout=0)  # as when its 15 minutes are up
    second = dlq.redrive_workflow(sqs, info.failure_queue_url, targets, **clients)
    assert (second.moved, second.alerts_published, second.alerts_already_sent,
            second.undeleted) == (1, 0, 1, [])
    assert alerts(moto_stack) == []  # none since the first
    assert queue_bodies(moto_stack, info.failure_queue_url) == []


def test_throttled_put_item_is_retried_and_recorded_once(
        moto_stack: MotoStack, samples_dir: Path, fast_retries: list[float],
        inject: Any) -> None:
    throttles = iter(range(2))
    table = moto_stack.info.table

    def throttle_twice(params: dict[str, Any]) -> Any:
        if params.get("TableName") == table and next(throttles, None) is not None:
            return _error("ProvisionedThroughputExceededException")
        return None

    inject("dynamodb.PutItem", throttle_twice)
    _ingest(moto_stack, samples_dir)
    [execution] = wait_until_idle(moto_stack)

    assert execution["status"] == "SUCCEEDED"
    assert fast_retries == [1, 2]
    assert history_states(moto_stack, execution["executionArn"]).count("RecordResult") == 1
    assert len(records(moto_stack)) == 1
    assert len(alerts(moto_stack)) == 1


def test_dynamodb_throttled_for_good_parks_the_input_and_the_redrive_records_it(
        moto_stack: MotoStack, samples_dir: Path, fast_retries: list[float],
        inject: Any) -> None:

    table = moto_stack.info.table
    outage = {"on": True}
    inject("dynamodb.PutItem", lambda params: _error("ThrottlingException")
           if outage["on"] and params.get("TableName") == table else None)
    _ingest(moto_stack, samples_dir)
    wait_until_idle(moto_stack)
    assert fast_retries == [1, 2, 4, 8]
    assert records(moto_stack) == [] and alerts(moto_stack) == []
    [parked] = queue_bodies(moto_stack, moto_stack.info.failure_queue_url)
    assert parked["error"]["Error"] == "DynamoDB.ThrottlingException"

    outage["on"] = False
    result = redrive_workflow(moto_stack)
    assert result.executions_started == 1
    wait_until_idle(moto_stack)
    assert len(records(moto_stack)) == 1
    assert len(alerts(moto_stack)) == 1


def _commit_then_fail(table: str, times: int) -> Callable[[dict[str, Any]], Any]:
    """A put that DynamoDB commits but answers with a 500, the first `times` times: the
    item is written (by a client outside the injected session), then the error returned."""
    left = iter(range(times))
    writer = boto3.session.Session().client("dynamodb")

    def fault(params: dict[str, Any]) -> Any:
        if params.get("TableName") != table or next(left, None) is None:
            return None
        try:
            writer.put_item(**params)
        except writer.exceptions.ConditionalCheckFailedException:
            return _error("ConditionalCheckFailedException")
        return _error("InternalServerError", 500)

    return fault


def test_a_put_that_committed_but_answered_an_error_still_alerts_once(
        moto_stack: MotoStack, samples_dir: Path, fast_retries: list[float],
        inject: Any) -> None:
    """The retry finds the record its own first try wrote: it goes on and alerts (a
    condition of "not recorded at all" ended it in AlreadyRecorded, with no alert)."""
    inject("dynamodb.PutItem", _commit_then_fail(moto_stack.info.table, 1))
    _ingest(moto_stack, samples_dir)
    [execution] = wait_until_idle(moto_stack)

    states = history_states(moto_stack, execution["executionArn"])
    assert execution["status"] == "SUCCEEDED" and "AlreadyRecorded" not in states, states
    assert fast_retries == [1]
    assert len(records(moto_stack)) == 1
    assert len(alerts(moto_stack)) == 1


def test_a_put_that_committed_but_failed_for_good_gets_its_alert_from_the_redrive(
        moto_stack: MotoStack, samples_dir: Path, fast_retries: list[float],
        inject: Any) -> None:

    inject("dynamodb.PutItem", _commit_then_fail(moto_stack.info.table, 5))
    _ingest(moto_stack, samples_dir)
    wait_until_idle(moto_stack)
    assert fast_retries == [1, 2, 4, 8]
    assert len(records(moto_stack)) == 1 and alerts(moto_stack) == []
    [parked] = queue_bodies(moto_stack, moto_stack.info.failure_queue_url)
    assert parked["error"]["Error"] == "DynamoDB.InternalServerError"

    info = moto_stack.info
    result = redrive_workflow(moto_stack)
    assert (result.moved, result.alerts_published, result.executions_started) == (1, 1, 0)
    assert len(alerts(moto_stack)) == 1
    assert len(records(moto_stack)) == 1
    assert queue_bodies(moto_stack, info.failure_queue_url) == []


def test_throttled_token_lookups_are_retried_by_the_client(
        moto_stack: MotoStack, monkeypatch: pytest.MonkeyPatch) -> None:
    """The authorizer's GetItem: botocore's standard retry mode absorbs throttling."""
    from botocore.awsrequest import AWSResponse
    from botocore.retries import standard

    from pipeline import aws, tokens

    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", lambda self, ctx: 0.0)
    _, token = tokens.create_token(moto_stack.info.tokens_table, "line-1", "cam-1")
    tokens._cache.clear()
    sent: list[int] = []

    class Raw:
        def stream(self, **_: Any) -> Iterator[bytes]:
            yield json.dumps({"__type": "com.amazonaws.dynamodb.v20120810#"
                              "ProvisionedThroughputExceededException",
                              "message": "injected"}).encode()

    def throttle_twice(request: Any, **_: Any) -> Any:
        sent.append(1)
        if len(sent) <= 2:
            return AWSResponse(request.url, 400, {"x-amzn-requestid": "x"}, Raw())
        return None

    ddb = aws.client("dynamodb")
    ddb.meta.events.register_first("before-send.dynamodb.GetItem", throttle_twice)
    scope = tokens.verify(moto_stack.info.tokens_table, token)
    assert scope is not None and scope.line_id == "line-1"
    assert len(sent) == 3


class _BrokenDetector:
    model_version = "broken"
    threshold = 0.5

    def detect(self, image_bytes: bytes, content_type: str, *,
               threshold: float | None = None) -> Any:
        from pipeline.detector import DetectorError

        raise DetectorError("the model endpoint is not answering")


def test_a_detector_that_raises_retries_then_dead_letters_the_image(
        moto_stack: MotoStack, samples_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the real queue and its redrive policy (maxReceiveCount 3), with the local
    event source's Lambda semantics."""
    import app

    from pipeline import dlq, ingest
    from scripts.event_sources import SqsPoller

    info = moto_stack.info
    sqs = moto_stack.client("sqs")
    sqs.set_queue_attributes(QueueUrl=info.queue_url, Attributes={"VisibilityTimeout": "1"})
    monkeypatch.setattr(app, "load_detector", lambda *args: _BrokenDetector())
    sqs.purge_queue(QueueUrl=info.queue_url)  # S3's test event from provisioning
    key = moto_stack.upload(_anomaly(samples_dir))  # S3 notifies the ingest queue
    sqs.send_message(QueueUrl=info.queue_url, MessageBody="not an S3 event")

    poller = SqsPoller(sqs, info.queue_url, "arn:aws:sqs:us-east-1:123456789012:ingest",
                       "us-east-1", app.ingest, "ingest", stop=None)  # type: ignore[arg-type]
    attempts = []
    for _ in range(moto_stack.local.max_receive_count + 1):
        attempts.append(poller.poll_once())
        time.sleep(1.1)  # the visibility timeout: failed messages come back
    assert attempts == [2, 2, 2, 0]  # three tries each, then the redrive policy moved them
    assert records(moto_stack) == []

    letters = dlq.peek(sqs, info.dlq_url, "ingest", s3=moto_stack.client("s3"))
    by_image = {letter.image: letter for letter in letters}
    assert set(by_image) == {f"s3://{info.images_bucket}/{key}", ""}
    traced = by_image[f"s3://{info.images_bucket}/{key}"]
    assert (traced.line_id, traced.camera_id) == ("line-1", "cam-1")
    assert traced.reason.startswith("DetectorError: the model endpoint is not answering")
    assert traced.receive_count >= moto_stack.local.max_receive_count  # (+1: this peek)
    assert by_image[""].reason.startswith("poison message: message body is not JSON")
    tags = moto_stack.client("s3").get_object_tagging(Bucket=info.images_bucket, Key=key)
    assert ingest.FAILURE_TAG in {tag["Key"] for tag in tags["TagSet"]}
