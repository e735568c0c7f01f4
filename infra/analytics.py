"""Analytics: the Firehose stream into the results lake, the QuickSight manifest, the Glue
table and Athena workgroup that query the lake, and the queue that keeps stream batches
the analytics function could not deliver.

The Firehose destination is `pipeline.analytics.s3_destination` (line/date dynamic
partitioning, an error prefix) translated to Pulumi's argument names; the manifest is
`pipeline.analytics.quicksight_manifest`, written as a plain bucket object. The table is
`pipeline.analytics.lake_table_input` (partition projection, so Athena finds each new day
Firehose writes without a crawler), translated the same way. The manifest reads at most
1,000 files, a few days of a busy stack; Athena, and QuickSight through it, read them all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra import iam
from pipeline.analytics import (
    ATHENA_RESULTS_PREFIX,
    LAKE_ERROR_PREFIX,
    LAKE_PREFIX,
    MANIFEST_KEY,
    Buffering,
    lake_database,
    lake_table_input,
    quicksight_manifest,
    s3_destination,
    saved_queries,
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
    region: pulumi.Input[str]
    partition: pulumi.Input[str]
    lines: tuple[str, ...]  # the configured lines: the table's line projection
    retention_days: int  # how long the lake keeps rows: the table's year projection


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


def catalog_table_args(table: dict[str, Any]) -> dict[str, Any]:
    """Pulumi's `aws.glue.CatalogTable` arguments from a Glue TableInput."""
    def columns(given: list[dict[str, str]]) -> list[dict[str, Any]]:
        return [{"name": c["Name"], "type": c["Type"], "comment": c.get("Comment")}
                for c in given]

    storage = table["StorageDescriptor"]
    return {
        "name": table["Name"],
        "description": table.get("Description"),
        "table_type": table["TableType"],
        "parameters": table["Parameters"],
        "partition_keys": columns(table["PartitionKeys"]),
        "storage_descriptor": {
            "location": storage["Location"],
            "input_format": storage["InputFormat"],
            "output_format": storage["OutputFormat"],
            "columns": columns(storage["Columns"]),
            "ser_de_info": {
                "serialization_library": storage["SerdeInfo"]["SerializationLibrary"],
                "parameters": storage["SerdeInfo"].get("Parameters", {}),
            },
        },
    }


def query_statements(*, workgroup_arn: pulumi.Input[str], catalog_arn: pulumi.Input[str],
                     database_arn: pulumi.Input[str], table_arn: pulumi.Input[str],
                     bucket_arn: pulumi.Input[str]) -> list[iam.Statement]:
    """What an Athena query of the lake in this stack's workgroup needs: run it there,
    read the table's definition, list and read the lake, write and read its results."""
    return [
        iam.allow(["athena:StartQueryExecution", "athena:StopQueryExecution",
                   "athena:GetQueryExecution", "athena:GetQueryResults",
                   "athena:BatchGetQueryExecution", "athena:ListQueryExecutions",
                   "athena:GetWorkGroup", "athena:GetNamedQuery", "athena:BatchGetNamedQuery",
                   "athena:ListNamedQueries"], [workgroup_arn], sid="QueryInWorkgroup"),
        iam.allow(["glue:GetDatabase", "glue:GetDatabases", "glue:GetTable", "glue:GetTables",
                   "glue:GetPartition", "glue:GetPartitions", "glue:BatchGetPartition"],
                  [catalog_arn, database_arn, table_arn], sid="ReadLakeTable"),
        iam.allow(["s3:GetBucketLocation", "s3:ListBucket"], [bucket_arn], sid="ListLake"),
        iam.allow(["s3:GetObject"], [pulumi.Output.concat(bucket_arn, "/", LAKE_PREFIX, "*")],
                  sid="ReadLake"),
        iam.allow(["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload",
                   "s3:ListMultipartUploadParts"],
                  [pulumi.Output.concat(bucket_arn, "/", ATHENA_RESULTS_PREFIX, "*")],
                  sid="QueryResults"),
    ]


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
        self._lake_for_athena(args)
        self.register_outputs({"stream": self.stream.name, "manifest_uri": self.manifest_uri,
                               "database": self.database.name, "table": self.table.name,
                               "workgroup": self.workgroup.name})

    def _lake_for_athena(self, args: AnalyticsArgs) -> None:
        """The Glue database and table over the lake, the Athena workgroup that queries it
        (results under ATHENA_RESULTS_PREFIX, encrypted, and no client may send them
        elsewhere), its saved queries, and a policy to attach to whoever runs queries."""
        child = pulumi.ResourceOptions(parent=self)
        p = args.prefix
        self.database = aws.glue.CatalogDatabase(
            f"{p}-lake", name=lake_database(p),
            description=f"LineSight {p}: the results lake", opts=child)
        table = pulumi.Output.from_input(args.results_bucket).apply(
            lambda bucket: catalog_table_args(lake_table_input(
                bucket, lines=args.lines, retention_days=args.retention_days)))
        self.table = aws.glue.CatalogTable(
            f"{p}-lake", database_name=self.database.name, name=table["name"],
            description=table["description"], table_type=table["table_type"],
            parameters=table["parameters"], partition_keys=table["partition_keys"],
            storage_descriptor=table["storage_descriptor"], opts=child)
        self.workgroup = aws.athena.Workgroup(
            f"{p}-lake", name=f"{p}-lake",
            description=f"LineSight {p}: queries of the results lake",
            configuration={
                "enforce_workgroup_configuration": True,
                "publish_cloudwatch_metrics_enabled": True,
                "result_configuration": {
                    "output_location": pulumi.Output.concat(
                        "s3://", args.results_bucket, "/", ATHENA_RESULTS_PREFIX),
                    "encryption_configuration": {"encryption_option": "SSE_S3"},
                },
            },
            # saved queries and history go with it; the results in S3 stay (lifecycle)
            force_destroy=True,
            opts=child)
        self.saved_queries = [
            aws.athena.NamedQuery(
                f"{p}-{saved.key}", name=saved.name, description=saved.description,
                database=self.database.name, workgroup=self.workgroup.name,
                query=saved.sql, opts=child)
            for saved in saved_queries()]
        catalog_arn = pulumi.Output.concat("arn:", args.partition, ":glue:", args.region, ":",
                                           args.account_id, ":catalog")
        self.query_policy = aws.iam.Policy(
            f"{p}-lake-query",
            description="LineSight: query the results lake with Athena in this stack's "
                        "workgroup (people, or QuickSight's role)",
            policy=iam.policy_document(query_statements(
                workgroup_arn=self.workgroup.arn, catalog_arn=catalog_arn,
                database_arn=self.database.arn, table_arn=self.table.arn,
                bucket_arn=args.results_bucket_arn)),
            opts=child)
