"""LineSight's CloudWatch dashboard, as data (the `DashboardBody` document).

The seed's dashboard read AWS/LookoutVision, which no longer exists; this one keeps its
widgets (single values, anomaly percentage, anomalous vs normal, Step Functions, SNS) and
points them at LineSight's own metrics (`pipeline.metrics`, dimensions line and camera),
then adds per-line anomaly rate, latency p50/p95, dead-letter depth and invalid images.

Pulumi deploys it (`infra/monitoring.py`), the local stack can `put_dashboard` it, tests
compare the two.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pipeline import metrics
from pipeline.alarms import ERROR_STAGES, camera_dimensions

PERIOD_SECONDS = 300
WIDTH = 24  # the dashboard grid is 24 units wide


def dashboard_body(*, region: str, prefix: str, lines: Mapping[str, Sequence[str]],
                   state_machine_arn: str, topic_arn: str,
                   dead_letter_queues: Mapping[str, str]) -> dict[str, Any]:
    """The dashboard of one environment.

    region:            the region every widget reads.
    prefix:            resource prefix, shown in the title.
    lines:             {line id: camera ids}, as configured.
    state_machine_arn: the workflow (AWS/States, dimension StateMachineArn).
    topic_arn:         the alert topic (AWS/SNS, dimension TopicName = the ARN's last part).
    dead_letter_queues: {short role: queue name} whose depth is shown.
    """
    grid = _Grid()
    everything = [(line, camera) for line, cameras in lines.items() for camera in cameras]
    grid.add(24, 2, _text(f"# LineSight - {prefix}\nImages, verdicts, alerts and the health "
                          "of the pipeline. Counts are sums over every line and camera."))
    grid.add(24, 4, _single_values(region, everything))
    grid.add(12, 6, _overall_anomaly_percentage(region, everything))
    grid.add(12, 6, _anomalous_vs_normal(region, everything))
    grid.add(12, 6, _per_line_rate(region, lines))
    grid.add(12, 6, _per_line_sum(region, lines, metrics.INVALID, "Invalid images per line"))
    grid.add(12, 6, _latency(region, everything, metrics.END_TO_END_LATENCY,
                             "Capture to result, p50 / p95 (ms)"))
    grid.add(12, 6, _latency(region, everything, metrics.INFERENCE_LATENCY,
                             "Inference, p50 / p95 (ms)"))
    grid.add(8, 6, _state_machine(region, state_machine_arn))
    grid.add(8, 6, _sns(region, topic_arn))
    grid.add(8, 6, _queues_and_errors(region, dead_letter_queues))
    return {"widgets": grid.widgets}


class _Grid:
    """Places widgets left to right, wrapping at the grid's width."""

    def __init__(self) -> None:
        self.widgets: list[dict[str, Any]] = []
        self.x = self.y = self.row_height = 0

    def add(self, width: int, height: int, widget: dict[str, Any]) -> None:
        if self.x + width > WIDTH:
            self.x, self.y, self.row_height = 0, self.y + self.row_height, 0
        self.widgets.append({**widget, "x": self.x, "y": self.y,
                             "width": width, "height": height})
        self.x += width
        self.row_height = max(self.row_height, height)


def _text(markdown: str) -> dict[str, Any]:
    return {"type": "text", "properties": {"markdown": markdown}}


def _metric_widget(region: str, title: str, rows: list[list[Any]], *, view: str = "timeSeries",
                   stat: str = "Sum", **extra: Any) -> dict[str, Any]:
    return {"type": "metric", "properties": {
        "title": title, "region": region, "view": view, "stat": stat,
        "period": PERIOD_SECONDS, "metrics": rows, **extra}}


def _camera_row(name: str, line: str, camera: str, options: Mapping[str, Any]) -> list[Any]:
    dims = [part for key, value in camera_dimensions(line, camera).items()
            for part in (key, value)]
    return [metrics.NAMESPACE, name, *dims, dict(options)]


def _hidden(name: str, cameras: Sequence[tuple[str, str]], tag: str) -> tuple[list[list[Any]],
                                                                                str]:
    """Hidden per-camera rows of one metric, and the SUM expression over them."""
    rows = [_camera_row(name, line, camera, {"id": f"{tag}{i}", "visible": False})
            for i, (line, camera) in enumerate(cameras)]
    return rows, "SUM([" + ", ".join(f"{tag}{i}" for i in range(len(cameras))) + "])"


def _single_values(region: str, cameras: Sequence[tuple[str, str]]) -> dict[str, Any]:
    rows: list[list[Any]] = []
    shown = ((metrics.PROCESSED, "Images processed"), (metrics.ANOMALIES, "Anomalies"),
             (metrics.LOW_CONFIDENCE, "Low confidence"), (metrics.INVALID, "Invalid images"),
             (metrics.ALERTS, "Alerts sent"))
    for index, (name, label) in enumerate(shown):
        hidden, total = _hidden(name, cameras, f"s{index}x")
        rows += hidden + [[{"expression": total, "label": label, "id": f"total{index}"}]]
    return _metric_widget(region, "Totals for the selected time range", rows,
                          view="singleValue", setPeriodToTimeRange=True)


def _overall_anomaly_percentage(region: str,
                                cameras: Sequence[tuple[str, str]]) -> dict[str, Any]:
    anomalies, a_sum = _hidden(metrics.ANOMALIES, cameras, "a")
    processed, p_sum = _hidden(metrics.PROCESSED, cameras, "p")
    invalid, i_sum = _hidden(metrics.INVALID, cameras, "i")
    # of the images judged, as the anomaly-rate alarms count (unusable uploads are not)
    return _metric_widget(region, "Anomaly percentage", anomalies + processed + invalid + [
        [{"expression": f"100 * {a_sum} / ({p_sum} - {i_sum})",
          "label": "Anomalous images (% of those judged)", "id": "anomalypct"}]],
        yAxis={"left": {"min": 0, "max": 100}})


def _anomalous_vs_normal(region: str, cameras: Sequence[tuple[str, str]]) -> dict[str, Any]:
    anomalies, a_sum = _hidden(metrics.ANOMALIES, cameras, "a")
    processed, p_sum = _hidden(metrics.PROCESSED, cameras, "p")
    invalid, i_sum = _hidden(metrics.INVALID, cameras, "i")
    return _metric_widget(region, "Anomalous vs normal", anomalies + processed + invalid + [
        [{"expression": a_sum, "label": "Anomalous", "id": "anomalous"}],
        [{"expression": f"{p_sum} - {i_sum} - {a_sum}", "label": "Normal", "id": "normal"}],
    ], view="pie", setPeriodToTimeRange=True)


def _per_line_rate(region: str, lines: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    rows: list[list[Any]] = []
    for index, (line, cameras) in enumerate(lines.items()):
        pairs = [(line, camera) for camera in cameras]
        anomalies, a_sum = _hidden(metrics.ANOMALIES, pairs, f"a{index}x")
        processed, p_sum = _hidden(metrics.PROCESSED, pairs, f"p{index}x")
        invalid, i_sum = _hidden(metrics.INVALID, pairs, f"i{index}x")
        rows += anomalies + processed + invalid + [[{
            "expression": f"100 * {a_sum} / ({p_sum} - {i_sum})",
            "label": f"{line} (% of judged)", "id": f"rate{index}"}]]
    return _metric_widget(region, "Anomaly rate per line (%)", rows,
                          yAxis={"left": {"min": 0, "max": 100}})


def _per_line_sum(region: str, lines: Mapping[str, Sequence[str]], name: str,
                  title: str) -> dict[str, Any]:
    rows: list[list[Any]] = []
    for index, (line, cameras) in enumerate(lines.items()):
        hidden, total = _hidden(name, [(line, camera) for camera in cameras], f"n{index}x")
        rows += hidden + [[{"expression": total, "label": line, "id": f"line{index}"}]]
    return _metric_widget(region, title, rows)


def _latency(region: str, cameras: Sequence[tuple[str, str]], name: str,
             title: str) -> dict[str, Any]:
    rows = [_camera_row(name, line, camera, {"stat": stat, "label": f"{line}/{camera} {stat}"})
            for line, camera in cameras for stat in ("p50", "p95")]
    return _metric_widget(region, title, rows, stat="p95")


def _state_machine(region: str, state_machine_arn: str) -> dict[str, Any]:
    rows = [["AWS/States", name, "StateMachineArn", state_machine_arn]
            for name in ("ExecutionsStarted", "ExecutionsSucceeded", "ExecutionsFailed",
                         "ExecutionsTimedOut", "ExecutionThrottled")]
    return _metric_widget(region, "Workflow executions", rows)


def _sns(region: str, topic_arn: str) -> dict[str, Any]:
    topic_name = topic_arn.rsplit(":", 1)[-1]
    rows = [["AWS/SNS", name, "TopicName", topic_name]
            for name in ("NumberOfMessagesPublished", "NumberOfNotificationsDelivered",
                         "NumberOfNotificationsFailed", "NumberOfNotificationsFilteredOut")]
    return _metric_widget(region, "Alerts (SNS)", rows)


def _queues_and_errors(region: str, queues: Mapping[str, str]) -> dict[str, Any]:
    rows: list[list[Any]] = [
        ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", name,
         {"stat": "Maximum", "label": f"{role} depth"}] for role, name in queues.items()]
    rows += [[metrics.NAMESPACE, metrics.INGEST_ERRORS, "stage", stage,
              {"label": f"{stage} errors"}] for stage in ERROR_STAGES]
    return _metric_widget(region, "Dead-letter depth and ingest errors", rows)
