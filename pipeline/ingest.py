"""The ingest step: one uploaded object in, one result record and one workflow execution out.

Runs in the SQS-triggered handler. Expected problems with the image or its metadata end
in an INVALID record (recorded, never retried); only unexpected errors propagate, so the
message is retried and finally lands in the DLQ.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote_plus, unquote_plus

from botocore.exceptions import BotoCoreError, ClientError

from pipeline import aws, workflow
from pipeline.alerts import AlertDecision, AlertPolicy, decide
from pipeline.detector import DetectionResult, Detector, InvalidImageError
from pipeline.queries import get_result
from pipeline.records import (
    STATUS_INVALID,
    STATUS_OK,
    UNISSUED,
    ResultRecord,
    iso,
    parse_time,
    utc_now,
)
from pipeline.settings import Settings
from pipeline.uploads import META_CAMERA, META_IMAGE, META_LINE, parse_key

log = logging.getLogger(__name__)

HEATMAP_PREFIX = "heatmaps/"


@dataclass(frozen=True)
class ObjectRef:
    """One S3 ObjectCreated event, decoded."""

    bucket: str
    key: str
    etag: str
    size: int
    event_time: datetime
    version_id: str = ""  # set when the bucket is versioned (LineSight's images bucket is)
    # sent back by the workflow (`notification_body`): this write's first judgement, which
    # lost the record's id to another photo, was counted in the metrics already
    requeued: bool = False

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def idempotency_key(self) -> str:
        """Same object version, same key: the execution name and dedup key.

        >>> ObjectRef("b", "k", "e", 1, utc_now()).idempotency_key[:12]
        '90a7fab64503'
        """
        digest = hashlib.sha256(f"{self.bucket}/{self.key}/{self.etag}".encode()).hexdigest()
        return digest[:64]


def object_refs(message_body: str) -> Iterator[ObjectRef]:
    """Every object in one SQS message body holding an S3 event notification.

    S3's `s3:TestEvent` (sent when the notification is configured) yields nothing.
    A body that is not an S3 event raises ValueError (a poison message).
    """
    try:
        event = json.loads(message_body)
    except json.JSONDecodeError as exc:
        raise ValueError(f"message body is not JSON: {exc.msg}") from None
    if not isinstance(event, dict):
        raise ValueError("message body is not an S3 event notification")
    if event.get("Event") == "s3:TestEvent":
        return
    requeued = event.get(REQUEUED) is True
    records = event.get("Records")
    if not isinstance(records, list):
        raise ValueError("message body is not an S3 event notification")
    for index, record in enumerate(records):
        try:
            if not str(record.get("eventName", "")).startswith("ObjectCreated"):
                continue
            s3 = record["s3"]
            ref = ObjectRef(
                bucket=s3["bucket"]["name"],
                key=unquote_plus(s3["object"]["key"]),
                etag=str(s3["object"].get("eTag") or s3["object"].get("etag") or ""),
                size=int(s3["object"].get("size", 0)),
                event_time=parse_time(record["eventTime"]),
                version_id=str(s3["object"].get("versionId") or ""),
                requeued=requeued,
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"record {index} of the S3 event notification is malformed: "
                             f"{type(exc).__name__}: {exc}") from None
        yield ref


# The key, beside the notification's Records, that marks an upload the workflow sent back.
REQUEUED = "linesightRequeued"


def notification_body(ref: ObjectRef, *, requeued: bool = False) -> str:
    """The S3 ObjectCreated notification of `ref`, as the ingest queue carries it;
    `requeued` marks it as sent back by the workflow (`pipeline.workflow.REQUEUE`), to be
    judged again but not counted again.

    >>> ref = ObjectRef("b", "line 1/a+b.jpg", "e", 5, parse_time("2026-11-25T10:00:00Z"), "v")
    >>> list(object_refs(notification_body(ref))) == [ref]
    True
    >>> [again.requeued for again in object_refs(notification_body(ref, requeued=True))]
    [True]
    """
    return json.dumps({**({REQUEUED: True} if requeued else {}), "Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
        "eventTime": iso(ref.event_time),
        "s3": {"bucket": {"name": ref.bucket},
               "object": {"key": quote_plus(ref.key), "size": ref.size, "eTag": ref.etag,
                          **({"versionId": ref.version_id} if ref.version_id else {})}},
    }]})


def mark_requeued(body: str) -> str:
    """An S3 notification `body` with the mark `notification_body(..., requeued=True)`
    gives, for one that an execution input from before the mark carries unmarked.

    >>> json.loads(mark_requeued('{"Records": []}'))
    {'Records': [], 'linesightRequeued': True}
    """
    return json.dumps({**json.loads(body), REQUEUED: True})


# The ingest function's timeout, seconds: Pulumi deploys it (infra/ingest.py), and the local
# stand-in for its event source mapping gives each invocation as long (scripts/event_sources)
FUNCTION_TIMEOUT_SECONDS = 60
# A batch starts no further message once the function has less than this left: the rest
# are reported failed and come back, instead of the timeout failing the whole batch
# (messages already recorded included) with no reason noted on any image. It exceeds one
# image's worst case, a SageMaker call that times out twice (`detector.sagemaker`).
TIME_MARGIN_MS = 25_000


def out_of_time(context: Any) -> bool:
    """Whether a Lambda `context` has less than `TIME_MARGIN_MS` left (no context: no).

    >>> from types import SimpleNamespace
    >>> out_of_time(SimpleNamespace(get_remaining_time_in_millis=lambda: 9_000))
    True
    >>> out_of_time(None)
    False
    """
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    return remaining is not None and remaining() < TIME_MARGIN_MS


@dataclass(frozen=True)
class Outcome:
    record: ResultRecord
    alert: AlertDecision
    execution_name: str
    duplicate: bool = False
    # a photo the workflow sent back (`ObjectRef.requeued`): counted when first judged
    counted_before: bool = False


def first_image_id(ref: ObjectRef) -> str:
    """The image id an upload is recorded under: the upload id the API issued, or, for a
    key it did not issue, one made from the object's bytes (`idempotency_key`)."""
    parts = parse_key(ref.key)
    return parts.upload_id if parts else ref.idempotency_key[:32]


