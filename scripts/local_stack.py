"""The whole pipeline on this machine: moto server + the real handlers + Chalice's local server.

`LocalStack` starts a moto server on 127.0.0.1 (a free port) with Step Functions execution
enabled (`scripts/emulator.py`: on a thread here, or in its own process with
`moto_process=True`, which the load benchmark uses because it does not share this
process's GIL), provisions the same resources the Pulumi program deploys from the same
definitions in `pipeline/` (table schema, ASL, Firehose destination, QuickSight manifest,
the lake's Glue table, dashboard, alarms), points the handlers at it through the standard
`AWS_ENDPOINT_URL`, serves the Chalice app, and runs the event-source pollers.
`linesight local up` runs it until Ctrl-C; the demo and the end-to-end tests use it as a
context manager.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import socket
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from chalice.local import (
    ChaliceRequestHandler,
    CustomLocalChalice,
    LocalChalice,
    LocalDevServer,
    ThreadedHTTPServer,
)

from pipeline import alarms, analytics, aws, dashboard, ingest, tables, tokens, workflow
from pipeline.settings import METRICS_NAMESPACE, VARIABLES, current
from pipeline.stackconfig import StackConfig, parse_stack_config
from scripts.emulator import OBSERVER_AGENT, Emulator
from scripts.event_sources import MetricsSink, SqsPoller, StreamPoller

REPO = Path(__file__).resolve().parents[1]
API_DIR = REPO / "api"
STATE_FILE = REPO / ".linesight" / "local.json"
ACCOUNT = "123456789012"
# The lake stream mapping's batching window here. The deployed mapping waits up to 5 s
# (infra/api.py STREAM_BATCHING_WINDOW_SECONDS); 1 s keeps the demo and tests quick while
# still handing the to_lake handler a batch per second rather than a call per record.
LAKE_BATCHING_WINDOW_SECONDS = 1.0
log = logging.getLogger("linesight.local")


@dataclass(frozen=True)
class Topology:
    """What the local stack serves: lines, cameras and their policies. It is turned into
    the same validated `StackConfig` a Pulumi stack reads (`to_stack_config`), or read
    from one (`from_stack_config`, e.g. Pulumi.plant-a.yaml)."""

    lines: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {"line-1": ("cam-1", "cam-2"), "line-2": ("cam-3", "cam-4")})
    line_policies: dict[str, dict[str, float]] = field(default_factory=dict)
    confidence_threshold: float = 0.20
    max_upload_bytes: int = 15 * 1024 * 1024
    image_extensions: tuple[str, ...] = ("jpg", "jpeg", "png")
    anomaly_rate_alarm: float = 0.25
    latency_p95_alarm_ms: float = 30000.0
    workflow_type: str = "EXPRESS"
    alert_on_invalid: bool = False

    def to_stack_config(self, model_dir: Path, prefix: str = "linesight-local") -> StackConfig:
        return parse_stack_config({
            "resourcePrefix": prefix,
            "confidenceThreshold": self.confidence_threshold,
            "maxUploadBytes": self.max_upload_bytes,
            "imageExtensions": list(self.image_extensions),
            "anomalyRateAlarm": self.anomaly_rate_alarm,
            "latencyAlarmMs": int(self.latency_p95_alarm_ms),
            "workflowType": self.workflow_type,
            "alertOnInvalid": self.alert_on_invalid,
            "modelPath": str(model_dir),
            "lines": [{"id": line, "cameras": list(cameras),
                       **self.line_policies.get(line, {})}
                      for line, cameras in self.lines.items()],
        }, stack="local")

    @classmethod
    def from_stack_config(cls, config: StackConfig) -> Topology:
        policies = {}
        for line in config.lines:
            policy = {}
            if line.threshold is not None:
                policy["threshold"] = line.threshold
            if line.confidence_threshold is not None:
                policy["confidenceThreshold"] = line.confidence_threshold
            if line.silent_camera_minutes:
                policy["silentCameraMinutes"] = line.silent_camera_minutes
            # each line's own rate: the stack's default is already resolved into it
            policy["anomalyRateAlarm"] = line.anomaly_rate_alarm
            policies[line.id] = policy
        return cls(lines=dict(config.line_cameras), line_policies=policies,
                   confidence_threshold=config.confidence_threshold,
                   max_upload_bytes=config.max_upload_bytes,
                   image_extensions=config.image_extensions,
                   latency_p95_alarm_ms=float(config.latency_alarm_ms),
                   workflow_type=config.workflow_type,
                   alert_on_invalid=config.alert_on_invalid)


@dataclass(frozen=True)
class Names:
    prefix: str = "linesight-local"

    @property
    def images_bucket(self) -> str:
        return f"{self.prefix}-images"

    @property
    def results_bucket(self) -> str:
        return f"{self.prefix}-results"

    @property
    def table(self) -> str:
        return f"{self.prefix}-results"

    @property
    def tokens_table(self) -> str:
        return f"{self.prefix}-tokens"

    @property
    def ingest_queue(self) -> str:
        return f"{self.prefix}-ingest"

    @property
    def ingest_dlq(self) -> str:
        return f"{self.prefix}-ingest-dlq"

    @property
    def failure_queue(self) -> str:
        return f"{self.prefix}-workflow-failures"

    @property
    def lake_failure_queue(self) -> str:
        return f"{self.prefix}-lake-failures"

    @property
    def alerts_tap_queue(self) -> str:
        return f"{self.prefix}-alerts-tap"

    @property
    def topic(self) -> str:
        return f"{self.prefix}-alerts"

    @property
    def firehose(self) -> str:
        return f"{self.prefix}-lake"

    @property
    def state_machine(self) -> str:
        return f"{self.prefix}-workflow"

    def dashboard(self, region: str) -> str:
        return dashboard.dashboard_name(self.prefix, region)

    @property
    def lake_database(self) -> str:
        return analytics.lake_database(self.prefix)


@dataclass
class StackInfo:
    """What `.linesight/local.json` holds."""

    api_url: str
    aws_endpoint_url: str
    region: str
    images_bucket: str
    results_bucket: str
    table: str
    tokens_table: str
    queue_url: str
    dlq_url: str
    failure_queue_url: str
    lake_failure_queue_url: str
    alerts_queue_url: str
    topic_arn: str
    state_machine_arn: str
    firehose_stream: str
    dashboard: str
    model_uri: str
    token: str
    line_id: str
    camera_id: str
    camera_tokens: dict[str, str] = field(default_factory=dict)
    reviewer_tokens: dict[str, str] = field(default_factory=dict)  # {line: token}
    environment: dict[str, str] = field(default_factory=dict)
    lines: dict[str, list[str]] = field(default_factory=dict)  # {line: its cameras}

    def __post_init__(self) -> None:
        """A file edited by hand or by something else is refused here (ValueError naming
        the field), not later as an AttributeError in whichever command reads it."""
        for name, value in ((f.name, getattr(self, f.name)) for f in fields(self)):
            if name in ("camera_tokens", "reviewer_tokens", "environment"):
                good = isinstance(value, dict) and all(
                    isinstance(k, str) and isinstance(v, str) for k, v in value.items())
                shape = "an object of strings"
            elif name == "lines":
                good, shape = _camera_lists(value), "an object of camera lists"
            else:
                good, shape = isinstance(value, str), "a string"
            if not good:
                raise ValueError(f"{name} must be {shape}, got {value!r:.60}")


def _camera_lists(value: Any) -> bool:
    """Whether `value` is a {line: [camera, ...]} map, as the `lines` output is."""
    return isinstance(value, dict) and all(
        isinstance(v, list) and all(isinstance(c, str) for c in v) for v in value.values())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(url: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up: {exc}") from None
            time.sleep(0.1)


class LocalStack:
    def __init__(self, model_dir: Path, topology: Topology | None = None, *,
                 region: str = "us-east-1", names: Names | None = None,
                 api_port: int = 0, moto_port: int = 0, ingest_workers: int = 2,
                 visibility_timeout: int = 5, max_receive_count: int = 3,
                 write_state: bool = True, quiet: bool = False,
                 moto_process: bool = False) -> None:
        self.model_dir = Path(model_dir)
        self.topology = topology or Topology()
        self.region = region
        self.names = names or Names()
        self.api_port = api_port or free_port()
        self.moto_port = moto_port or free_port()
        self.ingest_workers = ingest_workers
        self.visibility_timeout = visibility_timeout
        self.max_receive_count = max_receive_count
        self.write_state = write_state
        self.quiet = quiet
        self.moto_process = moto_process
        self.stop_event = threading.Event()
        self.pollers: list[Any] = []
        self.metrics: MetricsSink | None = None
        self.info: StackInfo | None = None
        self._moto: Emulator | None = None
        self._api: Any = None
        self._saved_env: dict[str, str | None] = {}

    # -- lifecycle --

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.moto_port}"

    def client(self, service: str, *, observer: bool = False) -> Any:
        """A client of the stack's emulator. An `observer`'s requests (a benchmark reading
        back what the pipeline did) are counted apart from the pipeline's."""
        return boto3.client(service, endpoint_url=self.endpoint, region_name=self.region,
                            aws_access_key_id="local", aws_secret_access_key="local",
                            config=Config(s3={"addressing_style": "path"},
                                          user_agent_extra=OBSERVER_AGENT if observer
                                          else None))

    @property
    def emulator(self) -> Emulator:
        assert self._moto is not None, "the stack is not started"
        return self._moto

    def start(self) -> StackInfo:
        """Start the emulator, provision, serve the API and run the pollers. ArtifactError,
        before anything starts, when the model is no whole `linesight train` model: the
        functions would fail on every upload, as a deployed stack's would."""
        from pipeline.detector import artifact

        artifact.load(self.model_dir)
        # Another stack that still runs keeps its state file: this one runs without one,
        # or `linesight` commands would go to this stack and find none once it stopped.
        self.write_state = self.write_state and not another_running()
        # moto's Step Functions engine calls the other services through localhost:MOTO_PORT.
        self._saved_env.setdefault("MOTO_PORT", os.environ.get("MOTO_PORT"))
        self._moto = Emulator("127.0.0.1", self.moto_port, in_process=not self.moto_process)
        self._moto.start()
        _wait_for(f"{self.endpoint}/moto-api/")
        # moto's backends are per process: start from nothing even if a stack ran before.
        urllib.request.urlopen(urllib.request.Request(
            f"{self.endpoint}/moto-api/reset", method="POST"), timeout=5).close()
        request = urllib.request.Request(
            f"{self.endpoint}/moto-api/config", method="POST",
            data=json.dumps({"stepfunctions": {"execute_state_machine": True}}).encode(),
            headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=5).close()
        info = self.provision()
        # The only local difference: the endpoint (and fake credentials for it).
        info.environment = {**self.handler_environment(info),
                            "AWS_ENDPOINT_URL": self.endpoint,
                            "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}
        self._set_environment(info)
        info.camera_tokens = self._create_tokens(info.tokens_table)
        info.reviewer_tokens = self._create_reviewer_tokens(info.tokens_table)
        info.token = info.camera_tokens[f"{info.line_id}/{info.camera_id}"]
        self._start_api()
        self._start_pollers(info)
        self.info = info
        if self.write_state:
            STATE_FILE.parent.mkdir(parents=True, exist_ok=True)
            STATE_FILE.write_text(json.dumps(asdict(info), indent=2))
        return info

    def stop(self) -> None:
        self.stop_event.set()
        for poller in self.pollers:
            poller.join(timeout=5)
        if self.metrics is not None:  # after the pollers: their last metrics go out too
            self.metrics.stop_event.set()
            self.metrics.join(timeout=5)
        if self._api is not None:
            self._api.shutdown()
        if self._moto is not None:
            self._moto.stop()
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        aws.reset()
        current.cache_clear()
        if self.write_state and self.info is not None:
            self._forget_state(self.info)

    @staticmethod
    def _forget_state(info: StackInfo) -> None:
        """Remove the state file, so that nothing is pointed at a stopped stack, if it is
        this stack's (its emulator's port is drawn afresh each time), not a later one's."""
        try:
            if read_state(STATE_FILE).aws_endpoint_url == info.aws_endpoint_url:
                STATE_FILE.unlink()
        except (OSError, StateFileError):  # gone, or being written by another stack
            pass

    # -- provisioning: the same definitions the Pulumi program deploys --

    def provision(self, client: Callable[[str], Any] | None = None) -> StackInfo:
        """Create every resource. `client` makes boto3 clients (default: the moto server's);
        the functional tests pass in-process moto clients to provision the same way."""
        client = client or self.client
        names, topo = self.names, self.topology
        s3, sqs, ddb = client("s3"), client("sqs"), client("dynamodb")
        sns, sfn = client("sns"), client("stepfunctions")
        firehose, iam = client("firehose"), client("iam")

        for bucket in (names.images_bucket, names.results_bucket):
            s3.create_bucket(Bucket=bucket)
        # as deployed (infra/storage.py): a key written again keeps the version judged.
        # (moto's S3 notifications carry no versionId, so here ingest reads the current
        # object; the functional tests' events carry one, as S3's do.)
        s3.put_bucket_versioning(Bucket=names.images_bucket,
                                 VersioningConfiguration={"Status": "Enabled"})
        dlq_url = sqs.create_queue(QueueName=names.ingest_dlq)["QueueUrl"]
        queue_url = sqs.create_queue(QueueName=names.ingest_queue, Attributes={
            "VisibilityTimeout": str(self.visibility_timeout),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": self._queue_arn(names.ingest_dlq),
                                         "maxReceiveCount": str(self.max_receive_count)}),
        })["QueueUrl"]
        failure_url = sqs.create_queue(QueueName=names.failure_queue)["QueueUrl"]
        lake_failure_url = sqs.create_queue(QueueName=names.lake_failure_queue)["QueueUrl"]
        alerts_url = sqs.create_queue(QueueName=names.alerts_tap_queue)["QueueUrl"]
        s3.put_bucket_notification_configuration(
            Bucket=names.images_bucket,
            NotificationConfiguration={"QueueConfigurations": [
                {"QueueArn": self._queue_arn(names.ingest_queue), "Events": ["s3:ObjectCreated:*"],
                 "Filter": {"Key": {"FilterRules": [{"Name": "suffix", "Value": f".{ext}"}]}}}
                for ext in topo.image_extensions]})

        ddb.create_table(**tables.create_table_args(names.table))
        ddb.create_table(**tokens.tokens_table_args(names.tokens_table))

        topic_arn = sns.create_topic(Name=names.topic)["TopicArn"]
        # The alert tap: every alert lands here too, so the demo reads alerts back.
        sns.subscribe(TopicArn=topic_arn, Protocol="sqs",
                      Endpoint=self._queue_arn(names.alerts_tap_queue))

        role = iam.create_role(RoleName=f"{names.prefix}-local", AssumeRolePolicyDocument="{}")
        role_arn = role["Role"]["Arn"]
        firehose.create_delivery_stream(
            DeliveryStreamName=names.firehose, DeliveryStreamType="DirectPut",
            ExtendedS3DestinationConfiguration=analytics.s3_destination(
                bucket_arn=f"arn:aws:s3:::{names.results_bucket}", role_arn=role_arn,
                buffering=analytics.Buffering()))
        s3.put_object(Bucket=names.results_bucket, Key=analytics.MANIFEST_KEY,
                      Body=json.dumps(analytics.quicksight_manifest(names.results_bucket),
                                      indent=2).encode(), ContentType="application/json")
        # The lake's Glue table, as deployed (moto stores it; it runs no Athena query).
        # Nothing expires here, so the table projects every year (retention 0).
        glue = client("glue")
        glue.create_database(DatabaseInput={"Name": names.lake_database})
        glue.create_table(DatabaseName=names.lake_database, TableInput=analytics.lake_table_input(
            names.results_bucket, lines=list(topo.lines), retention_days=0))

        definition = workflow.state_machine_definition(
            table_name=names.table, topic_arn=topic_arn, failure_queue_url=failure_url,
            ingest_queue_url=queue_url, partition="aws")  # the emulator's, as in the ARNs above
        state_machine_arn = sfn.create_state_machine(
            name=names.state_machine, definition=json.dumps(definition), roleArn=role_arn,
            type=topo.workflow_type)["stateMachineArn"]

        model_uri = self._upload_model(s3)
        self._provision_monitoring(client("cloudwatch"), names, topic_arn, state_machine_arn)

        first_line = next(iter(topo.lines))
        first_camera = topo.lines[first_line][0]
        return StackInfo(
            api_url=f"http://127.0.0.1:{self.api_port}", aws_endpoint_url=self.endpoint,
            region=self.region, images_bucket=names.images_bucket,
            results_bucket=names.results_bucket, table=names.table,
            tokens_table=names.tokens_table, queue_url=queue_url, dlq_url=dlq_url,
            failure_queue_url=failure_url, lake_failure_queue_url=lake_failure_url,
            alerts_queue_url=alerts_url, topic_arn=topic_arn,
            state_machine_arn=state_machine_arn, firehose_stream=names.firehose,
            dashboard=names.dashboard(self.region), model_uri=model_uri,
            token="", line_id=first_line, camera_id=first_camera,
            lines={line: list(cameras) for line, cameras in topo.lines.items()},
        )

    def _queue_arn(self, name: str) -> str:
        return f"arn:aws:sqs:{self.region}:{ACCOUNT}:{name}"

    def _upload_model(self, s3: Any) -> str:
        if not (self.model_dir / "model.json").exists():
            raise FileNotFoundError(
                f"no model in {self.model_dir}: train one with `linesight train`")
        # Immutable prefix per model version: a warm function's cached copy is never stale.
        version = json.loads((self.model_dir / "model.json").read_text()).get(
            "model_version", self.model_dir.name)
        prefix = f"models/{version}/"
        from pipeline.detector.artifact import is_staging

        for path in sorted(self.model_dir.rglob("*")):
            if path.is_file() and not is_staging(path.name):
                s3.upload_file(str(path), self.names.results_bucket,
                               prefix + path.relative_to(self.model_dir).as_posix())
        return f"s3://{self.names.results_bucket}/{prefix}"

    def _provision_monitoring(self, cloudwatch: Any, names: Names, topic_arn: str,
                              state_machine_arn: str) -> None:
        """The same dashboard and alarms the Pulumi program deploys."""
        lines = {line: list(cameras) for line, cameras in self.topology.lines.items()}
        dead_letter_queues = {"ingest-dlq": names.ingest_dlq,
                              "workflow-failures": names.failure_queue,
                              "lake-failures": names.lake_failure_queue}
        body = dashboard.dashboard_body(
            region=self.region, prefix=names.prefix, lines=lines,
            state_machine_arn=state_machine_arn, topic_arn=topic_arn,
            dead_letter_queues=dead_letter_queues)
        cloudwatch.put_dashboard(DashboardName=names.dashboard(self.region),
                                 DashboardBody=json.dumps(body))
        config = self.topology.to_stack_config(self.model_dir, self.names.prefix)
        for alarm in alarms.alarm_definitions(
                prefix=names.prefix, lines=lines, anomaly_rates=config.anomaly_rate_alarms,
                topic_arn=topic_arn, state_machine_arn=state_machine_arn,
                dead_letter_queues=dead_letter_queues, ingest_function=f"{names.prefix}-ingest",
                latency_p95_ms=self.topology.latency_p95_alarm_ms,
                silent_minutes=config.silent_camera_alarms):
            cloudwatch.put_metric_alarm(**alarm)

    def _create_tokens(self, table: str) -> dict[str, str]:
        """One token per camera, made by the same mechanism as `linesight tokens create`."""
        return {f"{line}/{camera}": tokens.create_token(
                    table, line, camera, description="local stack demo camera")[1]
                for line, cameras in self.topology.lines.items() for camera in cameras}

    def _create_reviewer_tokens(self, table: str) -> dict[str, str]:
        """One reviewer token per line, as `linesight tokens create --role reviewer`."""
        return {line: tokens.create_token(table, line, role=tokens.REVIEWER,
                                          description="local stack demo reviewer")[1]
                for line in self.topology.lines}

    # -- the handlers' environment: what Pulumi sets on the functions, plus the endpoint --

    def handler_environment(self, info: StackInfo) -> dict[str, str]:
        """What Pulumi sets on the functions: the same `StackConfig.lambda_environment`."""
        config = self.topology.to_stack_config(self.model_dir, self.names.prefix)
        return {
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            **config.lambda_environment(
                images_bucket=info.images_bucket, results_bucket=info.results_bucket,
                table=info.table, tokens_table=info.tokens_table,
                state_machine_arn=info.state_machine_arn, topic_arn=info.topic_arn,
                firehose_stream=info.firehose_stream,
                failure_queue_url=info.failure_queue_url,
                lake_failure_queue_url=info.lake_failure_queue_url, model_uri=info.model_uri),
        }

    def _set_environment(self, info: StackInfo) -> None:
        for key, value in info.environment.items():
            self._saved_env.setdefault(key, os.environ.get(key))
            os.environ[key] = value
        aws.reset()
        current.cache_clear()

    def _start_api(self) -> None:
        from chalice.config import Config as ChaliceConfig

        app = load_app_module().app
        config = ChaliceConfig.create(chalice_stage="dev", app_name="linesight",
                                      project_dir=str(API_DIR))
        if not isinstance(app, LocalChalice):
            # What chalice's create_local_server does, once per process: a second stack in
            # the same process (tests, the demo after `local up`) reuses the converted app.
            CustomLocalChalice.__bases__ = (LocalChalice, app.__class__)
            app.__class__ = CustomLocalChalice
        handler = _QuietRequestHandler if self.quiet else ChaliceRequestHandler
        self._api = LocalDevServer(app, config, "127.0.0.1", self.api_port, handler_cls=handler,
                                   server_cls=_ApiServer)
        threading.Thread(target=self._api.server.serve_forever, name="chalice-local",
                         daemon=True).start()

    def _start_pollers(self, info: StackInfo) -> None:
        app_module = load_app_module()
        self.metrics = MetricsSink(self.client("cloudwatch"), threading.Event())
        self.metrics.start()
        for worker in range(self.ingest_workers):
            self.pollers.append(SqsPoller(
                self.client("sqs"), info.queue_url, self._queue_arn(self.names.ingest_queue),
                self.region, app_module.ingest, f"ingest-{worker}", self.stop_event,
                metrics=self.metrics, timeout_seconds=ingest.FUNCTION_TIMEOUT_SECONDS))
        stream_arn = self.client("dynamodb").describe_table(
            TableName=info.table)["Table"]["LatestStreamArn"]
        self.pollers.append(StreamPoller(
            self.client("dynamodbstreams"), stream_arn, app_module.to_lake, "to-lake",
            self.stop_event, sqs=self.client("sqs"), on_failure_url=info.lake_failure_queue_url,
            metrics=self.metrics, batching_window=LAKE_BATCHING_WINDOW_SECONDS,
            region=self.region, record_filter=analytics.is_lake_record))
        for poller in self.pollers:
            poller.start()


