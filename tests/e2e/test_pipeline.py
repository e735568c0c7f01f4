"""Every stage on the real local stack: API upload -> S3 -> SQS -> ingest -> Step Functions
-> DynamoDB -> SNS -> stream -> Firehose -> lake, plus reviews, metrics, dashboard and
alarms."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from scripts.local_stack import LocalStack
from scripts.observe import AlertTap, all_records, lake_rows, wait_for_alerts, wait_until
from scripts.uploadImages import upload_folder


def _get(url: str, token: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, headers={"Authorization": token})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture(scope="module")
def processed(local_stack: LocalStack, samples_dir: Path,
              tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Three anomalous and three normal parts on line-1/cam-2, and one text file."""
    info = local_stack.info
    assert info is not None
    folder = tmp_path_factory.mktemp("upload")
    for label in ("anomaly", "normal"):
        for image in sorted((samples_dir / "test" / label).glob("*.jpg"))[:3]:
            shutil.copyfile(image, folder / f"{label}-{image.name}")
    (folder / "notes.jpg").write_text("shift notes, not a photo")
    uploads = upload_folder(folder, "cam-2", "line-1", info.api_url,
                            info.camera_tokens["line-1/cam-2"], progress=False)
    assert all(upload.ok for upload in uploads), [u.error for u in uploads]
    ids = {Path(u.file).name: u.image_id for u in uploads}
    ddb, s3 = local_stack.client("dynamodb"), local_stack.client("s3")

    def done() -> bool:
        records = [r for r in all_records(ddb, info.table) if r.image_id in ids.values()]
        rows = [r for r in lake_rows(s3, info.results_bucket) if r["ImageId"] in ids.values()]
        return len(records) == len(ids) == len(rows)

    assert wait_until(done, timeout=60), "not every upload reached the lake in 60 s"
    records = {r.image_id: r for r in all_records(ddb, info.table)}
    tap = AlertTap(local_stack.client("sqs"), info.alerts_queue_url)
    wanted = sum(1 for i in ids.values() if records[i].alert_reason)
    alerts = wait_for_alerts(tap, local_stack.client("stepfunctions"),
                             info.state_machine_arn, wanted)
    return {"ids": ids, "records": records, "alerts": alerts,
            "rows": lake_rows(s3, info.results_bucket)}


def test_every_upload_has_one_record(processed: dict[str, Any], trained_model: Path,
                                     samples_dir: Path) -> None:
    from pipeline.detector import load_detector

    detector = load_detector("embedded", str(trained_model))
    ids, records = processed["ids"], processed["records"]
    assert set(ids.values()) <= set(records)
    for name, image_id in ids.items():
        record = records[image_id]
        assert (record.line_id, record.camera_id) == ("line-1", "cam-2")
        assert record.client_image_id == Path(name).stem
        if name == "notes.jpg":
            assert record.status == "INVALID" and record.reason
        else:
            assert record.status == "OK"
            # The pipeline reports exactly what the trained model says of the image.
            label, _, original = name.partition("-")
            image = (samples_dir / "test" / label / original).read_bytes()
            expected = detector.detect(image, "image/jpeg")
            assert record.is_anomalous == expected.is_anomalous, name
            assert record.confidence == pytest.approx(expected.confidence, abs=1e-3)


def test_anomalies_are_alerted_once_each(processed: dict[str, Any]) -> None:
    alerted = [r for r in processed["records"].values() if r.alert_reason]
    assert len(processed["alerts"]) == len(alerted) >= 3
    assert {a["line"] for a in processed["alerts"]} == {"line-1"}
    assert all("line line-1, camera cam-2" in a["subject"] for a in processed["alerts"])


def test_every_record_is_one_lake_row(processed: dict[str, Any]) -> None:
    rows = [r for r in processed["rows"] if r["ImageId"] in processed["ids"].values()]
    assert sorted(r["ImageId"] for r in rows) == sorted(processed["ids"].values())
    row = rows[0]
    assert {"Year", "Month", "Day", "Hour", "Minute", "Region"} <= set(row)
    assert row["Region"] == "us-east-1"


