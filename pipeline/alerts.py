"""The alert decision: a pure function of a result record and the line's policy.

Confidence is the calibrated probability that the verdict is right: 0.5 at the detector
threshold, towards 1.0 far from it. The low-confidence setting (`confidenceThreshold`,
default 0.20 as in the seed) is a band around that coin-flip: a result whose confidence
is below 0.5 + confidenceThreshold is "low confidence" and goes to a person.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.records import STATUS_INVALID, ResultRecord, iso

REASON_ANOMALOUS = "anomalous"
REASON_LOW_CONFIDENCE = "low_confidence"
REASON_ANOMALOUS_LOW_CONFIDENCE = "anomalous_low_confidence"
REASON_INVALID = "invalid"


@dataclass(frozen=True)
class AlertPolicy:
    confidence_threshold: float
    alert_on_invalid: bool = False


@dataclass(frozen=True)
class AlertDecision:
    send: bool
    reason: str = ""
    subject: str = ""
    message: str = ""


def is_low_confidence(confidence: float, confidence_threshold: float) -> bool:
    """True when the verdict is within `confidence_threshold` of a coin-flip.

    >>> is_low_confidence(0.55, 0.20)
    True
    >>> is_low_confidence(0.93, 0.20)
    False
    >>> is_low_confidence(0.69, 0.0)
    False
    """
    return confidence < 0.5 + confidence_threshold


def decide(record: ResultRecord, policy: AlertPolicy) -> AlertDecision:
    if record.status == STATUS_INVALID:
        if not policy.alert_on_invalid:
            return AlertDecision(send=False)
        return _decision(record, REASON_INVALID)
    low = is_low_confidence(record.confidence, policy.confidence_threshold)
    if record.is_anomalous:
        return _decision(record, REASON_ANOMALOUS_LOW_CONFIDENCE if low else REASON_ANOMALOUS)
    if low:
        return _decision(record, REASON_LOW_CONFIDENCE)
    return AlertDecision(send=False)


_HEADLINES = {
    REASON_ANOMALOUS: "Defect detected",
    REASON_ANOMALOUS_LOW_CONFIDENCE: "Possible defect (LOW confidence)",
    REASON_LOW_CONFIDENCE: "Low-confidence result, please check",
    REASON_INVALID: "Unusable image",
}


def _decision(record: ResultRecord, reason: str) -> AlertDecision:
    headline = _HEADLINES[reason]
    subject = f"LineSight: {headline} - line {record.line_id}, camera {record.camera_id}"
    lines = [
        f"{headline}.",
        "",
        f"Line:        {record.line_id}",
        f"Camera:      {record.camera_id}",
        f"Image:       {record.image_id}",
        f"Captured:    {iso(record.captured_at)}",
        f"Verdict:     {'ANOMALOUS' if record.is_anomalous else 'normal'}",
        f"Confidence:  {record.confidence:.2f}",
        f"Score:       {record.score:.3f} (threshold {record.threshold:.3f})",
        f"Model:       {record.model_version}",
        f"Image URL:   {record.s3_uri}",
    ]
    if record.heatmap_uri:
        lines.append(f"Heatmap:     {record.heatmap_uri}")
    if record.reason:
        lines.append(f"Reason:      {record.reason}")
    # SNS subjects are limited to 100 printable ASCII characters.
    return AlertDecision(send=True, reason=reason, subject=subject[:100],
                         message="\n".join(lines))
