"""The whole Pulumi program, run under mocks with both example stacks (Pulumi.dev.yaml:
one line, two cameras, a local model; Pulumi.plant-a.yaml: three lines, an S3 model,
STANDARD workflow, per-line thresholds and recipients).

Resource properties are as the engine sees them: camelCase keys, numbers as floats.
"""

from __future__ import annotations

import json
import re
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest

from infra.analytics import catalog_table_args, firehose_s3_configuration
from infra.api import load_app
from infra.iam import UNSCOPED_ACTIONS
from infra.monitoring import metric_alarm_args
from pipeline import tables, uploads
from pipeline.alarms import alarm_definitions
from pipeline.analytics import (
    ATHENA_RESULTS_PREFIX,
    LAKE_PREFIX,
    LAKE_STREAM_FILTERS,
    LAKE_TABLE,
    MANIFEST_KEY,
    lake_database,
    lake_table_input,
    quicksight_manifest,
    s3_destination,
    saved_queries,
)
from pipeline.dashboard import dashboard_body
from pipeline.settings import Settings
from pipeline.workflow import state_machine_definition
from tests.infra.conftest import REPO, Deployed, run_program

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

STACKS = ["dev", "plant-a"]
ENV_NAMES = {
    "LINESIGHT_IMAGES_BUCKET", "LINESIGHT_RESULTS_BUCKET", "LINESIGHT_TABLE",
    "LINESIGHT_TOKENS_TABLE", "LINESIGHT_STATE_MACHINE_ARN", "LINESIGHT_TOPIC_ARN",
    "LINESIGHT_FIREHOSE_STREAM", "LINESIGHT_FAILURE_QUEUE_URL", "LINESIGHT_DETECTOR",
    "LINESIGHT_MODEL_URI", "LINESIGHT_SAGEMAKER_ENDPOINT", "LINESIGHT_CONFIDENCE_THRESHOLD",
    "LINESIGHT_MAX_UPLOAD_BYTES", "LINESIGHT_IMAGE_EXTENSIONS", "LINESIGHT_LINES",
    "LINESIGHT_ALERT_ON_INVALID", "LINESIGHT_LAKE_FAILURE_QUEUE_URL",
    "LINESIGHT_METRICS_NAMESPACE",
}
FUNCTIONS = {"api": "app.app", "authorizer": "app.token_authorizer", "ingest": "app.ingest",
             "to-lake": "app.to_lake"}


def camel(value: Any) -> Any:
    """snake_case keys to the engine's camelCase (keys without '_' are left alone)."""
    if isinstance(value, dict):
        return {re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), k): camel(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [camel(v) for v in value]
    return value


def drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_none(v) for v in value]
    return value


def prefixed(d: Deployed, suffix: str) -> str:
    return f"{d.config.resource_prefix}-{suffix}"


def queue(d: Deployed, suffix: str) -> dict[str, Any]:
    return d.one("sqs/queue:Queue", prefixed(d, suffix)).props


def function(d: Deployed, key: str) -> dict[str, Any]:
    return d.one("lambda/function:Function", prefixed(d, key)).props


def dead_letter_queues(d: Deployed) -> dict[str, str]:
    return {role: queue(d, role)["name"]
            for role in ("ingest-dlq", "workflow-failures", "lake-failures")}


@pytest.fixture(params=STACKS)
def d(request: pytest.FixtureRequest, deployed: dict[str, Deployed]) -> Deployed:
    return deployed[request.param]


# --- The graph -----------------------------------------------------------------------

def test_resource_graph_follows_the_lines(d: Deployed) -> None:
    alarms = {r.props["name"] for r in d.of_type("metricAlarm:MetricAlarm")}
    for line in d.config.lines:
        assert prefixed(d, f"anomaly-rate-{line.id}") in alarms
        assert prefixed(d, f"latency-p95-{line.id}") in alarms
        assert prefixed(d, f"invalid-uploads-{line.id}") in alarms
    # a silent-camera alarm per camera where the line sets minutes (plant-a's paint-3)
    silent = {prefixed(d, f"camera-silent-{line.id}-{camera}") for line in d.config.lines
              if line.silent_camera_minutes for camera in line.cameras}
    assert silent <= alarms
    assert len(silent) == (4 if d.config.stack == "plant-a" else 0)
    # three per line, the silent cameras, ingest errors, failed executions, three queues
    assert len(alarms) == 3 * len(d.config.lines) + len(silent) + 2 + 3
    assert len(d.of_type("cloudwatch/dashboard:Dashboard")) == 1
    assert len(d.of_type("lambda/function:Function")) == 4
    assert len(d.of_type("lambda/eventSourceMapping:EventSourceMapping")) == 2
    assert len(d.of_type("dynamodb/table:Table")) == 2
    assert len(d.of_type("sfn/stateMachine:StateMachine")) == 1


