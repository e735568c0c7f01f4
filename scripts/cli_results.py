"""The results commands of the `linesight` CLI: `results`, `report`, `show`, `review`,
`export-dataset` and `upload`, plus `build_report_from_stack` for `make demo`.

Which stack: `--table`/`--endpoint-url` options, else the LINESIGHT_* (and AWS_*) environment
variables the handlers use, else `.linesight/local.json` written by `linesight local up`.
"""

from __future__ import annotations

import csv
import getpass
import heapq
import io
import itertools
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline.export import object_params
from pipeline.records import STATUS_INVALID, ResultRecord
from scripts.cli_tokens import StateOption, no_answer, operator_aws, use_stack_file

if TYPE_CHECKING:
    from pipeline.queries import ResultQuery
    from pipeline.settings import Settings
    from scripts.local_stack import LocalStack

console = Console()
err = Console(stderr=True)
log = logging.getLogger("linesight.results")

FORMATS = ("table", "json", "csv")
LOCAL_STATE_HINT = ("pass --state stack.json (a deployed stack) or --table, start the local stack "
                    "with `linesight local up`, or set LINESIGHT_TABLE")


def register(app: typer.Typer) -> None:
    """Add the results commands to the `linesight` app."""
    app.command("results")(results)
    app.command("report")(report)
    app.command("show", no_args_is_help=True)(show)
    app.command("review", no_args_is_help=True)(review)
    app.command("export-dataset", no_args_is_help=True)(export_dataset)
    app.command("upload", no_args_is_help=True)(upload)


# --- finding the stack ----------------------------------------------------------------------

@dataclass(frozen=True)
class Stack:
    """The resolved stack: handler settings plus what a CLI user needs for the API."""

    settings: Settings
    api_url: str = ""
    camera_tokens: dict[str, str] | None = None
    default_token: str = ""


TableOption = Annotated[str | None, typer.Option(
    "--table", help="Results table (default: LINESIGHT_TABLE, else .linesight/local.json). "
                    "Alone it is looked up with this shell's AWS settings (AWS_DEFAULT_REGION, "
                    "AWS_ENDPOINT_URL), not the local stack's.")]
EndpointOption = Annotated[str | None, typer.Option(
    "--endpoint-url", help="AWS endpoint, e.g. a moto server (default: AWS_ENDPOINT_URL).")]


def connect(table: str | None = None, endpoint_url: str | None = None,
            state: Path | None = None) -> Stack:
    """Point `pipeline` at a stack: .linesight/local.json < environment < --state < the
    other options."""
    from pipeline import aws
    from pipeline.settings import SettingsError, current
    from scripts.local_stack import StateFileError, use_state

    api_url, camera_tokens, token = os.environ.get("LINESIGHT_API_URL", ""), None, ""
    if state is not None:
        described = use_stack_file(state, () if table else ("table",))
        api_url = described.get("api_url") or api_url
        camera_tokens, token = described.get("camera_tokens"), described.get("token", "")
    elif not table and not os.environ.get("LINESIGHT_TABLE"):
        try:
            info = use_state()
        except FileNotFoundError:
            _fail(f"no stack to read: {LOCAL_STATE_HINT}")
        except StateFileError as exc:
            _fail(str(exc))
        api_url = api_url or info.api_url
        camera_tokens, token = dict(info.camera_tokens), info.token
    if table:
        os.environ["LINESIGHT_TABLE"] = table
    operator_aws(endpoint_url)
    aws.reset()
    current.cache_clear()
    try:
        settings = current()
    except SettingsError as exc:
        _fail(str(exc))
    return Stack(settings, api_url, camera_tokens, os.environ.get("LINESIGHT_TOKEN", token))


def _fail(message: str, code: int = 2) -> NoReturn:
    """One line, printed as it is (it may quote stored text or AWS's words, which rich would
    otherwise read as markup), then stop."""
    err.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(code)


def _query(**fields: Any) -> ResultQuery:
    """A ResultQuery, or a usage error naming what is wrong (e.g. --since after --until)."""
    from pipeline.queries import QueryError, ResultQuery

    try:
        return ResultQuery(**fields)
    except QueryError as exc:
        raise typer.BadParameter(str(exc)) from None


def _left_out(unreadable: Sequence[str]) -> None:
    """Name the stored items that are not results (each was left out, not fatal)."""
    for problem in unreadable[:10]:
        err.print(f"[dark_orange]left out: {escape(problem)}[/]")
    if len(unreadable) > 10:
        err.print(f"[dark_orange]... and {len(unreadable) - 10} more items that are not "
                  "results[/]")


