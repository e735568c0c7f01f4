"""Runtime settings of the handlers: the one place that reads environment variables.

Pulumi (or the local stack) writes these variables; handlers read them once through
`Settings.from_env()`. Nothing else in `pipeline/` touches `os.environ`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from pipeline import metrics

DEFAULT_CONFIDENCE_THRESHOLD = 0.20
DEFAULT_MAX_UPLOAD_BYTES = 15 * 1024 * 1024
DEFAULT_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png")


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class LinePolicy:
    """Per-line overrides of the detector threshold and the low-confidence band."""

    threshold: float | None = None
    confidence_threshold: float | None = None


@dataclass(frozen=True)
class Settings:
    region: str
    images_bucket: str = ""
    results_bucket: str = ""
    table_name: str = ""
    tokens_table: str = ""
    state_machine_arn: str = ""
    topic_arn: str = ""
    firehose_stream: str = ""
    failure_queue_url: str = ""
    lake_failure_queue_url: str = ""
    detector_backend: str = "embedded"
    model_uri: str = ""
    sagemaker_endpoint: str = ""
    confidence_threshold: float = DEFAULT_CONFIDENCE_THRESHOLD
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    image_extensions: tuple[str, ...] = DEFAULT_IMAGE_EXTENSIONS
    lines: Mapping[str, LinePolicy] = field(default_factory=dict)
    alert_on_invalid: bool = False
    metrics_namespace: str = metrics.NAMESPACE

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
        return cls(
            region=region,
            **{name: env.get(variable, "") for name, variable in VARIABLES.items()},
            detector_backend=env.get("LINESIGHT_DETECTOR", "embedded"),
            confidence_threshold=_band(env.get("LINESIGHT_CONFIDENCE_THRESHOLD", ""),
                                       "LINESIGHT_CONFIDENCE_THRESHOLD",
                                       DEFAULT_CONFIDENCE_THRESHOLD),
            max_upload_bytes=_positive_int(env, "LINESIGHT_MAX_UPLOAD_BYTES",
                                           DEFAULT_MAX_UPLOAD_BYTES),
            image_extensions=_extensions(env.get("LINESIGHT_IMAGE_EXTENSIONS", "")),
            lines=_lines(env.get("LINESIGHT_LINES", "")),
            alert_on_invalid=_flag(env, "LINESIGHT_ALERT_ON_INVALID"),
            metrics_namespace=_namespace(env.get(METRICS_NAMESPACE, "")),
        )

    def require(self, *names: str) -> None:
        """Fail with one clear message, naming the variables, when a handler needs
        settings that are unset."""
        missing = [VARIABLES[name] for name in names if not getattr(self, name)]
        if missing:
            raise SettingsError("missing environment variables: " + ", ".join(missing))

    def policy_for(self, line_id: str) -> LinePolicy:
        return self.lines.get(line_id, LinePolicy())

    def confidence_threshold_for(self, line_id: str) -> float:
        override = self.policy_for(line_id).confidence_threshold
        return self.confidence_threshold if override is None else override


# The settings that are plain names of resources, and the variables that carry them.
VARIABLES = {
    "images_bucket": "LINESIGHT_IMAGES_BUCKET",
    "results_bucket": "LINESIGHT_RESULTS_BUCKET",
    "table_name": "LINESIGHT_TABLE",
    "tokens_table": "LINESIGHT_TOKENS_TABLE",
    "state_machine_arn": "LINESIGHT_STATE_MACHINE_ARN",
    "topic_arn": "LINESIGHT_TOPIC_ARN",
    "firehose_stream": "LINESIGHT_FIREHOSE_STREAM",
    "failure_queue_url": "LINESIGHT_FAILURE_QUEUE_URL",
    "lake_failure_queue_url": "LINESIGHT_LAKE_FAILURE_QUEUE_URL",
    "model_uri": "LINESIGHT_MODEL_URI",
    "sagemaker_endpoint": "LINESIGHT_SAGEMAKER_ENDPOINT",
}

# The stack's own CloudWatch namespace (`pipeline.metrics.namespace_for`). Unset, the
# handlers write, and readers read, the namespace every stack shared before.
METRICS_NAMESPACE = "LINESIGHT_METRICS_NAMESPACE"


@cache
def current() -> Settings:
    """The settings of this process, read once on first use (not at import time)."""
    return Settings.from_env()


def parse_band(value: Any) -> float:
    """A low-confidence band: a number in [0, 0.5). A verdict's confidence runs from 0.5 (a
    coin flip) to 1 and a result is low-confidence under 0.5 + the band, so 0.5 or more
    would send every result to a person. Raises ValueError saying so.

    >>> parse_band("0.2")
    0.2
    >>> parse_band(0.8)
    Traceback (most recent call last):
    ValueError: must be a number in [0, 0.5), got 0.8: ...
    """
    try:
        band = float(value)
    except (TypeError, ValueError):
        band = float("nan")
    if isinstance(value, bool) or not 0.0 <= band < 0.5:
        raise ValueError(f"must be a number in [0, 0.5), got {value!r}: confidence runs from "
                         "0.5 (a coin flip) to 1 and a result is low-confidence under 0.5 + "
                         "this band, so 0.5 or more would send every result to a person (the "
                         "seed's 0.20 flags results under 0.70)")
    return band


def parse_threshold(value: Any) -> float:
    """A per-line detector threshold on the normalised score scale (the trained threshold is
    0.5): strictly between 0 and 1. Scores are never below 0 or above 1, so 0 would call
    every part anomalous and 1 none. Raises ValueError saying so.

    >>> parse_threshold("0.55")
    0.55
    >>> parse_threshold(1)
    Traceback (most recent call last):
    ValueError: must be a number strictly between 0 and 1, got 1: ...
    """
    try:
        threshold = float(value)
    except (TypeError, ValueError):
        threshold = float("nan")
    if isinstance(value, bool) or not 0.0 < threshold < 1.0:
        raise ValueError(f"must be a number strictly between 0 and 1, got {value!r}: scores "
                         "are normalised to [0, 1] with the trained threshold at 0.5, so 0 "
                         "would call every part anomalous and 1 none")
    return threshold


def _band(value: str, name: str, default: float) -> float:
    if value == "":
        return default
    try:
        return parse_band(value)
    except ValueError as exc:
        raise SettingsError(f"{name} {exc}") from None


def _namespace(value: str) -> str:
    try:
        return metrics.check_namespace(value) if value else metrics.NAMESPACE
    except ValueError as exc:
        raise SettingsError(f"{METRICS_NAMESPACE}: {exc}") from None


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if value <= 0:
        raise SettingsError(f"{name} must be positive, got {value}")
    return value


def parse_flag(value: Any) -> bool | None:
    """True or False from a bool or one of the usual words (any case), else None; the
    one reading of a yes/no setting for stack config, environment and query strings.

    >>> parse_flag("Yes"), parse_flag(" 0 "), parse_flag(True), parse_flag("maybe")
    (True, False, True, None)
    """
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in ("true", "1", "yes"):
        return True
    if word in ("false", "0", "no"):
        return False
    return None


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "")
    value = parse_flag(raw) if raw.strip() else False
    if value is None:
        raise SettingsError(f"{name} must be true or false, got {raw!r}")
    return value


def _extensions(raw: str) -> tuple[str, ...]:
    if not raw.strip():
        return DEFAULT_IMAGE_EXTENSIONS
    return tuple(part.strip().lower().lstrip(".") for part in raw.split(",") if part.strip())


def _json_object(env: Mapping[str, str], name: str) -> dict[str, Any]:
    raw = env.get(name, "")
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{name} is not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise SettingsError(f"{name} must be a JSON object")
    return value


def _lines(raw: str) -> dict[str, LinePolicy]:
    if not raw:
        return {}
    value = _json_object({"LINESIGHT_LINES": raw}, "LINESIGHT_LINES")
    lines: dict[str, LinePolicy] = {}
    for line_id, policy in value.items():
        if not isinstance(policy, dict):
            raise SettingsError(f"LINESIGHT_LINES[{line_id!r}] must be an object")
        # as the stack config refuses them: a misspelt key would drop the line's policy
        if unknown := sorted(set(policy) - {"threshold", "confidenceThreshold"}):
            raise SettingsError(f"LINESIGHT_LINES[{line_id!r}] has unknown key "
                                f"{unknown[0]!r}; a line has threshold, confidenceThreshold")
        lines[line_id] = LinePolicy(
            threshold=_optional(policy, line_id, "threshold", parse_threshold),
            confidence_threshold=_optional(policy, line_id, "confidenceThreshold", parse_band),
        )
    return lines


def _optional(policy: Mapping[str, Any], line_id: str, key: str,
              parse: Callable[[Any], float]) -> float | None:
    """A line's own setting, or None for the stack's. The value is parsed as it is: an
    empty string is refused, not read as the default (0, no low-confidence alerts)."""
    if policy.get(key) is None:
        return None
    try:
        return parse(policy[key])
    except ValueError as exc:
        raise SettingsError(f"LINESIGHT_LINES[{line_id!r}].{key} {exc}") from None
