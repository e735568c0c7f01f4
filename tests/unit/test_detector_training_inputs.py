"""Odd but legitimate training inputs: mixed orientations, defect-type folders, images
detection refuses, manifests with awkward references, masks that are hard to read, image
files in other formats and symlinked folders. Each image is a few dozen pixels, made here."""

from __future__ import annotations

import io
import json
import logging
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.detector import InvalidImageError, artifact, clear_cache, evaluation, load_detector
from pipeline.detector.training import (
    TrainingError,
    _load_mask,
    find_training_set,
    train_model,
)

LANDSCAPE, PORTRAIT = (40, 30), (30, 40)


def _part(path: Path, size: tuple[int, int] = LANDSCAPE, seed: int = 0,
          defect: bool = False) -> Path:
    """A noisy grey part, saved in the format its suffix names; a dark square when `defect`."""
    rng = np.random.default_rng(seed)
    width, height = size
    pixels = rng.normal(120, 6, (height, width, 3))
    if defect:
        pixels[height // 3:height // 2, width // 3:width // 2] = 20
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
    return path


def _parts(folder: Path, count: int, size: tuple[int, int] = LANDSCAPE, *, name: str = "",
           defect: bool = False, seed: int = 0) -> list[Path]:
    return [_part(folder / f"{name or folder.name}-{index}.png", size, seed + index, defect)
            for index in range(count)]


def _manifest(path: Path, entries: list[dict[str, object]], encoding: str = "utf-8") -> Path:
    path.write_text("".join(json.dumps(entry) + "\n" for entry in entries), encoding=encoding)
    return path


def _line(ref: str, label: int, mask: str | None = None) -> dict[str, object]:
    entry: dict[str, object] = {"source-ref": ref, "anomaly-label": label}
    if mask is not None:
        entry["anomaly-mask-ref"] = mask
    return entry


@pytest.mark.parametrize("landscape, portrait, portrait_anomalies", [
    (6, 6, 0),  # a tie: a median of ratios (1.04) matched no image and refused them all
    (6, 5, 4),  # anomalies do not vote: by all images, portrait would win 9 to 6
])
def test_the_aspect_ratio_kept_is_that_of_the_most_normal_images(
        tmp_path: Path, landscape: int, portrait: int, portrait_anomalies: int) -> None:
    data = tmp_path / "data"
    _parts(data / "train" / "normal", landscape, LANDSCAPE, name="wide")
    _parts(data / "train" / "normal", portrait, PORTRAIT, name="tall", seed=100)
    _parts(data / "train" / "anomaly", portrait_anomalies, PORTRAIT, defect=True, seed=200)
    report = train_model(data, tmp_path / "model", methods=["pixel_gaussian"])
    assert (report.n_normal, report.n_anomaly) == (landscape, 0)
    assert artifact.load(tmp_path / "model").expected_aspect == pytest.approx(4 / 3)
    left_out = portrait + portrait_anomalies
    assert len(report.skipped) == left_out
    shown = "normal/" if portrait_anomalies else ""  # by their path under a shared folder
    assert report.skipped[0] == (
        f"{shown}tall-0.png: off_size (30x40, aspect ratio 0.75; training keeps aspect ratio "
        f"1.33, that of {landscape} of the {landscape + portrait} normal images; {left_out} "
        "image(s) have another)")


def test_folders_beside_the_normal_one_are_read_as_defect_types(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """train/normal beside train/scratch and train/blob, as evaluate reads MVTec AD's test
    split; masks/ and hidden folders are not defect types."""
    data = tmp_path / "data"
    _parts(data / "train" / "normal", 4)
    scratches = _parts(data / "train" / "scratch", 2, defect=True)
    _parts(data / "train" / "blob", 2, defect=True, seed=10)
    _parts(data / "train" / ".thumbnails", 2)
    _parts(data / "train" / "masks", 1, name="scratch")  # masks/ beside: not images
    _part(data / "masks" / "scratch" / "scratch-0.png")
    with caplog.at_level(logging.WARNING):
        found = find_training_set(data)
    assert sorted(path.parent.name for path in found.anomaly) == ["blob", "blob", "scratch",
                                                                   "scratch"]
    assert found.masks == {scratches[0]: data / "masks" / "scratch" / "scratch-0.png"}
    assert found.source.endswith("normal images from train/normal/; anomalies from "
                                 "train/blob/, train/scratch/")
    assert "reading blob/, scratch/ as anomalous images" in caplog.text
    evaluated = evaluation.test_images(data / "train")  # evaluate reads the same folder alike
    assert evaluated["anomaly"] == list(found.anomaly)


def test_a_defect_folder_beside_good_and_anomaly_is_read_too(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _parts(data / "good", 4)
    _parts(data / "anomaly", 2, defect=True)
    _parts(data / "crack", 2, defect=True, seed=10)
    found = find_training_set(data)
    assert sorted(path.parent.name for path in found.anomaly) == ["anomaly", "anomaly",
                                                                   "crack", "crack"]


def test_label_folders_are_found_in_any_case_as_visa_names_them(tmp_path: Path) -> None:
    """VisA keeps its images in Normal/ and Anomaly/ (Data/Images/): read as one defect
    type's anomalies, training found no normal images, and evaluate --allow-one-class
    scored every normal image as a missed anomaly. (Its masks sit in Data/Masks/, beside
    that folder; here they are where training looks, in any case.)"""
    data = tmp_path / "pcb1"
    normals = _parts(data / "Train" / "Normal", 4)
    anomalies = _parts(data / "Train" / "Anomaly", 2, defect=True)
    mask = _part(data / "Masks" / "Anomaly" / "Anomaly-0.png")
    test_normals = _parts(data / "Test" / "Normal", 2)
    test_anomalies = _parts(data / "Test" / "Anomaly", 2, defect=True)

    found = find_training_set(data)
    assert (list(found.normal), list(found.anomaly)) == (normals, anomalies)
    assert found.masks == {anomalies[0]: mask}
    assert evaluation.test_images(data) == {"normal": test_normals, "anomaly": test_anomalies}

    _parts(data / "Train" / "normal", 1)  # which one is meant?
    with pytest.raises(TrainingError, match=r"has Normal/ and normal/, whose names differ "
                                            r"only in case"):
        find_training_set(data)


def test_normal_and_anomaly_beside_an_unrelated_train_folder(tmp_path: Path) -> None:
    """train/ is read only when it holds label folders; a data set's splits and a folder
    holding label folders (an old copy) are not defect types."""
    data = tmp_path / "data"
    normals = _parts(data / "normal", 4)
    anomalies = _parts(data / "anomaly", 2, defect=True)
    (data / "train").mkdir()
    (data / "train" / "readme.txt").write_text("photos from line 3")
    _parts(data / "test" / "normal", 2)
    _parts(data / "old" / "normal", 2)
    found = find_training_set(data)
    assert (list(found.normal), list(found.anomaly)) == (normals, anomalies)
    for folder in ("normal", "anomaly"):
        for path in (data / folder).iterdir():
            path.unlink()
    with pytest.raises(TrainingError, match=r"train/ was not read: it holds no normal/, "
                                            r"good/ or anomaly/ folder"):
        find_training_set(data)


def test_training_leaves_out_images_detection_refuses_as_too_small(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _parts(data / "train" / "normal", 6, (64, 48))
    tiny = _part(data / "train" / "normal" / "far-away.png", (24, 18), seed=50)
    report = train_model(data, tmp_path / "model", methods=["pixel_gaussian"])
    # pixel_gaussian works at 128 px; the images are 64 px: detection wants at least 32
    assert report.n_normal == 6
    assert report.skipped == ("far-away.png: too_small (24x18 is too small: the "
                              "model needs at least 32 px)",)
    clear_cache()
    with pytest.raises(InvalidImageError) as refused:
        load_detector("embedded", str(tmp_path / "model")).detect(tiny.read_bytes(),
                                                                  "image/png")
    assert refused.value.reason == "too_small"
    assert str(refused.value) in report.skipped[0]  # in the same words


def test_an_unreadable_file_is_left_out_of_training_and_refused_by_evaluate(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file the process may not read (tests run as root, who may read anything, so the
    refusal is raised where `chmod 000` would raise it) is one image left out, not a
    traceback that ends a run of hundreds."""
    data = tmp_path / "data"
    _parts(data / "train" / "normal", 6, (64, 48))
    locked = _parts(data / "train" / "normal", 1, (64, 48), name="locked", seed=9)[0]
    _parts(data / "test" / "normal", 2, (64, 48), seed=20)
    _parts(data / "test" / "anomaly", 2, (64, 48), defect=True, seed=30)
    locked_test = _parts(data / "test" / "anomaly", 1, (64, 48), name="locked", seed=40)[0]
    read_bytes = Path.read_bytes

    def refusing(path: Path) -> bytes:
        if path.name.startswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", refusing)
    report = train_model(data, tmp_path / "model", methods=["pixel_gaussian"])
    assert report.n_normal == 6
    assert report.skipped == (f"{locked.name}: unreadable (Permission denied)",)
    evaluated = evaluation.evaluate(tmp_path / "model", data / "test", keep_heatmaps=False)
    assert len(evaluated.images) == 4
    assert evaluated.invalid == ({"path": str(locked_test), "label": "anomaly",
                                  "reason": "unreadable",
                                  "message": "cannot be read: Permission denied"},)


def test_other_image_formats_are_listed_and_symlinked_folders_followed(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    normal = data / "train" / "normal"
    _parts(normal, 3)
    for index, suffix in enumerate((".bmp", ".webp", ".tif", ".gif")):
        _part(normal / f"other-{index}{suffix}", seed=20 + index)
    _part(normal / "camera.jfif", seed=30)  # JPEG bytes, as detection accepts them
    elsewhere = _parts(tmp_path / "camera-2", 2, seed=40)
    os.symlink(elsewhere[0].parent, normal / "camera-2", target_is_directory=True)
    os.symlink(normal, elsewhere[0].parent / "loop", target_is_directory=True)
    report = train_model(data, tmp_path / "model", methods=["pixel_gaussian"])
    assert report.n_normal == 3 + 1 + 2
    assert sorted(item.split(" (")[0] for item in report.skipped) == [
        f"other-{index}{suffix}: unsupported_format"
        for index, suffix in enumerate((".bmp", ".webp", ".tif", ".gif"))]


def test_masks_mark_every_cell_holding_a_non_black_pixel(tmp_path: Path) -> None:
    ones = np.zeros((120, 160), np.uint8)
    ones[30:60, 40:80] = 1  # a 0/1 mask: defect pixels are 1, not 255
    Image.fromarray(ones).save(tmp_path / "ones.png")
    scratch = np.zeros((1200, 1600), np.uint8)
    scratch[600:604, 200:1400] = 255  # 4 px wide in a 1600-px mask
    Image.fromarray(scratch).save(tmp_path / "scratch.png")
    marked = _load_mask(tmp_path / "ones.png", (12, 16), None)
    assert marked[3:6, 4:8].all() and marked.sum() == 12
    thin = _load_mask(tmp_path / "scratch.png", (48, 64), None)
    assert thin[24].sum() >= 47 and thin.sum() <= 2 * 49  # one row of cells, maybe two
    Image.fromarray(np.zeros((120, 160), np.uint8)).save(tmp_path / "black.png")
    assert not _load_mask(tmp_path / "black.png", (48, 64), None).any()


def test_jpeg_mask_ringing_does_not_mark_the_cells_around_a_defect(tmp_path: Path) -> None:
    mask = np.zeros((480, 640), np.uint8)
    # exactly cells 11-14 x 13-16 at 1/20 scale; its edges cut JPEG's 8-px blocks, whose
    # other pixels (in the neighbouring cells) ring
    mask[220:300, 260:340] = 255
    Image.fromarray(mask).save(tmp_path / "mask.jpg", quality=75)
    ringing = np.asarray(Image.open(tmp_path / "mask.jpg"))
    assert 0 < ringing[mask == 0].max() < 128  # near-black pixels around the square
    marked = _load_mask(tmp_path / "mask.jpg", (24, 32), None)
    assert marked[11:15, 13:17].all() and marked.sum() == 16


def _manifest_set(data: Path) -> None:
    _parts(data / "imgs", 4, name="normal")
    _parts(data / "imgs", 2, name="anomaly", defect=True)


def test_a_missing_mask_in_a_manifest_is_an_error_like_a_missing_image(tmp_path: Path
                                                                         ) -> None:
    _manifest_set(tmp_path)
    _part(tmp_path / "masks" / "anomaly-0-mask.png")
    normals = [_line(f"s3://b/p/normal-{index}.png", 0) for index in range(4)]
    manifest = _manifest(tmp_path / "m.manifest", [
        *normals,
        _line("s3://b/p/anomaly-0.png", 1, "s3://b/masks/anomaly-0-mask.png"),
        _line("s3://b/p/anomaly-1.png", 1, "s3://b/masks/anomaly-1-mask.png"),
    ])
    with pytest.raises(TrainingError, match=r"1 file\(s\) named in m.manifest not found under "
                                            r".*: line 6 anomaly-mask-ref "
                                            r"s3://b/masks/anomaly-1-mask.png$"):
        find_training_set(tmp_path, manifest)


def test_an_unreadable_mask_stops_training_before_cross_validation(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.detector import training

    data = tmp_path / "data"
    _parts(data / "train" / "normal", 4)
    scratches = _parts(data / "train" / "anomaly", 2, defect=True, name="scratch")
    _part(data / "masks" / "scratch-0.png")
    (data / "masks" / "scratch-1.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")

    def no_cross_validation(*args: object, **kwargs: object) -> None:
        raise AssertionError("cross-validated before the masks were checked")
    monkeypatch.setattr(training, "_cross_validate", no_cross_validation)

    with pytest.raises(TrainingError, match=r"^1 mask\(s\) cannot be read: .*scratch-1.png "
                                            r"\(the mask of scratch-1.png\): "):
        train_model(data, tmp_path / "model", methods=["pixel_gaussian"])
    assert scratches and not (tmp_path / "model").exists()


def test_a_mask_named_as_its_image_is_told_apart_from_it(tmp_path: Path) -> None:
    """Ground Truth often names a mask as its image: the image is not taken from masks/,
    and a mask that resolves to its own image was not copied."""
    _manifest_set(tmp_path)
    _part(tmp_path / "masks" / "anomaly-0.png")
    normals = [_line(f"s3://b/p/normal-{index}.png", 0) for index in range(4)]
    found = find_training_set(tmp_path, _manifest(tmp_path / "m.manifest", [
        *normals, _line("s3://b/p/anomaly-0.png", 1, "s3://b/masks/anomaly-0.png")]))
    assert found.masks == {tmp_path / "imgs" / "anomaly-0.png":
                           tmp_path / "masks" / "anomaly-0.png"}
    with pytest.raises(TrainingError, match=r"line 5 anomaly-mask-ref "
                                            r"s3://b/masks/anomaly-1.png$"):
        find_training_set(tmp_path, _manifest(tmp_path / "m2.manifest", [
            *normals, _line("s3://b/p/anomaly-1.png", 1, "s3://b/masks/anomaly-1.png")]))


def test_manifest_references_as_editors_and_s3_write_them(tmp_path: Path) -> None:
    """A byte-order mark, URL-encoded S3 keys, Windows separators."""
    _part(tmp_path / "imgs" / "normal 0.png")
    _part(tmp_path / "imgs" / "normal+1.png", seed=1)
    _parts(tmp_path / "imgs", 2, name="normal", seed=2)
    _parts(tmp_path / "imgs", 2, name="anomaly", defect=True)
    manifest = _manifest(tmp_path / "m.manifest", [
        _line("s3://b/p/normal%200.png", 0),
        _line("s3://b/p/normal%2B1.png", 0),
        _line("imgs\\normal-0.png", 0),
        _line("C:\\data\\imgs\\normal-1.png", 0),
        _line("s3://b/p/anomaly-0.png", 1),
        _line("imgs/anomaly-1.png", 1),
    ], encoding="utf-8-sig")
    found = find_training_set(tmp_path, manifest)
    assert [path.name for path in found.normal] == ["normal 0.png", "normal+1.png",
                                                    "normal-0.png", "normal-1.png"]
    assert len(found.anomaly) == 2


def test_a_manifest_never_resolves_to_a_test_image(tmp_path: Path) -> None:
    _manifest_set(tmp_path)
    _parts(tmp_path / "test" / "anomaly", 2, name="anomaly", defect=True, seed=70)
    _parts(tmp_path / "test" / "anomaly", 1, name="only-in-test", defect=True, seed=80)
    lines = [_line(f"s3://b/prefix/training-images/normal-{index}.png", 0)
             for index in range(4)]
    anomalies = [_line(f"s3://b/prefix/training-images/anomaly-{index}.png", 1)
                 for index in range(2)]
    found = find_training_set(tmp_path, _manifest(tmp_path / "m.manifest",
                                                  lines + anomalies))
    assert [path.parent.name for path in found.anomaly] == ["imgs", "imgs"]
    with pytest.raises(TrainingError, match=r"m2.manifest:5: s3://b/only-in-test-0.png "
                                            r"matches only .*, under .*/test/: training "
                                            r"never learns from test images"):
        find_training_set(tmp_path, _manifest(tmp_path / "m2.manifest", [
            *lines, _line("s3://b/only-in-test-0.png", 1)]))


def test_a_test_image_reached_through_a_link_or_dotdot_is_still_a_test_image(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    _manifest_set(data)
    held_out = _parts(data / "test" / "anomaly", 1, name="held-out", defect=True)[0]
    normals = [_line(f"s3://b/p/normal-{index}.png", 0) for index in range(4)]
    linked = tmp_path / "linked"
    os.symlink(data, linked, target_is_directory=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for root, ref, manifest_dir in [
            (linked, str(held_out), linked),  # by its real path, under a linked DATA_DIR
            (data, "../data/test/anomaly/held-out-0.png", elsewhere)]:  # climbing back in
        manifest = _manifest(manifest_dir / "m.manifest", [*normals, _line(ref, 1)])
        with pytest.raises(TrainingError, match="training never learns from test images"):
            find_training_set(root, manifest)
    moved = tmp_path / "test-images"  # test/ itself a link to a folder elsewhere
    (data / "test").rename(moved)
    os.symlink(moved, data / "test", target_is_directory=True)
    manifest = _manifest(tmp_path / "m.manifest",
                         [*normals, _line(str(moved / "anomaly" / held_out.name), 1)])
    with pytest.raises(TrainingError, match="training never learns from test images"):
        find_training_set(data, manifest)


def test_a_manifest_lists_the_data_folder_once_not_once_per_reference(
        tmp_path: Path) -> None:
    """Listing it for each of 5,000 references into one folder took 46 s (0.2 s before)."""
    from pipeline.detector import training

    _manifest_set(tmp_path)
    lines = [_line(f"s3://b/p/normal-{index}.png", 0) for index in range(4)] * 10
    find_training_set(tmp_path, _manifest(tmp_path / "m.manifest", lines))
    assert training._real_folders.cache_info().misses <= 2  # one per folder kind


def test_an_image_two_lines_name_is_read_once_and_never_under_both_labels(
        tmp_path: Path) -> None:
    _manifest_set(tmp_path)
    normals = [_line(f"s3://b/p/normal-{index}.png", 0) for index in range(4)]
    joined = [*normals, _line("imgs/normal-0.png", 0), _line("s3://b/p/anomaly-0.png", 1)]
    found = find_training_set(tmp_path, _manifest(tmp_path / "m.manifest", joined))
    assert len(found.normal) == 4 and len(found.anomaly) == 1
    assert found.source.endswith("1 line(s) naming an image an earlier line names with the "
                                 "same label read once")
    relabelled = [*normals, _line("s3://other-job/normal-2.png", 1)]
    with pytest.raises(TrainingError, match=r"m2.manifest:5: s3://other-job/normal-2.png is "
                                            r".*normal-2.png, which line 3 labels normal"):
        find_training_set(tmp_path, _manifest(tmp_path / "m2.manifest", relabelled))


@pytest.mark.parametrize("label, metadata, said", [
    (0.9, None, "anomaly-label must be 0 or 1, got 0.9"),  # int() read it as 0
    (1.5, None, "anomaly-label must be 0 or 1, got 1.5"),
    (float("inf"), None, "anomaly-label must be 0 or 1, got inf"),  # OverflowError
    ("yes", None, "anomaly-label must be 0 or 1, got 'yes'"),
    (0, {"class-name": "Anomaly"}, "anomaly-label 0 contradicts class-name 'Anomaly'"),
])
def test_a_manifest_label_is_0_or_1_as_json_writes_them_and_nothing_else(
        tmp_path: Path, label: object, metadata: object, said: str) -> None:
    _manifest_set(tmp_path)
    entry = _line("s3://b/p/anomaly-0.png", 0)
    entry["anomaly-label"] = label
    if metadata is not None:
        entry["anomaly-label-metadata"] = metadata
    normals = [_line(f"s3://b/p/normal-{index}.png", 0) for index in range(4)]
    with pytest.raises(TrainingError, match=f"m.manifest:5: {re.escape(said)}$"):
        find_training_set(tmp_path, _manifest(tmp_path / "m.manifest", [*normals, entry]))


def test_manifest_labels_and_text_that_other_tools_write_are_read(tmp_path: Path) -> None:
    """true/"1" labels, metadata that is null or not a map, a line separator (U+2028)
    written unescaped inside a string, as json.dumps(ensure_ascii=False) writes it."""
    _manifest_set(tmp_path)
    entries: list[dict[str, object]] = [
        {**_line(f"s3://b/p/normal-{index}.png", 0), "anomaly-label-metadata": metadata}
        for index, metadata in enumerate([None, "x", {"class-name": "Normal"}, {}])]
    entries += [{**_line("s3://b/p/anomaly-0.png", 0), "anomaly-label": True,
                 "job-name": "QA\u2028batch"},
                {**_line("s3://b/p/anomaly-1.png", 0), "anomaly-label": "1"}]
    manifest = tmp_path / "m.manifest"
    manifest.write_text("".join(json.dumps(entry, ensure_ascii=False) + "\r\n"
                                for entry in entries), encoding="utf-8")
    assert "\u2028" in manifest.read_text(encoding="utf-8")
    found = find_training_set(tmp_path, manifest)
    assert len(found.normal) == 4 and len(found.anomaly) == 2


def test_a_manifest_reference_goes_to_the_copy_its_folders_match(tmp_path: Path) -> None:
    for line in ("line-a", "line-b"):
        _parts(tmp_path / line / "normal", 3, seed=len(line))
    manifest = _manifest(tmp_path / "m.manifest",
                         [_line(f"s3://b/line-b/normal/normal-{index}.png", 0)
                          for index in range(3)])
    found = find_training_set(tmp_path, manifest)
    assert {path.parent.parent.name for path in found.normal} == {"line-b"}
    ambiguous = _manifest(tmp_path / "m2.manifest", [_line("s3://b/normal-0.png", 0)])
    with pytest.raises(TrainingError, match=r"matches several files under .*: "
                                            r".*line-a/normal/normal-0.png, "
                                            r".*line-b/normal/normal-0.png"):
        find_training_set(tmp_path, ambiguous)


@pytest.mark.parametrize("mode, colour", [("RGB", True), ("L", False)])
def test_a_model_records_whether_it_learned_colour_and_refuses_grey_if_so(
        tmp_path: Path, mode: str, colour: bool) -> None:
    """A colour model scores a grey photo of a good part as a defect (its colours are all
    wrong), so it refuses one as `greyscale`; a model trained on grey photos takes either."""
    data = tmp_path / "data"
    for path in _parts(data / "train" / "normal", 8):
        Image.open(path).convert(mode).save(path)
    train_model(data, tmp_path / "model", methods=["pixel_gaussian"])
    assert json.loads((tmp_path / "model" / "model.json").read_text())["colour"] is colour

    grey = tmp_path / "grey.png"
    Image.open(_part(tmp_path / "part.png", seed=99)).convert("L").save(grey)
    clear_cache()
    detector = load_detector("embedded", str(tmp_path / "model"))
    if colour:
        with pytest.raises(InvalidImageError) as refused:
            detector.detect(grey.read_bytes(), "image/png")
        assert refused.value.reason == "greyscale"
    else:
        assert detector.detect(grey.read_bytes(), "image/png").score >= 0


def test_a_model_trained_on_grey_photos_judges_a_colour_one_grey(tmp_path: Path) -> None:
    """It never saw colour: a colour photo of a good part scored as a defect (5 of 5 good
    parts in a review's test), where the same photo in grey passes."""
    data = tmp_path / "data"
    rng = np.random.default_rng(3)
    tint = np.array([1.25, 1.0, 0.7])  # a warm part: colour the grey model cannot know
    for index in range(8):
        pixels = np.clip(rng.normal(120, 4, (30, 40, 1)) * tint, 0, 255).astype(np.uint8)
        path = data / "train" / "normal" / f"normal-{index}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).convert("L").save(path)
    train_model(data, tmp_path / "model", methods=["pixel_gaussian"])
    assert json.loads((tmp_path / "model" / "model.json").read_text())["greyscale"] is True
    clear_cache()
    detector = load_detector("embedded", str(tmp_path / "model"))
    colour = np.clip(rng.normal(120, 4, (30, 40, 1)) * tint, 0, 255).astype(np.uint8)
    photo = tmp_path / "colour.png"
    Image.fromarray(colour).save(photo)

    result = detector.detect(photo.read_bytes(), "image/png")

    assert result.notes == ("converted_to_grey",) and not result.is_anomalous
    assert result.score == pytest.approx(detector.detect(  # as its grey copy scores
        _grey_png(colour), "image/png").score)


def _grey_png(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).convert("L").save(buffer, "PNG")
    return buffer.getvalue()


def test_a_model_trained_on_colour_and_grey_photos_judges_colour_as_it_is(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    for index, path in enumerate(_parts(data / "train" / "normal", 8)):
        if index % 2:
            Image.open(path).convert("L").save(path)
    train_model(data, tmp_path / "model", methods=["pixel_gaussian"])
    document = json.loads((tmp_path / "model" / "model.json").read_text())
    assert document["colour"] is False and "greyscale" not in document
    clear_cache()
    photo = _part(tmp_path / "part.png", seed=99)
    assert load_detector("embedded", str(tmp_path / "model")).detect(
        photo.read_bytes(), "image/png").notes == ()


@pytest.mark.parametrize("unwritable, refused", [
    ("model", True),    # the model folder itself: train would run, then fail to save
    ("parent", False),  # only its parent: the files go into the folder, which takes them
])
def test_train_checks_the_model_folder_it_will_write_into(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unwritable: str, refused: bool) -> None:
    """(As root every folder is writable, so os.access stands in for a read-only mount.)"""
    import typer

    from scripts.cli_detector import check_writable

    out = tmp_path / "parent" / "model"
    out.mkdir(parents=True)
    denied = {"model": out, "parent": out.parent}[unwritable]
    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != denied and real(path, mode))
    if refused:
        with pytest.raises(typer.BadParameter, match=f"{out.name} is not writable"):
            check_writable(out, "--out", directory=True)
    else:
        check_writable(out, "--out", directory=True)
