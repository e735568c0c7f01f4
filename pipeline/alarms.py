"""LineSight's CloudWatch alarms, as data: a list of PutMetricAlarm requests.

Pulumi turns each into an `aws.cloudwatch.MetricAlarm` (`infra/monitoring.py`); the local
stack can pass them to `cloudwatch.put_metric_alarm(**definition)` unchanged. Every alarm
notifies `topic_arn` when it fires and when it clears.

The handlers write each per-image metric once with three dimension sets, [line, camera],
[line] and [] (`pipeline.metrics.DIMENSION_SETS`), so a line-level alarm reads the line's
own metrics: two for a rate, one for the latency (the line's true p95). However many
cameras a line has, no alarm comes near CloudWatch's 10 metrics per alarm. Only the
silent-camera alarms read a camera's metric, one alarm per camera.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pipeline import metrics

PERIOD_SECONDS = 300
ANOMALY_RATE_PERIODS = 3  # the rate is judged over 15 minutes
MIN_IMAGES_FOR_RATE = 10  # fewer images in a period say nothing about a rate
# A line whose uploads are this often unusable (corrupt, not an image, forged metadata) in
# each of ANOMALY_RATE_PERIODS periods has a camera or uploader to fix: they are recorded
# INVALID and counted, but never judged.
INVALID_RATE_ALARM = 0.2
# The `stage` values api/app.py emits IngestErrorCount with, and what an error there costs.
# A stage missing here alarms nowhere (tests/unit/test_dashboard_alarms.py checks app.py).
ERROR_STAGES = {
    "ingest": "an image message failed; it is retried, then goes to the ingest dead-letter "
              "queue",
    "lake-decode": "a results-stream record could not be read as a result; it stays in the "
                   "table and goes to the lake failure queue instead of the lake",
}


def alarm_definitions(*, prefix: str, lines: Mapping[str, Sequence[str]],
                      anomaly_rates: Mapping[str, float], topic_arn: str,
                      state_machine_arn: str, dead_letter_queues: Mapping[str, str],
                      ingest_function: str, latency_p95_ms: float,
                      silent_minutes: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
    """All alarms of one environment, in PutMetricAlarm shape.

    prefix:            resource prefix; every AlarmName starts with it, and LineSight's
                       metrics are read from its namespace (`metrics.namespace_for`).
    lines:             {line id: camera ids}, as configured.
    anomaly_rates:     {line id: anomaly rate in [0, 1] above which the line alarms}.
    topic_arn:         SNS topic notified on ALARM and OK.
    state_machine_arn: the workflow whose failed or timed-out executions alarm.
    dead_letter_queues: {short role, e.g. "ingest-dlq": queue name}; each alarms when
                       it holds any message.
    ingest_function:   the ingest Lambda's function name (its Errors count as handler errors).
    latency_p95_ms:    p95 capture-to-result latency of a line (all its images) that alarms.
    silent_minutes:    {line id: minutes}: each camera of such a line alarms after that
                       long without an upload (lines absent here have no such alarm).

    The alarm names depend only on `prefix`, `lines`, the keys of `silent_minutes` and
    of `dead_letter_queues`, so a caller can create one resource per definition before the
    ARNs and names in the other arguments are known.
    """
    actions = {"AlarmActions": [topic_arn], "OKActions": [topic_arn]}
    alarms: list[dict[str, Any]] = []
    for line_id, cameras in lines.items():
        alarms.append(_anomaly_rate(prefix, line_id, anomaly_rates.get(line_id, 0.25))
                      | actions)
        alarms.append(_latency(prefix, line_id, latency_p95_ms) | actions)
        alarms.append(_invalid_rate(prefix, line_id) | actions)
        minutes = (silent_minutes or {}).get(line_id, 0)
        alarms.extend(_silent_camera(prefix, line_id, camera, minutes) | actions
                      for camera in cameras if minutes)
    alarms.append(_ingest_errors(prefix, ingest_function) | actions)
    alarms.append(_failed_executions(prefix, state_machine_arn) | actions)
    for role, queue_name in dead_letter_queues.items():
        alarms.append(_queue_not_empty(prefix, role, queue_name) | actions)
    return alarms


def _dimension_list(dimensions: Mapping[str, str]) -> list[dict[str, str]]:
    """CloudWatch's form of metric dimensions: [{"Name": ..., "Value": ...}]."""
    return [{"Name": name, "Value": value} for name, value in dimensions.items()]


