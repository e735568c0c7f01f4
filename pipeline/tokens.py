"""API tokens for cameras and reviewers, stored only as salted hashes with their scope.

A token reads `ls_<token_id>_<secret>`. The tokens table holds, per `token_id`: the salt,
SHA-256(salt + secret), its role and scope, its expiry and whether it is revoked. There are
two roles (`ROLES`):
- a `camera` token uploads for one line and camera, and reads its line's results;
- a `reviewer` token, for a person, reads one line's results and records verdicts on them
  (a human label that `export-dataset` trains on), and uploads nothing.
A camera on the factory floor holds its token in plain sight, so a camera token cannot
label. An item without a role is a camera token (tokens issued before roles were).

The secret is 32 random bytes, so a fast salted hash is enough (a slow KDF protects
guessable passwords, not random keys). Comparison is constant-time.
Verifications are cached for `CACHE_TTL_SECONDS` (never past the token's expiry). API
Gateway caches the authorizer's answer for the same time in front of this process, so a
revoked token is refused within `REVOCATION_SECONDS` = twice that. That cache knows no
expiry: API Gateway may honour a token for up to `CACHE_TTL_SECONDS` after it expires.

The table is edited by hand too (the console, the AWS CLI), so an item is read
defensively: a `revoked` attribute other than BOOL false revokes, and an item that cannot
be read is refused like an unknown token.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pipeline import aws
from pipeline.records import iso, parse_time, reserved_line, utc_now
from pipeline.uploads import UploadRequestError, validate_id

log = logging.getLogger(__name__)

REVOCATION_SECONDS = 30.0
# Two caches in series (API Gateway's authorizer cache, then this process's): each gets half.
CACHE_TTL_SECONDS = REVOCATION_SECONDS / 2
_TOKEN_ID = re.compile(r"[0-9a-f]{16}")
_TOKEN = re.compile(rf"^ls_(?P<id>{_TOKEN_ID.pattern})_(?P<secret>[A-Za-z0-9_-]{{43}})$")
CAMERA, REVIEWER = "camera", "reviewer"
ROLES = (CAMERA, REVIEWER)


@dataclass(frozen=True)
class Scope:
    token_id: str
    line_id: str
    camera_id: str  # "" for a reviewer
    role: str = CAMERA

    def allows(self, line_id: str, camera_id: str) -> bool:
        """Whether the token may upload for this line and camera."""
        return self.role == CAMERA and (self.line_id, self.camera_id) == (line_id, camera_id)


@dataclass(frozen=True)
class TokenInfo:
    token_id: str
    line_id: str
    camera_id: str  # "" for a reviewer
    created_at: datetime
    expires_at: datetime | None
    revoked: bool
    description: str = ""
    role: str = CAMERA


def _hash(salt: str, secret: str) -> str:
    return hashlib.sha256(f"{salt}:{secret}".encode()).hexdigest()


class MalformedItem(ValueError):
    """A tokens table item this code cannot read; the message names the attribute."""


def token_from_header(header: str | None) -> str:
    """The token in an `Authorization` header: raw, or after the `Bearer` scheme in any
    case (RFC 7235: scheme names are case-insensitive).

    >>> token_from_header("bearer  ls_x"), token_from_header("ls_x"), token_from_header(None)
    ('ls_x', 'ls_x', '')
    """
    header = (header or "").strip()
    scheme, _, rest = header.partition(" ")
    return rest.strip() if scheme.lower() == "bearer" else header


def is_well_formed(token: str) -> bool:
    """
    >>> is_well_formed("ls_0123456789abcdef_" + "A" * 43)
    True
    >>> is_well_formed("allow")
    False
    """
    return bool(_TOKEN.fullmatch(token))


def token_id_of(text: str) -> str | None:
    """The token ID `text` names (an ID, or a whole token whose ID part it is), else None.

    >>> token_id_of(" 3f9c2a71d04be815 "), token_id_of("ls_3f9c2a71d04be815_" + "A" * 43)
    ('3f9c2a71d04be815', '3f9c2a71d04be815')
    >>> token_id_of("3f9c") is None, token_id_of("3F9C2A71D04BE815")  # IDs are lower case
    (True, '3f9c2a71d04be815')
    """
    text = text.strip()
    match = _TOKEN.fullmatch(text)
    if match:
        return match["id"]
    return text.lower() if _TOKEN_ID.fullmatch(text.lower()) else None


def create_token(table: str, line_id: str, camera_id: str = "", *, role: str = CAMERA,
                 expires_at: datetime | None = None, description: str = "") -> tuple[str, str]:
    """Store a new token's hash, role and scope; return (token_id, token). The token itself
    is never stored and cannot be shown again. The scope must be IDs the upload API
    accepts: a line, and for a camera token its camera (a reviewer token has none)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)} (got {role!r})")
    line_id = validate_id(line_id, "line_id")
    if role == CAMERA:
        camera_id = validate_id(camera_id, "camera_id")
    elif camera_id:
        raise UploadRequestError("a reviewer token has no camera: it reviews the whole line")
    if reserved := reserved_line(line_id):
        raise UploadRequestError(f"line_id {reserved}")
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_hex(16)
    item: dict[str, Any] = {
        "token_id": {"S": token_id},
        "salt": {"S": salt},
        "hash": {"S": _hash(salt, secret)},
        "line_id": {"S": line_id},
        "role": {"S": role},
        "created_at": {"S": iso(utc_now())},
        "revoked": {"BOOL": False},
    }
    if camera_id:
        item["camera_id"] = {"S": camera_id}
    if expires_at is not None:
        item["expires_at"] = {"S": iso(expires_at)}
    if description:
        item["description"] = {"S": description}
    aws.client("dynamodb").put_item(TableName=table, Item=item,
                                    ConditionExpression="attribute_not_exists(token_id)")
    return token_id, f"ls_{token_id}_{secret}"


