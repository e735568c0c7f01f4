"""The local event-source stand-in keeps Lambda's batch semantics (fakes, no network)."""

from __future__ import annotations

import json
import threading
from typing import Any

from scripts.event_sources import MetricsSink, SqsPoller, StreamPoller, invoke


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


class FakeCloudWatch:
    def __init__(self) -> None:
        self.puts: list[tuple[str, int]] = []

    def put_metric_data(self, Namespace: str, MetricData: list[dict[str, Any]]) -> None:  # noqa: N803
        self.puts.append((Namespace, len(MetricData)))


class FakeSqs:
    def __init__(self, messages: list[dict[str, Any]] | None = None) -> None:
        self.messages = messages or []
        self.sent: list[str] = []
        self.deleted: list[str] = []

    def send_message(self, QueueUrl: str, MessageBody: str) -> None:  # noqa: N803
        self.sent.append(MessageBody)

    def receive_message(self, **_: Any) -> dict[str, Any]:
        batch, self.messages = self.messages, []
        return {"Messages": batch}

    def delete_message_batch(self, QueueUrl: str, Entries: list[dict[str, str]]) -> None:  # noqa: N803
        self.deleted.extend(entry["ReceiptHandle"] for entry in Entries)


def _stream_record(sequence: str) -> dict[str, Any]:
    return {"eventName": "INSERT", "dynamodb": {"SequenceNumber": sequence, "NewImage": {}}}


def _poller(records: list[dict[str, Any]], handler: Any, sqs: FakeSqs) -> StreamPoller:
    poller = StreamPoller(FakeStreams(records), "arn:stream", handler, "to-lake",
                          threading.Event(), sqs=sqs, on_failure_url="q", max_retries=2)
    return poller


def test_a_partial_failure_is_retried_from_the_first_failed_record() -> None:
    seen: list[list[str]] = []

    def handler(event: dict[str, Any], _: Any) -> dict[str, Any]:
        sequences = [r["dynamodb"]["SequenceNumber"] for r in event["Records"]]
        seen.append(sequences)
        return {"batchItemFailures": [{"itemIdentifier": "2"}] if len(seen) == 1 else []}

    sqs = FakeSqs()
    _poller([_stream_record(s) for s in "123"], handler, sqs).poll_once()

    assert seen == [["1", "2", "3"], ["2", "3"]]
    assert sqs.sent == []


def test_retries_are_bounded_then_the_batch_goes_to_the_on_failure_queue() -> None:
    calls = []

    def handler(event: dict[str, Any], _: Any) -> dict[str, Any]:
        calls.append(len(event["Records"]))
        return {"batchItemFailures": [{"itemIdentifier": "unknown"}]}  # not in the batch

    sqs = FakeSqs()
    poller = _poller([_stream_record(s) for s in "12"], handler, sqs)
    poller.poll_once()

    assert calls == [2, 2, 2]  # an unknown identifier fails the whole batch each time
    [info] = [json.loads(body) for body in sqs.sent]
    assert info["DDBStreamBatchInfo"]["batchSize"] == 2
    assert poller.iterators["s-1"] == "it-1"  # and only then does the shard move on


def test_sqs_messages_named_in_batch_item_failures_are_not_deleted() -> None:
    messages = [{"MessageId": m, "ReceiptHandle": f"rh-{m}", "Body": "{}"} for m in "abc"]
    sqs = FakeSqs(messages)

    def handler(event: dict[str, Any], _: Any) -> dict[str, Any]:
        assert [r["messageId"] for r in event["Records"]] == ["a", "b", "c"]
        return {"batchItemFailures": [{"itemIdentifier": "b"}]}

    SqsPoller(sqs, "q", "arn:q", "us-east-1", handler, "ingest", threading.Event()).poll_once()

    assert sqs.deleted == ["rh-a", "rh-c"]  # b comes back after the visibility timeout


def test_a_handler_that_raises_fails_the_whole_sqs_batch() -> None:
    sqs = FakeSqs([{"MessageId": "a", "ReceiptHandle": "rh-a", "Body": "{}"}])

    def handler(event: dict[str, Any], _: Any) -> dict[str, Any]:
        raise RuntimeError("boom")

    SqsPoller(sqs, "q", "arn:q", "us-east-1", handler, "ingest", threading.Event()).poll_once()

    assert sqs.deleted == []


def test_a_stream_record_served_twice_is_delivered_once() -> None:
    seen: list[str] = []

    def handler(event: dict[str, Any], _: Any) -> dict[str, Any]:
        seen.extend(r["eventID"] for r in event["Records"])
        return {"batchItemFailures": []}

    twice = [dict(_stream_record("1"), eventID="e-1"), dict(_stream_record("1"), eventID="e-1"),
             dict(_stream_record("2"), eventID="e-2")]
    _poller(twice, handler, FakeSqs()).poll_once()

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
    print(json.dumps({"_aws": {"Timestamp": 0, "CloudWatchMetrics": [{
        "Namespace": "LineSight", "Dimensions": [["line"]],
        "Metrics": [{"Name": "ProcessedImageCount", "Unit": "Count"}]}]},
        "line": "line-1", "ProcessedImageCount": [1]}))


def test_metrics_of_many_invocations_are_put_in_one_call() -> None:
    cloudwatch = FakeCloudWatch()
    sink = MetricsSink(cloudwatch, threading.Event())
    for _ in range(3):
        invoke(_emf_handler, {"Records": []}, "ingest", sink)
    assert cloudwatch.puts == []  # not one call per invocation
    sink.flush()
    assert cloudwatch.puts == [("LineSight", 3)]


def test_the_metrics_sink_puts_what_is_left_when_it_stops() -> None:
    cloudwatch, stop = FakeCloudWatch(), threading.Event()
    sink = MetricsSink(cloudwatch, stop, interval=3600.0)
    sink.start()
    invoke(_emf_handler, {"Records": []}, "ingest", sink)
    stop.set()
    sink.join(timeout=5)
    assert cloudwatch.puts == [("LineSight", 1)]
