"""The align methods on synthetic parts: a patterned board on a plain mat, moved and turned."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PIL import Image

from pipeline.detector.methods.align import AlignEnvelope, AlignPatch

SIZE = (240, 160)  # width, height


def _board() -> Image.Image:
    """A blue board with a few bright and dark 'components' (asymmetric, so pose is unique)."""
    rng = np.random.default_rng(7)
    board = np.zeros((50, 110, 3), np.uint8)
    board[:] = (40, 60, 200)
    for _ in range(12):
        y, x = rng.integers(2, 40), rng.integers(2, 96)
        board[y:y + 8, x:x + 12] = rng.integers(0, 255, 3)
    board[20:30, 0:14] = (230, 230, 230)
    return Image.fromarray(board)


def _photo(dx: float, dy: float, degrees: float, defect: bool = False) -> np.ndarray:
    mat = Image.new("RGB", SIZE, (40, 120, 60))
    board = _board().convert("RGBA").rotate(degrees, resample=Image.Resampling.BILINEAR,
                                            expand=True)
    x = int(SIZE[0] / 2 - board.width / 2 + dx)
    y = int(SIZE[1] / 2 - board.height / 2 + dy)
    mat.paste(board, (x, y), board)
    image = np.asarray(mat).copy()
    if defect:
        cx, cy = SIZE[0] // 2 + int(dx), SIZE[1] // 2 + int(dy)
        image[cy - 4:cy + 4, cx + 10:cx + 18] = (250, 250, 250)
    return image


@pytest.fixture(scope="module", params=[AlignEnvelope, AlignPatch], ids=lambda c: c.name)
def fitted(request: pytest.FixtureRequest) -> AlignEnvelope:
    rng = np.random.default_rng(0)
    normals = [_photo(*rng.uniform(-8, 8, 2), rng.uniform(-3, 3)) for _ in range(8)]
    method: AlignEnvelope = request.param(input_size=max(SIZE), compare_factor=1)
    method.fit(normals, [], rng)
    return method


def test_moved_normal_scores_below_a_defect(fitted: AlignEnvelope) -> None:
    normal, _ = fitted.score(_photo(5, -4, 2.0))
    defect, anomaly_map = fitted.score(_photo(-3, 6, -1.5, defect=True))
    assert defect > 2 * normal
    assert anomaly_map.dtype == np.float32 and anomaly_map.ndim == 2


def test_upside_down_part_is_aligned(fitted: AlignEnvelope) -> None:
    flipped, _ = fitted.score(_photo(0, 0, 180.0))
    defect, _ = fitted.score(_photo(0, 0, 0.0, defect=True))
    assert flipped < defect / 4  # found turned round (unaligned it would score like a defect)


def test_state_round_trip_scores_the_same(fitted: AlignEnvelope) -> None:
    image = _photo(2, 2, 1.0, defect=True)
    again = type(fitted).from_state(fitted.state())
    assert again.score(image)[0] == pytest.approx(fitted.score(image)[0], rel=1e-2)


def test_other_image_size_is_resized(fitted: AlignEnvelope) -> None:
    image = np.asarray(Image.fromarray(_photo(0, 0, 0.0)).resize((300, 200)))
    score, _ = fitted.score(image)
    assert np.isfinite(score)



def _compare(method: AlignEnvelope, normal: np.ndarray, image: np.ndarray,
             edge: int = 2) -> float:
    """The largest distance `method` finds between `image` and one stored `normal`
    (planar), `edge` pixels in from the border (where neighbours are missing)."""
    method._remember(normal[None])
    inner = method._distance(image, np.ones(1, bool))[edge:-edge, edge:-edge]
    return float(inner.max())


def test_patch_distance_tolerates_a_shift_but_not_a_jumble() -> None:
    rng = np.random.default_rng(5)
    normal = rng.integers(0, 256, (3, 40, 60)).astype(np.uint8)  # fine texture everywhere
    shifted = np.roll(normal, 1, axis=2)
    diagonal = np.roll(normal, (1, -1), axis=(1, 2))
    # each pixel replaced by one of its neighbours: locally the same values, jumbled
    ys, xs = np.indices(normal.shape[1:])
    ys = np.clip(ys + rng.integers(-1, 2, ys.shape), 0, 39)
    xs = np.clip(xs + rng.integers(-1, 2, xs.shape), 0, 59)
    jumbled = normal[:, ys, xs]
    envelope, patches = AlignEnvelope(map_blur=0), AlignPatch(map_blur=0, detail_radius=0)
    square = AlignPatch(map_blur=0, detail_radius=0, diagonal_shifts=True)
    for method in (envelope, patches, square):
        assert _compare(method, normal, normal) == 0.0
        assert _compare(method, normal, shifted) == 0.0  # within the 1-px tolerance
    # a diagonal step: within tolerance on both axes, but two steps along them
    assert _compare(envelope, normal, diagonal) == _compare(square, normal, diagonal) == 0.0
    assert _compare(patches, normal, diagonal) > 20.0
    # the envelope asks only "is each value found within a pixel?"; a patch must match whole
    assert _compare(envelope, normal, jumbled) == 0.0
    assert _compare(patches, normal, jumbled) > 20.0
    assert _compare(square, normal, jumbled) > 20.0


def test_detail_comparison_ignores_shading_but_not_a_spot() -> None:
    rng = np.random.default_rng(6)
    normal = rng.integers(40, 200, (3, 60, 120)).astype(np.uint8)
    shaded = np.rint(normal + np.linspace(0.0, 40.0, 120)).astype(np.uint8)  # light falls off
    spotted = normal.copy()
    spotted[:, 28:32, 58:62] = 255
    colours, detail = AlignPatch(map_blur=0, detail_radius=0), AlignPatch(map_blur=0)
    edge = detail.detail_radius + 2  # inside it, the local mean is a symmetric window
    assert _compare(colours, normal, shaded, edge) > 30.0  # the plain colours differ
    assert _compare(detail, normal, shaded, edge) < 1.0  # only rounding is left
    assert _compare(detail, normal, spotted, edge) > 30.0


def test_an_artifact_from_before_detail_radius_compares_colours() -> None:
    method = AlignPatch(input_size=max(SIZE), compare_factor=1)
    rng = np.random.default_rng(1)
    method.fit([_photo(*rng.uniform(-8, 8, 2), rng.uniform(-3, 3)) for _ in range(4)], [], rng)
    state = method.state()
    assert AlignPatch.from_state(state).detail_radius == method.detail_radius == 12
    del state["detail_radius"]
    assert AlignPatch.from_state(state).detail_radius == 0


def test_align_patch_refuses_a_setting_it_would_ignore() -> None:
    with pytest.raises(ValueError, match="neighbours must be 1, not 2"):
        AlignPatch(neighbours=2)
    assert AlignPatch(neighbours=1).neighbours == 1


def _textured(seed: int, shape: tuple[int, int] = (64, 160)) -> np.ndarray:
    """Planar float32 detail at about 4-px scale, as printed parts show: legends, pads."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(30, 220, (3, shape[0] // 4, shape[1] // 4)).astype(np.uint8)
    planes = [np.asarray(Image.fromarray(c).resize(shape[::-1], Image.Resampling.BICUBIC))
              for c in coarse]
    return np.stack(planes).astype(np.float32)


