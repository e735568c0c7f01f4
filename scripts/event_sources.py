"""The local stand-in for Lambda's event source mappings (the one piece of local glue).

Pollers read the ingest SQS queue and the results table's stream and call the real
Chalice handlers with Lambda-shaped events and Lambda's batch semantics:
- SQS: batches of up to 10; messages named in `batchItemFailures` (or the whole batch if
  the handler raises) are not deleted, so they come back after the visibility timeout
  and the queue's redrive policy moves them to the DLQ after maxReceiveCount.
- DynamoDB streams: each shard polled 4 times a second, records gathered for up to the
  mapping's batching window (or until the batch is full), batches in shard order; on a
  partial failure the batch is retried from the first failed record, a bounded number
  of times, then the failed records go to the on-failure queue and the shard moves on
  (bisect-on-error, record age aside). Shards are listed again now and then, not on
  every poll.
While a handler runs, what it prints (its EMF metric lines) is captured per thread
and handed to a `MetricsSink`, which puts it into CloudWatch a moment later in one call,
as Lambda's log pipeline extracts EMF asynchronously.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

log = logging.getLogger("linesight.local")
Handler = Callable[[dict[str, Any], Any], Any]


def lambda_context(name: str, timeout_seconds: float = 60.0) -> SimpleNamespace:
    """A Lambda context whose remaining time counts down from `timeout_seconds`, as the
    function's does, so that a handler's `out_of_time` acts locally as it would in AWS (it
    said 60 s left for ever)."""
    deadline = time.monotonic() + timeout_seconds

    def remaining_ms() -> int:
        return max(0, int((deadline - time.monotonic()) * 1000))

    return SimpleNamespace(function_name=name, aws_request_id=str(uuid.uuid4()),
                           memory_limit_in_mb=1024, invoked_function_arn=f"local:{name}",
                           get_remaining_time_in_millis=remaining_ms)


# --- EMF capture ----------------------------------------------------------------------

# thread id -> what that thread's handler printed, while it runs under `invoke`
_buffers: dict[int, io.StringIO] = {}
_router_lock = threading.Lock()


class _ThreadRoutedStdout(io.TextIOBase):
    """sys.stdout that sends a capturing thread's writes to its own buffer."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def write(self, text: str) -> int:
        buffer = _buffers.get(threading.get_ident())
        return buffer.write(text) if buffer is not None else self.real.write(text)

    def flush(self) -> None:
        self.real.flush()


def _install_router() -> None:
    """Route sys.stdout through the capture (again, if someone replaced sys.stdout since,
    as pytest does between tests)."""
    with _router_lock:
        if not isinstance(sys.stdout, _ThreadRoutedStdout):
            sys.stdout = _ThreadRoutedStdout(sys.stdout)


def emf_to_metric_data(line: str) -> tuple[str, list[dict[str, Any]]] | None:
    """Turn one Embedded Metric Format log line into PutMetricData arguments: one datum per
    value and dimension set, as CloudWatch stores it ([] is the metric without dimensions).

    >>> ns, data = emf_to_metric_data(json.dumps({"_aws": {"Timestamp": 0,
    ...     "CloudWatchMetrics": [{"Namespace": "N",
    ...     "Dimensions": [["line", "camera"], ["line"], []],
    ...     "Metrics": [{"Name": "M", "Unit": "Count"}]}]}, "line": "L1", "camera": "c1",
    ...     "M": [2]}))
    >>> ns, [(d["MetricName"], d["Dimensions"], d["Value"]) for d in data]
    ... # doctest: +NORMALIZE_WHITESPACE
    ('N', [('M', [{'Name': 'line', 'Value': 'L1'}, {'Name': 'camera', 'Value': 'c1'}], 2.0),
           ('M', [{'Name': 'line', 'Value': 'L1'}], 2.0),
           ('M', [], 2.0)])
    """
    try:
        blob = json.loads(line)
    except json.JSONDecodeError:
        return None
    meta = blob.get("_aws") if isinstance(blob, dict) else None
    if not meta:
        return None
    timestamp = datetime.fromtimestamp(meta.get("Timestamp", 0) / 1000.0, UTC)
    namespace = ""
    data: list[dict[str, Any]] = []
    for directive in meta.get("CloudWatchMetrics", []):
        namespace = directive["Namespace"]
        dimension_sets = directive.get("Dimensions") or [[]]
        for metric in directive.get("Metrics", []):
            values = blob.get(metric["Name"])
            for value in values if isinstance(values, list) else [values]:
                for dims in dimension_sets:
                    data.append({
                        "MetricName": metric["Name"],
                        "Dimensions": [{"Name": d, "Value": str(blob[d])} for d in dims],
                        "Value": float(value),
                        "Unit": metric.get("Unit", "None"),
                        "Timestamp": timestamp,
                    })
    return (namespace, data) if data else None


