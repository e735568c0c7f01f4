"""The baseline scoring method: per-pixel Gaussian statistics of a small, blurred image.

Every image is resized to one fixed grid (the training images' shape at `input_size`),
blurred, and compared with the per-pixel mean and standard deviation of the normal
training images. Each pixel is compared with the statistics of its best-matching
neighbour within `tolerance` pixels, so a part that sits a pixel or two off is not an
anomaly. The anomaly map is the blurred z-score; the image score is its maximum. Fast (a
few milliseconds) and robust, it needs the part to sit in roughly the same place in every
photo.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from pipeline.detector.methods.base import State
from pipeline.detector.ops import box_blur, resize_rgb


class PixelGaussian:
    name: ClassVar[str] = "pixel_gaussian"

    def __init__(self, input_size: int = 128, blur: int = 1, map_blur: int = 2,
                 tolerance: int = 1) -> None:
        self.input_size = input_size
        self.blur = blur
        self.map_blur = map_blur
        self.tolerance = tolerance
        self.grid: tuple[int, int] = (0, 0)
        self.mean = np.zeros((0, 0, 3), np.float32)
        self.std = np.ones((0, 0, 3), np.float32)
        self._padded_cache: tuple[np.ndarray, np.ndarray] | None = None

    def fit(self, normals: Sequence[np.ndarray], anomalies: Sequence[np.ndarray],
            rng: np.random.Generator) -> None:
        if not normals:
            raise ValueError("pixel_gaussian needs at least one normal image")
        heights, widths = zip(*(image.shape[:2] for image in normals), strict=True)
        self.grid = (int(np.median(widths)), int(np.median(heights)))
        stack = np.stack([self._prepare(image) for image in normals])
        self.mean = stack.mean(axis=0)
        spread = stack.std(axis=0)
        # Few training images underestimate the spread; a floor from the whole image keeps
        # one lucky-flat pixel from dominating every score.
        floor = max(float(np.median(spread)), 2.0)
        self.std = np.sqrt(spread ** 2 + floor ** 2).astype(np.float32)
        self._padded_cache = None

    def score(self, image: np.ndarray) -> tuple[float, np.ndarray]:
        planes = self._prepare(image).transpose(2, 0, 1)
        mean, inverse = self._padded()
        height, width = planes.shape[1:]
        distance = np.full((height, width), np.inf, np.float32)
        span = 2 * self.tolerance + 1
        for dy in range(span):
            for dx in range(span):
                z = (planes - mean[:, dy:dy + height, dx:dx + width]) * inverse[
                    :, dy:dy + height, dx:dx + width]
                z *= z
                np.minimum(distance, z[0] + z[1] + z[2], out=distance)
        anomaly_map = box_blur(np.sqrt(distance / 3.0), self.map_blur)
        return float(anomaly_map.max()), anomaly_map

    def _padded(self) -> tuple[np.ndarray, np.ndarray]:
        """Channel-first mean and 1/std, edge-padded by the tolerance (computed once)."""
        cached = getattr(self, "_padded_cache", None)
        if cached is None:
            t = self.tolerance
            pad = ((0, 0), (t, t), (t, t))
            mean = np.pad(self.mean.transpose(2, 0, 1), pad, mode="edge")
            inverse = np.pad((1.0 / self.std).transpose(2, 0, 1), pad, mode="edge")
            cached = (np.ascontiguousarray(mean, np.float32),
                      np.ascontiguousarray(inverse, np.float32))
            self._padded_cache = cached
        return cached

    def state(self) -> State:
        return {"input_size": self.input_size, "blur": self.blur, "map_blur": self.map_blur,
                "tolerance": self.tolerance, "grid": list(self.grid), "mean": self.mean,
                "std": self.std}

    @classmethod
    def from_state(cls, state: State) -> PixelGaussian:
        method = cls(int(state["input_size"]), int(state["blur"]), int(state["map_blur"]),
                     int(state.get("tolerance", 1)))
        method.grid = (int(state["grid"][0]), int(state["grid"][1]))
        method.mean = np.asarray(state["mean"], np.float32)
        method.std = np.asarray(state["std"], np.float32)
        return method

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        return box_blur(resize_rgb(image, self.grid).astype(np.float32), self.blur)
