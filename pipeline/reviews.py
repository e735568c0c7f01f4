"""Human review of a result: a verdict recorded beside the model's."""

from __future__ import annotations

from typing import Any

from pipeline import aws
from pipeline.records import ResultRecord, iso, utc_now

LABELS = ("normal", "anomaly")
MAX_NOTE = 1000


class ReviewError(ValueError):
    """A review we refuse (HTTP 400)."""


def record_review(table: str, image_id: str, label: object, note: object,
                  reviewer: str, line_id: str = "") -> ResultRecord | None:
    """Store the verdict on the record, replacing an earlier review; None when the image
    has no record (the update is conditional, so it never creates one) or, with
    `line_id`, when the image belongs to another line."""
    if label not in LABELS:
        raise ReviewError(f"label must be one of {', '.join(LABELS)} (got {label!r})")
    if not isinstance(note, str):
        raise ReviewError("note must be a string")
    if len(note) > MAX_NOTE:
        raise ReviewError(f"note must be at most {MAX_NOTE} characters")
    ddb = aws.client("dynamodb")
    review = {"M": {"label": {"S": str(label)}, "note": {"S": note},
                    "reviewer": {"S": reviewer}, "reviewed_at": {"S": iso(utc_now())}}}
    condition = "attribute_exists(image_id)"
    values: dict[str, Any] = {":r": review}
    if line_id:
        condition += " AND line_id = :line"
        values[":line"] = {"S": line_id}
    try:
        response = ddb.update_item(
            TableName=table, Key={"image_id": {"S": image_id}},
            UpdateExpression="SET review = :r", ConditionExpression=condition,
            ExpressionAttributeValues=values, ReturnValues="ALL_NEW")
    except ddb.exceptions.ConditionalCheckFailedException:
        return None
    return ResultRecord.from_item(response["Attributes"])