def _stat(query_id: str, namespace: str, name: str, dimensions: Mapping[str, str],
          stat: str = "Sum") -> dict[str, Any]:
    return {
        "Id": query_id,
        "MetricStat": {
            "Metric": {"Namespace": namespace, "MetricName": name,
                       "Dimensions": _dimension_list(dimensions)},
            "Period": PERIOD_SECONDS,
            "Stat": stat,
        },
        "ReturnData": False,
    }


def _expression(expression: str, label: str) -> dict[str, Any]:
    return {"Id": "result", "Expression": expression, "Label": label, "ReturnData": True}


def _anomaly_rate(prefix: str, line_id: str, rate: float) -> dict[str, Any]:
    # Of the images judged: DetectedAnomalyCount is emitted once per judged image, 0 or 1,
    # so its sample count is the number judged. Unusable uploads are not judged, so a
    # camera sending garbage does not dilute its line's rate (their own alarm is below).
    return _line_rate(metrics.namespace_for(prefix), f"{prefix}-anomaly-rate-{line_id}",
                      line_id, metrics.ANOMALIES, rate,
                      "judged were anomalous", of=(metrics.ANOMALIES, "SampleCount"))


def _invalid_rate(prefix: str, line_id: str) -> dict[str, Any]:
    return _line_rate(metrics.namespace_for(prefix), f"{prefix}-invalid-uploads-{line_id}",
                      line_id, metrics.INVALID, INVALID_RATE_ALARM,
                      "were unusable (recorded INVALID: corrupt, not an image, or forged "
                      "metadata; `linesight results --line` shows why)")


def _line_rate(namespace: str, name: str, line_id: str, counted: str, rate: float, what: str,
               of: tuple[str, str] = (metrics.PROCESSED, "Sum")) -> dict[str, Any]:
    """`counted` / `of` (a metric and its statistic) of the line's own metrics, above
    `rate` in each of ANOMALY_RATE_PERIODS periods (a period with too few images counts
    as 0)."""
    line = metrics.dimensions(metrics.PER_LINE, line_id)
    part = _stat("counted", namespace, counted, line)
    total = _stat("total", namespace, of[0], line, stat=of[1])
    expression = f"IF(total >= {MIN_IMAGES_FOR_RATE}, counted / total, 0)"
    return {
        "AlarmName": name,
        "AlarmDescription": (f"Line {line_id}: more than {rate:.0%} of its images {what} "
                             f"in each of {ANOMALY_RATE_PERIODS} periods of "
                             f"{PERIOD_SECONDS // 60} minutes (at least "
                             f"{MIN_IMAGES_FOR_RATE} images per period)."),
        "Metrics": [part, total, _expression(
            expression, f"{counted} / {of[0]} ({of[1]}), line {line_id}")],
        "ComparisonOperator": "GreaterThanThreshold",
        "Threshold": rate,
        "EvaluationPeriods": ANOMALY_RATE_PERIODS,
        "DatapointsToAlarm": ANOMALY_RATE_PERIODS,
        "TreatMissingData": "notBreaching",
    }


def silent_camera_alarm_name(prefix: str, line_id: str, camera_id: str) -> str:
    """Ids may hold '-', so two cameras can share a name (line 'press', camera '1-top' and
    line 'press-1', camera 'top'): the stack config refuses that (`pipeline.stackconfig`)."""
    return f"{prefix}-camera-silent-{line_id}-{camera_id}"


def _silent_camera(prefix: str, line_id: str, camera_id: str, minutes: int) -> dict[str, Any]:
    # Every upload, judged or not, emits ProcessedImageCount once; a period without one has
    # no data point at all, which is what must alarm here (the one alarm that treats
    # missing data as breaching).
    periods = minutes * 60 // PERIOD_SECONDS
    return {
        "AlarmName": silent_camera_alarm_name(prefix, line_id, camera_id),
        "AlarmDescription": (f"Line {line_id} camera {camera_id}: no upload at all, not even "
                             f"an unusable one, for {minutes} minutes, so its parts go "
                             "uninspected: check the camera, its uploader, its token "
                             "(`linesight tokens list`) and its network."),
        "Namespace": metrics.namespace_for(prefix),
        "MetricName": metrics.PROCESSED,
        "Dimensions": _dimension_list(metrics.dimensions(metrics.PER_CAMERA, line_id,
                                                         camera_id)),
        "Statistic": "Sum",
        "Period": PERIOD_SECONDS,
        "ComparisonOperator": "LessThanThreshold",
        "Threshold": 1.0,
        "EvaluationPeriods": periods,
        "DatapointsToAlarm": periods,
        "TreatMissingData": "breaching",
    }


