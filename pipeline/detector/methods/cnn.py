"""`cnn`: a small convolutional network that learns the defects from labelled anomalies.

The other methods learn only what normal looks like and score how far an image is from
it; where the part cannot be aligned and its surface varies (cast metal, grain, fabric),
that distance is weak. With enough labelled anomalies (`MIN_ANOMALIES`) the defects
themselves can be learned: this network sees each image resized to one grid
(`side` pixels on its longest side) and learns from scratch, with no pretrained weights.

Shape: four 3x3 convolutions (8, 16, 32, 32 channels) with batch norm and ReLU, a 2x2
max pool after each of the first three, and a 1x1 head that gives a defect logit for each
8x8-pixel cell. Those logits are the anomaly map; the image score is the mean of the
highest `top_fraction` of them, so one small defect is enough to raise it.

Training uses torch (a training-only dependency; `make install` installs the CPU build
where it is available, and without it training skips this method and says so):
AdamW with a one-cycle schedule, binary cross-entropy on the image score, batches half
normal and half anomalous, with flips, shifts of up to 1/16 of the image and small
brightness and contrast changes. At the end of `fit` the batch norms are folded into the
convolutions, so inference is numpy only: a few milliseconds per image.
"""

from __future__ import annotations

import importlib.util
import math
import threading
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from pipeline.detector.methods.base import State, refuse_if_unavailable
from pipeline.detector.ops import resize_rgb

MIN_ANOMALIES = 8
CHANNELS = (8, 16, 32, 32)
# Training fits folds in parallel threads, and a network's first weights come from torch's
# one global generator: seeding it and drawing them is done by one thread at a time.
_SEEDING = threading.Lock()


class SmallCnn:
    name: ClassVar[str] = "cnn"

    def __init__(self, side: int = 128, top_fraction: float = 0.02, epochs: int = 30,
                 min_steps: int = 60, max_steps: int = 500, batch: int = 16,
                 learning_rate: float = 3e-3) -> None:
        self.side = side
        self.input_size = side
        self.top_fraction = top_fraction
        self.epochs, self.min_steps, self.max_steps = epochs, min_steps, max_steps
        self.batch = batch
        self.learning_rate = learning_rate
        self.grid: tuple[int, int] = (0, 0)
        self.mean = np.zeros(3, np.float32)
        self.std = np.ones(3, np.float32)
        # (weight OxIxKxK, bias O) per convolution, batch norm folded in; the last is the head
        self.layers: list[tuple[np.ndarray, np.ndarray]] = []

    @classmethod
    def unavailable(cls, normal_count: int, anomaly_count: int) -> str | None:
        """Why this method cannot be trained on such a set (None when it can)."""
        if anomaly_count < MIN_ANOMALIES:
            return (f"needs at least {MIN_ANOMALIES} labelled anomalies, "
                    f"found {anomaly_count}")
        if importlib.util.find_spec("torch") is None:
            return ("needs torch for training (pip install torch==2.13.0+cpu "
                    "--extra-index-url https://download.pytorch.org/whl/cpu)")
        return None

    def fit(self, normals: Sequence[np.ndarray], anomalies: Sequence[np.ndarray],
            rng: np.random.Generator) -> None:
        refuse_if_unavailable(self, normals, anomalies)
        import torch

        heights, widths = zip(*(image.shape[:2] for image in normals), strict=True)
        self.grid = _grid(int(np.median(widths)), int(np.median(heights)), self.side)
        pixels = np.stack([resize_rgb(image, self.grid) for image in [*normals, *anomalies]]
                          ).astype(np.float32)
        pixels /= 255.0
        self.mean = pixels.mean(axis=(0, 1, 2)).astype(np.float32)
        self.std = (pixels.std(axis=(0, 1, 2)) + 1e-3).astype(np.float32)
        pixels -= self.mean
        pixels /= self.std
        # NHWC memory seen as NCHW: channels-last, which `_train` uses, without a copy
        inputs = torch.from_numpy(pixels).permute(0, 3, 1, 2)
        labels = torch.tensor([0.0] * len(normals) + [1.0] * len(anomalies))

        with _SEEDING, torch.random.fork_rng(devices=[]):  # the caller's RNG is left alone
            torch.manual_seed(int(rng.integers(2 ** 31)))
            network = _network(torch)
        # One thread. On this 2-core machine two made a fit 14 % faster when nothing else ran
        # (3.8 s against 4.4 s on the samples) but twice as slow with one other busy process
        # (9.2 s against 4.5 s: torch's threads wait for a core), and training shares the
        # machine with whatever else an engineer is running (its other folds among them).
        # Each fold thread sets its own: torch's count is also OpenMP's, which each thread
        # keeps for itself (a count shared like `threads.limited`'s would leave the second
        # fold on its default). Side by side, the count put back may be another fold's 1;
        # every fit sets 1 again, so no model depends on it.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            _train(torch, network, inputs, labels, len(normals), self, rng)
        finally:
            torch.set_num_threads(threads)
        self.layers = _folded(torch, network)

    def score(self, image: np.ndarray) -> tuple[float, np.ndarray]:
        pixels = resize_rgb(image, self.grid).astype(np.float32) / 255.0
        values = np.ascontiguousarray(((pixels - self.mean) / self.std).transpose(2, 0, 1))
        *convolutions, head = self.layers
        for index, (weight, bias) in enumerate(convolutions):
            values = np.maximum(_conv(values, weight, bias), 0.0)
            if index < len(convolutions) - 1:
                values = _max_pool(values)
        logits = _conv(values, *head)[0]
        return _top_mean(logits.ravel(), self.top_fraction), logits.astype(np.float32)

    def state(self) -> State:
        state: dict[str, Any] = {
            "side": self.side, "top_fraction": self.top_fraction, "grid": list(self.grid),
            "mean": self.mean, "std": self.std, "layers": len(self.layers)}
        for index, (weight, bias) in enumerate(self.layers):
            state[f"weight{index}"], state[f"bias{index}"] = weight, bias
        return state

    @classmethod
    def from_state(cls, state: State) -> SmallCnn:
        method = cls(side=int(state["side"]), top_fraction=float(state["top_fraction"]))
        method.grid = (int(state["grid"][0]), int(state["grid"][1]))
        method.mean = np.asarray(state["mean"], np.float32)
        method.std = np.asarray(state["std"], np.float32)
        method.layers = [(np.asarray(state[f"weight{i}"], np.float32),
                          np.asarray(state[f"bias{i}"], np.float32))
                         for i in range(int(state["layers"]))]
        return method


