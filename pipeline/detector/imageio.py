"""Turning uploaded bytes into an RGB array a scoring method can use, or refusing them.

Every refusal is an `InvalidImageError` with a short `reason` code that the pipeline
records as INVALID. The policy is strict on purpose: LineSight accepts what a camera
sends, and refuses the rest visibly rather than converting it and judging it wrongly.

| reason | what was sent |
| --- | --- |
| `empty` | zero bytes |
| `not_an_image` | bytes Pillow cannot identify (text, HTML, a PDF named .jpg, ...) |
| `unsupported_format` | a real image in a format other than JPEG or PNG (GIF, WebP, TIFF, ...) |
| `animated` | an animated PNG (more than one frame) |
| `content_type_mismatch` | bytes of one format declared as another (a PNG sent as image/jpeg) |
| `unsupported_mode` | CMYK, palette, 16-bit or 1-bit pixels (print files, screenshots) |
| `too_large` | more than `MAX_PIXELS` pixels, judged from the header before decoding |
| `too_small` | a side shorter than `MIN_SIDE`, or far below the training resolution |
| `corrupt` | truncated or damaged data (checked in the JPEG markers and scans, then in decoding) |
| `off_size` | an aspect ratio far from the training images' (another camera or crop) |
| `greyscale` | a greyscale image for a model trained on colour images (`require_colour`) |

A content type that names no image format (empty, application/octet-stream) lets the
bytes decide. Accepted with a note in `DecodedImage.notes`: greyscale and alpha images
(converted to RGB, alpha dropped: `converted_from_<mode>`), a colour image for a model
trained on greyscale ones (made grey, as Pillow makes it, ITU-R 601-2 luma:
`converted_to_grey`), and EXIF orientation (applied:
`exif_orientation_<n>`), and a multi-picture JPEG (MPO: a phone's photo with a depth map
or a second view after it), as its first picture (`first_of_<n>_pictures`). Data after a
JPEG's end-of-image marker (a camera's `\r\n`, a phone's metadata trailer, a motion
photo's video) is ignored once the image before it is known to be complete
(`_check_scan_complete`).

JPEGs are decoded with Pillow's draft mode (reduced-scale DCT), so a 2000x1334 photo is
decoded at 1/2, 1/4 or 1/8 scale when the method only needs a few hundred pixels.
"""

from __future__ import annotations

import io
import threading
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from PIL.JpegImagePlugin import JpegImageFile

from pipeline.detector.base import InvalidImageError

MAX_PIXELS = 50_000_000
MIN_SIDE = 16
# A photo whose aspect ratio differs from the training images' by more than this factor
# comes from another camera set-up or crop; scoring it would be meaningless.
MAX_ASPECT_FACTOR = 1.25
ACCEPTED_FORMATS = ("JPEG", "PNG")
# What cameras send. Anything else is refused rather than converted: the model learnt from
# 8-bit camera frames, and a converted print file or screenshot would be judged wrongly.
ACCEPTED_MODES = ("RGB", "L", "RGBA", "LA")
_MODE_ADVICE = {
    "CMYK": "CMYK images come from print workflows, not cameras; send RGB",
    "P": "palette images (screenshots, diagrams) are not camera frames; send RGB",
    "PA": "palette images (screenshots, diagrams) are not camera frames; send RGB",
    "I;16": "16-bit images are not supported; send 8 bits per channel",
    "I;16B": "16-bit images are not supported; send 8 bits per channel",
    "I": "16/32-bit images are not supported; send 8 bits per channel",
    "1": "1-bit (black and white) images are not supported; send RGB or greyscale",
}
_CONTENT_TYPES = {
    "image/jpeg": "JPEG", "image/jpg": "JPEG", "image/pjpeg": "JPEG",
    "image/png": "PNG", "image/x-png": "PNG",
    "image/gif": "GIF", "image/webp": "WEBP", "image/tiff": "TIFF", "image/bmp": "BMP",
}
_ORIENTATION_TAG = 0x0112
_SWAPS_AXES = {5, 6, 7, 8}
GREYSCALE_MODES = ("L", "LA")
# libjpeg decodes blocks whose data is missing as flat mid-grey, without an error
_MISSING_BLOCK_GREY = 128
# Entropy-coded bytes (no 0xFF, so no marker) put where a JPEG's image data meets a marker,
# to see whether the decoder takes them in: it does only if the data stopped early. The
# leading 0x00 completes a stuffed 0xFF that a cut may have left at the end.
_FILLER = b"\x00" + bytes(np.random.default_rng(0).integers(0, 255, 256, dtype=np.uint8))


