"""Ingest: the queue between the images bucket and the ingest function.

Each new object with a configured extension sends an S3 ObjectCreated notification to the
ingest queue. A message that fails `MAX_RECEIVES` times moves to the dead-letter queue,
where an alarm sees it. Only this bucket, in this account, may send to the queue.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from pipeline.ingest import FUNCTION_TIMEOUT_SECONDS as INGEST_FUNCTION_TIMEOUT

VISIBILITY_TIMEOUT = 6 * INGEST_FUNCTION_TIMEOUT  # AWS's advice for an SQS event source
MAX_RECEIVES = 5
RETENTION_SECONDS = 4 * 24 * 3600
DLQ_RETENTION_SECONDS = 14 * 24 * 3600


@dataclass(frozen=True)
class IngestArgs:
    prefix: str
    images_bucket: pulumi.Input[str]
    images_bucket_arn: pulumi.Input[str]
    image_extensions: tuple[str, ...]
    account_id: pulumi.Input[str]


def queue_policy(queue_arn: Any, bucket_arn: Any, account_id: Any) -> dict[str, Any]:
    """Only the images bucket of this account may send notifications to the queue."""
    return {
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "ImagesBucketNotifications",
            "Effect": "Allow",
            "Principal": {"Service": "s3.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": bucket_arn},
                          "StringEquals": {"aws:SourceAccount": account_id}},
        }],
    }


def notification_queues(queue_arn: Any, extensions: tuple[str, ...]) -> list[dict[str, Any]]:
    """One ObjectCreated filter per extension (S3 filters match one suffix each)."""
    return [{"id": f"ingest-{extension}", "queue_arn": queue_arn,
             "events": ["s3:ObjectCreated:*"], "filter_suffix": f".{extension}"}
            for extension in extensions]


class Ingest(pulumi.ComponentResource):
    def __init__(self, name: str, args: IngestArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("linesight:ingest:Ingest", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        p = args.prefix
        self.dead_letter_queue = aws.sqs.Queue(
            f"{p}-ingest-dlq",
            message_retention_seconds=DLQ_RETENTION_SECONDS,
            sqs_managed_sse_enabled=True,
            opts=child)
        self.queue = aws.sqs.Queue(
            f"{p}-ingest",
            visibility_timeout_seconds=VISIBILITY_TIMEOUT,
            message_retention_seconds=RETENTION_SECONDS,
            sqs_managed_sse_enabled=True,
            redrive_policy=pulumi.Output.json_dumps({
                "deadLetterTargetArn": self.dead_letter_queue.arn,
                "maxReceiveCount": MAX_RECEIVES,
            }),
            opts=child)
        policy = aws.sqs.QueuePolicy(
            f"{p}-ingest",
            queue_url=self.queue.url,
            policy=pulumi.Output.json_dumps(queue_policy(
                self.queue.arn, args.images_bucket_arn, args.account_id)),
            opts=child)
        # S3 checks it may send to the queue when the notification is saved.
        self.notification = aws.s3.BucketNotification(
            f"{p}-images-created",
            bucket=args.images_bucket,
            queues=notification_queues(self.queue.arn, args.image_extensions),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[policy]))
        self.register_outputs({"queue_url": self.queue.url})