@contextmanager
def _aws_errors() -> Iterator[None]:
    """AWS trouble (stack not running, missing table, no credentials) as one line."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        _fail(f"AWS said {error.get('Code', 'error')}: {error.get('Message', exc)}", 1)
    except BotoCoreError as exc:
        _fail(no_answer(exc), 1)


def parse_when(value: str | None, name: str, *, upper: bool = False) -> datetime | None:
    """A time option (`queries.parse_when`: ISO-8601 with a zone, a date, or an age like
    `2h`; a date as an `upper` bound is its last millisecond), or None; a mistake is a
    usage error naming the option.

    >>> parse_when("2026-01-02", "--since").isoformat()
    '2026-01-02T00:00:00+00:00'
    >>> parse_when("2026-01-02", "--until", upper=True).isoformat()
    '2026-01-02T23:59:59.999000+00:00'
    """
    from pipeline import queries

    if not value:
        return None
    try:
        return queries.parse_when(value, name, upper=upper)
    except queries.QueryError as exc:
        raise typer.BadParameter(str(exc).removeprefix(f"{name} "), param_hint=name) from None


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=err, transient=True)


# --- results ------------------------------------------------------------------------------

SinceOption = Annotated[str | None, typer.Option(
    "--since", help="From this time: ISO-8601 with zone, a date (UTC), or an age: 30m, 2h, 7d.")]
UntilOption = Annotated[str | None, typer.Option(
    "--until", help="Up to this time (same forms as --since; a date is up to its end).")]


def results(
    line: Annotated[str, typer.Option("--line", help="Only this line.")] = "",
    camera: Annotated[str, typer.Option("--camera", help="Only this camera (needs --line).")
                      ] = "",
    since: SinceOption = None,
    until: UntilOption = None,
    anomalous: Annotated[bool | None, typer.Option(
        "--anomalous/--no-anomalous", help="Only anomalous / only not anomalous results.")
    ] = None,
    reviewed: Annotated[bool | None, typer.Option(
        "--reviewed/--not-reviewed", help="Only results a person reviewed / did not review.")
    ] = None,
    output: Annotated[str, typer.Option(
        "--format", help="table, json or csv.", case_sensitive=False)] = "table",
    limit: Annotated[int, typer.Option("--limit", min=1, max=100_000,
                                       help="At most this many results.")] = 50,
    table: TableOption = None,
    endpoint_url: EndpointOption = None,
    state: StateOption = None,
) -> None:
    """List results, newest first (without --line the whole table is read to find them).

    Example:

        linesight results --line line-1 --since 2h --anomalous --format csv > anomalies.csv
    """
    from pipeline.queries import MAX_PAGE, QueryError, iter_results

    output = output.lower()
    if output not in FORMATS:
        raise typer.BadParameter(f"{output!r} is not one of {', '.join(FORMATS)}",
                                 param_hint="--format")
    if camera and not line:
        raise typer.BadParameter("--camera needs --line", param_hint="--camera")
    query = _query(line_id=line, camera_id=camera, since=parse_when(since, "--since"),
                   until=parse_when(until, "--until", upper=True), anomalous=anomalous,
                   reviewed=reviewed, limit=min(limit, MAX_PAGE))
    stack = connect(table, endpoint_url, state)
    unreadable: list[str] = []
    with _aws_errors():
        try:
            matching = iter_results(stack.settings.table_name, query, unreadable)
            if line:  # an index query: newest first, so the first `limit` are the newest
                found = list(itertools.islice(matching, limit))
            else:  # a scan comes back in no order: the newest need all of it read
                found = heapq.nlargest(limit, matching, key=lambda r: r.captured_at)
        except QueryError as exc:
            raise typer.BadParameter(str(exc)) from None
    _left_out(unreadable)
    if output == "json":
        typer.echo(json.dumps([r.to_json() for r in found], indent=2))
    elif output == "csv":
        typer.echo(records_csv(found), nl=False)
    else:
        _print_table(found, limit)


CSV_COLUMNS = ("image_id", "line_id", "camera_id", "captured_at", "processed_at", "status",
               "is_anomalous", "score", "confidence", "threshold", "alert_reason", "reason",
               "review_label", "review_note", "model_version", "s3_uri", "heatmap_uri")


def records_csv(records: Sequence[ResultRecord]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for record in records:
        row = record.to_json()
        row["review_label"] = (record.review or {}).get("label", "")
        row["review_note"] = (record.review or {}).get("note", "")
        writer.writerow({key: _inert(value) for key, value in row.items()})
    return out.getvalue()


def _inert(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula (a reviewer's note may be anyone's
    text, e.g. `=HYPERLINK(...)`), kept as text by a leading apostrophe, as OWASP advises.

    >>> _inert("=1+1"), _inert("glare"), _inert(-0.5)
    ("'=1+1", 'glare', -0.5)
    """
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _print_table(records: Sequence[ResultRecord], limit: int) -> None:
    """One row per result; where the terminal is too narrow for that, two lines per result
    with fewer columns, so that the image id, which `review` takes, is never cut."""
    if not records:
        console.print("no results match")
        return
    rows = []
    for r in records:
        if r.status == STATUS_INVALID:
            verdict = f"[grey50]invalid: {escape(r.reason.split(':', 1)[0])}[/grey50]"
        else:
            verdict = "[red]anomalous[/red]" if r.is_anomalous else "normal"
        alert = r.alert_reason.replace("_", " ")
        if "low" in alert:
            alert = f"[dark_orange]{alert}[/dark_orange]"
        rows.append((r.captured_at.strftime("%Y-%m-%d %H:%M:%S"), r.line_id, r.camera_id,
                     r.image_id, verdict,
                     "" if r.status == STATUS_INVALID else f"{r.score:.3f}",
                     "" if r.status == STATUS_INVALID else f"{r.confidence:.3f}",
                     alert, (r.review or {}).get("label", "")))
    view = Table(show_edge=False, header_style="bold")
    for column, justify in (("captured (UTC)", "left"), ("line", "left"), ("camera", "left"),
                            ("image", "left"), ("verdict", "left"), ("score", "right"),
                            ("confidence", "right"), ("alert", "left"), ("review", "left")):
        view.add_column(column, justify=justify, no_wrap=column == "image")  # type: ignore[arg-type]
    for row in rows:
        view.add_row(*row)
    if Measurement.get(console, console.options, view).maximum > console.width:
        view = Table(show_edge=False, header_style="bold")
        view.add_column("image / captured (UTC)", no_wrap=True, min_width=32)
        view.add_column("line / camera")
        view.add_column("verdict")
        view.add_column("score / conf.", justify="right")
        view.add_column("alert")
        view.add_column("review")
        for when, line, camera, image, verdict, score, confidence, alert, label in rows:
            view.add_row(f"{image}\n{when}", f"{line}\n{camera}", verdict,
                         f"{score}\n{confidence}".strip(), alert, label)
    console.print(view)
    more = " (the limit; use --limit for more)" if len(records) >= limit else ""
    console.print(f"{len(records)} result{'s' if len(records) != 1 else ''}{more}")


