"""`linesight dlq list|redrive` against in-process moto: every dead letter shows the image
it refers to and why it failed, and a redrive puts it back in the flow exactly once."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from tests.conftest import MotoStack
from tests.functional.conftest import (
    alerts,
    lake_rows,
    queue_bodies,
    records,
    sqs_message,
    wait_until_idle,
)
from tests.functional.results_stack import upload_ref


def _anomaly(samples_dir: Path) -> bytes:
    return sorted((samples_dir / "test" / "anomaly").glob("*.jpg"))[0].read_bytes()


def dlq_cli(state: Path | None) -> Any:
    """`linesight dlq ARGS --state STATE` (no --state for None), run in this process."""
    from scripts import cli_dlq

    app = typer.Typer()
    cli_dlq.register(app)

    @app.callback()
    def _root() -> None:
        pass

    runner = CliRunner()
    return lambda *args: runner.invoke(
        app, ["dlq", *args, *(["--state", str(state)] if state else [])])


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline import aws
    from scripts import cli_dlq

    monkeypatch.setenv("COLUMNS", "250")
    # the console read COLUMNS when its module was first imported, maybe by another test
    monkeypatch.setattr(cli_dlq.console, "width", 250)
    # In-process moto does not route botocore's account-ID stream endpoints.
    monkeypatch.setenv("AWS_ACCOUNT_ID_ENDPOINT_MODE", "disabled")
    aws.reset()


@pytest.fixture
def cli(moto_stack: MotoStack, tmp_path: Path, cli_env: None) -> Any:
    state = tmp_path / "local.json"
    state.write_text(json.dumps(asdict(moto_stack.info)))  # in-process: no endpoint to set
    return dlq_cli(state)


def test_an_ingest_dead_letter_names_its_image_and_reason_and_redrives(
        cli: Any, moto_stack: MotoStack, samples_dir: Path) -> None:
    from pipeline import ingest

    info = moto_stack.info
    sqs = moto_stack.client("sqs")
    key = moto_stack.upload(_anomaly(samples_dir))
    body = sqs_message(moto_stack, key)["body"]
    [ref] = list(ingest.object_refs(body))
    ingest.note_failure(ref, TimeoutError("read timed out"))  # what the handler leaves
    sqs.send_message(QueueUrl=info.dlq_url, MessageBody=body)  # what SQS's redrive does

    listed = cli("list", "--queue", "ingest")
    assert listed.exit_code == 0, listed.output
    assert key in listed.stdout and "TimeoutError: read timed out" in listed.stdout
    assert "line-1" in listed.stdout and "cam-1" in listed.stdout
    assert len(queue_bodies(moto_stack, info.dlq_url)) == 1  # listing leaves it queued

    sqs.purge_queue(QueueUrl=info.queue_url)
    moved = cli("redrive", "--queue", "ingest")
    assert moved.exit_code == 0, moved.output
    assert "ingest: 1 redriven" in moved.stdout
    assert queue_bodies(moto_stack, info.dlq_url) == []
    assert queue_bodies(moto_stack, info.queue_url) == [json.loads(body)]


def test_a_parked_alert_is_listed_and_redriven_once(cli: Any, moto_stack: MotoStack,
                                                    samples_dir: Path,
                                                    fast_retries: list[float]) -> None:
    import app
    import boto3

    session = boto3._get_default_session()

    def down(**_: Any) -> Any:
        from types import SimpleNamespace

        return (SimpleNamespace(status_code=500, headers={}),
                {"Error": {"Code": "InternalError", "Message": "SNS is down"},
                 "ResponseMetadata": {"HTTPStatusCode": 500, "RequestId": "x"}})

    session.events.register_first("before-call.sns.Publish", down)
    try:
        key = moto_stack.upload(_anomaly(samples_dir))
        app.ingest({"Records": [sqs_message(moto_stack, key)]}, None)
        wait_until_idle(moto_stack)
    finally:
        session.events.unregister("before-call.sns.Publish", down)

    listed = cli("list", "--queue", "workflow")
    assert listed.exit_code == 0, listed.output
    assert "alert not sent: SNS.InternalError" in listed.stdout
    assert key in listed.stdout

    redriven = cli("redrive", "--queue", "workflow")
    assert redriven.exit_code == 0, redriven.output
    assert "1 alerts published" in redriven.stdout
    assert len(alerts(moto_stack)) == 1
    assert "no dead letters" in cli("list", "--queue", "workflow").stdout
    # A second redrive finds nothing: the alert is not sent twice.
    assert cli("redrive", "--queue", "workflow").exit_code == 0
    assert alerts(moto_stack) == []
    assert len(records(moto_stack)) == 1


def test_a_failed_lake_batch_is_listed_and_resent(cli: Any, moto_stack: MotoStack,
                                                  samples_dir: Path) -> None:
    import app

    from scripts.event_sources import StreamPoller
    from tests.functional.conftest import streams_client

    key = moto_stack.upload(_anomaly(samples_dir))
    app.ingest({"Records": [sqs_message(moto_stack, key)]}, None)
    wait_until_idle(moto_stack)
    arn = moto_stack.client("dynamodb").describe_table(
        TableName=moto_stack.info.table)["Table"]["LatestStreamArn"]
    streams = streams_client()

    def firehose_down(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return {"batchItemFailures": [{"itemIdentifier": r["dynamodb"]["SequenceNumber"]}
                                      for r in event["Records"]]}

    poller = StreamPoller(streams, arn, firehose_down, "to-lake", stop=None,  # type: ignore[arg-type]
                          sqs=moto_stack.client("sqs"),
                          on_failure_url=moto_stack.info.lake_failure_queue_url,
                          max_retries=0)
    assert poller.poll_once() == 1
    assert lake_rows(moto_stack) == []

    listed = cli("list", "--queue", "lake")
    assert listed.exit_code == 0, listed.output
    assert "RetryAttemptsExhausted: 1 stream records" in listed.stdout

    redriven = cli("redrive", "--queue", "lake")
    assert redriven.exit_code == 0, redriven.output
    assert "1 lake rows sent" in redriven.stdout
    [row] = lake_rows(moto_stack)
    assert key.endswith(row["ImageId"] + ".jpg")


def test_lake_rows_the_handler_parked_are_listed_and_resent(cli: Any,
                                                           moto_stack: MotoStack) -> None:
    """Rows Firehose refused every time, parked by `to_lake` as data: the redrive sends
    them without the stream."""
    from pipeline import analytics
    from pipeline.records import ResultRecord, parse_time

    at = parse_time("2026-11-24T10:00:00+00:00")
    rows = [analytics.lake_row(ResultRecord(f"{i:032x}", "line-1", "cam-1", f"s3://b/{i}.jpg",
                                            at, at, "OK"), "us-east-1") for i in (7, 8)]
    analytics.park_rows(moto_stack.info.lake_failure_queue_url, rows,
                        "Firehose refused them every time")

    listed = cli("list", "--queue", "lake")
    assert listed.exit_code == 0, listed.output
    said = " ".join(listed.stdout.split())
    assert "Firehose refused them every time: 2 lake rows" in said
    assert "s3://b/7.jpg and 1 more" in said

    redriven = cli("redrive", "--queue", "lake")
    assert redriven.exit_code == 0, redriven.output
    assert "2 lake rows sent" in redriven.stdout
    assert sorted(row["ImageId"] for row in lake_rows(moto_stack)) == [f"{7:032x}",
                                                                       f"{8:032x}"]
    assert "no dead letters" in cli("list", "--queue", "lake").stdout


def test_a_redrive_firehose_refuses_in_part_never_resends_what_landed(
        moto_stack: MotoStack, cli_env: None) -> None:
    """Firehose takes two of three parked rows: those two are in the lake once, the third
    is parked again on its own, and the next redrive sends only it."""
    from pipeline import analytics, dlq
    from pipeline.records import ResultRecord, parse_time

    at = parse_time("2026-11-24T10:00:00+00:00")
    rows = [analytics.lake_row(ResultRecord(f"{i:032x}", "line-1", "cam-1", f"s3://b/{i}.jpg",
                                            at, at, "OK"), "us-east-1") for i in (1, 2, 3)]
    queue = moto_stack.info.lake_failure_queue_url
    analytics.park_rows(queue, rows, "Firehose refused them every time")
    refusing = {f"{3:032x}"}

    def send(stream: str, pairs: list[tuple[str, dict[str, Any]]]) -> list[str]:
        accepted = [(row_id, row) for row_id, row in pairs if row["ImageId"] not in refusing]
        assert analytics.send_rows(stream, accepted) == []
        return [row_id for row_id, row in pairs if row["ImageId"] in refusing]

    def redrive() -> dlq.RedriveResult:
        return dlq.redrive_lake(moto_stack.client("sqs"), queue, streams=None,
                                firehose_stream=moto_stack.info.firehose_stream,
                                region="us-east-1", send=send)

    first = redrive()
    assert (first.lake_rows_sent, first.refused, first.failed) == (2, 1, [])
    [kept] = queue_bodies(moto_stack, queue)
    assert [row["ImageId"] for row in kept[analytics.LAKE_ROWS]] == [f"{3:032x}"]
    assert kept["reason"] == "Firehose refused them again on redrive"

    refused_again = redrive()  # nothing landed: the message stays as it is
    assert (refused_again.lake_rows_sent, len(refused_again.failed)) == (0, 1)

    refusing.clear()
    last = redrive()
    assert (last.lake_rows_sent, last.refused, last.failed) == (1, 0, [])
    assert sorted(row["ImageId"] for row in lake_rows(moto_stack)) == [
        f"{i:032x}" for i in (1, 2, 3)]
    assert queue_bodies(moto_stack, queue) == []


def test_a_stream_batch_firehose_refuses_is_kept_as_rows_not_as_stream_positions(
        moto_stack: MotoStack, cli_env: None) -> None:
    """The stream keeps records 24 hours, so a batch redriven while Firehose refuses
    everything becomes a dead letter of the rows themselves: the batch's records that
    are lake rows (a new result and its review, not a bookkeeping change)."""
    from pipeline import analytics, dlq, reviews, workflow
    from pipeline.records import ResultRecord, parse_time
    from tests.functional.conftest import streams_client

    at = parse_time("2026-11-24T10:00:00+00:00")
    ddb, table = moto_stack.client("dynamodb"), moto_stack.info.table
    for image_id in ("c" * 32, "d" * 32):
        ddb.put_item(TableName=table, Item=ResultRecord(
            image_id, "line-1", "cam-1", f"s3://b/{image_id}.jpg", at, at, "OK").to_item())
    reviews.record_review(table, "c" * 32, "normal", "", reviewer="qa")
    ddb.update_item(TableName=table, Key={"image_id": {"S": "d" * 32}},
                    UpdateExpression=f"SET {workflow.ALERT_REDRIVEN} = :at",
                    ExpressionAttributeValues={":at": {"S": "2026-11-24T11:00:00Z"}})
    streams = streams_client()
    arn = ddb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    [shard] = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"],
                                          ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    records = streams.get_records(ShardIterator=iterator)["Records"]
    assert [r["eventName"] for r in records] == ["INSERT", "INSERT", "MODIFY", "MODIFY"]
    queue = moto_stack.info.lake_failure_queue_url
    moto_stack.client("sqs").send_message(QueueUrl=queue, MessageBody=json.dumps({
        "DDBStreamBatchInfo": {"shardId": shard["ShardId"], "streamArn": arn,
                               "startSequenceNumber": records[0]["dynamodb"]["SequenceNumber"],
                               "endSequenceNumber": records[-1]["dynamodb"]["SequenceNumber"],
                               "batchSize": len(records)}}))

    result = dlq.redrive_lake(moto_stack.client("sqs"), queue, streams=streams,
                              firehose_stream=moto_stack.info.firehose_stream,
                              region="us-east-1",
                              send=lambda stream, pairs: [row_id for row_id, _ in pairs])

    assert (result.lake_rows_sent, result.refused, result.failed) == (0, 3, [])
    [kept] = queue_bodies(moto_stack, queue)
    assert [(row["ImageId"], row["ReviewLabel"]) for row in kept[analytics.LAKE_ROWS]] == [
        ("c" * 32, ""), ("d" * 32, ""), ("c" * 32, "normal")]


def test_stream_records_that_cannot_be_read_are_listed_kept_and_resent_once_readable(
        cli: Any, moto_stack: MotoStack) -> None:
    """Parked by `to_lake` as the stream carried them: a redrive reads them again, so one
    the code now reads (here, one an older version could not) goes to the lake, and one
    it still cannot read stays, with its reason."""
    from pipeline import analytics
    from pipeline.records import ResultRecord, parse_time

    at = parse_time("2026-11-24T10:00:00+00:00")
    readable = ResultRecord("a" * 32, "line-1", "cam-1", "s3://b/a.jpg", at, at, "OK").to_item()
    broken = ResultRecord("b" * 32, "line-2", "cam-2", "s3://b/b.jpg", at, at, "OK").to_item()
    del broken["captured_at"]
    queue = moto_stack.info.lake_failure_queue_url
    analytics.park_rows(queue, [readable], "cannot be read as a result record: KeyError('x')",
                        kind=analytics.STREAM_IMAGES)
    analytics.park_rows(queue, [broken],
                        "cannot be read as a result record: KeyError('captured_at')",
                        kind=analytics.STREAM_IMAGES)

    said = " ".join(cli("list", "--queue", "lake").stdout.split())
    assert ("1 stream records that cannot be read as a result record: "
            "KeyError('captured_at')") in said
    assert "s3://b/b.jpg" in said and "line-2" in said

    redriven = cli("redrive", "--queue", "lake")
    assert redriven.exit_code == 1, redriven.output
    assert "1 lake rows sent" in redriven.stdout
    assert "1 failed (left in the queue)" in redriven.stdout
    assert [row["ImageId"] for row in lake_rows(moto_stack)] == ["a" * 32]
    [left] = queue_bodies(moto_stack, queue)
    assert left["StreamImages"][0]["image_id"] == {"S": "b" * 32}


def test_a_failed_lake_batch_with_an_unreadable_record_sends_the_rest(
        cli: Any, moto_stack: MotoStack, samples_dir: Path) -> None:
    """A stream batch Lambda gave up on, one of whose records cannot be read as a result:
    the redrive sends the others and keeps that one as a dead letter of its own."""
    import app

    from pipeline.records import ResultRecord, parse_time
    from scripts.event_sources import StreamPoller
    from tests.functional.conftest import streams_client

    key = moto_stack.upload(_anomaly(samples_dir))
    app.ingest({"Records": [sqs_message(moto_stack, key)]}, None)
    wait_until_idle(moto_stack)
    at = parse_time("2026-11-24T10:00:00+00:00")
    broken = ResultRecord("b" * 32, "line-2", "cam-2", "s3://b/b.jpg", at, at, "OK").to_item()
    del broken["captured_at"]
    ddb = moto_stack.client("dynamodb")
    ddb.put_item(TableName=moto_stack.info.table, Item=broken)
    arn = ddb.describe_table(TableName=moto_stack.info.table)["Table"]["LatestStreamArn"]

    def firehose_down(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return {"batchItemFailures": [{"itemIdentifier": r["dynamodb"]["SequenceNumber"]}
                                      for r in event["Records"]]}

    poller = StreamPoller(streams_client(), arn, firehose_down, "to-lake", stop=None,  # type: ignore[arg-type]
                          sqs=moto_stack.client("sqs"),
                          on_failure_url=moto_stack.info.lake_failure_queue_url,
                          max_retries=0)
    assert poller.poll_once() == 2

    redriven = cli("redrive", "--queue", "lake")
    assert redriven.exit_code == 1, redriven.output  # one is still a dead letter: alarm on
    said = " ".join(redriven.stdout.split())
    assert "1 lake rows sent" in said
    assert "1 stream records that cannot be read kept as their own dead letter" in said
    [row] = lake_rows(moto_stack)
    assert key.endswith(row["ImageId"] + ".jpg")
    [kept] = queue_bodies(moto_stack, moto_stack.info.lake_failure_queue_url)
    assert kept["StreamImages"] == [broken]
    assert kept["reason"].startswith("cannot be read as a result record: ")
    assert "no captured_at" in kept["reason"]


def _bodies(stack: MotoStack, url: str) -> list[str]:
    """Every message body in a queue as it is (poison ones are not JSON), left in it."""
    from pipeline.dlq import receive_all, release

    sqs = stack.client("sqs")
    messages = receive_all(sqs, url)
    release(sqs, url, messages)
    return sorted(m["Body"] for m in messages)


def _workflow_failure(image_id: str, cause: str) -> str:
    """What the state machine's Catch puts on the failure queue: the execution's input and
    its error."""
    from pipeline import ingest
    from pipeline.alerts import AlertDecision
    from pipeline.records import ResultRecord, parse_time

    at = parse_time("2026-11-24T10:00:00+00:00")
    record = ResultRecord(image_id, "line-1", "cam-1", f"s3://b/{image_id}.jpg", at, at, "OK")
    return json.dumps(ingest.execution_input(record, AlertDecision(send=False),
                                             upload_ref(record))
                      | {"error": {"Error": "States.TaskFailed", "Cause": cause}})


def test_stored_text_is_listed_as_it_is_and_each_failures_reason_is_told(
        moto_stack: MotoStack, tmp_path: Path, cli_env: None) -> None:
    """A Cause holding `[/]` or `[red]` is text, not markup (it crashed `dlq list`); a
    redrive that cannot finish a message says why, once per reason, and leaves a poison
    message (not an execution's input) where it is."""
    info = moto_stack.info
    sqs = moto_stack.client("sqs")
    for n, cause in enumerate(["DynamoDB said [/] no", "[red]x[/red]"]):
        sqs.send_message(QueueUrl=info.failure_queue_url,
                         MessageBody=_workflow_failure(f"{n:032x}", cause))
    sqs.send_message(QueueUrl=info.failure_queue_url, MessageBody="not json")
    state = tmp_path / "local.json"
    gone = info.state_machine_arn.rsplit(":", 1)[0] + ":deleted-meanwhile"
    state.write_text(json.dumps(asdict(info) | {"state_machine_arn": gone}))
    cli = dlq_cli(state)
    before = _bodies(moto_stack, info.failure_queue_url)

    listed = cli("list", "--queue", "workflow")
    assert listed.exit_code == 0, listed.output
    said = " ".join(listed.stdout.split())
    assert "(DynamoDB said [/] no)" in said and "([red]x[/red])" in said
    assert "not a workflow failure (unreadable input)" in said

    redriven = cli("redrive", "--queue", "workflow")
    assert redriven.exit_code == 1, redriven.output
    said = " ".join(redriven.stdout.split())
    assert "workflow: 0 redriven, 2 failed (left in the queue)" in said
    assert "1 poison messages left in the queue" in said
    assert ("2 failed: StartExecution refused: StateMachineDoesNotExist" in said), said
    assert "1 poison: not a workflow failure (unreadable input)" in said
    assert _bodies(moto_stack, info.failure_queue_url) == before


def test_an_ingest_poison_message_stays_in_the_dead_letter_queue(
        cli: Any, moto_stack: MotoStack, samples_dir: Path) -> None:
    """Sent back, it would only fail its way back: it stays, and the redrive says so. A
    message SQS will not take back stays too, with SQS's reason, visible at once."""
    from pipeline import dlq

    info = moto_stack.info
    sqs = moto_stack.client("sqs")
    key = moto_stack.upload(_anomaly(samples_dir))
    body = sqs_message(moto_stack, key)["body"]
    sqs.send_message(QueueUrl=info.dlq_url, MessageBody=body)
    sqs.send_message(QueueUrl=info.dlq_url, MessageBody="<html>not a notification</html>")
    sqs.purge_queue(QueueUrl=info.queue_url)

    gone = dlq.redrive_to_queue(sqs, info.dlq_url, info.queue_url + "-deleted-meanwhile")
    assert (gone.moved, len(gone.poison)) == (0, 1)
    [why] = gone.reasons.values()
    assert why.startswith("SendMessageBatch refused: "), why
    assert len(_bodies(moto_stack, info.dlq_url)) == 2  # both still there, and visible

    redriven = cli("redrive", "--queue", "ingest")

    assert redriven.exit_code == 1, redriven.output  # the queue is not empty: its alarm stays
    said = " ".join(redriven.stdout.split())
    assert "ingest: 1 redriven, 1 poison messages left in the queue" in said
    assert "`linesight dlq drop --poison --save FILE` takes them out" in said
    assert "1 poison: message body is not JSON" in said
    assert _bodies(moto_stack, info.dlq_url) == ["<html>not a notification</html>"]
    assert queue_bodies(moto_stack, info.queue_url) == [json.loads(body)]


def _saved(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_drop_poison_keeps_a_copy_and_leaves_every_other_dead_letter(
        cli: Any, moto_stack: MotoStack, samples_dir: Path, tmp_path: Path) -> None:
    info = moto_stack.info
    sqs = moto_stack.client("sqs")
    body = sqs_message(moto_stack, moto_stack.upload(_anomaly(samples_dir)))["body"]
    sqs.send_message(QueueUrl=info.dlq_url, MessageBody=body)
    sqs.send_message(QueueUrl=info.dlq_url, MessageBody="<html>not a notification</html>",
                     MessageAttributes={"from": {"DataType": "String", "StringValue": "x"},
                                        "blob": {"DataType": "Binary",
                                                 "BinaryValue": b"\x00\x01"}})
    sqs.send_message(QueueUrl=info.failure_queue_url,
                     MessageBody=_workflow_failure("0" * 32, "DynamoDB said no"))
    sqs.send_message(QueueUrl=info.lake_failure_queue_url, MessageBody="[1, 2]")
    saved = tmp_path / "kept" / "dropped.jsonl"

    dropped = cli("drop", "--poison", "--save", str(saved))

    assert dropped.exit_code == 0, dropped.output
    said = " ".join(dropped.stdout.split())
    assert "ingest: 1 dropped workflow: 0 dropped lake: 1 dropped" in said, said
    assert f"copies in {saved}" in said
    copies = {copy["queue"]: copy for copy in _saved(saved)}
    assert sorted(copies) == ["ingest", "lake"]
    assert copies["ingest"]["body"] == "<html>not a notification</html>"
    assert copies["ingest"]["message_attributes"]["from"]["StringValue"] == "x"
    # a binary attribute, as the SQS API writes it (json.dumps refused the bytes: traceback)
    assert copies["ingest"]["message_attributes"]["blob"]["BinaryValue"] == "AAE="
    [why] = copies["ingest"]["reasons"]
    assert why.startswith("poison message: message body is not JSON"), why
    assert copies["lake"]["body"] == "[1, 2]"
    assert int(copies["lake"]["attributes"]["ApproximateReceiveCount"]) >= 1
    assert _bodies(moto_stack, info.dlq_url) == [body]  # the real dead letter stays
    assert len(_bodies(moto_stack, info.failure_queue_url)) == 1
    assert _bodies(moto_stack, info.lake_failure_queue_url) == []


def test_drop_by_message_id_appends_and_names_what_it_did_not_find(
        cli: Any, moto_stack: MotoStack, samples_dir: Path, tmp_path: Path) -> None:
    """Any dead letter can be dropped by the id `dlq list` shows; a second drop appends."""
    info = moto_stack.info
    sqs = moto_stack.client("sqs")
    bodies = [sqs_message(moto_stack, moto_stack.upload(_anomaly(samples_dir)))["body"]
              for _ in range(2)]
    ids = [sqs.send_message(QueueUrl=info.dlq_url, MessageBody=body)["MessageId"]
           for body in bodies]
    listed = cli("list", "--queue", "ingest")
    assert all(message_id[:8] in listed.stdout for message_id in ids), listed.stdout
    saved = tmp_path / "dropped.jsonl"
    saved.write_text(json.dumps({"earlier": True}) + "\n")

    too_short = cli("drop", ids[0][:7], "--save", str(saved))
    assert too_short.exit_code == 2 and "at least 8 characters" in too_short.output

    dropped = cli("drop", ids[0][:8], "no-such-id", "--queue", "ingest", "--save", str(saved))

    assert dropped.exit_code == 1, dropped.output
    said = " ".join(dropped.stdout.split())
    assert "ingest: 1 dropped" in said and "not found: no-such-id" in said
    assert [copy.get("message_id") for copy in _saved(saved)] == [None, ids[0]]
    assert _saved(saved)[1]["body"] == bodies[0]
    assert _bodies(moto_stack, info.dlq_url) == [bodies[1]]


def test_an_id_that_fits_several_messages_drops_none(moto_stack: MotoStack) -> None:
    from pipeline import dlq

    info = moto_stack.info
    sqs = moto_stack.client("sqs")
    for body in ("a", "b"):
        sqs.send_message(QueueUrl=info.dlq_url, MessageBody=body)
    saved: list[dict[str, Any]] = []

    result = dlq.drop(sqs, info.dlq_url, "ingest", saved.extend, message_ids=[""])

    assert (result.ambiguous, result.dropped, saved) == ({""}, [], [])
    assert _bodies(moto_stack, info.dlq_url) == ["a", "b"]


def test_a_drop_that_cannot_save_deletes_nothing(
        cli: Any, moto_stack: MotoStack, tmp_path: Path) -> None:
    info = moto_stack.info
    moto_stack.client("sqs").send_message(QueueUrl=info.dlq_url, MessageBody="junk")
    blocker = tmp_path / "a-file"
    blocker.write_text("")

    dropped = cli("drop", "--poison", "--save", str(blocker / "dropped.jsonl"))

    assert dropped.exit_code == 1, dropped.output
    said = " ".join(dropped.output.split())
    assert "cannot save to" in said and "nothing was dropped from that queue" in said, said
    assert "Traceback" not in said
    assert _bodies(moto_stack, info.dlq_url) == ["junk"]  # still there, and visible


def test_a_lake_redrive_aws_refuses_says_why_in_one_line_without_tracebacks(
        moto_stack: MotoStack, tmp_path: Path, cli_env: None,
        caplog: pytest.LogCaptureFixture) -> None:
    """A Firehose stream that is gone is an expected AWS error: one log line each, and the
    message stays with its reason."""
    from pipeline import analytics
    from pipeline.records import ResultRecord, parse_time

    at = parse_time("2026-11-24T10:00:00+00:00")
    rows = [analytics.lake_row(ResultRecord(f"{i:032x}", "line-1", "cam-1", f"s3://b/{i}.jpg",
                                            at, at, "OK"), "us-east-1") for i in (1, 2)]
    info = moto_stack.info
    analytics.park_rows(info.lake_failure_queue_url, rows, "Firehose refused them every time")
    state = tmp_path / "local.json"
    state.write_text(json.dumps(asdict(info) | {"firehose_stream": "deleted-meanwhile"}))

    redriven = dlq_cli(state)("redrive", "--queue", "lake")

    assert redriven.exit_code == 1, redriven.output
    said = " ".join(redriven.stdout.split())
    assert "lake: 0 redriven, 1 failed (left in the queue)" in said
    assert "1 failed: Firehose refused its 2 rows again" in said
    warnings = [r for r in caplog.records if r.name == "pipeline.analytics"]
    assert warnings and all(r.exc_info is None for r in warnings)
    assert "ResourceNotFoundException" in warnings[0].getMessage()
    assert len(queue_bodies(moto_stack, info.lake_failure_queue_url)) == 1


def test_a_redrive_keeps_tracebacks_for_the_unexpected_and_names_a_refused_stream(
        moto_stack: MotoStack, cli_env: None, caplog: pytest.LogCaptureFixture) -> None:
    """A bug is logged with its traceback; a stream the caller may not read is said so,
    not taken for records gone after 24 hours."""
    from botocore.exceptions import ClientError

    from pipeline import analytics, dlq
    from pipeline.records import ResultRecord, parse_time

    class Refusing:
        def get_shard_iterator(self, **_: Any) -> Any:
            raise ClientError({"Error": {"Code": "AccessDeniedException",
                                         "Message": "not authorized"}}, "GetShardIterator")

    def broken(stream: str, pairs: Any) -> list[str]:
        raise RuntimeError("a bug")

    at = parse_time("2026-11-24T10:00:00+00:00")
    queue = moto_stack.info.lake_failure_queue_url
    sqs = moto_stack.client("sqs")
    analytics.park_rows(queue, [analytics.lake_row(ResultRecord(
        "a" * 32, "line-1", "cam-1", "s3://b/a.jpg", at, at, "OK"), "us-east-1")], "refused")
    sqs.send_message(QueueUrl=queue, MessageBody=json.dumps({"DDBStreamBatchInfo": {
        "shardId": "shard-1", "streamArn": "arn:aws:dynamodb:us-east-1:1:table/t/stream/x",
        "startSequenceNumber": "1", "endSequenceNumber": "2", "batchSize": 2}}))

    result = dlq.redrive_lake(sqs, queue, streams=Refusing(), firehose_stream="f",
                              region="us-east-1", send=broken)

    assert sorted(result.reasons.values()) == [
        "GetShardIterator refused: AccessDeniedException: not authorized",
        "unexpected RuntimeError: a bug"]
    [logged] = [r for r in caplog.records if r.name == "pipeline.dlq"]
    assert logged.exc_info is not None
    assert len(queue_bodies(moto_stack, queue)) == 2


def test_a_list_cut_at_its_limit_says_there_may_be_more(cli: Any, moto_stack: MotoStack
                                                         ) -> None:
    """An operator clearing an alarm read 2 rows and took them for the whole queue."""
    sqs = moto_stack.client("sqs")
    for n in range(3):
        sqs.send_message(QueueUrl=moto_stack.info.failure_queue_url,
                         MessageBody=_workflow_failure(f"{n:032x}", "SNS is down"))

    cut = cli("list", "--queue", "workflow", "--limit", "2")
    whole = cli("list", "--queue", "workflow", "--limit", "5")

    assert cut.exit_code == whole.exit_code == 0, cut.output + whole.output
    assert "2 shown of workflow: there may be more (--limit)" in " ".join(cut.stdout.split())
    assert "there may be more" not in whole.stdout


def test_a_redrive_cut_at_its_limit_says_so_and_a_queue_named_twice_is_read_once(
        cli: Any, moto_stack: MotoStack, samples_dir: Path) -> None:
    info = moto_stack.info
    sqs = moto_stack.client("sqs")
    body = sqs_message(moto_stack, moto_stack.upload(_anomaly(samples_dir)))["body"]
    for _ in range(3):
        sqs.send_message(QueueUrl=info.dlq_url, MessageBody=body)
    listed = cli("list", "--queue", "ingest", "--queue", "ingest")
    assert listed.exit_code == 0 and listed.stdout.count("│ ingest │") == 3, listed.output
    assert "receives: how often SQS handed the message out" in " ".join(listed.stdout.split())
    cut = cli("redrive", "--queue", "ingest", "--queue", "ingest", "--limit", "2")
    assert cut.exit_code == 0, cut.output
    said = " ".join(cut.stdout.split())
    assert said.count("redriven") == 1 and "ingest: 2 redriven" in said
    assert "2 read from ingest, the --limit: there may be more" in said


class _Unreachable:
    """An SQS client whose `send_message_batch` cannot reach AWS from its `after`-th call
    on (or is interrupted by Ctrl-C there): the network failing part way through a
    redrive."""

    def __init__(self, sqs: Any, after: int, ctrl_c: bool = False) -> None:
        self._sqs, self._calls, self._after, self._ctrl_c = sqs, 0, after, ctrl_c

    def send_message_batch(self, **request: Any) -> Any:
        from botocore.exceptions import EndpointConnectionError

        self._calls += 1
        if self._calls >= self._after:
            if self._ctrl_c:
                raise KeyboardInterrupt
            raise EndpointConnectionError(endpoint_url="https://sqs.example")
        return self._sqs.send_message_batch(**request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sqs, name)


def test_a_redrive_the_network_stops_leaves_the_rest_visible_and_says_what_it_did(
        moto_stack: MotoStack, samples_dir: Path) -> None:
    """The rest stayed hidden for 15 minutes: the next list and redrive said the queue
    was empty, and its alarm cleared."""
    from pipeline import dlq

    info = moto_stack.info
    sqs = moto_stack.client("sqs")
    body = sqs_message(moto_stack, moto_stack.upload(_anomaly(samples_dir)))["body"]
    sqs.purge_queue(QueueUrl=info.queue_url)
    for _ in range(15):
        sqs.send_message(QueueUrl=info.dlq_url, MessageBody=body)
    with pytest.raises(dlq.RedriveStopped, match="Could not connect") as stopped:
        dlq.redrive_to_queue(_Unreachable(sqs, after=2), info.dlq_url, info.queue_url)
    assert (stopped.value.result.moved, stopped.value.result.received) == (10, 15)
    assert len(_bodies(moto_stack, info.dlq_url)) == 5  # visible again at once
    assert len(queue_bodies(moto_stack, info.queue_url)) == 10
    with pytest.raises(dlq.RedriveStopped) as interrupted:  # Ctrl-C: the same, counted
        dlq.redrive_to_queue(_Unreachable(sqs, after=1, ctrl_c=True), info.dlq_url,
                             info.queue_url)
    assert isinstance(interrupted.value.cause, KeyboardInterrupt)
    assert (interrupted.value.result.moved, interrupted.value.result.received) == (0, 5)
    assert len(_bodies(moto_stack, info.dlq_url)) == 5


def test_empty_queues_say_so(cli: Any) -> None:
    result = cli("list")
    assert result.exit_code == 0, result.output
    assert "no dead letters in ingest, workflow, lake" in result.stdout


@pytest.mark.parametrize("args, expected", [
    (["list", "--queue", "nowhere"], "nowhere"),
    (["redrive", "--limit", "0"], "limit"),
    (["drop", "--save", "x.jsonl"], "or pass --poison"),
    (["drop", "--poison"], "--save"),
])
def test_mistakes_are_one_clear_line(cli: Any, args: list[str], expected: str) -> None:
    result = cli(*args)
    assert result.exit_code == 2
    assert expected in result.output and "Traceback" not in result.output


def test_a_damaged_local_state_file_is_one_clear_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from scripts import local_stack

    monkeypatch.setattr(local_stack, "STATE_FILE", tmp_path / "local.json")
    for damaged in ('{"api_url": "http://127.0', '{"api_url": "x"}', "[1, 2]"):
        local_stack.STATE_FILE.write_text(damaged)  # half written; another version's; junk
        result = dlq_cli(None)("list")
        said = " ".join(result.output.split())
        assert result.exit_code == 2, said
        assert "is not a stack description" in said and "Traceback" not in said


def test_a_missing_stack_is_one_clear_line(tmp_path: Path) -> None:
    result = dlq_cli(tmp_path / "none.json")("list")
    assert result.exit_code == 2
    said = " ".join(result.output.split())
    assert "none.json not found" in said and "Traceback" not in said


def test_a_deployed_stacks_outputs_serve_as_the_stack_description(
        moto_stack: MotoStack, samples_dir: Path, tmp_path: Path, cli_env: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`pulumi stack output --json` names the ingest queue `ingest_queue_url` and has no
    local environment; list and redrive work from it all the same, in the stack's region
    and against AWS even from a shell set up for another region and a local emulator."""
    from pipeline import ingest

    info = moto_stack.info
    outputs = {key: value for key, value in asdict(info).items()
               if key not in ("queue_url", "environment", "camera_tokens",
                              "reviewer_tokens", "token")}
    outputs |= {"ingest_queue_url": info.queue_url, "dashboard_url": "https://console/x"}
    state = tmp_path / "stack.json"
    state.write_text(json.dumps(outputs))
    deployed = dlq_cli(state)
    sqs = moto_stack.client("sqs")
    key = moto_stack.upload(_anomaly(samples_dir))
    body = sqs_message(moto_stack, key)["body"]
    [ref] = list(ingest.object_refs(body))
    ingest.note_failure(ref, TimeoutError("read timed out"))
    sqs.send_message(QueueUrl=info.dlq_url, MessageBody=body)
    for variable, value in (("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
                            ("AWS_REGION", "eu-west-1"), ("AWS_DEFAULT_REGION", "eu-west-1")):
        monkeypatch.setenv(variable, value)  # a shell set up for somewhere else
    listed = deployed("list", "--queue", "ingest")
    assert listed.exit_code == 0, listed.output
    assert "TimeoutError: read timed out" in listed.stdout
    sqs.purge_queue(QueueUrl=info.queue_url)
    moved = deployed("redrive", "--queue", "ingest")
    assert moved.exit_code == 0, moved.output
    assert queue_bodies(moto_stack, info.queue_url) == [json.loads(body)]

    state.write_text(json.dumps({"api_url": "https://example"}))
    incomplete = deployed("list")
    assert incomplete.exit_code == 2
    said = " ".join(incomplete.output.split())
    assert "lacks region, ingest_queue_url, dlq_url" in said
    assert "pulumi stack output --json > stack.json" in said


@pytest.mark.parametrize("command", ["list", "redrive", "drop"])
def test_help_has_an_example(command: str) -> None:
    result = dlq_cli(None)(command, "--help")
    assert result.exit_code == 0
    assert "Example" in result.stdout and f"linesight dlq {command}" in result.stdout
