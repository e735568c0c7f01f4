"""Shared fixtures for every tier.

- `aws_env`: fake credentials and a region, set before any client exists.
- `moto_stack`: an in-process moto (Step Functions execution on) with every resource
  provisioned by the same code as the local stack, and the handlers' environment set.
- `trained_model`: the embedded detector trained once per session on generated samples.
- `load_event(name)`: a recorded Lambda event from tests/events/.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest

REPO = Path(__file__).resolve().parents[1]
EVENTS = Path(__file__).resolve().parent / "events"
DATASETS = REPO.parent / "shared" / "datasets"
REGION = "us-east-1"

if str(REPO / "api") not in sys.path:
    sys.path.insert(0, str(REPO / "api"))


def load_event(name: str, **replacements: str) -> dict[str, Any]:
    """A recorded event; `{{key}}` placeholders are replaced by the keyword values."""
    text = (EVENTS / name).read_text()
    for key, value in replacements.items():
        text = text.replace("{{" + key + "}}", value)
    return json.loads(text)


def dataset(name: str) -> Path:
    path = DATASETS / name
    if not path.is_dir():
        pytest.skip(f"data set {name!r} not found at {path} (../shared/datasets is absent)")
    return path


def _reset_caches() -> None:
    from pipeline import aws
    from pipeline.settings import current

    aws.reset()
    current.cache_clear()


@pytest.fixture(autouse=True)
def _handlers_aws_settings() -> Iterator[None]:
    """An operator command run in a test switches pipeline.aws to its short timeouts; the
    next test's handlers get their own settings back."""
    yield
    from pipeline import aws

    aws.interactive(False)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in list(os.environ):
        if key.startswith(("LINESIGHT_", "AWS_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)
    _reset_caches()
    yield
    _reset_caches()


@pytest.fixture(scope="session")
def samples_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from scripts.make_samples import generate

    out = tmp_path_factory.mktemp("samples")
    generate(out)
    return out


@pytest.fixture(scope="session")
def trained_model(samples_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipeline.detector.training import train_model

    model = tmp_path_factory.mktemp("model") / "demo"
    train_model(samples_dir, model)
    return model


class MotoStack:
    """Handles on the provisioned in-process stack."""

    def __init__(self, info: Any, local: Any) -> None:
        self.info = info
        self.local = local

    def client(self, service: str) -> Any:
        return boto3.client(service, region_name=REGION)

    def upload(self, image: bytes, line: str = "line-1", camera: str = "cam-1",
               content_type: str = "image/jpeg", metadata: dict[str, str] | None = None,
               key: str | None = None) -> str:
        """Put an object the way a presigned upload would; return its key."""
        from pipeline.uploads import new_target

        target = new_target(line, camera, "img", content_type)
        self.client("s3").put_object(
            Bucket=self.info.images_bucket, Key=key or target.key, Body=image,
            ContentType=content_type,
            Metadata=target.metadata if metadata is None else metadata)
        return key or target.key

    def sqs_event_for(self, key: str) -> dict[str, Any]:
        """The SQS event Lambda would deliver for the S3 notification of `key`."""
        s3 = self.client("s3")
        head = s3.head_object(Bucket=self.info.images_bucket, Key=key)
        body = load_event("s3_object_created.json", bucket=self.info.images_bucket,
                          key=key, version=head.get("VersionId", ""),
                          etag=head["ETag"].strip('"'), size=str(head["ContentLength"]))
        return {"Records": [{
            "messageId": f"m-{key[-12:]}", "receiptHandle": "r", "body": json.dumps(body),
            "attributes": {}, "messageAttributes": {}, "md5OfBody": "",
            "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:1:q",
            "awsRegion": REGION}]}


@contextmanager
def _provisioned(model: Path, monkeypatch: pytest.MonkeyPatch,
                 topology: Any = None) -> Iterator[MotoStack]:
    from moto import mock_aws

    from pipeline.detector import clear_cache
    from scripts.local_stack import LocalStack

    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        local = LocalStack(model, topology, write_state=False)
        info = local.provision(client=lambda service: boto3.client(service, region_name=REGION))
        for key, value in local.handler_environment(info).items():
            monkeypatch.setenv(key, value)
        _reset_caches()
        info.camera_tokens = local._create_tokens(info.tokens_table)
        yield MotoStack(info, local)
    clear_cache()


@pytest.fixture
def moto_stack(aws_env: None, trained_model: Path, monkeypatch: pytest.MonkeyPatch
               ) -> Iterator[MotoStack]:
    """The default stack: an EXPRESS workflow."""
    with _provisioned(trained_model, monkeypatch) as stack:
        yield stack


@pytest.fixture(params=["EXPRESS", "STANDARD"])
def moto_stack_any_workflow(request: pytest.FixtureRequest, aws_env: None, trained_model: Path,
                            monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoStack]:
    """The stack once per workflow type, for claims that must hold for both."""
    from scripts.local_stack import Topology

    with _provisioned(trained_model, monkeypatch, Topology(workflow_type=request.param)) as stack:
        yield stack


def generated_samples(factory: pytest.TempPathFactory, counts: dict[tuple[str, str], int],
                      size: int) -> Path:
    """A small generated data set (`scripts.make_samples`), for a module's tests."""
    from scripts.make_samples import generate

    out = factory.mktemp("samples")
    generate(out, counts=counts, size=size)
    return out


def quick_model(out: Path) -> Path:
    """A whole model, as loading checks it, made in a moment: the fastest method fitted to
    a few random images, not trained (for tests about what surrounds a model)."""
    import numpy as np

    from pipeline.detector import artifact
    from pipeline.detector.calibration import Calibration
    from pipeline.detector.methods.baseline import PixelGaussian

    rng = np.random.default_rng(0)
    method = PixelGaussian(input_size=32)
    method.fit([rng.integers(0, 255, (32, 32, 3), np.uint8) for _ in range(3)], [], rng)
    artifact.save(artifact.TrainedModel(method, Calibration(1.0, 1.0), 1.0, 1.0), out)
    return out


def pixel_model(samples: Path, factory: pytest.TempPathFactory) -> Path:
    """The fastest method trained on `samples`, for tests about what surrounds a model."""
    from pipeline.detector.training import train_model

    out = factory.mktemp("model")
    train_model(samples, out, methods=["pixel_gaussian"])
    return out
