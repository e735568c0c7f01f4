"""`texture`: each patch compared with the nearest normal patch, wherever that lies.

For surfaces and parts with no fixed place in the frame and no plain background to align
by (woven or printed material, wood, leather, grain, a part that slides and turns), the
position-bound methods compare the wrong pixels. Here a patch is described by local
statistics only, with no position:

- its mean colour;
- the spread of its brightness, over the patch and over its 3x3 neighbourhood of
  patches;
- its mean horizontal and vertical brightness change at full and half resolution
  (edges, weave, grain direction);
- how far its brightness stands from its neighbourhood's.

A patch is `cell` x `cell` pixels of the image at `input_size` (4 x 4 at 256 px), and each
description is averaged over 3x3 patches, as PatchCore aggregates. The statistics are
standardised with the normal images' mean and spread, and `memory.PatchMemory` does
the rest: a bank of normal patches, thinned by greedy coreset selection, and each patch's
distance to its nearest normal patch as the anomaly map. No weights, numpy only; labelled
anomalies are not used. Training tries it automatically when labelled anomalies can judge
it; normal-only, only when asked for (`fair_on_synthetic`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from pipeline.detector.methods.base import State
from pipeline.detector.methods.memory import PatchMemory
from pipeline.detector.ops import box_blur

LUMA = np.array([0.299, 0.587, 0.114], np.float32)
CANDIDATES = 20_000  # the bank is chosen among this many random normal patches


class TextureMemory(PatchMemory):
    name: ClassVar[str] = "texture"
    # Normal-only, methods are compared on synthetic defects: local blobs, scratches and
    # pasted patches, which local statistics catch whatever the real defects are (it won
    # there on cookies, 0.653 against shape's 0.642, and then scored 0.661 on real cracks
    # that shape caught all of). So normal-only it is used only when asked for by name.
    fair_on_synthetic: ClassVar[bool] = False

    def __init__(self, input_size: int = 256, cell: int = 4, bank_size: int = 1000) -> None:
        if cell < 2 or cell % 2:
            raise ValueError(f"texture's cell must be an even number of pixels (got {cell})")
        super().__init__(bank_size)
        self.input_size = input_size
        self.cell = cell
        self.centre = np.zeros(0, np.float32)
        self.scale = np.ones(0, np.float32)

    def fit(self, normals: Sequence[np.ndarray], anomalies: Sequence[np.ndarray],
            rng: np.random.Generator) -> None:
        if not normals:
            raise ValueError("texture needs at least one normal image")
        described = [_describe(image, self.cell) for image in normals]
        rows = np.concatenate([d.reshape(-1, d.shape[-1]) for d in described])
        self.centre = rows.mean(axis=0).astype(np.float32)
        # a floor of about one grey level: a statistic that never varied in training must
        # not turn a one-level change into a huge distance
        self.scale = (rows.std(axis=0) + 4e-3).astype(np.float32)
        self._remember([self._standardised(d) for d in described], rng, CANDIDATES)

    def _patches(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        described = _describe(image, self.cell)
        return self._standardised(described), (described.shape[0], described.shape[1])

    def _standardised(self, described: np.ndarray) -> np.ndarray:
        rows = described.reshape(-1, described.shape[-1])
        return ((rows - self.centre) / self.scale).astype(np.float32)

    def state(self) -> State:
        return {"input_size": self.input_size, "cell": self.cell, "bank_size": self.bank_size,
                "centre": self.centre, "scale": self.scale,
                "bank": self.bank.astype(np.float16)}

    @classmethod
    def from_state(cls, state: State) -> TextureMemory:
        method = cls(int(state["input_size"]), int(state["cell"]), int(state["bank_size"]))
        method.centre = np.asarray(state["centre"], np.float32)
        method.scale = np.asarray(state["scale"], np.float32)
        method.bank = np.asarray(state["bank"], np.float32)
        return method


def _describe(rgb: np.ndarray, cell: int) -> np.ndarray:
    """The h x w x 10 local statistics of an HxWx3 uint8 image, one row per cell.

    >>> _describe(np.zeros((32, 48, 3), np.uint8), 4).shape
    (8, 12, 10)
    """
    if min(rgb.shape[:2]) < cell:
        raise ValueError(f"texture needs images of at least {cell} pixels a side "
                         f"(got {rgb.shape[1]}x{rgb.shape[0]})")
    colour = rgb.astype(np.float32) * (1.0 / 255.0)
    grey = colour @ LUMA
    half = _cells(grey, 2)
    mean, squares = _cells(grey, cell), _cells(grey * grey, cell)
    around, around_squares = box_blur(mean, 1), box_blur(squares, 1)
    described = np.concatenate([
        _cells(colour, cell),
        np.stack([
            np.sqrt(np.maximum(squares - mean ** 2, 0.0)),
            np.sqrt(np.maximum(around_squares - around ** 2, 0.0)),
            _cells(_change(grey, 1), cell), _cells(_change(grey, 0), cell),
            _cells(_change(half, 1), cell // 2), _cells(_change(half, 0), cell // 2),
            np.abs(mean - around),
        ], axis=-1)], axis=-1)
    return box_blur(described, 1)


def _cells(values: np.ndarray, size: int) -> np.ndarray:
    """Means over non-overlapping size x size blocks (a ragged edge is dropped)."""
    if size <= 1:
        return values.astype(np.float32, copy=False)
    height, width = values.shape[0] // size * size, values.shape[1] // size * size
    rest = values.shape[2:]
    # two single-axis sums: about 4x faster than one mean over two axes
    rows = values[:height, :width].reshape(height // size, size, width, *rest).sum(axis=1)
    blocks = rows.reshape(height // size, width // size, size, *rest).sum(axis=2)
    return (blocks * np.float32(1.0 / (size * size))).astype(np.float32, copy=False)


def _change(values: np.ndarray, axis: int) -> np.ndarray:
    """|difference to the next pixel| along `axis`; the last pixel repeats the one before
    (a zero there would make every border cell look smooth).

    >>> _change(np.array([[0.0, 1.0, 3.0]]), 1)
    array([[1., 2., 2.]])
    """
    change = np.abs(np.diff(values, axis=axis))
    if change.shape[axis] == 0:
        return np.zeros_like(values)
    return np.concatenate([change, np.take(change, [-1], axis=axis)], axis=axis)
