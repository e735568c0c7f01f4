"""The ingest handler against in-process moto: record, alert, duplicates, bad input."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MotoStack, load_event
from tests.functional.conftest import count_calls, history_states


def _wait_for_executions(stack: MotoStack, count: int, timeout: float = 30.0) -> list[dict]:
    sfn = stack.client("stepfunctions")
    deadline = time.monotonic() + timeout
    while True:
        executions = sfn.list_executions(stateMachineArn=stack.info.state_machine_arn)[
            "executions"]
        done = [e for e in executions if e["status"] != "RUNNING"]
        if len(done) >= count or time.monotonic() > deadline:
            return done
        time.sleep(0.1)


def _recorded_without_alert(stack: MotoStack) -> None:
    """The one execution succeeded and ended in Recorded, no alert due. (One that failed
    after its put would leave the record, and no alert, all the same.)"""
    [execution] = _wait_for_executions(stack, 1)
    assert execution["status"] == "SUCCEEDED"
    assert history_states(stack, execution["executionArn"])[-1] == "Recorded"


def _records(stack: MotoStack) -> list[dict[str, Any]]:
    return stack.client("dynamodb").scan(TableName=stack.info.table)["Items"]


def _alerts(stack: MotoStack) -> list[dict[str, Any]]:
    sqs = stack.client("sqs")
    messages = sqs.receive_message(QueueUrl=stack.info.alerts_queue_url,
                                   MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(m["Body"]) for m in messages]


def _image(samples_dir: Path, label: str) -> bytes:
    return sorted((samples_dir / "test" / label).glob("*.jpg"))[0].read_bytes()


def test_anomalous_upload_is_recorded_and_alerted(moto_stack: MotoStack,
                                                  samples_dir: Path) -> None:
    import app

    key = moto_stack.upload(_image(samples_dir, "anomaly"))
    result = app.ingest(moto_stack.sqs_event_for(key), None)

    assert result == {"batchItemFailures": []}
    executions = _wait_for_executions(moto_stack, 1)
    assert [e["status"] for e in executions] == ["SUCCEEDED"]
    [item] = _records(moto_stack)
    assert item["status"]["S"] == "OK"
    assert item["is_anomalous"]["BOOL"] is True
    assert item["line_camera"]["S"] == "line-1#cam-1"
    assert item["heatmap_uri"]["S"].startswith(f"s3://{moto_stack.info.results_bucket}/heatmaps/")
    [alert] = _alerts(moto_stack)
    assert "line line-1, camera cam-1" in alert["Subject"]
    assert alert["MessageAttributes"]["line"]["Value"] == "line-1"


def test_normal_upload_is_recorded_without_alert(moto_stack: MotoStack,
                                                 samples_dir: Path) -> None:
    import app

    key = moto_stack.upload(_image(samples_dir, "normal"), line="line-2", camera="cam-3")
    app.ingest(moto_stack.sqs_event_for(key), None)

    _recorded_without_alert(moto_stack)
    [item] = _records(moto_stack)
    assert item["is_anomalous"]["BOOL"] is False
    assert _alerts(moto_stack) == []


def test_duplicate_delivery_gives_one_record_and_one_alert(
        moto_stack_any_workflow: MotoStack, samples_dir: Path) -> None:
    import app

    stack = moto_stack_any_workflow
    key = stack.upload(_image(samples_dir, "anomaly"))
    event = stack.sqs_event_for(key)
    app.ingest(event, None)
    _wait_for_executions(stack, 1)
    # the same S3 event delivered again: recognised by ingest, no second start (moto, like
    # a STANDARD workflow, would refuse the name; an EXPRESS one in AWS would run it)
    started = count_calls("stepfunctions")
    app.ingest(event, None)
    assert started == {}
    executions = stack.client("stepfunctions").list_executions(
        stateMachineArn=stack.info.state_machine_arn)["executions"]
    assert [e["status"] for e in executions] == ["SUCCEEDED"]
    assert len(_records(stack)) == 1
    assert len(_alerts(stack)) == 1


@pytest.mark.parametrize("body, why", [
    (b"", "zero-byte object"),
    (b"<html><body>not a photo</body></html>", "HTML named .jpg"),
])
def test_unusable_upload_is_recorded_invalid(moto_stack: MotoStack, body: bytes,
                                             why: str) -> None:
    import app

    key = moto_stack.upload(body)
    result = app.ingest(moto_stack.sqs_event_for(key), None)

    assert result == {"batchItemFailures": []}, why
    _recorded_without_alert(moto_stack)
    [item] = _records(moto_stack)
    assert item["status"]["S"] == "INVALID", why
    assert item["reason"]["S"]
    assert _alerts(moto_stack) == []


def test_an_upload_deleted_before_it_is_read_is_recorded_invalid(
        moto_stack: MotoStack, samples_dir: Path) -> None:
    """Its version deleted for good (a plain delete only hides it behind a delete marker
    in the versioned bucket, and the version the event names is still judged)."""
    import app

    key = moto_stack.upload(_image(samples_dir, "anomaly"))
    event = moto_stack.sqs_event_for(key)
    version = json.loads(event["Records"][0]["body"])["Records"][0]["s3"]["object"][
        "versionId"]
    moto_stack.client("s3").delete_object(Bucket=moto_stack.info.images_bucket, Key=key,
                                          VersionId=version)

    assert app.ingest(event, None) == {"batchItemFailures": []}
    _recorded_without_alert(moto_stack)
    [item] = _records(moto_stack)
    assert item["status"]["S"] == "INVALID"
    assert item["reason"]["S"].startswith("missing_object")
    assert _alerts(moto_stack) == []


def test_forged_metadata_is_recorded_invalid(moto_stack: MotoStack, samples_dir: Path) -> None:
    import app

    key = moto_stack.upload(_image(samples_dir, "normal"),
                            metadata={"assemblylineid": "line-2", "cameraid": "cam-1"})
    app.ingest(moto_stack.sqs_event_for(key), None)

    _recorded_without_alert(moto_stack)
    [item] = _records(moto_stack)
    assert item["status"]["S"] == "INVALID"
    assert item["reason"]["S"].startswith("bad_metadata")


def test_s3_test_event_is_ignored(moto_stack: MotoStack) -> None:
    import app

    event = {"Records": [{"messageId": "t", "receiptHandle": "r",
                          "body": json.dumps(load_event("s3_test_event.json"))}]}
    assert app.ingest(event, None) == {"batchItemFailures": []}
    assert _records(moto_stack) == []


def test_poison_message_fails_only_itself(moto_stack: MotoStack, samples_dir: Path) -> None:
    import app

    key = moto_stack.upload(_image(samples_dir, "normal"))
    good = moto_stack.sqs_event_for(key)["Records"][0]
    poison = {"messageId": "poison", "receiptHandle": "r", "body": "not json"}
    result = app.ingest({"Records": [poison, good]}, None)

    assert result == {"batchItemFailures": [{"itemIdentifier": "poison"}]}
    _wait_for_executions(moto_stack, 1)
    assert len(_records(moto_stack)) == 1


def test_redelivery_after_the_record_is_written_is_not_counted_again(
        moto_stack: MotoStack, samples_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import app

    key = moto_stack.upload(_image(samples_dir, "anomaly"))
    event = moto_stack.sqs_event_for(key)
    app.ingest(event, None)
    _wait_for_executions(moto_stack, 1)
    assert "ProcessedImageCount" in capsys.readouterr().out

    assert app.ingest(event, None) == {"batchItemFailures": []}  # e.g. an SQS redelivery

    assert "ProcessedImageCount" not in capsys.readouterr().out  # metrics count it once
    executions = moto_stack.client("stepfunctions").list_executions(
        stateMachineArn=moto_stack.info.state_machine_arn)["executions"]
    assert len(executions) == 1  # and no second workflow ran


def test_unusable_uploads_alert_when_the_stack_says_so(aws_env: None, trained_model: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import app

    from scripts.local_stack import Topology
    from tests.conftest import _provisioned

    with _provisioned(trained_model, monkeypatch, Topology(alert_on_invalid=True)) as stack:
        key = stack.upload(b"<html>not a photo</html>")
        app.ingest(stack.sqs_event_for(key), None)
        _wait_for_executions(stack, 1)

        [item] = _records(stack)
        assert item["status"]["S"] == "INVALID"
        [alert] = _alerts(stack)
        assert alert["Subject"].startswith("LineSight: Unusable image")
        assert alert["MessageAttributes"]["reason"]["Value"] == "invalid"


def test_each_lines_own_threshold_and_band_are_applied(aws_env: None, trained_model: Path,
                                                       samples_dir: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The same normal photo on three lines, through the stack config as Pulumi reads it:
    line-1 moves the detector threshold (no retraining), line-2 widens the low-confidence
    band, line-3 keeps the stack's settings (and alarms when its camera goes quiet)."""
    import app

    from scripts.local_stack import Topology
    from tests.conftest import _provisioned

    topology = Topology(lines={"line-1": ("cam-1",), "line-2": ("cam-3",), "line-3": ("cam-5",)},
                        line_policies={"line-1": {"threshold": 0.02},
                                       "line-2": {"confidenceThreshold": 0.49},
                                       "line-3": {"silentCameraMinutes": 10}})
    with _provisioned(trained_model, monkeypatch, topology) as stack:
        image = _image(samples_dir, "normal")
        keys = {line: stack.upload(image, line=line, camera=camera)
                for line, camera in (("line-1", "cam-1"), ("line-2", "cam-3"),
                                     ("line-3", "cam-5"))}
        for key in keys.values():
            assert app.ingest(stack.sqs_event_for(key), None) == {"batchItemFailures": []}
        _wait_for_executions(stack, 3)
        items = {item["line_id"]["S"]: item for item in _records(stack)}
        got = {line: (float(item["threshold"]["N"]), item["is_anomalous"]["BOOL"],
                      item.get("alert_reason", {}).get("S", ""))
               for line, item in items.items()}

        as_trained = got["line-3"]
        confidence = float(items["line-3"]["confidence"]["N"])
        score = float(items["line-3"]["score"]["N"])
        # what the photo must be for the overrides to show: a confident normal, scoring
        # above line-1's threshold and under line-2's widened band
        assert as_trained == (0.5, False, "") and 0.7 <= confidence < 0.99 and score > 0.02
        assert got["line-1"] == (0.02, True, "anomalous")
        assert got["line-2"] == (0.5, False, "low_confidence")
        assert sorted(a["MessageAttributes"]["line"]["Value"] for a in _alerts(stack)) == [
            "line-1", "line-2"]
        # line-3 runs around the clock: its camera alarms after 10 minutes without an upload
        silent = stack.client("cloudwatch").describe_alarms(
            AlarmNamePrefix="linesight-local-camera-silent-")["MetricAlarms"]
        assert [(a["AlarmName"], a["EvaluationPeriods"] * a["Period"]) for a in silent] == [
            ("linesight-local-camera-silent-line-3-cam-5", 600)]


