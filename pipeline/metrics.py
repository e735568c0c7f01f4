"""LineSight's own CloudWatch metrics: names, namespace and dimensions in one place.

The handlers emit these (Embedded Metric Format, `api/chalicelib/telemetry.py`); the
dashboard and alarms read them. Tests check that both sides use the same names and
dimension sets.

Each stack writes to a namespace of its own, `namespace_for(its resource prefix)`, so two
stacks in one account and region (dev and prod, say) never add up each other's images in
their alarms, dashboards and reports. The handlers are told theirs by
LINESIGHT_METRICS_NAMESPACE (`pipeline.settings`).
"""

from __future__ import annotations

import re

# The first releases wrote every stack's metrics here; a reader not told a stack's own
# namespace (an old stack's outputs, say) reads this one.
NAMESPACE = "LineSight"
# What CloudWatch takes as a namespace: at most 255 of these characters, not under "AWS/".
_NAMESPACE = re.compile(r"[0-9A-Za-z.\-_/#: ]{1,255}")
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


def namespace_for(prefix: str) -> str:
    """The CloudWatch namespace of the stack with this resource prefix.

    >>> namespace_for("linesight-dev")
    'LineSight/linesight-dev'
    """
    return f"{NAMESPACE}/{prefix}"


def check_namespace(namespace: str) -> str:
    """`namespace` if CloudWatch would take it, else ValueError saying why.

    >>> check_namespace("LineSight/linesight-dev")
    'LineSight/linesight-dev'
    >>> check_namespace("AWS/Lambda")
    Traceback (most recent call last):
    ...
    ValueError: 'AWS/Lambda' is AWS's own (namespaces under AWS/ are reserved)
    """
    if not _NAMESPACE.fullmatch(namespace):
        raise ValueError(f"{namespace!r} is no CloudWatch namespace: 1-255 letters, digits "
                         "or . - _ / # : and spaces")
    if namespace.startswith("AWS/"):
        raise ValueError(f"{namespace!r} is AWS's own (namespaces under AWS/ are reserved)")
    return namespace
