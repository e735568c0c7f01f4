"""LineSight's Chalice app: the authorized upload and query API, and the event handlers.

Thin by design: parse the event, call `pipeline`, shape the answer. Handlers:
- `token_authorizer`: built-in authorizer on the `Authorization` header (camera and
  reviewer tokens, `pipeline.tokens`);
- `app` routes: GET /getsignedurl (the seed's), POST /uploads, GET /results,
  GET /results/{image_id}, POST /results/{image_id}/review;
- `ingest`: SQS messages carrying S3 ObjectCreated notifications;
- `to_lake`: DynamoDB stream records of the results table, to Firehose.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from chalice import (
    AuthResponse,
    BadRequestError,
    Chalice,
    ChaliceViewError,
    ForbiddenError,
    NotFoundError,
    Response,
)
from chalice.app import Request
from chalicelib.telemetry import emit_lake_rows, emit_outcome, emit_unexpected_error

from pipeline import analytics, queries, reviews, tokens, uploads
from pipeline import ingest as ingest_step
from pipeline.aws import client
from pipeline.detector import load_detector
from pipeline.records import IMAGE_ID, MalformedRecord
from pipeline.settings import Settings, SettingsError, current, parse_flag

app = Chalice(app_name="linesight")
app.log.setLevel(logging.INFO)
log = logging.getLogger("linesight")


# --- API -----------------------------------------------------------------------------

_LocalNotAuthorized: type[Exception] | None
_LocalGatewayError: type[Exception] | None
try:  # chalice's local server and test client answer 401 for this class
    from chalice.local import LocalGatewayException as _LocalGatewayError
    from chalice.local import NotAuthorizedError as _LocalNotAuthorized
except ImportError:  # a deployed Lambda ships chalice's runtime only
    _LocalNotAuthorized = _LocalGatewayError = None


class Unauthorized(_LocalNotAuthorized or Exception):  # type: ignore[misc]
    """No valid token. API Gateway answers 401 when a TOKEN authorizer fails with exactly
    the message "Unauthorized" (a Deny policy would give 403, which we keep for a valid
    token used outside its scope); chalice local answers 401 for `NotAuthorizedError`."""

    def __init__(self) -> None:
        if _LocalNotAuthorized is None:
            super().__init__("Unauthorized")
        else:
            super().__init__({"x-amzn-ErrorType": "UnauthorizedException"},
                             b'{"message":"Unauthorized"}')

    def __str__(self) -> str:
        return "Unauthorized"


class CannotCheckTokens(_LocalGatewayError or Exception):  # type: ignore[misc]
    """The authorizer could not check a token (no tokens table set, AWS unreachable). API
    Gateway answers 500 for any error an authorizer raises; chalice local answers with this
    class's code and message (for any other error it would close the connection unanswered).
    """

    CODE = 500

    def __init__(self, why: str) -> None:
        self.why = why
        if _LocalGatewayError is None:
            super().__init__(why)
        else:
            super().__init__({"x-amzn-ErrorType": "AuthorizerConfigurationException"},
                             json.dumps({"message": f"cannot check tokens: {why}"}).encode())

    def __str__(self) -> str:
        return f"cannot check tokens: {self.why}"


@app.authorizer(ttl_seconds=int(tokens.CACHE_TTL_SECONDS))
def token_authorizer(auth_request: Any) -> AuthResponse:
    token = tokens.token_from_header(auth_request.token)
    try:
        settings = current()
        settings.require("tokens_table")
        scope = tokens.verify(settings.tokens_table, token)
    except (SettingsError, ClientError, BotoCoreError) as exc:
        log.error("cannot check tokens: %s", exc)
        raise CannotCheckTokens(str(exc)) from None
    if scope is None:  # missing, malformed, unknown, revoked or expired: 401
        raise Unauthorized()
    return AuthResponse(routes=["*"], principal_id=scope.token_id,
                        context={"line_id": scope.line_id, "camera_id": scope.camera_id,
                                 "role": scope.role})


def _request() -> Request:
    request = app.current_request
    assert request is not None, "only called while Chalice handles a request"
    return request


def _json_object() -> dict[str, Any]:
    """The request's body as a JSON object, or a 400 saying what is wrong with it. Chalice
    routes any case of `application/json` here but its `json_body` parses only the exact
    lower case (`Application/JSON` read as no body), and a body nested too deep for the
    parser (about 1,000 brackets) raised RecursionError: a 500."""
    raw = _request().raw_body
    if not raw:
        raise BadRequestError("the body must be a JSON object; it is empty")
    try:
        body = json.loads(raw)
    except ValueError as exc:  # not JSON, or not UTF-8
        raise BadRequestError(f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequestError("the body is not valid JSON: nested too deeply") from None
    if not isinstance(body, dict):
        raise BadRequestError(f"the body must be a JSON object, not {type(body).__name__}")
    return body


def _authorizer() -> dict[str, Any]:
    return (_request().context or {}).get("authorizer") or {}


def _line() -> str:
    """The token's line, whatever its role. Without one the request is refused: an empty
    line would be no filter at all on the results routes."""
    line_id = _authorizer().get("line_id", "")
    if not line_id:
        raise ForbiddenError("the token has no line")
    return str(line_id)


def _camera_scope() -> tuple[str, str]:
    """The (line, camera) a camera token uploads for; any other token is refused. A
    context without a role is a camera's (an answer cached before roles existed)."""
    context = _authorizer()
    if context.get("role", tokens.CAMERA) != tokens.CAMERA:
        raise ForbiddenError("a reviewer token cannot upload; cameras upload with their own "
                             "tokens")
    line_id, camera_id = _line(), context.get("camera_id", "")
    if not camera_id:
        raise ForbiddenError("the token has no camera")
    return line_id, str(camera_id)


