"""The texture method on generated cloth: a weave whose phase differs in every photo, so
no pixel position means the same thing twice, with stains, cuts and smoothed-out weave."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipeline.detector.methods.baseline import PixelGaussian
from pipeline.detector.methods.texture import TextureMemory, _describe
from pipeline.detector.metrics import auroc

SIDE = 128
DEFECTS = ("stain", "cut", "smooth")


def cloth(rng: np.random.Generator, defect: str | None = None
          ) -> tuple[np.ndarray, tuple[int, int]]:
    """(a photo of cloth, the defect's centre (x, y)); the weave starts anywhere."""
    y, x = np.mgrid[:SIDE, :SIDE].astype(np.float32)
    first, second, third = rng.uniform(0, 2 * np.pi, 3)
    weave = np.sin(2 * np.pi * x / 9 + first) * np.sin(2 * np.pi * y / 9 + second)
    grey = (128 + 45 * weave + 15 * np.sin(2 * np.pi * (x + y) / 23 + third)
            + rng.normal(0, 12, (SIDE, SIDE)))
    photo = np.clip(np.stack([grey * 0.9 + 20, grey * 0.8 + 10, grey * 0.6], -1), 0, 255)
    image = Image.fromarray(photo.astype(np.uint8))
    cx, cy = (int(v) for v in rng.uniform(30, SIDE - 30, 2))
    if defect == "stain":
        ImageDraw.Draw(image).ellipse([cx - 6, cy - 6, cx + 6, cy + 6], fill=(150, 120, 70))
    elif defect == "cut":
        angle = rng.uniform(0, np.pi)
        dx, dy = 18 * np.cos(angle), 18 * np.sin(angle)
        ImageDraw.Draw(image).line([cx - dx, cy - dy, cx + dx, cy + dy], fill=(60, 50, 40),
                                   width=2)
    elif defect == "smooth":  # a few threads missing: the weave fades out
        pixels = np.asarray(image).astype(np.float32)
        patch = pixels[cy - 8:cy + 8, cx - 8:cx + 8]
        mean = patch.mean(axis=(0, 1))
        pixels[cy - 8:cy + 8, cx - 8:cx + 8] = mean + (patch - mean) * 0.2
        image = Image.fromarray(pixels.astype(np.uint8))
    return np.asarray(image), (cx, cy)


@pytest.fixture(scope="module")
def trained() -> TextureMemory:
    rng = np.random.default_rng(0)
    method = TextureMemory(input_size=SIDE)
    method.fit([cloth(rng)[0] for _ in range(16)], [], rng)
    return method


def test_it_finds_defects_where_pixel_positions_mean_nothing(trained: TextureMemory) -> None:
    rng = np.random.default_rng(1)
    normals = [cloth(rng)[0] for _ in range(12)]
    defective = [cloth(rng, DEFECTS[k % 3])[0] for k in range(12)]
    texture = auroc([trained.score(x)[0] for x in normals],
                    [trained.score(x)[0] for x in defective])
    per_pixel = PixelGaussian()
    per_pixel.fit([cloth(rng)[0] for _ in range(16)], [], rng)
    pixel = auroc([per_pixel.score(x)[0] for x in normals],
                  [per_pixel.score(x)[0] for x in defective])
    assert texture >= 0.95
    assert texture - pixel >= 0.15  # why the method exists: fixed positions mean nothing here


@pytest.mark.parametrize("defect", DEFECTS)
def test_the_map_points_at_the_defect(trained: TextureMemory, defect: str) -> None:
    image, (cx, cy) = cloth(np.random.default_rng(2), defect)
    anomaly_map = trained.score(image)[1]
    row, col = np.unravel_index(int(anomaly_map.argmax()), anomaly_map.shape)
    scale = SIDE / anomaly_map.shape[1]
    assert abs((col + 0.5) * scale - cx) <= 14 and abs((row + 0.5) * scale - cy) <= 14


def test_a_saved_model_scores_the_same(trained: TextureMemory) -> None:
    image = cloth(np.random.default_rng(3), "stain")[0]
    again = TextureMemory.from_state(trained.state())
    assert again.score(image)[0] == pytest.approx(trained.score(image)[0], rel=1e-3)


def test_the_description_does_not_depend_on_where_a_patch_is() -> None:
    image = cloth(np.random.default_rng(4))[0]
    moved = np.roll(image, (8, 12), axis=(0, 1))  # whole cells: 8 and 12 pixels
    inner = (slice(4, -4), slice(5, -5))  # away from the wrapped edges
    assert np.allclose(np.roll(_describe(image, 4), (2, 3), axis=(0, 1))[inner],
                       _describe(moved, 4)[inner], atol=1e-5)


def test_border_cells_are_described_like_the_rest() -> None:
    """A stationary weave looks the same at the right and bottom edges as inside."""
    described = np.stack([_describe(cloth(np.random.default_rng(seed))[0], 4)
                          for seed in range(40)])
    inside = described[:, 2:-2, 2:-2].reshape(-1, described.shape[-1])
    spread = inside.std(axis=0)
    for edge in (described[:, :, -1], described[:, -1, :]):
        offset = np.abs(edge.reshape(-1, described.shape[-1]).mean(axis=0)
                        - inside.mean(axis=0))
        assert (offset <= 0.6 * spread).all(), offset / spread  # a zero there: 3 spreads


def test_a_statistic_that_never_varied_does_not_blow_up() -> None:
    """Trained on flat grey, a one-level brighter image is no defect; a stain is."""
    rng = np.random.default_rng(6)
    flat = np.full((64, 64, 3), 128, np.uint8)
    method = TextureMemory(input_size=64)
    method.fit([flat] * 4, [], rng)
    stained = flat.copy()
    stained[20:30, 20:30] = (150, 120, 70)
    assert method.score(flat + 1)[0] < 2.0
    assert method.score(stained)[0] > 10 * method.score(flat + 1)[0]


def test_an_image_smaller_than_a_cell_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 4 pixels"):
        _describe(np.zeros((3, 256, 3), np.uint8), 4)


@pytest.mark.parametrize("cell", [0, 3])  # too small / odd: the half-scale cells misalign
def test_a_cell_must_be_even(cell: int) -> None:
    with pytest.raises(ValueError, match="even"):
        TextureMemory(cell=cell)


def _cloth_folder(root: Path, anomalies: int) -> Path:
    rng = np.random.default_rng(5)
    for label, count in (("normal", 12), ("anomaly", anomalies)):
        folder = root / "train" / label
        folder.mkdir(parents=True)
        for index in range(count):
            defect = DEFECTS[index % 3] if label == "anomaly" else None
            Image.fromarray(cloth(rng, defect)[0]).save(folder / f"{index}.png")
    return root


def test_training_chooses_it_for_cloth_with_labelled_defects(tmp_path: Path) -> None:
    from pipeline.detector.training import train_model

    report = train_model(_cloth_folder(tmp_path, anomalies=6), tmp_path / "model",
                         methods=["pixel_gaussian", "texture"])
    assert report.method == "texture"


def test_normal_only_it_is_used_when_asked_for(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Synthetic defects would flatter it, so normal-only training leaves it out on its
    own (and says why), but takes it when named."""
    from pipeline.detector.methods import METHODS
    from pipeline.detector.training import train_model

    for name in set(METHODS) - {"pixel_gaussian", "texture"}:  # the rest only cost time
        monkeypatch.delitem(METHODS, name)
    data = _cloth_folder(tmp_path, anomalies=0)
    automatic = train_model(data, tmp_path / "automatic")
    (skipped,) = [c for c in automatic.candidates if c.method == "texture"]
    assert automatic.method != "texture"
    assert skipped.error.startswith("not tried") and "--method texture" in skipped.error
    asked = train_model(data, tmp_path / "asked", methods=["pixel_gaussian", "texture"])
    assert asked.method == "texture"
