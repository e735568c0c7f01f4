"""The results table's key schema and indexes, as data (used by Pulumi, the local stack
and the query code, so the three can never disagree)."""

from __future__ import annotations

from typing import Any

HASH_KEY = "image_id"
INDEX_BY_LINE_CAMERA = "by_line_camera"
INDEX_BY_LINE = "by_line"
TIME_KEY = "captured_at"

ATTRIBUTES: dict[str, str] = {
    "image_id": "S",
    "line_camera": "S",
    "line_id": "S",
    "captured_at": "S",
}

INDEXES: dict[str, tuple[str, str]] = {
    INDEX_BY_LINE_CAMERA: ("line_camera", TIME_KEY),
    INDEX_BY_LINE: ("line_id", TIME_KEY),
}


def create_table_args(table_name: str) -> dict[str, Any]:
    """Arguments for DynamoDB CreateTable (the local stack uses them as they are)."""
    return {
        "TableName": table_name,
        "BillingMode": "PAY_PER_REQUEST",
        "KeySchema": [{"AttributeName": HASH_KEY, "KeyType": "HASH"}],
        "AttributeDefinitions": [
            {"AttributeName": name, "AttributeType": kind} for name, kind in ATTRIBUTES.items()
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": index,
                "KeySchema": [
                    {"AttributeName": hash_key, "KeyType": "HASH"},
                    {"AttributeName": range_key, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
            for index, (hash_key, range_key) in INDEXES.items()
        ],
        "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
    }
