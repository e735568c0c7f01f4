"""Upload rules: ID validation, server-chosen keys, and the presigned conditions we sign.

moto does not enforce presigned POST conditions, so these tests decode the policy we
generate (and the query of the presigned PUT) and check each rule in it."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from pipeline import uploads
from pipeline.records import parse_time

MAX_BYTES = 15 * 1024 * 1024
NOW = parse_time("2026-03-04T05:06:07+00:00")


@pytest.fixture
def s3(aws_env: None) -> Any:
    from pipeline import aws

    return aws.client("s3")  # the app's client: SigV4, path-style


def _policy(post: dict[str, Any]) -> dict[str, Any]:
    return json.loads(base64.b64decode(post["fields"]["policy"]))


def _conditions(policy: dict[str, Any]) -> tuple[dict[str, Any], list[list[Any]]]:
    exact: dict[str, Any] = {}
    others: list[list[Any]] = []
    for condition in policy["conditions"]:
        if isinstance(condition, dict):
            exact.update(condition)
        else:
            others.append(condition)
    return exact, others


@pytest.mark.parametrize("value, ok, why", [
    ("line-1", True, "letters, digit, dash"),
    ("L.2_b", True, "dot and underscore inside"),
    ("a" * 64, True, "64 characters is the limit"),
    ("a" * 65, False, "65 characters"),
    ("", False, "empty"),
    ("../etc", False, "parent directory"),
    ("a..b", False, "double dot anywhere"),
    ("line/1", False, "slash: a path separator"),
    ("line\\1", False, "backslash"),
    ("line-1\n", False, "trailing newline ($ alone would accept it)"),
    ("line 1", False, "space"),
    ("-line", False, "must start with a letter or digit"),
    (".hidden", False, "must start with a letter or digit"),
    ("lïne", False, "non-ASCII"),
    ("line%2F1", False, "URL-encoded slash"),
    (7, False, "not a string"),
])
def test_ids_are_validated(value: Any, ok: bool, why: str) -> None:
    if ok:
        assert uploads.validate_id(value, "line_id") == value, why
    else:
        with pytest.raises(uploads.UploadRequestError, match="line_id"):
            uploads.validate_id(value, "line_id")


@pytest.mark.parametrize("content_type, expected", [
    ("image/jpeg", "image/jpeg"),
    ("image/jpg", "image/jpeg"),
    ("IMAGE/PNG; charset=binary", "image/png"),
    ("image/gif", None),
    ("text/html", None),
    ("application/octet-stream", None),
    ("", None),
    (123, None),
])
def test_only_jpeg_and_png_are_accepted(content_type: Any, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(uploads.UploadRequestError, match="content_type"):
            uploads.content_type_for(content_type)
    else:
        assert uploads.content_type_for(content_type) == expected


def test_the_server_chooses_a_unique_key_per_upload() -> None:
    first = uploads.new_target("line-1", "cam-1", "frame-7", "image/png", now=NOW)
    second = uploads.new_target("line-1", "cam-1", "frame-7", "image/png", now=NOW)
    assert first.key != second.key  # the same camera image id never overwrites
    assert first.key == f"line-1/cam-1/2026/03/04/{first.upload_id}.png"
    assert uploads.parse_key(first.key) == uploads.KeyParts("line-1", "cam-1",
                                                            first.upload_id, "png")
    assert first.metadata == {"assemblylineid": "line-1", "cameraid": "cam-1",
                              "imageid": "frame-7"}


@pytest.mark.parametrize("line, camera", [
    ("press 1\nBCC: x", "cam-1"),  # a line break would reach the alert's subject
    ("line-1", "cam\t1"), ("..", "cam-1"), ("-line", "cam-1"), ("line-1", "c" * 65)])
def test_a_key_shaped_like_ours_with_ids_the_api_refuses_is_not_ours(line: str,
                                                                       camera: str) -> None:
    """Written to the bucket by hand, say: recorded as unexpected_key, not under its line."""
    ours = uploads.new_target("line-1", "cam-1", None, "image/jpeg", now=NOW).key
    assert uploads.parse_key(ours) is not None
    assert uploads.parse_key(ours.replace("line-1/cam-1/", f"{line}/{camera}/")) is None


@pytest.mark.parametrize("key", [
    "line-1/cam-1/2026/03/04/" + "a" * 32 + ".jpg\n",
    "line-1/cam-1/2026/03/04/" + "a" * 32 + ".jpg/extra",
    "../cam-1/2026/03/04/" + "a" * 32,
    "somewhere/else.jpg",
])
def test_keys_we_did_not_issue_are_not_parsed(key: str) -> None:
    assert uploads.parse_key(key) is None


def test_presigned_post_policy_pins_key_type_metadata_and_size(s3: Any) -> None:
    target = uploads.new_target("line-1", "cam-1", "frame-7", "image/png")
    before = datetime.now(NOW.tzinfo)
    post = uploads.presigned_post(s3, "images", target, MAX_BYTES)

    policy = _policy(post)
    exact, others = _conditions(policy)
    # The exact, server-chosen key (no starts-with, no ${filename}).
    assert exact["key"] == target.key == post["key"] == post["fields"]["key"]
    assert not any(c[0] == "starts-with" for c in others)
    assert exact["bucket"] == "images"
    # The exact content type, which is on the whitelist.
    assert exact["Content-Type"] == "image/png" == post["fields"]["Content-Type"]
    # The metadata is signed, so line/camera cannot be forged in the upload.
    for name, value in target.metadata.items():
        assert exact[f"x-amz-meta-{name}"] == value == post["fields"][f"x-amz-meta-{name}"]
    # Size: at least one byte, at most the configured maximum.
    assert ["content-length-range", 1, MAX_BYTES] in others
    # Expiry: five minutes or less.
    expiration = parse_time(policy["expiration"])
    assert 0 < (expiration - before).total_seconds() <= uploads.MAX_EXPIRY_SECONDS + 1
    assert post["expires_in"] <= uploads.MAX_EXPIRY_SECONDS


def test_presigned_post_never_exceeds_five_minutes(s3: Any) -> None:
    target = uploads.new_target("line-1", "cam-1", "", "image/jpeg")
    before = datetime.now(NOW.tzinfo)
    post = uploads.presigned_post(s3, "images", target, 10, expires_in=3600)
    expiration = parse_time(_policy(post)["expiration"])
    assert (expiration - before).total_seconds() <= uploads.MAX_EXPIRY_SECONDS + 1
    assert ["content-length-range", 1, 10] in _conditions(_policy(post))[1]


def test_presigned_put_signs_key_type_and_metadata(s3: Any) -> None:
    target = uploads.new_target("line-1", "cam-1", "frame-7", "image/jpeg")
    url = uploads.presigned_put(s3, "images", target, expires_in=3600)

    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert unquote(parts.path) == f"/images/{target.key}"
    assert int(query["X-Amz-Expires"]) <= uploads.MAX_EXPIRY_SECONDS
    signed = set(query["X-Amz-SignedHeaders"].split(";"))
    # A camera must send exactly these headers, or S3 refuses the signature.
    assert {"content-type", "x-amz-meta-assemblylineid", "x-amz-meta-cameraid",
            "x-amz-meta-imageid"} <= signed


@pytest.mark.parametrize("value, expected, why", [
    (None, None, "not declared (seed clients)"),
    ("", None, "declared empty"),
    ("2048", 2048, "a size"),
    ("0002048", 2048, "leading zeros do not count against the limit"),
    (str(MAX_BYTES), MAX_BYTES, "exactly the limit"),
    (str(MAX_BYTES + 1), "over the limit", "one byte over"),
    ("9" * 20, "over the limit", "more digits than the limit has"),
    ("9" * 4301, "over the limit", "more digits than int() reads (a ValueError, so a 500)"),
    ("0", "positive whole number", "empty upload"),
    ("0" * 5000, "positive whole number", "zero, however long"),
    ("-1", "positive whole number", "negative"),
    ("12kb", "positive whole number", "not a number"),
    ("²", "positive whole number", "a digit int() does not read"),
])
def test_a_declared_length_is_a_positive_size_within_the_limit(
        value: str | None, expected: int | str | None, why: str) -> None:
    if isinstance(expected, str):
        with pytest.raises(uploads.UploadRequestError, match=f"^contentlength .*{expected}"
                           ) as refused:
            uploads.declared_length(value, MAX_BYTES)
        assert len(str(refused.value)) < 120, why  # a long value is not echoed whole
    else:
        assert uploads.declared_length(value, MAX_BYTES) == expected, why