class _ApiServer(ThreadedHTTPServer):
    """Chalice's local server with a listen backlog for a fleet of cameras: with the
    default of 5, cameras connecting at once overflow it (the kernel counts
    ListenOverflows) and an upload can fail with a reset connection."""

    request_queue_size = 128


class _QuietRequestHandler(ChaliceRequestHandler):
    def log_message(self, *args: Any) -> None:
        """No access-log line per request (the demo prints its own summary)."""


def load_app_module() -> Any:
    """Import the Chalice app the way `chalice local` does: from the api/ folder."""
    if str(API_DIR) not in sys.path:
        sys.path.insert(0, str(API_DIR))
    return importlib.import_module("app")


class StateFileError(ValueError):
    """The state file is there but is no stack description: half written, another
    version's, or damaged. The message says so and what to do."""


def answers(url: str) -> bool:
    """Whether something listens at the host and port of `url` (a stack still running)."""
    parts = urllib.parse.urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=2).close()
    except (OSError, ValueError):
        return False
    return True


def another_running() -> bool:
    """Whether the state file names a local stack whose emulator still answers."""
    try:
        return answers(read_state(STATE_FILE).aws_endpoint_url)
    except (OSError, StateFileError):
        return False


def read_state(path: Path = STATE_FILE) -> StackInfo:
    """The stack a state file describes. FileNotFoundError when there is none,
    StateFileError when it cannot be read as one."""
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: start the stack with `linesight local up`")
    try:
        return StackInfo(**json.loads(path.read_text()))
    except (TypeError, ValueError) as exc:
        raise StateFileError(f"{path} is not a stack description ({exc}): restart the "
                             "stack with `linesight local up`") from None


