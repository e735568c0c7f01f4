"""The local stack's emulator launch: request accounting and the tunings of moto, each of
which must leave moto's answers as they were (the end-to-end tests run through them)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from scripts import emulator

_AUTH = "AWS4-HMAC-SHA256 Credential=k/20260101/us-east-1/{}/aws4_request, SignedHeaders=x"


@pytest.fixture
def untuned_afterwards(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Whatever a test tunes is put back, so other tests see moto as it ships."""
    import moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_factory  # noqa: F401, E501
    from moto import backends
    from moto.sqs import models
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser
    from moto.stepfunctions.parser.asl.utils import boto_client, json_path

    for module in list(sys.modules.values()):
        if getattr(module, "boto_client_for", None) is boto_client.boto_client_for:
            monkeypatch.setattr(module, "boto_client_for", boto_client.boto_client_for)
    monkeypatch.setattr(AmazonStateLanguageParser, "parse",
                        AmazonStateLanguageParser.__dict__["parse"])
    monkeypatch.setattr(json_path, "parse", json_path.parse)
    monkeypatch.setattr(backends, "list_of_moto_modules", backends.list_of_moto_modules)
    for name in ("messages", "approximate_number_of_messages_delayed",
                 "approximate_number_of_messages_not_visible"):
        monkeypatch.setattr(models.Queue, name, models.Queue.__dict__[name])
    monkeypatch.setattr(models.SQSBackend, "is_message_valid_based_on_retention_period",
                        models.SQSBackend.is_message_valid_based_on_retention_period)
    yield
    emulator._engine_clients.clear()


@pytest.mark.parametrize("environ, body, expected", [
    # JSON protocols name the operation in X-Amz-Target
    ({"HTTP_X_AMZ_TARGET": "DynamoDB_20120810.BatchGetItem",
      "HTTP_AUTHORIZATION": _AUTH.format("dynamodb")}, b"", "dynamodb.BatchGetItem"),
    ({"HTTP_X_AMZ_TARGET": "DynamoDBStreams_20120810.GetRecords",
      "HTTP_AUTHORIZATION": _AUTH.format("dynamodb")}, b"", "dynamodbstreams.GetRecords"),
    ({"HTTP_X_AMZ_TARGET": "AmazonSQS.ReceiveMessage"}, b"", "sqs.ReceiveMessage"),
    # the query protocol names it in the form body
    ({"REQUEST_METHOD": "POST", "PATH_INFO": "/", "HTTP_AUTHORIZATION": _AUTH.format("sns"),
      "CONTENT_TYPE": "application/x-www-form-urlencoded; charset=utf-8"},
     b"Action=Publish&Version=2010-03-31", "sns.Publish"),
    # Smithy RPC v2 in the path; the signing name "monitoring" is CloudWatch
    ({"REQUEST_METHOD": "POST", "HTTP_AUTHORIZATION": _AUTH.format("monitoring"),
      "PATH_INFO": "/service/GraniteServiceVersion20100801/operation/PutMetricData"},
     b"", "cloudwatch.PutMetricData"),
    # S3: method, bucket or object, sub-resources (not the presigned query's own fields)
    ({"REQUEST_METHOD": "POST", "PATH_INFO": "/images"}, b"", "s3.POST bucket"),
    ({"REQUEST_METHOD": "GET", "PATH_INFO": "/images/l/c/k.jpg",
      "QUERY_STRING": "X-Amz-Credential=k%2F20260101%2Fus-east-1%2Fs3%2Faws4_request"},
     b"", "s3.GET object"),
    ({"REQUEST_METHOD": "PUT", "PATH_INFO": "/images/l/c/k.jpg", "QUERY_STRING": "tagging",
      "HTTP_AUTHORIZATION": _AUTH.format("s3")}, b"", "s3.PUT object?tagging"),
    ({"REQUEST_METHOD": "POST", "PATH_INFO": "/moto-api/reset"}, b"", "moto-api.reset"),
])
def test_requests_are_named_by_service_and_operation(environ: dict[str, Any], body: bytes,
                                                      expected: str) -> None:
    assert emulator.operation_of(environ, body) == expected


def test_the_emulator_counts_calls_and_cpu_per_operation(
        aws_env: None, untuned_afterwards: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from scripts.local_stack import free_port

    monkeypatch.setenv("MOTO_PORT", "0")  # the emulator sets it; put back afterwards
    server = emulator.Emulator("127.0.0.1", free_port())
    server.start()
    try:
        sqs = boto3.client("sqs", endpoint_url=server.endpoint, region_name="us-east-1")
        url = sqs.create_queue(QueueName="q")["QueueUrl"]
        for _ in range(2):
            sqs.send_message(QueueUrl=url, MessageBody="x")
        # a benchmark reading back what the pipeline did is counted apart from it
        from botocore.config import Config

        observer = boto3.client("sqs", endpoint_url=server.endpoint, region_name="us-east-1",
                                config=Config(user_agent_extra=emulator.OBSERVER_AGENT))
        observer.receive_message(QueueUrl=url)
        stats = server.read_stats()
    finally:
        server.stop()
    assert stats["calls"] == {"sqs.CreateQueue": 1, "sqs.SendMessage": 2,
                              "observer sqs.ReceiveMessage": 1}
    assert set(stats["cpu_seconds"]) == set(stats["calls"])
    assert all(seconds >= 0 for seconds in stats["cpu_seconds"].values())
    assert stats["process_cpu_seconds"] > 0


def test_a_request_is_counted_before_its_response_goes_out() -> None:
    """A client that has its answer and then asks for the stats finds its call counted
    (the server thread may not have finished with the connection yet)."""
    stats = emulator.OperationStats()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"{}"]

    app_measured = emulator.measured(app, stats)
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/",
               "HTTP_X_AMZ_TARGET": "AmazonSQS.SendMessage"}
    assert app_measured(environ, lambda *args: None) == [b"{}"]
    snapshot = stats.snapshot()
    assert snapshot["calls"] == {"sqs.SendMessage": 1}
    assert set(snapshot["cpu_seconds"]) == {"sqs.SendMessage"}


