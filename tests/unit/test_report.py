"""The HTML report: its sections and numbers, its images, and that nothing from outside can
inject markup or make the page load something from the network."""

from __future__ import annotations

import base64
import io
import re
import zlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipeline.detector.heatmap import overlay_png
from pipeline.records import ResultRecord
from pipeline.report import (
    AMBER,
    RED,
    ReportImage,
    agreement_by_line,
    bucket_seconds,
    build_report,
    counts_by_camera,
    latest_anomalies,
    result_picture,
    upright_picture,
)

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
HOSTILE = '<script>alert("x")</script>'


def jpeg(width: int = 640, height: int = 480, defect: bool = False) -> bytes:
    image = Image.new("RGB", (width, height), (70, 74, 80))
    draw = ImageDraw.Draw(image)
    draw.ellipse((width // 6, height // 6, width * 5 // 6, height * 5 // 6), fill=(170,) * 3)
    if defect:
        draw.line((width // 3, height // 3, width // 2, height // 2), fill=(30, 20, 20), width=6)
    out = io.BytesIO()
    image.save(out, "JPEG")
    return out.getvalue()


def result(index: int, line: str, camera: str, *, anomalous: bool = False,
           status: str = "OK", alert: str = "", review: str = "",
           confidence: float = 0.9, minutes: int | None = None, **changes: Any) -> ResultRecord:
    captured = T0 + timedelta(minutes=index * 5 if minutes is None else minutes)
    record = ResultRecord(
        image_id=f"img-{index:03d}", line_id=line, camera_id=camera,
        s3_uri=f"s3://images/{line}/{camera}/img-{index:03d}.jpg", captured_at=captured,
        processed_at=captured + timedelta(seconds=2), status=status,
        is_anomalous=anomalous and status == "OK",
        confidence=confidence if status == "OK" else 0.0,
        score=(0.8 if anomalous else 0.2) if status == "OK" else 0.0, threshold=0.5,
        model_version="m-1", alert_reason=alert,
        reason="" if status == "OK" else "not_an_image: HTML, not a JPEG",
        review={"label": review, "note": "checked", "reviewer": "qe"} if review else {})
    return record.with_changes(**changes)


def sample_inputs() -> tuple[list[ResultRecord], list[dict[str, Any]], dict[str, ReportImage]]:
    """A small day on two lines; also used by the browser test."""
    records = [
        # line-1 cam-1: 1 anomalous of 2 judged (50%), 1 invalid, 1 low confidence
        result(1, "line-1", "cam-1", anomalous=True, alert="anomalous", review="anomaly"),
        result(2, "line-1", "cam-1", alert="low_confidence", confidence=0.6, review="anomaly"),
        result(3, "line-1", "cam-1", status="INVALID"),
        # line-1 cam-2: 0 of 2
        result(4, "line-1", "cam-2"),
        result(5, "line-1", "cam-2", review="normal"),
        # line-2 cam-1: 2 of 3, one of them low confidence and judged normal by a person
        result(6, "line-2", "cam-1", anomalous=True, alert="anomalous_low_confidence",
               confidence=0.62, review="normal"),
        result(7, "line-2", "cam-1", anomalous=True, alert="anomalous"),
        result(8, "line-2", "cam-1"),
    ]
    failures = [{"record": result(9, "line-2", "cam-1").to_json(),
                 "error": {"Error": "States.TaskFailed", "Cause": "SNS publish failed"}}]
    images = {r.image_id: ReportImage(photo=jpeg(defect=True), heatmap=jpeg(256, 256, True),
                                      link=f"https://s3.example/{r.image_id}?sig=1")
              for r in latest_anomalies(records)}
    return records, failures, images


class _Tables(HTMLParser):
    """Rows of cell texts of every table, by the id of the section holding it."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, list[list[str]]] = {}
        self.strip: list[tuple[str, str]] = []
        self._section = ""
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._card: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "section":
            self._section = attributes.get("id") or ""
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "div" and "card" in (attributes.get("class") or "").split():
            self._card = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.sections.setdefault(self._section, []).append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._card is not None:
            self._card.append(data.strip())
            if len(self._card) == 2:
                self.strip.append((self._card[0], self._card[1]))
                self._card = None


def parse(page: str) -> _Tables:
    parser = _Tables()
    parser.feed(page)
    return parser


def test_summary_strip_and_camera_table_count_what_happened() -> None:
    records, failures, images = sample_inputs()
    page = build_report(records, failures=failures, images=images)
    parsed = parse(page)

    assert dict(parsed.strip) == {"Processed": "8", "Anomalous": "3", "Low confidence": "2",
                                  "Invalid": "1", "Alerts sent": "4", "Reviewed": "4"}
    rows = {(row[0] or "", row[1]): row for row in parsed.sections["per-camera"][1:]}
    header = parsed.sections["per-camera"][0]
    assert header[:8] == ["Line", "Camera", "Processed", "Anomalous", "Anomaly rate",
                          "Low confidence", "Invalid", "Alerts"]
    # line-1/cam-1: 3 processed, 1 anomalous of 2 judged, 1 low confidence, 1 invalid
    assert rows[("line-1", "cam-1")][2:8] == ["3", "1", "50.0%", "1", "1", "2"]
    # the line is named once; its second camera's row leaves it blank
    assert rows[("", "cam-2")][2:5] == ["2", "0", "0.0%"]
    assert rows[("line-2", "cam-1")][2:5] == ["3", "2", "66.7%"]
    assert rows[("All", "")][2:7] == ["8", "3", "42.9%", "2", "1"]


def test_every_section_is_there() -> None:
    records, failures, images = sample_inputs()
    page = build_report(records, failures=failures, images=images,
                        metrics={"ProcessedImageCount": 8})

    for anchor in ("per-camera", "over-time", "confidence", "anomalies", "alerts", "review",
                   "invalid", "metrics"):
        assert f'<section id="{anchor}">' in page, anchor
    # one rate chart per line, two histograms, and the band/threshold markers
    assert page.count('<svg class="chart"') == 4
    assert "low confidence below 0.70" in page
    assert "detector threshold 0.50" in page


def test_lines_with_their_own_low_confidence_band_are_named_under_the_one_drawn() -> None:
    records, _, _ = sample_inputs()  # 4 judged images on line-1, 3 on line-2
    page = build_report(records, confidence_threshold=0.2, line_bands={"line-2": 0.3})
    assert "low confidence below 0.70" in page  # the band most images were held to
    assert "these lines have their own: line-2 below 0.80." in page
    # most images on a line with its own band: that band is drawn, the stack's is named
    page = build_report(records, confidence_threshold=0.2, line_bands={"line-1": 0.25})
    assert "low confidence below 0.75" in page
    assert "their own: line-2 below 0.70." in page
    assert "their own" not in build_report(records, confidence_threshold=0.2,
                                           line_bands={"line-9": 0.1})


def test_alert_log_lists_alerts_newest_first_and_failures() -> None:
    records, failures, images = sample_inputs()
    rows = parse(build_report(records, failures=failures, images=images)).sections["alerts"]

    alert_rows = [row for row in rows[1:] if len(row) == 8]
    assert [row[3] for row in alert_rows] == ["img-007", "img-006", "img-002", "img-001"]
    assert alert_rows[1][4] == "anomalous, low confidence"
    failure_rows = [row for row in rows if len(row) == 6 and row[0] != "Captured"]
    assert failure_rows == [["2026-11-23 08:45:00 UTC", "line-2", "cam-1", "img-009",
                             "States.TaskFailed", "SNS publish failed"]]


def test_an_alert_whose_publish_failed_is_not_counted_as_sent() -> None:
    """The alert step catches into `alert_error`, not `error`: the row read as a blank
    failure, and the alert it never sent was counted as sent."""
    records, _, _ = sample_inputs()
    owed = next(r for r in records if r.image_id == "img-007")
    failures = [{"record": owed.to_json(), "alert": {"send": True},
                 "alert_error": {"Error": "SNS.AuthorizationErrorException",
                                 "Cause": "not authorized to publish"}}]

    page = build_report(records, failures=failures)
    parsed = parse(page)

    assert dict(parsed.strip)["Alerts sent"] == "3"  # of 4 due
    assert "1 workflow failure (1 alert not sent)" in page
    rows = parsed.sections["alerts"]
    assert [row[4] for row in rows if len(row) == 8 and row[3] == "img-007"] == [
        "anomalous, not sent"]
    assert [row for row in rows if len(row) == 6 and row[0] != "Captured"] == [
        ["2026-11-23 08:35:00 UTC", "line-2", "cam-1", "img-007",
         "alert not sent: SNS.AuthorizationErrorException", "not authorized to publish"]]


def test_a_failure_queue_not_read_is_not_reported_empty() -> None:
    records, _, _ = sample_inputs()

    unread = build_report(records, failures=None)
    capped = build_report(records, failures=[{"record": records[0].to_json()}] * 3,
                          failures_capped=True)

    assert "0 workflow failures" not in unread and "failure queue not read" in unread
    assert "at least 3 workflow failures" in capped
    # capped, and none of those read were this line's: not "at least 0"
    none_of_ours = build_report(records, failures=[], failures_capped=True)
    assert "at least 0" not in none_of_ours
    assert "no workflow failure among those read; there may be more" in none_of_ours
    assert "Workflow failures (3 shown; there may be more)" in capped


def test_model_vs_human_per_line() -> None:
    records, _, _ = sample_inputs()

    agreement = agreement_by_line(records)

    # line-1: img-001 agrees, img-002 is a missed defect, img-005 agrees
    assert (agreement["line-1"].reviewed, agreement["line-1"].agree,
            agreement["line-1"].misses, agreement["line-1"].false_alarms) == (3, 2, 1, 0)
    # line-2: img-006 is a false alarm
    assert (agreement["line-2"].reviewed, agreement["line-2"].false_alarms) == (1, 1)
    rows = parse(build_report(records)).sections["review"]
    assert rows[1] == ["line-1", "3", "2", "0", "1", "0", "33.3%"]
    assert rows[2] == ["line-2", "1", "0", "1", "0", "0", "100.0%"]


def test_gallery_embeds_downscaled_photo_and_heatmap_with_a_link() -> None:
    records, failures, images = sample_inputs()
    page = build_report(records, failures=failures, images=images)

    sources = re.findall(r'<img src="([^"]+)"', page)
    # 3 anomalies x (photo + heatmap) as thumbnails, and again in the large view
    assert len(sources) == 12
    sizes = [Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).size
             for src in sources]
    assert max(max(size) for size in sizes[:2]) <= 168
    assert 'href="https://s3.example/img-007?sig=1"' in page
    assert "s3://images/line-2/cam-1/img-007.jpg" in page
    # newest first
    assert page.index('id="full-0-img-007"') < page.index('id="full-1-img-006"')


def test_unreadable_or_missing_images_are_named_not_broken() -> None:
    records, _, _ = sample_inputs()
    images = {"img-007": ReportImage(photo=b"not a picture", heatmap=b"", link="")}

    page = build_report(records, images=images)

    assert "<img" not in page
    assert page.count("photo not available") == 3


@pytest.mark.parametrize(("area", "shown"), [
    (12.345, "anomalous area 12.35%"), ("x", None), (None, None), (float("nan"), None)])
def test_the_anomalous_area_is_shown_when_it_reads_as_a_number(area: Any, shown: str | None
                                                               ) -> None:
    """An area edited by hand into a word stopped the whole report (float('x'))."""
    record = result(1, "line-1", "cam-1", anomalous=True, alert="anomalous", anomalies=[
        {"Name": "background"},
        {"Name": "anomaly", "PixelAnomaly": {"TotalPercentageArea": area, "Color": "#FF0000"}}])

    page = build_report([record])

    assert "anomalous area" in page if shown else "anomalous area" not in page
    assert shown is None or shown in page


def test_a_score_beside_its_threshold_is_shown_with_the_decimals_that_tell_them_apart(
        ) -> None:
    from pipeline.report import _picture_facts

    near = result(2, "line-1", "cam-1", anomalous=True, alert="anomalous", score=0.5001)
    assert "score 0.5001 (threshold 0.5000)" in build_report([near])  # was 0.500 (0.50)
    passed = result(3, "line-1", "cam-1", score=0.5499, threshold=0.55)
    assert _picture_facts(passed)[0].startswith("score 0.5499 (threshold 0.5500)")
    assert _picture_facts(result(4, "line-1", "cam-1"))[0].startswith(
        "score 0.200 (threshold 0.500)")


def _turned_jpeg(width: int, height: int, orientation: int) -> bytes:
    """A photo stored sideways, as a camera held on its side writes it: the pixels as the
    sensor read them, and an EXIF orientation saying how to turn them."""
    image = Image.new("RGB", (width, height), (70, 74, 80))
    ImageDraw.Draw(image).rectangle((0, 0, width // 4, height - 1), fill=(200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


def test_photos_are_shown_upright_as_the_detector_judged_them() -> None:
    """Re-encoding drops the EXIF: a photo stored with orientation 6 showed on its side in
    the report, beside its heatmap, which the detector makes from the upright image."""
    photo = _turned_jpeg(200, 100, orientation=6)  # turn 90 degrees clockwise to view

    upright = upright_picture(photo, 168)
    assert upright is not None and upright.size == (84, 168)
    # the red band along the stored image's left edge is on top once turned
    assert upright.getpixel((42, 5))[0] > 150 and upright.getpixel((42, 160))[0] < 120
    records, _, _ = sample_inputs()
    page = build_report(records, images={"img-007": ReportImage(photo=photo)})
    first = re.findall(r'<img src="data:image/jpeg;base64,([^"]+)"', page)[0]
    assert Image.open(io.BytesIO(base64.b64decode(first))).size == (84, 168)


def _pixels_near(png: bytes, colour: str, tolerance: int = 40) -> int:
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), np.int16)
    wanted = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(pixels - wanted) <= tolerance).all(axis=-1).sum())


def _png(colour: tuple[int, int, int], size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


BLUE = (20, 40, 230)


@pytest.mark.parametrize("anomalous, low, headline", [
    (True, False, RED),     # a defect: red
    (True, True, RED),      # a possible defect: red, said to be low confidence
    (False, True, AMBER),   # a normal verdict a person should check: amber
    (False, False, None),   # a confident normal verdict: ink only
])
def test_one_result_as_a_picture_shows_photo_heatmap_and_verdict(
        anomalous: bool, low: bool, headline: str | None) -> None:
    record = result(1, "line-1", "cam-1", anomalous=anomalous)
    png = result_picture(record, ReportImage(photo=jpeg(320, 240), heatmap=_png(BLUE, (160, 120))),
                         low_confidence=low)

    picture = Image.open(io.BytesIO(png))
    assert picture.format == "PNG"
    # both panels are there, the heatmap scaled to the photo's 320 x 240
    assert _pixels_near(png, "#aaaaaa", 12) > 320 * 240 // 3       # the photo's grey part
    assert _pixels_near(png, "#1428e6", 12) >= 320 * 240 * 0.95    # the heatmap, all of it
    for colour in (RED, AMBER):
        assert (_pixels_near(png, colour) > 50) == (colour == headline), colour


def test_a_real_heatmap_overlay_is_shown() -> None:
    """Heatmaps are palette PNGs, which uploads may not be: the picture decodes them with the
    detector's limits but not its camera-only pixel modes."""
    rgb = np.full((120, 160, 3), 170, np.uint8)
    anomaly_map = np.zeros((12, 16))
    anomaly_map[4:8, 6:10] = 5.0
    heatmap = overlay_png(rgb, anomaly_map, pixel_threshold=1.0)
    assert Image.open(io.BytesIO(heatmap)).mode == "P"

    shown = upright_picture(heatmap, 512)
    assert shown is not None and shown.size == (160, 120)  # not enlarged
    png = result_picture(result(4, "line-1", "cam-1", anomalous=True),
                         ReportImage(photo=jpeg(160, 120), heatmap=heatmap),
                         low_confidence=False)
    assert _pixels_near(png, "#eef1f5", 2) == 0  # no empty frame: both panels shown
    records, _, _ = sample_inputs()
    page = build_report(records, images={"img-007": ReportImage(heatmap=heatmap)})
    assert len(re.findall(r'<img src="data:image/jpeg', page)) == 2  # tile and large view


def _png_with_header_size(width: int, height: int) -> bytes:
    """A small PNG whose header claims `width` x `height` (an image bomb: it would take
    width x height bytes and more to decode)."""
    data = bytearray(_png((1, 2, 3), (16, 16)))
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    return bytes(data)


def _broken_png() -> bytes:
    """A PNG whose image data chunk claims 16 bytes fewer than it has: Pillow opens it, then
    raises SyntaxError ("broken PNG file", reading a chunk type from inside the data) while
    decoding, where a plain open-and-convert caught only OSError and ValueError."""
    data = bytearray(_png((1, 2, 3), (16, 16)))
    at = data.index(b"IDAT") - 4
    data[at:at + 4] = (int.from_bytes(data[at:at + 4], "big") - 16).to_bytes(4, "big")
    return bytes(data)


@pytest.mark.parametrize("data", [
    _png_with_header_size(10_000, 10_000),  # 100 megapixels from a few bytes: refused
    _broken_png(),                          # a damaged chunk
    b"<html>not an image</html>",
    b"",
], ids=["bomb", "broken-chunk", "html", "empty"])
def test_what_the_detector_refuses_is_not_drawn(data: bytes) -> None:
    assert upright_picture(data, 512) is None
    png = result_picture(result(5, "line-1", "cam-1", status="INVALID"),
                         ReportImage(photo=data), low_confidence=False)
    assert Image.open(io.BytesIO(png)).size[0] < 2000


@pytest.mark.parametrize("photo, heatmap", [
    ((640, 480), (512, 24)),  # a heatmap of a thin region: it fits inside the photo's size
    ((20, 400), (16, 320)),   # a narrow photo: the caption still has room
])
def test_the_picture_stays_readable_whatever_the_shapes(
        photo: tuple[int, int], heatmap: tuple[int, int]) -> None:
    png = result_picture(result(6, "line-1", "cam-1", anomalous=True),
                         ReportImage(photo=jpeg(*photo), heatmap=_png(BLUE, heatmap)),
                         low_confidence=False)
    width, height = Image.open(io.BytesIO(png)).size
    assert 640 <= width <= 3 * 16 + 2 * 512 and height <= 16 * 3 + 512 + 200
    assert _pixels_near(png, "#1428e6", 12) > 0  # the heatmap is in it


def test_a_panel_that_cannot_be_shown_is_an_empty_frame() -> None:
    """An unusable upload, or a photo gone with no heatmap: the picture is still made, with
    a framed panel (which says why) in place of each image."""
    invalid = result(2, "line-1", "cam-1", status="INVALID")
    unusable = result_picture(invalid, ReportImage(photo=b"<html>"), low_confidence=False)
    gone = result_picture(result(3, "line-1", "cam-1"), ReportImage(), low_confidence=False)

    for png in (unusable, gone):
        assert _pixels_near(png, "#eef1f5", 2) > 2 * 500 * 370   # two empty 512 x 384 frames
        assert _pixels_near(png, RED) == 0 and _pixels_near(png, "#1428e6", 12) == 0


@pytest.mark.parametrize("field", ["line_id", "camera_id", "image_id", "model_version",
                                   "reason", "alert_reason", "s3_uri", "note"])
def test_hostile_strings_are_escaped(field: str) -> None:
    record = result(1, "line-1", "cam-1", anomalous=True, alert="anomalous", review="normal")
    if field == "note":
        record = record.with_changes(review={"label": "normal", "note": HOSTILE})
    else:
        record = record.with_changes(**{field: HOSTILE})
    failure = {"record": {"image_id": HOSTILE, "line_id": HOSTILE},
               "error": {"Error": HOSTILE, "Cause": HOSTILE}}
    images = {record.image_id: ReportImage(photo=jpeg(), link='javascript:alert("x")')}

    page = build_report([record, record.with_changes(status="INVALID", image_id="i2")],
                        failures=[failure], images=images, metrics={HOSTILE: 1.0},
                        title=HOSTILE, source=HOSTILE)

    assert "<script" not in page.lower()
    assert "javascript:" not in page
    assert "&lt;script&gt;" in page


def test_page_loads_nothing_from_the_network() -> None:
    records, failures, images = sample_inputs()
    page = build_report(records, failures=failures, images=images)

    assert "<script" not in page
    for attribute in re.findall(r'\b(?:src|href)="([^"]*)"', page):
        # links a person may click are fine; nothing is fetched when the page loads
        assert attribute.startswith(("data:", "#", "https://s3.example/")), attribute
    assert re.findall(r"<link [^>]*>", page) == ['<link rel="icon" href="data:,">']
    assert "url(" not in page and "@import" not in page


def test_empty_report_says_so() -> None:
    page = build_report([])
    assert "No results in this period." in page
    assert "No anomalies in this period." in page
    assert "<svg" not in page


def test_counts_by_camera_keeps_invalid_out_of_the_rate() -> None:
    counts = counts_by_camera([result(1, "L", "C", status="INVALID"), result(2, "L", "C")])
    assert counts[("L", "C")].anomaly_rate == 0.0
    assert counts_by_camera([result(1, "L", "C", status="INVALID")])[("L", "C")].anomaly_rate \
        is None


@pytest.mark.parametrize("span, width", [
    (timedelta(seconds=0), 10),  # a single instant: the smallest bucket
    (timedelta(minutes=5), 10),  # 30 buckets of 10 s
    (timedelta(minutes=10), 30),  # 10 s would give 60 buckets
    (timedelta(hours=8), 900),  # a shift in 15-minute buckets
    (timedelta(days=30), 86400),  # a month, by day
    (timedelta(days=3650), 604800),  # beyond the largest bucket: weeks
])
def test_bucket_width_keeps_the_chart_readable(span: timedelta, width: int) -> None:
    assert bucket_seconds(T0, T0 + span) == width


def test_rate_chart_bars_match_the_data() -> None:
    # line-1: bucket 1 has 1 of 2 anomalous; bucket 2 has none of 1
    records = [result(1, "L", "C", anomalous=True, minutes=0),
               result(2, "L", "C", minutes=0),
               result(3, "L", "C", minutes=40)]
    page = build_report(records)
    tips = re.findall(r"<title>([^<]*anomalous \([^<]*)</title>", page)
    assert "08:00:00 UTC: 1 of 2 anomalous (50.0%)" in tips[0]
    assert any("0 of 1 anomalous (0.0%)" in tip for tip in tips)


def _first(mapping: Mapping[str, Any]) -> Any:
    return next(iter(mapping.values()))
