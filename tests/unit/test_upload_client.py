"""The upload client's retries against a real HTTP S3 (moto's server): a PUT URL takes one
write, so a retry must tell "my earlier send arrived" from "someone used my URL"."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline import uploads
from scripts.uploadImages import Ticket, UploadError, _request, upload_one

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
                raise UploadError(0, "PUT failed: timed out", retryable=True)
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
