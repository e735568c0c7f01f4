"""Reading the local stack back: records, lake rows and alerts, as a person would check them.

Used by the demo, the end-to-end tests and the load benchmark, so all three count the
same way. Alerts are read from an SQS subscription on the alert topic, not assumed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pipeline.analytics import LAKE_PREFIX
from pipeline.records import ResultRecord


def all_records(ddb: Any, table: str) -> list[ResultRecord]:
    paginator = ddb.get_paginator("scan")
    return [ResultRecord.from_item(item)
            for page in paginator.paginate(TableName=table, ConsistentRead=True)
            for item in page.get("Items", [])]


def lake_rows(s3: Any, bucket: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=LAKE_PREFIX):
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().decode()
            rows.extend(json.loads(line) for line in body.splitlines() if line.strip())
    return rows


@dataclass
class AlertTap:
    """Drains the alert tap queue and remembers every alert seen."""

    sqs: Any
    queue_url: str
    alerts: list[dict[str, Any]] = field(default_factory=list)

    def drain(self) -> list[dict[str, Any]]:
        while True:
            response = self.sqs.receive_message(QueueUrl=self.queue_url,
                                                MaxNumberOfMessages=10, WaitTimeSeconds=0)
            messages = response.get("Messages", [])
            if not messages:
                return self.alerts
            for message in messages:
                envelope = json.loads(message["Body"])
                attributes = {name: value.get("Value") for name, value
                              in envelope.get("MessageAttributes", {}).items()}
                self.alerts.append({"subject": envelope.get("Subject", ""),
                                    "message": envelope.get("Message", ""),
                                    "line": attributes.get("line", ""),
                                    "camera": attributes.get("camera", ""),
                                    "reason": attributes.get("reason", "")})
            self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                for i, m in enumerate(messages)])


def executions_running(sfn: Any, state_machine_arn: str) -> bool:
    """Whether any execution of the workflow is still running."""
    return bool(sfn.list_executions(stateMachineArn=state_machine_arn, statusFilter="RUNNING",
                                    maxResults=1)["executions"])


def wait_for_alerts(tap: AlertTap, sfn: Any, state_machine_arn: str, due: int,
                    timeout: float = 30.0) -> list[dict[str, Any]]:
    """Every alert the workflow sends: drained until no execution runs and at least `due`
    have arrived (or `timeout` s), then once more. An execution publishes before it ends,
    so a late duplicate alert is seen too, which stopping at the count due would miss."""
    wait_until(lambda: not executions_running(sfn, state_machine_arn)
               and len(tap.drain()) >= due, timeout)
    return tap.drain()


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def summarize(records: Iterable[ResultRecord], rows: Iterable[dict[str, Any]],
              alerts: Iterable[dict[str, Any]]) -> dict[tuple[str, str], dict[str, int]]:
    """Per (line, camera): processed, anomalous, low confidence, invalid, alerts, lake rows."""
    table: dict[tuple[str, str], dict[str, int]] = {}

    def row(line: str, camera: str) -> dict[str, int]:
        return table.setdefault((line, camera), dict.fromkeys(
            ("processed", "anomalous", "low_confidence", "invalid", "alerts", "lake_rows"), 0))

    for record in records:
        counts = row(record.line_id, record.camera_id)
        counts["processed"] += 1
        counts["anomalous"] += int(record.is_anomalous)
        counts["low_confidence"] += int("low_confidence" in record.alert_reason)
        counts["invalid"] += int(record.status == "INVALID")
    for lake in rows:
        row(lake["AssemblyLineId"], lake["CameraId"])["lake_rows"] += 1
    for alert in alerts:
        row(alert["line"], alert["camera"])["alerts"] += 1
    return dict(sorted(table.items()))