# --- report -------------------------------------------------------------------------------

def report(
    out: Annotated[Path, typer.Option("--out", help="Where to write the HTML page.")
                   ] = Path("report.html"),
    since: SinceOption = None,
    until: UntilOption = None,
    line: Annotated[str, typer.Option("--line", help="Only this line.")] = "",
    title: Annotated[str, typer.Option("--title", help="The page's title.")
                     ] = "LineSight quality report",
    table: TableOption = None,
    endpoint_url: EndpointOption = None,
    state: StateOption = None,
) -> None:
    """Write a self-contained HTML report of the results (prints its path).

    It shows per line/camera counts, the anomaly rate over time, a confidence histogram,
    the latest anomalies with heatmaps, the alert log and model-vs-human disagreement.
    It loads nothing from the network when opened.

    Example:

        linesight report --since 24h --out report.html
    """
    from pipeline.queries import iter_results

    if out.is_dir():
        raise typer.BadParameter(f"{out} is a folder: name the page's file, e.g. "
                                 f"{out / 'report.html'}", param_hint="--out")
    since_at, until_at = parse_when(since, "--since"), parse_when(until, "--until", upper=True)
    query = _query(line_id=line, since=since_at, until=until_at, limit=500)
    stack = connect(table, endpoint_url, state)
    settings = stack.settings
    from pipeline import aws, metrics

    if settings.metrics_namespace == metrics.NAMESPACE:
        err.print(f"[dark_orange]metrics are read from the {metrics.NAMESPACE} namespace, "
                  "which every stack wrote before each had its own: for this stack's, pass "
                  "--state stack.json or set LINESIGHT_METRICS_NAMESPACE (its "
                  "metrics_namespace output)[/]")

    unreadable: list[str] = []
    with _aws_errors(), _progress() as progress:
        task = progress.add_task("reading results", total=None)
        records = []
        for record in iter_results(settings.table_name, query, unreadable):
            records.append(record)
            progress.advance(task)
        page = render_report(
            records, aws.client, failure_queue_url=settings.failure_queue_url,
            confidence_threshold=settings.confidence_threshold,
            line_bands=bands_by_line(settings), since=since_at, until=until_at,
            title=title, source=settings.table_name, line=line or None, progress=progress,
            namespace=settings.metrics_namespace)
    _left_out(unreadable)
    written = _write(out, page)
    console.print(str(written))


