"""The stack configuration of one environment, parsed and validated once.

Pulumi (`infra/config.py`) and the local stack both read a stack's config through
`parse_stack_config` (or `load_stack_config` for a `Pulumi.<stack>.yaml` file), so both
refuse the same mistakes with the same message, and that message names the key.

The keys are declared, with a description and a default, in `Pulumi.yaml` (namespace
`linesight`); `project_defaults` reads those defaults so they live in one place.
The result is a frozen `StackConfig`; `StackConfig.lambda_environment` turns it (plus the
names of the deployed resources) into the handlers' `LINESIGHT_*` variables, the ones
`pipeline.settings.Settings.from_env` reads.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import metrics
from pipeline.alarms import PERIOD_SECONDS, silent_camera_alarm_name
from pipeline.analytics import Buffering
from pipeline.dashboard import dashboard_body
from pipeline.records import reserved_line
from pipeline.settings import (
    DEFAULT_CONFIDENCE_THRESHOLD,
    DEFAULT_IMAGE_EXTENSIONS,
    DEFAULT_MAX_UPLOAD_BYTES,
    METRICS_NAMESPACE,
    parse_band,
    parse_flag,
    parse_threshold,
)
from pipeline.uploads import ID_RULE, is_id

NAMESPACE = "linesight"
WORKFLOW_TYPES = ("EXPRESS", "STANDARD")
DETECTOR_KEYS = ("modelPath", "modelUri", "sagemakerEndpoint")
# Firehose dynamic partitioning needs a buffer of 64-128 MB and 60-900 s.
FIREHOSE_MB = (64, 128)
FIREHOSE_SECONDS = (60, 900)
# The ingest function reads an upload whole, then decodes it, in its 2,048 MB; a larger
# file could only run it out of memory on every retry (nothing over 50 MP is decoded:
# an 8-bit RGB PNG of 50 MP stored without compression is 150 MB).
MAX_UPLOAD_BYTES = 256 * 1024**2
# The API stage's throttle (requests per second, and at once); API Gateway's own account
# limit (10,000 per second by default) caps it anyway.
DEFAULT_API_RATE_LIMIT = 100
DEFAULT_API_BURST_LIMIT = 200
API_LIMIT_MAX = 10_000
# silentCameraMinutes: whole alarm periods, at most a day of them (CloudWatch's limit on
# EvaluationPeriods x Period).
SILENCE_STEP_MINUTES = PERIOD_SECONDS // 60
SILENCE_MAX_MINUTES = 24 * 60

# SNS: values in one subscription filter policy, and filter policies on one topic.
SNS_FILTER_VALUES = 150
SNS_FILTER_POLICIES = 200
# CloudWatch: metrics in one dashboard widget, and in one dashboard.
DASHBOARD_WIDGET_METRICS = 500
DASHBOARD_METRICS = 2500
# AWS Lambda allows a function 4 KB of environment: every variable's name and value
# together. The handlers' names are known only once deployed; `environment_bytes` bounds
# them from above, and a config whose bound is over the limit is refused before `up`.
LAMBDA_ENVIRONMENT_BYTES = 4096
# Deployed names, at their longest: Pulumi's auto-naming adds '-' and 7 characters, the
# longest region name has 14 ("ap-southeast-2"), the longest partition 10 ("aws-us-gov").
_NAME_SUFFIX = "-" + "x" * 7
_REGION = "x" * 16
_ACCOUNT = "0" * 12
_PARTITION = "aws-us-gov"

_PREFIX = re.compile(r"^[a-z0-9][a-z0-9-]{1,30}[a-z0-9]$")
_EMAIL = re.compile(r"^[^@\s,;]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$")
_EXTENSION = re.compile(r"^[a-z0-9]{1,10}$")
_ENDPOINT = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_S3_URI = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$")
_KMS_KEY_ARN = re.compile(r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[A-Za-z0-9-]+$")
_LINE_KEYS = {"id", "cameras", "threshold", "confidenceThreshold", "alertEmails",
              "anomalyRateAlarm", "silentCameraMinutes"}


class ConfigError(ValueError):
    """The stack config is wrong; the message starts with the key (`linesight:<key>`), or,
    with `where`, with what is wrong as it stands (a file, a key in another namespace)."""

    def __init__(self, key: str, problem: str, *, where: str = "") -> None:
        super().__init__(f"{where or NAMESPACE + ':' + key}: {problem}")
        self.key = key


def check_namespaces(keys: Iterable[str]) -> None:
    """Refuse a key whose namespace reads like ours but is not (`linesigth:lines`,
    `LineSight:lines`): it would be ignored, and the default used in its place.

    >>> check_namespaces(["aws:region", "linesight:lines", "pulumi:tags"])
    >>> check_namespaces(["linesigth:lines"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pipeline.stackconfig.ConfigError: linesigth:lines: ... did you mean linesight:lines?
    """
    for key in keys:
        namespace, colon, bare = key.partition(":")
        if colon and namespace != NAMESPACE and difflib.SequenceMatcher(
                None, namespace.lower(), NAMESPACE).ratio() >= 0.75:
            raise ConfigError(bare, f"not a {NAMESPACE} key; did you mean {NAMESPACE}:{bare}?",
                              where=key)


@dataclass(frozen=True)
class LineConfig:
    id: str
    cameras: tuple[str, ...]
    threshold: float | None = None
    confidence_threshold: float | None = None
    alert_emails: tuple[str, ...] = ()
    anomaly_rate_alarm: float = 0.25
    silent_camera_minutes: int = 0  # 0: no alarm when a camera stops sending


@dataclass(frozen=True)
class DetectorConfig:
    """Exactly one of: a local model directory to upload, an S3 URI, a SageMaker endpoint."""

    model_path: str = ""
    model_uri: str = ""
    sagemaker_endpoint: str = ""
    model_kms_key_arn: str = ""  # the customer key modelUri's objects are encrypted with

    @property
    def backend(self) -> str:
        return "sagemaker" if self.sagemaker_endpoint else "embedded"


@dataclass(frozen=True)
class StackConfig:
    stack: str
    resource_prefix: str
    alert_emails: tuple[str, ...]
    confidence_threshold: float
    image_extensions: tuple[str, ...]
    max_upload_bytes: int
    workflow_type: str
    detector: DetectorConfig
    lines: tuple[LineConfig, ...]
    image_retention_days: int
    results_retention_days: int
    buffering: Buffering
    upload_origins: tuple[str, ...]
    latency_alarm_ms: int
    alert_on_invalid: bool = False
    region: str = ""
    api_rate_limit: int = DEFAULT_API_RATE_LIMIT
    api_burst_limit: int = DEFAULT_API_BURST_LIMIT

    @property
    def line_cameras(self) -> dict[str, tuple[str, ...]]:
        """{line id: its cameras}, in config order (what dashboard and alarms take)."""
        return {line.id: line.cameras for line in self.lines}

    @property
    def anomaly_rate_alarms(self) -> dict[str, float]:
        return {line.id: line.anomaly_rate_alarm for line in self.lines}

    @property
    def silent_camera_alarms(self) -> dict[str, int]:
        """{line id: minutes without an upload after which each of its cameras alarms},
        for the lines that set it."""
        return {line.id: line.silent_camera_minutes for line in self.lines
                if line.silent_camera_minutes}

    def subscriptions(self) -> dict[str, tuple[str, ...]]:
        """{email: the lines it receives}; an empty tuple means every alert, unfiltered.

        SNS keeps one subscription per (topic, endpoint), so an address listed for several
        lines gets one subscription whose filter names all of them, and a stack-wide
        address is never also subscribed with a filter.

        >>> cfg = parse_stack_config({"alertEmails": ["ops@x.io"], "modelUri": "s3://models/v1/",
        ...     "lines": [{"id": "A", "cameras": ["c1"], "alertEmails": ["a@x.io", "ops@x.io"]},
        ...               {"id": "B", "cameras": ["c2"], "alertEmails": ["a@x.io"]}]})
        >>> cfg.subscriptions()
        {'ops@x.io': (), 'a@x.io': ('A', 'B')}
        """
        result: dict[str, tuple[str, ...]] = dict.fromkeys(self.alert_emails, ())
        for line in self.lines:
            for email in line.alert_emails:
                if email in result and result[email] == ():
                    continue
                result[email] = result.get(email, ()) + (line.id,)
        return result

    def warnings(self) -> list[str]:
        """What this config leaves unwatched, though it is valid (a dev stack may want it):
        `pulumi up` shows each as a warning.

        >>> parse_stack_config({"modelUri": "s3://models/v1/", "lines": [
        ...     {"id": "A", "cameras": ["c1"], "alertEmails": ["a@x.io"]},
        ...     {"id": "B", "cameras": ["c2"]}]}).warnings()  # doctest: +NORMALIZE_WHITESPACE
        ['alertEmails is empty: the alarms (anomaly rate, invalid uploads, latency, failures,
          dead letters) reach nobody, since they go to the stack-wide addresses only',
         'line B has no alertEmails and alertEmails is empty: its alerts reach nobody']
        """
        if self.alert_emails:
            return []
        found = ["alertEmails is empty: the alarms (anomaly rate, invalid uploads, latency, "
                 "failures, dead letters) reach nobody, since they go to the stack-wide "
                 "addresses only"]
        found += [f"line {line.id} has no alertEmails and alertEmails is empty: its alerts "
                  "reach nobody" for line in self.lines if not line.alert_emails]
        return found

    def lines_env(self) -> str:
        """LINESIGHT_LINES: {line_id: {threshold, confidenceThreshold}}, set keys only, and
        only lines that set one (every other line has the stack's policy; the variable
        counts against Lambda's 4 KB of environment, `environment_bytes`)."""
        lines: dict[str, dict[str, float]] = {}
        for line in self.lines:
            policy: dict[str, float] = {}
            if line.threshold is not None:
                policy["threshold"] = line.threshold
            if line.confidence_threshold is not None:
                policy["confidenceThreshold"] = line.confidence_threshold
            if policy:
                lines[line.id] = policy
        return json.dumps(lines, sort_keys=True, separators=(",", ":"))

    def environment_bytes(self) -> int:
        """The size of the handlers' environment as Lambda counts it (names and values), with
        every deployed name at its longest: an upper bound of what `up` will set.

        >>> parse_stack_config({"modelUri": "s3://models/v1/", "lines": [
        ...     {"id": "L1", "cameras": ["c1"]}]}).environment_bytes() < 1500
        True
        """
        def name(role: str) -> str:
            return f"{self.resource_prefix}-{role}{_NAME_SUFFIX}"

        def arn(service: str, resource: str) -> str:
            return f"arn:{_PARTITION}:{service}:{_REGION}:{_ACCOUNT}:{resource}"

        def queue_url(role: str) -> str:
            return f"https://sqs.{_REGION}.amazonaws.com/{_ACCOUNT}/{name(role)}"

        model_uri = (f"s3://{name('models')}/models/{'0' * 16}/" if self.detector.model_path
                     else "")
        environment = self.lambda_environment(
            images_bucket=name("images"), results_bucket=name("results"),
            table=name("results"), tokens_table=name("tokens"),
            state_machine_arn=arn("states", f"stateMachine:{name('workflow')}"),
            topic_arn=arn("sns", name("alerts")), firehose_stream=name("lake"),
            failure_queue_url=queue_url("workflow-failures"),
            lake_failure_queue_url=queue_url("lake-failures"), model_uri=model_uri)
        return sum(len(key.encode()) + len(value.encode()) for key, value in environment.items())

    def lambda_environment(self, *, images_bucket: str, results_bucket: str, table: str,
                           tokens_table: str, state_machine_arn: str, topic_arn: str,
                           firehose_stream: str, failure_queue_url: str,
                           lake_failure_queue_url: str, model_uri: str = ""
                           ) -> dict[str, str]:
        """The handlers' environment (the names `pipeline.settings` reads), given the
        deployed resources. `model_uri` is where an uploaded `modelPath` landed; without
        it the config's own `modelUri` is used."""
        return {
            "LINESIGHT_IMAGES_BUCKET": images_bucket,
            "LINESIGHT_RESULTS_BUCKET": results_bucket,
            "LINESIGHT_TABLE": table,
            "LINESIGHT_TOKENS_TABLE": tokens_table,
            "LINESIGHT_STATE_MACHINE_ARN": state_machine_arn,
            "LINESIGHT_TOPIC_ARN": topic_arn,
            "LINESIGHT_FIREHOSE_STREAM": firehose_stream,
            "LINESIGHT_FAILURE_QUEUE_URL": failure_queue_url,
            "LINESIGHT_LAKE_FAILURE_QUEUE_URL": lake_failure_queue_url,
            "LINESIGHT_DETECTOR": self.detector.backend,
            "LINESIGHT_MODEL_URI": model_uri or self.detector.model_uri,
            "LINESIGHT_SAGEMAKER_ENDPOINT": self.detector.sagemaker_endpoint,
            "LINESIGHT_CONFIDENCE_THRESHOLD": str(self.confidence_threshold),
            "LINESIGHT_MAX_UPLOAD_BYTES": str(self.max_upload_bytes),
            "LINESIGHT_IMAGE_EXTENSIONS": ",".join(self.image_extensions),
            "LINESIGHT_LINES": self.lines_env(),
            "LINESIGHT_ALERT_ON_INVALID": "true" if self.alert_on_invalid else "false",
            METRICS_NAMESPACE: self.metrics_namespace,
        }

    @property
    def metrics_namespace(self) -> str:
        """The stack's own CloudWatch namespace: its handlers write it, its alarms,
        dashboard and report read it."""
        return metrics.namespace_for(self.resource_prefix)


# --- Reading ---------------------------------------------------------------------------

def project_defaults(project_yaml: Path | str) -> dict[str, Any]:
    """The `default` of every `linesight` key declared in Pulumi.yaml, by bare key."""
    import yaml  # only where a file is read: the handlers never need PyYAML

    project = yaml.safe_load(Path(project_yaml).read_text()) or {}
    defaults: dict[str, Any] = {}
    for key, declaration in (project.get("config") or {}).items():
        bare = _bare_key(key)
        if bare is None:
            continue
        defaults[bare] = (declaration.get("default") if isinstance(declaration, dict)
                          else declaration)
    return defaults


def load_stack_config(stack_yaml: Path | str, project_yaml: Path | str) -> StackConfig:
    """Read `Pulumi.<stack>.yaml` as Pulumi would: its `linesight:` keys over the
    Pulumi.yaml defaults. `aws:region`, when present, becomes `region`."""
    import yaml

    path = Path(stack_yaml)
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError("", f"not valid YAML: {' '.join(str(exc).split())}",
                          where=path.name) from None
    if not isinstance(document, dict) or not isinstance(document.get("config") or {}, dict):
        raise ConfigError("", "needs a `config:` mapping of keys to values (`linesight:lines: "
                              "...`)", where=path.name)
    astray = sorted(key for key in document if key in _KNOWN_KEYS or
                    str(key).startswith(NAMESPACE + ":"))
    if astray:
        raise ConfigError("", f"{astray[0]} belongs under `config:`", where=path.name)
    raw = document.get("config") or {}
    check_namespaces(raw)
    values = {bare: value for key, value in raw.items()
              if (bare := _bare_key(key)) is not None}
    stack = path.name.removeprefix("Pulumi.").removesuffix(".yaml").removesuffix(".yml")
    return parse_stack_config(values, project_defaults(project_yaml), stack=stack,
                              region=str(raw.get("aws:region") or ""))


def parse_stack_config(values: Mapping[str, Any], defaults: Mapping[str, Any] | None = None,
                       *, stack: str = "dev", region: str = "") -> StackConfig:
    """Validate the config mapping (bare keys, values as YAML or JSON would give them)
    over `defaults`; raises `ConfigError` naming the first wrong key."""
    merged = {**(defaults or {}), **{k: v for k, v in values.items() if v is not None}}
    unknown = sorted(set(values) - set(_KNOWN_KEYS))
    if unknown:
        raise ConfigError(unknown[0], f"unknown key; the keys are {', '.join(_KNOWN_KEYS)}")
    confidence = _band(merged.get("confidenceThreshold", DEFAULT_CONFIDENCE_THRESHOLD),
                       "confidenceThreshold")
    default_rate = _alarm_rate(merged.get("anomalyRateAlarm", 0.25), "anomalyRateAlarm")
    default_silence = _silence(merged.get("silentCameraMinutes", 0), "silentCameraMinutes")
    lines = _lines(merged.get("lines"), default_rate, default_silence)
    api_rate = _whole(merged.get("apiRateLimit", DEFAULT_API_RATE_LIMIT), "apiRateLimit", 1,
                      API_LIMIT_MAX)
    api_burst = _whole(merged.get("apiBurstLimit", DEFAULT_API_BURST_LIMIT), "apiBurstLimit",
                       1, API_LIMIT_MAX)
    if api_burst < api_rate:
        raise ConfigError("apiBurstLimit", f"must be at least apiRateLimit ({api_rate}), since "
                          "the burst is the bucket the rate refills and less would cap every "
                          f"second below the rate; got {api_burst}")
    retention_images = _whole(merged.get("imageRetentionDays", 90), "imageRetentionDays", 0)
    retention_results = _whole(merged.get("resultsRetentionDays", 365),
                               "resultsRetentionDays", 0)
    config = StackConfig(
        stack=stack,
        resource_prefix=_prefix(merged.get("resourcePrefix") or "", stack),
        alert_emails=_emails(merged.get("alertEmails"), "alertEmails"),
        confidence_threshold=confidence,
        image_extensions=_extensions(merged.get("imageExtensions", list(DEFAULT_IMAGE_EXTENSIONS))),
        max_upload_bytes=_max_upload_bytes(merged.get("maxUploadBytes",
                                                      DEFAULT_MAX_UPLOAD_BYTES)),
        workflow_type=_workflow_type(merged.get("workflowType", "EXPRESS")),
        detector=_detector(merged),
        lines=lines,
        image_retention_days=retention_images,
        results_retention_days=retention_results,
        buffering=Buffering(
            seconds=_whole(merged.get("firehoseBufferSeconds", 60), "firehoseBufferSeconds",
                           *FIREHOSE_SECONDS),
            megabytes=_whole(merged.get("firehoseBufferMb", 64), "firehoseBufferMb",
                             *FIREHOSE_MB)),
        upload_origins=_origins(merged.get("uploadOrigins")),
        latency_alarm_ms=_whole(merged.get("latencyAlarmMs", 30000), "latencyAlarmMs", 1),
        alert_on_invalid=_boolean(merged.get("alertOnInvalid", False), "alertOnInvalid"),
        region=region,
        api_rate_limit=api_rate,
        api_burst_limit=api_burst,
    )
    _check_environment(config)
    _check_subscriptions(config)
    _check_dashboard(config)
    return config


def _check_subscriptions(config: StackConfig) -> None:
    """SNS: a filter policy holds at most 150 values, and a topic at most 200 filters."""
    filtered = {email: lines for email, lines in config.subscriptions().items() if lines}
    for email, lines in filtered.items():
        if len(lines) > SNS_FILTER_VALUES:
            raise ConfigError(
                "lines", f"{email} is among the alertEmails of {len(lines)} lines, and an SNS "
                f"subscription's filter names at most {SNS_FILTER_VALUES}: put it in the "
                "stack-wide alertEmails instead (it then receives every line's alerts)")
    if len(filtered) > SNS_FILTER_POLICIES:
        raise ConfigError(
            "lines", f"{len(filtered)} addresses receive only some lines' alerts, and an SNS "
            f"topic takes at most {SNS_FILTER_POLICIES} filtered subscriptions: send alerts to "
            "a mailing list per line instead of each person")


def _check_dashboard(config: StackConfig) -> None:
    """CloudWatch: at most 500 metrics in one dashboard widget and 2,500 in a dashboard,
    hidden ones that metric math sums included. The dashboard has rows per line (the
    anomaly rate per line takes 4 of them) and none per camera, so 125 lines fit."""
    body = dashboard_body(region="r", prefix=config.resource_prefix,
                          lines=config.line_cameras, state_machine_arn="arn", topic_arn="arn",
                          dead_letter_queues=dict.fromkeys(("i", "w", "l"), "q"))
    rows = [len(widget["properties"].get("metrics", ())) for widget in body["widgets"]]
    if max(rows) <= DASHBOARD_WIDGET_METRICS and sum(rows) <= DASHBOARD_METRICS:
        return
    raise ConfigError(
        "lines", f"{len(config.lines)} lines need {max(rows):,} metrics in one dashboard "
        f"widget and {sum(rows):,} in the dashboard, and CloudWatch allows "
        f"{DASHBOARD_WIDGET_METRICS} and {DASHBOARD_METRICS:,}: split the lines over two "
        "stacks")


def _check_environment(config: StackConfig) -> None:
    size = config.environment_bytes()
    if size <= LAMBDA_ENVIRONMENT_BYTES:
        return
    per_line = len(config.lines_env().encode())
    raise ConfigError(
        "lines", f"the handlers' environment would take up to {size:,} bytes, over AWS "
        f"Lambda's {LAMBDA_ENVIRONMENT_BYTES:,} (every variable's name and value), and "
        f"{per_line:,} of them are the lines' own threshold and confidenceThreshold: set "
        "them on fewer lines (a line without them follows the stack-wide settings), "
        "shorten the line ids that set them, or split the lines over two stacks")


_KNOWN_KEYS = (
    "resourcePrefix", "alertEmails", "confidenceThreshold", "imageExtensions",
    "maxUploadBytes", "workflowType", "modelPath", "modelUri", "sagemakerEndpoint",
    "lines", "imageRetentionDays", "resultsRetentionDays", "firehoseBufferSeconds",
    "firehoseBufferMb", "uploadOrigins", "anomalyRateAlarm", "latencyAlarmMs", "alertOnInvalid",
    "apiRateLimit", "apiBurstLimit", "modelKmsKeyArn", "silentCameraMinutes",
)
KNOWN_KEYS = _KNOWN_KEYS


def _bare_key(key: str) -> str | None:
    if ":" not in key:
        return key
    namespace, _, bare = key.partition(":")
    return bare if namespace == NAMESPACE else None


# --- Field parsers (each names its key) ---------------------------------------------

def _decoded(value: Any, key: str) -> Any:
    """Pulumi hands structured values over as JSON text; YAML hands them over parsed. Text
    that starts like JSON but is not (`pulumi config set` without `--path`) is refused."""
    if isinstance(value, str) and value[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConfigError(key, f"is not valid JSON ({exc}); set it with `pulumi config "
                              "set --path` or write it as YAML in the stack file") from None
    return value


def _fraction(value: Any, key: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(key, f"must be a number in [0, 1], got {value!r}") from None
    if isinstance(value, bool) or not 0.0 <= number <= 1.0:
        raise ConfigError(key, f"must be in [0, 1], got {value!r}")
    return number


def _threshold(value: Any, key: str) -> float:
    """A detector threshold on the normalised score scale: strictly between 0 and 1, since
    0 would call every part anomalous and 1 none (`settings.parse_threshold`)."""
    try:
        return parse_threshold(value)
    except ValueError as exc:
        raise ConfigError(key, str(exc)) from None


def _alarm_rate(value: Any, key: str) -> float:
    rate = _fraction(value, key)
    if rate >= 1.0:
        raise ConfigError(key, f"must be under 1 (the alarm fires when a line's anomaly rate "
                          f"is above it, which a rate of {rate:g} can never be), got {value!r}")
    return rate


def _band(value: Any, key: str) -> float:
    """A low-confidence band (`settings.parse_band`: a number in [0, 0.5))."""
    try:
        return parse_band(value)
    except ValueError as exc:
        raise ConfigError(key, str(exc)) from None


def _silence(value: Any, key: str) -> int:
    """Minutes without an upload before a camera alarms: 0 (off), or whole 5-minute alarm
    periods up to a day (CloudWatch evaluates at most a day of periods).

    >>> _silence(30, "k"), _silence(0, "k")
    (30, 0)
    >>> _silence(7, "k")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pipeline.stackconfig.ConfigError: linesight:k: must be 0 (off) or a multiple of 5 ... got 7
    """
    minutes = _whole(value, key, 0)
    if minutes % SILENCE_STEP_MINUTES or minutes > SILENCE_MAX_MINUTES:
        raise ConfigError(key, f"must be 0 (off) or a multiple of {SILENCE_STEP_MINUTES} from "
                          f"{SILENCE_STEP_MINUTES} to {SILENCE_MAX_MINUTES} minutes (the alarm "
                          f"looks at {SILENCE_STEP_MINUTES}-minute periods, at most a day of "
                          f"them), got {minutes}")
    return minutes


def _boolean(value: Any, key: str) -> bool:
    flag = parse_flag(value)
    if flag is None:
        raise ConfigError(key, f"must be true or false, got {value!r}")
    return flag


def _whole(value: Any, key: str, low: int, high: int | None = None) -> int:
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        raise ConfigError(key, f"must be a whole number, got {value!r}") from None
    if isinstance(value, bool) or number < low or (high is not None and number > high):
        span = f"at least {low}" if high is None else f"between {low} and {high}"
        raise ConfigError(key, f"must be {span}, got {number}")
    return number


def _max_upload_bytes(value: Any) -> int:
    number = _whole(value, "maxUploadBytes", 1)
    if number > MAX_UPLOAD_BYTES:
        raise ConfigError("maxUploadBytes", f"must be at most {MAX_UPLOAD_BYTES} (256 MB), got "
                          f"{number}: the ingest function reads an upload whole, and no "
                          "image it would decode (50 MP at most) needs more")
    return number


def _string_list(value: Any, key: str) -> list[str]:
    value = _decoded(value, key)
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(key, f"must be a list of strings, got {value!r}")
    return [item.strip() for item in value]


def _emails(value: Any, key: str) -> tuple[str, ...]:
    emails = _string_list(value, key)
    for email in emails:
        if not _EMAIL.match(email):
            raise ConfigError(key, f"{email!r} is not an email address")
    if len(set(emails)) != len(emails):
        raise ConfigError(key, "lists an address twice")
    return tuple(emails)


# Bucket names S3 refuses (InvalidBucketName); the buckets are named after the prefix.
_RESERVED_BUCKET_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")


def _prefix(value: Any, stack: str) -> str:
    prefix = str(value).strip() or f"{NAMESPACE}-{stack}".lower()
    if not _PREFIX.match(prefix):
        raise ConfigError("resourcePrefix",
                          f"must be 3-32 lowercase letters, digits or '-', got {prefix!r}")
    reserved = [start for start in _RESERVED_BUCKET_PREFIXES if prefix.startswith(start)]
    if reserved:
        raise ConfigError("resourcePrefix", f"must not start with {reserved[0]!r}: S3 refuses "
                          f"bucket names that do, and the buckets are named after it, got "
                          f"{prefix!r}")
    return prefix


def _extensions(value: Any) -> tuple[str, ...]:
    extensions = [item.lower().lstrip(".") for item in _string_list(value, "imageExtensions")]
    if not extensions:
        raise ConfigError("imageExtensions", "must name at least one extension")
    for extension in extensions:
        if not _EXTENSION.match(extension):
            raise ConfigError("imageExtensions", f"{extension!r} is not a file extension")
    if len(set(extensions)) != len(extensions):
        raise ConfigError("imageExtensions", "lists an extension twice")
    # The upload API names objects .jpg or .png; without both, uploads would never be
    # inspected (no notification, no record, no dead letter).
    issued = {"jpg", "png"}
    if not issued <= set(extensions):
        raise ConfigError("imageExtensions", "must include jpg and png, the extensions the "
                          "upload API gives objects")
    return tuple(extensions)


def _origins(value: Any) -> tuple[str, ...]:
    origins = _string_list(value, "uploadOrigins")
    for origin in origins:
        if origin != "*" and not re.match(r"^https?://[^/\s]+$", origin):
            raise ConfigError("uploadOrigins",
                              f"{origin!r} must be '*' or a scheme://host[:port] origin")
    return tuple(origins)


def _workflow_type(value: Any) -> str:
    kind = str(value).strip().upper()
    if kind not in WORKFLOW_TYPES:
        raise ConfigError("workflowType", f"must be EXPRESS or STANDARD, got {value!r}")
    return kind


def _detector(merged: Mapping[str, Any]) -> DetectorConfig:
    chosen = {key: str(merged.get(key) or "").strip() for key in DETECTOR_KEYS}
    set_keys = [key for key, value in chosen.items() if value]
    if len(set_keys) != 1:
        raise ConfigError("modelPath", "set exactly one of modelPath (a local model "
                          "directory), modelUri (s3://bucket/prefix/) or sagemakerEndpoint"
                          + (f"; got {', '.join(set_keys)}" if set_keys else ""))
    if chosen["modelUri"] and not _S3_URI.match(chosen["modelUri"]):
        raise ConfigError("modelUri", f"must be s3://bucket/prefix/, got {chosen['modelUri']!r}")
    if chosen["sagemakerEndpoint"] and not _ENDPOINT.match(chosen["sagemakerEndpoint"]):
        raise ConfigError("sagemakerEndpoint",
                          f"{chosen['sagemakerEndpoint']!r} is not a SageMaker endpoint name")
    key = str(merged.get("modelKmsKeyArn") or "").strip()
    if key and not chosen["modelUri"]:
        raise ConfigError("modelKmsKeyArn", "only goes with modelUri (a model already in S3, "
                          "encrypted with that key); modelPath's bucket uses S3's own keys")
    if key and not _KMS_KEY_ARN.match(key):
        raise ConfigError("modelKmsKeyArn", "must be a KMS key ARN, arn:aws:kms:REGION:"
                          f"ACCOUNT:key/ID (an alias ARN grants nothing in IAM), got {key!r}")
    return DetectorConfig(model_path=chosen["modelPath"], model_uri=chosen["modelUri"],
                          sagemaker_endpoint=chosen["sagemakerEndpoint"],
                          model_kms_key_arn=key)


def _lines(value: Any, default_rate: float, default_silence: int) -> tuple[LineConfig, ...]:
    value = _decoded(value, "lines")
    if not isinstance(value, list) or not value:
        raise ConfigError("lines", "must be a list of at least one {id, cameras} line")
    lines: list[LineConfig] = []
    seen_cameras: dict[str, str] = {}
    for index, entry in enumerate(value):
        where = f"lines[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(where, f"must be a mapping with id and cameras, got {entry!r}")
        unknown = sorted(set(entry) - _LINE_KEYS)
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]}",
                              f"unknown line key; a line has {', '.join(sorted(_LINE_KEYS))}")
        line_id = entry.get("id")
        if not isinstance(line_id, str) or not is_id(line_id):
            raise ConfigError(f"{where}.id", f"must be {ID_RULE}, got {line_id!r}")
        if reserved := reserved_line(line_id):
            raise ConfigError(f"{where}.id", reserved)
        where = f"lines[{line_id}]"
        if any(line.id == line_id for line in lines):
            raise ConfigError(f"{where}.id", "two lines have this id")
        cameras = entry.get("cameras")
        if not isinstance(cameras, list) or not cameras:
            raise ConfigError(f"{where}.cameras",
                              f"must be a non-empty list of camera ids, got {cameras!r}")
        for camera in cameras:
            if not isinstance(camera, str) or not is_id(camera):
                raise ConfigError(f"{where}.cameras",
                                  f"a camera id is {ID_RULE}, got {camera!r}")
        for camera in cameras:
            if camera in seen_cameras:
                raise ConfigError(f"{where}.cameras", f"camera {camera!r} is already on line "
                                  f"{seen_cameras[camera]!r} (camera ids are unique)")
            seen_cameras[camera] = line_id
        lines.append(LineConfig(
            id=line_id,
            cameras=tuple(cameras),
            threshold=(None if entry.get("threshold") is None else
                       _threshold(entry["threshold"], f"{where}.threshold")),
            confidence_threshold=(None if entry.get("confidenceThreshold") is None else
                                  _band(entry["confidenceThreshold"],
                                        f"{where}.confidenceThreshold")),
            alert_emails=_emails(entry.get("alertEmails"), f"{where}.alertEmails"),
            anomaly_rate_alarm=(default_rate if entry.get("anomalyRateAlarm") is None else
                                _alarm_rate(entry["anomalyRateAlarm"],
                                            f"{where}.anomalyRateAlarm")),
            silent_camera_minutes=(default_silence if entry.get("silentCameraMinutes") is None
                                   else _silence(entry["silentCameraMinutes"],
                                                 f"{where}.silentCameraMinutes")),
        ))
    _check_silent_alarm_names(lines)
    return tuple(lines)


def _check_silent_alarm_names(lines: Iterable[LineConfig]) -> None:
    """Two cameras whose silent-camera alarms would have one name: Pulumi would refuse the
    second resource, and CloudWatch would let one alarm overwrite the other.

    >>> _check_silent_alarm_names([LineConfig("press", ("1-top",), silent_camera_minutes=30),
    ...                            LineConfig("press-1", ("top",), silent_camera_minutes=30)])
    ... # doctest: +ELLIPSIS +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    pipeline.stackconfig.ConfigError: linesight:lines[press-1].cameras: line 'press-1'
        camera 'top' and line 'press' camera '1-top' would share one silent-camera alarm
        name (...-camera-silent-press-1-top); rename one of them
    """
    named: dict[str, str] = {}
    for line in lines:
        if not line.silent_camera_minutes:
            continue
        for camera in line.cameras:
            name = silent_camera_alarm_name("", line.id, camera)
            if name in named:
                raise ConfigError(
                    f"lines[{line.id}].cameras",
                    f"line {line.id!r} camera {camera!r} and {named[name]} would share one "
                    f"silent-camera alarm name (...{name}); rename one of them")
            named[name] = f"line {line.id!r} camera {camera!r}"
