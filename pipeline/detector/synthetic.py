"""Synthetic defects drawn onto normal images, for judging methods when a line has no
labelled anomalies yet (normal-only training). CutPaste- and DRAEM-style, numpy + Pillow.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

KINDS = ("cutpaste", "scratch", "blob")


def synthetic_anomaly(rgb: np.ndarray, rng: np.random.Generator, kind: str | None = None
                      ) -> np.ndarray:
    """A copy of `rgb` with one synthetic defect in its central region.

    >>> image = np.full((64, 64, 3), 128, np.uint8)
    >>> damaged = synthetic_anomaly(image, np.random.default_rng(0), "scratch")
    >>> bool((damaged != image).any()), damaged.shape
    (True, (64, 64, 3))
    """
    kind = kind or str(rng.choice(KINDS))
    height, width = rgb.shape[:2]
    side = min(height, width)
    centre = (int(rng.uniform(0.3, 0.7) * width), int(rng.uniform(0.3, 0.7) * height))
    if kind == "cutpaste":
        return _cutpaste(rgb, rng, side, centre)
    image = Image.fromarray(rgb)
    draw = ImageDraw.Draw(image)
    mean = rgb.reshape(-1, 3).mean(axis=0)
    shade = tuple(int(v) for v in np.clip(255 - mean + rng.normal(0, 30, 3), 0, 255))
    if kind == "scratch":
        length = rng.uniform(0.15, 0.35) * side
        angle = rng.uniform(0, np.pi)
        dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
        draw.line([(centre[0] - dx, centre[1] - dy), (centre[0] + dx, centre[1] + dy)],
                  fill=shade, width=max(1, round(side / 90)))
    else:
        rx, ry = rng.uniform(0.03, 0.08, 2) * side
        draw.ellipse([centre[0] - rx, centre[1] - ry, centre[0] + rx, centre[1] + ry],
                     fill=shade)
    return np.asarray(image)


def _cutpaste(rgb: np.ndarray, rng: np.random.Generator, side: int,
              centre: tuple[int, int]) -> np.ndarray:
    height, width = rgb.shape[:2]
    patch = max(4, int(rng.uniform(0.08, 0.16) * side))
    sy = int(rng.integers(0, max(1, height - patch)))
    sx = int(rng.integers(0, max(1, width - patch)))
    ty = int(np.clip(centre[1] - patch // 2, 0, height - patch))
    tx = int(np.clip(centre[0] - patch // 2, 0, width - patch))
    out = rgb.copy()
    source = rgb[sy:sy + patch, sx:sx + patch].astype(np.float64)
    piece = source * rng.uniform(0.7, 1.3) + rng.normal(0, 10, 3)
    out[ty:ty + patch, tx:tx + patch] = np.clip(np.rot90(piece, int(rng.integers(1, 4)))
                                                [:patch, :patch], 0, 255).astype(np.uint8)
    return out
