"""The stack config: Pulumi.yaml declares every key once, the examples parse, and every
mistake is refused with a message that names the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline import settings
from pipeline.alarms import alarm_definitions
from pipeline.dashboard import dashboard_body
from pipeline.stackconfig import (
    DASHBOARD_METRICS,
    DASHBOARD_WIDGET_METRICS,
    KNOWN_KEYS,
    ConfigError,
    StackConfig,
    load_stack_config,
    parse_stack_config,
    project_defaults,
)
from pipeline.uploads import UploadRequestError, validate_id

REPO = Path(__file__).resolve().parents[2]
PROJECT = REPO / "Pulumi.yaml"
LINE = {"id": "line-1", "cameras": ["cam-1"]}
VALID = {"modelUri": "s3://models-bucket/v1/", "lines": [LINE]}


def parse(**changes: Any) -> StackConfig:
    return parse_stack_config({**VALID, **changes}, project_defaults(PROJECT))


def test_pulumi_yaml_declares_every_key_with_a_description_and_default() -> None:
    declared = yaml.safe_load(PROJECT.read_text())["config"]
    assert set(declared) == set(KNOWN_KEYS)
    for key, declaration in declared.items():
        assert declaration.get("description"), key
        assert "default" in declaration, key


def test_defaults_agree_with_the_handlers() -> None:
    defaults = project_defaults(PROJECT)
    assert float(defaults["confidenceThreshold"]) == settings.DEFAULT_CONFIDENCE_THRESHOLD
    assert defaults["maxUploadBytes"] == settings.DEFAULT_MAX_UPLOAD_BYTES
    assert tuple(defaults["imageExtensions"]) == settings.DEFAULT_IMAGE_EXTENSIONS
    assert defaults["workflowType"] == "EXPRESS"


def test_the_local_stack_serves_pulumi_yamls_defaults() -> None:
    """`linesight local up` without --stack builds its config in code (`Topology()`):
    a default changed in Pulumi.yaml alone would deploy, but not run locally."""
    from scripts.local_stack import Topology

    local = Topology()
    served = local.to_stack_config(Path("models/x"), "linesight-local")
    declared = parse_stack_config(
        {"resourcePrefix": "linesight-local", "modelPath": "models/x",
         "lines": [{"id": line, "cameras": list(cameras)}
                   for line, cameras in local.lines.items()]},
        project_defaults(PROJECT), stack="local")
    assert served == declared


@pytest.mark.parametrize(("stack", "lines", "cameras"), [
    ("dev", 1, 2),       # one line, two cameras
    ("plant-a", 3, 9),   # three lines, several cameras each
])
def test_example_stacks_parse(stack: str, lines: int, cameras: int) -> None:
    config = load_stack_config(REPO / f"Pulumi.{stack}.yaml", PROJECT)
    assert config.stack == stack
    assert len(config.lines) == lines
    assert sum(len(line.cameras) for line in config.lines) == cameras
    assert config.region
    assert config.warnings() == []  # each example reaches someone with every alert and alarm


def test_a_stack_whose_alerts_or_alarms_reach_nobody_is_warned_about() -> None:
    assert parse(alertEmails=["ops@example.com"]).warnings() == []
    per_line_only = parse(lines=[{**LINE, "alertEmails": ["a@example.com"]},
                                 {"id": "line-2", "cameras": ["cam-2"]}]).warnings()
    assert [w.split(":")[0] for w in per_line_only] == [
        "alertEmails is empty", "line line-2 has no alertEmails and alertEmails is empty"]
    assert len(parse().warnings()) == 2  # no address at all: alarms and line-1's alerts


def test_plant_a_has_per_line_thresholds_and_recipients() -> None:
    config = load_stack_config(REPO / "Pulumi.plant-a.yaml", PROJECT)
    assert {line.id: line.threshold for line in config.lines} == {
        "press-1": 0.55, "weld-2": 0.45, "paint-3": None}
    assert config.subscriptions()["press-shift-lead@example.com"] == ("press-1", "weld-2")
    assert config.workflow_type == "STANDARD"


def test_silent_camera_alarms_are_off_unless_set_and_a_line_may_override() -> None:
    two = [LINE, {"id": "line-2", "cameras": ["cam-2"]}]
    assert parse(lines=two).silent_camera_alarms == {}
    assert parse(lines=two, silentCameraMinutes=60).silent_camera_alarms == {
        "line-1": 60, "line-2": 60}
    overridden = [{**LINE, "silentCameraMinutes": 0},
                  {"id": "line-2", "cameras": ["cam-2"], "silentCameraMinutes": "15"}]
    assert parse(lines=overridden, silentCameraMinutes=1440).silent_camera_alarms == {
        "line-2": 15}
    plant_a = load_stack_config(REPO / "Pulumi.plant-a.yaml", PROJECT)
    assert plant_a.silent_camera_alarms == {"paint-3": 30}
    # `linesight local --stack plant-a` keeps it
    from scripts.local_stack import Topology
    local = Topology.from_stack_config(plant_a).to_stack_config(Path("models/x"))
    assert local.silent_camera_alarms == {"paint-3": 30}
    # and each line's anomaly-rate alarm (weld-2 sets its own 0.10)
    assert local.anomaly_rate_alarms == plant_a.anomaly_rate_alarms
    assert len(set(plant_a.anomaly_rate_alarms.values())) > 1


def test_defaults_fill_what_the_stack_leaves_out() -> None:
    config = parse()
    assert config.resource_prefix == "linesight-dev"
    assert config.confidence_threshold == 0.20
    assert config.workflow_type == "EXPRESS"
    assert config.buffering.megabytes == 64
    assert config.image_extensions == ("jpg", "jpeg", "png")


@pytest.mark.parametrize(("values", "key"), [
    # a bad email address, stack-wide and per line
    ({"alertEmails": ["not-an-email"]}, "alertEmails"),
    ({"lines": [{**LINE, "alertEmails": ["a@b"]}]}, "lines[line-1].alertEmails"),
    # thresholds outside [0, 1]
    ({"confidenceThreshold": 1.2}, "confidenceThreshold"),
    ({"confidenceThreshold": "high"}, "confidenceThreshold"),
    # a band of 0.5 or more would make every result low-confidence, so every one alerts
    ({"confidenceThreshold": 0.8}, "confidenceThreshold"),
    ({"lines": [{**LINE, "confidenceThreshold": 0.5}]}, "lines[line-1].confidenceThreshold"),
    ({"lines": [{**LINE, "threshold": 2}]}, "lines[line-1].threshold"),
    ({"lines": [{**LINE, "confidenceThreshold": -0.5}]}, "lines[line-1].confidenceThreshold"),
    ({"lines": [{**LINE, "anomalyRateAlarm": 1.5}]}, "lines[line-1].anomalyRateAlarm"),
    # values that silently turn something off: a threshold of 1 calls no part anomalous, 0
    # every part; an anomaly-rate alarm at 1 can never fire
    ({"lines": [{**LINE, "threshold": 1.0}]}, "lines[line-1].threshold"),
    ({"lines": [{**LINE, "threshold": 0}]}, "lines[line-1].threshold"),
    ({"lines": [{**LINE, "anomalyRateAlarm": 1.0}]}, "lines[line-1].anomalyRateAlarm"),
    ({"anomalyRateAlarm": 1}, "anomalyRateAlarm"),
    # the API throttle: a burst under the rate would cap every second below it
    ({"apiRateLimit": 500, "apiBurstLimit": 10}, "apiBurstLimit"),
    ({"apiRateLimit": 0}, "apiRateLimit"),
    # a model key: only with modelUri, and a key ARN (an alias ARN grants nothing in IAM)
    ({"modelUri": "", "modelPath": "models/x",
      "modelKmsKeyArn": "arn:aws:kms:eu-west-1:111122223333:key/abc"}, "modelKmsKeyArn"),
    ({"modelKmsKeyArn": "arn:aws:kms:eu-west-1:111122223333:alias/models"}, "modelKmsKeyArn"),
    # an override for something a line does not have
    ({"lines": [{**LINE, "thresold": 0.3}]}, "lines[0].thresold"),
    # an unknown top-level key
    ({"line": [LINE]}, "line"),
    # duplicate cameras, duplicate lines, bad ids, empty camera lists
    ({"lines": [LINE, {"id": "line-2", "cameras": ["cam-1"]}]}, "lines[line-2].cameras"),
    ({"lines": [LINE, LINE]}, "lines[line-1].id"),
    ({"lines": [{"id": "../x", "cameras": ["c"]}]}, "lines[0].id"),
    ({"lines": [{"id": "line-1", "cameras": []}]}, "lines[line-1].cameras"),
    ({"lines": []}, "lines"),
    ({"lines": "line-1"}, "lines"),
    # workflow type
    ({"workflowType": "SYNC"}, "workflowType"),
    # detector: none, two, or malformed
    ({"modelUri": ""}, "modelPath"),
    ({"sagemakerEndpoint": "ep-1"}, "modelPath"),
    ({"modelUri": "https://bucket/model"}, "modelUri"),
    ({"modelUri": "", "sagemakerEndpoint": "bad name!"}, "sagemakerEndpoint"),
    # sizes, retention, buffering
    ({"maxUploadBytes": 0}, "maxUploadBytes"),
    # more than the ingest function can read whole (it was S3's 5 GB single-PUT limit)
    ({"maxUploadBytes": 256 * 1024**2 + 1}, "maxUploadBytes"),
    ({"imageRetentionDays": -1}, "imageRetentionDays"),
    ({"resultsRetentionDays": "forever"}, "resultsRetentionDays"),
    ({"firehoseBufferSeconds": 30}, "firehoseBufferSeconds"),
    ({"firehoseBufferMb": 256}, "firehoseBufferMb"),
    ({"imageExtensions": []}, "imageExtensions"),
    ({"imageExtensions": ["jp g"]}, "imageExtensions"),
    ({"alertOnInvalid": "maybe"}, "alertOnInvalid"),  # true/false (or yes/no, 1/0), nothing else
    # without jpg, the API's .jpg uploads would never be inspected
    ({"imageExtensions": ["jpeg", "png"]}, "imageExtensions"),
    ({"uploadOrigins": ["example.com"]}, "uploadOrigins"),
    ({"resourcePrefix": "Has_Upper"}, "resourcePrefix"),
    ({"latencyAlarmMs": 0}, "latencyAlarmMs"),
    # a silent-camera alarm looks at whole 5-minute periods, at most a day of them
    ({"silentCameraMinutes": 7}, "silentCameraMinutes"),
    ({"silentCameraMinutes": 1445}, "silentCameraMinutes"),
    ({"silentCameraMinutes": -5}, "silentCameraMinutes"),
    ({"silentCameraMinutes": True}, "silentCameraMinutes"),
    ({"lines": [{**LINE, "silentCameraMinutes": "half an hour"}]},
     "lines[line-1].silentCameraMinutes"),
    # the line the lake gives uploads whose key the API did not issue
    ({"lines": [{**LINE, "id": "unknown"}]}, "lines[0].id"),
])
def test_bad_config_names_the_key(values: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse(**values)
    assert str(error.value).startswith(f"linesight:{key}:"), str(error.value)
    assert error.value.key == key


@pytest.mark.parametrize(("raw", "expected"), [
    # what YAML gives
    ({"lines": [LINE], "confidenceThreshold": 0.3}, 0.3),
    # what the Pulumi engine gives: strings, structured values as JSON text
    ({"lines": '[{"id": "line-1", "cameras": ["cam-1"]}]', "confidenceThreshold": "0.3"}, 0.3),
])
def test_values_as_yaml_or_as_pulumi_hands_them_over(raw: dict[str, Any],
                                                     expected: float) -> None:
    config = parse(**raw)
    assert config.confidence_threshold == expected
    assert config.lines[0].cameras == ("cam-1",)


def test_lambda_environment_round_trips_through_settings() -> None:
    config = parse(lines=[{**LINE, "threshold": 0.6, "confidenceThreshold": 0.1},
                          {"id": "line-2", "cameras": ["cam-2"]}],
                   maxUploadBytes=1000, imageExtensions=["png", "jpg"])
    env = config.lambda_environment(
        images_bucket="img", results_bucket="res", table="tbl", tokens_table="tok",
        state_machine_arn="arn:sm", topic_arn="arn:topic", firehose_stream="fh",
        failure_queue_url="https://q", lake_failure_queue_url="https://lq")
    read = settings.Settings.from_env(env)
    assert (read.images_bucket, read.results_bucket, read.table_name, read.tokens_table) == (
        "img", "res", "tbl", "tok")
    assert (read.failure_queue_url, read.lake_failure_queue_url) == ("https://q", "https://lq")
    assert read.model_uri == "s3://models-bucket/v1/"
    assert read.detector_backend == "embedded"
    assert read.max_upload_bytes == 1000
    assert read.image_extensions == ("png", "jpg")
    assert read.policy_for("line-1") == settings.LinePolicy(0.6, 0.1)
    assert read.policy_for("line-2") == settings.LinePolicy()


def test_sagemaker_detector_environment() -> None:
    config = parse(modelUri="", sagemakerEndpoint="defects-v2")
    env = config.lambda_environment(
        images_bucket="", results_bucket="", table="", tokens_table="", state_machine_arn="",
        topic_arn="", firehose_stream="", failure_queue_url="", lake_failure_queue_url="")
    assert env["LINESIGHT_DETECTOR"] == "sagemaker"
    assert env["LINESIGHT_SAGEMAKER_ENDPOINT"] == "defects-v2"
    assert env["LINESIGHT_MODEL_URI"] == ""


def test_an_address_on_every_line_and_on_one_line_gets_one_subscription() -> None:
    config = parse(alertEmails=["ops@example.com"],
                   lines=[{**LINE, "alertEmails": ["ops@example.com", "lead@example.com"]},
                          {"id": "line-2", "cameras": ["cam-2"],
                           "alertEmails": ["lead@example.com"]}])
    assert config.subscriptions() == {"ops@example.com": (),
                                      "lead@example.com": ("line-1", "line-2")}


@pytest.mark.parametrize("text, said", [
    ("config:\n  linesight:lines: [\n bad", "Pulumi.broken.yaml: not valid YAML"),
    ("config:\n  - linesight:lines", "Pulumi.broken.yaml: needs a `config:` mapping"),
    ("- 1\n- 2\n", "Pulumi.broken.yaml: needs a `config:` mapping"),
    ("linesight:modelUri: s3://m/v1/\n", "linesight:modelUri belongs under `config:`"),
    ("config:\n  linesigth:modelUri: s3://m/v1/\n",
     "linesigth:modelUri: not a linesight key; did you mean linesight:modelUri?"),
    ("config:\n  LineSight:modelUri: s3://m/v1/\n", "did you mean linesight:modelUri?"),
])
def test_a_broken_stack_file_is_one_message_naming_what_is_wrong(
        tmp_path: Path, text: str, said: str) -> None:
    """Not a YAML traceback, and not a key silently ignored so that a default (or a
    misleading "set exactly one of" message) stands in for it."""
    path = tmp_path / "Pulumi.broken.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_stack_config(path, PROJECT)
    assert said in str(raised.value)


def test_other_namespaces_are_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.ok.yaml"
    path.write_text("config:\n  aws:region: eu-west-1\n  linesight:modelUri: s3://models-bucket/v1/\n"
                    "  linesight:lines: [{id: l1, cameras: [c1]}]\n")
    assert load_stack_config(path, PROJECT).region == "eu-west-1"


@pytest.mark.parametrize("bad", ["press..1", "line-1\n", "-press", "p" * 65])
def test_line_and_camera_ids_follow_the_apis_rule(bad: str) -> None:
    """A line or camera the API would refuse could never get a token, yet its dashboard row
    and silent-camera alarm would be deployed (and the alarm would breach for ever)."""
    with pytest.raises(UploadRequestError):
        validate_id(bad, "line_id")
    with pytest.raises(ConfigError, match=r"lines\[0\]\.id: must be 1-64 .*without '\.\.'"):
        parse(lines=[{"id": bad, "cameras": ["cam-1"]}])
    with pytest.raises(ConfigError, match=r"lines\[line-1\]\.cameras: a camera id is"):
        parse(lines=[{"id": "line-1", "cameras": ["cam-1", bad]}])


@pytest.mark.parametrize(("values", "said", "quoted"), [
    ({"lines": [{"id": "line-1", "cameras": ["cam-1", "cam 2"]}]},
     "linesight:lines[line-1].cameras: a camera id is 1-64 characters", "'cam 2'"),
    ({"lines": '[{"id": "line-1", cameras: ["cam-1"]}]'},
     "linesight:lines: is not valid JSON", ""),  # `pulumi config set` without --path
    ({"maxUploadBytes": 2**30},
     "linesight:maxUploadBytes: must be at most 268435456 (256 MB)", "reads an upload whole"),
])
def test_config_messages_say_which_value_is_wrong(values: dict[str, Any], said: str,
                                                  quoted: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse(**values)
    assert said in str(error.value)
    assert quoted in str(error.value)  # the value itself, where there is one


def _many_lines(count: int, **policy: float) -> list[dict[str, Any]]:
    return [{"id": f"assembly-line-north-press-{n:02}", "cameras": [f"press-{n:02}-top"],
             **policy} for n in range(count)]


def test_a_config_whose_environment_would_pass_lambdas_4_kb_is_refused_before_up() -> None:
    """45 lines, each with its own thresholds: LINESIGHT_LINES alone is 3.5 KB, and
    CreateFunction would refuse every handler (found by a review against AWS's limits)."""
    with pytest.raises(ConfigError) as error:
        parse(resourcePrefix="plant-north",
              lines=_many_lines(45, threshold=0.55, confidenceThreshold=0.25))
    said = str(error.value)
    assert said.startswith("linesight:lines: the handlers' environment would take up to ")
    assert "over AWS Lambda's 4,096" in said and "set them on fewer lines" in said
    # The same lines without their own thresholds follow the stack's and take no room.
    config = parse(resourcePrefix="plant-north", lines=_many_lines(45))
    assert config.lines_env() == "{}" and config.environment_bytes() < 1500
    # The bound is of the longest names a deployment can get: longer ids, more bytes.
    longest = parse(resourcePrefix="p" * 32, modelUri="", modelPath="docs")
    assert longest.environment_bytes() > parse().environment_bytes() + 6 * 29


def _lines_of(count: int, cameras: int = 1, **entry: Any) -> list[dict[str, Any]]:
    return [{"id": f"line-{n}", "cameras": [f"l{n}-cam-{c}" for c in range(cameras)],
             **entry} for n in range(count)]


@pytest.mark.parametrize(("values", "said"), [
    # 126 lines: the anomaly rate per line takes 4 metrics a line, 504 (CloudWatch: 500)
    ({"lines": _lines_of(126)}, "126 lines need 504 metrics in one dashboard widget"),
    # a filter policy names at most 150 lines
    ({"lines": _lines_of(151, alertEmails=["lead@example.com"])},
     "lead@example.com is among the alertEmails of 151 lines"),
    # a topic takes at most 200 filtered subscriptions
    ({"lines": [{"id": f"line-{n}", "cameras": [f"cam-{n}"],
                 "alertEmails": [f"a{n}@example.com", f"b{n}@example.com"]}
                for n in range(101)]},
     "202 addresses receive only some lines' alerts"),
    # two cameras, one silent-camera alarm name: Pulumi would see one resource twice
    ({"silentCameraMinutes": 30, "lines": [{"id": "press", "cameras": ["1-top"]},
                                           {"id": "press-1", "cameras": ["top"]}]},
     "would share one silent-camera alarm name (...-camera-silent-press-1-top)"),
    # S3 refuses bucket names starting so
    ({"resourcePrefix": "xn--plant-a"}, "must not start with 'xn--'"),
    ({"resourcePrefix": "sthree-plant"}, "must not start with 'sthree-'"),
    ({"resourcePrefix": "amzn-s3-demo-plant"}, "must not start with 'amzn-s3-demo-'"),
])
def test_configs_aws_would_refuse_at_up_are_refused_before_it(values: dict[str, Any],
                                                              said: str) -> None:
    """Found by a review against AWS's limits, which Pulumi's mocks do not enforce."""
    with pytest.raises(ConfigError) as error:
        parse(**values)
    assert said in str(error.value), str(error.value)


def test_configs_just_inside_aws_limits_are_accepted() -> None:
    assert parse(lines=_lines_of(125))  # 125 lines: 500 metrics in the widget
    assert parse(silentCameraMinutes=30,
                 lines=[{"id": "press", "cameras": ["1-top"]},
                        {"id": "press-1", "cameras": ["top"], "silentCameraMinutes": 0}])


@pytest.mark.parametrize("lines", [
    _lines_of(1, cameras=12),            # one line of 12 cameras (5 was the most)
    _lines_of(1, cameras=150),           # 150 cameras on one line
    _lines_of(10, cameras=15),           # 150 cameras over 10 lines (about 99 was the most)
    _lines_of(125, cameras=4),           # 500 cameras on the most lines the dashboard takes
], ids=["12-camera-line", "150-cameras-1-line", "150-cameras-10-lines", "500-cameras"])
def test_the_cameras_of_a_line_or_stack_are_not_capped(lines: list[dict[str, Any]]) -> None:
    """The alarms and the dashboard read per-line and stack-wide metrics, so cameras cost
    them nothing: only the silent-camera alarms are per camera, one metric each."""
    config = parse(lines=lines, silentCameraMinutes=30)
    assert sum(len(line.cameras) for line in config.lines) == sum(
        len(line["cameras"]) for line in lines)
    alarms = alarm_definitions(
        prefix=config.resource_prefix, lines=config.line_cameras,
        anomaly_rates=config.anomaly_rate_alarms, topic_arn="arn:topic",
        state_machine_arn="arn:sm", dead_letter_queues={"ingest-dlq": "q"},
        ingest_function="f", latency_p95_ms=config.latency_alarm_ms,
        silent_minutes=config.silent_camera_alarms)
    assert max(sum("MetricStat" in q for q in a.get("Metrics", [])) for a in alarms) <= 10
    body = dashboard_body(region="r", prefix=config.resource_prefix, lines=config.line_cameras,
                          state_machine_arn="arn", topic_arn="arn",
                          dead_letter_queues={"ingest-dlq": "q"})
    rows = [len(widget["properties"].get("metrics", ())) for widget in body["widgets"]]
    assert max(rows) <= DASHBOARD_WIDGET_METRICS and sum(rows) <= DASHBOARD_METRICS
