"""The dashboard and the alarms read exactly the metrics the handlers emit.

The handlers' side is observed, not assumed: the telemetry functions are called and the
Embedded Metric Format lines they print are parsed. Every per-image metric is written with
the three dimension sets of `pipeline.metrics.DIMENSION_SETS` (per camera, per line,
stack-wide), and every LineSight metric the dashboard (`pipeline.dashboard.dashboard_body`)
or the alarms (`pipeline.alarms.alarm_definitions`) reference must match one emitted
metric: same namespace, name and dimension names, and the same value for any dimension
that is not a line or camera. The values are checked too: each kind of outcome emits the
counts and latencies it stands for.

The namespace the handlers write is the one their environment names, as the stack config
writes it (`StackConfig.lambda_environment`) and the handlers read it (`Settings`); the
dashboard and alarms are given the stack's prefix alone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pipeline import metrics
from pipeline.alarms import alarm_definitions
from pipeline.alerts import AlertDecision
from pipeline.dashboard import dashboard_body
from pipeline.ingest import Outcome
from pipeline.records import ResultRecord
from pipeline.settings import Settings
from pipeline.stackconfig import parse_stack_config

PREFIX = "ls-test"
LINES = {"line-1": ["cam-1", "cam-2"], "line-2": ["cam-1"]}
PER_CAMERA = {metrics.DIMENSION_LINE, metrics.DIMENSION_CAMERA}
# The metrics issue 6 asks for, per line and camera.
REQUIRED = ("ProcessedImageCount", "DetectedAnomalyCount", "LowConfidenceCount",
            "InvalidImageCount", "AlertsSentCount", "InferenceLatency", "EndToEndLatency")
# Spelled out rather than read from pipeline.metrics, so a change there shows here.
THREE_SETS = [["line", "camera"], ["line"], []]
T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Ref:
    """One metric as emitted or referenced: namespace, name and dimensions."""

    namespace: str
    name: str
    dimensions: tuple[tuple[str, str], ...]

    @property
    def key(self) -> tuple[str, str, frozenset[str]]:
        return self.namespace, self.name, frozenset(name for name, _ in self.dimensions)

    @property
    def fixed(self) -> dict[str, str]:
        """The dimensions whose value does not depend on the line and camera."""
        return {name: value for name, value in self.dimensions if name not in PER_CAMERA}


def outcome(status: str = "OK", anomalous: bool = False, reason: str = "",
            duplicate: bool = False, send: bool | None = None,
            processed_after: timedelta = timedelta(seconds=3)) -> Outcome:
    """An outcome; the alert is sent when there is a reason, unless `send` says otherwise."""
    record = ResultRecord(
        image_id="i", line_id="line-1", camera_id="cam-2", s3_uri="s3://b/k.jpg",
        captured_at=T0, processed_at=T0 + processed_after, status=status,
        is_anomalous=anomalous, confidence=0.9, score=0.8, threshold=0.5, inference_ms=12.5,
        alert_reason=reason)
    return Outcome(record, AlertDecision(send=bool(reason) if send is None else send,
                                         reason=reason), "x", duplicate=duplicate)


def handler_namespace(prefix: str = PREFIX) -> str:
    """The namespace the handlers of the stack with this prefix write to: their
    environment as the stack config makes it, read as they read it."""
    config = parse_stack_config({"resourcePrefix": prefix, "modelUri": "s3://models/m/",
                                 "lines": [{"id": "line-1", "cameras": ["cam-1"]}]})
    environment = config.lambda_environment(**dict.fromkeys((
        "images_bucket", "results_bucket", "table", "tokens_table", "state_machine_arn",
        "topic_arn", "firehose_stream", "failure_queue_url", "lake_failure_queue_url"), "x"))
    return Settings.from_env(environment).metrics_namespace


NAMESPACE = handler_namespace()


def emf_lines(text: str) -> Iterator[dict[str, Any]]:
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{") and '"_aws"' in line:
            yield json.loads(line)


def emitted_values(blobs: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """(metric name, value) of every data point, in the order they were emitted."""
    points = []
    for blob in blobs:
        for directive in blob["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                value = blob[metric["Name"]]
                points += [(metric["Name"], float(v))
                           for v in (value if isinstance(value, list) else [value])]
    return points


def emitted_refs(blobs: list[dict[str, Any]]) -> list[Ref]:
    refs = []
    for blob in blobs:
        for directive in blob["_aws"]["CloudWatchMetrics"]:
            for dimension_set in directive["Dimensions"]:
                dims = tuple(sorted((name, str(blob[name])) for name in dimension_set))
                refs += [Ref(directive["Namespace"], metric["Name"], dims)
                         for metric in directive["Metrics"]]
    return refs


@pytest.fixture
def emitted(capsys: pytest.CaptureFixture[str]) -> list[Ref]:
    """Everything the handlers' telemetry emits for the outcomes the pipeline has."""
    from chalicelib.telemetry import emit_lake_rows, emit_outcome, emit_unexpected_error

    capsys.readouterr()
    emit_outcome(outcome(reason=""), NAMESPACE)  # normal, confident
    emit_outcome(outcome(anomalous=True, reason="anomalous"), NAMESPACE)
    emit_outcome(outcome(reason="low_confidence"), NAMESPACE)
    emit_outcome(outcome(anomalous=True, reason="anomalous_low_confidence"), NAMESPACE)
    emit_outcome(outcome(status="INVALID"), NAMESPACE)
    emit_unexpected_error("ingest", NAMESPACE)  # the stages api/app.py's handlers name
    emit_unexpected_error("lake-decode", NAMESPACE)
    emit_lake_rows(3, NAMESPACE)
    refs = emitted_refs(list(emf_lines(capsys.readouterr().out)))
    assert refs, "the telemetry functions printed no EMF lines"
    return refs


