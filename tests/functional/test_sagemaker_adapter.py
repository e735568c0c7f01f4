"""The SageMaker endpoint backend against moto, and the embedded backend loading from S3.

moto's `invoke_endpoint` does not run a model: it answers from a queue of canned results
(or with the literal body "body"). The canned answer here is what our own container
contract (`sagemaker.invocation_response`) produces from the embedded model, so the test
covers the real boto3 call, the request we send and the parsing of the contract.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.sagemakerruntime.models import sagemakerruntime_backends
from moto.sagemakerruntime.responses import SageMakerRuntimeResponse
from PIL import Image

from pipeline.detector import DetectorError, InvalidImageError, clear_cache, load_detector
from pipeline.detector.artifact import ArtifactError
from pipeline.detector.embedded import EmbeddedDetector
from pipeline.detector.sagemaker import SageMakerDetector, invocation_response
from pipeline.detector.training import train_model
from scripts.make_samples import generate

REGION = "us-east-1"
SMALL = {("train", "normal"): 12, ("train", "anomaly"): 4,
         ("test", "normal"): 2, ("test", "anomaly"): 2}


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    samples = tmp_path_factory.mktemp("sm-samples")
    generate(samples, counts=SMALL, size=128)
    model = tmp_path_factory.mktemp("sm-model")
    train_model(samples, model, methods=["pixel_gaussian"])
    return samples, model


@pytest.fixture
def mocked(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # moto 5.2 decodes every request body as UTF-8 before `invoke_endpoint` sees it, so a
    # real (binary) image body crashes the mock. Let it keep the raw bytes and hand them on
    # as latin-1 text: moto only uses the body as a cache key for its canned answers.
    original = SageMakerRuntimeResponse.invoke_endpoint

    def invoke_endpoint(self: SageMakerRuntimeResponse) -> object:
        if isinstance(self.body, bytes):
            self.body = self.body.decode("latin-1")
        return original(self)

    monkeypatch.setattr(SageMakerRuntimeResponse, "use_raw_body", True)
    monkeypatch.setattr(SageMakerRuntimeResponse, "invoke_endpoint", invoke_endpoint)
    clear_cache()
    with mock_aws():
        yield
    clear_cache()


def _queue(body: bytes, content_type: str = "application/json") -> None:
    backend = sagemakerruntime_backends[DEFAULT_ACCOUNT_ID][REGION]
    backend.results_queue.append((body.decode(), content_type, "AllTraffic", ""))


def _anomaly(samples: Path) -> bytes:
    return next((samples / "test" / "anomaly").glob("*.jpg")).read_bytes()


def test_endpoint_answer_matches_the_embedded_model(mocked: None,
                                                    small_model: tuple[Path, Path]) -> None:
    samples, model = small_model
    image = _anomaly(samples)
    embedded = EmbeddedDetector.from_dir(model)
    status, body = invocation_response(embedded, image, "image/jpeg")
    assert status == 200
    _queue(body)

    detector = load_detector("sagemaker", "", "linesight-line-3")
    assert isinstance(detector, SageMakerDetector)
    assert load_detector("sagemaker", "", "linesight-line-3") is detector
    result = detector.detect(image, "image/jpeg")
    expected = embedded.detect(image, "image/jpeg")
    assert result.score == pytest.approx(expected.score)
    assert result.is_anomalous == expected.is_anomalous
    assert result.confidence == pytest.approx(expected.confidence)
    assert result.model_version == embedded.model_version
    assert result.anomalies == expected.anomalies
    assert result.heatmap_png is not None and result.heatmap_png.startswith(b"\x89PNG")


def test_threshold_override_is_applied_to_the_endpoint_score(
        mocked: None, small_model: tuple[Path, Path]) -> None:
    samples, model = small_model
    image = _anomaly(samples)
    _, body = invocation_response(EmbeddedDetector.from_dir(model), image, "image/jpeg")
    _queue(body)
    result = SageMakerDetector("ep").detect(image, "image/jpeg", threshold=1.0)
    assert result.threshold == 1.0 and not result.is_anomalous


def test_the_request_carries_type_accept_and_override(small_model: tuple[Path, Path]) -> None:
    samples, model = small_model
    image = _anomaly(samples)
    _, body = invocation_response(EmbeddedDetector.from_dir(model), image, "image/jpeg")
    sent: list[dict[str, object]] = []

    class RecordingClient:
        def invoke_endpoint(self, **request: object) -> dict[str, object]:
            sent.append(request)
            return {"Body": io.BytesIO(body), "ContentType": "application/json"}

    detector = SageMakerDetector("line-3", client=RecordingClient())
    detector.detect(image, "image/jpeg")
    detector.detect(image, "", threshold=0.7)
    assert sent[0] == {"EndpointName": "line-3", "Body": image, "ContentType": "image/jpeg",
                       "Accept": "application/json"}
    assert sent[1]["ContentType"] == "application/octet-stream"
    assert sent[1]["CustomAttributes"] == "threshold=0.7"


def test_a_non_contract_answer_is_a_detector_error(mocked: None) -> None:
    # With nothing queued, moto answers the literal body "body".
    with pytest.raises(DetectorError, match="contract"):
        SageMakerDetector("ep").detect(b"\xff\xd8 some jpeg", "image/jpeg")


@pytest.mark.parametrize(("answer", "why"), [
    # stored as they came, a result whose anomalies are not maps could not be read back:
    # every reader refused it, and a redelivery of its upload went to the dead letters
    ({"Anomalies": ["scratch"]}, "Anomalies is not a list of maps"),
    ({"Anomalies": {"Name": "anomaly"}}, "Anomalies is not a list of maps"),
    ({"Score": float("nan")}, "Score is not a finite number"),
    ({"Score": "0.7"}, "Score is '0.7', not a number"),
    ({"Score": True}, "Score is True, not a number"),  # was a sure defect, confidence 0.998
    ({"RawScore": 1e300}, "RawScore 1e+300 is too large to store"),
    ({"RawScore": 10 ** 400}, "int too large to convert to float"),  # was OverflowError
    ({"ModelVersion": None}, "ModelVersion is None, not a name"),  # was stored as 'None'
    ({"Notes": "abc"}, "Notes is not a list of strings"),  # was ('a', 'b', 'c')
    ({"Anomalies": [{"Name": "anomaly", "PixelAnomaly": {"TotalPercentageArea": 250}}]},
     "TotalPercentageArea 250.0 is outside [0, 100]"),
    ({"Anomalies": [{"PixelAnomaly": {"TotalPercentageArea": 5}}]},
     "an Anomalies entry is not {Name, PixelAnomaly}"),
    ({"HeatmapPng": base64.b64encode(b"GIF89a").decode()}, "HeatmapPng is not a PNG image"),
    ({"HeatmapPng": "not base64!"}, "base64"),
    # a raw score where the normalised one belongs: stored as a sure defect (confidence 1)
    ({"Score": 7.0}, "Score 7.0 is outside [0, 1]"),
    ({"Score": -100}, "Score -100.0 is outside [0, 1]"),  # was OverflowError
    # DynamoDB stores no NaN: the put failed with a TypeError after the detection
    ({"Anomalies": [{"Name": "anomaly", "PixelAnomaly": {"TotalPercentageArea": float("nan")}}]},
     "TotalPercentageArea is not a finite number"),
])
def test_an_answer_the_pipeline_could_not_store_is_a_detector_error(
        mocked: None, answer: dict[str, Any], why: str) -> None:
    _queue(json.dumps({"Score": 0.9, "ModelVersion": "v1", **answer}).encode())
    with pytest.raises(DetectorError, match="contract") as caught:
        SageMakerDetector("ep").detect(b"\xff\xd8 some jpeg", "image/jpeg")
    assert why in str(caught.value)


def test_a_part_the_applied_threshold_passes_names_no_anomalous_area(mocked: None) -> None:
    """A container that ignores the line's override judged at 0.5 and named a scratch;
    at the line's 0.6 the part passes, so the scratch is not stored beside that verdict.
    An area of 1e-200 is stored rounded, as DynamoDB could not store it."""
    scratch = {"Name": "scratch", "PixelAnomaly": {"TotalPercentageArea": 1e-200,
                                                   "Color": "#FF0000", "Extra": [1]}}
    background = {"Name": "background", "PixelAnomaly": {"TotalPercentageArea": 85.0,
                                                         "Color": "#FFFFFF"}}
    answer = {"Score": 0.55, "ModelVersion": "v1", "Anomalies": [background, scratch]}
    for _ in range(2):
        _queue(json.dumps(answer).encode())
    passed = SageMakerDetector("ep").detect(b"\xff\xd8 some jpeg", "image/jpeg", threshold=0.6)
    assert not passed.is_anomalous
    assert passed.anomalies == [{"Name": "background", "PixelAnomaly": {
        "TotalPercentageArea": 100.0, "Color": "#FFFFFF"}}]
    failed = SageMakerDetector("ep").detect(b"\xff\xd8 some jpeg", "image/jpeg")
    assert failed.is_anomalous and failed.anomalies == [background, {
        "Name": "scratch", "PixelAnomaly": {"TotalPercentageArea": 0.0, "Color": "#FF0000"}}]


def test_a_refusal_in_the_answer_is_an_invalid_image(mocked: None) -> None:
    _queue(json.dumps({"Error": "InvalidImage", "Reason": "corrupt",
                       "Message": "truncated"}).encode())
    with pytest.raises(InvalidImageError) as caught:
        SageMakerDetector("ep").detect(b"\xff\xd8 half a jpeg", "image/jpeg")
    assert caught.value.reason == "corrupt"


def test_a_model_error_carrying_a_refusal_is_an_invalid_image() -> None:
    refusal = json.dumps({"Error": "InvalidImage", "Reason": "not_an_image", "Message": "x"})
    error = ClientError({"Error": {"Code": "ModelError", "Message": "400"},
                         "OriginalStatusCode": 400, "OriginalMessage": refusal},
                        "InvokeEndpoint")

    class FailingClient:
        def invoke_endpoint(self, **request: object) -> None:
            raise error

    with pytest.raises(InvalidImageError) as caught:
        SageMakerDetector("ep", client=FailingClient()).detect(b"<html>", "image/jpeg")
    assert caught.value.reason == "not_an_image"


def test_an_image_over_the_endpoint_payload_limit_is_refused_before_the_call() -> None:
    """SageMaker would refuse it on every retry; it is recorded INVALID instead."""
    class NoCalls:
        def invoke_endpoint(self, **request: object) -> None:
            pytest.fail("an oversized image was sent to the endpoint")

    detector = SageMakerDetector("ep", client=NoCalls())
    with pytest.raises(InvalidImageError) as caught:
        detector.detect(b"\xff\xd8" + bytes(detector.max_payload_bytes), "image/jpeg")
    assert caught.value.reason == "too_large"
    assert "SageMaker" in str(caught.value)


def test_a_slow_endpoint_fails_its_image_within_the_time_a_batch_keeps_in_hand(
        mocked: None) -> None:
    """The ingest handler starts no image with less than TIME_MARGIN_MS left; an endpoint
    call that times out on every attempt must end within it."""
    from pipeline.ingest import TIME_MARGIN_MS

    config = SageMakerDetector("ep").client.meta.config
    attempts = config.retries["total_max_attempts"]
    worst = (config.connect_timeout + config.read_timeout) * attempts
    assert worst * 1000 < TIME_MARGIN_MS, (config.connect_timeout, config.read_timeout,
                                           attempts)


def test_other_endpoint_failures_are_retryable_errors() -> None:
    error = ClientError({"Error": {"Code": "ValidationError", "Message": "no endpoint"}},
                        "InvokeEndpoint")

    class FailingClient:
        def invoke_endpoint(self, **request: object) -> None:
            raise error

    with pytest.raises(DetectorError, match="no endpoint"):
        SageMakerDetector("ep", client=FailingClient()).detect(b"\xff\xd8", "image/jpeg")


def test_the_container_contract_refuses_bad_images(small_model: tuple[Path, Path]) -> None:
    _, model = small_model
    status, body = invocation_response(EmbeddedDetector.from_dir(model), b"", "image/jpeg")
    assert status == 400
    assert json.loads(body) == {"Error": "InvalidImage", "Reason": "empty",
                                "Message": "the upload is empty (0 bytes)"}
    status, body = invocation_response(EmbeddedDetector.from_dir(model), b"x", "image/jpeg",
                                       "threshold=7")
    assert status == 400


def test_embedded_model_loads_from_s3(mocked: None, small_model: tuple[Path, Path],
                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    samples, model = small_model
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="models")
    for path in model.iterdir():
        s3.upload_file(str(path), "models", f"line-3/v1/{path.name}")
    detector = load_detector("embedded", "s3://models/line-3/v1/")
    assert (tmp_path / "linesight-models").is_dir()
    result = detector.detect(_anomaly(samples), "image/jpeg")
    assert result.model_version == EmbeddedDetector.from_dir(model).model_version
    with pytest.raises(DetectorError, match="no model.json"):
        load_detector("embedded", "s3://models/elsewhere/")


def test_a_copy_made_while_the_model_was_replaced_is_downloaded_again(
        mocked: None, small_model: tuple[Path, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A cold start between the two files' uploads copies a model.json and an arrays.npz
    of two trainings. That copy is refused, and was kept: every later load in the
    container was refused too, after the upload had ended."""
    import tempfile

    samples, model = small_model
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    fewer = Path(shutil.copytree(samples, tmp_path / "fewer"))
    for path in sorted((fewer / "train" / "normal").iterdir())[:2]:
        path.unlink()
    other = train_model(fewer, tmp_path / "other", methods=["pixel_gaussian"])
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="models")
    s3.upload_file(str(model / "model.json"), "models", "line-3/model.json")
    s3.upload_file(str(tmp_path / "other" / "arrays.npz"), "models", "line-3/arrays.npz")
    s3.put_object(Bucket="models", Key="line-3//" + str(tmp_path / "escaped.txt"), Body=b"x")
    with pytest.raises(ArtifactError, match="not of one training"):
        load_detector("embedded", "s3://models/line-3/")
    s3.upload_file(str(model / "arrays.npz"), "models", "line-3/arrays.npz")  # upload ends
    detector = load_detector("embedded", "s3://models/line-3/")
    assert detector.model_version == EmbeddedDetector.from_dir(model).model_version
    assert detector.model_version != other.model_version
    assert not (tmp_path / "escaped.txt").exists()  # a doubled / is not an absolute path
    [copy] = (tmp_path / "linesight-models").iterdir()  # no half-made folder left behind
    assert sorted(path.name for path in copy.iterdir()) == ["arrays.npz", "model.json"]


@pytest.mark.parametrize(("backend", "uri", "endpoint", "message"), [
    ("embedded", "", "", "model URI"),           # embedded without a model
    ("sagemaker", "", "", "endpoint name"),      # sagemaker without an endpoint
    ("lookout", "x", "", "unknown detector"),    # a retired backend name
])
def test_misconfiguration_names_the_setting(backend: str, uri: str, endpoint: str,
                                            message: str) -> None:
    clear_cache()
    with pytest.raises(DetectorError, match=message):
        load_detector(backend, uri, endpoint)


def test_notes_travel_through_the_endpoint_contract(small_model: tuple[Path, Path]) -> None:
    samples, model = small_model
    image = Image.open(io.BytesIO(_anomaly(samples))).convert("RGBA")
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    detector = EmbeddedDetector.from_dir(model)
    status, body = invocation_response(detector, buffer.getvalue(), "image/png")
    assert status == 200
    assert json.loads(body)["Notes"] == ["converted_from_rgba"]
    status, body = invocation_response(detector, buffer.getvalue(), "image/jpeg")
    assert (status, json.loads(body)["Reason"]) == (400, "content_type_mismatch")
