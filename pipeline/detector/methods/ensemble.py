"""An ensemble of scoring methods whose scores disagree usefully.

Training builds one (never a user) when the standardised sum of two methods' out-of-fold
scores beats each of them clearly in cross-validation. Each member's raw score is turned
into a robust z-score with the median and spread of its own held-out normal scores, and
the ensemble score is the mean z-score; the anomaly maps are standardised the same way and
averaged. The image is decoded at the largest member's input size and downsized for the
others.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from pipeline.detector.imageio import fit_within
from pipeline.detector.methods.base import Method, State
from pipeline.detector.ops import resize_map, resize_rgb


def robust_scale(normal_scores: Sequence[float]) -> tuple[float, float]:
    """(centre, spread) of held-out normal scores: median and 1.4826 x MAD (or a floor).

    >>> robust_scale([1.0, 2.0, 3.0, 4.0, 100.0])
    (3.0, 1.4826)
    """
    values = np.asarray(normal_scores, float)
    centre = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - centre)))
    floor = max(float(values.std()), abs(centre) * 0.01, 1e-6)
    return centre, spread if spread > 0 else floor


class ScoreEnsemble:
    name: ClassVar[str] = "ensemble"
    # Built by training from cross-validated members; not a candidate on its own.
    auto_select: ClassVar[bool] = False

    def __init__(self, members: Sequence[Method] = (),
                 scales: Sequence[tuple[float, float]] = ()) -> None:
        self.members = list(members)
        self.scales = list(scales)
        self.input_size = max((member.input_size for member in self.members), default=0)

    def fit(self, normals: Sequence[np.ndarray], anomalies: Sequence[np.ndarray],
            rng: np.random.Generator) -> None:
        for member in self.members:
            member.fit([self._for(member, image) for image in normals],
                       [self._for(member, image) for image in anomalies], rng)

    def score(self, image: np.ndarray) -> tuple[float, np.ndarray]:
        total = 0.0
        maps: list[np.ndarray] = []
        for member, (centre, spread) in zip(self.members, self.scales, strict=True):
            raw, anomaly_map = member.score(self._for(member, image))
            total += (raw - centre) / spread
            maps.append((np.asarray(anomaly_map, np.float32) - centre) / spread)
        height, width = max((m.shape for m in maps), key=lambda shape: shape[0] * shape[1])
        combined = np.mean([resize_map(m, (width, height)) for m in maps], axis=0)
        return total / len(self.members), combined.astype(np.float32)

    def state(self) -> State:
        values: dict[str, Any] = {"members": []}
        for index, (member, scale) in enumerate(zip(self.members, self.scales, strict=True)):
            nested = member.state()
            arrays = {key: value for key, value in nested.items()
                      if isinstance(value, np.ndarray)}
            values["members"].append({
                "name": member.name, "centre": scale[0], "spread": scale[1],
                "state": {key: value for key, value in nested.items() if key not in arrays}})
            values.update({f"m{index}:{key}": value for key, value in arrays.items()})
        return values

    @classmethod
    def from_state(cls, state: State) -> ScoreEnsemble:
        from pipeline.detector.methods import METHODS

        members: list[Method] = []
        scales = []
        for index, entry in enumerate(state["members"]):
            prefix = f"m{index}:"
            nested = dict(entry["state"])
            nested.update({key[len(prefix):]: value for key, value in state.items()
                           if key.startswith(prefix)})
            members.append(METHODS[entry["name"]].from_state(nested))
            scales.append((float(entry["centre"]), float(entry["spread"])))
        return cls(members, scales)

    @staticmethod
    def _for(member: Method, image: np.ndarray) -> np.ndarray:
        """The image at the member's input size (the ensemble decodes at the largest)."""
        size = fit_within((image.shape[1], image.shape[0]), member.input_size)
        return resize_rgb(image, size)
