"""Exactly-once outcomes over at-least-once delivery: however often an upload is delivered
or its execution retried, it gives 1 record, 1 alert and 1 lake row."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MotoStack
from tests.functional.conftest import (
    alerts,
    emf_metrics,
    history_states,
    lake_rows,
    queue_bodies,
    records,
    redrive_workflow,
    sqs_message,
    stream_records,
    wait_for_execution,
    wait_for_executions,
    wait_until_idle,
)


def _anomaly(samples_dir: Path) -> bytes:
    return sorted((samples_dir / "test" / "anomaly").glob("*.jpg"))[0].read_bytes()


def _to_lake(stack: MotoStack) -> dict[str, Any]:
    import app

    return app.to_lake({"Records": stream_records(stack)}, None)


def _assert_exactly_once(stack: MotoStack) -> None:
    [item] = records(stack)
    assert len(alerts(stack)) == 1
    assert _to_lake(stack) == {"batchItemFailures": []}
    rows = lake_rows(stack)
    assert [row["ImageId"] for row in rows] == [item["image_id"]["S"]]


def test_the_same_s3_event_in_one_batch_and_again_later(moto_stack: MotoStack,
                                                        samples_dir: Path) -> None:
    import app

    key = moto_stack.upload(_anomaly(samples_dir))
    first = sqs_message(moto_stack, key, "m-1")
    second = sqs_message(moto_stack, key, "m-2")  # S3 may notify twice: two messages
    assert app.ingest({"Records": [first, second]}, None) == {"batchItemFailures": []}
    wait_for_executions(moto_stack, 1)
    assert app.ingest({"Records": [sqs_message(moto_stack, key, "m-3")]}, None) == {
        "batchItemFailures": []}

    wait_until_idle(moto_stack)
    _assert_exactly_once(moto_stack)


def test_a_redelivered_message_after_a_crash(moto_stack: MotoStack, samples_dir: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The handler starts the execution, then dies before the message is deleted: SQS
    delivers the same message again after the visibility timeout."""
    import app

    key = moto_stack.upload(_anomaly(samples_dir))
    message = sqs_message(moto_stack, key)
    crashes = iter([RuntimeError("the Lambda ran out of time")])

    def crash_once(outcome: Any, namespace: str) -> None:
        error = next(crashes, None)
        if error:
            raise error

    monkeypatch.setattr(app, "emit_outcome", crash_once)
    assert app.ingest({"Records": [message]}, None) == {
        "batchItemFailures": [{"itemIdentifier": message["messageId"]}]}
    assert app.ingest({"Records": [message]}, None) == {"batchItemFailures": []}

    # The second start is refused as a duplicate name, or runs and finds the record.
    assert all(e["status"] == "SUCCEEDED" for e in wait_until_idle(moto_stack))
    _assert_exactly_once(moto_stack)


def test_a_retried_execution_does_not_record_or_alert_again(moto_stack: MotoStack,
                                                            samples_dir: Path) -> None:
    """An execution started again for a recorded upload (a redrive, or a Standard workflow
    retried under a new name: each start has its own writer token) ends in AlreadyRecorded,
    without an alert."""
    import app

    from pipeline.workflow import with_writer

    key = moto_stack.upload(_anomaly(samples_dir))
    app.ingest({"Records": [sqs_message(moto_stack, key)]}, None)
    [first] = wait_for_executions(moto_stack, 1)
    sfn = moto_stack.client("stepfunctions")
    payload = json.loads(sfn.describe_execution(executionArn=first["executionArn"])["input"])
    for attempt in range(2):
        sfn.start_execution(stateMachineArn=moto_stack.info.state_machine_arn,
                            name=f"retry-{attempt}", input=json.dumps(with_writer(payload)))

    done = wait_for_executions(moto_stack, 3)
    retried = [e for e in done if e["name"].startswith("retry-")]
    assert len(retried) == 2
    for execution in retried:
        states = history_states(moto_stack, execution["executionArn"])
        assert "AlreadyRecorded" in states and "PublishAlert" not in states, states
    _assert_exactly_once(moto_stack)


