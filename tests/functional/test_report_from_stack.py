"""`build_report_from_stack` (the demo's report) against in-process moto: it reads the
records, the anomalies' images and heatmaps, and the workflow failure queue."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.functional.results_stack import ResultsStack, jpeg, record, results_stack


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[ResultsStack]:
    with results_stack(tmp_path) as stack:
        yield stack


def test_report_reads_records_images_and_failures(stack: ResultsStack, tmp_path: Path) -> None:
    from scripts.cli_results import build_report_from_stack

    info = stack.info
    heatmap_key = "heatmaps/line-1/cam-2/defect.png"
    stack.client("s3").put_object(Bucket=info.results_bucket, Key=heatmap_key,
                                  Body=jpeg(200, defect=True))
    anomalous = stack.put(record(info, 1, camera="cam-2", anomalous=True,
                                 heatmap_uri=f"s3://{info.results_bucket}/{heatmap_key}"),
                          image=jpeg(defect=True))
    stack.put(record(info, 2), image=jpeg())
    stack.put(record(info, 3, line="line-2", status="INVALID"))
    failed = record(info, 4, line="line-2", camera="cam-2")
    stack.client("sqs").send_message(QueueUrl=info.failure_queue_url, MessageBody=json.dumps(
        {"record": failed.to_json(), "error": {"Error": "States.TaskFailed",
                                               "Cause": "SNS is down"}}))

    path = build_report_from_stack(stack, tmp_path / "out" / "report.html")

    page = path.read_text()
    assert path.is_absolute() and path.name == "report.html"
    # two data-URI images (photo and heatmap) for the one anomaly, in the tile and large
    assert len(re.findall(r'<img src="data:image/jpeg;base64,', page)) == 4
    assert anomalous.image_id in page
    assert "States.TaskFailed" in page and "SNS is down" in page
    assert "not_an_image" in page
    # the failure is still in its queue for `linesight dlq` to redrive
    attributes = stack.client("sqs").get_queue_attributes(
        QueueUrl=info.failure_queue_url, AttributeNames=["ApproximateNumberOfMessages"])
    assert attributes["Attributes"]["ApproximateNumberOfMessages"] == "1"


EVERY_SET = (("line", "camera"), ("line",), ())  # as the handlers write each data point
PER_CAMERA_ONLY = (("line", "camera"),)           # as they wrote it before


def namespace(stack: ResultsStack) -> str:
    """Where the stack's handlers write their metrics (and so where its report reads)."""
    return stack.info.environment["LINESIGHT_METRICS_NAMESPACE"]


@pytest.mark.parametrize("written", [
    # each image stored per camera, per line and for the stack: counted once, not three times
    (EVERY_SET,) * 3,
    # stored per camera only (metrics older than the dimension sets)
    (PER_CAMERA_ONLY,) * 3,
    # a period across the change: the per-camera metrics hold all three images
    (PER_CAMERA_ONLY, EVERY_SET, EVERY_SET),
], ids=["every-set", "per-camera-only", "across-the-change"])
def test_report_sums_cloudwatch_metrics_once(stack: ResultsStack, tmp_path: Path,
                                             written: tuple[tuple[tuple[str, ...], ...], ...]
                                             ) -> None:
    from scripts.cli_results import build_report_from_stack

    stack.put(record(stack.info, 1), image=jpeg())
    cloudwatch = stack.client("cloudwatch")
    now = datetime.now(UTC)
    images = (("cam-1", 1), ("cam-1", 2), ("cam-2", 3))
    for (camera, seconds), dimension_sets in zip(images, written, strict=True):
        values = {"line": "line-1", "camera": camera}
        cloudwatch.put_metric_data(Namespace=namespace(stack), MetricData=[{  # a put per image
            "MetricName": "ProcessedImageCount", "Value": 1.0, "Unit": "Count",
            "Timestamp": now - timedelta(seconds=seconds),
            "Dimensions": [{"Name": name, "Value": values[name]} for name in names]}
            for names in dimension_sets])

    page = build_report_from_stack(stack, tmp_path / "report.html").read_text()

    metrics = page[page.index('<section id="metrics">'):]
    assert re.search(r"<td>ProcessedImageCount</td><td class=num>3</td>"
                     r'<td class="num red">1</td>', metrics), metrics[:600]


def test_report_of_an_empty_stack_says_so(stack: ResultsStack, tmp_path: Path) -> None:
    from scripts.cli_results import build_report_from_stack

    page = build_report_from_stack(stack, tmp_path / "report.html").read_text()

    assert "No results in this period." in page
    assert "<img" not in page


def test_a_report_of_one_line_shows_that_lines_metrics_and_failures(
        stack: ResultsStack) -> None:
    """`linesight report --line line-1` read every line's CloudWatch totals and failures,
    and marked the totals red against line-1's results, as if metrics had been lost."""
    from scripts.cli_results import render_report

    info = stack.info
    mine = [stack.put(record(info, n), image=jpeg()) for n in (1, 2)]
    cloudwatch, now = stack.client("cloudwatch"), datetime.now(UTC)
    for line, camera, count in (("line-1", "cam-1", 2), ("line-2", "cam-3", 5)):
        cloudwatch.put_metric_data(Namespace=namespace(stack), MetricData=[{
            "MetricName": "ProcessedImageCount", "Value": 1.0, "Unit": "Count",
            "Timestamp": now - timedelta(seconds=n + 1),
            "Dimensions": [{"Name": "line", "Value": line}, {"Name": "camera", "Value": camera}]}
            for n in range(count)])
    cloudwatch.put_metric_data(Namespace=namespace(stack), MetricData=[{  # the stack's own
        "MetricName": "IngestErrorCount", "Value": 1.0, "Unit": "Count",
        "Dimensions": [{"Name": "stage", "Value": "ingest"}]}])
    for line, cause in (("line-1", "mine failed"), ("line-2", "theirs failed")):
        stack.client("sqs").send_message(QueueUrl=info.failure_queue_url, MessageBody=json.dumps(
            {"record": record(info, 9, line=line).to_json(),
             "error": {"Error": "States.TaskFailed", "Cause": cause}}))

    page = render_report(mine, stack.client, failure_queue_url=info.failure_queue_url,
                         line="line-1", namespace=namespace(stack))

    metrics = page[page.index('<section id="metrics">'):]
    assert re.search(r"<td>ProcessedImageCount</td><td class=num>2</td>"
                     r'<td class="num">2</td>', metrics), metrics[:600]
    assert "IngestErrorCount" not in metrics
    assert "mine failed" in page and "theirs failed" not in page
    assert "1 workflow failure" in page