@pytest.mark.parametrize(("stack", "expected"), [
    # dev: the stack-wide address only, unfiltered
    ("dev", {"dev-alerts@example.com": None}),
    # plant-a: one subscription per address; a shift lead on two lines gets one filter
    ("plant-a", {"quality-plant-a@example.com": None,
                 "press-shift-lead@example.com": ["press-1", "weld-2"],
                 "weld-team@example.com": ["weld-2"],
                 "paint-team@example.com": ["paint-3"]}),
])
def test_email_subscriptions_route_alerts_by_line(deployed: dict[str, Deployed], stack: str,
                                                  expected: dict[str, Any]) -> None:
    d = deployed[stack]
    topic = d.one("sns/topic:Topic").props
    found = {}
    for sub in d.of_type("sns/topicSubscription:TopicSubscription"):
        assert sub.props["protocol"] == "email"
        assert sub.props["topic"] == topic["arn"]
        policy = sub.props.get("filterPolicy")
        found[sub.props["endpoint"]] = json.loads(policy)["line"] if policy else None
        if policy:
            assert sub.props["filterPolicyScope"] == "MessageAttributes"
    assert found == expected


def test_topic_is_encrypted_with_a_key_cloudwatch_may_use(d: Deployed) -> None:
    key = d.one("kms/key:Key").props
    assert d.one("sns/topic:Topic").props["kmsMasterKeyId"] == key["arn"]
    assert key["enableKeyRotation"] is True
    services = [s["Principal"].get("Service") for s in json.loads(key["policy"])["Statement"]]
    assert "cloudwatch.amazonaws.com" in services


# --- Wiring: environment, definitions ------------------------------------------------

def test_every_function_gets_the_handlers_environment(d: Deployed) -> None:
    images = d.one("s3/bucket:Bucket", prefixed(d, "images")).props["bucket"]
    results = d.one("s3/bucket:Bucket", prefixed(d, "results")).props["bucket"]
    expected = d.config.lambda_environment(
        images_bucket=images, results_bucket=results,
        table=d.one("dynamodb/table:Table", prefixed(d, "results")).props["name"],
        tokens_table=d.one("dynamodb/table:Table", prefixed(d, "tokens")).props["name"],
        state_machine_arn=d.one("sfn/stateMachine:StateMachine").props["arn"],
        topic_arn=d.one("sns/topic:Topic").props["arn"],
        firehose_stream=d.one("firehoseDeliveryStream:FirehoseDeliveryStream").props["name"],
        failure_queue_url=queue(d, "workflow-failures")["url"],
        lake_failure_queue_url=queue(d, "lake-failures")["url"],
        model_uri=d.outputs["model_uri"])
    assert set(expected) == ENV_NAMES
    # within the bound the config was checked against before `up` (Lambda allows 4 KB)
    size = sum(len(key) + len(value) for key, value in expected.items())
    assert size <= d.config.environment_bytes() <= 4096
    for key, handler in FUNCTIONS.items():
        props = function(d, key)
        assert props["handler"] == handler
        assert props["environment"]["variables"] == expected
        assert props["tracingConfig"] == {"mode": "Active"}
    # The handlers read it back without complaint, with the per-line overrides intact.
    settings = Settings.from_env(expected)
    for line in d.config.lines:
        assert settings.policy_for(line.id).threshold == line.threshold


@pytest.mark.parametrize(("stack", "detector", "model_uri"), [
    # dev: the local model directory is uploaded under a content hash
    ("dev", "embedded", re.compile(r"^s3://linesight-dev-models-\w+/models/[0-9a-f]{16}/$")),
    # plant-a: the model already in S3 is used as it is
    ("plant-a", "embedded", re.compile(r"^s3://plant-a-models/linesight/2026-11/$")),
])
def test_the_detector_model_reaches_the_ingest_function(
        deployed: dict[str, Deployed], stack: str, detector: str, model_uri: re.Pattern
) -> None:
    d = deployed[stack]
    env = function(d, "ingest")["environment"]["variables"]
    assert env["LINESIGHT_DETECTOR"] == detector
    assert model_uri.match(env["LINESIGHT_MODEL_URI"])
    objects = {o.props["key"] for o in d.of_type("s3/bucketObjectv2:BucketObjectv2")}
    if stack == "dev":
        prefix = env["LINESIGHT_MODEL_URI"].split("/", 3)[3]
        assert {prefix + "model.json", prefix + "arrays.npz"} <= objects
    # plant-a's model is encrypted with its own key: S3 decrypts it on the function's behalf
    role = f"{prefixed(d, 'ingest')}"
    decrypt = [s for name, statements in policies(d).items() if name.startswith(role)
               for s in statements if "kms:Decrypt" in s["Action"]]
    key = d.config.detector.model_kms_key_arn
    assert (key != "") == (stack == "plant-a")
    assert [s["Resource"] for s in decrypt] == ([[key]] if key else [])