def dashboard_refs() -> list[Ref]:
    body = dashboard_body(region="us-east-1", prefix=PREFIX, lines=LINES,
                          state_machine_arn="arn:aws:states:us-east-1:1:stateMachine:sm",
                          topic_arn="arn:aws:sns:us-east-1:1:alerts",
                          dead_letter_queues={"ingest-dlq": "ls-test-ingest-dlq"})
    refs: list[Ref] = []
    for widget in body["widgets"]:
        previous: list[Any] = []
        for row in widget.get("properties", {}).get("metrics", []):
            if row and isinstance(row[0], dict):  # an expression
                refs += _search_refs(str(row[0].get("expression", "")))
                continue
            plain = [part for part in row if not isinstance(part, dict)]
            resolved: list[Any] = []
            for index, part in enumerate(plain):
                if part == "...":
                    resolved += previous[index:]
                elif part == ".":
                    resolved.append(previous[index])
                else:
                    resolved.append(part)
            previous = resolved
            namespace, name, *pairs = resolved
            refs.append(Ref(namespace, name, tuple(sorted(zip(pairs[::2], pairs[1::2],
                                                              strict=True)))))
    return refs


def _search_refs(expression: str) -> list[Ref]:
    """Metrics a SEARCH expression names: {Namespace,dim,...} MetricName="X"."""
    refs = []
    for schema, name in re.findall(r"\{([^}]*)\}[^)]*?MetricName=\"?([A-Za-z]+)",
                                   expression):
        namespace, *dims = [part.strip() for part in schema.split(",")]
        refs.append(Ref(namespace, name, tuple(sorted((d, "*") for d in dims))))
    return refs


def alarm_refs() -> list[Ref]:
    alarms = alarm_definitions(
        prefix=PREFIX, lines=LINES, anomaly_rates={"line-1": 0.1}, topic_arn="arn:topic",
        state_machine_arn="arn:sm", dead_letter_queues={"ingest-dlq": "q"},
        ingest_function="ls-test-ingest", latency_p95_ms=5000,
        silent_minutes=dict.fromkeys(LINES, 30))
    refs = []
    for alarm in alarms:
        if "MetricName" in alarm:
            refs.append(Ref(alarm["Namespace"], alarm["MetricName"], tuple(sorted(
                (d["Name"], d["Value"]) for d in alarm.get("Dimensions", [])))))
        for query in alarm.get("Metrics", []):
            if "MetricStat" in query:
                metric = query["MetricStat"]["Metric"]
                refs.append(Ref(metric["Namespace"], metric["MetricName"], tuple(sorted(
                    (d["Name"], d["Value"]) for d in metric.get("Dimensions", [])))))
            else:
                refs += _search_refs(query.get("Expression", ""))
    return refs


def ours(refs: list[Ref]) -> list[Ref]:
    """The references to LineSight's metrics, of this stack or any other: the contract
    test then finds those in another stack's namespace as never emitted."""
    return [ref for ref in refs if ref.namespace.split("/")[0] == metrics.NAMESPACE]


@pytest.mark.parametrize("dimension_set", [
    ("line", "camera"),  # per camera: what the silent-camera alarms read
    ("line",),           # per line: the line alarms and the per-line widgets
    (),                  # stack-wide: the dashboard's totals and the stack's latency
], ids=["per-camera", "per-line", "stack-wide"])
def test_handlers_emit_every_required_metric_with_each_dimension_set(
        emitted: list[Ref], dimension_set: tuple[str, ...]) -> None:
    keys = {ref.key for ref in emitted}
    for name in REQUIRED:
        assert (NAMESPACE, name, frozenset(dimension_set)) in keys, name
    assert {ref.namespace for ref in emitted} == {NAMESPACE}


