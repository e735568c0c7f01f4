"""The lake handler (`to_lake`): INSERTs, and the MODIFYs of reviews, become lake rows in
Firehose. Rows Firehose refuses (`FailedPutCount` > 0) are re-sent alone inside the
invocation; rows refused every time are parked on the lake failure queue as data, and
reported in `batchItemFailures` only if that fails too. A record that cannot be read as a
result is logged, counted and parked the same way, as the stream carried it (reporting it
would make Lambda resend every later record of the batch)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore.stub import ANY, Stubber

from tests.conftest import MotoStack, load_event
from tests.functional.conftest import lake_rows, queue_bodies


def _insert(image_id: str, sequence: str) -> dict[str, Any]:
    return load_event("dynamodb_stream_insert.json", image_id=image_id,
                      sequence=sequence)["Records"][0]


def _event(*records: dict[str, Any]) -> dict[str, Any]:
    return {"Records": list(records)}


def _firehose_records(*stream_records: dict[str, Any]) -> list[dict[str, bytes]]:
    """The Firehose records the handler should send for these stream records."""
    from pipeline import analytics
    from pipeline.records import ResultRecord

    return analytics.encode_rows(
        analytics.lake_row(ResultRecord.from_item(r["dynamodb"]["NewImage"]), r["awsRegion"])
        for r in stream_records)


@pytest.fixture
def firehose(moto_stack: MotoStack) -> Iterator[Stubber]:
    """The handler's own Firehose client, stubbed."""
    from pipeline import aws

    with Stubber(aws.client("firehose")) as stub:
        yield stub
        stub.assert_no_pending_responses()


def _put_response(*errors: str | None) -> dict[str, Any]:
    return {"FailedPutCount": sum(1 for e in errors if e), "Encrypted": False,
            "RequestResponses": [
                {"ErrorCode": e, "ErrorMessage": "injected"} if e else {"RecordId": f"r{i}"}
                for i, e in enumerate(errors)]}


def test_inserts_become_lake_rows(moto_stack: MotoStack) -> None:
    import app

    event = _event(_insert("a" * 32, "100"), _insert("b" * 32, "101"))
    assert app.to_lake(event, None) == {"batchItemFailures": []}

    rows = sorted(lake_rows(moto_stack), key=lambda row: row["ImageId"])
    assert [row["ImageId"] for row in rows] == ["a" * 32, "b" * 32]
    # the whole row, from tests/events/dynamodb_stream_insert.json's NewImage
    assert rows[0] == {
        "ImageId": "a" * 32, "AssemblyLineId": "line-1", "CameraId": "cam-1",
        "ImageUrl": f"s3://linesight-local-images/line-1/cam-1/2026/11/23/{'a' * 32}.jpg",
        "DateTime": "2026-11-23T10:15:30.123+00:00",
        "ProcessedAt": "2026-11-23T10:15:31.456+00:00",
        "Status": "OK", "Reason": "", "IsAnomalous": True, "Confidence": 0.97, "Score": 0.81,
        "RawScore": 0.0, "Threshold": 0.5, "ModelVersion": "demo-1", "HeatmapUrl": "",
        "AlertReason": "anomalous",
        "Year": 2026, "Month": 11, "Day": 23, "Hour": 10, "Minute": 15,
        "Region": "us-east-1",
        "ReviewLabel": "", "ReviewNote": "", "Reviewer": "", "ReviewedAt": ""}


def test_refused_rows_are_re_sent_alone_and_then_succeed(firehose: Stubber,
                                                         moto_stack: MotoStack) -> None:
    import app

    records = [_insert(c * 32, str(200 + i)) for i, c in enumerate("abcd")]
    firehose.add_response("put_record_batch", _put_response(
        None, "ServiceUnavailableException", None, "InternalFailure"),
        {"DeliveryStreamName": ANY, "Records": _firehose_records(*records)})
    # the retry carries only the two refused rows, b and d (the stub checks both calls)
    firehose.add_response("put_record_batch", _put_response(None, None),
                          {"DeliveryStreamName": ANY,
                           "Records": _firehose_records(records[1], records[3])})

    assert app.to_lake(_event(*records), None) == {"batchItemFailures": []}
    # A call the stub did not expect fails as a BotoCoreError, which the handler retries
    # and then parks: so check here that both calls matched and nothing was parked.
    firehose.assert_no_pending_responses()
    assert queue_bodies(moto_stack, moto_stack.info.lake_failure_queue_url) == []


