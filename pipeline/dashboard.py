"""LineSight's CloudWatch dashboard, as data (the `DashboardBody` document).

The seed's dashboard read AWS/LookoutVision, which no longer exists; this one keeps its
widgets (single values, anomaly percentage, anomalous vs normal, Step Functions, SNS) and
points them at LineSight's own metrics (`pipeline.metrics`), then adds per-line anomaly
rate, latency p50/p95, dead-letter depth and invalid images.

The handlers write each per-image metric with three dimension sets (per camera, per line,
stack-wide: `pipeline.metrics.DIMENSION_SETS`), so the totals and the stack's latency read
the stack-wide metrics (its p50 and p95 are true percentiles) and the per-line widgets each
line's own. The dashboard grows with the lines, never with the cameras.

Pulumi deploys it (`infra/monitoring.py`), the local stack can `put_dashboard` it, tests
compare the two.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pipeline import metrics
from pipeline.alarms import ERROR_STAGES

PERIOD_SECONDS = 300
WIDTH = 24  # the dashboard grid is 24 units wide


def dashboard_name(prefix: str, region: str) -> str:
    """Dashboard names are one namespace for the whole account, unlike every other name a
    stack has: with the region in it, one prefix in two regions makes two dashboards.

    >>> dashboard_name("linesight-dev", "eu-west-1")
    'linesight-dev-eu-west-1'
    """
    return f"{prefix}-{region}"


def dashboard_body(*, region: str, prefix: str, lines: Mapping[str, Sequence[str]],
                   state_machine_arn: str, topic_arn: str,
                   dead_letter_queues: Mapping[str, str]) -> dict[str, Any]:
    """The dashboard of one environment.

    region:            the region every widget reads.
    prefix:            resource prefix, shown in the title; LineSight's metrics are read
                       from its namespace (`metrics.namespace_for`).
    lines:             {line id: camera ids}, as configured (only the line ids show:
                       the widgets read per-line and stack-wide metrics).
    state_machine_arn: the workflow (AWS/States, dimension StateMachineArn).
    topic_arn:         the alert topic (AWS/SNS, dimension TopicName = the ARN's last part).
    dead_letter_queues: {short role: queue name} whose depth is shown.
    """
    ns = metrics.namespace_for(prefix)
    grid = _Grid()
    grid.add(24, 2, _text(f"# LineSight - {prefix}\nImages, verdicts, alerts and the health "
                          "of the pipeline. Totals and latencies are over every line and "
                          "camera; the per-line widgets show each line's own."))
    grid.add(24, 4, _single_values(region, ns))
    grid.add(12, 6, _overall_anomaly_percentage(region, ns))
    grid.add(12, 6, _anomalous_vs_normal(region, ns))
    grid.add(12, 6, _per_line_rate(region, ns, lines))
    grid.add(12, 6, _per_line_sum(region, ns, lines, metrics.INVALID,
                                  "Invalid images per line"))
    grid.add(12, 6, _latency(region, ns, lines, metrics.END_TO_END_LATENCY,
                             "Capture to result, p50 / p95 (ms)"))
    grid.add(12, 6, _latency(region, ns, lines, metrics.INFERENCE_LATENCY,
                             "Inference, p50 / p95 (ms)"))
    grid.add(8, 6, _state_machine(region, state_machine_arn))
    grid.add(8, 6, _sns(region, topic_arn))
    grid.add(8, 6, _queues_and_errors(region, ns, dead_letter_queues))
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


def _row(ns: str, name: str, line: str = "", **options: Any) -> list[Any]:
    """A row of a per-image metric in namespace `ns`: the line's own with `line`, else the
    stack-wide one."""
    dimension_set = metrics.PER_LINE if line else metrics.STACK_WIDE
    dims = [part for pair in metrics.dimensions(dimension_set, line).items() for part in pair]
    return [ns, name, *dims, options]


def _judged(ns: str, line: str = "", tag: str = "") -> tuple[list[list[Any]], dict[str, str]]:
    """Hidden rows of anomalies, images and unusable ones (of `line`, or of the stack), and
    expressions over them: the judged images that were anomalous and normal, and the
    percentage anomalous, as the anomaly-rate alarms count (unusable uploads are not
    judged). Only an unusable upload puts a point of InvalidImageCount, so a period without
    one has none, and arithmetic with a missing point has none either: `FILL` makes it 0,
    or a plant with no unusable uploads would see no rate at all."""
    a, p, i = (f"{key}{tag}" for key in "api")
    hidden = [_row(ns, name, line, id=key, visible=False) for key, name in
              ((a, metrics.ANOMALIES), (p, metrics.PROCESSED), (i, metrics.INVALID))]
    judged = f"{p} - FILL({i}, 0)"
    return hidden, {"anomalous": a, "normal": f"{judged} - {a}",
                    "percentage": f"100 * {a} / ({judged})"}


def _single_values(region: str, ns: str) -> dict[str, Any]:
    shown = ((metrics.PROCESSED, "Images processed"), (metrics.ANOMALIES, "Anomalies"),
             (metrics.LOW_CONFIDENCE, "Low confidence"), (metrics.INVALID, "Invalid images"),
             (metrics.ALERTS, "Alerts sent"))
    return _metric_widget(region, "Totals for the selected time range",
                          [_row(ns, name, label=label) for name, label in shown],
                          view="singleValue", setPeriodToTimeRange=True)


def _overall_anomaly_percentage(region: str, ns: str) -> dict[str, Any]:
    hidden, judged = _judged(ns)
    return _metric_widget(region, "Anomaly percentage", hidden + [
        [{"expression": judged["percentage"], "label": "Anomalous images (% of those judged)",
          "id": "anomalypct"}]], yAxis={"left": {"min": 0, "max": 100}})


def _anomalous_vs_normal(region: str, ns: str) -> dict[str, Any]:
    hidden, judged = _judged(ns)
    return _metric_widget(region, "Anomalous vs normal", hidden + [
        [{"expression": judged["anomalous"], "label": "Anomalous", "id": "anomalous"}],
        [{"expression": judged["normal"], "label": "Normal", "id": "normal"}],
    ], view="pie", setPeriodToTimeRange=True)


def _per_line_rate(region: str, ns: str, lines: Iterable[str]) -> dict[str, Any]:
    rows: list[list[Any]] = []
    for index, line in enumerate(lines):
        hidden, judged = _judged(ns, line, str(index))
        rows += hidden + [[{"expression": judged["percentage"], "label": f"{line} (% of judged)",
                            "id": f"rate{index}"}]]
    return _metric_widget(region, "Anomaly rate per line (%)", rows,
                          yAxis={"left": {"min": 0, "max": 100}})


def _per_line_sum(region: str, ns: str, lines: Iterable[str], name: str,
                  title: str) -> dict[str, Any]:
    return _metric_widget(region, title, [_row(ns, name, line, label=line) for line in lines])


def _latency(region: str, ns: str, lines: Iterable[str], name: str,
             title: str) -> dict[str, Any]:
    """The stack's p50 and p95, then each line's: percentiles of their own metrics."""
    rows = [_row(ns, name, stat=stat, label=f"all lines {stat}") for stat in ("p50", "p95")]
    rows += [_row(ns, name, line, stat=stat, label=f"{line} {stat}")
             for line in lines for stat in ("p50", "p95")]
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


def _queues_and_errors(region: str, ns: str, queues: Mapping[str, str]) -> dict[str, Any]:
    rows: list[list[Any]] = [
        ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", name,
         {"stat": "Maximum", "label": f"{role} depth"}] for role, name in queues.items()]
    rows += [[ns, metrics.INGEST_ERRORS, "stage", stage,
              {"label": f"{stage} errors"}] for stage in ERROR_STAGES]
    return _metric_widget(region, "Dead-letter depth and ingest errors", rows)
