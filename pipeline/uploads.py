"""Upload rules: validated IDs, server-chosen object keys, and presigned uploads.

The server chooses every key (`{line}/{camera}/{yyyy}/{mm}/{dd}/{upload_id}.{ext}`), so
uploads never overwrite each other. Line, camera and the camera's own image id travel
as `x-amz-meta-*` and are bound into the signature, so they cannot be forged. moto does
not enforce presigned conditions, so the conditions built here are tested directly.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pipeline.records import utc_now

MAX_EXPIRY_SECONDS = 300
CONTENT_TYPES = {"image/jpeg": "jpg", "image/png": "png"}
EXTENSION_CONTENT_TYPES = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png"}
META_LINE = "assemblylineid"
META_CAMERA = "cameraid"
META_IMAGE = "imageid"

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
ID_RULE = ("1-64 characters of A-Z a-z 0-9 _ - ., starting with a letter or digit, "
           "without '..'")
_KEY = re.compile(
    r"^(?P<line>[^/]+)/(?P<camera>[^/]+)/(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})/"
    r"(?P<upload_id>[0-9a-f]{32})\.(?P<ext>[a-z]+)$"
)


class UploadRequestError(ValueError):
    """A client sent an upload request we refuse; the message says why (HTTP 400)."""


def validate_id(value: object, name: str, *, required: bool = True) -> str:
    """Check an ID from a client: 1-64 characters of letters, digits, `_`, `-`, `.`,
    starting with a letter or digit. No path separators, no `..`.

    >>> validate_id("line-1", "line_id")
    'line-1'
    >>> validate_id("../etc", "line_id")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pipeline.uploads.UploadRequestError: line_id must be 1-64 characters ... (got '../etc')
    """
    if value is None or value == "":
        if required:
            raise UploadRequestError(f"{name} is required")
        return ""
    if not isinstance(value, str) or not is_id(value):
        raise UploadRequestError(f"{name} must be {ID_RULE} (got {value!r})")
    return value


def is_id(value: str) -> bool:
    """Whether `value` is a line, camera or image id: the API's rule, which the stack
    config's line and camera ids follow too, so that each configured one can get a token.

    >>> is_id("line-1"), is_id("a..b"), is_id("line-1\\n"), is_id("-x")
    (True, False, False, False)
    """
    # fullmatch: with match and `$`, a trailing newline ("line-1\n") would pass.
    return bool(_ID.fullmatch(value)) and ".." not in value


@dataclass(frozen=True)
class UploadTarget:
    line_id: str
    camera_id: str
    client_image_id: str
    upload_id: str
    key: str
    content_type: str

    @property
    def metadata(self) -> dict[str, str]:
        meta = {META_LINE: self.line_id, META_CAMERA: self.camera_id}
        if self.client_image_id:
            meta[META_IMAGE] = self.client_image_id
        return meta

    @property
    def headers(self) -> dict[str, str]:
        """Content type and metadata as the upload sends them (PUT headers, POST fields)."""
        return {"Content-Type": self.content_type,
                **{f"x-amz-meta-{name}": value for name, value in self.metadata.items()}}


@dataclass(frozen=True)
class KeyParts:
    line_id: str
    camera_id: str
    upload_id: str
    extension: str


def content_type_for(value: str | None, name: str = "content_type") -> str:
    """Normalise and check the declared content type (jpeg or png only)."""
    if value is not None and not isinstance(value, str):
        raise UploadRequestError(f"{name} must be a string (got {value!r})")
    content_type = (value or "").split(";")[0].strip().lower()
    if content_type == "image/jpg":
        content_type = "image/jpeg"
    if content_type not in CONTENT_TYPES:
        raise UploadRequestError(
            f"{name} must be one of {', '.join(sorted(CONTENT_TYPES))} (got {value!r})")
    return content_type


# What the seed's GET /getsignedurl calls the fields POST /uploads takes (its query
# parameters): errors name the field as the caller sent it.
SEED_NAMES = {"line_id": "assemblylineid", "camera_id": "cameraid", "image_id": "imageid",
              "content_type": "contenttype"}


def new_target(line_id: str, camera_id: str, client_image_id: str, content_type: str,
               now: datetime | None = None, names: dict[str, str] | None = None
               ) -> UploadTarget:
    """A server-chosen key for one upload; `names` are the caller's names of the fields,
    for its errors (`SEED_NAMES`).

    >>> new_target("", "c", "", "image/png", names=SEED_NAMES)
    Traceback (most recent call last):
    ...
    pipeline.uploads.UploadRequestError: assemblylineid is required
    """
    name = (names or {}).get
    line_id = validate_id(line_id, name("line_id", "line_id"))
    camera_id = validate_id(camera_id, name("camera_id", "camera_id"))
    client_image_id = validate_id(client_image_id, name("image_id", "image_id"),
                                  required=False)
    content_type = content_type_for(content_type, name("content_type", "content_type"))
    when = now or utc_now()
    upload_id = uuid.uuid4().hex
    key = (f"{line_id}/{camera_id}/{when:%Y/%m/%d}/{upload_id}."
           f"{CONTENT_TYPES[content_type]}")
    return UploadTarget(line_id, camera_id, client_image_id, upload_id, key, content_type)


def parse_key(key: str) -> KeyParts | None:
    """The parts of a server-chosen key, or None for a key we did not issue.

    >>> parse_key("L1/C1/2026/01/02/" + "a" * 32 + ".jpg").camera_id
    'C1'
    >>> parse_key("somewhere/else.jpg") is None
    True
    """
    match = _KEY.fullmatch(key)
    if not match or not (is_id(match["line"]) and is_id(match["camera"])):
        return None  # written by hand, say, with ids the API would refuse to issue a key for
    return KeyParts(match["line"], match["camera"], match["upload_id"], match["ext"])


def post_policy(target: UploadTarget, max_bytes: int) -> tuple[dict[str, str], list[Any]]:
    """Fields and conditions of a presigned POST: the exact key, the exact content type,
    the exact metadata, and a size range up to the configured maximum."""
    fields = target.headers
    conditions: list[Any] = [{name: value} for name, value in fields.items()]
    conditions.append(["content-length-range", 1, max_bytes])
    return fields, conditions


def presigned_post(s3: Any, bucket: str, target: UploadTarget, max_bytes: int,
                   expires_in: int = MAX_EXPIRY_SECONDS) -> dict[str, Any]:
    fields, conditions = post_policy(target, max_bytes)
    post = s3.generate_presigned_post(
        Bucket=bucket, Key=target.key, Fields=fields, Conditions=conditions,
        ExpiresIn=min(expires_in, MAX_EXPIRY_SECONDS))
    return {"url": post["url"], "fields": post["fields"], "key": target.key,
            "image_id": target.upload_id, "expires_in": min(expires_in, MAX_EXPIRY_SECONDS),
            "max_bytes": max_bytes}


def declared_length(value: str | None, max_bytes: int) -> int | None:
    """The size a camera declares for a PUT upload (optional, as in the seed's API).

    >>> declared_length("2048", 4096), declared_length(None, 4096)
    (2048, None)
    >>> declared_length("9000", 4096)
    Traceback (most recent call last):
    ...
    pipeline.uploads.UploadRequestError: contentlength 9000 is over the limit of 4096 bytes
    >>> declared_length("9" * 5000, 4096)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pipeline.uploads.UploadRequestError: contentlength 999...9... (5000 characters) is over ...
    """
    if value is None or value == "":
        return None
    shown = value if len(value) <= 20 else f"{value[:20]}... ({len(value)} characters)"
    # isdigit() alone admits "²" and other digits int() refuses
    digits = value.lstrip("0") if value.isascii() and value.isdigit() else ""
    if not digits:
        raise UploadRequestError(f"contentlength must be a positive whole number (got {shown!r})")
    # Compare lengths first: int() refuses more than 4,300 digits (a ValueError, so a 500).
    if len(digits) > len(str(max_bytes)) or int(digits) > max_bytes:
        raise UploadRequestError(f"contentlength {shown} is over the limit of {max_bytes} bytes")
    return int(digits)


def put_headers(target: UploadTarget) -> dict[str, str]:
    """The headers a PUT to `presigned_put`'s URL must carry: all of them are signed."""
    return {**target.headers, "If-None-Match": "*"}


def presigned_put(s3: Any, bucket: str, target: UploadTarget,
                  expires_in: int = MAX_EXPIRY_SECONDS, content_length: int | None = None) -> str:
    """A presigned PUT URL (the seed's style) for the headers `put_headers` gives.

    Content type and metadata are signed, so the camera must send exactly those headers.
    `If-None-Match: *` is signed too, so S3 refuses (412) a second PUT to the key: a URL
    reused within its five minutes cannot replace an image the pipeline has already
    judged. A declared `content_length` is signed as well, so S3 refuses any other size;
    without one (seed clients) the ingest step refuses objects over the maximum instead."""
    params: dict[str, Any] = {"Bucket": bucket, "Key": target.key,
                              "ContentType": target.content_type, "Metadata": target.metadata,
                              "IfNoneMatch": "*"}
    if content_length is not None:
        params["ContentLength"] = content_length
    return s3.generate_presigned_url("put_object", Params=params,
                                     ExpiresIn=min(expires_in, MAX_EXPIRY_SECONDS))