def _refuse_row_d_every_time(firehose: Stubber) -> list[dict[str, Any]]:
    from pipeline.analytics import FIREHOSE_ATTEMPTS

    records = [_insert(c * 32, str(200 + i)) for i, c in enumerate("abcd")]
    firehose.add_response("put_record_batch", _put_response(
        None, "ServiceUnavailableException", None, "InternalFailure"),
        {"DeliveryStreamName": ANY, "Records": ANY})
    firehose.add_response("put_record_batch", _put_response(None, "InternalFailure"),
                          {"DeliveryStreamName": ANY, "Records": ANY})
    for _ in range(FIREHOSE_ATTEMPTS - 2):  # d alone, refused on every try left
        firehose.add_response("put_record_batch", _put_response("InternalFailure"),
                              {"DeliveryStreamName": ANY, "Records": ANY})
    return records


def test_rows_refused_every_time_are_parked_on_the_lake_failure_queue(
        firehose: Stubber, moto_stack: MotoStack) -> None:
    """As data, not reported back to Lambda: that would resend rows c and b, which landed,
    and leave d depending on the stream's 24 h."""
    import app


    result = app.to_lake(_event(*_refuse_row_d_every_time(firehose)), None)

    assert result == {"batchItemFailures": []}
    [parked] = queue_bodies(moto_stack, moto_stack.info.lake_failure_queue_url)
    assert [row["ImageId"] for row in parked["LakeRows"]] == ["d" * 32]
    assert parked["reason"] == "Firehose refused them every time"


@pytest.fixture
def lake_failure_queue_gone(moto_stack: MotoStack, monkeypatch: pytest.MonkeyPatch
                            ) -> Iterator[None]:
    """The handlers' lake failure queue names a queue that does not exist."""
    from pipeline.settings import current

    monkeypatch.setenv("LINESIGHT_LAKE_FAILURE_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com"
                                                            "/123456789012/no-such-queue")
    current.cache_clear()
    yield
    current.cache_clear()


def test_rows_that_cannot_be_parked_either_are_reported(
        firehose: Stubber, lake_failure_queue_gone: None) -> None:
    import app

    result = app.to_lake(_event(*_refuse_row_d_every_time(firehose)), None)
    assert result == {"batchItemFailures": [{"itemIdentifier": "203"}]}


def test_a_call_firehose_fails_whole_is_retried_not_raised(firehose: Stubber) -> None:
    """Raising would make Lambda resend the batch, rows that landed in earlier calls too:
    the failed call's rows are retried like refused ones."""
    import app

    from pipeline import analytics

    rows = [_insert(f"{i:032x}", str(300 + i)) for i in range(analytics.FIREHOSE_BATCH + 2)]
    firehose.add_response("put_record_batch", _put_response(
        *[None] * analytics.FIREHOSE_BATCH), {"DeliveryStreamName": ANY, "Records": ANY})
    firehose.add_client_error("put_record_batch", "ServiceUnavailableException",
                              http_status_code=503)
    firehose.add_response("put_record_batch", _put_response(None, None),  # only those two
                          {"DeliveryStreamName": ANY, "Records": _firehose_records(*rows[-2:])})

    assert app.to_lake(_event(*rows), None) == {"batchItemFailures": []}


def test_all_rows_sent_means_no_failures(firehose: Stubber) -> None:
    import app

    firehose.add_response("put_record_batch", _put_response(None, None),
                          {"DeliveryStreamName": ANY, "Records": ANY})
    assert app.to_lake(_event(_insert("a" * 32, "1"), _insert("b" * 32, "2")), None) == {
        "batchItemFailures": []}


def _unreadable(image_id: str, sequence: str) -> dict[str, Any]:
    broken = _insert(image_id, sequence)
    del broken["dynamodb"]["NewImage"]["captured_at"]
    return broken


def test_an_unreadable_record_is_counted_and_parked_not_retried(
        firehose: Stubber, moto_stack: MotoStack, capsys: pytest.CaptureFixture[str]) -> None:
    import app

    broken = _unreadable("c" * 32, "301")
    firehose.add_response("put_record_batch", _put_response(None, None),
                          {"DeliveryStreamName": ANY, "Records": ANY})
    result = app.to_lake(_event(_insert("a" * 32, "300"), broken, _insert("b" * 32, "302")),
                         None)
    assert result == {"batchItemFailures": []}
    assert '"stage":"lake-decode"' in capsys.readouterr().out.replace(" ", "")
    [parked] = queue_bodies(moto_stack, moto_stack.info.lake_failure_queue_url)
    assert parked["StreamImages"] == [broken["dynamodb"]["NewImage"]]
    assert parked["reason"].startswith("cannot be read as a result record: result ")
    assert parked["reason"].endswith("is malformed: no captured_at")


