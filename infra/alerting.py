"""Alerting: the KMS-encrypted SNS topic and its email subscriptions, routed per line.

The workflow publishes each alert with the message attributes `line` and `reason`
(`pipeline.workflow`). A stack-wide recipient gets everything, alarms included; a line's
recipient subscribes with the filter policy {"line": [its lines]} and gets only those.

The topic uses a customer-managed key, not alias/aws/sns: CloudWatch alarms can only
publish to an encrypted topic whose key policy lets cloudwatch.amazonaws.com use it, and
the AWS-managed key's policy cannot be changed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws


@dataclass(frozen=True)
class AlertingArgs:
    prefix: str
    subscriptions: Mapping[str, tuple[str, ...]]  # StackConfig.subscriptions()
    account_id: pulumi.Input[str]
    partition: pulumi.Input[str]


def key_policy(account_id: Any, partition: Any) -> dict[str, Any]:
    """The account administers the key (IAM policies then grant its use, e.g. to the
    workflow's role); CloudWatch may use it to publish alarm notifications."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "AccountAdministers", "Effect": "Allow",
             "Principal": {"AWS": pulumi.Output.concat("arn:", partition, ":iam::",
                                                       account_id, ":root")},
             "Action": "kms:*", "Resource": "*"},
            {"Sid": "CloudWatchAlarmsPublish", "Effect": "Allow",
             "Principal": {"Service": "cloudwatch.amazonaws.com"},
             "Action": ["kms:Decrypt", "kms:GenerateDataKey*"], "Resource": "*"},
        ],
    }


def filter_policy(lines: tuple[str, ...]) -> str | None:
    """The subscription filter for a line's recipient; None for a stack-wide one."""
    return json.dumps({"line": sorted(lines)}) if lines else None


def subscription_names(prefix: str, emails: Iterable[str]) -> dict[str, str]:
    """Each address's subscription resource name: readable, and where two addresses would
    read alike (`a.b@x.io`, `a-b@x.io`), told apart by a hash of the address.

    >>> subscription_names("ls", ["qa@x.io", "a.b@x.io", "a-b@x.io"])["qa@x.io"]
    'ls-alert-qa-x-io'
    >>> sorted(subscription_names("ls", ["a.b@x.io", "a-b@x.io"]).values())
    ['ls-alert-a-b-x-io-653cd779', 'ls-alert-a-b-x-io-cd24ec43']
    """
    emails = list(emails)
    readable = {email: f"{prefix}-alert-" + re.sub(r"[^a-z0-9]+", "-", email.lower()).strip("-")
                for email in emails}
    shared = Counter(readable.values())
    return {email: name if shared[name] == 1 else
            f"{name}-{hashlib.sha256(email.encode()).hexdigest()[:8]}"
            for email, name in readable.items()}


class Alerting(pulumi.ComponentResource):
    def __init__(self, name: str, args: AlertingArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("linesight:alerting:Alerting", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        p = args.prefix
        self.key = aws.kms.Key(
            f"{p}-alerts",
            description=f"Encrypts the {p} alert topic",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            policy=pulumi.Output.json_dumps(key_policy(args.account_id, args.partition)),
            opts=child)
        aws.kms.Alias(f"{p}-alerts", name=f"alias/{p}-alerts", target_key_id=self.key.key_id,
                      opts=child)
        self.topic = aws.sns.Topic(f"{p}-alerts", kms_master_key_id=self.key.arn, opts=child)
        self.subscriptions = []
        names = subscription_names(p, args.subscriptions)
        for email, lines in args.subscriptions.items():
            policy = filter_policy(lines)
            self.subscriptions.append(aws.sns.TopicSubscription(
                names[email],
                topic=self.topic.arn,
                protocol="email",
                endpoint=email,
                filter_policy=policy,
                filter_policy_scope="MessageAttributes" if policy else None,
                opts=child))
        self.register_outputs({"topic_arn": self.topic.arn})
