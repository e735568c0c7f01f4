"""The contract between the detector framework and a scoring method.

A method learns what "normal" looks like from training images and scores new ones. The
framework (`pipeline.detector`) decodes images, picks a method per line by
cross-validation on the training split, normalises raw scores so the chosen threshold
sits at 0.5, and saves/loads the model artifact. A method only sees decoded arrays.

Inference code paths may use numpy and Pillow only (no torch, no scipy); `fit` may use
anything in requirements.txt, and torch (requirements-train.txt) if the method says
through an `unavailable(normal_count, anomaly_count)` class method when it is missing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol

import numpy as np

# State is what a method saves into the model artifact (an .npz plus JSON): numpy arrays
# and JSON-able scalars/lists/dicts only.
State = Mapping[str, Any]


class Method(Protocol):
    name: ClassVar[str]
    # Longest side, in pixels, of the RGB uint8 arrays the framework passes in. The
    # framework decodes JPEGs with Pillow's reduced-scale draft mode to at least this size.
    input_size: int

    def fit(self, normals: Sequence[np.ndarray], anomalies: Sequence[np.ndarray],
            rng: np.random.Generator) -> None:
        """Learn from HxWx3 uint8 arrays. `anomalies` may be empty (normal-only)."""
        ...

    def score(self, image: np.ndarray) -> tuple[float, np.ndarray]:
        """Return (raw image score, anomaly map). Higher is more anomalous. The map is a
        float32 HxW array (any resolution; the framework resizes it to the image)."""
        ...

    def state(self) -> State:
        ...

    @classmethod
    def from_state(cls, state: State) -> Method:
        ...


class NeedsNormals:
    """For a method that learns how normal images vary among themselves, and so needs at
    least two of them. Training asks `unavailable` about each cross-validation fold's
    training part, and lists the method as not tried where a fold would have fewer; `fit`
    refuses such a set (`refuse_if_unavailable`)."""

    @classmethod
    def unavailable(cls, normal_count: int, anomaly_count: int) -> str | None:
        """Why this method cannot be trained on such a set (None when it can).

        >>> NeedsNormals.unavailable(1, 5)
        'needs at least 2 normal images, found 1'
        >>> NeedsNormals.unavailable(2, 0) is None
        True
        """
        if normal_count < 2:
            return f"needs at least 2 normal images, found {normal_count}"
        return None


def refuse_if_unavailable(method: Any, normals: Sequence[np.ndarray],
                          anomalies: Sequence[np.ndarray]) -> None:
    """Raise ValueError, named for the method, where its `unavailable` class method says it
    cannot be trained on these images."""
    reason = type(method).unavailable(len(normals), len(anomalies))
    if reason:
        raise ValueError(f"{method.name} {reason}")