def invoke(handler: Handler, event: dict[str, Any], name: str,
           metrics: MetricsSink | None, timeout_seconds: float = 60.0) -> Any:
    """Call a handler as Lambda would, turning its EMF output into CloudWatch metrics."""
    _install_router()
    buffer = io.StringIO()
    _buffers[threading.get_ident()] = buffer
    try:
        return handler(event, lambda_context(name, timeout_seconds))
    finally:
        del _buffers[threading.get_ident()]
        try:
            printed = _metric_data(buffer.getvalue())  # non-metric lines are printed here
            if metrics is not None:
                for namespace, data in printed.items():
                    metrics.add(namespace, data)
        except Exception:  # metrics must never turn a handled batch into a failed one
            log.exception("could not read the metrics %s printed", name)


def _metric_data(output: str) -> dict[str, list[dict[str, Any]]]:
    """The metric data one invocation printed, by namespace; other lines are printed."""
    by_namespace: dict[str, list[dict[str, Any]]] = {}
    for line in output.splitlines():
        parsed = emf_to_metric_data(line)
        if parsed is None:
            if line.strip():
                sys.stdout.write(line + "\n")
            continue
        namespace, data = parsed
        by_namespace.setdefault(namespace, []).extend(data)
    return by_namespace


class MetricsSink(threading.Thread):
    """The CloudWatch end of Lambda's log pipeline: metric data from every invocation,
    put at most once per `interval` seconds (one PutMetricData per namespace and 1,000
    points), and once more when `stop` is set. In AWS, EMF lines become metrics
    asynchronously too."""

    def __init__(self, cloudwatch: Any, stop: threading.Event, interval: float = 1.0) -> None:
        super().__init__(name="metrics-sink", daemon=True)
        self.cloudwatch, self.stop_event, self.interval = cloudwatch, stop, interval
        self._pending: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def add(self, namespace: str, data: list[dict[str, Any]]) -> None:
        with self._lock:
            self._pending.setdefault(namespace, []).extend(data)

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        for namespace, data in pending.items():
            for start in range(0, len(data), 1000):
                try:
                    self.cloudwatch.put_metric_data(Namespace=namespace,
                                                    MetricData=data[start:start + 1000])
                except Exception:  # metrics never fail a handled batch
                    log.exception("could not put %d metric data points", len(data))

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            self.flush()
        self.flush()


# --- pollers --------------------------------------------------------------------------

@dataclass
class PollerStats:
    batches: int = 0
    records: int = 0
    failures: int = 0
    errors: list[str] = field(default_factory=list)


