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
