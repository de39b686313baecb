"""CLI commands that need no agents: help text, partition table."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from ddla.cli import app

runner = CliRunner()


def test_run_help_documents_every_flag() -> None:
    out = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "200"}).output
    for flag in ("--agents", "--strategy", "--dataset", "--model", "--partition", "--steps",
                 "--out", "--config", "--set", "--resume", "--checkpoint-every"):  # fmt: skip
        assert flag in out, flag


def test_partition_prints_per_agent_histogram() -> None:
    result = runner.invoke(
        app,
        ["partition", "--dataset", "digits", "--agents", "5", "--partition", "shards:2"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    rows = [ln for ln in result.output.splitlines() if re.match(r"^\s*[0-4]\s+\d+\s", ln)]
    assert len(rows) == 5, result.output


def test_partition_bad_spec_is_one_clean_line() -> None:
    result = runner.invoke(app, ["partition", "--dataset", "digits", "--partition", "shards:x"])
    assert result.exit_code == 2
    assert result.output.startswith("error:") and "Traceback" not in result.output
