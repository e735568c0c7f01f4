"""What `linesight evaluate` and model loading make of awkward inputs: files named for
another format, figures that cannot be computed, test folders with one class, damaged
model directories, and greyscale images for a model trained on colour ones."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from pipeline.detector import InvalidImageError, artifact, clear_cache, load_detector
from pipeline.detector.embedded import EmbeddedDetector
from pipeline.detector.evaluation import Evaluation, EvaluationError, ScoredImage, evaluate
from pipeline.detector.report import render_html
from scripts.cli_detector import register
from tests.conftest import generated_samples, pixel_model

SMALL = {("train", "normal"): 10, ("train", "anomaly"): 4,
         ("test", "normal"): 4, ("test", "anomaly"): 4}
NOT_AN_IMAGE = b"<html><body>502 Bad Gateway</body></html>"


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generated_samples(tmp_path_factory, SMALL, size=96)


@pytest.fixture(scope="module")
def model_dir(samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pixel_model(samples, tmp_path_factory)


def _test_folder(samples: Path, where: Path, labels: tuple[str, ...] = ("normal", "anomaly")
                 ) -> Path:
    for label in labels:
        shutil.copytree(samples / "test" / label, where / label)
    return where


def _evaluate_cli(*args: str) -> Any:
    app = typer.Typer()
    register(app)
    return CliRunner().invoke(app, ["evaluate", *args], terminal_width=400)


def _reencoded(path: Path, fmt: str, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.open(path).convert(mode).save(buffer, fmt)
    return buffer.getvalue()


# --- a file's name is not a declaration of its format -------------------------------------

def test_the_bytes_decide_a_files_format_not_its_name(samples: Path, model_dir: Path,
                                                      tmp_path: Path) -> None:
    """As in training: a PNG named .jpg and a JPEG named .png are scored, not refused as
    content_type_mismatch (which stays for uploads that declare a content type)."""
    test = _test_folder(samples, tmp_path / "test")
    normal = sorted((test / "normal").glob("*.jpg"))[0]
    normal.write_bytes(_reencoded(normal, "PNG"))  # a PNG named .jpg
    anomaly = sorted((test / "anomaly").glob("*.jpg"))[0]
    anomaly.rename(anomaly.with_suffix(".png"))  # a JPEG named .png
    result = evaluate(model_dir, test)
    assert result.invalid == ()
    assert {Path(image.path).name for image in result.images} >= {normal.name, anomaly.stem
                                                                 + ".png"}
    with pytest.raises(InvalidImageError) as caught:  # an upload that says otherwise
        EmbeddedDetector.from_dir(model_dir).detect(normal.read_bytes(), "image/jpeg")
    assert caught.value.reason == "content_type_mismatch"


# --- figures that cannot be computed --------------------------------------------------------

def _scored(label: str, score: float) -> ScoredImage:
    return ScoredImage(path=f"t/{label}/{score}.jpg", label=label, score=score,
                       raw_score=score, is_anomalous=score >= 0.5, confidence=0.9, ms=1.0,
                       anomaly_area=0.0)


def _evaluation(normal: list[float], anomalous: list[float], *,
                invalid: tuple[dict[str, str], ...] = (), one_class: bool = False) -> Evaluation:
    images = tuple([_scored("normal", s) for s in normal]
                   + [_scored("anomaly", s) for s in anomalous])
    return Evaluation("m", "t", "pixel_gaussian", "v", 0.5, 1.0, images, invalid=invalid,
                      one_class=one_class)


FIGURES = ("auroc", "precision", "recall", "f1", "false_positive_rate", "miss_rate")


CASES = [
    # both classes, one false positive and one miss: every figure defined
    ([0.1, 0.6], [0.7, 0.4], (0.75, 0.5, 0.5, 0.5, 0.5, 0.5)),
    # nothing called anomalous: precision is 0/0, 0 by convention (the contract's figures
    # are numbers wherever both classes were scored: it was None), every anomaly missed
    ([0.1, 0.2], [0.3, 0.4], (1.0, 0.0, 0.0, 0.0, 0.0, 1.0)),
    # known-good parts only: the false-positive rate, and precision (every call was wrong)
    ([0.1, 0.6], [], (None, 0.0, None, None, 0.5, None)),
    # known-good parts only, none called anomalous
    ([0.1, 0.2], [], (None, None, None, None, 0.0, None)),
    # defective parts only: recall and the miss rate
    ([], [0.7, 0.4], (None, 1.0, 0.5, 2 / 3, None, 0.5)),
    # nothing scored at all
    ([], [], (None, None, None, None, None, None)),
    # every one right, ten of each: the shares sit at 0 and 1, inside their intervals
    ([0.1] * 10, [0.7] * 10, (1.0, 1.0, 1.0, 1.0, 0.0, 0.0)),
]


@pytest.mark.parametrize(("normal", "anomalous", "expected"), CASES)
def test_a_figure_that_cannot_be_computed_is_none_not_zero(
        normal: list[float], anomalous: list[float],
        expected: tuple[float | None, ...]) -> None:
    document = _evaluation(normal, anomalous).to_json()
    for key, value in zip(FIGURES, expected, strict=True):
        assert document[key] == (pytest.approx(value) if value is not None else None), key
    for key in ("threshold", "n_normal", "n_anomaly", "ms_per_image", "images"):
        assert key in document  # the keys the JSON always had are still there


@pytest.mark.parametrize(("normal", "anomalous", "expected"), CASES)
def test_a_share_has_an_interval_exactly_where_it_has_a_figure_and_the_interval_holds_it(
        normal: list[float], anomalous: list[float],
        expected: tuple[float | None, ...]) -> None:
    document = _evaluation(normal, anomalous).to_json()
    figures = dict(zip(FIGURES, expected, strict=True))
    assert set(document["intervals"]) == {"precision", "recall", "false_positive_rate",
                                          "miss_rate"}
    nothing_flagged = not any(score >= 0.5 for score in normal + anomalous)
    for key, bounds in document["intervals"].items():
        if figures[key] is None or (key == "precision" and nothing_flagged):
            assert bounds is None, key  # a precision of 0/0 has no interval
        else:  # never a point, even at 0 or 1: ten images prove little
            assert 0.0 <= bounds[0] <= figures[key] <= bounds[1] <= 1.0, key
            assert bounds[1] - bounds[0] > 0.2, key
    assert (document["auroc_standard_error"] is None) == (figures["auroc"] is None)


def test_intervals_narrow_as_the_images_grow() -> None:
    def recall_width(anomalies: int) -> float:
        found = [0.7] * (anomalies * 17 // 20) + [0.4] * (anomalies * 3 // 20)
        low, high = _evaluation([0.1] * anomalies, found).intervals["recall"] or (0, 0)
        return high - low

    assert recall_width(20) > 2.5 * recall_width(200) > 0


@pytest.mark.parametrize(("normal", "anomalous", "invalid", "one_class", "failure"), [
    ([0.1], [0.7], (), False, ""),  # both classes scored
    # refusals left no anomaly: a failure, unless one class was asked for
    ([0.1], [], ({"path": "t/anomaly/a.jpg", "label": "anomaly", "reason": "corrupt"},),
     False, "every one of the anomalies was refused"),
    ([0.1], [], ({"path": "t/anomaly/a.jpg", "label": "anomaly", "reason": "corrupt"},),
     True, ""),
    # nothing could be scored: a failure either way
    ([], [], ({"path": "t/normal/a.jpg", "label": "normal", "reason": "empty"},), True,
     "no image could be scored"),
])
def test_failure_says_when_the_evaluation_answers_nothing(
        normal: list[float], anomalous: list[float], invalid: tuple[dict[str, str], ...],
        one_class: bool, failure: str) -> None:
    found = _evaluation(normal, anomalous, invalid=invalid, one_class=one_class).failure()
    assert found.startswith(failure) and bool(found) == bool(failure)


def test_refused_anomalies_leave_null_figures_a_reason_and_a_non_zero_exit(
        samples: Path, model_dir: Path, tmp_path: Path) -> None:
    test = _test_folder(samples, tmp_path / "test")
    for path in (test / "anomaly").glob("*.jpg"):
        path.write_bytes(NOT_AN_IMAGE)
    out = tmp_path / "out.json"
    shown = _evaluate_cli(str(model_dir), str(test), "--json", str(out), "--html",
                          str(tmp_path / "out.html"))
    assert shown.exit_code == 2, shown.output
    document = json.loads(out.read_text())  # written all the same, for the refusals
    assert document["auroc"] is None and document["f1"] is None and document["recall"] is None
    assert document["n_anomaly"] == 0 and document["false_positive_rate"] is not None
    said = ("AUROC, recall and F1 need both normal and anomalous images; 4 anomalies were "
            "refused: anomaly/anomaly-001-scratch.jpg (not_an_image)")
    assert document["gaps"][0].startswith(said)
    assert said in " ".join(shown.stdout.split()) and "AUROC -" in shown.stdout
    assert "--allow-one-class" in shown.stderr and "Traceback" not in shown.output
    page = (tmp_path / "out.html").read_text()
    assert "<td>&ndash;</td>" in page and said in page
    assert "aria-label='ROC'" not in page  # no curve without both classes
    assert [item["label"] for item in document["invalid"]] == ["anomaly"] * 4


def test_every_image_refused_exits_non_zero_even_for_one_class(
        samples: Path, model_dir: Path, tmp_path: Path) -> None:
    test = _test_folder(samples, tmp_path / "test", ("normal",))
    for path in (test / "normal").glob("*.jpg"):
        path.write_bytes(NOT_AN_IMAGE)
    out = tmp_path / "out.json"
    shown = _evaluate_cli(str(model_dir), str(test), "--json", str(out), "--allow-one-class")
    assert shown.exit_code == 2, shown.output
    document = json.loads(out.read_text())
    assert all(document[key] is None for key in FIGURES)
    assert document["gaps"] == ["no figure could be computed: 4 images were refused: "
                                "normal/normal-001.jpg (not_an_image), normal/normal-002.jpg "
                                "(not_an_image), normal/normal-003.jpg (not_an_image) and 1 more"]
    assert "no image could be scored" in shown.stderr


def test_the_html_report_copes_with_every_figure_missing() -> None:
    page = render_html(_evaluation([], []))
    assert page.count("<td>&ndash;</td>") == len(FIGURES)
    assert "no figure could be computed" in page


# --- one class only -------------------------------------------------------------------------

@pytest.mark.parametrize(("label", "rate", "said"), [
    ("normal", "false_positive_rate", "false positives: "),  # known-good parts
    ("anomaly", "miss_rate", "misses: "),  # a batch of known defects
])
def test_one_class_is_refused_unless_asked_for(samples: Path, model_dir: Path, tmp_path: Path,
                                               label: str, rate: str, said: str) -> None:
    test = _test_folder(samples, tmp_path / "test", (label,))
    other = "anomaly" if label == "normal" else "normal"
    with pytest.raises(EvaluationError, match=f"no {other} images.*--allow-one-class"):
        evaluate(model_dir, test)
    out = tmp_path / "out.json"
    refused = _evaluate_cli(str(model_dir), str(test), "--json", str(out))
    assert refused.exit_code == 2 and "--allow-one-class" in refused.stderr
    assert not out.exists()
    shown = _evaluate_cli(str(model_dir), str(test), "--json", str(out), "--allow-one-class")
    assert shown.exit_code == 0, shown.output
    document = json.loads(out.read_text())
    assert document["auroc"] is None and document["one_class"] is True
    assert 0.0 <= document[rate] <= 1.0 and document[f"n_{label}"] == 4
    assert said in shown.stdout and "of 4" in shown.stdout  # the count and the rate


def test_one_class_accepts_refusals_that_empty_the_other(samples: Path, model_dir: Path,
                                                         tmp_path: Path) -> None:
    test = _test_folder(samples, tmp_path / "test")
    for path in (test / "anomaly").glob("*.jpg"):
        path.write_bytes(NOT_AN_IMAGE)
    shown = _evaluate_cli(str(model_dir), str(test), "--json", str(tmp_path / "out.json"),
                          "--allow-one-class")
    assert shown.exit_code == 0, shown.output
    assert "4 anomalies were refused" in " ".join(shown.stdout.split())


def test_the_cli_and_the_report_say_how_far_the_figures_could_move(
        samples: Path, model_dir: Path, tmp_path: Path) -> None:
    out, page = tmp_path / "out.json", tmp_path / "out.html"
    shown = _evaluate_cli(str(model_dir), str(samples / "test"), "--json", str(out),
                          "--html", str(page))
    assert shown.exit_code == 0, shown.output
    document = json.loads(out.read_text())
    low, high = document["intervals"]["recall"]
    printed = " ".join(shown.stdout.split())
    assert "on other images like these: precision " in printed
    assert f"recall {low:.2f}-{high:.2f} (95 %); AUROC ± " in printed
    assert printed.split("AUROC ± ", 1)[1].split()[1:4] == ["(one", "standard", "error)"]
    html_text = page.read_text()
    assert f"<td>{low:.2f}&ndash;{high:.2f}</td>" in html_text and "&plusmn;" in html_text


def test_a_file_name_that_is_not_utf8_does_not_stop_the_report(
        samples: Path, model_dir: Path, tmp_path: Path) -> None:
    """Names from a zip made on Windows (b"Pr\\xfcf") are lone surrogates in Python: the
    HTML report raised UnicodeEncodeError and was left empty."""
    test = _test_folder(samples, tmp_path / "test")
    for index, path in enumerate(sorted((test / "anomaly").glob("*.jpg"))[:2]):
        path.rename(test / "anomaly" / os.fsdecode(b"Pr\xfcf-%d.jpg" % index))
    (test / "anomaly" / os.fsdecode(b"Pr\xfcf-2.jpg")).write_bytes(NOT_AN_IMAGE)
    out, page = tmp_path / "out.json", tmp_path / "out.html"
    shown = _evaluate_cli(str(model_dir), str(test), "--json", str(out), "--html", str(page))
    assert shown.exit_code == 0, shown.output
    assert "Pr\ufffdf-2.jpg" in page.read_text(encoding="utf-8")  # refused, and named
    assert json.loads(out.read_text())["n_anomaly"] == 4


def test_folders_whose_names_differ_only_in_case_are_one_clear_line(
        samples: Path, model_dir: Path, tmp_path: Path) -> None:
    test = _test_folder(samples, tmp_path / "data" / "test")
    shutil.copytree(test, tmp_path / "data" / "Test")
    shown = _evaluate_cli(str(model_dir), str(tmp_path / "data"), "--json",
                          str(tmp_path / "out.json"))
    assert shown.exit_code == 2 and isinstance(shown.exception, SystemExit), shown.output
    said = " ".join(shown.output.replace("│", " ").split())
    assert "Test/ and test/, whose names differ only in case" in said


def test_the_option_is_in_the_commands_help() -> None:
    shown = " ".join(_evaluate_cli("--help").output.replace("│", " ").split())
    assert "--allow-one-class" in shown and "known-good parts for the false-positive" in shown


# --- damaged model directories ---------------------------------------------------------------

def _garbage(model: Path) -> None:
    (model / "arrays.npz").write_bytes(b"\x80\x04garbage, not numpy" * 10)


def _truncated(model: Path) -> None:
    data = (model / "arrays.npz").read_bytes()
    (model / "arrays.npz").write_bytes(data[:len(data) // 2])


def _missing(model: Path) -> None:
    (model / "arrays.npz").unlink()


def _without_mean(model: Path) -> None:
    with np.load(model / "arrays.npz") as arrays:
        kept = {key: arrays[key] for key in arrays.files if key != "mean"}
    np.savez_compressed(model / "arrays.npz", **kept)  # type: ignore[arg-type]


def _edited(change: Any) -> Any:
    def edit(model: Path) -> None:
        document = json.loads((model / "model.json").read_text())
        (model / "model.json").write_text(json.dumps(change(document)))
    return edit


def _stamped(damage: Any = None, change: Any = lambda document: document) -> Any:
    """`damage`, then `change` to model.json, with the model version computed again: an
    edit made on purpose, which the check of the two files against each other passes."""
    def edit(model: Path) -> None:
        if damage:
            damage(model)
        document = change(json.loads((model / "model.json").read_text()))
        learned = {key: value for key, value in document.items()
                   if key not in ("model_version", "training")}
        document["model_version"] = artifact._version((model / "arrays.npz").read_bytes(),
                                                      learned)
        (model / "model.json").write_text(json.dumps(document))
    return edit


def _calibration(**values: float) -> Any:
    return _stamped(change=lambda d: {**d, "calibration": {**d["calibration"], **values}})


@pytest.mark.parametrize(("damage", "said"), [
    (_garbage, "arrays.npz is damaged"),  # overwritten (numpy would try to unpickle it)
    (_truncated, "arrays.npz is damaged"),  # an interrupted copy
    (_missing, "is incomplete: no arrays.npz"),  # a copy that left it behind
    (_stamped(_without_mean), "needs 'mean', which neither model.json nor arrays.npz holds"),
    (_edited(lambda d: {k: v for k, v in d.items() if k != "method_state"}),
     "model.json is incomplete: no 'method_state'"),
    (_stamped(change=lambda d: {k: v for k, v in d.items() if k != "calibration"}),
     "model.json is incomplete: no 'calibration'"),
    (_stamped(change=lambda d: {**d, "pixel_threshold": "high"}),
     "model.json holds a damaged value"),
    (_edited(lambda d: [d]), "model.json is not a LineSight model: not a JSON object"),
    # a retrain cut short between its two files, or one file copied over from another,
    # said as such before the arrays are unpacked (a missing one was named instead)
    (_edited(lambda d: {**d, "pixel_threshold": d["pixel_threshold"] + 0.5}),
     "model.json and arrays.npz are not of one training"),
    (_without_mean, "model.json and arrays.npz are not of one training"),
    # edited on purpose: each failed every image (ZeroDivisionError) or inverted verdicts
    (_calibration(scale=0.0), "holds a value no training writes: calibration.scale is 0.0"),
    (_calibration(scale=-1.0), "calibration.scale is -1.0, not above 0"),
    (_calibration(raw_threshold=float("inf")), "calibration.raw_threshold is inf"),
    (_stamped(change=lambda d: {**d, "expected_aspect": 0}), "expected_aspect is 0.0"),
    (_stamped(change=lambda d: {**d, "roi": [0.9, 0, 0.1, 1]}),
     "1.0] is not 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1"),
], ids=["garbage-arrays", "truncated-arrays", "missing-arrays", "arrays-without-a-key",
        "no-method-state", "no-calibration", "text-for-a-number", "not-an-object",
        "two-trainings", "other-arrays", "scale-0", "scale-negative", "threshold-inf",
        "aspect-0", "roi-reversed"])
def test_a_damaged_model_is_an_artifact_error_naming_what_is_wrong(
        samples: Path, model_dir: Path, tmp_path: Path, damage: Any, said: str) -> None:
    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    damage(model)
    with pytest.raises(artifact.ArtifactError, match=said):
        artifact.load(model)
    clear_cache()
    with pytest.raises(artifact.ArtifactError, match=said):  # the ingest Lambda's load
        load_detector("embedded", str(model))
    test = _test_folder(samples, tmp_path / "test")
    shown = _evaluate_cli(str(model), str(test), "--json", str(tmp_path / "x.json"))
    assert shown.exit_code == 2 and "Traceback" not in shown.output
    assert said in " ".join(shown.stderr.split())


# --- greyscale images for a model trained on colour ---------------------------------------

def _with_colour(model_dir: Path, out: Path, colour: bool | None) -> Path:
    artifact.save(dataclasses.replace(artifact.load(model_dir), colour=colour), out)
    return out


def _greyscale_test_folder(samples: Path, where: Path) -> Path:
    for label in ("normal", "anomaly"):
        (where / label).mkdir(parents=True)
        for path in (samples / "test" / label).glob("*.jpg"):
            (where / label / path.name).write_bytes(_reencoded(path, "JPEG", "L"))
    return where


@pytest.mark.parametrize(("colour", "refused"), [
    (True, True),  # trained on colour only: a greyscale photo is another camera
    (False, False),  # greyscale among the training images: converted, as always
    (None, False),  # a model from before this was recorded: as before
])
def test_a_colour_model_refuses_greyscale_images(samples: Path, model_dir: Path,
                                                 tmp_path: Path, colour: bool | None,
                                                 refused: bool) -> None:
    detector = EmbeddedDetector.from_dir(_with_colour(model_dir, tmp_path / "m", colour))
    assert detector.model.colour is colour
    photo = sorted((samples / "test" / "normal").glob("*.jpg"))[0]
    assert detector.detect(photo.read_bytes(), "image/jpeg").notes == ()  # colour: scored
    grey = _reencoded(photo, "JPEG", "L")
    if refused:
        with pytest.raises(InvalidImageError, match="trained on colour") as caught:
            detector.detect(grey, "image/jpeg")
        assert caught.value.reason == "greyscale"
    else:
        assert detector.detect(grey, "image/jpeg").notes == ("converted_from_l",)


def test_colour_is_kept_in_the_model_and_unknown_for_older_ones(model_dir: Path,
                                                                tmp_path: Path) -> None:
    # training records it (the samples are colour photos); a model from before has none
    assert json.loads((model_dir / "model.json").read_text())["colour"] is True
    assert artifact.load(model_dir).colour is True
    older = _with_colour(model_dir, tmp_path / "older", None)
    assert "colour" not in json.loads((older / "model.json").read_text())
    assert artifact.load(older).colour is None
    again = _with_colour(older, tmp_path / "again", None)  # no field: the same version
    assert artifact.load(again).model_version == artifact.load(older).model_version


def test_evaluate_reports_greyscale_refusals_and_decode_notes(samples: Path, model_dir: Path,
                                                              tmp_path: Path) -> None:
    test = _greyscale_test_folder(samples, tmp_path / "grey")
    coloured = _with_colour(model_dir, tmp_path / "colour", True)
    refused = evaluate(coloured, test)
    assert {item["reason"] for item in refused.invalid} == {"greyscale"}
    out = tmp_path / "out.json"
    older = _with_colour(model_dir, tmp_path / "older", None)  # takes grey images, noted
    shown = _evaluate_cli(str(older), str(test), "--json", str(out))
    assert shown.exit_code == 0, shown.output
    document = json.loads(out.read_text())
    assert {tuple(image["notes"]) for image in document["images"]} == {("converted_from_l",)}
    assert "accepted with notes: converted_from_l (8)" in shown.stdout


def test_a_precision_of_nothing_flagged_says_it_is_0_by_convention() -> None:
    assert _evaluation([0.1, 0.2], [0.3, 0.4]).gaps() == [
        "precision needs an image called anomalous; none was (0, by convention, since every "
        "anomaly was missed)"]
    assert _evaluation([0.1, 0.2], []).gaps()[-1] == (
        "precision needs an image called anomalous; none was")