@dataclass(frozen=True)
class _JpegLayout:
    """Where a JPEG's image data starts (its first start-of-scan marker) and ends (the
    end-of-image marker that closes it), its frame's stored size, and each component's
    identifier and horizontal and vertical sampling factors."""

    scan: int
    end: int
    size: tuple[int, int]
    sampling: tuple[tuple[int, int, int], ...]


@dataclass(frozen=True)
class DecodedImage:
    """An RGB uint8 HxWx3 array plus what decoding had to do to get it."""

    rgb: np.ndarray
    format: str
    original_size: tuple[int, int]
    notes: tuple[str, ...] = ()


def in_colour(images: Iterable[DecodedImage]) -> bool:
    """Whether every one of `images` was a colour image (none was converted from greyscale):
    what a model trained on them records, so that detection can refuse greyscale images.

    >>> pixels = np.zeros((16, 16, 3), np.uint8)
    >>> in_colour([DecodedImage(pixels, "PNG", (16, 16)),
    ...            DecodedImage(pixels, "PNG", (16, 16), ("converted_from_rgba",))])
    True
    >>> in_colour([DecodedImage(pixels, "JPEG", (16, 16), ("converted_from_l",))])
    False
    """
    return not any(_was_grey(image) for image in images)


def in_grey(images: Iterable[DecodedImage]) -> bool:
    """Whether every one of `images` was a greyscale image: a model trained on them never
    saw colour, so detection turns a colour image grey for it (`decode`'s `to_grey`).

    >>> pixels = np.zeros((16, 16, 3), np.uint8)
    >>> in_grey([DecodedImage(pixels, "PNG", (16, 16), ("converted_from_l",)),
    ...          DecodedImage(pixels, "PNG", (16, 16), ("converted_from_la",))])
    True
    >>> in_grey([DecodedImage(pixels, "PNG", (16, 16), ("converted_from_l",)),
    ...          DecodedImage(pixels, "PNG", (16, 16))])
    False
    """
    found = [_was_grey(image) for image in images]
    return bool(found) and all(found)


def _was_grey(image: DecodedImage) -> bool:
    """Whether decoding converted `image` from a greyscale mode (its notes say so)."""
    return any(note in _FROM_GREY for note in image.notes)


_FROM_GREY = frozenset(f"converted_from_{mode.lower()}" for mode in GREYSCALE_MODES)


def content_type_format(content_type: str) -> str | None:
    """The image format a Content-Type names, or None when it names none.

    >>> content_type_format("image/jpeg; charset=binary")
    'JPEG'
    >>> content_type_format("application/octet-stream") is None
    True
    """
    return _CONTENT_TYPES.get(content_type.split(";")[0].strip().lower())


def fit_within(size: tuple[int, int], longest: int) -> tuple[int, int]:
    """(width, height) scaled so the longest side is `longest`, keeping the aspect ratio.

    >>> fit_within((2000, 1334), 256)
    (256, 171)
    >>> fit_within((576, 768), 256)
    (192, 256)
    """
    width, height = size
    scale = longest / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


Roi = tuple[float, float, float, float]


