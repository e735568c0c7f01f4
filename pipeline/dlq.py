"""Dead letters: what failed, why, which image it was, and putting it back in the flow.

Three queues hold what the pipeline could not finish:

- `ingest`: S3 notifications the ingest handler failed on `maxReceiveCount` times (the
  queue's redrive policy). Redrive: back to the ingest queue.
- `workflow`: the input of an execution that failed after its retries (the state
  machine's Catch). Redrive: a record that was never stored, or whose id another photo
  holds (the workflow then sends it back to the ingest queue; an input without the
  notification to send gets one rebuilt from the image), gets a new execution; a
  stored record whose alert failed (`alert_error`), or that this execution's put stored
  though it was answered with an error (its writer token), gets its alert published,
  once: the record is marked when it is (`workflow.ALERT_REDRIVEN`), so a message that
  stays in the queue after its alert went out is not alerted again.
- `lake`: rows Firehose refused every time and stream records that could not be read as a
  result, parked by the lake handler as data (`analytics.park_rows`), and stream batches
  Lambda gave up on (`DDBStreamBatchInfo`, when the handler failed as a whole). Redrive:
  the rows are sent to Firehose; parked records are read again first (after a fix, they
  go through; until then they stay), and a batch's records are re-read from the stream
  (which keeps them 24 h).

SQS keeps no reason with a dead letter, so the ingest step tags the image with one
(`pipeline.ingest.FAILURE_TAG`) before its message is retried; `describe` reads it back.
Everything here is a plain SQS receive/send/delete (moto has no StartMessageMoveTask), and
every redrive sends before it deletes: at worst a message is delivered twice, which the
idempotency key and the conditional put absorb. A redrive hides the messages it took for
`REDRIVE_VISIBILITY_SECONDS`, so a second operator's redrive meanwhile cannot take them
too; a message SQS will not delete after it went through is reported (`undeleted`), and
one that could not be redriven stays, with its reason (`failed`). A poison message (one that
no redrive can ever finish: not a notification, not an execution's input, not a lake dead
letter) stays in its dead-letter queue and is reported (`poison`): sent back, it would only
fail its way back there. `drop` takes such messages (or any named ones) out for good, after
handing a copy of each to its caller to keep (`linesight dlq drop --save FILE`), so that
the queue's not-empty alarm can clear without anything being lost.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pipeline import analytics, ingest, workflow
from pipeline.export import object_params
from pipeline.records import ResultRecord, iso, utc_now
from pipeline.uploads import parse_key

log = logging.getLogger(__name__)

QUEUES = ("ingest", "workflow", "lake")
_PEEK_VISIBILITY_SECONDS = 30
REDRIVE_VISIBILITY_SECONDS = 900  # a thousand dead letters are redriven well inside this


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter, decoded for a person."""

    queue: str
    message_id: str
    receipt_handle: str
    body: str
    reason: str
    image: str = ""
    line_id: str = ""
    camera_id: str = ""
    image_id: str = ""
    receive_count: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    poison: bool = False  # no redrive can ever finish it (see the module's docstring)


@dataclass
class RedriveResult:
    moved: int = 0
    alerts_published: int = 0
    executions_started: int = 0
    lake_rows_sent: int = 0
    parked: int = 0  # stream records that still cannot be read, kept as a message of their own
    refused: int = 0  # lake rows Firehose refused again, kept as a message of their own
    alerts_already_sent: int = 0  # owed alerts an earlier redrive published
    undeleted: list[str] = field(default_factory=list)  # went through, still in the queue
    reasons: dict[str, str] = field(default_factory=dict)  # failed message id -> why
    poison: dict[str, str] = field(default_factory=dict)  # message id -> why it never can
    received: int = 0  # messages read from the queue (a redrive's --limit may cut it short)

    @property
    def failed(self) -> list[str]:
        """The messages left in the queue, to try again (those with a reason)."""
        return list(self.reasons)

    def fail(self, message_id: str, reason: str) -> None:
        self.reasons[message_id] = reason


