"""The upload client against real HTTP: its retries against moto's S3 server (a PUT URL
takes one write, so a retry must tell "my earlier send arrived" from "someone used my URL"),
and what it makes of servers that do not answer, or answer as LineSight's API would not,
against local sockets (a closed port, one that never answers, a fake API)."""

from __future__ import annotations

import http.server
import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline import uploads
from scripts import uploadImages
from scripts.uploadImages import (
    API,
    STORAGE,
    Ticket,
    UploadError,
    _request,
    failure_summary,
    upload_folder,
    upload_one,
)

BUCKET = "images"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(endpoint: str, aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Any:
    from pipeline import aws

    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    aws.reset()
    client = aws.client("s3")  # the API's own client: SigV4, as the URLs are signed
    client.create_bucket(Bucket=BUCKET)
    yield client
    aws.reset()


def ticket_for(s3: Any, send: Any = None) -> tuple[Ticket, str]:
    target = uploads.new_target("line-1", "cam-1", "frame-1", "image/jpeg")
    url = uploads.presigned_put(s3, BUCKET, target)

    def put(data: bytes) -> None:
        _request("PUT", url, data=data, headers=uploads.put_headers(target))

    return Ticket(target.upload_id, target.key, send(put) if send else put), target.key


def stored(s3: Any, key: str) -> bytes:
    return bytes(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def test_a_retry_after_a_lost_answer_counts_the_upload_as_done(s3: Any, tmp_path: Path
                                                                ) -> None:
    def answer_lost_once(put: Any) -> Any:
        calls = []

        def send(data: bytes) -> None:
            put(data)  # the image arrives ...
            calls.append(data)
            if len(calls) == 1:  # ... but the first answer never reaches the camera
                raise UploadError(0, "no answer from S3 (no answer in 10 s)", retryable=True,
                                  step=STORAGE, answer_lost=True)
        return send

    ticket, key = ticket_for(s3, answer_lost_once)
    image = tmp_path / "part.jpg"
    image.write_bytes(b"the image")
    upload = upload_one(lambda *_: ticket, "", "", image, "line-1", "cam-1", retries=2)
    assert (upload.ok, upload.attempts, upload.error) == (True, 2, "")
    assert stored(s3, key) == b"the image"


def test_a_url_someone_else_used_first_is_a_clear_failure(s3: Any, tmp_path: Path) -> None:
    ticket, key = ticket_for(s3)
    ticket.send(b"other bytes")
    image = tmp_path / "part.jpg"
    image.write_bytes(b"the image")
    upload = upload_one(lambda *_: ticket, "", "", image, "line-1", "cam-1", retries=2)
    assert (upload.ok, upload.status, upload.attempts) == (False, 412, 1)
    assert "already used" in upload.error
    assert stored(s3, key) == b"other bytes"


# --- servers that cannot be reached, or are not LineSight's -------------------------------

def folder_of(tmp_path: Path, count: int) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for n in range(count):
        (folder / f"part-{n}.jpg").write_bytes(b"\xff\xd8 part %d" % n)
    return folder


@pytest.fixture
def closed_port() -> str:
    """A local port nothing listens on: connection refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def silent_port(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A local port that accepts connections and never answers (with a tiny timeout)."""
    monkeypatch.setattr(uploadImages, "TIMEOUT_SECONDS", 0.2)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def unknown_host(monkeypatch: pytest.MonkeyPatch) -> str:
    def no_such_host(*_: Any, **__: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    return "http://api.invalid"


@pytest.mark.parametrize("server, why", [
    ("closed_port", "connection refused"),
    ("silent_port", "no answer in 0.2 s"),  # accepts, never answers
    ("unknown_host", "host not found"),  # DNS
])
def test_an_api_that_cannot_be_reached_stops_the_folder(
        server: str, why: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Every file would wait for the same: the first failures stop the folder, naming the
    URL, and the images never tried are reported as not sent, not left out."""
    url = request.getfixturevalue(server)

    sent = upload_folder(folder_of(tmp_path, 8), "cam-1", "line-1", url, "tok",
                         concurrency=2, retries=3, progress=False)

    assert len(sent) == 8 and not any(u.ok for u in sent)
    tried = [u for u in sent if u.attempts]
    assert 1 <= len(tried) <= 2  # what was in flight; none of them retried
    assert {(u.attempts, u.step, u.error) for u in tried} == {
        (1, API, f"no answer from the API at {url} ({why})")}
    assert all(u.skipped == tried[0].error for u in sent if not u.attempts)
    assert failure_summary(sent) == [
        f"{len(tried)} {'image' if len(tried) == 1 else 'images'} failed: {tried[0].error}",
        f"{8 - len(tried)} images not sent: the upload stopped after the failure above"]


class FakeServer:
    """A local HTTP server answering each path with a fixed (status, body, content type);
    a PUT goes to `/bucket/...`, as to S3."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, str, str]] = {}
        self.delays: dict[str, float] = {}  # seconds before answering, by path
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                path = self.path.split("?")[0]
                server.requests.append(f"{self.command} {path}")
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                time.sleep(server.delays.get(path, 0.0))
                status, body, kind = server.answers.get(
                    path, (404, "<html><title>404 Not Found</title></html>", "text/html"))
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body.encode())))
                self.end_headers()
                self.wfile.write(body.encode())

            do_GET = do_POST = do_PUT = _answer

            def log_message(self, *_: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def answer(self, path: str, status: int, body: Any, kind: str = "application/json"
               ) -> None:
        self.answers[path] = (status, body if isinstance(body, str) else json.dumps(body),
                              kind)


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.mark.parametrize("post, status, body, kind, what", [
    # a proxy's or captive portal's login page
    (False, 200, "<!DOCTYPE html><html><title>Sign in</title></html>", "text/html",
     "an HTML page titled 'Sign in'"),
    # another JSON service at a wrong --api-url
    (False, 200, {"status": "ok"}, "application/json", "JSON without uploadURL"),
    (True, 201, {"url": "http://x/bucket"}, "application/json",
     "JSON without fields, image_id, key"),
])
def test_an_answer_that_is_not_linesights_is_one_error_not_a_traceback(
        post: bool, status: int, body: Any, kind: str, what: str, fake: FakeServer,
        tmp_path: Path) -> None:
    route = "/uploads" if post else "/getsignedurl"
    fake.answer(route, status, body, kind)

    sent = upload_folder(folder_of(tmp_path, 5), "cam-1", "line-1", fake.url, "tok",
                         concurrency=1, progress=False, post=post)

    first, *rest = sent
    assert (first.ok, first.step, first.status, first.attempts) == (False, API, status, 1)
    assert first.error == (f"the answer from {fake.url}{route} is not LineSight's ({what}): "
                           "is the API URL right, or is a proxy or login page in the way?")
    assert [u.skipped for u in rest] == [first.error] * 4  # stopped: asked once, not 5 times
    assert len(fake.requests) == 1


S3_REFUSAL = ("<?xml version='1.0' encoding='UTF-8'?><Error><Code>SignatureDoesNotMatch</Code>"
              "<Message>The request signature we calculated does not match the signature you "
              "provided.</Message><RequestId>1</RequestId></Error>")


@pytest.mark.parametrize("api, put, step, code, said, error", [
    # no valid token: API Gateway's own words
    ((401, {"message": "Unauthorized"}), None, API, "", "Unauthorized",
     "the API refused the token (401): Unauthorized"),
    # a valid token used for another camera: the API says which one it may upload for
    ((403, {"Code": "ForbiddenError",
            "Message": "this token may upload for line 'line-2' camera 'cam-1' only"}),
     None, API, "ForbiddenError", "this token may upload for line 'line-2' camera 'cam-1' only",
     "the API refused the request (403): this token may upload for line 'line-2' camera "
     "'cam-1' only"),
    # a wrong URL or stage on API Gateway: not the token's fault
    ((403, {"message": "Missing Authentication Token"}), None, API, "",
     "Missing Authentication Token",
     "the API has no such route (403 Missing Authentication Token): is the API URL right, "
     "its stage included?"),
    # the API signed the URL, S3 refused it: not the token's fault either
    ((200, None), (403, S3_REFUSAL), STORAGE, "SignatureDoesNotMatch",
     "The request signature we calculated does not match the signature you provided.",
     "S3 refused the upload (403 SignatureDoesNotMatch): The request signature we "
     "calculated does not match the signature you provided."),
])
def test_a_refusal_names_its_step_and_keeps_the_servers_reason(
        api: tuple[int, Any], put: tuple[int, str] | None, step: str, code: str, said: str,
        error: str, fake: FakeServer, tmp_path: Path) -> None:
    status, body = api
    fake.answer("/getsignedurl", status, body or {
        "uploadURL": f"{fake.url}/bucket/line-1/cam-1/k.jpg", "image_id": "k",
        "photoFilename": "line-1/cam-1/k.jpg", "headers": {"Content-Type": "image/jpeg"}})
    if put:
        fake.answer("/bucket/line-1/cam-1/k.jpg", put[0], put[1], "application/xml")

    [sent] = upload_folder(folder_of(tmp_path, 1), "cam-1", "line-1", fake.url, "tok",
                           progress=False)

    assert (sent.ok, sent.status, sent.attempts) == (False, 403 if put else status, 1)
    assert (sent.step, sent.server_code, sent.server_message, sent.error) == (
        step, code, said, error)


def test_an_api_that_keeps_failing_stops_after_a_few_files_not_every_retry(
        fake: FakeServer, tmp_path: Path) -> None:
    """5xx is retried per file, but when files fail in a row after their retries the rest
    are not tried: the total is bounded, whatever the folder's size."""
    fake.answer("/getsignedurl", 503, {"Code": "ChaliceViewError",
                                       "Message": "cannot sign uploads: no images bucket"})

    sent = upload_folder(folder_of(tmp_path, 8), "cam-1", "line-1", fake.url, "tok",
                         concurrency=1, retries=1, progress=False)

    stop = uploadImages.FAILURES_IN_A_ROW_TO_STOP
    assert len(fake.requests) == stop * 2  # each of those files tried twice, then no more
    assert [u.attempts for u in sent] == [2] * stop + [0] * (8 - stop)
    assert failure_summary(sent) == [
        f"{stop} images failed: the API failed (503): cannot sign uploads: no images bucket",
        f"{8 - stop} images not sent: the upload stopped: {stop} images in a row failed "
        "after their retries"]


def test_the_size_asked_for_is_what_was_read_not_the_file_as_it_is_now(
        fake: FakeServer, tmp_path: Path) -> None:
    """A file that goes (or grows) between being read and the URL being asked for raised
    FileNotFoundError out of upload_one, which ended the whole folder without a summary."""
    fake.answer("/getsignedurl", 200, {"uploadURL": f"{fake.url}/bucket/k.jpg",
                                       "image_id": "k", "photoFilename": "k.jpg"})
    fake.answer("/bucket/k.jpg", 200, "")
    image = tmp_path / "part.jpg"
    image.write_bytes(b"\xff\xd8 part")

    def read_then_gone(base: str, token: str, path: Path, *rest: Any) -> Ticket:
        path.unlink()  # the camera's software moved it away meanwhile
        return uploadImages.request_put(base, token, path, *rest)

    upload = upload_one(read_then_gone, fake.url, "tok", image, "line-1", "cam-1", retries=0)
    assert (upload.ok, upload.error) == (True, "")


def test_an_unexpected_error_fails_its_own_file_and_the_folder_goes_on(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def upload_one_with_a_bug(request: Any, base: str, token: str, path: Path,
                              *_: Any) -> uploadImages.Upload:
        if path.name == "part-1.jpg":
            raise KeyError("a bug")
        return uploadImages.Upload(str(path), True, "id", "key", 200)

    monkeypatch.setattr(uploadImages, "upload_one", upload_one_with_a_bug)

    sent = upload_folder(folder_of(tmp_path, 3), "cam-1", "line-1", "http://x", "tok",
                         concurrency=1, progress=False)

    assert [(Path(u.file).name, u.ok, u.error) for u in sent] == [
        ("part-0.jpg", True, ""), ("part-1.jpg", False, "unexpected error: KeyError('a bug')"),
        ("part-2.jpg", True, "")]


@pytest.mark.parametrize("args, message", [
    (["--retries", "-1"], "argument --retries: -1 is below 0"),  # was AssertionError
    (["http://[::1", "tok", "0"], "'http://[::1' is not a URL: Invalid IPv6 URL"),
    (["http://127.0.0.1:1", "ls_tok\r", "0"], "the token holds a character that no HTTP"),
    (["http://127.0.0.1:1", "ls_tok\u20ac", "0"], "the token holds a character that no HTTP"),
])
def test_the_seed_scripts_mistakes_are_usage_errors(args: list[str], message: str,
                                                    tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    folder = folder_of(tmp_path, 1)
    positional = args if not args[0].startswith("--") else ["http://127.0.0.1:1", "tok", "0",
                                                            *args]
    with pytest.raises(SystemExit) as exit_:
        uploadImages.main([str(folder), "cam-1", "line-1", *positional])
    said = capsys.readouterr().err
    assert exit_.value.code == 2
    assert message in said
    assert "ls_tok" not in said  # the token is not repeated


def test_a_request_no_http_can_carry_stops_the_folder_not_a_traceback() -> None:
    with pytest.raises(UploadError) as refused:
        _request("GET", "http://127.0.0.1:9/getsignedurl", step=API,
                 headers={"Authorization": "ls_tok\r"})
    assert (refused.value.retryable, refused.value.stops_folder) == (False, True)
    assert str(refused.value).startswith("cannot send a request to the API: Invalid header")


# --- what a failure, a refusal, Ctrl-C and a pause leave behind ---------------------------

def put_answer(fake: FakeServer, url_path: str = "/bucket/k.jpg") -> None:
    fake.answer("/getsignedurl", 200, {"uploadURL": f"{fake.url}{url_path}", "image_id": "k",
                                       "photoFilename": "line-1/cam-1/k.jpg"})


def test_a_failure_after_a_send_keeps_its_image_id_and_says_it_may_have_arrived(
        fake: FakeServer, tmp_path: Path) -> None:
    """S3 stored the first PUT but its answer was lost, then answered 503 to the retries:
    the failure had no image id or key, so nothing said the photo might be judged, and
    sending it again judged it twice."""
    put_answer(fake)
    fake.answer("/bucket/k.jpg", 503, "<Error><Code>SlowDown</Code><Message>Reduce your "
                "request rate.</Message></Error>", "application/xml")

    [sent] = upload_folder(folder_of(tmp_path, 1), "cam-1", "line-1", fake.url, "tok",
                           retries=1, progress=False)

    assert (sent.ok, sent.image_id, sent.key, sent.may_have_arrived) == (
        False, "k", "line-1/cam-1/k.jpg", True)
    assert failure_summary([sent])[-1].startswith(
        "1 of the failed image may have arrived all the same (an answer was lost, or S3 "
        "failed): look up their image ids' results")


def test_a_refusal_by_the_api_is_not_an_arrival(fake: FakeServer, tmp_path: Path) -> None:
    put_answer(fake)
    fake.answer("/bucket/k.jpg", 403, S3_REFUSAL, "application/xml")
    [sent] = upload_folder(folder_of(tmp_path, 1), "cam-1", "line-1", fake.url, "tok",
                           progress=False)
    assert (sent.ok, sent.image_id, sent.may_have_arrived) == (False, "k", False)
    assert len(failure_summary([sent])) == 1


@pytest.mark.parametrize("status, body", [
    (401, {"message": "Unauthorized"}),  # a revoked token
    # a reviewer's token, or a camera's for another camera: the same for every file
    (403, {"Code": "ForbiddenError", "Message": "a reviewer token cannot upload"}),
])
def test_a_refused_token_stops_the_folder(fake: FakeServer, tmp_path: Path, status: int,
                                          body: Any) -> None:
    """Each file asked again: a revoked token on 1,000 files at 1 s apart was 1,000
    refusals over 17 minutes."""
    fake.answer("/getsignedurl", status, body)

    sent = upload_folder(folder_of(tmp_path, 5), "cam-1", "line-1", fake.url, "tok",
                         concurrency=1, progress=False)

    assert len(fake.requests) == 1
    assert [u.attempts for u in sent] == [1, 0, 0, 0, 0]
    assert failure_summary(sent)[1] == ("4 images not sent: the upload stopped after the "
                                        "failure above")


def test_s3s_request_timeout_is_retried(fake: FakeServer, tmp_path: Path) -> None:
    """S3 answers 400 RequestTimeout when an upload is too slow; botocore retries it."""
    put_answer(fake)
    fake.answer("/bucket/k.jpg", 400, "<Error><Code>RequestTimeout</Code><Message>Your "
                "socket connection to the server was not read from or written to within "
                "the timeout period.</Message></Error>", "application/xml")

    [sent] = upload_folder(folder_of(tmp_path, 1), "cam-1", "line-1", fake.url, "tok",
                           retries=1, progress=False)

    assert (sent.ok, sent.attempts, sent.server_code) == (False, 2, "RequestTimeout")
    assert fake.requests.count("PUT /bucket/k.jpg") == 2


def test_uploads_start_the_pause_apart_whichever_worker_runs_them(
        fake: FakeServer, tmp_path: Path) -> None:
    """The pause was spent queueing files, so busy workers then started queued uploads
    back to back, and the progress bar stood at 0 until every file was queued."""
    put_answer(fake)
    fake.answer("/bucket/k.jpg", 200, "")
    starts: list[float] = []
    real = uploadImages.request_put

    def timed(*args: Any) -> Ticket:
        starts.append(time.monotonic())
        return real(*args)

    folder = uploadImages.FolderState(0.2)
    sent = [upload_one(timed, fake.url, "tok", image, "line-1", "cam-1", 0, folder)
            for image in sorted(folder_of(tmp_path, 3).iterdir())]
    assert all(u.ok for u in sent)
    assert len(starts) == 3
    assert all(later - earlier >= 0.19 for earlier, later in itertools.pairwise(starts))


@pytest.mark.parametrize("delay", ["inf", "1e400", "nan", "-1", "soon", "3601"])
def test_a_pause_that_is_not_a_number_of_seconds_is_a_usage_error(
        delay: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """inf stopped the folder after its first file with an OverflowError; NaN and -1
    were read as no pause."""
    with pytest.raises(SystemExit) as exit_:
        uploadImages.main([str(folder_of(tmp_path, 1)), "cam-1", "line-1",
                           "http://127.0.0.1:1", "tok", delay])
    assert exit_.value.code == 2
    assert "argument time_between_requests" in capsys.readouterr().err


@pytest.mark.parametrize("where, said", [
    ("folder", "is a folder; give a file name"),
    ("under_a_file", "is a file, not a folder"),
])
def test_a_manifest_that_cannot_be_written_is_refused_before_any_upload(
        fake: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str,
        said: str) -> None:
    """It was found after every photo went: their ids lost, a re-run sent them again."""
    images = folder_of(tmp_path, 2)
    manifest = images if where == "folder" else images / "part-0.jpg" / "out.json"
    with pytest.raises(SystemExit) as exit_:
        uploadImages.main([str(images), "cam-1", "line-1", fake.url, "tok", "0",
                           "--manifest-out", str(manifest)])
    assert exit_.value.code == 2
    assert said in capsys.readouterr().err
    assert fake.requests == []


def test_a_folder_with_nothing_to_send_is_a_usage_error_and_others_are_named(
        fake: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    with pytest.raises(SystemExit) as exit_:
        uploadImages.main([str(tmp_path / "empty"), "cam-1", "line-1", fake.url, "tok", "0"])
    assert exit_.value.code == 2
    assert "has no .jpg, .jpeg or .png files at its top level" in capsys.readouterr().err

    put_answer(fake)
    fake.answer("/bucket/k.jpg", 200, "")
    images = folder_of(tmp_path, 1)
    (images / "dated").mkdir()
    (images / "part.tif").write_bytes(b"II*\x00")
    assert uploadImages.main([str(images), "cam-1", "line-1", fake.url, "tok", "0",
                              "--no-progress"]) == 0
    assert "2 other entries in" in capsys.readouterr().err


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_stops_the_folder_and_still_reports_and_writes_the_manifest(
        fake: FakeServer, tmp_path: Path, presses: int) -> None:
    """Ctrl-C left every queued file to be uploaded all the same, then ended in a
    traceback without a summary or a manifest: the ids of what went were lost. A second
    Ctrl-C while the uploads in flight end is ignored, for the same reason."""
    import os
    import signal

    put_answer(fake)
    fake.answer("/bucket/k.jpg", 200, "")
    fake.delays["/bucket/k.jpg"] = 0.6  # each send is in flight a while
    manifest = tmp_path / "out" / "manifest.json"
    timers = [threading.Timer(0.3 + 0.2 * press, os.kill, (os.getpid(), signal.SIGINT))
              for press in range(presses)]  # a real Ctrl-C, while the main thread waits
    for timer in timers:
        timer.start()
    try:
        code = uploadImages.main([str(folder_of(tmp_path, 8)), "cam-1", "line-1", fake.url,
                                  "tok", "0", "--concurrency", "2", "--no-progress",
                                  "--manifest-out", str(manifest)])
    finally:
        for timer in timers:
            timer.cancel()
    written = json.loads(manifest.read_text())
    sent = [u for u in written if u["ok"]]
    assert code == 130
    assert len(written) == 8 and len(sent) <= 2  # those in flight, then no more
    assert {u["skipped"] for u in written if not u["ok"]} == {uploadImages.INTERRUPTED}
    assert fake.requests.count("PUT /bucket/k.jpg") == len(sent)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back


def test_ctrl_c_after_the_last_upload_started_still_exits_130(fake: FakeServer,
                                                                tmp_path: Path) -> None:
    """Nothing was left to mark as not sent, so it exited 0 as if never stopped."""
    import os
    import signal

    put_answer(fake)
    fake.answer("/bucket/k.jpg", 200, "")
    fake.delays["/bucket/k.jpg"] = 0.6
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        code = uploadImages.main([str(folder_of(tmp_path, 2)), "cam-1", "line-1", fake.url,
                                  "tok", "0", "--concurrency", "2", "--no-progress"])
    finally:
        timer.cancel()
    assert code == 130
