"""The model artifact: a directory with `model.json` (what was learned and how) and
`arrays.npz` (the method's numpy arrays). Loading needs numpy and Pillow only.

`model.json` holds the method name, its JSON-able state, the calibration (raw threshold and
logistic width), the pixel threshold used for the heatmap and anomaly area, the training
images' aspect ratio, whether they were in colour, the training report, and
`model_version`: the first 12 hex digits of a SHA-256 over the arrays and the learned JSON,
so the same training gives the same version. `load` checks it: a folder whose two files
are of two trainings (a retrain cut short, a partial copy) is refused, not served under
the version its model.json names.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import tempfile
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.detector.calibration import Calibration
from pipeline.detector.methods import METHODS, Method

FORMAT = "linesight-detector/1"
MODEL_FILE = "model.json"
ARRAYS_FILE = "arrays.npz"


class ArtifactError(ValueError):
    """The model directory is missing, incomplete or of an unknown format."""


@dataclass(frozen=True)
class TrainedModel:
    """Everything inference needs: the fitted method and how to read its scores."""

    method: Method
    calibration: Calibration
    pixel_threshold: float
    expected_aspect: float | None
    model_version: str = ""
    # The training images' median longest side: far smaller uploads lack the detail.
    expected_longest: int | None = None
    # A per-line region of interest (x0, y0, x1, y1 fractions), applied before scoring.
    roi: tuple[float, float, float, float] | None = None
    info: Mapping[str, Any] = field(default_factory=dict)
    # Whether every training image was in colour (then greyscale images are refused), or
    # some were greyscale; None when unknown (models trained before this was recorded).
    colour: bool | None = None
    # Whether every training image was greyscale (then a colour image is made grey); False
    # too for models trained before this was recorded.
    greyscale: bool = False

    @property
    def method_name(self) -> str:
        return self.method.name


def save(model: TrainedModel, out_dir: Path) -> TrainedModel:
    """Write the artifact; returns the model with its `model_version` filled in.

    Each file is written beside its place and then renamed into it, arrays first: a write
    that fails (a full disk) leaves the model that was there as it was, and one cut short
    between the two renames leaves files `load` refuses as of two trainings."""
    out_dir.mkdir(parents=True, exist_ok=True)
    arrays, values = _split_state(model.method.state())
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
    learned = {
        "format": FORMAT,
        "method": model.method.name,
        "input_size": int(model.method.input_size),
        "method_state": values,
        "calibration": {"raw_threshold": model.calibration.raw_threshold,
                        "scale": model.calibration.scale},
        "pixel_threshold": model.pixel_threshold,
        "expected_aspect": model.expected_aspect,
        "expected_longest": model.expected_longest,
        "roi": None if model.roi is None else list(model.roi),
    }
    if model.colour is not None:  # left out when unknown, so an older model keeps its version
        learned["colour"] = model.colour
    if model.greyscale:  # left out unless set, so other models keep their versions
        learned["greyscale"] = True
    version = _version(buffer.getvalue(), learned)
    for stale in [path for path in out_dir.iterdir() if is_staging(path.name)]:
        stale.unlink(missing_ok=True)  # left by a save that was killed
    document = {**learned, "model_version": version, "training": dict(model.info)}
    text = json.dumps(document, indent=2, default=_json_default)
    staged = [_staged(out_dir, ARRAYS_FILE, buffer.getvalue())]
    try:
        staged.append(_staged(out_dir, MODEL_FILE, text.encode()))
        for (name, temporary) in staged:
            os.replace(temporary, out_dir / name)
    finally:
        for _, temporary in staged:
            temporary.unlink(missing_ok=True)
    return dataclasses.replace(model, model_version=version)


def is_staging(name: str) -> bool:
    """Whether a file name in a model folder is one `save` writes before renaming it
    (left behind only by a save that was killed): not part of the model.

    >>> is_staging(".model.json.k2j4x9ab"), is_staging("model.json")
    (True, False)
    """
    return name.startswith((f".{ARRAYS_FILE}.", f".{MODEL_FILE}."))


def _version(arrays: bytes, learned: Mapping[str, Any]) -> str:
    digest = hashlib.sha256(arrays)
    digest.update(json.dumps(learned, sort_keys=True).encode())
    return digest.hexdigest()[:12]


def _staged(out_dir: Path, name: str, data: bytes) -> tuple[str, Path]:
    """`data` written, and flushed to disk, in a new file beside `out_dir / name`."""
    handle, path = tempfile.mkstemp(dir=out_dir, prefix=f".{name}.")
    try:
        os.chmod(path, 0o644)  # as a plain write makes it (mkstemp's 0600 hides it from others)
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        Path(path).unlink(missing_ok=True)
        raise
    return name, Path(path)


def runtime_requirements(model_dir: Path) -> set[str]:
    """The packages a model needs at inference beyond numpy and Pillow (a method's
    `runtime_requires`, an ensemble's members' included), read from its model.json alone."""
    try:
        document = json.loads((model_dir / MODEL_FILE).read_text())
        names = [document["method"], *(member["name"] for member in
                                       document["method_state"].get("members", []))]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ArtifactError(f"{model_dir / MODEL_FILE} is not a LineSight model: "
                            f"{exc}") from None
    return {package for name in names if name in METHODS
            for package in getattr(METHODS[name], "runtime_requires", ())}


def load(model_dir: Path) -> TrainedModel:
    """Read an artifact written by `save`; `ArtifactError` names the file and what is wrong
    with it when either is missing, damaged or incomplete."""
    model_file = model_dir / MODEL_FILE
    if not model_file.is_file():
        raise ArtifactError(f"{model_dir} is not a LineSight model: no {MODEL_FILE}")
    try:
        document = json.loads(model_file.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{model_file} is not valid JSON: {exc.msg}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"cannot read {model_file}: {exc}") from None
    if not isinstance(document, dict):
        raise ArtifactError(f"{model_file} is not a LineSight model: not a JSON object")
    if document.get("format") != FORMAT:
        raise ArtifactError(f"{model_file} has format {document.get('format')!r}, "
                            f"expected {FORMAT!r}")
    name = document.get("method")
    if not isinstance(name, str) or name not in METHODS:
        raise ArtifactError(f"{model_file} needs method {name!r}, which this build lacks "
                            f"(known: {', '.join(sorted(METHODS))})")
    if not isinstance(document.get("method_state"), dict):
        raise ArtifactError(f"{model_file} is incomplete: no 'method_state' object")
    # the two files are of one training, checked before the arrays are unpacked and the
    # method built: a mismatch then says so, not that some array is missing
    arrays_bytes = _arrays_bytes(model_dir)
    learned = {key: value for key, value in document.items()
               if key not in ("model_version", "training")}
    if _version(arrays_bytes, learned) != document.get("model_version"):
        raise ArtifactError(
            f"{model_dir}: {MODEL_FILE} and {ARRAYS_FILE} are not of one training (a retrain "
            f"cut short, a partial copy, or an edit), so model {document.get('model_version')}"
            " is not what they hold: train again, or copy the whole folder again")
    state = {**document["method_state"], **_arrays(model_dir, arrays_bytes)}
    try:
        method = METHODS[name].from_state(state)
    except KeyError as exc:
        raise ArtifactError(f"{model_dir} is incomplete: the {name} model needs {exc}, which "
                            f"neither {MODEL_FILE} nor {ARRAYS_FILE} holds") from None
    except (TypeError, ValueError, IndexError) as exc:
        raise ArtifactError(f"{model_dir} holds a damaged {name} model: {exc}") from None
    try:
        calibration = Calibration(float(document["calibration"]["raw_threshold"]),
                                  float(document["calibration"]["scale"]))
        aspect = document.get("expected_aspect")
        longest = document.get("expected_longest")
        roi = document.get("roi")
        colour = document.get("colour")
        model = TrainedModel(
            method=method,
            calibration=calibration,
            pixel_threshold=float(document["pixel_threshold"]),
            expected_aspect=None if aspect is None else float(aspect),
            model_version=str(document["model_version"]),
            info=document.get("training", {}),
            expected_longest=None if longest is None else int(longest),
            roi=None if roi is None else (float(roi[0]), float(roi[1]), float(roi[2]),
                                          float(roi[3])),
            colour=None if colour is None else bool(colour),
            greyscale=bool(document.get("greyscale", False)),
        )
    except KeyError as exc:
        raise ArtifactError(f"{model_file} is incomplete: no {exc}") from None
    except (TypeError, ValueError, IndexError) as exc:
        raise ArtifactError(f"{model_file} holds a damaged value: {exc}") from None
    wrong = _out_of_range(model)
    if wrong:  # written by hand and stamped again: it would fail, or invert, every verdict
        raise ArtifactError(f"{model_file} holds a value no training writes: {wrong}")
    return model


def _out_of_range(model: TrainedModel) -> str:
    """What is impossible in `model`'s values, or "": each is finite, the scale, sizes and
    aspect above 0, the region of interest inside the image."""
    calibration = model.calibration
    numbers = {"calibration.raw_threshold": calibration.raw_threshold,
               "calibration.scale": calibration.scale,
               "pixel_threshold": model.pixel_threshold}
    for name, value in numbers.items():
        if not math.isfinite(value):
            return f"{name} is {value}"
    positive: dict[str, float | None] = {
        "calibration.scale": calibration.scale, "method input size": model.method.input_size,
        "expected_aspect": model.expected_aspect, "expected_longest": model.expected_longest}
    for name, size in positive.items():
        if size is not None and not 0 < size < math.inf:
            return f"{name} is {size}, not above 0"
    if model.roi is not None:
        x0, y0, x1, y1 = model.roi
        if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
            return f"roi {list(model.roi)} is not 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1"
    return ""


def _arrays_bytes(model_dir: Path) -> bytes:
    """The bytes of `arrays.npz`, which `save` always writes."""
    arrays_file = model_dir / ARRAYS_FILE
    if not arrays_file.is_file():
        raise ArtifactError(f"{model_dir} is incomplete: no {ARRAYS_FILE}")
    try:
        data = arrays_file.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"cannot read {arrays_file}: {exc.strerror or exc}") from None
    try:  # its table of contents only: a file cut short or overwritten, said as such
        zipfile.ZipFile(io.BytesIO(data)).close()
    except (zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise ArtifactError(f"{arrays_file} is damaged: {exc}") from None
    return data


def _arrays(model_dir: Path, data: bytes) -> dict[str, np.ndarray]:
    """The method's arrays, from the bytes of its `arrays.npz`."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            return {key: arrays[key] for key in arrays.files}
    except (OSError, ValueError, TypeError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise ArtifactError(f"{model_dir / ARRAYS_FILE} is damaged: {exc}") from None


def size_bytes(model_dir: Path) -> int:
    """The artifact's size on disk."""
    return sum(path.stat().st_size for path in model_dir.rglob("*") if path.is_file())


def _split_state(state: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    arrays = {key: value for key, value in state.items() if isinstance(value, np.ndarray)}
    values = {key: value for key, value in state.items() if key not in arrays}
    return arrays, json.loads(json.dumps(values, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON-able")
