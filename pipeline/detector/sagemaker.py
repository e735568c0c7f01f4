"""The SageMaker endpoint backend, and the JSON contract its container speaks.

Request: `invoke_endpoint` with the image bytes as `Body`, their `ContentType`,
`Accept: application/json`, and `CustomAttributes: threshold=<t>` for a per-line override.

Response (HTTP 200), what `invocation_response` builds from any `Detector`:

    {"IsAnomalous": true, "Confidence": 0.93, "Anomalies": [...], "Score": 0.71,
     "RawScore": 4.2, "Threshold": 0.5, "ModelVersion": "3f2a...", "InferenceMs": 12.5,
     "Notes": [], "HeatmapPng": "<base64, optional>"}

An image the container refuses is answered with HTTP 400 and
`{"Error": "InvalidImage", "Reason": "<code>", "Message": "..."}`, which SageMaker passes
back as a `ModelError`; the adapter turns it into `InvalidImageError`. Every other failure
becomes `DetectorError` (retryable). The verdict is recomputed here from the normalised
`Score`, so a threshold override works even if a container ignores `CustomAttributes`.
"""

from __future__ import annotations

import base64
import json
import math
import time
from typing import Any

from pipeline.detector.base import (
    BACKGROUND_COLOR,
    DEFAULT_THRESHOLD,
    DetectionResult,
    Detector,
    DetectorError,
    InvalidImageError,
    check_threshold,
    verdict,
)

# InvokeEndpoint takes at most 6 MB of payload (a serverless endpoint 4 MB): a larger
# upload, which the upload API may well accept, is refused here as too large for this
# backend (recorded INVALID), not sent to fail the same way on every retry.
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
# One slow call must fail its own image (retried), not use up the ingest function's 60 s
# for its whole batch: botocore's defaults are a 60 s read timeout and four retries. The
# worst case, two attempts that time out, fits in `ingest.TIME_MARGIN_MS`.
CLIENT_TIMEOUTS = {"connect_timeout": 2, "read_timeout": 10,
                   "retries": {"mode": "standard", "total_max_attempts": 2}}


