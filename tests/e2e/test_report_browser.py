"""The report in a real browser: Debian's headless Chromium loads it with the network
switched off, and we check there are no console or load errors, that the charts and the
images render, and save a screenshot under the test's temp dir.

How errors are seen: a copy of the page gets a tiny probe script (the report itself has
none) that records `error` events (including images or anything else that fails to load)
and `console.error` calls, then after `load` writes what it saw, the number of charts and
every image's natural size into the DOM, which `--dump-dom` prints. A control page with a
broken image and a console error proves the probe catches them.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from pipeline.report import RED, build_report
from tests.unit.test_report import sample_inputs

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
         # no network at view time: any host lookup fails, so a fetch would be an error
         "--host-resolver-rules=MAP * ~NOTFOUND")

PROBE_HEAD = """<script>window.__errors=[];
window.addEventListener('error',function(e){var t=e.target;
__errors.push(t&&t!==window?'failed to load '+(t.src||t.href||t.tagName):String(e.message));
},true);
var __ce=console.error;console.error=function(){
__errors.push('console.error: '+Array.prototype.join.call(arguments,' '));
__ce.apply(console,arguments);};</script>"""
PROBE_TAIL = """<script>window.addEventListener('load',function(){
var s={errors:__errors,charts:document.querySelectorAll('svg.chart').length,
bars:document.querySelectorAll('svg.chart rect').length,
images:Array.prototype.map.call(document.images,function(i){
return {src:i.getAttribute('src').slice(0,22),w:i.naturalWidth,h:i.naturalHeight,
shown:i.getBoundingClientRect().width};})};
var p=document.createElement('pre');p.id='probe-status';p.textContent=JSON.stringify(s);
document.body.appendChild(p);});</script>"""


@pytest.fixture(scope="module")
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (apt-get install -y chromium); "
                    ".ci/run installs it, so this runs in CI")
    return CHROMIUM


def run(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=90, check=False)


def probe(chromium: str, page: str, folder: Path) -> dict[str, Any]:
    """Load a probed copy of `page` and return what the probe saw."""
    probed = page.replace("<head>", "<head>" + PROBE_HEAD, 1).replace(
        "</body>", PROBE_TAIL + "</body>", 1)
    path = folder / "probed.html"
    path.write_text(probed, encoding="utf-8")
    done = run(chromium, folder / "profile-probe", "--dump-dom", path.as_uri())
    found = re.search(r'<pre id="probe-status">(.*?)</pre>', done.stdout, re.S)
    assert found, f"the probe wrote nothing; chromium said:\n{done.stderr[-2000:]}"
    return json.loads(html.unescape(found[1]))


def console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


@pytest.fixture(scope="module")
def report_page(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    records, failures, images = sample_inputs()
    page = build_report(records, failures=failures, images=images,
                        metrics={"ProcessedImageCount": 8.0, "EndToEndLatency, mean (ms)": 2150.5})
    folder = tmp_path_factory.mktemp("report")
    (folder / "report.html").write_text(page, encoding="utf-8")
    return page, folder


def test_report_renders_without_errors(chromium: str, report_page: tuple[str, Path]) -> None:
    page, folder = report_page

    status = probe(chromium, page, folder)

    assert status["errors"] == []
    assert status["charts"] == 4  # a rate chart per line (2) and two histograms
    assert status["bars"] > 10
    # 3 anomalies: photo + heatmap thumbnails (shown) and the large views (hidden)
    assert len(status["images"]) == 12
    for image in status["images"]:
        assert image["src"].startswith("data:image/jpeg"), image
        assert image["w"] > 0 and image["h"] > 0, image
    assert sum(image["shown"] > 0 for image in status["images"]) == 6


def test_screenshot_shows_the_page(chromium: str, report_page: tuple[str, Path]) -> None:
    _, folder = report_page
    shot = folder / "report.png"

    done = run(chromium, folder / "profile-shot", f"--screenshot={shot}",
               "--window-size=1280,2400", (folder / "report.html").as_uri())

    assert shot.is_file(), done.stderr[-2000:]
    assert console_lines(done.stderr) == []
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 2400)
    red = tuple(int(RED[i:i + 2], 16) for i in (1, 3, 5))
    colours = image.getcolors(maxcolors=1 << 20) or []
    reds = sum(count for count, rgb in colours
               if all(abs(a - b) <= 8 for a, b in zip(rgb, red, strict=True)))
    assert reds > 500, "no red bars or anomaly numbers in the screenshot"
    assert len(colours) > 1000, "the screenshot is nearly blank"
    print(f"screenshot: {shot}")


def test_the_large_view_opens_without_script(chromium: str,
                                              report_page: tuple[str, Path]) -> None:
    _, folder = report_page
    shot = folder / "lightbox.png"
    url = (folder / "report.html").as_uri() + "#full-0-img-007"

    run(chromium, folder / "profile-lightbox", f"--screenshot={shot}",
        "--window-size=1280,900", url)

    # the backdrop darkens the page behind the large images
    histogram = Image.open(shot).convert("L").histogram()
    assert sum(histogram[:90]) > 0.3 * sum(histogram)


def test_the_probe_catches_a_broken_page(chromium: str, tmp_path: Path) -> None:
    broken = ("<!DOCTYPE html><html><head></head><body><img src=\"missing.png\">"
              "<img src=\"https://example.invalid/x.png\">"
              "<script>console.error('boom')</script></body></html>")

    status = probe(chromium, broken, tmp_path)

    assert any("missing.png" in error for error in status["errors"])
    assert any("example.invalid" in error for error in status["errors"])
    assert "console.error: boom" in status["errors"]
