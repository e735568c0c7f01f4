"""PatchCore's memory bank, shared by every method that scores patches by their nearest
normal patch (`onnx_patchcore` on a user's backbone, `texture` on local statistics).

A subclass says how an image becomes patch features (`_patches`: P x C rows and their
(h, w) grid). Training keeps the normal images' patches as a bank, thinned by greedy
k-center coreset selection; an image's anomaly map is each patch's distance to its
nearest bank row, box-blurred over 3x3 patches, and its score is the map's maximum.
Nothing here depends on where a patch sits in the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.detector.ops import box_blur


class PatchMemory:
    def __init__(self, bank_size: int) -> None:
        self.bank_size = bank_size
        self.bank = np.zeros((0, 0), np.float32)
        self._ready: tuple[np.ndarray, Bank] | None = None  # (the bank it was made from, it)

    def _patches(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        raise NotImplementedError

    def _remember(self, features: Sequence[np.ndarray], rng: np.random.Generator,
                  candidates: int | None = None) -> None:
        """Keep the bank: PatchCore's 1-10 % of the patches, at least 1000, at most
        `bank_size`; chosen among `candidates` random patches when given (for speed)."""
        rows = np.concatenate(features)
        size = min(self.bank_size, max(1000, len(rows) // 10))
        if candidates is not None and len(rows) > max(candidates, size):
            rows = rows[rng.choice(len(rows), candidates, replace=False)]
        self.bank = coreset(rows, size, rng)

    def score(self, image: np.ndarray) -> tuple[float, np.ndarray]:
        patches, grid = self._patches(image)
        distances = nearest_distances(patches, self._ready_bank()).reshape(grid)
        anomaly_map = box_blur(distances, 1)
        return float(anomaly_map.max()), anomaly_map

    def _ready_bank(self) -> Bank:
        """`bank` made ready for queries once, not for every image: for a 4096-row bank of
        256-dimensional features that is 3 of the 22 ms a query of 784 patches takes, and
        39 of 147 ms at 1536 dimensions. Made again whenever `bank` is replaced."""
        if self._ready is None or self._ready[0] is not self.bank:
            self._ready = (self.bank, Bank.of(self.bank))
        return self._ready[1]


@dataclass(frozen=True)
class Bank:
    """Bank rows as `nearest_distances` uses them: centred, so rows far from zero do not
    lose their differences to rounding, transposed for the matrix product, and each row's
    squared norm."""

    centre: np.ndarray
    transposed: np.ndarray
    norms: np.ndarray

    @classmethod
    def of(cls, rows: np.ndarray) -> Bank:
        centre = rows.mean(axis=0)
        transposed = np.ascontiguousarray((rows - centre).T)
        return cls(centre, transposed, (transposed ** 2).sum(axis=0))


def nearest_distances(queries: np.ndarray, bank: np.ndarray | Bank, chunk: int = 256
                      ) -> np.ndarray:
    """Euclidean distance from each query row to its nearest bank row (`bank` as rows, or
    made ready once with `Bank.of` when many queries share it).

    >>> nearest_distances(np.array([[0.0, 0.0], [3.0, 4.0]]), np.array([[0.0, 0.0]]))
    array([0., 5.])
    """
    # |q - b|^2 = |q|^2 + (|b|^2 - 2 q.b), the query's own term left out of the argmin;
    # `chunk` queries at a time into one reused buffer (fresh multi-MB arrays per call
    # cost more in page faults than the arithmetic)
    ready = bank if isinstance(bank, Bank) else Bank.of(bank)
    queries = queries - ready.centre
    bank_t, bank_norms = ready.transposed, ready.norms
    dtype = np.result_type(queries, bank_t)
    nearest = np.empty(len(queries), dtype)
    products = np.empty((min(chunk, len(queries)), bank_t.shape[1]), dtype)
    for start in range(0, len(queries), chunk):
        rows = queries[start:start + chunk]
        block = products[:len(rows)]
        np.matmul(rows, bank_t, out=block)
        block *= -2.0
        block += bank_norms
        nearest[start:start + chunk] = block.min(axis=1) + (rows ** 2).sum(axis=1)
    return np.sqrt(np.maximum(nearest, 0.0))


def coreset(features: np.ndarray, size: int, rng: np.random.Generator,
            projection: int = 64) -> np.ndarray:
    """At most `size` rows of `features` chosen by greedy k-center selection (PatchCore),
    on a random projection for speed.

    >>> rows = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    >>> coreset(rows, 10, np.random.default_rng(0)).shape
    (10, 4)
    """
    if len(features) <= size:
        return features.astype(np.float32)
    dims = features.shape[1]
    if dims > 2 * projection:
        matrix = rng.normal(size=(dims, projection)).astype(np.float32) / np.sqrt(projection)
        reduced = features @ matrix
    else:
        reduced = features
    reduced = reduced.astype(np.float32)
    reduced -= reduced.mean(axis=0)  # far from zero, rounding would hide small distances
    norms = (reduced ** 2).sum(axis=1)

    def squared_distance(index: int) -> np.ndarray:  # to one row, as one matrix-vector
        return norms - 2.0 * (reduced @ reduced[index]) + norms[index]

    chosen = [int(rng.integers(len(features)))]
    distance = squared_distance(chosen[0])
    for _ in range(size - 1):
        index = int(distance.argmax())
        chosen.append(index)
        np.minimum(distance, squared_distance(index), out=distance)
        distance[index] = 0.0  # exactly, so rounding never picks a row twice
    return features[np.asarray(chosen)].astype(np.float32)