def revoke_token(table: str, token_id: str) -> bool:
    """Mark a token revoked; False when there is no such token."""
    ddb = aws.client("dynamodb")
    try:
        ddb.update_item(TableName=table, Key={"token_id": {"S": token_id}},
                        UpdateExpression="SET revoked = :t",
                        ConditionExpression="attribute_exists(token_id)",
                        ExpressionAttributeValues={":t": {"BOOL": True}})
    except ddb.exceptions.ConditionalCheckFailedException:
        return False
    _cache.clear()
    return True


def list_tokens(table: str, unreadable: list[str] | None = None) -> list[TokenInfo]:
    """Every token, by line, camera and age. An item that cannot be read (edited by hand)
    is left out and described in `unreadable`, if given: the API refuses it anyway."""
    paginator = aws.client("dynamodb").get_paginator("scan")
    infos = []
    for page in paginator.paginate(TableName=table):
        for item in page.get("Items", []):
            try:
                _digest(item), _string(item, "salt")  # as the API needs them
                infos.append(_info(item))
            except MalformedItem as exc:
                if unreadable is not None:
                    token_id = item.get("token_id", {}).get("S", "(no token_id)")
                    unreadable.append(f"{token_id}: {exc}")
    return sorted(infos, key=lambda info: (info.line_id, info.role, info.camera_id,
                                           info.created_at))


