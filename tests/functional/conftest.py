"""Helpers for the trust tests (auth, bad input, duplicates, faults, dead letters, lake).

- `shared_stack`: the same provisioned in-process moto stack as `moto_stack`, but one per
  module, for table-driven tests whose cases do not interfere (each uploads its own image).
- `fast_retries`: moto's Step Functions engine really sleeps for each Retry interval; this
  records the intervals instead, so tests check the backoff without waiting for it.
- `run_ingest`, `wait_for_execution`, `records`, `alerts`, `drain_stream`, `emf_metrics`.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.conftest import REGION, MotoStack, _reset_caches


@pytest.fixture(scope="module")
def shared_stack(trained_model: Path) -> Iterator[MotoStack]:
    from moto import mock_aws

    from pipeline.detector import clear_cache
    from scripts.local_stack import LocalStack, Topology

    with pytest.MonkeyPatch.context() as patch:
        for key in list(os.environ):
            if key.startswith(("LINESIGHT_", "AWS_")):
                patch.delenv(key)
        for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION}.items():
            patch.setenv(key, value)
        _reset_caches()
        with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
            # A 1 MB upload limit, so "over the limit" needs no 15 MB object.
            local = LocalStack(trained_model, Topology(max_upload_bytes=1_000_000),
                               write_state=False)
            info = local.provision(client=lambda service: boto3.client(
                service, region_name=REGION))
            for key, value in local.handler_environment(info).items():
                patch.setenv(key, value)
            _reset_caches()
            info.camera_tokens = local._create_tokens(info.tokens_table)
            yield MotoStack(info, local)
        _reset_caches()
    clear_cache()


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The Retry intervals moto's engine would have slept, in order."""
    from types import SimpleNamespace

    from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

    slept: list[float] = []
    monkeypatch.setattr(retrier_decl, "time", SimpleNamespace(sleep=slept.append))
    return slept


def count_calls(service: str) -> Counter[str]:
    """The operations the handlers' (cached) client for `service` calls from now on."""
    from pipeline import aws

    calls: Counter[str] = Counter()

    def count(model: Any, **_: Any) -> None:
        calls[model.name] += 1

    aws.client(service).meta.events.register(f"before-call.{service}.*", count)
    return calls


def redrive_workflow(stack: MotoStack) -> Any:
    """`linesight dlq redrive --queue workflow`, in this process."""
    from pipeline import dlq

    info, client = stack.info, stack.client
    return dlq.redrive_workflow(
        client("sqs"), info.failure_queue_url,
        dlq.WorkflowTargets(info.state_machine_arn, info.table, info.topic_arn),
        sfn=client("stepfunctions"), ddb=client("dynamodb"), sns=client("sns"),
        s3=client("s3"))


def sqs_message(stack: MotoStack, key: str, message_id: str | None = None) -> dict[str, Any]:
    record = stack.sqs_event_for(key)["Records"][0]
    if message_id:
        record["messageId"] = message_id
    return record


def run_ingest(stack: MotoStack, *keys: str) -> dict[str, Any]:
    import app

    return app.ingest({"Records": [sqs_message(stack, key) for key in keys]}, None)


def execution_name(stack: MotoStack, key: str) -> str:
    from pipeline.ingest import object_refs

    body = sqs_message(stack, key)["body"]
    [ref] = list(object_refs(body))
    return ref.idempotency_key


def executions(stack: MotoStack) -> list[dict[str, Any]]:
    return stack.client("stepfunctions").list_executions(
        stateMachineArn=stack.info.state_machine_arn)["executions"]


def wait_for_executions(stack: MotoStack, count: int, timeout: float = 30.0
                        ) -> list[dict[str, Any]]:
    """Wait until at least `count` executions have finished; return the finished ones."""
    deadline = time.monotonic() + timeout
    while True:
        done = [e for e in executions(stack) if e["status"] != "RUNNING"]
        if len(done) >= count or time.monotonic() > deadline:
            return done
        time.sleep(0.05)


def wait_until_idle(stack: MotoStack, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Wait until every execution started so far has finished; return them all."""
    deadline = time.monotonic() + timeout
    while True:
        found = executions(stack)
        if all(e["status"] != "RUNNING" for e in found) or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def wait_for_execution(stack: MotoStack, name: str, timeout: float = 30.0) -> dict[str, Any]:
    """The finished execution called `name` (the idempotency key)."""
    sfn = stack.client("stepfunctions")
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in executions(stack) if e["name"] == name]
        if found:
            described = sfn.describe_execution(executionArn=found[0]["executionArn"])
            if described["status"] != "RUNNING" or time.monotonic() > deadline:
                return described
        elif time.monotonic() > deadline:
            raise AssertionError(f"no execution named {name}")
        time.sleep(0.05)


def history_states(stack: MotoStack, execution_arn: str) -> list[str]:
    events = stack.client("stepfunctions").get_execution_history(
        executionArn=execution_arn)["events"]
    return [e["stateEnteredEventDetails"]["name"] for e in events
            if "stateEnteredEventDetails" in e]


def records(stack: MotoStack) -> list[dict[str, Any]]:
    return stack.client("dynamodb").scan(TableName=stack.info.table)["Items"]


def record_for(stack: MotoStack, key: str) -> dict[str, Any] | None:
    from pipeline.uploads import parse_key

    parts = parse_key(key)
    assert parts is not None
    return stack.client("dynamodb").get_item(
        TableName=stack.info.table, Key={"image_id": {"S": parts.upload_id}}).get("Item")


def alerts(stack: MotoStack) -> list[dict[str, Any]]:
    """Every alert that reached the topic's SQS tap (drained)."""
    from scripts.observe import AlertTap

    return AlertTap(stack.client("sqs"), stack.info.alerts_queue_url).drain()


def queue_bodies(stack: MotoStack, url: str) -> list[dict[str, Any]]:
    """Every message body in a queue, left in it (visibility reset)."""
    from pipeline.dlq import receive_all, release

    sqs = stack.client("sqs")
    messages = receive_all(sqs, url)
    release(sqs, url, messages)
    return [json.loads(m["Body"]) for m in messages]


def streams_client() -> Any:
    """In-process moto does not route botocore's account-ID stream endpoints."""
    from botocore.config import Config

    return boto3.client("dynamodbstreams", region_name=REGION,
                        config=Config(account_id_endpoint_mode="disabled"))


def stream_records(stack: MotoStack) -> list[dict[str, Any]]:
    """Every record of the results table's stream so far, shaped as Lambda delivers them."""
    from scripts.event_sources import StreamPoller

    streams = streams_client()
    arn = stack.client("dynamodb").describe_table(
        TableName=stack.info.table)["Table"]["LatestStreamArn"]
    poller = StreamPoller(streams, arn, handler=lambda *_: None, name="test", stop=None)  # type: ignore[arg-type]
    found: list[dict[str, Any]] = []
    for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
        iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"],
                                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        response = streams.get_records(ShardIterator=iterator, Limit=1000)
        found.extend(poller._record(r) for r in response.get("Records", []))
    return found


def lake_rows(stack: MotoStack) -> list[dict[str, Any]]:
    from scripts.observe import lake_rows as read_rows

    return read_rows(stack.client("s3"), stack.info.results_bucket)


def emf_metrics(output: str) -> list[dict[str, Any]]:
    """The metric data points in Embedded Metric Format lines of captured stdout."""
    from scripts.event_sources import emf_to_metric_data

    points: list[dict[str, Any]] = []
    for line in output.splitlines():
        parsed = emf_to_metric_data(line)
        if parsed:
            points.extend(parsed[1])
    return points