def rewritten_image_id(image_id: str, ref: ObjectRef) -> str:
    """The image id of other bytes written to an upload's key after its first image was
    recorded (an upload form used twice): another photo, judged as an image of its own.
    The same write always gets the same id, so its redeliveries are recognised.

    >>> key = "line-1/cam-1/2026/11/25/" + "a" * 32 + ".jpg"
    >>> second, third = (ObjectRef("b", key, etag, 1, utc_now()) for etag in ("e2", "e3"))
    >>> rewritten_image_id("a" * 32, second), rewritten_image_id("a" * 32, third)
    ('cd863bb944757aacae461f49b7addd18', '4d3e9a19d9d7659e034b9eec8d3e2452')
    """
    return hashlib.sha256(f"{image_id}/{ref.idempotency_key}".encode()).hexdigest()[:32]


def analyse(ref: ObjectRef, settings: Settings, detector: Detector,
            image_id: str = "") -> ResultRecord:
    """Read the object, check its metadata, run the detector, store the heatmap. The
    record's id is `image_id`, by default `first_image_id(ref)`."""
    parts = parse_key(ref.key)
    line_id = parts.line_id if parts else UNISSUED
    camera_id = parts.camera_id if parts else UNISSUED
    image_id = image_id or first_image_id(ref)
    base = ResultRecord(
        image_id=image_id, line_id=line_id, camera_id=camera_id, s3_uri=ref.uri,
        captured_at=ref.event_time, processed_at=ref.event_time, status=STATUS_INVALID,
        idempotency_key=ref.idempotency_key, model_version=detector.model_version,
        threshold=_threshold(settings, line_id, detector), image_version=ref.version_id,
    )

    def invalid(reason: str, message: str) -> ResultRecord:
        log.warning("invalid upload %s: %s: %s", ref.uri, reason, message)
        return base.with_changes(reason=f"{reason}: {message}", processed_at=utc_now())

    if parts is None:
        return invalid("unexpected_key", "the object key was not issued by the upload API")
    if ref.size > settings.max_upload_bytes:
        return invalid("too_large",
                       f"{ref.size} bytes is over the limit of {settings.max_upload_bytes}")
    s3 = aws.client("s3")
    try:
        # The version this event is about, not whatever the key holds by now.
        obj = s3.get_object(Bucket=ref.bucket, Key=ref.key,
                            **({"VersionId": ref.version_id} if ref.version_id else {}))
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("NoSuchKey", "NoSuchVersion", "404"):
            return invalid("missing_object", "the object was deleted before it was read")
        raise
    metadata: Mapping[str, str] = obj.get("Metadata", {})
    problem = _metadata_problem(metadata, line_id, camera_id)
    base = base.with_changes(client_image_id=metadata.get(META_IMAGE, ""))
    if problem:
        return invalid("bad_metadata", problem)
    if int(obj.get("ContentLength", 0)) > settings.max_upload_bytes:
        return invalid("too_large", f"over the limit of {settings.max_upload_bytes} bytes")
    body = obj["Body"].read()
    started = time.perf_counter()
    try:
        result = detector.detect(body, obj.get("ContentType", ""),
                                 threshold=settings.policy_for(line_id).threshold)
    except InvalidImageError as exc:
        return invalid(exc.reason, str(exc))
    inference_ms = (time.perf_counter() - started) * 1000.0
    heatmap_uri = _store_heatmap(settings, base, result)
    score, threshold = stored_score(result.score, result.threshold, result.is_anomalous)
    return base.with_changes(
        status=STATUS_OK,
        is_anomalous=result.is_anomalous,
        confidence=round(result.confidence, 4),
        score=score,
        raw_score=round(result.raw_score, 6),
        threshold=threshold,
        model_version=result.model_version,
        anomalies=result.anomalies,
        heatmap_uri=heatmap_uri,
        inference_ms=round(result.inference_ms or inference_ms, 2),
        processed_at=utc_now(),
    )