class _Cache:
    """token -> (scope or None, expiry on the monotonic clock)."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[Scope | None, float]] = {}
        self._lock = threading.Lock()

    def get(self, token: str) -> tuple[bool, Scope | None]:
        with self._lock:
            entry = self._entries.get(token)
        if entry is None or entry[1] < time.monotonic():
            return False, None
        return True, entry[0]

    def put(self, token: str, scope: Scope | None, ttl: float = CACHE_TTL_SECONDS) -> None:
        with self._lock:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[token] = (scope, time.monotonic() + ttl)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_cache = _Cache()


def verify(table: str, token: str) -> Scope | None:
    """The token's scope, or None when it is malformed, unknown, revoked or expired, or its
    item in the table cannot be read. A refusal is logged with its reason and the token's
    id (never its secret), so that an operator can tell a revoked camera from an expired one."""
    if not is_well_formed(token):
        log.warning("token refused: %s", "none given" if not token else "malformed")
        return None
    hit, scope = _cache.get(token)
    if hit:
        return scope
    scope, expires_at = _lookup(table, token)
    ttl = CACHE_TTL_SECONDS
    if expires_at is not None:  # an expiring token is not cached past its expiry
        ttl = max(0.0, min(ttl, (expires_at - utc_now()).total_seconds()))
    _cache.put(token, scope, ttl)
    return scope


def _lookup(table: str, token: str) -> tuple[Scope | None, datetime | None]:
    match = _TOKEN.fullmatch(token)
    assert match is not None
    item = aws.client("dynamodb").get_item(
        TableName=table, Key={"token_id": {"S": match["id"]}}, ConsistentRead=True).get("Item")
    if not item:
        log.warning("token %s refused: unknown id", match["id"])
        return None, None
    try:
        expected, salt = _digest(item), _string(item, "salt")
        info = _info(item)
    except MalformedItem as exc:  # refused like an unknown token, not a 500
        log.error("token %s refused: malformed item in the tokens table (%s)", match["id"], exc)
        return None, None
    if not hmac.compare_digest(expected, _hash(salt, match["secret"])):
        log.warning("token %s refused: wrong secret", match["id"])
        return None, None
    if info.revoked:
        log.warning("token %s refused: revoked (%s)", info.token_id, _scope_words(info))
        return None, None
    if info.expires_at is not None and info.expires_at <= utc_now():
        log.warning("token %s refused: expired at %s (%s)", info.token_id,
                    iso(info.expires_at), _scope_words(info))
        return None, None
    return Scope(info.token_id, info.line_id, info.camera_id, info.role), info.expires_at


def _scope_words(info: TokenInfo) -> str:
    if info.role == REVIEWER:
        return f"reviewer of line {info.line_id}"
    return f"line {info.line_id} camera {info.camera_id}"


def _info(item: dict[str, Any]) -> TokenInfo:
    """The item's fields; raises MalformedItem naming the first one it cannot read."""
    role = _role(item)
    return TokenInfo(
        token_id=_string(item, "token_id"),
        line_id=_id(item, "line_id"),
        # a reviewer has no camera (one typed into its item by hand is not a scope either)
        camera_id=_id(item, "camera_id") if role == CAMERA else "",
        role=role,
        created_at=_time(item, "created_at"),
        expires_at=_time(item, "expires_at") if "expires_at" in item else None,
        # Fails closed: `{"S": "true"}` typed in the console revokes, and so does any
        # other value but BOOL false (no attribute at all is not revoked).
        revoked="revoked" in item and item["revoked"] != {"BOOL": False},
        description=item.get("description", {}).get("S", ""),
    )


def _role(item: dict[str, Any]) -> str:
    """The token's role; none is a camera token (issued before roles). Fails closed: any
    other value (`Reviewer`, a number) makes the item unreadable, so the token is refused."""
    if "role" not in item:
        return CAMERA
    role = _string(item, "role")
    if role not in ROLES:
        raise MalformedItem(f"role is not one of {', '.join(ROLES)}")
    return role


_DIGEST = re.compile(r"[0-9a-f]{64}")


def _digest(item: dict[str, Any]) -> str:
    """The stored SHA-256 of salt and secret, as `_hash` writes it (compare_digest would
    raise on a str typed in by hand that is not ASCII: a 500, not a refusal)."""
    value = _string(item, "hash")
    if not _DIGEST.fullmatch(value):
        raise MalformedItem("hash is not 64 lowercase hex digits")
    return value


def _id(item: dict[str, Any], name: str) -> str:
    """A line or camera id, as uploads check them: an empty one would be no scope at all
    (every line's results), and the API would not sign uploads for another anyway."""
    try:
        return validate_id(_string(item, name), name)
    except UploadRequestError as exc:
        raise MalformedItem(str(exc)) from None


def _string(item: dict[str, Any], name: str) -> str:
    value = item.get(name)
    if not isinstance(value, dict) or not isinstance(value.get("S"), str):
        raise MalformedItem(f"{name} is missing or not a string")
    return value["S"]


def _time(item: dict[str, Any], name: str) -> datetime:
    text = _string(item, name)
    try:
        return parse_time(text)
    except ValueError:
        raise MalformedItem(f"{name} is not an ISO-8601 time with a zone") from None


def tokens_table_args(table_name: str) -> dict[str, Any]:
    """CreateTable arguments for the tokens table (the local stack uses them)."""
    return {
        "TableName": table_name,
        "BillingMode": "PAY_PER_REQUEST",
        "KeySchema": [{"AttributeName": "token_id", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "token_id", "AttributeType": "S"}],
    }