def test_state_machine_is_the_pipeline_definition(d: Deployed) -> None:
    machine = d.one("sfn/stateMachine:StateMachine").props
    assert json.loads(machine["definition"]) == state_machine_definition(
        table_name=d.one("dynamodb/table:Table", prefixed(d, "results")).props["name"],
        topic_arn=d.one("sns/topic:Topic").props["arn"],
        failure_queue_url=queue(d, "workflow-failures")["url"],
        ingest_queue_url=queue(d, "ingest")["url"], partition="aws")
    assert machine["type"] == d.config.workflow_type
    log_group = d.one("cloudwatch/logGroup:LogGroup", prefixed(d, "workflow")).props
    assert machine["loggingConfiguration"]["logDestination"] == log_group["arn"] + ":*"
    assert machine["tracingConfiguration"] == {"enabled": True}


def test_a_stack_in_another_partition_names_no_commercial_arn(
        tmp_path_factory: pytest.TempPathFactory, fake_model: Path) -> None:
    """In China (aws-cn) or GovCloud (aws-us-gov) every ARN the program builds, in
    policies, the state machine and the functions' settings, carries that partition."""
    d = run_program("dev", tmp_path_factory.mktemp("build-cn"), {
        "linesight:modelPath": str(fake_model), "aws:region": "cn-north-1"})
    built = json.dumps([r.props for r in d.resources], default=repr) + json.dumps(d.outputs)
    assert "arn:aws-cn:" in built
    assert re.findall(r"arn:aws:[\w:/*.-]{0,60}", built) == []
    definition = json.loads(d.one("sfn/stateMachine:StateMachine").props["definition"])
    assert definition["States"]["RecordResult"]["Resource"] == (
        "arn:aws-cn:states:::dynamodb:putItem")


def test_dashboard_is_the_pipeline_definition(d: Deployed) -> None:
    board = d.one("cloudwatch/dashboard:Dashboard").props
    assert json.loads(board["dashboardBody"]) == dashboard_body(
        region=d.outputs["dashboard_url"].split("region=")[1].split("#")[0],
        prefix=d.config.resource_prefix, lines=d.config.line_cameras,
        state_machine_arn=d.one("sfn/stateMachine:StateMachine").props["arn"],
        topic_arn=d.one("sns/topic:Topic").props["arn"],
        dead_letter_queues=dead_letter_queues(d))


def test_alarms_are_the_pipeline_definitions_and_all_have_actions(d: Deployed) -> None:
    topic_arn = d.one("sns/topic:Topic").props["arn"]
    expected = alarm_definitions(
        prefix=d.config.resource_prefix, lines=d.config.line_cameras,
        anomaly_rates=d.config.anomaly_rate_alarms, topic_arn=topic_arn,
        state_machine_arn=d.one("sfn/stateMachine:StateMachine").props["arn"],
        dead_letter_queues=dead_letter_queues(d),
        ingest_function=function(d, "ingest")["name"],
        latency_p95_ms=d.config.latency_alarm_ms,
        silent_minutes=d.config.silent_camera_alarms)
    deployed_alarms = {r.props["name"]: r.props for r in d.of_type("metricAlarm:MetricAlarm")}
    assert set(deployed_alarms) == {a["AlarmName"] for a in expected}
    for definition in expected:
        props = {k: v for k, v in deployed_alarms[definition["AlarmName"]].items()
                 if k != "arn"}
        assert props == camel(drop_none(metric_alarm_args(definition)))
        assert props["alarmActions"] == [topic_arn]


def test_line_alarms_read_the_lines_own_metrics(d: Deployed) -> None:
    """However many cameras a line has: the rates read two metrics of the line, the
    latency alarm the line's own p95 (no metric math), only silent cameras a camera's."""
    alarms = {r.props["name"]: r.props for r in d.of_type("metricAlarm:MetricAlarm")}
    for line in d.config.lines:
        for kind in ("anomaly-rate", "invalid-uploads"):
            queries = alarms[prefixed(d, f"{kind}-{line.id}")]["metricQueries"]
            read = [q["metric"]["dimensions"] for q in queries if q.get("metric")]
            assert read == [{"line": line.id}] * 2, kind
        latency = alarms[prefixed(d, f"latency-p95-{line.id}")]
        assert (latency["metricName"], latency["extendedStatistic"], latency["dimensions"]) == (
            "EndToEndLatency", "p95", {"line": line.id})
        assert "metricQueries" not in latency
        for camera in line.cameras if line.silent_camera_minutes else ():
            silent = alarms[prefixed(d, f"camera-silent-{line.id}-{camera}")]
            assert silent["dimensions"] == {"line": line.id, "camera": camera}


