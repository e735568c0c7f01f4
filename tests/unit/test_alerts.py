"""The alert decision is a pure function of the record and the line's policy."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipeline.alerts import AlertPolicy, decide
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
    assert len(decision.subject) <= 100