class RedriveStopped(RuntimeError):
    """A redrive stopped part way by an AWS error or Ctrl-C (`cause`): `result` says what
    it did before, and the messages it had not finished are visible in their queue again."""

    def __init__(self, result: RedriveResult, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.result = result
        self.cause = cause


@contextmanager
def _settling(sqs: Any, queue_url: str, messages: list[dict[str, Any]],
              result: RedriveResult) -> Iterator[set[str]]:
    """The ids of `messages` settled (deleted, or made visible again), for the redrive
    to add to; `result.received` is set to how many there are. If the redrive stops early
    (AWS unreachable, Ctrl-C), every other message is made visible again at once: hidden
    for `REDRIVE_VISIBILITY_SECONDS`, they made the next `dlq list` and `dlq redrive` say
    the queue was empty. An AWS error or Ctrl-C then comes as `RedriveStopped`, with what
    was done before it."""
    settled: set[str] = set()
    result.received = len(messages)
    try:
        yield settled
    except BaseException as exc:
        try:
            release(sqs, queue_url, [m for m in messages if m["MessageId"] not in settled])
        except (BotoCoreError, ClientError) as again:  # they come back after the timeout
            log.warning("could not make the unfinished dead letters visible again: %s", again)
        if isinstance(exc, BotoCoreError | ClientError | KeyboardInterrupt):
            raise RedriveStopped(result, exc) from exc
        raise


# --- reading -----------------------------------------------------------------------------

# How long the poll that confirms a queue is empty waits: a long poll asks every server
_CONFIRM_EMPTY_SECONDS = 1

def receive_all(sqs: Any, queue_url: str, *, limit: int = 1000,
                visibility_timeout: int = _PEEK_VISIBILITY_SECONDS) -> list[dict[str, Any]]:
    """Receive up to `limit` messages (each once), hidden for `visibility_timeout` s.

    A short poll asks only some of SQS's servers, and on a queue of a few messages, as
    dead-letter queues are, it may answer nothing while messages wait (so `dlq list` said
    "no dead letters" beside a firing alarm, and a redrive moved none of them). So an empty
    answer ends the reading only when the queue counts no visible message, or when a long
    poll (`_CONFIRM_EMPTY_SECONDS`), which asks every server, answers nothing too."""
    messages: dict[str, dict[str, Any]] = {}
    wait = 0
    while len(messages) < limit:
        batch = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=min(10, limit - len(messages)),
            VisibilityTimeout=visibility_timeout, WaitTimeSeconds=wait,
            AttributeNames=["All"], MessageAttributeNames=["All"]).get("Messages", [])
        fresh = [m for m in batch if m["MessageId"] not in messages]
        for message in batch:  # received again: only the latest receipt handle deletes it
            if message["MessageId"] in messages:
                messages[message["MessageId"]]["ReceiptHandle"] = message["ReceiptHandle"]
        if not fresh:
            if wait or not _visible(sqs, queue_url):
                break
            wait = _CONFIRM_EMPTY_SECONDS
            continue
        wait = 0
        messages.update((m["MessageId"], m) for m in fresh)
    return list(messages.values())


