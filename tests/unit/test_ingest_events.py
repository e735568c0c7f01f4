"""Decoding S3 notifications: every record, URL-decoded keys, test events, poison bodies."""

from __future__ import annotations

import json

import pytest

from pipeline.ingest import object_refs
from tests.conftest import load_event


def test_keys_are_url_decoded_and_every_record_is_read() -> None:
    event = load_event("s3_object_created.json", bucket="b", key="L1/C1/a+b%2Bc.jpg",
                       etag="e1", size="10")
    event["Records"].append(json.loads(json.dumps(event["Records"][0]).replace("e1", "e2")))
    refs = list(object_refs(json.dumps(event)))
    assert [ref.key for ref in refs] == ["L1/C1/a b+c.jpg", "L1/C1/a b+c.jpg"]
    assert [ref.etag for ref in refs] == ["e1", "e2"]
    assert refs[0].idempotency_key != refs[1].idempotency_key
    assert refs[0].event_time.tzinfo is not None


def test_test_event_yields_nothing() -> None:
    assert list(object_refs(json.dumps(load_event("s3_test_event.json")))) == []


@pytest.mark.parametrize("body", ["not json", "[1, 2]", '{"hello": "world"}'])
def test_poison_bodies_raise(body: str) -> None:
    with pytest.raises(ValueError):
        list(object_refs(body))
