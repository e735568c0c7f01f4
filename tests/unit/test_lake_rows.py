"""A lake row carries its result record's analytic fields (not the bookkeeping ones such as
`idempotency_key` or `image_version`) under the seed's column names, and Firehose's
partition key query reads fields that a row has."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pipeline import analytics
from pipeline.records import ResultRecord

CAPTURED = datetime(2026, 11, 23, 10, 15, 30, 123000, tzinfo=UTC)
# Every value differs from the others, so a column filled from the wrong field shows.
ANOMALOUS = ResultRecord(
    image_id="a" * 32, line_id="line-1", camera_id="cam-2",
    s3_uri="s3://images/line-1/cam-2/2026/11/23/x.jpg", captured_at=CAPTURED,
    processed_at=CAPTURED + timedelta(milliseconds=850), status="OK", is_anomalous=True,
    confidence=0.93, score=0.81, raw_score=2.4, threshold=0.5, model_version="abc123",
    heatmap_uri="s3://results/heatmaps/x.png", alert_reason="anomalous",
    idempotency_key="k" * 64, inference_ms=12.5, client_image_id="frame-7")
INVALID = ResultRecord(
    image_id="b" * 32, line_id="line-2", camera_id="cam-1",
    s3_uri="s3://images/line-2/cam-1/2026/12/31/y.jpg",
    captured_at=datetime(2026, 12, 31, 23, 59, 1, tzinfo=UTC),
    processed_at=datetime(2027, 1, 1, 0, 0, 2, tzinfo=UTC), status="INVALID",
    reason="not_an_image: the file is text")
REVIEWED = ANOMALOUS.with_changes(review={
    "label": "normal", "note": "glare on the rim", "reviewer": "api:line-1-qa",
    "reviewed_at": "2026-11-24T08:00:00.000+00:00"})


@pytest.mark.parametrize("record, region, expected", [
    # an anomalous result, every field filled in
    (ANOMALOUS, "eu-west-1", {
        "ImageId": "a" * 32, "AssemblyLineId": "line-1", "CameraId": "cam-2",
        "ImageUrl": "s3://images/line-1/cam-2/2026/11/23/x.jpg",
        "DateTime": "2026-11-23T10:15:30.123+00:00",
        "ProcessedAt": "2026-11-23T10:15:30.973+00:00",
        "Status": "OK", "Reason": "", "IsAnomalous": True, "Confidence": 0.93, "Score": 0.81,
        "RawScore": 2.4, "Threshold": 0.5, "ModelVersion": "abc123",
        "HeatmapUrl": "s3://results/heatmaps/x.png", "AlertReason": "anomalous",
        "Year": 2026, "Month": 11, "Day": 23, "Hour": 10, "Minute": 15,
        "Region": "eu-west-1",
        "ReviewLabel": "", "ReviewNote": "", "Reviewer": "", "ReviewedAt": ""}),
    # an unusable upload, processed in the next year: the date columns are the capture's
    (INVALID, "us-east-1", {
        "ImageId": "b" * 32, "AssemblyLineId": "line-2", "CameraId": "cam-1",
        "ImageUrl": "s3://images/line-2/cam-1/2026/12/31/y.jpg",
        "DateTime": "2026-12-31T23:59:01.000+00:00",
        "ProcessedAt": "2027-01-01T00:00:02.000+00:00",
        "Status": "INVALID", "Reason": "not_an_image: the file is text", "IsAnomalous": False,
        "Confidence": 0.0, "Score": 0.0, "RawScore": 0.0, "Threshold": 0.0,
        "ModelVersion": "", "HeatmapUrl": "", "AlertReason": "",
        "Year": 2026, "Month": 12, "Day": 31, "Hour": 23, "Minute": 59,
        "Region": "us-east-1",
        "ReviewLabel": "", "ReviewNote": "", "Reviewer": "", "ReviewedAt": ""}),
], ids=["anomalous", "invalid"])
def test_lake_row_columns(record: ResultRecord, region: str, expected: dict[str, Any]) -> None:
    assert analytics.lake_row(record, region) == expected


def test_a_reviewed_results_row_adds_the_review() -> None:
    """The whole record, as before its review, and the person's verdict beside the
    model's."""
    before = analytics.lake_row(ANOMALOUS, "eu-west-1")
    assert analytics.lake_row(REVIEWED, "eu-west-1") == {
        **before, "ReviewLabel": "normal", "ReviewNote": "glare on the rim",
        "Reviewer": "api:line-1-qa", "ReviewedAt": "2026-11-24T08:00:00.000+00:00"}


def test_an_item_whose_review_is_not_a_map_is_unreadable_not_a_crash() -> None:
    """A review edited by hand into a string raised AttributeError in `lake_row`, which
    failed the whole stream batch instead of parking that one item."""
    item = REVIEWED.to_item()
    item["review"] = {"S": "ok"}

    rows, unreadable = analytics.rows_from_images([("1", ANOMALOUS.to_item(), "eu-west-1"),
                                                   ("2", item, "eu-west-1")])

    assert [row_id for row_id, _ in rows] == ["1"]
    assert [(row_id, why) for row_id, _, why in unreadable] == [
        ("2", f"cannot be read as a result record: result '{'a' * 32}' is malformed: "
              "review is str, not a map")]


