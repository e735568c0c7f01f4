"""`linesight dlq list|redrive|drop`: inspect dead letters, put them back in the flow, or
take out for good (a copy kept) those no redrive can finish.

The queues, table, topic and stream come from a stack description: the running local
stack's `.linesight/local.json` (the default), or a deployed stack's outputs
(`pulumi stack output --json > stack.json`). See `pipeline.dlq` for what each queue holds
and what redriving it does.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from enum import StrEnum
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any

import typer
from botocore.exceptions import BotoCoreError, ClientError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipeline import aws, dlq
from scripts.cli_tokens import (
    StateOption,
    fail,
    no_answer,
    operator_aws,
    use_local_stack,
    use_stack_file,
)

console = Console()
dlq_app = typer.Typer(help="Inspect, redrive and drop dead letters (ingest, workflow, lake).",
                      no_args_is_help=True)


class Queue(StrEnum):
    ingest = "ingest"
    workflow = "workflow"
    lake = "lake"


QueueOption = Annotated[list[Queue] | None, typer.Option(
    "--queue", help="Which dead-letter queue (repeatable; default: all three).",
    show_default=False)]
# What list and redrive read from a stack description; a deployed stack's outputs name the
# ingest queue `ingest_queue_url`.
NEEDED = ("region", "queue_url", "dlq_url", "failure_queue_url", "lake_failure_queue_url",
          "state_machine_arn", "table", "topic_arn", "firehose_stream")


def register(app: typer.Typer) -> None:
    """Add the `dlq` group to the `linesight` app."""
    app.add_typer(dlq_app, name="dlq")


def _stack(state: Path | None) -> Any:
    operator_aws()  # short timeouts: an endpoint that does not answer fails in seconds
    if state is None:
        return use_local_stack()
    described = use_stack_file(state, NEEDED)
    return SimpleNamespace(**{key: described[key] for key in NEEDED})


def _queue_url(info: Any, queue: Queue) -> str:
    return {Queue.ingest: info.dlq_url, Queue.workflow: info.failure_queue_url,
            Queue.lake: info.lake_failure_queue_url}[queue]


@dlq_app.command("list")
def list_(queue: QueueOption = None, state: StateOption = None,
          limit: Annotated[int, typer.Option(min=1, help="At most this many per queue.")] = 100
          ) -> None:
    """Show dead letters: the image each refers to and why it failed. They stay queued.

    Example:

        linesight dlq list --queue ingest
    """
    info = _stack(state)
    queues = _queues(queue)
    view = Table("queue", "id", "line", "camera", "image", "reason", "receives",
                 title="dead letters", caption="receives: how often SQS handed the message "
                 "out, to the pipeline and to each `dlq list` alike")
    for column in view.columns[1:6]:  # an id or an S3 key cut short is of no use
        column.overflow = "fold"
    total = 0
    full: list[str] = []  # queues that may hold more than the limit shown
    try:
        for name in queues:
            letters = dlq.peek(aws.client("sqs"), _queue_url(info, name), name.value,
                               s3=aws.client("s3"), limit=limit)
            if len(letters) >= limit:
                full.append(name.value)
            for letter in letters:
                total += 1
                # Stored text (a Cause, a key, a tag) is shown as it is, never as markup.
                view.add_row(name.value, *(escape(text) for text in (
                    letter.message_id[:dlq.SHORT_ID], letter.line_id or "-",
                    letter.camera_id or "-", letter.image or "-", letter.reason)),
                    str(letter.receive_count or ""))
    except ClientError as exc:
        fail(f"cannot read the queues: {exc}", 1)
    except BotoCoreError as exc:
        fail(no_answer(exc), 1)
    if total:
        console.print(view)
    else:
        console.print("no dead letters in " + ", ".join(q.value for q in queues))
    if full:
        console.print(f"{limit} shown of {', '.join(full)}: there may be more (--limit)")


@dlq_app.command("redrive")
def redrive(queue: QueueOption = None, state: StateOption = None,
            limit: Annotated[int, typer.Option(min=1, help="At most this many per queue.")
                             ] = 1000) -> None:
    """Put dead letters back in the flow: ingest ones go back to the ingest queue, failed
    executions are finished (record stored, or alert published), lake batches are re-sent.

    Example:

        linesight dlq redrive --queue ingest
    """
    info = _stack(state)
    failed = 0
    try:
        for name in _queues(queue):
            try:
                result = _redrive(info, name, limit)
            except dlq.RedriveStopped as stopped:
                _say_redriven(name, stopped.result, limit)
                cause = stopped.cause
                why = ("interrupted (Ctrl-C)" if isinstance(cause, KeyboardInterrupt) else
                       no_answer(cause) if isinstance(cause, BotoCoreError) else str(cause))
                fail(f"redrive of {name.value} stopped: {why}; the messages it had not "
                     "finished are back in the queue",
                     130 if isinstance(cause, KeyboardInterrupt) else 1)
            # still in the queue, whose not-empty alarm stays on: exit 1
            failed += (len(result.failed) + len(result.undeleted) + len(result.poison)
                       + result.refused + result.parked)
            _say_redriven(name, result, limit)
    except ClientError as exc:
        fail(f"redrive stopped: {exc}", 1)
    except BotoCoreError as exc:
        fail(f"redrive stopped: {no_answer(exc)}", 1)
    if failed:
        raise typer.Exit(1)


def _queues(chosen: list[Queue] | None) -> list[Queue]:
    """The queues a command works on, each once, in the order given (default: all)."""
    return list(dict.fromkeys(chosen or list(Queue)))


def _say_redriven(name: Queue, result: dlq.RedriveResult, limit: int) -> None:
    """What a redrive of one queue did, in one line, and why any messages stayed."""
    console.print(
        f"{name.value}: {result.moved} redriven"
        + (f", {result.executions_started} executions started" if
           result.executions_started else "")
        + (f", {result.alerts_published} alerts published" if
           result.alerts_published else "")
        + (f", {result.alerts_already_sent} alerts an earlier redrive sent not sent "
           "again" if result.alerts_already_sent else "")
        + (f", {result.lake_rows_sent} lake rows sent" if result.lake_rows_sent else "")
        + (f", {result.parked} stream records that cannot be read kept as their own "
           "dead letter" if result.parked else "")
        + (f", [yellow]{result.refused} lake rows Firehose refused again kept as their "
           "own dead letter[/yellow]" if result.refused else "")
        + (f", [red]{len(result.failed)} failed (left in the queue)[/red]" if
           result.failed else "")
        + (f", [red]{len(result.undeleted)} went through but SQS would not delete "
           f"them ({escape(', '.join(result.undeleted))}): they are still in the "
           "queue[/red]" if result.undeleted else "")
        + (f", [yellow]{len(result.poison)} poison messages left in the queue (no "
           "redrive can finish them; `linesight dlq list` shows them, `linesight dlq "
           "drop --poison --save FILE` takes them out and keeps a copy)[/yellow]" if
           result.poison else ""))
    _print_reasons("failed", result.reasons)
    _print_reasons("poison", result.poison)
    if result.received >= limit:
        console.print(f"  {limit} read from {name.value}, the --limit: there may be more")


@dlq_app.command("drop")
def drop(save: Annotated[Path, typer.Option(
             "--save", show_default=False, dir_okay=False,
             help="Append a copy of each dropped message (body, attributes, why it failed) "
                  "to this JSON-lines file first.")],
         message_ids: Annotated[list[str] | None, typer.Argument(
             metavar="[MESSAGE_ID]...", show_default=False,
             help="Dead letters to drop, by the id `linesight dlq list` shows (the first "
                  f"{dlq.SHORT_ID} characters of the message id, or all of it).")
         ] = None,
         poison: Annotated[bool, typer.Option(
             "--poison", help="Drop every poison message: one no redrive can ever finish.")
         ] = False,
         queue: QueueOption = None, state: StateOption = None,
         limit: Annotated[int, typer.Option(min=1, help="At most this many per queue.")
                          ] = 1000) -> None:
    """Take dead letters out of their queue for good, so that its not-empty alarm clears.
    Each is appended to the --save file before it is deleted; nothing else is touched.

    Example:

        linesight dlq drop --poison --save dropped.jsonl
    """
    if not message_ids and not poison:
        raise typer.BadParameter("name the messages to drop (their ids, from `linesight dlq "
                                 "list`), or pass --poison", param_hint="MESSAGE_ID")
    if save.is_dir():
        raise typer.BadParameter(f"{save} is a folder: name a file", param_hint="--save")
    info = _stack(state)
    wanted = list(dict.fromkeys(message_ids or ()))
    short = [message_id for message_id in wanted if len(message_id) < dlq.SHORT_ID]
    if short:
        raise typer.BadParameter(f"{', '.join(short)}: give at least {dlq.SHORT_ID} characters "
                                 "of a message id", param_hint="MESSAGE_ID")
    found: set[str] = set()
    ambiguous: set[str] = set()
    trouble = 0
    try:
        for name in _queues(queue):
            result = dlq.drop(aws.client("sqs"), _queue_url(info, name), name.value,
                              lambda copies: _append(save, copies), message_ids=wanted,
                              poison=poison, limit=limit)
            found |= result.found
            ambiguous |= result.ambiguous
            trouble += len(result.undeleted)
            console.print(
                f"{name.value}: {len(result.dropped)} dropped"
                + (f", [red]{len(result.undeleted)} saved but SQS would not delete them "
                   f"({escape(', '.join(result.undeleted))}): they are still in the "
                   "queue[/red]" if result.undeleted else ""))
    except OSError as exc:
        fail(f"cannot save to {save}: {exc.strerror or exc}; nothing was dropped from that "
             "queue", 1)
    except ClientError as exc:
        fail(f"drop stopped: {exc}", 1)
    except BotoCoreError as exc:
        fail(f"drop stopped: {no_answer(exc)}", 1)
    if ambiguous:
        console.print(f"[red]not dropped, each fits several messages: "
                      f"{escape(', '.join(sorted(ambiguous)))}[/red] (give more of the id)")
    missing = [message_id for message_id in wanted
               if message_id not in found and message_id not in ambiguous]
    if missing:
        console.print(f"[red]not found: {escape(', '.join(missing))}[/red] (dropped already, "
                      "in another queue, or hidden by a redrive running now)")
    if save.exists():
        console.print(f"copies in {escape(str(save))}", highlight=False)
    if missing or ambiguous or trouble:
        raise typer.Exit(1)


def _append(path: Path, copies: list[dict[str, Any]]) -> None:
    """Append one JSON line per message and make sure it is on disk before returning."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        out.writelines(json.dumps(copy) + "\n" for copy in copies)
        out.flush()
        os.fsync(out.fileno())


def _print_reasons(what: str, reasons: dict[str, str]) -> None:
    """Each distinct reason once, with how many messages it holds back, most first."""
    for reason, count in Counter(reasons.values()).most_common():
        console.print(f"  {count} {what}: {escape(reason)}", highlight=False)


def _redrive(info: Any, queue: Queue, limit: int) -> dlq.RedriveResult:
    sqs = aws.client("sqs")
    if queue is Queue.ingest:
        return dlq.redrive_to_queue(sqs, info.dlq_url, info.queue_url, limit=limit)
    if queue is Queue.workflow:
        targets = dlq.WorkflowTargets(info.state_machine_arn, info.table, info.topic_arn)
        return dlq.redrive_workflow(sqs, info.failure_queue_url, targets,
                                    sfn=aws.client("stepfunctions"),
                                    ddb=aws.client("dynamodb"), sns=aws.client("sns"),
                                    s3=aws.client("s3"), limit=limit)
    return dlq.redrive_lake(sqs, info.lake_failure_queue_url,
                            streams=aws.client("dynamodbstreams"),
                            firehose_stream=info.firehose_stream, region=info.region,
                            limit=limit)
