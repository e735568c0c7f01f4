"""The local stack's AWS emulator: a moto server, launched, tuned and measured.

`Emulator` starts moto's server either on a thread of this process (the default) or in a
process of its own (`in_process=False`, `python -m scripts.emulator`). Both serve the
same moto application with the same request handler; what this module adds is
*emulator tuning*, nothing the handlers could see:

- `cache_engine_clients`: moto's Step Functions engine builds a new boto3 client for
  every task it runs (`boto_client_for`), which costs more CPU than the call it makes.
  The tuning hands out one client per (region, service, endpoint) instead, built by
  moto's own function with moto's own configuration, so the calls, their answers and
  their errors are the same.
- `cache_parse_trees`: the engine lexes and parses the state machine's ASL with ANTLR
  at the start of every execution. The tuning keeps the parse tree of each definition
  (the tree is only read afterwards) and still builds fresh evaluation components from
  it for every execution; a definition that does not parse is parsed, and refused,
  every time as before.
- `cache_json_paths`: the engine compiles every JSONPath expression (`$.item`,
  `$.alert.send`, ...) with jsonpath-ng's parser each time it reads one. The tuning
  keeps the compiled expressions; looking a path up in a document does not change them.
- `cheap_queue_counts`: moto's SQS reads the clock (a datetime round trip) for every
  message each time it counts a queue, and it counts the queue often: three times per
  message ReceiveMessage hands out (its retention check goes through
  GetQueueAttributes) and once per SendMessage (for one FIFO flag). Under a backlog
  that is quadratic and the largest single cost. The tuning reads the clock once per
  count and the retention period directly, with the same comparisons.
- `cache_module_list`: moto's server finds the backend for every request by checking
  whether the host names one of moto's modules, which it lists by reading moto's package
  folder (a listdir and about 150 isdir calls) each time: about 10 % of the emulator's CPU
  under load. The tuning lists the folder once; the installed modules do not change while
  the server runs.
- Per-operation accounting: every request is counted by service and operation with the
  CPU time its server thread spent on it, and `GET /_linesight/emulator-stats` answers
  with those figures and the CPU time of the process (the load benchmark reports CPU ms
  per image from it). A request is counted, with moto's CPU for it, before its response
  is sent, so a client that has its answer finds it counted; the server's own HTTP
  parsing and writing is added to that operation's CPU afterwards. It is read-only and
  costs a few clock reads per request.
- The werkzeug request log is off (one formatted line per request otherwise).

None of it changes what an API call does; the end-to-end tests run through it.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any
from urllib.parse import parse_qs, unquote

STATS_PATH = "/_linesight/emulator-stats"
_CREDENTIAL = re.compile(r"Credential=[^/]+/\d{8}/[^/]+/([^/]+)/aws4_request")
_TARGET_SERVICES = {"DynamoDBStreams": "dynamodbstreams", "AmazonSQS": "sqs",
                    "AWSStepFunctions": "stepfunctions", "DynamoDB": "dynamodb",
                    "Firehose": "firehose", "GraniteServiceVersion": "cloudwatch"}
_SIGNING_NAMES = {"states": "stepfunctions", "monitoring": "cloudwatch"}

Wsgi = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


# --- what a request is --------------------------------------------------------------

def operation_of(environ: dict[str, Any], body: bytes = b"") -> str:
    """`service.Operation` of one request, from what the AWS protocols put on the wire.

    >>> operation_of({"HTTP_X_AMZ_TARGET": "DynamoDB_20120810.GetItem",
    ...               "HTTP_AUTHORIZATION": "AWS4-HMAC-SHA256 Credential=k/20260101/"
    ...                                     "us-east-1/dynamodb/aws4_request, ..."})
    'dynamodb.GetItem'
    >>> operation_of({"REQUEST_METHOD": "POST", "PATH_INFO": "/",
    ...               "CONTENT_TYPE": "application/x-www-form-urlencoded",
    ...               "HTTP_AUTHORIZATION": "AWS4-HMAC-SHA256 Credential=k/20260101/"
    ...                                     "us-east-1/sns/aws4_request, ..."},
    ...              b"Action=Publish&TopicArn=t")
    'sns.Publish'
    >>> operation_of({"REQUEST_METHOD": "PUT", "PATH_INFO": "/bucket/a/b.png",
    ...               "QUERY_STRING": "tagging"})
    's3.PUT object?tagging'
    >>> operation_of({"REQUEST_METHOD": "POST", "PATH_INFO": "/bucket"})
    's3.POST bucket'
    """
    path = environ.get("PATH_INFO", "")
    if path.startswith("/moto-api"):
        return "moto-api." + path.removeprefix("/moto-api/").split("/")[0]
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        prefix, _, operation = target.partition(".")
        service = next((name for start, name in _TARGET_SERVICES.items()
                        if prefix.startswith(start)), prefix)
        return f"{service}.{operation}"
    found = _CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", "")) or _CREDENTIAL.search(
        unquote(environ.get("QUERY_STRING", "")))
    service = _SIGNING_NAMES.get(found.group(1), found.group(1)) if found else "s3"
    if "/operation/" in path:  # Smithy RPC v2 (CBOR)
        return f"{service}.{path.rsplit('/', 1)[-1]}"
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    if "form-urlencoded" in environ.get("CONTENT_TYPE", "") and body:
        query.update(parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True))
    if "Action" in query:
        return f"{service}.{query['Action'][0]}"
    if service != "s3":
        return f"{service}.{environ.get('REQUEST_METHOD', '')} {path}"
    kind = "object" if "/" in path.strip("/") else "bucket"
    subresources = sorted(name for name in query if not name.startswith(("X-Amz-", "x-amz-")))
    return (f"s3.{environ.get('REQUEST_METHOD', '')} {kind}"
            + (f"?{'&'.join(subresources)}" if subresources else ""))


# --- accounting -----------------------------------------------------------------------

# A client whose user agent holds OBSERVER_AGENT (botocore's `user_agent_extra`) is counted
# under OBSERVER + its operation: a benchmark's own reads, kept apart from the pipeline's.
OBSERVER_AGENT = "linesight-observer"
OBSERVER = "observer "

@dataclass
class OperationStats:
    """Requests and server-thread CPU seconds per `service.Operation`."""

    calls: dict[str, int] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, operation: str, cpu_seconds: float, calls: int = 1) -> None:
        with self.lock:
            self.calls[operation] = self.calls.get(operation, 0) + calls
            self.cpu_seconds[operation] = self.cpu_seconds.get(operation, 0.0) + cpu_seconds

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            calls, cpu = dict(self.calls), dict(self.cpu_seconds)
        times = os.times()
        return {"pid": os.getpid(), "process_cpu_seconds": times.user + times.system,
                "calls": calls, "cpu_seconds": cpu}


_current = threading.local()


def measured(app: Wsgi, stats: OperationStats) -> Wsgi:
    """The WSGI app, counting each request under its operation with the CPU moto spent on
    it (before the response goes out), and serving the stats endpoint."""

    def wrapper(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == STATS_PATH:
            body = json.dumps(stats.snapshot()).encode()
            start_response("200 OK", [("Content-Type", "application/json"),
                                      ("Content-Length", str(len(body)))])
            return [body]
        body = b""
        length = environ.get("CONTENT_LENGTH")
        if length and "form-urlencoded" in environ.get("CONTENT_TYPE", ""):
            body = environ["wsgi.input"].read(int(length))
            environ["wsgi.input"] = BytesIO(body)
        operation = operation_of(environ, body)
        if OBSERVER_AGENT in environ.get("HTTP_USER_AGENT", ""):
            operation = OBSERVER + operation  # a benchmark reading back, not the pipeline
        started = time.thread_time()
        try:
            return app(environ, start_response)
        finally:
            _current.operation, _current.charged = operation, time.thread_time() - started
            stats.add(operation, _current.charged)

    return wrapper


def _handler_class(stats: OperationStats) -> type:
    from moto.moto_server.werkzeug_app import MotoRequestHandler

    class _MeasuredHandler(MotoRequestHandler):
        """moto's request handler, adding the CPU its thread spent around the application
        (HTTP parsing, writing the response) to the request's operation."""

        def handle_one_request(self) -> None:
            started = time.thread_time()
            _current.operation = None
            super().handle_one_request()
            operation = getattr(_current, "operation", None)
            if operation:
                rest = time.thread_time() - started - _current.charged
                stats.add(operation, max(rest, 0.0), calls=0)

        def log_request(self, *args: Any, **kwargs: Any) -> None:
            """No access-log line per request."""

    return _MeasuredHandler


