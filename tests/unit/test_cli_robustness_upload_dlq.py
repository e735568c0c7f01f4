"""`linesight dlq redrive` prints what AWS and stored data say as text: a reason holding
`[/]` or `[red]` is shown as it is, once per reason with its count, never read as markup."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from pipeline import dlq


def test_redrive_reasons_are_counted_and_printed_as_text(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    from scripts import cli_dlq

    result = dlq.RedriveResult(moved=1)
    for message_id, reason in (("m1", "StartExecution refused: AccessDeniedException: no"),
                               ("m2", "StartExecution refused: AccessDeniedException: no"),
                               ("m3", "1 stream records still cannot be read: result '[/]x'")):
        result.fail(message_id, reason)
    result.poison["m4"] = "message body is not JSON: [red]x[/red]"
    monkeypatch.setattr(cli_dlq, "_stack", lambda state: SimpleNamespace())
    monkeypatch.setattr(cli_dlq, "_redrive", lambda info, queue, limit: result)
    monkeypatch.setattr(cli_dlq.console, "width", 250)
    app = typer.Typer()
    cli_dlq.register(app)

    @app.callback()
    def _root() -> None:
        pass

    redriven: Any = CliRunner().invoke(app, ["dlq", "redrive", "--queue", "workflow"])

    assert redriven.exit_code == 1, redriven.output
    lines = [" ".join(line.split()) for line in redriven.stdout.splitlines()]
    assert lines == [
        "workflow: 1 redriven, 3 failed (left in the queue), 1 poison messages left in the "
        "queue (no redrive can finish them; `linesight dlq list` shows them, `linesight dlq "
        "drop --poison --save FILE` takes them out and keeps a copy)",
        "2 failed: StartExecution refused: AccessDeniedException: no",
        "1 failed: 1 stream records still cannot be read: result '[/]x'",
        "1 poison: message body is not JSON: [red]x[/red]"]


def test_an_ingest_dead_letter_names_the_id_its_image_is_recorded_under() -> None:
    """An issued key: its upload id; sent back by the workflow (another photo took that
    id), the id of its own it is judged under. A key the API did not issue: the id its
    INVALID record has (made from the object's bytes), so `linesight results` can find
    it."""
    from pipeline import ingest
    from pipeline.records import parse_time

    at = parse_time("2026-11-25T08:00:00Z")
    issued = ingest.ObjectRef("b", "line-1/cam-1/2026/11/25/" + "c" * 32 + ".jpg", "e", 9, at)
    unissued = ingest.ObjectRef("b", "somewhere/else.jpg", "e", 9, at)
    letters = [letter for ref in (issued, unissued) for letter in dlq.describe(
        "ingest", {"MessageId": "m", "Body": ingest.notification_body(ref)})]
    assert [letter.image_id for letter in letters] == ["c" * 32, unissued.idempotency_key[:32]]
    assert [letter.line_id for letter in letters] == ["line-1", ""]
    [requeued] = dlq.describe("ingest", {"MessageId": "m", "Body": ingest.notification_body(
        issued, requeued=True)})
    assert requeued.image_id == ingest.rewritten_image_id("c" * 32, issued) != "c" * 32
