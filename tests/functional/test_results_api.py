"""GET /results (filters, pagination) and GET /results/{image_id} through Chalice's test
client, against in-process moto, with a real token from `pipeline.tokens`; and the query
without a line (a scan, which the CLI and the report use: the API always has the token's
line), straight through `pipeline.queries`."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline import tokens
from tests.functional.results_stack import ResultsStack, record, results_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ResultsStack]:
    """One stack for the module: these tests only read."""
    with results_stack(tmp_path_factory.mktemp("stack")) as stack:
        info = stack.info
        # line-1/cam-1: minutes 0..5, anomalous at 1 and 4; line-1/cam-2: 10, 11;
        # line-2/cam-1: 20 (anomalous), 21 (invalid)
        for index in range(6):
            stack.put(record(info, index, anomalous=index in (1, 4)))
        stack.put(record(info, 10, camera="cam-2"))
        stack.put(record(info, 11, camera="cam-2"))
        stack.put(record(info, 20, line="line-2", anomalous=True))
        stack.put(record(info, 21, line="line-2", status="INVALID"))
        yield stack


@pytest.fixture(scope="module")
def api(stack: ResultsStack) -> Iterator[Any]:
    from chalice.test import Client

    from scripts.local_stack import load_app_module

    _, token = tokens.create_token(stack.info.tokens_table, "line-1", "cam-1")
    with Client(load_app_module().app) as client:
        yield _Api(client, token)


class _Api:
    def __init__(self, client: Any, token: str) -> None:
        self.client = client
        self.token = token

    def get(self, path: str, token: str | None = None) -> tuple[int, Any]:
        headers = {"Authorization": self.token if token is None else token}
        response = self.client.http.get(path, headers=headers)
        return response.status_code, json.loads(response.body or b"null")


def ids(body: dict[str, Any]) -> list[int]:
    return [int(result["image_id"], 16) for result in body["results"]]


@pytest.mark.parametrize("query, expected", [
    # a line: its cameras, newest first
    ("line=line-1", [11, 10, 5, 4, 3, 2, 1, 0]),
    # a camera of a line
    ("line=line-1&camera=cam-2", [11, 10]),
    # time range on the index's sort key (captured_at; record n is at minute n)
    ("line=line-1&since=2026-11-23T08:02:00Z&until=2026-11-23T08:05:00Z", [5, 4, 3, 2]),
    ("line=line-1&since=2026-11-23T08:10:00%2B00:00", [11, 10]),
    ("line=line-1&since=2026-11-23&until=2026-11-23T08:01:30Z", [1, 0]),  # a date: 00:00 UTC
    # a date in ISO 8601's basic form: it was read as a time without a zone (a 400)
    ("line=line-1&since=20261123&until=20261123", [11, 10, 5, 4, 3, 2, 1, 0]),
    ("line=line-1&until=2026-11-23T08:02:00Z", [2, 1, 0]),  # until alone, inclusive
    # a date as until is up to its end: that one day (it was its first instant, so none)
    ("line=line-1&since=2026-11-23&until=2026-11-23", [11, 10, 5, 4, 3, 2, 1, 0]),
    ("line=line-1&until=2026-11-22", []),
    ("line=line-1&camera=cam-2&until=2026-11-23T08:10:30Z", [10]),  # on the camera index
    # verdict filters
    ("line=line-1&anomalous=true", [4, 1]),
    ("line=line-1&anomalous=false", [11, 10, 5, 3, 2, 0]),
])
def test_filters(api: _Api, query: str, expected: list[int]) -> None:
    status, body = api.get(f"/results?{query}")
    assert status == 200, body
    assert ids(body) == expected
    assert body["next_token"] is None


@pytest.mark.parametrize("since, until, expected", [
    # both bounds, inclusive, over every line
    ("2026-11-23T08:03:00Z", "2026-11-23T08:11:00Z", [3, 4, 5, 10, 11]),
    # since alone
    ("2026-11-23T08:11:00Z", None, [11, 20, 21]),
    # until alone
    (None, "2026-11-23T08:02:00Z", [0, 1, 2]),
])
def test_a_query_without_a_line_scans_every_line_within_the_times(
        stack: ResultsStack, since: str | None, until: str | None,
        expected: list[int]) -> None:
    from pipeline.queries import ResultQuery, iter_results, parse_when

    query = ResultQuery(since=parse_when(since, "since") if since else None,
                        until=parse_when(until, "until") if until else None)
    found = [int(r.image_id, 16) for r in iter_results(stack.info.table, query)]
    assert sorted(found) == expected  # a scan has no order


def test_without_a_line_the_tokens_own_line_is_listed(api: _Api) -> None:
    status, body = api.get("/results?limit=100")
    assert status == 200
    assert ids(body) == [11, 10, 5, 4, 3, 2, 1, 0]  # line-1 only, newest first


def test_a_token_reads_only_its_own_line(api: _Api, stack: ResultsStack) -> None:
    status, body = api.get("/results?line=line-2")  # the token is line-1's
    assert status == 403
    assert "line 'line-1' only" in body["Message"]
    assert api.get(f"/results/{20:032x}")[0] == 404  # another line's image looks absent
    _, line_2 = tokens.create_token(stack.info.tokens_table, "line-2", "cam-1")
    status, body = api.get("/results?anomalous=false", token=line_2)
    assert (status, ids(body)) == (200, [21])


def test_pagination_follows_next_token(api: _Api) -> None:
    seen: list[int] = []
    pages = 0
    token = ""
    while True:
        status, body = api.get(f"/results?line=line-1&limit=3&next_token={token}")
        assert status == 200, body
        assert len(body["results"]) <= 3
        seen += ids(body)
        pages += 1
        if not body["next_token"]:
            break
        token = body["next_token"]
    assert seen == [11, 10, 5, 4, 3, 2, 1, 0]
    assert pages >= 3


def _token_for(key: dict[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(
        {name: {"S": value} for name, value in key.items()}).encode()).decode()


@pytest.mark.parametrize("query, message", [
    ("line=line-1&limit=0", "limit"),
    ("line=line-1&limit=many", "limit must be a whole number"),
    ("line=line-1&since=yesterday", "since 'yesterday' is not a time: use e.g. 2h"),
    ("line=line-1&until=2026-11-23T08:00:00", "until '2026-11-23T08:00:00' is not a time: "
                                               "add a zone"),
    ("line=line-1&anomalous=maybe", "anomalous must be true or false"),
    ("line=line-1&next_token=not-a-token", "next_token"),
    # valid base64 JSON, but not a key this API issued (it used to reach DynamoDB: a 500)
    ("line=line-1&next_token=eyJpbWFnZV9pZCI6IDF9", "next_token"),
    # an age before year 1 (an OverflowError: it was a 500), and a window ending before it
    # starts (DynamoDB refuses a reversed BETWEEN: a 500 in AWS)
    ("line=line-1&since=999999999d", "since '999999999d' is not a time"),
    ("line=line-1&since=1h&until=2h", "is after until"),
    # values DynamoDB would refuse (keys over 2 KB, an empty key; moto does not check):
    # a 500 in AWS, as was JSON nested too deep for the parser everywhere
    ("line=line-1&camera=" + "c" * 2100, "camera must be 1-64 characters"),
    ("line=line-1&next_token=" + _token_for({"image_id": "", "line_id": "line-1",
                                             "captured_at": "2026-11-23T08:20:00Z"}),
     "next_token is not a token this API issued"),
    ("line=line-1&next_token=" + _token_for({"image_id": "a" * 3000, "line_id": "line-1",
                                             "captured_at": "2026-11-23T08:20:00Z"}),
     "next_token is not a token this API issued"),
    ("line=line-1&next_token=" + _token_for({"image_id": "0" * 32, "line_id": "line-1",
                                             "captured_at": "x" * 3000}),
     "next_token is not a token this API issued"),
    ("line=line-1&next_token=" + base64.urlsafe_b64encode(b"[" * 3000).decode(),
     "next_token is not a token this API issued"),
    ("line=line-1&limit=%C2%B2", "limit must be a whole number"),  # "²": str.isdigit passes it
    # Python's int() refuses over 4,300 digits, and its message was the answer
    ("line=line-1&limit=" + "9" * 5000, "limit must be a whole number from 1 to 500"),
    ("line=line-1&limit=501", "limit must be between 1 and 500"),
])
def test_bad_queries_are_400_with_the_reason(api: _Api, query: str, message: str) -> None:
    status, body = api.get(f"/results?{query}")
    assert status == 400
    assert message in body["Message"]


def test_a_page_token_from_another_query_is_400_not_a_500(api: _Api) -> None:
    """DynamoDB refuses a start key that is not the index's (a ValidationException: a 500),
    and one from another line's query would start this line's page at that line's key."""
    status, body = api.get("/results?line=line-1&camera=cam-2&limit=1")
    assert status == 200 and body["next_token"]
    camera_token = body["next_token"]
    assert api.get(f"/results?line=line-1&camera=cam-2&next_token={camera_token}")[0] == 200
    line_2 = _token_for({"image_id": f"{20:032x}", "line_id": "line-2",
                         "captured_at": "2026-11-23T08:20:00Z"})
    for token in (camera_token,  # the camera index's key, on the line index
                  line_2,  # another line's key
                  _token_for({"zz": "q"})):  # no key of this table at all
        status, body = api.get(f"/results?line=line-1&next_token={token}")
        assert status == 400, body
        assert "next_token belongs to another query" in body["Message"]
    # a key outside the time window asked for ("outside query boundaries" in AWS; moto
    # does not check): record 11 was captured at minute 11
    status, body = api.get("/results?line=line-1&limit=1")
    assert (status, ids(body)) == (200, [11]) and body["next_token"]
    after_11 = body["next_token"]
    assert api.get(f"/results?line=line-1&until=2026-11-23T08:11:00Z&next_token={after_11}"
                   )[0] == 200  # its own window, bounds included
    status, body = api.get(f"/results?line=line-1&until=2026-11-23T08:10:00Z"
                           f"&next_token={after_11}")
    assert status == 400, body
    assert "next_token belongs to another query" in body["Message"]