@pytest.mark.parametrize(("field", "value", "said"), [
    # a set decodes fine, then failed json.dumps in send_rows: the whole batch, every retry
    ("model_version", {"SS": ["v1", "v2"]}, "model_version is set, not a string"),
    ("line_id", {"NULL": True}, "line_id is NoneType, not a string"),
    # "false" read as bool("false"), anomalous
    ("is_anomalous", {"S": "false"}, "is_anomalous is str, not true or false"),
    # NaN is no JSON: a strict reader of the lake refuses the file
    ("confidence", {"S": "nan"}, "confidence is nan"),
    ("anomalies", {"L": [{"S": "x"}]}, "anomalies holds something other than maps"),
])
def test_an_item_no_row_can_be_made_of_is_parked_not_sent(field: str, value: dict[str, Any],
                                                          said: str) -> None:
    item = REVIEWED.to_item()
    item[field] = value

    rows, unreadable = analytics.rows_from_images([("1", ANOMALOUS.to_item(), "eu-west-1"),
                                                   ("2", item, "eu-west-1"),
                                                   ("3", REVIEWED.to_item(), "eu-west-1")])

    assert [row_id for row_id, _ in rows] == ["1", "3"]
    [(row_id, _, why)] = unreadable
    assert row_id == "2" and said in why, why
    analytics.encode_rows(row for _, row in rows)  # and the others encode


def test_a_row_that_is_no_json_is_parked_not_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever a future column holds, a row json.dumps refuses (or would write as NaN) is
    parked with its image: in send_rows it would fail the whole batch, every retry."""
    made = analytics.lake_row
    monkeypatch.setattr(analytics, "lake_row", lambda record, region: {
        **made(record, region), "Extra": float("nan") if record.review else 0.0})

    rows, unreadable = analytics.rows_from_images([("1", ANOMALOUS.to_item(), "eu-west-1"),
                                                   ("2", REVIEWED.to_item(), "eu-west-1")])

    assert [row_id for row_id, _ in rows] == ["1"]
    assert [row_id for row_id, _, _ in unreadable] == ["2"]
    assert "Out of range float values are not JSON compliant" in unreadable[0][2]


def test_partition_key_query_reads_fields_of_the_row() -> None:
    """A field the JQ query names but the row lacks gives Firehose no partition key, and
    every row goes to the error prefix instead of the lake."""
    destination = analytics.s3_destination(bucket_arn="arn:aws:s3:::lake", role_arn="arn:role",
                                           buffering=analytics.Buffering())
    [processor] = destination["ProcessingConfiguration"]["Processors"]
    parameters = {p["ParameterName"]: p["ParameterValue"] for p in processor["Parameters"]}
    query = parameters["MetadataExtractionQuery"]
    fields = re.findall(r"\.([A-Za-z_]\w*)", query)
    assert fields, query
    row = analytics.lake_row(ANOMALOUS, "eu-west-1")
    assert set(fields) <= set(row), f"{query} names fields a lake row does not have"
    # and the keys it extracts are the ones the S3 prefix partitions by
    extracted = set(re.findall(r"([A-Za-z_]\w*)\s*:", query))
    partitioned = set(re.findall(r"partitionKeyFromQuery:(\w+)", destination["Prefix"]))
    assert extracted == partitioned == {"line"}


def test_a_filter_rule_the_handler_cannot_read_is_refused(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """The handler and the local poller apply LAKE_STREAM_FILTERS themselves: a rule they
    would read wrong (Lambda's `prefix`, say) must fail loudly, not pass or drop rows."""
    monkeypatch.setattr(analytics, "LAKE_STREAM_FILTERS", ({"eventName": [{"prefix": "INS"}]},))
    with pytest.raises(ValueError, match="prefix"):
        analytics.is_lake_record({"eventName": "INSERT"})


def test_refused_rows_are_retried_past_the_next_second(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    """Firehose's throughput limits are per second: retries that all fall within the
    second that refused them would be refused again, and park the rows."""
    waits: list[float] = []

    class Refusing:
        def put_record_batch(self, **call: Any) -> dict[str, Any]:
            return {"FailedPutCount": len(call["Records"]),
                    "RequestResponses": [{"ErrorCode": "ServiceUnavailableException"}
                                         for _ in call["Records"]]}

    monkeypatch.setattr(analytics.aws, "client", lambda service: Refusing())
    monkeypatch.setattr(analytics.time, "sleep", waits.append)
    assert analytics.send_rows("stream", [("r1", {"ImageId": "x"})]) == ["r1"]
    assert len(waits) == analytics.FIREHOSE_ATTEMPTS - 1
    assert sum(waits) > 1.0


def test_exists_matches_leaves_only_as_lambda_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lambda reads `exists` of a leaf value: a pattern asking whether a map attribute
    exists lets nothing through in AWS, so it must not pass records locally either."""
    monkeypatch.setattr(analytics, "LAKE_STREAM_FILTERS",
                        ({"dynamodb": {"NewImage": {"review": [{"exists": True}]}}},))
    review = {"M": {"label": {"S": "normal"}}}
    assert not analytics.is_lake_record({"dynamodb": {"NewImage": {"review": review}}})
    assert analytics.is_lake_record({"dynamodb": {"NewImage": {"review": "a leaf"}}})
