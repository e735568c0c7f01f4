"""The operators' policy: what the `linesight` CLI needs against this stack, and no more.

A managed policy, not a role: a plant attaches it to the group, role or SSO permission set
its operators already use (`operator_policy_arn` among the stack outputs). Each statement
names the commands that need it; everything is scoped to this stack's ARNs except
CloudWatch's metric reads, which accept no resource.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra import iam
from pipeline.ingest import HEATMAP_PREFIX


@dataclass(frozen=True)
class OperatorsArgs:
    prefix: str
    arns: iam.StackArns


def operator_statements(args: OperatorsArgs) -> list[iam.Statement]:
    images = pulumi.Output.concat(args.arns.images_bucket, "/*")
    heatmaps = pulumi.Output.concat(args.arns.results_bucket, "/", HEATMAP_PREFIX, "*")
    indexes = pulumi.Output.concat(args.arns.table, "/index/*")
    return [
        # tokens create | list | revoke
        iam.allow(["dynamodb:PutItem", "dynamodb:Scan", "dynamodb:UpdateItem"],
                  [args.arns.tokens_table], sid="Tokens"),
        # results, report, export-dataset (a scan without --line), review; dlq redrive
        # looks a record up
        iam.allow(["dynamodb:GetItem", "dynamodb:Query", "dynamodb:Scan"],
                  [args.arns.table, indexes], sid="ReadResults"),
        iam.allow(["dynamodb:UpdateItem"], [args.arns.table], sid="Review"),
        # report and export-dataset read the photos (the version each record judged) and
        # heatmaps; dlq list reads why an image failed (its tag), and dlq redrive the
        # version a parked photo names (HeadObject); listing makes a deleted image a 404,
        # not a 403
        iam.allow(["s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectTagging"], [images],
                  sid="ReadImages"),
        iam.allow(["s3:ListBucket"], [args.arns.images_bucket], sid="ListImages"),
        iam.allow(["s3:GetObject"], [heatmaps], sid="ReadHeatmaps"),
        # report's totals
        iam.allow(["cloudwatch:GetMetricStatistics", "cloudwatch:ListMetrics"], ["*"],
                  sid="ReadMetrics"),
        # dlq list | redrive: read and move dead letters
        iam.allow(["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
                   "sqs:SendMessage", "sqs:GetQueueAttributes"],
                  list(args.arns.dead_letter_queues), sid="DeadLetters"),
        # dlq redrive: what each kind of dead letter is finished with
        iam.allow(["sqs:SendMessage"], [args.arns.ingest_queue], sid="RedriveIngest"),
        iam.allow(["states:StartExecution"], [args.arns.state_machine], sid="RedriveWorkflow"),
        iam.allow(["sns:Publish"], [args.arns.topic], sid="RedriveAlert"),
        iam.allow(["kms:GenerateDataKey*", "kms:Decrypt"], [args.arns.topic_key],
                  sid="EncryptedTopic"),
        iam.allow(["firehose:PutRecordBatch"], [args.arns.firehose], sid="RedriveLake"),
        iam.allow(["dynamodb:DescribeStream", "dynamodb:GetShardIterator",
                   "dynamodb:GetRecords"], [args.arns.table_stream], sid="RereadStream"),
    ]


class Operators(pulumi.ComponentResource):
    def __init__(self, name: str, args: OperatorsArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("linesight:operators:Operators", name, None, opts)
        self.policy = aws.iam.Policy(
            f"{args.prefix}-operator",
            description="LineSight operators: the linesight CLI (tokens, results, report, "
                        "review, export-dataset, dlq) against this stack",
            policy=iam.policy_document(operator_statements(args)),
            opts=pulumi.ResourceOptions(parent=self))
        self.register_outputs({"policy_arn": self.policy.arn})