def test_a_page_token_older_than_since_is_the_end_not_a_400(api: _Api) -> None:
    """An age (`since=2h`) is resolved again at every page, so it moves past the oldest
    item of the page before: paging on answered 400 "belongs to another query", and a
    client that asked again without the token started over, for ever. Newest first,
    nothing after that key is as new as `since`."""
    status, body = api.get("/results?line=line-1&limit=1")
    assert (status, ids(body)) == (200, [11])
    status, body = api.get(f"/results?line=line-1&since=2026-11-23T08:12:00Z"
                           f"&next_token={body['next_token']}")
    assert (status, body) == (200, {"results": [], "next_token": None})


@pytest.mark.parametrize("query, expected", [
    # anomalous at minutes 4 and 1 of 8 items: DynamoDB's Limit counts items read before
    # the filter, so `limit=2` read 11 and 10 and answered an empty page with a token
    ("anomalous=true&limit=2", [[4, 1]]),
    ("anomalous=true&limit=1", [[4], [1]]),
    ("reviewed=true&limit=3", [[]]),
    ("anomalous=false&limit=4", [[11, 10, 5, 3], [2, 0]]),
])
def test_a_filtered_page_is_filled_up_to_its_limit(api: _Api, query: str,
                                                   expected: list[list[int]]) -> None:
    pages, token = [], ""
    while True:
        status, body = api.get(f"/results?line=line-1&{query}&next_token={token}")
        assert status == 200, body
        pages.append(ids(body))
        if not (token := body["next_token"]):
            break
    assert [page for page in pages if page or len(pages) == 1] == expected


