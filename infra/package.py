"""The Lambda deployment package, built the way `chalice package` lays it out.

Two zips, so a code change uploads kilobytes and the four functions share one copy of the
heavy dependencies:

- the code zip: `app.py`, `chalicelib/`, the Chalice runtime (`chalice/__init__.py`,
  `chalice/app.py`) and everything under `api/vendor/` at the top level - `pipeline/`
  arrives through the `api/vendor/pipeline` symlink, exactly as Chalice's packager does it;
- the dependencies layer: `api/requirements.txt` pip-installed under `python/` for the
  Lambda platform (CPython 3.12 on x86_64, binary wheels only), cached under
  `build/lambda/` by a hash of the requirements and the platform.

Why python3.12: numpy 2.3 and later publish manylinux_2_28 wheels only (glibc 2.28). The
python3.11 runtime runs on Amazon Linux 2 (glibc 2.26) and cannot load them; python3.12
runs on Amazon Linux 2023 (glibc 2.34), which can.

Both zips are reproducible (sorted entries, fixed timestamps), so an unchanged tree gives an
unchanged hash and `pulumi up` updates nothing. `check_limits` holds them to Lambda's limits.
The model is not in the package: it goes to S3 (`infra/storage.py`), see docs/deploy.md.
"""

from __future__ import annotations

import base64
import hashlib
import inspect
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.detector.artifact import ArtifactError, is_staging, load, runtime_requirements

RUNTIME = "python3.12"
PYTHON_VERSION = "3.12"
# Amazon Linux 2023 has glibc 2.34: manylinux_2_28 wheels and the older manylinux2014 ones.
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux2014_x86_64")
ARCHITECTURE = "x86_64"
UNZIPPED_LIMIT = 250 * 1024 * 1024  # function code plus all its layers
DIRECT_UPLOAD_LIMIT = 50 * 1024 * 1024  # a zip uploaded with the API call itself
MAX_MODEL_BYTES = 256 * 1024 * 1024  # downloaded to /tmp (512 MB) on a cold start
_SKIP_DIRS = {"__pycache__", ".chalice", ".pytest_cache", ".mypy_cache"}
_SKIP_SUFFIXES = (".pyc", ".pyo")
_EPOCH = (1980, 1, 1, 0, 0, 0)
LAYER_REQUIREMENTS = Path(__file__).resolve().parents[1] / "api" / "requirements.txt"
# The AWS services the functions create clients for (`aws.client(...)` in pipeline/, the
# SageMaker adapter; a test holds the code to it). botocore ships the models of 400+
# services, 16 MB zipped, which took the layer to 42 MB of the 50 MB Lambda takes in one
# upload; the layer keeps these services' models only.
BOTOCORE_SERVICES = frozenset({"dynamodb", "firehose", "s3", "sqs", "stepfunctions",
                               "sagemaker-runtime", "sts"})

Installer = Callable[[Path, Path], None]


class PackageError(RuntimeError):
    """The package cannot be built or breaks a Lambda limit; the message says which."""


@dataclass(frozen=True)
class Artifact:
    path: Path
    sha256_base64: str  # what Lambda reports as CodeSha256
    zipped_bytes: int
    unzipped_bytes: int
    names: tuple[str, ...]


def pip_install(requirements: Path, target: Path) -> None:
    """Install Lambda-platform wheels of `requirements` into `target` (no sdists)."""
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
               "--no-compile", "--target", str(target), *platforms,
               "--implementation", "cp", "--python-version", PYTHON_VERSION,
               "--only-binary=:all:", "--requirement", str(requirements)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise PackageError(f"pip could not install {requirements} for {RUNTIME} on "
                           f"{ARCHITECTURE}:\n{result.stderr.strip()}")


def build_code(api_dir: Path, out_dir: Path) -> Artifact:
    """The function code zip (see the module docstring)."""
    if not (api_dir / "app.py").is_file():
        raise PackageError(f"{api_dir / 'app.py'} does not exist")
    entries = dict(_code_entries(api_dir))
    if "pipeline/__init__.py" not in entries:
        raise PackageError(f"{api_dir / 'vendor' / 'pipeline'} is missing: the package "
                           "needs pipeline/ (a symlink to ../../pipeline)")
    return _write_zip(out_dir / "code.zip", entries)


def _keep_botocore_models(data: Path, services: frozenset[str]) -> None:
    """Delete every service model under botocore's `data` but `services` (the files at its
    top, endpoints and partitions, stay)."""
    if not data.is_dir():
        return
    for entry in data.iterdir():
        if entry.is_dir() and entry.name not in services:
            shutil.rmtree(entry)


