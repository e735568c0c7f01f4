"""`linesight local up|env` and `linesight demo`: the pipeline on this machine."""

from __future__ import annotations

import shlex
import signal
import threading
from pathlib import Path

import typer
from rich.console import Console

from scripts.local_stack import STATE_FILE, LocalStack, read_state

console = Console()
DEFAULT_MODEL = Path("models/demo")

local = typer.Typer(help="Run the whole pipeline locally against a moto server.",
                    no_args_is_help=True)


@local.command("up")
def up(
    model: Path = typer.Option(DEFAULT_MODEL, help="model directory from `linesight train`"),
    api_port: int = typer.Option(8000, help="port of the local API (0: any free port)"),
    workers: int = typer.Option(2, help="ingest pollers (Lambda concurrency stand-in)"),
) -> None:
    """Start moto, provision every resource, serve the API and run the pollers until
    Ctrl-C. Writes .linesight/local.json with the endpoints and a demo camera token.

    Example: linesight local up --model models/demo
    """
    if not (model / "model.json").exists():
        raise typer.BadParameter(f"{model} has no model.json; run `linesight train` first",
                                 param_hint="--model")
    stack = LocalStack(model, api_port=api_port, ingest_workers=workers)
    info = stack.start()
    console.print(f"[green]LineSight local stack is up[/green] (state in {STATE_FILE})")
    console.print(f"  API            {info.api_url}")
    console.print(f"  AWS endpoint   {info.aws_endpoint_url}")
    console.print(f"  demo camera    line {info.line_id} camera {info.camera_id}")
    console.print(f"  token          {info.token}")
    console.print("Upload: python scripts/uploadImages.py resources/samples/test/anomaly "
                  f"{info.camera_id} {info.line_id} {info.api_url} $TOKEN 0")
    console.print("Press Ctrl-C to stop.")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        console.print("stopping...")
        stack.stop()


@local.command("env")
def env() -> None:
    """Print shell exports that point `chalice local` (or any boto3 code) at the
    running local stack.

    Example: eval "$(linesight local env)" && cd api && chalice local --port 8001
    """
    for key, value in read_state().environment.items():
        typer.echo(f"export {key}={shlex.quote(value)}")


def register(app: typer.Typer) -> None:
    app.add_typer(local, name="local")

    @app.command("demo")
    def demo(
        out: Path = typer.Option(Path("out/demo"), help="where summary.json and the report go"),
        samples: Path = typer.Option(Path("resources/samples"), help="sample images"),
        model: Path = typer.Option(DEFAULT_MODEL, help="model directory (trained if missing)"),
    ) -> None:
        """The whole pipeline end to end: samples, training, local stack, uploads over
        2 lines x 2 cameras, results, alerts, lake rows, summary and report.

        Example: linesight demo
        """
        from scripts.demo import run_demo

        raise typer.Exit(run_demo(out=out, samples=samples, model=model))