class CoarseCnn(SmallCnn):
    """`cnn` on a coarser grid: 96 pixels on the longest side instead of 128.

    A typical 768-pixel camera JPEG then decodes at its 1/8-scale draft, exactly the size
    needed, where 128 pixels take the 1/4 draft and a resize; with a network that sees
    0.56 times the pixels, cookies' photos take 4.4 instead of 5.8 ms each. It sees less
    detail, so training cross-validates both (this one only where `cnn` comes near the best
    method, `training.VARIANT_REACH`) and keeps this one only where it does as well (ties
    go to the faster method). On cookies' training split, over seven fold
    assignments and 5 and 10 folds, its mean out-of-fold AUROC was 0.999 against 0.9999
    at 128 pixels (two of the 14 runs at 0.99, against none).
    """

    name: ClassVar[str] = "cnn_coarse"
    # one network at two sizes: an ensemble of the two would only repeat one opinion
    variant_of: ClassVar[str] = SmallCnn.name

    def __init__(self, side: int = 96, **settings: Any) -> None:
        super().__init__(side=side, **settings)


def _grid(width: int, height: int, side: int) -> tuple[int, int]:
    """(width, height) with the longest side `side` and both multiples of 8.

    >>> _grid(2000, 1334, 128)
    (128, 88)
    >>> _grid(300, 300, 128)
    (128, 128)
    """
    scale = side / max(width, height)
    return (max(8, round(width * scale / 8) * 8), max(8, round(height * scale / 8) * 8))


def _top_mean(values: np.ndarray, fraction: float) -> float:
    """The mean of the highest `fraction` of `values` (at least one).

    >>> _top_mean(np.arange(100.0), 0.02)
    98.5
    """
    count = max(1, math.ceil(values.size * fraction - 1e-9))
    return float(np.partition(values, values.size - count)[values.size - count:].mean())


