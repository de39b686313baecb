import json

import pytest

from ddla.security.audit import AuditLog, audit_key, verify

SECRET = b"r" * 32


@pytest.fixture
def run_dir(tmp_path):
    for agent in (0, 1):
        log = AuditLog.for_run(tmp_path, agent=agent, key=audit_key(SECRET))
        for i in range(6):
            log.append("sync", step=i, agent_note=f"a{agent}")
    return tmp_path


def lines_of(run_dir, agent=0):
    path = run_dir / "audit" / f"agent{agent}.jsonl"
    return path, path.read_text().splitlines()


def test_clean_log_verifies_with_and_without_secret(run_dir):
    assert verify(run_dir).ok
    report = verify(run_dir, secret=SECRET)
    assert report.ok and report.macs_checked and len(report.files) == 2


def test_reopening_continues_the_chain(run_dir):
    AuditLog.for_run(run_dir, agent=0, key=audit_key(SECRET)).append("join", members=[0, 1])
    assert verify(run_dir, secret=SECRET).ok
    _, lines = lines_of(run_dir)
    assert json.loads(lines[-1])["seq"] == 6


def test_edited_line_is_named(run_dir):
    path, lines = lines_of(run_dir)
    lines[2] = lines[2].replace('"step": 2', '"step": 99')
    path.write_text("\n".join(lines) + "\n")
    report = verify(run_dir)
    assert not report.ok
    [problem] = report.problems
    assert (problem.file, problem.line, problem.kind) == (str(path), 3, "edited")


def test_edit_with_recomputed_hash_is_caught(run_dir):
    from ddla.security.audit import _hash

    path, lines = lines_of(run_dir)
    rec = json.loads(lines[2])
    rec["data"]["step"] = 99
    rec["hash"] = _hash(rec)
    lines[2] = json.dumps(rec, sort_keys=True)
    path.write_text("\n".join(lines) + "\n")
    report = verify(run_dir)
    assert any(p.line == 3 and p.kind == "edited" for p in report.problems)
    keyed = verify(run_dir, secret=SECRET)
    assert any(p.line == 3 and p.kind == "forged" for p in keyed.problems)


def test_removed_line_is_named(run_dir):
    path, lines = lines_of(run_dir)
    del lines[3]
    path.write_text("\n".join(lines) + "\n")
    [problem] = verify(run_dir).problems
    assert (problem.line, problem.kind) == (4, "removed")
    assert "entry 3 missing before line 4" in problem.detail


def test_removed_last_lines_are_named(run_dir):
    path, lines = lines_of(run_dir)
    path.write_text("\n".join(lines[:4]) + "\n")
    [problem] = verify(run_dir).problems
    assert problem.kind == "removed" and "entries 4..5 missing at the end" in problem.detail


def test_reordered_lines_are_named(run_dir):
    path, lines = lines_of(run_dir, agent=1)
    lines[1], lines[2] = lines[2], lines[1]
    path.write_text("\n".join(lines) + "\n")
    report = verify(run_dir)
    assert [(p.file, p.line, p.kind) for p in report.problems] == [(str(path), 3, "reordered")]
    assert str(report.problems[0]).startswith(f"{path}:3: reordered: entry 1 comes after entry 2")


def test_duplicated_and_garbage_lines(run_dir):
    path, lines = lines_of(run_dir)
    path.write_text("\n".join([*lines[:3], lines[1], "{not json", *lines[3:]]) + "\n")
    kinds = {(p.line, p.kind) for p in verify(run_dir).problems}
    assert kinds == {(4, "duplicated"), (5, "edited")}


def test_missing_audit_dir(tmp_path):
    report = verify(tmp_path)
    assert not report.ok and report.problems[0].kind == "missing"