def test_the_functions_write_the_namespace_the_alarms_and_the_report_read(
        d: Deployed) -> None:
    """A stack's own metrics: the namespace its functions are told to write is the one
    its alarms read and the one its outputs give `linesight report --state`."""
    written = function(d, "ingest")["environment"]["variables"]["LINESIGHT_METRICS_NAMESPACE"]
    assert written == d.outputs["metrics_namespace"] == f"LineSight/{d.config.resource_prefix}"
    alarms = [r.props for r in d.of_type("metricAlarm:MetricAlarm")]
    read = {alarm["namespace"] for alarm in alarms if alarm.get("namespace")}
    read |= {query["metric"]["namespace"] for alarm in alarms
             for query in alarm.get("metricQueries") or () if query.get("metric")}
    assert {namespace for namespace in read if not namespace.startswith("AWS/")} == {written}


def test_results_table_matches_the_query_schema(d: Deployed) -> None:
    table = d.one("dynamodb/table:Table", prefixed(d, "results")).props
    create = tables.create_table_args("x")
    assert table["hashKey"] == tables.HASH_KEY
    assert {a["name"]: a["type"] for a in table["attributes"]} == tables.ATTRIBUTES
    indexes = {i["name"]: [k["attributeName"] for k in i["keySchemas"]]
               for i in table["globalSecondaryIndexes"]}
    assert indexes == {name: list(keys) for name, keys in tables.INDEXES.items()}
    assert table["streamViewType"] == create["StreamSpecification"]["StreamViewType"]
    assert table["pointInTimeRecovery"] == {"enabled": True}
    assert table["serverSideEncryption"] == {"enabled": True}
    tokens = d.one("dynamodb/table:Table", prefixed(d, "tokens")).props
    assert tokens["hashKey"] == "token_id"
    assert tokens["pointInTimeRecovery"] == {"enabled": True}


def test_firehose_writes_the_partitioned_lake(d: Deployed) -> None:
    stream = d.one("firehoseDeliveryStream:FirehoseDeliveryStream").props
    config = dict(stream["extendedS3Configuration"])
    logging = config.pop("cloudwatchLoggingOptions")
    results_arn = d.one("s3/bucket:Bucket", prefixed(d, "results")).props["arn"]
    role_arn = d.one("iam/role:Role", prefixed(d, "lake-delivery")).props["arn"]
    assert config == camel(firehose_s3_configuration(s3_destination(
        bucket_arn=results_arn, role_arn=role_arn, buffering=d.config.buffering)))
    assert logging["enabled"] is True


def test_quicksight_manifest_is_a_bucket_object(d: Deployed) -> None:
    results = d.one("s3/bucket:Bucket", prefixed(d, "results")).props["bucket"]
    manifest = d.one("s3/bucketObjectv2:BucketObjectv2", prefixed(d, "quicksight-manifest"))
    assert manifest.props["key"] == MANIFEST_KEY
    assert json.loads(manifest.props["content"]) == quicksight_manifest(results)
    assert d.outputs["manifest_uri"] == f"s3://{results}/{MANIFEST_KEY}"


# --- The lake's table, and Athena -------------------------------------------------------

@pytest.mark.parametrize(("stack", "lines", "years"), [
    # dev: one line (and that of keys the API did not issue), rows kept 30 days: this
    # year and the last
    ("dev", "line-1,unknown", "NOW-1YEARS,NOW"),
    # plant-a: three lines, rows kept two years (and S3's slack): three years back
    ("plant-a", "press-1,weld-2,paint-3,unknown", "NOW-3YEARS,NOW"),
])
def test_the_lake_table_is_the_pipeline_definition(deployed: dict[str, Deployed], stack: str,
                                                   lines: str, years: str) -> None:
    d = deployed[stack]
    results = d.one("s3/bucket:Bucket", prefixed(d, "results")).props["bucket"]
    database = d.one("glue/catalogDatabase:CatalogDatabase", prefixed(d, "lake")).props
    table = d.one("glue/catalogTable:CatalogTable", prefixed(d, "lake")).props
    assert database["name"] == lake_database(d.config.resource_prefix) == d.outputs[
        "lake_database"]
    assert (table["databaseName"], table["name"]) == (database["name"], LAKE_TABLE)
    assert d.outputs["lake_table"] == LAKE_TABLE
    expected = lake_table_input(results, lines=[line.id for line in d.config.lines],
                                retention_days=d.config.results_retention_days)
    args = catalog_table_args(expected)
    # the table properties are a map: Pulumi passes its keys as they are
    assert table["parameters"] == expected["Parameters"]
    assert table["partitionKeys"] == camel(args["partition_keys"])
    assert table["storageDescriptor"] == camel(args["storage_descriptor"])
    assert table["tableType"] == "EXTERNAL_TABLE"
    assert table["storageDescriptor"]["location"] == f"s3://{results}/{LAKE_PREFIX}"
    assert table["parameters"]["storage.location.template"].startswith(
        f"s3://{results}/{LAKE_PREFIX}line=${{lake_line}}/")
    assert table["parameters"]["projection.lake_line.values"] == lines
    assert table["parameters"]["projection.lake_year.range"] == years


