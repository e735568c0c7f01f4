"""The result record: one per uploaded image, as stored in DynamoDB and shown by the API.

Keys (see `pipeline.tables`): `image_id` is the table's hash key, so lookup by image is a
GetItem; the `by_line_camera` index (`line_camera`, `captured_at`) and the `by_line` index
(`line_id`, `captured_at`) make line/camera/time queries key queries.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

STATUS_OK = "OK"
STATUS_INVALID = "INVALID"

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
    return parsed.astimezone(UTC)


_DURATION = re.compile(r"(\d+)\s*([smhdw])")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(value: str) -> timedelta | None:
    """A span as a person gives it, `30s`, `90m`, `12h`, `30d` or `2w`; None for anything
    else (the caller tries it as a time).

    >>> parse_duration("2h"), parse_duration(" 3 D "), parse_duration("2026-01-02")
    (datetime.timedelta(seconds=7200), datetime.timedelta(days=3), None)
    """
    match = _DURATION.fullmatch(value.strip().lower())
    return timedelta(**{_DURATION_UNITS[match[2]]: int(match[1])}) if match else None


def iso(value: datetime) -> str:
    """UTC ISO-8601 with milliseconds, sortable as a string.

    >>> iso(parse_time("2026-01-02T03:04:05.123456+01:00"))
    '2026-01-02T02:04:05.123+00:00'
    """
    return value.astimezone(UTC).isoformat(timespec="milliseconds")


def line_camera_key(line_id: str, camera_id: str) -> str:
    return f"{line_id}#{camera_id}"


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
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        known["captured_at"] = parse_time(str(data["captured_at"]))
        known["processed_at"] = parse_time(str(data["processed_at"]))
        for name in ("confidence", "score", "raw_score", "threshold", "inference_ms"):
            if name in known:
                known[name] = float(known[name])
        known["is_anomalous"] = bool(known.get("is_anomalous", False))
        return cls(**known)

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


def _undecimal(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _undecimal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_undecimal(v) for v in value]
    return value
