"""Handler settings: read once from the environment, with errors that name the variable."""

from __future__ import annotations

import re

import pytest

from pipeline.settings import Settings, SettingsError


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.confidence_threshold == 0.20
    assert settings.max_upload_bytes == 15 * 1024 * 1024
    assert settings.image_extensions == ("jpg", "jpeg", "png")
    # unset: the namespace every stack wrote before each had its own
    assert settings.metrics_namespace == "LineSight"


def test_per_line_overrides() -> None:
    settings = Settings.from_env({
        "LINESIGHT_CONFIDENCE_THRESHOLD": "0.1",
        "LINESIGHT_LINES": '{"L1": {"threshold": 0.6, "confidenceThreshold": 0.3}}'})
    assert settings.policy_for("L1").threshold == 0.6
    assert settings.confidence_threshold_for("L1") == 0.3
    assert settings.confidence_threshold_for("L2") == 0.1
    assert settings.policy_for("L2").threshold is None


@pytest.mark.parametrize("env, message", [
    ({"LINESIGHT_CONFIDENCE_THRESHOLD": "high"}, "LINESIGHT_CONFIDENCE_THRESHOLD"),
    ({"LINESIGHT_CONFIDENCE_THRESHOLD": "1.5"}, "LINESIGHT_CONFIDENCE_THRESHOLD"),
    # a band of 0.5 or more would make every result low-confidence
    ({"LINESIGHT_CONFIDENCE_THRESHOLD": "0.5"}, "LINESIGHT_CONFIDENCE_THRESHOLD must be a "
                                                "number in [0, 0.5)"),
    ({"LINESIGHT_LINES": '{"L1": {"confidenceThreshold": 0.7}}'},
     "LINESIGHT_LINES['L1'].confidenceThreshold must be a number in [0, 0.5)"),
    ({"LINESIGHT_MAX_UPLOAD_BYTES": "-1"}, "LINESIGHT_MAX_UPLOAD_BYTES"),
    ({"LINESIGHT_LINES": "{not json"}, "LINESIGHT_LINES"),
    ({"LINESIGHT_LINES": '{"L1": {"threshold": 2}}'}, "LINESIGHT_LINES['L1'].threshold"),
    ({"LINESIGHT_LINES": '{"L1": {"threshold": 1}}'},
     "LINESIGHT_LINES['L1'].threshold must be a number strictly between 0 and 1"),
    ({"LINESIGHT_LINES": '{"L1": {"threshold": 0.0}}'}, "LINESIGHT_LINES['L1'].threshold"),
    # an empty band is refused, not read as 0 (which would turn the line's alerts off)
    ({"LINESIGHT_LINES": '{"L1": {"confidenceThreshold": ""}}'},
     "LINESIGHT_LINES['L1'].confidenceThreshold must be a number in [0, 0.5), got ''"),
    # a misspelt key would leave the line on the stack's policy without a word
    ({"LINESIGHT_LINES": '{"L1": {"treshold": 0.6}}'},
     "LINESIGHT_LINES['L1'] has unknown key 'treshold'"),
    # names CloudWatch refuses in PutMetricData (or EMF drops)
    ({"LINESIGHT_METRICS_NAMESPACE": "AWS/Lambda"},
     "LINESIGHT_METRICS_NAMESPACE: 'AWS/Lambda' is AWS's own"),
    ({"LINESIGHT_METRICS_NAMESPACE": "LineSight/dev$"},
     "LINESIGHT_METRICS_NAMESPACE: 'LineSight/dev$' is no CloudWatch namespace"),
    ({"LINESIGHT_METRICS_NAMESPACE": "L" * 256}, "LINESIGHT_METRICS_NAMESPACE"),
])
def test_malformed_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)):
        Settings.from_env(env)


def test_require_names_missing_settings() -> None:
    with pytest.raises(SettingsError,
                       match="LINESIGHT_STATE_MACHINE_ARN, LINESIGHT_TABLE"):
        Settings.from_env({}).require("state_machine_arn", "table_name")


@pytest.mark.parametrize("raw, expected", [("", False), ("false", False), ("true", True)])
def test_alert_on_invalid_switch(raw: str, expected: bool) -> None:
    assert Settings.from_env({"LINESIGHT_ALERT_ON_INVALID": raw}).alert_on_invalid is expected


def test_alert_on_invalid_must_be_a_boolean() -> None:
    with pytest.raises(SettingsError, match="LINESIGHT_ALERT_ON_INVALID"):
        Settings.from_env({"LINESIGHT_ALERT_ON_INVALID": "sometimes"})
