"""CloudWatch metrics from the handlers, as Embedded Metric Format (EMF) log lines.

A processed image prints one EMF line holding all its metrics, each written with the three
dimension sets of `pipeline.metrics.DIMENSION_SETS`: [line, camera], [line] and [] (the
whole stack). CloudWatch stores every value in one metric per set, so the alarms and the
dashboard read a line's or the stack's own metric instead of summing cameras. Names come
from `pipeline.metrics`, the module the dashboard and alarms read; the namespace is the
stack's own (`Settings.metrics_namespace`), which the caller passes.

Powertools' `single_metric` writes one dimension set, and its `Metrics.add_dimensions`
ignores an empty one, so these few lines of EMF are written here, and the functions do
without Powertools. The dimensions are exactly those named: nothing (no
POWERTOOLS_SERVICE_NAME) can add a `service` dimension that the alarms would not name.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping, Sequence

from pipeline import metrics
from pipeline.alerts import REASON_ANOMALOUS_LOW_CONFIDENCE, REASON_LOW_CONFIDENCE
from pipeline.ingest import Outcome
from pipeline.records import STATUS_INVALID

COUNT = "Count"
MILLISECONDS = "Milliseconds"


def emf_line(namespace: str, values: Mapping[str, tuple[float, str]],
             dimensions: Mapping[str, str], dimension_sets: Sequence[Sequence[str]]) -> str:
    """One EMF document: {metric name: (value, unit)} in `namespace`, the dimensions'
    values, and the sets of dimension names each value is stored under ([] is one metric
    without dimensions).

    >>> json.loads(emf_line("LineSight/ls-dev", {"M": (2, "Count")}, {"line": "L1"},
    ...                     [["line"], []]))["_aws"]["CloudWatchMetrics"]
    ... # doctest: +NORMALIZE_WHITESPACE
    [{'Namespace': 'LineSight/ls-dev', 'Dimensions': [['line'], []],
      'Metrics': [{'Name': 'M', 'Unit': 'Count'}]}]
    """
    directive = {"Namespace": namespace,
                 "Dimensions": [list(names) for names in dimension_sets],
                 "Metrics": [{"Name": name, "Unit": unit} for name, (_, unit) in values.items()]}
    document = {"_aws": {"Timestamp": int(time.time() * 1000), "CloudWatchMetrics": [directive]},
                **dimensions, **{name: value for name, (value, _) in values.items()}}
    return json.dumps(document, separators=(",", ":"))


def _emit(namespace: str, values: Mapping[str, tuple[float, str]],
          dimensions: Mapping[str, str], dimension_sets: Sequence[Sequence[str]]) -> None:
    # Lambda sends stdout to CloudWatch Logs, which extracts the metrics from EMF lines.
    sys.stdout.write(emf_line(namespace, values, dimensions, dimension_sets) + "\n")


def emit_outcome(outcome: Outcome, namespace: str) -> None:
    """The metrics of one processed image: nothing for a duplicate delivery, nor for a
    photo the workflow sent back, whose first judgement was counted (`pipeline.workflow`).
    A duplicate is known by its record (ingest reads it first) or by StartExecution
    refusing the name. On an EXPRESS workflow, whose names are not unique, a duplicate
    delivered while the first is still handled, before its record is put, starts an
    execution of its own: that one ends in `AlreadyRecorded` without an alert, but its
    image is counted here twice, an alert included (moto refuses the name, so tests cannot
    show it)."""
    if outcome.duplicate or outcome.counted_before:
        return
    record = outcome.record
    alerted = 1 if outcome.alert.send else 0
    values: dict[str, tuple[float, str]] = {
        metrics.PROCESSED: (1, COUNT),
        metrics.ALERTS: (alerted, COUNT),  # an unusable upload too, with alertOnInvalid
    }
    if record.status == STATUS_INVALID:
        values[metrics.INVALID] = (1, COUNT)
    else:
        low = outcome.alert.reason in (REASON_LOW_CONFIDENCE, REASON_ANOMALOUS_LOW_CONFIDENCE)
        values |= {
            metrics.ANOMALIES: (1 if record.is_anomalous else 0, COUNT),
            metrics.LOW_CONFIDENCE: (1 if low else 0, COUNT),
            metrics.INFERENCE_LATENCY: (record.inference_ms, MILLISECONDS),
            metrics.END_TO_END_LATENCY: (max(record.end_to_end_ms, 0.0), MILLISECONDS),
        }
    # the values of every dimension the sets name: the per-camera set names them all
    named = metrics.dimensions(metrics.PER_CAMERA, record.line_id, record.camera_id)
    _emit(namespace, values, named, metrics.DIMENSION_SETS)


def emit_unexpected_error(stage: str, namespace: str) -> None:
    _emit(namespace, {metrics.INGEST_ERRORS: (1, COUNT)}, {"stage": stage}, [["stage"]])


def emit_lake_rows(count: int, namespace: str) -> None:
    _emit(namespace, {metrics.LAKE_ROWS: (count, COUNT)}, {}, [metrics.STACK_WIDE])