def _visible(sqs: Any, queue_url: str) -> int:
    """How many messages the queue counts as visible (approximately, as SQS counts)."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    return int(attributes.get("ApproximateNumberOfMessages", 0))


def release(sqs: Any, queue_url: str, messages: list[dict[str, Any]]) -> None:
    """Make peeked messages visible again at once."""
    for start in range(0, len(messages), 10):
        chunk = messages[start:start + 10]
        sqs.change_message_visibility_batch(QueueUrl=queue_url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
            for i, m in enumerate(chunk)])


def peek(sqs: Any, queue_url: str, queue: str, s3: Any | None = None,
         limit: int = 1000) -> list[DeadLetter]:
    """Every dead letter in `queue_url`, decoded, left in the queue."""
    messages = receive_all(sqs, queue_url, limit=limit)
    try:
        return [letter for message in messages for letter in describe(queue, message, s3)]
    finally:
        release(sqs, queue_url, messages)


def describe(queue: str, message: dict[str, Any], s3: Any | None = None
             ) -> list[DeadLetter]:
    """What a dead letter is about (one entry per image it names) and why it failed."""
    if queue not in QUEUES:
        raise ValueError(f"queue must be one of {', '.join(QUEUES)}, not {queue!r}")
    common = {
        "queue": queue, "message_id": message["MessageId"],
        "receipt_handle": message.get("ReceiptHandle", ""), "body": message["Body"],
        "receive_count": int(message.get("Attributes", {}).get("ApproximateReceiveCount", 0)),
    }
    return list({"ingest": _describe_ingest, "workflow": _describe_workflow,
                 "lake": _describe_lake}[queue](message["Body"], common, s3))


def _describe_ingest(body: str, common: dict[str, Any], s3: Any | None
                     ) -> Iterator[DeadLetter]:
    try:
        refs = list(ingest.object_refs(body))
    except (ValueError, KeyError, TypeError) as exc:
        yield DeadLetter(**common, reason=f"poison message: {exc}", poison=True)
        return
    if not refs:
        yield DeadLetter(**common, reason="no ObjectCreated record in the notification")
    for ref in refs:
        parts = parse_key(ref.key)
        image_id = ingest.first_image_id(ref)
        if ref.requeued:  # sent back because another photo holds the upload's id
            image_id = ingest.rewritten_image_id(image_id, ref)
        yield DeadLetter(
            **common, reason=_tagged_reason(s3, ref), image=ref.uri,
            line_id=parts.line_id if parts else "", camera_id=parts.camera_id if parts else "",
            image_id=image_id)


def _tagged_reason(s3: Any | None, ref: ingest.ObjectRef) -> str:
    if s3 is None:
        return "unknown (no S3 client to read the image's tags)"
    try:
        tags = s3.get_object_tagging(Bucket=ref.bucket, Key=ref.key)["TagSet"]
    except ClientError as exc:
        return f"unknown (cannot read the image's tags: {exc.response['Error']['Code']})"
    by_key = {tag["Key"]: tag["Value"] for tag in tags}
    reason = by_key.get(ingest.FAILURE_TAG)
    if not reason:
        return "unknown (the image carries no failure tag; see the ingest logs)"
    when = by_key.get(ingest.FAILED_AT_TAG)
    return f"{reason} (last failed {when})" if when else reason


def _describe_workflow(body: str, common: dict[str, Any], s3: Any | None
                       ) -> Iterator[DeadLetter]:
    try:
        state = json.loads(body)
        record = state["record"]
        alert_failed = "alert_error" in state
        error = state.get("alert_error" if alert_failed else "error") or {}
        if not isinstance(record, dict) or not isinstance(error, dict):
            raise TypeError("not an execution's input")
    except (ValueError, KeyError, TypeError):
        yield DeadLetter(**common, reason="not a workflow failure (unreadable input)",
                         poison=True)
        return
    step = "alert not sent" if alert_failed else "record not stored"
    cause = str(error.get("Cause", ""))
    reason = f"{step}: {error.get('Error', 'unknown error')}"
    if cause:
        reason += f" ({cause[:200]})"
    yield DeadLetter(**common, reason=reason, image=str(record.get("s3_uri", "")),
                     line_id=str(record.get("line_id", "")),
                     camera_id=str(record.get("camera_id", "")),
                     image_id=str(record.get("image_id", "")),
                     extra={"alert_failed": alert_failed})


def _describe_lake(body: str, common: dict[str, Any], s3: Any | None
                   ) -> Iterator[DeadLetter]:
    try:
        info = json.loads(body)
        if analytics.LAKE_ROWS in info:
            rows = list(info[analytics.LAKE_ROWS])
            first = rows[0] if rows else {}
            yield DeadLetter(
                **common, reason=f"{info.get('reason', 'refused')}: {len(rows)} lake rows",
                image=f"{first.get('ImageUrl', '')}{_more(rows)}",
                line_id=str(first.get("AssemblyLineId", "")),
                camera_id=str(first.get("CameraId", "")), image_id=str(first.get("ImageId", "")),
                extra={"rows": len(rows)})
            return
        if analytics.STREAM_IMAGES in info:
            images = list(info[analytics.STREAM_IMAGES])
            first = {name: value.get("S", "") for name, value in
                     (images[0] if images else {}).items() if isinstance(value, dict)}
            yield DeadLetter(
                **common, reason=f"{len(images)} stream records that "
                                 f"{info.get('reason', 'cannot be read')}",
                image=f"{first.get('s3_uri', '')}{_more(images)}",
                line_id=first.get("line_id", ""), camera_id=first.get("camera_id", ""),
                image_id=first.get("image_id", ""), extra={"rows": len(images)})
            return
        batch = info["DDBStreamBatchInfo"]
        context = info.get("requestContext") or {}
        if not isinstance(batch, dict) or not isinstance(context, dict):
            raise TypeError("not a stream on-failure record")
    except (ValueError, KeyError, TypeError, AttributeError):
        yield DeadLetter(**common, reason="not a stream on-failure record (unreadable)",
                         poison=True)
        return
    condition = context.get("condition", "unknown")
    yield DeadLetter(
        **common,
        reason=(f"{condition}: {batch.get('batchSize', '?')} stream records "
                f"{batch.get('startSequenceNumber')}..{batch.get('endSequenceNumber')}"),
        extra={"batch": batch})


def _more(items: list[Any]) -> str:
    return f" and {len(items) - 1} more" if len(items) > 1 else ""


# --- redriving ---------------------------------------------------------------------------

def redrive_to_queue(sqs: Any, dlq_url: str, source_url: str, limit: int = 1000
                     ) -> RedriveResult:
    """Move dead letters back to their source queue: send, then delete. Poison messages
    stay."""
    result = RedriveResult()
    received = receive_all(sqs, dlq_url, limit=limit,
                           visibility_timeout=REDRIVE_VISIBILITY_SECONDS)
    with _settling(sqs, dlq_url, received, result) as settled:
        messages = _without_poison(sqs, dlq_url, "ingest", result, received, settled)
        for start in range(0, len(messages), 10):
            chunk = messages[start:start + 10]
            try:
                sent = sqs.send_message_batch(QueueUrl=source_url, Entries=[
                    {"Id": str(i), "MessageBody": m["Body"]} for i, m in enumerate(chunk)])
            except ClientError as exc:
                sent = {"Failed": [{"Id": str(i), "Code": _client_error(exc)}
                                   for i in range(len(chunk))]}
            ok = {int(entry["Id"]) for entry in sent.get("Successful", [])}
            for entry in sent.get("Failed", []):
                result.fail(chunk[int(entry["Id"])]["MessageId"],
                            ": ".join(filter(None, (entry.get("Code"), entry.get("Message")))))
            result.undeleted += _delete(sqs, dlq_url, [chunk[i] for i in sorted(ok)])
            settled.update(chunk[i]["MessageId"] for i in ok)
            result.moved += len(ok)
        release(sqs, dlq_url, [m for m in messages if m["MessageId"] in result.reasons])
    return result


def _without_poison(sqs: Any, queue_url: str, queue: str, result: RedriveResult,
                    messages: list[dict[str, Any]], settled: set[str]
                    ) -> list[dict[str, Any]]:
    """The messages a redrive can work on; poison ones are noted in `result` and made
    visible again, left where they are (and `settled`)."""
    poison = {}
    for message in messages:
        why = [letter.reason for letter in describe(queue, message) if letter.poison]
        if why:
            poison[message["MessageId"]] = why[0].removeprefix("poison message: ")
    result.poison.update(poison)
    release(sqs, queue_url, [m for m in messages if m["MessageId"] in poison])
    settled.update(poison)
    return [m for m in messages if m["MessageId"] not in poison]


def _failure(exc: Exception) -> str:
    """Why one message could not be redriven, in one line. AWS's refusals, and messages
    that lack what a redrive needs, are expected: no traceback. Anything else is a bug,
    logged with its traceback.

    >>> _failure(KeyError("alert"))
    "the message lacks 'alert'"
    >>> _failure(ValueError("the batch's records are no longer in the stream"))
    "the batch's records are no longer in the stream"
    """
    if isinstance(exc, ClientError):
        return _client_error(exc)
    if isinstance(exc, KeyError):
        return f"the message lacks {exc.args[0]!r}" if exc.args else "the message lacks a key"
    if isinstance(exc, (ValueError, TypeError, AttributeError)):
        return str(exc) or type(exc).__name__
    log.warning("redrive of a dead letter failed unexpectedly", exc_info=exc)
    return f"unexpected {type(exc).__name__}: {exc}"


def _client_error(exc: ClientError) -> str:
    """
    >>> _client_error(ClientError({"Error": {"Code": "StateMachineDoesNotExist",
    ...     "Message": "State Machine Does Not Exist"}}, "StartExecution"))
    'StartExecution refused: StateMachineDoesNotExist: State Machine Does Not Exist'
    """
    error = exc.response.get("Error", {})
    return (f"{exc.operation_name} refused: {error.get('Code', 'unknown error')}"
            + (f": {error['Message']}" if error.get("Message") else ""))


@dataclass(frozen=True)
class WorkflowTargets:
    """What a workflow redrive needs to reach."""

    state_machine_arn: str
    table: str
    topic_arn: str


def redrive_workflow(sqs: Any, failure_url: str, targets: WorkflowTargets, *, sfn: Any,
                     ddb: Any, sns: Any, s3: Any, limit: int = 1000) -> RedriveResult:
    """Finish what each failed execution could not: a record that was never stored, or
    whose id another photo holds, gets a new execution (its conditional put keeps it
    exactly-once; the other photo's case sends this one back to the ingest queue, with the
    notification rebuilt from the image when the input has none); a stored record whose
    alert failed gets the alert published."""
    return _redrive_each(sqs, failure_url, "workflow", limit, lambda state, result: (
        _finish_execution(state, targets, sfn, ddb, sns, s3, result)))


def _redrive_each(sqs: Any, queue_url: str, queue: str, limit: int,
                  finish: Callable[[Any, RedriveResult], None]) -> RedriveResult:
    """Redrive a queue's dead letters one at a time: `finish(body, result)` does one's
    work (its JSON body) and counts it in `result`; the message is then deleted. One whose
    work fails is reported in `result` and made visible again; AWS unreachable stops the
    redrive (`RedriveStopped`), since every other message would wait for it too."""
    result = RedriveResult()
    received = receive_all(sqs, queue_url, limit=limit,
                           visibility_timeout=REDRIVE_VISIBILITY_SECONDS)
    with _settling(sqs, queue_url, received, result) as settled:
        for message in _without_poison(sqs, queue_url, queue, result, received, settled):
            try:
                finish(json.loads(message["Body"]), result)
            except BotoCoreError:
                raise
            except Exception as exc:  # one message's failure is reported, not fatal
                result.fail(message["MessageId"], _failure(exc))
                release(sqs, queue_url, [message])
                settled.add(message["MessageId"])
                continue
            result.moved += 1
            result.undeleted += _delete(sqs, queue_url, [message])
            settled.add(message["MessageId"])
    return result


def _finish_execution(state: dict[str, Any], targets: WorkflowTargets, sfn: Any, ddb: Any,
                      sns: Any, s3: Any, result: RedriveResult) -> None:
    record = ResultRecord.from_json(state["record"])
    alert = state["alert"]
    stored = ddb.get_item(TableName=targets.table, Key={"image_id": {"S": record.image_id}},
                          ConsistentRead=True, ProjectionExpression=(
                              f"image_id, idempotency_key, {workflow.WRITER}, "
                              f"{workflow.ALERT_REDRIVEN}")).get("Item")
    # A record of another photo under this id (an upload form used twice): the new
    # execution's put is refused, and it sends this photo back to be judged on its own.
    other_photo = (stored is not None and
                   stored.get("idempotency_key", {}).get("S") != record.idempotency_key)
    if stored is None or other_photo:
        payload = workflow.with_writer({name: state[name] for name in (
            "item", "record", "alert", workflow.REQUEUE) if name in state})
        if workflow.REQUEUE in payload:  # parked by ingest code before the mark: unmarked
            payload[workflow.REQUEUE] = ingest.mark_requeued(payload[workflow.REQUEUE])
        elif other_photo:
            payload[workflow.REQUEUE] = ingest.notification_body(_judged_object(record, s3),
                                                                requeued=True)
        name = f"{record.idempotency_key[:40]}-redrive-{uuid.uuid4().hex[:12]}"
        sfn.start_execution(stateMachineArn=targets.state_machine_arn, name=name,
                            input=json.dumps(payload))
        result.executions_started += 1
        return
    # This execution's own put committed though it was answered with an error, or only
    # its alert failed: the alert is owed.
    written_here = (state.get(workflow.WRITER) is not None and
                    stored.get(workflow.WRITER, {}).get("S") == state[workflow.WRITER])
    if ("alert_error" in state or written_here) and alert.get("send"):
        if workflow.ALERT_REDRIVEN in stored:
            result.alerts_already_sent += 1
            return
        sns.publish(TopicArn=targets.topic_arn, Subject=alert["subject"],
                    Message=alert["message"], MessageAttributes={
                        "line": {"DataType": "String", "StringValue": alert["line_id"]},
                        "camera": {"DataType": "String", "StringValue": record.camera_id},
                        "reason": {"DataType": "String", "StringValue": alert["reason"]}})
        # If this fails, or the message cannot be deleted, the next redrive sees the mark
        # missing and publishes again: an alert may be sent twice, never lost.
        try:
            ddb.update_item(TableName=targets.table, Key={"image_id": {"S": record.image_id}},
                            UpdateExpression=f"SET {workflow.ALERT_REDRIVEN} = :at",
                            ConditionExpression="attribute_exists(image_id)",
                            ExpressionAttributeValues={":at": {"S": iso(utc_now())}})
        except ddb.exceptions.ConditionalCheckFailedException:
            pass  # the record was deleted meanwhile: nothing to mark, and no stub made
        result.alerts_published += 1
    # Otherwise another delivery stored the record and owned its alert: nothing is owed.


def _judged_object(record: ResultRecord, s3: Any) -> ingest.ObjectRef:
    """The S3 write `record` judged, as its notification named it: read back from the
    bucket (the version the record names), and refused unless it is that very write."""
    where = object_params(record.s3_uri, record.image_version)
    head = s3.head_object(**where)
    ref = ingest.ObjectRef(where["Bucket"], where["Key"], str(head["ETag"]).strip('"'),
                           int(head["ContentLength"]), record.captured_at,
                           str(head.get("VersionId") or ""))
    if ref.idempotency_key != record.idempotency_key:
        raise ValueError(f"{record.s3_uri} no longer holds the write image "
                         f"{record.image_id} judged")
    return ref


def redrive_lake(sqs: Any, lake_failure_url: str, *, streams: Any, firehose_stream: str,
                 region: str, send: Callable[..., list[str]] = analytics.send_rows,
                 limit: int = 1000) -> RedriveResult:
    """Send each dead letter's rows to Firehose: rows the handler parked as data, stream
    images it could not read (read again now, so after a fix they go through), or a failed
    stream batch's INSERTs, re-read from the stream.

    What landed is never sent again. When part of a message goes through, what did not
    (rows Firehose refused again, images that still cannot be read) is parked as a dead
    letter of its own and the message is deleted. A message of parked data none of which
    went through stays as it is; a stream batch none of which went through is parked as
    data, since the stream keeps its records only 24 hours."""
    def finish(info: Any, result: RedriveResult) -> None:
        done = _redrive_lake_letter(info, lake_failure_url, streams=streams,
                                    firehose_stream=firehose_stream, region=region, send=send)
        result.lake_rows_sent += done.lake_rows_sent
        result.refused += done.refused
        result.parked += done.parked

    return _redrive_each(sqs, lake_failure_url, "lake", limit, finish)


def _redrive_lake_letter(info: dict[str, Any], lake_failure_url: str, *, streams: Any,
                         firehose_stream: str, region: str, send: Callable[..., list[str]]
                         ) -> RedriveResult:
    """Send one lake dead letter's rows and park what did not go through; raises
    NothingWentThrough when it should stay as it is (parked data none of which went
    through)."""
    if analytics.LAKE_ROWS in info:
        rows: Sequence[tuple[str, Mapping[str, Any]]] = [
            (str(index), row) for index, row in enumerate(info[analytics.LAKE_ROWS])]
        unreadable: list[tuple[str, Mapping[str, Any], str]] = []
    elif analytics.STREAM_IMAGES in info:
        rows, unreadable = analytics.rows_from_images(
            (str(index), image, region)
            for index, image in enumerate(info[analytics.STREAM_IMAGES]))
    else:
        rows, unreadable = analytics.rows_from_images(
            (r["dynamodb"]["SequenceNumber"], r["dynamodb"]["NewImage"], region)
            for r in _stream_records(streams, info["DDBStreamBatchInfo"])
            if analytics.is_lake_record(r))
    refused_ids = set(send(firehose_stream, rows)) if rows else set()
    refused = [row for row_id, row in rows if row_id in refused_ids]
    landed = len(rows) - len(refused)
    if not landed and (refused or unreadable) and "DDBStreamBatchInfo" not in info:
        raise NothingWentThrough("; ".join(
            ([f"Firehose refused its {len(refused)} rows again"] if refused else [])
            + [f"{len(images)} stream records still {reason}"
               for reason, images in _by_reason(unreadable).items()]))
    if refused:
        analytics.park_rows(lake_failure_url, refused, "Firehose refused them again on redrive")
    for reason, images in _by_reason(unreadable).items():
        analytics.park_rows(lake_failure_url, images, reason, kind=analytics.STREAM_IMAGES)
    return RedriveResult(lake_rows_sent=landed, refused=len(refused), parked=len(unreadable))


# --- dropping ------------------------------------------------------------------------------

SHORT_ID = 8  # characters of a message id that `dlq list` shows and `drop` accepts


@dataclass
class DropResult:
    dropped: list[str] = field(default_factory=list)  # saved, then deleted
    undeleted: list[str] = field(default_factory=list)  # saved, but SQS would not delete them
    found: set[str] = field(default_factory=set)  # the named ids this queue holds
    ambiguous: set[str] = field(default_factory=set)  # named ids that fit several messages


def drop(sqs: Any, queue_url: str, queue: str, save: Callable[[list[dict[str, Any]]], None],
         *, message_ids: Sequence[str] = (), poison: bool = False, limit: int = 1000
         ) -> DropResult:
    """Take dead letters out of their queue for good: those named by `message_ids` (each a
    whole message id, or its first `SHORT_ID` characters or more; one that fits several
    messages drops none of them), and with `poison` every poison message. Nothing is
    deleted before `save` has returned with a copy of each (its body, attributes and why it
    failed, as `saved_copy` gives them); if `save` raises, every message is made visible
    again and the error goes on. Messages that are neither named nor poison stay, visible
    at once."""
    if queue not in QUEUES:
        raise ValueError(f"queue must be one of {', '.join(QUEUES)}, not {queue!r}")
    result = DropResult()
    messages = receive_all(sqs, queue_url, limit=limit,
                           visibility_timeout=REDRIVE_VISIBILITY_SECONDS)
    named: set[str] = set()
    for wanted in message_ids:
        fits = [m["MessageId"] for m in messages if m["MessageId"].startswith(wanted)]
        if len(fits) > 1:
            result.ambiguous.add(wanted)
        elif fits and len(wanted) >= SHORT_ID:
            result.found.add(wanted)
            named.update(fits)
    chosen, copies = [], []
    for message in messages:
        letters = describe(queue, message)
        if message["MessageId"] in named or (poison and any(x.poison for x in letters)):
            chosen.append(message)
            copies.append(saved_copy(queue, message, letters))
    taken = {m["MessageId"] for m in chosen}
    kept = [m for m in messages if m["MessageId"] not in taken]
    try:
        if copies:
            save(copies)
    except BaseException:
        release(sqs, queue_url, messages)
        raise
    release(sqs, queue_url, kept)
    result.undeleted = _delete(sqs, queue_url, chosen)
    result.dropped = [m["MessageId"] for m in chosen if m["MessageId"] not in result.undeleted]
    release(sqs, queue_url, [m for m in chosen if m["MessageId"] in result.undeleted])
    return result


def saved_copy(queue: str, message: Mapping[str, Any], letters: Sequence[DeadLetter]
               ) -> dict[str, Any]:
    """What `drop` keeps of a message: enough to read it, or to send it again by hand
    (`aws sqs send-message --message-body`)."""
    return {"queue": queue, "message_id": message["MessageId"], "body": message["Body"],
            "reasons": sorted({letter.reason for letter in letters}),
            "attributes": dict(message.get("Attributes", {})),
            "message_attributes": {name: _as_text(value) for name, value in
                                   message.get("MessageAttributes", {}).items()},
            "dropped_at": iso(utc_now())}


def _as_text(attribute: Mapping[str, Any]) -> dict[str, Any]:
    """A message attribute as JSON can hold it: binary values in base64, as the SQS API
    writes them (a foreign message's Binary attribute stopped `drop --save`).

    >>> _as_text({"DataType": "Binary", "BinaryValue": b"\\x00\\x01"})
    {'DataType': 'Binary', 'BinaryValue': 'AAE='}
    """
    def text(value: Any) -> Any:
        return base64.b64encode(value).decode() if isinstance(value, bytes) else value

    return {key: ([text(item) for item in value] if isinstance(value, list) else text(value))
            for key, value in attribute.items()}


class NothingWentThrough(ValueError):
    """A lake dead letter none of whose rows went through: it stays as it is."""


def _by_reason(unreadable: list[tuple[str, Mapping[str, Any], str]]
               ) -> dict[str, list[Mapping[str, Any]]]:
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for _, image, reason in unreadable:
        grouped.setdefault(reason, []).append(image)
    return grouped


_NOT_ALLOWED = ("AccessDeniedException", "UnrecognizedClientException",
                "ExpiredTokenException", "InvalidSignatureException")


def _stream_records(streams: Any, batch: dict[str, Any]) -> list[dict[str, Any]]:
    start, end = int(batch["startSequenceNumber"]), int(batch["endSequenceNumber"])
    shards = ([batch["shardId"]] if batch.get("shardId") else
              [s["ShardId"] for s in streams.describe_stream(
                  StreamArn=batch["streamArn"])["StreamDescription"]["Shards"]])
    for shard in shards:
        try:
            iterator = streams.get_shard_iterator(
                StreamArn=batch["streamArn"], ShardId=shard,
                ShardIteratorType="AT_SEQUENCE_NUMBER",
                SequenceNumber=batch["startSequenceNumber"])["ShardIterator"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _NOT_ALLOWED:
                raise  # not "the records are gone": the caller may not read the stream
            continue  # the batch came from another shard
        found: list[dict[str, Any]] = []
        while iterator:
            response = streams.get_records(ShardIterator=iterator, Limit=1000)
            records = response.get("Records", [])
            found.extend(r for r in records
                         if start <= int(r["dynamodb"]["SequenceNumber"]) <= end)
            if not records or int(records[-1]["dynamodb"]["SequenceNumber"]) >= end:
                break
            iterator = response.get("NextShardIterator")
        if found:
            return found
    raise ValueError("the batch's records are no longer in the stream (24 h retention)")


def _delete(sqs: Any, queue_url: str, messages: list[dict[str, Any]]) -> list[str]:
    """Delete `messages`; the ids of those SQS would not delete."""
    undeleted: list[str] = []
    for start in range(0, len(messages), 10):
        chunk = messages[start:start + 10]
        if chunk:
            answer = sqs.delete_message_batch(QueueUrl=queue_url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                for i, m in enumerate(chunk)])
            undeleted += [chunk[int(entry["Id"])]["MessageId"]
                          for entry in answer.get("Failed", [])]
    return undeleted