def use_state(path: Path = STATE_FILE) -> StackInfo:
    """Point this process at a running local stack: its handlers' environment (endpoint,
    fake credentials, LINESIGHT_*), with the cached clients and settings forgotten."""
    return _use_local(read_state(path))


def _use_local(info: StackInfo) -> StackInfo:
    os.environ.update(info.environment)
    aws.reset()
    current.cache_clear()
    return info


# A deployed stack's outputs (infra/stack.py) and the handlers' variables they fill in:
# the settings' own names (`pipeline.settings.VARIABLES`; the table is output as `table`).
OUTPUT_VARIABLES = {"api_url": "LINESIGHT_API_URL",
                    "confidence_threshold": "LINESIGHT_CONFIDENCE_THRESHOLD",
                    "line_policies": "LINESIGHT_LINES",
                    "metrics_namespace": METRICS_NAMESPACE,
                    **{{"table_name": "table"}.get(name, name): variable
                       for name, variable in VARIABLES.items()}}


def use_description(path: Path, needed: tuple[str, ...] = ()) -> dict[str, Any]:
    """Point this process at the stack a file describes, and return what it says.

    Either a local stack's state file (as `use_state`), or a deployed stack's outputs
    (`pulumi stack output --json > stack.json`): then its region and AWS itself, not an
    emulator or another region the shell is set up for, with the LINESIGHT_* variables
    its handlers get (`OUTPUT_VARIABLES`). A deployed stack's `ingest_queue_url` is also
    given as `queue_url`, the local name. FileNotFoundError when there is no file;
    StateFileError when it is no stack description or a deployed one lacks `region` or
    one of `needed`."""
    try:
        described = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found") from None
    except (OSError, ValueError) as exc:
        raise StateFileError(f"{path} is not a stack description: {exc}") from None
    if not isinstance(described, dict):
        raise StateFileError(f"{path} is not a stack description: expected a JSON object")
    if "environment" in described:  # a local stack's
        try:
            return asdict(_use_local(StackInfo(**described)))
        except (TypeError, ValueError) as exc:
            raise StateFileError(f"{path} is not a stack description ({exc}): restart the "
                                 "stack with `linesight local up`") from None
    if "lines" in described and not _camera_lists(described["lines"]):
        raise StateFileError(f"{path}: lines must be an object of camera lists, as "
                             "`pulumi stack output --json` writes it")
    described.setdefault("queue_url", described.get("ingest_queue_url"))
    missing = [{"queue_url": "ingest_queue_url"}.get(key, key)
               for key in dict.fromkeys(("region", *needed)) if not described.get(key)]
    if missing:
        raise StateFileError(
            f"{path} lacks {', '.join(missing)}: write it with `pulumi stack output --json "
            "> stack.json` (a stack deployed before these outputs existed needs a "
            "`pulumi up` first)")
    os.environ["AWS_DEFAULT_REGION"] = os.environ["AWS_REGION"] = str(described["region"])
    os.environ.pop("AWS_ENDPOINT_URL", None)
    for key, variable in OUTPUT_VARIABLES.items():
        if described.get(key):
            os.environ[variable] = str(described[key])
    aws.reset()
    current.cache_clear()
    return described