def _reviewer_line() -> str:
    """The line a reviewer token may label. A camera token may not: it sits on the factory
    floor, and a review becomes a training label (`export-dataset`)."""
    if _authorizer().get("role") != tokens.REVIEWER:
        raise ForbiddenError("only a reviewer token may review; an operator creates one with "
                             "`linesight tokens create --role reviewer --line LINE`")
    return _line()


def _settings_to(doing: str, *names: str) -> Settings:
    """The settings a route needs: a 500 naming what is missing (not botocore's complaint
    about a bucket or table named "")."""
    try:
        settings = current()
        settings.require(*names)
    except SettingsError as exc:
        log.error("cannot %s: %s", doing, exc)
        raise ChaliceViewError(f"cannot {doing}: {exc}") from None
    return settings


def _results_table() -> str:
    return _settings_to("read results", "table_name").table_name


def _known_image_id(image_id: str) -> str:
    """An id no result has is answered before DynamoDB sees it (it refuses keys over 2 KB:
    a 500)."""
    if not IMAGE_ID.fullmatch(image_id):
        raise NotFoundError(f"no result for image {image_id[:64]!r}")
    return image_id


def _target(line_id: Any, camera_id: Any, image_id: Any, content_type: Any,
            names: dict[str, str] | None = None) -> uploads.UploadTarget:
    try:
        target = uploads.new_target(line_id, camera_id, image_id or "",
                                    content_type or "image/jpeg", names=names)
    except uploads.UploadRequestError as exc:
        raise BadRequestError(str(exc)) from None
    allowed_line, allowed_camera = _camera_scope()
    if (target.line_id, target.camera_id) != (allowed_line, allowed_camera):
        raise ForbiddenError(
            f"this token may upload for line {allowed_line!r} camera {allowed_camera!r} only")
    return target


@app.route("/getsignedurl", methods=["GET"], authorizer=token_authorizer)
def get_signed_url() -> dict[str, Any]:
    """The seed's route: a presigned PUT URL for one image."""
    params: Mapping[str, str] = _request().query_params or {}
    target = _target(params.get("assemblylineid"), params.get("cameraid"),
                     params.get("imageid"), params.get("contenttype"), uploads.SEED_NAMES)
    settings = _settings_to("sign uploads", "images_bucket")
    try:
        length = uploads.declared_length(params.get("contentlength"), settings.max_upload_bytes)
    except uploads.UploadRequestError as exc:
        raise BadRequestError(str(exc)) from None
    url = uploads.presigned_put(client("s3"), settings.images_bucket, target,
                                content_length=length)
    return {"uploadURL": url, "photoFilename": target.key, "key": target.key,
            "image_id": target.upload_id, "headers": uploads.put_headers(target),
            "expires_in": uploads.MAX_EXPIRY_SECONDS}


