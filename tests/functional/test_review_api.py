"""The review loop: `linesight show` to look at a result, POST /results/{image_id}/review
through Chalice's test client against in-process moto with a real token, the review showing
in GET /results/{id} and in `reviewed` queries (API and CLI), and `export-dataset
--reviewed` feeding `train`."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from pipeline import tokens
from pipeline.detector.training import find_training_set
from tests.functional.results_stack import ResultsStack, jpeg, record, results_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ResultsStack]:
    """One stack for the module; each test reviews its own images (distinct indexes)."""
    with results_stack(tmp_path_factory.mktemp("stack")) as stack:
        yield stack


@pytest.fixture(scope="module")
def api(stack: ResultsStack) -> Iterator[Any]:
    from chalice.test import Client

    from scripts.local_stack import load_app_module

    token_id, token = tokens.create_token(stack.info.tokens_table, "line-1",
                                          role=tokens.REVIEWER)
    with Client(load_app_module().app) as client:
        yield _Api(client, token, token_id)


class _Api:
    def __init__(self, client: Any, token: str, token_id: str) -> None:
        self.client = client
        self.token = token
        self.token_id = token_id

    def call(self, method: str, path: str, body: Any = None,
             token: str | None = None) -> tuple[int, Any]:
        headers = {"Authorization": self.token if token is None else token,
                   "Content-Type": "application/json"}
        send = getattr(self.client.http, method)
        response = (send(path, headers=headers) if body is None else
                    send(path, headers=headers, body=json.dumps(body)))
        return response.status_code, json.loads(response.body or b"null")

    def review(self, image_id: str, body: Any, token: str | None = None) -> tuple[int, Any]:
        return self.call("post", f"/results/{image_id}/review", body, token)


def cli(*args: str) -> Any:
    from scripts.cli_results import register

    app = typer.Typer()
    register(app)
    return CliRunner().invoke(app, list(args))


def test_review_is_recorded_beside_the_verdict(api: _Api, stack: ResultsStack) -> None:
    stored = stack.put(record(stack.info, 1, anomalous=True))

    status, body = api.review(stored.image_id, {"label": "normal", "note": "glare on the rim"})

    assert status == 200, body
    assert body["is_anomalous"] is True  # the model's verdict stays
    assert body["review"]["label"] == "normal"
    assert body["review"]["note"] == "glare on the rim"
    assert body["review"]["reviewer"] == api.token_id
    status, fetched = api.call("get", f"/results/{stored.image_id}")
    assert status == 200
    assert fetched["review"]["label"] == "normal"
    assert fetched["review"]["reviewed_at"].endswith("+00:00")


def test_a_later_review_replaces_the_earlier_and_a_note_is_optional(
        api: _Api, stack: ResultsStack) -> None:
    stored = stack.put(record(stack.info, 7))
    assert api.review(stored.image_id, {"label": "anomaly", "note": "scratch?"})[0] == 200

    status, body = api.review(stored.image_id, {"label": "normal", "note": None})

    assert status == 200
    assert (body["review"]["label"], body["review"]["note"]) == ("normal", "")


def test_reviewed_queries_list_only_reviewed_results(api: _Api, stack: ResultsStack) -> None:
    # camera cam-9 of line-1 is this module's own, so other tests' records stay out
    reviewed = stack.put(record(stack.info, 2, camera="cam-9"))
    unreviewed = stack.put(record(stack.info, 3, camera="cam-9"))
    assert api.review(reviewed.image_id, {"label": "anomaly"})[0] == 200

    _, only = api.call("get", "/results?line=line-1&camera=cam-9&reviewed=true")
    _, others = api.call("get", "/results?line=line-1&camera=cam-9&reviewed=false")

    assert [r["image_id"] for r in only["results"]] == [reviewed.image_id]
    assert [r["image_id"] for r in others["results"]] == [unreviewed.image_id]
    result = cli("results", "--line", "line-1", "--camera", "cam-9", "--reviewed",
                 "--format", "json")
    assert result.exit_code == 0, result.output
    assert [r["image_id"] for r in json.loads(result.stdout)] == [reviewed.image_id]
    result = cli("results", "--line", "line-1", "--camera", "cam-9", "--not-reviewed",
                 "--format", "csv")
    assert result.stdout.splitlines()[1].startswith(unreviewed.image_id + ",")


@pytest.mark.parametrize("body, message", [
    ({"label": "broken"}, "label must be one of normal, anomaly"),
    ({"label": "Anomaly"}, "label must be one of"),  # labels are exact
    ({"note": "no label"}, "label must be one of"),
    ({"label": "normal", "note": "x" * 1001}, "note must be at most 1000"),
    ({"label": "normal", "note": ["a", "list"]}, "note must be a string"),
    (["normal"], "the body must be a JSON object"),
])
def test_bad_review_is_400(api: _Api, stack: ResultsStack, body: Any, message: str) -> None:
    stored = stack.put(record(stack.info, 4))

    status, answer = api.review(stored.image_id, body)

    assert status == 400
    assert message in answer["Message"]
    assert not api.call("get", f"/results/{stored.image_id}")[1]["review"]


def test_review_of_an_unknown_image_is_404_and_creates_nothing(api: _Api,
                                                                stack: ResultsStack) -> None:
    missing = f"{999_999:032x}"

    status, answer = api.review(missing, {"label": "normal"})

    assert status == 404
    assert missing in answer["Message"]
    item = stack.client("dynamodb").get_item(TableName=stack.info.table,
                                             Key={"image_id": {"S": missing}})
    assert "Item" not in item


@pytest.mark.parametrize("token", ["", "ls_0000_wrong"])
def test_review_needs_a_valid_token(api: _Api, stack: ResultsStack, token: str) -> None:
    stored = stack.put(record(stack.info, 5))

    status, _ = api.review(stored.image_id, {"label": "normal"}, token=token)

    assert status == 401
    assert not api.call("get", f"/results/{stored.image_id}")[1]["review"]


def test_cli_review_records_and_reports_disagreement(stack: ResultsStack) -> None:
    stored = stack.put(record(stack.info, 6, anomalous=True))

    result = cli("review", stored.image_id, "--label", "normal", "--note", "dust",
                 "--reviewer", "qe-anna")

    assert result.exit_code == 0, result.output
    assert "disagrees" in result.stdout
    item = stack.client("dynamodb").get_item(TableName=stack.info.table,
                                             Key={"image_id": {"S": stored.image_id}})["Item"]
    assert item["review"]["M"]["reviewer"]["S"] == "qe-anna"


@pytest.mark.parametrize("args, message", [
    (["review", f"{888_888:032x}", "--label", "normal"], "no result for image"),
    (["review", f"{1:032x}", "--label", "maybe"], "'maybe' is not one of normal, anomaly"),
    (["show", f"{888_888:032x}", "--out", "/tmp/never-written.png"], "no result for image"),
    (["show", f"{1:032x}", "--out", "/tmp"], "/tmp is a folder: name the picture's file"),
    (["results", "--camera", "cam-1"], "--camera needs --line"),
    (["results", "--since", "yesterday"], "is not a time"),
    (["results", "--format", "xml"], "'xml' is not one of table, json, csv"),
    # times a calendar does not hold, or a window that ends before it starts
    (["results", "--since", "2026-02-30"], "is not a time"),
    (["results", "--since", "999999999d"], "is not a time"),
    (["report", "--since", "9" * 20 + "h"], "is not a time"),
    (["results", "--since", "0001-01-01T00:00:00+01:00"], "is not a time"),
    (["results", "--line", "line-1", "--since", "1h", "--until", "2h"], "is after until"),
    (["export-dataset", "/tmp/never-written", "--since", "1h", "--until", "2h"],
     "is after until"),
    (["results", "--endpoint-url", "127.0.0.1:5077"], "give the scheme"),
])
def test_cli_mistakes_are_one_clear_line(stack: ResultsStack, args: list[str],
                                         message: str) -> None:
    result = cli(*args)

    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


def _heatmap(stack: ResultsStack, name: str) -> str:
    """A heatmap overlay PNG in the results bucket, all blue, so the picture shows it."""
    out = io.BytesIO()
    Image.new("RGB", (48, 48), (20, 40, 230)).save(out, "PNG")
    key = f"heatmaps/line-1/cam-1/{name}.png"
    stack.client("s3").put_object(Bucket=stack.info.results_bucket, Key=key,
                                  Body=out.getvalue())
    return f"s3://{stack.info.results_bucket}/{key}"


def _pixels_near(path: Path, colour: tuple[int, int, int], tolerance: int = 12) -> int:
    pixels = np.asarray(Image.open(path).convert("RGB"), np.int16)
    return int((np.abs(pixels - np.array(colour)) <= tolerance).all(axis=-1).sum())


def test_cli_show_prints_the_result_and_draws_photo_beside_heatmap(
        stack: ResultsStack, tmp_path: Path) -> None:
    stored = stack.put(record(stack.info, 52, anomalous=True,
                              heatmap_uri=_heatmap(stack, "show-52")),
                       image=jpeg(defect=True))
    stack.put(record(stack.info, 53), image=jpeg())  # another result, not shown

    result = cli("show", stored.image_id, "--out", str(tmp_path / "seen" / "it.png"))

    assert result.exit_code == 0, result.output
    said = result.stdout
    for fact in (f"Image:       {stored.image_id}", "Verdict:     ANOMALOUS",
                 "Score:       0.800 (threshold 0.500)", "Alerted:     anomalous",
                 "Original:    http"):
        assert fact in said
    assert said.rstrip().endswith(str(tmp_path / "seen" / "it.png"))
    # the photo's grey disc and the blue heatmap, scaled to the photo's 96 px
    assert _pixels_near(tmp_path / "seen" / "it.png", (150, 150, 150)) > 96 * 96 // 3
    assert _pixels_near(tmp_path / "seen" / "it.png", (20, 40, 230)) >= 96 * 96 * 0.95


def test_cli_show_of_a_result_whose_photo_is_gone_still_draws_what_is_left(
        stack: ResultsStack, tmp_path: Path) -> None:
    stored = stack.put(record(stack.info, 54, heatmap_uri=_heatmap(stack, "show-54")))

    result = cli("show", stored.image_id, "--out", str(tmp_path / "gone.png"))

    assert result.exit_code == 0, result.output
    assert "cannot read the photo" in " ".join(result.stderr.split())
    assert "Original:" not in result.stdout
    assert _pixels_near(tmp_path / "gone.png", (20, 40, 230)) >= 48 * 48 * 0.95  # the heatmap


def test_cli_show_prints_stored_text_as_it_is(stack: ResultsStack, tmp_path: Path) -> None:
    """Ids, reasons and notes are whatever was stored: rich would read `[/]` as markup (and
    crash) and `:fire:` as an emoji."""
    stored = stack.put(record(stack.info, 55, camera="cam:fire:[/]",
                              review={"label": "normal", "note": "[red]dust[/red]",
                                      "reviewer": "qa"}))
    out = tmp_path / "[b]odd[/b].png"

    result = cli("show", stored.image_id, "--out", str(out))

    assert result.exit_code == 0, result.output
    said = result.stdout
    assert "Camera:      cam:fire:[/]" in said
    assert "Reviewed:    normal by qa: [red]dust[/red]" in said
    assert said.rstrip().endswith(str(out)) and out.exists()


def test_cli_prints_stored_text_as_it_is(stack: ResultsStack) -> None:
    """A reviewer's name is whatever was typed: `[/]` once recorded the review and then
    crashed the command (rich read it as markup)."""
    stored = stack.put(record(stack.info, 50))
    result = cli("review", stored.image_id, "--label", "normal", "--reviewer", "qa[/]lead")
    assert result.exit_code == 0, result.output
    said = " ".join(result.stdout.split())
    assert "(qa[/]lead)" in said and "agrees with the model" in said


def test_cli_review_of_an_unusable_upload_claims_no_agreement(stack: ResultsStack) -> None:
    stored = stack.put(record(stack.info, 51, status="INVALID"))
    result = cli("review", stored.image_id, "--label", "normal")
    assert result.exit_code == 0, result.output
    said = " ".join(result.stdout.split())
    assert "the model did not judge it (unusable upload: not_an_image)" in said
    assert "agrees" not in said


def test_results_without_a_line_are_the_newest_of_the_whole_table(
        stack: ResultsStack) -> None:
    """A scan returns items in no order: stopping at --limit and sorting showed an arbitrary
    sample as "the newest"."""
    for index in range(60, 90):
        stack.put(record(stack.info, index, line="line-7", minutes=2000 + (index * 7) % 30))
    result = cli("results", "--format", "json", "--limit", "3")
    assert result.exit_code == 0, result.output
    shown = [row["captured_at"] for row in json.loads(result.stdout)]
    newest = sorted((record(stack.info, 0, minutes=2000 + m).captured_at for m in range(30)),
                    reverse=True)[:3]
    assert shown == [when.isoformat(timespec="milliseconds") for when in newest]


def test_an_item_that_is_not_a_result_is_named_and_the_rest_listed(
        stack: ResultsStack) -> None:
    good = stack.put(record(stack.info, 95, line="line-8"))
    bad = stack.put(record(stack.info, 96, line="line-8"))
    stack.client("dynamodb").update_item(
        TableName=stack.info.table, Key={"image_id": {"S": bad.image_id}},
        UpdateExpression="REMOVE processed_at")

    listed = cli("results", "--line", "line-8", "--format", "json")
    assert listed.exit_code == 0, listed.output
    assert [row["image_id"] for row in json.loads(listed.stdout)] == [good.image_id]
    assert f"result '{bad.image_id}' is malformed: no processed_at" in " ".join(
        listed.stderr.split())

    shown = cli("show", bad.image_id, "--out", "/tmp/never-written.png")
    assert shown.exit_code == 1 and "Traceback" not in shown.output
    assert f"the stored result of '{bad.image_id}' is unreadable" in " ".join(
        shown.output.split())

    reviewed = cli("review", bad.image_id, "--label", "anomaly")
    assert reviewed.exit_code == 1
    assert "recorded the review, but cannot show the model's verdict" in " ".join(
        reviewed.output.split())
    assert "Traceback" not in reviewed.output


def test_the_api_answers_for_an_item_that_is_not_a_result(api: _Api,
                                                         stack: ResultsStack) -> None:
    """GET /results/{id} and its review answered a bare 500 for an item without
    `processed_at`, the review's after storing it, and another line's token learnt that
    the id exists (500, not 404)."""
    bad = stack.put(record(stack.info, 98))  # line-1, the api token's line
    stack.client("dynamodb").update_item(
        TableName=stack.info.table, Key={"image_id": {"S": bad.image_id}},
        UpdateExpression="REMOVE processed_at")
    _, line_2 = tokens.create_token(stack.info.tokens_table, "line-2", role=tokens.REVIEWER)
    try:
        status, body = api.call("get", f"/results/{bad.image_id}")
        assert status == 500
        assert body["Message"] == (f"the stored result is unreadable: result "
                                   f"'{bad.image_id}' is malformed: no processed_at")
        assert api.call("get", f"/results/{bad.image_id}", token=line_2)[0] == 404

        status, body = api.review(bad.image_id, {"label": "normal", "note": "fine"})
        assert status == 200, body
        assert body["image_id"] == bad.image_id
        assert (body["review"]["label"], body["review"]["note"]) == ("normal", "fine")
        assert body["unreadable"].startswith("the review is recorded, but the stored "
                                             "result is unreadable: ")
        assert api.review(bad.image_id, {"label": "anomaly"}, token=line_2)[0] == 404
    finally:  # the module's other tests list line-1
        stack.client("dynamodb").delete_item(TableName=stack.info.table,
                                             Key={"image_id": {"S": bad.image_id}})


def test_a_review_that_is_not_a_map_makes_the_item_malformed_not_a_crash(
        stack: ResultsStack, tmp_path: Path) -> None:
    """Readers do `review.get(...)`: a review edited by hand into a string crashed the
    report and `show` (and failed the lake's stream batch, tests/unit/test_lake_rows.py)."""
    bad = stack.put(record(stack.info, 97, line="line-9"))
    stack.client("dynamodb").update_item(
        TableName=stack.info.table, Key={"image_id": {"S": bad.image_id}},
        UpdateExpression="SET review = :r", ExpressionAttributeValues={":r": {"S": "ok"}})

    listed = cli("results", "--line", "line-9", "--format", "json")
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout) == []
    assert "is malformed: review is str, not a map" in " ".join(listed.stderr.split())
    shown = cli("show", bad.image_id, "--out", str(tmp_path / "bad.png"))
    assert shown.exit_code == 1 and "Traceback" not in shown.output
    assert not (tmp_path / "bad.png").exists()