class SqsPoller(threading.Thread):
    """An SQS event source mapping. Each batch is received hidden for the function's
    timeout (`timeout_seconds`), and the handler's context counts down from it: AWS refuses
    a mapping whose queue hides messages for less than the function's timeout, so a batch
    never comes back while it is handled. The local queue hides a message for a few
    seconds only, so that failures come back soon; a batch slower than that was handled
    twice at once, and could reach the dead-letter queue though it succeeded. A failed
    message is hidden for the queue's own visibility timeout, as it is in AWS once its
    invocation ends."""

    def __init__(self, sqs: Any, queue_url: str, queue_arn: str, region: str,
                 handler: Handler, name: str, stop: threading.Event,
                 metrics: MetricsSink | None = None, batch_size: int = 10,
                 timeout_seconds: int = 60) -> None:
        super().__init__(name=f"poller-{name}", daemon=True)
        self.sqs, self.queue_url, self.queue_arn, self.region = sqs, queue_url, queue_arn, region
        self.timeout_seconds = timeout_seconds
        self.handler, self.function_name, self.stop_event = handler, name, stop
        self.metrics, self.batch_size = metrics, batch_size
        self.stats = PollerStats()

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.poll_once(wait_seconds=1)
            except Exception as exc:  # keep polling, as Lambda's poller would
                log.exception("SQS poller %s", self.function_name)
                self.stats.errors.append(str(exc))
                time.sleep(0.5)

    def poll_once(self, wait_seconds: int = 0) -> int:
        response = self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=self.batch_size,
            WaitTimeSeconds=wait_seconds, VisibilityTimeout=self.timeout_seconds,
            AttributeNames=["All"], MessageAttributeNames=["All"])
        messages = response.get("Messages", [])
        if not messages:
            return 0
        event = {"Records": [self._record(m) for m in messages]}
        failed: set[str]
        try:
            result = invoke(self.handler, event, self.function_name, self.metrics,
                            self.timeout_seconds)
            failed = {f["itemIdentifier"] for f in (result or {}).get("batchItemFailures", [])}
            if not failed <= {m["MessageId"] for m in messages}:
                # An identifier that is not in the batch (empty, or another's) fails the
                # whole batch, as in Lambda: deleting the others could lose a message.
                log.error("handler %s named items not in its batch: %s; the whole batch "
                          "will be retried", self.function_name, sorted(failed))
                failed = {m["MessageId"] for m in messages}
        except Exception:
            log.exception("handler %s raised; the whole batch will be retried",
                          self.function_name)
            failed = {m["MessageId"] for m in messages}
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)])
        retry = [m for m in messages if m["MessageId"] in failed]
        if retry:
            hidden = int(self.sqs.get_queue_attributes(
                QueueUrl=self.queue_url, AttributeNames=["VisibilityTimeout"])[
                "Attributes"]["VisibilityTimeout"])
            self.sqs.change_message_visibility_batch(QueueUrl=self.queue_url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": hidden}
                for i, m in enumerate(retry)])
        self.stats.batches += 1
        self.stats.records += len(messages)
        self.stats.failures += len(failed)
        return len(messages)

    def _record(self, message: dict[str, Any]) -> dict[str, Any]:
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": message.get("Attributes", {}),
            "messageAttributes": message.get("MessageAttributes", {}),
            "md5OfBody": message.get("MD5OfBody", ""),
            "eventSource": "aws:sqs",
            "eventSourceARN": self.queue_arn,
            "awsRegion": self.region,
        }


