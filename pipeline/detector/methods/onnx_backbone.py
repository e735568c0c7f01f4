"""PatchCore-style scoring on a user-supplied ONNX feature extractor.

The user brings a pretrained backbone as an ONNX file (`linesight train --backbone
model.onnx`); nothing is downloaded. Every 4-D output of the model (N, C, h, w) is a
feature map; maps are resized to the first one's grid, concatenated along channels and
averaged over 3x3 neighbourhoods (PatchCore's local aggregation). The memory bank and the
scoring are `memory.PatchMemory`'s: each patch's distance to its nearest normal patch.

The ONNX bytes travel inside the model artifact, so the deployed model needs only
onnxruntime. Inference runs on one thread (Lambda-sized).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from pipeline.detector.methods.base import State
from pipeline.detector.methods.memory import PatchMemory
from pipeline.detector.ops import box_blur, resize_map, resize_rgb

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class OnnxPatchCore(PatchMemory):
    name: ClassVar[str] = "onnx_patchcore"
    # Needs the user's backbone: only a candidate when training is given --backbone.
    auto_select: ClassVar[bool] = False
    # What inference imports beyond numpy and Pillow (`artifact.runtime_requirements`).
    runtime_requires: ClassVar[tuple[str, ...]] = ("onnxruntime",)

    def __init__(self, backbone: bytes = b"", input_size: int = 224, bank_size: int = 4096,
                 mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__(bank_size)
        self.backbone = bytes(backbone)
        self.input_size = input_size
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        self._session: Any = None

    def __deepcopy__(self, memo: dict[int, Any]) -> OnnxPatchCore:
        return OnnxPatchCore(self.backbone, self.input_size, self.bank_size,
                             tuple(self.mean), tuple(self.std))

    def fit(self, normals: Sequence[np.ndarray], anomalies: Sequence[np.ndarray],
            rng: np.random.Generator) -> None:
        if not normals:
            raise ValueError("onnx_patchcore needs at least one normal image")
        self._remember([self._patches(image)[0] for image in normals], rng)

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

