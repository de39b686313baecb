"""The files of a run directory: who owns it (run id), summary, errors, metrics trimming.

A fresh run never overwrites another run's results: :func:`plan_fresh_out` decides, before
anything is written, whether ``--out`` may be used; :func:`start_fresh_run` then moves an old
run aside in one rename and writes ``run.json`` (the run id) and ``config.yaml``.

``summary.json`` is a contract (extend it, never rename keys); it is written atomically and
last, so a run directory with a summary is a finished run.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ddla.errors import ConfigError, DdlaError

SUMMARY = "summary.json"
METRICS = "metrics.jsonl"
CONFIG = "config.yaml"
#: Files a run writes when it finishes.
OUTPUTS = (SUMMARY, METRICS, "model.safetensors", "model.json")


def atomic_write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


RUN_FILE = "run.json"
#: Entries that mark a directory as a ddla run directory.
_MARKERS = (CONFIG, RUN_FILE, SUMMARY)


def new_run_id() -> str:
    """A fresh run id: written at the start, kept in every checkpoint, checked on resume."""
    return uuid.uuid4().hex


def read_run_id(out: Path) -> str | None:
    """The run id of ``out`` (None for a directory without ``run.json``)."""
    try:
        return str(json.loads((out / RUN_FILE).read_text())["run_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_writable(out: Path) -> None:
    """Refuse an ``--out`` that cannot be created or written, without changing anything."""
    probe_dir = out
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir() or not os.access(probe_dir, os.W_OK | os.X_OK):
        why = "is not a directory" if not probe_dir.is_dir() else "is not writable"
        raise ConfigError(
            f"--out {out} is not writable: {probe_dir} {why}",
            help="choose a directory you can write to with --out DIR",
        )


@dataclass(frozen=True, slots=True)
class OutPlan:
    """What a fresh run will do with its ``--out``: use it as is, or move an old one aside."""

    out: Path
    move_aside: bool
    why: str = ""


def plan_fresh_out(out: Path, *, force: bool, scratch: bool) -> OutPlan:
    """Decide (changing nothing) whether a fresh run may use ``out``; refuse in one line.

    An absent or empty directory is used as is. A finished or resumable ddla run, or a
    non-empty directory that is not a ddla run, is refused unless ``force``; ``scratch`` (the
    default ``runs/latest``) and a failed run with nothing to resume are moved aside, never
    deleted. The move happens in :func:`start_fresh_run`, once the run is known to start.
    """
    from ddla.checkpoint import has_checkpoint

    check_writable(out)
    if not out.exists():
        return OutPlan(out, False)
    if not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a directory", help="choose another --out")
    entries = list(out.iterdir())
    if not entries:
        return OutPlan(out, False)
    is_run = any((out / m).exists() for m in _MARKERS)
    if not is_run:
        if force:
            return OutPlan(out, True, "it held other files")
        raise ConfigError(
            f"--out {out} is not empty and is not a ddla run directory",
            help="choose an empty or new directory, or pass --force to move its contents "
            "aside (nothing is deleted)",
        )
    finished = (out / SUMMARY).exists()
    resumable = has_checkpoint(out)
    if finished or resumable:
        what = "a finished run" if finished else "an unfinished run with checkpoints"
        if force or scratch:
            return OutPlan(out, True, f"it held {what}")
        alt = f"ddla run --resume {out}" if resumable else "another --out"
        raise ConfigError(
            f"--out {out} already holds {what}",
            help=f"use --force to replace it (the old one is moved aside), or {alt}",
        )
    return OutPlan(out, True, "it held a run that failed before its first checkpoint")


def _aside_name(out: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    n = 0
    while (aside := out.with_name(f"{out.name}.previous-{stamp}-{n}")).exists():
        n += 1
    return aside


def start_fresh_run(plan: OutPlan, config_yaml: str) -> str:
    """Carry out ``plan``: move the old directory aside (one rename), write run.json, config.

    Returns the new run id. Prints where the old directory went.
    """
    import sys

    out = plan.out
    if plan.move_aside:
        aside = _aside_name(out)
        try:
            out.rename(aside)
        except OSError as exc:
            raise ConfigError(
                f"cannot move the previous contents of --out {out} aside: {exc.strerror or exc}",
                help="move or delete them yourself, or choose another --out",
            ) from exc
        print(f"note: --out {out}: {plan.why}; moved to {aside}", file=sys.stderr)
    prepare_run_dir(out)
    run_id = new_run_id()
    atomic_write_json(out / RUN_FILE, {"run_id": run_id, "started": time.time()})
    (out / CONFIG).write_text(config_yaml)
    return run_id


def prepare_run_dir(out: Path) -> None:
    """Create ``out`` and its ``logs/`` and check it is writable."""
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


def clear_agent_errors(out: Path) -> None:
    """Drop error records of an earlier attempt (a resume starts with a clean slate)."""
    for err in (out / "logs").glob("agent*.error.json"):
        err.unlink()


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
