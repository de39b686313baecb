"""Reports: plots and a self-contained HTML page from a run directory; bad directories."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from ddla.errors import DataError
from ddla.report import load_run, write_report
from ddla.report.plots import time_rows

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_load_run_reads_the_documented_format(run_dir: Path) -> None:
    run = load_run(run_dir)
    assert run.agents() == [0, 1, 2]
    assert [r["step"] for r in run.series("global")] == [50, 100, 150, 200, 250, 300]
    assert run.clock == "virtual" and run.link == "wan-100"
    assert "strategy: diloco" in run.config_text


def test_time_split_waiting_is_what_is_left(run_dir: Path) -> None:
    rows = time_rows(load_run(run_dir))
    # Agent wall time comes from its last metrics line (1.5 s * 6 evaluations).
    assert [r["rank"] for r in rows] == [0, 1, 2]
    assert rows[1]["wall_s"] == pytest.approx(9.0)
    assert rows[1]["compute_s"] == 6.0 and rows[1]["comm_s"] == 2.0
    assert rows[1]["wait_s"] == pytest.approx(1.0)


def test_write_report_draws_plots_and_a_self_contained_page(run_dir: Path) -> None:
    page = write_report(run_dir)
    assert page == run_dir / "report.html"
    for name in ("by_step", "by_wall", "by_bytes", "time_split"):
        data = (run_dir / "plots" / f"{name}.png").read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5_000
    text = page.read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    assert len(images) == 4
    assert all(base64.b64decode(img).startswith(PNG_MAGIC) for img in images)
    # Nothing is fetched from outside: no external src/href.
    assert not re.search(r'(src|href)="(https?:|//|file:)', text)
    assert 'data-key="final.accuracy">0.8734<' in text
    assert "virtual clock" in text and "wan-100" in text
    assert 'data-key="total.compute utilization">0.7778<' in text
    assert not (run_dir / "report.html.tmp").exists()


def test_report_without_metrics_lines_still_renders(tmp_path: Path, run_dir: Path) -> None:
    (run_dir / "metrics.jsonl").unlink()
    text = write_report(run_dir).read_text()
    assert text.count("data:image/png;base64,") == 4


@pytest.mark.parametrize(
    ("setup", "fragment"),
    [
        (lambda d: None, "does not exist"),
        (lambda d: d.mkdir(), "is not a ddla run directory"),
        (lambda d: (d.mkdir(), (d / "summary.json").write_text("{oops")), "unreadable summary"),
        (lambda d: (d.mkdir(), (d / "summary.json").write_text("[1]")), "not a ddla summary"),
    ],
)
def test_not_a_run_directory(tmp_path: Path, setup, fragment: str) -> None:
    target = tmp_path / "somewhere"
    setup(target)
    with pytest.raises(DataError, match=fragment) as info:
        write_report(target)
    assert info.value.help and info.value.exit_code == 3


def test_corrupt_metrics_line(run_dir: Path) -> None:
    with (run_dir / "metrics.jsonl").open("a") as fh:
        fh.write("{not json\n")
    with pytest.raises(DataError, match=r"metrics.jsonl:\d+: not a JSON line"):
        load_run(run_dir)
