"""End to end: report.html renders its plots and numbers in headless Chromium (Debian)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ddla.report import write_report

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = (
    "--headless",
    "--no-sandbox",  # tests may run as root, where Chromium refuses its sandbox
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    )


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(run_dir: Path, tmp_path: Path) -> None:
    page = write_report(run_dir)
    url = page.resolve().as_uri()
    dom = _chromium(tmp_path, "--dump-dom", url).stdout
    # The page's own load handler counts images that decoded to a non-empty bitmap.
    match = re.search(r'<body[^>]*data-images-rendered="(\d+)"', dom)
    assert match is not None, dom[:500]
    assert int(match.group(1)) == 4
    assert "0.8734" in dom and "wan-100" in dom and "virtual" in dom
    shot = run_dir / "report.png"
    _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,2000", url)
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 20_000  # a blank page is a few KB


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_profiled_run_report_shows_the_timeline(profiled_run_dir: Path, tmp_path: Path) -> None:
    """A real profiled run (tests/profile_run.py): the timeline decodes, its numbers are there."""
    import json

    page = write_report(profiled_run_dir)
    url = page.resolve().as_uri()
    dom = _chromium(tmp_path, "--dump-dom", url).stdout
    match = re.search(r'<body[^>]*data-images-rendered="(\d+)"', dom)
    assert match is not None, dom[:500]
    assert int(match.group(1)) == 5  # the four plots and the timeline
    assert re.search(r'<img[^>]*id="timeline"', dom)
    assert "Profile (steps 0 to 19)" in dom
    summary = json.loads((profiled_run_dir / "summary.json").read_text())
    for agent in summary["comm"]["per_agent"]:
        cell = re.search(rf'data-key="profile\.{agent["rank"]}\.bytes_sent">([\d,]+)<', dom)
        assert cell is not None and int(cell.group(1).replace(",", "")) == agent["bytes_sent"]
