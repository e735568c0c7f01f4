"""The `cnn` method: learned with torch from labelled anomalies, run with numpy."""

from __future__ import annotations

import doctest
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipeline.detector.methods import METHODS, cnn
from pipeline.detector.methods.cnn import MIN_ANOMALIES, CoarseCnn, SmallCnn
from pipeline.detector.metrics import auroc
from pipeline.detector.training import TrainingError, train_model

needs_torch = pytest.mark.skipif(
    SmallCnn.unavailable(0, MIN_ANOMALIES) is not None,
    reason="torch is not installed (training only: pip install torch==2.13.0+cpu)")


def _textured(rng: np.random.Generator, size: int = 64, scratch: bool = False
              ) -> np.ndarray:
    """Grey cast-like surface: a fresh random grain every time, so no pixel statistics of
    the normals describe it; an anomaly adds one short scratch, no darker than the grain's
    darkest spots, anywhere at any angle."""
    grain = rng.normal(128, 18, (size // 4, size // 4))
    surface = np.asarray(Image.fromarray(grain.clip(0, 255).astype(np.uint8)).resize(
        (size, size), Image.Resampling.BICUBIC), np.float32)
    surface += rng.normal(0, 6, surface.shape)
    image = Image.fromarray(surface.clip(0, 255).astype(np.uint8))
    if scratch:
        y, x = rng.integers(10, size - 10, 2)
        angle = rng.uniform(0, np.pi)
        dx, dy = 7 * np.cos(angle), 7 * np.sin(angle)
        ImageDraw.Draw(image).line([(x - dx, y - dy), (x + dx, y + dy)], fill=85, width=2)
    return np.repeat(np.asarray(image)[:, :, None], 3, axis=2)


def _set(rng: np.random.Generator, count: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    return ([_textured(rng) for _ in range(count)],
            [_textured(rng, scratch=True) for _ in range(count)])


def test_doctests() -> None:
    outcome = doctest.testmod(cnn)
    assert outcome.attempted > 0 and outcome.failed == 0


@pytest.mark.parametrize("anomalous, torch_installed, expected", [
    (MIN_ANOMALIES - 1, True, "needs at least 8 labelled anomalies"),  # too few
    (0, True, "needs at least 8 labelled anomalies"),  # normal-only training
    (MIN_ANOMALIES, False, "needs torch for training"),  # enough, but no torch
])
def test_it_says_why_it_cannot_be_trained(anomalous: int, torch_installed: bool,
                                          expected: str, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    if not torch_installed:
        find_spec = cnn.importlib.util.find_spec
        monkeypatch.setattr(cnn.importlib.util, "find_spec",
                            lambda name: None if name == "torch" else find_spec(name))
    assert expected in (SmallCnn.unavailable(20, anomalous) or "")
    with pytest.raises(ValueError, match=expected):
        SmallCnn().fit([np.zeros((8, 8, 3), np.uint8)] * 20,
                       [np.zeros((8, 8, 3), np.uint8)] * anomalous, np.random.default_rng(0))


@needs_torch
def test_it_learns_a_defect_that_the_normals_statistics_miss() -> None:
    rng = np.random.default_rng(3)
    normals, anomalies = _set(rng, 16)
    method = SmallCnn(side=64)
    method.fit(normals, anomalies, np.random.default_rng(0))
    test_normals, test_anomalies = _set(np.random.default_rng(4), 12)

    learned = auroc([method.score(image)[0] for image in test_normals],
                    [method.score(image)[0] for image in test_anomalies])
    assert learned is not None and learned >= 0.9

    from pipeline.detector.methods.baseline import PixelGaussian
    statistics = PixelGaussian(input_size=64)
    statistics.fit(normals, [], np.random.default_rng(0))
    per_pixel = auroc([statistics.score(image)[0] for image in test_normals],
                      [statistics.score(image)[0] for image in test_anomalies])
    assert per_pixel is not None and per_pixel < learned

    # the map points at the scratch: its hottest cell lies on it (within a cell)
    rng = np.random.default_rng(7)
    image = _textured(rng, scratch=True)
    plain = _textured(np.random.default_rng(7))
    scratched = np.abs(image[:, :, 0].astype(int) - plain[:, :, 0]) > 0
    _, anomaly_map = method.score(image)
    cell = image.shape[0] // anomaly_map.shape[0]
    y, x = np.unravel_index(np.argmax(anomaly_map), anomaly_map.shape)
    assert scratched[max(0, (y - 1) * cell):(y + 2) * cell,
                     max(0, (x - 1) * cell):(x + 2) * cell].any()


@needs_torch
def test_numpy_inference_matches_the_torch_network_with_batch_norm_folded() -> None:
    import torch

    torch.manual_seed(0)
    network = cnn._network(torch).to(memory_format=torch.channels_last)  # as trained
    for module in network:
        if isinstance(module, torch.nn.BatchNorm2d):  # statistics far from the identity
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    network.eval()
    method = SmallCnn()
    method.grid, method.layers = (64, 40), cnn._folded(torch, network)
    image = np.random.default_rng(1).integers(0, 256, (40, 64, 3), np.uint8)

    score, anomaly_map = method.score(image)
    values = (image.astype(np.float32) / 255.0 - method.mean) / method.std
    with torch.no_grad():
        expected = network(torch.from_numpy(values.transpose(2, 0, 1)[None].copy()))[0, 0]
    assert anomaly_map.shape == (5, 8)
    np.testing.assert_allclose(anomaly_map, expected.numpy(), atol=1e-4)
    assert score == pytest.approx(cnn._top_mean(expected.numpy().ravel(), 0.02), abs=1e-4)



def test_the_coarse_variant_takes_a_camera_jpegs_eighth_scale_draft_as_it_is() -> None:
    """Its point: a 768-pixel JPEG decodes at 1/8 scale, exactly its grid, with no resize."""
    from pipeline.detector.imageio import decode

    buffer = io.BytesIO()
    photo = np.random.default_rng(2).integers(0, 256, (576, 768, 3), np.uint8)
    Image.fromarray(photo).save(buffer, "JPEG", quality=95)
    decoded = decode(buffer.getvalue(), "image/jpeg", longest_side=CoarseCnn().input_size)
    draft = Image.open(io.BytesIO(buffer.getvalue()))
    draft.draft("RGB", (96, 72))
    assert draft.size == (96, 72)
    np.testing.assert_array_equal(decoded.rgb, np.asarray(draft.convert("RGB")))
    assert cnn._grid(768, 576, CoarseCnn().side) == (96, 72)


def test_the_coarse_variant_saves_and_loads_as_itself() -> None:
    rng = np.random.default_rng(3)
    method = CoarseCnn()
    method.grid = (96, 72)
    previous = 3
    for channels in (*cnn.CHANNELS, 1):
        size = 1 if channels == 1 else 3
        method.layers.append((rng.normal(0, 0.3, (channels, previous, size, size)).astype(
            np.float32), rng.normal(0, 0.1, channels).astype(np.float32)))
        previous = channels
    image = rng.integers(0, 256, (72, 96, 3), np.uint8)

    loaded = METHODS[CoarseCnn.name].from_state(method.state())
    assert isinstance(loaded, CoarseCnn) and loaded.side == loaded.input_size == 96
    assert loaded.score(image)[0] == method.score(image)[0]
    assert loaded.score(image)[1].shape == (9, 12)  # one logit per 8x8 cell


class _QuickCnn(SmallCnn):
    """Smaller and shorter training than the default, for the test's time."""

    def __init__(self, side: int = 64, top_fraction: float = 0.02) -> None:
        super().__init__(side=side, top_fraction=top_fraction, min_steps=20)


@needs_torch
def test_a_saved_model_scores_the_same_and_without_torch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(METHODS, "cnn", _QuickCnn)
    rng = np.random.default_rng(5)
    normals, anomalies = _set(rng, 12)
    for label, images in (("normal", normals), ("anomaly", anomalies)):
        folder = tmp_path / "data" / "train" / label
        folder.mkdir(parents=True)
        for index, image in enumerate(images):
            Image.fromarray(image).save(folder / f"{label}{index}.png")
    report = train_model(tmp_path / "data", tmp_path / "model", methods=["cnn"])
    assert report.method == "cnn" and report.cv_auroc is not None

    probe = tmp_path / "data" / "train" / "anomaly" / "anomaly0.png"
    code = (
        "import sys; from pathlib import Path; from pipeline.detector import load_detector; "
        f"d = load_detector('embedded', {str(tmp_path / 'model')!r}); "
        f"r = d.detect(Path({str(probe)!r}).read_bytes(), 'image/png'); "
        "print(r.score); sys.exit(2 if 'torch' in sys.modules else 0)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False)
    assert run.returncode == 0, run.stderr
    from pipeline.detector import clear_cache, load_detector
    clear_cache()
    here = load_detector("embedded", str(tmp_path / "model")).detect(probe.read_bytes(),
                                                                     "image/png")
    assert float(run.stdout.split()[-1]) == pytest.approx(here.score, abs=1e-6)


def test_training_lists_it_as_not_tried_without_enough_anomalies(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    normals, anomalies = _set(rng, 6)
    for label, images in (("normal", normals), ("anomaly", anomalies[:3])):
        folder = tmp_path / "data" / "train" / label
        folder.mkdir(parents=True)
        for index, image in enumerate(images):
            Image.fromarray(image).save(folder / f"{label}{index}.png")

    report = train_model(tmp_path / "data", tmp_path / "model")
    skipped = {candidate.method: candidate.error for candidate in report.candidates}["cnn"]
    assert skipped.startswith("not tried: needs at least 8 labelled anomalies, found 2 "
                              "(in each cross-validation fold's training part; 6 normal and 3 "
                              "anomalous in all")
    assert report.method != "cnn"
    with pytest.raises(TrainingError, match="cnn needs at least 8 labelled anomalies"):
        train_model(tmp_path / "data", tmp_path / "model", methods=["cnn"])


def test_eight_anomalies_are_too_few_when_each_fold_trains_on_seven(tmp_path: Path) -> None:
    """With 16 normals and 8 anomalies there are 8 folds, each holding one anomaly out:
    the method must be asked about the 7 it would learn from, not the 8 in all."""
    rng = np.random.default_rng(8)
    normals, anomalies = _set(rng, 16)
    for label, images in (("normal", normals), ("anomaly", anomalies[:MIN_ANOMALIES])):
        folder = tmp_path / "data" / "train" / label
        folder.mkdir(parents=True)
        for index, image in enumerate(images):
            Image.fromarray(image).save(folder / f"{label}{index}.png")

    with pytest.raises(TrainingError, match="found 7 .*16 normal and 8 anomalous in all, 8 folds"):
        train_model(tmp_path / "data", tmp_path / "model", methods=["cnn"])


@needs_torch
def test_folds_trained_side_by_side_score_as_one_after_another(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two folds' networks draw their first weights from torch's one global generator;
    in parallel threads each must still get its own fold's seed. Building a network is
    slowed down here, so that without the lock another fold's seed would land between
    seeding and drawing every time."""
    import time

    from pipeline.detector import training

    build = cnn._network

    def slow_build(torch):  # type: ignore[no-untyped-def]
        time.sleep(0.05)
        return build(torch)

    monkeypatch.setitem(METHODS, "cnn", _QuickCnn)
    monkeypatch.setattr(cnn, "_network", slow_build)
    rng = np.random.default_rng(9)
    normals, anomalies = _set(rng, 9)
    for label, images in (("normal", normals), ("anomaly", anomalies)):
        folder = tmp_path / label
        folder.mkdir(parents=True)
        for index, image in enumerate(images):
            Image.fromarray(image).save(folder / f"{label}{index}.png")
    found = training.find_training_set(tmp_path)
    images = training._ImageCache(found, lambda *progress: None, None, [_QuickCnn()])
    split = training._Split.drawn(9, True, 9, 9, np.random.default_rng(1), seed=1)
    serial, parallel = (training._cross_validate("cnn", _QuickCnn(), images, split,
                                                 workers=workers)[1] for workers in (1, 2))
    assert serial is not None and parallel is not None
    assert (serial.normal, serial.anomalous) == (parallel.normal, parallel.anomalous)
    assert (serial.normal_index, serial.anomalous_index) == (parallel.normal_index,
                                                             parallel.anomalous_index)
