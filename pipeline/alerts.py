"""The alert decision: a pure function of a result record and the line's policy.

Confidence is the calibrated probability that the verdict is right: 0.5 at the detector
threshold, towards 1.0 far from it. The low-confidence setting (`confidenceThreshold`,
default 0.20 as in the seed) is a band around that coin-flip: a result whose confidence
is below 0.5 + confidenceThreshold is "low confidence" and goes to a person.
"""

from __future__ import annotations

import unicodedata
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

    The edge is not low, for every band (0.5 + 0.07 is 0.5700000000000001 in floats):

    >>> is_low_confidence(0.57, 0.07)
    False
    """
    return confidence < low_confidence_limit(confidence_threshold)


def low_confidence_limit(confidence_threshold: float) -> float:
    """The confidence under which a result is low confidence (rounded: a band of 0.07
    gives 0.57, not 0.5700000000000001)."""
    return round(0.5 + confidence_threshold, 9)


def decide(record: ResultRecord, policy: AlertPolicy) -> AlertDecision:
    if record.status == STATUS_INVALID:
        if not policy.alert_on_invalid:
            return AlertDecision(send=False)
        return _decision(record, REASON_INVALID, policy)
    low = is_low_confidence(record.confidence, policy.confidence_threshold)
    if record.is_anomalous:
        return _decision(record, REASON_ANOMALOUS_LOW_CONFIDENCE if low else REASON_ANOMALOUS,
                         policy)
    if low:
        return _decision(record, REASON_LOW_CONFIDENCE, policy)
    return AlertDecision(send=False)


_HEADLINES = {
    REASON_ANOMALOUS: "Defect detected",
    REASON_ANOMALOUS_LOW_CONFIDENCE: "Possible defect (LOW confidence)",
    REASON_LOW_CONFIDENCE: "Low-confidence result, please check",
    REASON_INVALID: "Unusable image",
}

# SNS subjects: printable ASCII, no line breaks, "less than 100 characters".
SUBJECT_MAX = 99


def subject(headline: str, line_id: str, camera_id: str) -> str:
    """The e-mail subject, under SNS's limit with the line and the camera both kept: long
    ids are shortened in the middle, so their distinct ends still show.

    >>> subject("Defect detected", "press-1", "press-1-top")
    'LineSight: Defect detected - line press-1, camera press-1-top'
    >>> long = subject("Possible defect (LOW confidence)", "L" * 30 + "-north", "C" * 30 + "-7")
    >>> len(long) <= SUBJECT_MAX, long.endswith("-7"), "-north" in long
    (True, True, True)
    """
    # SNS refuses a subject with a line break or other control character: a key not
    # issued by the API could carry one
    line_id, camera_id = (_printable(text) for text in (line_id, camera_id))
    head = f"LineSight: {headline} - "
    room = SUBJECT_MAX - len(head) - len("line , camera ")
    if len(line_id) + len(camera_id) > room:
        line_id = _shorten(line_id, max(room // 2, room - len(camera_id)))
        camera_id = _shorten(camera_id, room - len(line_id))
    return f"{head}line {line_id}, camera {camera_id}"


def _printable(text: str) -> str:
    """`text` with each control character shown as "?".

    >>> _printable("press 1\\nBCC: x")
    'press 1?BCC: x'
    """
    return "".join("?" if unicodedata.category(char) == "Cc" else char for char in text)


def apart(value: float, other: float, decimals: int) -> tuple[str, str]:
    """`value` and `other` to `decimals` places, or more (up to 4, as results are stored)
    where that many would show a value under a limit as the limit itself.

    >>> apart(0.6996, 0.7, 2), apart(0.4996, 0.5, 3), apart(0.61, 0.625, 2)
    (('0.6996', '0.7000'), ('0.4996', '0.5000'), ('0.61', '0.62'))
    """
    for places in range(decimals, 5):
        shown = f"{value:.{places}f}", f"{other:.{places}f}"
        if shown[0] != shown[1]:
            break
    return shown


def _shorten(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    keep = max(width - 2, 2)
    return f"{text[:keep - keep // 2]}..{text[len(text) - keep // 2:]}"


def _decision(record: ResultRecord, reason: str, policy: AlertPolicy) -> AlertDecision:
    headline = _HEADLINES[reason]
    lines = [f"{headline}.", "", *details(record, policy), ""]
    if reason == REASON_INVALID:
        lines += ["See what was uploaded:", f"  linesight show {record.image_id}"]
    else:
        lines += ["See the photo beside its heatmap:", f"  linesight show {record.image_id}",
                  "Record what it really was (for retraining):",
                  f"  linesight review {record.image_id} --label normal|anomaly"]
    return AlertDecision(send=True, reason=reason,
                         subject=subject(headline, record.line_id, record.camera_id),
                         message="\n".join(lines))


def details(record: ResultRecord, policy: AlertPolicy) -> list[str]:
    """What is known of one result, a fact a line, as an alert e-mail and `linesight show`
    give it (the confidence compared with the line's low-confidence limit when under it)."""
    lines = [
        f"Line:        {record.line_id}",
        f"Camera:      {record.camera_id}",
        f"Image:       {record.image_id}",
    ]
    if record.client_image_id:
        lines.append(f"Camera's id: {record.client_image_id}")
    lines.append(f"Captured:    {iso(record.captured_at)}")
    if record.status == STATUS_INVALID:
        lines += ["Verdict:     none: the image could not be judged",
                  f"Reason:      {record.reason}"]
    else:
        confidence = f"{record.confidence:.2f}"
        if is_low_confidence(record.confidence, policy.confidence_threshold):
            limit = low_confidence_limit(policy.confidence_threshold)
            confidence, limit_shown = apart(record.confidence, limit, 2)
            confidence += f" (under this line's low-confidence limit, {limit_shown})"
        score, threshold = apart(record.score, record.threshold, 3)
        lines += [
            f"Verdict:     {'ANOMALOUS' if record.is_anomalous else 'normal'}",
            f"Confidence:  {confidence}",
            f"Score:       {score} (threshold {threshold})",
            f"Model:       {record.model_version}",
        ]
    lines.append(f"Image URL:   {record.s3_uri}")
    if record.image_version:  # the bytes judged, should the key be written again
        lines.append(f"Version:     {record.image_version}")
    if record.heatmap_uri:
        lines.append(f"Heatmap:     {record.heatmap_uri}")
    if record.status != STATUS_INVALID and record.reason:
        lines.append(f"Reason:      {record.reason}")
    return lines