def stored_score(score: float, threshold: float, is_anomalous: bool) -> tuple[float, float]:
    """The score and threshold as a record keeps them, to 4 decimals, the score on its
    verdict's side: a normal part's 0.5499999 rounded up to its threshold, 0.55, read as
    a score at the threshold, which is anomalous. (Rounding keeps an anomalous score at or
    above its threshold.)

    >>> stored_score(0.5499999, 0.55, False), stored_score(0.71234, 0.5, True)
    ((0.5499, 0.55), (0.7123, 0.5))
    """
    stored, limit = round(score, 4), round(threshold, 4)
    if not is_anomalous and stored >= limit:
        stored = round(limit - 0.0001, 4)
    return stored, limit


def alert_policy(settings: Settings, line_id: str) -> AlertPolicy:
    return AlertPolicy(confidence_threshold=settings.confidence_threshold_for(line_id),
                       alert_on_invalid=settings.alert_on_invalid)


def execution_input(record: ResultRecord, alert: AlertDecision, ref: ObjectRef
                    ) -> dict[str, Any]:
    """One execution's input (`pipeline.workflow`), with a writer token of its own and
    the upload's notification, marked requeued, for the workflow to send back if another
    photo took the record's id first."""
    return workflow.with_writer({
        "item": record.to_item(),
        "record": record.to_json(),
        "alert": {"send": alert.send, "reason": alert.reason or "none",
                  "subject": alert.subject, "message": alert.message,
                  "line_id": record.line_id},
        workflow.REQUEUE: notification_body(ref, requeued=True),
    })


def execution_name(image_id: str, ref: ObjectRef) -> str:
    """The upload's idempotency key; for a photo judged under a rewritten id, the key and
    that id (80 characters, Step Functions' limit). A photo the workflow sent back after
    losing its id (`pipeline.workflow`) already ran under the bare key, which a STANDARD
    workflow would refuse for 90 days.

    >>> ref = ObjectRef("b", "line-1/cam-1/2026/11/25/" + "a" * 32 + ".jpg", "e", 1, utc_now())
    >>> execution_name("a" * 32, ref) == ref.idempotency_key
    True
    >>> len(execution_name(rewritten_image_id("a" * 32, ref), ref))
    80
    """
    if image_id == first_image_id(ref):
        return ref.idempotency_key
    return f"{ref.idempotency_key[:47]}-{image_id}"


