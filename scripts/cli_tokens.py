"""`linesight tokens create|list|revoke`: API tokens for cameras and reviewers.

A token is printed once, when it is created; the table keeps only its salted hash, its role
and its scope (see `pipeline.tokens`). The tokens table is `--table`, else `LINESIGHT_TOKENS_TABLE`,
else the running local stack's (`.linesight/local.json`, whose endpoint is then used).
`scripts/cli.py` (the typer root) calls `register(app)` to add the group.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from botocore.exceptions import BotoCoreError, ClientError, NoRegionError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipeline import tokens
from pipeline.records import iso, parse_day_or_time, parse_duration, reserved_line, utc_now
from pipeline.uploads import UploadRequestError, validate_id
from scripts.uploadImages import url_problem

if TYPE_CHECKING:
    from scripts.local_stack import StackInfo

console = Console()
err = Console(stderr=True)
tokens_app = typer.Typer(help="Create, list and revoke API tokens for cameras and reviewers.",
                         no_args_is_help=True)

TableOption = Annotated[str | None, typer.Option(
    "--table", help="Tokens table name (default: $LINESIGHT_TOKENS_TABLE, else the "
                    "running local stack's). Alone it is looked up with this shell's AWS "
                    "settings (AWS_DEFAULT_REGION, AWS_ENDPOINT_URL), not the local stack's.",
    show_default=False)]

StateOption = Annotated[Path | None, typer.Option(
    "--state", help="Stack description: a deployed stack's `pulumi stack output --json > "
                    "stack.json` (its region, against AWS), or a local stack's "
                    ".linesight/local.json.", show_default=False)]


def register(app: typer.Typer) -> None:
    """Add the `tokens` group to the `linesight` app."""
    app.add_typer(tokens_app, name="tokens")


def use_local_stack() -> StackInfo:
    """Point boto3 at the running local stack and return its state (`StackInfo`)."""
    from scripts import local_stack

    try:
        return local_stack.use_state(local_stack.STATE_FILE)
    except (FileNotFoundError, local_stack.StateFileError) as exc:
        fail(str(exc))


def use_stack_file(state: Path, needed: tuple[str, ...] = ()) -> dict[str, Any]:
    """Point this process at the stack a --state file describes (`use_description`), or
    stop with one line saying why not."""
    from scripts.local_stack import StateFileError, use_description

    try:
        return use_description(state, needed)
    except (FileNotFoundError, StateFileError) as exc:
        fail(str(exc))


def operator_aws(endpoint_url: str | None = None) -> None:
    """Set up AWS for an operator's command: --endpoint-url (else AWS_ENDPOINT_URL)
    checked, and short timeouts, so that an endpoint that does not answer fails in
    seconds instead of minutes (`pipeline.aws.interactive`)."""
    from pipeline import aws

    url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL", "")
    problem = url_problem(url) if url else ""
    if problem:
        fail(f"{'--endpoint-url' if endpoint_url else 'AWS_ENDPOINT_URL'} {problem}")
    if endpoint_url:
        os.environ["AWS_ENDPOINT_URL"] = endpoint_url
    aws.interactive()


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one clear line and stop (never a traceback). The message is printed as it is:
    it may quote stored text or AWS's words, which rich would otherwise read as markup."""
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def no_answer(exc: BotoCoreError) -> str:
    """What to tell a person whose AWS call got no answer: no region, or no stack there.

    >>> from botocore.exceptions import NoRegionError
    >>> no_answer(NoRegionError())  # doctest: +ELLIPSIS
    'no AWS region: pass --state stack.json, or set AWS_DEFAULT_REGION...'
    """
    if isinstance(exc, NoRegionError):
        # boto3 reads AWS_DEFAULT_REGION (or ~/.aws/config), not AWS_REGION
        return ("no AWS region: pass --state stack.json, or set AWS_DEFAULT_REGION (and "
                "AWS_ENDPOINT_URL for an emulator)")
    return (f"cannot reach AWS: {exc} (is the stack running? `linesight local up` starts "
            "the local one; --state stack.json points at a deployed one)")


def resolve_table(table: str | None, state: Path | None = None) -> str:
    """--table, else the --state file's, else LINESIGHT_TOKENS_TABLE, else the running
    local stack's."""
    return _resolve(table, state)[0]


def _resolve(table: str | None, state: Path | None) -> tuple[str, dict[str, list[str]]]:
    """The tokens table (as `resolve_table`) and the stack's {line: cameras} where the
    stack description says ({} when it does not: --table, or a stack deployed before)."""
    operator_aws()
    if state is not None:
        described = use_stack_file(state, () if table else ("tokens_table",))
        return table or str(described["tokens_table"]), dict(described.get("lines") or {})
    if table:
        return table, {}
    if os.environ.get("LINESIGHT_TOKENS_TABLE"):
        return os.environ["LINESIGHT_TOKENS_TABLE"], {}
    info = use_local_stack()
    return info.tokens_table, info.lines