# --- tuning of moto's Step Functions engine -------------------------------------------

_client_cache_lock = threading.Lock()
_engine_clients: dict[tuple[Any, ...], Any] = {}


def cache_engine_clients() -> None:
    """Make moto's Step Functions engine reuse one boto3 client per (region, service,
    endpoint) instead of building one per task. Idempotent.

    The clients are built by moto's own `boto_client_for`, so their endpoint, fake
    credentials, retry and timeout settings are moto's. In moto 5.2 that function does
    not use the state's credentials, so they are not part of the key either.
    """
    # Importing the factory and the parser loads every module that calls boto_client_for.
    import moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_factory  # noqa: F401, E501
    import moto.stepfunctions.parser.asl.parse.asl_parser  # noqa: F401
    from moto.core.models import botocore_stubber
    from moto.settings import moto_server_port
    from moto.stepfunctions.parser.asl.utils import boto_client

    original = boto_client.boto_client_for
    if getattr(original, "linesight_cached", False):
        return

    def boto_client_for(region: str, service: str, state_credentials: Any = None) -> Any:
        key = (region, service, botocore_stubber.enabled, moto_server_port())
        client = _engine_clients.get(key)
        if client is None:
            with _client_cache_lock:
                client = _engine_clients.get(key)
                if client is None:
                    client = _engine_clients[key] = original(region, service, state_credentials)
        return client

    boto_client_for.linesight_cached = True  # type: ignore[attr-defined]
    for module in list(sys.modules.values()):
        if getattr(module, "boto_client_for", None) is original:
            module.boto_client_for = boto_client_for  # type: ignore[attr-defined]


