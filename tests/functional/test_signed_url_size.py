"""The seed-compatible PUT route: what is signed, a declared size, and one write per URL
(moto checks no signatures, so the tests read what was signed)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from pipeline import tokens
from tests.conftest import REPO, MotoStack

SEED = {"assemblylineid": "line-1", "cameraid": "cam-1", "imageid": "frame-1"}


@pytest.fixture
def call(shared_stack: MotoStack) -> Iterator[Any]:
    import app
    from chalice.test import Client

    token = tokens.create_token(shared_stack.info.tokens_table, "line-1", "cam-1")[1]
    with Client(app.app, project_dir=str(REPO / "api")) as client:
        yield lambda **params: client.http.get("/getsignedurl?" + urlencode(params),
                                               headers={"Authorization": token})


def test_a_declared_size_is_signed(call: Any) -> None:
    response = call(**SEED, contentlength="2048")
    assert response.status_code == 200, response.body
    signed = parse_qs(urlsplit(json.loads(response.body)["uploadURL"]).query)
    assert "content-length" in signed["X-Amz-SignedHeaders"][0].split(";")


@pytest.mark.parametrize("length, why", [
    (str(15 * 1024 * 1024 + 1), "one byte over the default 15 MB"),
    ("0", "empty"),
    ("12kb", "not a number"),
    ("²", "a digit int() does not read"),
    ("9" * 4301, "more digits than int() reads: was a 500"),
])
def test_a_bad_declared_size_is_refused(call: Any, length: str, why: str) -> None:
    response = call(**SEED, contentlength=length)
    assert response.status_code == 400, why
    assert "contentlength" in json.loads(response.body)["Message"]


def test_without_a_size_the_seed_request_still_works(call: Any) -> None:
    response = call(**SEED)
    assert response.status_code == 200
    signed = parse_qs(urlsplit(json.loads(response.body)["uploadURL"]).query)
    assert "content-length" not in signed["X-Amz-SignedHeaders"][0]


def test_the_headers_returned_are_exactly_the_signed_ones(call: Any) -> None:
    body = json.loads(call(**SEED, contentlength="2048").body)
    signed = parse_qs(urlsplit(body["uploadURL"]).query)["X-Amz-SignedHeaders"][0].split(";")
    # content-length is sent by any HTTP client; host comes from the URL
    assert {name.lower() for name in body["headers"]} == set(signed) - {"host",
                                                                          "content-length"}
    assert body["headers"]["If-None-Match"] == "*"


def test_a_reused_put_url_cannot_replace_the_image(call: Any, shared_stack: MotoStack) -> None:
    """Within its five minutes a URL could be used again with other bytes: S3 keeps the
    image the pipeline judged and refuses the second write (moto honours If-None-Match)."""
    import requests

    body = json.loads(call(**SEED).body)
    first = requests.put(body["uploadURL"], data=b"first image", headers=body["headers"],
                         timeout=10)
    again = requests.put(body["uploadURL"], data=b"other bytes", headers=body["headers"],
                         timeout=10)
    assert first.status_code == 200, first.text
    assert again.status_code == 412, again.text
    stored = shared_stack.client("s3").get_object(Bucket=shared_stack.info.images_bucket,
                                                  Key=body["key"])
    assert stored["Body"].read() == b"first image"
