"""Align the part to a reference pose, then compare it with each aligned normal image.

For a part photographed on a plain background at a slightly different place and angle in
every photo (a circuit board on a mat):

1. **Locate.** The background colour is the median of the image border; pixels far from
   it (threshold by Otsu on the normal images) are the part. Their centroid and main
   axis give a coarse pose.
2. **Register.** At half the compare resolution, rotations in steps of
   `search_degrees`/2 around the coarse pose are tried (stepping outwards while the match
   improves); for each, FFT phase correlation against the mean aligned normal image gives
   a translation and a peak height. A parabola through the best peaks refines the angle.
   When even the best match is weak (below 3/4 of the normal images' median), the part
   turned by 180 degrees is tried as well. At full compare resolution a quarter step
   either way and a last phase correlation settle angle and sub-pixel shift. The part is
   resampled into a fixed crop at 1/`compare_factor` of the input resolution, and each
   colour channel gets the gain and offset that best match the mean normal (lighting).
3. **Compare.** For every stored normal image, a pixel's distance is how far each
   channel lies outside that normal's values within `tolerance` pixels (summed over
   channels; zero inside). The pixel's score is the `neighbours`-th smallest distance
   over the normals (1: the nearest normal).
4. **Normalise.** Some places vary a lot between normal parts (a bendable LED, a
   potentiometer screw). Each normal image is scored against the others (leave-one-out);
   the mean plus three standard deviations of those maps, spatially smoothed, says how
   much distance is normal at each place (unlike their maximum, it does not grow with the
   number of normals, so a threshold found by cross-validation on fewer images still
   fits the final model), and the box-blurred map is divided by it (plus `spread_floor`).
   With `spread_shrink`, the spread is first raised by that fraction of its median: it
   is estimated from few normals, and is too small wherever they happened to agree.
   Away from the part (the mat, where lint lies) the map is weighted by
   `background_weight`. The image score is the map's maximum; the map is warped back onto
   the image.

Defaults were chosen by leave-one-out and 5-fold cross-validation on the circuitboard
training split only. Works normal-only; labelled anomalies are not used. Without a
distinct background the coarse pose falls back to the image centre and registration
alone aligns the image. At most `max_normals` normal images are kept (the most diverse
ones), so the artifact stays small however many images training has.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple, Self

import numpy as np
from PIL import Image

from pipeline.detector.methods.base import NeedsNormals, State, refuse_if_unavailable
from pipeline.detector.ops import border_colour, otsu


class AlignEnvelope(NeedsNormals):
    name: ClassVar[str] = "align"

    def __init__(self, input_size: int = 1000, compare_factor: int = 3, tolerance: int = 1,
                 neighbours: int = 1, map_blur: int = 2, spread_radius: int = 3,
                 spread_floor: float = 2.0, search_degrees: float = 2.0,
                 max_normals: int = 40, background_weight: float = 0.5,
                 spread_shrink: float = 0.0, fill_background: bool = True) -> None:
        self.input_size = input_size
        self.compare_factor = compare_factor
        self.tolerance = tolerance
        self.neighbours = neighbours
        self.map_blur = map_blur
        self.spread_radius = spread_radius
        self.spread_floor = spread_floor
        self.search_degrees = search_degrees
        self.max_normals = max_normals
        self.background_weight = background_weight
        self.spread_shrink = spread_shrink
        # where a crop reaches past the photo: the background's colour, not black (`_warp`)
        self.fill_background = fill_background
        self.shape: tuple[int, int] = (0, 0)  # (height, width) of the input images
        self.background = np.zeros(3, np.float32)
        self.part_threshold = 0.0
        self.crop: tuple[int, int] = (0, 0)  # (width, height) in compare pixels
        self.template = np.zeros((0, 0), np.float32)
        self.flip_below = np.inf  # try the 180-degree turn when the match is weaker
        self.colour_mean = np.zeros((3, 0, 0), np.float32)  # planar: channel, y, x
        self.high = np.zeros((0, 3, 0, 0), np.uint8)  # per normal: max within tolerance
        self.low = np.zeros((0, 3, 0, 0), np.uint8)  # per normal: min within tolerance
        self.spread = np.zeros((0, 0), np.float32)
        self.weight = np.zeros((0, 0), np.float32)  # 1 on and near the part, less elsewhere
        self._levels: list[tuple[np.ndarray, np.ndarray]] = []

    # -- training -------------------------------------------------------------------------

    def fit(self, normals: Sequence[np.ndarray], anomalies: Sequence[np.ndarray],
            rng: np.random.Generator) -> None:
        refuse_if_unavailable(self, normals, anomalies)
        self.shape = (int(normals[0].shape[0]), int(normals[0].shape[1]))
        # one input-size image at a time: at 1000 px each is 4 MB as a Pillow image
        scaled = [self._compare_image(Image.fromarray(self._sized(x))) for x in normals]
        smalls = [np.asarray(self._small(image), np.float32) for image in scaled]
        self.background = np.median([border_colour(s) for s in smalls], axis=0)
        distance = np.concatenate([self._off_background(s).ravel() for s in smalls[:8]])
        self.part_threshold = otsu(distance)

        coarse = [self._coarse_pose(s) for s in smalls]
        self.crop = self._crop_size(smalls, coarse)
        greys = [image.convert("L") for image in scaled]
        poses = coarse
        template = self._warp(greys[0], poses[0], self.crop).astype(np.float32)
        for rounds in range(3):
            self._set_template(template)
            pairs = zip(greys, poses, strict=True)
            flip_below = np.inf if rounds == 0 else -np.inf
            poses = [self._refine(g, p, flip_below) for g, p in pairs]
            warped = [self._warp(g, p, self.crop) for g, p in zip(greys, poses, strict=True)]
            template = np.mean(warped, axis=0)
        self.template = template.astype(np.float32)
        self._set_template(self.template)
        peaks = [self._search_rotation(g.reduce(2), p)[0]
                 for g, p in zip(greys, poses, strict=True)]
        self.flip_below = 0.75 * float(np.median(peaks))

        aligned = [self._warp(h, p, self.crop) for h, p in zip(scaled, poses, strict=True)]
        if len(aligned) > self.max_normals:
            aligned = [aligned[i] for i in _diverse(aligned, self.max_normals)]
        planar = np.stack([a.transpose(2, 0, 1).astype(np.float32) for a in aligned])
        self.colour_mean = planar.mean(axis=0)
        for _ in range(2):  # photometric matching shifts the mean a little; settle it
            planar = np.stack([self._match_colour(a) for a in planar]).astype(np.float32)
            self.colour_mean = planar.mean(axis=0)
        stored = np.clip(np.rint(planar), 0, 255).astype(np.uint8)
        self._remember(self._registered_normals(stored))
        # how far each normal, as aligned globally (not registered locally), lies from the
        # others as stored (registered, for align_patch): a spread that also covers what
        # local registration may leave (0.993 against 0.991 with the held-out normal
        # registered too, over the 14 runs of docs/detector.md)
        everyone = np.arange(len(stored))
        loo = [self._distance(stored[i], everyone != i) for i in everyone]
        r = self.spread_radius
        typical = np.mean(loo, axis=0) + 3.0 * np.std(loo, axis=0)
        spread = _box(_max_filter(typical, r), r)
        # shrunk towards its typical level: from a handful of normals the spread is too
        # small wherever they happened to agree, and a new normal part that differs there
        # would top the map (`spread_shrink`)
        self.spread = (spread + self.spread_shrink * float(np.median(spread))).astype(np.float32)
        self.weight = self._part_weight(aligned)

    # -- scoring --------------------------------------------------------------------------

    def score(self, image: np.ndarray) -> tuple[float, np.ndarray]:
        im = Image.fromarray(self._sized(image))
        scaled = self._compare_image(im)
        pose = self._pose(im, scaled)
        planar = self._warp(scaled, pose, self.crop).transpose(2, 0, 1).astype(np.float32)
        matched = self._registered(self._match_colour(planar))
        matched = np.clip(np.rint(matched), 0, 255).astype(np.uint8)
        everyone = np.ones(self.normal_count, bool)
        crop_map = self._distance(matched, everyone) * self.weight / (self.spread
                                                                      + self.spread_floor)
        shown = (max(1, scaled.size[0] // 2), max(1, scaled.size[1] // 2))
        return float(crop_map.max()), self._unwarp(crop_map, pose, shown, 0.5)

    def align(self, image: np.ndarray) -> np.ndarray:
        """The part resampled into the reference crop (HxWx3 uint8, compare resolution)."""
        im = Image.fromarray(self._sized(image))
        scaled = self._compare_image(im)
        return self._warp(scaled, self._pose(im, scaled), self.crop)

    def _pose(self, im: Image.Image, scaled: Image.Image) -> tuple[float, float, float]:
        pose = self._coarse_pose(np.asarray(self._small(scaled), np.float32))
        return self._refine(scaled.convert("L"), pose, self.flip_below)

    def _registered(self, planar: np.ndarray) -> np.ndarray:
        """The aligned, colour-matched crop (planar float) as it is compared: as it is
        here; `align_patch` resamples it by a local shift field."""
        return planar

    def _registered_normals(self, stored: np.ndarray) -> np.ndarray:
        """The aligned normals (uint8, planar) as they are kept: as they are here."""
        return stored

    # -- what is kept of the normal images ----------------------------------------------

    @property
    def normal_count(self) -> int:
        return len(self.high)

    def _remember(self, stored: np.ndarray) -> None:
        """Keep what `_distance` compares with: each normal's min/max within `tolerance`."""
        t = self.tolerance
        self.high = np.stack([_max_filter(a.transpose(1, 2, 0), t).transpose(2, 0, 1)
                              for a in stored])
        self.low = np.stack([(255 - _max_filter(255 - a.transpose(1, 2, 0), t)).transpose(
            2, 0, 1) for a in stored])

    def _appearance(self) -> State:
        return {"high": self.high, "low": self.low}

    def _restore(self, state: State) -> None:
        self.high = np.asarray(state["high"], np.uint8)
        self.low = np.asarray(state["low"], np.uint8)

    # -- artifact -------------------------------------------------------------------------

    def settings(self) -> State:
        """The constructor's arguments, as the artifact keeps them."""
        return {
            "input_size": self.input_size, "compare_factor": self.compare_factor,
            "tolerance": self.tolerance, "neighbours": self.neighbours,
            "map_blur": self.map_blur, "spread_radius": self.spread_radius,
            "spread_floor": self.spread_floor, "search_degrees": self.search_degrees,
            "max_normals": self.max_normals, "background_weight": self.background_weight,
            "spread_shrink": self.spread_shrink, "fill_background": self.fill_background,
        }

    @classmethod
    def settings_from(cls, state: State) -> dict[str, Any]:
        """The constructor's arguments from a stored state (the inverse of `settings`)."""
        return {"input_size": int(state["input_size"]),
                "compare_factor": int(state["compare_factor"]),
                "tolerance": int(state["tolerance"]), "neighbours": int(state["neighbours"]),
                "map_blur": int(state["map_blur"]),
                "spread_radius": int(state["spread_radius"]),
                "spread_floor": float(state["spread_floor"]),
                "search_degrees": float(state["search_degrees"]),
                "max_normals": int(state["max_normals"]),
                "background_weight": float(state["background_weight"]),
                # artifacts from before it stored the spread as it was, unshrunk, and
                # those from before `fill_background` filled with black
                "spread_shrink": float(state.get("spread_shrink", 0.0)),
                "fill_background": bool(state.get("fill_background", False))}

    def state(self) -> State:
        return {
            **self.settings(), "shape": list(self.shape),
            "weight": self.weight.astype(np.float16),
            "background": self.background, "part_threshold": float(self.part_threshold),
            "crop": list(self.crop), "template": self.template,
            "flip_below": self.flip_below,
            "colour_mean": self.colour_mean.astype(np.float16),
            "spread": self.spread.astype(np.float16), **self._appearance(),
        }

    @classmethod
    def from_state(cls, state: State) -> Self:
        method = cls(**cls.settings_from(state))
        method.shape = (int(state["shape"][0]), int(state["shape"][1]))
        method.background = np.asarray(state["background"], np.float32)
        method.part_threshold = float(state["part_threshold"])
        method.crop = (int(state["crop"][0]), int(state["crop"][1]))
        method.template = np.asarray(state["template"], np.float32)
        method.flip_below = float(state["flip_below"])
        method.colour_mean = np.asarray(state["colour_mean"], np.float32)
        method._restore(state)
        method.spread = np.asarray(state["spread"], np.float32)
        method.weight = np.asarray(state["weight"], np.float32)
        method._set_template(method.template)
        return method

    # -- helpers --------------------------------------------------------------------------

    def _warp(self, image: Image.Image, pose: tuple[float, float, float],
              crop: tuple[int, int]) -> np.ndarray:
        """`_warp`, where the crop reaches past the photo filled with the background's
        colour (its grey for a grey image). Black there, on a light mat, made a normal part
        near the edge, or a round one whose main axis is noise and so turns the crop any
        way, score like a defect: 9.0 against 0.3-0.5 for the others in a test, so that the
        normal-only threshold passed every anomaly."""
        if not self.fill_background:
            return _warp(image, pose, crop)
        red, green, blue = (float(c) for c in self.background)
        fill: int | tuple[int, ...] = (  # Pillow's own grey: ITU-R 601-2 luma
            round((red * 299 + green * 587 + blue * 114) / 1000) if image.mode == "L"
            else tuple(round(c) for c in (red, green, blue)))
        return _warp(image, pose, crop, fill)

    def _sized(self, image: np.ndarray) -> np.ndarray:
        if image.shape[:2] == self.shape:
            return image
        height, width = self.shape
        return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))

    def _small_factor(self) -> int:
        """The reduction from the compare image to about 250 pixels (for locating the part)."""
        return max(1, max(self.shape) // (250 * self.compare_factor))

    def _small(self, scaled: Image.Image) -> Image.Image:
        factor = self._small_factor()
        return scaled.reduce(factor) if factor > 1 else scaled

    def _compare_image(self, im: Image.Image) -> Image.Image:
        return im.reduce(self.compare_factor) if self.compare_factor > 1 else im

    def _off_background(self, pixels: np.ndarray) -> np.ndarray:
        """How far each pixel's colour lies from the background's (HxWx3 -> HxW, summed
        over channels).

        The channels are added one by one: numpy's sum over a last axis of length 3 takes
        about three times as long, about 0.6 ms of `score` on a circuitboard photo."""
        off = np.abs(np.asarray(pixels, np.float32) - self.background)
        return off[..., 0] + off[..., 1] + off[..., 2]

    def _coarse_pose(self, small: np.ndarray) -> tuple[float, float, float]:
        """(x, y, angle) of the part in compare pixels, from the colour mask's moments."""
        mask = self._off_background(small) > self.part_threshold
        scale = self._small_factor()
        height, width = small.shape[:2]
        if mask.sum() < 0.002 * mask.size or mask.mean() > 0.9:
            return (width * scale / 2, height * scale / 2, 0.0)
        ys, xs = np.nonzero(mask)
        cx, cy = xs.mean(), ys.mean()
        dx, dy = xs - cx, ys - cy
        # main axis of the second moments (closed form for a 2x2 covariance)
        angle = 0.5 * float(np.arctan2(2 * np.mean(dx * dy), np.mean(dx * dx) - np.mean(dy * dy)))
        offset = (scale - 1) / 2
        return ((cx + offset) * scale, (cy + offset) * scale, angle)

    def _crop_size(self, smalls: Sequence[np.ndarray],
                   poses: Sequence[tuple[float, float, float]]) -> tuple[int, int]:
        scale = self._small_factor()
        extents = []
        for small, (cx, cy, angle) in zip(smalls, poses, strict=True):
            mask = self._off_background(small) > self.part_threshold
            ys, xs = np.nonzero(mask)
            if len(xs) < 10:
                extents.append((small.shape[1] * scale / 2, small.shape[0] * scale / 2))
                continue
            dx, dy = xs * scale - cx, ys * scale - cy
            u = dx * np.cos(angle) + dy * np.sin(angle)
            v = -dx * np.sin(angle) + dy * np.cos(angle)
            extents.append((np.percentile(np.abs(u), 99.5), np.percentile(np.abs(v), 99.5)))
        half_u, half_v = np.median(extents, axis=0)
        margin = 0.12 * half_u
        width = int(2 * (half_u + margin)) // 8 * 8
        height = int(2 * (half_v + margin)) // 8 * 8
        return max(width, 16), max(height, 16)

    def _set_template(self, template: np.ndarray) -> None:
        """Prepare phase correlation against `template` at compare and half-compare scale."""
        self._levels = []
        for level in (template, _halved(template)):
            window = np.outer(np.hanning(level.shape[0]), np.hanning(level.shape[1]))
            window = window.astype(np.float32)
            spectrum = np.fft.rfft2((level - level.mean()) * window)
            self._levels.append((window, spectrum))

    def _refine(self, grey: Image.Image, pose: tuple[float, float, float],
                flip_below: float) -> tuple[float, float, float]:
        """Search rotations at half the compare scale, then settle them at full scale.

        The part turned by 180 degrees is tried too when the best match is weaker than
        `flip_below` (a fraction of what normal training images reach)."""
        small = grey.reduce(2)
        peak, pose = self._search_rotation(small, pose)
        if peak < flip_below:
            cx, cy, angle = pose
            flipped_peak, flipped = self._search_rotation(small, (cx, cy, angle + np.pi))
            if flipped_peak > peak:
                pose = flipped
        # at full compare scale: a quarter step either way, a parabola, then the shift
        cx, cy, angle = pose
        quarter = np.deg2rad(self.search_degrees / 8)
        fine = [self._phase_correlate(
                    self._warp(grey, (cx, cy, angle + k * quarter), self.crop), 0)
                for k in (-1, 0, 1)]
        before, at, after = (f[0] for f in fine)
        best = int(np.argmax([before, at, after])) - 1
        offset = float(best)
        curvature = before - 2 * at + after
        if best == 0 and curvature < 0:
            offset = 0.5 * (before - after) / curvature
        _, dy, dx = fine[best + 1]
        cx, cy, _ = _moved((cx, cy, angle + best * quarter), dx, dy)
        return (cx, cy, angle + offset * quarter)

    def _search_rotation(self, small: Image.Image, pose: tuple[float, float, float]
                         ) -> tuple[float, tuple[float, float, float]]:
        """(peak, pose): the best of a few rotations around `pose`, stepping outwards
        while the match improves, then a parabola through the best three."""
        cx, cy, angle = pose
        crop = (self.crop[0] // 2, self.crop[1] // 2)
        step = np.deg2rad(self.search_degrees / 2)

        def match(k: int) -> tuple[float, float, float]:
            return self._phase_correlate(
                self._warp(small, (cx / 2, cy / 2, angle + k * step), crop), 1)

        tried = {k: match(k) for k in (-1, 0, 1)}
        best = max(tried, key=lambda k: tried[k][0])
        while best != 0 and abs(best) < 2:
            outward = best + (1 if best > 0 else -1)
            tried[outward] = match(outward)
            if tried[outward][0] <= tried[best][0]:
                break
            best = outward
        refined = angle + best * step
        if best - 1 in tried and best + 1 in tried:
            before, at, after = tried[best - 1][0], tried[best][0], tried[best + 1][0]
            curvature = before - 2 * at + after
            if curvature < 0:
                refined += 0.5 * (before - after) / curvature * step
        peak, dy, dx = tried[best]
        return peak, _moved((cx, cy, refined), 2 * dx, 2 * dy)

    def _phase_correlate(self, moving: np.ndarray, level: int) -> tuple[float, float, float]:
        """(peak height, dy, dx): shifting `moving` by (dy, dx) best matches the template."""
        window, template_spectrum = self._levels[level]
        moving = moving.astype(np.float32)
        spectrum = np.fft.rfft2((moving - moving.mean()) * window)
        cross = template_spectrum * np.conj(spectrum)
        cross /= np.abs(cross) + 1e-6
        surface = np.fft.irfft2(cross, s=moving.shape)
        height, width = surface.shape
        py, px = divmod(int(np.argmax(surface)), width)
        dy = py + _vertex(surface[(py - 1) % height, px], surface[py, px],
                          surface[(py + 1) % height, px])
        dx = px + _vertex(surface[py, (px - 1) % width], surface[py, px],
                          surface[py, (px + 1) % width])
        dy = dy - height if dy > height / 2 else dy
        dx = dx - width if dx > width / 2 else dx
        # the peak's height is split between pixels at half-pixel shifts: sum its 3x3
        rows, cols = np.arange(py - 1, py + 2) % height, np.arange(px - 1, px + 2) % width
        height_3x3 = float(surface[np.ix_(rows, cols)].sum())
        return height_3x3, float(dy), float(dx)

    def _part_weight(self, aligned: Sequence[np.ndarray]) -> np.ndarray:
        """1 where most aligned normals show the part (grown by 2.5% of the crop width),
        `background_weight` further out: lint on the mat matters less than the part."""
        votes = np.mean([self._off_background(a) > self.part_threshold for a in aligned],
                        axis=0) > 0.5
        near = _max_filter(votes.astype(np.float32), max(1, round(0.025 * self.crop[0])))
        weight = near + (1.0 - near) * self.background_weight
        return _box(weight, 2)

    def _match_colour(self, planar: np.ndarray) -> np.ndarray:
        """Per-channel gain and offset (least squares) that best match the mean normal."""
        out = np.empty_like(planar)
        for c in range(planar.shape[0]):
            x, ref = planar[c], self.colour_mean[c]
            x_mean, ref_mean = float(x.mean()), float(ref.mean())
            variance = float(((x - x_mean) ** 2).mean())
            gain = float(((x - x_mean) * (ref - ref_mean)).mean()) / max(variance, 1e-6)
            gain = min(max(gain, 0.5), 2.0)
            out[c] = (x - x_mean) * gain + ref_mean
        return out

    def _distance(self, planar: np.ndarray, use: np.ndarray) -> np.ndarray:
        """Blurred k-th smallest distance to the chosen normals' tolerance envelopes."""
        high, low = self.high[use], self.low[use]
        outside = np.maximum(planar, high)
        outside -= high
        below = np.minimum(planar, low)
        np.subtract(low, below, out=below)
        outside += below  # one of the two is zero, so uint8 cannot overflow
        summed = np.add(outside[:, 0], outside[:, 1], dtype=np.uint16)
        summed += outside[:, 2]
        k = max(1, min(self.neighbours, len(summed)))
        if k == 1:
            return _box(summed.min(axis=0).astype(np.float32), self.map_blur)
        smallest = [np.full(summed.shape[1:], np.iinfo(np.uint16).max, np.uint16)
                    for _ in range(k)]
        for distance in summed:  # insert into the k running minima
            for j in range(k):
                low_j = np.minimum(smallest[j], distance)
                distance = np.maximum(smallest[j], distance)
                smallest[j] = low_j
        return _box(smallest[-1].astype(np.float32), self.map_blur)

    def _unwarp(self, crop_map: np.ndarray, pose: tuple[float, float, float],
                size: tuple[int, int], scale: float) -> np.ndarray:
        """The crop's map resampled back onto the image (compare resolution x `scale`)."""
        cx, cy, angle = pose
        width, height = self.crop
        cos, sin = float(np.cos(angle)), float(np.sin(angle))
        # inverse of _warp: image (x, y) -> crop (u, v), with x, y = output / scale
        u0 = width / 2 - (cos * cx + sin * cy)
        v0 = height / 2 - (-sin * cx + cos * cy)
        coefficients = (cos / scale, sin / scale, u0, -sin / scale, cos / scale, v0)
        out = Image.fromarray(crop_map.astype(np.float32), mode="F").transform(
            size, Image.Transform.AFFINE, coefficients, resample=Image.Resampling.BILINEAR)
        return np.asarray(out, np.float32)


class AlignPatch(AlignEnvelope):
    """`align` with a stricter comparison: whole 3x3 patches, each normal shifted as one.

    Step 3 becomes: for every stored normal and every shift of up to `tolerance` pixels
    along either axis (`_shifts`: diagonal ones add nothing once the local registration
    below has run), the sum of squared colour differences over the 3x3 patch around a
    pixel; the pixel's distance is the root mean square of the best (normal, shift)
    pair. The envelope lets
    every pixel and channel find its own neighbour, which also excuses a scratch or a
    bent pin whose pixels each resemble something nearby; here a patch must match one
    normal at one offset, and large differences weigh more than many small ones. It
    compares at 250 pixels across, decoded at that size directly (a JPEG's reduced-scale
    draft: 1/8 of a 2000-pixel photo), so it costs about what `align` costs although
    every normal is compared whole.

    Before comparing, each image (and each stored normal) loses its local mean colour,
    taken over `detail_radius` pixels (about 5 % of the compare image's width): what is
    compared is detail (edges, legends, pins, solder) rather than shading, so light that
    falls a little differently across the part from photo to photo is not a difference.

    After the global alignment (one rotation and shift for the whole part), each crop is
    registered locally too: a smooth field of shifts of up to `flow_max` pixels, found
    by Lucas-Kanade against the mean aligned normal over windows of `flow_radius` pixels
    (`_flow`), resamples it before comparing; the stored normals are registered the same
    way when fitting. A board that bows, a lens that warps or a component that sits a
    pixel off then no longer differs everywhere along its edges, while a defect, which
    no smooth shift explains, still does. The windows are wide (24 pixels, a tenth of the
    part), so the field cannot bend around a small defect.

    Chosen on the circuitboard training split by cross-validation (out-of-fold AUROC 0.96
    against 0.94 for `align`), and its settings there too, each by the mean out-of-fold
    AUROC over seven fold assignments and 5 and 10 folds: `detail_radius` 0.947 without,
    0.965-0.968 with radii 6 to 16 (12 is the middle of that plateau); then a wider blur
    of the distance map and a higher spread floor, which both let a lone bright pixel
    (a glint) weigh less than a coherent difference: `map_blur` 2 -> 4, 5, 6, 8 gave
    0.967 -> 0.975, 0.979, 0.980, 0.969, and with `spread_floor` 4 at blur 6, 0.984 (better
    in 13 of 14 runs, worse in none). `tolerance` 2 scored higher still (0.987 with blur
    4) but compares 25 shifts instead of 9, too slow for the speed target. Decoding
    straight at 250 pixels instead of at 500 and halving scored the same (0.985 against
    0.984, better in 7 of 14 runs, worse in 5) and saves about 2 ms per photo. The local
    registration: 0.993 against 0.981 (better in 12 of 14 runs, worse in 2; its settings
    picked among about 20, whose neighbours score 0.990-0.992); after it, finding the
    field at half resolution and shifting the normals along the axes only scored the same
    (0.994) at a third less time per photo. By then those 14 runs were near their ceiling,
    so the spread's shrinking (`spread_shrink` 1: the spread plus its median) was judged
    also on a harder protocol that fits on 6 or 8 normals drawn at random and scores the
    other normals and every anomaly (60 draws of each, the shipped method 0.949 there,
    near what the test split says): +0.011, +0.011 and +0.017 on three independent sets
    of draws (paired standard error about 0.002), and 0.998 against 0.994 on the 14 runs
    (better in 11, worse in none), at the same cost; 0.5 to 2 times the median score
    alike. The rest of the method
    (locating, registering globally, the normalisation by what varies among normal parts)
    is `align`'s.
    """

    name: ClassVar[str] = "align_patch"

    def __init__(self, input_size: int = 250, compare_factor: int = 1,
                 detail_radius: int = 12, map_blur: int = 6, spread_floor: float = 4.0,
                 flow_radius: int = 24, flow_max: float = 2.0, flow_iterations: int = 3,
                 flow_blur: int = 4, flow_damping: float = 0.05,
                 diagonal_shifts: bool = False, spread_shrink: float = 1.0,
                 **settings: Any) -> None:
        """`align`'s settings (the resolution, the map's blur, the spread's floor and its
        shrinking default differently), `detail_radius` (compare pixels; 0 compares the colours as
        they are), the local registration's (`_flow`; `flow_radius` 0 turns it off) and
        `diagonal_shifts` (whether each normal is also shifted diagonally, to every offset
        within `tolerance` on both axes, or only along one axis at a time). A patch is
        compared with its nearest normal only, so `neighbours` must be 1."""
        if settings.get("neighbours", 1) != 1:
            raise ValueError(f"align_patch compares each patch with its nearest normal "
                             f"only: neighbours must be 1, not {settings['neighbours']}")
        super().__init__(input_size, compare_factor, map_blur=map_blur,
                         spread_floor=spread_floor, spread_shrink=spread_shrink, **settings)
        self.detail_radius = detail_radius
        self.flow_radius = flow_radius
        self.flow_max = flow_max
        self.flow_iterations = flow_iterations
        self.flow_blur = flow_blur
        self.flow_damping = flow_damping
        self.diagonal_shifts = diagonal_shifts
        self.normals = np.zeros((0, 3, 0, 0), np.uint8)  # aligned, colour-matched, planar
        self._padded = np.zeros((0, 3, 0, 0), np.float32)  # their detail, padded
        self._flow_template: _FlowTemplate | None = None

    def settings(self) -> State:
        return {**super().settings(), "detail_radius": self.detail_radius,
                "flow_radius": self.flow_radius, "flow_max": self.flow_max,
                "flow_iterations": self.flow_iterations, "flow_blur": self.flow_blur,
                "flow_damping": self.flow_damping, "diagonal_shifts": self.diagonal_shifts}

    @classmethod
    def settings_from(cls, state: State) -> dict[str, Any]:
        # artifacts from before `detail_radius` compared the colours as they are, and
        # those from before the local registration had none and shifted diagonally too
        return {**super().settings_from(state),
                "detail_radius": int(state.get("detail_radius", 0)),
                "flow_radius": int(state.get("flow_radius", 0)),
                "flow_max": float(state.get("flow_max", 2.0)),
                "flow_iterations": int(state.get("flow_iterations", 3)),
                "flow_blur": int(state.get("flow_blur", 4)),
                "flow_damping": float(state.get("flow_damping", 0.05)),
                "diagonal_shifts": bool(state.get("diagonal_shifts", True))}

    @classmethod
    def from_state(cls, state: State) -> Self:
        method = super().from_state(state)
        if method.flow_radius:  # derived from the stored mean normal, as when fitted
            method._flow_template = method._flow_towards(method.colour_mean)
        return method

    # -- local registration ---------------------------------------------------------------

    def _registered(self, planar: np.ndarray) -> np.ndarray:
        """The crop resampled by `_flow` onto the mean aligned normal."""
        if self._flow_template is None:
            return planar
        return _bilinear(planar.astype(np.float32), *self._flow(planar))

    def _registered_normals(self, stored: np.ndarray) -> np.ndarray:
        """The normals registered onto their mean, twice (the mean of the registered
        normals is sharper, so the second round registers better). The mean normal is
        then kept at the precision the artifact stores, so that a loaded model derives
        exactly the template it was fitted with."""
        if not self.flow_radius:
            return stored
        planar = stored.astype(np.float32)
        registered = planar
        for _ in range(_FLOW_ROUNDS):
            self._flow_template = self._flow_towards(self.colour_mean)
            registered = np.stack([self._registered(a) for a in planar])
            self.colour_mean = registered.mean(axis=0).astype(np.float16).astype(np.float32)
        self._flow_template = self._flow_towards(self.colour_mean)
        return np.clip(np.rint(registered), 0, 255).astype(np.uint8)

    def _flow_image(self, planar: np.ndarray) -> np.ndarray:
        """What the flow matches, at 1/`_FLOW_SCALE` of the compare resolution: the
        detail, blurred over `flow_blur` pixels (a shift of a pixel or two must still
        overlap)."""
        small = _halved(planar.astype(np.float32))
        if self.detail_radius > 0:
            small -= _box(small, self.detail_radius // _FLOW_SCALE, np.float32)
        return _box(small, self.flow_blur // _FLOW_SCALE, np.float32)

    def _flow_towards(self, mean: np.ndarray) -> _FlowTemplate:
        """The template's detail, its gradients and the inverse of their structure
        tensor summed over `flow_radius` (damped by `flow_damping` of its median trace, so
        that flat places, which say nothing about a shift, stay put)."""
        template = self._flow_image(mean)
        gy, gx = (g.astype(np.float32) for g in np.gradient(template, axis=(1, 2)))
        r = self.flow_radius // _FLOW_SCALE
        xx, xy, yy = (_box((a * b).sum(axis=0), r) for a, b in ((gx, gx), (gx, gy), (gy, gy)))
        damping = self.flow_damping * float(np.median(xx + yy)) + 1e-6
        xx += damping
        yy += damping
        det = xx * yy - xy * xy
        return _FlowTemplate(template, gx, gy, yy / det, -xy / det, xx / det)

    def _flow(self, planar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A smooth field of shifts (dy, dx; at most `flow_max` pixels) that brings the
        crop's detail onto the mean normal's: Lucas-Kanade, every pixel solving the
        least-squares shift of the window of `flow_radius` pixels around it against the
        template's gradients, `flow_iterations` times. Found at 1/`_FLOW_SCALE` of the
        compare resolution and then enlarged: over windows that wide the field is smooth,
        and so it costs 40 % as much (0.9925 against 0.9929 over the 14 runs of
        docs/detector.md)."""
        flow = self._flow_template
        assert flow is not None
        image = self._flow_image(planar)
        dy = np.zeros(flow.template.shape[1:], np.float32)
        dx = np.zeros_like(dy)
        r, limit = self.flow_radius // _FLOW_SCALE, self.flow_max / _FLOW_SCALE
        for step in range(self.flow_iterations):
            warped = _bilinear(image, dy, dx) if step else image
            diff = warped - flow.template
            bx = _box((flow.gx * diff).sum(axis=0), r, np.float32)
            by = _box((flow.gy * diff).sum(axis=0), r, np.float32)
            dx -= flow.inv_xx * bx + flow.inv_xy * by
            dy -= flow.inv_xy * bx + flow.inv_yy * by
            np.clip(dx, -limit, limit, out=dx)
            np.clip(dy, -limit, limit, out=dy)
        shape = planar.shape[1:]
        return _doubled(dy, shape) * _FLOW_SCALE, _doubled(dx, shape) * _FLOW_SCALE

    @property
    def normal_count(self) -> int:
        return len(self.normals)

    def _detail(self, planar: np.ndarray) -> np.ndarray:
        """Each channel minus its local mean over `detail_radius` (float32, planar)."""
        planar = planar.astype(np.float32)
        if self.detail_radius <= 0:
            return planar
        return planar - _box(planar, self.detail_radius, np.float32)

    def _remember(self, stored: np.ndarray) -> None:
        self.normals = stored
        margin = self.tolerance + 1  # the shift, and the patch's own radius
        self._padded = np.pad(self._detail(stored),
                              ((0, 0), (0, 0), (margin, margin), (margin, margin)), mode="edge")

    def _appearance(self) -> State:
        return {"normals": self.normals}

    def _restore(self, state: State) -> None:
        self._remember(np.asarray(state["normals"], np.uint8))

    def _shifts(self) -> list[tuple[int, int]]:
        """The (dy, dx) each normal is compared at: within `tolerance` on both axes, or
        (without `diagonal_shifts`) in steps along the axes only, which after the local
        registration scores the same (0.994 against 0.993 over the 14 runs of
        docs/detector.md) in 5 comparisons instead of 9.

        >>> AlignPatch()._shifts()
        [(-1, 0), (0, -1), (0, 0), (0, 1), (1, 0)]
        >>> len(AlignPatch(diagonal_shifts=True)._shifts())
        9
        """
        t = self.tolerance
        return [(dy, dx) for dy in range(-t, t + 1) for dx in range(-t, t + 1)
                if self.diagonal_shifts or abs(dy) + abs(dx) <= t]

    def _distance(self, planar: np.ndarray, use: np.ndarray) -> np.ndarray:
        """Blurred RMS difference of each 3x3 patch's detail to its best-matching normal,
        each normal shifted by up to `tolerance` pixels as a whole (`_shifts`).

        The normals are compared a few at a time, so that the intermediate arrays stay in
        the processor's cache: all twenty at once spill to memory and cost twice as much.
        """
        t = self.tolerance
        height, width = planar.shape[1:]
        image = np.pad(self._detail(planar), ((0, 0), (1, 1), (1, 1)), mode="edge")
        best = np.full((height, width), np.inf, np.float32)
        chosen = np.flatnonzero(use)
        count = int(np.clip(_CACHE_BYTES // image.nbytes, 1, max(1, len(chosen))))
        squared = np.empty((count, *image.shape), np.float32)
        pixel = np.empty((count, height + 2, width + 2), np.float32)
        rows = np.empty((count, height, width + 2), np.float32)
        patch = np.empty((count, height, width), np.float32)
        for start in range(0, len(chosen), count):
            part = chosen[start:start + count]
            contiguous = part[-1] - part[0] == len(part) - 1
            group = self._padded[part[0]:part[-1] + 1] if contiguous else self._padded[part]
            n = len(part)
            for dy, dx in self._shifts():
                window = group[:, :, t + dy:t + dy + height + 2, t + dx:t + dx + width + 2]
                np.subtract(window, image, out=squared[:n])
                np.multiply(squared[:n], squared[:n], out=squared[:n])
                np.add(squared[:n, 0], squared[:n, 1], out=pixel[:n])
                pixel[:n] += squared[:n, 2]
                np.add(pixel[:n, :-2], pixel[:n, 1:-1], out=rows[:n])
                rows[:n] += pixel[:n, 2:]
                np.add(rows[:n, :, :-2], rows[:n, :, 1:-1], out=patch[:n])
                patch[:n] += rows[:n, :, 2:]
                np.minimum(best, patch[:n].min(axis=0), out=best)
        return _box(np.sqrt(best / 9.0), self.map_blur)


# What `AlignPatch._distance` keeps of the normals at once (a typical per-core L2 cache)
_CACHE_BYTES = 1 << 20
# Rounds of registering the normals onto their mean when fitting (`_registered_normals`)
_FLOW_ROUNDS = 2
# The local registration's field is found at 1/_FLOW_SCALE of the compare resolution
_FLOW_SCALE = 2


class _FlowTemplate(NamedTuple):
    """What `AlignPatch._flow` registers against, derived from the mean aligned normal."""

    template: np.ndarray  # its detail (planar float32)
    gx: np.ndarray
    gy: np.ndarray
    inv_xx: np.ndarray  # the inverse of the windowed structure tensor
    inv_xy: np.ndarray
    inv_yy: np.ndarray


def _halved(planar: np.ndarray) -> np.ndarray:
    """Each plane at half the resolution: the mean of each 2x2 block (an odd last row or
    column is left out).

    >>> _halved(np.arange(12, dtype=np.float32).reshape(1, 3, 4)).tolist()
    [[[2.5, 4.5]]]
    """
    height, width = planar.shape[-2] // 2 * 2, planar.shape[-1] // 2 * 2
    even = planar[..., :height, :width]
    return 0.25 * (even[..., 0::2, 0::2] + even[..., 1::2, 0::2]
                   + even[..., 0::2, 1::2] + even[..., 1::2, 1::2])


def _doubled(field: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A half-resolution field (from `_halved`) back at `shape`: each value over its 2x2
    block, an odd last row or column copying its neighbour, then smoothed over 3x3."""
    full = np.repeat(np.repeat(field, 2, axis=0), 2, axis=1)
    full = np.pad(full, ((0, shape[0] - full.shape[0]), (0, shape[1] - full.shape[1])),
                  mode="edge")
    return _box(full, 1, np.float32)


def _bilinear(planar: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Each plane sampled at (y + dy, x + dx), bilinearly, clamped to the edges.

    >>> rows = np.array([[[0.0, 10.0, 20.0], [30.0, 40.0, 50.0]]], np.float32)
    >>> _bilinear(rows, np.zeros((2, 3), np.float32), np.full((2, 3), 0.5, np.float32)
    ...           ).round(1).tolist()  # the last column has nothing after it
    [[[5.0, 15.0, 20.0], [35.0, 45.0, 50.0]]]
    """
    channels, height, width = planar.shape
    ys = np.arange(height, dtype=np.float32)[:, None] + dy
    xs = np.arange(width, dtype=np.float32)[None, :] + dx
    np.clip(ys, 0, height - 1.001, out=ys)  # so that the pixel after is always inside
    np.clip(xs, 0, width - 1.001, out=xs)
    y0, x0 = ys.astype(np.int32), xs.astype(np.int32)
    fy, fx = (ys - y0).ravel(), (xs - x0).ravel()
    index = (y0 * width + x0).ravel()
    flat = planar.reshape(channels, -1)
    top, top_right = np.take(flat, index, axis=1), np.take(flat, index + 1, axis=1)
    bottom = np.take(flat, index + width, axis=1)
    bottom_right = np.take(flat, index + width + 1, axis=1)
    top_right -= top
    top_right *= fx
    top += top_right
    bottom_right -= bottom
    bottom_right *= fx
    bottom += bottom_right
    bottom -= top
    bottom *= fy
    top += bottom
    return top.reshape(channels, height, width)


def _moved(pose: tuple[float, float, float], dx: float, dy: float
           ) -> tuple[float, float, float]:
    """The pose whose crop shows what the crop of `pose` shows shifted by (dx, dy)."""
    cx, cy, angle = pose
    cos, sin = np.cos(angle), np.sin(angle)
    return (cx - (cos * dx - sin * dy), cy - (sin * dx + cos * dy), angle)


def _diverse(images: Sequence[np.ndarray], count: int) -> list[int]:
    """Indices of `count` images picked greedily to cover the set (k-centre on thumbnails)."""
    thumbs = np.stack([np.asarray(Image.fromarray(a).reduce(4), np.float32).ravel()
                       for a in images])
    chosen = [0]
    nearest = ((thumbs - thumbs[0]) ** 2).sum(axis=1)
    while len(chosen) < count:
        pick = int(np.argmax(nearest))
        chosen.append(pick)
        nearest = np.minimum(nearest, ((thumbs - thumbs[pick]) ** 2).sum(axis=1))
    return chosen


def _warp(image: Image.Image, pose: tuple[float, float, float],
          crop: tuple[int, int], fill: int | tuple[int, ...] = 0) -> np.ndarray:
    """Resample `image` so that `pose` (centre x, y and angle) lands in the crop's centre;
    `fill` where the crop reaches past the image."""
    cx, cy, angle = pose
    width, height = crop
    cos, sin = float(np.cos(angle)), float(np.sin(angle))
    x0 = cx - cos * width / 2 + sin * height / 2
    y0 = cy - sin * width / 2 - cos * height / 2
    out = image.transform(crop, Image.Transform.AFFINE, (cos, -sin, x0, sin, cos, y0),
                          resample=Image.Resampling.BILINEAR, fillcolor=fill)
    return np.asarray(out)


def _vertex(before: float, at: float, after: float) -> float:
    curvature = before - 2 * at + after
    return 0.5 * (before - after) / curvature if curvature < 0 else 0.0


def _max_filter(values: np.ndarray, radius: int) -> np.ndarray:
    """Maximum over a (2r+1)x(2r+1) window of an HxW(xC) array (edges: window shrinks)."""
    out = values.copy()
    for axis in (0, 1):
        source = out.copy()
        length = source.shape[axis]
        for s in range(1, min(radius, length - 1) + 1):
            head = [slice(None)] * source.ndim
            tail = [slice(None)] * source.ndim
            head[axis], tail[axis] = slice(s, None), slice(None, length - s)
            np.maximum(out[tuple(head)], source[tuple(tail)], out=out[tuple(head)])
            np.maximum(out[tuple(tail)], source[tuple(head)], out=out[tuple(tail)])
    return out


def _box(values: np.ndarray, radius: int,
         accumulate: type[np.floating[Any]] = np.float64) -> np.ndarray:
    """Mean over a (2r+1)x(2r+1) window of an HxW array, or of each HxW plane of a stack
    (edges: the window shrinks), from running sums, so a wide window costs what a narrow
    one does. The sums are `accumulate` (float32 is faster, and exact enough for sums of
    some ten thousand values of a few hundred).

    >>> _box(np.array([[0.0, 3.0, 6.0, 9.0]]), 1).tolist()
    [[1.5, 3.0, 6.0, 7.5]]
    """
    out = values.astype(np.float32)
    if radius <= 0:
        return out
    for axis in (out.ndim - 2, out.ndim - 1):
        length = out.shape[axis]
        running = np.cumsum(out, axis=axis, dtype=accumulate)
        running = np.concatenate([np.zeros_like(running.take([0], axis=axis)), running],
                                 axis=axis)
        index = np.arange(length)
        high, low = np.minimum(index + radius + 1, length), np.maximum(index - radius, 0)
        counts = (high - low).astype(accumulate).reshape(
            [-1 if k == axis else 1 for k in range(out.ndim)])
        sums = running.take(high, axis=axis)
        sums -= running.take(low, axis=axis)
        sums /= counts
        out = sums.astype(np.float32, copy=False)
    return out