def build_layer(requirements: Path, out_dir: Path, install: Installer = pip_install
                ) -> Artifact:
    """The dependencies layer zip, reused while the requirements are unchanged."""
    platform = " ".join((RUNTIME, *PLATFORMS, *sorted(BOTOCORE_SERVICES)))
    key = hashlib.sha256(requirements.read_bytes() + platform.encode()).hexdigest()[:16]
    path = out_dir / f"layer-{key}.zip"
    if path.is_file():
        return _describe(path)
    with tempfile.TemporaryDirectory(prefix="linesight-layer-") as tmp:
        site = Path(tmp) / "python"
        site.mkdir()
        install(requirements, site)
        _keep_botocore_models(site / "botocore" / "data", BOTOCORE_SERVICES)
        entries = {f"python/{name}": file for name, file in _walk(site)}
        return _write_zip(path, entries)


def check_limits(code: Artifact, layer: Artifact) -> None:
    """Refuse a package Lambda would refuse, with the numbers."""
    for artifact in (code, layer):
        if artifact.zipped_bytes > DIRECT_UPLOAD_LIMIT:
            raise PackageError(f"{artifact.path.name} is {artifact.zipped_bytes:,} bytes "
                               f"zipped; Lambda takes at most {DIRECT_UPLOAD_LIMIT:,}")
    total = code.unzipped_bytes + layer.unzipped_bytes
    if total > UNZIPPED_LIMIT:
        raise PackageError(f"code and layer unzip to {total:,} bytes; Lambda allows "
                           f"{UNZIPPED_LIMIT:,}")


def layer_packages(requirements: Path = LAYER_REQUIREMENTS) -> set[str]:
    """The distribution names the dependencies layer installs (`name==version` lines).

    >>> sorted(layer_packages())[:3]
    ['boto3', 'botocore', 'numpy']
    """
    names = (re.split(r"[<>=!~;\[ ]", line.strip(), maxsplit=1)[0].lower()
             for line in requirements.read_text().splitlines())
    return {name for name in names if name and not name.startswith("#")}


def model_files(model_dir: Path) -> list[tuple[str, Path]]:
    """The files of a `linesight train` model directory, as (relative key, path); a
    PackageError when the ingest function could not run the model."""
    if not (model_dir / "model.json").is_file():
        raise PackageError(f"{model_dir} is not a model directory (no model.json); "
                           "run `linesight train` or point modelPath at one")
    try:
        missing = sorted(runtime_requirements(model_dir) - layer_packages())
    except ArtifactError as exc:
        raise PackageError(str(exc)) from None
    if missing:
        raise PackageError(
            f"the model in {model_dir} needs {', '.join(missing)} at inference, which the "
            "ingest function's layer (api/requirements.txt) does not hold: serve it from a "
            "SageMaker endpoint (sagemakerEndpoint), or train without --backbone")
    try:  # read as the ingest function will: a damaged or mixed folder fails every upload
        load(model_dir)
    except ArtifactError as exc:
        raise PackageError(str(exc)) from None
    files = sorted((name, path) for name, path in _walk(model_dir)
                   if not is_staging(Path(name).name))
    size = sum(path.stat().st_size for _, path in files)
    if size > MAX_MODEL_BYTES:
        raise PackageError(f"the model in {model_dir} is {size:,} bytes; at most "
                           f"{MAX_MODEL_BYTES:,} fit the ingest function's /tmp")
    return files


def model_digest(files: list[tuple[str, Path]]) -> str:
    """A content hash of a model directory: its S3 prefix, so a new model is a new URI."""
    digest = hashlib.sha256()
    for name, path in files:
        digest.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def _code_entries(api_dir: Path) -> Iterator[tuple[str, Path]]:
    import chalice
    import chalice.app

    yield "chalice/__init__.py", Path(inspect.getfile(chalice))
    yield "chalice/app.py", Path(inspect.getfile(chalice.app))
    yield "app.py", api_dir / "app.py"
    if (api_dir / "chalicelib").is_dir():
        for name, path in _walk(api_dir / "chalicelib"):
            yield f"chalicelib/{name}", path
    if (api_dir / "vendor").is_dir():
        yield from _walk(api_dir / "vendor")


def _walk(root: Path) -> Iterator[tuple[str, Path]]:
    """(posix path relative to root, file), following symlinks, skipping caches."""
    for directory, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for filename in sorted(filenames):
            if filename.endswith(_SKIP_SUFFIXES):
                continue
            path = Path(directory) / filename
            yield path.relative_to(root).as_posix(), path


def _write_zip(path: Path, entries: dict[str, Path]) -> Artifact:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            executable = os.access(entries[name], os.X_OK)
            info.external_attr = (0o755 if executable else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, entries[name].read_bytes())
    shutil.move(partial, path)
    return _describe(path)


def _describe(path: Path) -> Artifact:
    data = path.read_bytes()
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
    return Artifact(
        path=path,
        sha256_base64=base64.b64encode(hashlib.sha256(data).digest()).decode(),
        zipped_bytes=len(data),
        unzipped_bytes=sum(info.file_size for info in infos),
        names=tuple(info.filename for info in infos),
    )
