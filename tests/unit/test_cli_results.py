"""How the results commands find the stack, and how they read times: no AWS involved."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from scripts import cli_results
from scripts.local_stack import StackInfo


def state(**environment: str) -> StackInfo:
    fields: dict[str, Any] = dict.fromkeys(StackInfo.__dataclass_fields__, "")
    fields.update(api_url="http://127.0.0.1:8123", token="tok-demo",
                  camera_tokens={"line-1/cam-1": "tok-1"}, reviewer_tokens={},
                  environment=environment, lines={})
    return StackInfo(**fields)


@pytest.fixture
def clean_env(aws_env: None, monkeypatch: pytest.MonkeyPatch
              ) -> Iterator[pytest.MonkeyPatch]:
    """`connect` writes os.environ itself (as the CLI process should), so put it back."""
    saved = dict(os.environ)
    monkeypatch.delenv("LINESIGHT_API_URL", raising=False)
    monkeypatch.delenv("LINESIGHT_TOKEN", raising=False)
    yield monkeypatch
    os.environ.clear()
    os.environ.update(saved)


def test_local_state_is_used_when_nothing_else_says(clean_env: pytest.MonkeyPatch) -> None:
    info = state(LINESIGHT_TABLE="from-state", AWS_ENDPOINT_URL="http://127.0.0.1:5999")
    clean_env.setattr("scripts.local_stack.read_state", lambda *_: info)

    stack = cli_results.connect()

    assert stack.settings.table_name == "from-state"
    assert os.environ["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5999"
    assert (stack.api_url, stack.default_token) == ("http://127.0.0.1:8123", "tok-demo")


def test_environment_beats_the_local_state(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("LINESIGHT_TABLE", "from-env")
    clean_env.setattr("scripts.local_stack.read_state",
                      lambda *_: pytest.fail("the state file must not be read"))

    assert cli_results.connect().settings.table_name == "from-env"


def test_options_beat_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("LINESIGHT_TABLE", "from-env")

    stack = cli_results.connect(table="from-option", endpoint_url="http://127.0.0.1:6001")

    assert stack.settings.table_name == "from-option"
    assert os.environ["AWS_ENDPOINT_URL"] == "http://127.0.0.1:6001"


def test_no_stack_at_all_is_one_line(clean_env: pytest.MonkeyPatch) -> None:
    def missing(*_: object) -> StackInfo:
        raise FileNotFoundError(".linesight/local.json not found")

    clean_env.setattr("scripts.local_stack.read_state", missing)
    app = typer.Typer()
    cli_results.register(app)

    result = CliRunner().invoke(app, ["results"])

    assert result.exit_code == 2
    assert "no stack to read" in result.output
    assert "Traceback" not in result.output


def deployed(tmp_path: Any, **outputs: str) -> Any:
    """A deployed stack's `pulumi stack output --json`, written to stack.json."""
    import json

    path = tmp_path / "stack.json"
    path.write_text(json.dumps({
        "region": "ap-southeast-2", "table": "plant-results", "tokens_table": "plant-tokens",
        "results_bucket": "plant-results-bucket", "api_url": "https://api.example/v1",
        "ingest_queue_url": "https://sqs/ingest", "dashboard_url": "https://console/x",
        **outputs}))
    return path


