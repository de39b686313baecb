"""CLI: link settings, ddla report and ddla bench — bad input gives one line, a help hint and a
non-zero exit; good input writes the report, TensorBoard files and bench records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ddla.cli import app
from tests.rundir_factory import write_run_dir

runner = CliRunner()


def _assert_clean_error(args: list[str], needle: str, code: int) -> None:
    result = runner.invoke(app, args)
    out = result.output
    assert result.exit_code == code, out
    assert "Traceback" not in out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert lines[0].startswith("error:") and needle in lines[0], out
    assert any(ln.startswith("help:") for ln in lines), out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--set", "comm.link=wan-1000"], "comm.link: unknown link profile 'wan-1000'"),
        (["--set", "comm.link=-100mbit:25ms"], "bandwidth must be > 0"),
        (["--set", "comm.link=100mbit:-25ms"], "latency must be a finite number >= 0"),
        (["--agents", "2", "--set", "comm.link_overrides=2=edge"], "agent 2 does not exist"),
        (["--set", "comm.link_overrides=1=nowhere"], "unknown link profile 'nowhere'"),
        (["--set", "comm.clock=sundial"], "comm.clock: unknown clock 'sundial'"),
    ],
)
def test_bad_link_settings(tmp_path: Path, args: list[str], needle: str) -> None:
    _assert_clean_error(["run", "--out", str(tmp_path / "run"), *args], needle, 2)
    assert not (tmp_path / "run" / "summary.json").exists()


def test_bench_bad_input(tmp_path: Path) -> None:
    base = ["bench", "--out", str(tmp_path / "b")]
    _assert_clean_error([*base, "--strategy", "allreduce", "--link", "moon"], "moon", 2)
    _assert_clean_error([*base, "--strategy", "allreduce", "--clock", "sundial"], "sundial", 2)
    _assert_clean_error([*base, "--strategy", "allreduce,every"], "section.key=value", 2)
    _assert_clean_error([*base, "--strategy", "allreduce", "--target", "2"], "target", 2)


def test_report_on_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    _assert_clean_error(["report", str(tmp_path)], "is not a ddla run directory", 3)
    _assert_clean_error(["report", str(tmp_path / "missing")], "does not exist", 3)


def test_report_command_writes_page_and_tensorboard(tmp_path: Path) -> None:
    run = write_run_dir(tmp_path / "run")
    result = runner.invoke(app, ["report", str(run), "--tensorboard"])
    assert result.exit_code == 0, result.output
    assert (run / "report.html").is_file() and (run / "plots" / "by_bytes.png").is_file()
    assert sorted(p.name for p in (run / "tb").iterdir()) == [
        "agent0",
        "agent1",
        "agent2",
        "global",
    ]
    assert "report.html" in result.output


@pytest.mark.e2e
def test_bench_end_to_end_on_a_virtual_wan(tmp_path: Path) -> None:
    """Two real runs (2 agents, digits) on a virtual wan-100: reports, record, ratio."""
    out = tmp_path / "bench"
    args = ["bench", "--strategy", "allreduce", "--strategy", "allreduce,data.batch_size=128"]
    args += ["--link", "wan-100", "--agents", "2", "--dataset", "digits", "--steps", "40"]
    args += [
        "--eval-every",
        "20",
        "--target",
        "0.5",
        "--out",
        str(out),
        "--set",
        "tensorboard=true",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "bench.json").read_text())
    rows = record["results"]
    assert [r["label"] for r in rows] == ["allreduce", "allreduce,data.batch_size=128"]
    for row in rows:
        run = Path(row["run_dir"])
        assert (run / "report.html").is_file() and (run / "tb" / "global").is_dir()
        summary = json.loads((run / "summary.json").read_text())
        assert summary["link"]["profile"] == "wan-100" and summary["link"]["clock"] == "virtual"
        # Virtual clock: the modelled link time is on the clock, not slept.
        assert summary["link"]["modelled_s"] > 0 and row["wall_s"] >= summary["link"]["modelled_s"]
        assert row["clock"] == "virtual" and 0 < row["utilization"] < 1
    assert rows[0]["speedup"] == 1.0
    assert "time to target" in result.output
