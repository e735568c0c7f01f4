"""The shape method on synthetic objects: discs on a plain tray, some with a notch cut out."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.detector import heatmap
from pipeline.detector.methods.shape import ObjectShape, _hull_area


def _photo(rng: np.random.Generator, notch: bool = False) -> np.ndarray:
    height, width = 96, 72
    image = np.empty((height, width, 3), np.uint8)
    image[:] = (90, 92, 88)
    y, x = np.mgrid[:height, :width]
    cy, cx = 48 + rng.uniform(-6, 6), 36 + rng.uniform(-6, 6)
    radius = rng.uniform(22, 26)
    disc = (y - cy) ** 2 + (x - cx) ** 2 < radius ** 2
    if notch:
        angle = rng.uniform(0, 2 * np.pi)
        tip_y, tip_x = cy + radius * np.sin(angle), cx + radius * np.cos(angle)
        disc &= (y - tip_y) ** 2 + (x - tip_x) ** 2 > (0.6 * radius) ** 2
    image[disc] = (200, 160, 100)
    return image


@pytest.mark.parametrize("labelled", [True, False])  # logistic regression / normal-only
def test_notched_objects_score_higher(labelled: bool) -> None:
    rng = np.random.default_rng(0)
    method = ObjectShape()
    anomalies = [_photo(rng, notch=True) for _ in range(6)] if labelled else []
    method.fit([_photo(rng) for _ in range(10)], anomalies, rng)
    normal = [method.score(_photo(rng))[0] for _ in range(5)]
    notched = [method.score(_photo(rng, notch=True))[0] for _ in range(5)]
    assert min(notched) > max(normal)


def test_state_round_trip_scores_the_same() -> None:
    rng = np.random.default_rng(1)
    method = ObjectShape()
    method.fit([_photo(rng) for _ in range(6)], [_photo(rng, notch=True) for _ in range(4)], rng)
    image = _photo(rng, notch=True)
    again = ObjectShape.from_state(method.state())
    assert again.score(image)[0] == pytest.approx(method.score(image)[0])
    assert again.score(image)[1].shape == image.shape[:2]


def test_a_verdict_from_the_whole_object_claims_no_pixel_area() -> None:
    """A square part where round ones belong is judged by its shape features, and its map
    is flat: the anomaly area is none, where it was every pixel (100 %)."""
    rng = np.random.default_rng(0)
    method = ObjectShape()
    method.fit([_photo(rng) for _ in range(10)], [], rng)
    square = np.empty((96, 72, 3), np.uint8)
    square[:] = (90, 92, 88)
    square[20:76, 8:64] = (200, 160, 100)
    raw, anomaly_map = method.score(square)
    assert raw > 1.0 and anomaly_map.max() == anomaly_map.min()
    mask = heatmap.anomaly_mask(anomaly_map, 0.5, is_anomalous=True)
    assert [item["Name"] for item in heatmap.lookout_anomalies(mask)] == ["background"]


def test_hull_area_of_a_square() -> None:
    mask = np.zeros((10, 10), bool)
    mask[2:6, 3:7] = True
    assert _hull_area(mask) == pytest.approx(16.0)
