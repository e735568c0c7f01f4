"""Monitoring: the CloudWatch dashboard (`pipeline.dashboard`) and alarms
(`pipeline.alarms`), the same definitions the local stack uses.

Both definitions are pure functions of plain strings. The names and ARNs they need are
Outputs here, so they are called inside `.apply`; the alarms' names depend only on the
config, so the resources themselves are declared up front (and show in a preview).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from pipeline.alarms import alarm_definitions
from pipeline.dashboard import dashboard_body, dashboard_name


@dataclass(frozen=True)
class MonitoringArgs:
    prefix: str
    region: pulumi.Input[str]
    lines: Mapping[str, tuple[str, ...]]
    anomaly_rates: Mapping[str, float]
    latency_p95_ms: int
    topic_arn: pulumi.Input[str]
    state_machine_arn: pulumi.Input[str]
    dead_letter_queues: Mapping[str, pulumi.Input[str]]  # {role: queue name}
    ingest_function: pulumi.Input[str]
    silent_minutes: Mapping[str, int] = field(default_factory=dict)  # {line: minutes}


def metric_alarm_args(definition: Mapping[str, Any]) -> dict[str, Any]:
    """`aws.cloudwatch.MetricAlarm` arguments from a PutMetricAlarm request."""
    def dims(dimensions: list[dict[str, str]]) -> dict[str, str]:
        return {d["Name"]: d["Value"] for d in dimensions}

    args: dict[str, Any] = {
        "name": definition["AlarmName"],
        "alarm_description": definition.get("AlarmDescription"),
        "comparison_operator": definition["ComparisonOperator"],
        "threshold": definition["Threshold"],
        "evaluation_periods": definition["EvaluationPeriods"],
        "datapoints_to_alarm": definition.get("DatapointsToAlarm"),
        "treat_missing_data": definition.get("TreatMissingData"),
        "alarm_actions": definition.get("AlarmActions", []),
        "ok_actions": definition.get("OKActions", []),
    }
    if "Metrics" in definition:
        queries = []
        for query in definition["Metrics"]:
            item: dict[str, Any] = {"id": query["Id"],
                                    "return_data": query.get("ReturnData", False)}
            if "Expression" in query:
                item["expression"] = query["Expression"]
                item["label"] = query.get("Label")
            else:
                stat = query["MetricStat"]
                item["metric"] = {
                    "namespace": stat["Metric"]["Namespace"],
                    "metric_name": stat["Metric"]["MetricName"],
                    "dimensions": dims(stat["Metric"]["Dimensions"]),
                    "period": stat["Period"],
                    "stat": stat["Stat"],
                }
            queries.append(item)
        args["metric_queries"] = queries
    else:
        args.update({
            "namespace": definition["Namespace"],
            "metric_name": definition["MetricName"],
            "dimensions": dims(definition["Dimensions"]),
            "period": definition["Period"],
            "statistic": definition.get("Statistic"),
            "extended_statistic": definition.get("ExtendedStatistic"),
        })
    return args


def dashboard_url(region: str, name: str) -> str:
    return (f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}"
            f"#dashboards:name={name}")


class Monitoring(pulumi.ComponentResource):
    def __init__(self, name: str, args: MonitoringArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("linesight:monitoring:Monitoring", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        roles = list(args.dead_letter_queues)
        resolved = pulumi.Output.all(
            region=args.region, topic_arn=args.topic_arn,
            state_machine_arn=args.state_machine_arn, ingest_function=args.ingest_function,
            queues=pulumi.Output.all(*args.dead_letter_queues.values()))

        board_name = pulumi.Output.from_input(args.region).apply(
            lambda region: dashboard_name(args.prefix, region))
        self.dashboard = aws.cloudwatch.Dashboard(
            f"{args.prefix}-dashboard",
            dashboard_name=board_name,
            dashboard_body=resolved.apply(lambda v: json.dumps(dashboard_body(
                region=v["region"], prefix=args.prefix, lines=args.lines,
                state_machine_arn=v["state_machine_arn"], topic_arn=v["topic_arn"],
                dead_letter_queues=dict(zip(roles, v["queues"], strict=True))))),
            opts=child)
        self.dashboard_url = pulumi.Output.from_input(args.region).apply(
            lambda region: dashboard_url(region, dashboard_name(args.prefix, region)))

        def definitions(v: Mapping[str, Any]) -> list[dict[str, Any]]:
            return alarm_definitions(
                prefix=args.prefix, lines=args.lines, anomaly_rates=args.anomaly_rates,
                topic_arn=v["topic_arn"], state_machine_arn=v["state_machine_arn"],
                dead_letter_queues=dict(zip(roles, v["queues"], strict=True)),
                ingest_function=v["ingest_function"], latency_p95_ms=args.latency_p95_ms,
                silent_minutes=args.silent_minutes)

        # The shape of every alarm is known now; only the names and ARNs inside wait.
        placeholders = {"topic_arn": "-", "state_machine_arn": "-", "ingest_function": "-",
                        "queues": ["-"] * len(roles)}
        resolved_args = resolved.apply(lambda v: [metric_alarm_args(d) for d in definitions(v)])
        self.alarms = []
        for index, shape in enumerate(metric_alarm_args(d) for d in definitions(placeholders)):
            inputs = {key: resolved_args.apply(lambda all_args, i=index, k=key: all_args[i][k])
                      for key, value in shape.items() if value is not None}
            self.alarms.append(aws.cloudwatch.MetricAlarm(shape["name"], **inputs, opts=child))
        self.register_outputs({"dashboard_url": self.dashboard_url})
