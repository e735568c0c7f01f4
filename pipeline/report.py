"""The results report: one self-contained HTML page a quality engineer reads.

`build_report` is a pure function of result records, the workflow failure queue's
messages, images the caller has already read from S3, and optional CloudWatch figures.
The page needs nothing at view time: the CSS is inline, the charts are inline SVG drawn
here, images are downscaled with Pillow and embedded as data URIs, and there is no script.
Every string that came from outside (line ids, reasons, notes) is escaped.

Colours mean one thing each, everywhere: red = anomalous, amber = low confidence,
grey = invalid; everything else is ink and slate.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import median
from typing import Any

from PIL import Image, ImageDraw, ImageFont, ImageOps

from pipeline.alerts import apart
from pipeline.detector import imageio
from pipeline.detector.base import InvalidImageError
from pipeline.records import STATUS_INVALID, ResultRecord, parse_time, utc_now

RED = "#c62828"
AMBER = "#e69500"
GREY = "#8a919c"
SLATE = "#9fb0c6"
INK = "#1f2937"
THUMB_SIDE = 168
FULL_SIDE = 900
LATEST_ANOMALIES = 12
# Nice time-bucket widths for the anomaly-rate chart, smallest first.
_BUCKETS = (10, 30, 60, 300, 900, 3600, 3 * 3600, 6 * 3600, 86400, 7 * 86400)
_MAX_BUCKETS = 36
_MIN_SLOTS = 12
_MAX_BAR = 24.0
# Tops of the rate axis whose quarters are round percentages.
_RATE_TOPS = (0.04, 0.08, 0.12, 0.2, 0.4, 0.6, 0.8, 1.0)


@dataclass(frozen=True)
class ReportImage:
    """An image of one result, as the caller read it: the photo, the heatmap overlay PNG
    and a link to the full-size original (a presigned URL, or "" when there is none)."""

    photo: bytes = b""
    heatmap: bytes = b""
    link: str = ""


@dataclass
class Counts:
    """What happened on one line/camera (or in total)."""

    processed: int = 0
    anomalous: int = 0
    low_confidence: int = 0
    invalid: int = 0
    alerts: int = 0
    reviewed: int = 0
    disagreements: int = 0
    last_seen: datetime | None = None

    @property
    def valid(self) -> int:
        return self.processed - self.invalid

    @property
    def anomaly_rate(self) -> float | None:
        """Anomalous share of the images that got a verdict (invalid ones did not)."""
        return self.anomalous / self.valid if self.valid else None

    def add(self, record: ResultRecord) -> None:
        self.processed += 1
        self.invalid += record.status == STATUS_INVALID
        self.anomalous += record.status != STATUS_INVALID and record.is_anomalous
        self.low_confidence += is_low_confidence(record)
        self.alerts += bool(record.alert_reason)
        verdict = human_verdict(record)
        if verdict is not None:
            self.reviewed += 1
            self.disagreements += disagrees(record)
        if self.last_seen is None or record.captured_at > self.last_seen:
            self.last_seen = record.captured_at


@dataclass(frozen=True)
class Agreement:
    """Model vs human on the reviewed images of one line."""

    reviewed: int = 0
    agree: int = 0
    false_alarms: int = 0  # model said anomalous, a person said normal
    misses: int = 0  # model said normal, a person said anomaly
    no_verdict: int = 0  # reviewed, but the model had none (invalid image)

    @property
    def disagree(self) -> int:
        return self.false_alarms + self.misses


@dataclass(frozen=True)
class Failure:
    """One message of the workflow failure queue (the workflow input plus its error)."""

    image_id: str = ""
    line_id: str = ""
    camera_id: str = ""
    captured_at: str = ""
    error: str = ""
    cause: str = ""
    alert_not_sent: bool = False  # the record was stored; only its alert's publish failed

    @classmethod
    def from_message(cls, body: Mapping[str, Any]) -> Failure:
        record = _mapping(body.get("record"))
        # the workflow's alert step catches into `alert_error`, every other step `error`
        alert_not_sent = "error" not in body and "alert_error" in body
        error = _mapping(body.get("alert_error" if alert_not_sent else "error"))
        return cls(image_id=str(record.get("image_id", "")), line_id=str(record.get("line_id", "")),
                   camera_id=str(record.get("camera_id", "")),
                   captured_at=str(record.get("captured_at", "")),
                   error=str(error.get("Error", "")), cause=str(error.get("Cause", "")),
                   alert_not_sent=alert_not_sent)


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def is_low_confidence(record: ResultRecord) -> bool:
    """Low confidence as the pipeline decided it (the alert reason it recorded)."""
    return "low_confidence" in record.alert_reason


def human_verdict(record: ResultRecord) -> bool | None:
    """True/False for a person's anomaly/normal label, None when nobody reviewed it."""
    label = (record.review or {}).get("label")
    if label in ("anomaly", "normal"):
        return label == "anomaly"
    return None


def disagrees(record: ResultRecord) -> bool:
    verdict = human_verdict(record)
    return (verdict is not None and record.status != STATUS_INVALID
            and verdict != record.is_anomalous)


def counts_by_camera(records: Iterable[ResultRecord]) -> dict[tuple[str, str], Counts]:
    table: dict[tuple[str, str], Counts] = defaultdict(Counts)
    for record in records:
        table[(record.line_id, record.camera_id)].add(record)
    return dict(sorted(table.items()))


def agreement_by_line(records: Iterable[ResultRecord]) -> dict[str, Agreement]:
    tally: dict[str, Counter[str]] = defaultdict(Counter)
    for record in records:
        verdict = human_verdict(record)
        if verdict is None:
            continue
        counter = tally[record.line_id]
        counter["reviewed"] += 1
        if record.status == STATUS_INVALID:
            counter["no_verdict"] += 1
        elif verdict == record.is_anomalous:
            counter["agree"] += 1
        elif record.is_anomalous:
            counter["false_alarms"] += 1
        else:
            counter["misses"] += 1
    return {line: Agreement(**counter) for line, counter in sorted(tally.items())}


def latest_anomalies(records: Iterable[ResultRecord],
                     count: int = LATEST_ANOMALIES) -> list[ResultRecord]:
    """The newest anomalous results: the images a caller should read for the gallery."""
    anomalous = [r for r in records if r.is_anomalous and r.status != STATUS_INVALID]
    return sorted(anomalous, key=lambda r: r.captured_at, reverse=True)[:count]


def bucket_seconds(start: datetime, end: datetime) -> int:
    """A nice bucket width giving at most 36 buckets over the span.

    >>> from datetime import UTC, datetime, timedelta
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> bucket_seconds(t, t + timedelta(minutes=3)), bucket_seconds(t, t + timedelta(days=2))
    (10, 10800)
    """
    span = max((end - start).total_seconds(), 1.0)
    for width in _BUCKETS:
        if span / width <= _MAX_BUCKETS:
            return width
    return _BUCKETS[-1]