def test_an_unreadable_record_that_cannot_be_parked_is_reported(
        firehose: Stubber, lake_failure_queue_gone: None) -> None:
    import app

    firehose.add_response("put_record_batch", _put_response(None),
                          {"DeliveryStreamName": ANY, "Records": ANY})
    result = app.to_lake(_event(_insert("a" * 32, "310"), _unreadable("c" * 32, "311")), None)
    assert result == {"batchItemFailures": [{"itemIdentifier": "311"}]}


def _review(image_id: str, sequence: str, label: str, at: str) -> dict[str, Any]:
    """The MODIFY a review makes: the record's new image, with the review on it."""
    modify = _insert(image_id, sequence)
    modify["eventName"] = "MODIFY"
    modify["dynamodb"]["NewImage"]["review"] = {"M": {
        "label": {"S": label}, "note": {"S": "checked at the line"},
        "reviewer": {"S": "api:qa"}, "reviewed_at": {"S": at}}}
    return modify


def test_each_review_is_a_lake_row_of_its_own(moto_stack: MotoStack) -> None:
    """The lake keeps every verdict: the result's row, then one row per review."""
    import app

    event = _event(_insert("a" * 32, "400"),
                   _review("a" * 32, "401", "normal", "2026-11-23T11:00:00.000+00:00"),
                   _review("a" * 32, "402", "anomaly", "2026-11-23T12:00:00.000+00:00"))
    assert app.to_lake(event, None) == {"batchItemFailures": []}

    rows = sorted(lake_rows(moto_stack), key=lambda row: row["ReviewedAt"])
    assert [(r["ReviewLabel"], r["ReviewedAt"][11:16]) for r in rows] == [
        ("", ""), ("normal", "11:00"), ("anomaly", "12:00")]
    assert {r["IsAnomalous"] for r in rows} == {True}  # the model's verdict stays
    assert rows[1]["Reviewer"] == "api:qa"
    assert rows[1]["ReviewNote"] == "checked at the line"


def test_other_modify_and_remove_records_are_not_lake_rows(moto_stack: MotoStack) -> None:
    """A change that is not a review (the mark `dlq redrive` leaves) is no new state."""
    import app

    modify = _insert("a" * 32, "410")
    modify["eventName"] = "MODIFY"
    modify["dynamodb"]["NewImage"]["alert_redriven_at"] = {"S": "2026-11-23T11:00:00Z"}
    remove = _review("b" * 32, "411", "normal", "2026-11-23T11:00:00.000+00:00")
    remove["eventName"] = "REMOVE"
    assert app.to_lake(_event(modify, remove, _insert("c" * 32, "412")), None) == {
        "batchItemFailures": []}
    # only the INSERT is a row; nothing was refused and parked instead
    assert [row["ImageId"] for row in lake_rows(moto_stack)] == ["c" * 32]
    assert queue_bodies(moto_stack, moto_stack.info.lake_failure_queue_url) == []


def test_more_rows_than_one_firehose_call_takes(firehose: Stubber, moto_stack: MotoStack
                                                ) -> None:
    import app

    from pipeline.analytics import FIREHOSE_ATTEMPTS, FIREHOSE_BATCH

    records = [_insert(f"{i:032x}", str(1000 + i)) for i in range(FIREHOSE_BATCH + 3)]
    firehose.add_response("put_record_batch", _put_response(*[None] * FIREHOSE_BATCH),
                          {"DeliveryStreamName": ANY, "Records": ANY})
    firehose.add_response("put_record_batch", _put_response(None, "InternalFailure", None),
                          {"DeliveryStreamName": ANY, "Records": ANY})
    for _ in range(FIREHOSE_ATTEMPTS - 1):  # the refused row alone, refused on every retry
        firehose.add_response("put_record_batch", _put_response("InternalFailure"),
                              {"DeliveryStreamName": ANY, "Records": ANY})
    assert app.to_lake(_event(*records), None) == {"batchItemFailures": []}
    [parked] = queue_bodies(moto_stack, moto_stack.info.lake_failure_queue_url)
    assert [row["ImageId"] for row in parked["LakeRows"]] == [f"{FIREHOSE_BATCH + 1:032x}"]