def _bent(planar: np.ndarray, amplitude: float) -> tuple[np.ndarray, np.ndarray]:
    """`planar` sampled at x + dx, a smooth horizontal field (its left part moved by
    `amplitude` px, its right part not: a board that bends, or a lens that warps), and
    dx. Sampling the result at x - dx undoes it."""
    from pipeline.detector.methods.align import _bilinear

    height, width = planar.shape[1:]
    ramp = np.clip((width * 0.6 - np.arange(width)) / (width * 0.3), 0.0, 1.0)
    dx = np.broadcast_to(amplitude * ramp, (height, width)).astype(np.float32)
    return _bilinear(planar, np.zeros_like(dx), dx.copy()), dx


def _flow_towards(template: np.ndarray, **settings: Any) -> AlignPatch:
    method = AlignPatch(**settings)
    method._flow_template = method._flow_towards(template)
    return method


@pytest.mark.parametrize("amplitude", [
    0.7,   # under a pixel
    1.6,   # near the limit of 2 px
])
def test_local_registration_undoes_a_smooth_bend(amplitude: float) -> None:
    template = _textured(11)
    bent, truth = _bent(template, amplitude)
    method = _flow_towards(template)
    _, dx = method._flow(bent)
    inner = np.s_[8:-8, 30:-30]  # away from the edges, where windows are cut short
    # the field that undoes the bend is found where it is (the moved part, the ramp and
    # the still part) ...
    assert np.abs(dx[inner] + truth[inner]).mean() < 0.15 * amplitude
    # ... and resampling by it leaves far less than the bend's difference
    before = np.abs(bent - template)[:, 8:-8, 30:-30].mean()
    after = np.abs(method._registered(bent) - template)[:, 8:-8, 30:-30].mean()
    assert after < before / 3