def test_athena_writes_encrypted_results_beside_the_lake(d: Deployed) -> None:
    results = d.one("s3/bucket:Bucket", prefixed(d, "results")).props["bucket"]
    workgroup = d.one("athena/workgroup:Workgroup", prefixed(d, "lake")).props
    assert workgroup["name"] == d.outputs["athena_workgroup"] == prefixed(d, "lake")
    config = workgroup["configuration"]
    assert config["resultConfiguration"] == {
        "outputLocation": f"s3://{results}/{ATHENA_RESULTS_PREFIX}",
        "encryptionConfiguration": {"encryptionOption": "SSE_S3"}}
    # a client's own output location or encryption is overridden, not used
    assert config["enforceWorkgroupConfiguration"] is True
    for saved in saved_queries():
        query = d.one("athena/namedQuery:NamedQuery", prefixed(d, saved.key)).props
        assert (query["database"], query["workgroup"]) == (d.outputs["lake_database"],
                                                           workgroup["name"])
        assert (query["name"], query["query"]) == (saved.name, saved.sql)
    # query results copy lake rows: they expire with them
    rules = d.one("bucketLifecycleConfiguration:BucketLifecycleConfiguration",
                  prefixed(d, "results")).props["rules"]
    expiring = [r["filter"] for r in rules
                if r.get("expiration") == {"days": d.config.results_retention_days}]
    assert {"prefix": ATHENA_RESULTS_PREFIX} in expiring
    assert {"prefix": LAKE_PREFIX} in expiring


def test_the_lake_query_policy_stays_on_the_lake(d: Deployed) -> None:
    bucket = d.one("s3/bucket:Bucket", prefixed(d, "results")).props["arn"]
    workgroup = d.one("athena/workgroup:Workgroup").props["arn"]
    database = d.one("glue/catalogDatabase:CatalogDatabase").props["arn"]
    table = d.one("glue/catalogTable:CatalogTable").props["arn"]
    catalog = database.split(":database/")[0] + ":catalog"
    lake, query_results = f"{bucket}/{LAKE_PREFIX}*", f"{bucket}/{ATHENA_RESULTS_PREFIX}*"
    granted = {(action, resource) for statement in policies(d)[prefixed(d, "lake-query")]
               for action in statement["Action"] for resource in statement["Resource"]}
    assert {resource for _, resource in granted} == {
        workgroup, catalog, database, table, bucket, lake, query_results}
    # what a query needs: run it in the workgroup, read the table, list and read the lake,
    # write its results
    assert {("athena:StartQueryExecution", workgroup), ("athena:GetQueryResults", workgroup),
            ("glue:GetTable", table), ("glue:GetTable", database), ("glue:GetTable", catalog),
            ("s3:ListBucket", bucket), ("s3:GetObject", lake),
            ("s3:PutObject", query_results)} <= granted
    # and it changes nothing but its own results
    assert {(action, resource) for action, resource in granted if action.split(":")[1]
            .startswith(("Put", "Delete", "Create", "Update"))} == {
        ("s3:PutObject", query_results)}
    assert d.outputs["lake_query_policy_arn"] == d.one(
        "iam/policy:Policy", prefixed(d, "lake-query")).props["arn"]


# --- Event sources --------------------------------------------------------------------

