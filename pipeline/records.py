"""The result record: one per uploaded image, as stored in DynamoDB and shown by the API.

Keys (see `pipeline.tables`): `image_id` is the table's hash key, so lookup by image is a
GetItem; the `by_line_camera` index (`line_camera`, `captured_at`) and the `by_line` index
(`line_id`, `captured_at`) make line/camera/time queries key queries.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

STATUS_OK = "OK"
STATUS_INVALID = "INVALID"
# The line and camera of a result whose key the upload API did not issue (recorded INVALID,
# `unexpected_key`): its key names no line or camera one can trust.
UNISSUED = "unknown"
# Every result's image id: 32 hex digits (an upload id, or for a stray key a digest's start)
IMAGE_ID = re.compile(r"[0-9a-f]{32}")


def reserved_line(line_id: str) -> str:
    """Why `line_id` cannot name a configured line or a token's line, or "" if it can.

    >>> reserved_line("line-1"), reserved_line("unknown")[:22]
    ('', "'unknown' is reserved:")
    """
    if line_id != UNISSUED:
        return ""
    return f"{UNISSUED!r} is reserved: it is the line of uploads whose key the API did not issue"

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def utc_now() -> datetime:
    return datetime.now(UTC)


def parse_time(value: str) -> datetime:
    """Parse an ISO-8601 time; a value without a zone is refused, not guessed.

    >>> parse_time("2026-01-02T03:04:05+00:00").isoformat()
    '2026-01-02T03:04:05+00:00'
    >>> parse_time("2026-01-02T03:04:05Z").hour
    3
    """
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"time {value!r} has no time zone")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00: before year 1 in UTC
        raise ValueError(f"time {value!r} is out of range") from None


def parse_day_or_time(value: str) -> datetime:
    """A date (its midnight UTC) or an ISO-8601 time with a zone, as a person gives a
    bound or an expiry.

    >>> parse_day_or_time("2026-01-02").isoformat(), parse_day_or_time("2026-01-02T03:00Z").hour
    ('2026-01-02T00:00:00+00:00', 3)
    """
    if is_day(value):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    return parse_time(value)


def is_day(value: str) -> bool:
    """Whether `value` is a bare date (2026-01-02, or 20260102 as ISO 8601 allows), as
    `parse_day_or_time` reads it.

    >>> is_day("2026-01-02"), is_day("20260102"), is_day("2026-0102")
    (True, True, False)
    """
    return re.fullmatch(r"\d{4}(-?)\d{2}\1\d{2}", value) is not None


_DURATION = re.compile(r"(\d+)\s*([smhdw])")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(value: str) -> timedelta | None:
    """A span as a person gives it, `30s`, `90m`, `12h`, `30d` or `2w`; None for anything
    else (the caller tries it as a time); ValueError for a span no date can hold.

    >>> parse_duration("2h"), parse_duration(" 3 D "), parse_duration("2026-01-02")
    (datetime.timedelta(seconds=7200), datetime.timedelta(days=3), None)
    """
    match = _DURATION.fullmatch(value.strip().lower())
    if not match:
        return None
    try:
        return timedelta(**{_DURATION_UNITS[match[2]]: int(match[1])})
    except OverflowError:  # more than 999,999,999 days
        raise ValueError(f"{value.strip()!r} is too long a span") from None


def iso(value: datetime) -> str:
    """UTC ISO-8601 with milliseconds, sortable as a string.

    >>> iso(parse_time("2026-01-02T03:04:05.123456+01:00"))
    '2026-01-02T02:04:05.123+00:00'
    """
    return value.astimezone(UTC).isoformat(timespec="milliseconds")


def line_camera_key(line_id: str, camera_id: str) -> str:
    return f"{line_id}#{camera_id}"


class MalformedRecord(ValueError):
    """A stored item that does not read as a result: a field missing or of the wrong type."""

    def __init__(self, data: Mapping[str, Any], problem: str) -> None:
        self.item = dict(data) if isinstance(data, Mapping) else {}  # as stored, decoded
        self.image_id = str(self.item.get("image_id", "?"))
        super().__init__(f"result {self.image_id[:64]!r} is malformed: {problem}")


@dataclass(frozen=True)
class ResultRecord:
    image_id: str
    line_id: str
    camera_id: str
    s3_uri: str
    captured_at: datetime
    processed_at: datetime
    status: str
    is_anomalous: bool = False
    confidence: float = 0.0
    score: float = 0.0
    raw_score: float = 0.0
    threshold: float = 0.0
    model_version: str = ""
    reason: str = ""
    heatmap_uri: str = ""
    anomalies: list[dict[str, Any]] = field(default_factory=list)
    alert_reason: str = ""
    idempotency_key: str = ""
    inference_ms: float = 0.0
    review: dict[str, Any] = field(default_factory=dict)
    client_image_id: str = ""
    # The S3 version judged (the images bucket is versioned): what the verdict is about,
    # even if the key is written again later (a reused upload form).
    image_version: str = ""

    @property
    def line_camera(self) -> str:
        return line_camera_key(self.line_id, self.camera_id)

    @property
    def end_to_end_ms(self) -> float:
        return (self.processed_at - self.captured_at).total_seconds() * 1000.0

    def with_changes(self, **changes: Any) -> ResultRecord:
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON for the API, the workflow input and logs."""
        data = asdict(self)
        data["captured_at"] = iso(self.captured_at)
        data["processed_at"] = iso(self.processed_at)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ResultRecord:
        """Raises MalformedRecord, naming the record and what is wrong, for data that is
        not a result (an item edited by hand, or written by something else).

        >>> ResultRecord.from_json({"image_id": "ab12", "line_id": "l", "camera_id": "c",
        ...                         "s3_uri": "s3://b/k", "status": "OK",
        ...                         "captured_at": "2026-01-02T03:04:05Z"})
        Traceback (most recent call last):
        ...
        pipeline.records.MalformedRecord: result 'ab12' is malformed: no processed_at
        """
        try:
            known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
            known["captured_at"] = parse_time(str(data["captured_at"]))
            known["processed_at"] = parse_time(str(data["processed_at"]))
            for name in _FLOATS:
                if name in known:
                    known[name] = float(known[name])
                    if not math.isfinite(known[name]):  # no JSON, no sums, no plots
                        raise ValueError(f"{name} is {known[name]}")
            for name, kind in _TYPES.items():  # a set or a number: rows that cannot be sent
                if name in known and not isinstance(known[name], kind):
                    raise TypeError(f"{name} is {type(known[name]).__name__}, not "
                                    f"{_KIND_NAMES[kind]}")
            if not all(isinstance(anomaly, dict) for anomaly in known.get("anomalies", [])):
                raise TypeError("anomalies holds something other than maps")
            for name in ("anomalies", "review"):  # a set or bytes inside: no JSON answer
                if name in known:
                    _as_json(name, known[name])
            return cls(**known)
        except KeyError as exc:
            raise MalformedRecord(data, f"no {exc.args[0]}") from None
        except (TypeError, ValueError) as exc:
            raise MalformedRecord(data, str(exc)) from None

    def to_item(self) -> dict[str, Any]:
        """The DynamoDB item, in the typed (low-level) form the workflow's putItem takes."""
        plain = self.to_json()
        plain["line_camera"] = self.line_camera
        plain = {k: v for k, v in plain.items() if v not in ("", [], {}, None)}
        plain["is_anomalous"] = self.is_anomalous
        decimals = json.loads(json.dumps(plain), parse_float=Decimal)
        return {key: _serializer.serialize(value) for key, value in decimals.items()}

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> ResultRecord:
        """Decode a typed DynamoDB item (GetItem, Query or a stream image)."""
        plain = {key: _deserializer.deserialize(value) for key, value in item.items()}
        return cls.from_json(_undecimal(plain))