def image_data_uri(data: bytes, side: int) -> str:
    """A JPEG data URI of the image scaled to fit `side` pixels; "" if it cannot be read."""
    picture = upright_picture(data, side)
    if picture is None:
        return ""
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=82, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def upright_picture(data: bytes, side: int) -> Image.Image | None:
    """The image in RGB, upright as its EXIF orientation says and scaled down to fit `side`
    pixels, decoded as the detector decodes uploads (so with its limits: no image bombs,
    nothing damaged), palette images too (heatmaps); None if it would refuse it.

    Re-encoding drops the EXIF, so a photo left unturned here would show on its side beside
    its heatmap, which the detector makes from the upright image."""
    try:
        decoded = imageio.decode(data, longest_side=side, enlarge=False,
                                 modes=(*imageio.ACCEPTED_MODES, "P"))
    except InvalidImageError:
        return None
    return Image.fromarray(decoded.rgb)


# --- one result as a picture ------------------------------------------------------------

PICTURE_SIDE = 512
_MIN_WIDTH = 640
_MARGIN = 16
_TEXT = 16
_HEADLINE = 24


def result_picture(record: ResultRecord, image: ReportImage, *, low_confidence: bool) -> bytes:
    """One PNG a person reads at a glance: the photo and its heatmap overlay side by side,
    upright, and under them the verdict in its colour (red anomalous, amber low confidence,
    grey unusable), the score against the threshold, the confidence, the model, and where
    and when the photo was taken. A panel that cannot be shown says why (the photo expired
    or was deleted, the upload is not an image, no heatmap was made)."""
    photo = upright_picture(image.photo, PICTURE_SIDE) if image.photo else None
    heat = upright_picture(image.heatmap, PICTURE_SIDE) if image.heatmap else None
    if photo is not None and heat is not None:  # the overlay is smaller: as large as the photo
        heat = ImageOps.contain(heat, photo.size, Image.Resampling.BILINEAR)
    # a panel that cannot be shown takes the other's size, or 4:3 when neither can
    size = (photo.size if photo is not None else heat.size if heat is not None
            else (PICTURE_SIDE, PICTURE_SIDE * 3 // 4))
    panels = [
        ("photo", photo, "photo not available (expired, deleted or unreadable)" if not image.photo
         else "the upload is not an image that can be shown"),
        ("heatmap overlay", heat,
         "no heatmap: the upload could not be judged" if record.status == STATUS_INVALID
         else "no heatmap was made" if not record.heatmap_uri
         else "heatmap not available (expired, deleted or unreadable)" if not image.heatmap
         else "the heatmap cannot be shown"),
    ]
    text = ImageFont.load_default(_TEXT)
    headline_font = ImageFont.load_default(_HEADLINE)
    headline, colour = _picture_headline(record, low_confidence)
    facts = _picture_facts(record)
    sizes = [panel.size if panel is not None else size for _, panel, _ in panels]
    # at least _MIN_WIDTH: room for the caption beside a narrow photo
    width = max(_MARGIN + sum(w + _MARGIN for w, _ in sizes), _MIN_WIDTH)
    top = _MARGIN + _TEXT + 8
    caption_top = top + max(h for _, h in sizes) + _MARGIN
    height = caption_top + _HEADLINE + 10 + len(facts) * (_TEXT + 6) + _MARGIN
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    left = _MARGIN
    for (title, panel, missing), (panel_width, _) in zip(panels, sizes, strict=True):
        draw.text((left, _MARGIN), _fit(title, panel_width, text), fill=INK, font=text)
        if panel is None:
            draw.rectangle((left, top, left + size[0] - 1, top + size[1] - 1), fill="#eef1f5",
                           outline=SLATE)
            draw.text((left + size[0] // 2, top + size[1] // 2), _fit(missing, size[0] - 16, text),
                      fill=GREY, font=text, anchor="mm")
        else:
            canvas.paste(panel, (left, top))
        left += panel_width + _MARGIN
    draw.text((_MARGIN, caption_top), headline, fill=colour, font=headline_font)
    y = caption_top + _HEADLINE + 10
    for fact in facts:
        draw.text((_MARGIN, y), _fit(fact, width - 2 * _MARGIN, text), fill=INK, font=text)
        y += _TEXT + 6
    out = io.BytesIO()
    canvas.save(out, "PNG")
    return out.getvalue()


def _picture_headline(record: ResultRecord, low_confidence: bool) -> tuple[str, str]:
    if record.status == STATUS_INVALID:
        return "Unusable upload: not judged", GREY
    verdict = "ANOMALOUS" if record.is_anomalous else "Normal"
    if low_confidence:
        return f"{verdict}, low confidence: a person should check", (
            RED if record.is_anomalous else AMBER)
    return verdict, RED if record.is_anomalous else INK


def _picture_facts(record: ResultRecord) -> list[str]:
    if record.status == STATUS_INVALID:
        judged = f"why: {record.reason}"
    else:
        score, threshold = apart(record.score, record.threshold, 3)
        judged = (f"score {score} (threshold {threshold})  |  "
                  f"confidence {record.confidence:.2f}  |  model {record.model_version}")
    facts = [judged,
             f"line {record.line_id}  |  camera {record.camera_id}  |  captured "
             f"{_when(record.captured_at)}",
             f"image {record.image_id}"
             + (f"  |  camera's id {record.client_image_id}" if record.client_image_id else "")]
    verdict = human_verdict(record)
    if verdict is not None:
        note = (record.review or {}).get("note") or ""
        facts.append(f"a person says {'anomaly' if verdict else 'normal'}"
                     + (f": {note}" if note else ""))
    return facts


def _fit(text: str, width: int, font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> str:
    """The text, cut with "..." to fit `width` pixels (the longest start that fits, found by
    halving: a note may be thousands of characters).

    >>> font = ImageFont.load_default(16)
    >>> _fit("short", 200, font), _fit("x" * 500, 100, font).endswith("..."), _fit("abc", 1, font)
    ('short', True, '...')
    """
    if font.getlength(text) <= width:
        return text
    fits, too_long = 0, len(text)
    while too_long - fits > 1:
        middle = (fits + too_long) // 2
        if font.getlength(text[:middle] + "...") <= width:
            fits = middle
        else:
            too_long = middle
    return text[:fits] + "..."


# --- the page ---------------------------------------------------------------------------

def build_report(records: Iterable[ResultRecord], *,
                 failures: Iterable[Mapping[str, Any]] | None = (),
                 failures_capped: bool = False,
                 images: Mapping[str, ReportImage] | None = None,
                 metrics: Mapping[str, float] | None = None,
                 confidence_threshold: float = 0.20,
                 line_bands: Mapping[str, float] | None = None,
                 since: datetime | None = None, until: datetime | None = None,
                 generated_at: datetime | None = None,
                 title: str = "LineSight quality report",
                 source: str = "") -> str:
    """The report as one HTML string.

    records:   result records (already filtered to the period by the caller).
    failures:  bodies of the workflow failure queue's messages (decoded JSON), or None
               when the queue was not read; `failures_capped` when there may be more.
    images:    {image_id: ReportImage} for the gallery (see `latest_anomalies`).
    metrics:   optional CloudWatch figures, {label: value}, shown as they are.
    confidence_threshold: the low-confidence band above 0.5, stack-wide.
    line_bands: {line id: its own band}, for lines that set one.
    source:    where the data came from (table name), shown in the footer.
    """
    records = sorted(records, key=lambda r: r.captured_at)
    failed = [Failure.from_message(body) for body in failures or ()]
    queue = (None if failures is None else
             FailureQueue(failed, failures_capped,
                          frozenset(f.image_id for f in failed if f.alert_not_sent)))
    images = images or {}
    generated_at = generated_at or utc_now()
    table = counts_by_camera(records)
    total = Counts()
    for record in records:
        total.add(record)
    sections = [
        _header(title, records, since, until, generated_at),
        _summary_strip(total, queue, records),
        _section("per-camera", "Lines and cameras",
                 "Anomaly rate is the share of images with a verdict that were anomalous; "
                 "invalid images have no verdict.", _camera_table(table, total)),
        _section("over-time", "Anomaly rate over time",
                 "Share of anomalous images per time bucket, per line (UTC). The dashed "
                 "line is the line's overall rate.", _rate_charts(records)),
        _section("confidence", "Confidence and scores",
                 "Left: how sure the model was of each verdict; below the amber line an "
                 "image is low confidence and goes to a person. Right: the anomaly score "
                 "against the detector threshold.",
                 _histograms(records, confidence_threshold, line_bands or {})),
        _section("anomalies", "Latest anomalies",
                 "Newest first. Each shows the photo and the heatmap overlay (hot = where the "
                 "model sees the defect); click to open it large.",
                 _gallery(latest_anomalies(records), images)),
        _section("alerts", "Alert log",
                 "Every alert sent (anomalous or low-confidence results), newest first, and "
                 "any workflow run that failed and went to the failure queue.",
                 _alert_log(records, queue)),
        _section("review", "Model vs human",
                 "Images a person reviewed (POST /results/{image_id}/review or "
                 "<code>linesight review</code>), per line.", _agreement(records)),
        _section("invalid", "Invalid uploads",
                 "Files that could not be judged, and why.", _invalid_table(records)),
    ]
    if metrics:
        sections.append(_section("metrics", "CloudWatch metrics",
                                 "Totals from the stack's metrics namespace for the same period, "
                                 "as the handlers emitted them.",
                                 _metrics_table(metrics, total)))
    footer = (f'<footer>Generated {_e(_when(generated_at))}'
              + (f" from {_e(source)}" if source else "")
              + f" &middot; {len(records)} results &middot; models: "
              + (_e(", ".join(sorted({r.model_version for r in records if r.model_version})))
                 or "none")
              + ". This page is self-contained: it loads nothing from the network.</footer>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<link rel=\"icon\" href=\"data:,\">"
            f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body><main>"
            + "".join(sections) + footer + "</main></body></html>\n")


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def _when_text(value: str) -> str:
    try:
        return _when(parse_time(value))
    except (ValueError, TypeError):
        return value or "-"


def _pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value * 100:.{digits}f}%"


def _section(anchor: str, title: str, intro: str, body: str) -> str:
    return (f'<section id="{anchor}"><h2>{_e(title)}</h2>'
            f'<p class="intro">{intro}</p>{body}</section>')


def _header(title: str, records: Sequence[ResultRecord], since: datetime | None,
            until: datetime | None, generated_at: datetime) -> str:
    first = since or (records[0].captured_at if records else None)
    last = until or (records[-1].captured_at if records else None)
    period = f"{_when(first)} &ndash; {_when(last)}" if first else "no results yet"
    lines = sorted({r.line_id for r in records})
    cameras = {(r.line_id, r.camera_id) for r in records}
    nav = "".join(f'<a href="#{a}">{t}</a>' for a, t in (
        ("per-camera", "Cameras"), ("over-time", "Over time"), ("confidence", "Confidence"),
        ("anomalies", "Anomalies"), ("alerts", "Alerts"), ("review", "Reviews"),
        ("invalid", "Invalid")))
    return (f'<header><div class="brand">LineSight &middot; generated '
            f'{_e(_when(generated_at))}</div><h1>{_e(title)}</h1>'
            f'<p class="period">{period} &middot; {len(lines)} line'
            f'{"s" if len(lines) != 1 else ""}, {len(cameras)} camera'
            f'{"s" if len(cameras) != 1 else ""}</p><nav>{nav}</nav></header>')


@dataclass(frozen=True)
class FailureQueue:
    """What the workflow failure queue held when the report was made."""

    failures: list[Failure]
    capped: bool  # there may be more than these
    unsent: frozenset[str]  # image ids whose alert's publish failed

    @property
    def counted(self) -> str:
        n = len(self.failures)
        if self.capped and not n:  # none of those read were this report's (another line's)
            return "no workflow failure among those read; there may be more"
        return f"{'at least ' if self.capped else ''}{n} workflow failure{'s' if n != 1 else ''}"


def _summary_strip(total: Counts, queue: FailureQueue | None,
                   records: Sequence[ResultRecord]) -> str:
    unsent = sum(1 for r in records if r.alert_reason and queue and r.image_id in queue.unsent)
    failed = "failure queue not read" if queue is None else queue.counted + (
        f" ({unsent} alert{'s' if unsent != 1 else ''} not sent)" if unsent else "")
    failures = bool(queue and queue.failures)
    cards = [  # label, value, detail, colour of the card, colour of the detail
        ("Processed", f"{total.processed:,}", f"{total.valid:,} with a verdict", "", ""),
        ("Anomalous", f"{total.anomalous:,}", f"{_pct(total.anomaly_rate)} of verdicts",
         "red", ""),
        ("Low confidence", f"{total.low_confidence:,}", "sent to a person", "amber", ""),
        ("Invalid", f"{total.invalid:,}", "could not be judged", "grey", ""),
        ("Alerts sent", f"{total.alerts - unsent:,}", failed, "",
         "red-text" if failures else "muted" if queue is None else ""),
        ("Reviewed", f"{total.reviewed:,}",
         f"{total.disagreements} disagree with the model", "", ""),
    ]
    return '<div class="strip">' + "".join(
        f'<div class="card {tone}"><div class="label">{label}</div>'
        f'<div class="value">{value}</div><div class="sub {sub_tone}">{_e(sub)}</div></div>'
        for label, value, sub, tone, sub_tone in cards) + "</div>"


def _rate_cell(rate: float | None) -> str:
    if rate is None:
        return '<td class="num muted">-</td>'
    width = max(0.0, min(rate, 1.0)) * 100
    return (f'<td class="num rate"><span class="bar"><span style="width:{width:.1f}%">'
            f'</span></span>{_pct(rate)}</td>')


def _count_cell(value: int, tone: str = "") -> str:
    cls = f"num {tone}" if value and tone else "num" if value else "num muted"
    return f'<td class="{cls}">{value:,}</td>'


def _camera_table(table: Mapping[tuple[str, str], Counts], total: Counts) -> str:
    if not table:
        return '<p class="empty">No results in this period.</p>'
    head = ("<thead><tr><th>Line</th><th>Camera</th><th class=num>Processed</th>"
            "<th class=num>Anomalous</th><th class=num>Anomaly rate</th>"
            "<th class=num>Low confidence</th><th class=num>Invalid</th>"
            "<th class=num>Alerts</th><th class=num>Reviewed</th>"
            "<th class=num>Disagree</th><th>Last image</th></tr></thead>")
    rows = []
    previous_line = None
    for (line, camera), counts in table.items():
        first = line != previous_line
        previous_line = line
        rows.append(
            f'<tr class="{"first" if first else ""}"><td class="key">'
            f'{_e(line) if first else ""}</td><td>{_e(camera)}</td>'
            + _count_cell(counts.processed) + _count_cell(counts.anomalous, "red")
            + _rate_cell(counts.anomaly_rate) + _count_cell(counts.low_confidence, "amber")
            + _count_cell(counts.invalid, "grey") + _count_cell(counts.alerts)
            + _count_cell(counts.reviewed) + _count_cell(counts.disagreements, "strong")
            + f'<td class="time">{_e(_when(counts.last_seen))}</td></tr>')
    foot = ('<tfoot><tr><td>All</td><td></td>' + _count_cell(total.processed)
            + _count_cell(total.anomalous, "red") + _rate_cell(total.anomaly_rate)
            + _count_cell(total.low_confidence, "amber") + _count_cell(total.invalid, "grey")
            + _count_cell(total.alerts) + _count_cell(total.reviewed)
            + _count_cell(total.disagreements, "strong") + "<td></td></tr></tfoot>")
    return f'<table class="data">{head}<tbody>{"".join(rows)}</tbody>{foot}</table>'


# --- charts (inline SVG) ------------------------------------------------------------------

def _svg(width: int, height: int, body: str, label: str) -> str:
    return (f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" role="img" aria-label="{_e(label)}" '
            f'xmlns="http://www.w3.org/2000/svg">{body}</svg>')


def _rate_charts(records: Sequence[ResultRecord]) -> str:
    judged = [r for r in records if r.status != STATUS_INVALID]
    if not judged:
        return '<p class="empty">No images with a verdict in this period.</p>'
    start = min(r.captured_at for r in judged)
    end = max(r.captured_at for r in judged)
    width_s = bucket_seconds(start, end)
    origin = datetime.fromtimestamp(math.floor(start.timestamp() / width_s) * width_s,
                                    tz=start.tzinfo)
    n_buckets = int((end - origin).total_seconds() // width_s) + 1
    if n_buckets < _MIN_SLOTS:  # a short period sits at the right of a readable axis
        origin -= timedelta(seconds=(_MIN_SLOTS - n_buckets) * width_s)
        n_buckets = _MIN_SLOTS
    by_line: dict[str, list[list[int]]] = {}
    for record in judged:
        buckets = by_line.setdefault(record.line_id, [[0, 0] for _ in range(n_buckets)])
        index = int((record.captured_at - origin).total_seconds() // width_s)
        buckets[index][0] += 1
        buckets[index][1] += record.is_anomalous
    charts = [_rate_chart(line, buckets, origin, width_s)
              for line, buckets in sorted(by_line.items())]
    return f'<div class="charts">{"".join(charts)}</div>'


def _rate_chart(line: str, buckets: Sequence[Sequence[int]], origin: datetime,
                width_s: int) -> str:
    w, h, left, right, top, bottom = 540, 190, 44, 12, 14, 30
    plot_w, plot_h = w - left - right, h - top - bottom
    images = sum(b[0] for b in buckets)
    anomalies = sum(b[1] for b in buckets)
    overall = anomalies / images if images else 0.0
    peak = max((b[1] / b[0] for b in buckets if b[0]), default=0.0)
    y_max = next(cap for cap in _RATE_TOPS if cap >= max(peak, overall) - 1e-9)
    slot = plot_w / len(buckets)
    bar_w = max(min(slot * 0.7, _MAX_BAR), 1.0)
    parts = [_y_grid(left, top, plot_w, plot_h, y_max, percent=True)]
    for index, (count, anomalous) in enumerate(buckets):
        x = left + index * slot + (slot - bar_w) / 2
        if count == 0:
            continue
        rate = anomalous / count
        bar_h = plot_h * rate / y_max
        start = origin + timedelta(seconds=index * width_s)
        tip = (f"{_when(start)}: {anomalous} of {count} anomalous ({_pct(rate)})")
        parts.append(
            f'<rect x="{x:.1f}" y="{top + plot_h - bar_h:.1f}" '
            f'width="{bar_w:.1f}" height="{max(bar_h, 0):.1f}" fill="{RED}">'
            f"<title>{_e(tip)}</title></rect>")
        # a small tick shows a bucket with images but no anomalies
        if anomalous == 0:
            parts.append(f'<rect x="{x:.1f}" y="{top + plot_h - 2:.1f}" '
                         f'width="{bar_w:.1f}" height="2" fill="{SLATE}">'
                         f"<title>{_e(tip)}</title></rect>")
    y_overall = top + plot_h - plot_h * overall / y_max
    parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y_overall:.1f}" '
                 f'y2="{y_overall:.1f}" stroke="{INK}" stroke-dasharray="4 3" '
                 f'stroke-width="1"/>')
    for index in _label_indexes(len(buckets)):
        start = origin + timedelta(seconds=index * width_s)
        label = start.strftime("%H:%M:%S" if width_s < 60 else
                               "%H:%M" if width_s < 86400 else "%m-%d")
        x = left + (index + 0.5) * slot
        parts.append(f'<text x="{x:.1f}" y="{h - 10}" text-anchor="middle" '
                     f'class="tick">{label}</text>')
    heading = (f'<figcaption><b>{_e(line)}</b> <span class="muted">{anomalies} of {images} '
               f"anomalous, {_pct(overall)} overall &middot; buckets of "
               f"{_duration(width_s)}</span></figcaption>")
    return (f'<figure class="chart-box">{heading}'
            + _svg(w, h, "".join(parts), f"anomaly rate over time, line {line}")
            + "</figure>")


def _histograms(records: Sequence[ResultRecord], confidence_threshold: float,
                line_bands: Mapping[str, float]) -> str:
    judged = [r for r in records if r.status != STATUS_INVALID]
    if not judged:
        return '<p class="empty">No images with a verdict in this period.</p>'
    low_edge = 0.5 if all(r.confidence >= 0.5 for r in judged) else 0.0
    # The band the most judged images were held to is drawn; lines held to another say so.
    band_of = {r.line_id: line_bands.get(r.line_id, confidence_threshold) for r in judged}
    drawn = Counter(band_of[r.line_id] for r in judged).most_common(1)[0][0]
    cut = 0.5 + drawn
    others = sorted((line, band) for line, band in band_of.items() if band != drawn)
    confidence = _histogram(
        [(r.confidence, r.is_anomalous) for r in judged], low_edge, 1.0, 20,
        band=(low_edge, min(cut, 1.0)), marker=(cut, f"low confidence below {cut:.2f}", AMBER),
        x_label="confidence of the verdict", title="confidence histogram")
    threshold = median(r.threshold for r in judged) if judged else 0.5
    scores = _histogram(
        [(min(max(r.score, 0.0), 1.0), r.is_anomalous) for r in judged], 0.0, 1.0, 20,
        band=None, marker=(threshold, f"detector threshold {threshold:.2f}", INK),
        x_label="anomaly score (normalised)", title="score histogram")
    legend = (f'<div class="legend"><span><i style="background:{SLATE}"></i>normal verdict'
              f'</span><span><i style="background:{RED}"></i>anomalous verdict</span>'
              f'<span><i class="band"></i>low-confidence band</span></div>')
    if others:
        legend += ('<p class="note">The band drawn is that of most images here; these lines '
                   "have their own: " + ", ".join(
                       f"{_e(line)} below {0.5 + band:.2f}" for line, band in others)
                   + ".</p>")
    return (f'{legend}<div class="charts"><figure class="chart-box">{confidence}</figure>'
            f'<figure class="chart-box">{scores}</figure></div>')


def _histogram(values: Sequence[tuple[float, bool]], low: float, high: float, bins: int, *,
               band: tuple[float, float] | None, marker: tuple[float, str, str],
               x_label: str, title: str) -> str:
    w, h, left, right, top, bottom = 540, 220, 44, 12, 22, 44
    plot_w, plot_h = w - left - right, h - top - bottom
    normal = [0] * bins
    anomalous = [0] * bins
    step = (high - low) / bins
    for value, is_anomalous in values:
        index = min(max(int((value - low) / step), 0), bins - 1)
        (anomalous if is_anomalous else normal)[index] += 1
    y_max = 4 * _count_step(max(n + a for n, a in zip(normal, anomalous, strict=True)) / 4)

    def x_of(value: float) -> float:
        return left + plot_w * (value - low) / (high - low)

    parts = []
    if band and band[1] > band[0]:
        parts.append(f'<rect x="{x_of(band[0]):.1f}" y="{top}" '
                     f'width="{x_of(band[1]) - x_of(band[0]):.1f}" height="{plot_h}" '
                     f'fill="#fff3d6"/>')
    parts.append(_y_grid(left, top, plot_w, plot_h, y_max, percent=False))
    bar_w = plot_w / bins
    for index in range(bins):
        x = left + index * bar_w + 1
        base = float(top + plot_h)
        edge = low + index * step
        for count, colour, kind in ((normal[index], SLATE, "normal"),
                                    (anomalous[index], RED, "anomalous")):
            if not count:
                continue
            bar_h = plot_h * count / y_max
            base -= bar_h
            parts.append(f'<rect x="{x:.1f}" y="{base:.1f}" width="{bar_w - 2:.1f}" '
                         f'height="{bar_h:.1f}" fill="{colour}"><title>{count} {kind}, '
                         f'{edge:.3f}&ndash;{edge + step:.3f}</title></rect>')
    value, label, colour = marker
    if low <= value <= high:
        x = x_of(value)
        anchor = "end" if x > left + plot_w * 0.6 else "start"
        dx = -4 if anchor == "end" else 4
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top - 8}" y2="{top + plot_h}" '
                     f'stroke="{colour}" stroke-width="2" stroke-dasharray="5 3"/>'
                     f'<text x="{x + dx:.1f}" y="{top - 10 + 8}" text-anchor="{anchor}" '
                     f'class="mark" fill="{colour}">{_e(label)}</text>')
    for index in range(0, bins + 1, max(bins // 5, 1)):
        edge = low + index * step
        parts.append(f'<text x="{x_of(edge):.1f}" y="{top + plot_h + 16}" '
                     f'text-anchor="middle" class="tick">{edge:.2f}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{h - 6}" text-anchor="middle" '
                 f'class="axis">{_e(x_label)}</text>')
    return _svg(w, h, "".join(parts), title)


def _y_grid(left: float, top: float, plot_w: float, plot_h: float, y_max: float, *,
            percent: bool) -> str:
    parts = []
    for i in range(5):
        value = y_max * i / 4
        y = top + plot_h - plot_h * i / 4
        label = f"{value * 100:.0f}%" if percent else (
            f"{value:.0f}" if value == int(value) else f"{value:.1f}")
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'class="{"axis-line" if i == 0 else "grid"}"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" '
                     f'class="tick">{label}</text>')
    return "".join(parts)


def _count_step(value: float) -> int:
    """A whole-number grid step at or above `value`: 1-6, 8, then 10, 15, 20, 25, 30, 40,
    50, 60, 80 times a power of ten.

    >>> _count_step(0.75), _count_step(2.25), _count_step(5.25), _count_step(12.5)
    (1, 3, 6, 15)
    >>> _count_step(0), _count_step(700)
    (1, 800)
    """
    candidates = [1, 2, 3, 4, 5, 6, 8]
    magnitude = 10
    while candidates[-1] < value:
        candidates += [magnitude * k // 10 for k in (10, 15, 20, 25, 30, 40, 50, 60, 80)]
        magnitude *= 10
    return next(step for step in candidates if step >= value)


def _label_indexes(count: int, most: int = 7) -> list[int]:
    every = max(1, math.ceil(count / most))
    return list(range(0, count, every))


def _duration(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


# --- gallery, logs, tables ------------------------------------------------------------------

def _anchor(record: ResultRecord, index: int) -> str:
    return f"full-{index}-" + re.sub(r"[^A-Za-z0-9_-]", "", record.image_id)[:48]


def _safe_link(url: str) -> str:
    return url if url.startswith(("https://", "http://")) else ""


def _gallery(latest: Sequence[ResultRecord], images: Mapping[str, ReportImage]) -> str:
    if not latest:
        return '<p class="empty">No anomalies in this period.</p>'
    cards, boxes = [], []
    for index, record in enumerate(latest):
        image = images.get(record.image_id, ReportImage())
        photo = image_data_uri(image.photo, THUMB_SIDE) if image.photo else ""
        heat = image_data_uri(image.heatmap, THUMB_SIDE) if image.heatmap else ""
        anchor = _anchor(record, index)
        low = is_low_confidence(record)
        tiles = "".join(
            f'<img src="{uri}" alt="{_e(kind)} of image {_e(record.image_id)}" '
            f'width="{THUMB_SIDE}" height="{THUMB_SIDE}">' if uri else
            f'<div class="missing">{_e(kind)} not available</div>'
            for kind, uri in (("photo", photo), ("heatmap", heat)))
        badge = ('<span class="badge amber">low confidence</span>' if low else "")
        review = human_verdict(record)
        review_note = ("" if review is None else
                       '<span class="badge ok">confirmed by a person</span>' if review else
                       '<span class="badge strong">a person says normal</span>')
        cards.append(
            f'<a class="tile" href="#{anchor}"><div class="pair">{tiles}</div>'
            f'<div class="meta"><b>{_e(record.line_id)} / {_e(record.camera_id)}</b>'
            f'<span class="time">{_e(_when(record.captured_at))}'
            f'{" &middot; " + _e(record.client_image_id) if record.client_image_id else ""}'
            "</span>"
            f'<span>score {record.score:.2f} &middot; confidence {record.confidence:.2f}'
            f'</span>{badge}{review_note}</div></a>')
        boxes.append(_lightbox(record, image, anchor))
    return f'<div class="gallery">{"".join(cards)}</div>{"".join(boxes)}'


def _lightbox(record: ResultRecord, image: ReportImage, anchor: str) -> str:
    photo = image_data_uri(image.photo, FULL_SIDE) if image.photo else ""
    heat = image_data_uri(image.heatmap, FULL_SIDE) if image.heatmap else ""
    shown = "".join(
        f'<figure><img src="{uri}" alt="{_e(kind)} of image {_e(record.image_id)}">'
        f'<figcaption>{_e(kind)}</figcaption></figure>'
        for kind, uri in (("photo", photo), ("heatmap overlay", heat)) if uri)
    link = _safe_link(image.link)
    original = (f'<a href="{_e(link)}" target="_blank" rel="noopener">open the original'
                f"</a> (a signed link; it expires) &middot; " if link else "")
    area = _anomalous_area(record)
    score, threshold = apart(record.score, record.threshold, 3)
    details = (f"image {_e(record.image_id)} &middot; captured {_e(_when(record.captured_at))}"
               f" &middot; score {score} (threshold {threshold}) &middot; "
               f"confidence {record.confidence:.3f}"
               + (f" &middot; anomalous area {area:.2f}%" if area is not None else "")
               + (f" &middot; model {_e(record.model_version)}" if record.model_version else ""))
    return (f'<div class="lightbox" id="{anchor}"><a class="backdrop" href="#anomalies" '
            f'aria-label="close"></a><div class="sheet"><a class="close" href="#anomalies">'
            f'Close &times;</a><h3>{_e(record.line_id)} / {_e(record.camera_id)}</h3>'
            f'<div class="large">{shown or "<p>No image available.</p>"}</div>'
            f'<p class="muted">{details}</p><p class="muted">{original}'
            f'<code>{_e(record.s3_uri)}</code></p></div></div>')


def _anomalous_area(record: ResultRecord) -> float | None:
    """The anomaly's area in percent, or None where the record has none that reads as a
    number (an item edited by hand must not stop the report)."""
    for anomaly in record.anomalies:
        pixels = anomaly.get("PixelAnomaly") if anomaly.get("Name") == "anomaly" else None
        if isinstance(pixels, Mapping):
            try:
                area = float(pixels["TotalPercentageArea"])
            except (KeyError, TypeError, ValueError):
                return None
            return area if math.isfinite(area) else None
    return None


_REASONS = {
    "anomalous": ("anomalous", "red"),
    "anomalous_low_confidence": ("anomalous, low confidence", "red amber-edge"),
    "low_confidence": ("low confidence", "amber"),
    "invalid": ("invalid", "grey"),
}


def _alert_log(records: Sequence[ResultRecord], queue: FailureQueue | None,
               shown: int = 25, most: int = 500) -> str:
    alerted = sorted((r for r in records if r.alert_reason),
                     key=lambda r: r.captured_at, reverse=True)
    failures = queue.failures if queue else []
    unsent = queue.unsent if queue else frozenset()
    parts = []
    if alerted:
        head = ('<table class="data"><thead><tr><th>Captured</th><th>Line</th>'
                "<th>Camera</th><th>Image</th><th>Reason</th><th class=num>Score</th>"
                "<th class=num>Confidence</th><th>Review</th></tr></thead><tbody>")
        rows = [_alert_row(record, record.image_id in unsent) for record in alerted[:most]]
        parts.append(head + "".join(rows[:shown]) + "</tbody></table>")
        if len(rows) > shown:
            parts.append(f"<details><summary>{len(rows) - shown} older alerts</summary>"
                         + head + "".join(rows[shown:]) + "</tbody></table></details>")
        if len(alerted) > most:
            parts.append(f'<p class="muted">and {len(alerted) - most} more, not shown.</p>')
    else:
        parts.append('<p class="empty">No alerts in this period.</p>')
    if failures:
        rows_html = "".join(
            f'<tr><td class="time">{_e(_when_text(f.captured_at))}</td><td>{_e(f.line_id)}</td>'
            f'<td>{_e(f.camera_id)}</td><td class="id">{_e(f.image_id)}</td>'
            f'<td><span class="badge red">{_e(_failure_badge(f))}</span></td>'
            f'<td class="cause">{_e(f.cause[:300])}</td></tr>' for f in failures)
        parts.append(f'<h3 class="sub red-text">Workflow failures ({len(failures)}'
                     f'{" shown; there may be more" if queue and queue.capped else ""})</h3>'
                     '<p class="intro">Runs whose input is waiting in the workflow failure '
                     "queue: fix the cause, then redrive them with <code>linesight dlq</code>."
                     '</p><table class="data"><thead><tr><th>Captured</th><th>Line</th>'
                     "<th>Camera</th><th>Image</th><th>Error</th><th>Cause</th></tr></thead>"
                     f"<tbody>{rows_html}</tbody></table>")
    elif queue is None:
        parts.append('<p class="muted">The workflow failure queue was not read (no queue '
                     "URL is known), so failed runs, if any, are not listed.</p>")
    elif queue.capped:
        parts.append('<p class="muted">None of the workflow failures read are listed here; '
                     "the queue holds more than were read: see <code>linesight dlq list"
                     "</code>.</p>")
    return "".join(parts)


def _failure_badge(failure: Failure) -> str:
    if failure.alert_not_sent:
        return f"alert not sent: {failure.error}" if failure.error else "alert not sent"
    return failure.error or "failed"


def _alert_row(record: ResultRecord, unsent: bool = False) -> str:
    text, tone = _REASONS.get(record.alert_reason, (record.alert_reason, ""))
    if unsent:  # recorded, but its publish failed: it waits in the failure queue
        text, tone = f"{text}, not sent", "red"
    return (f'<tr><td class="time">{_e(_when(record.captured_at))}</td>'
            f"<td>{_e(record.line_id)}</td><td>{_e(record.camera_id)}</td>"
            f"{_image_cell(record)}"
            f'<td><span class="badge {tone}">{_e(text)}</span></td>'
            f'<td class="num">{record.score:.3f}</td>'
            f'<td class="num">{record.confidence:.3f}</td>'
            f"<td>{_e(_review_text(record))}</td></tr>")


def _image_cell(record: ResultRecord) -> str:
    """The image id, and the camera's own name for the file when it sent one."""
    client = (f'<div class="client">{_e(record.client_image_id)}</div>'
              if record.client_image_id else "")
    return f'<td class="id">{_e(record.image_id)}{client}</td>'


def _review_text(record: ResultRecord) -> str:
    verdict = human_verdict(record)
    if verdict is None:
        return ""
    return f"person: {record.review.get('label')}" + (" (disagrees)" if disagrees(record)
                                                       else "")


def _agreement(records: Sequence[ResultRecord]) -> str:
    table = agreement_by_line(records)
    if not table:
        return ('<p class="empty">Nobody has reviewed a result in this period. Review one '
                "with <code>linesight review IMAGE_ID --label normal|anomaly</code>.</p>")
    rows = []
    for line, a in table.items():
        judged = a.agree + a.disagree
        rate = a.disagree / judged if judged else None
        rows.append(f'<tr><td class="key">{_e(line)}</td>' + _count_cell(a.reviewed)
                    + _count_cell(a.agree) + _count_cell(a.false_alarms, "strong")
                    + _count_cell(a.misses, "strong") + _count_cell(a.no_verdict, "grey")
                    + (f'<td class="num">{_pct(rate)}</td>' if rate is not None else
                       '<td class="num muted">-</td>') + "</tr>")
    disagreeing = sorted((r for r in records if disagrees(r)),
                         key=lambda r: r.captured_at, reverse=True)
    detail = ""
    if disagreeing:
        detail = ('<h3 class="sub">Where they disagree</h3><table class="data"><thead><tr>'
                  "<th>Captured</th><th>Line</th><th>Camera</th><th>Image</th><th>Model</th>"
                  "<th>Person</th><th class=num>Score</th><th>Note</th></tr></thead><tbody>"
                  + "".join(
                      f'<tr><td class="time">{_e(_when(r.captured_at))}</td>'
                      f"<td>{_e(r.line_id)}</td><td>{_e(r.camera_id)}</td>"
                      f'{_image_cell(r)}<td>'
                      + ('<span class="badge red">anomalous</span>' if r.is_anomalous
                         else "normal")
                      + f'</td><td>{_e(r.review.get("label", ""))}</td>'
                      f'<td class="num">{r.score:.3f}</td>'
                      f'<td class="note">{_e(str(r.review.get("note", ""))[:200])}</td></tr>'
                      for r in disagreeing[:100]) + "</tbody></table>")
    return ('<table class="data"><thead><tr><th>Line</th><th class=num>Reviewed</th>'
            "<th class=num>Agree</th><th class=num>False alarms</th><th class=num>Missed "
            "defects</th><th class=num>No verdict</th><th class=num>Disagreement</th></tr>"
            f'</thead><tbody>{"".join(rows)}</tbody></table>'
            '<p class="muted small">False alarm: the model said anomalous, a person said '
            "normal. Missed defect: the model said normal, a person said anomaly.</p>"
            + detail)


def _invalid_table(records: Sequence[ResultRecord], most: int = 50) -> str:
    invalid = sorted((r for r in records if r.status == STATUS_INVALID),
                     key=lambda r: r.captured_at, reverse=True)
    if not invalid:
        return '<p class="empty">Every upload could be judged.</p>'
    rows = "".join(
        f'<tr><td class="time">{_e(_when(r.captured_at))}</td><td>{_e(r.line_id)}</td>'
        f'<td>{_e(r.camera_id)}</td>{_image_cell(r)}'
        f'<td><span class="badge grey">{_e(r.reason.split(":", 1)[0] or "invalid")}</span>'
        f' <span class="muted">{_e(r.reason.partition(":")[2].strip()[:200])}</span></td>'
        f"</tr>" for r in invalid[:most])
    return ('<table class="data"><thead><tr><th>Captured</th><th>Line</th><th>Camera</th>'
            f"<th>Image</th><th>Reason</th></tr></thead><tbody>{rows}</tbody></table>")


def _metrics_table(metrics: Mapping[str, float], total: Counts) -> str:
    """CloudWatch's figures beside the same counts taken from the records: they should
    agree, and when they do not, something dropped metrics or results."""
    from_records = {"ProcessedImageCount": total.processed,
                    "DetectedAnomalyCount": total.anomalous,
                    "LowConfidenceCount": total.low_confidence,
                    "InvalidImageCount": total.invalid, "AlertsSentCount": total.alerts}
    rows = []
    for name, value in metrics.items():
        ours = from_records.get(name)
        differs = ours is not None and abs(ours - value) > 1e-9
        rows.append(f"<tr><td>{_e(name)}</td><td class=num>{_number(value)}</td>"
                    + (f'<td class="num{" red" if differs else ""}">{ours:,}</td>'
                       if ours is not None else '<td class="num muted">-</td>') + "</tr>")
    return ('<table class="data narrow"><thead><tr><th>Metric</th>'
            "<th class=num>CloudWatch</th><th class=num>From the results</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


_STYLE = """
:root{--ink:#1f2937;--muted:#6b7280;--line:#e5e7eb;--bg:#f6f7f9;--red:#c62828;
--red-bg:#fdecea;--amber:#e69500;--amber-ink:#9a6200;--amber-bg:#fff3d6;--grey:#8a919c;
--grey-bg:#eef0f3}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1160px;margin:0 auto;padding:28px 28px 40px}
header{margin-bottom:18px}
.brand{font-size:12px;letter-spacing:.12em;text-transform:uppercase;color:var(--muted);
font-weight:600}
h1{font-size:26px;margin:2px 0 4px}
.period{margin:0 0 10px;color:var(--muted)}
nav{display:flex;gap:16px;flex-wrap:wrap;font-size:13px}
nav a{color:var(--ink);text-decoration:none;border-bottom:1px solid var(--line)}
nav a:hover{border-color:var(--ink)}
h2{font-size:18px;margin:0 0 2px}
h3.sub{font-size:14px;margin:18px 0 6px}
section{background:#fff;border:1px solid var(--line);border-radius:10px;padding:18px 20px;
margin:16px 0}
.intro{margin:0 0 12px;color:var(--muted);font-size:13px}
.strip{display:grid;grid-template-columns:repeat(6,1fr);gap:12px}
.card{background:#fff;border:1px solid var(--line);border-top:4px solid var(--ink);
border-radius:10px;padding:12px 14px}
.card.red{border-top-color:var(--red)}.card.amber{border-top-color:var(--amber)}
.card.grey{border-top-color:var(--grey)}
.card .label{font-size:12px;color:var(--muted);text-transform:uppercase;letter-spacing:.05em}
.card .value{font-size:28px;font-weight:650;font-variant-numeric:tabular-nums;margin:2px 0}
.card.red .value{color:var(--red)}.card.amber .value{color:var(--amber-ink)}
.card.grey .value{color:var(--grey)}
.card .sub{font-size:12px;color:var(--muted)}
table.data{border-collapse:collapse;width:100%;font-size:13px}
table.data.narrow{width:auto;min-width:360px}
.data th{text-align:left;font-weight:600;color:var(--muted);font-size:12px;
border-bottom:2px solid var(--line);padding:6px 10px;white-space:nowrap}
.data td{padding:6px 10px;border-bottom:1px solid var(--line);vertical-align:top}
.data tr.first td{border-top:1px solid #d1d5db}
.data tbody tr:hover td{background:#fafbfc}
.data tfoot td{font-weight:650;border-top:2px solid var(--line);border-bottom:0}
.num{text-align:right !important;font-variant-numeric:tabular-nums;white-space:nowrap}
.key{font-weight:600}
td.red{color:var(--red);font-weight:600}td.amber{color:var(--amber-ink);font-weight:600}
td.grey{color:var(--grey);font-weight:600}td.strong{font-weight:700}
.muted{color:var(--muted)}.small{font-size:12px}.red-text{color:var(--red)}
.time{white-space:nowrap;color:var(--muted);font-variant-numeric:tabular-nums}
.id{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px;
word-break:break-all}
.cause,.note{color:var(--muted);font-size:12px}
.client{font-family:inherit;color:var(--muted);font-size:11px}
.rate{min-width:130px}
.bar{display:inline-block;width:56px;height:6px;background:var(--grey-bg);border-radius:3px;
margin-right:8px;vertical-align:middle;overflow:hidden}
.bar span{display:block;height:100%;background:var(--red)}
.badge{display:inline-block;padding:1px 8px;border-radius:999px;font-size:12px;
white-space:nowrap;background:var(--grey-bg);color:var(--ink)}
.badge.red{background:var(--red-bg);color:var(--red)}
.badge.amber{background:var(--amber-bg);color:var(--amber-ink)}
.badge.amber-edge{box-shadow:inset 0 0 0 1px var(--amber)}
.badge.grey{background:var(--grey-bg);color:#4b5563}
.badge.ok{background:#eef2f7;color:var(--ink)}.badge.strong{background:var(--ink);color:#fff}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:14px}
.chart-box{margin:0;border:1px solid var(--line);border-radius:8px;padding:10px}
.chart-box figcaption{font-size:13px;margin-bottom:4px}
svg.chart{display:block;width:100%;height:auto;max-width:100%}
svg .grid{stroke:#eef0f3;stroke-width:1}svg .axis-line{stroke:#c7ccd4;stroke-width:1}
svg .tick{font-size:11px;fill:#6b7280}svg .axis{font-size:12px;fill:#4b5563}
svg .mark{font-size:12px;font-weight:600}
.legend{display:flex;gap:18px;font-size:12px;color:var(--muted);margin-bottom:8px}
.legend i{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:6px;
vertical-align:-2px}
.legend i.band{background:var(--amber-bg);box-shadow:inset 0 0 0 1px var(--amber)}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:12px}
.tile{display:block;color:inherit;text-decoration:none;border:1px solid var(--line);
border-left:4px solid var(--red);border-radius:8px;padding:8px;background:#fff}
.tile:hover{box-shadow:0 2px 10px rgba(0,0,0,.08)}
.pair{display:flex;gap:6px}
.pair img,.missing{width:calc(50% - 3px);height:auto;aspect-ratio:1;object-fit:cover;
border-radius:4px;background:var(--grey-bg)}
.missing{display:flex;align-items:center;justify-content:center;color:var(--muted);
font-size:12px}
.meta{display:flex;flex-wrap:wrap;gap:2px 10px;margin-top:6px;font-size:12px;
align-items:center}
.meta b{font-size:13px;margin-right:auto}
.meta .time{width:100%}
.lightbox{display:none;position:fixed;inset:0;z-index:10;align-items:center;
justify-content:center}
.lightbox:target{display:flex}
.backdrop{position:absolute;inset:0;background:rgba(17,24,39,.72)}
.sheet{position:relative;background:#fff;border-radius:10px;padding:16px 20px;
max-width:min(1100px,94vw);max-height:94vh;overflow:auto}
.sheet h3{margin:0 0 10px}
.close{position:absolute;right:16px;top:14px;color:var(--ink);text-decoration:none;
font-size:13px}
.large{display:flex;gap:12px;flex-wrap:wrap}
.large figure{margin:0}.large img{height:min(440px,60vh);width:auto;max-width:44vw;
object-fit:contain;border-radius:6px;display:block;background:var(--grey-bg)}
.large figcaption{font-size:12px;color:var(--muted)}
.empty{color:var(--muted);font-style:italic;margin:4px 0}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px;
background:var(--bg);padding:1px 4px;border-radius:4px;word-break:break-all}
details{margin-top:8px}summary{cursor:pointer;color:var(--muted);font-size:13px;
margin:6px 0}
footer{color:var(--muted);font-size:12px;margin-top:18px;text-align:center}
@media (max-width:900px){.strip{grid-template-columns:repeat(3,1fr)}}
@media print{body{background:#fff}section{break-inside:avoid}.lightbox{display:none}}
"""
