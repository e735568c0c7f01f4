"""The local event-source stand-in keeps Lambda's batch semantics: stream pollers over fake
shards (each test sets the records and their timing), SQS and CloudWatch in in-process moto
(no network)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from scripts.event_sources import MetricsSink, SqsPoller, StreamPoller, invoke

REGION = "us-east-1"


class FakeStreams:
    """One shard holding `records`, served in one batch."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records
        self.served = False

    def describe_stream(self, StreamArn: str) -> dict[str, Any]:  # noqa: N803 - boto names
        return {"StreamDescription": {"Shards": [{"ShardId": "s-1"}]}}

    def get_shard_iterator(self, **_: Any) -> dict[str, Any]:
        return {"ShardIterator": "it-0"}

    def get_records(self, ShardIterator: str, Limit: int) -> dict[str, Any]:  # noqa: N803
        batch = [] if self.served else self.records
        self.served = True
        return {"Records": batch, "NextShardIterator": "it-1"}


class TrickleStreams:
    """One shard that gains one record before each read, and counts shard listings."""

    def __init__(self) -> None:
        self.listings = 0
        self.written = 0

    def describe_stream(self, StreamArn: str) -> dict[str, Any]:  # noqa: N803 - boto names
        self.listings += 1
        return {"StreamDescription": {"Shards": [{"ShardId": "s-1"}]}}

    def get_shard_iterator(self, **_: Any) -> dict[str, Any]:
        return {"ShardIterator": "it-0"}

    def get_records(self, ShardIterator: str, Limit: int) -> dict[str, Any]:  # noqa: N803
        self.written += 1
        record = dict(_stream_record(str(self.written)), eventID=f"e-{self.written}")
        return {"Records": [record], "NextShardIterator": f"it-{self.written}"}


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


class Queue:
    """A moto SQS queue: what the pollers read from or send their failures to."""

    def __init__(self, name: str = "q", bodies: tuple[str, ...] = ()) -> None:
        self.sqs = boto3.client("sqs", region_name=REGION)
        self.url = self.sqs.create_queue(QueueName=name)["QueueUrl"]
        self.arn = f"arn:aws:sqs:{REGION}:123456789012:{name}"
        self.ids = [self.sqs.send_message(QueueUrl=self.url, MessageBody=body)["MessageId"]
                    for body in bodies]

    def counts(self) -> tuple[int, int]:
        """(visible, in flight: received and neither deleted nor back yet)."""
        attributes = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])[
            "Attributes"]
        return (int(attributes["ApproximateNumberOfMessages"]),
                int(attributes["ApproximateNumberOfMessagesNotVisible"]))

    def bodies(self) -> list[str]:
        return [m["Body"] for m in self.sqs.receive_message(
            QueueUrl=self.url, MaxNumberOfMessages=10).get("Messages", [])]

    def poller(self, handler: Any) -> SqsPoller:
        return SqsPoller(self.sqs, self.url, self.arn, REGION, handler, "ingest",
                         threading.Event())


def _stream_record(sequence: str) -> dict[str, Any]:
    return {"eventName": "INSERT", "dynamodb": {"SequenceNumber": sequence, "NewImage": {}}}


def _poller(records: list[dict[str, Any]], handler: Any, failures: Queue) -> StreamPoller:
    poller = StreamPoller(FakeStreams(records), "arn:stream", handler, "to-lake",
                          threading.Event(), sqs=failures.sqs, on_failure_url=failures.url,
                          max_retries=2)
    return poller


def test_a_partial_failure_is_retried_from_the_first_failed_record(aws: None) -> None:
    seen: list[list[str]] = []

    def handler(event: dict[str, Any], _: Any) -> dict[str, Any]:
        sequences = [r["dynamodb"]["SequenceNumber"] for r in event["Records"]]
        seen.append(sequences)
        return {"batchItemFailures": [{"itemIdentifier": "2"}] if len(seen) == 1 else []}

    failures = Queue("lake-failures")
    _poller([_stream_record(s) for s in "123"], handler, failures).poll_once()

    assert seen == [["1", "2", "3"], ["2", "3"]]
    assert failures.bodies() == []


def test_retries_are_bounded_then_the_batch_goes_to_the_on_failure_queue(aws: None) -> None:
    calls = []

    def handler(event: dict[str, Any], _: Any) -> dict[str, Any]:
        calls.append(len(event["Records"]))
        return {"batchItemFailures": [{"itemIdentifier": "unknown"}]}  # not in the batch

    failures = Queue("lake-failures")
    poller = _poller([_stream_record(s) for s in "12"], handler, failures)
    poller.poll_once()

    assert calls == [2, 2, 2]  # an unknown identifier fails the whole batch each time
    [info] = [json.loads(body) for body in failures.bodies()]
    assert info["DDBStreamBatchInfo"]["batchSize"] == 2
    assert poller.iterators["s-1"] == "it-1"  # and only then does the shard move on