def parse_roi(text: str) -> Roi:
    """A region of interest from "x0,y0,x1,y1" fractions of width and height.

    >>> parse_roi("0.1, 0.2, 0.9, 1")
    (0.1, 0.2, 0.9, 1.0)
    >>> parse_roi("0.5,0,0.4,1")
    Traceback (most recent call last):
    ...
    ValueError: region of interest must be x0,y0,x1,y1 with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
    """
    try:
        x0, y0, x1, y1 = (float(part) for part in text.split(","))
    except ValueError:
        x0 = y0 = x1 = y1 = -1.0
    if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
        raise ValueError("region of interest must be x0,y0,x1,y1 with 0 <= x0 < x1 <= 1 "
                         "and 0 <= y0 < y1 <= 1")
    return x0, y0, x1, y1


def roi_box(size: tuple[int, int], roi: Roi) -> tuple[int, int, int, int]:
    """The pixel box (left, top, right, bottom) of `roi` in an image of `size`.

    >>> roi_box((200, 100), (0.25, 0.0, 0.75, 0.5))
    (50, 0, 150, 50)
    """
    width, height = size
    left, top = round(roi[0] * width), round(roi[1] * height)
    right = max(left + 1, round(roi[2] * width))
    bottom = max(top + 1, round(roi[3] * height))
    return left, top, right, bottom


def roi_size(size: tuple[int, int], roi: Roi) -> tuple[int, int]:
    """(width, height) of the region `roi` in an image of `size`."""
    left, top, right, bottom = roi_box(size, roi)
    return right - left, bottom - top


def aspect_is_off(size: tuple[int, int], expected_aspect: float,
                  factor: float = MAX_ASPECT_FACTOR) -> bool:
    """Whether width/height differs from `expected_aspect` by more than `factor`.

    >>> aspect_is_off((2000, 1334), 1.5)
    False
    >>> aspect_is_off((1334, 2000), 1.5)
    True
    """
    ratio = (size[0] / size[1]) / expected_aspect
    return max(ratio, 1.0 / ratio) > factor


def decode(image_bytes: bytes, content_type: str = "", *, longest_side: int | None = None,
           expected_aspect: float | None = None, min_longest: int | None = None,
           roi: Roi | None = None, require_colour: bool = False, to_grey: bool = False,
           enlarge: bool = True, modes: Iterable[str] = ACCEPTED_MODES) -> DecodedImage:
    """Decode `image_bytes` to RGB, resized so the longest side is `longest_side` (when given;
    with `enlarge=False`, a smaller image keeps its size, as a picture for people should).

    `expected_aspect` (width/height of the training images) refuses other aspect ratios;
    `min_longest` refuses images whose longest side is shorter (too little detail).
    `roi` crops the upright image to a region of interest (fractions of width and height)
    before resizing, so `longest_side` applies to the region. `require_colour` refuses
    greyscale images (for a model that learnt from colour ones); `to_grey` turns a colour
    image grey (for a model that learnt from greyscale ones, and so never saw colour: it
    scored every colour photo of a normal part as anomalous). `modes` are the pixel modes
    accepted (a report also shows the palette PNGs of heatmaps).

    Raises `InvalidImageError` for anything in the table at the top of this module.
    """
    if not image_bytes:
        raise InvalidImageError("empty", "the upload is empty (0 bytes)")
    image = _open(image_bytes)
    _check_kind(image, content_type, tuple(modes))
    layout = (_check_jpeg_markers(image, image_bytes) if isinstance(image, JpegImageFile)
              else None)
    if require_colour and image.mode in GREYSCALE_MODES:
        raise InvalidImageError(
            "greyscale", "a greyscale image, but the model was trained on colour images: "
            "another camera? Send colour images, or train a model on greyscale ones")
    fmt = _format(image)
    _check_pixels(image)  # before reading EXIF, which loads a PNG without an eXIf chunk
    orientation = _orientation(image)
    upright = _check_size(image, orientation, expected_aspect, min_longest)
    draft: tuple[int, int] | None = None
    if fmt == "JPEG" and longest_side is not None:
        region = roi_size(upright, roi) if roi else upright
        scale = max(region) / longest_side
        # Rounded down: Pillow picks the largest DCT scale that keeps both sides at least
        # this size, so rounding the short side up (1334 / 4 = 333.5 -> 334) would cost a
        # decode at twice the size and a resize.
        target = (max(1, int(upright[0] / scale + 1e-6)), max(1, int(upright[1] / scale + 1e-6)))
        draft = (target[1], target[0]) if orientation in _SWAPS_AXES else target
        image.draft("RGB", draft)
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImageError("corrupt", f"the image is truncated or damaged: {exc}") from None
    if layout is not None:
        _check_scan_complete(image, image_bytes, layout, draft)

    notes: list[str] = []
    if image.format == "MPO":
        notes.append(f"first_of_{getattr(image, 'n_frames', 1)}_pictures")
    if orientation not in (None, 1):
        image = ImageOps.exif_transpose(image)
        notes.append(f"exif_orientation_{orientation}")
    if to_grey and image.mode not in GREYSCALE_MODES:
        notes.append("converted_to_grey")
        image = image.convert("L").convert("RGB")
    if image.mode != "RGB":
        notes.append(f"converted_from_{image.mode.lower()}")
        image = image.convert("RGB")
    if roi is not None:
        image = image.crop(roi_box(image.size, roi))
    if longest_side is not None and max(image.size) != longest_side and (
            enlarge or max(image.size) > longest_side):
        image = image.resize(fit_within(image.size, longest_side), Image.Resampling.BILINEAR,
                             reducing_gap=2.0)
    return DecodedImage(rgb=np.asarray(image, dtype=np.uint8), format=fmt,
                        original_size=upright, notes=tuple(notes))