def test_an_overwrite_that_reads_no_image_keeps_the_old_data_set(
        stack: ResultsStack, tmp_path: Path) -> None:
    out = tmp_path / "kept"
    (out / "train" / "normal").mkdir(parents=True)
    (out / "train" / "normal" / "old.jpg").write_bytes(jpeg())
    (out / "manifest.jsonl").write_text("{}\n")
    stack.put(record(stack.info, 97, line="line-6"))  # its image was never stored

    result = cli("export-dataset", str(out), "--line", "line-6", "--overwrite")

    assert result.exit_code == 2
    assert "none of the 1 images could be read" in " ".join(result.output.split())
    assert (out / "train" / "normal" / "old.jpg").read_bytes() == jpeg()
    assert (out / "manifest.jsonl").read_text() == "{}\n"
    assert sorted(p.name for p in out.iterdir()) == ["manifest.jsonl", "train"]


def test_export_reviewed_is_a_training_set(stack: ResultsStack, tmp_path: Path) -> None:
    info = stack.info
    labels = {10: "normal", 11: "normal", 12: "normal", 13: "anomaly", 14: "normal"}
    for index, label in labels.items():
        stored = stack.put(record(info, index, line="line-9", anomalous=index == 14),
                           image=jpeg(140 + index, defect=label == "anomaly"))
        assert cli("review", stored.image_id, "--label", label).exit_code == 0
    stack.put(record(info, 15, line="line-9"), image=jpeg())  # not reviewed: left out
    out = tmp_path / "reviewed"

    result = cli("export-dataset", str(out), "--reviewed", "--line", "line-9")

    assert result.exit_code == 0, result.output
    assert "wrote 5 images" in result.stdout
    folder = find_training_set(out)
    assert (len(folder.normal), len(folder.anomaly)) == (4, 1)
    manifest = find_training_set(out, out / "manifest.jsonl")
    assert sorted(manifest.normal) == sorted(folder.normal)
    assert manifest.anomaly == folder.anomaly
    lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert all(line["source-ref"].startswith(f"s3://{info.images_bucket}/line-9/")
               for line in lines)
    # the person's label wins: record 14 was anomalous to the model, normal to a person
    assert (out / "train" / "normal" / f"{14:032x}.jpg").is_file()

    again = cli("export-dataset", str(out), "--reviewed", "--line", "line-9")
    assert again.exit_code == 2
    assert "already holds a data set" in again.output