def test_a_second_run_of_the_same_input_never_wipes_a_review(moto_stack: MotoStack,
                                                              samples_dir: Path) -> None:
    """AWS may run an asynchronous EXPRESS execution twice with the same input (writer
    token included), which may write the record again; never once a person reviewed it."""
    import app

    from pipeline import reviews

    key = moto_stack.upload(_anomaly(samples_dir))
    app.ingest({"Records": [sqs_message(moto_stack, key)]}, None)
    [first] = wait_for_executions(moto_stack, 1)
    sfn = moto_stack.client("stepfunctions")
    payload = json.loads(sfn.describe_execution(executionArn=first["executionArn"])["input"])
    image_id = payload["record"]["image_id"]
    reviews.record_review(moto_stack.info.table, image_id, "normal", "glare", reviewer="qa")
    sfn.start_execution(stateMachineArn=moto_stack.info.state_machine_arn, name="again",
                        input=json.dumps(payload))
    [again] = [e for e in wait_for_executions(moto_stack, 2) if e["name"] == "again"]
    states = history_states(moto_stack, again["executionArn"])
    assert "AlreadyRecorded" in states and "PublishAlert" not in states, states
    item = moto_stack.client("dynamodb").get_item(
        TableName=moto_stack.info.table, Key={"image_id": {"S": image_id}})["Item"]
    assert item["review"]["M"]["label"] == {"S": "normal"}


def test_concurrent_deliveries_race_to_one_record(moto_stack: MotoStack,
                                                  samples_dir: Path) -> None:
    """Two executions for the same image at the same time: the conditional put lets one
    write (and alert); the other ends in AlreadyRecorded."""
    key = moto_stack.upload(_anomaly(samples_dir))
    from pipeline import ingest
    from pipeline.detector import load_detector
    from pipeline.settings import current

    settings = current()
    [ref] = list(ingest.object_refs(sqs_message(moto_stack, key)["body"]))
    record = ingest.analyse(ref, settings, load_detector(
        settings.detector_backend, settings.model_uri))
    alert = ingest.decide(record, ingest.alert_policy(settings, record.line_id))
    sfn = moto_stack.client("stepfunctions")
    for name in ("racer-a", "racer-b"):  # two deliveries: each start has its own writer
        payload = json.dumps(ingest.execution_input(record.with_changes(
            alert_reason=alert.reason), alert, ref))
        sfn.start_execution(stateMachineArn=moto_stack.info.state_machine_arn, name=name,
                            input=payload)

    done = wait_for_executions(moto_stack, 2)
    endings = sorted("AlreadyRecorded" in history_states(moto_stack, e["executionArn"])
                     for e in done)
    assert endings == [False, True]
    _assert_exactly_once(moto_stack)


def _one_form_used_twice(stack: MotoStack, samples_dir: Path) -> tuple[str, list[Any]]:
    """Two photos written through one upload form: the key and both writes' refs, with
    their versions. The ingest queue is emptied of the bucket's own notifications of
    them, which name the same objects (moto's leave the version out)."""
    from pipeline import ingest
    from pipeline.dlq import receive_all
    from pipeline.uploads import parse_key

    anomalies = sorted((samples_dir / "test" / "anomaly").glob("*.jpg"))
    key = stack.upload(anomalies[0].read_bytes())
    bodies = [sqs_message(stack, key)["body"]]
    stack.upload(anomalies[1].read_bytes(), key=key)
    bodies.append(sqs_message(stack, key)["body"])
    refs = [ref for body in bodies for ref in ingest.object_refs(body)]
    sqs = stack.client("sqs")
    notified = [(ref.key, ref.etag, ref.size) for message in receive_all(
        sqs, stack.info.queue_url) for ref in ingest.object_refs(message["Body"])]
    assert sorted(notified) == sorted((ref.key, ref.etag, ref.size) for ref in refs)
    sqs.purge_queue(QueueUrl=stack.info.queue_url)
    upload_id = parse_key(key).upload_id  # type: ignore[union-attr]
    return upload_id, refs


def _ingest_requeued(stack: MotoStack, expected: Any) -> None:
    """Hand what the workflow sent back to the ingest queue to the ingest handler. The
    photo's first judgement was counted, so this one emits no metrics."""
    import app

    from pipeline import ingest

    sqs, queue_url = stack.client("sqs"), stack.info.queue_url
    [message] = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    assert list(ingest.object_refs(message["Body"])) == [
        dataclasses.replace(expected, requeued=True)]
    emitted = io.StringIO()
    with contextlib.redirect_stdout(emitted):
        assert app.ingest({"Records": [{"messageId": message["MessageId"], "receiptHandle":
                                        message["ReceiptHandle"], "body": message["Body"]}]},
                          None) == {"batchItemFailures": []}
    assert emf_metrics(emitted.getvalue()) == []
    wait_until_idle(stack)


