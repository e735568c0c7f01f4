"""Paging through results with items edited by hand among them, against moto's DynamoDB."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from pipeline import queries, tables


@pytest.mark.parametrize("edited_id, edited_at, readable", [
    ("hand-edited", "2026-11-25T08:00:00Z", True),  # an id no upload has, but a result
    ("d" * 32, "2026-11-25T08:00:00 edited", False),  # a time no result holds
])
@mock_aws
def test_a_page_that_ends_at_an_item_edited_by_hand_pages_on(
        aws_env: None, edited_id: str, edited_at: str, readable: bool) -> None:
    """The last item a page reads is the key its next_token carries: a check of that key
    for what results hold refused the API's own token there, and `linesight results` and
    export-dataset stopped; the item is named under unreadable and the rest listed."""
    ddb = boto3.client("dynamodb")
    ddb.create_table(**tables.create_table_args("results"))
    for image_id, at in (("a" * 32, "2026-11-25T10:00:00Z"), ("b" * 32, "2026-11-25T09:00:00Z"),
                         (edited_id, edited_at), ("c" * 32, "2026-11-25T07:00:00Z")):
        ddb.put_item(TableName="results", Item={
            "image_id": {"S": image_id}, "line_id": {"S": "line-1"},
            "camera_id": {"S": "cam-1"}, "line_camera": {"S": "line-1#cam-1"},
            "s3_uri": {"S": "s3://images/k.jpg"}, "status": {"S": "OK"},
            "captured_at": {"S": at}, "processed_at": {"S": "2026-11-25T10:00:00Z"}})
    unreadable: list[str] = []

    listed = list(queries.iter_results(
        "results", queries.ResultQuery(line_id="line-1", limit=3), unreadable))

    expected = ["a" * 32, "b" * 32, "c" * 32] + ([edited_id] if readable else [])
    assert sorted(record.image_id for record in listed) == sorted(expected)
    assert len(unreadable) == (0 if readable else 1)
    assert readable or edited_id in unreadable[0]