def cache_parse_trees(max_definitions: int = 64) -> None:
    """Parse each ASL definition once; build its evaluation components per call, as
    moto does (see the module doc). Idempotent."""
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser
    from moto.stepfunctions.parser.asl.parse.preprocessor import Preprocessor

    original = AmazonStateLanguageParser.parse
    if getattr(original, "linesight_cached", False):
        return
    trees: dict[str, Any] = {}
    lock = threading.Lock()

    def parse(definition: str) -> tuple[Any, Any]:
        tree = trees.get(definition)
        if tree is None:
            program, tree = original(definition)  # raises on a bad definition, every time
            with lock:
                if len(trees) >= max_definitions:
                    trees.pop(next(iter(trees)))
                trees[definition] = tree
            return program, tree
        return Preprocessor().visit(tree), tree

    parse.linesight_cached = True  # type: ignore[attr-defined]
    AmazonStateLanguageParser.parse = staticmethod(parse)  # type: ignore[method-assign]


def cache_json_paths(max_paths: int = 1024) -> None:
    """Compile each JSONPath the engine reads with once (see the module doc). Idempotent."""
    from moto.stepfunctions.parser.asl.utils import json_path

    if getattr(json_path.parse, "linesight_cached", False):
        return
    cached = functools.lru_cache(maxsize=max_paths)(json_path.parse)
    cached.linesight_cached = True  # type: ignore[attr-defined]
    json_path.parse = cached


def cheap_queue_counts() -> None:
    """moto's SQS queue counts with one clock reading per count (see the module doc)."""
    from moto.sqs import models

    def messages(self: Any) -> list[Any]:
        now = models.unix_time_millis()
        return [m for m in self._messages if now > m.visible_at and not now < m.delayed_until]

    def delayed(self: Any) -> int:
        now = models.unix_time_millis()
        return sum(1 for m in self._messages if now < m.delayed_until)

    def not_visible(self: Any) -> int:
        now = models.unix_time_millis()
        return sum(1 for m in self._messages if not now > m.visible_at)

    def is_message_valid_based_on_retention_period(self: Any, queue_name: str,
                                                   message: Any) -> bool:
        retention_period = self.get_queue(queue_name).message_retention_period
        return bool(retention_period + message.sent_timestamp / 1000 > models.unix_time())

    queue = models.Queue
    queue.messages = property(messages)  # type: ignore[method-assign,assignment]
    queue.approximate_number_of_messages_delayed = property(delayed)  # type: ignore[method-assign,assignment]
    queue.approximate_number_of_messages_not_visible = property(not_visible)  # type: ignore[method-assign,assignment]
    models.SQSBackend.is_message_valid_based_on_retention_period = (  # type: ignore[method-assign]
        is_message_valid_based_on_retention_period)


def cache_module_list() -> None:
    """List moto's modules once instead of per request (see the module doc). Idempotent."""
    from moto import backends

    if getattr(backends.list_of_moto_modules, "linesight_cached", False):
        return
    modules = tuple(backends.list_of_moto_modules())

    def list_of_moto_modules() -> tuple[str, ...]:
        return modules

    list_of_moto_modules.linesight_cached = True  # type: ignore[attr-defined]
    backends.list_of_moto_modules = list_of_moto_modules  # type: ignore[assignment]


def tune() -> None:
    """Every emulator tuning above, in the process that runs the moto server."""
    cache_module_list()
    cache_engine_clients()
    cache_parse_trees()
    cache_json_paths()
    cheap_queue_counts()


# --- the server -----------------------------------------------------------------------

def make_server(host: str, port: int, stats: OperationStats) -> Any:
    """moto's server application on a threaded werkzeug server, tuned and measured."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server as werkzeug_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    tune()
    app = measured(DomainDispatcherApplication(create_backend_app), stats)
    return werkzeug_server(host, port, app, threaded=True,
                           request_handler=_handler_class(stats))


class Emulator:
    """A moto server on `host:port`, on a thread here or in a process of its own."""

    def __init__(self, host: str, port: int, *, in_process: bool = True) -> None:
        self.host, self.port, self.in_process = host, port, in_process
        self.stats = OperationStats()
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        # The Step Functions engine calls the other services at localhost:MOTO_PORT.
        os.environ["MOTO_PORT"] = str(self.port)
        if self.in_process:
            self._server = make_server(self.host, self.port, self.stats)
            self._thread = threading.Thread(target=self._server.serve_forever,
                                            name="moto-server", daemon=True)
            self._thread.start()
        else:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "scripts.emulator", "--host", self.host,
                 "--port", str(self.port)])  # MOTO_PORT is inherited

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)

    def read_stats(self) -> dict[str, Any]:
        """The emulator's calls and CPU seconds per operation, and its process CPU."""
        with urllib.request.urlopen(self.endpoint + STATS_PATH, timeout=10) as response:
            return dict(json.loads(response.read()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The local stack's moto server, alone.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))
    server = make_server(args.host, args.port, OperationStats())
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
