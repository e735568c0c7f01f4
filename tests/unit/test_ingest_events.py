"""Decoding S3 notifications: every record, URL-decoded keys, test events, poison bodies."""

from __future__ import annotations

import json

import pytest

from pipeline.ingest import object_refs
from tests.conftest import load_event


def test_keys_are_url_decoded_and_every_record_is_read() -> None:
    event = load_event("s3_object_created.json", bucket="b", key="L1/C1/a+b%2Bc.jpg",
                       etag="e1", size="10", version="3HL4kqtJvjVBH40Nrjfkd")
    event["Records"].append(json.loads(json.dumps(event["Records"][0]).replace("e1", "e2")))
    refs = list(object_refs(json.dumps(event)))
    assert [ref.key for ref in refs] == ["L1/C1/a b+c.jpg", "L1/C1/a b+c.jpg"]
    assert [ref.etag for ref in refs] == ["e1", "e2"]
    assert refs[0].version_id == "3HL4kqtJvjVBH40Nrjfkd"  # the version the event is about
    assert refs[0].idempotency_key != refs[1].idempotency_key
    assert refs[0].event_time.tzinfo is not None


def test_test_event_yields_nothing() -> None:
    assert list(object_refs(json.dumps(load_event("s3_test_event.json")))) == []


@pytest.mark.parametrize("body", [
    "not json", "[1, 2]", '{"hello": "world"}', '{"Records": ["x"]}',
    '{"Records": [{"eventName": "ObjectCreated:Put", "s3": "x"}]}',
    '{"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"}}}]}',
    '{"Records": [{"eventName": "ObjectCreated:Put", "eventTime": "yesterday", "s3": '
    '{"bucket": {"name": "b"}, "object": {"key": "k", "size": 1}}}]}',
])
def test_poison_bodies_raise(body: str) -> None:
    """Only ValueError, naming what is wrong: a handler, `dlq list` and a redrive all
    treat it as a poison message."""
    with pytest.raises(ValueError, match="not JSON|not an S3 event|malformed"):
        list(object_refs(body))


@pytest.mark.parametrize("queue, body", [
    ("ingest", '{"Records": ["x"]}'),
    ("ingest", '{"Records": [{"eventName": "ObjectCreated:Put", "s3": null}]}'),
    ("workflow", '{"record": "x"}'),
    ("workflow", '{"record": {}, "error": "x"}'),
    ("workflow", "[1]"),
    ("lake", '{"LakeRows": "x"}'),
    ("lake", '{"DDBStreamBatchInfo": null}'),
])
def test_a_malformed_dead_letter_is_described_not_raised(queue: str, body: str) -> None:
    """One such letter must not hide the others from `dlq list`."""
    from pipeline.dlq import describe

    [letter] = describe(queue, {"MessageId": "m-1", "Body": body})
    assert letter.message_id == "m-1"
    assert "poison" in letter.reason or "unreadable" in letter.reason


class _FakeDynamoDB:
    """BatchGetItem that leaves some keys unprocessed the first `unprocessed_rounds` times."""

    def __init__(self, stored: dict[str, dict], unprocessed_rounds: int) -> None:
        self.stored, self.unprocessed_rounds, self.calls = stored, unprocessed_rounds, 0

    def batch_get_item(self, RequestItems: dict) -> dict:  # noqa: N803 - boto names
        self.calls += 1
        [(table, request)] = RequestItems.items()
        keys = request["Keys"]
        assert request["ConsistentRead"] is True
        served, left = (keys[:1], keys[1:]) if self.calls <= self.unprocessed_rounds else (
            keys, [])
        return {"Responses": {table: [self.stored[k["image_id"]["S"]] for k in served
                                      if k["image_id"]["S"] in self.stored]},
                "UnprocessedKeys": {table: {"Keys": left, "ConsistentRead": True}}
                if left else {}}


@pytest.mark.parametrize("unprocessed_rounds, known", [
    (0, {"a", "b", "c", "d"}),  # one call answers every key
    (1, {"a", "b", "c", "d"}),  # keys left unprocessed are asked for again
    (5, {"a", "b", "c"}),  # d is still unprocessed after 3 tries: it is looked up alone
])
def test_a_batch_reads_its_records_once_and_retries_unprocessed_keys(
        monkeypatch: pytest.MonkeyPatch, unprocessed_rounds: int, known: set[str]) -> None:
    from pipeline import aws, ingest
    from pipeline.records import utc_now
    from pipeline.settings import Settings

    ids = {letter: letter * 32 for letter in "abcd"}  # upload ids, in their sorted order
    stored = {ids["b"]: {"image_id": {"S": ids["b"]}}}
    fake = _FakeDynamoDB(stored, unprocessed_rounds)
    monkeypatch.setattr(aws, "client", lambda service: fake)
    monkeypatch.setattr(ingest.time, "sleep", lambda seconds: None)
    refs = [ingest.ObjectRef("bucket", f"line-1/cam-1/2026/01/02/{ids[letter]}.jpg", "e", 1,
                             utc_now()) for letter in "dcab"]

    recorded = ingest.recorded_items(refs, Settings(region="us-east-1", table_name="t"))

    assert set(recorded.items) == {ids[letter] for letter in known}
    assert recorded.items[ids["b"]] == stored[ids["b"]]
    assert all(recorded.items[ids[letter]] is None for letter in known - {"b"})
    assert fake.calls == min(unprocessed_rounds + 1, 3)