def jpeg_markers(data: bytes) -> tuple[str, int, int]:
    """What is structurally wrong with a JPEG's markers ('' if nothing found), where its
    first start-of-scan marker is, and where the end-of-image marker that closes the first
    image is (-1 where there is none).

    Walks the header segments to the first start-of-scan, then finds the first end-of-image
    marker after it. Entropy-coded data escapes every 0xFF byte, so that marker ends the
    image data; whether the data before it is complete, decoding tells
    (`_check_scan_complete`).

    >>> jpeg_markers(bytes.fromhex("ffd8 ffda 0002 1234 ffd9"))
    ('', 2, 8)
    >>> jpeg_markers(bytes.fromhex("ffd8 ffda 0002 1234"))
    ('no end-of-image marker: the file is cut short', 2, -1)
    """
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return f"expected a marker at byte {position}", -1, -1
        marker = data[position + 1]
        if marker == 0xFF:
            position += 1
            continue
        if marker == 0xDA:
            break
        position += 2 + int.from_bytes(data[position + 2:position + 4], "big")
    else:
        return "no image data (start of scan) found", -1, -1
    end = _first_marker(data, 0xD9, position)
    if end < 0:
        return "no end-of-image marker: the file is cut short", position, -1
    return "", position, end


def entropy_stops(data: bytes, scan: int, end: int) -> list[int]:
    """Where entropy-coded data meets a marker, from the start-of-scan marker at `scan` to
    the end-of-image marker at `end`: before each restart marker and where each scan ends
    (before any 0xFF fill bytes). Markers inside segments between scans (tables, the next
    scan's header) are walked over by their lengths.

    >>> scan = bytes.fromhex("ffda 0003 00 1234 ffd0 56 ffff ffc4 0004 ffd0 ffda 0002 78 ffd9")
    >>> entropy_stops(scan, 0, len(scan) - 2)
    [7, 10, 23]
    """
    stops: list[int] = []
    for at, _marker, data_start in _markers(data, scan, end):
        if data_start >= 0:
            before = at
            while before > data_start and data[before - 1] == 0xFF:
                before -= 1
            stops.append(before)
    return stops