def start_workflow(record: ResultRecord, ref: ObjectRef, settings: Settings) -> Outcome:
    """Start the workflow, named by `execution_name`. A name that already ran (STANDARD
    workflows keep names for 90 days) is taken for a duplicate delivery of the same write,
    not an error. (One case it is not, after a manual delete: a photo the workflow sent
    back, whose rival record was deleted before it came round, is judged under the
    upload id again, a name its first execution took; a STANDARD workflow then does not
    record it.)"""
    alert = decide(record, alert_policy(settings, record.line_id))
    record = record.with_changes(alert_reason=alert.reason)
    payload = execution_input(record, alert, ref)
    name = execution_name(record.image_id, ref)
    try:
        aws.client("stepfunctions").start_execution(
            stateMachineArn=settings.state_machine_arn, name=name, input=json.dumps(payload))
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ExecutionAlreadyExists":
            raise
        return Outcome(record, alert, name, duplicate=True)
    return Outcome(record, alert, name, counted_before=ref.requeued)


@dataclass
class Recorded:
    """What one batch knows about its images' records: image id -> the stored item, or
    None when the image has none. Read once for the whole batch (`recorded_items`) and
    updated as the batch starts workflows, so an upload delivered twice within one
    batch is processed once. An image it does not know is looked up on its own."""

    items: dict[str, dict[str, Any] | None] = field(default_factory=dict)

    def knows(self, image_id: str) -> bool:
        return image_id in self.items


BATCH_GET_KEYS = 100  # BatchGetItem reads at most 100 keys per call


def recorded_items(refs: Iterable[ObjectRef], settings: Settings, *,
                   attempts: int = 3) -> Recorded:
    """The records of a batch's images, in one strongly consistent BatchGetItem per 100
    images instead of a GetItem each. Best effort: keys DynamoDB leaves unprocessed
    after `attempts` tries, or a failed call, leave those images to `recorded_as`."""
    ids = sorted({first_image_id(ref) for ref in refs})
    recorded = Recorded()
    ddb = aws.client("dynamodb")
    for start in range(0, len(ids), BATCH_GET_KEYS):
        chunk = ids[start:start + BATCH_GET_KEYS]
        request: dict[str, Any] = {settings.table_name: {
            "Keys": [{"image_id": {"S": image_id}} for image_id in chunk],
            "ConsistentRead": True}}
        found: dict[str, dict[str, Any]] = {}
        try:
            for attempt in range(attempts):
                if attempt:
                    time.sleep(0.05 * 2 ** attempt)
                response = ddb.batch_get_item(RequestItems=request)
                for item in response.get("Responses", {}).get(settings.table_name, []):
                    found[item["image_id"]["S"]] = item
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    break
        except (ClientError, BotoCoreError):
            log.warning("could not read the batch's records; each image is looked up alone",
                        exc_info=True)
            continue
        unprocessed = {key["image_id"]["S"]
                       for key in request.get(settings.table_name, {}).get("Keys", [])}
        recorded.items.update({image_id: found.get(image_id) for image_id in chunk
                               if image_id not in unprocessed})
    return recorded


def process(ref: ObjectRef, settings: Settings, detector: Detector,
            recorded: Recorded | None = None) -> Outcome:
    """Analyse and start the workflow. An unexpected error is noted on the image (see
    `note_failure`) and re-raised, so the message is retried and, in the end, dead-lettered.
    `recorded` is what the batch already read about its images' records."""
    try:
        image_id, previous = recorded_as(ref, settings, recorded)
        if previous is not None:
            return previous
        outcome = start_workflow(analyse(ref, settings, detector, image_id), ref, settings)
    except Exception as exc:
        note_failure(ref, exc)
        raise
    if recorded is not None:
        recorded.items[outcome.record.image_id] = outcome.record.to_item()
    return outcome


