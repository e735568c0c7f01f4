"""The Lambda package: the code zip holds the app, the Chalice runtime and pipeline/; the
layer holds the dependencies for the Lambda platform; both stay inside Lambda's limits.

The layer is built with a fake pip here; one slow test runs the real pip (skipped offline).
"""

from __future__ import annotations

import json
import shutil
import socket
import zipfile
from pathlib import Path
from typing import Any

import pytest

from infra import package
from tests.conftest import quick_model
from tests.infra.conftest import REPO, fake_pip

API = REPO / "api"


@pytest.fixture(scope="module")
def code(tmp_path_factory: pytest.TempPathFactory) -> package.Artifact:
    return package.build_code(API, tmp_path_factory.mktemp("code"))


@pytest.mark.parametrize("name", [
    "app.py",                    # the Chalice app (handler "app.app" and friends)
    "chalice/__init__.py",       # the Chalice runtime, as `chalice package` adds it
    "chalice/app.py",
    "chalicelib/telemetry.py",   # the app's own library
    "pipeline/__init__.py",      # pipeline/ at the top level, through api/vendor/pipeline
    "pipeline/workflow.py",
    "pipeline/settings.py",
    "pipeline/detector/loader.py",
])
def test_code_zip_contains(code: package.Artifact, name: str) -> None:
    assert name in code.names


