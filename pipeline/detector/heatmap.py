"""The anomaly heatmap PNG and the Lookout-style anomaly area, from a method's map."""

from __future__ import annotations

import io
from functools import cache
from typing import Any

import numpy as np
from PIL import Image

from pipeline.detector.base import ANOMALY_COLOR, BACKGROUND_COLOR
from pipeline.detector.ops import resize_map

HEATMAP_SIDE = 256
# A blue -> cyan -> yellow -> red ramp; the pixel threshold sits at the middle (cyan-yellow).
_RAMP = np.array([[0, 0, 160], [0, 160, 255], [255, 230, 0], [255, 0, 0]], np.float32)


def relative_map(anomaly_map: np.ndarray, pixel_threshold: float) -> np.ndarray:
    """The map on a [0, 1] scale where the pixel threshold is 0.5.

    >>> relative_map(np.array([[0.0, 1.0, 4.0]]), 2.0).tolist()
    [[0.0, 0.25, 1.0]]
    """
    return np.clip(anomaly_map / (2.0 * max(pixel_threshold, 1e-9)), 0.0, 1.0)


def anomaly_mask(anomaly_map: np.ndarray, pixel_threshold: float,
                 is_anomalous: bool) -> np.ndarray:
    """Pixels counted as anomalous. None when the image passed; when it failed, at least
    the peak, so an anomalous verdict names a place wherever the map has one. A flat map
    below the pixel threshold has none (the verdict came from image-wide features, such as
    the `shape` method's area or convexity): no pixel is counted, rather than all of them.

    >>> anomaly_mask(np.array([[0.0, 1.0, 3.0]]), 2.0, True).tolist()
    [[False, False, True]]
    >>> anomaly_mask(np.array([[0.0, 1.0, 1.5]]), 2.0, True).tolist()
    [[False, False, True]]
    >>> anomaly_mask(np.array([[0.0, 1.0, 3.0]]), 2.0, False).any()
    np.False_
    >>> flat, hot = np.zeros((2, 2)), np.full((2, 2), 3.0)
    >>> anomaly_mask(flat, 2.0, True).any(), anomaly_mask(hot, 2.0, True).all()
    (np.False_, np.True_)
    """
    peak = float(anomaly_map.max()) if anomaly_map.size else 0.0
    if not is_anomalous or (peak < pixel_threshold and peak <= float(anomaly_map.min())):
        return np.zeros(anomaly_map.shape, bool)
    return anomaly_map >= min(pixel_threshold, peak)


def lookout_anomalies(mask: np.ndarray) -> list[dict[str, Any]]:
    """The `Anomalies` list in Lookout for Vision's shape.

    >>> lookout_anomalies(np.array([[True, False, False, False]]))[1]
    {'Name': 'anomaly', 'PixelAnomaly': {'TotalPercentageArea': 25.0, 'Color': '#FF0000'}}
    """
    percent = round(float(mask.mean()) * 100.0, 3) if mask.size else 0.0
    anomalies = [{"Name": "background",
                  "PixelAnomaly": {"TotalPercentageArea": round(100.0 - percent, 3),
                                   "Color": BACKGROUND_COLOR}}]
    if percent > 0:
        anomalies.append({"Name": "anomaly",
                          "PixelAnomaly": {"TotalPercentageArea": percent,
                                           "Color": ANOMALY_COLOR}})
    return anomalies


def colorize(relative: np.ndarray) -> np.ndarray:
    """HxW values in [0, 1] to HxWx3 float RGB on the blue-to-red ramp."""
    position = relative * (len(_RAMP) - 1)
    low = np.clip(np.floor(position).astype(int), 0, len(_RAMP) - 2)
    frac = (position - low)[..., None]
    return _RAMP[low] * (1.0 - frac) + _RAMP[low + 1] * frac


def overlay_png(rgb: np.ndarray, anomaly_map: np.ndarray, pixel_threshold: float,
                side: int = HEATMAP_SIDE) -> bytes:
    """A PNG of the image in grey with the heatmap blended over it (hot where anomalous).

    Built straight as a 256-colour palette image (16 grey levels x 16 heat levels), so no
    colour quantisation is needed: about 2 ms and 5-25 KB.
    """
    image = Image.fromarray(rgb).convert("L")
    if max(image.size) > side:
        image.thumbnail((side, side), Image.Resampling.BILINEAR)
    relative = relative_map(resize_map(anomaly_map, image.size), pixel_threshold)
    grey = np.asarray(image, np.uint8) >> 4
    heat = np.rint(relative * (_LEVELS - 1)).astype(np.uint8)
    out = Image.fromarray(grey * _LEVELS + heat, mode="P")
    out.putpalette(_palette())
    buffer = io.BytesIO()
    out.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


_LEVELS = 16


@cache
def _palette() -> bytes:
    """Palette entry g*16+h: grey level g blended with heat level h of the ramp."""
    heat = np.arange(_LEVELS) / (_LEVELS - 1)
    # Cool (normal) pixels stay plain grey; colour fades in as the heat rises.
    alpha = (0.75 * np.clip((heat - 0.2) / 0.8, 0.0, 1.0))[:, None]
    colours = colorize(heat)
    entries = []
    for level in range(_LEVELS):
        grey = (level + 0.5) * (256 / _LEVELS)
        entries.append(grey * (1.0 - alpha) + colours * alpha)
    return np.clip(np.concatenate(entries), 0, 255).astype(np.uint8).tobytes()
