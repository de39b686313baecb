"""profile.* settings: the window's parsing and every refusal (one line, a help hint)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ddla.cli import app
from ddla.config import RunConfig
from ddla.errors import ConfigError
from ddla.profile import ProfileConfig, parse_steps


def test_window_parses_and_clips_to_the_run() -> None:
    assert parse_steps("0:20") == (0, 20)
    assert parse_steps(" 5:7 ") == (5, 7)
    assert ProfileConfig(steps="10:30").window(total_steps=100) == (10, 30)
    assert ProfileConfig(steps="10:30").window(total_steps=15) == (10, 15)
    assert ProfileConfig(enabled=True).window(total_steps=8) == (0, 8)  # default 0:20


def test_a_window_turns_profiling_on() -> None:
    assert not RunConfig.load(None, []).profile.enabled
    cfg = RunConfig.load(None, ["profile.steps=3:9"])
    assert cfg.profile.enabled and cfg.profile.steps == "3:9"
    assert RunConfig.load(None, ["profile.enabled=true"]).profile.steps is None


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("20", "is not a window A:B"),
        ("a:b", "is not a window A:B"),
        ("1:2:3", "is not a window A:B"),
        ("-1:5", "counted from 0"),
        ("9:3", "ends before it starts"),
        ("4:4", "ends before it starts"),
    ],
)
def test_malformed_windows_are_refused(spec: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as info:
        RunConfig.load(None, [f"profile.steps={spec}"])
    assert "\n" not in str(info.value) and info.value.help


def test_a_window_past_the_runs_end_is_refused_before_agents_start() -> None:
    with pytest.raises(ConfigError, match="only 10 steps") as info:
        RunConfig.load(None, ["train.steps=10", "profile.steps=10:20"])
    assert "profile.steps=0:10" in info.value.help
    with pytest.raises(ConfigError, match="only 5 steps"):
        ProfileConfig(enabled=True, steps="7:9").window(total_steps=5)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--set", "profile.steps=nope"], "profile.steps='nope' is not a window A:B"),
        (["--profile", "--steps", "5", "--set", "profile.steps=5:9"], "only 5 steps"),
    ],
)
def test_cli_refuses_with_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    result = CliRunner().invoke(app, ["run", "--out", str(tmp_path / "run"), *args])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert lines[0].startswith("error:") and needle in lines[0], result.output
    assert any(ln.startswith("help:") for ln in lines) and "Traceback" not in result.output
    assert not (tmp_path / "run" / "summary.json").exists()
