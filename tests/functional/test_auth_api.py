"""The authorized upload API through Chalice's test client (its local API Gateway, with
the built-in authorizer) against moto: 401 without a valid token, 403 outside its scope,
400 for bad IDs, and the upload rules on both routes."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from pipeline import tokens
from pipeline.records import utc_now
from tests.conftest import REPO, MotoStack


@pytest.fixture
def client(shared_stack: MotoStack) -> Iterator[Any]:
    import app
    from chalice.test import Client

    tokens._cache.clear()
    with Client(app.app, project_dir=str(REPO / "api")) as test_client:
        yield test_client
    tokens._cache.clear()


@pytest.fixture
def token(shared_stack: MotoStack) -> str:
    return tokens.create_token(shared_stack.info.tokens_table, "line-1", "cam-1")[1]


def _post(client: Any, token: str | None, body: Any, raw: bool = False) -> Any:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = token
    return client.http.post("/uploads", headers=headers,
                            body=body if raw else json.dumps(body).encode())


def _get(client: Any, token: str | None, **params: str) -> Any:
    headers = {"Authorization": token} if token is not None else {}
    return client.http.get("/getsignedurl?" + urlencode(params), headers=headers)


GOOD = {"line_id": "line-1", "camera_id": "cam-1", "image_id": "frame-1",
        "content_type": "image/png"}
SEED = {"assemblylineid": "line-1", "cameraid": "cam-1", "imageid": "frame-1"}


def test_a_valid_token_gets_a_presigned_post_for_its_camera(client: Any, token: str,
                                                           shared_stack: MotoStack) -> None:
    response = _post(client, token, GOOD)
    assert response.status_code == 201, response.body
    body = json.loads(response.body)
    policy = json.loads(base64.b64decode(body["fields"]["policy"]))
    exact = {k: v for c in policy["conditions"] if isinstance(c, dict) for k, v in c.items()}
    assert exact["key"] == body["key"] and body["key"].startswith("line-1/cam-1/")
    assert exact["Content-Type"] == "image/png"
    assert exact["x-amz-meta-assemblylineid"] == "line-1"
    assert exact["x-amz-meta-cameraid"] == "cam-1"
    assert ["content-length-range", 1, shared_stack.local.topology.max_upload_bytes] \
        in policy["conditions"]
    assert body["expires_in"] <= 300


@pytest.mark.parametrize("scheme", [
    "Bearer ", "bearer ", "BEARER ", "bEaReR ",  # the scheme name is case-insensitive (RFC 7235)
    "Bearer   ",  # one or more spaces
])
def test_bearer_prefix_is_accepted(client: Any, token: str, scheme: str) -> None:
    assert _post(client, scheme + token, GOOD).status_code == 201, scheme
    assert _get(client, scheme + token, **SEED).status_code == 200, scheme


@pytest.mark.parametrize("header, why", [
    (None, "no Authorization header"),
    ("", "empty header"),
    ("allow", "the seed's demo literal"),
    ("Bearer ", "Bearer and nothing"),
    ("bearer", "bearer and nothing"),
    ("Basic dXNlcjpwYXNz", "another scheme"),
    ("ls_0123456789abcdef_short", "malformed"),
    ("ls_0123456789abcdef_" + "A" * 43, "well formed but unknown"),
])
def test_no_valid_token_is_401(client: Any, header: str | None, why: str) -> None:
    assert _post(client, header, GOOD).status_code == 401, why
    assert _get(client, header, **SEED).status_code == 401, why


def test_a_wrong_secret_is_401(client: Any, token: str,
                               caplog: pytest.LogCaptureFixture) -> None:
    forged = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    assert _post(client, forged, GOOD).status_code == 401
    token_id = token.split("_", 2)[1]
    assert f"token {token_id} refused: wrong secret" in caplog.text
    assert forged.split("_", 2)[2] not in caplog.text  # the secret is never logged


@pytest.mark.parametrize("line, camera, why", [
    ("line-2", "cam-1", "another line"),
    ("line-1", "cam-2", "another camera"),
    ("line-2", "cam-2", "both"),
])
def test_a_token_cannot_upload_for_another_camera(client: Any, token: str, line: str,
                                                  camera: str, why: str) -> None:
    body = {**GOOD, "line_id": line, "camera_id": camera}
    assert _post(client, token, body).status_code == 403, why
    seed = {**SEED, "assemblylineid": line, "cameraid": camera}
    assert _get(client, token, **seed).status_code == 403, why


def test_a_revoked_token_is_refused_within_the_ttl(client: Any, shared_stack: MotoStack,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    import app

    table = shared_stack.info.tokens_table
    token_id, token = tokens.create_token(table, "line-1", "cam-1")
    assert _post(client, token, GOOD).status_code == 201  # now cached as valid
    # Revoked by `linesight tokens revoke` in another process: this one's cache is not told.
    shared_stack.client("dynamodb").update_item(
        TableName=table, Key={"token_id": {"S": token_id}}, UpdateExpression="SET revoked = :t",
        ExpressionAttributeValues={":t": {"BOOL": True}})
    now = tokens.time.monotonic()
    monkeypatch.setattr(tokens.time, "monotonic", lambda: now + tokens.CACHE_TTL_SECONDS + 1)
    assert _post(client, token, GOOD).status_code == 401
    assert f"token {token_id} refused: revoked (line line-1 camera cam-1)" in caplog.text
    # API Gateway's own cache of the authorizer is no longer than this process's.
    assert app.token_authorizer.config.ttl_seconds <= tokens.CACHE_TTL_SECONDS


def test_an_expired_token_is_401(client: Any, shared_stack: MotoStack,
                                 caplog: pytest.LogCaptureFixture) -> None:
    token_id, token = tokens.create_token(shared_stack.info.tokens_table, "line-1", "cam-1",
                                          expires_at=utc_now() - timedelta(minutes=1))
    assert _post(client, token, GOOD).status_code == 401
    assert f"token {token_id} refused: expired at" in caplog.text


@pytest.mark.parametrize("attribute, value", [
    ("hash", None), ("created_at", None),
    # a hash typed in by hand that is not ASCII (hmac.compare_digest raised: a 500)
    ("hash", "\u00e9" * 64),
    # an empty line was no scope at all: every line's results could be read and reviewed
    ("line_id", ""), ("camera_id", ""), ("line_id", "../line-2"),
], ids=["no-hash", "no-created-at", "non-ascii-hash", "empty-line", "empty-camera",
        "path-line"])
def test_a_malformed_token_item_is_401(client: Any, shared_stack: MotoStack, attribute: str,
                                       value: str | None,
                                       caplog: pytest.LogCaptureFixture) -> None:
    """An item edited by hand into something unreadable is refused like an unknown token,
    not a 500 from a KeyError in the authorizer."""
    table = shared_stack.info.tokens_table
    token_id, token = tokens.create_token(table, "line-1", "cam-1")
    edit: dict[str, Any] = (
        {"UpdateExpression": "REMOVE #a"} if value is None else
        {"UpdateExpression": "SET #a = :v", "ExpressionAttributeValues": {":v": {"S": value}}})
    shared_stack.client("dynamodb").update_item(
        TableName=table, Key={"token_id": {"S": token_id}},
        ExpressionAttributeNames={"#a": attribute}, **edit)
    assert _post(client, token, GOOD).status_code == 401
    assert client.http.get("/results", headers={"Authorization": token}).status_code == 401
    assert f"token {token_id} refused: malformed item in the tokens table" in caplog.text
    assert token.split("_", 2)[2] not in caplog.text


@pytest.mark.parametrize("value", ["", None], ids=["empty", "unset"])
@pytest.mark.parametrize("route", ["POST /uploads", "GET /getsignedurl"])
def test_an_upload_route_without_its_bucket_is_500_naming_the_setting(
        client: Any, token: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, route: str, value: str | None) -> None:
    from pipeline.settings import current

    if value is None:
        monkeypatch.delenv("LINESIGHT_IMAGES_BUCKET")
    else:
        monkeypatch.setenv("LINESIGHT_IMAGES_BUCKET", value)
    current.cache_clear()
    try:
        response = (_post(client, token, GOOD) if route.startswith("POST")
                    else _get(client, token, **SEED))
    finally:
        current.cache_clear()
    assert response.status_code == 500
    why = "missing environment variables: LINESIGHT_IMAGES_BUCKET"
    assert why in json.loads(response.body)["Message"]
    assert why in caplog.text


@pytest.mark.parametrize("route", ["/results?line=line-1", "/results/" + "a" * 32])
def test_a_results_route_without_its_table_is_500_naming_the_setting(
        client: Any, token: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, route: str) -> None:
    from pipeline.settings import current

    monkeypatch.setenv("LINESIGHT_TABLE", "")
    current.cache_clear()
    try:
        response = client.http.get(route, headers={"Authorization": token})
    finally:
        current.cache_clear()
    assert response.status_code == 500
    why = "cannot read results: missing environment variables: LINESIGHT_TABLE"
    assert why in json.loads(response.body)["Message"] and why in caplog.text


@pytest.mark.parametrize("image_id", ["x" * 3000, "A" * 32, "0" * 31, "..%2F" + "a" * 32])
def test_an_image_id_no_upload_has_is_404_before_dynamodb(
        client: Any, token: str, shared_stack: MotoStack, image_id: str) -> None:
    """DynamoDB refuses keys over 2 KB with a ValidationException (a 500 in AWS; moto
    answers none): an id that is not 32 hex digits names no result."""
    reviewer = tokens.create_token(shared_stack.info.tokens_table, "line-1",
                                   role=tokens.REVIEWER)[1]
    for response in (client.http.get(f"/results/{image_id}",
                                     headers={"Authorization": token}),
                     client.http.post(f"/results/{image_id}/review",
                                      headers={"Authorization": reviewer,
                                               "Content-Type": "application/json"},
                                      body=json.dumps({"label": "normal"}).encode())):
        assert response.status_code == 404, response.body
        assert len(json.loads(response.body)["Message"]) < 120  # the id is cut short


@pytest.mark.parametrize("variable, value, why", [
    ("LINESIGHT_TOKENS_TABLE", "", "missing environment variables: LINESIGHT_TOKENS_TABLE"),
    ("LINESIGHT_TOKENS_TABLE", "no-such-table", "ResourceNotFoundException"),
])
def test_an_authorizer_that_cannot_check_tokens_is_500_with_why(
        client: Any, token: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, variable: str, value: str, why: str) -> None:
    """Not a 401, which would send the developer after a token that is fine, and not a
    connection closed unanswered (what chalice local does for any other error)."""
    from pipeline.settings import current

    monkeypatch.setenv(variable, value)
    current.cache_clear()
    try:
        response = _post(client, token, GOOD)
    finally:
        current.cache_clear()
    assert response.status_code == 500
    assert why in json.loads(response.body)["message"]
    assert "cannot check tokens: " in caplog.text and why in caplog.text


@pytest.mark.parametrize("field, value, why", [
    ("line_id", "../line-1", "path traversal"),
    ("camera_id", "cam/1", "path separator"),
    ("image_id", "x" * 65, "too long"),
    ("image_id", "frame 1", "space"),
    ("content_type", "image/gif", "not on the whitelist"),
    ("content_type", "text/html", "not on the whitelist"),
    ("line_id", None, "missing"),
])
def test_bad_ids_and_types_are_400(client: Any, token: str, field: str, value: Any,
                                   why: str) -> None:
    body = {**GOOD, field: value}
    response = _post(client, token, body)
    assert response.status_code == 400, why
    assert json.loads(response.body)["Message"].startswith(field), why  # the field it sent


@pytest.mark.parametrize("raw, message", [
    (b"not json", "the body is not valid JSON: Expecting value"),
    (b"[1, 2]", "the body must be a JSON object, not list"),
    (b"", "the body must be a JSON object; it is empty"),
    (b'{"line_id": "line-\xff"}', "the body is not valid JSON"),  # not UTF-8
    (b"[" * 5000, "the body is not valid JSON: nested too deeply"),  # was a 500
])
def test_a_malformed_body_is_400(client: Any, token: str, raw: bytes, message: str) -> None:
    response = _post(client, token, raw, raw=True)
    assert response.status_code == 400, message
    assert json.loads(response.body)["Message"].startswith(message)


def test_a_json_body_is_read_whatever_the_case_of_its_content_type(client: Any,
                                                                   token: str) -> None:
    """Chalice routes `Application/JSON` to the view but its `json_body` read it as no
    body, so a good request was refused as "must be a JSON object"."""
    response = client.http.post("/uploads", body=json.dumps(GOOD).encode(), headers={
        "Content-Type": "Application/JSON; charset=UTF-8", "Authorization": token})
    assert response.status_code == 201, response.body


@pytest.mark.parametrize("param, value, why", [
    ("assemblylineid", "../line-1", "path traversal"),
    ("cameraid", "cam\\1", "backslash"),
    ("imageid", "a" * 65, "too long"),
    ("contenttype", "image/gif", "not on the whitelist"),
])
def test_the_seed_route_applies_the_same_id_rules(client: Any, token: str, param: str,
                                                  value: str, why: str) -> None:
    response = _get(client, token, **{**SEED, param: value})
    assert response.status_code == 400, why
    # named as the caller sent it, not by the POST route's body field
    assert json.loads(response.body)["Message"].startswith(param), response.body


def test_the_seed_route_names_a_missing_parameter_as_sent(client: Any, token: str) -> None:
    """A camera that sends `assemblyLineId` (wrong case) is told which parameter is missing."""
    response = _get(client, token, assemblyLineId="line-1", cameraid="cam-1")
    assert response.status_code == 400
    assert json.loads(response.body)["Message"] == "assemblylineid is required"


def test_the_seed_route_signs_key_type_and_metadata_for_five_minutes(
        client: Any, token: str) -> None:
    response = _get(client, token, **SEED)
    assert response.status_code == 200, response.body
    body = json.loads(response.body)
    url = urlsplit(body["uploadURL"])
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert url.path.endswith("/" + body["photoFilename"])
    assert body["photoFilename"].startswith("line-1/cam-1/")
    assert int(query["X-Amz-Expires"]) <= 300
    signed = set(query["X-Amz-SignedHeaders"].split(";"))
    assert {"content-type", "x-amz-meta-assemblylineid", "x-amz-meta-cameraid"} <= signed
    assert body["headers"]["Content-Type"] == "image/jpeg"
    assert body["headers"]["x-amz-meta-cameraid"] == "cam-1"


def test_the_demo_token_of_the_stack_comes_from_the_same_mechanism(
        client: Any, shared_stack: MotoStack) -> None:
    demo = shared_stack.info.camera_tokens["line-1/cam-1"]
    assert tokens.is_well_formed(demo)
    assert _post(client, demo, GOOD).status_code == 201
    stored = shared_stack.client("dynamodb").scan(TableName=shared_stack.info.tokens_table)
    assert demo not in json.dumps(stored["Items"])