def test_the_declared_dimension_sets_are_the_three_emitted() -> None:
    assert [list(names) for names in metrics.DIMENSION_SETS] == THREE_SETS
    assert set(metrics.PER_IMAGE) == set(REQUIRED)


@pytest.mark.parametrize("case, names", [
    # judged: every count and both latencies in one line
    (outcome(), set(REQUIRED) - {metrics.INVALID}),
    # unusable: processed, invalid and the alert count, nothing judged
    (outcome(status="INVALID"), {metrics.PROCESSED, metrics.INVALID, metrics.ALERTS}),
], ids=["judged", "invalid"])
def test_an_image_is_one_emf_line_with_exactly_the_three_dimension_sets(
        capsys: pytest.CaptureFixture[str], case: Outcome, names: set[str]) -> None:
    """One data point per value, stored by CloudWatch per camera, per line and for the
    stack: were a set dropped, the alarms or the dashboard would read a metric that never
    gets data."""
    from chalicelib.telemetry import emit_outcome

    capsys.readouterr()
    emit_outcome(case, NAMESPACE)
    [blob] = list(emf_lines(capsys.readouterr().out))
    [directive] = blob["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == NAMESPACE
    assert directive["Dimensions"] == THREE_SETS
    assert {metric["Name"] for metric in directive["Metrics"]} == names
    assert (blob["line"], blob["camera"]) == ("line-1", "cam-2")
    assert isinstance(blob["_aws"]["Timestamp"], int)


@pytest.mark.parametrize("emit, args, dimension_sets", [
    ("emit_outcome", (outcome(),), THREE_SETS),
    ("emit_unexpected_error", ("ingest",), [["stage"]]),
    ("emit_lake_rows", (3,), [[]]),
], ids=["outcome", "error", "lake-rows"])
def test_no_service_dimension_even_with_powertools_settings(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, emit: str,
        args: tuple[Any, ...], dimension_sets: list[list[str]]) -> None:
    """A `service` dimension would make every metric one the alarms do not name."""
    import chalicelib.telemetry as telemetry

    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "ingest")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "Elsewhere")
    capsys.readouterr()
    getattr(telemetry, emit)(*args, NAMESPACE)
    [blob] = list(emf_lines(capsys.readouterr().out))
    assert [d["Dimensions"] for d in blob["_aws"]["CloudWatchMetrics"]] == [dimension_sets]
    assert [d["Namespace"] for d in blob["_aws"]["CloudWatchMetrics"]] == [NAMESPACE]
    assert "service" not in blob


@pytest.mark.parametrize("source", ["dashboard", "alarms"])
def test_every_referenced_metric_is_emitted(emitted: list[Ref], source: str) -> None:
    referenced = ours(dashboard_refs() if source == "dashboard" else alarm_refs())
    assert referenced, f"the {source} reference no {metrics.NAMESPACE} metric"
    emitted_by_key: dict[Any, list[Ref]] = {}
    for ref in emitted:
        emitted_by_key.setdefault(ref.key, []).append(ref)

    for ref in referenced:
        matches = emitted_by_key.get(ref.key)
        assert matches, (f"{source} reads {ref.name} with dimensions "
                         f"{sorted(ref.key[2])}, which the handlers never emit; they emit "
                         f"{sorted({(r.name, tuple(sorted(r.key[2]))) for r in emitted})}")
        assert any(match.fixed == ref.fixed or "*" in ref.fixed.values()
                   for match in matches), (source, ref, matches[0])
        values = dict(ref.dimensions)
        if metrics.DIMENSION_LINE in values and values[metrics.DIMENSION_LINE] != "*":
            assert values[metrics.DIMENSION_LINE] in LINES
            if metrics.DIMENSION_CAMERA in values:
                assert values[metrics.DIMENSION_CAMERA] in LINES[values[metrics.DIMENSION_LINE]]


def test_dashboard_shows_every_required_metric() -> None:
    shown = {ref.name for ref in ours(dashboard_refs())}
    assert set(REQUIRED) <= shown, set(REQUIRED) - shown


@pytest.mark.parametrize("name, dimension_set, expected", [
    # the anomaly rate, the invalid-upload rate and the latency read each line's own metric
    (metrics.ANOMALIES, ("line",), {(line,) for line in LINES}),
    (metrics.INVALID, ("line",), {(line,) for line in LINES}),
    (metrics.PROCESSED, ("line",), {(line,) for line in LINES}),
    (metrics.END_TO_END_LATENCY, ("line",), {(line,) for line in LINES}),
    # the silent-camera alarms read each camera's
    (metrics.PROCESSED, ("camera", "line"),
     {(camera, line) for line, cameras in LINES.items() for camera in cameras}),
], ids=["anomalies", "invalid", "processed", "latency", "silent-cameras"])
def test_alarms_watch_every_line_and_camera_with_its_own_metric(
        name: str, dimension_set: tuple[str, ...], expected: set[tuple[str, ...]]) -> None:
    refs = [ref for ref in ours(alarm_refs()) if ref.name == name
            and tuple(dimension for dimension, _ in ref.dimensions) == dimension_set]
    assert {tuple(value for _, value in ref.dimensions) for ref in refs} == expected