_FLOATS = ("confidence", "score", "raw_score", "threshold", "inference_ms")
# Each other field's type as a result holds it (review is read with .get everywhere;
# "false" as a string would read as anomalous).
_TYPES: dict[str, type] = {
    **dict.fromkeys(("image_id", "line_id", "camera_id", "s3_uri", "status", "model_version",
                     "reason", "heatmap_uri", "alert_reason", "idempotency_key",
                     "client_image_id", "image_version"), str),
    "is_anomalous": bool, "anomalies": list, "review": dict,
}
_KIND_NAMES = {str: "a string", bool: "true or false", list: "a list", dict: "a map"}


def _as_json(name: str, value: Any) -> None:
    """Raise TypeError naming `name` when `value` holds what JSON cannot (a set, bytes: an
    item edited by hand), which the API would fail to answer with at all (a 502).

    >>> _as_json("review", {"label": "normal", "tags": {"a"}})
    Traceback (most recent call last):
    ...
    TypeError: review holds a set, which JSON cannot
    """
    try:
        json.dumps(value, allow_nan=False)
    except TypeError as exc:
        kind = str(exc).removeprefix("Object of type ").split(" ", 1)[0]
        raise TypeError(f"{name} holds a {kind}, which JSON cannot") from None
    except ValueError:
        raise TypeError(f"{name} holds a number JSON cannot (NaN or infinite)") from None


def _undecimal(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _undecimal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_undecimal(v) for v in value]
    return value