def test_code_zip_has_all_of_pipeline_and_no_caches(code: package.Artifact) -> None:
    sources = {f"pipeline/{p.relative_to(REPO / 'pipeline').as_posix()}"
               for p in (REPO / "pipeline").rglob("*.py") if "__pycache__" not in p.parts}
    assert sources <= set(code.names)
    assert not [n for n in code.names if "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in code.names if n.startswith(("tests/", "infra/", "api/"))]


def test_code_zip_is_reproducible(code: package.Artifact, tmp_path: Path) -> None:
    again = package.build_code(API, tmp_path)
    assert again.sha256_base64 == code.sha256_base64


def test_code_zip_imports_in_a_clean_interpreter(code: package.Artifact, tmp_path: Path
                                                 ) -> None:
    """What Lambda does first: unzip to the task root and import the handler module (the
    dependencies come from this venv, standing in for the layer). numpy and Pillow are
    not imported yet: every function of the app imports app.py, and only ingest needs
    them, when it loads its model."""
    import subprocess
    import sys

    task = tmp_path / "task"
    with zipfile.ZipFile(code.path) as archive:
        archive.extractall(task)
    check = ("import sys; sys.path.insert(0, sys.argv[1]); import app, chalice, pipeline; "
             "assert chalice.__file__.startswith(sys.argv[1]), chalice.__file__; "
             "assert pipeline.__file__.startswith(sys.argv[1]), pipeline.__file__; "
             "loaded = [m for m in ('numpy', 'PIL') if m in sys.modules]; "
             "assert not loaded, loaded; "
             "print(app.app.app_name)")
    result = subprocess.run([sys.executable, "-c", check, str(task)], cwd=tmp_path,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "linesight"


def test_layer_is_cached_by_requirements(tmp_path: Path) -> None:
    calls = []

    def counting_pip(requirements: Path, target: Path) -> None:
        calls.append(requirements)
        fake_pip(requirements, target)

    first = package.build_layer(API / "requirements.txt", tmp_path, counting_pip)
    second = package.build_layer(API / "requirements.txt", tmp_path, counting_pip)
    assert len(calls) == 1
    assert first == second
    assert all(name.startswith("python/") for name in first.names)


def test_small_package_is_within_limits(code: package.Artifact, tmp_path: Path) -> None:
    layer = package.build_layer(API / "requirements.txt", tmp_path, fake_pip)
    package.check_limits(code, layer)


@pytest.mark.parametrize(("zipped", "unzipped", "message"), [
    # a layer too big to upload with the API call
    (60 * 1024 * 1024, 100 * 1024 * 1024, "zipped"),
    # code plus layer too big once unzipped
    (40 * 1024 * 1024, 250 * 1024 * 1024, "unzip"),
])
def test_oversized_package_is_refused(code: package.Artifact, zipped: int, unzipped: int,
                                      message: str) -> None:
    big = package.Artifact(Path("layer.zip"), "", zipped, unzipped, ())
    with pytest.raises(package.PackageError, match=message):
        package.check_limits(code, big)


def test_model_files_and_digest(tmp_path: Path) -> None:
    with pytest.raises(package.PackageError, match="model.json"):
        package.model_files(tmp_path)
    (tmp_path / "model.json").write_text("{}")
    with pytest.raises(package.PackageError, match="not a LineSight model"):
        package.model_files(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({"method": "cnn", "method_state": {}}))
    (tmp_path / "arrays.npz").write_bytes(b"1")
    with pytest.raises(package.PackageError, match="is not a LineSight model|format"):
        package.model_files(tmp_path)  # what the ingest function could not load
    quick_model(tmp_path)
    (tmp_path / ".arrays.npz.k2j4x9ab").write_bytes(b"half")  # a killed save's: not shipped
    files = package.model_files(tmp_path)
    assert [name for name, _ in files] == ["arrays.npz", "model.json"]
    before = package.model_digest(files)
    (tmp_path / "arrays.npz").write_bytes(b"2")
    assert package.model_digest(files) != before


def test_a_model_of_two_trainings_is_refused_before_it_is_deployed(tmp_path: Path) -> None:
    """A retrain cut short leaves model.json of one training and arrays.npz of another:
    deployed, it would judge photos under a version it is not (or fail every one)."""
    first, second = quick_model(tmp_path / "first"), tmp_path / "second"
    shutil.copytree(first, second)
    document = json.loads((second / "model.json").read_text())
    (second / "model.json").write_text(json.dumps({**document, "pixel_threshold": 2.0}))
    with pytest.raises(package.PackageError, match="not of one training"):
        package.model_files(second)


@pytest.mark.parametrize("method, state", [
    ("onnx_patchcore", {}),
    ("ensemble", {"members": [{"name": "align_patch"}, {"name": "onnx_patchcore"}]}),
])
def test_a_model_the_layer_cannot_run_is_refused(method: str, state: dict[str, Any],
                                                 tmp_path: Path) -> None:
    """An ONNX-backbone model needs onnxruntime, which the ingest layer does not hold: say
    so at `pulumi up` rather than fail every upload in the deployed stack."""
    (tmp_path / "model.json").write_text(json.dumps({"method": method,
                                                     "method_state": state}))
    with pytest.raises(package.PackageError, match="needs onnxruntime at inference"):
        package.model_files(tmp_path)


def _pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=3).close()
    except OSError:
        return False
    return True


def test_the_layer_keeps_the_model_of_every_service_the_functions_call(
        code: package.Artifact) -> None:
    """Every client the code zip's modules create, by whatever name they import `client`
    under, is a service whose botocore model the layer keeps."""
    import re

    with zipfile.ZipFile(code.path) as archive:
        sources = [archive.read(name).decode() for name in code.names
                   if name.endswith(".py") and not name.startswith("chalice/")]
    created = {match for source in sources
               for match in re.findall(r"client\(\s*[\"']([a-z0-9-]+)[\"']", source)}
    assert created, "found no client creation: the pattern no longer matches the code"
    assert {"s3", "dynamodb", "sagemaker-runtime"} <= created
    assert created <= package.BOTOCORE_SERVICES, created - package.BOTOCORE_SERVICES


def test_lambda_pins_what_the_tests_run() -> None:
    """Every package both lists name is pinned to the same version, boto3 included: the
    Lambda runtime's own SDK may be too old for the presigned PUT's IfNoneMatch."""
    def pins(path: Path) -> dict[str, str]:
        lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
        return dict(line.lower().split("==") for line in lines if "==" in line)

    lambda_pins, tested = pins(API / "requirements.txt"), pins(REPO / "requirements.txt")
    assert "boto3" in lambda_pins
    assert {name: version for name, version in lambda_pins.items() if name in tested} == {
        name: tested[name] for name in lambda_pins if name in tested}


@pytest.mark.slow
def test_real_layer_fits_lambda(code: package.Artifact) -> None:
    """pip-installs api/requirements.txt for the Lambda platform (cached under build/)."""
    if not _pypi_reachable():
        pytest.skip("no route to the package index; the real layer build needs pip")
    layer = package.build_layer(API / "requirements.txt", REPO / "build" / "lambda")
    package.check_limits(code, layer)
    tops = {name.split("/")[1] for name in layer.names}
    assert {"numpy", "PIL", "boto3", "botocore"} <= tops
    assert "aws_lambda_powertools" not in tops  # the handlers write EMF themselves
    binaries = [n for n in layer.names if n.endswith(".so") and "cpython" in n]
    assert binaries and all("cpython-312-x86_64-linux-gnu" in n for n in binaries)
    models = {name.split("/")[3] for name in layer.names
              if name.startswith("python/botocore/data/") and name.count("/") > 4}
    assert models == package.BOTOCORE_SERVICES


@pytest.mark.slow
def test_the_real_layers_boto3_creates_every_client_the_functions_need(
        tmp_path: Path) -> None:
    """Its pure-Python SDK, on its own (no other boto3 on the path), as Lambda imports it."""
    import subprocess
    import sys

    if not _pypi_reachable():
        pytest.skip("no route to the package index; the real layer build needs pip")
    layer = package.build_layer(API / "requirements.txt", REPO / "build" / "lambda")
    with zipfile.ZipFile(layer.path) as archive:
        archive.extractall(tmp_path)
    script = ("import boto3, botocore, json, sys; "
              "[boto3.client(s, region_name='eu-west-1') for s in json.loads(sys.argv[1])]; "
              "print(botocore.__file__, botocore.__version__)")
    done = subprocess.run(
        [sys.executable, "-S", "-c", script, json.dumps(sorted(package.BOTOCORE_SERVICES))],
        env={"PYTHONPATH": str(tmp_path / "python")}, capture_output=True, text=True,
        check=False)
    assert done.returncode == 0, done.stderr
    where, version = done.stdout.split()
    assert where.startswith(str(tmp_path))
    assert tuple(int(part) for part in version.split(".")[:2]) >= (1, 35)