@pytest.mark.parametrize("attribute, value, said", [
    # no zone: not a time a result holds
    ("captured_at", {"S": "2026-11-23T08:30:00"}, "time '2026-11-23T08:30:00' has no time zone"),
    # a set or bytes inside a map, typed in by hand, read as a result; Chalice then failed
    # to write the answer outside its error handler: a 502 for the whole line's listing
    ("review", {"M": {"label": {"S": "normal"}, "tags": {"SS": ["glare"]}}},
     "review holds a set, which JSON cannot"),
    ("anomalies", {"L": [{"M": {"Name": {"B": b"\x00"}}}]},
     "anomalies holds a Binary, which JSON cannot"),
    ("anomalies", {"L": [{"M": {"Area": {"NS": ["1"]}}}]},
     "anomalies holds a set, which JSON cannot"),
])
def test_an_item_that_is_not_a_result_is_named_not_a_500(
        api: _Api, stack: ResultsStack, attribute: str, value: Any, said: str) -> None:
    bad = stack.put(record(stack.info, 30))
    stack.client("dynamodb").update_item(
        TableName=stack.info.table, Key={"image_id": {"S": bad.image_id}},
        UpdateExpression="SET #a = :v", ExpressionAttributeNames={"#a": attribute},
        ExpressionAttributeValues={":v": value})
    try:
        status, body = api.get("/results?line=line-1")
        assert status == 200
        assert ids(body) == [11, 10, 5, 4, 3, 2, 1, 0]
        assert body["unreadable"] == [f"result '{bad.image_id}' is malformed: {said}"]
        status, body = api.get(f"/results/{bad.image_id}")
        assert status == 500
        assert body["Message"] == f"the stored result is unreadable: result " \
                                  f"'{bad.image_id}' is malformed: {said}"
    finally:  # the module's other tests read line-1
        stack.client("dynamodb").delete_item(TableName=stack.info.table,
                                             Key={"image_id": {"S": bad.image_id}})