def recorded_as(ref: ObjectRef, settings: Settings,
                recorded: Recorded | None = None) -> tuple[str, Outcome | None]:
    """The image id this upload is recorded under, and, for a redelivery of an upload
    whose record is written already, its outcome: no second detection, no second
    execution, no second set of metrics. (EXPRESS workflows do not refuse a reused
    execution name; the conditional put still guards deliveries that overlap.)

    Other bytes written to the key of a recorded upload (an upload form used twice: S3's
    POST has no If-None-Match) are another photo, of another part: it is judged under an
    id of its own (`rewritten_image_id`), and the first record keeps the version it
    judged, which the versioned bucket keeps. Two writes handled at once, in different
    invocations, both read no record and both take the upload id: the workflow's
    conditional put keeps one, and sends the other's notification back to the ingest
    queue, where this finds the first record and gives it an id of its own."""
    image_id = first_image_id(ref)
    record = _stored(image_id, settings, recorded)
    if record is not None and record.idempotency_key != ref.idempotency_key:
        first, image_id = record, rewritten_image_id(image_id, ref)
        record = _stored(image_id, settings, recorded)
        if record is None:
            log.warning("upload %s was written again after it was judged: this version (%s) "
                        "is judged as image %s, and image %s keeps version %s", ref.uri,
                        ref.version_id or "unversioned", image_id, first.image_id,
                        first.image_version or "unversioned")
    if record is None:
        return image_id, None
    return image_id, Outcome(record, AlertDecision(send=False),
                             execution_name(image_id, ref), duplicate=True)


def _stored(image_id: str, settings: Settings, recorded: Recorded | None
            ) -> ResultRecord | None:
    """The record of `image_id`: from what the batch read, or looked up on its own."""
    if recorded is not None and recorded.knows(image_id):
        item = recorded.items[image_id]
        return ResultRecord.from_item(item) if item else None
    return get_result(settings.table_name, image_id)


FAILURE_TAG = "linesight-error"
FAILED_AT_TAG = "linesight-failed-at"
_TAG_UNSAFE = re.compile(r"[^\w .:/=+@-]+")


def failure_reason(exc: BaseException) -> str:
    """A short, S3-tag-safe description of an exception.

    >>> failure_reason(RuntimeError("model <v3> missing!"))
    'RuntimeError: model v3 missing'
    """
    return _TAG_UNSAFE.sub("", f"{type(exc).__name__}: {exc}").strip()[:256]


def note_failure(ref: ObjectRef, exc: BaseException) -> None:
    """Tag the image with why it could not be processed, so a dead letter that points at
    it can say why (`linesight dlq list`). Best effort: a failure here is only logged."""
    tags = [{"Key": FAILURE_TAG, "Value": failure_reason(exc)},
            {"Key": FAILED_AT_TAG, "Value": utc_now().strftime("%Y-%m-%dT%H:%M:%SZ")}]
    try:
        aws.client("s3").put_object_tagging(Bucket=ref.bucket, Key=ref.key,
                                            Tagging={"TagSet": tags})
    except Exception:
        log.warning("could not tag %s with its failure reason", ref.uri, exc_info=True)


def _threshold(settings: Settings, line_id: str, detector: Detector) -> float:
    override = settings.policy_for(line_id).threshold
    return override if override is not None else getattr(detector, "threshold", 0.5)


def _metadata_problem(metadata: Mapping[str, str], line_id: str, camera_id: str) -> str:
    line = metadata.get(META_LINE)
    camera = metadata.get(META_CAMERA)
    if not line or not camera:
        return "the upload has no line or camera metadata"
    if line != line_id or camera != camera_id:
        return (f"metadata says line {line!r} camera {camera!r} but the upload was issued "
                f"for line {line_id!r} camera {camera_id!r}")
    return ""


def _store_heatmap(settings: Settings, record: ResultRecord, result: DetectionResult) -> str:
    if not result.heatmap_png or not settings.results_bucket:
        return ""
    # Keyed by the object version (idempotency key), so a re-uploaded object under the
    # same key never overwrites the heatmap that belongs to the recorded verdict.
    key = (f"{HEATMAP_PREFIX}{record.line_id}/{record.camera_id}/"
           f"{record.captured_at:%Y/%m/%d}/{record.image_id}-{record.idempotency_key[:16]}.png")
    aws.client("s3").put_object(Bucket=settings.results_bucket, Key=key,
                                Body=result.heatmap_png, ContentType="image/png")
    return f"s3://{settings.results_bucket}/{key}"
