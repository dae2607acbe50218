"""The HTML report in a real headless Chromium (Debian's ``chromium``): the page loads nothing from outside,
and a screenshot shows both charts drawn — bars in Paheko's and Recyclic's colours, the longest kg bar as
long as the chart's full scale, and a Recyclic bar shorter than Paheko's where something is not forwarded.
Skips when Chromium is not installed (``.ci/run`` installs it when it can)."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import zlib
from datetime import date
from pathlib import Path

import pytest

from receiver.ledger import Ledger
from receiver.report.html import PAHEKO_COLOUR, RECYCLIC_COLOUR, render_html
from receiver.report.ledger import load_sessions
from receiver.report.reconcile import reconcile
from tests.report_support import fill_ledger

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--hide-scrollbars", "--force-device-scale-factor=1"]
KG_BAR_SCALE = 1000 - 230 - 110  # kg_chart(width=1000): the largest figure spans this many pixels


def read_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and rows of RGB(A) pixels of an 8-bit, non-interlaced PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    rows, previous = [], bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 255
        rows.append(bytes(line) if channels == 3 else bytes(b for j, b in enumerate(line) if j % 4 != 3))
        previous = line
    return width, height, rows


def longest_run(rows: list[bytes], colour: str) -> tuple[int, int]:
    """The longest horizontal run of exactly ``colour`` in any row, and how many pixels have it."""
    rgb = bytes.fromhex(colour.lstrip("#"))
    pattern = re.compile(b"(?:" + re.escape(rgb) + b")+")
    best = count = 0
    for row in rows:
        for match in pattern.finditer(row):
            if match.start() % 3 == 0:
                best = max(best, (match.end() - match.start()) // 3)
                count += (match.end() - match.start()) // 3
    return best, count


@pytest.fixture(scope="module")
def month_page(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("html")
    ledger = Ledger(f"sqlite:///{tmp / 'l.sqlite'}")
    ledger.migrate()
    days = [date(2025, 9, d) for d in range(1, 31) if date(2025, 9, d).weekday() != 0]
    fill_ledger(ledger, days, 15, unfinished={3: "held"})
    report = reconcile("shop", load_sessions(ledger, "shop", date(2025, 9, 1), date(2025, 9, 30)),
                       date(2025, 9, 1), date(2025, 9, 30))
    ledger.close()
    page = tmp / "septembre.html"
    page.write_text(render_html(report), encoding="utf-8")
    return report, page


def test_page_is_self_contained(month_page):
    report, page = month_page
    html = page.read_text(encoding="utf-8")
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    assert not re.search(r"""(src|href)\s*=|@import|url\(|<script|<link""", html, re.I)
    assert report.verdict in html.replace("&#x27;", "'")
    weighed = [row for row in report.categories if row.paheko.grams or row.forwarded.grams]
    assert html.count("<rect") == 2 + 2 * len(weighed) + 2 * len(report.days)  # backgrounds + two bars each


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian package 'chromium')")
def test_charts_render_in_headless_chromium(month_page, tmp_path):
    report, page = month_page
    shot = tmp_path / "report.png"
    profile = tmp_path / "profile"
    result = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}", "--window-size=1200,1500",
         page.as_uri()],
        capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)})
    assert shot.exists(), result.stderr[-2000:]
    if os.environ.get("REPORT_SCREENSHOT"):  # keep it to look at
        shutil.copy(shot, os.environ["REPORT_SCREENSHOT"])
    width, height, rows = read_png(shot.read_bytes())
    assert (width, height) == (1200, 1500)
    blue_run, blue = longest_run(rows, PAHEKO_COLOUR)
    green_run, green = longest_run(rows, RECYCLIC_COLOUR)
    # the heaviest category's Paheko bar spans the whole scale (±1 px of anti-aliasing at its ends)
    assert abs(blue_run - KG_BAR_SCALE) <= 2, blue_run
    # Recyclic's bar for it is shorter: one session is held, so not all its kilos are in Recyclic
    heaviest = report.categories[0]
    assert 0 < heaviest.forwarded.grams < heaviest.paheko.grams
    expected = KG_BAR_SCALE * heaviest.forwarded.grams / heaviest.paheko.grams
    assert abs(green_run - expected) <= 3, (green_run, expected)
    # many more coloured pixels than the four legend swatches: the bars of both charts are there
    assert blue > 20_000 and green > 20_000, (blue, green)
    blank = sum(1 for row in rows if len(set(row)) == 1)
    assert blank < height * 0.6