def test_a_key_written_again_is_judged_as_an_image_of_its_own(
        moto_stack: MotoStack, samples_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An upload form used twice overwrites its key (S3's POST has no If-None-Match). The
    second photo is of another part: it is judged and alerted under an id of its own, and
    the first record keeps the version it judged, which the versioned bucket keeps. A
    redelivery of either write is recognised, not judged again."""
    import app

    from pipeline.ingest import object_refs, rewritten_image_id
    from pipeline.uploads import parse_key

    anomalies = sorted((samples_dir / "test" / "anomaly").glob("*.jpg"))
    judged, second = anomalies[0].read_bytes(), anomalies[1].read_bytes()
    key = moto_stack.upload(judged)
    first_event = moto_stack.sqs_event_for(key)
    assert app.ingest(first_event, None) == {"batchItemFailures": []}
    _wait_for_executions(moto_stack, 1)
    assert len(_alerts(moto_stack)) == 1

    moto_stack.upload(second, key=key)
    second_event = moto_stack.sqs_event_for(key)
    assert app.ingest(second_event, None) == {"batchItemFailures": []}
    _wait_for_executions(moto_stack, 2)
    [alert] = _alerts(moto_stack)

    def version(event: dict[str, Any]) -> str:
        return str(json.loads(event["Records"][0]["body"])["Records"][0]["s3"]["object"][
            "versionId"])

    upload_id = parse_key(key).upload_id  # type: ignore[union-attr]
    items = {item["image_id"]["S"]: item for item in _records(moto_stack)}
    rewritten = next(i for i in items if i != upload_id)
    assert set(items) == {upload_id, rewritten}
    assert items[upload_id]["image_version"]["S"] == version(first_event)
    assert items[rewritten]["image_version"]["S"] == version(second_event)
    assert items[rewritten]["s3_uri"] == items[upload_id]["s3_uri"]
    assert items[rewritten]["status"]["S"] == "OK"
    assert rewritten in alert["Message"]
    s3, bucket = moto_stack.client("s3"), moto_stack.info.images_bucket
    assert s3.get_object(Bucket=bucket, Key=key,
                         VersionId=version(first_event))["Body"].read() == judged
    assert f"is judged as image {rewritten}" in caplog.text

    # both writes delivered again: nothing new is judged, recorded or alerted
    assert app.ingest(first_event, None) == {"batchItemFailures": []}
    assert app.ingest(second_event, None) == {"batchItemFailures": []}
    assert len(moto_stack.client("stepfunctions").list_executions(
        stateMachineArn=moto_stack.info.state_machine_arn)["executions"]) == 2
    assert len(_records(moto_stack)) == 2
    assert _alerts(moto_stack) == []
    [ref] = object_refs(second_event["Records"][0]["body"])
    assert rewritten == rewritten_image_id(upload_id, ref)
