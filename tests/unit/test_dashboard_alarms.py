"""The dashboard and alarm definitions: built on the metrics the handlers really emit,
valid for CloudWatch, every alarm has an action, the alarms' metric math computes what
their descriptions say (evaluated here on sample numbers), and both stay within
CloudWatch's limits however many cameras a line has."""

from __future__ import annotations

import ast
import io
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest

from pipeline import metrics
from pipeline.alarms import ERROR_STAGES, alarm_definitions
from pipeline.dashboard import WIDTH, dashboard_body
from pipeline.stackconfig import DASHBOARD_METRICS, DASHBOARD_WIDGET_METRICS

NAMESPACE = metrics.namespace_for("ls")  # the stack the alarms and board below are of

LINES = {"press-1": ("top", "side"), "weld-2": ("a", "b", "c", "d", "e")}
TOPIC = "arn:aws:sns:us-east-1:123456789012:linesight-alerts"
MACHINE = "arn:aws:states:us-east-1:123456789012:stateMachine:linesight-workflow"
QUEUES = {"ingest-dlq": "ls-ingest-dlq", "workflow-failures": "ls-wf", "lake-failures": "ls-lf"}
QUERY_ID = re.compile(r"^[a-z][a-zA-Z0-9_]*$")
AWS_METRICS = {"AWS/Lambda", "AWS/States", "AWS/SQS", "AWS/SNS"}
MAX_ALARM_METRICS = 10  # CloudWatch: metrics one alarm's metric math may reference


