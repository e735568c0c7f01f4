"""The alert decision is a pure function of the record and the line's policy."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipeline.alerts import _HEADLINES, SUBJECT_MAX, AlertPolicy, decide, is_low_confidence
from pipeline.records import ResultRecord

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def _record(anomalous: bool, confidence: float, status: str = "OK") -> ResultRecord:
    return ResultRecord("img-1", "line-7", "cam-3", "s3://b/k.jpg", T0, T0, status,
                        is_anomalous=anomalous, confidence=confidence, score=0.7,
                        threshold=0.5, model_version="v1")


@pytest.mark.parametrize("anomalous, confidence, band, send, reason", [
    (True, 0.95, 0.20, True, "anomalous"),  # a clear defect
    (True, 0.60, 0.20, True, "anomalous_low_confidence"),  # a defect near the threshold
    (False, 0.95, 0.20, False, ""),  # a clear normal part: no alert
    (False, 0.62, 0.20, True, "low_confidence"),  # a doubtful normal: a person checks
    (False, 0.62, 0.0, False, ""),  # band 0 turns low-confidence alerts off
    (False, 0.70, 0.20, False, ""),  # exactly at the band's edge is not low
])
def test_decision(anomalous: bool, confidence: float, band: float, send: bool,
                  reason: str) -> None:
    decision = decide(_record(anomalous, confidence), AlertPolicy(band))
    assert (decision.send, decision.reason) == (send, reason)


def test_invalid_images_alert_only_when_configured() -> None:
    record = _record(False, 0.0, status="INVALID").with_changes(reason="truncated: cut")
    assert not decide(record, AlertPolicy(0.2)).send
    decision = decide(record, AlertPolicy(0.2, alert_on_invalid=True))
    assert decision.send and "truncated" in decision.message


def test_message_names_line_camera_image_confidence_and_time() -> None:
    decision = decide(_record(True, 0.91), AlertPolicy(0.2))
    assert decision.subject == "LineSight: Defect detected - line line-7, camera cam-3"
    for expected in ("line-7", "cam-3", "img-1", "0.91", "2026-11-23T10:00:00.000+00:00"):
        assert expected in decision.message
    assert "linesight review img-1 --label" in decision.message
    assert "linesight show img-1" in decision.message  # to look before labelling it
    assert "Version" not in decision.message  # an unversioned bucket's record
    versioned = decide(_record(True, 0.91).with_changes(image_version="3HL4kqtJvjVB"),
                       AlertPolicy(0.2))
    assert "Version:     3HL4kqtJvjVB" in versioned.message  # the bytes judged


@pytest.mark.parametrize("reason", sorted(_HEADLINES))
def test_the_subject_keeps_line_and_camera_under_the_sns_limit(reason: str) -> None:
    """Ids may be 64 characters; SNS refuses a subject of 100 or more, and then the alert
    would go to the failure queue instead of to people."""
    line, camera = "assembly-line-" + "x" * 44 + "-north", "camera-" + "y" * 50 + "-top-7"
    confidence = 0.55 if "low_confidence" in reason else 0.95
    record = _record(reason.startswith("anomalous"), confidence).with_changes(
        line_id=line, camera_id=camera,
        status="INVALID" if reason == "invalid" else "OK")
    decision = decide(record, AlertPolicy(0.2, alert_on_invalid=True))
    assert decision.reason == reason
    assert len(decision.subject) <= SUBJECT_MAX and decision.subject.isascii()
    assert "line assembl" in decision.subject and "-north, camera camera-" in (
        decision.subject) and decision.subject.endswith("-top-7")


def test_an_unusable_image_claims_no_verdict() -> None:
    record = _record(False, 0.0, status="INVALID").with_changes(reason="not_an_image: text")
    message = decide(record, AlertPolicy(0.2, alert_on_invalid=True)).message
    assert "could not be judged" in message and "not_an_image: text" in message
    assert "See what was uploaded:\n  linesight show img-1" in message
    assert "normal" not in message and "Confidence" not in message


def test_a_low_confidence_alert_says_which_limit_it_fell_under() -> None:
    message = decide(_record(False, 0.62), AlertPolicy(0.25)).message
    assert "0.62 (under this line's low-confidence limit, 0.75)" in message
    assert "limit" not in decide(_record(True, 0.95), AlertPolicy(0.25)).message


def test_a_value_just_under_its_limit_is_never_shown_as_the_limit() -> None:
    record = _record(False, 0.6996).with_changes(score=0.4996)
    message = decide(record, AlertPolicy(0.2)).message
    assert "Confidence:  0.6996 (under this line's low-confidence limit, 0.7000)" in message
    assert "Score:       0.4996 (threshold 0.5000)" in message
    message = decide(_record(False, 0.61), AlertPolicy(0.125)).message
    assert "Confidence:  0.61 (under this line's low-confidence limit, 0.62)" in message
    assert "Score:       0.700 (threshold 0.500)" in message


def test_a_control_character_in_an_id_never_reaches_the_subject() -> None:
    """SNS refuses a subject with one, and the alert would never be sent."""
    record = _record(True, 0.95).with_changes(line_id="press 1\nBCC: x", camera_id="cam\t1")
    subject = decide(record, AlertPolicy(0.2)).subject
    assert subject == "LineSight: Defect detected - line press 1?BCC: x, camera cam?1"


def test_the_cameras_own_image_id_is_in_the_message() -> None:
    record = _record(True, 0.9).with_changes(client_image_id="part-20261123-0042")
    assert "part-20261123-0042" in decide(record, AlertPolicy(0.2)).message


@pytest.mark.parametrize("band", [b / 100 for b in range(1, 50)])
def test_a_confidence_exactly_at_the_band_edge_is_not_low(band: float) -> None:
    edge = round(0.5 + band, 2)
    assert not is_low_confidence(edge, band)
    assert is_low_confidence(edge - 0.001, band)
