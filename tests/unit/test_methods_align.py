"""The align method on synthetic parts: a patterned board on a plain mat, moved and turned."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline.detector.methods.align import AlignEnvelope

SIZE = (240, 160)  # width, height


def _board() -> Image.Image:
    """A blue board with a few bright and dark 'components' (asymmetric, so pose is unique)."""
    rng = np.random.default_rng(7)
    board = np.zeros((50, 110, 3), np.uint8)
    board[:] = (40, 60, 200)
    for _ in range(12):
        y, x = rng.integers(2, 40), rng.integers(2, 96)
        board[y:y + 8, x:x + 12] = rng.integers(0, 255, 3)
    board[20:30, 0:14] = (230, 230, 230)
    return Image.fromarray(board)


def _photo(dx: float, dy: float, degrees: float, defect: bool = False) -> np.ndarray:
    mat = Image.new("RGB", SIZE, (40, 120, 60))
    board = _board().convert("RGBA").rotate(degrees, resample=Image.Resampling.BILINEAR,
                                            expand=True)
    x = int(SIZE[0] / 2 - board.width / 2 + dx)
    y = int(SIZE[1] / 2 - board.height / 2 + dy)
    mat.paste(board, (x, y), board)
    image = np.asarray(mat).copy()
    if defect:
        cx, cy = SIZE[0] // 2 + int(dx), SIZE[1] // 2 + int(dy)
        image[cy - 4:cy + 4, cx + 10:cx + 18] = (250, 250, 250)
    return image


@pytest.fixture(scope="module")
def fitted() -> AlignEnvelope:
    rng = np.random.default_rng(0)
    normals = [_photo(*rng.uniform(-8, 8, 2), rng.uniform(-3, 3)) for _ in range(8)]
    method = AlignEnvelope(input_size=max(SIZE), compare_factor=1)
    method.fit(normals, [], rng)
    return method


def test_moved_normal_scores_below_a_defect(fitted: AlignEnvelope) -> None:
    normal, _ = fitted.score(_photo(5, -4, 2.0))
    defect, anomaly_map = fitted.score(_photo(-3, 6, -1.5, defect=True))
    assert defect > 2 * normal
    assert anomaly_map.dtype == np.float32 and anomaly_map.ndim == 2


def test_upside_down_part_is_aligned(fitted: AlignEnvelope) -> None:
    flipped, _ = fitted.score(_photo(0, 0, 180.0))
    defect, _ = fitted.score(_photo(0, 0, 0.0, defect=True))
    assert flipped < defect / 4  # found turned round (unaligned it would score like a defect)


def test_state_round_trip_scores_the_same(fitted: AlignEnvelope) -> None:
    image = _photo(2, 2, 1.0, defect=True)
    again = AlignEnvelope.from_state(fitted.state())
    assert again.score(image)[0] == pytest.approx(fitted.score(image)[0], rel=1e-2)


def test_other_image_size_is_resized(fitted: AlignEnvelope) -> None:
    image = np.asarray(Image.fromarray(_photo(0, 0, 0.0)).resize((300, 200)))
    score, _ = fitted.score(image)
    assert np.isfinite(score)
