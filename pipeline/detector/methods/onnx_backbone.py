"""PatchCore-style scoring on a user-supplied ONNX feature extractor.

The user brings a pretrained backbone as an ONNX file (`linesight train --backbone
model.onnx`); nothing is downloaded. Every 4-D output of the model (N, C, h, w) is a
feature map; maps are resized to the first one's grid, concatenated along channels and
averaged over 3x3 neighbourhoods (PatchCore's local aggregation). Training keeps the
patch features of the normal images as a memory bank, thinned by greedy k-center coreset
selection; an image's anomaly map is each patch's distance to its nearest neighbour in
the bank, and its score is the map's maximum.

The ONNX bytes travel inside the model artifact, so the deployed model needs only
onnxruntime. Inference runs on one thread (Lambda-sized).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from pipeline.detector.methods.base import State
from pipeline.detector.ops import box_blur, resize_map, resize_rgb

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class OnnxPatchCore:
    name: ClassVar[str] = "onnx_patchcore"
    # Needs the user's backbone: only a candidate when training is given --backbone.
    auto_select: ClassVar[bool] = False

    def __init__(self, backbone: bytes = b"", input_size: int = 224, bank_size: int = 4096,
                 mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> None:
        self.backbone = bytes(backbone)
        self.input_size = input_size
        self.bank_size = bank_size
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        self.bank = np.zeros((0, 0), np.float32)
        self._session: Any = None

    def __deepcopy__(self, memo: dict[int, Any]) -> OnnxPatchCore:
        return OnnxPatchCore(self.backbone, self.input_size, self.bank_size,
                             tuple(self.mean), tuple(self.std))

    def fit(self, normals: Sequence[np.ndarray], anomalies: Sequence[np.ndarray],
            rng: np.random.Generator) -> None:
        if not normals:
            raise ValueError("onnx_patchcore needs at least one normal image")
        features = np.concatenate([self._patches(image)[0] for image in normals])
        # PatchCore keeps 1-10 % of the patches; at least 1000, at most bank_size.
        size = min(self.bank_size, max(1000, len(features) // 10))
        self.bank = coreset(features, size, rng)

    def score(self, image: np.ndarray) -> tuple[float, np.ndarray]:
        patches, grid = self._patches(image)
        distances = nearest_distances(patches, self.bank).reshape(grid)
        anomaly_map = box_blur(distances, 1)
        return float(anomaly_map.max()), anomaly_map

    def state(self) -> State:
        return {"backbone": np.frombuffer(self.backbone, np.uint8),
                "input_size": self.input_size, "bank_size": self.bank_size,
                "mean": self.mean.tolist(), "std": self.std.tolist(),
                "bank": self.bank.astype(np.float16)}

    @classmethod
    def from_state(cls, state: State) -> OnnxPatchCore:
        method = cls(np.asarray(state["backbone"], np.uint8).tobytes(),
                     int(state["input_size"]), int(state["bank_size"]),
                     state["mean"], state["std"])
        method.bank = np.asarray(state["bank"], np.float32)
        return method

    @property
    def session(self) -> Any:
        if self._session is None:
            if not self.backbone:
                raise ValueError("onnx_patchcore needs an ONNX backbone (--backbone model.onnx)")
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            self._session = onnxruntime.InferenceSession(
                self.backbone, options, providers=["CPUExecutionProvider"])
        return self._session

    def _input_size(self) -> tuple[int, int]:
        """(width, height) the backbone wants: fixed dims from the model, else input_size."""
        shape = self.session.get_inputs()[0].shape
        height = shape[2] if len(shape) == 4 and isinstance(shape[2], int) else None
        width = shape[3] if len(shape) == 4 and isinstance(shape[3], int) else None
        return width or self.input_size, height or self.input_size

    def _patches(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """(patch features P x C, grid (h, w)) of one HxWx3 uint8 image."""
        rgb = resize_rgb(image, self._input_size()).astype(np.float32) / 255.0
        tensor = ((rgb - self.mean) / self.std).transpose(2, 0, 1)[None]
        name = self.session.get_inputs()[0].name
        outputs = [o for o in self.session.run(None, {name: tensor.astype(np.float32)})
                   if getattr(o, "ndim", 0) == 4]
        if not outputs:
            raise ValueError("the ONNX backbone has no 4-D (N, C, h, w) output")
        height, width = outputs[0].shape[2:]
        maps = []
        for output in outputs:
            for channel in output[0]:
                maps.append(resize_map(channel, (width, height)))
        stacked = box_blur(np.stack(maps, axis=-1), 1)
        return stacked.reshape(height * width, -1), (height, width)


def nearest_distances(queries: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """Euclidean distance from each query row to its nearest bank row.

    >>> nearest_distances(np.array([[0.0, 0.0], [3.0, 4.0]]), np.array([[0.0, 0.0]]))
    array([0., 5.])
    """
    squared = ((queries ** 2).sum(axis=1)[:, None] - 2.0 * queries @ bank.T
               + (bank ** 2).sum(axis=1)[None, :])
    return np.sqrt(np.maximum(squared.min(axis=1), 0.0))


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
    chosen = [int(rng.integers(len(features)))]
    distance = ((reduced - reduced[chosen[0]]) ** 2).sum(axis=1)
    for _ in range(size - 1):
        index = int(distance.argmax())
        chosen.append(index)
        distance = np.minimum(distance, ((reduced - reduced[index]) ** 2).sum(axis=1))
    return features[np.asarray(chosen)].astype(np.float32)