def test_two_photos_through_one_form_at_once_are_both_recorded(moto_stack: MotoStack,
                                                                samples_dir: Path) -> None:
    """An upload form used twice, its two writes handled at once in different invocations:
    both read no record, so both are judged under the upload's id. The workflow keeps the
    first put and sends the other photo's notification back to the ingest queue, where it
    is judged under an id of its own: two records, two alerts, nothing lost."""
    from chalicelib.telemetry import emit_outcome

    from pipeline import ingest
    from pipeline.detector import load_detector
    from pipeline.metrics import PROCESSED
    from pipeline.settings import current

    upload_id, refs = _one_form_used_twice(moto_stack, samples_dir)
    settings = current()
    detector = load_detector(settings.detector_backend, settings.model_uri)
    emitted = io.StringIO()
    with contextlib.redirect_stdout(emitted):
        for ref in refs:  # each invocation read "no record" before the other's put
            emit_outcome(ingest.process(ref, settings, detector,
                                        ingest.Recorded({upload_id: None})),
                         settings.metrics_namespace)
    # both judgements counted; the requeued one (below) adds none: two photos, two counts
    assert sum(point["Value"] for point in emf_metrics(emitted.getvalue())
               if point["MetricName"] == PROCESSED and not point.get("Dimensions")) == 2
    done = wait_for_executions(moto_stack, 2)
    endings = sorted(history_states(moto_stack, e["executionArn"])[-1] for e in done)
    assert endings == ["Alerted", "Requeued"]
    [winner] = records(moto_stack)
    [loser] = [ref for ref in refs if ref.idempotency_key != winner["idempotency_key"]["S"]]

    _ingest_requeued(moto_stack, loser)
    items = {item["image_id"]["S"]: item for item in records(moto_stack)}
    rewritten = ingest.rewritten_image_id(upload_id, loser)
    assert set(items) == {upload_id, rewritten}
    assert items[rewritten]["image_version"]["S"] == loser.version_id
    assert items[upload_id]["image_version"]["S"] != loser.version_id
    assert len(alerts(moto_stack)) == 2


@pytest.mark.parametrize("parked_by", ["failed put", "failed put, before the mark",
                                       "older ingest code"])
def test_a_parked_photo_whose_id_another_took_is_sent_back_by_the_redrive(
        moto_stack: MotoStack, samples_dir: Path, parked_by: str) -> None:
    """The second photo's execution was parked on the failure queue while the first photo
    was recorded under the upload's id: its put failed for good (its notification marked
    requeued, or, parked by older ingest code, not), or it was started by ingest code
    older than the requeue, whose input has no notification to send back (`NoRequeue`).
    The redrive's execution finds another photo's record and sends this one back, marked,
    to be judged on its own (rebuilding the notification from the image)."""
    import app

    from pipeline import ingest, workflow
    from pipeline.detector import load_detector
    from pipeline.settings import current

    upload_id, (first, second) = _one_form_used_twice(moto_stack, samples_dir)
    assert app.ingest({"Records": [{"messageId": "first", "receiptHandle": "r", "body":
                                    ingest.notification_body(first)}]}, None) == {
        "batchItemFailures": []}
    wait_until_idle(moto_stack)
    settings = current()
    record = ingest.analyse(second, settings, load_detector(
        settings.detector_backend, settings.model_uri), upload_id)
    alert = ingest.decide(record, ingest.alert_policy(settings, record.line_id))
    state = ingest.execution_input(record, alert, second)
    info, client = moto_stack.info, moto_stack.client
    if parked_by.startswith("failed put"):
        if parked_by.endswith("before the mark"):
            state[workflow.REQUEUE] = ingest.notification_body(second)
        client("sqs").send_message(QueueUrl=info.failure_queue_url, MessageBody=json.dumps(
            state | {"error": {"Error": "DynamoDB.ProvisionedThroughputExceededException"}}))
    else:
        del state[workflow.REQUEUE]
        client("stepfunctions").start_execution(
            stateMachineArn=info.state_machine_arn, name="from-older-code",
            input=json.dumps(state))
        wait_until_idle(moto_stack)
        old = wait_for_execution(moto_stack, "from-older-code")
        assert history_states(moto_stack, old["executionArn"])[-4:] == [
            "OtherPhoto", "NoRequeue", "SendToFailureQueue", "Failed"]
        [parked] = queue_bodies(moto_stack, info.failure_queue_url)
        assert parked["error"]["Error"] == workflow.NO_REQUEUE

    result = redrive_workflow(moto_stack)
    assert (result.moved, result.executions_started, result.failed) == (1, 1, [])
    wait_until_idle(moto_stack)
    _ingest_requeued(moto_stack, second)
    assert {item["image_id"]["S"] for item in records(moto_stack)} == {
        upload_id, ingest.rewritten_image_id(upload_id, second)}
    assert len(alerts(moto_stack)) == 2


