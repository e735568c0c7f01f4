"""Upload a folder of images through LineSight's API, like a line camera would.

Keeps the seed's positional arguments:

    python scripts/uploadImages.py DIRECTORY CAMERA_ID ASSEMBLY_LINE_ID API_ENDPOINT \
        AUTH_TOKEN TIME_BETWEEN_REQUESTS [--concurrency N] [--retries N] [--no-progress]

API_ENDPOINT is the API's base URL or its full `/getsignedurl` URL. For each image it asks
for a presigned upload (GET /getsignedurl, or POST /uploads with --post) and sends the
file. It prints a summary and, with --manifest-out, writes which file became which
image id, so callers can wait for the results.
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

EXTENSIONS = (".jpg", ".jpeg", ".png")
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


class UploadError(Exception):
    def __init__(self, status: int, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


def _request(method: str, url: str, *, headers: dict[str, str] | None = None,
             data: bytes | None = None, timeout: float = 30.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
        raise UploadError(exc.code, f"{method} {exc.code}: {body[:300].decode(errors='replace')}",
                          # 409: a conditional PUT met one of ours still in flight
                          retryable=exc.code >= 500 or exc.code in (409, 429)) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise UploadError(0, f"{method} failed: {exc}", retryable=True) from None


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


def request_put(base: str, token: str, path: Path, line: str, camera: str) -> Ticket:
    params = urllib.parse.urlencode({"cameraid": camera, "assemblylineid": line,
                                     "imageid": _image_id(path),
                                     "contenttype": _upload_content_type(path),
                                     "contentlength": path.stat().st_size})
    _, body = _request("GET", f"{base}/getsignedurl?{params}",
                       headers={"Authorization": token})
    answer = json.loads(body)
    headers = answer.get("headers") or {"Content-Type": _upload_content_type(path)}

    def send(data: bytes) -> None:
        _request("PUT", answer["uploadURL"], data=data, headers=headers)

    return Ticket(answer.get("image_id", ""), answer.get("photoFilename", ""), send)


def request_post(base: str, token: str, path: Path, line: str, camera: str) -> Ticket:
    payload = json.dumps({"line_id": line, "camera_id": camera, "image_id": _image_id(path),
                          "content_type": _upload_content_type(path)}).encode()
    _, body = _request("POST", f"{base}/uploads", data=payload,
                       headers={"Authorization": token, "Content-Type": "application/json"})
    answer = json.loads(body)

    def send(data: bytes) -> None:
        boundary = uuid.uuid4().hex
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                 f"{value}\r\n".encode() for name, value in answer["fields"].items()]
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                     f'filename="{path.name}"\r\nContent-Type: '
                     f'{answer["fields"]["Content-Type"]}\r\n\r\n'.encode() + data + b"\r\n")
        parts.append(f"--{boundary}--\r\n".encode())
        _request("POST", answer["url"], data=b"".join(parts),
                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})

    return Ticket(answer["image_id"], answer["key"], send)


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


def upload_one(request: Callable[..., Ticket], base: str, token: str, path: Path,
               line: str, camera: str, retries: int) -> Upload:
    """Ask for one presigned upload, then send the file, retrying 5xx, 409, 429 and
    network errors.

    A retry re-sends to the same URL. A PUT URL refuses a second write to its key (412,
    `If-None-Match: *`), so a 412 after an earlier send of ours means that send arrived
    (its answer was lost); on the first send it means someone else used the URL first."""
    started = time.time()
    ticket: Ticket | None = None
    data = path.read_bytes()
    sent = 0
    for attempt in range(1, retries + 2):
        try:
            if ticket is None:
                ticket = request(base, token, path, line, camera)
            sent += 1
            try:
                ticket.send(data)
            except UploadError as exc:
                if exc.status != 412:
                    raise
                if sent == 1:
                    raise UploadError(412, "the upload URL was already used: S3 keeps the "
                                      "image sent first", retryable=False) from None
            return Upload(str(path), True, ticket.image_id, ticket.key, 200, "", attempt,
                          started, time.time())
        except UploadError as exc:
            if not exc.retryable or attempt > retries:
                return Upload(str(path), False, status=exc.status, error=str(exc),
                              attempts=attempt, started_at=started, finished_at=time.time())
            time.sleep(min(0.25 * 2 ** (attempt - 1), 4.0))
    raise AssertionError("unreachable")


def upload_folder(directory: Path, camera: str, line: str, endpoint: str, token: str,
                  delay: float = 0.0, concurrency: int = 4, retries: int = 3,
                  progress: bool = True, post: bool = False) -> list[Upload]:
    files = sorted(p for p in directory.iterdir()
                   if p.is_file() and p.suffix.lower() in EXTENSIONS)
    base = api_base(endpoint)
    send = request_post if post else request_put
    results: list[Upload] = []
    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                  disable=not progress) as bar:
        task = bar.add_task(f"{line}/{camera}", total=len(files))
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            futures = []
            for path in files:
                futures.append(pool.submit(upload_one, send, base, token, path, line, camera,
                                           retries))
                if delay:
                    time.sleep(delay)
            for future in as_completed(futures):
                results.append(future.result())
                bar.advance(task)
    return sorted(results, key=lambda upload: upload.file)


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
    parser.add_argument("time_between_requests", type=float,
                        help="seconds between starting two uploads (0 for none)")
    parser.add_argument("--concurrency", type=int, default=4, help="parallel uploads (4)")
    parser.add_argument("--retries", type=int, default=3,
                        help="retries of a failed upload on 5xx, 409, 429 and network errors (3)")
    parser.add_argument("--post", action="store_true",
                        help="use POST /uploads (presigned POST) instead of GET /getsignedurl")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--manifest-out", type=Path,
                        help="write a JSON list of the uploads (file, image_id, key, ok)")
    args = parser.parse_args(argv)
    if not args.directory.is_dir():
        parser.error(f"{args.directory} is not a folder")
    uploads = upload_folder(args.directory, args.camera_id, args.assembly_line_id,
                            args.api_endpoint, args.auth_token, args.time_between_requests,
                            args.concurrency, args.retries, not args.no_progress, args.post)
    ok = sum(upload.ok for upload in uploads)
    for upload in uploads:
        if not upload.ok:
            console.print(f"[red]failed[/red] {upload.file}: {upload.error}")
    console.print(f"{ok} of {len(uploads)} files uploaded for line {args.assembly_line_id} "
                  f"camera {args.camera_id}")
    if args.manifest_out:
        args.manifest_out.parent.mkdir(parents=True, exist_ok=True)
        args.manifest_out.write_text(json.dumps([asdict(u) for u in uploads], indent=2))
    return 0 if ok == len(uploads) else 1


if __name__ == "__main__":
    sys.exit(main())