def alarms(lines: Mapping[str, Sequence[str]] = LINES,
           silent_minutes: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
    return alarm_definitions(prefix="ls", lines=lines, anomaly_rates={"press-1": 0.1},
                             topic_arn=TOPIC, state_machine_arn=MACHINE,
                             dead_letter_queues=QUEUES, ingest_function="ls-ingest",
                             latency_p95_ms=20000,
                             silent_minutes={"press-1": 15} if silent_minutes is None
                             else silent_minutes)


def board(lines: Mapping[str, Sequence[str]] = LINES) -> dict[str, Any]:
    return dashboard_body(region="us-east-1", prefix="ls", lines=lines,
                          state_machine_arn=MACHINE, topic_arn=TOPIC,
                          dead_letter_queues=QUEUES)


def metric_counts(body: dict[str, Any]) -> list[int]:
    """The metrics of each widget, hidden ones and expressions included, as CloudWatch
    counts them against its limits."""
    return [len(widget["properties"].get("metrics", ())) for widget in body["widgets"]]


def emitted_dimensions(emit: Any, *args: Any) -> list[dict[str, str]]:
    """The dimensions ({name: value}) of the EMF blobs a telemetry function prints, told
    the namespace of this stack (where every blob must be)."""
    out = io.StringIO()
    with redirect_stdout(out):
        emit(*args, NAMESPACE)
    blobs = [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]
    assert {d["Namespace"] for blob in blobs for d in blob["_aws"]["CloudWatchMetrics"]} == {
        NAMESPACE}
    return [{name: blob[name] for name in dims} for blob in blobs
            for directive in blob["_aws"]["CloudWatchMetrics"] for dims in directive["Dimensions"]]


def test_alarm_names_cover_every_line_and_queue() -> None:
    names = [a["AlarmName"] for a in alarms()]
    assert len(names) == len(set(names))
    assert set(names) == {
        "ls-anomaly-rate-press-1", "ls-latency-p95-press-1", "ls-invalid-uploads-press-1",
        "ls-camera-silent-press-1-top", "ls-camera-silent-press-1-side",
        "ls-anomaly-rate-weld-2", "ls-latency-p95-weld-2", "ls-invalid-uploads-weld-2",
        "ls-ingest-errors", "ls-failed-executions",
        "ls-ingest-dlq-not-empty", "ls-workflow-failures-not-empty", "ls-lake-failures-not-empty"}


@pytest.mark.parametrize("alarm", alarms(), ids=lambda a: a["AlarmName"])
def test_every_alarm_has_an_action_and_fits_cloudwatch(alarm: dict[str, Any]) -> None:
    assert alarm["AlarmActions"] == [TOPIC]
    assert alarm["OKActions"] == [TOPIC]
    queries = alarm.get("Metrics", [])
    if queries:
        stats = [q for q in queries if "MetricStat" in q]
        # CloudWatch: at most 10 metrics in one alarm's metric math, one result
        assert len(stats) <= MAX_ALARM_METRICS
        assert [q["ReturnData"] for q in queries].count(True) == 1
        assert all(QUERY_ID.match(q["Id"]) for q in queries)
        metrics_used = [q["MetricStat"]["Metric"] for q in stats]
    else:
        metrics_used = [alarm]
    for metric in metrics_used:
        if not metric["Namespace"].startswith("AWS/"):
            assert metric["Namespace"] == NAMESPACE and metric["MetricName"] in metrics.ALL


def test_anomaly_rate_uses_the_line_override_and_the_lines_own_metrics() -> None:
    by_name = {a["AlarmName"]: a for a in alarms()}
    press = by_name["ls-anomaly-rate-press-1"]
    assert press["Threshold"] == 0.1
    assert by_name["ls-anomaly-rate-weld-2"]["Threshold"] == 0.25
    read = [(q["MetricStat"]["Metric"]["MetricName"], q["MetricStat"]["Stat"],
             q["MetricStat"]["Metric"]["Dimensions"])
            for q in press["Metrics"] if "MetricStat" in q]
    line = [{"Name": "line", "Value": "press-1"}]
    assert read == [(metrics.ANOMALIES, "Sum", line), (metrics.ANOMALIES, "SampleCount", line)]
    assert "IF(" in press["Metrics"][-1]["Expression"]


def test_alarms_and_dashboard_read_the_dimensions_the_handlers_write() -> None:
    from chalicelib import telemetry

    from pipeline.alerts import AlertDecision
    from pipeline.ingest import Outcome
    from pipeline.records import STATUS_OK, ResultRecord, parse_time

    when = parse_time("2026-11-23T10:00:00+00:00")
    record = ResultRecord("img", "press-1", "top", "s3://b/k", when, when, STATUS_OK,
                          is_anomalous=True, confidence=0.9)
    per_image = emitted_dimensions(telemetry.emit_outcome,
                                   Outcome(record, AlertDecision(send=False), "x"))
    assert per_image == [{"line": "press-1", "camera": "top"}, {"line": "press-1"}, {}]
    assert per_image == [metrics.dimensions(dimension_set, "press-1", "top")
                         for dimension_set in metrics.DIMENSION_SETS]


@pytest.mark.parametrize("stage", [
    "ingest",       # the ingest handler failed a message
    "lake-decode",  # the lake handler could not decode a stream record: a row is missing
])
def test_alarm_and_dashboard_watch_each_error_stage(stage: str) -> None:
    from chalicelib import telemetry
    (emitted,) = emitted_dimensions(telemetry.emit_unexpected_error, stage)
    (ingest_errors,) = [a for a in alarms() if a["AlarmName"] == "ls-ingest-errors"]
    alarmed = [{d["Name"]: d["Value"] for d in q["MetricStat"]["Metric"]["Dimensions"]}
               for q in ingest_errors["Metrics"]
               if q.get("MetricStat", {}).get("Metric", {}).get("MetricName")
               == metrics.INGEST_ERRORS]
    assert emitted in alarmed
    assert stage in ingest_errors["AlarmDescription"]
    rows = [row for widget in board()["widgets"] if widget["type"] == "metric"
            for row in widget["properties"]["metrics"]
            if row[:2] == [NAMESPACE, metrics.INGEST_ERRORS]]
    # each stage is a line of its own: a visible row with the stage's dimensions
    shown = [dict(zip(row[2:-1:2], row[3:-1:2], strict=True)) for row in rows
             if row[-1].get("visible", True)]
    assert emitted in shown


def test_error_stages_are_the_ones_the_handlers_emit() -> None:
    """A stage added to a handler but not to ERROR_STAGES would alarm nowhere."""
    handlers = (Path(__file__).parents[2] / "api" / "app.py").read_text()
    emitted = set(re.findall(r'emit_unexpected_error\("([^"]+)"', handlers))
    assert emitted == set(ERROR_STAGES)


def test_dashboard_layout_and_queries() -> None:
    widgets = board()["widgets"]
    assert {w["type"] for w in widgets} == {"text", "metric"}
    for widget in widgets:
        assert 0 <= widget["x"] and widget["x"] + widget["width"] <= WIDTH
        if widget["type"] != "metric":
            continue
        props = widget["properties"]
        assert props["region"] == "us-east-1"
        ids = [row[-1]["id"] for row in props["metrics"]
               if isinstance(row[-1], dict) and "id" in row[-1]]
        assert len(ids) == len(set(ids)) and all(QUERY_ID.match(i) for i in ids)
        for row in props["metrics"]:
            if isinstance(row[0], dict):
                referenced = set(re.findall(r"\b[a-z][a-zA-Z0-9_]*\b", row[0]["expression"]))
                assert referenced - {"SUM", "IF"} <= set(ids), row
            else:
                assert row[0] == NAMESPACE and row[1] in metrics.ALL or (
                    row[0] in AWS_METRICS), row


@pytest.mark.parametrize("title", [
    "Totals for the selected time range",  # single values
    "Anomaly percentage",
    "Anomalous vs normal",                 # the pie
    "Anomaly rate per line (%)",
    "Invalid images per line",
    "Capture to result, p50 / p95 (ms)",
    "Inference, p50 / p95 (ms)",
    "Workflow executions",                 # Step Functions
    "Alerts (SNS)",
    "Dead-letter depth and ingest errors",
])
def test_dashboard_has_the_widget(title: str) -> None:
    assert title in [w["properties"].get("title") for w in board()["widgets"]]


def test_definitions_are_accepted_by_the_cloudwatch_api(aws_env: None) -> None:
    """botocore validates every request against the CloudWatch API model; moto stores it."""
    import boto3
    from moto import mock_aws

    with mock_aws():
        cloudwatch = boto3.client("cloudwatch", region_name="us-east-1")
        for alarm in alarms():
            cloudwatch.put_metric_alarm(**alarm)
        cloudwatch.put_dashboard(DashboardName="ls", DashboardBody=json.dumps(board()))
        stored = cloudwatch.describe_alarms()["MetricAlarms"]
        assert len(stored) == len(alarms())
        assert all(a["AlarmActions"] == [TOPIC] for a in stored)


# A tiny evaluator for the CloudWatch metric-math the alarms use: query ids, numbers,
# [lists], + - * /, one comparison (true is 1), IF, SUM, MAX and FILL. The expressions are
# also valid Python syntax, so Python's parser reads them; anything else is refused.
_FUNCTIONS: dict[str, Callable[..., float]] = {
    "SUM": lambda values: float(sum(values)),
    "MAX": lambda values: float(max(values)),
    "FILL": lambda value, fill: fill if value is None else value,
}
# Arithmetic with a missing point (None) has no point: only FILL gives one.
_BINARY: dict[type[ast.operator], Callable[[float, float], float | None]] = {
    ast.Add: lambda a, b: None if a is None or b is None else a + b,
    ast.Sub: lambda a, b: None if a is None or b is None else a - b,
    ast.Mult: lambda a, b: None if a is None or b is None else a * b,
    ast.Div: lambda a, b: None if a is None or b is None else a / b,
}
_COMPARE: dict[type[ast.cmpop], Callable[[float, float], bool]] = {
    ast.GtE: lambda a, b: a >= b, ast.Gt: lambda a, b: a > b,
    ast.LtE: lambda a, b: a <= b, ast.Lt: lambda a, b: a < b,
}


def evaluate(expression: str, values: Mapping[str, float | None]) -> Any:
    """The value of a metric-math expression for one period; `values` maps query ids to
    their data point (None: no data).

    >>> evaluate("IF(FILL(a, 0) >= 2, a / b, 0)", {"a": 3.0, "b": 4.0})
    0.75
    """
    def value(node: ast.expr) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        if isinstance(node, ast.Name):
            return values[node.id]
        if isinstance(node, ast.List):
            return [value(item) for item in node.elts]
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            return _BINARY[type(node.op)](value(node.left), value(node.right))
        if (isinstance(node, ast.Compare) and len(node.ops) == 1
                and type(node.ops[0]) in _COMPARE):
            return float(_COMPARE[type(node.ops[0])](value(node.left),
                                                     value(node.comparators[0])))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id == "IF":  # only the branch taken is evaluated
                condition, then, otherwise = node.args
                return value(then if value(condition) else otherwise)
            return _FUNCTIONS[node.func.id](*[value(arg) for arg in node.args])
        raise ValueError(f"not metric math this evaluator knows: {ast.dump(node)}")

    return value(ast.parse(expression, mode="eval").body)


def alarm_value(alarm: dict[str, Any], data: Mapping[tuple[str, ...], float | None]) -> Any:
    """Evaluate an alarm's returned expression, each query's data point taken from `data`
    by (metric name, line or stage), or by (metric name, line, statistic) for another
    statistic than Sum, so the test does not rely on the query ids."""
    values: dict[str, float | None] = {}
    for query in alarm["Metrics"]:
        if "MetricStat" in query:
            metric = query["MetricStat"]["Metric"]
            dims = {d["Name"]: d["Value"] for d in metric["Dimensions"]}
            assert metrics.DIMENSION_CAMERA not in dims, "a line alarm reads the line's metric"
            which = dims.get(metrics.DIMENSION_LINE) or dims.get("stage") or ""
            stat = query["MetricStat"]["Stat"]
            values[query["Id"]] = data.get((metric["MetricName"], which) if stat == "Sum"
                                           else (metric["MetricName"], which, stat))
    [result] = [q for q in alarm["Metrics"] if q["ReturnData"]]
    return evaluate(result["Expression"], values)


def breaches(alarm: dict[str, Any], value: float) -> bool:
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    return bool(value > alarm["Threshold"])


def by_name(name: str) -> dict[str, Any]:
    [alarm] = [a for a in alarms() if a["AlarmName"] == name]
    return alarm


def _press(anomalies: tuple[int, int], judged: tuple[int, int], invalid: tuple[int, int] = (0, 0)
           ) -> dict[tuple[str, ...], float | None]:
    """One period of line press-1: (top, side) counts of anomalies, images judged and
    unusable uploads, as CloudWatch aggregates them in the line's own metrics (each
    camera's data points are the line's too; the anomaly metric is emitted once per judged
    image, so its SampleCount is the number judged)."""
    return {(metrics.ANOMALIES, "press-1"): sum(anomalies),
            (metrics.ANOMALIES, "press-1", "SampleCount"): sum(judged),
            (metrics.INVALID, "press-1"): sum(invalid),
            (metrics.PROCESSED, "press-1"): sum(judged) + sum(invalid)}


@pytest.mark.parametrize("data, rate, alarmed", [
    # 3 anomalies of 10 images over both cameras: 0.3, above press-1's 0.1
    (_press((2, 1), (6, 4)), 0.3, True),
    # anomalies on one camera only still count against the line's images
    (_press((0, 4), (10, 10)), 0.2, True),
    # 1 of 10: exactly the threshold, not above it
    (_press((1, 0), (5, 5)), 0.1, False),
    # fewer than MIN_IMAGES_FOR_RATE images say nothing about a rate: 0
    (_press((5, 4), (5, 4)), 0.0, False),
    # no images at all: 0, not a division by zero
    (_press((0, 0), (0, 0)), 0.0, False),
    # a camera sending garbage does not dilute the rate: 3 of 10 judged, 10 unusable
    (_press((2, 1), (6, 4), invalid=(0, 10)), 0.3, True),
], ids=["3-of-10", "one-camera", "at-threshold", "too-few-images", "no-images",
        "unusable-not-counted"])
def test_anomaly_rate_math(data: dict[tuple[str, str], float | None], rate: float,
                           alarmed: bool) -> None:
    alarm = by_name("ls-anomaly-rate-press-1")
    value = alarm_value(alarm, data)
    assert value == pytest.approx(rate)
    assert breaches(alarm, value) is alarmed


@pytest.mark.parametrize("invalid, processed, alarmed", [
    ((3, 0), (5, 5), True),    # 3 of 10 unusable: a camera or uploader to fix
    ((0, 2), (5, 5), False),   # 2 of 10: exactly 20 %, not above
    ((4, 4), (4, 4), False),   # too few images to say anything
])
def test_invalid_uploads_math(invalid: tuple[int, int], processed: tuple[int, int],
                              alarmed: bool) -> None:
    alarm = by_name("ls-invalid-uploads-press-1")
    judged = (processed[0] - invalid[0], processed[1] - invalid[1])
    data = _press(judged, judged, invalid)  # every judged image anomalous: another alarm's
    assert breaches(alarm, alarm_value(alarm, data)) is alarmed
    assert alarm["EvaluationPeriods"] == alarm["DatapointsToAlarm"] == 3


def p95(values: Sequence[float]) -> float:
    """The nearest-rank 95th percentile (the cases below hold whatever rank CloudWatch
    interpolates, since the values around it are equal)."""
    return sorted(values)[math.ceil(0.95 * len(values)) - 1]


def _weld(slow_images: int, slow_ms: float = 25000.0) -> list[float]:
    """100 images of line weld-2 in one period: 20 per camera, the last `slow_images` of
    them from camera e at `slow_ms`, every other one at 1000 ms."""
    return [1000.0] * (100 - slow_images) + [slow_ms] * slow_images


@pytest.mark.parametrize("images, alarmed", [
    # every image of weld-2 under the configured 20000 ms
    (_weld(0), False),
    # camera e slow on 2 of its 20 images: that camera's own p95 is 25 s (the old
    # worst-camera alarm fired), but 98 % of the line's images took 1 s
    (_weld(2), False),
    # camera e slow on 10 of its 20: a tenth of the line's images, above its p95
    (_weld(10), True),
    # exactly the threshold is not above it
    (_weld(10, slow_ms=20000.0), False),
], ids=["all-under", "one-camera-rarely-slow", "one-camera-often-slow", "at-threshold"])
def test_latency_alarm_watches_the_lines_own_p95_in_ms(images: list[float],
                                                       alarmed: bool) -> None:
    alarm = by_name("ls-latency-p95-weld-2")
    assert alarm["Threshold"] == 20000  # latency_p95_ms, in ms as the metric is
    assert (alarm["Namespace"], alarm["MetricName"], alarm["ExtendedStatistic"]) == (
        NAMESPACE, metrics.END_TO_END_LATENCY, "p95")
    assert alarm["Dimensions"] == [{"Name": "line", "Value": "weld-2"}]
    assert "Metrics" not in alarm and "Statistic" not in alarm
    assert breaches(alarm, p95(images)) is alarmed


@pytest.mark.parametrize("data, total", [
    # no data in any stage (the usual case): 0, not missing
    ({}, 0.0),
    # one failed lake decode
    ({(metrics.INGEST_ERRORS, "lake-decode"): 1.0}, 1.0),
    # every stage and a crashed invocation add up
    ({(metrics.INGEST_ERRORS, "ingest"): 2.0, (metrics.INGEST_ERRORS, "lake-decode"): 1.0,
      ("Errors", ""): 1.0}, 4.0),
], ids=["no-data", "lake-decode", "all-stages"])
def test_ingest_errors_math(data: dict[tuple[str, str], float | None], total: float) -> None:
    alarm = by_name("ls-ingest-errors")
    value = alarm_value(alarm, data)
    assert value == total
    assert breaches(alarm, value) is (total > 0)


def state(alarm: dict[str, Any], sums: list[float | None]) -> str:
    """A single-metric alarm's state after these periods' data points (None: no data),
    as CloudWatch decides it: ALARM when at least DatapointsToAlarm of the last
    EvaluationPeriods breach, a missing one counting as TreatMissingData says."""
    compare = {"LessThanThreshold": lambda v, t: v < t,
               "GreaterThanThreshold": lambda v, t: v > t}[alarm["ComparisonOperator"]]
    missing = alarm["TreatMissingData"]
    assert missing in ("breaching", "notBreaching")
    window = sums[-alarm["EvaluationPeriods"]:]
    breached = sum(missing == "breaching" if value is None
                   else compare(value, alarm["Threshold"]) for value in window)
    return "ALARM" if breached >= alarm["DatapointsToAlarm"] else "OK"


@pytest.mark.parametrize("sums, expected", [
    ([4.0, None, None, None], "ALARM"),       # nothing for the last 15 minutes
    ([None, None, 1.0, None], "OK"),          # one upload 5-10 minutes ago
    ([None, None, None, 1.0], "OK"),          # the camera came back
    ([3.0, 2.0, 5.0, 1.0], "OK"),             # sending steadily
], ids=["silent-15-min", "one-upload-in-window", "came-back", "steady"])
def test_a_camera_silent_for_its_lines_minutes_alarms(sums: list[float | None],
                                                      expected: str) -> None:
    alarm = by_name("ls-camera-silent-press-1-top")
    assert alarm["EvaluationPeriods"] * alarm["Period"] == 15 * 60  # press-1's 15 minutes
    assert state(alarm, sums) == expected
    # weld-2 sets no silence: none of its cameras has this alarm
    assert not [a for a in alarms() if a["AlarmName"].startswith("ls-camera-silent-weld-2")]


def test_an_unusable_upload_keeps_a_camera_from_counting_as_silent() -> None:
    """The silence alarm reads a metric every upload emits, INVALID ones too, with the
    camera's own dimensions: a camera sending garbage has its own alarm (invalid uploads)."""
    from chalicelib import telemetry

    from pipeline.alerts import AlertDecision
    from pipeline.ingest import Outcome
    from pipeline.records import STATUS_INVALID, ResultRecord, parse_time

    when = parse_time("2026-11-23T10:00:00+00:00")
    record = ResultRecord("img", "press-1", "top", "s3://b/k", when, when, STATUS_INVALID)
    out = io.StringIO()
    with redirect_stdout(out):
        telemetry.emit_outcome(Outcome(record, AlertDecision(send=False), "x"),
                               NAMESPACE)
    emitted = {(directive["Namespace"], metric["Name"], float(blob[metric["Name"]]),
                tuple(sorted((d, blob[d]) for d in dimension_set)))
               for line in out.getvalue().splitlines() if line.startswith("{")
               for blob in [json.loads(line)] for directive in blob["_aws"]["CloudWatchMetrics"]
               for metric in directive["Metrics"] for dimension_set in directive["Dimensions"]}
    alarm = by_name("ls-camera-silent-press-1-top")
    watched = (alarm["Namespace"], alarm["MetricName"], 1.0,
               tuple(sorted((d["Name"], d["Value"]) for d in alarm["Dimensions"])))
    assert watched in emitted
    assert alarm["Statistic"] == "Sum" and alarm["Threshold"] == 1.0


@pytest.mark.parametrize("invalid", [10, None], ids=["10-unusable", "no-unusable-point"])
def test_the_dashboards_anomaly_rates_count_judged_images_as_the_alarms_do(
        invalid: int | None) -> None:
    """3 anomalies among 10 judged images and 10 unusable uploads on press-1 (weld-2 idle):
    30 %, not 15 %, in press-1's own metrics and in the stack's. And 30 % when no upload was
    unusable, so InvalidImageCount has no point at all (only unusable uploads put one)."""
    counts = {metrics.ANOMALIES: 3, metrics.INVALID: invalid,
              metrics.PROCESSED: 20 if invalid else 10}
    titles = {"Anomaly rate per line (%)": ("rate0", 30.0),
              "Anomaly percentage": ("anomalypct", 30.0),
              "Anomalous vs normal": ("normal", 7.0)}
    for widget in board()["widgets"]:
        title = widget["properties"].get("title")
        if title not in titles:
            continue
        rows = widget["properties"]["metrics"]
        values = {row[-1]["id"]: counts[row[1]]
                  if dict(zip(row[2:-1:2], row[3:-1:2], strict=True)).get("line", "press-1")
                  == "press-1" else 0
                  for row in rows if not isinstance(row[0], dict)}
        shown, expected = titles.pop(title)
        [expression] = [row[0]["expression"] for row in rows
                        if isinstance(row[0], dict) and row[0]["id"] == shown]
        assert evaluate(expression, values) == pytest.approx(expected), title
    assert not titles, f"widgets not found: {titles}"


def _cameras(line: str, count: int) -> tuple[str, ...]:
    return tuple(f"{line}-cam-{n}" for n in range(count))


# Stacks the old per-camera metrics refused (5 cameras a line, about 99 a stack).
SCALES = {
    "12-camera-line": {"press-1": _cameras("press-1", 12)},
    "150-cameras-on-one-line": {"press-1": _cameras("press-1", 150)},
    "150-cameras-on-10-lines": {f"line-{n}": _cameras(f"line-{n}", 15) for n in range(10)},
    "125-lines": {f"line-{n}": _cameras(f"line-{n}", 2) for n in range(125)},
}


@pytest.mark.parametrize("lines", SCALES.values(), ids=SCALES.keys())
def test_alarms_fit_cloudwatch_however_many_cameras(lines: dict[str, tuple[str, ...]]) -> None:
    every = alarms(lines, silent_minutes=dict.fromkeys(lines, 30))
    for alarm in every:
        stats = [q for q in alarm.get("Metrics", []) if "MetricStat" in q]
        assert len(stats) <= MAX_ALARM_METRICS, alarm["AlarmName"]
    names = [a["AlarmName"] for a in every]
    cameras = sum(len(c) for c in lines.values())
    assert len(names) == len(set(names)) == 3 * len(lines) + cameras + 2 + len(QUEUES)


@pytest.mark.parametrize("lines", SCALES.values(), ids=SCALES.keys())
def test_the_dashboard_grows_with_lines_not_cameras(lines: dict[str, tuple[str, ...]]) -> None:
    counts = metric_counts(board(lines))
    assert max(counts) <= DASHBOARD_WIDGET_METRICS and sum(counts) <= DASHBOARD_METRICS
    one_camera_each = {line: cameras[:1] for line, cameras in lines.items()}
    assert counts == metric_counts(board(one_camera_each))


def test_a_12_camera_line_is_accepted_by_the_cloudwatch_api(aws_env: None) -> None:
    import boto3
    from moto import mock_aws

    lines = SCALES["12-camera-line"]
    with mock_aws():
        cloudwatch = boto3.client("cloudwatch", region_name="us-east-1")
        for alarm in alarms(lines, silent_minutes={"press-1": 30}):
            cloudwatch.put_metric_alarm(**alarm)
        cloudwatch.put_dashboard(DashboardName="ls", DashboardBody=json.dumps(board(lines)))
        assert len(cloudwatch.describe_alarms()["MetricAlarms"]) == 3 + 12 + 2 + len(QUEUES)
