"""Human review of a result: a verdict recorded beside the model's."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any

from pipeline import aws
from pipeline.records import ResultRecord, iso, parse_time, utc_now

LABELS = ("normal", "anomaly")
MAX_NOTE = 1000


class ReviewError(ValueError):
    """A review we refuse (HTTP 400)."""


def record_review(table: str, image_id: str, label: object, note: object,
                  reviewer: str, line_id: str = "") -> ResultRecord | None:
    """Store the verdict on the record, replacing an earlier review; None when the image
    has no record (the update is conditional, so it never creates one) or, with
    `line_id`, when the image belongs to another line.

    A review's `reviewed_at` is always later than the one it replaces: the lake keeps
    every review as a row and takes an image's latest by `reviewed_at`, so a writer whose
    clock runs behind (a laptop's `linesight review`) would otherwise leave the lake with
    another label than the table. Such a write is stamped a millisecond after the stored
    review instead."""
    if label not in LABELS:
        raise ReviewError(f"label must be one of {', '.join(LABELS)} (got {label!r})")
    if not isinstance(note, str):
        raise ReviewError("note must be a string")
    if len(note) > MAX_NOTE:
        raise ReviewError(f"note must be at most {MAX_NOTE} characters")
    ddb = aws.client("dynamodb")
    at, seen = utc_now(), None  # seen: the stored review's reviewed_at, once read back
    for _ in range(MAX_TRIES):
        condition = "attribute_exists(image_id)"
        values: dict[str, Any] = {":r": {"M": {
            "label": {"S": str(label)}, "note": {"S": note}, "reviewer": {"S": reviewer},
            "reviewed_at": {"S": iso(at)}}}}
        if seen is None:  # the first try: later than whatever is stored, in our format
            condition += (" AND (attribute_not_exists(review.reviewed_at) OR "
                          "review.reviewed_at < :at)")
            values[":at"] = {"S": iso(at)}
        else:  # stamped after the review read back (any format), if it is still that one
            condition += " AND review.reviewed_at = :seen"
            values[":seen"] = {"S": seen}
        if line_id:
            condition += " AND line_id = :line"
            values[":line"] = {"S": line_id}
        try:
            response = ddb.update_item(
                TableName=table, Key={"image_id": {"S": image_id}},
                UpdateExpression="SET review = :r", ConditionExpression=condition,
                ExpressionAttributeValues=values, ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD")
        except ddb.exceptions.ConditionalCheckFailedException as exc:
            stored = exc.response.get("Item") or {}
            if not stored or (line_id and stored.get("line_id") != {"S": line_id}):
                return None  # no such record, or another line's
            seen = stored.get("review", {}).get("M", {}).get("reviewed_at", {}).get("S")
            if seen is not None:  # None: the review went meanwhile; try as the first time
                with contextlib.suppress(ValueError):  # a time edited by hand into no time
                    at = max(at, parse_time(seen) + timedelta(milliseconds=1))
            continue
        return ResultRecord.from_item(response["Attributes"])
    raise ReviewError("the image was reviewed again at the same moment; send it again")


MAX_TRIES = 3