def test_sqs_messages_named_in_batch_item_failures_are_not_deleted(aws: None) -> None:
    queue = Queue(bodies=('"a"', '"b"', '"c"'))
    seen: list[str] = []

    def handler(event: dict[str, Any], _: Any) -> dict[str, Any]:
        seen.extend(r["body"] for r in event["Records"])
        failed = next(r["messageId"] for r in event["Records"] if r["body"] == '"b"')
        return {"batchItemFailures": [{"itemIdentifier": failed}]}

    assert queue.poller(handler).poll_once() == 3
    assert sorted(seen) == ['"a"', '"b"', '"c"']
    assert queue.counts() == (0, 1)  # a and c deleted; b comes back after its timeout


def test_a_handler_that_raises_fails_the_whole_sqs_batch(aws: None) -> None:
    queue = Queue(bodies=('"a"', '"b"'))

    def handler(event: dict[str, Any], _: Any) -> dict[str, Any]:
        raise RuntimeError("boom")

    assert queue.poller(handler).poll_once() == 2
    assert queue.counts() == (0, 2)  # nothing deleted: both come back


def test_a_batch_is_hidden_while_it_is_handled_and_its_context_counts_down(
        aws: None) -> None:
    """The queue hides a message for 1 s, the handler takes longer: a second poller got the
    same batch while the first still handled it (AWS refuses a mapping whose queue hides
    messages for less than the function's timeout), and the context said 60 s for ever."""
    queue = Queue(bodies=('"a"',))
    queue.sqs.set_queue_attributes(QueueUrl=queue.url, Attributes={"VisibilityTimeout": "1"})
    remaining: list[int] = []

    def slow(event: dict[str, Any], context: Any) -> dict[str, Any]:
        remaining.append(context.get_remaining_time_in_millis())
        time.sleep(1.5)
        remaining.append(context.get_remaining_time_in_millis())
        assert queue.poller(lambda *_: None).poll_once() == 0  # another poller: nothing
        return {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}

    poller = SqsPoller(queue.sqs, queue.url, queue.arn, REGION, slow, "ingest",
                       threading.Event(), timeout_seconds=30)
    assert poller.poll_once() == 1
    assert 28_000 < remaining[0] <= 30_000 and remaining[0] - remaining[1] >= 1_400
    # failed: hidden for the queue's own timeout (1 s), not the function's (30 s)
    time.sleep(1.2)
    assert queue.counts() == (1, 0)


def test_an_sqs_failure_naming_no_message_of_the_batch_fails_it_all(aws: None) -> None:
    """As Lambda does: deleting the rest of a batch whose failures name an empty or
    unknown identifier could lose the message that failed."""
    queue = Queue(bodies=('"a"', '"b"', '"c"'))

    assert queue.poller(lambda *_: {"batchItemFailures": [{"itemIdentifier": ""}]}
                        ).poll_once() == 3
    assert queue.counts() == (0, 3)  # none deleted: all come back after their timeout


class RereadStreams(FakeStreams):
    """One shard whose records are served again to a reader that keeps its iterator."""

    def get_records(self, ShardIterator: str, Limit: int) -> dict[str, Any]:  # noqa: N803
        return {"Records": self.records if ShardIterator == "it-0" else [],
                "NextShardIterator": "it-1"}


