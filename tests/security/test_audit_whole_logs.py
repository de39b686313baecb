"""Whole-log completeness of ``ddla audit verify`` (issue 10, item 8): a deleted, swapped or
duplicated agent log, and a log without its ``leave``, are named; line checks alone said
"intact" for all of them."""

from __future__ import annotations

import shutil

import pytest
from typer.testing import CliRunner

from ddla.cli import app
from ddla.security.audit import AuditLog, audit_key, verify

SECRET = b"s" * 32


@pytest.fixture
def finished_run(tmp_path):
    """A finished 3-agent run: config.yaml, summary.json, and each agent's join ... leave."""
    (tmp_path / "config.yaml").write_text("agents: 3\n")
    (tmp_path / "summary.json").write_text("{}")
    for agent in range(3):
        log = AuditLog.for_run(tmp_path, agent=agent, key=audit_key(SECRET))
        log.append("join", members=[0, 1, 2], secret="abcd1234")
        log.append("sync", step=1)
        log.append("leave", secure_rounds=1)
    return tmp_path


def _kinds(report) -> list[tuple[str, str]]:
    return [(p.file.rsplit("/", 1)[-1], p.kind) for p in report.problems]


def test_an_intact_finished_run_verifies(finished_run):
    report = verify(finished_run, secret=SECRET)
    assert report.ok and not report.notes


def test_a_deleted_log_is_named(finished_run):
    (finished_run / "audit" / "agent2.jsonl").unlink()
    (finished_run / "audit" / "agent2.head").unlink()
    report = verify(finished_run, secret=SECRET)
    assert not report.ok
    assert ("agent2.jsonl", "missing") in _kinds(report)
    assert "member of the run" in str(report.problems[0])


def test_a_deleted_log_is_found_from_the_join_records_without_config(finished_run):
    (finished_run / "config.yaml").unlink()
    (finished_run / "audit" / "agent1.jsonl").unlink()
    (finished_run / "audit" / "agent1.head").unlink()
    assert ("agent1.jsonl", "missing") in _kinds(verify(finished_run))


def test_one_log_copied_over_another_is_named(finished_run):
    audit = finished_run / "audit"
    shutil.copy(audit / "agent0.jsonl", audit / "agent1.jsonl")
    shutil.copy(audit / "agent0.head", audit / "agent1.head")
    report = verify(finished_run, secret=SECRET)
    kinds = _kinds(report)
    assert ("agent1.jsonl", "swapped") in kinds and ("agent1.jsonl", "duplicated") in kinds
    assert not report.ok


def test_two_logs_swapped_are_named(finished_run):
    audit = finished_run / "audit"
    for ext in ("jsonl", "head"):
        (audit / f"agent0.{ext}").rename(audit / f"tmp.{ext}")
        (audit / f"agent1.{ext}").rename(audit / f"agent0.{ext}")
        (audit / f"tmp.{ext}").rename(audit / f"agent1.{ext}")
    kinds = _kinds(verify(finished_run, secret=SECRET))
    assert ("agent0.jsonl", "swapped") in kinds and ("agent1.jsonl", "swapped") in kinds


def test_a_log_of_a_finished_run_without_leave_is_a_problem(finished_run):
    # The head file is rewritten too, so only the missing 'leave' betrays the cut.
    path = finished_run / "audit" / "agent1.jsonl"
    lines = path.read_text().splitlines()[:-1]
    path.write_text("\n".join(lines) + "\n")
    (finished_run / "audit" / "agent1.head").unlink()
    report = verify(finished_run)
    assert ("agent1.jsonl", "removed") in _kinds(report)


def test_an_unfinished_run_is_reported_as_such_not_as_tampering(finished_run):
    (finished_run / "summary.json").unlink()
    AuditLog.for_run(finished_run, agent=2, key=audit_key(SECRET)).append("join", members=[0])
    report = verify(finished_run, secret=SECRET)
    assert report.ok
    assert any("did not finish" in n and "agent2.jsonl" in n for n in report.notes)


def test_cli_names_a_deleted_log(finished_run):
    (finished_run / "audit" / "agent2.jsonl").unlink()
    result = CliRunner().invoke(app, ["audit", "verify", str(finished_run)])
    assert result.exit_code == 6
    assert "agent2.jsonl: missing" in result.output
