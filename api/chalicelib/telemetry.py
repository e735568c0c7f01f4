"""CloudWatch metrics from the handlers, as Embedded Metric Format via Powertools.

Each line and camera gets its own dimensions, so every data point is written with
`single_metric` (Powertools' one-metric EMF blob). Names come from `pipeline.metrics`,
the same module the dashboard and alarms read. The dimensions are exactly line and
camera: do not set POWERTOOLS_SERVICE_NAME on these functions, or Powertools adds a
`service` dimension and the alarms (which name line and camera only) see nothing.
"""

from __future__ import annotations

from aws_lambda_powertools.metrics import MetricUnit, single_metric

from pipeline import metrics
from pipeline.alerts import REASON_ANOMALOUS_LOW_CONFIDENCE, REASON_LOW_CONFIDENCE
from pipeline.ingest import Outcome
from pipeline.records import STATUS_INVALID


def _put(name: str, value: float, unit: MetricUnit, dimensions: dict[str, str]) -> None:
    with single_metric(name=name, unit=unit, value=value,
                       namespace=metrics.NAMESPACE) as metric:
        for key, dim_value in dimensions.items():
            metric.add_dimension(name=key, value=dim_value)


def emit_outcome(outcome: Outcome) -> None:
    """The metrics of one processed image (nothing for a duplicate delivery)."""
    if outcome.duplicate:
        return
    record = outcome.record
    dims = {metrics.DIMENSION_LINE: record.line_id, metrics.DIMENSION_CAMERA: record.camera_id}
    count = MetricUnit.Count
    _put(metrics.PROCESSED, 1, count, dims)
    if record.status == STATUS_INVALID:
        _put(metrics.INVALID, 1, count, dims)
        _put(metrics.ALERTS, 1 if outcome.alert.send else 0, count, dims)  # alertOnInvalid
        return
    _put(metrics.ANOMALIES, 1 if record.is_anomalous else 0, count, dims)
    low = outcome.alert.reason in (REASON_LOW_CONFIDENCE, REASON_ANOMALOUS_LOW_CONFIDENCE)
    _put(metrics.LOW_CONFIDENCE, 1 if low else 0, count, dims)
    _put(metrics.ALERTS, 1 if outcome.alert.send else 0, count, dims)
    _put(metrics.INFERENCE_LATENCY, record.inference_ms, MetricUnit.Milliseconds, dims)
    _put(metrics.END_TO_END_LATENCY, max(record.end_to_end_ms, 0.0),
         MetricUnit.Milliseconds, dims)


def emit_unexpected_error(stage: str) -> None:
    _put(metrics.INGEST_ERRORS, 1, MetricUnit.Count, {"stage": stage})


def emit_lake_rows(count: int) -> None:
    _put(metrics.LAKE_ROWS, count, MetricUnit.Count, {})
