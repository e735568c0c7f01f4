"""Reading results back: by image id (GetItem) and by line/camera/time (index queries)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline import aws
from pipeline.records import (
    MalformedRecord,
    ResultRecord,
    is_day,
    iso,
    line_camera_key,
    parse_day_or_time,
    parse_duration,
)
from pipeline.tables import HASH_KEY, INDEX_BY_LINE, INDEX_BY_LINE_CAMERA, TIME_KEY

MAX_PAGE = 500
# With `anomalous` or `reviewed`, DynamoDB's Limit counts items read before the filter: a
# page is filled by reading again, at most this many times per request (a rare match in a
# long line still ends a page short, with a next_token).
MAX_READS_PER_PAGE = 5


class QueryError(ValueError):
    """A bad query parameter (HTTP 400); the message names it."""


def parse_when(value: str, name: str, now: datetime | None = None, *,
               upper: bool = False) -> datetime:
    """A time bound as a person gives it: ISO-8601 with a zone, a date or an age like `2h`
    (`30m`, `7d`, `2w`). Raises QueryError naming `name` and the forms. A date is the
    whole of that day (UTC): its first millisecond, or its last as an `upper` bound (until),
    so `since 2026-01-02 until 2026-01-02` is that day, not its first instant.

    >>> parse_when("2026-01-02", "since").isoformat()
    '2026-01-02T00:00:00+00:00'
    >>> parse_when("2026-01-02", "until", upper=True).isoformat()
    '2026-01-02T23:59:59.999000+00:00'
    >>> parse_when("2026-01-02T03:04:05Z", "since").hour
    3
    >>> from pipeline.records import parse_time
    >>> parse_when("2h", "since", now=parse_time("2026-01-02T03:00:00Z")).hour
    1
    >>> parse_when("yesterday", "since")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pipeline.queries.QueryError: since 'yesterday' is not a time: use e.g. 2h, 3d, 2026-01-02 ...
    >>> parse_when("2026-02-30", "since")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pipeline.queries.QueryError: since '2026-02-30' is not a time: ...
    """
    value = value.strip()
    try:
        age = parse_duration(value)
        if age is not None:
            return (now or datetime.now(UTC)) - age
        when = parse_day_or_time(value)
        if upper and is_day(value):
            when += timedelta(days=1, milliseconds=-1)  # results are stored to the ms
        return when
    except (ValueError, OverflowError) as exc:  # OverflowError: an age before year 1
        hint = ("add a zone, e.g. 2026-01-02T08:00:00Z" if "zone" in str(exc)
                else "use e.g. 2h, 3d, 2026-01-02 or 2026-01-02T08:00:00Z")
        raise QueryError(f"{name} {value[:40]!r} is not a time: {hint}") from None


@dataclass(frozen=True)
class ResultQuery:
    line_id: str = ""
    camera_id: str = ""
    since: datetime | None = None
    until: datetime | None = None
    anomalous: bool | None = None
    reviewed: bool | None = None
    limit: int = 100

    def __post_init__(self) -> None:
        if self.since and self.until and self.since > self.until:
            raise QueryError(f"since ({iso(self.since)}) is after until ({iso(self.until)})")


@dataclass(frozen=True)
class Page:
    records: list[ResultRecord]
    next_token: str
    unreadable: list[str] = field(default_factory=list)  # why each malformed item was left out


def get_result(table: str, image_id: str) -> ResultRecord | None:
    item = aws.client("dynamodb").get_item(
        TableName=table, Key={"image_id": {"S": image_id}}, ConsistentRead=True).get("Item")
    return ResultRecord.from_item(item) if item else None


def query_results(table: str, query: ResultQuery, next_token: str = "") -> Page:
    """One page of at most `limit` results, newest first when a line is given (a key query
    on an index); without a line it is a scan, which is fine for small tables and
    dashboards. A page can hold fewer, even none, and still have a `next_token`: the
    results end only where it is empty."""
    if query.camera_id and not query.line_id:
        raise QueryError("camera needs line")
    if not 1 <= query.limit <= MAX_PAGE:
        raise QueryError(f"limit must be between 1 and {MAX_PAGE}")
    args: dict[str, Any] = {"TableName": table, "Limit": query.limit}
    names: dict[str, str] = {}
    values: dict[str, Any] = {}
    filters: list[str] = []
    start = _decode_token(next_token) if next_token else None
    if query.line_id:
        index, hash_name, hash_value = (
            (INDEX_BY_LINE_CAMERA, "line_camera", line_camera_key(query.line_id, query.camera_id))
            if query.camera_id else (INDEX_BY_LINE, "line_id", query.line_id))
        condition = "#h = :h"
        names["#h"], values[":h"] = hash_name, {"S": hash_value}
        if query.since and query.until:
            condition += " AND #t BETWEEN :since AND :until"
        elif query.since:
            condition += " AND #t >= :since"
        elif query.until:
            condition += " AND #t <= :until"
        args.update(IndexName=index, KeyConditionExpression=condition, ScanIndexForward=False)
    else:
        if query.since:
            filters.append("#t >= :since")
        if query.until:
            filters.append("#t <= :until")
    if query.since or query.until:
        names["#t"] = TIME_KEY
    if query.since:
        values[":since"] = {"S": iso(query.since)}
    if query.until:
        values[":until"] = {"S": iso(query.until)}
    if query.anomalous is not None:
        filters.append("is_anomalous = :a")
        values[":a"] = {"BOOL": query.anomalous}
    if query.reviewed is not None:
        filters.append("attribute_exists(review.label)" if query.reviewed
                       else "attribute_not_exists(review.label)")
    if filters:
        args["FilterExpression"] = " AND ".join(filters)
    if start is not None:
        if query.line_id:
            _check_start(start, hash_name, hash_value, until=iso(query.until) if query.until
                         else "")
            if query.since and start[TIME_KEY]["S"] < iso(query.since):
                # Newest first, so nothing after this key is as new as `since`: the end.
                # An age (`since=2h`) is resolved again at each page, and moves past the
                # oldest item of the page before.
                return Page([], "")
        else:
            _check_start(start)
        args["ExclusiveStartKey"] = start
    if names:
        args["ExpressionAttributeNames"] = names
    if values:
        args["ExpressionAttributeValues"] = values
    ddb = aws.client("dynamodb")
    read = ddb.query if query.line_id else ddb.scan
    # An item edited by hand or written by something else is left out and named, so that
    # one bad item does not hide every other result.
    records: list[ResultRecord] = []
    unreadable: list[str] = []
    for _ in range(MAX_READS_PER_PAGE if filters else 1):
        response = read(**args)
        for item in response.get("Items", []):
            try:
                records.append(ResultRecord.from_item(item))
            except MalformedRecord as exc:
                unreadable.append(str(exc))
        last = response.get("LastEvaluatedKey")
        if not last or len(records) + len(unreadable) >= query.limit:
            break
        # never more than `limit` in all: read only as many items as are missing
        args.update(ExclusiveStartKey=last, Limit=query.limit - len(records) - len(unreadable))
    return Page(records, _encode_token(last) if last else "", unreadable)


def iter_results(table: str, query: ResultQuery,
                 unreadable: list[str] | None = None) -> Iterator[ResultRecord]:
    """Every matching result, page by page; malformed items are added to `unreadable`."""
    token = ""
    while True:
        page = query_results(table, query, token)
        if unreadable is not None:
            unreadable.extend(page.unreadable)
        yield from page.records
        if not page.next_token:
            return
        token = page.next_token


def _encode_token(key: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, sort_keys=True).encode()).decode()


def _check_start(start: dict[str, Any], hash_name: str = "", hash_value: str = "",
                 until: str = "") -> None:
    """Refuse a page token that another query issued: DynamoDB would refuse its key (a
    500; also one whose time is after this query's `until`), and one from another line's
    query would not even be this line's.

    >>> _check_start({"image_id": {"S": "a"}})
    >>> _check_start({"image_id": {"S": "a"}, "line_id": {"S": "l2"}, "captured_at": {"S": "t"}},
    ...              "line_id", "l1")
    Traceback (most recent call last):
    ...
    pipeline.queries.QueryError: next_token belongs to another query: ask again without it
    >>> _check_start({"image_id": {"S": ""}})
    Traceback (most recent call last):
    ...
    pipeline.queries.QueryError: next_token is not a token this API issued
    """
    expected = {HASH_KEY, hash_name, TIME_KEY} if hash_name else {HASH_KEY}
    if set(start) != expected or (hash_name and start[hash_name]["S"] != hash_value):
        raise QueryError("next_token belongs to another query: ask again without it")
    at = start.get(TIME_KEY, {}).get("S", "")
    if until and at > until:
        raise QueryError("next_token belongs to another query: ask again without it")
    # Values DynamoDB refuses as a key (a 500): empty, or over its limits (2,048 bytes for
    # the table's key, 1,024 for an index's sort key). Not checked further: the last item a
    # page read may itself be one edited by hand, and its token must still page on.
    if not _fits(start[HASH_KEY]["S"], 2048) or (TIME_KEY in start and not _fits(at, 1024)):
        raise QueryError("next_token is not a token this API issued")


def _fits(value: str, limit: int) -> bool:
    return 0 < len(value.encode("utf-8", "surrogatepass")) <= limit


def _decode_token(token: str) -> dict[str, Any]:
    try:
        key = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, RecursionError):  # RecursionError: nested too deep to parse
        raise QueryError("next_token is not a token this API issued") from None
    # A key this API issued maps attribute names to typed string values, e.g. {"S": "..."}.
    well_formed = isinstance(key, dict) and key and all(
        isinstance(value, dict) and len(value) == 1 and isinstance(value.get("S"), str)
        for value in key.values())
    if not well_formed:
        raise QueryError("next_token is not a token this API issued")
    return key
