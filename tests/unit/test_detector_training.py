"""Training and evaluation on a small generated set, manifests, and the embedded detector."""

from __future__ import annotations

import dataclasses
import doctest
import importlib
import io
import json
import re
import shutil
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from pipeline.detector import (
    DetectionResult,
    Detector,
    DetectorError,
    InvalidImageError,
    artifact,
    clear_cache,
    load_detector,
    training,
)
from pipeline.detector.embedded import EmbeddedDetector
from pipeline.detector.evaluation import EvaluationError, evaluate
from pipeline.detector.report import render_html
from pipeline.detector.training import (
    ENSEMBLE_MARGIN,
    TrainingError,
    find_training_set,
    train_model,
)
from scripts.cli_detector import METHOD_NAMES, register
from tests.conftest import generated_samples, pixel_model

SMALL = {("train", "normal"): 16, ("train", "anomaly"): 8,
         ("test", "normal"): 8, ("test", "anomaly"): 8}
DATASETS = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets"


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generated_samples(tmp_path_factory, SMALL, size=160)


@pytest.fixture(scope="module")
def model_dir(samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pixel_model(samples, tmp_path_factory)


def test_train_then_evaluate_separates_the_generated_parts(samples: Path,
                                                           model_dir: Path) -> None:
    report = json.loads((model_dir / "train_report.json").read_text())
    assert report["method"] == "pixel_gaussian"
    assert report["n_normal"] == 16 and report["n_anomaly"] == 8
    assert "best F1" in report["threshold_rule"]
    result = evaluate(model_dir, samples / "test")
    assert result.auroc >= 0.9
    assert result.confusion.f1 >= 0.8
    document = result.to_json()
    for key in ("auroc", "f1", "precision", "recall", "threshold", "n_normal", "n_anomaly",
                "ms_per_image"):
        assert isinstance(document[key], int | float), key
    assert len(document["images"]) == 16


def test_the_chosen_method_is_cross_validated_on_other_fold_assignments(
        samples: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    cross_validate = training._cross_validate

    def watched(name, template, images, split, notify=None, workers=1):  # type: ignore[no-untyped-def]
        held_out = [[("normal", i) for i, f in enumerate(split.normal_fold) if f == fold]
                    + [("anomaly", i) for i, f in enumerate(split.anomaly_fold) if f == fold]
                    for fold in range(split.folds)]
        seen.append(frozenset(frozenset(group) for group in held_out))
        return cross_validate(name, template, images, split, notify, workers)

    monkeypatch.setattr(training, "_cross_validate", watched)
    report = train_model(samples, tmp_path / "model", methods=["pixel_gaussian"])
    assert len(seen) == 1 + training.OTHER_ASSIGNMENTS == 3
    assert len(set(seen)) == 3  # the same images, held out in three different groupings
    others = report.cv_auroc_other_assignments
    assert len(others) == 2 and all(0.5 <= value <= 1.0 for value in others)
    stored = json.loads((tmp_path / "model" / "model.json").read_text())["training"]
    assert stored["cv_auroc_other_assignments"] == list(others)


def test_leave_one_out_over_normals_has_no_other_assignment(samples: Path,
                                                              tmp_path: Path) -> None:
    data = tmp_path / "data"
    for path in sorted((samples / "train" / "normal").glob("*.jpg"))[:8]:
        (data / "train" / "normal").mkdir(parents=True, exist_ok=True)
        shutil.copy(path, data / "train" / "normal" / path.name)
    report = train_model(data, tmp_path / "model", methods=["pixel_gaussian"])
    assert report.cv_folds == 8  # one normal per fold: any shuffle groups them alike
    assert report.cv_auroc_other_assignments == ()


def test_evaluation_lists_refused_images_and_leaves_them_out(samples: Path, model_dir: Path,
                                                             tmp_path: Path) -> None:
    test = tmp_path / "test"
    shutil.copytree(samples / "test", test)
    (test / "anomaly" / "upload-error.jpg").write_text("<html>502</html>")
    result = evaluate(model_dir, test)
    assert [item["reason"] for item in result.invalid] == ["not_an_image"]
    assert result.to_json()["n_anomaly"] == 8
    app = typer.Typer()
    register(app)
    shown = CliRunner().invoke(app, ["evaluate", str(model_dir), str(test), "--json",
                                     str(tmp_path / "out.json")], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    assert "anomaly/upload-error.jpg: not_an_image" in shown.stdout
    assert "<li>anomaly/upload-error.jpg: not_an_image</li>" in render_html(result)


def test_normal_only_training_uses_the_percentile_rule(samples: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(samples / "train" / "normal", data / "train" / "normal")
    report = train_model(data, tmp_path / "model", methods=["pixel_gaussian"])
    assert report.n_anomaly == 0 and report.n_synthetic == 16
    assert "normal-only" in report.threshold_rule
    assert report.cv_auroc is not None  # judged against synthetic defects
    detector = load_detector("embedded", str(tmp_path / "model"))
    normal = next((samples / "test" / "normal").glob("*.jpg")).read_bytes()
    assert 0.0 < detector.detect(normal, "image/jpeg").score < 0.5


def test_the_embedded_detector_fills_the_lookout_shape(samples: Path, model_dir: Path) -> None:
    clear_cache()
    detector = load_detector("embedded", str(model_dir))
    assert isinstance(detector, Detector)
    assert load_detector("embedded", str(model_dir)) is detector  # cached
    image = next((samples / "test" / "anomaly").glob("*.jpg")).read_bytes()
    result = detector.detect(image, "image/jpeg")
    assert isinstance(result, DetectionResult)
    assert result.model_version == detector.model_version and len(result.model_version) == 12
    assert result.threshold == 0.5
    names = [item["Name"] for item in result.anomalies]
    assert names[0] == "background"
    total = sum(item["PixelAnomaly"]["TotalPercentageArea"] for item in result.anomalies)
    assert total == pytest.approx(100.0, abs=0.01)
    assert result.is_anomalous  # a generated defect this model catches
    assert names == ["background", "anomaly"]
    assert result.heatmap_png is not None and result.heatmap_png[:8] == b"\x89PNG\r\n\x1a\n"
    assert 1_000 < len(result.heatmap_png) < 100_000
    lookout = result.to_lookout()
    assert {"IsAnomalous", "Confidence", "Anomalies", "Score", "Threshold",
            "ModelVersion"} <= lookout.keys()


def test_threshold_override_moves_the_verdict_not_the_score(samples: Path,
                                                            model_dir: Path) -> None:
    detector = load_detector("embedded", str(model_dir))
    image = next((samples / "test" / "anomaly").glob("*.jpg")).read_bytes()
    default = detector.detect(image, "image/jpeg")
    strict = detector.detect(image, "image/jpeg", threshold=0.0)
    lenient = detector.detect(image, "image/jpeg", threshold=1.0)
    assert default.score == strict.score == lenient.score
    assert strict.is_anomalous and not lenient.is_anomalous
    at_threshold = detector.detect(image, "image/jpeg", threshold=default.score)
    assert at_threshold.confidence == pytest.approx(0.5)
    with pytest.raises(ValueError, match="threshold"):
        detector.detect(image, "image/jpeg", threshold=2.0)


def test_invalid_images_raise_through_the_detector(model_dir: Path) -> None:
    detector = load_detector("embedded", str(model_dir))
    with pytest.raises(InvalidImageError) as caught:
        detector.detect(b"<html>oops</html>", "image/jpeg")
    assert caught.value.reason == "not_an_image"


@pytest.mark.parametrize("raw", [float("nan"), float("inf")])
def test_a_score_that_is_not_finite_is_a_detector_error(samples: Path, model_dir: Path,
                                                        raw: float,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """No method is known to give one; if one did, NaN made a normal verdict with a NaN
    confidence, and either made a record DynamoDB refuses, after the verdict was logged."""
    detector = EmbeddedDetector(artifact.load(model_dir))
    monkeypatch.setattr(detector.model.method, "score",
                        lambda rgb: (raw, np.zeros(rgb.shape[:2], np.float32)))
    image = next((samples / "test" / "normal").glob("*.jpg")).read_bytes()
    with pytest.raises(DetectorError, match=f"scored the image {raw}, not a finite number"):
        detector.detect(image, "image/jpeg")
    # evaluate lists each such image, where the error ended the run in a traceback
    monkeypatch.setattr(type(detector.model.method), "score",
                        lambda self, rgb: (raw, np.zeros(rgb.shape[:2], np.float32)))
    steps: list[tuple[int, int]] = []
    evaluated = evaluate(model_dir, samples / "test", keep_heatmaps=False, allow_one_class=True,
                         progress=lambda _, done, total: steps.append((done, total)))
    assert evaluated.images == () and {item["reason"] for item in evaluated.invalid} == {
        "detector_error"}
    total = len(evaluated.invalid)
    assert [done for done, _ in steps] == list(range(1, total + 1))  # 6/5 when refused


def test_artifact_round_trip_is_stable_and_small(model_dir: Path, tmp_path: Path) -> None:
    model = artifact.load(model_dir)
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / ".model.json.k2j4x9ab").write_text("{")  # a killed save's
    again = artifact.save(model, tmp_path / "copy")
    assert again.model_version == model.model_version
    # readable by others, as a plain write makes them, and nothing of a killed save left
    assert {path.name: path.stat().st_mode & 0o777 for path in (tmp_path / "copy").iterdir()
            } == {"arrays.npz": 0o644, "model.json": 0o644}
    assert artifact.size_bytes(model_dir) < 50_000_000
    with pytest.raises(artifact.ArtifactError, match="model.json"):
        artifact.load(tmp_path)


@pytest.mark.parametrize("failing", [1, 2], ids=["writing-arrays", "writing-model-json"])
def test_a_save_that_fails_leaves_the_model_that_was_there(
        model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: int) -> None:
    """A retrain into a model's folder that runs out of disk (or is stopped) while writing
    left a cut arrays.npz beside the old model.json: the good model was lost."""
    import os

    out = tmp_path / "model"
    shutil.copytree(model_dir, out)
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    old = artifact.load(out).model_version
    other = dataclasses.replace(artifact.load(model_dir), pixel_threshold=0.123)
    fsyncs = iter(range(1, 3))

    def disk_full(fd: int) -> None:
        if next(fsyncs) == failing:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        artifact.save(other, out)
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    assert artifact.load(out).model_version == old


def test_region_of_interest_is_kept_in_the_model(samples: Path, tmp_path: Path) -> None:
    roi = (0.1, 0.1, 0.9, 0.9)
    train_model(samples, tmp_path / "model", methods=["pixel_gaussian"], roi=roi)
    assert artifact.load(tmp_path / "model").roi == roi
    clear_cache()
    detector = load_detector("embedded", str(tmp_path / "model"))
    image = next((samples / "test" / "normal").glob("*.jpg")).read_bytes()
    assert detector.detect(image, "image/jpeg").heatmap_png


def test_images_in_subfolders_count_and_each_keeps_its_own_mask(samples: Path,
                                                                 tmp_path: Path) -> None:
    """One subfolder per defect type, as many data sets come, with file names that repeat
    across them: every image is found, and a mask goes to the image at its own place."""
    data = tmp_path / "data"
    shutil.copytree(samples / "train" / "normal", data / "train" / "normal" / "camera-1")
    anomalies = sorted((samples / "train" / "anomaly").glob("*.jpg"))
    for kind, chosen in (("crack", anomalies[:4]), ("scratch", anomalies[4:])):
        for number, path in enumerate(chosen):
            (data / "train" / "anomaly" / kind).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, data / "train" / "anomaly" / kind / f"{number:03}.jpg")
            (data / "masks" / kind).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, data / "masks" / kind / f"{number:03}.png")
    (data / "train" / "anomaly" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    found = find_training_set(data)
    assert (len(found.normal), len(found.anomaly), len(found.masks)) == (16, 8, 8)
    assert all(mask.parent.name == image.parent.name and mask.stem == image.stem
               for image, mask in found.masks.items())
    shutil.copytree(samples / "test" / "anomaly", tmp_path / "test" / "anomaly" / "crack")
    shutil.copytree(samples / "test" / "normal", tmp_path / "test" / "normal")
    report = train_model(data, tmp_path / "model", methods=["pixel_gaussian"])
    assert (report.n_normal, report.n_anomaly, report.n_masks) == (16, 8, 8)
    assert evaluate(tmp_path / "model", tmp_path / "test").to_json()["n_anomaly"] == 8


def test_the_mvtec_ad_layout_trains_and_evaluates(samples: Path, tmp_path: Path) -> None:
    """good/ for normal images, one folder per defect type, masks as
    ground_truth/<defect>/<name>_mask.png: the layout most anomaly-detection data sets use."""
    category = tmp_path / "bottle"
    shutil.copytree(samples / "train" / "normal", category / "train" / "good")
    anomalies = sorted((samples / "train" / "anomaly").glob("*.jpg"))
    for kind, chosen in (("crack", anomalies[:4]), ("scratch", anomalies[4:])):
        for number, path in enumerate(chosen):
            (category / "train" / kind).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, category / "train" / kind / f"{number:03}.jpg")
            (category / "ground_truth" / kind).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, category / "ground_truth" / kind / f"{number:03}_mask.png")
    found = find_training_set(category)
    assert (len(found.normal), len(found.anomaly), len(found.masks)) == (16, 8, 8)
    assert all(mask.parent.name == image.parent.name and mask.stem == f"{image.stem}_mask"
               for image, mask in found.masks.items())
    shutil.copytree(samples / "test" / "normal", category / "test" / "good")
    shutil.copytree(samples / "test" / "anomaly", category / "test" / "crack")
    report = train_model(category, tmp_path / "model", methods=["pixel_gaussian"])
    assert (report.n_normal, report.n_anomaly, report.n_masks) == (16, 8, 8)
    for test_dir in (category, category / "test"):
        counts = evaluate(tmp_path / "model", test_dir).to_json()
        assert (counts["n_normal"], counts["n_anomaly"]) == tuple(
            len(list((samples / "test" / label).glob("*.jpg"))) for label in ("normal", "anomaly"))


def test_images_are_named_by_their_place_whatever_form_their_paths_take(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A manifest can resolve some images to relative paths and others to absolute ones."""
    from pipeline.detector.training import TrainingSet, _ImageCache

    monkeypatch.chdir(tmp_path)
    relative, absolute = Path("data/normal/a.jpg"), tmp_path / "data" / "anomaly" / "b.jpg"
    cache = _ImageCache(TrainingSet((relative,), (absolute,)), lambda *_: None)
    assert [cache.shown(path) for path in (relative, absolute)] == ["normal/a.jpg",
                                                                    "anomaly/b.jpg"]


def test_mixed_layouts_are_read_or_refused_clearly(samples: Path, tmp_path: Path) -> None:
    """good/ beside anomaly/ reads as normal/ would, masks matched under anomaly/; normal/
    and good/ both holding images is refused, in training and in evaluate."""
    data = tmp_path / "data"
    shutil.copytree(samples / "train" / "normal", data / "good")
    anomalies = sorted((samples / "train" / "anomaly").glob("*.jpg"))
    for kind in ("crack", "scratch"):
        (data / "anomaly" / kind).mkdir(parents=True)
        (data / "masks" / kind).mkdir(parents=True)
        for number, path in enumerate(anomalies[:2]):
            shutil.copy(path, data / "anomaly" / kind / f"{number:03}.jpg")
            shutil.copy(path, data / "masks" / kind / f"{number:03}.png")
    found = find_training_set(data)
    assert (len(found.normal), len(found.anomaly), len(found.masks)) == (16, 4, 4)
    assert all(mask.parent.name == image.parent.name for image, mask in found.masks.items())
    shutil.copytree(samples / "train" / "normal", data / "normal")
    with pytest.raises(TrainingError, match="both normal/ and good/"):
        find_training_set(data)
    with pytest.raises(EvaluationError, match="both normal/ and good/"):
        evaluate(tmp_path / "no-model", data)


def test_masks_set_the_pixel_threshold(samples: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(samples / "train", data / "train")
    (data / "masks").mkdir()
    mask = np.zeros((160, 160), np.uint8)
    mask[60:100, 60:100] = 255
    for image in (data / "train" / "anomaly").glob("*.jpg"):
        Image.fromarray(mask).save(data / "masks" / f"{image.stem}.png")
    report = train_model(data, tmp_path / "model", methods=["pixel_gaussian"])
    assert report.n_masks == 8
    assert "Dice" in report.pixel_threshold_rule


def test_training_skips_what_detection_would_refuse_and_says_why(samples: Path,
                                                                tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(samples / "train", data / "train")
    (data / "train" / "normal" / "upload-error.jpg").write_text("<html>502</html>")
    first = sorted((data / "train" / "anomaly").glob("*.jpg"))[0]
    with Image.open(first) as image:  # another camera: 16:9 where the rest are square
        wide = image.resize((image.width * 16 // 9, image.height))
    wide.save(data / "train" / "anomaly" / "camera-2.jpg")
    app = typer.Typer()
    register(app)
    shown = CliRunner().invoke(app, ["train", str(data), "--out", str(tmp_path / "model"),
                                     "--method", "pixel_gaussian"], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    assert "left out of training: 2 image(s)" in shown.output
    # named by their place, so that bad.jpg in two camera folders are told apart
    assert "anomaly/camera-2.jpg: off_size" in shown.output
    assert "normal/upload-error.jpg: not_an_image" in shown.output
    report = json.loads((tmp_path / "model" / "train_report.json").read_text())
    assert (report["n_normal"], report["n_anomaly"]) == (16, 8)
    assert sorted(item.split(":")[1].split()[0] for item in report["skipped"]) == [
        "not_an_image", "off_size"]
    buffer = io.BytesIO()
    wide.save(buffer, "JPEG")
    detector = load_detector("embedded", str(tmp_path / "model"))
    with pytest.raises(InvalidImageError) as refused:
        detector.detect(buffer.getvalue(), "image/jpeg")
    assert refused.value.reason == "off_size"  # what training left out, detection refuses


def test_a_lone_labelled_anomaly_is_set_aside_and_training_is_normal_only(
        samples: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(samples / "train" / "normal", data / "train" / "normal")
    (data / "train" / "anomaly").mkdir()
    lone = sorted((samples / "train" / "anomaly").glob("*.jpg"))[0]
    shutil.copy(lone, data / "train" / "anomaly" / lone.name)
    report = train_model(data, tmp_path / "model", methods=["pixel_gaussian"])
    assert (report.n_normal, report.n_anomaly) == (16, 0)
    assert report.n_synthetic > 0 and "normal-only" in report.threshold_rule
    assert report.skipped == (f"anomaly/{lone.name}: the only labelled anomaly; judging methods by "
                              "labelled anomalies needs 2 or more, so training is normal-only",)


def test_methods_that_need_two_normals_per_fold_are_listed_as_not_tried(
        samples: Path, tmp_path: Path) -> None:
    """3 normals and 2 anomalies make 2 folds, one of which trains on a single normal:
    the methods that learn how normals vary cannot be judged, and say so, not fail."""
    data = tmp_path / "data"
    for label, count in (("normal", 3), ("anomaly", 2)):
        (data / "train" / label).mkdir(parents=True)
        for image in sorted((samples / "train" / label).glob("*.jpg"))[:count]:
            shutil.copy(image, data / "train" / label / image.name)
    report = train_model(data, tmp_path / "model")
    errors = {candidate.method: candidate.error for candidate in report.candidates}
    for name in ("align", "align_patch", "shape"):
        assert errors[name] == ("not tried: needs at least 2 normal images, found 1 (in each "
                                "cross-validation fold's training part; 3 normal and 2 "
                                "anomalous in all, 2 folds)")
    assert report.method not in ("align", "align_patch", "shape")
    with pytest.raises(TrainingError, match="method shape needs at least 2 normal images"):
        train_model(data, tmp_path / "model", methods=["shape"])


def test_training_errors_are_one_clear_sentence(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="not a directory"):
        train_model(tmp_path / "missing", tmp_path / "out")
    with pytest.raises(TrainingError, match="workers must be 1 or more, not 0"):
        train_model(tmp_path, tmp_path / "out", workers=0)
    (tmp_path / "train" / "normal").mkdir(parents=True)
    with pytest.raises(TrainingError, match="no normal images"):
        train_model(tmp_path, tmp_path / "out")
    with pytest.raises(TrainingError, match="unknown method") as unknown:
        train_model(tmp_path, tmp_path / "out", methods=["nope"])
    assert "align_patch" in str(unknown.value) and "ensemble" not in str(unknown.value)
    for index in range(4):  # screenshots, say: palette PNGs, which detection refuses
        Image.new("P", (64, 64)).save(tmp_path / "train" / "normal" / f"{index}.png")
    with pytest.raises(TrainingError, match=r"found 0; skipped 4: 0.png: unsupported_mode"):
        train_model(tmp_path, tmp_path / "out")


class _Constant:
    """A useless method: every image scores the same."""

    name = "constant"
    input_size = 64

    def fit(self, normals, anomalies, rng):
        self.fitted = True

    def score(self, image):
        return 1.0, np.ones((8, 8), np.float32)

    def state(self):
        return {}

    @classmethod
    def from_state(cls, state):
        return cls()


class _Broken(_Constant):
    """A method that fails on every image."""

    name = "broken"

    def score(self, image):
        raise RuntimeError("boom")


def test_selection_picks_the_best_cross_validated_method(samples: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    from pipeline.detector import methods

    monkeypatch.setitem(methods.METHODS, "constant", _Constant)
    monkeypatch.setitem(methods.METHODS, "broken", _Broken)
    progress: list[tuple[str, int, int]] = []
    report = train_model(samples, tmp_path / "model", progress=lambda *step: progress.append(step),
                         methods=["constant", "broken", "pixel_gaussian"])
    by_name = {candidate.method: candidate for candidate in report.candidates}
    assert report.method == "pixel_gaussian"
    assert by_name["constant"].auroc == 0.5
    assert "boom" in by_name["broken"].error and by_name["broken"].auroc is None
    assert by_name["pixel_gaussian"].folds == 8  # min(10, 16 normal, 8 anomalies)
    assert any(step[0].startswith("cross-validating") for step in progress)
    # each method's folds too, so a slow method does not look stuck
    assert ("  pixel_gaussian: folds", 8, 8) in progress
    assert ("  broken: folds", 1, 8) not in progress  # it failed in its first fold
    assert json.loads((tmp_path / "model" / "model.json").read_text())["method"] == (
        "pixel_gaussian")


class _Channel:
    """Scores an image by the mean of one colour channel."""

    name = "red"
    channel = 0
    input_size = 32

    def fit(self, normals, anomalies, rng):
        self.fitted = True

    def score(self, image):
        plane = image[..., self.channel].astype(np.float32)
        return float(plane.mean()), plane

    def state(self):
        return {"marker": np.zeros(1, np.float32)}

    @classmethod
    def from_state(cls, state):
        assert state["marker"].shape == (1,)
        return cls()


class _Green(_Channel):
    name = "green"
    channel = 1



class _SlowRed(_Channel):
    """`red`'s very scores, at a cost (as `cnn` and `cnn_coarse` where both rank perfectly)."""

    name = "slow_red"
    variant_of = "red"

    def score(self, image):
        busy_until = time.thread_time() + 0.02  # work, not waiting: scores are timed in CPU time
        while time.thread_time() < busy_until:
            pass
        return super().score(image)


def _colour_set(folder: Path, shifted_channels: tuple[int, ...]) -> Path:
    """12 normal and 8 anomalous flat 32-px images; each anomaly has one channel shifted."""
    rng = np.random.default_rng(0)
    for label, count in (("normal", 12), ("anomaly", 8)):
        (folder / "train" / label).mkdir(parents=True)
        for index in range(count):
            colour = rng.normal(100, 3, 3)
            if label == "anomaly":
                colour[shifted_channels[index % len(shifted_channels)]] += 40
            pixels = np.clip(np.broadcast_to(colour, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / "train" / label / f"{index}.png")
    return folder


def test_a_tie_in_cross_validation_goes_to_the_faster_method(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.detector import methods

    monkeypatch.setitem(methods.METHODS, "red", _Channel)
    monkeypatch.setitem(methods.METHODS, "slow_red", _SlowRed)
    data = _colour_set(tmp_path / "data", shifted_channels=(0,))
    report = train_model(data, tmp_path / "model", methods=["slow_red", "red"])
    by_name = {candidate.method: candidate for candidate in report.candidates}
    assert by_name["slow_red"].auroc == by_name["red"].auroc == 1.0
    assert by_name["slow_red"].f1 == by_name["red"].f1
    assert report.method == "red"


class _SlowGreen(_Green):
    """`green` at another size, as `cnn_coarse` is `cnn`."""

    name = "slow_green"
    variant_of = "green"


@pytest.mark.parametrize("named, slow_green_tried", [
    (False, False),  # green trails red by about 0.5: its variant is not worth its folds
    (True, True),  # asked for by name: tried whatever green scored
])
def test_a_variant_is_tried_only_when_its_method_comes_near_the_best(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, named: bool,
        slow_green_tried: bool) -> None:
    from pipeline.detector import training

    registry = {"slow_green": _SlowGreen, "red": _Channel, "green": _Green}
    monkeypatch.setattr(training, "METHODS", registry)
    data = _colour_set(tmp_path / "data", shifted_channels=(0,))  # only red tells
    report = train_model(data, tmp_path / "model",
                         methods=list(registry) if named else None)
    by_name = {candidate.method: candidate for candidate in report.candidates}
    assert report.method == "red" and by_name["green"].auroc < 0.8
    assert (by_name["slow_green"].auroc is not None) == slow_green_tried
    if not slow_green_tried:
        assert by_name["slow_green"].error.startswith(
            "not tried: green, the same method at another size, scored")
        assert "over 2 method(s)" in report.selection_rule
    # listed as registered (or named), though the variant was judged last
    assert [c.method for c in report.candidates][:3] == list(registry)


def test_a_variant_is_tried_when_its_method_is_the_best(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.detector import training

    monkeypatch.setattr(training, "METHODS", {"red": _Channel, "slow_red": _SlowRed})
    report = train_model(_colour_set(tmp_path / "data", shifted_channels=(0,)),
                         tmp_path / "model")
    assert [c.auroc for c in report.candidates] == [1.0, 1.0]


def test_an_ensemble_wins_when_its_members_see_different_defects(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.detector import methods

    monkeypatch.setitem(methods.METHODS, "red", _Channel)
    monkeypatch.setitem(methods.METHODS, "green", _Green)
    data = _colour_set(tmp_path / "data", shifted_channels=(0, 1))  # half red, half green
    report = train_model(data, tmp_path / "model", methods=["red", "green"])
    by_name = {candidate.method: candidate for candidate in report.candidates}
    assert by_name["red"].auroc < 0.95 and by_name["green"].auroc < 0.95
    assert report.method.startswith("ensemble(") and report.cv_auroc == 1.0
    assert report.cv_auroc_other_assignments == ()  # its members would each need it
    clear_cache()
    detector = load_detector("embedded", str(tmp_path / "model"))
    odd = np.zeros((32, 32, 3), np.uint8) + np.array([100, 145, 100], np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(odd).save(buffer, "PNG")
    assert detector.detect(buffer.getvalue(), "image/png").is_anomalous




class _ThreadCounting(_Channel):
    """Notes how many BLAS threads numpy had while it scored."""

    name = "thread_counting"
    seen: ClassVar[set[int]] = set()

    def score(self, image):
        from pipeline.detector.threads import _openblas

        functions = _openblas()
        assert functions is not None
        self.seen.add(int(functions[1]()))
        return super().score(image)


def test_cross_validation_scores_on_one_blas_thread_as_the_pipeline_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.detector import methods
    from pipeline.detector.threads import _openblas

    if _openblas() is None:
        pytest.skip("numpy's OpenBLAS thread setter is not reachable on this build")
    monkeypatch.setitem(methods.METHODS, _ThreadCounting.name, _ThreadCounting)
    _ThreadCounting.seen.clear()
    data = _colour_set(tmp_path / "data", shifted_channels=(0,))
    train_model(data, tmp_path / "model", methods=[_ThreadCounting.name])
    assert _ThreadCounting.seen == {1}


def test_an_ensemble_pairs_two_families_not_one_method_at_two_sizes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`slow_red` ranks second (red's scores, slower) but repeats red's opinion; the pair
    is red and green, which see different defects."""
    from pipeline.detector import methods

    for method in (_Channel, _SlowRed, _Green):
        monkeypatch.setitem(methods.METHODS, method.name, method)
    data = _colour_set(tmp_path / "data", shifted_channels=(0, 0, 1))  # 2/3 red, 1/3 green
    report = train_model(data, tmp_path / "model", methods=["red", "slow_red", "green"])
    by_name = {candidate.method: candidate for candidate in report.candidates}
    assert by_name["slow_red"].auroc == by_name["red"].auroc > by_name["green"].auroc
    assert report.method == "ensemble(red+green)"


def _write_manifest(path: Path, entries: list[tuple[str, int]]) -> None:
    lines = [json.dumps({"source-ref": ref, "anomaly-label": label,
                         "anomaly-label-metadata": {
                             "class-name": "anomaly" if label else "normal",
                             "type": "groundtruth/image-classification"}})
             for ref, label in entries]
    path.write_text("\n".join(lines) + "\n")


def test_manifest_with_s3_refs_maps_to_local_files_by_name(samples: Path,
                                                           tmp_path: Path) -> None:
    normal = sorted((samples / "train" / "normal").glob("*.jpg"))[:6]
    anomaly = sorted((samples / "train" / "anomaly").glob("*.jpg"))[:3]
    manifest = tmp_path / "train.manifest"
    _write_manifest(manifest, [(f"s3://old-bucket/images/{p.name}", 0) for p in normal]
                    + [(f"s3://old-bucket/images/{p.name}", 1) for p in anomaly])
    found = find_training_set(samples, manifest)
    assert [p.name for p in found.normal] == [p.name for p in normal]
    assert [p.name for p in found.anomaly] == [p.name for p in anomaly]
    report = train_model(samples, tmp_path / "model", manifest=manifest,
                         methods=["pixel_gaussian"])
    assert (report.n_normal, report.n_anomaly) == (6, 3)


def test_manifest_with_relative_refs_and_missing_files(samples: Path, tmp_path: Path) -> None:
    manifest = samples / "relative.manifest"
    _write_manifest(manifest, [("train/normal/normal-001.jpg", 0),
                               ("train/anomaly/anomaly-001-scratch.jpg", 1)])
    found = find_training_set(samples, manifest)
    assert found.anomaly[0] == samples / "train" / "anomaly" / "anomaly-001-scratch.jpg"
    missing = tmp_path / "missing.manifest"
    _write_manifest(missing, [("s3://bucket/nowhere.jpg", 0)])
    with pytest.raises(TrainingError, match="not found"):
        find_training_set(samples, missing)
    contradicting = tmp_path / "bad.manifest"
    contradicting.write_text(json.dumps({"source-ref": "x.jpg", "anomaly-label": 0,
                                         "anomaly-label-metadata": {"class-name": "anomaly"}}))
    with pytest.raises(TrainingError, match="contradicts"):
        find_training_set(samples, contradicting)


@pytest.mark.dataset
def test_real_lookout_manifests_resolve_against_the_cookies_folder() -> None:
    cookies = DATASETS / "cookies"
    if not (cookies / "manifests").is_dir():
        pytest.skip(f"{cookies} is absent: the shared cookie data set is not on this machine")
    for name in ("train_class.manifest", "train_segmentation.manifest"):
        found = find_training_set(cookies, cookies / "manifests" / name)
        assert (len(found.normal), len(found.anomaly)) == (31, 32)
        assert all("train" in path.parts for path in found.normal + found.anomaly)
        assert all(path.parent.name == "anomaly" for path in found.anomaly)
    segmentation = find_training_set(cookies, cookies / "manifests" / "train_segmentation.manifest")
    assert len(segmentation.masks) == 32


def test_cli_train_and_evaluate(samples: Path, tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    trained = runner.invoke(app, ["train", str(samples), "--out", str(tmp_path / "m"),
                                  "--method", "pixel_gaussian"])
    assert trained.exit_code == 0, trained.output
    assert "pixel_gaussian" in trained.output and "threshold" in trained.output
    assert "decoding not included" in " ".join(trained.output.split())
    # not a terminal (piped, CI): progress is plain lines on stderr, each task's last step
    assert "cross-validating" not in trained.stdout
    steps = [line.rsplit(": ", 1) for line in trained.stderr.splitlines()]
    assert any(what.startswith("decoding images at") for what, _ in steps)
    assert all(done.split("/")[0].isdigit() for _, done in steps), trained.stderr
    evaluated = runner.invoke(app, ["evaluate", str(tmp_path / "m"), str(samples / "test"),
                                    "--json", str(tmp_path / "out.json"),
                                    "--html", str(tmp_path / "out.html")])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads((tmp_path / "out.json").read_text())["n_anomaly"] == 8
    assert "scoring test images: 16/16" in evaluated.stderr.splitlines()
    page = (tmp_path / "out.html").read_text()
    assert "<svg" in page and "ROC" in page and "Confusion matrix" in page
    assert "How the model was chosen" in page and "out-of-fold" in page  # the threshold's story
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "test split" not in evaluated.output
    top = runner.invoke(app, ["evaluate", str(tmp_path / "m"), str(samples), "--json",
                              str(tmp_path / "top.json")])
    assert top.exit_code == 0, top.output
    assert f"scoring {samples / 'test'}: the test split of the data set in {samples}" in (
        " ".join(top.output.split()))  # a data set's top folder: say which images are scored
    first = json.loads((tmp_path / "m" / "model.json").read_text())["model_version"]
    assert "replacing" not in trained.output
    again = runner.invoke(app, ["train", str(samples), "--out", str(tmp_path / "m"),
                                "--method", "texture"], terminal_width=200)
    assert again.exit_code == 0, again.output
    assert f"replacing model {first}" in again.output  # the deployed folder, say: say so


def test_train_help_names_every_method_training_tries() -> None:
    from pipeline.detector.methods import METHODS

    tried_unasked = [name for name, cls in METHODS.items()
                     if getattr(cls, "auto_select", True)]
    assert list(METHOD_NAMES) == tried_unasked
    app = typer.Typer()
    register(app)
    shown = CliRunner().invoke(app, ["train", "--help"], terminal_width=200).output
    assert all(name in shown for name in [*METHOD_NAMES, "onnx_patchcore"])


@pytest.mark.parametrize("args", [
    ["train", "/nonexistent/dir", "--out", "/tmp/x"],  # a typo in the data folder
    ["evaluate", "/nonexistent/model", ".", "--json", "/tmp/x.json"],  # no such model
    ["train", ".", "--out", "/tmp/x", "--workers", "0"],  # no one to fit the folds
])
def test_cli_mistakes_are_one_line_not_a_traceback(args: list[str]) -> None:
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_cli_outputs_that_cannot_be_written_are_refused_before_any_work(
        model_dir: Path, samples: Path, tmp_path: Path) -> None:
    """Not after minutes of scoring or training: a directory given as a file, a file given
    as a folder."""
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for args, said in [
        (["evaluate", str(model_dir), str(samples / "test"), "--json", str(tmp_path)],
         f"{tmp_path} is a directory; give a file name"),
        (["evaluate", str(model_dir), str(samples / "test"), "--json",
          str(tmp_path / "x.json"), "--html", str(a_file / "x.html")],
         f"cannot write {a_file / 'x.html'}: {a_file} is a file"),
        (["train", str(samples), "--out", str(a_file)],
         f"{a_file} is a file; give a directory for the model"),
    ]:
        result = runner.invoke(app, args, terminal_width=300)
        assert result.exit_code == 2, result.output
        squeezed = re.sub(r"[\s│]+", "", result.output)  # rich's error box wraps anywhere
        assert said.replace(" ", "") in squeezed, result.output
        assert "Traceback" not in result.output
        assert "scoring" not in result.output and "%" not in result.output  # no work began
    assert not (tmp_path / "x.json").exists()


def test_cli_empty_test_folder(model_dir: Path, tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["evaluate", str(model_dir), str(tmp_path),
                                      "--json", str(tmp_path / "x.json")])
    assert result.exit_code == 2
    assert "no normal images" in result.stderr and "no normal images" not in result.stdout


@pytest.mark.parametrize("module", [
    "pipeline.detector.base", "pipeline.detector.calibration", "pipeline.detector.imageio",
    "pipeline.detector.metrics", "pipeline.detector.heatmap",
    "pipeline.detector.loader", "pipeline.detector.sagemaker", "pipeline.detector.ops",
    "pipeline.detector.training", "pipeline.detector.synthetic",
])
def test_doctests(module: str) -> None:
    outcome = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert outcome.attempted > 0 and outcome.failed == 0


def test_inference_imports_no_torch_or_scipy() -> None:
    import subprocess
    import sys

    code = ("import sys, pipeline.detector, pipeline.detector.embedded; "
            "bad = [m for m in ('torch', 'scipy', 'sklearn') if m in sys.modules]; "
            "sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_synthetic_defects_change_the_image() -> None:
    from pipeline.detector.synthetic import KINDS, synthetic_anomaly

    image = np.full((64, 64, 3), 120, np.uint8)
    for kind in KINDS:
        changed = synthetic_anomaly(image, np.random.default_rng(1), kind)
        assert (changed != image).any(), kind


@pytest.mark.parametrize("normal, anomalous, at_least, at_most", [
    # perfectly separated: only the fixed margin is asked for
    ([0.1] * 14, [0.9] * 8, ENSEMBLE_MARGIN, ENSEMBLE_MARGIN),
    # a weak best method on 31 + 31 images (synthetic defects on cookies): its AUROC
    # could move by about 0.07 by chance, and so must the ensemble's gain
    (list(np.linspace(0.0, 1.0, 31)), list(np.linspace(0.2, 1.2, 31)), 0.06, 0.08),
])
def test_an_ensemble_must_gain_more_than_chance(normal: list[float], anomalous: list[float],
                                                at_least: float, at_most: float) -> None:
    from pipeline.detector.training import _ensemble_margin, _Fold

    margin = _ensemble_margin(_Fold(normal=normal, anomalous=anomalous))
    assert at_least <= margin <= at_most