@app.route("/uploads", methods=["POST"], authorizer=token_authorizer)
def create_upload() -> Response:
    """A presigned POST: exact key, content type and metadata, size range."""
    body = _json_object()
    target = _target(body.get("line_id"), body.get("camera_id"), body.get("image_id"),
                     body.get("content_type"))
    settings = _settings_to("sign uploads", "images_bucket")
    post = uploads.presigned_post(client("s3"), settings.images_bucket, target,
                                  settings.max_upload_bytes)
    return Response(body=post, status_code=201)


@app.route("/results", methods=["GET"], authorizer=token_authorizer)
def list_results() -> dict[str, Any]:
    params: Mapping[str, str] = _request().query_params or {}
    # A token reads its own line's results: the line defaults to it, another is refused.
    own_line = _line()
    line = params.get("line") or own_line
    if line != own_line:
        raise ForbiddenError(f"this token may read line {own_line!r} only")
    try:
        query = queries.ResultQuery(
            line_id=line,
            # checked as uploads name cameras (DynamoDB refuses a key over 2 KB: a 500)
            camera_id=uploads.validate_id(params.get("camera"), "camera", required=False),
            since=_when(params.get("since"), "since"),
            until=_when(params.get("until"), "until", upper=True),  # a date: its whole day
            anomalous=_flag(params.get("anomalous"), "anomalous"),
            reviewed=_flag(params.get("reviewed"), "reviewed"),
            limit=_limit(params.get("limit")),
        )
        page = queries.query_results(_results_table(), query, params.get("next_token", ""))
    except (ValueError, queries.QueryError) as exc:
        raise BadRequestError(str(exc)) from None
    answer: dict[str, Any] = {"results": [record.to_json() for record in page.records],
                              "next_token": page.next_token or None}
    if page.unreadable:  # items that are not results: named, not a 500 for the whole page
        log.warning("left out of a results page: %s", "; ".join(page.unreadable))
        answer["unreadable"] = page.unreadable
    return answer


def _limit(value: str | None) -> int:
    if not value:
        return 100
    # isdigit alone passes "²"; int() refuses over 4,300 digits in words of its own
    if not (value.isascii() and value.isdigit()) or len(value) > 6:
        raise ValueError(f"limit must be a whole number from 1 to {queries.MAX_PAGE}")
    return int(value)


def _when(value: str | None, name: str, *, upper: bool = False) -> datetime | None:
    return queries.parse_when(value, name, upper=upper) if value else None


def _flag(value: str | None, name: str) -> bool | None:
    if value is None or value == "":
        return None
    flag = parse_flag(value)
    if flag is None:
        raise ValueError(f"{name} must be true or false")
    return flag


@app.route("/results/{image_id}", methods=["GET"], authorizer=token_authorizer)
def get_result(image_id: str) -> dict[str, Any]:
    try:
        record = queries.get_result(_results_table(), _known_image_id(image_id))
    except MalformedRecord as exc:  # an item edited by hand or written by something else
        if exc.item.get("line_id") != _line():
            raise NotFoundError(f"no result for image {image_id!r} (yet)") from None
        log.error("cannot answer for image %s: %s", image_id, exc)
        raise ChaliceViewError(f"the stored result is unreadable: {exc}") from None
    if record is None or record.line_id != _line():  # another line's image looks absent
        raise NotFoundError(f"no result for image {image_id!r} (yet)")
    return record.to_json()


@app.route("/results/{image_id}/review", methods=["POST"], authorizer=token_authorizer)
def review_result(image_id: str) -> dict[str, Any]:
    line_id = _reviewer_line()
    body = _json_object()
    token_id = _authorizer().get("principalId", "")
    try:
        # A token reviews only its own line's images (another line's look absent: 404).
        record = reviews.record_review(_results_table(), _known_image_id(image_id),
                                       body.get("label"),
                                       body.get("note") or "", reviewer=token_id or "api",
                                       line_id=line_id)
    except reviews.ReviewError as exc:
        raise BadRequestError(str(exc)) from None
    except MalformedRecord as exc:  # stored (on the token's line), but the result's side
        log.error("reviewed image %s, whose stored result is unreadable: %s", image_id, exc)
        return {"image_id": image_id, "review": exc.item.get("review"),
                "unreadable": f"the review is recorded, but the stored result is "
                              f"unreadable: {exc}"}
    if record is None:
        raise NotFoundError(f"no result for image {image_id!r}")
    return record.to_json()


# --- Event handlers --------------------------------------------------------------------