def unconfigured(lines: dict[str, list[str]], line: str, camera: str) -> str:
    """Why `line` and `camera` are not in the stack's config, or "" (also when the config
    is not known).

    >>> unconfigured({"press-1": ["top", "side"]}, "press1", "top")
    "line 'press1' is not configured on this stack (its lines: press-1)"
    >>> unconfigured({"press-1": ["top", "side"]}, "press-1", "rear")
    "camera 'rear' is not one of line press-1's cameras (top, side)"
    >>> unconfigured({}, "any", "thing"), unconfigured({"press-1": ["top"]}, "press-1", "")
    ('', '')
    """
    if not lines or camera in lines.get(line, []) or (not camera and line in lines):
        return ""  # no camera: a reviewer's token, for the whole line
    if line not in lines:
        return f"line {line!r} is not configured on this stack (its lines: {', '.join(lines)})"
    return f"camera {camera!r} is not one of line {line}'s cameras ({', '.join(lines[line])})"


def parse_expiry(value: str, now: datetime | None = None) -> datetime:
    """`30d`, `12h`, `90m`, `2w`, a date (its midnight UTC), or an ISO-8601 time with a
    zone; must be in the future.

    >>> from pipeline.records import parse_time
    >>> parse_expiry("30d", parse_time("2026-01-01T00:00:00+00:00")).isoformat()
    '2026-01-31T00:00:00+00:00'
    >>> parse_expiry("2030-05-01T12:00:00Z").year
    2030
    """
    now = now or utc_now()
    value = value.strip()
    if not value:  # e.g. --expires "$UNSET": refused rather than a token that never expires
        raise typer.BadParameter("is empty: give a lifetime (30d) or a time, or leave the "
                                 "option out for a token that never expires",
                                 param_hint="--expires")
    try:
        span = parse_duration(value)
        when = now + span if span is not None else parse_day_or_time(value)
    except (ValueError, OverflowError):  # OverflowError: a lifetime past year 9999
        raise typer.BadParameter(
            f"{value[:40]!r} is neither a duration (30d, 12h, 90m, 2w) nor a date or an "
            "ISO-8601 time with a zone (2027-01-01, 2027-01-01T00:00:00Z) that a calendar "
            "holds", param_hint="--expires") from None
    if when <= now:
        raise typer.BadParameter(f"{value!r} is in the past", param_hint="--expires")
    return when


@tokens_app.command("create")
def create(
    line: Annotated[str, typer.Option("--line", help="Line the token may upload for, or "
                                      "review.")],
    camera: Annotated[str, typer.Option(
        "--camera", help="Camera the token may upload for (a camera token needs one; a "
        "reviewer's has none).", show_default=False)] = "",
    role: Annotated[str, typer.Option(
        "--role", help="camera: uploads for one camera and reads its line's results. "
        "reviewer: for a person; reads the line's results and records verdicts on them "
        "(the labels `export-dataset` trains on); uploads nothing.",
        case_sensitive=False)] = tokens.CAMERA,
    expires: Annotated[str | None, typer.Option(
        "--expires", help="Lifetime (30d, 12h, 2w), a date or an ISO-8601 time; default: "
        "never.",
        show_default=False)] = None,
    description: Annotated[str, typer.Option(
        "--description", help="A note for `tokens list`, e.g. where the camera is.")] = "",
    table: TableOption = None,
    state: StateOption = None,
    allow_unconfigured: Annotated[bool, typer.Option(
        "--unconfigured", help="Issue it even though the stack's config (linesight:lines) "
        "lacks this line or camera.")] = False,
) -> None:
    """Create a token for one camera, or for a person who reviews one line, and print it.
    It is shown only this once.

    With --state (or the local stack) the line and camera must be in the stack's config:
    the alarms and the dashboard watch only configured cameras.

    Examples:

        linesight tokens create --line line-1 --camera cam-2 --expires 90d --description "press 4"
        linesight tokens create --role reviewer --line line-1 --expires 30d --description "Ana (QA)"
    """
    role = role.lower()
    if role not in tokens.ROLES:
        raise typer.BadParameter(f"{role!r} is not one of {', '.join(tokens.ROLES)}",
                                 param_hint="--role")
    if role == tokens.REVIEWER and camera:
        raise typer.BadParameter("a reviewer token has no camera: it reviews the whole line",
                                 param_hint="--camera")
    try:
        line = validate_id(line, "--line")
        if role == tokens.CAMERA:
            camera = validate_id(camera, "--camera")
    except UploadRequestError as exc:
        raise typer.BadParameter(str(exc)) from None
    if reserved_line(line):  # create_token refuses it too; here it is a usage error
        raise typer.BadParameter(reserved_line(line), param_hint="--line")
    expires_at = parse_expiry(expires) if expires is not None else None
    name, lines = _resolve(table, state)
    problem = unconfigured(lines, line, camera)
    if problem and not allow_unconfigured:
        fail(f"{problem}: its uploads would be judged and alerted, but no alarm or dashboard "
             "widget would watch them. Add it to linesight:lines and `pulumi up` first, or "
             "pass --unconfigured to issue it anyway")
    try:
        token_id, token = tokens.create_token(name, line, camera, role=role,
                                              expires_at=expires_at, description=description)
    except (ClientError, BotoCoreError) as exc:
        _aws_fail(exc, name)
    scope = f"reviewing line {line}" if role == tokens.REVIEWER else f"line {line} camera {camera}"
    err.print(f"Created {role} token [bold]{token_id}[/bold] for {scope}"
              + (f", expires {iso(expires_at)}" if expires_at else "")
              + ". Store it now: it cannot be shown again.", highlight=False)
    typer.echo(token)