def _write(out: Path, page: str | bytes) -> Path:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(page, bytes):
            out.write_bytes(page)
        else:
            out.write_text(page, encoding="utf-8")
    except OSError as exc:
        _fail(f"cannot write {out}: {exc.strerror or exc}")
    return out.resolve()


def build_report_from_stack(stack: LocalStack, out_path: Path) -> Path:
    """The demo's report: every result of a running LocalStack, written to `out_path`."""
    from scripts.observe import all_records

    info = stack.info
    if info is None:
        raise RuntimeError("the local stack is not running")
    records = all_records(stack.client("dynamodb"), info.table)
    from pipeline.settings import Settings

    settings = Settings.from_env(info.environment)  # what the stack's handlers were given
    page = render_report(records, stack.client, failure_queue_url=info.failure_queue_url,
                         confidence_threshold=settings.confidence_threshold,
                         line_bands=bands_by_line(settings), source=info.table,
                         title="LineSight quality report (local demo)",
                         namespace=settings.metrics_namespace)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(page, encoding="utf-8")
    return out_path.resolve()


def bands_by_line(settings: Settings) -> dict[str, float]:
    """{line: its low-confidence band}, for the lines with a policy of their own."""
    return {line: settings.confidence_threshold_for(line) for line in settings.lines}


def render_report(records: Sequence[ResultRecord], client: Callable[[str], Any], *,
                  failure_queue_url: str = "", confidence_threshold: float = 0.20,
                  line_bands: Mapping[str, float] | None = None,
                  since: datetime | None = None, until: datetime | None = None,
                  title: str = "LineSight quality report", source: str = "",
                  line: str | None = None, progress: Progress | None = None,
                  namespace: str) -> str:
    """Read what the page needs besides the records (images, failures, metrics), build it.
    With `line`, the records are that line's, and so are the failures and metrics shown.
    The metrics are read from `namespace`, the stack's (`Settings.metrics_namespace`).

    `client(service)` makes boto3 clients, so the CLI (pipeline.aws) and the demo (the
    local stack's) share this."""
    from pipeline.report import Failure, build_report, latest_anomalies

    s3 = client("s3")
    wanted = latest_anomalies(records)
    task = progress.add_task("reading images", total=len(wanted)) if progress else None

    def one(record: ResultRecord) -> tuple[str, Any]:
        image = _report_image(s3, record)
        if progress is not None and task is not None:
            progress.advance(task)
        return record.image_id, image

    with ThreadPoolExecutor(max_workers=8) as pool:
        images = dict(pool.map(one, wanted))
    failures: list[dict[str, Any]] | None = None  # not read: the page says so
    capped = False
    if failure_queue_url:
        failures = peek_queue(client("sqs"), failure_queue_url, FAILURES_READ + 1)
        capped = len(failures) > FAILURES_READ
        failures = [body for body in failures[:FAILURES_READ]
                    if line is None or Failure.from_message(body).line_id == line]
    period_start = since or (min(r.captured_at for r in records) if records else None)
    metrics = cloudwatch_totals(client("cloudwatch"), period_start, until, line=line,
                                cameras={(r.line_id, r.camera_id) for r in records},
                                namespace=namespace)
    return build_report(records, failures=failures, failures_capped=capped, images=images,
                        metrics=metrics, confidence_threshold=confidence_threshold,
                        line_bands=line_bands, since=since, until=until,
                        title=title, source=source)


FAILURES_READ = 1000  # workflow failures a report lists at most


def _report_image(s3: Any, record: ResultRecord) -> Any:
    from pipeline.report import ReportImage

    photo = _read_s3(s3, record.s3_uri, record.image_version)
    heatmap = _read_s3(s3, record.heatmap_uri) if record.heatmap_uri else b""
    link = ""
    if photo:
        link = s3.generate_presigned_url("get_object", Params=object_params(record.s3_uri,
                                                                      record.image_version),
                                         ExpiresIn=7 * 24 * 3600)
    return ReportImage(photo=photo, heatmap=heatmap, link=link)