def test_a_review_reaches_the_lake_as_a_row_of_its_own(local_stack: LocalStack,
                                                       processed: dict[str, Any]) -> None:
    """POST a verdict through the API: the record's MODIFY passes the lake mapping's
    filter (the local poller applies the stack's patterns, as Lambda does)."""
    info = local_stack.info
    assert info is not None
    image_id = processed["ids"][sorted(n for n in processed["ids"] if n.startswith("normal"))[0]]
    body = json.dumps({"label": "anomaly", "note": "hairline crack by the left hole"})
    request = urllib.request.Request(
        f"{info.api_url}/results/{image_id}/review", data=body.encode(), method="POST",
        headers={"Authorization": info.reviewer_tokens["line-1"],
                 "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    s3 = local_stack.client("s3")

    def reviewed() -> list[dict[str, Any]]:
        return [r for r in lake_rows(s3, info.results_bucket)
                if r["ImageId"] == image_id and r["ReviewLabel"]]

    assert wait_until(lambda: bool(reviewed()), timeout=30), "the review never reached the lake"
    [row] = reviewed()
    assert (row["ReviewLabel"], row["ReviewNote"]) == ("anomaly", "hairline crack by the left hole")
    assert row["IsAnomalous"] is processed["records"][image_id].is_anomalous


def test_heatmaps_are_stored_and_linked(local_stack: LocalStack,
                                        processed: dict[str, Any]) -> None:
    ok = [r for r in processed["records"].values() if r.status == "OK"]
    s3 = local_stack.client("s3")
    for record in ok:
        bucket, _, key = record.heatmap_uri.removeprefix("s3://").partition("/")
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert body.startswith(b"\x89PNG")


def test_query_api_returns_records_with_status(local_stack: LocalStack,
                                               processed: dict[str, Any]) -> None:
    info = local_stack.info
    assert info is not None
    token = info.camera_tokens["line-1/cam-2"]
    image_id = processed["ids"]["notes.jpg"]
    status, body = _get(f"{info.api_url}/results/{image_id}", token)
    assert status == 200 and body["status"] == "INVALID"
    status, body = _get(f"{info.api_url}/results?line=line-1&camera=cam-2&anomalous=true", token)
    assert status == 200
    records = processed["records"]
    assert {r["image_id"] for r in body["results"]} == {
        i for i in processed["ids"].values() if records[i].is_anomalous}
    assert _get(f"{info.api_url}/results/{image_id}", "ls_bad")[0] == 401


def test_metrics_dashboard_and_alarms(local_stack: LocalStack,
                                      processed: dict[str, Any]) -> None:
    cloudwatch = local_stack.client("cloudwatch")
    # the stack's own namespace: what its handlers are told, and its alarms read
    namespace = local_stack.info.environment["LINESIGHT_METRICS_NAMESPACE"]
    wanted = {"ProcessedImageCount", "DetectedAnomalyCount", "InvalidImageCount",
              "InferenceLatency", "EndToEndLatency"}

    def names() -> set[str]:
        return {m["MetricName"]
                for m in cloudwatch.list_metrics(Namespace=namespace)["Metrics"]}

    # Metrics arrive a moment after the invocation that printed them, as in AWS.
    assert wait_until(lambda: wanted <= names(), timeout=10), names()
    # each data point is stored per camera, per line and for the whole stack
    dimension_sets = {tuple(sorted(d["Name"] for d in m["Dimensions"]))
                      for m in cloudwatch.list_metrics(
                          Namespace=namespace, MetricName="ProcessedImageCount")["Metrics"]}
    assert dimension_sets == {("camera", "line"), ("line",), ()}
    assert cloudwatch.list_dashboards()["DashboardEntries"]
    alarms = cloudwatch.describe_alarms()["MetricAlarms"]
    assert alarms and all(alarm["AlarmActions"] for alarm in alarms)
    read = {query["MetricStat"]["Metric"]["Namespace"] for alarm in alarms
            for query in alarm.get("Metrics") or () if "MetricStat" in query}
    read |= {alarm["Namespace"] for alarm in alarms if alarm.get("Namespace")}
    assert {name for name in read if not name.startswith("AWS/")} == {namespace}


def test_manifest_points_at_the_lake(local_stack: LocalStack) -> None:
    info = local_stack.info
    assert info is not None
    manifest = json.loads(local_stack.client("s3").get_object(
        Bucket=info.results_bucket, Key="manifest.json")["Body"].read())
    assert manifest["fileLocations"][0]["URIPrefixes"] == [f"s3://{info.results_bucket}/lake/"]
