"""The files of a run directory that other tools read: summary, errors, metrics trimming.

``summary.json`` is a contract (extend it, never rename keys); it is written atomically and
last, so a run directory with a summary is a finished run.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from ddla.errors import ConfigError, DdlaError

SUMMARY = "summary.json"
METRICS = "metrics.jsonl"
CONFIG = "config.yaml"
#: Files a fresh run replaces; removed up front so a failed run never leaves an old one behind.
OUTPUTS = (SUMMARY, METRICS, "model.safetensors", "model.json")


def atomic_write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def prepare_run_dir(out: Path, *, fresh: bool) -> None:
    """Create ``out`` and check it is writable; on a fresh run drop a previous run's outputs."""
    try:
        (out / "logs").mkdir(parents=True, exist_ok=True)
        probe = out / ".ddla-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"--out {out} is not writable: {exc.strerror or exc}",
            help="choose a directory you can write to with --out DIR",
        ) from exc
    if fresh:
        for name in OUTPUTS:
            (out / name).unlink(missing_ok=True)
        for err in (out / "logs").glob("agent*.error.json"):
            err.unlink()
        # A previous run's audit log is evidence: keep it aside, never append a new run to it.
        if (out / "audit").is_dir():
            stamp = time.strftime("%Y%m%d-%H%M%S")
            n = 0
            while (out / f"audit.{stamp}.{n}").exists():
                n += 1
            (out / "audit").rename(out / f"audit.{stamp}.{n}")


def error_path(out: Path, rank: int) -> Path:
    return out / "logs" / f"agent{rank}.error.json"


def write_agent_error(out: Path, rank: int, exc: BaseException) -> None:
    """Leave a machine-readable record of why this agent failed, for the launcher to print."""
    record = {
        "rank": rank,
        "type": type(exc).__name__,
        "message": str(exc),
        "help": getattr(exc, "help", None),
        "exit_code": getattr(exc, "exit_code", 1),
    }
    # The out dir itself may be the problem; the launcher then falls back to its own report.
    with contextlib.suppress(OSError):
        atomic_write_json(error_path(out, rank), record)


def read_agent_errors(out: Path) -> list[dict[str, Any]]:
    """Error records left by failed agents, ordered with ddla errors first, then by rank."""
    records = []
    for path in sorted((out / "logs").glob("agent*.error.json")):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    # A DdlaError is the root cause; peers that then lose their connection report CommErrors.
    records.sort(
        key=lambda r: (r["type"] in ("CommError", "PeerFailedError", "CommTimeoutError"), r["rank"])
    )
    return records


def trim_metrics(path: Path, *, after_step: int) -> None:
    """Drop metric lines past a checkpoint so a resumed run does not repeat them."""
    if not path.is_file():
        return
    keep = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line).get("step", 0) <= after_step
    ]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in keep))
    os.replace(tmp, path)


def read_summary(out: Path) -> dict[str, Any]:
    path = out / SUMMARY
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DdlaError(f"run in {out} left no readable summary: {exc}") from exc