@pytest.mark.parametrize("source", ["dashboard", "alarms"])
def test_no_reader_sums_cameras(source: str) -> None:
    """Line and stack figures read their own metrics: no camera appears in the alarms but
    the silent-camera ones, and none at all on the dashboard."""
    refs = ours(dashboard_refs() if source == "dashboard" else alarm_refs())
    per_camera = [ref for ref in refs if metrics.DIMENSION_CAMERA in dict(ref.dimensions)]
    if source == "dashboard":
        assert per_camera == []
    else:
        assert {ref.name for ref in per_camera} == {metrics.PROCESSED}


def test_duplicate_delivery_emits_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    from chalicelib.telemetry import emit_outcome

    capsys.readouterr()
    emit_outcome(outcome(anomalous=True, reason="anomalous", duplicate=True), NAMESPACE)
    assert list(emf_lines(capsys.readouterr().out)) == []


def _counts(anomalies: int, low_confidence: int, alerts: int) -> dict[str, float]:
    """The data points of one judged image (3 s from capture to result, 12.5 ms inference)."""
    return {metrics.PROCESSED: 1, metrics.ANOMALIES: anomalies,
            metrics.LOW_CONFIDENCE: low_confidence, metrics.ALERTS: alerts,
            metrics.INFERENCE_LATENCY: 12.5, metrics.END_TO_END_LATENCY: 3000.0}


@pytest.mark.parametrize("case, expected", [
    # normal and confident: processed, nothing else counts
    (outcome(), _counts(anomalies=0, low_confidence=0, alerts=0)),
    # anomalous and alerted
    (outcome(anomalous=True, reason="anomalous"), _counts(anomalies=1, low_confidence=0,
                                                          alerts=1)),
    # anomalous but no alert went out: the alert count follows the decision, not the verdict
    (outcome(anomalous=True, reason="anomalous", send=False),
     _counts(anomalies=1, low_confidence=0, alerts=0)),
    # normal but low confidence: sent to a person
    (outcome(reason="low_confidence"), _counts(anomalies=0, low_confidence=1, alerts=1)),
    # anomalous and low confidence: counts as both
    (outcome(anomalous=True, reason="anomalous_low_confidence"),
     _counts(anomalies=1, low_confidence=1, alerts=1)),
    # an unusable image: processed and invalid, no verdict, no latency
    (outcome(status="INVALID"), {metrics.PROCESSED: 1, metrics.INVALID: 1, metrics.ALERTS: 0}),
    # an unusable image alerted on (alertOnInvalid): the alert is counted
    (outcome(status="INVALID", reason="invalid"),
     {metrics.PROCESSED: 1, metrics.INVALID: 1, metrics.ALERTS: 1}),
    # processed before captured (camera clock ahead): the latency is 0, never negative
    (outcome(processed_after=timedelta(seconds=-2)),
     _counts(anomalies=0, low_confidence=0, alerts=0) | {metrics.END_TO_END_LATENCY: 0.0}),
], ids=["normal", "anomalous", "anomalous-not-alerted", "low-confidence",
        "anomalous-low-confidence", "invalid", "invalid-alerted", "clock-skew"])
def test_each_outcome_emits_its_values(capsys: pytest.CaptureFixture[str], case: Outcome,
                                       expected: dict[str, float]) -> None:
    from chalicelib.telemetry import emit_outcome

    capsys.readouterr()
    emit_outcome(case, NAMESPACE)
    points = emitted_values(list(emf_lines(capsys.readouterr().out)))
    assert sorted(points) == sorted((name, float(value)) for name, value in expected.items())


@pytest.mark.parametrize("rows", [3, 0, 500])
def test_lake_rows_emit_how_many_landed(capsys: pytest.CaptureFixture[str], rows: int) -> None:
    from chalicelib.telemetry import emit_lake_rows

    capsys.readouterr()
    emit_lake_rows(rows, NAMESPACE)
    points = emitted_values(list(emf_lines(capsys.readouterr().out)))
    assert points == [(metrics.LAKE_ROWS, float(rows))]


def test_each_stack_writes_and_reads_a_namespace_of_its_own() -> None:
    """Two stacks in one account and region (dev and prod) must not add up each other's
    images: each one's handlers, alarms and dashboard use its own namespace."""
    other = handler_namespace("ls-prod")
    assert len({NAMESPACE, other, metrics.NAMESPACE}) == 3
    for source in (dashboard_refs, alarm_refs):
        assert {ref.namespace for ref in ours(source())} == {NAMESPACE}