def _conv(values: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """A CxHxW array convolved (cross-correlated, as torch does) with an OxCxKxK kernel,
    zero-padded to keep HxW, plus a bias per output channel."""
    out_channels, channels, size, _ = weight.shape
    _, height, width = values.shape
    pad = size // 2
    padded = np.pad(values, ((0, 0), (pad, pad), (pad, pad))) if pad else values
    # every kernel tap's shifted window stacked, then one matrix product (im2col): one
    # large BLAS call is about a third faster here than one small one per tap
    columns = np.empty((size, size, channels, height, width), np.float32)
    for dy in range(size):
        for dx in range(size):
            columns[dy, dx] = padded[:, dy:dy + height, dx:dx + width]
    kernel = weight.transpose(0, 2, 3, 1).reshape(out_channels, -1)
    out = kernel @ columns.reshape(size * size * channels, height * width)
    out += bias[:, None]
    return out.reshape(out_channels, height, width)


def _max_pool(values: np.ndarray) -> np.ndarray:
    """2x2 max pooling with stride 2 (odd edges dropped, as torch's MaxPool2d(2))."""
    h, w = values.shape[1] // 2 * 2, values.shape[2] // 2 * 2
    return np.maximum(np.maximum(values[:, 0:h:2, 0:w:2], values[:, 0:h:2, 1:w:2]),
                      np.maximum(values[:, 1:h:2, 0:w:2], values[:, 1:h:2, 1:w:2]))


def _network(torch: Any) -> Any:
    nn = torch.nn
    layers: list[Any] = []
    previous = 3
    for index, channels in enumerate(CHANNELS):
        layers += [nn.Conv2d(previous, channels, 3, padding=1, bias=False),
                   nn.BatchNorm2d(channels), nn.ReLU()]
        if index < len(CHANNELS) - 1:
            layers.append(nn.MaxPool2d(2))
        previous = channels
    layers.append(nn.Conv2d(previous, 1, 1))
    return nn.Sequential(*layers)


def _train(torch: Any, network: Any, inputs: Any, labels: Any, normal_count: int,
           settings: SmallCnn, rng: np.random.Generator) -> None:
    """Train `network` in place (it draws nothing from torch's generator)."""
    # channels-last is ~20 % faster on CPU here (max pooling above all)
    network.to(memory_format=torch.channels_last)
    inputs = inputs.contiguous(memory_format=torch.channels_last)
    count = len(labels)
    steps = int(np.clip(settings.epochs * count / settings.batch, settings.min_steps,
                        settings.max_steps))
    optimiser = torch.optim.AdamW(network.parameters(), lr=settings.learning_rate,
                                  weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=settings.learning_rate,
                                                   total_steps=steps)
    normal, anomalous = np.arange(normal_count), np.arange(normal_count, count)
    half = settings.batch // 2
    network.train()
    for _ in range(steps):
        chosen = np.concatenate([rng.choice(normal, half), rng.choice(anomalous, half)])
        batch = _augmented(torch, inputs[torch.from_numpy(chosen)], rng)
        logits = _pooled_logits(torch, network(batch), settings.top_fraction)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, labels[torch.from_numpy(chosen)])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
    network.eval()


def _pooled_logits(torch: Any, maps: Any, fraction: float) -> Any:
    """Each map's top-fraction mean, the image logit (as `_top_mean` at inference)."""
    flat = maps.flatten(1)
    count = max(1, math.ceil(flat.shape[1] * fraction - 1e-9))
    return torch.topk(flat, count, dim=1).values.mean(dim=1)


def _augmented(torch: Any, batch: Any, rng: np.random.Generator) -> Any:
    """Flips, shifts (reflected borders) and brightness/contrast changes, per image."""
    size = len(batch)
    batch = batch.clone()
    for flip, axis in ((rng.random(size) < 0.5, 3), (rng.random(size) < 0.5, 2)):
        if flip.any():
            index = torch.from_numpy(np.nonzero(flip)[0])
            batch[index] = batch[index].flip(axis)
    height, width = batch.shape[2:]
    reach = max(1, min(height, width) // 16)
    padded = torch.nn.functional.pad(batch, (reach, reach, reach, reach), mode="reflect")
    shifts = rng.integers(0, 2 * reach + 1, size=(size, 2))
    batch = torch.stack([padded[i, :, y:y + height, x:x + width]
                         for i, (y, x) in enumerate(shifts)]
                        ).contiguous(memory_format=torch.channels_last)
    gain = torch.from_numpy(rng.uniform(0.9, 1.1, (size, 1, 1, 1)).astype(np.float32))
    offset = torch.from_numpy(rng.normal(0.0, 0.1, (size, 1, 1, 1)).astype(np.float32))
    return batch * gain + offset


def _folded(torch: Any, network: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """The trained convolutions with each batch norm folded into the one before it."""
    modules = list(network)
    layers: list[tuple[np.ndarray, np.ndarray]] = []
    with torch.no_grad():
        for index, module in enumerate(modules):
            if not isinstance(module, torch.nn.Conv2d):
                continue
            weight = module.weight.detach().numpy().astype(np.float32)
            bias = (module.bias.detach().numpy() if module.bias is not None
                    else np.zeros(weight.shape[0])).astype(np.float32)
            following = modules[index + 1] if index + 1 < len(modules) else None
            if isinstance(following, torch.nn.BatchNorm2d):
                scale = (following.weight / torch.sqrt(following.running_var
                                                       + following.eps)).numpy()
                bias = (following.bias.numpy() - following.running_mean.numpy() * scale
                        + bias * scale).astype(np.float32)
                weight = (weight * scale[:, None, None, None]).astype(np.float32)
            layers.append((np.ascontiguousarray(weight), bias))
    return layers
