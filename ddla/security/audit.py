"""Append-only, hash-chained audit log: one JSONL file per agent under ``RUN_DIR/audit/``.

Each line is one event (``join``, ``refuse``, ``share``, ``pull``, ``deny``, ``reject``,
``sync``...) with its sequence number, the hash of the previous line and its own hash,
``sha256(prev | canonical JSON of the line)``. A small head file (``agentN.head``, replaced
atomically after every append) records the line count and last hash, so that removing lines at
the end is detected too. When the run secret is known the log is *keyed*: every line and the
head also carry an HMAC, so that someone who edits a line and recomputes the plain hashes is
still caught (:func:`verify` checks MACs when given the secret).

:func:`verify` (``ddla audit verify RUN_DIR``) names each edited, reordered, duplicated or
removed line.

Example:
    >>> import tempfile
    >>> run_dir = tempfile.mkdtemp()
    >>> log = AuditLog.for_run(run_dir, agent=0)
    >>> _ = log.append("join", members=[0, 1])
    >>> _ = log.append("share", peer=1, samples=30)
    >>> verify(run_dir).ok
    True
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

GENESIS = "0" * 64


def audit_key(secret: bytes) -> bytes:
    """The key that MACs audit lines, derived from the run secret (never the secret itself)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"", info=b"ddla/audit/v1").derive(
        secret
    )


def _canonical(record: dict[str, Any]) -> bytes:
    body = {k: v for k, v in record.items() if k not in ("hash", "mac")}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _hash(record: dict[str, Any]) -> str:
    return hashlib.sha256(record["prev"].encode() + b"|" + _canonical(record)).hexdigest()


