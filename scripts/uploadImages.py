"""Upload a folder of images through LineSight's API, like a line camera would.

Keeps the seed's positional arguments:

    python scripts/uploadImages.py DIRECTORY CAMERA_ID ASSEMBLY_LINE_ID API_ENDPOINT \
        AUTH_TOKEN TIME_BETWEEN_REQUESTS [--concurrency N] [--retries N] [--no-progress]

API_ENDPOINT is the API's base URL or its full `/getsignedurl` URL. For each image it asks
for a presigned upload (GET /getsignedurl, or POST /uploads with --post) and sends the
file. It prints a summary and, with --manifest-out, writes which file became which
image id, so callers can wait for the results.

A failed upload records the step that failed (asking the API, or sending to S3) and the
server's own reason; once the API gave it an image id and key, those too, and whether the
image may have arrived all the same (an answer lost, or S3 failing after a send). When the
rest would fail the same way (the API or S3 cannot be reached, the token or its scope is
refused, the answer is not LineSight's, files keep failing after their retries) the
folder stops, and the images it did not try are reported as not sent (`FolderState`).
Ctrl-C stops it too: what was sent is reported and written to the manifest, exit code 130.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import mimetypes
import os
import re
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

EXTENSIONS = (".jpg", ".jpeg", ".png")
# Per connect and per read: an API that accepts connections but never answers costs 10 s.
TIMEOUT_SECONDS = 10.0
# Files that failed in a row after their retries (5xx, 429, lost answers) before the folder
# stops: past that the API or S3 is failing, not one image, and retrying every file would
# take (retries + 1) requests and their backoff for each.
FAILURES_IN_A_ROW_TO_STOP = 3
# The step a failed upload stopped at.
API = "api"  # asking the API for an upload URL
STORAGE = "storage"  # sending the image to S3 with that URL
INTERRUPTED = "interrupted (Ctrl-C)"
console = Console(stderr=True)


@dataclass(frozen=True)
class Upload:
    file: str
    ok: bool
    image_id: str = ""
    key: str = ""
    status: int = 0
    error: str = ""
    attempts: int = 0
    started_at: float = 0.0
    finished_at: float = 0.0
    step: str = ""  # API or STORAGE: where a failed upload stopped
    server_code: str = ""  # the server's own code (S3's <Code>, the API's "Code")
    server_message: str = ""  # and its own words, e.g. why it refused the token
    skipped: str = ""  # why the image was never sent: the reason the folder stopped
    # failed, yet a send may have stored it (its answer lost, or S3 failed): look for its
    # image id's result before sending the file again, or it is judged twice
    may_have_arrived: bool = False


class UploadError(Exception):
    """A request refused or not answered, with the step it belongs to and the server's own
    code and message, so the caller can tell a refused token from a refused signature."""

    def __init__(self, status: int, message: str, retryable: bool, *, step: str = "",
                 code: str = "", server_message: str = "", answer_lost: bool = False,
                 stops_folder: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.step = step
        self.code = code
        self.server_message = server_message
        # The request went out but its answer did not come back (it may have arrived).
        self.answer_lost = answer_lost
        # The same would happen to every file: not worth trying the rest.
        self.stops_folder = stops_folder


def _request(method: str, url: str, *, step: str = "", headers: dict[str, str] | None = None,
             data: bytes | None = None, timeout: float | None = None) -> tuple[int, bytes]:
    timeout = TIMEOUT_SECONDS if timeout is None else timeout
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except ValueError as exc:  # a URL or header no request can carry: the same every time
        raise UploadError(0, f"cannot send a request to {_SERVER.get(step, method)}: {exc}",
                          retryable=False, step=step, stops_folder=True) from None
    except urllib.error.HTTPError as exc:
        try:
            body = exc.read()
        except (OSError, http.client.HTTPException):
            body = b""
        code, said = server_reason(body)
        raise UploadError(exc.code, _refusal(method, step, exc.code, code, said),
                          # 409: a conditional PUT met one of ours still in flight;
                          # RequestTimeout: S3 gave up on a slow upload (botocore retries it)
                          retryable=exc.code >= 500 or exc.code in (409, 429)
                          or code == "RequestTimeout",
                          step=step, code=code, server_message=said,
                          # the token, its role or scope, or the route: so for every file
                          stops_folder=step == API and exc.code in (401, 403)) from None
    except (OSError, http.client.HTTPException) as exc:
        # urllib wraps what stops the request going out (refused, no such host, no
        # connection in time) in URLError; what comes after it was sent is raised as is.
        lost = not isinstance(exc, urllib.error.URLError)
        cause = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise UploadError(0, f"no answer from {_SERVER.get(step, method)} at {_origin(url)} "
                             f"({_why(cause, timeout)})", retryable=True, step=step,
                          answer_lost=lost) from None


_SERVER = {API: "the API", STORAGE: "S3"}


def _origin(url: str) -> str:
    """
    >>> _origin("https://bucket.s3.amazonaws.com/line-1/k.jpg?X-Amz-Signature=abc")
    'https://bucket.s3.amazonaws.com'
    """
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _why(cause: object, timeout: float) -> str:
    """
    >>> _why(ConnectionRefusedError(111, "Connection refused"), 10)
    'connection refused'
    >>> _why(TimeoutError("timed out"), 10)
    'no answer in 10 s'
    """
    if isinstance(cause, TimeoutError):  # socket.timeout is TimeoutError
        return f"no answer in {timeout:g} s"
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    if isinstance(cause, socket.gaierror):
        return "host not found"
    return str(cause) or type(cause).__name__


def _refusal(method: str, step: str, status: int, code: str, said: str) -> str:
    """What a refusal means, in the words of the step it stopped.

    >>> _refusal("GET", API, 401, "", "Unauthorized")
    'the API refused the token (401): Unauthorized'
    >>> _refusal("PUT", STORAGE, 403, "SignatureDoesNotMatch", "The request signature ...")
    'S3 refused the upload (403 SignatureDoesNotMatch): The request signature ...'
    """
    # The API's codes are its framework's class names (ForbiddenError): its status says as much.
    answered = f"({status} {code})" if code and step != API else f"({status})"
    if step == API and said == "Missing Authentication Token":  # API Gateway: no such route
        return (f"the API has no such route ({status} {said}): is the API URL right, its "
                "stage included?")
    if step == API and status == 401:
        return f"the API refused the token {answered}: {said}"
    if step == API:
        verb = "failed" if status >= 500 else "refused the request"
        return f"the API {verb} {answered}: {said}"
    if step == STORAGE:
        verb = "failed" if status >= 500 else "refused the upload"
        return f"S3 {verb} {answered}: {said}"
    return f"{method} {answered}: {said}"


_TAG = r"<{0}>\s*(.*?)\s*</{0}>"


def server_reason(body: bytes) -> tuple[str, str]:
    """The code and message a server gave with its answer: the API's JSON (`Code` and
    `Message`, or API Gateway's own `message`), S3's XML `<Code>` and `<Message>`, else
    what kind of page it is.

    >>> server_reason(b'{"Code": "ForbiddenError", "Message": "for line-2 only"}')
    ('ForbiddenError', 'for line-2 only')
    >>> server_reason(b'{"message":"Missing Authentication Token"}')
    ('', 'Missing Authentication Token')
    >>> server_reason(b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message>"
    ...               b"</Error>")
    ('AccessDenied', 'Access Denied')
    >>> server_reason(b"<!DOCTYPE html><html><title> Sign in </title><body>...</html>")
    ('', "an HTML page titled 'Sign in'")
    >>> server_reason(b"")
    ('', 'no reason given')
    """
    text = body[:20_000].decode(errors="replace").strip()
    try:
        answer = json.loads(text)
    except ValueError:
        answer = None
    if isinstance(answer, dict):
        code = answer.get("Code") or answer.get("code") or ""
        said = answer.get("Message") or answer.get("message") or ""
        if code or said:
            return str(code), str(said)[:300]
    if text.startswith("<") and re.search(_TAG.format("Code"), text, re.S):
        code = re.search(_TAG.format("Code"), text, re.S)
        said = re.search(_TAG.format("Message"), text, re.S)
        return (code.group(1) if code else ""), (said.group(1)[:300] if said else "")
    if re.match(r"<(!doctype html|html)", text, re.I):
        title = re.search(r"<title[^>]*>\s*(.*?)\s*</title>", text, re.S | re.I)
        return "", f"an HTML page titled {title.group(1)[:100]!r}" if title else "an HTML page"
    return "", " ".join(text[:300].split()) or "no reason given"


def url_problem(url: str) -> str:
    """Why `url` cannot be an API's or AWS endpoint's address, or "" (urllib and botocore
    would raise a bare ValueError, for every request).

    >>> url_problem("http://127.0.0.1:5000"), url_problem("127.0.0.1:5000")
    ('', "'127.0.0.1:5000' is not a URL: give the scheme, e.g. http://127.0.0.1:5000")
    >>> url_problem("http://[::1")
    "'http://[::1' is not a URL: Invalid IPv6 URL"
    """
    try:
        parsed = urllib.parse.urlsplit(url)
    except ValueError as exc:
        return f"{url!r} is not a URL: {exc}"
    try:
        parsed.port  # noqa: B018 - urllib checks the port's range when asked for it
    except ValueError:
        return f"{url!r} has a port outside 0-65535"
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return f"{url!r} is not a URL: give the scheme, e.g. http://127.0.0.1:5000"
    return ""


def token_problem(token: str) -> str:
    """Why `token` cannot be sent in a header, or "" (the token itself is not repeated).

    >>> token_problem("ls_0123_abc"), token_problem("ls_0123_abc\\r")[:40]
    ('', 'the token holds a character that no HTTP')
    """
    if token.isascii() and token.isprintable():
        return ""
    return ("the token holds a character that no HTTP header can carry (a line ending or "
            "another non-printing or non-ASCII character, copied with it from a file?)")


def api_base(endpoint: str) -> str:
    """
    >>> api_base("https://x.example/Prod/getsignedurl")
    'https://x.example/Prod'
    >>> api_base("http://127.0.0.1:8000/")
    'http://127.0.0.1:8000'
    """
    endpoint = endpoint.rstrip("/")
    return endpoint.removesuffix("/getsignedurl")


def _content_type(path: Path) -> str:
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


@dataclass(frozen=True)
class Ticket:
    """One presigned upload: where the file goes, and how to send it there."""

    image_id: str
    key: str
    send: Callable[[bytes], None]


def request_put(base: str, token: str, path: Path, line: str, camera: str,
                size: int) -> Ticket:
    """A presigned PUT for `size` bytes (the length of what was read, not of the file as
    it is now: a file that changed or went meanwhile would be refused, or raise)."""
    params = urllib.parse.urlencode({"cameraid": camera, "assemblylineid": line,
                                     "imageid": _image_id(path),
                                     "contenttype": _upload_content_type(path),
                                     "contentlength": size})
    url = f"{base}/getsignedurl"
    status, body = _request("GET", f"{url}?{params}", step=API,
                            headers={"Authorization": token})
    answer = _linesight_answer(url, status, body, {"uploadURL": str})
    headers = answer.get("headers")
    if not isinstance(headers, dict):
        headers = {"Content-Type": _upload_content_type(path)}

    def send(data: bytes) -> None:
        _request("PUT", answer["uploadURL"], step=STORAGE, data=data, headers=headers)

    return Ticket(str(answer.get("image_id", "")), str(answer.get("photoFilename", "")), send)


def request_post(base: str, token: str, path: Path, line: str, camera: str,
                 size: int) -> Ticket:
    """A presigned POST form (its policy bounds the size: `size` is not sent)."""
    payload = json.dumps({"line_id": line, "camera_id": camera, "image_id": _image_id(path),
                          "content_type": _upload_content_type(path)}).encode()
    url = f"{base}/uploads"
    status, body = _request("POST", url, step=API, data=payload,
                            headers={"Authorization": token, "Content-Type": "application/json"})
    answer = _linesight_answer(url, status, body, {"url": str, "fields": dict,
                                                   "image_id": str, "key": str})
    fields = {str(name): str(value) for name, value in answer["fields"].items()}
    content_type = fields.get("Content-Type", _upload_content_type(path))

    def send(data: bytes) -> None:
        boundary = uuid.uuid4().hex
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                 f"{value}\r\n".encode() for name, value in fields.items()]
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                     f'filename="{path.name}"\r\nContent-Type: '
                     f'{content_type}\r\n\r\n'.encode() + data + b"\r\n")
        parts.append(f"--{boundary}--\r\n".encode())
        _request("POST", answer["url"], step=STORAGE, data=b"".join(parts),
                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})

    return Ticket(answer["image_id"], answer["key"], send)


def _linesight_answer(url: str, status: int, body: bytes, needed: dict[str, type]
                      ) -> dict[str, Any]:
    """The API's JSON answer, checked for what an upload needs. Anything else (a proxy's or
    login page, another service at a wrong API URL) would answer every file the same: an
    UploadError that stops the folder, not a JSONDecodeError or KeyError.

    >>> try:
    ...     _linesight_answer("http://x/getsignedurl", 200, b'{"id": 1}', {"uploadURL": str})
    ... except UploadError as exc:
    ...     print(exc)  # doctest: +ELLIPSIS
    the answer from http://x/getsignedurl is not LineSight's (JSON without uploadURL): ...
    """
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    missing = ([name for name, kind in needed.items() if not isinstance(answer.get(name), kind)]
               if isinstance(answer, dict) else None)
    if isinstance(answer, dict) and not missing:
        return answer
    what = (f"JSON without {', '.join(missing)}" if missing else
            "JSON, not an object" if answer is not None else server_reason(body)[1])
    raise UploadError(status, f"the answer from {url} is not LineSight's ({what}): is the API "
                              "URL right, or is a proxy or login page in the way?",
                      retryable=False, step=API, server_message=what, stops_folder=True)


def _upload_content_type(path: Path) -> str:
    # The declared type follows the file name; the detector checks the real bytes.
    return "image/png" if path.suffix.lower() == ".png" else "image/jpeg"


def _image_id(path: Path) -> str:
    """The camera's own id for a file, in the API's alphabet (A-Z a-z 0-9 _ - .).

    >>> [_image_id(Path(n)) for n in ("_DSC0001.JPG", "a..b.jpg", "ü-1.jpg", "...png")]
    ['DSC0001', 'a.b', 'x-1', 'image']
    """
    stem = "".join(ch if (ch.isascii() and ch.isalnum()) or ch in "_-." else "x"
                   for ch in path.stem)
    while ".." in stem:
        stem = stem.replace("..", ".")
    stem = stem.lstrip("_-.")[:64].rstrip(".")
    return stem or "image"


class FolderState:
    """What the uploads of one folder learn together: which steps' servers have answered,
    how many files in a row failed after their retries, and why the folder stopped.

    A server that has never answered and cannot be reached (refused, no such host, or, for
    the API, no answer in time) stops the folder at once: every file would wait for the
    same. So does an answer that is not LineSight's, and FAILURES_IN_A_ROW_TO_STOP files
    failing in a row after their retries. Images never tried are reported as not sent."""

    def __init__(self, delay: float = 0.0) -> None:
        self._lock = threading.Lock()
        self._answered: set[str] = set()
        self._failures_in_a_row = 0
        self._stop = threading.Event()
        self.stopped = ""  # why, once stopped
        self.delay = delay  # seconds between two uploads' starts
        self._next_start = 0.0  # on the monotonic clock

    def answered(self, step: str) -> None:
        with self._lock:
            self._answered.add(step)

    def succeeded(self) -> None:
        with self._lock:
            self._answered.update((API, STORAGE))
            self._failures_in_a_row = 0

    def failed(self, exc: UploadError) -> None:
        """Learn from one request's failure; stop the folder when the rest would fail too."""
        with self._lock:
            if exc.status:
                self._answered.add(exc.step)
            unreachable = (exc.status == 0 and exc.step in (API, STORAGE)
                           and exc.step not in self._answered
                           # a PUT whose answer was lost may have arrived: its retry tells
                           and (exc.step == API or not exc.answer_lost))
        if exc.stops_folder or unreachable:
            self.stop(str(exc))

    def gave_up(self) -> None:
        """One file failed after its retries."""
        with self._lock:
            self._failures_in_a_row += 1
            in_a_row = self._failures_in_a_row
        if in_a_row >= FAILURES_IN_A_ROW_TO_STOP:
            self.stop(f"{in_a_row} images in a row failed after their retries")

    def stop(self, reason: str) -> None:
        with self._lock:
            if not self.stopped:
                self.stopped = reason
        self._stop.set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True if the folder stopped meanwhile."""
        return self._stop.wait(seconds)

    def take_turn(self) -> bool:
        """Wait until this upload may start, `delay` after the one before, whichever
        worker runs it; True if the folder stopped meanwhile."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next_start)
            self._next_start = start + self.delay
        return self.wait(start - now) if start > now else bool(self.stopped)