class StreamPoller(threading.Thread):
    POLL_SECONDS = 0.25  # Lambda polls each shard of a DynamoDB stream 4 times a second

    def __init__(self, streams: Any, stream_arn: str, handler: Handler, name: str,
                 stop: threading.Event, *, sqs: Any = None, on_failure_url: str = "",
                 metrics: MetricsSink | None = None, batch_size: int = 100,
                 batching_window: float = 0.0, max_retries: int = 3,
                 shard_refresh_seconds: float = 30.0, region: str = "us-east-1",
                 record_filter: Callable[[dict[str, Any]], bool] | None = None) -> None:
        super().__init__(name=f"poller-{name}", daemon=True)
        self.streams, self.stream_arn, self.handler = streams, stream_arn, handler
        self.function_name, self.stop_event = name, stop
        self.sqs, self.on_failure_url, self.metrics = sqs, on_failure_url, metrics
        self.batch_size, self.max_retries, self.region = batch_size, max_retries, region
        self.batching_window, self.shard_refresh_seconds = batching_window, shard_refresh_seconds
        # The mapping's FilterCriteria: Lambda drops the records no pattern lets through
        # before it batches, and the handler never sees them.
        self.record_filter = record_filter
        self.iterators: dict[str, str] = {}
        self._gathered: dict[str, list[dict[str, Any]]] = {}  # shard -> records not yet sent
        self._gathering_since: dict[str, float] = {}
        self._shards_listed = -float("inf")
        self._recent: dict[str, None] = {}  # eventIDs handed out, oldest first
        self.stats = PollerStats()

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                if self.poll_once() < self.batch_size:
                    self.stop_event.wait(self.POLL_SECONDS)
            except Exception as exc:
                log.exception("stream poller %s", self.function_name)
                self.stats.errors.append(str(exc))
                time.sleep(0.5)
        try:
            self.poll_once(flush=True)  # what was gathered still goes out
        except Exception:
            log.exception("stream poller %s, delivering its last batch", self.function_name)

    def _refresh_shards(self) -> None:
        """List the stream's shards when the last listing is old or a shard has closed."""
        if self.iterators and time.monotonic() - self._shards_listed < self.shard_refresh_seconds:
            return
        self._shards_listed = time.monotonic()
        shards = self.streams.describe_stream(StreamArn=self.stream_arn)[
            "StreamDescription"]["Shards"]
        for shard in shards:
            shard_id = shard["ShardId"]
            if shard_id not in self.iterators:
                self.iterators[shard_id] = self.streams.get_shard_iterator(
                    StreamArn=self.stream_arn, ShardId=shard_id,
                    ShardIteratorType="TRIM_HORIZON")["ShardIterator"]

    def poll_once(self, flush: bool = False) -> int:
        """Read every shard once; deliver the batches that are full or whose batching
        window has passed (all of them with `flush`). Returns the records delivered."""
        self._refresh_shards()
        delivered = 0
        for shard_id, iterator in list(self.iterators.items()):
            gathered = self._gathered.setdefault(shard_id, [])
            if len(gathered) < self.batch_size:
                response = self.streams.get_records(ShardIterator=iterator,
                                                    Limit=self.batch_size - len(gathered))
                # built first, then marked as handed out: a record that cannot be built
                # is read again with the same iterator, not skipped as seen
                built = [self._record(r) for r in response.get("Records", [])]
                fresh = [record for record in built if not self._seen(record["eventID"])]
                if self.record_filter:
                    fresh = [record for record in fresh if self.record_filter(record)]
                if fresh and not gathered:
                    self._gathering_since[shard_id] = time.monotonic()
                gathered.extend(fresh)
                following = response.get("NextShardIterator")
                if following:
                    self.iterators[shard_id] = following
                else:  # a closed shard, read to its end: look for its children now
                    self._shards_listed = -float("inf")
            waited = time.monotonic() - self._gathering_since.get(shard_id, 0.0)
            if gathered and (flush or len(gathered) >= self.batch_size
                             or waited >= self.batching_window):
                self._gathered[shard_id] = []
                self._deliver(gathered)
                delivered += len(gathered)
        return delivered

    def _seen(self, event_id: str) -> bool:
        """True for a stream record this poller has already handed out. moto can serve
        one record twice under concurrent writes; Lambda's mapping never does, so the
        stand-in must not either (filtering on sequence numbers could drop a record)."""
        if not event_id:
            return False
        if event_id in self._recent:
            return True
        self._recent[event_id] = None
        if len(self._recent) > 50_000:
            self._recent.pop(next(iter(self._recent)))
        return False

    def _deliver(self, records: list[dict[str, Any]]) -> None:
        batch = records
        for attempt in range(self.max_retries + 1):
            try:
                result = invoke(self.handler, {"Records": batch}, self.function_name,
                                self.metrics)
                failed = [f["itemIdentifier"] for f in (result or {}).get("batchItemFailures", [])]
            except Exception:
                log.exception("handler %s raised on a stream batch", self.function_name)
                failed = [batch[0]["dynamodb"]["SequenceNumber"]]
            self.stats.batches += 1
            self.stats.records += len(batch)
            if not failed:
                return
            # Lambda checkpoints before the lowest failed record and retries from there.
            sequences = [r["dynamodb"]["SequenceNumber"] for r in batch]
            known = [sequences.index(s) for s in failed if s in sequences]
            # An identifier that is not in the batch fails the whole batch, as in Lambda.
            batch = batch[min(known):] if len(known) == len(failed) else batch
            self.stats.failures += len(failed)
            time.sleep(min(0.2 * 2 ** attempt, 2.0))
        self._send_to_on_failure(batch)

    def _send_to_on_failure(self, batch: list[dict[str, Any]]) -> None:
        if not (self.sqs and self.on_failure_url):
            return
        info = {"requestContext": {"condition": "RetryAttemptsExhausted",
                                   "functionArn": f"local:{self.function_name}"},
                "DDBStreamBatchInfo": {
                    "streamArn": self.stream_arn,
                    "startSequenceNumber": batch[0]["dynamodb"]["SequenceNumber"],
                    "endSequenceNumber": batch[-1]["dynamodb"]["SequenceNumber"],
                    "batchSize": len(batch)}}
        self.sqs.send_message(QueueUrl=self.on_failure_url, MessageBody=json.dumps(info))

    def _record(self, record: dict[str, Any]) -> dict[str, Any]:
        # Fill in what Lambda's mapping adds and moto's stream records may lack.
        record = dict(record)
        dynamodb = dict(record.get("dynamodb", {}))
        created = dynamodb.get("ApproximateCreationDateTime", time.time())
        if isinstance(created, datetime):
            created = created.timestamp()
        dynamodb["ApproximateCreationDateTime"] = created
        dynamodb.setdefault("SizeBytes", len(json.dumps(dynamodb.get("NewImage", {}),
                                                         default=str)))  # B: bytes
        dynamodb.setdefault("StreamViewType", "NEW_IMAGE")
        record["dynamodb"] = dynamodb
        record.setdefault("eventSourceARN", self.stream_arn)
        record.setdefault("awsRegion", self.region)
        record.setdefault("eventID", str(uuid.uuid4()))
        record.setdefault("eventSource", "aws:dynamodb")
        return record
