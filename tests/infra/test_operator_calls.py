"""The operators' policy against what the `linesight` CLI really calls.

Every operator command runs against in-process moto while each AWS call it makes is
recorded (the calls go through; nothing is replaced). Each call is then checked against the
operator policy the Pulumi program deploys (under mocks): an action it grants, on the
resource the call touched. moto does not enforce IAM, so this is what catches a command
that would meet AccessDenied in a real account.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import botocore.client
import pytest
import typer
from typer.testing import CliRunner

from tests.functional.results_stack import (
    ResultsStack,
    jpeg,
    record,
    results_stack,
    upload_ref,
)
from tests.infra.conftest import Deployed

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# IAM's name for what boto3 calls differently
_SERVICE = {"stepfunctions": "states", "dynamodbstreams": "dynamodb"}
_ACTION = {"HeadObject": "GetObject", "ListObjectsV2": "ListBucket", "ListObjects": "ListBucket",
           "HeadBucket": "ListBucket", "DeleteMessageBatch": "DeleteMessage",
           "SendMessageBatch": "SendMessage",
           "ChangeMessageVisibilityBatch": "ChangeMessageVisibility"}

Call = tuple[str, str, dict[str, Any]]


def _iam_action(service: str, operation: str, params: dict[str, Any]) -> str:
    """The IAM action a call needs (a GetObject of one version needs GetObjectVersion)."""
    if (service, operation) == ("s3", "GetObject") and params.get("VersionId"):
        operation = "GetObjectVersion"
    return f"{_SERVICE.get(service, service)}:{_ACTION.get(operation, operation)}"


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[Call]:
    """Every AWS call made from here on: (service, operation, parameters)."""
    made: list[Call] = []
    real = botocore.client.BaseClient._make_api_call

    def recorded(self: Any, operation: str, params: dict[str, Any]) -> Any:
        made.append((self.meta.service_model.service_name, operation, params))
        return real(self, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", recorded)
    return made


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ResultsStack]:
    with results_stack(tmp_path) as stack:
        # in-process moto does not route botocore's account-ID stream endpoints
        monkeypatch.setenv("AWS_ACCOUNT_ID_ENDPOINT_MODE", "disabled")
        yield stack


def _cli() -> Any:
    from scripts import cli_dlq, cli_results, cli_tokens

    app = typer.Typer()
    for module in (cli_results, cli_tokens, cli_dlq):
        module.register(app)
    runner = CliRunner()

    def run(*args: str) -> None:
        result = runner.invoke(app, list(args))
        assert result.exit_code == 0, (args, result.output)
    return run


def _dead_letters(stack: ResultsStack) -> None:
    """One dead letter of each kind a redrive finishes differently."""
    from pipeline import analytics, ingest
    from pipeline.alerts import AlertPolicy, decide

    info, sqs = stack.info, stack.client("sqs")
    sqs.send_message(QueueUrl=info.dlq_url, MessageBody=json.dumps({"Records": [{
        "eventName": "ObjectCreated:Put", "eventTime": "2026-11-23T08:00:00.000Z",
        "s3": {"bucket": {"name": info.images_bucket},
               "object": {"key": "line-1/cam-1/2026/11/23/" + "e" * 32 + ".jpg",
                          "eTag": "x", "size": 10}}}]}))
    policy = AlertPolicy(confidence_threshold=0.5, alert_on_invalid=True)
    never_stored = record(info, 40, anomalous=True)
    stored = stack.put(record(info, 41, anomalous=True))
    for state in (ingest.execution_input(never_stored, decide(never_stored, policy),
                                         upload_ref(never_stored)),
                  {**ingest.execution_input(stored, decide(stored, policy), upload_ref(stored)),
                   "alert_error": {"Error": "SNS.ThrottledException"}}):
        sqs.send_message(QueueUrl=info.failure_queue_url, MessageBody=json.dumps(state))
    analytics.park_rows(info.lake_failure_queue_url, [analytics.lake_row(record(info, 42),
                                                                         info.region)],
                        "Firehose refused them every time")
    streams = stack.client("dynamodbstreams")
    arn = stack.client("dynamodb").describe_table(
        TableName=info.table)["Table"]["LatestStreamArn"]
    [shard] = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    sequence = shard["SequenceNumberRange"]["StartingSequenceNumber"]
    sqs.send_message(QueueUrl=info.lake_failure_queue_url, MessageBody=json.dumps({
        "requestContext": {"condition": "RetryAttemptsExhausted"},
        "DDBStreamBatchInfo": {"shardId": shard["ShardId"], "streamArn": arn,
                               "startSequenceNumber": sequence,
                               "endSequenceNumber": sequence, "batchSize": 1}}))


def test_every_call_the_cli_makes_is_granted_on_its_resource(
        deployed: dict[str, Deployed], stack: ResultsStack, calls: list[Call],
        tmp_path: Path) -> None:
    info = stack.info
    anomalous = stack.put(record(info, 1, anomalous=True), image=jpeg(defect=True))
    stack.put(record(info, 2, camera="cam-2"), image=jpeg())
    _dead_letters(stack)
    state = tmp_path / "stack.json"
    state.write_text(json.dumps(asdict(info)))
    run = _cli()
    del calls[:]  # only what the commands call

    run("results")  # every line: a scan
    run("results", "--line", "line-1", "--camera", "cam-1", "--anomalous")
    run("report", "--since", "2026-11-01", "--out", str(tmp_path / "report.html"))
    run("show", anomalous.image_id, "--out", str(tmp_path / "shown.png"))
    run("review", anomalous.image_id, "--label", "anomaly", "--note", "a real crack")
    run("export-dataset", "--reviewed", str(tmp_path / "reviewed"))
    run("tokens", "create", "--line", "line-1", "--camera", "cam-2", "--state", str(state))
    token_ids = [params["Item"]["token_id"]["S"] for service, operation, params in calls
                 if operation == "PutItem"]
    run("tokens", "list", "--state", str(state))
    run("tokens", "revoke", token_ids[0], "--state", str(state))
    run("dlq", "list", "--state", str(state))
    run("dlq", "redrive", "--state", str(state))
    for url in (info.dlq_url, info.failure_queue_url, info.lake_failure_queue_url):
        stack.client("sqs").send_message(QueueUrl=url, MessageBody="not a dead letter")
    del calls[-3:]  # the test's own sends, not the CLI's
    run("dlq", "drop", "--poison", "--save", str(tmp_path / "dropped.jsonl"),
        "--state", str(state))

    d = deployed["dev"]
    granted = [statement for resource in d.of_type("iam/policy:Policy")
               if resource.name == f"{d.config.resource_prefix}-operator"
               for statement in json.loads(resource.props["policy"])["Statement"]]
    arns = _arns(d, stack)
    refused = sorted({(action, resource)
                      for service, operation, params in calls
                      for action in [_iam_action(service, operation, params)]
                      for resource in [_resource(service, params, arns)]
                      if not _allowed(granted, action, resource)})
    assert not refused, refused
    # the photos were read as the versions their records judged
    assert any(params.get("VersionId") for service, operation, params in calls
               if (service, operation) == ("s3", "GetObject"))
    # the commands did reach every kind of resource the policy is about
    assert {service for service, _, _ in calls} >= {
        "dynamodb", "dynamodbstreams", "s3", "sqs", "stepfunctions", "sns", "firehose",
        "cloudwatch"}


def _allowed(statements: list[dict[str, Any]], action: str, resource: str) -> bool:
    return any(statement["Effect"] == "Allow"
               and any(fnmatch(action, pattern) for pattern in statement["Action"])
               and any(fnmatch(resource, pattern) for pattern in statement["Resource"])
               for statement in statements)


def _arns(d: Deployed, stack: ResultsStack) -> dict[tuple[str, str], str]:
    """The deployed (mock) ARN of each resource, by its name in the local stack."""
    def arn(kind: str, suffix: str = "") -> str:
        found = (d.one(kind, f"{d.config.resource_prefix}-{suffix}") if suffix
                 else d.one(kind))
        return str(found.props["arn"])

    info = stack.info
    results = d.one("dynamodb/table:Table", f"{d.config.resource_prefix}-results")
    # keyed by service too: the local table and results bucket share a name
    return {
        ("dynamodb", info.table): arn("dynamodb/table:Table", "results"),
        ("dynamodb", info.tokens_table): arn("dynamodb/table:Table", "tokens"),
        ("dynamodbstreams", ""): str(results.props["streamArn"]),
        ("s3", info.images_bucket): arn("s3/bucket:Bucket", "images"),
        ("s3", info.results_bucket): arn("s3/bucket:Bucket", "results"),
        ("sqs", info.queue_url): arn("sqs/queue:Queue", "ingest"),
        ("sqs", info.dlq_url): arn("sqs/queue:Queue", "ingest-dlq"),
        ("sqs", info.failure_queue_url): arn("sqs/queue:Queue", "workflow-failures"),
        ("sqs", info.lake_failure_queue_url): arn("sqs/queue:Queue", "lake-failures"),
        ("stepfunctions", info.state_machine_arn): arn("sfn/stateMachine:StateMachine"),
        ("sns", info.topic_arn): arn("sns/topic:Topic"),
        ("firehose", info.firehose_stream): arn(
            "kinesis/firehoseDeliveryStream:FirehoseDeliveryStream"),
    }


def _resource(service: str, params: dict[str, Any], arns: dict[tuple[str, str], str]) -> str:
    """The ARN, in the deployed stack, of what one call touched."""
    if service == "cloudwatch":
        return "*"
    if service == "dynamodbstreams":
        return arns[service, ""]
    if service == "dynamodb":
        table = arns[service, params["TableName"]]
        return f"{table}/index/{params['IndexName']}" if "IndexName" in params else table
    if service == "s3":
        bucket = arns[service, params["Bucket"]]
        return f"{bucket}/{params['Key']}" if "Key" in params else bucket
    name = {"sqs": "QueueUrl", "stepfunctions": "stateMachineArn", "sns": "TopicArn",
            "firehose": "DeliveryStreamName"}[service]
    return arns[service, params[name]]