def progressive_gaps(data: bytes, scan: int, end: int, components: Iterable[int]) -> str:
    """What a progressive JPEG's scans leave out ('' if nothing), from the start-of-scan
    marker at `scan` to the end-of-image marker at `end`, for the frame's `components`
    (their identifiers).

    A progressive JPEG sends each component's 64 DCT coefficients in several scans: bands
    of them (spectral selection), the high bits first (successive approximation, down to
    bit 0 in the last scan of each band). A file cut short and closed with an end-of-image
    marker decodes without an error, blurred where the later scans are missing. Every
    coefficient of every component must reach bit 0 in some scan.

    >>> dc = bytes.fromhex("ffda 000c 03 0100 0211 0311 00 00 00 ab")  # DC, all three
    >>> luma = "ffda 0008 01 0100 01 3f {} cd"  # AC of component 1, down to bit 0 or 1
    >>> image = dc + bytes.fromhex(luma.format("00")) + bytes.fromhex("ffd9")
    >>> progressive_gaps(image, 0, len(image) - 2, [1, 2, 3])
    'components 2 and 3 lack coefficients 1-63'
    >>> image = dc + bytes.fromhex(luma.format("01")) + bytes.fromhex("ffd9")
    >>> progressive_gaps(image, 0, len(image) - 2, [1])
    'component 1 lacks the last bit of coefficients 1-63'
    """
    final = {component: np.zeros(64, bool) for component in components}
    coded = {component: np.zeros(64, bool) for component in final}
    for at, marker, _data_start in _markers(data, scan, end):
        if marker != 0xDA:
            continue
        selectors, first, last, approximation = _scan_header(data, at)
        for component in selectors:
            if component in final:
                coded[component][first:last + 1] = True
                final[component][first:last + 1] |= approximation & 0x0F == 0
    missing: dict[str, list[str]] = {}
    for component, done in final.items():
        if not done.all():
            absent = ~coded[component]
            gaps = absent if absent.any() else ~done
            what = "" if absent.any() else "the last bit of "
            missing.setdefault(what + _bands(np.flatnonzero(gaps)), []).append(str(component))
    phrases = []
    for what, ids in missing.items():
        if len(ids) == 1:
            phrases.append(f"component {ids[0]} lacks {what}")
        else:
            phrases.append(f"components {', '.join(ids[:-1])} and {ids[-1]} lack {what}")
    return "; ".join(phrases)


def missing_restarts(data: bytes, end: int, size: tuple[int, int],
                     sampling: Iterable[tuple[int, int, int]]) -> str:
    """Which scan of a JPEG ends before its last restart interval ('' if none), up to the
    end-of-image marker at `end`. `size` is the frame's width and height, `sampling` each
    component's identifier and horizontal and vertical sampling factors.

    Where a restart interval is defined, the encoder writes a restart marker after every
    that many MCUs (units of 8x8 blocks), but not after the last: a scan holds one marker
    fewer than it has intervals. A file cut short and closed with an end-of-image marker
    holds fewer, even where the cut falls exactly between two intervals, so that no
    interval stops part way (which is what `_check_scan_complete` looks for).

    >>> header = bytes.fromhex("ffd8 ffdd 0004 0002 ffda 0008 01 0100 00 3f 00")
    >>> scan = header + bytes.fromhex("12 ffd0 34 ffd1 56 ffd9")  # 3 intervals of 2 MCUs
    >>> missing_restarts(scan, len(scan) - 2, (48, 8), [(1, 1, 1)])  # 6 MCUs: all there
    ''
    >>> missing_restarts(scan, len(scan) - 2, (64, 8), [(1, 1, 1)])  # 8 MCUs: 4 intervals
    'scan 1 ends after 3 of its 4 restart intervals'
    """
    factors = {component: (across, down) for component, across, down in sampling}
    widest = max(across for across, _down in factors.values())
    tallest = max(down for _across, down in factors.values())
    width, height = size
    interval, scans, expected, found = 0, 0, 0, 0
    for at, marker, data_start in _markers(data, 2, end):
        if data_start >= 0 and 0xD0 <= marker <= 0xD7:
            found += 1
            continue
        if data_start >= 0 and found < expected:
            return f"scan {scans} ends after {found + 1} of its {expected + 1} restart intervals"
        if marker == 0xDD:
            interval = int.from_bytes(data[at + 4:at + 6], "big")
        elif marker == 0xDA:
            scans, found = scans + 1, 0
            selectors = _scan_header(data, at)[0]
            if len(selectors) == 1:  # one component's blocks, one by one
                across, down = factors.get(selectors[0], (widest, tallest))
                units = (_ceil_div(_ceil_div(width * across, widest), 8)
                         * _ceil_div(_ceil_div(height * down, tallest), 8))
            else:  # interleaved: MCUs of widest x tallest blocks
                units = _ceil_div(width, 8 * widest) * _ceil_div(height, 8 * tallest)
            expected = _ceil_div(units, interval) - 1 if interval else 0
    return ""


