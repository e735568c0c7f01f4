"""Per-camera tokens: salted hashes only, constant-time checks, a short cache, revocation,
expiry, and the `linesight tokens` commands. DynamoDB is in-process moto (no network)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import boto3
import pytest
from typer.testing import CliRunner

from pipeline import tokens
from pipeline.records import utc_now

TABLE = "tokens-test"


class Clock:
    """Monotonic and wall clocks that only move when told to."""

    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = utc_now()

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += timedelta(seconds=seconds)


@pytest.fixture
def table(aws_env: None) -> Iterator[str]:
    from moto import mock_aws

    with mock_aws():
        boto3.client("dynamodb").create_table(**tokens.tokens_table_args(TABLE))
        tokens._cache.clear()
        yield TABLE
        tokens._cache.clear()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(tokens.time, "monotonic", lambda: fake.mono)
    monkeypatch.setattr(tokens, "utc_now", lambda: fake.wall)
    return fake


def _items(table: str) -> list[dict[str, Any]]:
    return boto3.client("dynamodb").scan(TableName=table)["Items"]


def _revoke_elsewhere(table: str, token_id: str, value: Any = None) -> None:
    """Revoke as another process would (this process's cache is not told); `value` is the
    attribute as it is written (BOOL true by `linesight tokens revoke`)."""
    boto3.client("dynamodb").update_item(
        TableName=table, Key={"token_id": {"S": token_id}}, UpdateExpression="SET revoked = :t",
        ExpressionAttributeValues={":t": value or {"BOOL": True}})


def test_only_a_salted_hash_and_the_scope_are_stored(table: str) -> None:
    token_id, token = tokens.create_token(table, "line-1", "cam-1")
    _, other = tokens.create_token(table, "line-1", "cam-1")
    secret = token.split("_", 2)[2]

    [item] = [i for i in _items(table) if i["token_id"]["S"] == token_id]
    stored = " ".join(str(value) for value in item.values())
    assert secret not in stored and token not in stored
    assert item["hash"]["S"] == hashlib.sha256(f"{item['salt']['S']}:{secret}".encode()
                                               ).hexdigest()
    assert (item["line_id"]["S"], item["camera_id"]["S"]) == ("line-1", "cam-1")
    salts = {i["salt"]["S"] for i in _items(table)}
    assert len(salts) == 2  # one salt per token
    assert token != other


@pytest.mark.parametrize("line, camera", [("../line", "cam-1"), ("line-1", "cam/1"),
                                          ("", "cam-1"),
                                          # the line of keys the API did not issue
                                          ("unknown", "cam-1")])
def test_a_token_is_only_scoped_to_ids_the_upload_api_accepts(table: str, line: str,
                                                               camera: str) -> None:
    from pipeline.uploads import UploadRequestError

    with pytest.raises(UploadRequestError):
        tokens.create_token(table, line, camera)
    assert _items(table) == []


def test_a_reviewer_token_has_a_line_and_no_camera(table: str) -> None:
    token_id, token = tokens.create_token(table, "line-2", role=tokens.REVIEWER)
    scope = tokens.verify(table, token)
    assert scope == tokens.Scope(token_id, "line-2", "", tokens.REVIEWER)
    assert not scope.allows("line-2", "")  # it uploads for nothing
    [info] = tokens.list_tokens(table)
    assert (info.role, info.camera_id) == (tokens.REVIEWER, "")


@pytest.mark.parametrize("camera, role, refused, why", [
    ("cam-1", tokens.REVIEWER, "UploadRequestError", "a reviewer token has no camera"),
    ("", tokens.CAMERA, "UploadRequestError", "a camera token needs its camera"),
    ("cam-1", "admin", "ValueError", "a role that does not exist"),
])
def test_a_token_has_the_scope_of_its_role(table: str, camera: str, role: str, refused: str,
                                           why: str) -> None:
    with pytest.raises(ValueError) as caught:
        tokens.create_token(table, "line-1", camera, role=role)
    assert type(caught.value).__name__ == refused, why
    assert _items(table) == [], why


@pytest.mark.parametrize("remove, why", [
    ("#r", "issued before roles: a camera token"),
    ("#r, camera_id", "nor a camera: refused as malformed"),
])
def test_a_token_without_a_role_is_a_camera_token(table: str, remove: str, why: str) -> None:
    token_id, token = tokens.create_token(table, "line-1", "cam-1")
    boto3.client("dynamodb").update_item(TableName=table, Key={"token_id": {"S": token_id}},
                                         UpdateExpression=f"REMOVE {remove}",
                                         ExpressionAttributeNames={"#r": "role"})
    expected = tokens.Scope(token_id, "line-1", "cam-1") if "camera_id" not in remove else None
    assert tokens.verify(table, token) == expected, why


def test_a_valid_token_yields_its_scope(table: str) -> None:
    token_id, token = tokens.create_token(table, "line-2", "cam-3")
    scope = tokens.verify(table, token)
    assert scope == tokens.Scope(token_id, "line-2", "cam-3")
    assert scope.allows("line-2", "cam-3")
    assert not scope.allows("line-2", "cam-1") and not scope.allows("line-1", "cam-3")


@pytest.mark.parametrize("mangle, why", [
    (lambda t: "", "missing"),
    (lambda t: "allow", "the seed's demo literal"),
    (lambda t: t + "\n", "trailing newline (re.match with $ would accept it)"),
    (lambda t: t[:-1], "secret one character short"),
    (lambda t: t.replace("ls_", "xx_", 1), "wrong prefix"),
    (lambda t: t[:-4] + ("AAAA" if not t.endswith("AAAA") else "BBBB"), "wrong secret"),
    (lambda t: "ls_" + "0" * 16 + t[19:], "unknown token id, real secret"),
])
def test_bad_tokens_are_refused(table: str, mangle: Any, why: str) -> None:
    _, token = tokens.create_token(table, "line-1", "cam-1")
    assert tokens.verify(table, mangle(token)) is None, why


def test_the_hash_is_compared_in_constant_time(table: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []
    real = tokens.hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(tokens.hmac, "compare_digest", spy)
    _, token = tokens.create_token(table, "line-1", "cam-1")
    assert tokens.verify(table, token) is not None
    assert len(calls) == 1 and calls[0][0] == calls[0][1]


def test_verdicts_are_cached_so_the_table_is_not_read_per_request(
        table: str, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline import aws

    _, token = tokens.create_token(table, "line-1", "cam-1")
    ddb = aws.client("dynamodb")
    reads: list[dict[str, Any]] = []
    real_get = ddb.get_item
    monkeypatch.setattr(ddb, "get_item", lambda **kw: reads.append(kw) or real_get(**kw))

    for _ in range(5):
        assert tokens.verify(table, token) is not None
    assert len(reads) == 1
    clock.advance(tokens.CACHE_TTL_SECONDS + 0.1)
    assert tokens.verify(table, token) is not None
    assert len(reads) == 2


def test_a_revoked_token_is_refused_once_the_cache_expires(table: str, clock: Clock) -> None:
    token_id, token = tokens.create_token(table, "line-1", "cam-1")
    assert tokens.verify(table, token) is not None  # cached as valid
    _revoke_elsewhere(table, token_id)

    clock.advance(tokens.CACHE_TTL_SECONDS - 1)
    assert tokens.verify(table, token) is not None  # still cached: the documented bound
    clock.advance(1.1)
    assert tokens.verify(table, token) is None


@pytest.mark.parametrize("value, why", [
    ({"BOOL": True}, "as `linesight tokens revoke` writes it"),
    ({"S": "true"}, "typed in the console or the AWS CLI as a string"),
    ({"N": "1"}, "as a number"),
    ({"S": "false"}, "a string is not read, whatever it says: only BOOL false is valid"),
    ({"NULL": True}, "null"),
])
def test_any_revoked_attribute_but_bool_false_revokes(table: str, value: Any,
                                                     why: str) -> None:
    token_id, token = tokens.create_token(table, "line-1", "cam-1")
    _revoke_elsewhere(table, token_id, value)
    assert tokens.verify(table, token) is None, why
    [info] = tokens.list_tokens(table)
    assert info.revoked, why


def test_a_token_without_a_revoked_attribute_is_not_revoked(table: str) -> None:
    # e.g. one an operator restored by removing the attribute
    token_id, token = tokens.create_token(table, "line-1", "cam-1")
    boto3.client("dynamodb").update_item(TableName=table, Key={"token_id": {"S": token_id}},
                                         UpdateExpression="REMOVE revoked")
    assert tokens.verify(table, token) is not None


@pytest.mark.parametrize("attribute, value, why", [
    ("hash", None, "no hash"),
    ("salt", None, "no salt"),
    ("created_at", None, "no creation time"),
    ("line_id", None, "no scope"),
    ("hash", {"N": "1"}, "hash of another type"),
    ("created_at", {"S": "yesterday"}, "a time that does not parse"),
    ("created_at", {"S": "2026-01-01T00:00:00"}, "a time without a zone"),
    ("expires_at", {"S": "never"}, "an expiry that does not parse"),
    ("role", {"S": "Reviewer"}, "a role in another case (fails closed)"),
    ("role", {"BOOL": True}, "a role of another type"),
])
def test_a_malformed_item_is_refused_like_an_unknown_token(
        table: str, caplog: pytest.LogCaptureFixture, attribute: str, value: Any,
        why: str) -> None:
    """Refused and logged with the token's ID and what is wrong, never a KeyError (which
    the authorizer would turn into a 500) and never the secret."""
    token_id, token = tokens.create_token(table, "line-1", "cam-1")
    change: dict[str, Any] = {"UpdateExpression": "REMOVE #a"} if value is None else {
        "UpdateExpression": "SET #a = :v", "ExpressionAttributeValues": {":v": value}}
    boto3.client("dynamodb").update_item(  # HASH is a reserved word: #a names the attribute
        TableName=table, Key={"token_id": {"S": token_id}},
        ExpressionAttributeNames={"#a": attribute}, **change)
    assert tokens.verify(table, token) is None, why
    assert f"token {token_id} refused: malformed item in the tokens table" in caplog.text, why
    assert attribute in caplog.text, why
    assert token.split("_", 2)[2] not in caplog.text


def test_the_revocation_bound_covers_both_caches() -> None:
    # API Gateway caches the authorizer for CACHE_TTL_SECONDS, then this process does.
    assert 2 * tokens.CACHE_TTL_SECONDS <= tokens.REVOCATION_SECONDS


def test_revoke_in_this_process_takes_effect_at_once(table: str) -> None:
    token_id, token = tokens.create_token(table, "line-1", "cam-1")
    assert tokens.verify(table, token) is not None
    assert tokens.revoke_token(table, token_id) is True
    assert tokens.verify(table, token) is None
    assert tokens.revoke_token(table, "0123456789abcdef") is False


def test_an_expired_token_is_refused(table: str, clock: Clock) -> None:
    _, token = tokens.create_token(table, "line-1", "cam-1",
                                   expires_at=clock.wall - timedelta(seconds=1))
    assert tokens.verify(table, token) is None


def test_a_cached_token_is_not_trusted_past_its_expiry(table: str, clock: Clock) -> None:
    _, token = tokens.create_token(table, "line-1", "cam-1",
                                   expires_at=clock.wall + timedelta(seconds=3))
    assert tokens.verify(table, token) is not None
    clock.advance(3.5)  # well inside the cache TTL, but past the expiry
    assert tokens.verify(table, token) is None


# --- the CLI ------------------------------------------------------------------------------

def tokens_cli() -> Any:
    """`linesight ARGS` with the tokens commands, run in this process."""
    import typer

    from scripts import cli_tokens

    app = typer.Typer()
    cli_tokens.register(app)

    @app.callback()
    def _root() -> None:  # keeps `tokens` a subcommand
        pass

    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args))


@pytest.fixture
def cli(table: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("LINESIGHT_TOKENS_TABLE", table)
    monkeypatch.setenv("COLUMNS", "200")  # rich tables: room for every column
    return tokens_cli()


def test_cli_create_prints_the_token_once_and_list_never_shows_it(cli: Any,
                                                                  table: str) -> None:
    created = cli("tokens", "create", "--line", "line-1", "--camera", "cam-2",
                  "--expires", "30d", "--description", "press 4")
    assert created.exit_code == 0, created.output
    token = created.stdout.strip().splitlines()[-1]
    assert tokens.is_well_formed(token)
    scope = tokens.verify(table, token)
    assert scope is not None and (scope.line_id, scope.camera_id) == ("line-1", "cam-2")

    listed = cli("tokens", "list")
    assert listed.exit_code == 0, listed.output
    assert scope.token_id in listed.stdout and "press 4" in listed.stdout
    assert token.split("_", 2)[2] not in listed.stdout


def test_cli_creates_a_reviewer_token_and_lists_roles(cli: Any, table: str) -> None:
    created = cli("tokens", "create", "--role", "Reviewer", "--line", "line-1",
                  "--description", "Ana (QA)")
    assert created.exit_code == 0, created.output
    assert "Created reviewer token" in created.stderr and "reviewing line line-1" in created.stderr
    scope = tokens.verify(table, created.stdout.strip().splitlines()[-1])
    assert scope is not None and (scope.role, scope.line_id) == (tokens.REVIEWER, "line-1")
    assert cli("tokens", "create", "--line", "line-1", "--camera", "cam-1").exit_code == 0

    rows = [[cell.strip() for cell in line.split("│")] for line in
            cli("tokens", "list").stdout.splitlines() if "line-1" in line]
    assert sorted(row[2:5] for row in rows) == [["camera", "line-1", "cam-1"],
                                                ["reviewer", "line-1", "-"]]


def test_cli_revoke(cli: Any, table: str) -> None:
    token_id, token = tokens.create_token(table, "line-1", "cam-1")
    result = cli("tokens", "revoke", token_id)
    assert result.exit_code == 0, result.output
    assert tokens.verify(table, token) is None
    assert "revoked" in cli("tokens", "list").stdout


def test_cli_list_names_an_item_it_cannot_read_and_lists_the_rest(cli: Any,
                                                                   table: str) -> None:
    good, _ = tokens.create_token(table, "line-1", "cam-1")
    broken, _ = tokens.create_token(table, "line-1", "cam-2")
    boto3.client("dynamodb").update_item(TableName=table, Key={"token_id": {"S": broken}},
                                         UpdateExpression="REMOVE #h",
                                         ExpressionAttributeNames={"#h": "hash"})
    listed = cli("tokens", "list")
    assert listed.exit_code == 0, listed.output
    assert good in listed.stdout and broken not in listed.stdout
    assert f"cannot read token {broken}: hash is missing or not a string" in " ".join(
        listed.stderr.split())


def test_cli_falls_back_to_the_running_local_stack(table: str, tmp_path: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    import typer

    from scripts import cli_tokens, local_stack

    monkeypatch.delenv("LINESIGHT_TOKENS_TABLE", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    state = tmp_path / "local.json"
    fields = dict.fromkeys(local_stack.StackInfo.__dataclass_fields__, "")
    fields.update(tokens_table=table, camera_tokens={}, reviewer_tokens={}, lines={},
                  environment={"AWS_DEFAULT_REGION": "us-east-1", "LINESIGHT_X": "not exported"})
    state.write_text(json.dumps(fields))
    monkeypatch.setattr(local_stack, "read_state", lambda *_: local_stack.StackInfo(
        **json.loads(state.read_text())))
    app = typer.Typer()
    cli_tokens.register(app)

    @app.callback()
    def _root() -> None:
        pass

    result = CliRunner().invoke(app, ["tokens", "create", "--line", "l1", "--camera", "c1"])
    assert result.exit_code == 0, result.output
    assert tokens.verify(table, result.stdout.strip().splitlines()[-1]) is not None
    # the stack's environment is taken over, as for every command that finds the stack
    assert os.environ.pop("LINESIGHT_X") == "not exported"


def test_cli_create_refuses_a_camera_the_stack_does_not_watch(
        table: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A mistyped line or a camera not yet in linesight:lines would upload, be judged and
    alerted, but no alarm or dashboard widget would watch it."""
    import json

    from tests.conftest import REGION

    saved = dict(os.environ)
    monkeypatch.setenv("COLUMNS", "200")
    outputs = tmp_path / "stack.json"
    outputs.write_text(json.dumps({"region": REGION, "tokens_table": table,
                                   "lines": {"press-1": ["press-1-top", "press-1-side"]}}))
    cli = tokens_cli()
    try:
        for line, camera, why in (("press1", "press-1-top", "line 'press1' is not configured"),
                                  ("press-1", "press-1-rear", "camera 'press-1-rear' is not")):
            refused = cli("tokens", "create", "--line", line, "--camera", camera,
                          "--state", str(outputs))
            assert refused.exit_code == 2, refused.output
            assert why in refused.output and "--unconfigured" in " ".join(
                refused.output.split())
        assert tokens.list_tokens(table) == []
        for extra in ([], ["--unconfigured"]):
            camera = "press-1-top" if not extra else "press-1-rear"
            created = cli("tokens", "create", "--line", "press-1", "--camera", camera,
                          "--state", str(outputs), *extra)
            assert created.exit_code == 0, created.output
        assert sorted(info.camera_id for info in tokens.list_tokens(table)) == [
            "press-1-rear", "press-1-top"]
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_cli_reads_a_deployed_stacks_tokens_table_in_its_region(
        table: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--state stack.json` (`pulumi stack output --json`): its table, its region and AWS
    itself, from a shell set up for another region, another table and the emulator."""
    import json

    from tests.conftest import REGION

    saved = dict(os.environ)
    for variable, value in (("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
                            ("AWS_REGION", "eu-west-1"), ("AWS_DEFAULT_REGION", "eu-west-1"),
                            ("LINESIGHT_TOKENS_TABLE", "not-this-one")):
        monkeypatch.setenv(variable, value)
    monkeypatch.setenv("COLUMNS", "200")
    outputs = tmp_path / "stack.json"
    outputs.write_text(json.dumps({"region": REGION, "tokens_table": table}))
    try:
        created = tokens_cli()("tokens", "create", "--line", "l1", "--camera", "c1",
                               "--state", str(outputs))
        assert created.exit_code == 0, created.output
        assert tokens.verify(table, created.stdout.strip().splitlines()[-1]) is not None
        assert "AWS_ENDPOINT_URL" not in os.environ and os.environ["AWS_REGION"] == REGION

        outputs.write_text(json.dumps({"region": REGION}))
        lacking = tokens_cli()("tokens", "list", "--state", str(outputs))
        assert lacking.exit_code == 2
        assert "lacks tokens_table" in " ".join(lacking.output.split())
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.mark.parametrize("args, expected, why", [
    (["create", "--line", "../etc", "--camera", "c"], "line", "path in an ID"),
    (["create", "--line", "l", "--camera", "c" * 65], "camera", "ID too long"),
    (["create", "--line", "l", "--camera", "c", "--expires", "soon"], "expires",
     "unparseable expiry"),
    (["create", "--line", "l", "--camera", "c", "--expires", "2001-01-01T00:00:00Z"],
     "past", "expiry in the past"),
    # an unset variable must not issue a token that never expires
    (["create", "--line", "l", "--camera", "c", "--expires", ""], "is empty", "empty expiry"),
    (["create", "--line", "l", "--camera", "c", "--expires", "999999999d"], "neither",
     "a lifetime past year 9999"),
    (["create", "--line", "l", "--camera", "c", "--expires", "9" * 20 + "h"], "neither",
     "a span no timedelta holds"),
    (["create", "--line", "unknown", "--camera", "c"], "'unknown' is reserved",
     "the line of unissued keys (a traceback before)"),
    (["create", "--line", "l"], "--camera", "a camera token without its camera"),
    (["create", "--line", "l", "--camera", "c", "--role", "reviewer"], "has no camera",
     "a reviewer token is for a whole line"),
    (["create", "--line", "l", "--role", "admin"], "'admin' is not one of camera, reviewer",
     "a role that does not exist"),
    (["revoke", "nope"], "token ID", "not an ID"),
    (["revoke", "0123456789abcdef"], "no token", "unknown ID"),
    (["list", "--table", "no-such-table"], "does not exist", "a table name mistyped"),
])
def test_cli_mistakes_are_one_clear_line(cli: Any, args: list[str], expected: str,
                                         why: str) -> None:
    result = cli("tokens", *args)
    assert result.exit_code == 2, why
    assert expected in result.output, (why, result.output)
    assert "Traceback" not in result.output, why
    assert isinstance(result.exception, SystemExit), why  # a usage error, not a crash


def test_cli_shows_a_description_as_typed_never_as_markup(cli: Any) -> None:
    """A description is stored text: `[/]` once made every `tokens list` crash, and
    `[red]x[/red]` was shown styled instead of as typed."""
    for description in ("press [/] 4", "[red]RED[/red]"):
        assert cli("tokens", "create", "--line", "l1", "--camera", "c1",
                   "--description", description).exit_code == 0
    listed = cli("tokens", "list")
    assert listed.exit_code == 0, listed.output
    assert "press [/] 4" in listed.stdout and "[red]RED[/red]" in listed.stdout


def test_cli_revokes_an_id_given_in_upper_case(cli: Any, table: str) -> None:
    token_id, token = tokens.create_token(table, "line-1", "cam-1")
    assert cli("tokens", "revoke", token_id.upper()).exit_code == 0
    assert tokens.verify(table, token) is None


@pytest.mark.parametrize("url, said", [
    ("notaurl", "is not a URL"),
    ("127.0.0.1:5000", "give the scheme"),
    ("http://127.0.0.1:99999", "port outside"),
    ("http://[::1", "Invalid IPv6 URL"),  # a ValueError traceback before
])
def test_cli_a_malformed_endpoint_is_one_clear_line(url: str, said: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    result = tokens_cli()("tokens", "list", "--table", "tokens")
    assert result.exit_code == 2, result.output
    assert f"AWS_ENDPOINT_URL {url!r}" in result.output and said in result.output
    assert not isinstance(result.exception, ValueError)


def test_cli_commands_give_up_on_a_silent_endpoint_in_seconds(cli: Any) -> None:
    """botocore's defaults (60 s reads, five retries) made an endpoint that accepts but
    never answers look like a hang of six minutes; operator commands use short ones."""
    from pipeline import aws

    assert cli("tokens", "list").exit_code == 0
    config = aws.client("dynamodb").meta.config
    assert (config.connect_timeout, config.read_timeout) == (5, 10)
    assert config.retries["total_max_attempts"] == 3


@pytest.mark.parametrize("command", ["create", "list", "revoke"])
def test_cli_help_has_an_example(cli: Any, command: str) -> None:
    result = cli("tokens", command, "--help")
    assert result.exit_code == 0
    assert "Example" in result.stdout and f"linesight tokens {command}" in result.stdout


def test_parse_expiry_accepts_durations_and_zoned_times() -> None:
    from scripts.cli_tokens import parse_expiry

    now = datetime.fromisoformat("2026-01-01T00:00:00+00:00")
    assert parse_expiry("12h", now) == now + timedelta(hours=12)
    assert parse_expiry("2w", now) == now + timedelta(weeks=2)
    assert parse_expiry("2026-02-01T00:00:00+01:00", now).hour == 23
    assert parse_expiry("2026-03-01", now) == datetime.fromisoformat("2026-03-01T00:00:00+00:00")


def test_cli_aws_out_of_reach_is_exit_code_1_not_a_mistake(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from pipeline import aws

    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]  # nothing listens there once closed
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    aws.reset()
    result = tokens_cli()("tokens", "list", "--table", "tokens")
    aws.reset()
    assert result.exit_code == 1, result.output
    assert "cannot reach AWS" in result.output and "Traceback" not in result.output