def test_a_token_reviews_only_its_own_lines_images(api: _Api, stack: ResultsStack) -> None:
    other_line = stack.put(record(stack.info, 41, line="line-2", camera="cam-3"))

    status, _ = api.review(other_line.image_id, {"label": "anomaly"})  # token is line-1's

    assert status == 404  # another line's image looks absent rather than forbidden
    item = stack.client("dynamodb").get_item(TableName=stack.info.table,
                                             Key={"image_id": {"S": other_line.image_id}})
    assert "review" not in item["Item"]


def test_a_camera_token_cannot_review(api: _Api, stack: ResultsStack) -> None:
    """A camera's token sits on the factory floor; a review is a training label
    (`export-dataset --reviewed`), so only a person's reviewer token records one."""
    stored = stack.put(record(stack.info, 42))
    _, camera = tokens.create_token(stack.info.tokens_table, "line-1", "cam-1")

    status, body = api.review(stored.image_id, {"label": "anomaly"}, token=camera)

    assert status == 403
    assert "only a reviewer token may review" in body["Message"]
    assert "--role reviewer" in body["Message"]
    item = stack.client("dynamodb").get_item(TableName=stack.info.table,
                                             Key={"image_id": {"S": stored.image_id}})
    assert "review" not in item["Item"]
    # the camera still reads its line's results
    assert api.call("get", f"/results/{stored.image_id}", token=camera)[0] == 200