def test_local_registration_does_not_hide_a_defect() -> None:
    template = _textured(12)
    spotted = template.copy()
    spotted[:, 30:34, 78:82] = 255.0  # a 4x4 blob: a local shift cannot explain it
    method = _flow_towards(template)
    registered = method._registered(spotted)
    assert np.abs(registered - template)[:, 30:34, 78:82].mean() > 0.8 * np.abs(
        spotted - template)[:, 30:34, 78:82].mean()


def test_local_registration_moves_no_further_than_flow_max() -> None:
    template = _textured(13)
    far, _ = _bent(template, 6.0)
    _, dx = _flow_towards(template, flow_max=1.5)._flow(far)
    assert float(np.abs(dx).max()) == pytest.approx(1.5)


def test_local_registration_is_restored_exactly() -> None:
    rng = np.random.default_rng(3)
    method = AlignPatch(input_size=max(SIZE), compare_factor=1)
    method.fit([_photo(*rng.uniform(-8, 8, 2), rng.uniform(-3, 3)) for _ in range(5)], [], rng)
    again = AlignPatch.from_state(method.state())
    assert method._flow_template is not None and again._flow_template is not None
    # derived from the stored (float16) mean normal, so the very template it was fitted with
    for fitted, loaded in zip(method._flow_template, again._flow_template, strict=True):
        assert np.array_equal(fitted, loaded)
    image = _photo(3, -2, 1.0, defect=True)
    planar = method._match_colour(method.align(image).transpose(2, 0, 1).astype(np.float32))
    assert np.array_equal(method._flow(planar)[1], again._flow(planar)[1])


def test_an_artifact_from_before_local_registration_scores_as_before() -> None:
    rng = np.random.default_rng(4)
    method = AlignPatch(input_size=max(SIZE), compare_factor=1, flow_radius=0,
                        diagonal_shifts=True)  # as every model before them was fitted
    method.fit([_photo(*rng.uniform(-8, 8, 2), rng.uniform(-3, 3)) for _ in range(4)], [], rng)
    state = method.state()
    for key in ("flow_radius", "flow_max", "flow_iterations", "flow_blur", "flow_damping",
                "diagonal_shifts"):
        del state[key]
    old = AlignPatch.from_state(state)
    assert old.flow_radius == 0 and old._flow_template is None and old.diagonal_shifts
    image = _photo(1, 1, 0.5, defect=True)
    assert old.score(image)[0] == pytest.approx(method.score(image)[0], rel=1e-2)
    new = AlignPatch()
    assert new.flow_radius > 0 and not new.diagonal_shifts


