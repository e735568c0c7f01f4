"""Analytics: the Firehose stream into the results lake, the QuickSight manifest, and the
queue that keeps stream batches the analytics function could not deliver.

The Firehose destination is `pipeline.analytics.s3_destination` (line/date dynamic
partitioning, an error prefix) translated to Pulumi's argument names; the manifest is
`pipeline.analytics.quicksight_manifest`, written as a plain bucket object.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra import iam
from pipeline.analytics import (
    LAKE_ERROR_PREFIX,
    LAKE_PREFIX,
    MANIFEST_KEY,
    Buffering,
    quicksight_manifest,
    s3_destination,
)

LOG_RETENTION_DAYS = 30
FAILURE_RETENTION_SECONDS = 14 * 24 * 3600


@dataclass(frozen=True)
class AnalyticsArgs:
    prefix: str
    results_bucket: pulumi.Input[str]
    results_bucket_arn: pulumi.Input[str]
    buffering: Buffering
    account_id: pulumi.Input[str]


def firehose_s3_configuration(destination: dict[str, Any]) -> dict[str, Any]:
    """Pulumi's `extended_s3_configuration` from an ExtendedS3DestinationConfiguration."""
    processing = destination["ProcessingConfiguration"]
    return {
        "bucket_arn": destination["BucketARN"],
        "role_arn": destination["RoleARN"],
        "prefix": destination["Prefix"],
        "error_output_prefix": destination["ErrorOutputPrefix"],
        "buffering_interval": destination["BufferingHints"]["IntervalInSeconds"],
        "buffering_size": destination["BufferingHints"]["SizeInMBs"],
        "compression_format": destination["CompressionFormat"],
        "dynamic_partitioning_configuration": {
            "enabled": destination["DynamicPartitioningConfiguration"]["Enabled"]},
        "processing_configuration": {
            "enabled": processing["Enabled"],
            "processors": [{
                "type": processor["Type"],
                "parameters": [{"parameter_name": p["ParameterName"],
                                "parameter_value": p["ParameterValue"]}
                               for p in processor["Parameters"]],
            } for processor in processing["Processors"]],
        },
    }


def role_statements(*, bucket_arn: pulumi.Input[str],
                    log_group_arn: pulumi.Input[str]) -> list[iam.Statement]:
    lake_objects = [pulumi.Output.concat(bucket_arn, "/", prefix, "*")
                    for prefix in (LAKE_PREFIX, LAKE_ERROR_PREFIX)]
    return [
        iam.allow(["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
                  [bucket_arn], sid="LakeBucket"),
        iam.allow(["s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload"], lake_objects,
                  sid="LakeObjects"),
        iam.allow(["logs:PutLogEvents"], [pulumi.Output.concat(log_group_arn, ":*")],
                  sid="DeliveryLogs"),
    ]


class Analytics(pulumi.ComponentResource):
    def __init__(self, name: str, args: AnalyticsArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("linesight:analytics:Analytics", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        p = args.prefix
        self.log_group = aws.cloudwatch.LogGroup(
            f"{p}-lake-delivery",
            name=f"/aws/kinesisfirehose/{p}-lake",
            retention_in_days=LOG_RETENTION_DAYS,
            opts=child)
        log_stream = aws.cloudwatch.LogStream(
            f"{p}-lake-delivery", name="DestinationDelivery",
            log_group_name=self.log_group.name, opts=child)
        self.role = iam.service_role(
            f"{p}-lake-delivery",
            service="firehose.amazonaws.com",
            description="LineSight Firehose: write lake rows to the results bucket",
            statements=role_statements(bucket_arn=args.results_bucket_arn,
                                       log_group_arn=self.log_group.arn),
            trust_condition={"StringEquals": {"sts:ExternalId": args.account_id}},
            parent=self)
        destination = s3_destination(bucket_arn=args.results_bucket_arn,  # type: ignore[arg-type]
                                     role_arn=self.role.arn,  # type: ignore[arg-type]
                                     buffering=args.buffering)
        self.stream = aws.kinesis.FirehoseDeliveryStream(
            f"{p}-lake",
            destination="extended_s3",
            extended_s3_configuration={
                **firehose_s3_configuration(destination),
                "cloudwatch_logging_options": {
                    "enabled": True,
                    "log_group_name": self.log_group.name,
                    "log_stream_name": log_stream.name,
                },
            },
            server_side_encryption={"enabled": True, "key_type": "AWS_OWNED_CMK"},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.role.policy]))
        self.manifest = aws.s3.BucketObjectv2(
            f"{p}-quicksight-manifest",
            bucket=args.results_bucket,
            key=MANIFEST_KEY,
            content=pulumi.Output.from_input(args.results_bucket).apply(
                lambda bucket: json.dumps(quicksight_manifest(bucket), indent=2)),
            content_type="application/json",
            opts=child)
        self.manifest_uri = pulumi.Output.concat("s3://", args.results_bucket, "/", MANIFEST_KEY)
        self.failure_queue = aws.sqs.Queue(
            f"{p}-lake-failures",
            message_retention_seconds=FAILURE_RETENTION_SECONDS,
            sqs_managed_sse_enabled=True,
            opts=child)
        self.register_outputs({"stream": self.stream.name, "manifest_uri": self.manifest_uri})