def test_the_step_functions_engine_reuses_its_clients(untuned_afterwards: None) -> None:
    from moto.settings import moto_server_port
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_dynamodb,
        state_task_service_sns,
    )

    emulator.cache_engine_clients()
    engine_client = state_task_service_dynamodb.boto_client_for
    first = engine_client(region="us-east-1", service="dynamodb", state_credentials=None)

    assert engine_client(region="us-east-1", service="dynamodb") is first
    assert state_task_service_sns.boto_client_for is engine_client  # every task module
    assert engine_client(region="us-east-1", service="sns") is not first
    # built by moto's own function: moto's endpoint and its no-retry configuration
    assert first.meta.endpoint_url == f"http://localhost:{moto_server_port()}"
    assert first.meta.config.retries["total_max_attempts"] == 1


def _definition() -> str:
    from pipeline.workflow import state_machine_definition

    return json.dumps(state_machine_definition(
        table_name="t", topic_arn="arn:aws:sns:us-east-1:123456789012:a",
        failure_queue_url="https://sqs/q", ingest_queue_url="https://sqs/i", partition="aws"))


def test_a_definition_is_parsed_once_and_evaluated_with_fresh_components(
        untuned_afterwards: None) -> None:
    from moto.stepfunctions.parser.asl.parse.asl_parser import (
        AmazonStateLanguageParser,
        ASLParserException,
    )

    emulator.cache_parse_trees()
    first_program, first_tree = AmazonStateLanguageParser.parse(_definition())
    program, tree = AmazonStateLanguageParser.parse(_definition())

    assert tree is first_tree  # not lexed and parsed again
    assert program is not first_program and type(program) is type(first_program)
    for _ in range(2):  # a definition that does not parse is refused every time
        with pytest.raises(ASLParserException):
            AmazonStateLanguageParser.parse('{"StartAt": "Missing", "States": 1}')


def test_json_paths_are_compiled_once_and_read_as_before(untuned_afterwards: None) -> None:
    from moto.stepfunctions.parser.asl.utils import json_path

    emulator.cache_json_paths()

    assert json_path.parse("$.alert.send") is json_path.parse("$.alert.send")
    assert json_path.extract_json("$.alert.send", {"alert": {"send": True}}) is True
    with pytest.raises(json_path.NoSuchJsonPathError):
        json_path.extract_json("$.alert.send", {"alert": {}})


def _queue_state() -> tuple[dict[str, Any], list[str]]:
    """A queue with visible, in-flight and delayed messages: its counts and a receive."""
    sqs = boto3.client("sqs", region_name="us-east-1")
    url = sqs.create_queue(QueueName=f"q{id(object())}")["QueueUrl"]
    for n in range(4):
        sqs.send_message(QueueUrl=url, MessageBody=str(n), DelaySeconds=60 if n == 3 else 0)
    received = [m["Body"] for m in sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=2, VisibilityTimeout=60)["Messages"]]
    counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed"])["Attributes"]
    return counts, received


def test_the_server_lists_motos_modules_once_and_finds_the_same_backends(
        untuned_afterwards: None, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from moto import backends
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    dispatcher = DomainDispatcherApplication(create_backend_app)
    hosts = ["s3", "sqs", "dynamodb", "moto_api", "sqs.us-east-1.amazonaws.com",
             "dynamodb.us-east-1.amazonaws.com", "states.us-east-1.amazonaws.com",
             "s3.amazonaws.com", "nothing-of-moto.example.com"]
    untuned = [dispatcher.get_backend_for_host(host) for host in hosts]

    emulator.cache_module_list()
    listed = []
    listdir = os.listdir
    monkeypatch.setattr(os, "listdir", lambda path: listed.append(path) or listdir(path))
    tuned = [dispatcher.get_backend_for_host(host) for host in hosts]

    assert tuned == untuned
    assert untuned[:4] == ["s3", "sqs", "dynamodb", "moto_api"]
    assert listed == []  # the folder was read once, by the tuning
    assert list(backends.list_of_moto_modules()) == sorted(backends.list_of_moto_modules())


def test_sqs_counts_read_the_clock_once_and_answer_as_before(
        aws_env: None, untuned_afterwards: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from moto import mock_aws
    from moto.sqs import models

    with mock_aws():
        untuned = _queue_state()
        emulator.cheap_queue_counts()
        tuned = _queue_state()
        queue = next(iter(models.sqs_backends["123456789012"]["us-east-1"].queues.values()))
        reads = []
        clock = models.unix_time_millis
        monkeypatch.setattr(models, "unix_time_millis", lambda: reads.append(1) or clock())
        assert int(queue.attributes["ApproximateNumberOfMessages"]) == 1

    assert tuned == untuned == ({"ApproximateNumberOfMessages": "1",
                                 "ApproximateNumberOfMessagesNotVisible": "2",
                                 "ApproximateNumberOfMessagesDelayed": "1"}, ["0", "1"])
    assert len(reads) == 3  # one per count, not one or two per message


def test_the_local_api_server_takes_a_fleet_of_cameras_connecting_at_once() -> None:
    from scripts.local_stack import _ApiServer

    assert _ApiServer.request_queue_size >= 16  # the load benchmark's concurrency