def test_a_parked_photo_without_its_notification_whose_image_is_gone_stays_parked(
        moto_stack: MotoStack, samples_dir: Path) -> None:
    """The redrive cannot rebuild the notification of a photo whose version was deleted
    for good: the dead letter stays, with the reason, for a person to decide."""
    from pipeline import ingest, workflow
    from pipeline.alerts import AlertDecision
    from pipeline.detector import load_detector
    from pipeline.settings import current

    upload_id, (first, second) = _one_form_used_twice(moto_stack, samples_dir)
    settings = current()
    detector = load_detector(settings.detector_backend, settings.model_uri)
    ingest.process(first, settings, detector)
    wait_until_idle(moto_stack)
    record = ingest.analyse(second, settings, detector, upload_id)
    state = ingest.execution_input(record, AlertDecision(send=False), second)
    del state[workflow.REQUEUE]
    info, client = moto_stack.info, moto_stack.client
    client("sqs").send_message(QueueUrl=info.failure_queue_url, MessageBody=json.dumps(
        state | {"error": {"Error": workflow.NO_REQUEUE}}))
    client("s3").delete_object(Bucket=second.bucket, Key=second.key,
                               VersionId=second.version_id)

    result = redrive_workflow(moto_stack)
    assert (result.moved, result.executions_started) == (0, 0)
    [reason] = result.reasons.values()
    assert reason.startswith("HeadObject refused: 404")
    [kept] = queue_bodies(moto_stack, info.failure_queue_url)
    assert kept["record"]["image_id"] == upload_id


def test_a_record_deleted_after_it_refused_the_put_is_put_again(
        moto_stack: MotoStack, samples_dir: Path) -> None:
    """The record that refused the put is gone when the workflow reads it (deleted by a
    person meanwhile): the put is tried again, and this photo is recorded and alerted."""
    import app
    import boto3

    from pipeline import ingest
    from pipeline.detector import load_detector
    from pipeline.settings import current

    upload_id, (first, second) = _one_form_used_twice(moto_stack, samples_dir)
    assert app.ingest({"Records": [{"messageId": "first", "receiptHandle": "r", "body":
                                    ingest.notification_body(first)}]}, None) == {
        "batchItemFailures": []}
    wait_until_idle(moto_stack)
    assert len(alerts(moto_stack)) == 1
    settings = current()
    record = ingest.analyse(second, settings, load_detector(
        settings.detector_backend, settings.model_uri), upload_id)
    alert = ingest.decide(record, ingest.alert_policy(settings, record.line_id))

    # moto's engine calls DynamoDB through the default session; delete from another one
    deleter = boto3.Session().client("dynamodb", region_name=moto_stack.info.region)
    deleted: list[str] = []

    def delete_first(params: dict[str, Any], **_: Any) -> None:
        if not deleted:
            deleted.append(upload_id)
            deleter.delete_item(TableName=moto_stack.info.table,
                                Key={"image_id": {"S": upload_id}})

    session = boto3._get_default_session()
    session.events.register_first("before-call.dynamodb.GetItem", delete_first)
    try:
        moto_stack.client("stepfunctions").start_execution(
            stateMachineArn=moto_stack.info.state_machine_arn, name="after-a-delete",
            input=json.dumps(ingest.execution_input(record, alert, second)))
        wait_until_idle(moto_stack)
    finally:
        session.events.unregister("before-call.dynamodb.GetItem", delete_first)
    run = wait_for_execution(moto_stack, "after-a-delete")
    assert history_states(moto_stack, run["executionArn"])[:4] == [
        "RecordResult", "ReadRecord", "SameUpload", "RecordResult"]
    assert run["status"] == "SUCCEEDED" and deleted == [upload_id]
    [item] = records(moto_stack)
    assert item["idempotency_key"]["S"] == second.idempotency_key
    assert len(alerts(moto_stack)) == 1
    assert queue_bodies(moto_stack, moto_stack.info.queue_url) == []  # nothing sent back


def test_the_lake_gets_one_row_per_insert_only(moto_stack: MotoStack,
                                               samples_dir: Path) -> None:
    """A review (MODIFY) of a stored record does not add a second lake row."""
    import app

    key = moto_stack.upload(_anomaly(samples_dir))
    app.ingest({"Records": [sqs_message(moto_stack, key)]}, None)
    wait_for_executions(moto_stack, 1)
    [item] = records(moto_stack)
    moto_stack.client("dynamodb").update_item(
        TableName=moto_stack.info.table, Key={"image_id": item["image_id"]},
        UpdateExpression="SET reviewed = :t", ExpressionAttributeValues={":t": {"BOOL": True}})
    events = stream_records(moto_stack)
    assert [e["eventName"] for e in events] == ["INSERT", "MODIFY"]
    assert app.to_lake({"Records": events}, None) == {"batchItemFailures": []}
    assert len(lake_rows(moto_stack)) == 1
