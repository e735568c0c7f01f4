"""Bad input: each case ends in an INVALID record with a reason, an InvalidImageCount metric
and no alert; the message is not retried (it is not in batchItemFailures).

The images are made here, small and cheap: the decompression bomb is a real 30000x30000
PNG (1-bit, all zeros) of about 100 kB, compressed row by row so the test never holds
the 112 MB of pixels.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.conftest import MotoStack
from tests.functional.conftest import (
    alerts,
    count_calls,
    emf_metrics,
    execution_name,
    history_states,
    record_for,
    run_ingest,
    wait_for_execution,
)

SIZE = (256, 256)  # the trained images' size (tests/conftest.py samples)


def _jpeg(samples: Path) -> bytes:
    return sorted((samples / "test" / "normal").glob("*.jpg"))[0].read_bytes()


def _save(image: Image.Image, fmt: str, **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def _part(mode: str = "RGB", size: tuple[int, int] = SIZE) -> Image.Image:
    """A plausible part photo: a lighter disc on a darker background."""
    image = Image.new("RGB", size, (60, 60, 60))
    from PIL import ImageDraw

    ImageDraw.Draw(image).ellipse((size[0] // 4, size[1] // 4, 3 * size[0] // 4,
                                   3 * size[1] // 4), fill=(180, 180, 180))
    return image.convert(mode) if mode != "RGB" else image


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A valid 1-bit greyscale PNG of width x height zero pixels, ~0.1 MB compressed."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


def _corrupt_jpeg(samples: Path) -> bytes:
    """Header intact; the entropy-coded data after the start of scan replaced by markers
    that are not allowed there."""
    data = _jpeg(samples)
    start = data.index(b"\xff\xda") + 20
    return data[:start] + b"\xff\xd0\xff\xd9\xff\x00" * ((len(data) - start) // 6)


def _animated_gif() -> bytes:
    frames = [_part("P"), _part("P").rotate(90)]
    return _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100,
                 loop=0)


Body = Callable[[Path], bytes]

# (case id, bytes, declared content type, key extension, reason codes accepted)
CASES: list[tuple[str, Body, str, str, tuple[str, ...]]] = [
    ("zero-byte object", lambda s: b"", "image/jpeg", "jpg", ("empty",)),
    ("text named .jpg", lambda s: b"shift report: all good\n" * 10, "image/jpeg", "jpg",
     ("not_an_image",)),
    ("HTML named .jpg", lambda s: b"<!doctype html><html><body>403</body></html>",
     "image/jpeg", "jpg", ("not_an_image",)),
    ("truncated JPEG", lambda s: _jpeg(s)[: len(_jpeg(s)) // 2], "image/jpeg", "jpg",
     ("corrupt",)),
    ("corrupt JPEG", _corrupt_jpeg, "image/jpeg", "jpg", ("corrupt",)),
    ("PNG named .jpeg", lambda s: _save(_part(), "PNG"), "image/jpeg", "jpeg",
     ("content_type_mismatch", "wrong_format", "unsupported_format")),
    ("CMYK JPEG", lambda s: _save(_part("CMYK"), "JPEG"), "image/jpeg", "jpg",
     ("unsupported_mode",)),
    ("16-bit PNG", lambda s: _save(_part("I;16"), "PNG"), "image/png", "png",
     ("unsupported_mode",)),
    ("palette PNG", lambda s: _save(_part("P"), "PNG"), "image/png", "png",
     ("unsupported_mode",)),
    ("animated GIF named .jpg", lambda s: _animated_gif(), "image/jpeg", "jpg",
     ("unsupported_format", "animated")),
    ("decompression bomb 30000x30000", lambda s: _png_bomb(), "image/png", "png",
     ("too_large",)),
    ("far smaller than the trained size", lambda s: _save(_part(size=(24, 24)), "JPEG"),
     "image/jpeg", "jpg", ("too_small",)),
    ("far off the trained aspect", lambda s: _save(_part(size=(1024, 128)), "JPEG"),
     "image/jpeg", "jpg", ("off_size",)),
    ("over maxUploadBytes", lambda s: _jpeg(s) + b"\x00" * 1_000_000, "image/jpeg", "jpg",
     ("too_large",)),
]


def _upload(stack: MotoStack, body: bytes, content_type: str, ext: str,
            metadata: dict[str, str] | None = None) -> str:
    from pipeline.uploads import new_target

    target = new_target("line-1", "cam-1", "bad", "image/jpeg")
    key = target.key.rsplit(".", 1)[0] + "." + ext
    stack.client("s3").put_object(Bucket=stack.info.images_bucket, Key=key, Body=body,
                                  ContentType=content_type,
                                  Metadata=target.metadata if metadata is None else metadata)
    return key


def _check_invalid(stack: MotoStack, key: str, output: str, result: dict[str, Any],
                   reasons: tuple[str, ...], why: str) -> None:
    assert result == {"batchItemFailures": []}, f"{why}: must not be retried"
    execution = wait_for_execution(stack, execution_name(stack, key))
    item = record_for(stack, key)
    assert item is not None, f"{why}: no record"
    assert item["status"]["S"] == "INVALID", f"{why}: recorded {item['status']['S']}"
    reason = item.get("reason", {}).get("S", "")
    assert reason.split(":")[0] in reasons, f"{why}: reason {reason!r}"
    assert len(reason) > len(reason.split(":")[0]) + 2, f"{why}: the reason says why"
    invalid = [p for p in emf_metrics(output) if p["MetricName"] == "InvalidImageCount"]
    # one data point, stored per camera, per line and for the stack
    assert [(p["Value"], {d["Name"]: d["Value"] for d in p["Dimensions"]}) for p in invalid] \
        == [(1.0, {"line": "line-1", "camera": "cam-1"}), (1.0, {"line": "line-1"}),
            (1.0, {})], why
    assert execution["status"] == "SUCCEEDED", f"{why}: the execution {execution['status']}"
    assert history_states(stack, execution["executionArn"])[-1] == "Recorded", why
    _assert_no_alert(stack, why)


def _assert_no_alert(stack: MotoStack, why: str) -> None:
    """Nothing reached the alert topic. Every test here drains its tap, so each checks its
    own uploads, run alone or in any order; and no upload in this module may alert."""
    assert alerts(stack) == [], f"{why}: alerted"


@pytest.mark.parametrize("why, make, content_type, ext, reasons", CASES,
                         ids=[case[0] for case in CASES])
def test_bad_file_is_recorded_invalid(shared_stack: MotoStack, samples_dir: Path,
                                      capsys: pytest.CaptureFixture[str], why: str,
                                      make: Body, content_type: str, ext: str,
                                      reasons: tuple[str, ...]) -> None:
    key = _upload(shared_stack, make(samples_dir), content_type, ext)
    capsys.readouterr()
    result = run_ingest(shared_stack, key)
    _check_invalid(shared_stack, key, capsys.readouterr().out, result, reasons, why)


@pytest.mark.parametrize("why, metadata", [
    ("missing metadata", {}),
    ("line only", {"assemblylineid": "line-1"}),
    ("forged line", {"assemblylineid": "line-2", "cameraid": "cam-1"}),
    ("forged camera", {"assemblylineid": "line-1", "cameraid": "cam-9"}),
])
def test_missing_or_forged_metadata_is_recorded_invalid(
        shared_stack: MotoStack, samples_dir: Path, capsys: pytest.CaptureFixture[str],
        why: str, metadata: dict[str, str]) -> None:
    key = _upload(shared_stack, _jpeg(samples_dir), "image/jpeg", "jpg", metadata)
    capsys.readouterr()
    result = run_ingest(shared_stack, key)
    _check_invalid(shared_stack, key, capsys.readouterr().out, result, ("bad_metadata",),
                   why)


def test_a_key_the_api_did_not_issue_is_recorded_invalid(
        shared_stack: MotoStack, samples_dir: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    import app

    from pipeline.ingest import object_refs

    key = "uploads/by-hand/photo.jpg"
    shared_stack.upload(_jpeg(samples_dir), key=key)
    capsys.readouterr()
    event = shared_stack.sqs_event_for(key)
    result = app.ingest(event, None)
    assert result == {"batchItemFailures": []}
    [ref] = list(object_refs(event["Records"][0]["body"]))
    wait_for_execution(shared_stack, ref.idempotency_key)
    [item] = [i for i in shared_stack.client("dynamodb").scan(
        TableName=shared_stack.info.table)["Items"] if i["s3_uri"]["S"].endswith(key)]
    assert item["status"]["S"] == "INVALID"
    assert item["reason"]["S"].startswith("unexpected_key")
    _assert_no_alert(shared_stack, "a key the API did not issue")
    assert "ProcessedImageCount" in capsys.readouterr().out

    # Delivered again: recognised by its record, so no second execution is started (an
    # EXPRESS workflow in AWS would run it, and its metrics would count twice).
    started = count_calls("stepfunctions")
    assert app.ingest(event, None) == {"batchItemFailures": []}
    assert started == {}
    assert "ProcessedImageCount" not in capsys.readouterr().out


def test_a_whole_batch_of_bad_files_is_one_call_without_retries(
        shared_stack: MotoStack, samples_dir: Path) -> None:
    keys = [_upload(shared_stack, make(samples_dir), content_type, ext)
            for _, make, content_type, ext, _ in CASES[:4]]
    assert run_ingest(shared_stack, *keys) == {"batchItemFailures": []}
    for key in keys:
        wait_for_execution(shared_stack, execution_name(shared_stack, key))
        item = record_for(shared_stack, key)
        assert item is not None and item["status"]["S"] == "INVALID"
    _assert_no_alert(shared_stack, "a batch of bad files")
