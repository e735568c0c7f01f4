"""Small numpy/Pillow image operations shared by scoring methods (no scipy)."""

from __future__ import annotations

import numpy as np
from PIL import Image


def box_blur(values: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a (2r+1)x(2r+1) window of an HxW or HxWxC array, edges replicated.

    >>> box_blur(np.eye(3, dtype=np.float32), 1).round(3)
    array([[0.556, 0.333, 0.111],
           [0.333, 0.333, 0.333],
           [0.111, 0.333, 0.556]], dtype=float32)
    """
    if radius <= 0:
        return values.astype(np.float32, copy=True)
    size = 2 * radius + 1
    pad = [(radius, radius), (radius, radius)] + [(0, 0)] * (values.ndim - 2)
    padded = np.pad(values.astype(np.float32), pad, mode="edge")
    summed = np.cumsum(np.cumsum(padded, axis=0, dtype=np.float64), axis=1)
    summed = np.pad(summed, [(1, 0), (1, 0)] + [(0, 0)] * (values.ndim - 2))
    window = (summed[size:, size:] - summed[:-size, size:] - summed[size:, :-size]
              + summed[:-size, :-size])
    return (window / (size * size)).astype(np.float32)


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An HxWx3 uint8 array resized to (width, height)."""
    if (rgb.shape[1], rgb.shape[0]) == size:
        return rgb
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))


def resize_map(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An HxW float map resized to (width, height), bilinear."""
    if (values.shape[1], values.shape[0]) == size:
        return values.astype(np.float32, copy=False)
    image = Image.fromarray(values.astype(np.float32), mode="F")
    return np.asarray(image.resize(size, Image.Resampling.BILINEAR), dtype=np.float32)


def border_colour(image: np.ndarray) -> np.ndarray:
    """The median colour of an HxWx3 image's two-pixel border (the background)."""
    border = np.concatenate([image[:2].reshape(-1, 3), image[-2:].reshape(-1, 3),
                             image[:, :2].reshape(-1, 3), image[:, -2:].reshape(-1, 3)])
    return np.median(border, axis=0)


def otsu(values: np.ndarray) -> float:
    """Otsu's threshold of `values` over a 64-bin histogram (between-class variance max):
    the centre of the last bin of the lower class.

    >>> t = otsu(np.array([0.1] * 50 + [0.9] * 50))
    >>> 0.1 <= t < 0.9
    True
    """
    counts, edges = np.histogram(values, 64)
    centres = (edges[1:] + edges[:-1]) / 2
    weight = np.cumsum(counts)
    mass = np.cumsum(counts * centres)
    between = (mass[-1] * weight - mass * weight[-1]) ** 2 / np.maximum(
        weight * (weight[-1] - weight), 1e-9)
    return float(centres[int(np.argmax(between))])
