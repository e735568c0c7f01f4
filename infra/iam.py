"""IAM as data: trust policies, roles with one inline policy, statements scoped to ARNs.

Statements are plain dicts whose `Resource` may hold Outputs; `pulumi.Output.json_dumps`
resolves them, so no ARN is ever formatted into a string by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

# Actions that accept no resource-level permission (AWS's Service Authorization
# Reference lists them with Resource "*"): X-Ray trace writes, the CloudWatch Logs
# delivery calls Step Functions makes to set up its own logging, and the metric reads of
# `linesight report`. Tests allow "*" only here.
UNSCOPED_ACTIONS = frozenset({
    "cloudwatch:GetMetricStatistics",
    "cloudwatch:ListMetrics",
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
})

Statement = dict[str, Any]


@dataclass(frozen=True)
class StackArns:
    """The ARNs of one stack's data and messaging resources: what the functions' roles
    (`infra.api`) and the operators' policy (`infra.operators`) are scoped to."""

    images_bucket: pulumi.Input[str]
    results_bucket: pulumi.Input[str]
    table: pulumi.Input[str]
    table_stream: pulumi.Input[str]
    tokens_table: pulumi.Input[str]
    ingest_queue: pulumi.Input[str]
    ingest_dead_letter_queue: pulumi.Input[str]
    state_machine: pulumi.Input[str]
    workflow_failure_queue: pulumi.Input[str]
    topic: pulumi.Input[str]
    topic_key: pulumi.Input[str]
    firehose: pulumi.Input[str]
    lake_failure_queue: pulumi.Input[str]

    @property
    def dead_letter_queues(self) -> tuple[pulumi.Input[str], ...]:
        """Where the pipeline parks what it could not finish: ingest, workflow, lake."""
        return (self.ingest_dead_letter_queue, self.workflow_failure_queue,
                self.lake_failure_queue)


def allow(actions: Sequence[str], resources: Sequence[Any], *, sid: str = "",
          condition: dict[str, Any] | None = None) -> Statement:
    statement: Statement = {"Effect": "Allow", "Action": list(actions),
                            "Resource": list(resources)}
    if sid:
        statement["Sid"] = sid
    if condition:
        statement["Condition"] = condition
    return statement


def xray_writes() -> Statement:
    return allow(["xray:PutTraceSegments", "xray:PutTelemetryRecords"], ["*"], sid="Tracing")


def assume_role_policy(service: str, condition: dict[str, Any] | None = None) -> pulumi.Output:
    statement: Statement = {"Effect": "Allow", "Principal": {"Service": service},
                            "Action": "sts:AssumeRole"}
    if condition:
        statement["Condition"] = condition
    return pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": [statement]})


def policy_document(statements: Sequence[Statement]) -> pulumi.Output:
    return pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": list(statements)})


@dataclass(frozen=True)
class ServiceRole:
    role: aws.iam.Role
    policy: aws.iam.RolePolicy  # depend on it: a role is only usable once this exists

    @property
    def arn(self) -> pulumi.Output[str]:
        return self.role.arn


def service_role(name: str, *, service: str, statements: Sequence[Statement],
                 parent: pulumi.Resource, description: str,
                 trust_condition: dict[str, Any] | None = None) -> ServiceRole:
    """A role `service` can assume, with one inline policy holding `statements`."""
    role = aws.iam.Role(
        name,
        description=description,
        assume_role_policy=assume_role_policy(service, trust_condition),
        opts=pulumi.ResourceOptions(parent=parent),
    )
    policy = aws.iam.RolePolicy(
        name,
        role=role.id,
        policy=policy_document(statements),
        opts=pulumi.ResourceOptions(parent=role),
    )
    return ServiceRole(role, policy)