def _read_s3(s3: Any, uri: str, version: str = "") -> bytes:
    """The object's bytes, or b"" when it is gone or unreadable (the page says so)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return bytes(s3.get_object(**object_params(uri, version))["Body"].read())
    except (ValueError, ClientError, BotoCoreError) as exc:
        log.warning("cannot read %s for the report: %s", uri, exc)
        return b""


def peek_queue(sqs: Any, queue_url: str, most: int = FAILURES_READ) -> list[dict[str, Any]]:
    """Up to `most` messages of a queue, decoded, without consuming them: each received
    message is made visible again at once. Read as `linesight dlq list` reads (a short
    poll on a small queue may answer nothing while messages wait)."""
    from pipeline import dlq

    messages = dlq.receive_all(sqs, queue_url, limit=most, visibility_timeout=30)
    try:
        bodies = []
        for message in messages:
            try:
                body = json.loads(message["Body"])
            except json.JSONDecodeError:
                body = {"error": {"Error": "unreadable message", "Cause": message["Body"]}}
            bodies.append(body if isinstance(body, dict) else {})
        return bodies
    finally:
        dlq.release(sqs, queue_url, messages)


def cloudwatch_totals(cloudwatch: Any, since: datetime | None, until: datetime | None, *,
                      line: str | None = None, cameras: Iterable[tuple[str, str]] = (),
                      namespace: str, now: datetime | None = None
                      ) -> dict[str, float] | None:
    """LineSight's metrics in `namespace` (the stack's own) summed over every line and
    camera for the period (counts as totals, latencies as mean and max), or over `line`'s
    cameras only; None when CloudWatch has none or cannot say. `cameras`, the (line,
    camera) pairs of the period's results, are read even when ListMetrics leaves them out
    (it lists only metrics with data in the last two weeks)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from pipeline import metrics

    end = until or datetime.now(UTC) + timedelta(minutes=1)
    start = since or end - timedelta(days=1)
    start -= timedelta(minutes=1)
    period = metric_period(start, end, now)
    # Each data point is stored once per dimension set it was written with (per camera,
    # per line, stack-wide: `metrics.DIMENSION_SETS`). A metric's finest set holds each
    # point once, those written before the handlers wrote every set too, so only it is
    # added up. (It is also the one moto, which reads a set as "at least these
    # dimensions", answers for as CloudWatch does.)
    sums: dict[str, float] = {}
    samples: dict[str, float] = {}
    peaks: dict[str, float] = {}
    per_camera = {name: {tuple(sorted(metrics.dimensions(
        metrics.PER_CAMERA, line_id, camera).items())) for line_id, camera in cameras
        if line_id and camera}
        for name in metrics.PER_IMAGE}
    try:
        listed: dict[str, dict[tuple[tuple[str, str], ...], list[dict[str, str]]]] = {
            name: {identity: [{"Name": k, "Value": v} for k, v in identity]
                   for identity in identities}
            for name, identities in per_camera.items() if identities}
        for page in cloudwatch.get_paginator("list_metrics").paginate(
                Namespace=namespace):
            for metric in page.get("Metrics", []):
                dimensions = metric.get("Dimensions", [])
                identity = tuple(sorted((d["Name"], d["Value"]) for d in dimensions))
                # moto lists a metric once per put; CloudWatch once
                listed.setdefault(metric["MetricName"], {})[identity] = dimensions
        for name, found in listed.items():
            finest = max(len(identity) for identity in found)
            for identity, dimensions in found.items():
                if len(identity) < finest:
                    continue
                if line is not None and (metrics.DIMENSION_LINE, line) not in identity:
                    continue  # another line's, or the stack's own (errors, lake rows)
                points = cloudwatch.get_metric_statistics(
                    Namespace=namespace, MetricName=name, Dimensions=dimensions,
                    StartTime=start, EndTime=end, Period=period,
                    Statistics=["Sum", "SampleCount", "Maximum"]).get("Datapoints", [])
                for point in points:
                    sums[name] = sums.get(name, 0.0) + float(point.get("Sum", 0.0))
                    samples[name] = samples.get(name, 0.0) + float(point.get("SampleCount", 0))
                    peaks[name] = max(peaks.get(name, 0.0), float(point.get("Maximum", 0.0)))
    except (ClientError, BotoCoreError) as exc:
        log.warning("no CloudWatch metrics for the report: %s", exc)
        return None
    if not sums:
        return None
    shown: dict[str, float] = {}
    for name in metrics.ALL:
        if name not in sums:
            continue
        if name in metrics.LATENCIES_MS:
            shown[f"{name}, mean (ms)"] = sums[name] / max(samples[name], 1.0)
            shown[f"{name}, max (ms)"] = peaks[name]
        else:
            shown[name] = sums[name]
    return shown