class SageMakerDetector:
    """A `Detector` that calls a SageMaker real-time endpoint."""

    def __init__(self, endpoint_name: str, client: Any = None, *,
                 max_payload_bytes: int = MAX_PAYLOAD_BYTES) -> None:
        if not endpoint_name:
            raise ValueError("the sagemaker backend needs an endpoint name")
        self.endpoint_name = endpoint_name
        self.max_payload_bytes = max_payload_bytes
        self.model_version = f"sagemaker:{endpoint_name}"
        self.threshold = DEFAULT_THRESHOLD
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client("sagemaker-runtime", config=Config(**CLIENT_TIMEOUTS))
        return self._client

    def detect(self, image_bytes: bytes, content_type: str, *,
               threshold: float | None = None) -> DetectionResult:
        if not image_bytes:
            raise InvalidImageError("empty", "the upload is empty (0 bytes)")
        if len(image_bytes) > self.max_payload_bytes:
            raise InvalidImageError(
                "too_large", f"{len(image_bytes)} bytes is more than the "
                             f"{self.max_payload_bytes} a SageMaker endpoint accepts")
        applied = check_threshold(threshold)
        started = time.perf_counter()
        request: dict[str, Any] = {
            "EndpointName": self.endpoint_name,
            "Body": image_bytes,
            "ContentType": content_type or "application/octet-stream",
            "Accept": "application/json",
        }
        if threshold is not None:
            request["CustomAttributes"] = f"threshold={applied}"
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.invoke_endpoint(**request)
            body = response["Body"].read()
        except ClientError as exc:
            raise _invalid_image_or_none(exc) or DetectorError(
                f"SageMaker endpoint {self.endpoint_name} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise DetectorError(f"SageMaker endpoint {self.endpoint_name} failed: {exc}") from exc
        elapsed = (time.perf_counter() - started) * 1000.0
        return parse_response(body, applied, elapsed, self.endpoint_name)


def parse_response(body: bytes, threshold: float, elapsed_ms: float,
                   endpoint_name: str = "") -> DetectionResult:
    """A `DetectionResult` from the container's JSON answer. Each field is checked as the
    pipeline will use and store it, so that an answer it could not store or read back
    is a `DetectorError` now, not a dead letter later with a reason about decimals.

    The verdict is made here, at `threshold`. A container that ignored the override may
    name an anomalous area in a part the applied threshold passes: on a normal verdict,
    every entry but the background is dropped (its area counted as background)."""
    try:
        document = json.loads(body)
        if not isinstance(document, dict):
            raise TypeError("the answer is not a JSON object")
        if document.get("Error") == "InvalidImage":
            raise InvalidImageError(str(document.get("Reason", "invalid")),
                                    str(document.get("Message", "")))
        score = _number(document, "Score")
        if not 0.0 <= score <= 1.0:  # the normalised scale: a raw score here is no verdict
            raise ValueError(f"Score {score} is outside [0, 1]")
        raw_score = _number(document, "RawScore", 0.0)
        version = document.get("ModelVersion")
        if not isinstance(version, str) or not version.strip():
            raise TypeError(f"ModelVersion is {version!r}, not a name")
        anomalies = document.get("Anomalies", [])
        if not isinstance(anomalies, list) or not all(isinstance(a, dict) for a in anomalies):
            raise TypeError("Anomalies is not a list of maps")
        anomalies = [_anomaly(item) for item in anomalies]
        heatmap = document.get("HeatmapPng")
        heatmap_png = base64.b64decode(heatmap, validate=True) if heatmap else None
        if heatmap_png is not None and not heatmap_png.startswith(PNG_SIGNATURE):
            raise ValueError("HeatmapPng is not a PNG image")
        notes = document.get("Notes", [])
        if not isinstance(notes, list) or not all(isinstance(note, str) for note in notes):
            raise TypeError("Notes is not a list of strings")
    except (ValueError, KeyError, TypeError, OverflowError) as exc:  # 1e400 as an integer
        if isinstance(exc, InvalidImageError):
            raise
        raise DetectorError(
            f"SageMaker endpoint {endpoint_name} answered something other than the "
            f"LineSight JSON contract ({exc}): {body[:80]!r}") from None
    is_anomalous, confidence = verdict(score, threshold)
    if not is_anomalous:
        anomalies = _passed(anomalies)
    return DetectionResult(
        is_anomalous=is_anomalous,
        confidence=confidence,
        score=score,
        threshold=threshold,
        model_version=version,
        raw_score=raw_score,
        anomalies=anomalies,
        heatmap_png=heatmap_png,
        inference_ms=elapsed_ms,
        notes=tuple(notes),
    )


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# DynamoDB stores numbers of magnitude 1e-130 to 1e125; raw scores are far inside this
_LARGEST = 1e100


def _number(document: dict[str, Any], name: str, default: float | None = None) -> float:
    """A finite JSON number (not a string, not true/false) of sensible size.

    >>> _number({"Score": 0.7}, "Score"), _number({}, "RawScore", 0.0)
    (0.7, 0.0)
    >>> _number({"Score": True}, "Score")
    Traceback (most recent call last):
    ...
    TypeError: Score is True, not a number
    """
    if name not in document and default is not None:
        return default
    value = document[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} is {value!r}, not a number")
    if not math.isfinite(value):
        raise ValueError(f"{name} is not a finite number")
    if abs(value) > _LARGEST:
        raise ValueError(f"{name} {value} is too large to store")
    return float(value)


def _anomaly(item: dict[str, Any]) -> dict[str, Any]:
    """One `Anomalies` entry in Lookout for Vision's shape, its area a share in [0, 100]
    rounded as the embedded detector rounds it; other keys are not kept."""
    pixel = item.get("PixelAnomaly")
    if not isinstance(item.get("Name"), str) or not isinstance(pixel, dict):
        raise TypeError(f"an Anomalies entry is not {{Name, PixelAnomaly}}: {item!r:.80}")
    area = _number(pixel, "TotalPercentageArea")
    if not 0.0 <= area <= 100.0:
        raise ValueError(f"TotalPercentageArea {area} is outside [0, 100]")
    color = pixel.get("Color", "")
    if not isinstance(color, str):
        raise TypeError(f"Color is {color!r}, not a string")
    return {"Name": item["Name"],
            "PixelAnomaly": {"TotalPercentageArea": round(area, 3), "Color": color}}


def _passed(anomalies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The anomalies of a part the applied threshold passes: all background.

    >>> _passed([{"Name": "background", "PixelAnomaly": {"TotalPercentageArea": 85.0,
    ...           "Color": "#FFFFFF"}}, {"Name": "scratch", "PixelAnomaly":
    ...           {"TotalPercentageArea": 15.0, "Color": "#FF0000"}}])
    [{'Name': 'background', 'PixelAnomaly': {'TotalPercentageArea': 100.0, 'Color': '#FFFFFF'}}]
    """
    if all(item["Name"] == "background" for item in anomalies):
        return anomalies
    return [{"Name": "background",
             "PixelAnomaly": {"TotalPercentageArea": 100.0, "Color": BACKGROUND_COLOR}}]


def invocation_response(detector: Detector, body: bytes, content_type: str,
                        custom_attributes: str = "") -> tuple[int, bytes]:
    """What a SageMaker container answers for one invocation: (HTTP status, JSON body)."""
    try:
        threshold = _threshold_attribute(custom_attributes)
        result = detector.detect(body, content_type, threshold=threshold)
    except InvalidImageError as exc:
        error = {"Error": "InvalidImage", "Reason": exc.reason, "Message": str(exc)}
        return 400, json.dumps(error).encode()
    except ValueError as exc:
        error = {"Error": "BadRequest", "Reason": "bad_request", "Message": str(exc)}
        return 400, json.dumps(error).encode()
    document = {**result.to_lookout(), "InferenceMs": result.inference_ms,
                "Notes": list(result.notes)}
    if result.heatmap_png:
        document["HeatmapPng"] = base64.b64encode(result.heatmap_png).decode()
    return 200, json.dumps(document).encode()


def _threshold_attribute(custom_attributes: str) -> float | None:
    """The `threshold=<t>` entry of a CustomAttributes string, if any.

    >>> _threshold_attribute("line=3, threshold=0.65")
    0.65
    >>> _threshold_attribute("") is None
    True
    """
    for part in custom_attributes.replace(";", ",").split(","):
        key, _, value = part.partition("=")
        if key.strip() == "threshold":
            return float(value)
    return None


def _invalid_image_or_none(exc: Any) -> InvalidImageError | None:
    """The InvalidImageError a container's 400 answer carries, if it is one."""
    if exc.response.get("Error", {}).get("Code") != "ModelError":
        return None
    try:
        document = json.loads(exc.response.get("OriginalMessage", "")
                              or exc.response["Error"].get("OriginalMessage", ""))
    except (ValueError, TypeError):
        return None
    if isinstance(document, dict) and document.get("Error") == "InvalidImage":
        return InvalidImageError(str(document.get("Reason", "invalid")),
                                 str(document.get("Message", "")))
    return None