@pytest.mark.parametrize("method,path,body", [
    ("post", "/uploads", {"line_id": "line-1", "camera_id": "cam-1"}),
    ("get", "/getsignedurl?assemblylineid=line-1&cameraid=cam-1", None),
])
def test_a_reviewer_token_uploads_nothing(api: _Api, stack: ResultsStack, method: str,
                                          path: str, body: Any) -> None:
    status, answer = api.call(method, path, body)

    assert status == 403
    assert answer["Message"] == ("a reviewer token cannot upload; cameras upload with "
                                 "their own tokens")


def test_a_reviewer_token_lists_its_lines_results(api: _Api, stack: ResultsStack) -> None:
    stored = stack.put(record(stack.info, 43))

    status, page = api.call("get", "/results?limit=100")

    assert status == 200, page
    assert stored.image_id in [r["image_id"] for r in page["results"]]
    assert api.call("get", "/results?line=line-2")[0] == 403


@pytest.mark.parametrize("stored_at, expected_at", [
    # written by a clock an hour ahead: the later review is stamped just after it
    ("2099-01-01T00:00:00.000+00:00", "2099-01-01T00:00:00.001+00:00"),
    # a valid time in another form than ours (typed in, or another tool's): its string
    # sorts after every one of ours, so an ordering by string refused each try
    ("2099-01-01T00:00:00Z", "2099-01-01T00:00:00.001+00:00"),
    ("2026-01-01T09:00:00+09:00", None),  # midnight UTC, long past: this clock's time
    # a stored time edited by hand into no time at all: replaced, at this clock's time
    ("yesterday", None),
])
def test_a_later_review_is_stamped_after_the_one_it_replaces(
        api: _Api, stack: ResultsStack, stored_at: str, expected_at: str | None) -> None:
    """The lake keeps each review as a row and takes an image's latest by `reviewed_at`:
    a review written by a clock that runs behind the one before made the lake pick the
    older label while the table held the newer."""
    stored = stack.put(record(stack.info, 44))
    stack.client("dynamodb").update_item(
        TableName=stack.info.table, Key={"image_id": {"S": stored.image_id}},
        UpdateExpression="SET review = :r", ExpressionAttributeValues={":r": {"M": {
            "label": {"S": "anomaly"}, "note": {"S": ""}, "reviewer": {"S": "fast-clock"},
            "reviewed_at": {"S": stored_at}}}})

    status, body = api.review(stored.image_id, {"label": "normal"})

    assert status == 200, body
    assert body["review"]["label"] == "normal"
    if expected_at:
        assert body["review"]["reviewed_at"] == expected_at
    else:
        from pipeline.records import parse_time, utc_now

        assert abs((parse_time(body["review"]["reviewed_at"]) - utc_now()).total_seconds()) < 60