def test_ingest_event_source_reports_partial_batch_failures(d: Deployed) -> None:
    mapping = d.one("eventSourceMapping:EventSourceMapping", prefixed(d, "ingest")).props
    assert mapping["eventSourceArn"] == queue(d, "ingest")["arn"]
    assert mapping["functionName"] == function(d, "ingest")["arn"]
    assert mapping["functionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["batchSize"] == 10
    ingest_queue = queue(d, "ingest")
    redrive = json.loads(ingest_queue["redrivePolicy"])
    assert redrive["deadLetterTargetArn"] == queue(d, "ingest-dlq")["arn"]
    assert redrive["maxReceiveCount"] >= 3
    # SQS event sources want the visibility timeout at 6x the function timeout
    assert ingest_queue["visibilityTimeoutSeconds"] >= 6 * function(d, "ingest")["timeout"]


def test_stream_event_source_bisects_retries_and_parks_failures(d: Deployed) -> None:
    mapping = d.one("eventSourceMapping:EventSourceMapping", prefixed(d, "to-lake")).props
    table = d.one("dynamodb/table:Table", prefixed(d, "results")).props
    assert mapping["eventSourceArn"] == table["streamArn"]
    assert mapping["bisectBatchOnFunctionError"] is True
    assert mapping["functionResponseTypes"] == ["ReportBatchItemFailures"]
    assert 0 < mapping["maximumRetryAttempts"] <= 10
    assert 60 <= mapping["maximumRecordAgeInSeconds"] <= 6 * 3600
    assert mapping["destinationConfig"] == {
        "onFailure": {"destinationArn": queue(d, "lake-failures")["arn"]}}
    assert mapping["startingPosition"] == "TRIM_HORIZON"


def test_the_stream_mapping_passes_new_results_and_reviews(d: Deployed) -> None:
    """Lambda drops what its filter patterns do not let through, before the handler sees
    it: the mapping's patterns are the ones the handler and the local poller read."""
    mapping = d.one("eventSourceMapping:EventSourceMapping", prefixed(d, "to-lake")).props
    patterns = [json.loads(f["pattern"]) for f in mapping["filterCriteria"]["filters"]]
    assert patterns == list(LAKE_STREAM_FILTERS)
    assert len(patterns) <= 5  # Lambda's quota of filters a mapping


# --- Storage hardening ------------------------------------------------------------------

def test_every_bucket_is_hardened(d: Deployed) -> None:
    buckets = d.of_type("s3/bucket:Bucket")
    assert len(buckets) == (3 if d.config.detector.model_path else 2)
    for bucket in buckets:
        name, arn = bucket.name, bucket.props["arn"]
        block = d.one("bucketPublicAccessBlock:BucketPublicAccessBlock", name).props
        assert all(block[k] is True for k in ("blockPublicAcls", "blockPublicPolicy",
                                               "ignorePublicAcls", "restrictPublicBuckets"))
        sse = d.one("bucketServerSideEncryptionConfiguration:"
                    "BucketServerSideEncryptionConfiguration", name).props
        assert sse["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"]
        (statement,) = json.loads(d.one("bucketPolicy:BucketPolicy", name).props["policy"])[
            "Statement"]
        assert statement["Effect"] == "Deny"
        assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        assert statement["Resource"] == [arn, arn + "/*"]
        assert d.one("bucketLifecycleConfiguration:BucketLifecycleConfiguration", name)


def test_images_bucket_lifecycle_cors_and_notifications(d: Deployed) -> None:
    name = prefixed(d, "images")
    rules = d.one("bucketLifecycleConfiguration:BucketLifecycleConfiguration", name).props[
        "rules"]
    assert {"days": d.config.image_retention_days} in [r.get("expiration") for r in rules]
    # versioned, so a key written again (a reused upload form) keeps the version judged,
    # and older versions expire as the images do
    [versioning] = d.of_type("s3/bucketVersioning:BucketVersioning")
    assert versioning.name == name
    assert versioning.props["versioningConfiguration"] == {"status": "Enabled"}
    assert {"noncurrentDays": d.config.image_retention_days} in [
        r.get("noncurrentVersionExpiration") for r in rules]
    assert {"expiredObjectDeleteMarker": True} in [r.get("expiration") for r in rules]
    (cors,) = d.one("bucketCorsConfiguration:BucketCorsConfiguration", name).props["corsRules"]
    assert set(cors["allowedMethods"]) <= {"POST", "PUT"}
    assert cors["allowedOrigins"] == list(d.config.upload_origins)
    # a browser's PUT sends every header the API tells it to; each must pass pre-flight
    sent = uploads.put_headers(uploads.new_target("line-1", "cam-1", "frame-1", "image/png"))
    assert all(any(fnmatch(name.lower(), allowed) for allowed in cors["allowedHeaders"])
               for name in sent), (sent, cors["allowedHeaders"])
    notification = d.one("bucketNotification:BucketNotification").props
    assert notification["bucket"] == d.one("s3/bucket:Bucket", name).props["bucket"]
    assert sorted(q["filterSuffix"] for q in notification["queues"]) == sorted(
        f".{ext}" for ext in d.config.image_extensions)
    assert {q["queueArn"] for q in notification["queues"]} == {queue(d, "ingest")["arn"]}
    (statement,) = json.loads(d.one("sqs/queuePolicy:QueuePolicy").props["policy"])[
        "Statement"]
    assert statement["Condition"]["ArnEquals"]["aws:SourceArn"] == d.one(
        "s3/bucket:Bucket", name).props["arn"]


# --- IAM --------------------------------------------------------------------------------

def policies(d: Deployed) -> dict[str, list[dict[str, Any]]]:
    """Every role's inline policy and every managed policy, by resource name."""
    return {r.name: json.loads(r.props["policy"])["Statement"]
            for r in [*d.of_type("iam/rolePolicy:RolePolicy"), *d.of_type("iam/policy:Policy")]}


def test_one_role_per_function(d: Deployed) -> None:
    roles = {f["role"] for f in (function(d, key) for key in FUNCTIONS)}
    assert len(roles) == len(FUNCTIONS)


def test_no_wildcard_resource_where_an_arn_is_known(d: Deployed) -> None:
    for name, statements in policies(d).items():
        for statement in statements:
            resources = statement["Resource"]
            resources = resources if isinstance(resources, list) else [resources]
            assert all(isinstance(r, str) and r for r in resources), (name, statement)
            if "*" in resources:
                assert set(statement["Action"]) <= UNSCOPED_ACTIONS, (name, statement)
            for resource in resources:
                assert resource == "*" or resource.startswith("arn:aws:"), (name, resource)


@pytest.mark.parametrize(("key", "allowed"), [
    # the REST API: presign uploads, read results, record reviews - nothing more
    ("api", {("s3:PutObject", "images/*"), ("dynamodb:GetItem", "results"),
             ("dynamodb:Query", "results"), ("dynamodb:Scan", "results"),
             ("dynamodb:UpdateItem", "results")}),
    # the authorizer: look a token up
    ("authorizer", {("dynamodb:GetItem", "tokens")}),
])
def test_request_path_roles_are_narrow(d: Deployed, key: str,
                                       allowed: set[tuple[str, str]]) -> None:
    names = {
        "images/*": d.one("s3/bucket:Bucket", prefixed(d, "images")).props["arn"] + "/*",
        "results": d.one("dynamodb/table:Table", prefixed(d, "results")).props["arn"],
        "tokens": d.one("dynamodb/table:Table", prefixed(d, "tokens")).props["arn"],
    }
    log_group = d.one("cloudwatch/logGroup:LogGroup", prefixed(d, key)).props["arn"] + ":*"
    granted = set()
    for statement in policies(d)[prefixed(d, key)]:
        if statement.get("Sid") in ("Logs", "Tracing"):
            assert statement["Resource"] in ([log_group], ["*"])
            continue
        for action in statement["Action"]:
            for resource in statement["Resource"]:
                granted.add((action, resource))
    expected = {(action, names[target]) for action, target in allowed}
    # reads may also use the table's indexes
    index = names["results"] + "/index/*"
    assert granted - {(a, index) for a, _ in granted} == expected


def test_ingest_role_covers_what_the_ingest_step_calls(d: Deployed) -> None:
    bucket = d.one("s3/bucket:Bucket", prefixed(d, "images")).props["arn"]
    images = bucket + "/*"
    results = d.one("dynamodb/table:Table", prefixed(d, "results")).props["arn"]
    granted = {(action, resource) for statement in policies(d)[prefixed(d, "ingest")]
               for action in statement["Action"] for resource in statement["Resource"]}
    # read the upload, tag it when it fails, recognise a redelivery of a recorded upload
    assert {("s3:GetObject", images), ("s3:PutObjectTagging", images),
            ("dynamodb:BatchGetItem", results), ("dynamodb:GetItem", results)} <= granted
    # an upload deleted before it was read is a 404 only with ListBucket (a 403 without)
    assert ("s3:ListBucket", bucket) in granted
    assert ("dynamodb:PutItem", results) not in granted  # only the workflow writes records


def test_workflow_role_covers_what_the_state_machine_calls(d: Deployed) -> None:
    """Each service integration of the definition, on this stack's resources only."""
    results = d.one("dynamodb/table:Table", prefixed(d, "results")).props["arn"]
    granted = {(action, resource) for statement in policies(d)[prefixed(d, "workflow")]
               for action in statement["Action"] for resource in statement["Resource"]
               if resource != "*"}
    assert {action for action, _ in granted} >= {
        "dynamodb:PutItem", "dynamodb:GetItem", "sns:Publish", "sqs:SendMessage"}
    # a refused put reads the record, and sends a photo that lost its id back to ingest
    assert {("dynamodb:PutItem", results), ("dynamodb:GetItem", results),
            ("sqs:SendMessage", queue(d, "ingest")["arn"]),
            ("sqs:SendMessage", queue(d, "workflow-failures")["arn"])} <= granted
    assert {resource for action, resource in granted if action == "sqs:SendMessage"} == {
        queue(d, "ingest")["arn"], queue(d, "workflow-failures")["arn"]}


def test_the_operator_policy_stays_on_this_stacks_resources(d: Deployed) -> None:
    arn = {label: d.one(kind, prefixed(d, name)).props["arn"] for label, kind, name in [
        ("images", "s3/bucket:Bucket", "images"),
        ("results-bucket", "s3/bucket:Bucket", "results"),
        ("results", "dynamodb/table:Table", "results"),
        ("tokens", "dynamodb/table:Table", "tokens"),
        *[(name, "sqs/queue:Queue", name)
          for name in ("ingest", "ingest-dlq", "workflow-failures", "lake-failures")]]}
    arn.update({kind: d.one(kind).props["arn"] for kind in (
        "sfn/stateMachine:StateMachine", "sns/topic:Topic", "kms/key:Key",
        "kinesis/firehoseDeliveryStream:FirehoseDeliveryStream")})
    stream = d.one("dynamodb/table:Table", prefixed(d, "results")).props["streamArn"]
    granted = {(action, resource) for statement in policies(d)[prefixed(d, "operator")]
               for action in statement["Action"] for resource in statement["Resource"]}
    # (that it covers what each command calls: tests/infra/test_operator_calls.py)
    # nothing that deletes or rewrites data beyond a token, a dead letter and lake rows
    # (appended), and nothing outside this stack
    assert {action for action, _ in granted if action.split(":")[1].startswith(
        ("Delete", "Put", "Create"))} == {"dynamodb:PutItem", "sqs:DeleteMessage",
                                          "firehose:PutRecordBatch"}
    assert ("dynamodb:PutItem", arn["results"]) not in granted
    assert {resource for _, resource in granted} <= {
        *arn.values(), arn["images"] + "/*", arn["results-bucket"] + "/heatmaps/*",
        arn["results"] + "/index/*", stream, "*"}
    assert d.outputs["operator_policy_arn"] == d.one(
        "iam/policy:Policy", prefixed(d, "operator")).props["arn"]


# --- API ----------------------------------------------------------------------------------

def test_rest_api_is_the_chalice_app(d: Deployed) -> None:
    app = load_app(REPO / "api")
    body = json.loads(d.one("apigateway/restApi:RestApi").props["body"])
    assert set(body["paths"]) == set(app.routes)
    api_arn, auth_arn = function(d, "api")["arn"], function(d, "authorizer")["arn"]
    for path, methods in app.routes.items():
        for method in methods:
            operation = body["paths"][path][method.lower()]
            assert api_arn in operation["x-amazon-apigateway-integration"]["uri"]
            assert operation["security"] == [{"token_authorizer": []}]
    authorizer = body["securityDefinitions"]["token_authorizer"]
    assert auth_arn in authorizer["x-amazon-apigateway-authorizer"]["authorizerUri"]
    stage = d.one("apigateway/stage:Stage").props
    assert stage["xrayTracingEnabled"] is True
    assert d.outputs["api_url"] == stage["invokeUrl"]
    permissions = {p.props["function"]: p.props["sourceArn"]
                   for p in d.of_type("lambda/permission:Permission")}
    assert set(permissions) == {function(d, "api")["name"], function(d, "authorizer")["name"]}


def test_the_api_stage_is_throttled_per_stack(deployed: dict[str, Deployed]) -> None:
    """Beyond the stack's rate, API Gateway answers 429 before any function runs."""
    for stack, (rate, burst) in {"dev": (100, 200), "plant-a": (40, 80)}.items():
        d = deployed[stack]
        [throttle] = d.of_type("apigateway/methodSettings:MethodSettings")
        assert throttle.props["methodPath"] == "*/*"
        assert throttle.props["stageName"] == d.one("apigateway/stage:Stage").props[
            "stageName"]
        assert throttle.props["settings"] == {"throttlingRateLimit": rate,
                                              "throttlingBurstLimit": burst}, stack


def test_stack_outputs(d: Deployed) -> None:
    for name in ("api_url", "images_bucket", "results_bucket", "table", "state_machine_arn",
                 "topic_arn", "dashboard_url", "manifest_uri"):
        assert d.outputs[name], name
    # dashboard names are account-wide: the region keeps two regions' stacks apart
    region = d.outputs["region"]
    assert d.outputs["dashboard_url"].endswith(
        f"?region={region}#dashboards:name={d.config.resource_prefix}-{region}")
    assert (d.one("cloudwatch/dashboard:Dashboard").props["dashboardName"]
            == f"{d.config.resource_prefix}-{region}")
    # `report --state` draws the stack's low-confidence bands, as the handlers hold them
    assert float(d.outputs["confidence_threshold"]) == d.config.confidence_threshold
    assert d.outputs["line_policies"] == d.config.lines_env()
    # `tokens create --state` refuses a camera the alarms and dashboard do not watch
    assert d.outputs["lines"] == {line.id: list(line.cameras) for line in d.config.lines}


def test_the_outputs_serve_linesight_dlq_as_a_stack_description(d: Deployed) -> None:
    """`pulumi stack output --json > stack.json` then `linesight dlq list --state stack.json`."""
    from scripts.cli_dlq import NEEDED

    for name in NEEDED:
        assert d.outputs["ingest_queue_url" if name == "queue_url" else name], name
    assert d.outputs["dlq_url"] != d.outputs["ingest_queue_url"]