def upload_one(request: Callable[..., Ticket], base: str, token: str, path: Path,
               line: str, camera: str, retries: int, folder: FolderState | None = None
               ) -> Upload:
    """Ask for one presigned upload, then send the file, retrying 5xx, 409, 429 and
    network errors (unless `folder` stops meanwhile).

    A retry re-sends to the same URL. A PUT URL refuses a second write to its key (412,
    `If-None-Match: *`), so a 412 after an earlier send of ours means that send arrived
    (its answer was lost); on the first send it means someone else used the URL first."""
    folder = folder or FolderState()
    if folder.take_turn():
        return not_sent(path, folder.stopped)
    started = time.time()
    ticket: Ticket | None = None
    try:
        data = path.read_bytes()
    except OSError as exc:
        return Upload(str(path), False, error=f"cannot read {path}: {exc.strerror or exc}",
                      started_at=started, finished_at=time.time())
    sent = 0
    uncertain = False  # a send whose answer was lost, or that S3 failed: it may be stored
    for attempt in range(1, retries + 2):
        try:
            if ticket is None:
                ticket = request(base, token, path, line, camera, len(data))
                folder.answered(API)
                if folder.stopped and not sent:  # e.g. Ctrl-C while asking: nothing went
                    return not_sent(path, folder.stopped)
            sent += 1
            try:
                ticket.send(data)
            except UploadError as exc:
                if exc.status != 412:
                    raise
                if sent == 1:
                    raise UploadError(412, "the upload URL was already used: S3 keeps the "
                                      "image sent first", retryable=False, step=STORAGE,
                                      code=exc.code, server_message=exc.server_message
                                      ) from None
            folder.succeeded()
            return Upload(str(path), True, ticket.image_id, ticket.key, 200, "", attempt,
                          started, time.time())
        except UploadError as exc:
            folder.failed(exc)
            uncertain = uncertain or (exc.step == STORAGE and (exc.answer_lost
                                                               or exc.status >= 500))
            last = not exc.retryable or attempt > retries
            if exc.retryable and last:
                folder.gave_up()
            if last or folder.stopped or folder.wait(min(0.25 * 2 ** (attempt - 1), 4.0)):
                return Upload(str(path), False, ticket.image_id if ticket else "",
                              ticket.key if ticket else "", status=exc.status,
                              error=str(exc), attempts=attempt, started_at=started,
                              finished_at=time.time(), step=exc.step, server_code=exc.code,
                              server_message=exc.server_message, may_have_arrived=uncertain)
    raise AssertionError("unreachable")


