"""LineSight's own CloudWatch metrics: names, namespace and dimensions in one place.

The handlers emit these (Embedded Metric Format); the dashboard and alarms read them.
Tests check that both sides use the same names.
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