def test_the_spread_is_shrunk_towards_its_median() -> None:
    """`spread_shrink` adds that fraction of the median spread everywhere, so a place where
    the few normals happened to agree is no longer divided by next to nothing."""
    normals = [_photo(*np.random.default_rng(5).uniform(-8, 8, 2), 1.0 * k) for k in range(4)]
    plain, shrunk = (AlignPatch(input_size=max(SIZE), compare_factor=1, spread_shrink=q)
                     for q in (0.0, 1.0))
    for method in (plain, shrunk):
        method.fit(normals, [], np.random.default_rng(5))
    median = float(np.median(plain.spread))
    assert median > 0 and AlignPatch().spread_shrink == 1.0
    np.testing.assert_allclose(shrunk.spread, plain.spread + median, rtol=1e-5)
    assert plain.spread.min() / median < 0.5 < shrunk.spread.min() / median
    # an artifact from before the setting stored its spread unshrunk, and loads as it was
    state = plain.state()
    del state["spread_shrink"]
    old = AlignPatch.from_state(state)
    assert old.spread_shrink == 0.0
    np.testing.assert_array_equal(old.spread, np.asarray(plain.state()["spread"], np.float32))


def _washer(dx: float, dy: float, seed: int, defect: bool = False) -> np.ndarray:
    """A washer on a light mat, reaching near the frame's edges, so that the crop around a
    washer off the centre passes the photo's edge."""
    ys, xs = np.mgrid[0:SIZE[1], 0:SIZE[0]].astype(np.float32)
    r = np.hypot(xs - SIZE[0] / 2 - dx, ys - SIZE[1] / 2 - dy)
    image = np.empty((SIZE[1], SIZE[0], 3), np.float32)
    image[:] = (215, 212, 205)
    image[r < 66] = (110, 105, 100)
    image[r < 24] = (215, 212, 205)
    if defect:
        image[76:84, 150:160] = (240, 240, 240)  # a bright nick, right of the hole
    image += np.random.default_rng(seed).normal(0, 2, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("method_class", [AlignEnvelope, AlignPatch], ids=lambda c: c.name)
def test_where_the_crop_passes_the_photo_it_shows_the_background(
        method_class: type[AlignEnvelope]) -> None:
    """The crop was filled with black past the photo's edge: on a light mat a normal part
    near the edge then scored about like a defect (align 11.3 against 12.7, align_patch 2.5
    against 4.4; 0.2 for the others), and a normal-only threshold above it passed every
    defect."""
    rng = np.random.default_rng(8)
    normals = [_washer(*rng.uniform(-9, 9, 2), seed) for seed in range(8)]
    near_the_edge = _washer(9, -9, 100)
    for fill in (True, False):
        method = method_class(input_size=max(SIZE), compare_factor=1, fill_background=fill)
        method.fit(normals, [], np.random.default_rng(8))
        normal = method.score(near_the_edge)[0]
        defect = method.score(_washer(0, 0, 101, defect=True))[0]
        black = int((method.align(near_the_edge).max(axis=2) < 50).sum())
        if fill:
            assert black == 0 and defect > 10 * normal
            again = method_class.from_state(method.state())
            assert again.fill_background
            assert again.score(near_the_edge)[0] == pytest.approx(normal, rel=1e-2)
        else:  # as before: what the setting changes
            assert black > 0 and defect < 2 * normal


def test_an_artifact_from_before_fill_background_fills_with_black() -> None:
    rng = np.random.default_rng(9)
    method = AlignPatch(input_size=max(SIZE), compare_factor=1, fill_background=False)
    method.fit([_washer(*rng.uniform(-9, 9, 2), seed) for seed in range(4)], [], rng)
    state = method.state()
    del state["fill_background"]
    old = AlignPatch.from_state(state)
    assert not old.fill_background and AlignPatch().fill_background
    image = _washer(9, -9, 100)
    assert old.score(image)[0] == pytest.approx(method.score(image)[0], rel=1e-2)