def test_stream_records_read_when_one_could_not_be_built_are_read_again(
        aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """They were marked as handed out before they were built: the read that failed, then
    the retry with the same iterator, dropped every record of the page."""
    seen: list[str] = []

    def handler(event: dict[str, Any], _: Any) -> dict[str, Any]:
        seen.extend(r["eventID"] for r in event["Records"])
        return {"batchItemFailures": []}

    page = [dict(_stream_record(str(n)), eventID=f"e-{n}") for n in (1, 2)]
    # an item edited by hand to hold a binary attribute, which JSON cannot size
    page.append(dict(_stream_record("3"), eventID="e-3"))
    page[2]["dynamodb"] = {**page[2]["dynamodb"], "NewImage": {"blob": {"B": b"\x00"}}}
    poller = StreamPoller(RereadStreams(page), "arn:stream", handler, "to-lake",
                          threading.Event(), batching_window=0.0)
    build = poller._record
    failures = iter([RuntimeError("moto answered something odd")])

    def flaky(record: dict[str, Any]) -> dict[str, Any]:
        error = next(failures, None)
        if error:
            raise error
        return build(record)

    monkeypatch.setattr(poller, "_record", flaky)
    with pytest.raises(RuntimeError):
        poller.poll_once()
    poller.poll_once(flush=True)

    assert seen == ["e-1", "e-2", "e-3"]


def test_a_stream_record_served_twice_is_delivered_once(aws: None) -> None:
    seen: list[str] = []

    def handler(event: dict[str, Any], _: Any) -> dict[str, Any]:
        seen.extend(r["eventID"] for r in event["Records"])
        return {"batchItemFailures": []}

    twice = [dict(_stream_record("1"), eventID="e-1"), dict(_stream_record("1"), eventID="e-1"),
             dict(_stream_record("2"), eventID="e-2")]
    _poller(twice, handler, Queue("lake-failures")).poll_once()

    assert seen == ["e-1", "e-2"]


def test_records_the_mapping_filters_out_never_reach_the_handler() -> None:
    """As Lambda applies a mapping's FilterCriteria: the local lake poller reads the
    stack's own patterns (`analytics.is_lake_record`)."""
    from pipeline import analytics

    batches: list[list[str]] = []
    bookkeeping = dict(_stream_record("2"), eventName="MODIFY")
    review = dict(_stream_record("3"), eventName="MODIFY",
                  dynamodb={"SequenceNumber": "3",
                            "NewImage": {"review": {"M": {"label": {"S": "normal"}}}}})
    poller = StreamPoller(FakeStreams([_stream_record("1"), bookkeeping, review]),
                          "arn:stream", _batches(batches), "to-lake", threading.Event(),
                          record_filter=analytics.is_lake_record)
    poller.poll_once()

    assert batches == [["1", "3"]]


def _batches(into: list[list[str]]) -> Any:
    def handler(event: dict[str, Any], _: Any) -> dict[str, Any]:
        into.append([r["dynamodb"]["SequenceNumber"] for r in event["Records"]])
        return {"batchItemFailures": []}

    return handler


def test_stream_records_wait_for_the_batching_window_then_go_as_one_batch() -> None:
    batches: list[list[str]] = []
    poller = StreamPoller(TrickleStreams(), "arn:stream", _batches(batches), "to-lake",
                          threading.Event(), batching_window=3600.0)

    assert [poller.poll_once(), poller.poll_once()] == [0, 0]  # gathered, within the window
    assert batches == []
    poller.batching_window = 0.0  # the window has passed
    assert poller.poll_once() == 3
    assert batches == [["1", "2", "3"]]


def test_a_full_batch_does_not_wait_for_the_window() -> None:
    batches: list[list[str]] = []
    poller = StreamPoller(TrickleStreams(), "arn:stream", _batches(batches), "to-lake",
                          threading.Event(), batch_size=2, batching_window=3600.0)

    assert [poller.poll_once(), poller.poll_once(), poller.poll_once()] == [0, 2, 0]
    assert poller.poll_once(flush=True) == 2  # what is gathered goes out when stopping
    assert batches == [["1", "2"], ["3", "4"]]


def test_shards_are_listed_now_and_then_not_on_every_poll() -> None:
    streams = TrickleStreams()
    poller = StreamPoller(streams, "arn:stream", _batches([]), "to-lake", threading.Event())
    for _ in range(5):
        poller.poll_once()
    assert streams.listings == 1
    poller.shard_refresh_seconds = 0.0
    poller.poll_once()
    assert streams.listings == 2


def _emf_handler(event: dict[str, Any], _: Any) -> None:
    print(json.dumps({"_aws": {"Timestamp": int(time.time() * 1000), "CloudWatchMetrics": [{
        "Namespace": "LineSight", "Dimensions": [["line"]],
        "Metrics": [{"Name": "ProcessedImageCount", "Unit": "Count"}]}]},
        "line": "line-1", "ProcessedImageCount": [1]}))


def _processed(cloudwatch: Any) -> list[tuple[float, float]]:
    """ProcessedImageCount of line-1 as CloudWatch holds it: (sum, data points)."""
    now = datetime.now(UTC)
    points = cloudwatch.get_metric_statistics(
        Namespace="LineSight", MetricName="ProcessedImageCount",
        Dimensions=[{"Name": "line", "Value": "line-1"}],
        StartTime=now - timedelta(minutes=5), EndTime=now + timedelta(minutes=5),
        Period=600, Statistics=["Sum", "SampleCount"])["Datapoints"]
    return [(p["Sum"], p["SampleCount"]) for p in points]


def test_metrics_of_many_invocations_are_put_in_one_call(aws: None) -> None:
    cloudwatch = boto3.client("cloudwatch", region_name=REGION)
    puts: list[int] = []
    cloudwatch.meta.events.register("provide-client-params.cloudwatch.PutMetricData",
                                    lambda params, **_: puts.append(len(params["MetricData"])))
    sink = MetricsSink(cloudwatch, threading.Event())
    for _ in range(3):
        invoke(_emf_handler, {"Records": []}, "ingest", sink)
    assert puts == [] and _processed(cloudwatch) == []  # not one call per invocation
    sink.flush()
    assert puts == [3]
    assert _processed(cloudwatch) == [(3.0, 3.0)]


def test_the_metrics_sink_puts_what_is_left_when_it_stops(aws: None) -> None:
    cloudwatch, stop = boto3.client("cloudwatch", region_name=REGION), threading.Event()
    sink = MetricsSink(cloudwatch, stop, interval=3600.0)
    sink.start()
    invoke(_emf_handler, {"Records": []}, "ingest", sink)
    stop.set()
    sink.join(timeout=5)
    assert _processed(cloudwatch) == [(1.0, 1.0)]
