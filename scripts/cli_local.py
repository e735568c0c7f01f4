"""`linesight local up|env` and `linesight demo`: the pipeline on this machine."""

from __future__ import annotations

import shlex
import signal
import socket
import threading
from pathlib import Path

import typer
from rich.console import Console

from pipeline.stackconfig import ConfigError, load_stack_config
from scripts.cli_tokens import fail
from scripts.local_stack import (
    REPO,
    STATE_FILE,
    LocalStack,
    StateFileError,
    Topology,
    answers,
    read_state,
)

console = Console()
DEFAULT_MODEL = Path("models/demo")

local = typer.Typer(help="Run the whole pipeline locally against a moto server.",
                    no_args_is_help=True)


@local.command("up")
def up(
    model: Path = typer.Option(DEFAULT_MODEL, help="model directory from `linesight train`"),
    api_port: int = typer.Option(8000, min=0, max=65535,
                                 help="port of the local API (0: any free port)"),
    workers: int = typer.Option(2, min=1, max=32,
                                help="ingest pollers (Lambda concurrency stand-in)"),
    stack_name: str = typer.Option("", "--stack",
                                   help="serve the lines of Pulumi.<stack>.yaml (default: "
                                        "2 lines x 2 cameras)"),
) -> None:
    """Start moto, provision every resource, serve the API and run the pollers until
    Ctrl-C. Writes .linesight/local.json with the endpoints, a token per camera and a
    reviewer token per line.

    Example: linesight local up --model models/demo --stack plant-a
    """
    if not (model / "model.json").exists():
        raise typer.BadParameter(f"{model} has no model.json; run `linesight train` first",
                                 param_hint="--model")
    if api_port and not _free(api_port):
        raise typer.BadParameter(
            f"port {api_port} is in use (another `linesight local up`, or `chalice local`?); "
            "pass --api-port 0 for any free port", param_hint="--api-port")
    from pipeline.detector.artifact import ArtifactError  # numpy: not at every command's start

    stack = LocalStack(model, _topology(stack_name), api_port=api_port, ingest_workers=workers)
    try:
        info = stack.start()
    except ArtifactError as exc:  # before anything started
        fail(f"{exc}", 2)
    except OSError as exc:  # the port was taken between the check and the start
        stack.stop()
        fail(f"could not start the local stack: {exc}")
    if stack.write_state:
        console.print(f"[green]LineSight local stack is up[/green] (state in {STATE_FILE})")
    else:
        console.print(f"[green]LineSight local stack is up[/green]; [yellow]another one is "
                      f"running and keeps {STATE_FILE}, so `linesight` commands go to that "
                      "one: give them this one's endpoints (--endpoint-url, "
                      "LINESIGHT_API_URL)[/yellow]")
    console.print(f"  API            {info.api_url}")
    console.print(f"  AWS endpoint   {info.aws_endpoint_url}")
    console.print(f"  demo camera    line {info.line_id} camera {info.camera_id}")
    console.print(f"  token          {info.token}")
    if reviewer := info.reviewer_tokens.get(info.line_id):
        console.print(f"  reviewer token {reviewer}  (POST /results/{{image_id}}/review)")
    console.print("Upload: linesight upload resources/samples/test/anomaly "
                  f"--line {info.line_id} --camera {info.camera_id}")
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


def _free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the API server does
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _topology(stack_name: str) -> Topology | None:
    if not stack_name:
        return None
    path = REPO / f"Pulumi.{stack_name}.yaml"
    if not path.exists():
        raise typer.BadParameter(f"{path.name} not found", param_hint="--stack")
    try:
        return Topology.from_stack_config(load_stack_config(path, REPO / "Pulumi.yaml"))
    except ConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="--stack") from None


@local.command("env")
def env() -> None:
    """Print shell exports that point `chalice local` (or any boto3 code) at the
    running local stack.

    Example: eval "$(linesight local env)" && cd api && chalice local --port 8001
    """
    try:
        info = read_state()
    except (FileNotFoundError, StateFileError) as exc:
        fail(str(exc))
    if not answers(info.aws_endpoint_url):
        fail(f"the stack in {STATE_FILE} (AWS endpoint {info.aws_endpoint_url}) is not "
             "running: start it with `linesight local up`", 1)
    for key, value in info.environment.items():
        typer.echo(f"export {key}={shlex.quote(value)}")


def register(app: typer.Typer) -> None:
    app.add_typer(local, name="local")

    @app.command("demo")
    def demo(
        out: Path = typer.Option(Path("out/demo"), help="where summary.json and the report go"),
        samples: Path = typer.Option(Path("resources/samples"), help="sample images"),
        model: Path = typer.Option(DEFAULT_MODEL, help="model directory (trained if missing)"),
    ) -> None:
        """Run the whole pipeline end to end and show what happened.

        Samples, training, local stack, uploads over 2 lines x 2 cameras, results,
        alerts, lake rows, a summary table, summary.json and the HTML report.

        Example: linesight demo
        """
        from pipeline.detector.artifact import ArtifactError
        from scripts.demo import run_demo

        try:
            code = run_demo(out=out, samples=samples, model=model)
        except ArtifactError as exc:
            fail(f"{exc}; delete the folder and the demo trains a new model", 2)
        except FileNotFoundError as exc:  # --samples without test images
            fail(str(exc), 2)
        raise typer.Exit(code)
