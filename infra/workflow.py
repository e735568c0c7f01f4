"""The workflow: the Step Functions state machine from `pipeline.workflow` (the local stack
runs the same ASL), its failure queue, its log group and its role. The role may also read
a record and send to the ingest queue: a photo that lost its id to another is sent back.

Logging goes to a log group under /aws/vendedlogs/ (the destination ARN needs the `:*`
suffix) and every execution is traced with X-Ray.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra import iam
from pipeline.workflow import state_machine_definition

LOG_RETENTION_DAYS = 30
FAILURE_RETENTION_SECONDS = 14 * 24 * 3600  # SQS's maximum: time for a person to look


@dataclass(frozen=True)
class WorkflowArgs:
    prefix: str
    workflow_type: str  # EXPRESS or STANDARD
    table_name: pulumi.Input[str]
    table_arn: pulumi.Input[str]
    topic_arn: pulumi.Input[str]
    topic_key_arn: pulumi.Input[str]
    ingest_queue_url: pulumi.Input[str]
    ingest_queue_arn: pulumi.Input[str]
    account_id: pulumi.Input[str]
    partition: pulumi.Input[str]


def role_statements(*, table_arn: pulumi.Input[str], topic_arn: pulumi.Input[str],
                    topic_key_arn: pulumi.Input[str], failure_queue_arn: pulumi.Input[str],
                    ingest_queue_arn: pulumi.Input[str]) -> list[iam.Statement]:
    return [
        iam.allow(["dynamodb:PutItem"], [table_arn], sid="RecordResult"),
        iam.allow(["dynamodb:GetItem"], [table_arn], sid="ReadRecord"),
        iam.allow(["sqs:SendMessage"], [ingest_queue_arn], sid="RequeueUpload"),
        iam.allow(["sns:Publish"], [topic_arn], sid="PublishAlert"),
        iam.allow(["kms:GenerateDataKey*", "kms:Decrypt"], [topic_key_arn],
                  sid="EncryptedTopic"),
        iam.allow(["sqs:SendMessage"], [failure_queue_arn], sid="SendToFailureQueue"),
        iam.allow(["logs:CreateLogDelivery", "logs:GetLogDelivery", "logs:UpdateLogDelivery",
                   "logs:DeleteLogDelivery", "logs:ListLogDeliveries",
                   "logs:PutResourcePolicy", "logs:DescribeResourcePolicies",
                   "logs:DescribeLogGroups"], ["*"], sid="ExecutionLogging"),
        iam.allow(["xray:PutTraceSegments", "xray:PutTelemetryRecords",
                   "xray:GetSamplingRules", "xray:GetSamplingTargets"], ["*"], sid="Tracing"),
    ]


class Workflow(pulumi.ComponentResource):
    def __init__(self, name: str, args: WorkflowArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("linesight:workflow:Workflow", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        p = args.prefix
        self.failure_queue = aws.sqs.Queue(
            f"{p}-workflow-failures",
            message_retention_seconds=FAILURE_RETENTION_SECONDS,
            sqs_managed_sse_enabled=True,
            opts=child)
        self.log_group = aws.cloudwatch.LogGroup(
            f"{p}-workflow",
            name=f"/aws/vendedlogs/states/{p}-workflow",
            retention_in_days=LOG_RETENTION_DAYS,
            opts=child)
        self.role = iam.service_role(
            f"{p}-workflow",
            service="states.amazonaws.com",
            description="LineSight workflow: record results, publish alerts",
            statements=role_statements(table_arn=args.table_arn, topic_arn=args.topic_arn,
                                       topic_key_arn=args.topic_key_arn,
                                       failure_queue_arn=self.failure_queue.arn,
                                       ingest_queue_arn=args.ingest_queue_arn),
            trust_condition={"StringEquals": {"aws:SourceAccount": args.account_id}},
            parent=self)
        definition = pulumi.Output.all(
            args.table_name, args.topic_arn, self.failure_queue.url, args.ingest_queue_url,
            args.partition,
        ).apply(lambda v: json.dumps(state_machine_definition(
            table_name=v[0], topic_arn=v[1], failure_queue_url=v[2], ingest_queue_url=v[3],
            partition=v[4])))
        self.state_machine = aws.sfn.StateMachine(
            f"{p}-workflow",
            type=args.workflow_type,
            role_arn=self.role.arn,
            definition=definition,
            logging_configuration={
                "log_destination": pulumi.Output.concat(self.log_group.arn, ":*"),
                "include_execution_data": True,
                "level": "ERROR",
            },
            tracing_configuration={"enabled": True},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.role.policy]))
        self.register_outputs({"state_machine_arn": self.state_machine.arn})
