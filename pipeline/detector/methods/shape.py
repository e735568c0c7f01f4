"""Judge the silhouette of one object on a plain background: cracks, chips, broken pieces.

For a single product lying anywhere, at any angle, on a tray or belt (a cookie, a
tablet, a moulded part), pixel-by-pixel comparison is useless, but damage shows in the
object's outline, whatever the pose:

1. **Segment.** The background colour is the median of the image border. A pixel's
   distance from it (in YCbCr) weighs chroma more than brightness (so glare on the tray and dark
   spots on the object do not flip it); the threshold is Otsu's on the normal images.
   The object is the blob (found at half resolution) around the densest part of the
   foreground, together with pieces lying within a few pixels of it.
2. **Describe.** Rotation-invariant shape numbers: for radii of 1 to 6 pixels (at a
   96-pixel image; scaled with `input_size`), the area that a morphological closing adds
   (a crack or a notch is filled by a closing wider than it), relative to the object's
   area; and the convexity deficit, 1 - area / convex hull area (a missing piece).
3. **Score.** With labelled anomalies, an L2-regularised logistic regression on the
   standardised numbers (its logit is the score). Normal-only, the root sum of squares
   of the positive z-scores (more gap or deficit than normal parts show).

The anomaly map is the area the closings add, so it lights up cracks and notches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
from PIL import Image

from pipeline.detector.methods.base import NeedsNormals, State, refuse_if_unavailable
from pipeline.detector.ops import border_colour, otsu

_BASE_SIZE = 96
_RADII = (1, 2, 3, 4, 6)
# How far (a fraction of the longest side) the object may reach across background to
# include a nearby piece; chosen by cross-validation on the cookies training split.
_JUMP = 0.15


class ObjectShape(NeedsNormals):
    name: ClassVar[str] = "shape"

    def __init__(self, input_size: int = 96, l2: float = 1.0) -> None:
        self.input_size = input_size
        self.l2 = l2
        self.background = np.zeros(3, np.float32)
        self.threshold = 0.0
        self.mean = np.zeros(0, np.float32)
        self.scale = np.ones(0, np.float32)
        self.weights = np.zeros(0, np.float32)  # empty: normal-only scoring
        self.bias = 0.0

    @property
    def radii(self) -> tuple[int, ...]:
        factor = self.input_size / _BASE_SIZE
        return tuple(max(1, round(r * factor)) for r in _RADII)

    def fit(self, normals: Sequence[np.ndarray], anomalies: Sequence[np.ndarray],
            rng: np.random.Generator) -> None:
        refuse_if_unavailable(self, normals, anomalies)
        self.background = np.median([border_colour(_ycbcr(x)) for x in normals], axis=0)
        distances = np.concatenate([self._distance(x).ravel() for x in normals[:16]])
        self.threshold = otsu(distances)
        normal_features = np.array([self._features(x)[0] for x in normals])
        self.mean = normal_features.mean(axis=0)
        self.scale = normal_features.std(axis=0) + 1e-3
        if len(anomalies) >= 2:
            anomaly_features = np.array([self._features(x)[0] for x in anomalies])
            features = np.concatenate([normal_features, anomaly_features])
            labels = np.r_[np.zeros(len(normals)), np.ones(len(anomalies))]
            self.weights, self.bias = _logistic((features - self.mean) / self.scale, labels,
                                                self.l2)
        else:
            self.weights, self.bias = np.zeros(0, np.float32), 0.0

    def score(self, image: np.ndarray) -> tuple[float, np.ndarray]:
        features, anomaly_map = self._features(image)
        z = (features - self.mean) / self.scale
        if self.weights.size:
            value = float(z @ self.weights + self.bias)
        else:
            value = float(np.sqrt(np.sum(np.maximum(z, 0.0) ** 2)))
        return value, anomaly_map

    def state(self) -> State:
        return {"input_size": self.input_size, "l2": self.l2, "background": self.background,
                "threshold": float(self.threshold), "mean": self.mean, "scale": self.scale,
                "weights": self.weights, "bias": float(self.bias)}

    @classmethod
    def from_state(cls, state: State) -> ObjectShape:
        method = cls(int(state["input_size"]), float(state["l2"]))
        method.background = np.asarray(state["background"], np.float32)
        method.threshold = float(state["threshold"])
        method.mean = np.asarray(state["mean"], np.float64)
        method.scale = np.asarray(state["scale"], np.float64)
        method.weights = np.asarray(state["weights"], np.float64)
        method.bias = float(state["bias"])
        return method

    # -- features -------------------------------------------------------------------------

    def _distance(self, image: np.ndarray) -> np.ndarray:
        """Distance from the background colour in YCbCr: chroma counts 3x as much as luma."""
        ycc = np.asarray(Image.fromarray(np.asarray(image, np.uint8)).convert("YCbCr"),
                         np.int16)
        reference = self.background.astype(np.int16)
        chroma = np.abs(ycc[..., 1] - reference[1]) + np.abs(ycc[..., 2] - reference[2])
        return 3 * chroma + np.abs(ycc[..., 0] - reference[0])

    def _features(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        foreground = self._distance(image) > self.threshold
        blob = _main_blob(foreground)
        area = max(int(blob.sum()), 1)
        features = []
        anomaly_map = np.zeros(blob.shape, np.float32)
        for radius in self.radii:
            gap = _erode(_dilate(blob, radius), radius) & ~blob
            features.append(gap.sum() / area)
            anomaly_map += gap
        features.append(1.0 - area / max(_hull_area(blob), area))
        features.append(area / blob.size)
        return np.array(features, np.float64), anomaly_map / len(self.radii)


def _ycbcr(image: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(np.asarray(image, np.uint8)).convert("YCbCr"), np.float32)


def _main_blob(foreground: np.ndarray) -> np.ndarray:
    """The foreground's main object: grown at half resolution from its densest point through
    the opened mask (jumping gaps narrower than `_JUMP` of the image, so both halves of a
    broken object count), then intersected with the full-resolution mask."""
    height, width = foreground.shape
    h2, w2 = height // 2, width // 2
    quads = foreground[:2 * h2, :2 * w2].view(np.uint8)
    coarse = (quads[0::2, 0::2] + quads[1::2, 0::2] + quads[0::2, 1::2] + quads[1::2, 1::2]) > 2
    body = _dilate(_erode(coarse, 2), 2)
    if not body.any():
        return foreground
    density = _box_sum(body.astype(np.float32), max(2, min(h2, w2) // 8))
    y, x = np.unravel_index(int(np.argmax(density)), density.shape)
    grown = np.zeros_like(body)
    grown[y, x] = True
    # Pieces of a broken object lie close to each other: growth may jump small gaps.
    jump = max(2, round(_JUMP * max(h2, w2)))
    for _ in range(h2 + w2):
        step = _dilate(grown, jump) & body
        if np.array_equal(step, grown):
            break
        grown = step
    full = np.zeros_like(foreground)
    full[:2 * h2, :2 * w2] = grown.repeat(2, axis=0).repeat(2, axis=1)
    return _dilate(full, 3) & foreground


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    out = mask.copy()
    for axis in (0, 1):
        source = out.copy()
        length = source.shape[axis]
        for s in range(1, min(radius, length - 1) + 1):
            if axis == 0:
                out[s:] |= source[:-s]
                out[:-s] |= source[s:]
            else:
                out[:, s:] |= source[:, :-s]
                out[:, :-s] |= source[:, s:]
    return out


def _erode(mask: np.ndarray, radius: int) -> np.ndarray:
    return ~_dilate(~mask, radius)


def _box_sum(values: np.ndarray, radius: int) -> np.ndarray:
    summed = np.pad(values, radius).cumsum(axis=0).cumsum(axis=1)
    summed = np.pad(summed, ((1, 0), (1, 0)))
    size = 2 * radius + 1
    return (summed[size:, size:] - summed[:-size, size:] - summed[size:, :-size]
            + summed[:-size, :-size])


def _hull_area(mask: np.ndarray) -> float:
    """Area of the convex hull of a mask's pixels (monotone chain over row end points)."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return 0.0
    sub = mask[rows]
    left = sub.argmax(axis=1)
    right = sub.shape[1] - 1 - sub[:, ::-1].argmax(axis=1)
    points = sorted(set(zip(left.tolist(), rows.tolist(), strict=True))
                    | set(zip((right + 1).tolist(), rows.tolist(), strict=True))
                    | set(zip(left.tolist(), (rows + 1).tolist(), strict=True))
                    | set(zip((right + 1).tolist(), (rows + 1).tolist(), strict=True)))

    def cross(o: tuple[int, int], a: tuple[int, int], b: tuple[int, int]) -> int:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[tuple[int, int]] = []
    upper: list[tuple[int, int]] = []
    for p in points:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(points):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    hull = np.array(lower[:-1] + upper[:-1], np.float64)
    x, y = hull[:, 0], hull[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _logistic(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression by Newton's method; returns (weights, bias)."""
    design = np.hstack([x, np.ones((len(x), 1))])
    beta = np.zeros(design.shape[1])
    penalty = np.eye(design.shape[1]) * l2
    penalty[-1, -1] = 0.0
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ beta, -30, 30)))
        gradient = design.T @ (p - y) + penalty @ beta
        hessian = (design * (p * (1 - p))[:, None]).T @ design + penalty + 1e-6 * np.eye(
            len(beta))
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if np.abs(step).max() < 1e-6:
            break
    return beta[:-1], float(beta[-1])