def _mac(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


class AuditLog:
    """One agent's audit log. Appends are flushed and fsynced before :meth:`append` returns.

    Reopening an existing log continues its chain (an agent restarted from a checkpoint).
    """

    def __init__(self, path: str | os.PathLike[str], *, agent: int, key: bytes | None = None):
        self.path = Path(path)
        self.head_path = self.path.with_suffix(".head")
        self.agent = agent
        self.key = key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._seq, self._prev = 0, GENESIS
        if self.path.exists():
            lines = self.path.read_text().splitlines()
            if lines:
                last = json.loads(lines[-1])
                self._seq, self._prev = int(last["seq"]) + 1, last["hash"]

    @classmethod
    def for_run(
        cls, run_dir: str | os.PathLike[str], *, agent: int, key: bytes | None = None
    ) -> AuditLog:
        """The log of agent ``agent`` in ``run_dir/audit/agent{agent}.jsonl``."""
        return cls(Path(run_dir) / "audit" / f"agent{agent}.jsonl", agent=agent, key=key)

    def append(self, event: str, *, durable: bool = True, **data: Any) -> dict[str, Any]:
        """Record one event with JSON-serialisable details; returns the line written.

        ``durable=False`` flushes without fsync (for per-step events); the next durable
        append makes everything before it durable too.
        """
        record: dict[str, Any] = {
            "seq": self._seq,
            "ts": round(time.time(), 6),
            "agent": self.agent,
            "event": event,
            "data": data,
            "prev": self._prev,
        }
        record["hash"] = _hash(record)
        if self.key is not None:
            record["mac"] = _mac(self.key, record["hash"])
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            if durable:
                os.fsync(f.fileno())
        self._seq, self._prev = self._seq + 1, record["hash"]
        head = {"count": self._seq, "hash": self._prev}
        if self.key is not None:
            head["mac"] = _mac(self.key, f"{head['count']}|{head['hash']}")
        tmp = self.head_path.with_suffix(".head.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(head, f)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, self.head_path)
        return record


@dataclass(slots=True)
class AuditProblem:
    """One defect found by :func:`verify`: the file, the 1-based line (0: the file) and what."""

    file: str
    line: int
    kind: str
    detail: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.kind}: {self.detail}"


@dataclass(slots=True)
class AuditReport:
    """The outcome of :func:`verify`; ``ok`` is True when no problem was found."""

    files: dict[str, int] = field(default_factory=dict)
    problems: list[AuditProblem] = field(default_factory=list)
    macs_checked: bool = False
    notes: list[str] = field(default_factory=list)
    """Facts that are not tampering, e.g. that the run did not finish."""

    @property
    def ok(self) -> bool:
        return bool(self.files) and not self.problems


def verify(run_dir: str | os.PathLike[str], *, secret: bytes | None = None) -> AuditReport:
    """Check every ``RUN_DIR/audit/*.jsonl``; with the run ``secret`` also check the MACs."""
    key = audit_key(secret) if secret is not None else None
    report = AuditReport(macs_checked=key is not None)
    audit_dir = Path(run_dir) / "audit"
    files = sorted(audit_dir.glob("*.jsonl")) if audit_dir.is_dir() else []
    if not files:
        report.problems.append(AuditProblem(str(audit_dir), 0, "missing", "no audit log found"))
    logs: dict[Path, list[dict[str, Any]]] = {}
    for path in files:
        lines = path.read_text(encoding="utf-8").splitlines()
        report.files[str(path)] = len(lines)
        report.problems.extend(_verify_file(path, lines, key))
        logs[path] = _records(lines)
    if files:
        _verify_whole_logs(Path(run_dir), audit_dir, logs, report)
    return report


_LOG_NAME = re.compile(r"^agent(\d+)\.jsonl$")


def _records(lines: list[str]) -> list[dict[str, Any]]:
    out = []
    for raw in lines:
        try:
            rec = json.loads(raw)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def _run_agents(run_dir: Path) -> int | None:
    """The run's agent count from its ``config.yaml`` (None when absent or unreadable)."""
    try:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        return int(cfg["agents"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        return None


def _verify_whole_logs(
    run_dir: Path, audit_dir: Path, logs: dict[Path, list[dict[str, Any]]], report: AuditReport
) -> None:
    """Whole-log checks: one log per member, each holding its own agent's chain, each ended.

    Line checks cannot see a log that was deleted, or one agent's (intact) log copied over
    another's: the members come from ``config.yaml`` and the ``join`` records, and every entry
    names its agent.
    """
    members: set[int] = set()
    agents = _run_agents(run_dir)
    if agents is not None:
        members |= set(range(agents))
    owners: dict[str, Path] = {}  # entry hash -> first file holding it
    for path, records in logs.items():
        m = _LOG_NAME.match(path.name)
        if m is None:
            report.problems.append(
                AuditProblem(str(path), 0, "unexpected", "not an agent log (agentN.jsonl)")
            )
            continue
        rank = int(m.group(1))
        for rec in records:
            if rec.get("event") == "join" and isinstance(rec.get("data"), dict):
                joined = rec["data"].get("members")
                if isinstance(joined, list):
                    members |= {int(a) for a in joined if isinstance(a, int)}
        foreign = sorted({rec.get("agent") for rec in records} - {rank}, key=str)
        if foreign:
            report.problems.append(
                AuditProblem(
                    str(path),
                    0,
                    "swapped",
                    f"holds entries of agent {', '.join(map(str, foreign))}, not only of agent "
                    f"{rank}: another agent's log was copied or moved here",
                )
            )
        for rec in records:
            h = rec.get("hash")
            if not isinstance(h, str):
                continue
            if h in owners and owners[h] != path:
                report.problems.append(
                    AuditProblem(
                        str(path), 0, "duplicated", f"repeats entries of {owners[h]} (a copy)"
                    )
                )
                break
            owners.setdefault(h, path)
    present = {int(m.group(1)) for p in logs if (m := _LOG_NAME.match(p.name))}
    for rank in sorted(members - present):
        report.problems.append(
            AuditProblem(
                str(audit_dir / f"agent{rank}.jsonl"),
                0,
                "missing",
                f"agent {rank} was a member of the run but its log is gone",
            )
        )
    for rank in sorted(present - members) if members else []:
        report.problems.append(
            AuditProblem(
                str(audit_dir / f"agent{rank}.jsonl"),
                0,
                "unexpected",
                f"agent {rank} was not a member of the run (members: {sorted(members)})",
            )
        )
    finished = (run_dir / "summary.json").is_file()
    for path, records in logs.items():
        last = records[-1] if records else None
        if last is not None and last.get("event") == "leave":
            continue
        what = f"ends with {last.get('event')!r}" if last else "is empty"
        if finished:
            report.problems.append(
                AuditProblem(
                    str(path),
                    0,
                    "removed",
                    f"{what}, not 'leave', although the run finished: its last entries are gone",
                )
            )
        else:
            report.notes.append(f"{path}: {what} without 'leave': the run did not finish")


def _verify_file(path: Path, lines: list[str], key: bytes | None) -> list[AuditProblem]:
    name = str(path)
    problems: list[AuditProblem] = []
    records: dict[int, tuple[int, dict]] = {}  # seq -> (line number, record)
    order: list[tuple[int, int]] = []
    for lineno, raw in enumerate(lines, 1):
        try:
            rec = json.loads(raw)
            seq = int(rec["seq"])
            if not isinstance(rec["prev"], str) or not isinstance(rec["hash"], str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            problems.append(AuditProblem(name, lineno, "edited", "not a valid audit record"))
            continue
        if seq in records:
            problems.append(
                AuditProblem(
                    name, lineno, "duplicated", f"entry {seq} already at line {records[seq][0]}"
                )
            )
            continue
        records[seq] = (lineno, rec)
        order.append((lineno, seq))
        if _hash(rec) != rec["hash"]:
            problems.append(AuditProblem(name, lineno, "edited", f"entry {seq}: hash mismatch"))
        elif key is not None and not hmac.compare_digest(
            rec.get("mac", ""), _mac(key, rec["hash"])
        ):
            problems.append(
                AuditProblem(
                    name,
                    lineno,
                    "forged",
                    f"entry {seq}: MAC mismatch (rewritten without the run secret)",
                )
            )
    # Reordering: an entry whose sequence number is lower than the line above it.
    for (_, prev_seq), (lineno, seq) in itertools.pairwise(order):
        if seq < prev_seq:
            problems.append(
                AuditProblem(name, lineno, "reordered", f"entry {seq} comes after entry {prev_seq}")
            )
    # Chain: each entry points at the hash of entry seq-1 (looked up by number, not position).
    for seq, (lineno, rec) in sorted(records.items()):
        before = records.get(seq - 1)
        expected = GENESIS if seq == 0 else (before[1]["hash"] if before else None)
        if expected is not None and rec["prev"] != expected:
            # The entry before was edited and its hash recomputed; this one still points at
            # the original, so blame the line before.
            where = before[0] if before else lineno
            problems.append(
                AuditProblem(
                    name,
                    where,
                    "edited",
                    f"entry {seq - 1} was rewritten (entry {seq} points at its original hash)",
                )
            )
    problems.extend(_missing(name, records, path.with_suffix(".head"), key))
    return sorted(problems, key=lambda p: p.line)


def _missing(name: str, records: dict, head_path: Path, key: bytes | None) -> list[AuditProblem]:
    problems = []
    count = max(records) + 1 if records else 0
    if head_path.exists():
        head = json.loads(head_path.read_text())
        if key is not None and not hmac.compare_digest(
            head.get("mac", ""), _mac(key, f"{head['count']}|{head['hash']}")
        ):
            problems.append(AuditProblem(str(head_path), 0, "forged", "head MAC mismatch"))
        if head["count"] > count:
            count = head["count"]
        elif records and head["hash"] != records[count - 1][1]["hash"]:
            problems.append(
                AuditProblem(name, records[count - 1][0], "edited", "last entry differs from head")
            )
    else:
        problems.append(
            AuditProblem(
                str(head_path),
                0,
                "missing",
                "head file missing: lines removed from the end cannot be ruled out",
            )
        )
    missing = [s for s in range(count) if s not in records]
    for start, end in _runs(missing):
        after = records.get(start - 1)
        before = records.get(end + 1)
        where = before[0] if before else (after[0] + 1 if after else 1)
        what = f"entry {start}" if start == end else f"entries {start}..{end}"
        tail = " at the end of the file" if before is None else f" before line {where}"
        problems.append(AuditProblem(name, where, "removed", f"{what} missing{tail}"))
    return problems


def _runs(values: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for v in values:
        if runs and runs[-1][1] == v - 1:
            runs[-1] = (runs[-1][0], v)
        else:
            runs.append((v, v))
    return runs