@tokens_app.command("list")
def list_(table: TableOption = None, state: StateOption = None) -> None:
    """List tokens with their role, scope and status (never the secrets).

    Example:

        linesight tokens list
    """
    name = resolve_table(table, state)
    unreadable: list[str] = []
    try:
        infos = tokens.list_tokens(name, unreadable)
    except (ClientError, BotoCoreError) as exc:
        _aws_fail(exc, name)
    now = utc_now()
    view = Table(title=f"tokens in {name}")
    view.add_column("ID", no_wrap=True, min_width=16)
    for column in ("role", "line", "camera", "status", "created", "expires"):
        view.add_column(column, no_wrap=True)
    view.add_column("description", overflow="fold")
    for info in infos:
        if info.revoked:
            status = "[red]revoked[/red]"
        elif info.expires_at is not None and info.expires_at <= now:
            status = "[yellow]expired[/yellow]"
        else:
            status = "[green]active[/green]"
        # a description is whatever its creator typed: shown as typed, never as markup
        view.add_row(info.token_id, info.role, info.line_id, info.camera_id or "-", status,
                     f"{info.created_at:%Y-%m-%d %H:%M}",
                     f"{info.expires_at:%Y-%m-%d %H:%M}" if info.expires_at else "never",
                     escape(info.description))
    console.print(view)
    for problem in unreadable:
        err.print(f"[red]cannot read token {escape(problem)}; the API refuses it (revoke or delete "
                  "the item)[/red]", highlight=False)


@tokens_app.command("revoke", no_args_is_help=True)
def revoke(
    token_id: Annotated[str, typer.Argument(
        help="The token's ID (from `tokens list`), or the whole token.")],
    table: TableOption = None,
    state: StateOption = None,
) -> None:
    """Revoke a token. API requests with it are refused within
    {seconds} seconds (the authorizer caches verdicts briefly).

    Example:

        linesight tokens revoke 3f9c2a71d04be815
    """
    candidate = tokens.token_id_of(token_id)
    if candidate is None:
        raise typer.BadParameter(f"{token_id!r} is not a token ID (16 hex digits)",
                                 param_hint="TOKEN_ID")
    name = resolve_table(table, state)
    try:
        found = tokens.revoke_token(name, candidate)
    except (ClientError, BotoCoreError) as exc:
        _aws_fail(exc, name)
    if not found:
        fail(f"no token {candidate} in {name}")
    typer.echo(f"revoked {candidate}; refused within {int(tokens.REVOCATION_SECONDS)} s")


revoke.__doc__ = (revoke.__doc__ or "").replace(
    "{seconds}", str(int(tokens.REVOCATION_SECONDS)))


def _aws_fail(exc: Exception, table: str) -> NoReturn:
    """One line for what AWS said: exit code 2 for a table that does not exist (a mistake in
    the command), 1 for AWS unreachable or refusing."""
    if isinstance(exc, ClientError):
        code = exc.response["Error"]["Code"]
        if code == "ResourceNotFoundException":
            fail(f"tokens table {table!r} does not exist (check --table)")
        fail(f"{code}: {exc.response['Error'].get('Message', '')}", 1)
    fail(no_answer(exc) if isinstance(exc, BotoCoreError) else str(exc), 1)
