"""LineSight's own CloudWatch metrics: names, namespace and dimensions in one place.

The handlers emit these (Embedded Metric Format, `api/chalicelib/telemetry.py`); the
dashboard and alarms read them. Tests check that both sides use the same names and
dimension sets.
"""

from __future__ import annotations

NAMESPACE = "LineSight"
DIMENSION_LINE = "line"
DIMENSION_CAMERA = "camera"

PROCESSED = "ProcessedImageCount"
ANOMALIES = "DetectedAnomalyCount"
LOW_CONFIDENCE = "LowConfidenceCount"
INVALID = "InvalidImageCount"
ALERTS = "AlertsSentCount"
INFERENCE_LATENCY = "InferenceLatency"
END_TO_END_LATENCY = "EndToEndLatency"
INGEST_ERRORS = "IngestErrorCount"
LAKE_ROWS = "LakeRowCount"

COUNTS = (PROCESSED, ANOMALIES, LOW_CONFIDENCE, INVALID, ALERTS, INGEST_ERRORS, LAKE_ROWS)
LATENCIES_MS = (INFERENCE_LATENCY, END_TO_END_LATENCY)
ALL = COUNTS + LATENCIES_MS

# The metrics of one processed image. Each data point is written once with every set of
# DIMENSION_SETS, and CloudWatch keeps it in one metric per set: per camera, per line and
# for the whole stack. A reader names the set it needs, so a line or the stack is one
# metric (not a sum over cameras) and its p95 is a true percentile (which no math over
# the cameras' p95s gives). Each set is a custom metric of its own in CloudWatch's bill.
PER_IMAGE = (PROCESSED, ANOMALIES, LOW_CONFIDENCE, INVALID, ALERTS, INFERENCE_LATENCY,
             END_TO_END_LATENCY)
PER_CAMERA: tuple[str, ...] = (DIMENSION_LINE, DIMENSION_CAMERA)
PER_LINE: tuple[str, ...] = (DIMENSION_LINE,)
STACK_WIDE: tuple[str, ...] = ()
DIMENSION_SETS = (PER_CAMERA, PER_LINE, STACK_WIDE)


def dimensions(dimension_set: tuple[str, ...], line_id: str = "",
               camera_id: str = "") -> dict[str, str]:
    """The dimensions ({name: value}) that select one set of a per-image metric.

    >>> dimensions(PER_CAMERA, "press-1", "top")
    {'line': 'press-1', 'camera': 'top'}
    >>> dimensions(PER_LINE, "press-1"), dimensions(STACK_WIDE)
    ({'line': 'press-1'}, {})
    """
    values = {DIMENSION_LINE: line_id, DIMENSION_CAMERA: camera_id}
    missing = [name for name in dimension_set if not values[name]]
    if missing:
        raise ValueError(f"the dimension set {list(dimension_set)} needs a {missing[0]}")
    return {name: values[name] for name in dimension_set}