def not_sent(path: Path, reason: str) -> Upload:
    """An image the folder stopped before trying."""
    return Upload(str(path), False, error=f"not sent: {reason}", skipped=reason)


def images_in(directory: Path) -> tuple[list[Path], str]:
    """The images an upload sends from `directory` (its .jpg, .jpeg and .png files, by
    name), and a note on the other entries it leaves out (subfolders, other files), or ""."""
    entries = list(directory.iterdir())
    files = sorted(p for p in entries if p.is_file() and p.suffix.lower() in EXTENSIONS)
    others = len(entries) - len(files)
    note = (f"{others} other {'entry' if others == 1 else 'entries'} in {directory} left out "
            "(only its .jpg, .jpeg and .png files are sent)") if others else ""
    return files, note


NO_IMAGES = "has no .jpg, .jpeg or .png files at its top level"


def upload_folder(directory: Path, camera: str, line: str, endpoint: str, token: str,
                  concurrency: int = 4, retries: int = 3, progress: bool = True,
                  post: bool = False, folder: FolderState | None = None) -> list[Upload]:
    """One Upload per image in `directory`, sent or not (see FolderState for when it stops
    early). Uploads start `folder.delay` seconds apart (none by default). Ctrl-C stops
    the folder (`folder.stopped` is then INTERRUPTED): the requests in flight end, the rest
    are not sent, and all are returned; a second Ctrl-C meanwhile is ignored, so that
    what went is still reported."""
    files, _ = images_in(directory)
    base = api_base(endpoint)
    send = request_post if post else request_put
    folder = folder or FolderState()
    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                  disable=not progress) as bar:
        task = bar.add_task(f"{line}/{camera}", total=len(files))
        pool = ThreadPoolExecutor(max_workers=max(1, concurrency))
        futures = {pool.submit(upload_one, send, base, token, path, line, camera, retries,
                               folder): path for path in files}
        for future in futures:  # as each ends, whichever thread ends it
            future.add_done_callback(lambda _: bar.advance(task))
        try:
            for _ in as_completed(futures):
                pass
        except KeyboardInterrupt:
            folder.stop(INTERRUPTED)  # those waiting for their turn or a retry give up
            pool.shutdown(wait=False, cancel_futures=True)
            console.print("stopping: waiting for the requests in flight (each gives up "
                          f"after {TIMEOUT_SECONDS:g} s without an answer)...", markup=False,
                          highlight=False)
            with _sigint_ignored():
                pool.shutdown(wait=True)
        finally:
            pool.shutdown(wait=True)
    return sorted((_outcome(future, path) for future, path in futures.items()),
                  key=lambda upload: upload.file)


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ctrl-C does nothing meanwhile (only the main thread can set a signal's handler)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _outcome(future: Future[Upload], path: Path) -> Upload:
    if future.cancelled():
        return not_sent(path, INTERRUPTED)
    try:
        return future.result()
    except Exception as exc:  # a bug of ours: that file fails, the rest go on
        return Upload(str(path), False, error=f"unexpected error: {exc!r}")


def failure_summary(uploads: list[Upload]) -> list[str]:
    """One line per distinct reason uploads failed, with how many, most first; then the
    images never sent because the folder stopped. Plain text (it quotes servers' words).

    >>> refused = "the API refused the token (401): Unauthorized"
    >>> for line in failure_summary([Upload("a.jpg", False, error=refused),
    ...                              Upload("b.jpg", False, error=refused),
    ...                              not_sent(Path("c.jpg"), refused), Upload("d.jpg", True)]):
    ...     print(line)
    2 images failed: the API refused the token (401): Unauthorized
    1 image not sent: the upload stopped after the failure above
    """
    tried = Counter(u.error for u in uploads if not u.ok and not u.skipped)
    lines = [f"{count} {_images(count)} failed: {error}" for error, count in tried.most_common()]
    skipped = [u.skipped for u in uploads if not u.ok and u.skipped]
    if skipped:
        why = ("the upload stopped after the failure above" if skipped[0] in tried else
               f"the upload stopped: {skipped[0]}")
        lines.append(f"{len(skipped)} {_images(len(skipped))} not sent: {why}")
    if maybe := sum(u.may_have_arrived for u in uploads if not u.ok):
        lines.append(f"{maybe} of the failed {_images(maybe)} may have arrived all the same "
                     "(an answer was lost, or S3 failed): look up their image ids' results "
                     "before sending them again, or they are judged twice")
    return lines


def _images(count: int) -> str:
    return "image" if count == 1 else "images"


def _at_least_zero(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value} is below 0")
    return number


def _seconds(value: str) -> float:
    """A pause between uploads: 0 to an hour (inf stopped the folder with an
    OverflowError, and NaN or a negative number were read as none)."""
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not (math.isfinite(seconds) and 0 <= seconds <= 3600):
        raise argparse.ArgumentTypeError(f"{value} is not between 0 and 3600 seconds")
    return seconds


def manifest_problem(path: Path) -> str:
    """Why the manifest cannot be written at `path`, or "": checked before any upload, so
    that the image ids are not lost after every photo went (a re-run would send them all
    again)."""
    if path.is_dir():
        return f"--manifest-out {path} is a folder; give a file name"
    folder = next((p for p in (path.parent, *path.parent.parents) if p.exists()), Path("."))
    if not folder.is_dir():
        return f"--manifest-out {path}: {folder} is a file, not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"--manifest-out {path}: cannot write in {folder}"
    return ""


def write_manifest(path: Path, uploads: list[Upload]) -> None:
    """Whole or not at all: written beside its place, then renamed in."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staged.write_text(json.dumps([asdict(u) for u in uploads], indent=2))
    os.replace(staged, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Upload a folder of images through the LineSight API.",
        epilog="example: python scripts/uploadImages.py resources/samples/test/normal "
               "cam-1 line-1 http://127.0.0.1:8000 $TOKEN 0 --concurrency 8")
    parser.add_argument("directory", type=Path, help="folder of .jpg/.jpeg/.png images")
    parser.add_argument("camera_id")
    parser.add_argument("assembly_line_id")
    parser.add_argument("api_endpoint", help="API base URL or its /getsignedurl URL")
    parser.add_argument("auth_token")
    parser.add_argument("time_between_requests", type=_seconds,
                        help="seconds between starting two uploads (0 for none, at most 3600)")
    parser.add_argument("--concurrency", type=int, default=4, help="parallel uploads (4)")
    parser.add_argument("--retries", type=_at_least_zero, default=3,
                        help="retries of a failed upload on 5xx, 409, 429, S3's RequestTimeout "
                             "and network errors (3)")
    parser.add_argument("--post", action="store_true",
                        help="use POST /uploads (presigned POST) instead of GET /getsignedurl")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--manifest-out", type=Path,
                        help="write a JSON list of the uploads (file, image_id, key, ok)")
    args = parser.parse_args(argv)
    if not args.directory.is_dir():
        parser.error(f"{args.directory} is not a folder")
    problem = (url_problem(args.api_endpoint) or token_problem(args.auth_token)
               or (manifest_problem(args.manifest_out) if args.manifest_out else ""))
    if problem:
        parser.error(problem)
    files, left_out = images_in(args.directory)
    if not files:
        parser.error(f"{args.directory} {NO_IMAGES}")
    if left_out:
        console.print(left_out, markup=False, highlight=False)
    folder = FolderState(args.time_between_requests)
    uploads = upload_folder(args.directory, args.camera_id, args.assembly_line_id,
                            args.api_endpoint, args.auth_token, concurrency=args.concurrency,
                            retries=args.retries, progress=not args.no_progress,
                            post=args.post, folder=folder)
    ok = sum(upload.ok for upload in uploads)
    for line in failure_summary(uploads):
        console.print(line, markup=False, highlight=False)
    console.print(f"{ok} of {len(uploads)} files uploaded for line {args.assembly_line_id} "
                  f"camera {args.camera_id}")
    if args.manifest_out:
        write_manifest(args.manifest_out, uploads)
    if folder.stopped == INTERRUPTED:
        return 130  # as a shell reports a command Ctrl-C stopped, whatever went
    return 0 if ok == len(uploads) else 1


if __name__ == "__main__":
    sys.exit(main())