def _scan_header(data: bytes, at: int) -> tuple[bytes, int, int, int]:
    """The start-of-scan segment at `at`: its component selectors, the first and last
    coefficient of its band, and its successive approximation byte (zeros where the
    segment is cut short)."""
    count = data[at + 4] if at + 4 < len(data) else 0
    fields = data[at + 5:at + 8 + 2 * count].ljust(2 * count + 3, b"\0")
    return fields[:2 * count:2], fields[2 * count], fields[2 * count + 1], fields[2 * count + 2]


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def _bands(coefficients: np.ndarray) -> str:
    """'coefficients 1-5, 9' for the indices [1, 2, 3, 4, 5, 9]."""
    runs = np.split(coefficients, np.flatnonzero(np.diff(coefficients) > 1) + 1)
    words = [f"{run[0]}-{run[-1]}" if len(run) > 1 else f"{run[0]}" for run in runs]
    return f"coefficient{'s' if len(coefficients) > 1 else ''} {', '.join(words)}"


def _markers(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """Each marker from the one at `start` (the first start-of-scan, or the first segment
    after the start-of-image) to the end-of-image marker at `end`, walking over segments
    (tables, scan headers) by their lengths: its position, the marker, and where the
    entropy-coded data that it ends began (-1 where it ends none)."""
    octets = np.frombuffer(data, np.uint8)
    found = np.flatnonzero(octets[start:end + 2] == 0xFF) + start  # the last byte is 0xD9
    markers = found[(octets[found + 1] != 0x00) & (octets[found + 1] != 0xFF)]
    resume, in_scan = start, False  # where the next segment starts; inside entropy data?
    for at in (int(position) for position in markers):
        if at < resume:
            continue  # inside a segment
        marker = data[at + 1]
        yield at, marker, resume if in_scan else -1
        if in_scan and 0xD0 <= marker <= 0xD7:
            resume = at + 2
            continue
        if marker == 0xD9:
            return
        in_scan = marker == 0xDA
        standalone = 0xD0 <= marker <= 0xD8 or marker == 0x01
        resume = at + 2 + (0 if standalone else int.from_bytes(data[at + 2:at + 4], "big"))


def plain_trailer(trailer: bytes) -> bool:
    """Whether what follows a JPEG's end-of-image marker is known not to hide damage:
    nothing, padding, or another JPEG (a multi-picture file's second image).

    >>> plain_trailer(b"") and plain_trailer(bytes(64)) and plain_trailer(b"\\xff\\xd8\\xff")
    True
    >>> plain_trailer(b"\\r\\n")
    False
    """
    return not trailer or trailer.startswith(b"\xff\xd8") or not trailer.strip(b"\x00\xff")


def _first_marker(data: bytes, marker: int, start: int) -> int:
    """Index of the first 0xFF `marker` pair at or after `start`, or -1: `bytes.find` on
    the same, four times faster on photo-sized files, which are full of 0xFF bytes.

    >>> _first_marker(bytes.fromhex("ff00 d9ff ffd9 00"), 0xD9, 0)
    4
    >>> _first_marker(bytes.fromhex("ffd9"), 0xD9, 1)
    -1
    """
    pixels = np.frombuffer(data, np.uint8)
    hits = np.flatnonzero(pixels[start + 1:] == marker) + start + 1
    hits = hits[pixels[hits - 1] == 0xFF]
    return int(hits[0]) - 1 if len(hits) else -1


def _format(image: Image.Image) -> str:
    """The image's format, a multi-picture JPEG (MPO) counted as the JPEG it starts with:
    phones write one for a photo with a depth map or a second view after it, and Pillow
    reads the first picture."""
    return "JPEG" if image.format == "MPO" else str(image.format)


def _check_kind(image: Image.Image, content_type: str, modes: tuple[str, ...]) -> None:
    """Refuse formats, frames, content types and pixel modes a camera would not send."""
    fmt = _format(image)
    if fmt not in ACCEPTED_FORMATS:
        raise InvalidImageError(
            "unsupported_format",
            f"{image.format} images are not supported; send JPEG or PNG")
    if fmt == "PNG" and getattr(image, "n_frames", 1) > 1:
        raise InvalidImageError("animated", "animated images are not supported")
    claimed = content_type_format(content_type) if content_type else None
    if claimed is not None and claimed != fmt:
        raise InvalidImageError(
            "content_type_mismatch",
            f"the bytes are {fmt} but the upload says {content_type}: "
            "a misconfigured camera or gateway?")
    if image.mode not in modes:
        raise InvalidImageError("unsupported_mode", _MODE_ADVICE.get(
            image.mode, f"{image.mode} pixels are not supported; send 8-bit RGB or greyscale"))


def _check_jpeg_markers(image: JpegImageFile, image_bytes: bytes) -> _JpegLayout:
    """Refuse a JPEG whose markers are damaged, or a progressive one whose scans stop
    early; where its image data starts and ends."""
    damage, scan, end = jpeg_markers(image_bytes)
    layout = _JpegLayout(scan, end, image.size,
                         tuple((component, across, down)
                               for component, across, down, _table in image.layer))
    if not damage and image.info.get("progressive"):
        # cut in its last scan, a progressive JPEG decodes nearly whole, with no grey to
        # give it away, so these are looked at in every one
        gaps = progressive_gaps(image_bytes, scan, end, (layer[0] for layer in layout.sampling))
        damage = _short_of_restarts(image_bytes, layout) or gaps and (
            f"its progressive scans stop early, so it would decode blurred: {gaps} (cut "
            "short and closed by a marker?)")
    if damage:
        raise InvalidImageError("corrupt", f"the JPEG is damaged: {damage}")
    return layout


def _short_of_restarts(image_bytes: bytes, layout: _JpegLayout) -> str:
    """Where a restart interval is defined, which scan holds too few ('' if none)."""
    if b"\xff\xdd" not in image_bytes[:layout.scan]:
        return ""
    short = missing_restarts(image_bytes, layout.end, layout.size, layout.sampling)
    return short and f"its image data stops early: {short} (cut short and closed by a marker?)"


def _check_scan_complete(image: Image.Image, image_bytes: bytes, layout: _JpegLayout,
                         draft: tuple[int, int] | None) -> None:
    """Refuse a JPEG whose image data stops before its last block.

    A file cut short and then closed with an end-of-image marker decodes without an error:
    libjpeg fills the missing blocks with flat grey, and Pillow does not pass its warning
    on. So the image is decoded once more with entropy-coded filler wherever its data meets
    a marker (`entropy_stops`). If the data was complete, the decoder never reads the
    filler and the pixels are the same; if not, it decodes the filler into the missing
    blocks. That second decode is done only when there is cause: the last pixels are that
    grey (a baseline JPEG cut short), or something other than padding follows the marker
    (where the rest of damaged data would be, and where cameras and phones put harmless
    trailers). A scan short of restart intervals (`missing_restarts`) is refused first,
    without decoding: where a cut falls exactly between two, no interval stops part way,
    and the filler would not be read.
    """
    scan, end = layout.scan, layout.end
    width, height = image.size
    corner = np.asarray(image.crop((width - 2, height - 2, width, height)))
    if not (corner == _MISSING_BLOCK_GREY).all() and plain_trailer(image_bytes[end + 2:]):
        return
    # a progressive JPEG's restarts were counted before decoding
    short = "" if image.info.get("progressive") else _short_of_restarts(image_bytes, layout)
    if short:
        raise InvalidImageError("corrupt", f"the JPEG is damaged: {short}")
    pieces, taken = [], 0
    for stop in entropy_stops(image_bytes, scan, end):
        pieces += [image_bytes[taken:stop], _FILLER]
        taken = stop
    again = Image.open(io.BytesIO(b"".join([*pieces, image_bytes[taken:end + 2]])))
    if draft is not None:
        again.draft("RGB", draft)
    try:
        again.load()
    except (OSError, SyntaxError, ValueError):
        complete = False
    else:
        complete = np.array_equal(np.asarray(image), np.asarray(again))
    if not complete:
        rest = "blurred" if image.info.get("progressive") else "as flat grey"
        raise InvalidImageError(
            "corrupt", "the JPEG is damaged: its image data stops early (cut short or "
            f"overwritten, and closed by a marker); the rest would decode {rest}")


def _check_pixels(image: Image.Image) -> None:
    """Refuse bombs and slivers from the header alone. Pillow's own bomb check starts at
    89 megapixels, and reading a PNG's EXIF decodes it whole: a 60-megapixel PNG of a few
    kilobytes would cost hundreds of megabytes before `MAX_PIXELS` refused it."""
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise InvalidImageError(
            "too_large", f"{width}x{height} is more than {MAX_PIXELS // 1_000_000} megapixels")
    if min(width, height) < MIN_SIDE:
        raise InvalidImageError("too_small", f"{width}x{height} is too small to inspect")


def _check_size(image: Image.Image, orientation: int | None, expected_aspect: float | None,
                min_longest: int | None) -> tuple[int, int]:
    """The upright (width, height) from the header, refusing odd sizes."""
    width, height = image.size
    upright = (height, width) if orientation in _SWAPS_AXES else (width, height)
    if expected_aspect is not None and aspect_is_off(upright, expected_aspect):
        raise InvalidImageError(
            "off_size",
            f"{upright[0]}x{upright[1]} has aspect ratio {upright[0] / upright[1]:.2f}, far from "
            f"the training images' {expected_aspect:.2f}: another camera or crop?")
    if min_longest is not None and max(upright) < min_longest:
        raise InvalidImageError(
            "too_small",
            f"{upright[0]}x{upright[1]} is too small: the model needs at least {min_longest} px")
    return upright


# `warnings.catch_warnings` saves and restores the process's warning filters, and threads
# that do so across each other (training decodes in a pool) can leave one's "error" filter
# installed for good, or lift it under another. Opening reads only the header: serialising
# it costs nothing.
_OPENING = threading.Lock()


def _open(image_bytes: bytes) -> Image.Image:
    try:
        with _OPENING, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(image_bytes))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidImageError(
            "too_large", f"the image is more than {MAX_PIXELS // 1_000_000} megapixels") from None
    except UnidentifiedImageError:
        raise InvalidImageError("not_an_image", "the bytes are not a recognisable image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImageError("corrupt", f"the image header is damaged: {exc}") from None
    return image


def _orientation(image: Image.Image) -> int | None:
    try:
        value = image.getexif().get(_ORIENTATION_TAG)
    except (OSError, SyntaxError, ValueError):
        return None
    return value if isinstance(value, int) and 1 <= value <= 8 else None