def metric_period(start: datetime, end: datetime, now: datetime | None = None) -> int:
    """The period, in seconds, to read `start` to `end` in at most 1,000 points, as
    CloudWatch allows it: from more than 15 days back it keeps 5-minute points only, and
    from more than 63 days back hourly ones, and a period that is no multiple of those
    returns no data at all.

    >>> day = datetime(2026, 1, 1, tzinfo=UTC)
    >>> [metric_period(day - timedelta(days=back), day, now=day) for back in (1, 20, 90)]
    [120, 1800, 10800]
    """
    age = (now or datetime.now(UTC)) - start
    step = 3600 if age > timedelta(days=63) else 300 if age > timedelta(days=15) else 60
    span = max((end - start).total_seconds(), 60.0)
    return step * max(1, -(-int(span // 1000) // step))


# --- show ---------------------------------------------------------------------------------

def _image_id(value: str) -> str:
    """An image id DynamoDB can look up (it refuses an empty key, and one over 2 KB)."""
    value = value.strip()
    if not value or len(value.encode()) > 2048:
        raise typer.BadParameter("must be a result's image id, as `linesight results` "
                                 f"lists them (got {value[:80]!r})")
    return value


def show(
    image_id: Annotated[str, typer.Argument(
        help="The result's image id (from an alert e-mail, `results` or the report).",
        callback=_image_id)],
    out: Annotated[Path | None, typer.Option(
        "--out", help="Where to write the picture (default: IMAGE_ID.png in this folder).")
                   ] = None,
    table: TableOption = None,
    endpoint_url: EndpointOption = None,
    state: StateOption = None,
) -> None:
    """Show one result: what was decided, and a PNG of the photo beside its heatmap.

    The picture has the photo as the model judged it, the heatmap overlay (colour where
    the part differs from the normal ones), and the verdict, score, confidence, line,
    camera and time under them. Prints the result's details, a signed link to the
    full-size original, and the picture's path.

    Example:

        linesight show 3f2c9a0d8e7b4c1a9f00112233445566 --out defect.png
    """
    from pipeline import aws
    from pipeline.alerts import AlertPolicy, details
    from pipeline.queries import get_result
    from pipeline.records import MalformedRecord
    from pipeline.report import is_low_confidence, result_picture

    out = out or Path(f"{image_id}.png")
    if out.is_dir():
        raise typer.BadParameter(f"{out} is a folder: name the picture's file, e.g. "
                                 f"{out / (image_id + '.png')}", param_hint="--out")
    stack = connect(table, endpoint_url, state)
    settings = stack.settings
    with _aws_errors():
        try:
            record = get_result(settings.table_name, image_id)
        except MalformedRecord as exc:
            _fail(f"the stored result of {image_id!r} is unreadable: {exc}", 1)
        if record is None:
            _fail(f"no result for image {image_id!r} in {settings.table_name}")
        image = _report_image(aws.client("s3"), record)

    def say(text: str) -> None:  # stored text as it is: no markup, emoji codes or colouring
        console.print(text, markup=False, emoji=False, highlight=False, soft_wrap=True)

    for fact in details(record, AlertPolicy(settings.confidence_threshold_for(record.line_id))):
        say(fact)
    if record.alert_reason:
        say(f"Alerted:     {record.alert_reason}")
    if record.review:
        review = record.review
        say(f"Reviewed:    {review.get('label', '?')} by {review.get('reviewer', '?')}"
            + (f": {review['note']}" if review.get("note") else ""))
    if image.link:
        say(f"Original:    {image.link}")
    else:
        err.print("[dark_orange]cannot read the photo (expired by the bucket's lifecycle, "
                  "deleted, or not readable with these credentials): the picture shows what "
                  "is left[/]")
    # low confidence as the pipeline decided it when the result came in, as the report says
    say(str(_write(out, result_picture(record, image,
                                       low_confidence=is_low_confidence(record)))))


# --- review -------------------------------------------------------------------------------

def review(
    image_id: Annotated[str, typer.Argument(help="The result's image id (see `results`).",
                                            callback=_image_id)],
    label: Annotated[str, typer.Option("--label", help="normal or anomaly.",
                                       case_sensitive=False)],
    note: Annotated[str, typer.Option("--note", help="Why, for whoever retrains.")] = "",
    reviewer: Annotated[str, typer.Option(
        "--reviewer", help="Who reviewed (default: your user name).")] = "",
    table: TableOption = None,
    endpoint_url: EndpointOption = None,
    state: StateOption = None,
) -> None:
    """Record a person's verdict beside the model's.

    Example:

        linesight review 3f2c9a0d8e7b4c1a9f00112233445566 --label normal --note "glare"
    """
    from pipeline import reviews

    label = label.lower()
    if label not in reviews.LABELS:
        raise typer.BadParameter(f"{label!r} is not one of {', '.join(reviews.LABELS)}",
                                 param_hint="--label")
    stack = connect(table, endpoint_url, state)
    who = reviewer or f"cli:{_user()}"
    from pipeline.records import MalformedRecord

    with _aws_errors():
        try:
            record = reviews.record_review(stack.settings.table_name, image_id, label, note,
                                           reviewer=who)
        except reviews.ReviewError as exc:
            raise typer.BadParameter(str(exc)) from None
        except MalformedRecord as exc:  # the review is stored; the model's side is unreadable
            _fail(f"recorded the review, but cannot show the model's verdict: {exc}", 1)
    if record is None:
        _fail(f"no result for image {image_id!r} in {stack.settings.table_name}")
    recorded = f"recorded: {escape(image_id)} is {label} ({escape(who)})"
    if record.status == STATUS_INVALID:
        # the upload was unusable: the model judged nothing to agree or disagree with
        console.print(f"{recorded}; the model did not judge it (unusable upload: "
                      f"{escape(record.reason.split(':', 1)[0])})")
        return
    model = "anomalous" if record.is_anomalous else "normal"
    agree = (label == "anomaly") == record.is_anomalous
    verdict = "agrees with" if agree else "[bold]disagrees[/bold] with"
    console.print(f"{recorded}; this {verdict} the model ({model}, score {record.score:.3f})")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


# --- export-dataset -------------------------------------------------------------------------

def export_dataset(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write train/ and manifest.jsonl.")],
    reviewed: Annotated[bool, typer.Option(
        "--reviewed", help="Only images a person reviewed, labelled as the person said. "
                           "Without it: every valid image, labelled by the model unless "
                           "a person reviewed it.")] = False,
    line: Annotated[str, typer.Option("--line", help="Only this line.")] = "",
    since: SinceOption = None,
    until: UntilOption = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace a data set already in OUT_DIR.")] = False,
    table: TableOption = None,
    endpoint_url: EndpointOption = None,
    state: StateOption = None,
) -> None:
    """Write a training set from the results, for `linesight train`.

    OUT_DIR gets train/normal, train/anomaly and a Lookout / Ground Truth
    manifest.jsonl (source-ref, anomaly-label); images are downloaded from S3.

    Example:

        linesight export-dataset --reviewed data/reviewed

        linesight train data/reviewed --out models/retrained
    """
    from pipeline import aws
    from pipeline.export import ExportError, plan_export, write_dataset
    from pipeline.queries import iter_results

    if out_dir.exists() and not out_dir.is_dir():
        raise typer.BadParameter(f"{out_dir} is a file", param_hint="OUT_DIR")
    query = _query(line_id=line, since=parse_when(since, "--since"),
                   until=parse_when(until, "--until", upper=True),
                   reviewed=True if reviewed else None, limit=500)
    stack = connect(table, endpoint_url, state)
    unreadable: list[str] = []
    with _aws_errors():
        records = list(iter_results(stack.settings.table_name, query, unreadable))
        _left_out(unreadable)
        items = plan_export(records, reviewed=reviewed)
        s3 = aws.client("s3")
        try:
            with _progress() as progress:
                task = progress.add_task("downloading images", total=len(items))
                summary = write_dataset(items, out_dir, lambda record: _fetch(s3, record),
                                        overwrite=overwrite,
                                        advance=lambda: progress.advance(task))
        except ExportError as exc:
            _fail(str(exc))
        except OSError as exc:
            _fail(f"cannot write to {out_dir}: {exc.strerror or exc}")
    source = "people's reviews" if reviewed else "the model's verdicts (and any reviews)"
    console.print(f"wrote {summary.total} images to {out_dir}: {summary.normal} normal, "
                  f"{summary.anomaly} anomaly, labelled by {source}")
    if summary.skipped:
        console.print(f"[dark_orange]skipped {len(summary.skipped)} whose image is gone[/]")
    console.print(f"manifest: {out_dir / 'manifest.jsonl'}")
    console.print(f"next: linesight train {out_dir} --out models/retrained")


def _fetch(s3: Any, record: ResultRecord) -> bytes:
    from botocore.exceptions import ClientError

    try:
        return bytes(s3.get_object(**object_params(record.s3_uri, record.image_version))[
            "Body"].read())
    except ClientError as exc:
        # the image is gone; a missing bucket is not: a wrong stack or region, said as such
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "NoSuchVersion", "404"):
            raise KeyError(record.s3_uri) from None
        raise


# --- upload ---------------------------------------------------------------------------------

def upload(
    directory: Annotated[Path, typer.Argument(help="Folder of .jpg/.jpeg/.png images.")],
    line: Annotated[str, typer.Option("--line", help="The assembly line id.")],
    camera: Annotated[str, typer.Option("--camera", help="The camera id.")],
    token: Annotated[str | None, typer.Option(
        "--token", help="The camera's API token (default: LINESIGHT_TOKEN, else the local "
                        "stack's token for this camera).")] = None,
    api_url: Annotated[str | None, typer.Option(
        "--api-url", help="The API's base URL (default: LINESIGHT_API_URL, else the local "
                          "stack's).")] = None,
    state: StateOption = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=64,
                                             help="Parallel uploads.")] = 4,
    retries: Annotated[int, typer.Option("--retries", min=0, max=10,
                                         help="Retries on 5xx, 409, 429, S3's RequestTimeout "
                                              "and network errors.")] = 3,
    post: Annotated[bool, typer.Option(
        "--post", help="Use POST /uploads (presigned POST) instead of GET /getsignedurl.")
    ] = False,
) -> None:
    """Upload a folder of images through the API, as a camera on that line would.

    Example:

        linesight upload resources/samples/test/anomaly --line line-1 --camera cam-1
    """
    from scripts.uploadImages import (
        API,
        INTERRUPTED,
        NO_IMAGES,
        FolderState,
        failure_summary,
        images_in,
        token_problem,
        upload_folder,
        url_problem,
    )

    if not directory.is_dir():
        raise typer.BadParameter(f"{directory} is not a folder", param_hint="DIRECTORY")
    files, left_out = images_in(directory)
    if not files:
        raise typer.BadParameter(f"{directory} {NO_IMAGES}", param_hint="DIRECTORY")
    url, secret = api_url or "", token or os.environ.get("LINESIGHT_TOKEN", "")
    described: dict[str, Any] = {}
    if state is not None:
        described = use_stack_file(state, () if url else ("api_url",))
    else:
        url = url or os.environ.get("LINESIGHT_API_URL", "")
        if not url or not secret:
            from scripts.local_stack import StateFileError, read_state

            try:
                described = asdict(read_state())
            except FileNotFoundError:
                _fail("no API to upload to: pass --api-url and --token, or start the local "
                      "stack with `linesight local up`")
            except StateFileError as exc:
                _fail(str(exc))
    url = url or described["api_url"]
    if problem := url_problem(url):
        raise typer.BadParameter(problem, param_hint="--api-url")
    if not secret:
        tokens = described.get("camera_tokens")
        secret = (tokens or {}).get(f"{line}/{camera}", "")
        if tokens is None:  # a deployed stack's outputs hold no tokens
            _fail(f"pass the token of line {line!r} camera {camera!r} with --token (see "
                  "`linesight tokens create`)")
        if not secret:
            _fail(f"the local stack has no token for line {line!r} camera {camera!r}; "
                  "pass --token (see `linesight tokens`)")
    if problem := token_problem(secret):
        raise typer.BadParameter(problem, param_hint="--token")
    if left_out:
        err.print(left_out, markup=False, highlight=False)
    folder = FolderState()
    uploads = upload_folder(directory, camera, line, url, secret, concurrency=concurrency,
                            retries=retries, progress=True, post=post, folder=folder)
    failed = [u for u in uploads if not u.ok]
    # Each distinct reason once, with how many images: the API's or S3's own words, and
    # which step refused (the token, the route, or the signed upload); then those not sent.
    for reason in failure_summary(uploads):
        err.print(f"[red]error:[/red] {escape(reason)}", highlight=False)
    token_refused = any(u.step == API and u.status == 401 for u in failed)
    if token_refused:
        err.print(f"pass the token of line {line!r} camera {camera!r} with --token (see "
                  "`linesight tokens`)", markup=False, highlight=False)
    elif any(u.step == API and u.status == 0 and u.attempts for u in failed):
        err.print(f"is {url} the API's URL, and is the stack running? (`linesight local up` "
                  "starts the local one)", markup=False, highlight=False)
    not_sent = sum(1 for u in failed if u.skipped)
    console.print(f"{len(uploads) - len(failed)} of {len(uploads)} images uploaded for line "
                  f"{line} camera {camera}" + (f", {not_sent} not sent" if not_sent else ""))
    if folder.stopped == INTERRUPTED:
        raise typer.Exit(130)  # as a shell reports a command Ctrl-C stopped, whatever went
    if failed:  # 2: every image refused for its token, a usage error like a bad option
        raise typer.Exit(2 if token_refused and all(
            u.status == 401 for u in failed if not u.skipped) else 1)