def test_a_deployed_stacks_outputs_point_at_it_and_aws_itself(
        clean_env: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """From a shell set up for the emulator, another region and another table, --state
    reads the deployed stack, in its region; the other options still win over it."""
    for variable, value in (("AWS_ENDPOINT_URL", "http://127.0.0.1:5999"),
                            ("AWS_REGION", "eu-west-1"), ("AWS_DEFAULT_REGION", "eu-west-1"),
                            ("LINESIGHT_TABLE", "from-env"),
                            ("LINESIGHT_API_URL", "http://127.0.0.1:8000")):
        clean_env.setenv(variable, value)
    clean_env.setattr("scripts.local_stack.read_state",
                      lambda *_: pytest.fail("the local state file must not be read"))

    stack = cli_results.connect(state=deployed(tmp_path))

    assert (stack.settings.table_name, stack.settings.region) == ("plant-results",
                                                                  "ap-southeast-2")
    assert stack.settings.results_bucket == "plant-results-bucket"
    assert stack.api_url == "https://api.example/v1"
    assert "AWS_ENDPOINT_URL" not in os.environ
    assert cli_results.connect(table="other", state=deployed(tmp_path)
                               ).settings.table_name == "other"


def test_a_deployed_stacks_low_confidence_bands_come_with_its_outputs(
        clean_env: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """`report --state` drew the default band (0.20) whatever the stack's own were."""
    clean_env.setenv("LINESIGHT_CONFIDENCE_THRESHOLD", "0.1")  # another stack's, in the shell

    settings = cli_results.connect(state=deployed(
        tmp_path, confidence_threshold="0.3",
        line_policies='{"weld-2": {"confidenceThreshold": 0.45, "threshold": 0.4}}')).settings

    assert settings.confidence_threshold == 0.3
    assert cli_results.bands_by_line(settings) == {"weld-2": 0.45}


def test_a_deployed_stacks_metrics_are_read_from_its_own_namespace(
        clean_env: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """`report --state` reads the namespace the stack's outputs name; a stack deployed
    before each stack had one wrote (and is read from) the shared one."""
    clean_env.setenv("LINESIGHT_METRICS_NAMESPACE", "LineSight/another-stack")

    own = cli_results.connect(state=deployed(tmp_path, metrics_namespace="LineSight/plant"))
    assert own.settings.metrics_namespace == "LineSight/plant"
    clean_env.delenv("LINESIGHT_METRICS_NAMESPACE")
    older = cli_results.connect(state=deployed(tmp_path))
    assert older.settings.metrics_namespace == "LineSight"


def test_a_local_stacks_state_file_works_as_state_too(clean_env: pytest.MonkeyPatch,
                                                      tmp_path: Any) -> None:
    import json
    from dataclasses import asdict

    path = tmp_path / "elsewhere.json"
    path.write_text(json.dumps(asdict(state(LINESIGHT_TABLE="from-file",
                                            AWS_ENDPOINT_URL="http://127.0.0.1:5998"))))
    clean_env.setenv("LINESIGHT_TABLE", "from-env")

    stack = cli_results.connect(state=path)

    assert stack.settings.table_name == "from-file"
    assert os.environ["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5998"
    assert (stack.api_url, stack.default_token) == ("http://127.0.0.1:8123", "tok-demo")


@pytest.mark.parametrize("outputs, expected", [
    ({"region": ""}, "lacks region:"),
    ({"table": ""}, "lacks table:"),
])
def test_a_stack_description_that_lacks_what_a_command_needs_is_one_line(
        outputs: dict[str, str], expected: str, clean_env: pytest.MonkeyPatch,
        tmp_path: Any) -> None:
    app = typer.Typer()
    cli_results.register(app)

    result = CliRunner().invoke(app, ["results", "--state", str(deployed(tmp_path, **outputs))])

    said = " ".join(result.output.split())
    assert result.exit_code == 2, said
    assert expected in said and "pulumi stack output --json > stack.json" in said
    assert "Traceback" not in said


def test_upload_with_a_deployed_stack_uses_its_api_and_needs_a_token(
        clean_env: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Its outputs hold no camera tokens: without --token, one line says to pass one; with
    it, the upload goes to the stack's API."""
    from scripts import uploadImages

    sent: list[tuple[str, str]] = []
    clean_env.setattr(uploadImages, "upload_folder",
                      lambda directory, camera, line, url, token, **_: sent.append(
                          (url, token)) or [])
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "part.jpg").write_bytes(b"\xff\xd8")
    app = typer.Typer()
    cli_results.register(app)
    args = ["upload", str(tmp_path / "images"), "--line", "press-1", "--camera", "top",
            "--state", str(deployed(tmp_path))]

    missing = CliRunner().invoke(app, args)
    said = " ".join(missing.output.split())
    assert missing.exit_code == 2, said
    assert "pass the token of line 'press-1' camera 'top' with --token" in said
    assert sent == []

    given = CliRunner().invoke(app, [*args, "--token", "tok-top"])
    assert given.exit_code == 0, given.output
    assert sent == [("https://api.example/v1", "tok-top")]


def test_upload_stopped_by_ctrl_c_exits_130_and_names_what_it_left_out(
        clean_env: pytest.MonkeyPatch, tmp_path: Any) -> None:
    from scripts import uploadImages

    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.jpg", "b.jpg", "notes.txt"):
        (images / name).write_bytes(b"\xff\xd8")
    def stopped_by_ctrl_c(*_: Any, folder: uploadImages.FolderState, **__: Any) -> list[Any]:
        folder.stop(uploadImages.INTERRUPTED)
        return [uploadImages.Upload(str(images / "a.jpg"), True, "id-a", "key-a", 200),
                uploadImages.not_sent(images / "b.jpg", uploadImages.INTERRUPTED)]

    clean_env.setattr(uploadImages, "upload_folder", stopped_by_ctrl_c)
    app = typer.Typer()
    cli_results.register(app)

    result = CliRunner().invoke(app, ["upload", str(images), "--line", "l", "--camera", "c",
                                      "--api-url", "http://127.0.0.1:1", "--token", "tok"])

    said = " ".join(result.output.split())
    assert result.exit_code == 130, said
    assert "1 other entry in" in said and "1 image not sent: the upload stopped: " \
        "interrupted (Ctrl-C)" in said and "1 of 2 images uploaded" in said


@pytest.mark.parametrize("args", [["results"], ["tokens", "list"],
                                  ["upload", "{images}", "--line", "l", "--camera", "c"]])
def test_a_damaged_state_file_is_one_line_in_every_command(
        args: list[str], clean_env: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Half written by a stack starting up, or left by another version."""
    from scripts import cli_tokens, local_stack

    damaged = tmp_path / "local.json"
    damaged.write_text('{"api_url": "http')
    read = local_stack.read_state
    clean_env.setattr(local_stack, "read_state", lambda *_: read(damaged))
    clean_env.delenv("LINESIGHT_TABLE", raising=False)
    clean_env.delenv("LINESIGHT_TOKENS_TABLE", raising=False)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "part.jpg").write_bytes(b"\xff\xd8")
    app = typer.Typer()
    cli_results.register(app)
    cli_tokens.register(app)

    result = CliRunner().invoke(app, [arg.format(images=tmp_path / "images") for arg in args])

    said = " ".join(result.output.split())
    assert result.exit_code == 2, said
    assert "local.json is not a stack description" in said and "Traceback" not in said


@pytest.mark.parametrize("text, expected", [
    ("2026-01-02", datetime(2026, 1, 2, tzinfo=UTC)),  # a date is midnight UTC
    ("2026-01-02T08:30:00Z", datetime(2026, 1, 2, 8, 30, tzinfo=UTC)),
    ("2026-01-02T10:30:00+02:00", datetime(2026, 1, 2, 8, 30, tzinfo=UTC)),
    ("90m", timedelta(minutes=90)),  # an age: that long before now
    ("2d", timedelta(days=2)),
])
def test_times(text: str, expected: datetime | timedelta) -> None:
    if isinstance(expected, timedelta):  # now as the test runs, not as the module loaded
        expected = datetime.now(UTC) - expected
    parsed = cli_results.parse_when(text, "--since")
    assert parsed is not None
    assert abs((parsed - expected).total_seconds()) < 60


@pytest.mark.parametrize("text, hint", [
    ("2026-01-02T08:30:00", "add a zone"),  # a time without a zone is not guessed
    ("yesterday", "use e.g. 2h"),
    ("5 parsecs", "use e.g. 2h"),
])
def test_bad_times_name_the_fix(text: str, hint: str) -> None:
    with pytest.raises(typer.BadParameter, match=hint):
        cli_results.parse_when(text, "--since")


def test_local_env_refuses_a_stack_that_is_no_longer_running(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """A state file left by a stack that was killed must not send the shell to a dead port."""
    import socket

    from scripts import cli_local

    listening = socket.create_server(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    info = state(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}")
    info.aws_endpoint_url = f"http://127.0.0.1:{port}"
    monkeypatch.setattr(cli_local, "read_state", lambda *_: info)
    app = typer.Typer()
    cli_local.register(app)
    runner = CliRunner()

    running = runner.invoke(app, ["local", "env"])
    assert running.exit_code == 0, running.output
    assert f"export AWS_ENDPOINT_URL=http://127.0.0.1:{port}" in running.stdout
    listening.close()
    stopped = runner.invoke(app, ["local", "env"])
    assert stopped.exit_code == 1
    assert "is not running" in " ".join(stopped.output.split())
    assert "export" not in stopped.stdout

    from scripts.local_stack import read_state

    half_written = tmp_path / "local.json"
    half_written.write_text('{"api_url": "http')
    monkeypatch.setattr(cli_local, "read_state", lambda *_: read_state(half_written))
    damaged = runner.invoke(app, ["local", "env"])
    assert damaged.exit_code == 2
    assert "is not a stack description" in " ".join(damaged.output.split())


def test_a_stopped_stack_removes_its_state_file_but_not_a_later_ones(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    from dataclasses import asdict

    from scripts import local_stack

    monkeypatch.setattr(local_stack, "STATE_FILE", tmp_path / "local.json")
    for written_by_it, kept in ((True, False), (False, True)):
        stack = local_stack.LocalStack(tmp_path / "model")
        stack.info = state()
        later = state() if written_by_it else StackInfo(**{
            **asdict(state()), "aws_endpoint_url": "http://127.0.0.1:9"})  # same API port
        local_stack.STATE_FILE.write_text(json.dumps(asdict(later)))
        stack.stop()
        assert local_stack.STATE_FILE.exists() is kept
    local_stack.STATE_FILE.write_text('{"api_url": "http')  # another stack writing it now
    stack.stop()  # leaves it, and does not raise
    assert local_stack.STATE_FILE.exists()


def test_a_second_stack_leaves_a_running_ones_state_file_alone(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """`make demo` beside a `linesight local up` wrote its own stack into the state file,
    then deleted it when it stopped: `linesight` commands lost the stack still running."""
    import json
    import socket
    from dataclasses import asdict

    from scripts import local_stack
    from tests.conftest import quick_model

    class Started(Exception):
        pass

    def no_emulator(*_: Any, **__: Any) -> Any:
        raise Started

    monkeypatch.setattr(local_stack, "STATE_FILE", tmp_path / "local.json")
    monkeypatch.setattr(local_stack, "Emulator", no_emulator)
    model = quick_model(tmp_path / "model")
    with socket.create_server(("127.0.0.1", 0)) as running:
        port = running.getsockname()[1]
        local_stack.STATE_FILE.write_text(json.dumps(asdict(StackInfo(**{
            **asdict(state()), "aws_endpoint_url": f"http://127.0.0.1:{port}"}))))
        assert local_stack.another_running()
        second = local_stack.LocalStack(model)
        with pytest.raises(Started):
            second.start()
        assert second.write_state is False
    assert not local_stack.another_running()  # stopped: a new stack takes the file over
    third = local_stack.LocalStack(model)
    with pytest.raises(Started):
        third.start()
    assert third.write_state is True


def test_upload_to_an_api_that_does_not_answer_is_one_line(tmp_path: Any) -> None:
    import socket

    (tmp_path / "part.jpg").write_bytes(b"\xff\xd8 not really a photo")
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]  # nothing listens there once closed
    app = typer.Typer()
    cli_results.register(app)

    result = CliRunner().invoke(app, [
        "upload", str(tmp_path), "--line", "line-1", "--camera", "cam-1", "--token", "t",
        "--api-url", f"http://127.0.0.1:{port}", "--retries", "0"])

    assert result.exit_code == 1, result.output
    said = " ".join(result.output.split())
    assert (f"1 image failed: no answer from the API at http://127.0.0.1:{port} "
            "(connection refused)") in said  # which request: the API's
    assert "is the stack running?" in said and "Traceback" not in said


@pytest.mark.parametrize("url, token, why", [
    ("notaurl", "t", "is not a URL: give the scheme"),
    ("127.0.0.1:9", "t", "is not a URL: give the scheme"),
    ("http://[::1", "t", "is not a URL: Invalid IPv6 URL"),  # was a ValueError traceback
    # a token file saved on Windows, and a character no header carries (tracebacks too)
    ("http://127.0.0.1:9", "ls_tok\r", "the token holds a character that no HTTP header"),
    ("http://127.0.0.1:9", "ls_tok\u20ac", "the token holds a character that no HTTP header"),
])
def test_upload_to_something_that_is_not_a_url_is_one_line(url: str, token: str, why: str,
                                                            tmp_path: Any) -> None:
    (tmp_path / "part.jpg").write_bytes(b"\xff\xd8 not really a photo")
    app = typer.Typer()
    cli_results.register(app)
    result = CliRunner().invoke(app, ["upload", str(tmp_path), "--line", "line-1", "--camera",
                                      "cam-1", "--token", token, "--api-url", url])
    said = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 2, said
    assert why in said and "Traceback" not in said and "ls_tok" not in said


@pytest.mark.parametrize("width", [80, 100, 200])
def test_the_results_table_never_cuts_an_image_id(width: int,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """`review` takes the id from this table: at any terminal width it shows whole."""
    import io

    from rich.console import Console

    from pipeline.records import ResultRecord, parse_time

    at = parse_time("2026-11-24T10:15:30+00:00")
    records = [ResultRecord(f"{i:x}" * 32, line, camera, "s3://b/k.jpg", at, at, "OK",
                            is_anomalous=True, score=0.8, confidence=0.9,
                            alert_reason="low_confidence")
               for i, (line, camera) in enumerate([("line-1", "cam-1"),
                                                   ("press-line-12", "press-12-top")])]
    out = Console(width=width, file=io.StringIO(), color_system=None)
    monkeypatch.setattr(cli_results, "console", out)
    cli_results._print_table(records, limit=50)
    shown = out.file.getvalue()  # type: ignore[attr-defined]
    assert all(record.image_id in shown for record in records), shown
    assert "2 results" in shown


def test_local_up_on_a_port_in_use_is_one_line(tmp_path: Any) -> None:
    """Checked before anything starts: a second `local up` or a `chalice local` on 8000."""
    import socket

    from scripts import cli_local

    (tmp_path / "model.json").write_text("{}")
    app = typer.Typer()
    cli_local.register(app)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["local", "up", "--model", str(tmp_path),
                                          "--api-port", str(port)])
    said = " ".join(result.output.split())
    assert result.exit_code == 2, said
    assert f"port {port} is in use" in said and "--api-port 0" in said
    assert "Traceback" not in said


@pytest.mark.parametrize("command", [["local", "up", "--api-port", "0"], ["demo"]])
def test_a_damaged_model_is_one_line_before_the_stack_starts(
        tmp_path: Any, command: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The stack came up, then every upload failed to load the model (or, in the demo, the
    JSON error was a traceback)."""
    from scripts import cli_local
    from scripts.local_stack import LocalStack

    monkeypatch.setattr(LocalStack, "provision", lambda *_, **__: pytest.fail("started"))
    monkeypatch.setattr("scripts.demo.ensure_samples", lambda samples: None)
    (tmp_path / "model.json").write_text('{"format": "linesight-detector/1",\n')
    app = typer.Typer()
    cli_local.register(app)
    result = CliRunner().invoke(app, [*command, "--model", str(tmp_path),
                                      *(["--out", str(tmp_path / "out")]
                                        if command == ["demo"] else [])])
    said = " ".join(result.output.split())
    assert result.exit_code == 2, said
    assert "model.json is not valid JSON" in said and "Traceback" not in said


@pytest.mark.parametrize("command", [["tokens", "list", "--table", "t"],
                                     ["results", "--table", "t"]])
def test_a_table_without_a_region_says_how_to_give_one(
        command: list[str], clean_env: pytest.MonkeyPatch) -> None:
    from scripts import cli_tokens

    app = typer.Typer()
    cli_results.register(app)
    cli_tokens.register(app)
    clean_env.delenv("AWS_REGION", raising=False)
    clean_env.delenv("AWS_DEFAULT_REGION", raising=False)
    clean_env.delenv("AWS_ENDPOINT_URL", raising=False)
    clean_env.setenv("AWS_CONFIG_FILE", "/nonexistent")
    result = CliRunner().invoke(app, command)
    said = " ".join(result.output.split())
    assert result.exit_code == 1, said
    assert "no AWS region: pass --state stack.json, or set AWS_DEFAULT_REGION" in said


def test_report_totals_read_the_results_cameras_that_listmetrics_leaves_out() -> None:
    """ListMetrics names only metrics with data in the last two weeks, so a camera quiet
    since was missing from an older period's totals (and the page marked them red). The
    results' own cameras are read whatever it lists. botocore's Stubber stands in for
    CloudWatch: moto lists every metric it holds."""
    import boto3
    from botocore.stub import ANY, Stubber

    cloudwatch = boto3.client("cloudwatch", region_name="eu-west-1",
                              aws_access_key_id="x", aws_secret_access_key="x")
    now = datetime(2026, 11, 23, tzinfo=UTC)
    since, until = now - timedelta(days=30), now - timedelta(days=20)
    with Stubber(cloudwatch) as stub:
        stub.add_response("list_metrics", {"Metrics": []}, {"Namespace": "LineSight/ls-dev"})
        for _ in range(7):  # each per-image metric of the one camera, in its finest set
            stub.add_response("get_metric_statistics", {"Datapoints": [
                {"Sum": 4.0, "SampleCount": 4.0, "Maximum": 1.0}]}, {
                "Namespace": "LineSight/ls-dev", "MetricName": ANY,
                "Dimensions": [{"Name": "camera", "Value": "cam-1"},
                               {"Name": "line", "Value": "line-1"}],
                "StartTime": since - timedelta(minutes=1), "EndTime": until,
                "Period": 900, "Statistics": ["Sum", "SampleCount", "Maximum"]})
        totals = cli_results.cloudwatch_totals(cloudwatch, since, until, now=now,
                                               cameras={("line-1", "cam-1")},
                                               namespace="LineSight/ls-dev")
        stub.assert_no_pending_responses()
    assert totals is not None and totals["ProcessedImageCount"] == 4.0


def test_csv_keeps_a_reviewers_note_from_running_as_a_formula() -> None:
    """Anyone with a camera token can post a review note, and `--format csv` is opened in
    a spreadsheet: a note starting with = + - @ is written as text."""
    import csv
    import io

    from pipeline.records import ResultRecord, parse_time

    at = parse_time("2026-11-23T10:00:00Z")
    record = ResultRecord("a" * 32, "line-1", "cam-1", "s3://b/k.jpg", at, at, "OK",
                          score=-0.25, review={"label": "normal",
                                               "note": '=HYPERLINK("http://x","ok")'})

    [row] = csv.DictReader(io.StringIO(cli_results.records_csv([record])))

    assert row["review_note"] == '\'=HYPERLINK("http://x","ok")'
    assert row["score"] == "-0.25" and row["review_label"] == "normal"  # numbers stay


@pytest.mark.parametrize("command", [["show", ""], ["review", " ", "--label", "normal"]])
def test_an_empty_image_id_is_a_usage_error(clean_env: pytest.MonkeyPatch,
                                            command: list[str]) -> None:
    """It reached DynamoDB, whose ValidationException came back as exit 1."""
    app = typer.Typer()
    cli_results.register(app)

    result = CliRunner().invoke(app, [*command, "--table", "t"])

    assert result.exit_code == 2, result.output
    assert "must be a result's image id" in " ".join(result.output.split())


@pytest.mark.parametrize("change, complete", [
    ({}, True),
    # an uploader that died without its manifest: its camera's files were in no count
    ({"uploaded": 18, "results": 18, "lake_rows": 18}, False),
    ({"lake_rows": 25}, False),
    ({"alerts": 8}, False),
])
def test_the_demo_succeeds_only_when_every_planned_file_went_through(
        change: dict[str, int], complete: bool) -> None:
    from scripts.demo import went_through

    summary = {"planned": 26, "uploaded": 26, "results": 26, "lake_rows": 26, "alerts": 13,
               "alerts_due": 13}
    assert went_through({**summary, **change}) is complete


def test_the_cli_starts_without_numpy() -> None:
    """Every command paid for numpy and the detector's methods at start, for one except
    clause of `local up`."""
    import subprocess
    import sys

    shown = subprocess.run([sys.executable, "-c", "import sys, scripts.cli; "
                            "scripts.cli._register_all(); print('numpy' in sys.modules)"],
                           capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == "False", shown.stderr
