"""The whole environment: the components wired together, and the stack outputs.

Data flows one way: stack config -> these resources -> the functions' environment
(`StackConfig.lambda_environment`) -> the handlers -> `pipeline`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws
from chalice import Chalice

from infra import iam, package
from infra.alerting import Alerting, AlertingArgs
from infra.analytics import Analytics, AnalyticsArgs
from infra.api import ChaliceApp, ChaliceAppArgs, ModelAccess, load_app
from infra.config import PROJECT_DIR, read_stack_config
from infra.ingest import Ingest, IngestArgs
from infra.monitoring import Monitoring, MonitoringArgs
from infra.operators import Operators, OperatorsArgs
from infra.storage import Storage, StorageArgs
from infra.workflow import Workflow, WorkflowArgs
from pipeline.stackconfig import NAMESPACE, ConfigError, StackConfig

API_DIR = PROJECT_DIR / "api"
BUILD_DIR = PROJECT_DIR / "build" / "lambda"


@dataclass(frozen=True)
class AppPackage:
    app: Chalice
    code: package.Artifact
    layer: package.Artifact


def build_package(build_dir: Path = BUILD_DIR,
                  installer: package.Installer = package.pip_install) -> AppPackage:
    """Import the Chalice app, build its code zip and dependencies layer, check limits."""
    code = package.build_code(API_DIR, build_dir)
    layer = package.build_layer(API_DIR / "requirements.txt", build_dir, installer)
    package.check_limits(code, layer)
    return AppPackage(load_app(API_DIR), code, layer)


def main(build_dir: Path = BUILD_DIR,
         installer: package.Installer = package.pip_install) -> dict[str, pulumi.Output]:
    """The program: read the config, build the package, deploy, export the outputs."""
    config = read_stack_config()
    for warning in config.warnings():
        pulumi.log.warn(f"{NAMESPACE}:{warning}")
    outputs = deploy(config, build_package(build_dir, installer))
    for name, value in outputs.items():
        pulumi.export(name, value)
    return outputs


def deploy(config: StackConfig, app_package: AppPackage) -> dict[str, pulumi.Output]:
    """Compose the components for `config`; returns the stack outputs."""
    p = config.resource_prefix
    region = aws.get_region_output().region
    account_id = aws.get_caller_identity_output().account_id
    partition = aws.get_partition_output().partition

    model_dir = None
    if config.detector.model_path:
        model_dir = (PROJECT_DIR / config.detector.model_path).resolve()
        if not (model_dir / "model.json").is_file():
            raise ConfigError("modelPath", f"{model_dir} has no model.json; run "
                              "`linesight train` or point modelPath at a model directory")

    storage = Storage(p, StorageArgs(
        prefix=p, image_retention_days=config.image_retention_days,
        results_retention_days=config.results_retention_days,
        upload_origins=config.upload_origins, model_dir=model_dir))
    alerting = Alerting(p, AlertingArgs(
        prefix=p, subscriptions=config.subscriptions(), account_id=account_id,
        partition=partition))
    ingest = Ingest(p, IngestArgs(
        prefix=p, images_bucket=storage.images.bucket.id,
        images_bucket_arn=storage.images.bucket.arn,
        image_extensions=config.image_extensions, account_id=account_id))
    workflow = Workflow(p, WorkflowArgs(
        prefix=p, workflow_type=config.workflow_type, table_name=storage.table.name,
        table_arn=storage.table.arn, topic_arn=alerting.topic.arn,
        topic_key_arn=alerting.key.arn, ingest_queue_url=ingest.queue.url,
        ingest_queue_arn=ingest.queue.arn, account_id=account_id, partition=partition))
    analytics = Analytics(p, AnalyticsArgs(
        prefix=p, results_bucket=storage.results.bucket.bucket,
        results_bucket_arn=storage.results.bucket.arn, buffering=config.buffering,
        account_id=account_id, region=region, partition=partition,
        lines=tuple(config.line_cameras), retention_days=config.results_retention_days))

    model_uri = storage.model_uri if storage.model_uri is not None else config.detector.model_uri
    environment = pulumi.Output.all(
        images_bucket=storage.images.bucket.bucket, results_bucket=storage.results.bucket.bucket,
        table=storage.table.name, tokens_table=storage.tokens_table.name,
        state_machine_arn=workflow.state_machine.arn, topic_arn=alerting.topic.arn,
        firehose_stream=analytics.stream.name, failure_queue_url=workflow.failure_queue.url,
        lake_failure_queue_url=analytics.failure_queue.url,
        model_uri=model_uri,
    ).apply(lambda v: config.lambda_environment(**v))

    arns = iam.StackArns(
        images_bucket=storage.images.bucket.arn, results_bucket=storage.results.bucket.arn,
        table=storage.table.arn, table_stream=storage.table.stream_arn,
        tokens_table=storage.tokens_table.arn, ingest_queue=ingest.queue.arn,
        ingest_dead_letter_queue=ingest.dead_letter_queue.arn,
        state_machine=workflow.state_machine.arn,
        workflow_failure_queue=workflow.failure_queue.arn, topic=alerting.topic.arn,
        topic_key=alerting.key.arn, firehose=analytics.stream.arn,
        lake_failure_queue=analytics.failure_queue.arn)
    app = ChaliceApp(p, ChaliceAppArgs(
        prefix=p, app=app_package.app, code=app_package.code, layer=app_package.layer,
        environment=environment, region=region, arns=arns,
        model=_model_access(config, storage, partition),
        sagemaker_endpoint_arn=_endpoint_arn(config, partition, region, account_id),
        rate_limit=config.api_rate_limit, burst_limit=config.api_burst_limit))

    monitoring = Monitoring(p, MonitoringArgs(
        prefix=p, region=region, lines=config.line_cameras,
        anomaly_rates=config.anomaly_rate_alarms, latency_p95_ms=config.latency_alarm_ms,
        topic_arn=alerting.topic.arn, state_machine_arn=workflow.state_machine.arn,
        dead_letter_queues={
            "ingest-dlq": ingest.dead_letter_queue.name,
            "workflow-failures": workflow.failure_queue.name,
            "lake-failures": analytics.failure_queue.name,
        },
        ingest_function=app.functions["ingest"].name,
        silent_minutes=config.silent_camera_alarms))

    operators = Operators(p, OperatorsArgs(prefix=p, arns=arns))

    return {
        "api_url": app.url,
        "images_bucket": storage.images.bucket.bucket,
        "results_bucket": storage.results.bucket.bucket,
        "table": storage.table.name,
        "tokens_table": storage.tokens_table.name,
        "state_machine_arn": workflow.state_machine.arn,
        "topic_arn": alerting.topic.arn,
        "firehose_stream": analytics.stream.name,
        "ingest_queue_url": ingest.queue.url,
        # what `linesight dlq list|redrive --state` needs besides the above
        "region": region,
        "dlq_url": ingest.dead_letter_queue.url,
        "failure_queue_url": workflow.failure_queue.url,
        "lake_failure_queue_url": analytics.failure_queue.url,
        "dashboard_url": monitoring.dashboard_url,
        "manifest_uri": analytics.manifest_uri,
        # Athena (and QuickSight through it) over the whole lake, not just the manifest's
        # first 1,000 files
        "lake_database": analytics.database.name,
        "lake_table": analytics.table.name,
        "athena_workgroup": analytics.workgroup.name,
        "lake_query_policy_arn": analytics.query_policy.arn,
        "model_uri": pulumi.Output.from_input(model_uri or ""),
        "operator_policy_arn": operators.policy.arn,
        # what `linesight tokens create --state` checks a line and camera against
        "lines": {line: list(cameras) for line, cameras in config.line_cameras.items()},
        # what `linesight report --state` draws the low-confidence bands from
        "confidence_threshold": str(config.confidence_threshold),
        "line_policies": config.lines_env(),
        # where the report reads the stack's metrics
        "metrics_namespace": config.metrics_namespace,
    }


def _model_access(config: StackConfig, storage: Storage,
                  partition: pulumi.Output[str]) -> ModelAccess | None:
    if storage.model_bucket is not None:
        return ModelAccess(storage.model_bucket.bucket.arn, storage.model_key_prefix)
    if config.detector.model_uri:
        bucket, _, prefix = config.detector.model_uri.removeprefix("s3://").partition("/")
        prefix = prefix.strip("/")
        return ModelAccess(pulumi.Output.concat("arn:", partition, ":s3:::", bucket),
                           prefix + "/" if prefix else "", config.detector.model_kms_key_arn)
    return None


def _endpoint_arn(config: StackConfig, partition: pulumi.Output[str],
                  region: pulumi.Output[str], account_id: pulumi.Output[str]
                  ) -> pulumi.Output[str] | None:
    endpoint = config.detector.sagemaker_endpoint
    if not endpoint:
        return None
    # SageMaker ARNs spell the endpoint name in lower case.
    return pulumi.Output.concat("arn:", partition, ":sagemaker:", region, ":", account_id,
                                ":endpoint/", endpoint.lower())
