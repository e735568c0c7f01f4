"""`load_detector`: the one place that turns configuration into a `Detector`.

Backends:

- `embedded`: `model_uri` is a local model directory or `s3://bucket/prefix/`; an S3 model is
  downloaded once per process into the temp directory (a Lambda's /tmp) with a plain boto3
  client, so it honours `AWS_ENDPOINT_URL` and works against the local emulator unchanged.
- `sagemaker`: calls the real-time endpoint `sagemaker_endpoint`.

Loaded detectors are cached per (backend, uri, endpoint) for the life of the process.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from pipeline.detector.base import Detector, DetectorError

log = logging.getLogger(__name__)

BACKENDS = ("embedded", "sagemaker")
_cache: dict[tuple[str, str, str], Detector] = {}
_lock = threading.Lock()


def load_detector(backend: str, model_uri: str, sagemaker_endpoint: str = "") -> Detector:
    """The detector for this configuration, loaded once and then reused."""
    key = (backend, model_uri, sagemaker_endpoint)
    with _lock:
        detector = _cache.get(key)
        if detector is None:
            detector = _build(backend, model_uri, sagemaker_endpoint)
            _cache[key] = detector
        return detector


def clear_cache() -> None:
    """Forget loaded detectors (tests, or after deploying a new model in-process)."""
    with _lock:
        _cache.clear()


def _build(backend: str, model_uri: str, sagemaker_endpoint: str) -> Detector:
    # Each backend is imported when first loaded: the embedded one brings numpy and
    # Pillow, which the API's own functions (the same app, other Lambdas) never need.
    if backend == "embedded":
        from pipeline.detector.artifact import ArtifactError
        from pipeline.detector.embedded import EmbeddedDetector

        if not model_uri:
            raise DetectorError("the embedded detector needs a model URI (LINESIGHT_MODEL_URI)")
        if not model_uri.startswith("s3://"):
            detector = EmbeddedDetector.from_dir(Path(model_uri))
        else:
            model_dir = download_model(model_uri)
            try:
                detector = EmbeddedDetector.from_dir(model_dir)
            except ArtifactError as exc:  # e.g. copied while the prefix was being replaced
                log.warning("the copy of %s in %s does not load (%s): copying it again",
                            model_uri, model_dir, exc)
                shutil.rmtree(model_dir, ignore_errors=True)
                detector = EmbeddedDetector.from_dir(download_model(model_uri))
        log.info("loaded embedded model %s (%s) from %s", detector.model_version,
                 detector.model.method_name, model_uri)
        return detector
    if backend == "sagemaker":
        if not sagemaker_endpoint:
            raise DetectorError(
                "the sagemaker detector needs an endpoint name (LINESIGHT_SAGEMAKER_ENDPOINT)")
        from pipeline.detector.sagemaker import SageMakerDetector

        return SageMakerDetector(sagemaker_endpoint)
    raise DetectorError(f"unknown detector backend {backend!r}; expected one of {BACKENDS}")


def split_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, prefix) of an s3:// URI; the prefix ends with '/' unless empty.

    >>> split_s3_uri("s3://models/line-3/v2")
    ('models', 'line-3/v2/')
    >>> split_s3_uri("s3://models/")
    ('models', '')
    """
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    prefix = prefix.strip("/")
    return bucket, (prefix + "/" if prefix else "")


def download_model(uri: str, client: Any = None, root: Path | None = None) -> Path:
    """Copy the model under an s3:// prefix to a local directory (once) and return it.

    Each download goes to a folder of its own, renamed into place when whole, so that a
    download cut short leaves nothing a later one reads. Keys that would land outside the
    folder (`..`, or an absolute path from a doubled `/`) are left out."""
    bucket, prefix = split_s3_uri(uri)
    target = (root or Path(tempfile.gettempdir()) / "linesight-models") / hashlib.sha256(
        uri.encode()).hexdigest()[:16]
    if (target / "model.json").is_file():
        return target
    if client is None:
        import boto3

        client = boto3.client("s3")
    from botocore.exceptions import BotoCoreError, ClientError

    partial: Path | None = None
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
        if not any(key == prefix + "model.json" for key in keys):
            raise DetectorError(f"no model.json under {uri}")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=target.name + ".partial-", dir=target.parent))
        for key in keys:
            relative = Path(key[len(prefix):])
            if (not relative.parts or key.endswith("/") or relative.is_absolute()
                    or ".." in relative.parts):
                continue
            destination = partial / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, key, str(destination))
    except BaseException as exc:  # a failed download, a full disk, ...: nothing half-made
        if partial is not None:
            shutil.rmtree(partial, ignore_errors=True)
        if isinstance(exc, BotoCoreError | ClientError):
            raise DetectorError(f"could not download the model from {uri}: {exc}") from exc
        raise
    try:
        partial.rename(target)
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
        if not (target / "model.json").is_file():  # not just another process finishing first
            raise
    return target
