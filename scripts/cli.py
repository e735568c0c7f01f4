"""`linesight`: one command for operators and developers.

Subcommands live in small modules (`cli_detector`, `cli_local`, ...), each with a
`register(app)` function; this module only assembles them and turns user mistakes into
one clear line instead of a traceback.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

import typer
from rich.console import Console

app = typer.Typer(
    name="linesight",
    help="LineSight: real-time visual defect detection for factory lines.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)

# Each module adds its commands; listed here so `linesight --help` shows them all.
COMMAND_MODULES = (
    "scripts.cli_local",
    "scripts.cli_detector",
    "scripts.cli_results",
    "scripts.cli_tokens",
    "scripts.cli_dlq",
)


class UserError(Exception):
    """A mistake the user can fix; shown as one line, exit code 2."""


def _register_all() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # that group of commands is not part of this build
            raise
        module.register(app)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not sys.stdout.isatty():
        # Piped or captured output (CI logs, `| less`): rich would assume 80 columns and
        # squeeze the tables; give them room instead.
        os.environ.setdefault("COLUMNS", "130")
    _register_all()
    try:
        app()
    except UserError as exc:
        err.print(f"[red]error:[/red] {exc}")
        sys.exit(2)
    except FileNotFoundError as exc:
        err.print(f"[red]error:[/red] {exc}")
        sys.exit(2)


if __name__ == "__main__":
    main()