def _latency(prefix: str, line_id: str, threshold_ms: float) -> dict[str, Any]:
    # The line's own metric holds every image of the line, so this is the line's p95 (no
    # math over its cameras' p95s could give it).
    return {
        "AlarmName": f"{prefix}-latency-p95-{line_id}",
        "AlarmDescription": (f"Line {line_id}: the p95 time from capture to result of its "
                             f"images, all cameras together, is above {threshold_ms:.0f} ms."),
        "Namespace": metrics.namespace_for(prefix),
        "MetricName": metrics.END_TO_END_LATENCY,
        "Dimensions": _dimension_list(metrics.dimensions(metrics.PER_LINE, line_id)),
        "ExtendedStatistic": "p95",
        "Period": PERIOD_SECONDS,
        "ComparisonOperator": "GreaterThanThreshold",
        "Threshold": float(threshold_ms),
        "EvaluationPeriods": 3,
        "DatapointsToAlarm": 2,
        "TreatMissingData": "notBreaching",
    }


def _ingest_errors(prefix: str, function_name: str) -> dict[str, Any]:
    # One alarm over every stage keeps the name (and the Pulumi resource) it always had.
    stages = [_stat(stage.replace("-", "_"), metrics.namespace_for(prefix),
                    metrics.INGEST_ERRORS,
                    {"stage": stage}) for stage in ERROR_STAGES]
    crashed = _stat("crashed", "AWS/Lambda", "Errors", {"FunctionName": function_name})
    total = " + ".join(f"FILL({q['Id']}, 0)" for q in [*stages, crashed])
    costs = " ".join(f"Stage {stage}: {cost}." for stage, cost in ERROR_STAGES.items())
    return {
        "AlarmName": f"{prefix}-ingest-errors",
        "AlarmDescription": (f"A handler failed: {metrics.INGEST_ERRORS} in stages "
                             f"{', '.join(ERROR_STAGES)}, or an ingest invocation crashed "
                             f"(Lambda Errors). {costs}"),
        "Metrics": [*stages, crashed, _expression(
            total, f"{metrics.INGEST_ERRORS} ({', '.join(ERROR_STAGES)}) + ingest Lambda Errors")],
        "ComparisonOperator": "GreaterThanThreshold",
        "Threshold": 0.0,
        "EvaluationPeriods": 1,
        "DatapointsToAlarm": 1,
        "TreatMissingData": "notBreaching",
    }


def _failed_executions(prefix: str, state_machine_arn: str) -> dict[str, Any]:
    dims = {"StateMachineArn": state_machine_arn}
    return {
        "AlarmName": f"{prefix}-failed-executions",
        "AlarmDescription": ("Workflow executions failed or timed out; their input is in "
                             "the workflow failure queue."),
        "Metrics": [
            _stat("failed", "AWS/States", "ExecutionsFailed", dims),
            _stat("timedout", "AWS/States", "ExecutionsTimedOut", dims),
            _expression("FILL(failed, 0) + FILL(timedout, 0)", "failed executions"),
        ],
        "ComparisonOperator": "GreaterThanThreshold",
        "Threshold": 0.0,
        "EvaluationPeriods": 1,
        "DatapointsToAlarm": 1,
        "TreatMissingData": "notBreaching",
    }


def _queue_not_empty(prefix: str, role: str, queue_name: str) -> dict[str, Any]:
    return {
        "AlarmName": f"{prefix}-{role}-not-empty",
        "AlarmDescription": (f"The {role} queue holds messages that need a person: "
                             "inspect them, fix the cause, then redrive or delete them."),
        "Namespace": "AWS/SQS",
        "MetricName": "ApproximateNumberOfMessagesVisible",
        "Dimensions": [{"Name": "QueueName", "Value": queue_name}],
        "Statistic": "Maximum",
        "Period": PERIOD_SECONDS,
        "ComparisonOperator": "GreaterThanThreshold",
        "Threshold": 0.0,
        "EvaluationPeriods": 1,
        "DatapointsToAlarm": 1,
        "TreatMissingData": "notBreaching",
    }
