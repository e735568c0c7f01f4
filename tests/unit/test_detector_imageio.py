"""Decoding uploads: what is refused as INVALID (and why), what is accepted and noted."""

from __future__ import annotations

import io
import struct
import sys
import threading
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from pipeline.detector import InvalidImageError
from pipeline.detector.imageio import decode


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _photo(size: tuple[int, int] = (96, 64), mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels).convert(mode)


def _jpeg(size: tuple[int, int] = (96, 64), **options: object) -> bytes:
    return _encode(_photo(size), "JPEG", quality=90, **options)


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (valid CRC), with no pixel data to speak of."""
    real = _encode(Image.new("L", (4, 4)), "PNG")
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    patched = struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return real[:8] + patched + real[8 + 25:]


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A JPEG whose SOF0 header claims width x height."""
    data = bytearray(_jpeg((16, 16)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (32, 32), color) for color in ("red", "blue")]
    return _encode(frames[0], fmt, save_all=True, append_images=frames[1:])


def _overwritten_scan() -> bytes:
    data = _jpeg((256, 256))
    start = data.index(b"\xff\xda") + 20
    return data[:start] + b"\xff\xd0\xff\xd9\xff\x00" * ((len(data) - start) // 6)


def _cut_and_closed(data: bytes, fraction: float = 0.6) -> bytes:
    """A JPEG cut short and closed with an end-of-image marker: Pillow decodes it without
    an error, the missing part flat grey."""
    return data[:int(len(data) * fraction)] + b"\xff\xd9"


def _early_end_marker() -> bytes:
    """An end-of-image marker in the middle of the image data (a flipped byte), the rest
    of the data after it."""
    data = _jpeg((256, 256))
    middle = len(data) // 2
    return data[:middle] + b"\xff\xd9" + data[middle:]


# What cameras and phones append after the end-of-image marker of a complete image.
CRLF = b"\r\n"
SAMSUNG_TRAILER = (b"\x00\x00\x01\x0a\x0e\x00\x00\x00Image_UTC_Data1700000000000"
                   b"SEFH\x6b\x00\x00\x00\x01\x00\x00\x00" + struct.pack("<I", 36) + b"SEFT")
# a motion photo's video: an MP4 whose bytes happen to hold JPEG markers too
MOTION_PHOTO_VIDEO = (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
                      + struct.pack(">I", 8 + 1024) + b"mdat" + bytes(range(256)) * 3
                      + b"\xff\xd9\xff\xda" + bytes(252))


def _multi_picture() -> bytes:
    """A multi-picture JPEG (MPO), as phones write a photo with a depth map after it."""
    return _encode(_photo(), "MPO", quality=90, save_all=True,
                   append_images=[_photo((48, 32), "L")])


def _with_orientation(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _encode(_photo((200, 100)), "JPEG", exif=exif.tobytes())


REFUSED = [
    # zero bytes: an upload that lost its body
    pytest.param(b"", "image/jpeg", "empty", id="empty"),
    # an HTML error page saved as .jpg by a camera gateway
    pytest.param(b"<html><body>502 Bad Gateway</body></html>", "image/jpeg", "not_an_image",
                 id="html-named-jpg"),
    # plain text
    pytest.param(b"hello, not an image", "text/plain", "not_an_image", id="text"),
    # a JPEG cut off half way (interrupted upload)
    pytest.param(_jpeg((256, 256))[:1500], "image/jpeg", "corrupt", id="truncated-jpeg"),
    # a JPEG cut off inside its header
    pytest.param(_jpeg()[:40], "image/jpeg", "corrupt", id="header-only-jpeg"),
    # animated GIF: not a format we accept at all
    pytest.param(_animated("GIF"), "image/gif", "unsupported_format", id="animated-gif"),
    # animated PNG (APNG): a PNG, but which frame would we judge?
    pytest.param(_animated("PNG"), "image/png", "animated", id="animated-png"),
    # BMP: a real image in a format cameras here do not send
    pytest.param(_encode(_photo(), "BMP"), "image/bmp", "unsupported_format", id="bmp"),
    # a 100-megapixel PNG header: refused before a single pixel is decoded
    pytest.param(_png_claiming(10_000, 10_000), "image/png", "too_large", id="png-bomb"),
    # 60 MP claimed by a JPEG header, under Pillow's own bomb limit but over ours
    pytest.param(_jpeg_claiming(8_000, 7_500), "image/jpeg", "too_large", id="jpeg-60mp"),
    # a thumbnail far too small to inspect
    pytest.param(_encode(_photo((8, 8)), "PNG"), "image/png", "too_small", id="tiny"),
    # floating-point greyscale saved as TIFF: not a format we accept
    pytest.param(_encode(Image.new("F", (32, 32)), "TIFF"), "image/tiff",
                 "unsupported_format", id="float-tiff"),
    # a PNG uploaded as image/jpeg: a misconfigured gateway, made visible
    pytest.param(_encode(_photo(), "PNG"), "image/jpeg", "content_type_mismatch",
                 id="png-as-jpeg"),
    # a JPEG uploaded as image/png
    pytest.param(_jpeg(), "image/png", "content_type_mismatch", id="jpeg-as-png"),
    # CMYK JPEG: a print-workflow file, not a camera frame
    pytest.param(_encode(_photo(mode="CMYK"), "JPEG"), "image/jpeg", "unsupported_mode",
                 id="cmyk-jpeg"),
    # palette PNG: a screenshot or diagram
    pytest.param(_encode(_photo(mode="P"), "PNG"), "image/png", "unsupported_mode",
                 id="palette-png"),
    # 16-bit greyscale PNG: refused rather than rescaled behind the model's back
    pytest.param(_encode(Image.fromarray(np.full((64, 96), 40000, np.uint16)), "PNG"),
                 "image/png", "unsupported_mode", id="16bit-png"),
    # 1-bit black-and-white PNG
    pytest.param(_encode(_photo(mode="1"), "PNG"), "image/png", "unsupported_mode",
                 id="bilevel-png"),
    # scan data overwritten by markers: Pillow would decode it as grey without complaint
    pytest.param(_overwritten_scan(), "image/jpeg", "corrupt", id="overwritten-scan"),
    # cut short and closed with an end-of-image marker: the rest would be flat grey
    pytest.param(_cut_and_closed(_jpeg((256, 256))), "image/jpeg", "corrupt",
                 id="cut-and-closed"),
    pytest.param(_cut_and_closed(_encode(_photo((256, 256), "L"), "JPEG")), "image/jpeg",
                 "corrupt", id="cut-and-closed-greyscale"),
    # with restart markers, the decoder resynchronises at each: still grey after the cut
    pytest.param(_cut_and_closed(_jpeg((256, 256), restart_marker_rows=1)), "image/jpeg",
                 "corrupt", id="cut-and-closed-restart-markers"),
    # cut, closed, and a camera's line ending after it
    pytest.param(_cut_and_closed(_jpeg((256, 256))) + CRLF, "image/jpeg", "corrupt",
                 id="cut-and-closed-crlf"),
    # a progressive JPEG cut and closed decodes blurred, not grey: its scans stop early
    pytest.param(_cut_and_closed(_jpeg((256, 256), progressive=True), 0.3), "image/jpeg",
                 "corrupt", id="cut-and-closed-progressive"),
    # cut inside its last scan, every coefficient has come in once: the data after its
    # marker is what gives it away
    pytest.param(_cut_and_closed(_jpeg((256, 256), progressive=True), 0.9) + CRLF,
                 "image/jpeg", "corrupt", id="cut-and-closed-progressive-crlf"),
    # an end-of-image marker half way through the image data, the rest after it
    pytest.param(_early_end_marker(), "image/jpeg", "corrupt", id="early-end-marker"),
]


@pytest.mark.parametrize(("data", "content_type", "reason"), REFUSED)
def test_refuses_unusable_bytes_with_a_reason(data: bytes, content_type: str,
                                              reason: str) -> None:
    with pytest.raises(InvalidImageError) as caught:
        decode(data, content_type, longest_side=64)
    assert caught.value.reason == reason
    assert str(caught.value)


ACCEPTED = [
    # the normal case: a JPEG sent as a JPEG
    pytest.param(_jpeg(), "image/jpeg", (), id="jpeg"),
    # a PNG sent as a PNG
    pytest.param(_encode(_photo(), "PNG"), "image/png", (), id="png"),
    # no useful content type at all: the bytes decide
    pytest.param(_jpeg(), "application/octet-stream", (), id="octet-stream"),
    pytest.param(_jpeg(), "", (), id="no-content-type"),
    # a JPEG with trailing padding after the end-of-image marker (some cameras do this)
    pytest.param(_jpeg() + b"\x00" * 64, "image/jpeg", (), id="jpeg-padded"),
    # data after the end-of-image marker of a complete image: a line ending, a phone's
    # metadata trailer, a motion photo's video; Pillow decodes each the same
    pytest.param(_jpeg() + CRLF, "image/jpeg", (), id="jpeg-crlf"),
    pytest.param(_jpeg() + SAMSUNG_TRAILER, "image/jpeg", (), id="jpeg-samsung-trailer"),
    pytest.param(_jpeg() + MOTION_PHOTO_VIDEO, "image/jpeg", (), id="jpeg-motion-photo"),
    pytest.param(_jpeg(progressive=True) + MOTION_PHOTO_VIDEO, "image/jpeg", (),
                 id="progressive-motion-photo"),
    pytest.param(_jpeg(restart_marker_blocks=2) + CRLF, "image/jpeg", (),
                 id="restart-markers-crlf"),
    # flat mid-grey to the last pixel, as a cut-short image ends: looked at twice, complete
    pytest.param(_encode(Image.new("RGB", (96, 64), (128, 128, 128)), "JPEG"), "image/jpeg",
                 (), id="flat-grey-jpeg"),
    # a phone's photo with its depth map after it: the first picture is the photo
    pytest.param(_multi_picture(), "image/jpeg", ("first_of_2_pictures",),
                 id="multi-picture-jpeg"),
    # RGBA PNG: alpha dropped
    pytest.param(_encode(_photo(mode="RGBA"), "PNG"), "image/png", ("converted_from_rgba",),
                 id="rgba-png"),
    # greyscale JPEG (monochrome line cameras): replicated to three channels
    pytest.param(_encode(_photo(mode="L"), "JPEG"), "image/jpeg", ("converted_from_l",),
                 id="grey-jpeg"),
]


@pytest.mark.parametrize(("data", "content_type", "notes"), ACCEPTED)
def test_accepts_what_cameras_send(data: bytes, content_type: str,
                                   notes: tuple[str, ...]) -> None:
    decoded = decode(data, content_type, longest_side=48)
    assert decoded.format in ("JPEG", "PNG")
    assert decoded.rgb.dtype == np.uint8
    assert decoded.rgb.shape == (32, 48, 3)
    assert decoded.notes == notes


def test_a_multi_picture_jpeg_decodes_as_its_first_picture() -> None:
    alone = decode(_jpeg(), "image/jpeg", longest_side=48)
    assert np.array_equal(decode(_multi_picture(), "", longest_side=48).rgb, alone.rgb)
    with pytest.raises(InvalidImageError, match="the bytes are JPEG") as caught:
        decode(_multi_picture(), "image/png")
    assert caught.value.reason == "content_type_mismatch"


@pytest.mark.parametrize(("orientation", "shape"), [
    (1, (100, 200, 3)),  # upright: as stored
    (3, (100, 200, 3)),  # upside down: rotated 180, same shape
    (6, (200, 100, 3)),  # camera held on its side: width and height swap
    (8, (200, 100, 3)),  # the other side
])
def test_exif_orientation_is_honoured(orientation: int, shape: tuple[int, ...]) -> None:
    decoded = decode(_with_orientation(orientation), "image/jpeg")
    assert decoded.rgb.shape == shape
    assert decoded.original_size == (shape[1], shape[0])


def test_draft_decode_reaches_the_requested_size() -> None:
    decoded = decode(_jpeg((1024, 768)), "image/jpeg", longest_side=128)
    assert decoded.rgb.shape == (96, 128, 3)
    assert decoded.original_size == (1024, 768)


def test_draft_decode_uses_the_smallest_dct_scale_for_an_odd_short_side() -> None:
    """2000x1334 at 500 px: a 1/4-scale decode (500x334), not a 1/2-scale one resized
    (1334 / 4 is 333.5, which must not make Pillow fall back to 1/2)."""
    data = _jpeg((2000, 1334))
    quarter = Image.open(io.BytesIO(data))
    quarter.draft("RGB", (500, 333))
    assert quarter.size == (500, 334)
    decoded = decode(data, "image/jpeg", longest_side=500)
    assert np.array_equal(decoded.rgb, np.asarray(quarter.convert("RGB")))


@pytest.mark.parametrize(("size", "refused"), [
    ((300, 200), False),  # the trained aspect ratio
    ((330, 200), False),  # a slightly different crop
    ((200, 300), True),   # portrait where the line shoots landscape
    ((600, 200), True),   # a panorama
])
def test_off_size_images_are_refused(size: tuple[int, int], refused: bool) -> None:
    data = _encode(_photo(size), "PNG")
    if refused:
        with pytest.raises(InvalidImageError, match="aspect") as caught:
            decode(data, "image/png", longest_side=64, expected_aspect=1.5)
        assert caught.value.reason == "off_size"
    else:
        assert decode(data, "image/png", longest_side=64, expected_aspect=1.5).rgb.shape[1] == 64


def test_too_small_for_the_model() -> None:
    with pytest.raises(InvalidImageError) as caught:
        decode(_encode(_photo((40, 30)), "PNG"), "image/png", longest_side=256,
               min_longest=128)
    assert caught.value.reason == "too_small"


def test_region_of_interest_is_cropped_before_resizing() -> None:
    pixels = np.zeros((100, 200, 3), np.uint8)
    pixels[:, 100:] = 255  # right half white
    data = _encode(Image.fromarray(pixels), "PNG")
    decoded = decode(data, "image/png", longest_side=50, roi=(0.5, 0.0, 1.0, 1.0))
    assert decoded.rgb.shape == (50, 50, 3)
    assert decoded.rgb.min() == 255


def test_region_of_interest_with_jpeg_draft_keeps_enough_resolution() -> None:
    decoded = decode(_jpeg((1600, 1200)), "image/jpeg", longest_side=200,
                     roi=(0.0, 0.0, 0.25, 0.25))
    assert decoded.rgb.shape == (150, 200, 3)


@pytest.mark.parametrize("longest_side", [None, 200, 64, 32])  # full size and DCT drafts
@pytest.mark.parametrize("data", [
    _cut_and_closed(_jpeg((256, 256)), 0.3),
    _cut_and_closed(_jpeg((256, 256), optimize=True), 0.9),
    _cut_and_closed(_jpeg((256, 256), subsampling=0), 0.6),  # 4:4:4, 8x8 blocks
    _early_end_marker() + SAMSUNG_TRAILER,
], ids=["cut-at-30%", "optimized-cut-at-90%", "444-cut-at-60%", "early-marker-trailer"])
def test_image_data_that_stops_early_is_refused_at_every_decode_size(
        data: bytes, longest_side: int | None) -> None:
    with pytest.raises(InvalidImageError, match="stops early") as caught:
        decode(data, "image/jpeg", longest_side=longest_side)
    assert caught.value.reason == "corrupt"


def _cut_before_a_restart_marker(data: bytes) -> bytes:
    """A JPEG cut exactly between two restart intervals (before the middle restart
    marker) and closed: its last rows decode flat grey, but no interval stops part way,
    so decoding it again with filler where its data meets a marker finds nothing
    missing."""
    markers = [at for at in range(len(data) - 1)
               if data[at] == 0xFF and 0xD0 <= data[at + 1] <= 0xD7]
    return data[:markers[len(markers) // 2]] + b"\xff\xd9"


@pytest.mark.parametrize("longest_side", [None, 64])  # full size and a DCT draft
@pytest.mark.parametrize(("data", "gap"), [
    (_cut_before_a_restart_marker(_jpeg((256, 256), restart_marker_blocks=7)),
     "scan 1 ends after 19 of its 37 restart intervals"),
    # cut in a progressive JPEG's last scan: it holds fewer restart markers than blocks
    (_cut_and_closed(_jpeg((256, 256), progressive=True, restart_marker_rows=1), 0.9),
     "scan 10 ends after"),
], ids=["cut-between-intervals", "progressive-cut-in-last-scan"])
def test_a_scan_short_of_restart_intervals_is_refused(data: bytes, gap: str,
                                                      longest_side: int | None) -> None:
    with pytest.raises(InvalidImageError, match="stops early") as caught:
        decode(data, "image/jpeg", longest_side=longest_side)
    assert caught.value.reason == "corrupt"
    assert gap in str(caught.value)


@pytest.mark.parametrize("longest_side", [None, 64])  # full size and a DCT draft
@pytest.mark.parametrize(("data", "gaps"), [
    # cut in the first scans: the detail of every channel missing
    (_cut_and_closed(_jpeg((256, 256), progressive=True), 0.05),
     "component 1 lacks coefficients 6-63; components 2 and 3 lack coefficients 1-63"),
    # cut in the refinement scans: every coefficient came in, but without its last bit
    (_cut_and_closed(_encode(_photo((256, 256), "L"), "JPEG", progressive=True), 0.3),
     "component 1 lacks the last bit of coefficients 0-63"),
], ids=["colour-cut-at-5%", "greyscale-cut-at-30%"])
def test_a_progressive_jpeg_whose_scans_stop_early_is_refused(
        data: bytes, gaps: str, longest_side: int | None) -> None:
    with pytest.raises(InvalidImageError, match="progressive scans stop early") as caught:
        decode(data, "image/jpeg", longest_side=longest_side)
    assert caught.value.reason == "corrupt"
    assert gaps in str(caught.value)


@pytest.mark.parametrize("options", [
    {}, {"restart_marker_rows": 1}, {"progressive": True},
    {"progressive": True, "restart_marker_blocks": 2}],
    ids=["baseline", "restart-markers", "progressive", "progressive-restart-markers"])
def test_damaged_jpegs_are_refused_with_a_reason_or_decoded(options: dict[str, object]) -> None:
    """Bytes flipped anywhere after the start-of-image marker (in headers, scan headers,
    restart markers, data), and every third copy also cut and closed: decoding refuses
    with a reason or decodes; nothing else escapes it."""
    data = _jpeg((64, 48), **options)
    rng = np.random.default_rng(0)
    for attempt in range(200):
        damaged = bytearray(data)
        for at in rng.integers(2, len(data), rng.integers(1, 4)):
            damaged[at] = rng.integers(0, 256)
        if attempt % 3 == 0:
            damaged = damaged[:rng.integers(4, len(damaged))] + b"\xff\xd9"
        try:
            decoded = decode(bytes(damaged), "image/jpeg", longest_side=32)
        except InvalidImageError as refused:
            assert refused.reason in ("corrupt", "not_an_image", "too_small",
                                      "unsupported_mode")
        else:
            assert max(decoded.rgb.shape[:2]) == 32


@pytest.mark.parametrize("longest_side", [None, 200, 64, 32])
@pytest.mark.parametrize("options", [{}, {"progressive": True}, {"optimize": True},
                                     {"restart_marker_blocks": 3}, {"subsampling": 0}],
                         ids=["baseline", "progressive", "optimized", "restart", "444"])
def test_complete_images_with_a_trailer_decode_as_without(options: dict[str, object],
                                                          longest_side: int | None) -> None:
    data = _jpeg((256, 192), **options)
    plain = decode(data, "image/jpeg", longest_side=longest_side)
    trailed = decode(data + MOTION_PHOTO_VIDEO, "image/jpeg", longest_side=longest_side)
    assert np.array_equal(plain.rgb, trailed.rgb)


@pytest.mark.parametrize(("data", "refused"), [
    (_encode(_photo(mode="L"), "JPEG"), True),  # a monochrome camera's frame
    (_encode(_photo(mode="LA"), "PNG"), True),  # greyscale with alpha
    (_jpeg(), False),  # colour, as trained
    (_encode(_photo(mode="RGBA"), "PNG"), False),  # colour with alpha
])
def test_a_model_trained_on_colour_refuses_greyscale(data: bytes, refused: bool) -> None:
    assert decode(data, longest_side=48).rgb.shape == (32, 48, 3)  # accepted unless asked
    if refused:
        with pytest.raises(InvalidImageError, match="trained on colour") as caught:
            decode(data, longest_side=48, require_colour=True)
        assert caught.value.reason == "greyscale"
    else:
        assert decode(data, longest_side=48, require_colour=True).rgb.shape == (32, 48, 3)


def test_decoding_side_by_side_leaves_the_warning_filters_as_they_were() -> None:
    # decoding refuses a decompression bomb by turning Pillow's warning into an error for
    # the moment it opens the image; training decodes in a thread pool, and two threads
    # saving and restoring the process's warning filters across each other would leave
    # one thread's "error" installed for good
    before = list(warnings.filters)
    data, bomb = _jpeg(), _png_claiming(10_000, 10_000)
    refused: list[str] = []

    def decode_many() -> None:
        for _ in range(300):
            decode(data, "image/jpeg")
            try:
                decode(bomb, "image/png")
            except InvalidImageError as exc:
                refused.append(exc.reason)

    threads = [threading.Thread(target=decode_many) for _ in range(4)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, inside the opening too
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert warnings.filters == before
    assert refused == ["too_large"] * 1200


def test_a_png_over_the_pixel_limit_is_refused_before_a_pixel_is_decoded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # 56 megapixels: over MAX_PIXELS, under Pillow's own bomb check (89); reading a PNG's
    # EXIF without an eXIf chunk decodes it whole, hundreds of megabytes for a tiny file
    data = _encode(Image.new("L", (8_000, 7_000)), "PNG")
    assert len(data) < 100_000
    loads: list[str] = []
    original = PngImagePlugin.PngImageFile.load

    def load(self: PngImagePlugin.PngImageFile) -> object:
        loads.append("load")
        return original(self)

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", load)
    with pytest.raises(InvalidImageError) as caught:
        decode(data, "image/png")
    assert (caught.value.reason, loads) == ("too_large", [])