# The queue and stream named here are placeholders for `chalice package`; the Pulumi
# program creates the real event source mappings (see infra/api.py).
@app.on_sqs_message(queue="linesight-ingest", batch_size=10)
def ingest(event: Any) -> dict[str, Any]:
    """Every S3 notification in the batch: detect, then start the workflow. Expected
    problems become INVALID records; unexpected errors fail only their own message."""
    settings = current()
    settings.require("state_machine_arn", "table_name")
    detector = load_detector(settings.detector_backend, settings.model_uri,
                             settings.sagemaker_endpoint)
    failures = []
    batch: list[tuple[str, list[ingest_step.ObjectRef]]] = []
    for message in event:
        message_id = message.to_dict().get("messageId", "")
        try:
            batch.append((message_id, list(ingest_step.object_refs(message.body))))
        except Exception:
            log.exception("message %s is not an S3 event; it will be retried", message_id)
            emit_unexpected_error("ingest", settings.metrics_namespace)
            failures.append({"itemIdentifier": message_id})
    # One read for the whole batch: which of its images are recorded already.
    recorded = ingest_step.recorded_items((ref for _, refs in batch for ref in refs), settings)
    for position, (message_id, refs) in enumerate(batch):
        if ingest_step.out_of_time(event.context):
            left = [{"itemIdentifier": later} for later, _ in batch[position:]]
            log.warning("%d message(s) left for a retry: the function's time is nearly up",
                        len(left))
            failures.extend(left)
            break
        try:
            for ref in refs:
                outcome = ingest_step.process(ref, settings, detector, recorded)
                emit_outcome(outcome, settings.metrics_namespace)
        except Exception:
            log.exception("ingest failed for message %s; it will be retried", message_id)
            emit_unexpected_error("ingest", settings.metrics_namespace)
            failures.append({"itemIdentifier": message_id})
    return {"batchItemFailures": failures}


@app.on_dynamodb_record(stream_arn="arn:aws:dynamodb:region:account:table/linesight/stream/x",
                        batch_size=100)
def to_lake(event: Any) -> dict[str, Any]:
    """New results, and results a person reviewed, become lake rows in Firehose (the
    records `analytics.LAKE_STREAM_FILTERS` lets through). Rows Firehose refuses are
    retried here; rows it refuses every time, and records that cannot be read as a
    result, go to the lake failure queue as data (and only if that fails are they reported
    back to Lambda, which resends the batch from the first of them)."""
    settings = current()
    settings.require("firehose_stream")
    rows, unreadable = analytics.rows_from_images(
        (record.sequence_number, record.new_image, record.aws_region or settings.region)
        for record in event if analytics.is_lake_record(record.to_dict()) and record.new_image)
    failures: list[str] = []
    if rows:
        refused = set(analytics.send_rows(settings.firehose_stream, rows))
        emit_lake_rows(len(rows) - len(refused), settings.metrics_namespace)
        failures += _park([(sequence, row) for sequence, row in rows if sequence in refused],
                          "Firehose refused them every time", analytics.LAKE_ROWS, settings)
    for sequence, image, reason in unreadable:
        # Permanent: retrying cannot help, and reporting it would make Lambda resend every
        # later record of the batch. It is parked as the stream carried it, for a redrive
        # once the code that reads it is fixed.
        log.error("stream record %s %s", sequence, reason)
        emit_unexpected_error("lake-decode", settings.metrics_namespace)
        failures += _park([(sequence, image)], reason, analytics.STREAM_IMAGES, settings)
    return {"batchItemFailures": [{"itemIdentifier": sequence} for sequence in failures]}


def _park(entries: list[tuple[str, Mapping[str, Any]]], reason: str, kind: str,
          settings: Settings) -> list[str]:
    """Park (sequence, data) pairs on the lake failure queue; returns the sequence numbers
    of those that could not be parked, for Lambda to retry."""
    if not entries:
        return []
    if settings.lake_failure_queue_url:
        try:
            analytics.park_rows(settings.lake_failure_queue_url,
                                [data for _, data in entries], reason, kind=kind)
            log.error("%d stream records went to the lake failure queue (%s; "
                      "`linesight dlq redrive --queue lake`)", len(entries), reason)
            return []
        except (ClientError, BotoCoreError):
            log.exception("could not park %d stream records; Lambda retries them",
                          len(entries))
    return [sequence for sequence, _ in entries]
