"""The result record round-trips through DynamoDB's typed form and JSON unchanged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from pipeline.records import ResultRecord, iso, parse_time

T0 = datetime(2026, 11, 23, 10, 15, 30, 123000, tzinfo=UTC)


def _record(**changes: object) -> ResultRecord:
    base = ResultRecord(
        image_id="a" * 32, line_id="line-1", camera_id="cam-1",
        s3_uri="s3://images/line-1/cam-1/x.jpg", captured_at=T0,
        processed_at=T0 + timedelta(milliseconds=850), status="OK", is_anomalous=True,
        confidence=0.93, score=0.81, threshold=0.5, model_version="abc123",
        anomalies=[{"Name": "anomaly", "PixelAnomaly": {"TotalPercentageArea": 0.02,
                                                       "Color": "#FF0000"}}],
        heatmap_uri="s3://results/heatmaps/x.png", alert_reason="anomalous",
        idempotency_key="k" * 64, inference_ms=12.5, client_image_id="cam-frame-7")
    return base.with_changes(**changes)


@pytest.mark.parametrize("record", [
    _record(),  # everything filled in
    _record(status="INVALID", reason="not_an_image: text", is_anomalous=False,
            confidence=0.0, anomalies=[], heatmap_uri=""),  # an INVALID record, sparse
    _record(confidence=1.0, score=0.0),  # integral floats survive Decimal round-trips
    _record(review={"label": "normal", "note": "dust", "reviewer": "t1"}),  # reviewed
])
def test_item_round_trip(record: ResultRecord) -> None:
    assert ResultRecord.from_item(record.to_item()) == record


def test_json_round_trip() -> None:
    record = _record()
    assert ResultRecord.from_json(record.to_json()) == record


def test_item_has_index_keys() -> None:
    item = _record().to_item()
    assert item["line_camera"] == {"S": "line-1#cam-1"}
    assert item["captured_at"] == {"S": "2026-11-23T10:15:30.123+00:00"}
    assert item["is_anomalous"] == {"BOOL": True}


def test_times_are_utc_and_naive_times_are_refused() -> None:
    plus_two = datetime(2026, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    assert iso(plus_two) == "2026-01-01T10:00:00.000+00:00"
    with pytest.raises(ValueError, match="no time zone"):
        parse_time("2026-01-01T12:00:00")


def test_end_to_end_latency() -> None:
    assert _record().end_to_end_ms == pytest.approx(850.0)