def test_get_one_result_includes_status(api: _Api, stack: ResultsStack) -> None:
    _, line_2 = tokens.create_token(stack.info.tokens_table, "line-2", "cam-1")
    status, body = api.get(f"/results/{20:032x}", token=line_2)
    assert status == 200
    assert (body["status"], body["is_anomalous"], body["line_id"]) == ("OK", True, "line-2")
    assert body["captured_at"] == "2026-11-23T08:20:00.000+00:00"

    status, body = api.get(f"/results/{21:032x}", token=line_2)
    assert (status, body["status"]) == (200, "INVALID")
    assert body["reason"].startswith("not_an_image")


def test_unknown_image_is_404(api: _Api) -> None:
    status, body = api.get(f"/results/{999:032x}")
    assert status == 404
    assert "no result" in body["Message"]


@pytest.mark.parametrize("token", ["", "ls_0000_wrong", "Bearer nonsense"])
def test_results_need_a_valid_token(api: _Api, token: str) -> None:
    status, _ = api.get("/results?line=line-1", token=token)
    assert status == 401
    status, _ = api.get(f"/results/{1:032x}", token=token)
    assert status == 401


def test_the_cli_reads_a_deployed_stack_from_its_outputs(
        stack: ResultsStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`linesight results --state stack.json` with `pulumi stack output --json`: that
    stack's table in its region, from a shell set up for another region, table and the
    emulator."""
    import os
    from dataclasses import asdict

    import typer
    from typer.testing import CliRunner

    from scripts.cli_results import register

    outputs = {key: value for key, value in asdict(stack.info).items()
               if key not in ("queue_url", "environment", "camera_tokens",
                              "reviewer_tokens", "token")}
    described = tmp_path / "stack.json"
    described.write_text(json.dumps(outputs | {"ingest_queue_url": stack.info.queue_url}))
    saved = dict(os.environ)
    for variable, value in (("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
                            ("AWS_REGION", "eu-west-1"), ("AWS_DEFAULT_REGION", "eu-west-1"),
                            ("LINESIGHT_TABLE", "not-this-one")):
        monkeypatch.setenv(variable, value)
    app = typer.Typer()
    register(app)
    try:
        listed = CliRunner().invoke(app, ["results", "--line", "line-1", "--anomalous",
                                          "--format", "json", "--state", str(described)])
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert listed.exit_code == 0, listed.output
    assert [int(r["image_id"], 16) for r in json.loads(listed.stdout)] == [4, 1]
